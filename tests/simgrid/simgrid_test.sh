#!/usr/bin/env bash
# The simulated step (launch/simgrid/step_sim.c) runs cnn-train's real
# gradient exchange under SimGrid's SMPI: at 4 ranks on one simulated node
# and at 64 ranks on two, every exchange must leave each rank's shard
# holding the exact sum of the ranks' known gradients (--check), auto must
# pick direct on one node and hierarchical on two, and the predicted step
# must not be shorter than its compute. Exit 77 (skipped) without SimGrid
# (Debian libsimgrid-dev).
#   simgrid_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1 src=$2
if ! command -v smpicc >/dev/null || ! command -v smpirun >/dev/null; then
  echo "SKIP: SimGrid's smpicc/smpirun not installed (apt-get install libsimgrid-dev)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
CNN_BUILD=$build bash "$src/launch/simgrid/build.sh" "$work" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "smpicc build"; }
OPENBLAS_NUM_THREADS=1 "$build/tests/simgrid/cnn-step-profile" "$src/configs/fashion_cnn.ini" \
  --reps 3 >"$work/f.prof" || fail "cnn-step-profile"
bash "$src/launch/simgrid/platform.sh" fattree "$work" 64
passed=0
for case in "4 direct direct" "4 collective collective" "4 hierarchical hierarchical" \
            "4 auto direct" "64 direct direct" "64 hierarchical hierarchical" "64 auto hierarchical"; do
  read -r np ex picked <<<"$case"
  head -n "$np" "$work/hosts-64" >"$work/hosts"
  out=$(timeout 120 smpirun -np "$np" -platform "$work/fattree.xml" -hostfile "$work/hosts" \
          --cfg=smpi/host-speed:1Gf --cfg=smpi/simulate-computation:no --cfg=smpi/test:1e-6 \
          --log=root.thres:critical "$work/step_sim" "$work/f.prof" --per-rank 16 --exchange "$ex" \
          --check 2>&1)
  line=$(grep '^RESULT' <<<"$out") || { echo "$out" | tail -5; fail "np $np $ex: no result"; }
  grep -q "exchange=$ex($picked)" <<<"$line" || fail "np $np $ex: expected $picked: $line"
  grep -q 'check=ok' <<<"$line" || fail "np $np $ex: shard sums wrong: $line"
  awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
       END { exit !(v["step_s"] >= v["compute_s"] && v["compute_s"] > 0) }' <<<"$line" ||
    fail "np $np $ex: step shorter than its compute: $line"
  echo "ok: np $np $ex -> $line"
  passed=$((passed + 1))
done
echo "$passed passed, 0 failed"
