#!/usr/bin/env bash
# cnn-train across "hosts" made of network namespaces (launch/netns-cluster.sh):
# 2 hosts x 2 ranks, Open MPI over TCP between hosts, shared memory inside.
#   cluster_test.sh CASE BUILD_DIR SOURCE_DIR
# Exit 77 (skipped) when this machine cannot make namespaces. The namespaces
# are removed on every exit; every run is bounded by timeout.
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
. "$src/tests/lib.sh"
cl="$src/launch/netns-cluster.sh"
name=cc$$
if ! ip netns add "$name-probe" 2>/dev/null; then
  echo "SKIP [$case_name]: cannot make network namespaces here (needs root and ip netns)"
  exit 77
fi
ip netns del "$name-probe"
trap 'bash "$cl" down "$name"; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM # so that the EXIT trap runs on a ctest timeout too
bash "$cl" up "$name" 2 || fail "could not make the namespaces"

cfg=$src/configs/fashion_cnn.ini
small=(--set data.train_limit=500 --set data.test_limit=250 --set train.batch_size=30
       --set train.threads=1 --set train.history="$work/h.csv" --set train.progress=lines)
final=ckpt-e0001-s00000017.h5

np1() { # np1 OUT DIR [options...]: the reference, one rank outside the cluster
  local out=$1 dir=$2
  shift 2
  timeout 120 "$bin" "$cfg" "${small[@]}" --set checkpoint.dir="$dir" "$@" >"$out" 2>&1 ||
    { cat "$out"; fail "np 1 failed"; }
}
cluster() { # cluster OUT DIR [options...]: 2 hosts x 2 ranks
  local out=$1 dir=$2
  shift 2
  timeout 120 bash "$cl" run "$name" 2 2 "$bin" "$cfg" "${small[@]}" \
    --set checkpoint.dir="$dir" "$@" >"$out" 2>&1
}
same() { # same A B WHAT: /model and /optimizer of two checkpoints are identical
  h5diff "$1" "$2" /model /model && h5diff "$1" "$2" /optimizer /optimizer || fail "$3"
}
took() { grep -E '^training: ' "$1" | sed -E 's/.* in ([0-9.]+)s.*/\1/'; }

case "$case_name" in
ranks_agree)
  # Every exchange across the hosts gives the weights of np 1, bit for bit.
  np1 "$work/np1" "$work/c1" --set train.epochs=1
  for ex in auto direct collective hierarchical; do
    cluster "$work/$ex" "$work/c$ex" --set train.epochs=1 --set dist.exchange=$ex ||
      { cat "$work/$ex"; fail "$ex: 2 x 2 failed"; }
    [ "$(grep -c '^test:' "$work/$ex")" -eq 1 ] || { cat "$work/$ex"; fail "$ex: not one test line"; }
    same "$work/c1/$final" "$work/c$ex/$final" "$ex: 2 hosts x 2 ranks differ from np 1"
    echo "$ex: identical to np 1; $(grep '^exchange:' "$work/$ex"); $(took "$work/$ex") s"
  done
  grep -q '^exchange: hierarchical (auto: 2 nodes with 2-2 ranks' "$work/auto" ||
    fail "auto did not pick hierarchical on 2 hosts x 2 ranks"
  ;;
killed_host)
  # Host 1 (its daemon and ranks 2, 3) is killed during training: the job
  # ends within 30 s with a line naming the lost ranks; the job resumes from
  # its last checkpoint on host 0 alone (2 ranks) and ends on the weights of
  # an uninterrupted np 1 run.
  long=(--set train.epochs=4 --set checkpoint.every_epochs=1)
  np1 "$work/np1" "$work/c1" "${long[@]}"
  cluster "$work/out" "$work/k" "${long[@]}" &
  pid=$!
  for _ in $(seq 1200); do
    ls "$work/k"/ckpt-e0001-*.h5 >/dev/null 2>&1 && break
    sleep 0.1
  done
  ls "$work/k"/ckpt-e0001-*.h5 >/dev/null 2>&1 || { kill "$pid"; cat "$work/out"; fail "no checkpoint"; }
  bash "$cl" kill-host "$name" 1
  start=$(date +%s)
  wait "$pid"
  rc=$?
  t=$(( $(date +%s) - start ))
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$work/out"; fail "exit $rc after ${t}s"; }
  [ "$t" -le 30 ] || { cat "$work/out"; fail "took ${t}s to end"; }
  grep -q "netns-cluster: host $name-h1 lost: ranks 2-3 of 4" "$work/out" ||
    { cat "$work/out"; fail "no line naming the lost ranks"; }
  grep -q '^test:' "$work/out" && fail "training went on"
  echo "ended ${t}s after the kill: $(grep 'lost: ranks' "$work/out")"
  timeout 120 bash "$cl" run "$name" 1 2 "$bin" "$cfg" "${small[@]}" "${long[@]}" \
    --set checkpoint.dir="$work/k" --resume auto >"$work/res" 2>&1 || { cat "$work/res"; fail "resume failed"; }
  grep -q '^resumed from ' "$work/res" || { cat "$work/res"; fail "did not resume"; }
  last=ckpt-e0004-s00000068.h5
  same "$work/c1/$last" "$work/k/$last" "resumed on one host: weights differ from np 1"
  echo "$(grep '^resumed from' "$work/res"); final weights identical to np 1"
  ;;
shaped)
  # tc netem on the hosts' links (10 Gbit/s and 100 us, then 20 Mbit/s
  # and 2 ms; tbf and the rate alone where the kernel has no netem): the
  # speed changes, the weights do not.
  np1 "$work/np1" "$work/c1" --set train.epochs=1
  cluster "$work/free" "$work/cf" --set train.epochs=1 || { cat "$work/free"; fail "unshaped run failed"; }
  for shape in "10gbit 100us" "20mbit 2ms"; do
    # shellcheck disable=SC2086
    bash "$cl" shape "$name" $shape || fail "tc netem $shape"
    tc -n "$name-h1" qdisc show dev eth0 | grep -Eq 'netem|tbf' || fail "no shaping qdisc"
    tag=${shape// /_}
    cluster "$work/$tag" "$work/c$tag" --set train.epochs=1 || { cat "$work/$tag"; fail "$shape failed"; }
    same "$work/c1/$final" "$work/c$tag/$final" "shaped $shape: weights differ from np 1"
    echo "$(tc -n "$name-h1" qdisc show dev eth0 | awk '{print $2}') $shape: identical to np 1, $(took "$work/$tag") s (unshaped $(took "$work/free") s)"
  done
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
