#!/usr/bin/env bash
# Checkpoints do not stop training for their write: at np 2, a 3.9 M
# parameter network saves after each of 2 epochs (47 MB files, Adam); rank
# 0 writes them on a thread while the ranks train on, so the time training
# stopped for the saves (gathering the optimizer state, copying it) is
# under the time of the writes, which the run reports. Both files are valid
# checkpoints, and the run resumes from the first onto the same result.
#   ckpt_wait_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=ckpt_wait
build=$1
src=$2
. "$src/tests/lib.sh"
cd "$work" || exit 1
{ printf '[data]\nformat = idx\ndir = /usr/share/datasets/fashion-mnist\nrescale = 1/255\n'
  printf 'train_limit = 256\ntest_limit = 200\n'
  printf '[train]\nepochs = 2\nbatch_size = 32\nthreads = 1\nprogress = none\nhistory = none\n'
  printf '[checkpoint]\nevery_epochs = 1\nbest = false\nkeep = 5\n'
  printf '[optimizer]\ntype = adam\n'
  printf '[input]\nshape = 28x28x1\n[flatten]\n[dense]\nunits = 5000\nactivation = relu\n'
  printf '[dense]\nunits = 10\nactivation = softmax\n'
} >w.ini
run() { # run NAME [options]
  local name=$1
  shift
  # shellcheck disable=SC2046
  timeout 300 mpirun $(mpiflags 2) -np 2 "$build/cnn-train" w.ini --set checkpoint.dir="$work/$name" \
    "$@" >"$name.out" 2>&1 || { cat "$name.out"; fail "$name failed"; }
}
run a
line=$(grep '^checkpoints: ' a.out) || { cat a.out; fail "no checkpoints line"; }
echo "$line"
re='^checkpoints: ([0-9]+) written by rank 0 in ([0-9.]+)s \(on a thread: (yes|no)\); training stopped ([0-9.]+)s for them, then waited ([0-9.]+)s'
[[ $line =~ $re ]] || fail "the checkpoints line does not parse"
files=${BASH_REMATCH[1]} wrote=${BASH_REMATCH[2]} thread=${BASH_REMATCH[3]} stopped=${BASH_REMATCH[4]}
[ "$files" -eq 2 ] || fail "$files checkpoints written, expected 2"
[ "$thread" = yes ] || { echo "SKIP [$case_name]: this HDF5 is not thread-safe: written in place"; exit 77; }
# Blocking on the writer would stop training for the whole write and the
# gather (stopped >= wrote). On a thread it is the gather and copy (0.06 s
# against 0.71 s of writes here, quiet), plus, when a write is still going
# as the next save comes (one write in flight at a time), the rest of that
# write: beside two simulations and ctest -j3 (5x the cores) a run stopped
# 0.92 s for 1.82 s of writes. So the bound is the write time itself.
awk -v s="$stopped" -v w="$wrote" 'BEGIN { exit !(s < w) }' ||
  fail "training stopped ${stopped}s for checkpoints that took ${wrote}s to write"
[ "$(grep -c '^checkpoint: ' a.out)" -eq 2 ] || { cat a.out; fail "not one line per checkpoint"; }
first=$(ls a/ckpt-e0001-*.h5) && last=$(ls a/ckpt-e0002-*.h5) || fail "checkpoints missing"
[ -z "$(ls -A a | grep '^\.')" ] || fail "temporary file left behind"
run b --resume "$first"
cmp <(grep '^test:' a.out) <(grep '^test:' b.out) || fail "the resumed run ends elsewhere"
h5diff -d 0 "$last" "$(ls b/ckpt-e0002-*.h5)" /model >/dev/null || fail "the final weights differ after resuming"
echo "PASS [$case_name]"
