#!/usr/bin/env bash
# Data-parallel training on this machine:
#   launch/run_local.sh NP CONFIG [cnn-train options...]
# Gives each rank cores/NP OpenBLAS threads (at least 1), so that
# ranks x threads does not oversubscribe the cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
np=${1:?usage: run_local.sh NP CONFIG [options]}
shift
bin=${CNN_TRAIN:-$here/../build/cnn-train}
threads=$(( $(nproc) / np ))
[ "$threads" -lt 1 ] && threads=1
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
# shellcheck disable=SC2046
exec mpirun $("$here/mpirun-flags.sh" "$np") -np "$np" -x OPENBLAS_NUM_THREADS "$bin" "$@"
