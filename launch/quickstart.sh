#!/usr/bin/env bash
# Quick start on a fresh Debian machine: installs what is missing, builds,
# and trains the default model (configs/fashion_cnn.ini) on Fashion-MNIST
# with 2 MPI ranks. Extra arguments go to cnn-train, e.g.
#   bash launch/quickstart.sh --set train.epochs=1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bash "$here/build.sh"
cd "$root"
exec bash "$here/run_local.sh" 2 configs/fashion_cnn.ini "$@"
