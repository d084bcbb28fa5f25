#!/usr/bin/env bash
# [data] prefetch: training with the background assembler gives the same
# checkpoints, bit for bit, as without it (Fashion-MNIST with [augment], an
# image folder of JPEGs made by cnn-data jpegs, np 1 and 2); so does
# [data] cache (case cache: on, off, with and without the prefetch, a
# validation split, np 1 and 2); an image that stops decoding in the
# middle of training ends the run at np 2 with one line naming the file
# and exit 2, without hanging (with cache = false: a cached image is not
# read again).
#   prefetch_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
build=$2
src=$3
fm=/usr/share/datasets/fashion-mnist
. "$src/tests/lib.sh"
cd "$work" || exit 1

tiny_model() { # tiny_model SHAPE UNITS
  printf '[train]\nepochs = 2\nbatch_size = 16\nthreads = 1\nprogress = none\nhistory = h.csv\n'
  printf '[optimizer]\ntype = adam\n'
  printf '[augment]\nrotation_range = 15\nwidth_shift_range = 0.1\nhorizontal_flip = true\n'
  printf '[checkpoint]\ndir = ck\n'
  printf '[input]\nshape = %s\n' "$1"
  printf '[conv2d]\nfilters = 4\nkernel = 3\npadding = same\nactivation = relu\n'
  printf '[maxpool2d]\nsize = 2\n[flatten]\n'
  printf '[dense]\nunits = %s\nactivation = softmax\n' "$2"
}
# run NAME NP CONFIG [--set ...]: cnn-train in directory NAME on NP ranks
run() {
  local name=$1 np=$2 cfg=$3
  shift 3
  mkdir -p "$name"
  # shellcheck disable=SC2046
  (cd "$name" && timeout 120 mpirun $(mpiflags "$np") -np "$np" "$build/cnn-train" "$cfg" "$@" \
    >out 2>err)
  local rc=$?
  [ "$rc" -eq 0 ] || { cat "$name/out" "$name/err"; fail "$name: exit $rc"; }
}
# same A B: every checkpoint of A is B's but for the timings and the
# config text (which holds the --set lines that differ); A and B ran on
# as many ranks (a checkpoint records the world size)
same() {
  local n=0 f
  for f in "$1"/ck/ckpt-*.h5; do
    h5diff --exclude-path /config --exclude-path /history/seconds \
      --exclude-path /history/images_per_sec "$f" "$2/ck/$(basename "$f")" ||
      fail "$1 and $2 differ in $(basename "$f")"
    n=$((n + 1))
  done
  [ "$n" -ge 2 ] || fail "$1: $n checkpoints"
  [ "$(grep '^test:' "$1/out")" = "$(grep '^test:' "$2/out")" ] || fail "$1 and $2: test lines differ"
}

case "$case_name" in
idx)
  { tiny_model 28x28x1 10; printf '[data]\ndir = %s\ntrain_limit = 500\ntest_limit = 100\n' "$fm"; } >f.ini
  run off 1 "$work/f.ini" --set data.prefetch=false
  run on 1 "$work/f.ini"
  run on3 1 "$work/f.ini" --set data.loader_threads=3
  run np2off 2 "$work/f.ini" --set data.prefetch=false
  run np2 2 "$work/f.ini" --set data.prefetch=true
  same off on
  same off on3
  same np2off np2
  ;;
imagefolder)
  # JPEGs of 40x40 read at 32x32: decoded, resized and augmented ahead
  printf '[data]\ndir = %s\ntrain_limit = 1200\ntest_limit = 200\n' "$fm" >src.ini
  "$build/cnn-data" jpegs src.ini jp --size 40x40 --classes 3 >jp.out || { cat jp.out; fail "cnn-data jpegs"; }
  grep -q "^jp/train: [0-9]* JPEGs of 40x40x3 in 3 classes$" jp.out || fail "jpegs summary: $(cat jp.out)"
  [ "$(ls jp/train | tr '\n' ' ')" = "0 1 2 " ] || fail "classes: $(ls jp/train)"
  { tiny_model 32x32x3 3; printf '[data]\nformat = imagefolder\ndir = %s/jp\nimage_size = 32x32\n' "$work"; } >f.ini
  run off 1 "$work/f.ini" --set data.prefetch=false
  run on 1 "$work/f.ini" --set data.loader_threads=4
  run np2off 2 "$work/f.ini" --set data.prefetch=false
  run np2 2 "$work/f.ini"
  same off on
  same np2off np2
  ;;
cache)
  # JPEGs of 40x40 read at 32x32, augmented, 3 epochs: the cache's bytes
  # are the decoder's
  printf '[data]\ndir = %s\ntrain_limit = 900\ntest_limit = 150\n' "$fm" >src.ini
  "$build/cnn-data" jpegs src.ini jp --size 40x40 --classes 3 >/dev/null || fail "cnn-data jpegs"
  { tiny_model 32x32x3 3; printf '[data]\nformat = imagefolder\ndir = %s/jp\nimage_size = 32x32\n' "$work"
    printf 'validation = split\nvalidation_split = 0.2\n'; } >f.ini
  sed -i 's/^epochs = 2$/epochs = 3/' f.ini
  run off 1 "$work/f.ini" --set data.cache=false
  run on 1 "$work/f.ini" --set data.cache=true
  run auto 1 "$work/f.ini"
  run on_noprefetch 1 "$work/f.ini" --set data.cache=true --set data.prefetch=false
  run np2off 2 "$work/f.ini" --set data.cache=false
  run np2 2 "$work/f.ini" --set data.cache=true --set data.loader_threads=3
  same off on
  same off auto
  same off on_noprefetch
  same np2off np2
  ;;
bad_image)
  # A file that decodes when training starts and not after epoch 1: at
  # np 2, with prefetch, one line naming it, exit 2, within the timeout.
  # With the cache the file is never read again, so it is off here.
  printf '[data]\ndir = %s\ntrain_limit = 600\ntest_limit = 60\n' "$fm" >src.ini
  "$build/cnn-data" jpegs src.ini jp --size 32x32 >/dev/null || fail "cnn-data jpegs"
  { tiny_model 32x32x3 2; printf '[data]\nformat = imagefolder\ndir = %s/jp\nimage_size = 32x32\n' "$work"; } >f.ini
  sed -i 's/^epochs = 2$/epochs = 500/' f.ini
  victim=$(ls "$work"/jp/train/1/*.jpg | head -1)
  mkdir -p bad
  # shellcheck disable=SC2046
  (cd bad && exec timeout 120 mpirun $(mpiflags 2) -np 2 "$build/cnn-train" "$work/f.ini" \
    --set checkpoint.dir=none --set data.cache=false >out 2>err) &
  pid=$!
  epochs() { if [ -f bad/h.csv ]; then wc -l <bad/h.csv; else echo 0; fi; }
  for _ in $(seq 600); do
    [ "$(epochs)" -ge 2 ] && break
    sleep 0.1
  done
  [ "$(epochs)" -ge 2 ] || fail "no epoch finished: $(cat bad/out bad/err)"
  echo "not a jpeg any more" >"$victim.tmp" && mv "$victim.tmp" "$victim"
  wait "$pid"
  rc=$?
  [ "$rc" -eq 2 ] || { cat bad/out bad/err; fail "exit $rc, not 2 (124: it hung)"; }
  grep -Eq "^cnn-train: (rank [0-9]+: )?epoch [0-9]+ step [0-9]+ \(global step [0-9]+\): $victim: cannot decode" bad/err ||
    { cat bad/err; fail "no line naming $victim"; }
  [ "$(grep -c "cannot decode" bad/err)" -eq 1 ] || { cat bad/err; fail "not one line"; }
  grep "cannot decode" bad/err
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "ok [$case_name]"
