#!/usr/bin/env bash
# configs/resnet20_cifar10.ini on a synthetic CIFAR-10-format set
# (data_tool cifar-pattern: class-dependent gratings, learnable).
#   resnet_test.sh CASE BUILD_DIR SOURCE_DIR DATA_TOOL
set -uo pipefail
case_name=$1
build=$2
src=$3
tool=$4
. "$src/tests/lib.sh"
cd "$work" || exit 1
cfg=$src/configs/resnet20_cifar10.ini

case "$case_name" in
bench_config)
  # cnn-bench takes the shipped config as it is (schedule keys and all)
  "$build/cnn-bench" "$cfg" --threads 1 --steps 2 --warmup 1 >out 2>&1 || { cat out; fail "cnn-bench refused $cfg"; }
  grep -q "^RESULT cnn-bench .*params=273066 train_img_s=" out || { cat out; fail "no RESULT line"; }
  ;;
trains)
  # 2 epochs of 640 samples at np 2 (40 steps, Adam 1e-3, the config's shifts
  # and flips): the training loss falls well below chance (ln 10 = 2.30)
  # and the training accuracy rises far above 0.1
  "$tool" cifar-pattern c 640 200 || fail "cannot make the CIFAR batches"
  # shellcheck disable=SC2046
  timeout 300 mpirun $(mpiflags 2) -np 2 "$build/cnn-train" "$cfg" --set data.dir="$work/c" \
    --set train.epochs=2 --set train.threads=1 --set train.progress=none --set checkpoint.dir=none \
    --set train.history="$work/h.csv" >out 2>&1 || { cat out; fail "training failed"; }
  cat h.csv
  awk -F, 'NR == 3 { exit !($2 < 1.0 && $3 > 0.6) }' h.csv || fail "epoch 2 did not learn (loss, accuracy)"
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
