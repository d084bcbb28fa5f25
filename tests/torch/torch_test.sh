#!/usr/bin/env bash
# An independent check against PyTorch (tests/torch/torch_check.py): a
# residual BatchNormalization network (tests/mpi/resbn_cnn.ini) trained by
# cnn-train, rebuilt in PyTorch from `cnn-train --summary --json`; the test
# set's logits and accuracy, and one SGD step on one batch, must agree.
# Skipped (77) when /usr/bin/python3 lacks torch, numpy or h5py.
#   torch_test.sh CASE BUILD_DIR SOURCE_DIR LOGITS_DUMP
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
dump=$4
. "$src/tests/lib.sh"
cd "$work" || exit 1
py=/usr/bin/python3
for mod in torch numpy h5py; do
  "$py" -c "import $mod" 2>/dev/null || {
    echo "SKIP [$case_name]: $py has no module $mod (apt-get install python3-torch python3-h5py)"
    exit 77
  }
done

cfg=$src/tests/mpi/resbn_cnn.ini
common=(--set train.threads=1 --set train.progress=none)
case "$case_name" in
resbn)
  # A: 2 epochs of 512 samples (batches of 32, BN over chunks of 16), the
  # schedule and optimizer of the config; tested on 500 samples.
  "$bin" "$cfg" "${common[@]}" --set data.train_limit=512 --set data.test_limit=500 \
    --set train.epochs=2 --set train.batch_size=32 --set dist.chunk_size=16 --set checkpoint.dir=A >a.out 2>&1 ||
    { cat a.out; fail "training failed"; }
  a=A/ckpt-e0002-s00000032.h5
  [ -f $a ] || { ls A; fail "no $a"; }
  correct=$(sed -n 's/^test: .* correct=\([0-9]*\) .*/\1/p' a.out)
  [ -n "$correct" ] || { cat a.out; fail "no test line"; }
  "$dump" $a logits.bin data.test_limit=500 || fail "logits_dump failed"
  # B: A continued for one step whose global batch is the first 16 training
  # samples, one reduction chunk (BN statistics over the whole batch)
  "$bin" $a "${common[@]}" --set data.train_limit=16 --set train.batch_size=16 \
    --set dist.chunk_size=16 --set train.epochs=3 --set checkpoint.dir=B >b.out 2>&1 ||
    { cat b.out; fail "the step failed"; }
  b=B/ckpt-e0003-s00000033.h5
  [ -f $b ] || { cat b.out; ls B; fail "no $b"; }
  "$bin" --summary --json $a >graph.json || fail "--summary --json failed"
  "$py" "$src/tests/torch/torch_check.py" --summary graph.json --before $a --after $b \
    --logits logits.bin --correct "$correct" --train-n 16 --test-n 500 || fail "PyTorch disagrees"
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
