#!/usr/bin/env bash
# Builds the simulated step with smpicc into OUT_DIR (launch/simgrid/README.md):
#   bash launch/simgrid/build.sh OUT_DIR
# OUT_DIR/step_sim: step_sim.c + src/dist/dist.c (unchanged, with
# smpi_shim.h forced in) + shim.c; OUT_DIR/bench_exchange_sim:
# src/dist/bench_exchange.c the same way; OUT_DIR/plot_scaling (PLplot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$1
mkdir -p "$out"
cflags=(-O2 -std=gnu11 -I"$root/src/dist" -I"$root/src/cli" -I"${CNN_BUILD:-$root/build}/generated")
smpicc "${cflags[@]}" -include "$here/smpi_shim.h" -c "$root/src/dist/dist.c" -o "$out/dist.o"
smpicc "${cflags[@]}" -c "$here/shim.c" -o "$out/shim.o"
smpicc "${cflags[@]}" -c "$here/step_sim.c" -o "$out/step_sim.o"
smpicc -o "$out/step_sim" "$out/step_sim.o" "$out/dist.o" "$out/shim.o" -lm
smpicc "${cflags[@]}" -c "$root/src/dist/bench_exchange.c" -o "$out/bench_exchange.o"
smpicc -o "$out/bench_exchange_sim" "$out/bench_exchange.o" "$out/dist.o" "$out/shim.o" -lm
cc -O2 -std=gnu11 $(pkg-config --cflags plplot) "$here/plot_scaling.c" -o "$out/plot_scaling" \
  $(pkg-config --libs plplot) -lm
