#!/usr/bin/env bash
# A longer fuzzing run of one harness, its corpus kept between runs:
#   bash tests/fuzz/fuzz.sh BUILD_DIR TARGET SECONDS [libFuzzer flags...]
#   e.g. bash tests/fuzz/fuzz.sh build-fuzz image 600
# (BUILD_DIR configured with CC=clang -DCNN_FUZZ=ON and built, seeds made
# by ctest -L fuzz or BUILD_DIR/tests/fuzz/fuzz_seeds). The corpus grows in
# BUILD_DIR/tests/fuzz/corpus-TARGET; crashes are written to
# BUILD_DIR/tests/fuzz/crash-TARGET/: minimise one with
#   BUILD_DIR/tests/fuzz/fuzz_TARGET -minimize_crash=1 -runs=10000 CRASH
# and save it as tests/fuzz/regress/TARGET/<what-it-is>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)/tests/fuzz target=$2 seconds=$3
shift 3
. "$here/fuzz_env.sh"
[ -d "$build/seeds" ] || "$build/fuzz_seeds" "$build/seeds"
mkdir -p "$build/corpus-$target" "$build/crash-$target"
for f in "$here/regress/$target"/*; do # all but the known defects' reproducers
  [ -f "$f" ] && ! is_known "$f" && cp "$f" "$build/corpus-$target/"
done
dirs=("$build/corpus-$target")
[ -d "$build/seeds/$target" ] && dirs+=("$build/seeds/$target")
[ "$target" = config ] && dirs+=("$here/../../configs")
exec "$build/fuzz_$target" "${fuzz_flags[@]}" -max_total_time="$seconds" -print_final_stats=1 \
  -artifact_prefix="$build/crash-$target/" "$@" "${dirs[@]}"
