#!/usr/bin/env bash
# The shipped launch/slurm.sbatch against a real SLURM: a one-node cluster
# of 2 CPUs started in a temporary directory (tests/slurm/cluster.sh) and
# stopped afterwards, also on failure. Runs only when CNN_TEST_SLURM=1 (it
# starts daemons as root): needs root, munge and slurm-wlm; skipped (exit
# 77) otherwise.
#   CNN_TEST_SLURM=1 ctest --test-dir build -L slurm
#   slurm_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
build=$2
src=$3
. "$src/tests/lib.sh"
. "$src/tests/slurm/cluster.sh"
[ "${CNN_TEST_SLURM:-0}" = 1 ] ||
  { echo "SKIP: set CNN_TEST_SLURM=1 to start a test SLURM cluster (root, munge, slurm-wlm)"; exit 77; }
for c in munged slurmctld slurmd sbatch h5diff; do
  command -v "$c" >/dev/null || { echo "SKIP: no $c (apt-get install munge slurm-wlm)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: the test cluster's daemons run as root"; exit 77; }

trap 'cluster_stop "$work/cluster"; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM HUP
# cpu_bind: a site whose TaskPlugin binds tasks to CPUs
task=task/none
[ "$case_name" = cpu_bind ] && task=task/affinity
cluster_start "$work/cluster" 2 "$task" || fail "could not start the test cluster"
mkdir "$work/jobs" && cd "$work/jobs" || exit 1
# As a user would after building: cnn-train on PATH (the script's default).
export PATH=$build:$PATH
cfg=$src/configs/fashion_cnn.ini
small=(--set data.train_limit=600 --set data.test_limit=300 --set train.progress=lines)

# submit SBATCH_OPTIONS... -- CNN_TRAIN_OPTIONS...: prints the job id
submit() {
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  sbatch --parsable "${opts[@]}" "$src/launch/slurm.sbatch" "$cfg" "${small[@]}" "$@" ||
    fail "sbatch refused the job"
}
# job_field JOB KEY: KEY=value of scontrol show job
job_field() { scontrol show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
# finished JOB SECONDS EXPECTED_STATE
finished() {
  local state
  state=$(cluster_wait_job "$1" "$2")
  [ "$state" = "$3" ] || { cat "cnn-train-$1.out"; scontrol show job "$1"; fail "job $1 ended $state, expected $3"; }
}
# same_model A B: the weights and optimizer state of two checkpoints are bit-identical
same_model() {
  h5diff "$1" "$2" /model /model >/dev/null || fail "weights of $1 and $2 differ"
  h5diff "$1" "$2" /optimizer /optimizer >/dev/null || fail "optimizer state of $1 and $2 differs"
}

case "$case_name" in
train)
  # 2 ranks x 1 thread, and the hybrid shape: 1 rank x 2 threads
  j=$(submit --ntasks=2 -- --set train.epochs=2 --set checkpoint.dir=A)
  finished "$j" 120 COMPLETED
  out=cnn-train-$j.out
  grep -q "ranks x threads = 2 x 1 on 1 node(s); srun --mpi=pmix --cpu-bind=(none); $build/cnn-train" "$out" ||
    { cat "$out"; fail "the script did not say how it launched"; }
  grep -q '^cnn-train: 2 ranks,' "$out" && grep -q '^test: loss=' "$out" || { cat "$out"; fail "no 2-rank training"; }
  [ -f A/ckpt-e0002-s00000038.h5 ] || { ls A; fail "no final checkpoint"; }
  [ "$(job_field "$j" ExitCode)" = 0:0 ] && [ "$(job_field "$j" Restarts)" = 0 ] || fail "exit code or restarts"
  j=$(submit --ntasks=1 --cpus-per-task=2 -- --set train.epochs=1 --set checkpoint.dir=H)
  finished "$j" 120 COMPLETED
  grep -q "ranks x threads = 1 x 2 on" "cnn-train-$j.out" && grep -q "^cnn-train: 1 rank, .* 2 threads per rank" "cnn-train-$j.out" ||
    { cat "cnn-train-$j.out"; fail "--cpus-per-task=2 did not give 2 threads"; }
  ;;
cpu_bind)
  # with task/affinity the script binds each rank to its cores
  j=$(submit --ntasks=2 -- --set train.epochs=1 --set checkpoint.dir=B)
  finished "$j" 120 COMPLETED
  grep -q "ranks x threads = 2 x 1 on 1 node(s); srun --mpi=pmix --cpu-bind=cores;" "cnn-train-$j.out" &&
    grep -q '^test: loss=' "cnn-train-$j.out" || { cat "cnn-train-$j.out"; fail "no bound 2-rank training"; }
  ;;
requeue)
  # SLURM sends the warning signal at its first check (every 30 s) after
  # time limit - 20 s - 30 s, so 10 to 40 s into each run of a --time=1
  # job. The training is sized from the steady rate of a timed run to last
  # ~55 s of training alone (evaluation and start-up come on top), so that
  # at least one run is stopped, requeued and resumed. The rate of one job
  # varies up to 3.5x on these test clusters (1,900 img/s in a 2-epoch run,
  # then 7,300 in the sized job on a CI machine, which so finished before
  # the signal): a job that ends unstopped is sized again from its own
  # steady rate (a long run's) and submitted once more.
  j=$(submit --ntasks=2 -- --set train.epochs=2 --set checkpoint.dir=T)
  finished "$j" 120 COMPLETED
  # size OUT: epochs of 600 images (data.train_limit above) for ~55 s at
  # the steady rate of the run in OUT
  size() {
    local r
    r=$(sed -nE 's/^steady: .*, ([0-9.]+) img\/s after .*/\1/p' "$1" | tail -1)
    [ -n "$r" ] || { cat "$1" >&2; echo "no steady line in $1" >&2; return 1; }
    echo "$1: $r img/s" >&2
    awk -v r="$r" 'BEGIN { e = int(55 * r / 600) + 1; print (e < 10 ? 10 : e > 3000 ? 3000 : e) }'
  }
  epochs=$(size "cnn-train-$j.out") || fail "cannot size the run"
  for attempt in 1 2; do
    echo "attempt $attempt: $epochs epochs"
    run=(--set train.epochs="$epochs" --set checkpoint.every_epochs=5)
    final=$(printf 'ckpt-e%04d-s%08d.h5' "$epochs" $((epochs * 19)))
    rm -rf I I.csv
    ji=$(submit --ntasks=2 --time=1 --signal=USR1@20 -- "${run[@]}" --set checkpoint.dir=I --set train.history=I.csv)
    finished "$ji" 600 COMPLETED
    out=cnn-train-$ji.out
    restarts=$(job_field "$ji" Restarts)
    [ "$restarts" -ge 1 ] && break
    [ "$attempt" = 2 ] && { cat "$out"; fail "the job was never stopped by its time limit (restarts $restarts)"; }
    e=$(size "$out") || fail "cannot size the run"
    epochs=$((e * 3 / 2))
  done
  grep -q '^stopped by signal 10 after global step' "$out" && grep -q "requeueing job $ji" "$out" &&
    grep -q '^resumed from I/ckpt-' "$out" && grep -q '^test: loss=' "$out" ||
    { cat "$out"; fail "no stop, requeue, resume and finish"; }
  echo "job $ji: requeued $restarts times"
  jr=$(submit --ntasks=2 -- "${run[@]}" --set checkpoint.dir=R --set train.history=R.csv)
  finished "$jr" 600 COMPLETED
  [ "$(job_field "$jr" Restarts)" = 0 ] || fail "the reference run was requeued"
  [ -f "I/$final" ] && [ -f "R/$final" ] || { ls I R; fail "no $final"; }
  same_model "I/$final" "R/$final"
  # the same history, but for the time columns
  [ "$(cut -d, -f1-6 I.csv)" = "$(cut -d, -f1-6 R.csv)" ] || { diff I.csv R.csv; fail "history differs"; }
  [ "$(grep '^test:' "$out")" = "$(grep '^test:' "cnn-train-$jr.out")" ] || fail "test lines differ"
  ;;
rank_fails)
  # rank 1 exits at step 3: the job fails, is not requeued, and says so
  j=$(CNN_TEST_FAULT=1:3:exit submit --ntasks=2 -- --set train.epochs=1 --set checkpoint.dir=F)
  finished "$j" 120 FAILED
  out=cnn-train-$j.out
  grep -q 'task 1: Exited with exit code 3' "$out" && grep -q "^cnn-train: job $j failed: srun exited with" "$out" ||
    { cat "$out"; fail "no clear message"; }
  code=$(job_field "$j" ExitCode)
  [ "${code%%:*}" -ne 0 ] && [ "$(job_field "$j" Restarts)" = 0 ] || { scontrol show job "$j"; fail "exit code $code"; }
  ;;
*) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
