#!/usr/bin/env bash
# Models too large to represent or to hold end with one clear line and exit
# 2 before anything is allocated (cnn-train --summary).
#   size_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=sizes
bin=$1/cnn-train
src=$2
. "$src/tests/lib.sh"

expect2() { # expect2 PATTERN INI [args...]
  local pattern=$1 ini=$2
  shift 2
  "$bin" --summary "$ini" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  [ "$rc" -eq 2 ] || { cat "$work/out" "$work/err"; fail "exit $rc, expected 2: $ini"; }
  [ "$(wc -l <"$work/err")" -eq 1 ] || { cat "$work/err"; fail "error is not one line: $ini"; }
  grep -Eq -- "$pattern" "$work/err" || { cat "$work/err"; fail "no '$pattern' for $ini"; }
}
head='[flatten]\n[dense]\nunits = 10\nactivation = softmax\n'
printf "[input]\nshape = 60000x60000x3\n$head" >"$work/in3.ini"
expect2 "in3.ini:1: layer 'input' .*43,200,000,000 bytes" "$work/in3.ini"
printf "[input]\nshape = 65536x65536x1\n$head" >"$work/in1.ini"
expect2 "in1.ini:1: layer 'input' .*4,294,967,296 values" "$work/in1.ini"
# 105 GB of weights: refused against physical memory or the rlimit
printf "[input]\nshape = 28x28x1\n${head/10/16777216}[dense]\nunits = 10\n" >"$work/dense.ini"
expect2 "need [0-9,]+ bytes, more than .* the largest layer is 'dense' \(105,360,916,480 bytes\)" "$work/dense.ini"
echo "ok"
