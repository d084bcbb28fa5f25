#!/usr/bin/env bash
# Checkpoints through the cnn-train program: exact resume, bad files.
#   ckpt_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
. "$src/tests/lib.sh"
cd "$work" || exit 1

cfg=$src/configs/fashion_cnn.ini
# 600 samples in batches of 32: 19 steps an epoch, the last one partial.
small=(--set data.train_limit=600 --set data.test_limit=300 --set train.threads=1
       --set train.progress=none)

# run NAME EXPECTED_EXIT [options...]: output in NAME.out, errors in NAME.err
run() {
  local name=$1 code=$2
  shift 2
  "$bin" "$cfg" "${small[@]}" "$@" >"$name.out" 2>"$name.err"
  local rc=$?
  [ "$rc" -eq "$code" ] || { cat "$name.out" "$name.err"; fail "$name: exit $rc, expected $code"; }
}
# same_model A B: the weights and optimizer state of two checkpoints are bit-identical
same_model() {
  h5diff "$1" "$2" /model /model >/dev/null || fail "weights of $1 and $2 differ"
  h5diff "$1" "$2" /optimizer /optimizer >/dev/null || fail "optimizer state of $1 and $2 differs"
}
# metrics of a history CSV without the time columns
metrics() { cut -d, -f1-6 "$1"; }

case "$case_name" in
resume_exact)
  # 4 epochs straight == 2 epochs, then resumed to 4 == stopped in the
  # middle of epoch 2 (max_steps 25 = step 6 of epoch 2), then resumed.
  run straight 0 --set train.epochs=4 --set checkpoint.dir=A --set train.history=A.csv
  final=ckpt-e0004-s00000076.h5
  [ -f "A/$final" ] || { ls A; fail "no $final"; }
  [ "$(ls A/ckpt-*.h5 | wc -l)" -eq 3 ] || { ls A; fail "keep = 3 not applied"; }
  run first 0 --set train.epochs=2 --set checkpoint.dir=B --set train.history=B.csv
  run second 0 --set train.epochs=4 --set checkpoint.dir=B --set train.history=B.csv --resume auto
  grep -q "resumed from B/ckpt-e0002-s00000038.h5 after epoch 2" second.out || { cat second.out; fail "not resumed"; }
  same_model "A/$final" "B/$final"
  [ "$(metrics A.csv)" = "$(metrics B.csv)" ] || { diff <(metrics A.csv) <(metrics B.csv); fail "history differs"; }
  run mid 0 --set train.epochs=4 --set train.max_steps=25 --set checkpoint.dir=M --set train.history=M.csv
  [ -f M/ckpt-e0001-s00000025.h5 ] || { ls M; fail "no mid-epoch checkpoint"; }
  run mid2 0 --set train.epochs=4 --set checkpoint.dir=M --set train.history=M.csv --resume auto
  grep -q "in epoch 2 after step 6 (global step 25)" mid2.out || { cat mid2.out; fail "not resumed mid-epoch"; }
  same_model "A/$final" "M/$final"
  [ "$(metrics A.csv)" = "$(metrics M.csv)" ] || { diff <(metrics A.csv) <(metrics M.csv); fail "history differs"; }
  [ "$(grep '^test:' straight.out)" = "$(grep '^test:' mid2.out)" ] || fail "test lines differ"
  # resume = auto in an empty directory starts afresh
  run fresh 0 --set train.epochs=1 --set checkpoint.dir=E --resume auto
  grep -q resumed fresh.out && fail "resumed from nothing"
  # a checkpoint in place of the config continues training from it
  "$bin" "A/$final" "${small[@]}" --set train.epochs=5 --set checkpoint.dir=C >cont.out 2>&1 ||
    { cat cont.out; fail "training from a checkpoint failed"; }
  grep -q "resumed from A/$final after epoch 4" cont.out && [ -f C/ckpt-e0005-s00000095.h5 ] ||
    { cat cont.out; fail "did not continue from the checkpoint"; }
  ;;
checkpoint_uses)
  # --summary and --evaluate take a checkpoint; best.h5 by validation accuracy.
  run train 0 --set train.epochs=2 --set checkpoint.dir=A --set checkpoint.best=true
  ck=A/ckpt-e0002-s00000038.h5
  [ -f A/best.h5 ] || fail "no best.h5"
  "$bin" --summary "$ck" >sum.out 2>&1 || { cat sum.out; fail "--summary of a checkpoint"; }
  grep -q "Total params: 203,898" sum.out || { cat sum.out; fail "summary"; }
  h5dump -H "$ck" >dump.out 2>&1 || fail "h5dump cannot read $ck"
  for name in '"format_version"' '"config"' '"model"' '"cv1"' '"kernel"' '"optimizer"' '"state"' '"history"'; do
    grep -q "$name" dump.out || fail "h5dump -H shows no $name"
  done
  mkdir ev
  "$bin" --evaluate "$ck" --set data.test_limit=300 --out ev >ev.out 2>&1 || { cat ev.out; fail "--evaluate"; }
  grep -q "^test: loss=" ev.out && grep -q "precision" ev.out && grep -q "confusion matrix" ev.out ||
    { cat ev.out; fail "evaluate report"; }
  [ "$(wc -l <ev/confusion.csv)" -eq 11 ] || { cat ev/confusion.csv; fail "confusion.csv is not 10x10"; }
  incorrect=$(sed -nE 's/^test: .*incorrect=([0-9]+)$/\1/p' ev.out)
  [ "$(($(wc -l <ev/misclassified.csv) - 1))" -eq "$incorrect" ] || fail "misclassified.csv rows != $incorrect"
  # every_steps and every_minutes write mid-epoch checkpoints (19 steps an epoch)
  run steps 0 --set train.epochs=1 --set checkpoint.dir=S --set checkpoint.every_steps=5 \
    --set checkpoint.keep=10
  [ "$(ls S | grep ^ckpt- | tr '\n' ' ')" = "ckpt-e0000-s00000005.h5 ckpt-e0000-s00000010.h5 ckpt-e0000-s00000015.h5 ckpt-e0001-s00000019.h5 " ] ||
    { ls S; fail "every_steps = 5"; }
  run minutes 0 --set train.epochs=1 --set checkpoint.dir=T --set checkpoint.every_minutes=0.000001 \
    --set checkpoint.keep=100
  [ "$(ls T | wc -l)" -ge 10 ] || { ls T; fail "every_minutes: $(ls T | wc -l) checkpoints"; }
  # the evaluation equals the training run's own test line
  [ "$(grep '^test:' ev.out)" = "$(grep '^test:' train.out)" ] || fail "evaluate differs from training's test line"
  ;;
bad_checkpoints)
  run train 0 --set train.epochs=1 --set checkpoint.dir=A
  ck=A/ckpt-e0001-s00000019.h5
  # bad_resume NAME PATTERN FILE [options]: exit 2 with one line naming FILE
  bad_resume() {
    local name=$1 pattern=$2 file=$3
    shift 3
    run "$name" 2 --set train.epochs=2 --resume "$file" "$@"
    [ "$(wc -l <"$name.err")" -eq 1 ] || { cat "$name.err"; fail "$name: not one line"; }
    grep -Eq -- "$pattern" "$name.err" || { cat "$name.err"; fail "$name: no '$pattern'"; }
    grep -qF -- "$file" "$name.err" || { cat "$name.err"; fail "$name: file not named"; }
  }
  echo "not a checkpoint" >text.h5
  bad_resume not_hdf5 "not an HDF5 file|cannot open" text.h5
  bad_resume missing "cannot|no such|does not exist" nothere.h5
  head -c $(($(stat -c %s "$ck") / 2)) "$ck" >half.h5
  bad_resume truncated "truncated" half.h5
  # a damaged byte inside the dense kernel's data (address from h5ls)
  addr=$(h5ls -va "$ck/model/dense/kernel" | sed -nE 's/^ *Address: ([0-9]+)$/\1/p')
  [ -n "$addr" ] || fail "no address of /model/dense/kernel"
  cp "$ck" flip.h5
  printf '\x5a' | dd of=flip.h5 bs=1 seek=$((addr + 1000)) conv=notrunc status=none
  bad_resume flipped "checksum mismatch in /model/dense/kernel" flip.h5
  # another model: LeNet-5's config on the fashion_cnn checkpoint
  "$bin" "$src/configs/lenet5_fashion.ini" "${small[@]}" --resume "$ck" >other.out 2>other.err
  [ $? -eq 2 ] && grep -Eq "written for another network" other.err ||
    { cat other.err; fail "another model's checkpoint"; }
  bad_resume shape "/model/cv1/kernel has shape 16x1x3x3 but the model.s is 8x1x3x3" "$ck" \
    --set cv1.filters=8
  bad_resume optimizer "optimizer is rmsprop but the run's is adam" "$ck" --set optimizer.type=adam
  bad_resume seed "trained with seed 42 but \[train\] seed is 7" "$ck" --set train.seed=7
  # nothing was damaged by the failed attempts
  h5diff "$ck" "$ck" >/dev/null || fail "checkpoint unreadable after the failures"
  ;;
disk_full)
  # A checkpoint write that runs out of space: one line naming the file,
  # exit 2, no crash, no temporary file left, the older checkpoint intact.
  # Needs root for a small tmpfs (skipped otherwise).
  tiny=(--set dense.units=4 --set checkpoint.best=false) # a 135 kB checkpoint
  run first 0 --set train.epochs=1 --set checkpoint.dir=A "${tiny[@]}"
  old=ckpt-e0001-s00000019.h5
  mkdir full
  [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=300k tmpfs full 2>/dev/null || {
    echo "SKIP [$case_name]: needs root to mount a tmpfs"; exit 77; }
  trap 'umount "$work/full"; rm -rf "$work"' EXIT
  cp "A/$old" full/
  # leave 8 kB free: the next checkpoint gets created, then cannot be written
  free_kb=$(df -k --output=avail full | tail -1)
  dd if=/dev/zero of=full/filler bs=1k count=$((free_kb - 8)) status=none
  run full 2 --set train.epochs=2 --set checkpoint.dir=full --resume auto "${tiny[@]}"
  grep -q "resumed from full/$old" full.out || { cat full.out; fail "did not resume"; }
  [ "$(wc -l <full.err)" -eq 1 ] || { cat full.err; fail "not one line"; }
  grep -qF "full/ckpt-e0002-s00000038.h5: " full.err && grep -q "No space left on device" full.err ||
    { cat full.err; fail "the error does not name the file and the full disk"; }
  [ -z "$(ls -A full | grep '^\.')" ] || { ls -A full; fail "temporary file left behind"; }
  cmp -s "A/$old" "full/$old" || fail "the older checkpoint changed"
  # it still loads: training resumes from it elsewhere
  run again 0 --set train.epochs=2 --set checkpoint.dir=B --resume "full/$old" "${tiny[@]}"
  [ -f B/ckpt-e0002-s00000038.h5 ] || { cat again.out; fail "no resume from the older checkpoint"; }
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
