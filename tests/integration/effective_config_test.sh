#!/usr/bin/env bash
# A checkpoint's /config is the run's effective config (--set applied), so
# every use of the checkpoint rebuilds the network and optimizer that were
# trained; a damaged checkpoint given in place of a config is refused.
#   effective_config_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
build=$2
bin=$build/cnn-train
src=$3
. "$src/tests/lib.sh"
cd "$work" || exit 1

cfg=$src/configs/fashion_cnn.ini
small=(--set data.train_limit=600 --set data.test_limit=300 --set train.threads=1
       --set train.progress=none)

case "$case_name" in
overrides)
  # optimizer, a layer key (cv1 has 16 filters in the file) and the batch size
  "$bin" "$cfg" "${small[@]}" --set optimizer.type=sgd --set optimizer.lr=0.1 \
    --set cv1.filters=8 --set train.batch_size=64 --set train.epochs=1 \
    --set checkpoint.dir=A >train.out 2>&1 || { cat train.out; fail "training"; }
  ck=A/ckpt-e0001-s00000010.h5
  [ -f "$ck" ] || { ls A; fail "no $ck (10 steps of 64)"; }
  # the stored text is INI that parses back to the overridden values
  h5dump -d /config "$ck" >config.dump || fail "h5dump /config"
  grep -Eq 'type = sgd' config.dump && grep -Eq 'filters = 8' config.dump &&
    grep -Eq 'batch_size = 64' config.dump || { cat config.dump; fail "/config lacks the overrides"; }
  # --summary rebuilds cv1 with 8 filters: 8*9+8 = 80 parameters
  "$bin" --summary "$ck" >sum.out 2>&1 || { cat sum.out; fail "--summary of the checkpoint"; }
  grep -Eq '^ *cv1 \(Conv2D\) .* 80 *$' sum.out || { cat sum.out; fail "--summary does not show cv1 with 8 filters"; }
  # training on from the checkpoint with only a new epoch count: sgd, 8 filters, batch 64
  "$bin" "$ck" --set train.epochs=2 --set checkpoint.dir=B >cont.out 2>&1 ||
    { cat cont.out; fail "training on from the checkpoint refused"; }
  grep -q "resumed from $ck after epoch 1" cont.out && grep -q "global batch 64" cont.out &&
    [ -f B/ckpt-e0002-s00000020.h5 ] || { cat cont.out; ls B; fail "did not continue with batch 64"; }
  # and the continued checkpoint still holds the overrides
  h5dump -d /config B/ckpt-e0002-s00000020.h5 | grep -q 'type = sgd' || fail "continued /config lost sgd"
  # --evaluate and cnn-predict rebuild the trained network
  mkdir ev
  "$bin" --evaluate "$ck" --out ev >ev.out 2>&1 || { cat ev.out; fail "--evaluate of the checkpoint"; }
  [ "$(grep '^test:' ev.out)" = "$(grep '^test:' train.out)" ] || fail "--evaluate differs from training's test line"
  { printf 'P5\n28 28\n255\n'; head -c 784 /dev/urandom; } >img.pgm
  "$build/cnn-predict" "$ck" img.pgm --top 2 >p.out 2>p.err || { cat p.err; fail "cnn-predict of the checkpoint"; }
  grep -q 'img.pgm' p.out || { cat p.out; fail "predict output"; }
  # a key added by --set (absent from the file) and a section added by it
  "$bin" "$cfg" "${small[@]}" --set train.epochs=1 --set cv2.kernel_initializer=he_normal \
    --set dist.chunk_size=16 --set checkpoint.dir=C >c.out 2>&1 || { cat c.out; fail "training C"; }
  h5dump -d /config C/ckpt-e0001-s00000019.h5 >c.dump
  grep -q 'kernel_initializer = he_normal' c.dump && grep -q '\[dist\]' c.dump &&
    grep -q 'chunk_size = 16' c.dump || { cat c.dump; fail "/config lacks the added key or section"; }
  "$bin" --summary C/ckpt-e0001-s00000019.h5 >/dev/null 2>&1 || fail "--summary of C"
  # --resume is not part of the config: a checkpoint resumed from does not name it
  "$bin" "$cfg" "${small[@]}" --set train.epochs=2 --set checkpoint.dir=C --resume auto >r.out 2>&1 ||
    { cat r.out; fail "resume C"; }
  h5dump -d /config C/ckpt-e0002-s00000038.h5 | grep -Eq '^ *"?resume =' && fail "/config holds --resume"
  # history = none turns the CSV (and its plots) off, as checkpoint.dir = none does
  "$bin" "$cfg" "${small[@]}" --set train.epochs=1 --set train.history=none \
    --set checkpoint.dir=none >n.out 2>&1 || { cat n.out; fail "history = none"; }
  ls none* 2>/dev/null && fail "history = none wrote a file called none"
  ;;
damaged_as_config)
  # A truncated, damaged or foreign file in place of the config, through
  # every command that reads a config: one line naming the file, exit 2.
  "$bin" "$cfg" "${small[@]}" --set train.epochs=1 --set checkpoint.dir=A >train.out 2>&1 ||
    { cat train.out; fail "training"; }
  ck=A/ckpt-e0001-s00000019.h5
  head -c $(($(stat -c %s "$ck") / 2)) "$ck" >half.h5
  head -c 2000 "$ck" >head.h5
  cp "$ck" cfgflip.h5
  # a damaged byte inside the /config string (its address from h5ls)
  off=$(grep -boa '\[train\]' "$ck" | head -1 | cut -d: -f1)
  [ -n "$off" ] || fail "no [train] in $ck"
  printf '\x00' | dd of=cfgflip.h5 bs=1 seek=$((off + 1)) conv=notrunc status=none
  for f in half.h5 head.h5 cfgflip.h5; do
    for how in train summary evaluate; do
      case $how in
      train) "$bin" "$f" --set train.epochs=2 >o.out 2>o.err ;;
      summary) "$bin" --summary "$f" >o.out 2>o.err ;;
      evaluate) "$bin" --evaluate "$f" --out ev >o.out 2>o.err ;;
      esac
      rc=$?
      [ "$rc" -eq 2 ] || { cat o.err; fail "$how $f: exit $rc, expected 2"; }
      [ "$(wc -l <o.err)" -eq 1 ] && grep -qF "$f" o.err || { cat o.err; fail "$how $f: not one line naming the file"; }
    done
    "$build/cnn-predict" "$f" /dev/null >o.out 2>o.err
    rc=$?
    [ "$rc" -eq 2 ] && grep -qF "$f" o.err || { cat o.err; fail "cnn-predict $f: exit $rc"; }
  done
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
