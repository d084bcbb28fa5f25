#!/usr/bin/env bash
# cnn-plot end to end: the history a real cnn-train run writes becomes two
# 800x600 PNGs; usage and file errors exit 2 with one line naming the file.
#   plot_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
bin=$1
src=$2
case_name=cnn-plot
. "$src/tests/lib.sh"

# png_size FILE: "WIDTHxHEIGHT" from the IHDR chunk (bytes 16-23).
png_size() {
  od -An -tu1 -j16 -N8 "$1" | awk '{printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'
}

# a history as cnn-train writes it, from two tiny epochs
"$bin/cnn-train" "$src/configs/fashion_cnn.ini" --set data.train_limit=600 --set data.test_limit=300 \
  --set train.epochs=2 --set train.threads=1 --set train.history="$work/h.csv" >"$work/train.out" 2>&1 ||
  { cat "$work/train.out"; fail "cnn-train failed"; }

# default prefix: the CSV's name without .csv; the paths are printed
"$bin/cnn-plot" "$work/h.csv" >"$work/out" 2>"$work/err" || { cat "$work/err"; fail "cnn-plot failed"; }
[ -s "$work/err" ] && { cat "$work/err"; fail "cnn-plot wrote to stderr"; }
printf '%s\n' "$work/h-accuracy.png" "$work/h-loss.png" | cmp -s - "$work/out" || { cat "$work/out"; fail "printed paths"; }
for f in "$work/h-accuracy.png" "$work/h-loss.png"; do
  [ "$(png_size "$f")" = 800x600 ] || fail "$f is $(png_size "$f"), expected 800x600"
done
# an explicit prefix
"$bin/cnn-plot" "$work/h.csv" "$work/graphs" >/dev/null || fail "cnn-plot with a prefix failed"
[ -f "$work/graphs-accuracy.png" ] && [ -f "$work/graphs-loss.png" ] || fail "no graphs-*.png"

# errors: exit 2, one line, naming the file (and line)
expect_error() {
  local pattern=$1
  shift
  "$bin/cnn-plot" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  [ "$rc" -eq 2 ] || { cat "$work/err"; fail "exit $rc, expected 2: $*"; }
  [ "$(wc -l <"$work/err")" -eq 1 ] || { cat "$work/err"; fail "error is not one line: $*"; }
  grep -Eq -- "$pattern" "$work/err" || { cat "$work/err"; fail "no '$pattern' in: $(cat "$work/err")"; }
}
printf 'epoch,loss,accuracy\n0,0.5,0.8\n1,0.4\n' >"$work/short.csv"
expect_error "^cnn-plot: .*short.csv:3: 2 fields, the header has 3$" "$work/short.csv"
expect_error "missing.csv: cannot open history" "$work/missing.csv"
expect_error "^usage: cnn-plot HISTORY.csv"
expect_error "^usage: cnn-plot HISTORY.csv" a b c
"$bin/cnn-plot" --help | grep -q "^usage: cnn-plot" || fail "--help"
echo "cnn-plot: all checks passed"
