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

case "$case_name" in
ranks_agree)
  # Same config and seed on 1-4 ranks: the same training loss and test
  # result, up to float summation order.
  run_np 1 "$work/np1" || { cat "$work/np1"; fail "np 1 failed"; }
  ref_test=$(grep '^test:' "$work/np1")
  ref_loss=$(grep -E '^[0-9]+/[0-9]+ - ' "$work/np1" | sed -E 's/.* loss: ([0-9.]+) .*/\1/')
  [ -n "$ref_test" ] && [ -n "$ref_loss" ] || fail "np 1 printed no result"
  for np in 2 3 4; do
    run_np "$np" "$work/np$np" || { cat "$work/np$np"; fail "np $np failed"; }
    t=$(grep '^test:' "$work/np$np")
    l=$(grep -E '^[0-9]+/[0-9]+ - ' "$work/np$np" | sed -E 's/.* loss: ([0-9.]+) .*/\1/')
    [ "$(grep -c '^test:' "$work/np$np")" -eq 1 ] || fail "np $np: more than one rank printed"
    awk -v a="$l" -v b="$ref_loss" 'BEGIN{d=a-b; if(d<0)d=-d; exit !(d <= 2e-4)}' ||
      fail "np $np training loss $l differs from np 1 ($ref_loss)"
    ta=$(echo "$t" | sed -E 's/.* accuracy=([0-9.]+).*/\1/')
    ra=$(echo "$ref_test" | sed -E 's/.* accuracy=([0-9.]+).*/\1/')
    awk -v a="$ta" -v b="$ra" 'BEGIN{d=a-b; if(d<0)d=-d; exit !(d <= 0.008)}' ||
      fail "np $np test accuracy $ta differs from np 1 ($ra)"
    echo "np $np: $t (np 1: $ref_test)"
  done
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
