#!/usr/bin/env bash
# Training throughput of cnn-train beside PyTorch CPU, same model, batch and
# thread count, measured in one run (alternating, best of REPS each), and
# the ratio. Needs a build (launch/test.sh or quickstart.sh) and, for the
# peer, python3-torch (apt-get install python3-torch).
#   bash launch/bench.sh [THREADS] [REPS]
# Rows:
#   synthetic - one random batch, 5 warm-up steps then timed steps
#               (cnn-bench vs torch_train.py --synthetic): engine speed
#   real      - Fashion-MNIST, shuffled batches, first 300 steps of an epoch
#               (cnn-train --set train.max_steps=300 vs torch_train.py
#               --max-steps 300, which excludes its first 20 steps)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=${1:-1}
reps=${2:-3}
build=${CNN_BUILD:-$root/build}
peer=${CNN_PEER:-$root/../shared/bench/torch_train.py}
py=/usr/bin/python3
have_torch=1
[ -f "$peer" ] && $py -c "import torch" 2>/dev/null || have_torch=0
[ "$have_torch" = 1 ] || echo "note: PyTorch peer not available ($peer, python3-torch); ours only"
blas=""
[ "$threads" -gt 1 ] && blas="--blas-threads 1"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ours_synth() { "$build/cnn-bench" "$root/configs/$1.ini" --threads "$threads" --steps "$2" |
  sed -E 's/.*train_img_s=([0-9.]+).*/\1/'; }
ours_real() { "$build/cnn-train" "$root/configs/$1.ini" --set train.max_steps=300 --set train.epochs=1 \
  --set train.threads="$threads" --set data.test_limit=1000 --set train.progress=none \
  --set checkpoint.dir=none --set train.history="$tmp/h.csv" |
  grep '^training:' | sed -E 's/.* ([0-9.]+) img\/s/\1/'; }
torch_synth() { OMP_NUM_THREADS=$threads $py "$peer" --model "$1" --threads "$threads" $blas --synthetic \
  --steps "$2" "${@:3}" | grep RESULT | sed -E 's/.*train_img_s=([0-9.]+).*/\1/'; }
torch_real() { $py "$peer" --model "$1" --threads "$threads" $blas --epochs 1 --max-steps 300 |
  grep 'RESULT summary' | sed -E 's/.*steady_train_img_s=([0-9.]+).*/\1/'; }
best() { printf '%s\n' "$@" | sort -g | tail -1; }

printf '%-16s %-9s %6s %12s %12s %7s\n' model mode batch ours_img_s torch_img_s ratio
for spec in fashion_cnn:fashion:32:100 lenet5_fashion:lenet5:128:50; do
  IFS=: read -r cfg tm batch steps <<<"$spec"
  for mode in synthetic real; do
    o=() t=()
    for _ in $(seq "$reps"); do
      if [ "$mode" = synthetic ]; then o+=("$(ours_synth "$cfg" "$steps")"); else o+=("$(ours_real "$cfg")"); fi
      if [ "$have_torch" = 1 ]; then
        if [ "$mode" = synthetic ]; then t+=("$(torch_synth "$tm" "$steps")"); else t+=("$(torch_real "$tm")"); fi
      fi
    done
    ob=$(best "${o[@]}")
    if [ "$have_torch" = 1 ]; then
      tb=$(best "${t[@]}")
      printf '%-16s %-9s %6s %12.0f %12.0f %6.2fx\n' "$cfg" "$mode" "$batch" "$ob" "$tb" \
        "$(awk -v a="$ob" -v b="$tb" 'BEGIN{print a/b}')"
    else
      printf '%-16s %-9s %6s %12.0f %12s %7s\n' "$cfg" "$mode" "$batch" "$ob" - -
    fi
  done
done
# resnet20 (no CIFAR-10 in Debian): synthetic only, against PyTorch's
# better layout (NCHW or --channels-last, both timed in every rep)
o=() t=()
for _ in $(seq "$reps"); do
  o+=("$(ours_synth resnet20_cifar10 30)")
  if [ "$have_torch" = 1 ]; then
    t+=("$(torch_synth resnet20 30)" "$(torch_synth resnet20 30 --channels-last)")
  fi
done
ob=$(best "${o[@]}")
if [ "$have_torch" = 1 ]; then
  tb=$(best "${t[@]}")
  printf '%-16s %-9s %6s %12.0f %12.0f %6.2fx\n' resnet20_cifar10 synthetic 32 "$ob" "$tb" \
    "$(awk -v a="$ob" -v b="$tb" 'BEGIN{print a/b}')"
else
  printf '%-16s %-9s %6s %12.0f %12s %7s\n' resnet20_cifar10 synthetic 32 "$ob" - -
fi
echo "threads=$threads reps=$reps (best of reps; $(nproc) cores; $(date -u +%F))"
