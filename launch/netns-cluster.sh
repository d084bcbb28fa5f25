#!/usr/bin/env bash
# A cluster of "hosts" on one Linux machine: network namespaces joined by
# a bridge, for running cnn-train across hosts with Open MPI over TCP
# (shared memory between the ranks of one host). Needs root (ip netns).
#
#   netns-cluster.sh up NAME HOSTS      make NAME-sw (the switch: bridge br0,
#                                       10.231.0.254/24, where mpirun runs) and
#                                       NAME-h0 .. NAME-h<HOSTS-1>, host i with
#                                       eth0 = 10.231.0.<i+1>/24 on a veth pair
#                                       to the bridge, and its own loopback
#   netns-cluster.sh down NAME          remove all of them (safe to repeat)
#   netns-cluster.sh shape NAME RATE DELAY
#                                       tc netem on every host's eth0, e.g.
#                                       shape c1 10gbit 100us; where the kernel
#                                       has no netem (sch_netem), tc tbf shapes
#                                       the rate alone and a line says the
#                                       delay is not applied
#   netns-cluster.sh run NAME HOSTS RANKS_PER_HOST PROGRAM ARGS...
#                                       mpirun from the switch onto hosts
#                                       0 .. HOSTS-1, RANKS_PER_HOST each (ranks
#                                       0 .. R-1 on host 0, R .. 2R-1 on host 1, ...);
#                                       the job's exit status; if a host is lost,
#                                       a last line names it and its ranks
#   netns-cluster.sh kill-host NAME I   SIGKILL every process in host I
#                                       (its Open MPI daemon and ranks)
#
# Traffic goes only to the cluster's own addresses (10.231.0.0/24 inside its
# namespaces) and loopback; NAME keeps several clusters apart (at most 10
# characters). Each namespace is a fresh network stack: nothing of the
# machine's own network is touched.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
net=10.231.0

usage() { sed -n '2,30p' "$0" >&2; exit 2; }

up() {
  local name=$1 hosts=$2 i
  ip netns add "$name-sw" || return 1
  ip -n "$name-sw" link set lo up &&
    ip -n "$name-sw" link add br0 type bridge &&
    ip -n "$name-sw" addr add "$net.254/24" dev br0 &&
    ip -n "$name-sw" link set br0 up || return 1
  for ((i = 0; i < hosts; i++)); do
    ip netns add "$name-h$i" &&
      ip -n "$name-h$i" link set lo up &&
      ip -n "$name-h$i" link add eth0 type veth peer name "h$i" netns "$name-sw" &&
      ip -n "$name-sw" link set "h$i" master br0 up &&
      ip -n "$name-h$i" addr add "$net.$((i + 1))/24" dev eth0 &&
      ip -n "$name-h$i" link set eth0 up || return 1
  done
}

down() {
  local name=$1 ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$name-(sw|h[0-9]+)$"); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns"
  done
}

shape() {
  local name=$1 rate=$2 delay=$3 ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$name-h[0-9]+$"); do
    if ! tc -n "$ns" qdisc replace dev eth0 root netem rate "$rate" delay "$delay" 2>/dev/null; then
      echo "netns-cluster: $ns: no netem in this kernel; tbf at $rate, delay $delay not applied" >&2
      tc -n "$ns" qdisc replace dev eth0 root tbf rate "$rate" burst 2mb latency 100ms || return 1
    fi
  done
}

run() {
  local name=$1 hosts=$2 per=$3 i list="" log rc
  shift 3
  for ((i = 0; i < hosts; i++)); do list+="${list:+,}$name-h$i:$per"; done
  log=$(mktemp)
  # shellcheck disable=SC2046
  ip netns exec "$name-sw" mpirun $(bash "$here/mpirun-flags.sh" $((hosts * per))) \
    --host "$list" -np $((hosts * per)) --map-by slot \
    --mca plm_rsh_agent "$here/netns-rsh.sh" \
    --mca oob_tcp_if_include "$net.0/24" --mca btl_tcp_if_include "$net.0/24" \
    --mca btl self,vader,tcp "$@" 2> >(tee "$log" >&2)
  rc=$?
  wait
  # Open MPI names the node whose daemon it lost ("ORTE has lost
  # communication with a remote daemon ... Remote daemon: [[j,0],k] on node
  # HOST"); say which ranks were there
  for ((i = 0; i < hosts; i++)); do
    if grep -Eq "^ *Remote daemon: .* on node $name-h$i\$" "$log"; then
      echo "netns-cluster: host $name-h$i lost: ranks $((i * per))-$(((i + 1) * per - 1)) of $((hosts * per)) stopped answering" >&2
    fi
  done
  rm -f "$log"
  return $rc
}

kill_host() {
  ip netns pids "$1-h$2" | xargs -r kill -KILL
}

[ $# -ge 2 ] || usage
cmd=$1
shift
case $cmd in
up) [ $# -eq 2 ] || usage; up "$@" || { echo "netns-cluster: could not make $1 (root? ip netns?)" >&2; down "$1"; exit 1; } ;;
down) down "$1" ;;
shape) [ $# -eq 3 ] || usage; shape "$@" ;;
run) [ $# -ge 4 ] || usage; run "$@" ;;
kill-host) [ $# -eq 2 ] || usage; kill_host "$@" ;;
*) usage ;;
esac
