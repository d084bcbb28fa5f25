#!/usr/bin/env bash
# End-to-end tests of the cnn-train program: run as a user would, check
# exit codes, messages and outputs.
#   cli_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
data=/usr/share/datasets/fashion-mnist
. "$src/tests/lib.sh"

# run_expect CODE PATTERN args...: cnn-train must exit with CODE and print
# PATTERN (grep -E) on stderr+stdout; the error, if any, on one line.
run_expect() {
  local code=$1 pattern=$2
  shift 2
  "$bin" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  [ "$rc" -eq "$code" ] || { cat "$work/out" "$work/err"; fail "exit $rc, expected $code: $*"; }
  cat "$work/out" "$work/err" | grep -Eq -- "$pattern" || { cat "$work/out" "$work/err"; fail "no '$pattern' in output of: $*"; }
  if [ "$code" -ne 0 ]; then
    [ "$(wc -l <"$work/err")" -eq 1 ] || { cat "$work/err"; fail "error is not one line: $*"; }
  fi
}

tiny=(--set data.train_limit=600 --set data.test_limit=300 --set train.epochs=2 --set train.threads=1)

case "$case_name" in
summary)
  for pair in fashion_cnn:203,898 lenet5_fashion:44,426 cifar10_cnn:586,250 \
              catsdogs_cnn:5,566,497 catsdogs_simple:3,937,409; do
    cfg=${pair%%:*} total=${pair#*:}
    run_expect 0 "^Total params: $total\$" --summary "$src/configs/$cfg.ini"
    grep -q "^Trainable params: $total\$" "$work/out" || fail "$cfg trainable params"
  done
  # an override changes the summary
  run_expect 0 "^Total params: 203,898\$" --summary "$src/configs/fashion_cnn.ini" --set cv1.filters=16
  run_expect 0 "^ cv1 \(Conv2D\) +\(None, 28, 28, 8\) +80 " --summary "$src/configs/fashion_cnn.ini" --set cv1.filters=8
  ;;
config_errors)
  cfg=$src/configs/fashion_cnn.ini
  sed '0,/^filters = 16$/s//filtres = 16/' "$cfg" >"$work/typo.ini"
  run_expect 2 "typo.ini:[0-9]+: \[conv2d\] filters: missing .*'filtres' at line [0-9]+ a misspelling" --summary "$work/typo.ini"
  sed '0,/^activation = relu$/s//activaton = relu/' "$cfg" >"$work/typo2.ini"
  run_expect 2 "typo2.ini:[0-9]+: \[conv2d\] activaton: unknown key" --summary "$work/typo2.ini"
  run_expect 2 "--set train.epochs: 'two' is not an integer" "$cfg" --set train.epochs=two
  run_expect 2 "--set optimizer.momentum: unknown key" --summary "$cfg" --set optimizer.momentum=0.9
  run_expect 2 "no section or layer named 'nosuch'" --summary "$cfg" --set nosuch.x=1
  run_expect 2 "cannot open config" --summary "$work/missing.ini"
  printf '[train]\nepochs = 1\n[bogus]\nx = 1\n' >"$work/sec.ini"
  run_expect 2 "sec.ini:3: unknown section \[bogus\]" --summary "$work/sec.ini"
  printf '[input]\nshape = 28x28x1\n[flatten]\n[dense]\nunits = 10\nunits = 11\n' >"$work/dup.ini"
  run_expect 2 "dup.ini:6: \[dense\] duplicate key 'units'" --summary "$work/dup.ini"
  run_expect 2 "unknown option '--bogus-flag'" --bogus-flag
  ;;
data_errors)
  cfg=$src/configs/fashion_cnn.ini
  run_expect 2 "nosuch/train-images-idx3-ubyte.gz: cannot open" "$cfg" "${tiny[@]}" --set data.dir="$work/nosuch"
  head -c 100000 "$data/train-images-idx3-ubyte.gz" >"$work/train-images-idx3-ubyte.gz"
  cp "$data"/train-labels-idx1-ubyte.gz "$data"/t10k-* "$work/"
  run_expect 2 "train-images-idx3-ubyte.gz: truncated or corrupt" "$cfg" --set data.dir="$work" --set train.threads=1
  printf 'not an idx file at all' >"$work/train-images-idx3-ubyte.gz"
  run_expect 2 "train-images-idx3-ubyte.gz: not an IDX image file" "$cfg" --set data.dir="$work" --set train.threads=1
  # labels of the wrong kind of file
  cp "$data/train-images-idx3-ubyte.gz" "$work/train-images-idx3-ubyte.gz"
  cp "$data/t10k-images-idx3-ubyte.gz" "$work/train-labels-idx1-ubyte.gz"
  run_expect 2 "train-labels-idx1-ubyte.gz: not an IDX label file" "$cfg" --set data.dir="$work" --set train.threads=1
  # the model's input shape does not match the data
  run_expect 2 "28x28x1 images but \[input\] shape is 32x32x1" "$cfg" "${tiny[@]}" --set input.shape=32x32x1
  ;;
train_tiny)
  cfg=$src/configs/fashion_cnn.ini
  run_expect 0 "^test: loss=[0-9.]+ accuracy=[0-9.]+ correct=[0-9]+ incorrect=[0-9]+$" "$cfg" "${tiny[@]}" \
    --set train.history="$work/h.csv"
  [ "$(head -1 "$work/h.csv")" = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec" ] ||
    fail "history header: $(head -1 "$work/h.csv")"
  [ "$(wc -l <"$work/h.csv")" -eq 3 ] || fail "history should have 2 epoch rows"
  grep -Eq "^1,[0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+,0.001,[0-9.]+,[0-9.]+$" "$work/h.csv" || fail "history row: $(cat "$work/h.csv")"
  line=$(grep "^test:" "$work/out")
  correct=$(echo "$line" | sed -E 's/.* correct=([0-9]+).*/\1/')
  incorrect=$(echo "$line" | sed -E 's/.*incorrect=([0-9]+).*/\1/')
  [ $((correct + incorrect)) -eq 300 ] || fail "correct+incorrect != test_limit: $line"
  # plain progress lines when not on a terminal
  grep -Eq "^2/2 - |^19/19 - " "$work/out" || grep -Eq "^[0-9]+/[0-9]+ - .*val_accuracy" "$work/out" || fail "no epoch line"
  grep -q $'\r' "$work/out" && fail "carriage returns in non-terminal output"
  # learning happened: accuracy well above chance (0.1) after 2 small epochs
  acc=$(echo "$line" | sed -E 's/.*accuracy=([0-9.]+).*/\1/')
  awk -v a="$acc" 'BEGIN{exit !(a > 0.5)}' || fail "accuracy $acc not above 0.5"
  # same seed, same result, run after run
  "$bin" "$cfg" "${tiny[@]}" >"$work/out2" 2>&1
  [ "$(grep '^test:' "$work/out2")" = "$line" ] || fail "not reproducible: $line vs $(grep '^test:' "$work/out2")"
  # the steady figure leaves out the run's first 5 steps (5 x 32 of the 2 x
  # 600 images), counting on across the epoch's end
  grep -Eq "^steady: 1040 images in [0-9.]+s, [0-9]+ img/s after the first 5 steps" "$work/out" ||
    fail "no steady line of 1040 images: $(grep '^steady' "$work/out")"
  # max_steps stops early; 5 steps leave nothing after the warm-up
  run_expect 0 "^training: 5 steps" "$cfg" "${tiny[@]}" --set train.max_steps=5
  grep -q '^steady:' "$work/out" && fail "a steady line after 5 steps: $(grep '^steady' "$work/out")"
  ;;
nan_loss)
  cfg=$src/configs/fashion_cnn.ini
  run_expect 1 "(loss|gradient) is (NaN|infinite)" "$cfg" "${tiny[@]}" --set optimizer.type=sgd --set optimizer.lr=1000 \
    --set cv1.activation=linear --set cv2.activation=linear --set dense.activation=linear
  grep -Eq "epoch 1 step [0-9]+ \(global step [0-9]+\)" "$work/err" || fail "NaN message does not name the step: $(cat "$work/err")"
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "PASS [$case_name]"
