#!/usr/bin/env bash
# The seed tutorials' workflows end to end, on data made here: train a tiny
# CNN on an image folder (with a broken file), on CIFAR-10 binaries and on
# an HDF5 set made by cnn-data, at 1 and 2 ranks; then predict image files,
# draw feature maps and the history plots.
#   workflow_test.sh CASE BUILD_DIR DATA_TOOL SOURCE_DIR
set -uo pipefail
case_name=$1
build=$2
tool=$3
src=$4
fm=/usr/share/datasets/fashion-mnist
. "$src/tests/lib.sh"
cd "$work" || exit 1

# tiny_model SHAPE: a small CNN for 10 classes
tiny_model() {
  printf '[train]\nepochs = 2\nbatch_size = 16\nthreads = 1\nprogress = none\n'
  printf '[optimizer]\ntype = adam\n'
  printf '[input]\nshape = %s\n' "$1"
  printf '[conv2d]\nname = cv1\nfilters = 4\nkernel = 3\npadding = same\nactivation = relu\n'
  printf '[maxpool2d]\nsize = 2\n[flatten]\n'
  printf '[dense]\nunits = 10\nactivation = softmax\n'
}
# train_np NP CONFIG NAME [options]: cnn-train on NP ranks, checkpoints in
# NAME.ck, output in NAME.out
train_np() {
  local np=$1 cfg=$2 name=$3
  shift 3
  # shellcheck disable=SC2046
  timeout 300 mpirun $(mpiflags "$np") -np "$np" "$build/cnn-train" "$cfg" \
    --set checkpoint.dir="$name.ck" "$@" >"$name.out" 2>&1 || { cat "$name.out"; fail "$name failed"; }
}
# same_on_1_and_2 CONFIG [options]: identical weights and test line at np 1 and 2
same_on_1_and_2() {
  local cfg=$1
  shift
  train_np 1 "$cfg" one "$@"
  train_np 2 "$cfg" two "$@"
  [ "$(grep '^test:' one.out)" = "$(grep '^test:' two.out)" ] || fail "test lines differ at np 1 and 2"
  local last
  last=$(ls one.ck | grep '^ckpt-' | sort | tail -1)
  h5diff "one.ck/$last" "two.ck/$last" /model /model || fail "weights differ at np 1 and 2"
  grep '^test:' one.out
}
# png_size FILE: "WIDTHxHEIGHT" from the PNG header
png_size() {
  local w h
  w=$(od -An -tu1 -j16 -N4 "$1" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
  h=$(od -An -tu1 -j20 -N4 "$1" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
  echo "${w}x${h}"
}

case "$case_name" in
imagefolder)
  # cats-vs-dogs style: one folder per class, PNG/JPEG/BMP at 56x56, resized
  # to 28x28 on load, a broken JPEG skipped; then predict and feature maps.
  "$tool" folder "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz" f/train 400 2 &&
    "$tool" folder "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" f/test 100 2 ||
    fail "cannot make the folders"
  echo "not a jpeg" >f/train/3/broken.jpg
  { tiny_model 28x28x1
    printf '[data]\nformat = imagefolder\ndir = %s/f\nimage_size = 28x28\nchannels = 1\n' "$work"
    printf 'on_bad_image = skip\n'
    printf '[augment]\nhorizontal_flip = true\nwidth_shift_range = 0.1\n'
  } >f.ini
  same_on_1_and_2 f.ini --set train.history="$work/h.csv"
  grep -q "^skipped (does not decode): $work/f/train/3/broken.jpg" two.out || { cat two.out; fail "broken file not listed"; }
  grep -q "^classes (10): 0, 1, 2" two.out || fail "classes not printed"
  [ "$(png_size h-accuracy.png)" = 800x600 ] && [ "$(png_size h-loss.png)" = 800x600 ] ||
    fail "plots missing or of the wrong size"
  ck=two.ck/$(ls two.ck | grep '^ckpt-' | sort | tail -1)
  img=$(ls f/test/7/* | head -1)
  "$build/cnn-predict" "$ck" "$img" f/test/2/*.png --top 3 >p.out 2>p.err || { cat p.err; fail "predict"; }
  grep -Eq "^$img: [0-9] \(0\.[0-9]{4}\), [0-9] \(0\.[0-9]{4}\), [0-9] \(0\.[0-9]{4}\)$" p.out ||
    { cat p.out; fail "predict output"; }
  [ "$(wc -l <p.out)" -eq $((1 + $(ls f/test/2/*.png | wc -l))) ] || fail "not one line per image"
  "$build/cnn-predict" "$ck" "$img" --json --top 2 >j.out || fail "predict --json"
  grep -q '"predictions": \[{"class": "[0-9]", "index": [0-9], "probability": 0\.[0-9]*}, {' j.out ||
    { cat j.out; fail "json"; }
  # a file that does not decode: one line naming it, exit 2, the others classified
  "$build/cnn-predict" "$ck" f/train/3/broken.jpg "$img" >b.out 2>b.err
  [ $? -eq 2 ] && grep -q "^cnn-predict: f/train/3/broken.jpg: " b.err && grep -q "^$img:" b.out ||
    { cat b.out b.err; fail "broken image"; }
  # --evaluate names the files of misclassified images
  "$build/cnn-train" --evaluate "$ck" --out ev >ev.out 2>&1 || { cat ev.out; fail "--evaluate"; }
  [ "$(wc -l <ev/misclassified.csv)" -gt 1 ] && tail -n +2 ev/misclassified.csv | cut -d, -f2 |
    grep -qv "^$work/f/test/[0-9]/" && fail "misclassified.csv does not name the files"
  [ -f ev/confusion.csv ] || fail "no confusion.csv"
  "$build/cnn-predict" "$ck" "$img" --feature-maps cv1 --out maps/new --scale 2 >/dev/null 2>m.err ||
    { cat m.err; fail "feature maps"; }
  base=$(basename "${img%.*}")
  # 4 maps of 28x28 at scale 2 in a 2x2 grid with 1-pixel separators
  [ "$(png_size "maps/new/$base-cv1.png")" = 113x113 ] ||
    { cat m.err; fail "feature map grid size $(png_size "maps/new/$base-cv1.png")"; }
  "$build/cnn-predict" "$ck" "$img" --feature-maps nope 2>n.err; [ $? -eq 2 ] &&
    grep -q "no such layer" n.err || fail "unknown layer"
  ;;
cifar10)
  "$tool" cifar c 600 200 || fail "cannot make CIFAR batches"
  { tiny_model 32x32x3; printf '[data]\nformat = cifar10\ndir = %s/c\n' "$work"; } >c.ini
  same_on_1_and_2 c.ini
  grep -q "^classes (10): airplane, automobile, bird" two.out || fail "CIFAR-10 class names"
  ;;
hdf5)
  # Fashion-MNIST converted by cnn-data, trained from HDF5 at np 1 and 2,
  # the same as training from the IDX files.
  { tiny_model 28x28x1; printf '[data]\ntrain_limit = 1000\ntest_limit = 300\n'; } >idx.ini
  # shellcheck disable=SC2046
  mpirun $(mpiflags 2) -np 2 "$build/cnn-data" convert idx.ini fm >conv.out 2>&1 || { cat conv.out; fail "cnn-data"; }
  { tiny_model 28x28x1
    printf '[data]\nformat = hdf5\ntrain_file = %s/fm-train.h5\ntest_file = %s/fm-test.h5\n' "$work" "$work"
  } >h5.ini
  same_on_1_and_2 h5.ini
  train_np 1 idx.ini idx
  [ "$(grep '^test:' idx.out)" = "$(grep '^test:' one.out)" ] || fail "IDX and HDF5 runs differ"
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
