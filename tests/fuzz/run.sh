#!/usr/bin/env bash
# One harness in the suite (ctest -L fuzz):
#   run.sh HARNESS TARGET BUILD_DIR SOURCE_DIR SECONDS [EXTRA_CORPUS_DIR]...
# 1. runs HARNESS once on every seed (BUILD_DIR/seeds/TARGET, made by
#    fuzz_seeds), every extra corpus file and every reproducer in
#    tests/fuzz/regress/TARGET/, except those listed in
#    tests/fuzz/known_failing.txt (defects not fixed yet);
# 2. fuzzes for SECONDS seconds from those inputs (copied to a scratch
#    corpus; a crash is written there and shown).
# Fails on any crash, sanitizer report, leak or timeout, except a crash in
# step 2 whose report holds a "signature:" string of known_failing.txt (a
# known defect found again), which is shown and passes.
set -euo pipefail
harness=$1 target=$2 build=$3 src=$4 seconds=$5
shift 5
here=$src/tests/fuzz
. "$here/fuzz_env.sh"

inputs=()
for d in "$build/seeds/$target" "$here/regress/$target" "$@"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    [ -f "$f" ] || continue
    if is_known "$f"; then echo "skipped (known_failing.txt): ${f#$src/}"; else inputs+=("$f"); fi
  done
done
[ ${#inputs[@]} -gt 0 ] || { echo "no inputs for $target"; exit 1; }
echo "$target: ${#inputs[@]} inputs"
"$harness" "${fuzz_flags[@]}" "${inputs[@]}" >"$build/$target.replay.log" 2>&1 ||
  { tail -60 "$build/$target.replay.log"; echo "FAIL: $target on its corpus"; exit 1; }

[ "$seconds" -gt 0 ] || exit 0
work=$build/work-$target
rm -rf "$work"
mkdir -p "$work/corpus" "$work/crash"
i=0
for f in "${inputs[@]}"; do cp "$f" "$work/corpus/input-$((i++))"; done
if ! "$harness" "${fuzz_flags[@]}" -max_total_time="$seconds" -artifact_prefix="$work/crash/" \
     "$work/corpus" >"$work/log" 2>&1; then
  for sig in "${signatures[@]}"; do
    if grep -qF -- "$sig" "$work/log"; then
      echo "known defect found again (known_failing.txt): $sig"
      exit 0
    fi
  done
  tail -60 "$work/log"
  echo "FAIL: $target: fuzzing found a crash: $(ls "$work/crash")"
  exit 1
fi
grep -h "^#.*DONE\|Done [0-9]* runs" "$work/log" | tail -1
