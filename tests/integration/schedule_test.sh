#!/usr/bin/env bash
# Learning-rate schedules and the callbacks through cnn-train: the
# history's lr column, early stopping with restored weights, a plateau
# lowering the rate, and exact resume mid-epoch with all of them.
#   schedule_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
. "$src/tests/lib.sh"
cd "$work" || exit 1

cfg=$src/configs/fashion_cnn.ini
# 608 samples in batches of 32: 19 steps an epoch
small=(--set data.train_limit=608 --set data.test_limit=300 --set train.threads=1
       --set train.progress=none --set train.epochs=6
       --set optimizer.schedule=cosine --set optimizer.warmup_epochs=1
       # val_accuracy never beats its best by 0.5: the rate halves every 2 epochs
       --set reduce_lr_on_plateau.monitor=val_accuracy --set reduce_lr_on_plateau.min_delta=0.5
       --set reduce_lr_on_plateau.patience=2 --set reduce_lr_on_plateau.factor=0.5
       # val_loss never improves by 10: training stops after epoch 4, epoch 1's weights back
       --set early_stopping.min_delta=10 --set early_stopping.patience=3
       --set early_stopping.restore_best_weights=true --set checkpoint.keep=10)

run() {
  local name=$1
  shift
  "$bin" "$cfg" "${small[@]}" "$@" >"$name.out" 2>"$name.err" || { cat "$name.out" "$name.err"; fail "$name failed"; }
}
same() {
  for g in /model /optimizer /callbacks; do
    h5diff "$1" "$2" $g $g >/dev/null || fail "$g of $1 and $2 differ"
  done
}
lr_of() { cut -d, -f6 "$1" | tail -n +2 | tr '\n' ' '; }

case "$case_name" in
resume_exact)
  run straight --set checkpoint.dir=A --set train.history=A.csv
  grep -q "^Epoch 4: early stopping; restoring the weights of epoch 1" straight.out ||
    { cat straight.out; fail "no early stop after epoch 4"; }
  grep -q "ReduceLROnPlateau reducing learning rate" straight.out || { cat straight.out; fail "no plateau"; }
  [ "$(tail -n +2 A.csv | wc -l)" -eq 4 ] || { cat A.csv; fail "not 4 epochs"; }
  final=A/ckpt-e0004-s00000076.h5
  [ -f "$final" ] || { ls A; fail "no $final"; }
  # the rate of each epoch's last update: warm-up then cosine, halved for epoch 4 (after 3 epochs without a better val_accuracy)
  lrs=($(lr_of A.csv))
  awk -v a="${lrs[0]}" -v b="${lrs[1]}" -v c="${lrs[2]}" -v d="${lrs[3]}" \
    'BEGIN { exit !(a > b && b > c && c > d && d < c * 0.55) }' || fail "lr column ${lrs[*]}"
  # the restored weights are epoch 1's: the early-stopped checkpoint's model equals epoch 1's
  h5diff "$final" A/ckpt-e0001-s00000019.h5 /model /model >/dev/null ||
    fail "the weights after the stop are not epoch 1's"
  h5diff "$final" A/ckpt-e0001-s00000019.h5 /optimizer /optimizer >/dev/null &&
    fail "the optimizer state went back too (Keras restores the weights only)"
  # interrupted in the middle of epoch 2 (step 25), then resumed
  run first --set checkpoint.dir=B --set train.history=B.csv --set train.max_steps=25
  [ -f B/ckpt-e0001-s00000025.h5 ] || { ls B; fail "no mid-epoch checkpoint"; }
  run second --set checkpoint.dir=B --set train.history=B.csv --resume auto
  same "$final" B/ckpt-e0004-s00000076.h5
  diff <(cut -d, -f1-6 A.csv) <(cut -d, -f1-6 B.csv) || fail "histories differ"
  [ "$(grep '^test:' straight.out)" = "$(grep '^test:' second.out)" ] || fail "test lines differ"
  # resumed after the stop: it stays stopped, the same test result
  run third --set checkpoint.dir=B --set train.history=C.csv --resume auto
  grep -q "^Epoch" third.out && { cat third.out; fail "trained on after early stopping"; }
  [ "$(grep '^test:' straight.out)" = "$(grep '^test:' third.out)" ] || fail "test line after the stop"
  ;;
validation_freq)
  # [train] validation_freq = 2 (Keras fit's): val_ figures after epochs 2,
  # 4 and 6 only; the plateau (patience 1) counts validated epochs only, so
  # it lowers the rate after epochs 4 and 6, never after an unvalidated one.
  "$bin" "$cfg" --set data.train_limit=608 --set data.test_limit=300 --set train.threads=1 \
    --set train.progress=lines --set train.epochs=6 --set train.validation_freq=2 \
    --set reduce_lr_on_plateau.monitor=val_accuracy --set reduce_lr_on_plateau.min_delta=0.5 \
    --set reduce_lr_on_plateau.patience=1 --set train.history=V.csv --set checkpoint.dir=V \
    >v.out 2>v.err || { cat v.out v.err; fail "validation_freq run failed"; }
  got=$(tail -n +2 V.csv | awk -F, '{ printf "%s", ($4 == "" && $5 == "") ? "-" : "v" }')
  [ "$got" = "-v-v-v" ] || { cat V.csv; fail "validated epochs $got, expected -v-v-v"; }
  [ "$(grep -c 'val_accuracy: ' v.out)" -eq 3 ] || { cat v.out; fail "not 3 epoch lines with val_"; }
  [ "$(grep 'ReduceLROnPlateau' v.out | cut -d: -f1 | tr '\n' ' ')" = "Epoch 4 Epoch 6 " ] ||
    { cat v.out; fail "the plateau did not act after epochs 4 and 6 only"; }
  [ -f V/best.h5 ] || { ls V; fail "no best checkpoint from the validated epochs"; }
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
