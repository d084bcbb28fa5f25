#!/usr/bin/env bash
# Threads inside a rank ([train] threads): training images/s at 1 rank x 1
# thread, 1 x 2 and 2 ranks x 1, each case in two modes: "real" (cnn-train
# on the data: reading, steps, exact reduction) and "engine" (cnn-bench:
# the same chunked, threaded training step on one random batch in memory).
# The three shapes alternate, REPS times; the table gives the best and the
# range of each, the ratios of the bests (1 -> 2 threads, 1 x 2 against
# 2 x 1, 1 -> 2 ranks) and the load average before and after. Then the
# peak RSS of one rank at 1, 2 and 4 threads (/usr/bin/time -v).
# CNN_BENCH_SPEED=0 or CNN_BENCH_RSS=0 leaves one part out;
# CNN_BENCH_MODES="real" (or "engine") times one mode only.
#   bash launch/bench_threads.sh [REPS] [CASE...]
# A CASE is NAME:CONFIG:MAX_STEPS[:--set ...]; without any, fashion_cnn,
# and catsdogs_cnn and resnet20_cifar10 on the synthetic data that
# CNN_SYNTH (default /tmp/cnn-synth) holds or that this script makes there
# (random 224x224 BMPs in two classes, 320 for training: 10 steps an
# epoch; random CIFAR-10 binary records). catsdogs_cnn's real case runs 20
# steps over 2 epochs, the second from the decoded-image cache, with the
# checkpoint after epoch 1 written on its thread during epoch 2.
# cnn-bench times MAX_STEPS steps after 2 warm-up steps.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${CNN_BUILD:-$root/build}
reps=${1:-3}
shift $(( $# >= 1 ? 1 : 0 ))
synth=${CNN_SYNTH:-/tmp/cnn-synth}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make_synth() {
  [ -f "$synth/cifar/test_batch.bin" ] && [ -f "$synth/catsdogs/train/dogs/dogs.159.bmp" ] && return
  mkdir -p "$synth/cifar"
  python3 - "$synth" <<'PY'
import os, struct, sys
root = sys.argv[1]
def cifar(path, n):
    with open(path, 'wb') as f:
        for i in range(n):
            f.write(bytes([i % 10]) + os.urandom(3072))
cifar(f'{root}/cifar/data_batch_1.bin', 2048)
cifar(f'{root}/cifar/test_batch.bin', 256)
def bmp(path, w, h):
    row = (w * 3 + 3) & ~3
    hdr = b'BM' + struct.pack('<IHHI', 54 + row * h, 0, 0, 54) + \
          struct.pack('<IiiHHIIiiII', 40, w, h, 1, 24, 0, row * h, 2835, 2835, 0, 0)
    with open(path, 'wb') as f:
        f.write(hdr + os.urandom(row * h))
for split, n in (('train', 320), ('test', 32)):
    for c in ('cats', 'dogs'):
        d = f'{root}/catsdogs/{split}/{c}'
        os.makedirs(d, exist_ok=True)
        for i in range(n // 2):
            bmp(f'{d}/{c}.{i}.bmp', 224, 224)
PY
}

if [ $# -eq 0 ]; then
  make_synth
  set -- "fashion_cnn:fashion_cnn:200:--set data.test_limit=500" \
    "catsdogs_cnn:catsdogs_cnn:20:--set train.epochs=2 --set data.train_dir=$synth/catsdogs/train --set data.test_dir=$synth/catsdogs/test --set data.test_limit=32" \
    "resnet20:resnet20_cifar10:30:--set data.dir=$synth/cifar --set data.test_limit=64"
fi

# real NP THREADS CONFIG STEPS [options...] -> training img/s of cnn-train
real() {
  local np=$1 t=$2 cfg=$3 steps=$4
  shift 4
  # shellcheck disable=SC2046
  mpirun $(bash "$here/mpirun-flags.sh" "$np") --bind-to none -np "$np" "$build/cnn-train" \
    "$root/configs/$cfg.ini" --set train.max_steps="$steps" --set train.epochs=1 \
    --set train.threads="$t" --set train.progress=none --set train.history=none \
    --set checkpoint.dir="$tmp/ck" --set checkpoint.best=false "$@" 2>&1 |
    awk '/^training:/ {print $(NF-1)}'
}
# engine NP THREADS CONFIG STEPS [options...] -> training img/s of cnn-bench
engine() {
  local np=$1 t=$2 cfg=$3 steps=$4
  shift 4
  # shellcheck disable=SC2046
  mpirun $(bash "$here/mpirun-flags.sh" "$np") --bind-to none -np "$np" "$build/cnn-bench" \
    "$root/configs/$cfg.ini" --threads "$t" --steps "$steps" --warmup 2 "$@" 2>&1 |
    sed -nE 's/^RESULT cnn-bench .* train_img_s=([0-9.]+) .*/\1/p'
}
# "BEST MIN-MAX" of a list of figures
stats() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{v[NR]=$1} END {
  if (NR) printf "%.0f %.0f-%.0f\n", v[NR], v[1], v[NR]; else print "0 -" }'; }
ratio() { echo "$1 $2" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else printf "-" }'; }

if [ "${CNN_BENCH_SPEED:-1}" = 1 ]; then
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %-6s %18s %18s %18s %8s %10s %8s\n' case mode '1x1 (range)' '1x2 (range)' \
  '2x1 (range)' '1->2thr' '1x2/2x1' '1->2rk'
for c in "$@"; do
  IFS=: read -r name cfg steps opts <<<"$c"
  read -r -a extra <<<"${opts:-}"
  for mode in ${CNN_BENCH_MODES:-real engine}; do
    a=() b=() d=()
    for _ in $(seq "$reps"); do
      a+=("$($mode 1 1 "$cfg" "$steps" "${extra[@]}")")
      b+=("$($mode 1 2 "$cfg" "$steps" "${extra[@]}")")
      d+=("$($mode 2 1 "$cfg" "$steps" "${extra[@]}")")
    done
    echo "$name $mode runs (img/s): 1x1: ${a[*]} | 1x2: ${b[*]} | 2x1: ${d[*]}" >&2
    read -r ba ra <<<"$(stats "${a[@]}")"
    read -r bb rb <<<"$(stats "${b[@]}")"
    read -r bd rd <<<"$(stats "${d[@]}")"
    printf '%-14s %-6s %18s %18s %18s %8s %10s %8s\n' "$name" "$mode" "$ba ($ra)" "$bb ($rb)" \
      "$bd ($rd)" "$(ratio "$bb" "$ba")" "$(ratio "$bb" "$bd")" "$(ratio "$bd" "$ba")"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

# Peak RSS of one rank (no mpirun) at 1, 2 and 4 threads, 2 steps of each
# shipped config (synthetic data where the real data is not here).
[ "${CNN_BENCH_RSS:-1}" = 1 ] || exit 0
make_synth
cd_opts="--set data.train_dir=$synth/catsdogs/train --set data.test_dir=$synth/catsdogs/test"
rss_cases=("fashion_cnn:" "lenet5_fashion:" "fashion_resnet:" "cifar10_cnn:--set data.dir=$synth/cifar"
           "resnet20_cifar10:--set data.dir=$synth/cifar" "resnet56_cifar10:--set data.dir=$synth/cifar"
           "catsdogs_simple:$cd_opts" "catsdogs_cnn:$cd_opts")
printf '\n%-18s %12s %12s %12s   (peak RSS, MiB, one rank)\n' config 1thr 2thr 4thr
for c in "${rss_cases[@]}"; do
  IFS=: read -r cfg opts <<<"$c"
  read -r -a extra <<<"${opts:-}"
  row=""
  for t in 1 2 4; do
    kb=$(/usr/bin/time -v "$build/cnn-train" "$root/configs/$cfg.ini" --set train.max_steps=2 \
      --set train.epochs=1 --set train.threads="$t" --set train.progress=none \
      --set train.history=none --set data.train_limit=256 --set data.test_limit=64 \
      --set checkpoint.dir="$tmp/ck" --set checkpoint.best=false "${extra[@]}" 2>&1 >/dev/null |
      awk '/Maximum resident set size/ {print $NF}')
    row="$row $(printf '%12.1f' "$(echo "${kb:-0} / 1024" | bc -l)")"
  done
  printf '%-18s%s\n' "$cfg" "$row"
done
