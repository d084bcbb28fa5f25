#!/usr/bin/env bash
# Does the data pipeline make training wait? For each shipped config, the
# engine alone (cnn-bench: one synthetic batch, no data) beside real
# training on data (cnn-train --set train.max_steps=S, the "training:"
# figure, which leaves out start-up and evaluation), alternating, best of
# REPS each, and real / engine. Data made here: Fashion-MNIST from
# /usr/share/datasets, a synthetic CIFAR-10-format set (tests' data_tool)
# and an image folder of 224x224 RGB JPEGs (cnn-data jpegs from
# Fashion-MNIST classes 0 and 1) for the catsdogs configs.
#   bash launch/bench_data.sh [REPS] [THREADS]
# CNN_BUILD: the build (default build/); CNN_BUILD_BEFORE: a second build
# timed in the same rounds (real training only), e.g. one without prefetch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${1:-3}
threads=${2:-1}
build=${CNN_BUILD:-$root/build}
before=${CNN_BUILD_BEFORE:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$build/tests/data_tool" cifar "$tmp/cifar" 4000 200 >/dev/null
printf '[data]\ndir = /usr/share/datasets/fashion-mnist\ntrain_limit = 12000\ntest_limit = 500\n' \
  >"$tmp/src.ini"
"$build/cnn-data" jpegs "$tmp/src.ini" "$tmp/jpg" >/dev/null

engine() { # engine CONFIG STEPS
  "$build/cnn-bench" "$root/configs/$1.ini" --threads "$threads" --steps "$2" |
    sed -E 's/.*train_img_s=([0-9.]+).*/\1/'
}
real() { # real BUILD CONFIG STEPS [--set ...]
  local b=$1 cfg=$2 steps=$3
  shift 3
  "$b/cnn-train" "$root/configs/$cfg.ini" --set train.max_steps="$steps" --set train.epochs=1 \
    --set train.threads="$threads" --set data.test_limit=100 --set train.progress=none \
    --set checkpoint.dir=none --set train.history="$tmp/h.csv" "$@" |
    grep '^training:' | sed -E 's/.* ([0-9.]+) img\/s/\1/'
}
best() { printf '%s\n' "$@" | sort -g | tail -1; }

folder=(--set data.train_dir="$tmp/jpg/train" --set data.test_dir="$tmp/jpg/test")
printf '%-16s %6s %11s %11s %7s' config steps engine_img_s real_img_s real/eng
[ -n "$before" ] && printf ' %11s %7s' before_img_s bef/eng
printf '\n'
for spec in fashion_cnn:300 lenet5_fashion:150 cifar10_cnn:100 catsdogs_simple:60 catsdogs_cnn:8; do
  IFS=: read -r cfg steps <<<"$spec"
  extra=()
  case $cfg in
  cifar10_cnn) extra=(--set data.dir="$tmp/cifar") ;;
  catsdogs_*) extra=("${folder[@]}") ;;
  esac
  e=() r=() o=()
  for _ in $(seq "$reps"); do
    e+=("$(engine "$cfg" "$steps")")
    r+=("$(real "$build" "$cfg" "$steps" "${extra[@]}")")
    [ -n "$before" ] && o+=("$(real "$before" "$cfg" "$steps" "${extra[@]}")")
  done
  eb=$(best "${e[@]}") rb=$(best "${r[@]}")
  printf '%-16s %6s %11.1f %11.1f %7.3f' "$cfg" "$steps" "$eb" "$rb" \
    "$(awk -v a="$rb" -v b="$eb" 'BEGIN{print a/b}')"
  if [ -n "$before" ]; then
    ob=$(best "${o[@]}")
    printf ' %11.1f %7.3f' "$ob" "$(awk -v a="$ob" -v b="$eb" 'BEGIN{print a/b}')"
  fi
  printf '\n'
done
echo "threads=$threads reps=$reps (best of reps; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F))"
