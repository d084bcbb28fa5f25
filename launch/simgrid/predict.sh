#!/usr/bin/env bash
# Predicted step time and scaling efficiency of cnn-train from 2 to 1,024
# ranks, with SimGrid's SMPI running cnn-train's own gradient exchange
# (src/dist/dist.c, built by smpicc) on the fat tree of platform.sh, and
# each layer's compute as measured on this machine (cnn-step-profile).
# See launch/simgrid/README.md. Needs Debian libsimgrid-dev (smpicc,
# smpirun) and a build tree with cnn-step-profile (cmake --build build).
#
#   bash launch/simgrid/predict.sh [OUT_DIR]        (default build/simgrid)
#
# Writes OUT_DIR/scaling.csv, OUT_DIR/scaling.md (the table) and
# OUT_DIR/scaling-MODEL.png (weak-scaling efficiency against ranks, one
# curve per exchange). Environment:
#   SIM_MODELS  (fashion_cnn resnet20_cifar10 catsdogs_cnn)
#   SIM_RANKS   (2 4 8 16 32 64 128 256 512 1024); the simulator's CPU
#                 time grows about 4-8x per doubling (fashion_cnn, auto:
#                 7.6 s at 256, 39 s at 512)
#   SIM_PER_RANK  weak scaling: samples per rank and step (32)
#   SIM_GLOBAL    strong scaling: the fixed global batch (1024)
#   SIM_MAX_GB    skip a collective run whose SMPI receive buffers could
#                 pass this (16): SMPI's non-blocking reduce-scatter takes
#                 (P - 1) shards per rank, P n 8 bytes if every bucket were
#                 in flight at once (catsdogs_cnn at 256 ranks: 11.4 GB by
#                 that bound, 2.4 GB more memory in use measured)
#   SIM_FLAT_MAX  direct and collective are simulated up to this many ranks
#                 (256): every rank sends to every other in them, and at
#                 512 ranks SimGrid 3.32's bandwidth solver aborts
#                 (maxmin.cpp:217, "Cannot saturate more a constraint";
#                 with maxmin/precision:1e-4 a SIGSEGV instead). Beyond it
#                 their rows say "not simulated"; hierarchical (and auto)
#                 go on to 1,024.
#   SIM_REPROFILE=1 measures the profiles again (else OUT_DIR/prof/ is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${CNN_BUILD:-$root/build}
out=${1:-$build/simgrid}
models=${SIM_MODELS:-fashion_cnn resnet20_cifar10 catsdogs_cnn}
ranks=${SIM_RANKS:-2 4 8 16 32 64 128 256 512 1024}
per_rank=${SIM_PER_RANK:-32}
global=${SIM_GLOBAL:-1024}
max_gb=${SIM_MAX_GB:-16}
flat_max=${SIM_FLAT_MAX:-256}
source "$here/smpi_flags.sh"
command -v smpicc >/dev/null || { echo "predict.sh: smpicc not found (apt-get install libsimgrid-dev)" >&2; exit 2; }
mkdir -p "$out/prof"
bash "$here/build.sh" "$out"
for m in $models; do
  if [ "${SIM_REPROFILE:-0}" = 1 ] || [ ! -s "$out/prof/$m.prof" ]; then
    OPENBLAS_NUM_THREADS=1 "$build/tests/simgrid/cnn-step-profile" "$root/configs/$m.ini" --reps 5 \
      >"$out/prof/$m.prof"
  fi
done
bash "$here/platform.sh" fattree "$out" 1024

# sim PROFILE P ARGS... -> the RESULT line
sim() {
  local prof=$1 p=$2
  shift 2
  head -n "$p" "$out/hosts-1024" >"$out/hosts-run"
  smpirun -np "$p" -platform "$out/fattree.xml" -hostfile "$out/hosts-run" \
    "${smpi_flags[@]}" \
    --cfg=smpi/shared-malloc:local --cfg=smpi/auto-shared-malloc-thresh:65536 --cfg=smpi/privatization:no \
    "$out/step_sim" "$prof" --steps 2 "$@" 2>/dev/null | grep '^RESULT'
}
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$2"; }
# Bytes SMPI's own temporaries take in a collective run: its non-blocking
# reduce-scatter receives (P - 1) shards per rank into fresh buffers. (The
# hierarchical exchange's are its slices across nodes, one bucket at a time:
# catsdogs_cnn at 512 ranks peaked at 2.4 GB of the machine's memory in
# use, 1.5 GB above idle. Process RSS over-counts a simulation: each
# shared-malloc mapping of the same pages counts again.)
too_big() {
  local ex=$1 p=$2 n=$3
  [ "$ex" = collective ] && [ $(( p * n * 8 )) -gt $(( max_gb * 1024 * 1024 * 1024 )) ]
}
csv=$out/scaling.csv
echo "model,scaling,exchange,picked,ranks,global_batch,step_ms,compute_ms,wait_ms,efficiency" >"$csv"
for m in $models; do
  prof=$out/prof/$m.prof
  n=$(awk '/^nparams/ {print $2}' "$prof")
  chunk=$(awk '/^nparams/ {print $4}' "$prof")
  for scaling in weak strong; do
    if [ $scaling = weak ]; then arg=(--per-rank "$per_rank"); else arg=(--global "$global"); fi
    base=$(sim "$prof" 1 "${arg[@]}")
    t1=$(field step_s "$base")
    for ex in direct collective hierarchical; do
      for p in $ranks; do
        k=$(( (global + chunk - 1) / chunk ))
        if [ $scaling = strong ] && [ "$p" -gt "$k" ]; then continue; fi # no chunk for some ranks
        if [ $ex != hierarchical ] && [ "$p" -gt "$flat_max" ]; then
          echo "$m,$scaling,$ex,,$p,,,,,not simulated" >>"$csv"
          continue
        fi
        if too_big $ex "$p" "$n"; then
          echo "$m,$scaling,$ex,,$p,,,,,skipped" >>"$csv"
          continue
        fi
        r=$(sim "$prof" "$p" "${arg[@]}" --exchange $ex) || { echo "$m,$scaling,$ex,,$p,,,,,failed" >>"$csv"; continue; }
        awk -v m="$m" -v s=$scaling -v ex=$ex -v p="$p" -v t1="$t1" \
          -v pick="$(field exchange "$r")" -v bg="$(field global_batch "$r")" \
          -v t="$(field step_s "$r")" -v c="$(field compute_s "$r")" -v w="$(field wait_s "$r")" \
          'BEGIN { e = s == "weak" ? t1 / t : t1 / (p * t);
                   printf "%s,%s,%s,%s,%d,%d,%.4f,%.4f,%.4f,%.4f\n", m, s, ex, pick, p, bg, t*1e3, c*1e3, w*1e3, e }' \
          >>"$csv"
        tail -1 "$csv"
      done
    done
  done
done
bash "$here/auto_rows.sh" "$csv" >"$out/auto.csv"
cat "$out/auto.csv" >>"$csv"
bash "$here/table.sh" "$csv" >"$out/scaling.md"
for m in $models; do
  "$out/plot_scaling" "$csv" "$m" "$out/scaling-$m.png"
done
cat "$out/scaling.md"
