#!/usr/bin/env bash
# The simulator against this machine, at 2 and 4 ranks (run it quietly: a
# loaded machine measures the load, not the code).
#
#   bash launch/simgrid/calibrate.sh [OUT_DIR]       (default build/simgrid)
#
# 1. The exchange alone: cnn-bench-exchange N REPS under mpirun, against
#    the same program built by smpicc (OUT_DIR/bench_exchange_sim) run by
#    smpirun on platform.sh's "local" machine (2 cores, shared memory at
#    SIM_LOCAL_BW / SIM_LOCAL_LAT): the rows "cnn-train <exchange> +
#    allgather", N = fashion_cnn's 203,898 parameters.
# 2. The step: real cnn-train fashion_cnn (--profile: "step US per image",
#    times its images per rank and step) against step_sim with the global
#    batch of the config (32) on the same local machine.
# Prints one line per comparison: measured ms, simulated ms, error %.
# Environment: CAL_MODEL (fashion_cnn), CAL_REPS (20), CAL_RANKS (2 4).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${CNN_BUILD:-$root/build}
out=${1:-$build/simgrid}
model=${CAL_MODEL:-fashion_cnn}
reps=${CAL_REPS:-20}
source "$here/smpi_flags.sh"
command -v smpicc >/dev/null || { echo "calibrate.sh: smpicc not found (apt-get install libsimgrid-dev)" >&2; exit 2; }
[ -x "$out/step_sim" ] || bash "$here/build.sh" "$out"
mkdir -p "$out/prof" "$out/cal"
prof=$out/prof/$model.prof
[ -s "$prof" ] || OPENBLAS_NUM_THREADS=1 "$build/tests/simgrid/cnn-step-profile" \
  "$root/configs/$model.ini" --reps 5 >"$prof"
n=$(awk '/^nparams/ {print $2}' "$prof")
batch=$(awk '/^nparams/ {print $6}' "$prof")
mpi=(mpirun --allow-run-as-root --oversubscribe -x OPENBLAS_NUM_THREADS=1)
err() { awk -v m="$2" -v s="$3" -v what="$1" \
          'BEGIN { printf "%-44s measured %9.3f ms  simulated %9.3f ms  error %+6.1f%%\n", what, m, s, 100 * (s - m) / m }'; }
echo "uptime: $(uptime)"
for p in ${CAL_RANKS:-2 4}; do
  bash "$here/platform.sh" local "$out" "$p"
  "${mpi[@]}" -np "$p" "$build/cnn-bench-exchange" "$n" "$reps" >"$out/cal/bench-$p.txt"
  smpirun -np "$p" -platform "$out/local.xml" -hostfile "$out/hosts-local-$p" "${smpi_flags[@]}" \
    --cfg=smpi/privatization:no "$out/bench_exchange_sim" "$n" "$reps" >"$out/cal/sim-$p.txt" 2>/dev/null
  for ex in direct collective hierarchical; do
    m=$(awk -v e="$ex" '$0 ~ "cnn-train " e " " {print $(NF-1)}' "$out/cal/bench-$p.txt")
    s=$(awk -v e="$ex" '$0 ~ "cnn-train " e " " {print $(NF-1)}' "$out/cal/sim-$p.txt")
    err "np $p exchange alone, $ex + allgather" "$m" "$s"
  done
  # the real step: 2 warm-up steps, 20 profiled, then max_steps ends the run
  "${mpi[@]}" -np "$p" "$build/cnn-train" "$root/configs/$model.ini" --profile=20 \
    --profile-dir "$out/cal/profile-$p" --set train.max_steps=24 \
    --set checkpoint.dir="$out/cal/ck-$p" >"$out/cal/train-$p.txt" 2>&1
  us=$(awk '$1 == "step" && $3 == "us" {print $2}' "$out/cal/train-$p.txt")
  m=$(awk -v us="$us" -v b="$batch" -v p="$p" 'BEGIN { print us * b / p / 1000 }')
  r=$(smpirun -np "$p" -platform "$out/local.xml" -hostfile "$out/hosts-local-$p" "${smpi_flags[@]}" \
        --cfg=smpi/privatization:no "$out/step_sim" "$prof" --global "$batch" --steps 5 2>/dev/null |
      grep '^RESULT')
  s=$(sed -E 's/.* step_s=([^ ]+).*/\1/' <<<"$r")
  err "np $p $model step (global batch $batch)" "$m" "$(awk -v s="$s" 'BEGIN { print s * 1000 }')"
done
