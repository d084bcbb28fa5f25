#!/usr/bin/env bash
# cnn-train --profile at np 2 with 2 threads a rank: rank 0 prints a row
# for every layer of the model (forward, backward, GFLOP/s for the conv and
# dense layers), the data and exchange spans and the slowest rank's waits;
# each rank writes its trace and rank 0 joins them into valid Chrome trace
# JSON holding both ranks' forward, backward and step events; the weights
# are those of a run without --profile; a bad --profile value is exit 2.
#   profile_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=profile
build=$1
src=$2
. "$src/tests/lib.sh"
cd "$work" || exit 1
{ printf '[data]\nformat = idx\ndir = /usr/share/datasets/fashion-mnist\nrescale = 1/255\n'
  printf 'train_limit = 512\ntest_limit = 64\n'
  printf '[train]\nepochs = 1\nbatch_size = 32\nthreads = 2\nprogress = none\nhistory = none\n'
  printf '[dist]\nchunk_size = 8\n[checkpoint]\nevery_epochs = 0\nbest = false\n'
  printf '[optimizer]\ntype = adam\n'
  printf '[input]\nshape = 28x28x1\n[conv2d]\nname = c1\nfilters = 4\nkernel = 3\nactivation = relu\n'
  printf '[batch_normalization]\nname = bn\n[conv2d]\nname = c2\nfilters = 8\nkernel = 3\n'
  printf '[maxpool2d]\nname = pool\n[flatten]\nname = fl\n[dense]\nname = out\nunits = 10\nactivation = softmax\n'
} >p.ini
run() { # run NAME [options]
  local name=$1
  shift
  # shellcheck disable=SC2046
  timeout 300 mpirun $(mpiflags 2) -np 2 "$build/cnn-train" "$work/p.ini" \
    --set checkpoint.dir="$work/$name" "$@" >"$name.out" 2>&1 || { cat "$name.out"; fail "$name failed"; }
}
run plain
run prof --profile=6 --profile-dir "$work/traces"
out=prof.out
for l in c1 bn c2 pool fl out; do
  grep -Eq "^$l +[A-Za-z0-9]+ +[0-9.]+ +[0-9.]+" "$out" || { cat "$out"; fail "no row for layer $l"; }
done
grep -Eq "^c2 +Conv2D( +[0-9.]+){4}%" "$out" || { cat "$out"; fail "no GFLOP/s and %peak for c2"; }
grep -q "^profile: 6 steps" "$out" || { cat "$out"; fail "not 6 steps"; }
grep -Eq "^exchange wait +[0-9.]+ us per image" "$out" || { cat "$out"; fail "no exchange wait"; }
grep -Eq "^data fetch +[0-9.]+ us per image" "$out" || { cat "$out"; fail "no data fetch"; }
grep -q "^slowest rank: data fetch" "$out" || { cat "$out"; fail "no slowest rank line"; }
[ -f traces/trace.rank0.json ] && [ -f traces/trace.rank1.json ] || fail "no per-rank traces"
/usr/bin/python3 - "$work/traces/trace.json" <<'PY' || fail "trace.json is not what it should be"
import json, sys
ev = json.load(open(sys.argv[1]))
for pid in (0, 1):
    cats = {e.get("cat") for e in ev if e.get("pid") == pid and e.get("ph") == "X"}
    assert {"forward", "backward", "step"} <= cats, (pid, cats)
    steps = [e for e in ev if e.get("pid") == pid and e.get("name") == "step"]
    assert len(steps) == 5, (pid, len(steps))
    names = {e["name"] for e in ev if e.get("pid") == pid and e.get("cat") == "forward"}
    assert names == {"c1", "bn", "c2", "pool", "fl", "out"}, names
PY
a=$(ls plain/*.h5 2>/dev/null | tail -1) b=$(ls prof/*.h5 2>/dev/null | tail -1)
[ -n "$a" ] && [ -n "$b" ] || fail "no final checkpoints"
h5diff -d 0 "$a" "$b" /model >/dev/null || fail "--profile changed the weights"
"$build/cnn-train" p.ini --profile=0 >bad.out 2>&1
[ $? -eq 2 ] && grep -q "profile=N" bad.out || { cat bad.out; fail "--profile=0 not refused with exit 2"; }
echo "PASS [$case_name]"
