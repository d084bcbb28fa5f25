#!/usr/bin/env bash
# Builds from scratch and runs the whole test suite (unit, gradient checks,
# integration, MPI at 1-4 ranks). Installs missing Debian packages first.
#   bash launch/test.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bash "$here/build.sh"
ctest --test-dir "$root/build" --output-on-failure
