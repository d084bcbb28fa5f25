#!/usr/bin/env bash
# Scale hygiene of an image folder at np 4, seen in each rank's system calls
# (strace): rank 0 alone lists the folders (getdents64 and stat on their
# directories and files), and each rank opens only the images of its share
# of the check of every file (cnn_dataset_verify) and of its batches, not
# the whole folder. The same listing by rank 0 alone for cnn-data convert.
#   listing_test.sh BUILD_DIR DATA_TOOL SOURCE_DIR
set -uo pipefail
case_name=listing
build=$1
tool=$2
src=$3
fm=/usr/share/datasets/fashion-mnist
. "$src/tests/lib.sh"
cd "$work" || exit 1
command -v strace >/dev/null || { echo "SKIP: strace is not installed (.ci/run installs it)"; exit 77; }
strace -f -o /dev/null true 2>/dev/null || { echo "SKIP: strace cannot trace here (ptrace not allowed)"; exit 77; }

"$tool" folder "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz" f/train 400 1 &&
  "$tool" folder "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" f/test 100 1 ||
  fail "cannot make the folders"
ntrain=$(find f/train -type f | wc -l)
ntest=$(find f/test -type f | wc -l)
{ printf '[train]\nepochs = 1\nmax_steps = 2\nbatch_size = 16\neval_batch_size = 8\nthreads = 1\nprogress = none\n'
  printf 'history = none\n'
  printf '[input]\nshape = 28x28x1\n[flatten]\n[dense]\nunits = 10\nactivation = softmax\n'
  printf '[data]\nformat = imagefolder\ndir = %s/f\nimage_size = 28x28\nchannels = 1\n' "$work"
} >f.ini
np=4
# LeakSanitizer cannot run under ptrace (the sanitizer build of CI): the
# leak check is off for these traced runs only
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
# shellcheck disable=SC2046
timeout 300 mpirun $(mpiflags $np) -np $np sh -c \
  'exec strace -f -y -qq -o "trace.$OMPI_COMM_WORLD_RANK" -e trace=openat,getdents64,%stat,%lstat,%fstat "$0" "$@"' \
  "$build/cnn-train" f.ini --set checkpoint.dir="$work/ck" >run.out 2>&1 ||
  { cat run.out; fail "cnn-train under strace failed"; }
grep -q '^test:' run.out || { cat run.out; fail "no test line"; }
total_opens=0
for r in 0 1 2 3; do
  [ -f "trace.$r" ] || fail "no trace of rank $r"
  # system calls on the folder's directories and files (-y names each fd)
  lists=$(grep -c "^[0-9]* *getdents64([0-9]*<$work/f[/>]" "trace.$r")
  stats=$(grep -E "^[0-9]* *(newfstatat|stat|statx|lstat)\(.*\"$work/f/" "trace.$r" | grep -vc 'openat')
  opens=$(grep -E "^[0-9]* *openat\(.*\"$work/f/(train|test)/[^\"]*\.(png|jpg|bmp)\"" "trace.$r" |
    grep -v ENOENT | sed 's/.*"\([^"]*\)".*/\1/' | sort -u | wc -l)
  echo "rank $r: getdents64 $lists, stat $stats, image files opened $opens"
  if [ "$r" -eq 0 ]; then
    [ "$stats" -gt 0 ] || fail "rank 0 did not stat the files (the trace does not see stat)"
    [ "$lists" -gt 0 ] || fail "rank 0 did not list the folder (the trace does not see it)"
  else
    [ "$lists" -eq 0 ] || fail "rank $r listed the folder itself ($lists getdents64)"
    [ "$stats" -eq 0 ] || fail "rank $r stat'ed the folder's files itself ($stats calls)"
  fi
  # its quarter of the check of every file (train and test), of the test
  # evaluation (blocks of 8) and of 2 steps of 16 samples, and a few more
  limit=$(( (ntrain + ntest) / np + ntest / np + 8 + 2 * 16 / np + 4 ))
  [ "$opens" -le "$limit" ] || fail "rank $r opened $opens image files (its share is at most $limit of $((ntrain + ntest)))"
  total_opens=$((total_opens + opens))
done
[ "$total_opens" -ge $((ntrain + ntest)) ] || fail "the ranks opened $total_opens files, fewer than the $((ntrain + ntest)) the check must read"

# cnn-data convert at np 4: rank 0 lists, the others decode from its list
# shellcheck disable=SC2046
timeout 300 mpirun $(mpiflags $np) -np $np sh -c \
  'exec strace -f -y -qq -o "conv.$OMPI_COMM_WORLD_RANK" -e trace=openat,getdents64,%stat,%lstat,%fstat "$0" "$@"' \
  "$build/cnn-data" convert f.ini "$work/out" >conv.out 2>&1 ||
  { cat conv.out; fail "cnn-data convert under strace failed"; }
grep -q "out-train.h5: $ntrain images" conv.out || { cat conv.out; fail "convert wrote no $ntrain-image train file"; }
for r in 0 1 2 3; do
  lists=$(grep -c "^[0-9]* *getdents64([0-9]*<$work/f[/>]" "conv.$r")
  echo "cnn-data convert rank $r: getdents64 $lists"
  if [ "$r" -eq 0 ]; then
    [ "$lists" -gt 0 ] || fail "convert: rank 0 did not list the folder (the trace does not see it)"
  else
    [ "$lists" -eq 0 ] || fail "convert: rank $r listed the folder itself ($lists getdents64)"
  fi
done
echo "PASS [$case_name]"
