#!/usr/bin/env bash
# Threads inside a rank ([train] threads, src/train/step.h "Threads"): the
# same training at 1, 2 and 3 threads, and at 2 ranks x 2 threads, is the
# same bits: weights and moving statistics (/model), optimizer state,
# callbacks, history and every printed figure.
#   threads_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
. "$src/tests/lib.sh"

run() { # run NP THREADS OUTFILE [options...]
  local np=$1 t=$2 outfile=$3
  shift 3
  # shellcheck disable=SC2046
  timeout 300 mpirun $(mpiflags "$np") --bind-to none -np "$np" "$bin" "$cfg" "${small[@]}" \
    --set train.threads="$t" "$@" >"$outfile" 2>&1
}

# The result lines of a run without times and speeds.
results() {
  grep -E '^([0-9]+/[0-9]+ - |test:)' "$1" | sed -E 's/ - [0-9.]+s - / - /; s/ - [0-9]+ img\/s//'
}

same_ckpt() { # same_ckpt A B WHAT [groups...]
  local a=$1 b=$2 what=$3 g
  shift 3
  for g in /model /optimizer "$@"; do
    h5diff "$a" "$b" "$g" "$g" >/dev/null || fail "$what: $g differs"
  done
}

# agree REFERENCE_CKPT_NAME [groups...]: the runs at (np, threads) = 1x1
# (reference), 1x2, 1x3 and 2x2 agree bit for bit
agree() {
  local final=$1 np t got
  shift
  run 1 1 "$work/r11" --set checkpoint.dir="$work/c11" || { cat "$work/r11"; fail "1 x 1 failed"; }
  ref=$(results "$work/r11")
  [ "$(echo "$ref" | grep -c .)" -ge 2 ] || { cat "$work/r11"; fail "1 x 1 printed no result"; }
  [ -f "$work/c11/$final" ] || { ls "$work/c11"; fail "no $final"; }
  for nt in "1 2" "1 3" "2 2"; do
    read -r np t <<<"$nt"
    run "$np" "$t" "$work/r$np$t" --set checkpoint.dir="$work/c$np$t" ||
      { cat "$work/r$np$t"; fail "$np x $t failed"; }
    grep -q "^threads: $t per rank (\[train\] threads)" "$work/r$np$t" ||
      { cat "$work/r$np$t"; fail "$np x $t: no threads line in the banner"; }
    got=$(results "$work/r$np$t")
    [ "$got" = "$ref" ] || { diff <(echo "$ref") <(echo "$got"); fail "$np x $t differs from 1 x 1"; }
    same_ckpt "$work/c11/$final" "$work/c$np$t/$final" "$np ranks x $t threads" "$@"
    echo "$np ranks x $t threads: identical to 1 x 1; $(echo "$got" | tail -1)"
  done
}

case "$case_name" in
threads_agree)
  # dropout and augmentation (tests/mpi/dropout_cnn.ini), 2 epochs of 17
  # steps, the last one 20 samples = 3 chunks
  cfg=$src/tests/mpi/dropout_cnn.ini
  small=(--set data.train_limit=500 --set data.test_limit=200 --set train.progress=lines)
  agree ckpt-e0002-s00000034.h5
  ;;
threads_stripes)
  # fashion_cnn (203,898 parameters: 13 stripes of the fixed-point sum, the
  # dense layer's 200,768 over 13 of them), 3 chunks of its batch of 24 on
  # up to 3 threads, with one sum for all threads (CNN_TEST_STRIPES: a
  # model this small gets a sum a thread otherwise, which the other cases
  # test): the threads add their chunks stripe by stripe from different
  # places, skipping held ones; and the update in parts
  export CNN_TEST_STRIPES=1
  cfg=$src/configs/fashion_cnn.ini
  small=(--set data.train_limit=240 --set data.test_limit=100 --set train.epochs=1
         --set train.batch_size=24 --set train.progress=lines --set train.history=none
         --set checkpoint.best=false)
  agree ckpt-e0001-s00000010.h5
  ;;
threads_resbn)
  # residual BatchNormalization (tests/mpi/resbn_cnn.ini: add, concatenate,
  # BN on conv and flat tensors; SGD with Nesterov momentum, weight decay,
  # cosine schedule): the moving statistics are combined in chunk order
  cfg=$src/tests/mpi/resbn_cnn.ini
  small=(--set data.train_limit=250 --set data.test_limit=100 --set train.epochs=2
         --set train.progress=none)
  agree ckpt-e0002-s00000018.h5 /callbacks /history/loss /history/accuracy /history/val_loss \
    /history/val_accuracy
  ;;
threads_resume)
  # stopped at 3 threads in the middle of epoch 1 (step 9 of 17), resumed
  # at 2 ranks x 2 threads: the weights of a straight 1-thread run
  cfg=$src/tests/mpi/dropout_cnn.ini
  small=(--set data.train_limit=500 --set data.test_limit=200 --set train.progress=none)
  final=ckpt-e0002-s00000034.h5
  run 1 1 "$work/s" --set checkpoint.dir="$work/s1" || { cat "$work/s"; fail "straight run failed"; }
  run 1 3 "$work/a" --set checkpoint.dir="$work/m" --set train.max_steps=9 ||
    { cat "$work/a"; fail "3 threads failed"; }
  mid=$work/m/ckpt-e0000-s00000009.h5
  [ -f "$mid" ] || { ls "$work/m"; fail "no mid-epoch checkpoint"; }
  run 2 2 "$work/b" --set checkpoint.dir="$work/r" --resume "$mid" || { cat "$work/b"; fail "resume failed"; }
  grep -q "in epoch 1 after step 9" "$work/b" || { cat "$work/b"; fail "did not resume mid-epoch"; }
  same_ckpt "$work/s1/$final" "$work/r/$final" "1 x 3 -> 2 x 2 resume"
  [ "$(grep '^test:' "$work/s")" = "$(grep '^test:' "$work/b")" ] || fail "resumed test line differs"
  echo "1 x 3 threads -> 2 ranks x 2 threads resume: identical to the straight 1-thread run"
  ;;
threads_default)
  # [train] threads = 0: the cores the rank may use, and the banner says why
  cfg=$src/tests/mpi/dropout_cnn.ini
  small=(--set data.train_limit=60 --set data.test_limit=30 --set train.epochs=1
         --set train.progress=none --set checkpoint.dir="$work/k")
  cores=$(nproc --all)
  if [ "$cores" -ge 2 ] && command -v taskset >/dev/null; then
    taskset -c 0 "$bin" "$cfg" "${small[@]}" >"$work/mask" 2>&1 || { cat "$work/mask"; fail "taskset run failed"; }
    grep -q "^threads: 1 per rank (the rank's affinity mask: 1 of the node's $cores cores)" "$work/mask" ||
      { cat "$work/mask"; fail "the affinity mask was not taken"; }
  fi
  # more threads than a rank's chunks: the banner says how many are busy
  "$bin" "$cfg" "${small[@]}" --set train.threads=8 >"$work/many" 2>&1 || { cat "$work/many"; fail "8 threads failed"; }
  grep -q "^threads: 8 per rank (\[train\] threads), 4 busy: a rank gets at most 4 reduction chunks" "$work/many" ||
    { cat "$work/many"; fail "no note of the busy threads"; }
  # the variables count only where no mask narrower than the node binds the test
  [ "$(nproc)" -lt "$cores" ] && { echo "PASS [$case_name] (bound to $(nproc) of $cores cores)"; exit 0; }
  env -u OPENBLAS_NUM_THREADS -u SLURM_CPUS_PER_TASK OMP_NUM_THREADS=3 "$bin" "$cfg" "${small[@]}" \
    >"$work/omp" 2>&1 || { cat "$work/omp"; fail "OMP_NUM_THREADS run failed"; }
  grep -q "^threads: 3 per rank (OMP_NUM_THREADS=3)" "$work/omp" &&
    grep -q "^cnn-train: 1 rank, .* 3 threads per rank" "$work/omp" ||
    { cat "$work/omp"; fail "OMP_NUM_THREADS was not taken"; }
  env -u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS SLURM_CPUS_PER_TASK=2 "$bin" "$cfg" "${small[@]}" \
    >"$work/slurm" 2>&1 || { cat "$work/slurm"; fail "SLURM_CPUS_PER_TASK run failed"; }
  grep -q "^threads: 2 per rank (SLURM_CPUS_PER_TASK=2)" "$work/slurm" ||
    { cat "$work/slurm"; fail "SLURM_CPUS_PER_TASK was not taken"; }
  ;;
threads_bench)
  # cnn-bench times cnn-train's step: the chunks on the threads (and its
  # ranks under mpirun), or with --whole-batch one pass over the batch
  bench=$2/cnn-bench
  cfg=$src/tests/mpi/resbn_cnn.ini
  b=(--steps 2 --warmup 1 --batch 24)
  "$bench" "$cfg" "${b[@]}" --threads 2 >"$work/b2" 2>&1 || { cat "$work/b2"; fail "cnn-bench --threads 2 failed"; }
  grep -q "^RESULT cnn-bench .* train_img_s=[0-9.]* infer_img_s=[0-9.]* step=chunks chunk_size=8 busy_threads=2 ranks=1 " "$work/b2" ||
    { cat "$work/b2"; fail "--threads 2: not the chunked step on 2 threads"; }
  "$bench" "$cfg" "${b[@]}" --threads 8 >"$work/b8" 2>&1 || { cat "$work/b8"; fail "cnn-bench --threads 8 failed"; }
  grep -q " step=chunks chunk_size=8 busy_threads=3 " "$work/b8" || { cat "$work/b8"; fail "--threads 8: not 3 busy (3 chunks)"; }
  "$bench" "$cfg" "${b[@]}" --whole-batch >"$work/bw" 2>&1 || { cat "$work/bw"; fail "--whole-batch failed"; }
  grep -q " step=whole-batch .* busy_threads=1 " "$work/bw" || { cat "$work/bw"; fail "--whole-batch: no such step"; }
  # shellcheck disable=SC2046
  timeout 120 mpirun $(mpiflags 2) -np 2 "$bench" "$cfg" "${b[@]}" >"$work/bn" 2>&1 || { cat "$work/bn"; fail "cnn-bench at np 2 failed"; }
  [ "$(grep -c '^RESULT cnn-bench .* busy_threads=1 ranks=2 ' "$work/bn")" = 1 ] || { cat "$work/bn"; fail "np 2: not one RESULT line of 2 ranks"; }
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
