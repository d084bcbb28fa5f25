#!/usr/bin/env bash
# MPI tests of cnn-train through mpirun.
#   mpi_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL [$case_name]: $*"; exit 1; }
mpiflags() { bash "$src/launch/mpirun-flags.sh" "$1"; }

# A small run with an odd global batch (uneven slices at np 2, 3, 4) and a
# last partial batch (500 % 30 = 20), so every slicing path is used.
cfg=$src/configs/fashion_cnn.ini
small=(--set data.train_limit=500 --set data.test_limit=250 --set train.epochs=1
       --set train.batch_size=30 --set train.threads=1 --set train.history="$work/h.csv")

run_np() { # run_np NP OUTFILE
  # shellcheck disable=SC2046
  timeout 120 mpirun $(mpiflags "$1") -np "$1" "$bin" "$cfg" "${small[@]}" >"$2" 2>&1
}

# The result lines of a run without times and speeds.
results() {
  grep -E '^([0-9]+/[0-9]+ - |test:)' "$1" | sed -E 's/ - [0-9.]+s - / - /; s/ - [0-9]+ img\/s//'
}

case "$case_name" in
ranks_agree)
  # Same config and seed on 1-4 ranks (uneven chunk counts at 3) give the
  # same training run, bit for bit: every printed figure is identical.
  run_np 1 "$work/np1" || { cat "$work/np1"; fail "np 1 failed"; }
  ref=$(results "$work/np1")
  [ "$(echo "$ref" | grep -c .)" -ge 2 ] || { cat "$work/np1"; fail "np 1 printed no result"; }
  for np in 2 3 4; do
    run_np "$np" "$work/np$np" || { cat "$work/np$np"; fail "np $np failed"; }
    [ "$(grep -c '^test:' "$work/np$np")" -eq 1 ] || fail "np $np: more than one rank printed"
    got=$(results "$work/np$np")
    [ "$got" = "$ref" ] || { diff <(echo "$ref") <(echo "$got"); fail "np $np differs from np 1"; }
    echo "np $np: $(echo "$got" | tail -1)"
  done
  ;;
ranks_agree_float)
  # [dist] reduction = float: MPI sums floats, so results agree only up to
  # summation order; uneven slices of a batch of 30 at np 2, 3, 4.
  small+=(--set dist.reduction=float)
  run_np 1 "$work/np1" || { cat "$work/np1"; fail "np 1 failed"; }
  ref_test=$(grep '^test:' "$work/np1")
  ref_loss=$(grep -E '^[0-9]+/[0-9]+ - ' "$work/np1" | sed -E 's/.* loss: ([0-9.]+) .*/\1/')
  [ -n "$ref_test" ] && [ -n "$ref_loss" ] || fail "np 1 printed no result"
  for np in 2 3 4; do
    run_np "$np" "$work/np$np" || { cat "$work/np$np"; fail "np $np failed"; }
    l=$(grep -E '^[0-9]+/[0-9]+ - ' "$work/np$np" | sed -E 's/.* loss: ([0-9.]+) .*/\1/')
    awk -v a="$l" -v b="$ref_loss" 'BEGIN{d=a-b; if(d<0)d=-d; exit !(d <= 2e-4)}' ||
      fail "np $np training loss $l differs from np 1 ($ref_loss)"
    echo "np $np: loss $l (np 1: $ref_loss)"
  done
  ;;
rank_fails_io|rank_fails_nan|rank_fails_exit)
  # One rank fails at step 3 (a read error, a NaN loss, or dying): the job
  # ends within seconds, non-zero, and the error is reported once with the
  # rank that had it.
  kind=${case_name#rank_fails_}
  start=$(date +%s)
  # shellcheck disable=SC2046
  timeout 60 mpirun $(mpiflags 2) -np 2 -x CNN_TEST_FAULT="1:3:$kind" "$bin" "$cfg" "${small[@]}" \
    >"$work/out" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$work/out"; fail "exit $rc"; }
  [ "$took" -le 30 ] || fail "took ${took}s"
  case $kind in
  io) pat="rank 1: epoch 1 step 3 \(global step 3\): .*injected read error" ;;
  nan) pat="rank 1: epoch 1 step 3 \(global step 3\): loss is NaN" ;;
  exit) pat="exited|Exit code" ;;
  esac
  [ "$(grep -Ec "$pat" "$work/out")" -ge 1 ] || { cat "$work/out"; fail "no '$pat'"; }
  [ "$kind" = exit ] || [ "$(grep -c "^cnn-train: rank" "$work/out")" -eq 1 ] ||
    { cat "$work/out"; fail "message not printed exactly once"; }
  grep -q '^test:' "$work/out" && fail "training went on"
  echo "exit $rc after ${took}s"
  ;;
nan_skip)
  # nan_policy = skip_step: the NaN step is skipped on every rank, training ends normally.
  # shellcheck disable=SC2046
  timeout 60 mpirun $(mpiflags 2) -np 2 -x CNN_TEST_FAULT="1:3:nan" "$bin" "$cfg" "${small[@]}" \
    --set train.nan_policy=skip_step >"$work/out" 2>&1 || { cat "$work/out"; fail "exit $?"; }
  grep -q "global step 3): non-finite loss or gradient, update skipped" "$work/out" &&
    grep -q "^skipped: 1 steps" "$work/out" && grep -q '^test:' "$work/out" ||
    { cat "$work/out"; fail "step 3 not skipped"; }
  ;;
config_error)
  # A config error is reported once (by rank 0) and every rank exits.
  # shellcheck disable=SC2046
  timeout 60 mpirun $(mpiflags 2) -np 2 "$bin" "$cfg" --set train.epochs=x >"$work/out" 2>&1
  rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$work/out"; fail "exit $rc"; }
  [ "$(grep -c "is not an integer" "$work/out")" -eq 1 ] || { cat "$work/out"; fail "message not printed exactly once"; }
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
