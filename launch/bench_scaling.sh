#!/usr/bin/env bash
# Data-parallel scaling on this machine: training images/s of cnn-train at
# 1 and 2 ranks (1 BLAS thread each) on the real Fashion-MNIST data, the
# share of step time spent waiting on communication, and beside it PyTorch
# DistributedDataParallel (gloo) at 1 and 2 processes on LeNet-5 with the
# same global batch. Best of REPS runs each; np 1 and np 2 runs alternate.
# The "1+1" row is two independent np 1 runs at once, one a core, their
# rates summed: the speedup two ranks could reach with a free exchange.
#   bash launch/bench_scaling.sh [REPS] [STEPS] [cnn-train options...]
# e.g. bash launch/bench_scaling.sh 3 600 --set dist.reduction=float
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${1:-3}
steps=${2:-600}
shift $(( $# >= 2 ? 2 : $# ))
build=${CNN_BUILD:-$root/build}
ddp=${CNN_PEER_DDP:-$root/../shared/bench/torch_ddp.py}
py=/usr/bin/python3
have_torch=1
[ -f "$ddp" ] && $py -c "import torch" 2>/dev/null || have_torch=0
[ "$have_torch" = 1 ] || echo "note: PyTorch DDP peer not available ($ddp, python3-torch); ours only"

# ours CONFIG NP -> "img/s wait%"
ours() {
  local cfg=$1 np=$2
  shift 2
  # shellcheck disable=SC2046
  mpirun $(bash "$here/mpirun-flags.sh" "$np") ${bind:-} -np "$np" "$build/cnn-train" "$root/configs/$cfg.ini" \
    --set train.max_steps="$steps" --set train.epochs=1 --set train.threads=1 \
    --set data.test_limit=1000 --set train.progress=none --set train.history="$tmp/h.csv" \
    --set checkpoint.dir=none "$@" 2>&1 |
    awk '/^training:/ {ips=$(NF-1)} /^communication:/ {match($0, /= [0-9.]+%/); w=substr($0, RSTART+2, RLENGTH-3)}
         END {printf "%s %s\n", ips, (w == "" ? "-" : w)}'
}
# pair CONFIG -> img/s: two independent np 1 runs at once, pinned to cores 0
# and 1, their rates summed: what two ranks reach with no exchange at all
# (only the cores' shared caches, memory and clock), so the ceiling of the
# np 2 speedup on this machine
pair() {
  local cfg=$1
  shift
  mkdir -p "$tmp/p0" "$tmp/p1"
  tmp=$tmp/p0 bind="--cpu-set 0 --bind-to core" ours "$cfg" 1 "$@" >"$tmp/pair0" &
  local a=$!
  tmp=$tmp/p1 bind="--cpu-set 1 --bind-to core" ours "$cfg" 1 "$@" >"$tmp/pair1" &
  local b=$!
  wait "$a" "$b"
  awk '{s += $1} END {print s}' "$tmp/pair0" "$tmp/pair1"
}
# ddp NP -> img/s (steady, after its first 20 steps)
ddp() {
  $py "$ddp" --nproc "$1" --threads 1 --global-batch 128 --epochs 1 --max-steps "$steps" 2>/dev/null |
    grep 'RESULT ddp summary' | sed -E 's/.*steady_train_img_s=([0-9.]+).*/\1/'
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
best() { printf '%s\n' "$@" | sort -g | tail -1; }

printf '%-16s %4s %10s %9s %10s\n' model ranks img_s speedup comm_wait
declare -A rate
for cfg in fashion_cnn lenet5_fashion; do
  # np 1 and np 2 alternate, so a busy spell of the machine hits both
  r1=() r2=() w1=() w2=() rp=()
  for _ in $(seq "$reps"); do
    read -r ips wait <<<"$(ours "$cfg" 1 "$@")"
    r1+=("$ips") w1+=("$wait")
    read -r ips wait <<<"$(ours "$cfg" 2 "$@")"
    r2+=("$ips") w2+=("$wait")
    rp+=("$(pair "$cfg" "$@")")
  done
  rate[$cfg.1]=$(best "${r1[@]}")
  rate[$cfg.2]=$(best "${r2[@]}")
  sp=$(awk -v a="${rate[$cfg.2]}" -v b="${rate[$cfg.1]}" 'BEGIN{printf "%.2fx", a/b}')
  printf '%-16s %4d %10.0f %9s %9s%%\n' "$cfg" 1 "${rate[$cfg.1]}" 1.00x "$(IFS=/; echo "${w1[*]}")"
  printf '%-16s %4d %10.0f %9s %9s%%\n' "$cfg" 2 "${rate[$cfg.2]}" "$sp" "$(IFS=/; echo "${w2[*]}")"
  rate[$cfg.p]=$(best "${rp[@]}")
  printf '%-16s %4s %10.0f %9s %10s\n' "$cfg" "1+1" "${rate[$cfg.p]}" \
    "$(awk -v a="${rate[$cfg.p]}" -v b="${rate[$cfg.1]}" 'BEGIN{printf "%.2fx", a/b}')" "ceiling"
done
if [ "$have_torch" = 1 ]; then
  d1=() d2=()
  for _ in $(seq "$reps"); do
    d1+=("$(ddp 1)")
    d2+=("$(ddp 2)")
  done
  rate[ddp.1]=$(best "${d1[@]}")
  rate[ddp.2]=$(best "${d2[@]}")
  for np in 1 2; do
    sp=$(awk -v a="${rate[ddp.$np]}" -v b="${rate[ddp.1]}" 'BEGIN{printf "%.2fx", a/b}')
    printf '%-16s %4d %10.0f %9s %10s\n' "torch DDP lenet5" "$np" "${rate[ddp.$np]}" "$sp" "-"
  done
  awk -v a="${rate[lenet5_fashion.2]}" -v b="${rate[ddp.2]}" \
    'BEGIN{printf "lenet5 at 2 ranks: cnn-train / DDP = %.2fx\n", a/b}'
fi
# the exchange alone: ours against Open MPI's collectives (fashion_cnn's size)
# shellcheck disable=SC2046
mpirun $(bash "$here/mpirun-flags.sh" 2) -np 2 "$build/cnn-bench-exchange"
