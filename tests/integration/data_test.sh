#!/usr/bin/env bash
# End-to-end tests of the data formats and the cnn-data converter: IDX,
# image folders (made here from Fashion-MNIST, with broken files) and
# synthetic CIFAR-10 batches, converted to HDF5 on 1 and 2 ranks, checked
# pixel for pixel and by training.
#   data_test.sh CASE BUILD_DIR DATA_TOOL SOURCE_DIR
set -uo pipefail
case_name=$1
build=$2
tool=$3
src=$4
fm=/usr/share/datasets/fashion-mnist
. "$src/tests/lib.sh"

# convert NP CONFIG PREFIX [args]: cnn-data convert on NP ranks, output in
# $work/out.NP, exit code returned.
convert() {
  local np=$1
  shift
  # shellcheck disable=SC2046
  timeout 120 mpirun $(mpiflags "$np") -np "$np" "$build/cnn-data" convert "$@" \
    >"$work/out.$np" 2>"$work/err.$np"
}

# A [data] section reading the HDF5 files of PREFIX.
h5_ini() { # h5_ini PREFIX FILE
  printf '[data]\nformat = hdf5\ntrain_file = %s-train.h5\ntest_file = %s-test.h5\n' "$1" "$1" >"$2"
}

case "$case_name" in
convert_idx)
  # A Fashion-MNIST slice from IDX, on 1 and 2 ranks: the same file, the
  # documented layout, and the same pixels and labels as the IDX files.
  printf '[data]\nformat = idx\ndir = %s\ntrain_limit = 2000\ntest_limit = 500\n' "$fm" >"$work/idx.ini"
  for np in 1 2; do
    convert "$np" "$work/idx.ini" "$work/fm$np" || { cat "$work/err.$np"; fail "np $np exit $?"; }
    grep -q "^$work/fm$np-train.h5: 2000 images of 28x28x1 (HxWxC), 10 classes, [0-9]* bytes (pixels 1568000)" "$work/out.$np" ||
      { cat "$work/out.$np"; fail "np $np: no summary of the training file"; }
    grep -q "^converted in .* on $np rank" "$work/out.$np" || fail "np $np: no timing line"
    grep -q "^train_file = $work/fm$np-train.h5$" "$work/out.$np" || fail "np $np: no [data] lines"
  done
  h5diff "$work/fm1-train.h5" "$work/fm2-train.h5" || fail "np 1 and np 2 wrote different training files"
  h5diff "$work/fm1-test.h5" "$work/fm2-test.h5" || fail "np 1 and np 2 wrote different test files"
  h5dump -H -p "$work/fm1-train.h5" >"$work/layout"
  grep -A2 'DATASET "images"' "$work/layout" | grep -q 'H5T_STD_U8LE' || fail "images are not uint8: $(cat "$work/layout")"
  grep -q 'DATASPACE  SIMPLE { ( 2000, 28, 28, 1 ) / ( H5S_UNLIMITED, 28, 28, 1 ) }' "$work/layout" || fail "images shape"
  grep -q 'CHUNKED ( 1, 28, 28, 1 )' "$work/layout" || fail "images are not chunked one image a chunk"
  grep -A2 'DATASET "labels"' "$work/layout" | grep -q 'H5T_STD_I32LE' || fail "labels are not int32"
  grep -q 'DATASPACE  SIMPLE { ( 2000 ) / ( 2000 ) }' "$work/layout" || fail "labels shape"
  h5_ini "$work/fm1" "$work/h5.ini"
  "$tool" compare "$work/idx.ini" "$work/h5.ini" || fail "IDX and HDF5 sets differ"
  # the same bytes as h5dump sees them: the first image and labels
  h5dump -d /images -s "0,0,0,0" -c "1,28,28,1" -b LE -o "$work/img0.bin" "$work/fm1-train.h5" >/dev/null
  zcat "$fm/train-images-idx3-ubyte.gz" | head -c $((16 + 784)) | tail -c 784 >"$work/idx0.bin"
  cmp "$work/img0.bin" "$work/idx0.bin" || fail "image 0 differs from the IDX file"
  "$build/cnn-data" info "$work/fm1-test.h5" >"$work/info" || fail "info failed"
  [ "$(awk '$1 ~ /^[0-9]+$/ {s += $2} END {print s}' "$work/info")" -eq 500 ] || fail "class counts: $(cat "$work/info")"
  ;;
train_same)
  # Acceptance: the same training run from IDX and from the converted file.
  cfg=$src/configs/fashion_cnn.ini
  convert 1 "$cfg" "$work/fc" --set data.train_limit=1200 --set data.test_limit=300 ||
    { cat "$work/err.1"; fail "conversion failed"; }
  run=(--set train.epochs=2 --set train.threads=1 --set data.train_limit=600)
  "$build/cnn-train" "$cfg" "${run[@]}" --set data.test_limit=300 --set train.history="$work/idx.csv" \
    >"$work/idx.out" 2>&1 || { cat "$work/idx.out"; fail "IDX run failed"; }
  "$build/cnn-train" "$cfg" "${run[@]}" --set train.history="$work/h5.csv" --set data.format=hdf5 \
    --set data.train_file="$work/fc-train.h5" --set data.test_file="$work/fc-test.h5" \
    >"$work/h5.out" 2>&1 || { cat "$work/h5.out"; fail "HDF5 run failed"; }
  a=$(grep '^test:' "$work/idx.out") b=$(grep '^test:' "$work/h5.out")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "test results differ: '$a' vs '$b'"
  [ "$(cut -d, -f1-6 "$work/idx.csv")" = "$(cut -d, -f1-6 "$work/h5.csv")" ] ||
    fail "histories differ: $(cat "$work/idx.csv" "$work/h5.csv")"
  ;;
imagefolder)
  # PNG/JPEG/BMP class folders with a broken .jpg and a truncated .png.
  "$tool" folder "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" "$work/f/train" 300 2 ||
    fail "cannot make the folder"
  "$tool" folder "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" "$work/f/test" 60 2 ||
    fail "cannot make the test folder"
  echo "not a jpeg" >"$work/f/train/4/broken.jpg"
  png=$(ls "$work"/f/train/7/*.png | head -1)
  [ -f "$png" ] || fail "no PNG in class 7"
  head -c 90 "$png" >"${png%.png}a.png"
  printf '[data]\nformat = imagefolder\ndir = %s\nimage_size = 28x28\nchannels = 1\n' "$work/f" >"$work/f.ini"
  # fatal (the default): one line, naming the file, exit 2
  convert 2 "$work/f.ini" "$work/bad"
  rc=$?
  [ "$rc" -eq 2 ] || { cat "$work/err.2"; fail "fatal: exit $rc, expected 2"; }
  [ "$(grep -c '^cnn-data: ' "$work/err.2")" -eq 1 ] || { cat "$work/err.2"; fail "fatal: not one message"; }
  grep -Eq "^cnn-data: ($work/f/train/4/broken.jpg|${png%.png}a.png): cannot decode: .*on_bad_image = skip" "$work/err.2" ||
    { cat "$work/err.2"; fail "fatal: the message does not name the file"; }
  ls "$work"/bad-*.h5 2>/dev/null && fail "fatal: files left behind"
  # skip: both listed, counted, and the rest converted the same on 1 and 2 ranks
  for np in 1 2; do
    convert "$np" "$work/f.ini" "$work/f$np" --set data.on_bad_image=skip ||
      { cat "$work/err.$np"; fail "skip np $np failed"; }
    grep -q "^cnn-data: skipped $work/f/train/4/broken.jpg: cannot decode" "$work/err.$np" || fail "broken.jpg not listed"
    grep -q "^cnn-data: skipped ${png%.png}a.png: cannot decode" "$work/err.$np" || fail "truncated PNG not listed"
    grep -q "^$work/f$np-train.h5: 300 images of 28x28x1 (HxWxC), 10 classes" "$work/out.$np" ||
      { cat "$work/out.$np"; fail "np $np: wrong count"; }
    grep -q "^  2 images that do not decode were skipped" "$work/out.$np" || fail "np $np: skipped count"
  done
  h5diff "$work/f1-train.h5" "$work/f2-train.h5" || fail "np 1 and np 2 wrote different files"
  h5dump -d /classes "$work/f1-train.h5" | grep -q '(0): "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"' ||
    fail "class names not stored"
  # the folder without broken files converts pixel for pixel
  h5_ini "$work/f1" "$work/h5.ini"
  sed -i 's/^train_file = .*/train_file = '"${work//\//\\/}"'\/f1-test.h5/' "$work/h5.ini"
  printf '[data]\nformat = imagefolder\ndir = %s\ntrain_dir = test\nimage_size = 28x28\nchannels = 1\n' "$work/f" >"$work/ft.ini"
  "$tool" compare "$work/ft.ini" "$work/h5.ini" || fail "folder and HDF5 differ"
  # an empty class directory: one line naming it, exit 2
  mkdir "$work/f/test/zz"
  convert 1 "$work/ft.ini" "$work/empty"
  rc=$?
  [ "$rc" -eq 2 ] && grep -q "^cnn-data: $work/f/test/zz: no .jpg, .jpeg, .png, .bmp or .gif files" "$work/err.1" ||
    { cat "$work/err.1"; fail "empty class directory: exit $rc"; }
  ;;
cifar10)
  "$tool" cifar "$work/c" 700 200 || fail "cannot make CIFAR batches"
  printf '[data]\nformat = cifar10\ndir = %s\nvalidation = split\nvalidation_split = 0.2\n' "$work/c" >"$work/c.ini"
  convert 2 "$work/c.ini" "$work/c" || { cat "$work/err.2"; fail "conversion failed"; }
  grep -q "^$work/c-train.h5: 560 images of 32x32x3 (HxWxC), 10 classes" "$work/out.2" || { cat "$work/out.2"; fail "train summary"; }
  grep -q "^$work/c-validation.h5: 140 images" "$work/out.2" || fail "validation summary"
  grep -Eq "^ +9 +[0-9]+ +truck$" "$work/out.2" || fail "class names"
  grep -q "^validation_file = $work/c-validation.h5$" "$work/out.2" || fail "no validation_file line"
  printf '[data]\nformat = hdf5\ntrain_file = %s\nvalidation_file = %s\ntest_file = %s\n' \
    "$work/c-train.h5" "$work/c-validation.h5" "$work/c-test.h5" >"$work/h5.ini"
  "$tool" compare "$work/c.ini" "$work/h5.ini" || fail "CIFAR-10 and HDF5 sets differ"
  ;;
errors)
  cfg=$src/configs/fashion_cnn.ini
  "$build/cnn-data" >/dev/null 2>"$work/e"; [ $? -eq 2 ] && grep -q "^usage: cnn-data convert" "$work/e" || fail "usage"
  "$build/cnn-data" convert "$cfg" >/dev/null 2>"$work/e"; [ $? -eq 2 ] && grep -q "needs CONFIG and OUT_PREFIX" "$work/e" || fail "missing prefix"
  "$build/cnn-data" convert "$cfg" "$work/x" --set data.colour=1 >/dev/null 2>"$work/e"
  [ $? -eq 2 ] && grep -q "^cnn-data: --set data.colour: unknown key" "$work/e" || { cat "$work/e"; fail "unknown key"; }
  "$build/cnn-data" convert "$cfg" "$work/nosuch/x" --set data.train_limit=10 --set data.test_limit=10 >/dev/null 2>"$work/e"
  [ $? -ne 0 ] && grep -q "nosuch/x-train.h5: cannot create" "$work/e" || { cat "$work/e"; fail "unwritable output"; }
  [ "$(wc -l <"$work/e")" -eq 1 ] || fail "error is not one line"
  echo text >"$work/t.h5"
  "$build/cnn-data" info "$work/t.h5" >/dev/null 2>"$work/e"; [ $? -eq 2 ] && grep -q "t.h5: not an HDF5 file" "$work/e" || fail "info on text"
  # cnn-train on a broken HDF5 set stops with the file named
  "$build/cnn-train" "$cfg" --set data.format=hdf5 --set data.train_file="$work/t.h5" >/dev/null 2>"$work/e"
  [ $? -eq 2 ] && grep -q "^cnn-train: $work/t.h5: not an HDF5 file$" "$work/e" || { cat "$work/e"; fail "cnn-train on text"; }
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "PASS [$case_name]"
