#!/usr/bin/env bash
# MPI tests of cnn-train through mpirun.
#   mpi_test.sh CASE BUILD_DIR SOURCE_DIR [BN_TRAIN_DUMP]
set -uo pipefail
case_name=$1
bin=$2/cnn-train
src=$3
dump=${4:-}
. "$src/tests/lib.sh"

# A small run with an odd global batch (uneven slices at np 2, 3, 4) and a
# last partial batch (500 % 30 = 20), so every slicing path is used.
cfg=$src/configs/fashion_cnn.ini
small=(--set data.train_limit=500 --set data.test_limit=250 --set train.epochs=1
       --set train.batch_size=30 --set train.threads=1 --set train.history="$work/h.csv")

run_np() { # run_np NP OUTFILE [options...]
  local np=$1 outfile=$2
  shift 2
  # shellcheck disable=SC2046
  timeout 120 mpirun $(mpiflags "$np") -np "$np" "$bin" "$cfg" "${small[@]}" "$@" >"$outfile" 2>&1
}

# The result lines of a run without times and speeds.
results() {
  grep -E '^([0-9]+/[0-9]+ - |test:)' "$1" | sed -E 's/ - [0-9.]+s - / - /; s/ - [0-9]+ img\/s//'
}

case "$case_name" in
ranks_agree|ranks_agree_adam|ranks_agree_collective|ranks_agree_hierarchical)
  # Same config and seed on 1-4 ranks (uneven chunk counts at 3) give the
  # same training run, bit for bit: the final weights and optimizer state
  # are identical and so is every printed figure. Each rank updates its own
  # shard of the parameters, so the _adam case also uses weight decay (on
  # kernels only), many small buckets, and no overlap at np 3, at ranks
  # whose shards start in the middle of a layer.
  nps="2 3 4"
  if [ "$case_name" = ranks_agree_adam ]; then
    small+=(--set optimizer.type=adam --set optimizer.weight_decay=0.01 --set dist.bucket_mb=0.05)
    nps="3 4"
  fi
  # [dist] exchange: the same bits whichever way the buckets travel (np 1
  # has no exchange and stays the reference)
  ex=()
  case $case_name in
  ranks_agree_collective) ex=(--set dist.exchange=collective) ;;
  ranks_agree_hierarchical) ex=(--set dist.exchange=hierarchical) ;;
  esac
  run_np 1 "$work/np1" --set checkpoint.dir="$work/c1" || { cat "$work/np1"; fail "np 1 failed"; }
  ref=$(results "$work/np1")
  [ "$(echo "$ref" | grep -c .)" -ge 2 ] || { cat "$work/np1"; fail "np 1 printed no result"; }
  final=ckpt-e0001-s00000017.h5
  for np in $nps; do
    extra=(--set dist.overlap=true)
    [ "$case_name" = ranks_agree_adam ] && [ "$np" = 3 ] && extra=(--set dist.overlap=false)
    run_np "$np" "$work/np$np" --set checkpoint.dir="$work/c$np" "${extra[@]}" "${ex[@]}" ||
      { cat "$work/np$np"; fail "np $np failed"; }
    [ "$(grep -c '^test:' "$work/np$np")" -eq 1 ] || fail "np $np: more than one rank printed"
    if [ ${#ex[@]} -gt 0 ]; then
      grep -q "^exchange: ${ex[1]#dist.exchange=}, as \[dist\] exchange says" "$work/np$np" ||
        { cat "$work/np$np"; fail "np $np: the exchange is not reported"; }
    fi
    got=$(results "$work/np$np")
    [ "$got" = "$ref" ] || { diff <(echo "$ref") <(echo "$got"); fail "np $np differs from np 1"; }
    h5diff "$work/c1/$final" "$work/c$np/$final" /model /model ||
      fail "np $np: weights differ from np 1"
    h5diff "$work/c1/$final" "$work/c$np/$final" /optimizer /optimizer ||
      fail "np $np: optimizer state differs from np 1"
    echo "np $np: weights identical to np 1; $(echo "$got" | tail -1)"
  done
  ;;
resume_other_np)
  # A checkpoint written at np 4 in the middle of the epoch (step 9 of 17)
  # resumes at np 2, and at np 3, and ends with the weights of a straight
  # np 1 run.
  run_np 1 "$work/s" --set checkpoint.dir="$work/s1" || { cat "$work/s"; fail "straight run failed"; }
  run_np 4 "$work/a" --set checkpoint.dir="$work/m" --set train.max_steps=9 || { cat "$work/a"; fail "np 4 failed"; }
  mid=$work/m/ckpt-e0000-s00000009.h5
  [ -f "$mid" ] || { ls "$work/m"; fail "no mid-epoch checkpoint"; }
  for np in 2 3; do
    rm -rf "$work/r$np"
    run_np "$np" "$work/b$np" --set checkpoint.dir="$work/r$np" --resume "$mid" ||
      { cat "$work/b$np"; fail "resume at np $np failed"; }
    grep -q "in epoch 1 after step 9" "$work/b$np" || { cat "$work/b$np"; fail "np $np did not resume"; }
    h5diff "$work/s1/ckpt-e0001-s00000017.h5" "$work/r$np/ckpt-e0001-s00000017.h5" /model /model ||
      fail "np 4 -> $np resume: weights differ from the straight run"
    echo "np 4 -> np $np: identical to the straight run"
  done
  ;;
signal_stop)
  # SIGUSR1 to mpirun (SLURM's --signal=B:USR1@T) during a 2-rank run: all
  # ranks stop after the same step, a checkpoint is written, exit 75; the
  # resumed run ends with the weights of an uninterrupted one.
  long=(--set train.epochs=30 --set checkpoint.every_epochs=10)
  # shellcheck disable=SC2046
  mpirun $(mpiflags 2) -np 2 "$bin" "$cfg" "${small[@]}" "${long[@]}" \
    --set checkpoint.dir="$work/k" >"$work/out" 2>&1 &
  pid=$!
  for _ in $(seq 600); do # the first epoch is done: training is under way
    grep -q '^17/17 - ' "$work/out" 2>/dev/null && break
    sleep 0.1
  done
  kill -USR1 "$pid"
  wait "$pid"
  rc=$?
  [ "$rc" -eq 75 ] || { cat "$work/out"; fail "exit $rc, expected 75"; }
  grep -q "^stopped by signal 10 after global step" "$work/out" || { cat "$work/out"; fail "no stop message"; }
  grep -q '^test:' "$work/out" && fail "the stopped run went on to test"
  n=$(ls "$work/k"/ckpt-*.h5 | wc -l)
  [ "$n" -ge 1 ] || fail "no checkpoint"
  run_np 1 "$work/res" "${long[@]}" --set checkpoint.dir="$work/k" --resume auto ||
    { cat "$work/res"; fail "resume failed"; }
  run_np 1 "$work/st" "${long[@]}" --set checkpoint.dir="$work/u" || { cat "$work/st"; fail "straight run failed"; }
  last=ckpt-e0030-s00000510.h5
  h5diff "$work/u/$last" "$work/k/$last" /model /model || fail "resumed weights differ from the straight run"
  echo "stopped at: $(grep '^stopped' "$work/out")"
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
  # One rank fails at step 3 (a read error, a NaN input, or dying): the job
  # ends within seconds, non-zero, and the error is reported once with the
  # rank that had it. The NaN pixel goes through cv1 (our relu keeps it) and
  # dies in cv2's fused relu (oneDNN's max(x, 0)), so it is cv1's weight
  # gradient that is NaN.
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
  nan) pat="rank 1: epoch 1 step 3 \(global step 3\): the gradient of rank 1's samples is NaN" ;;
  exit) pat="exited|Exit code" ;;
  esac
  [ "$(grep -Ec "$pat" "$work/out")" -ge 1 ] || { cat "$work/out"; fail "no '$pat'"; }
  [ "$kind" = exit ] || [ "$(grep -c "^cnn-train: rank" "$work/out")" -eq 1 ] ||
    { cat "$work/out"; fail "message not printed exactly once"; }
  grep -q '^test:' "$work/out" && fail "training went on"
  echo "exit $rc after ${took}s"
  ;;
stalled_rank)
  # [dist] timeout_s: rank 2 of 3 is stopped (SIGSTOP) in the middle of
  # training; instead of hanging, the job ends within seconds with a
  # message naming rank 2 (from rank 0, whose left neighbour it is). Twice:
  # stopped in the steps (the exchange's waits), and stopped while the
  # validation set goes through (epochs of 2 steps and 6000 validation
  # images), so that the others wait in the evaluation's blocking
  # collectives, which hung before the watchdog guarded them. No checkpoints:
  # rank 0 writing one for longer than timeout_s (a loaded machine) would be
  # named by rank 1, rightly so.
  tmo=${STALL_TIMEOUT_S:-3} # STALL_TIMEOUT_S=0 shows the job without the watchdog
  stall() { # stall NAME DELAY [options...]: stop rank 2 DELAY s after an epoch's line
    local name=$1 delay=$2 out=$work/$1
    shift 2
    # shellcheck disable=SC2046
    # (epochs enough to outlast the stop: 30 epochs of 0.1 s had ended before
    # a loaded machine's poll saw the first one's line, and then rank 2 was
    # stopped after training, where nothing watches)
    timeout 60 mpirun $(mpiflags 3) -np 3 "$bin" "$cfg" "${small[@]}" --set train.epochs=100000 \
      --set dist.timeout_s="$tmo" --set checkpoint.dir="$work/k$name" \
      --set checkpoint.every_epochs=0 --set checkpoint.best=false "$@" >"$out" 2>&1 &
    local pid=$! victim="" c
    for _ in $(seq 600); do
      grep -q '^1/17 - \|^17/17 - \|^2/2 - ' "$out" 2>/dev/null && break
      sleep 0.1
    done
    sleep "$delay"
    for c in $(pgrep -P "$(pgrep -P "$pid")"); do # timeout -> mpirun -> the ranks
      tr '\0' '\n' <"/proc/$c/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=2 && victim=$c
    done
    [ -n "$victim" ] || { kill "$pid"; cat "$out"; fail "$name: rank 2 not found"; }
    kill -STOP "$victim"
    local start=$SECONDS
    while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - start)) -le 30 ]; do sleep 0.2; done
    local hung=0
    kill -0 "$pid" 2>/dev/null && { hung=1; kill "$pid"; }
    wait "$pid"
    local rc=$? took=$((SECONDS - start))
    kill -CONT "$victim" 2>/dev/null
    kill -KILL "$victim" 2>/dev/null
    [ "$hung" = 0 ] || { cat "$out"; fail "$name: still running 30 s after the stop"; }
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$out"; fail "$name: exit $rc after ${took}s"; }
    grep -q "^cnn-train: rank 0: rank 2 stopped answering: no word from it for [0-9]* s in .*(\[dist\] timeout_s = $tmo)" "$out" ||
      { cat "$out"; fail "$name: no message naming rank 2"; }
    echo "$name: ended $took s after the stop: $(grep 'stopped answering' "$out" | head -1)"
  }
  stall steps 0
  stall evaluation 0.2 --set data.train_limit=60 --set data.test_limit=6000
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
bn_ranks_agree|bn_float|bn_resume)
  # batch_normalization (tests/mpi/bn_cnn.ini). bn_train_dump trains as
  # cnn-train does and writes the moving statistics and weights, after
  # checking that all ranks hold the same ones.
  cfg=$src/tests/mpi/bn_cnn.ini
  dump_np() { # dump_np NP OUT [options...]
    local np=$1 out=$2
    shift 2
    # shellcheck disable=SC2046
    timeout 120 mpirun $(mpiflags "$np") -np "$np" "$dump" "$out" "$cfg" "${small[@]}" "$@" \
      >"$out.log" 2>&1 || { cat "$out.log"; fail "bn_train_dump at np $np failed"; }
  }
  final=ckpt-e0001-s00000017.h5
  ;;&
bn_ranks_agree)
  # Exact reduction: every forward call is one chunk of 8 samples (ghost
  # batches), the moving statistics come from the step's chunks summed in
  # fixed point, so np 1, 2 and 3 (uneven chunk counts) train to the same
  # bits: printed figures (the test set goes through the moving
  # statistics), weights, optimizer state and moving statistics.
  run_np 1 "$work/np1" --set checkpoint.dir="$work/c1" || { cat "$work/np1"; fail "np 1 failed"; }
  grep -q "^batch_normalization (3 layers): batch statistics over reduction chunks of 8 samples" \
    "$work/np1" || { cat "$work/np1"; fail "no batch_normalization line in the banner"; }
  ref=$(results "$work/np1")
  dump_np 1 "$work/d1"
  for np in 2 3; do
    run_np "$np" "$work/np$np" --set checkpoint.dir="$work/c$np" ||
      { cat "$work/np$np"; fail "np $np failed"; }
    got=$(results "$work/np$np")
    [ "$got" = "$ref" ] || { diff <(echo "$ref") <(echo "$got"); fail "np $np differs from np 1"; }
    h5diff "$work/c1/$final" "$work/c$np/$final" /model /model || fail "np $np: weights differ"
    h5diff "$work/c1/$final" "$work/c$np/$final" /optimizer /optimizer ||
      fail "np $np: optimizer state differs"
    dump_np "$np" "$work/d$np"
    cmp "$work/d1" "$work/d$np" || fail "np $np: moving statistics differ from np 1"
    echo "np $np: weights, optimizer state and moving statistics identical to np 1"
  done
  ;;
bn_float)
  # Float reduction: each rank normalises its own slice (15 samples at
  # np 2, 10 at np 3), as PyTorch DDP's BatchNorm; all ranks still fold the
  # same averaged statistics into the moving ones, but they differ from np 1.
  small+=(--set dist.reduction=float)
  dump_np 1 "$work/d1"
  for np in 2 3; do
    dump_np "$np" "$work/d$np"
    grep -q "batch statistics over each rank's slice of the global batch (" "$work/d$np.log" ||
      { cat "$work/d$np.log"; fail "np $np: no per-rank note in the banner"; }
    cmp -s "$work/d1" "$work/d$np" && fail "np $np: float slices gave np 1's statistics"
    echo "np $np: all ranks agree; statistics differ from np 1, as documented"
  done
  ;;
bn_resume)
  # A checkpoint written at np 3 in the middle of the epoch (step 9 of 17)
  # resumes at np 2 and ends with the weights and moving statistics of a
  # straight np 1 run (the moving statistics travel in /model).
  dump_np 1 "$work/d1" --set checkpoint.dir="$work/s1"
  run_np 3 "$work/a" --set checkpoint.dir="$work/m" --set train.max_steps=9 ||
    { cat "$work/a"; fail "np 3 failed"; }
  mid=$work/m/ckpt-e0000-s00000009.h5
  [ -f "$mid" ] || { ls "$work/m"; fail "no mid-epoch checkpoint"; }
  dump_np 2 "$work/d2" --set checkpoint.dir="$work/r2" --resume "$mid"
  grep -q "in epoch 1 after step 9" "$work/d2.log" || { cat "$work/d2.log"; fail "did not resume"; }
  h5diff "$work/s1/$final" "$work/r2/$final" /model /model || fail "resumed weights differ"
  cmp "$work/d1" "$work/d2" || fail "resumed moving statistics differ from the straight run"
  echo "np 3 -> np 2 resume: weights and moving statistics identical to the straight run"
  ;;
resbn_ranks_agree|resbn_resume)
  # A residual BN network (tests/mpi/resbn_cnn.ini: add, concatenate,
  # global average pooling, BN on conv and flat tensors) with SGD, Nesterov
  # momentum, weight decay, a cosine schedule with warm-up and both
  # callbacks: 250 samples in batches of 30 (9 steps an epoch, the last
  # one 10 samples = chunks of 8 + 2). val_accuracy never beats its best by
  # 0.5, so the rate halves after epochs 2 and 4 (cooldown 2 skips epoch 3);
  # val_loss never improves by 10, so training stops after epoch 4 with
  # epoch 1's weights back.
  cfg=$src/tests/mpi/resbn_cnn.ini
  small=(--set data.train_limit=250 --set data.test_limit=100 --set train.epochs=6
         --set train.threads=1 --set train.progress=none --set checkpoint.keep=10
         --set reduce_lr_on_plateau.monitor=val_accuracy --set reduce_lr_on_plateau.min_delta=0.5
         --set reduce_lr_on_plateau.patience=1 --set reduce_lr_on_plateau.cooldown=2
         --set reduce_lr_on_plateau.factor=0.5
         --set early_stopping.min_delta=10 --set early_stopping.patience=3
         --set early_stopping.restore_best_weights=true)
  final=ckpt-e0004-s00000036.h5
  same_ckpt() { # same_ckpt A B WHAT: weights with moving statistics, optimizer, callbacks
    # (val_loss is monitored: its bits too) and the history's figures in full precision
    for g in /model /optimizer /callbacks /history/loss /history/accuracy /history/val_loss \
             /history/val_accuracy /history/lr; do
      h5diff "$1" "$2" $g $g >/dev/null || fail "$3: $g differs"
    done
  }
  lr_col() { cut -d, -f1-6 "$1"; } # epoch .. lr: the history without times
  run_np 1 "$work/np1" --set checkpoint.dir="$work/c1" --set train.history="$work/h1.csv" ||
    { cat "$work/np1"; fail "np 1 failed"; }
  grep -q "^Epoch 4: early stopping; restoring the weights of epoch 1" "$work/np1" ||
    { cat "$work/np1"; fail "np 1: no early stop after epoch 4"; }
  [ "$(grep -c "ReduceLROnPlateau reducing" "$work/np1")" -eq 2 ] &&
    grep -q "^Epoch 2: ReduceLROnPlateau" "$work/np1" && grep -q "^Epoch 4: ReduceLROnPlateau" "$work/np1" ||
    { cat "$work/np1"; fail "np 1: the rate was not lowered after epochs 2 and 4 only"; }
  [ -f "$work/c1/$final" ] || { ls "$work/c1"; fail "no $final"; }
  ref=$(results "$work/np1")
  ;;&
resbn_ranks_agree)
  for np in 2 3; do
    run_np "$np" "$work/np$np" --set checkpoint.dir="$work/c$np" --set train.history="$work/h$np.csv" ||
      { cat "$work/np$np"; fail "np $np failed"; }
    got=$(results "$work/np$np")
    [ "$got" = "$ref" ] || { diff <(echo "$ref") <(echo "$got"); fail "np $np differs from np 1"; }
    diff <(grep '^Epoch' "$work/np1") <(grep '^Epoch' "$work/np$np") || fail "np $np: callbacks decided otherwise"
    diff <(lr_col "$work/h1.csv") <(lr_col "$work/h$np.csv") || fail "np $np: history differs"
    same_ckpt "$work/c1/$final" "$work/c$np/$final" "np $np"
    # every epoch's checkpoint, not only the restored weights at the end
    same_ckpt "$work/c1/ckpt-e0003-s00000027.h5" "$work/c$np/ckpt-e0003-s00000027.h5" "np $np, epoch 3"
    echo "np $np: weights, moving statistics, optimizer state, callbacks and history identical to np 1"
  done
  ;;
resbn_resume)
  # stopped at np 3 in epoch 3 (step 21 = 18 + 3: after the first lowered
  # rate, inside the cooldown), resumed at np 2
  run_np 3 "$work/a" --set checkpoint.dir="$work/m" --set train.history="$work/hm.csv" \
    --set train.max_steps=21 || { cat "$work/a"; fail "np 3 failed"; }
  mid=$work/m/ckpt-e0002-s00000021.h5
  [ -f "$mid" ] || { ls "$work/m"; fail "no mid-epoch checkpoint"; }
  run_np 2 "$work/b" --set checkpoint.dir="$work/r" --set train.history="$work/hr.csv" --resume "$mid" ||
    { cat "$work/b"; fail "resume at np 2 failed"; }
  grep -q "in epoch 3 after step 3" "$work/b" || { cat "$work/b"; fail "np 2 did not resume mid-epoch"; }
  same_ckpt "$work/c1/$final" "$work/r/$final" "np 3 -> np 2 resume"
  diff <(lr_col "$work/h1.csv") <(lr_col "$work/hr.csv") || fail "resumed history differs"
  [ "$(grep '^test:' "$work/np1")" = "$(grep '^test:' "$work/b")" ] || fail "resumed test line differs"
  echo "np 3 -> np 2 resume mid-epoch: identical to the straight np 1 run"
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
