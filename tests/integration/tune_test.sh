#!/usr/bin/env bash
# cnn-tune end to end: a tiny search of LeNet-5 on 2,000 images.
#   tune_test.sh CASE BUILD_DIR SOURCE_DIR
set -uo pipefail
case_name=$1
tune=$2/cnn-tune
train=$2/cnn-train
src=$3
. "$src/tests/lib.sh"
base=$src/tests/integration/tune_lenet5.ini

# make_cfg OUT DIR RANKS_PER_TRIAL [sed expressions...]: the test search
# with its [tune] dir and ranks_per_trial set.
make_cfg() {
  local out=$1 dir=$2 rpt=$3
  shift 3
  sed -e "s|^dir = tune$|dir = $dir|" -e "s|^ranks_per_trial = 1$|ranks_per_trial = $rpt|" \
    "$@" "$base" >"$out"
}

run_tune() { # run_tune NP CONFIG LOG [--set S.K=V]...
  local np=$1 cfg=$2 log=$3
  shift 3
  # shellcheck disable=SC2046
  timeout 600 mpirun $(mpiflags "$np") -np "$np" "$tune" "$cfg" "$@" >"$log" 2>&1
}

# png_size FILE: "WIDTHxHEIGHT" from the IHDR chunk (bytes 16-23).
png_size() {
  od -An -tu1 -j16 -N8 "$1" | awk '{printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'
}
check_png() { # check_png FILE: there, a PNG, 800x600
  [ -f "$1" ] || fail "no $1"
  [ "$(png_size "$1")" = 800x600 ] || fail "$1 is $(png_size "$1"), not 800x600"
}

# The columns that do not depend on who ran a trial: id, values, epochs,
# objective, status (not seconds, ranks).
results() { cut -d, -f1-7 "$1"; }

case "$case_name" in
groups)
  # 6 trials at np 2 as 2 groups of 1 rank and as 1 group of 2 ranks: the
  # same trials and the same objectives, bit for bit (%.17g), as training
  # gives the same bits on any number of ranks.
  make_cfg "$work/g1.ini" "$work/g1" 1
  make_cfg "$work/g2.ini" "$work/g2" 2
  run_tune 2 "$work/g1.ini" "$work/l1" || { cat "$work/l1"; fail "2 groups of 1 failed"; }
  run_tune 2 "$work/g2.ini" "$work/l2" || { cat "$work/l2"; fail "1 group of 2 failed"; }
  grep -q "2 groups of 1 rank" "$work/l1" || { cat "$work/l1"; fail "not 2 groups of 1"; }
  grep -q "1 group of 2 ranks" "$work/l2" || { cat "$work/l2"; fail "not 1 group of 2"; }
  [ "$(grep -c '^Trial [0-5]/6 completed' "$work/l1")" -eq 6 ] || { cat "$work/l1"; fail "not 6 progress lines"; }
  [ "$(results "$work/g1/trials.csv" | grep -c ',completed$')" -eq 6 ] ||
    { cat "$work/g1/trials.csv"; fail "not 6 completed trials"; }
  diff <(results "$work/g1/trials.csv") <(results "$work/g2/trials.csv") ||
    fail "the objectives depend on the groups"
  cut -d, -f9 "$work/g1/trials.csv" | sort -u | tr '\n' ' ' | grep -q '^1 ranks $' || fail "ranks column of 2 groups"
  cut -d, -f9 "$work/g2/trials.csv" | sort -u | tr '\n' ' ' | grep -q '^2 ranks $' || fail "ranks column of 1 group"
  # [train] threads = auto: every trial runs with the job's share of the
  # cores (not its group's, which would change the bits), and says so
  # (OPENBLAS_NUM_THREADS, as the sanitizer stage sets it, wins when set)
  want=${OPENBLAS_NUM_THREADS:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}
  for t in "$work"/g1/trials/*/trial.ini "$work"/g2/trials/*/trial.ini; do
    grep -q "^threads = $want$" "$t" || fail "$t: not threads = $want"
  done
  # distinct points, and the objectives are not all alike
  [ "$(cut -d, -f2-4 "$work/g1/trials.csv" | sort -u | wc -l)" -eq 7 ] || fail "a point was drawn twice"
  [ "$(cut -d, -f6 "$work/g1/trials.csv" | sort -u | wc -l)" -ge 3 ] || fail "objectives all alike"
  # --summary: best first, the best trial's objective
  "$tune" --summary "$work/g1" >"$work/s" || { cat "$work/s"; fail "--summary failed"; }
  best=$(tail -n +2 "$work/g1/trials.csv" | sort -t, -k6 -g -r | head -1 | cut -d, -f1,6)
  grep -q "^Best: trial ${best%,*}, val_accuracy ${best#*,}$" "$work/s" ||
    { cat "$work/s"; fail "--summary does not name trial ${best%,*} as best"; }
  awk '$1 == "1" {print $2}' "$work/s" | grep -qx "${best%,*}" || { cat "$work/s"; fail "rank 1 is not the best"; }
  # the graph of the objective per trial, drawn at the end and by --summary
  grep -q "^plots: $work/g1/objective.png$" "$work/l1" || { cat "$work/l1"; fail "no plots line"; }
  grep -q "^plots: $work/g1/objective.png$" "$work/s" || { cat "$work/s"; fail "--summary: no plots line"; }
  check_png "$work/g1/objective.png"
  grep -q '^Budget: 12 epochs trained in 6 trials; the best val_accuracy' "$work/s" ||
    { cat "$work/s"; fail "--summary: no budget line"; }
  echo "2 groups: $(grep '^search done' "$work/l1")"
  echo "1 group:  $(grep '^search done' "$work/l2")"
  ;;
rerun)
  # The best trial's config, run alone with cnn-train, trains the same
  # model: the same weights and the same figures of every epoch, so the
  # same objective bit for bit.
  make_cfg "$work/t.ini" "$work/t" 1 -e 's/^max_trials = 6$/max_trials = 3/'
  run_tune 2 "$work/t.ini" "$work/l" || { cat "$work/l"; fail "search failed"; }
  [ -f "$work/t/best.ini" ] && [ -f "$work/t/best.h5" ] || fail "no best.ini / best.h5"
  ! grep -q '^\[tune\]\|^\[search\]' "$work/t/best.ini" || fail "best.ini keeps the search sections"
  (cd "$work" && timeout 300 "$train" t/best.ini --set checkpoint.dir="$work/re" \
     --set train.history="$work/re.csv") >"$work/r" 2>&1 || { cat "$work/r"; fail "cnn-train best.ini failed"; }
  final=$(ls "$work/re"/ckpt-*.h5 | tail -1)
  h5diff "$work/t/best.h5" "$final" /model /model || fail "the rerun's weights differ"
  for c in loss accuracy val_loss val_accuracy; do
    h5diff "$work/t/best.h5" "$final" /history/$c /history/$c || fail "the rerun's $c differs"
  done
  got=$(h5dump -m %.17g -d /history/val_accuracy "$final" | grep -o '[0-9.e-]*$' | grep -v '^$' | sort -g | tail -1)
  best=$(tail -n +2 "$work/t/trials.csv" | sort -t, -k6 -g -r | head -1 | cut -d, -f6)
  [ "$got" = "$best" ] || fail "rerun's best val_accuracy $got, the search's objective $best"
  echo "best objective $best, the rerun's $got"
  ;;
resume)
  # kill -9 in the middle of the search, run it again: it goes on where it
  # was. No finished trial runs again (each log has one test: line, so a
  # trial trained once), none is lost, and the objectives are those of an
  # uninterrupted search.
  # 8,000 images: an epoch of a trial lasts long enough (~0.2 s) for the
  # poll below to see trial 4's first checkpoint before its second prunes
  # it (keep = 1); with 2,000 a whole search took 0.5 s and the poll could
  # miss it (CI, 2026-12-01)
  more='s/^train_limit = 2000$/train_limit = 8000/'
  make_cfg "$work/a.ini" "$work/a" 1 -e "$more"
  make_cfg "$work/k.ini" "$work/k" 1 -e "$more"
  grep -q '^train_limit = 8000$' "$work/k.ini" || fail "the test config has no train_limit = 2000"
  run_tune 2 "$work/a.ini" "$work/la" || { cat "$work/la"; fail "the straight search failed"; }
  # shellcheck disable=SC2046
  mpirun $(mpiflags 2) -np 2 "$tune" "$work/k.ini" >"$work/lk1" 2>&1 &
  pid=$!
  # killed once trial 4 has a checkpoint (in the middle of it, or while
  # trial 5 still runs when its epoch 2 pruned epoch 1's before a poll saw
  # it), or once 5 trials are done, whichever comes first: the one left
  # then takes at least a trial's time, while a checkpoint of trial 4 seen
  # only as the search ended once let all 6 finish first (CI, 2026-12-01)
  mid=$work/k/trials/0004/exec0/ckpt
  deadline=$((SECONDS + 240))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    compgen -G "$mid/ckpt-e000*-*.h5" >/dev/null && break
    [ "$(compgen -G "$work/k/trials/*/result" | wc -l)" -ge 5 ] && break
    sleep 0.005
  done
  kill -9 $(pgrep -P "$pid") "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  done_before=$(compgen -G "$work/k/trials/*/result" | wc -l)
  [ "$done_before" -ge 1 ] || { cat "$work/lk1"; fail "killed before any trial was done"; }
  [ "$done_before" -lt 6 ] || fail "killed too late: all trials done"
  interrupted=0 # trial 4 stopped after a checkpoint of its own
  if compgen -G "$mid/ckpt-e000*-*.h5" >/dev/null && [ ! -f "$work/k/trials/0004/result" ]; then
    interrupted=1
  fi
  run_tune 2 "$work/k.ini" "$work/lk2" || { cat "$work/lk2"; fail "the resumed search failed"; }
  grep -q "^resumed: $done_before trials of $work/k already done" "$work/lk2" ||
    { cat "$work/lk2"; fail "no resume line for $done_before trials"; }
  diff <(results "$work/a/trials.csv") <(results "$work/k/trials.csv") ||
    fail "the resumed search differs from the straight one"
  for l in "$work"/k/trials/*/exec0/log.txt; do
    [ "$(grep -c '^test:' "$l")" -eq 1 ] || { cat "$l"; fail "$l: a trial ran twice or not at all"; }
  done
  # an interrupted trial continued from its checkpoint
  if [ $interrupted = 1 ]; then
    grep -q "^resumed from $mid/ckpt-e000" "$work/k/trials/0004/exec0/log.txt" ||
      { cat "$work/k/trials/0004/exec0/log.txt"; fail "trial 4 did not resume from its checkpoint"; }
  fi
  echo "killed with $done_before of 6 trials done (trial 4 interrupted: $interrupted);" \
       "resumed to the straight search's objectives"
  ;;
failures)
  # A grid of 4: a kernel that does not fit the 28x28 input and a rate that
  # makes the loss NaN fail with their messages; the search goes on.
  make_cfg "$work/f.ini" "$work/f" 1 -e 's/^algorithm = random$/algorithm = grid/' \
    -e '/^max_trials/d' -e '/^conv2d_1.filters/d' -e '/^dense_1.units/d' \
    -e 's/^optimizer.lr = .*/optimizer.lr = choice(0.001, 1000)\nconv2d_1.kernel = choice(5, 30)/'
  run_tune 2 "$work/f.ini" "$work/l" || { cat "$work/l"; fail "the search failed"; }
  cat "$work/f/trials.csv"
  [ "$(grep -c ',completed,' "$work/f/trials.csv")" -eq 1 ] || fail "not 1 completed"
  grep -q '^0,0.001,5,2,[0-9.]*,completed,' "$work/f/trials.csv" || fail "trial 0 did not complete"
  grep '^1,0.001,30,' "$work/f/trials.csv" | grep -q ',failed,.*conv2d' || fail "the kernel 30 trial"
  grep '^2,1000,5,' "$work/f/trials.csv" | grep -qi ',failed,.*NaN' || fail "the NaN trial"
  grep -q '^Trial 2/4 failed' "$work/l" || { cat "$work/l"; fail "no progress line of the failure"; }
  # a rerun repeats nothing: the failed trials are results too
  run_tune 2 "$work/f.ini" "$work/l2" || fail "the rerun failed"
  grep -q '^resumed: 4 trials' "$work/l2" || { cat "$work/l2"; fail "the rerun ran trials again"; }
  ;;
hyperband)
  # Hyperband (max_epochs 4, factor 2: Keras Tuner's 3 brackets): a
  # promotion continues its parent's checkpoint, and ends with the weights
  # of a straight run of its config: the top trial of bracket 2 trained
  # epoch 1, then 2, then 3-4 in three trials, as one 4-epoch run.
  make_cfg "$work/h.ini" "$work/h" 1 -e 's/^algorithm = random$/algorithm = hyperband\nmax_epochs = 4\nfactor = 2/' \
    -e '/^max_trials/d'
  run_tune 2 "$work/h.ini" "$work/l" || { cat "$work/l"; fail "the search failed"; }
  # 4 + 2 + 1 trials in bracket 2, 3 + 2 in bracket 1, 3 in bracket 0
  [ "$(tail -n +2 "$work/h/trials.csv" | grep -c ',completed,')" -eq 15 ] || { cat "$work/h/trials.csv"; fail "not 15 trials"; }
  last=$(awk -F, '$7 == 2 && $8 == 2 {print $1}' "$work/h/trials.csv")
  [ -n "$last" ] || fail "no round 2 in bracket 2"
  t=$(printf '%s/h/trials/%04d' "$work" "$last")
  grep -q "^resumed from $t/exec0/ckpt/ckpt-e0002-" "$t/exec0/log.txt" || { cat "$t/exec0/log.txt"; fail "trial $last did not continue its parent"; }
  grep -q '^epochs = 4$' "$t/trial.ini" || fail "trial $last: its trial.ini has not 4 epochs"
  (cd "$work" && timeout 300 "$train" "$t/trial.ini" --set checkpoint.dir="$work/st" \
     --set train.history="$work/st.csv") >"$work/r" 2>&1 || { cat "$work/r"; fail "the straight run failed"; }
  h5diff "$t/exec0/ckpt/ckpt-e0004-s00000052.h5" "$work/st/ckpt-e0004-s00000052.h5" /model /model ||
    fail "promotions do not end with the straight run's weights"
  h5diff "$t/exec0/ckpt/ckpt-e0004-s00000052.h5" "$work/st/ckpt-e0004-s00000052.h5" /history/val_accuracy /history/val_accuracy ||
    fail "promotions do not have the straight run's val_accuracy"
  # the graphs: the objective per trial and, per bracket, per epoch;
  # --summary draws them again
  for b in 0 1 2; do check_png "$work/h/objective-bracket-$b.png"; done
  check_png "$work/h/objective.png"
  rm "$work"/h/*.png
  "$tune" --summary "$work/h" >"$work/s" || { cat "$work/s"; fail "--summary failed"; }
  grep -q "^plots: $work/h/objective.png $work/h/objective-bracket-0.png $work/h/objective-bracket-1.png $work/h/objective-bracket-2.png$" "$work/s" ||
    { cat "$work/s"; fail "--summary: no plots line"; }
  for b in 0 1 2; do check_png "$work/h/objective-bracket-$b.png"; done
  grep -q '^Budget: 30 epochs trained in 15 trials;' "$work/s" || { cat "$work/s"; fail "budget of the brackets"; }
  echo "trial $last (3 rounds) = a straight 4-epoch run"
  ;;
executions)
  # executions_per_trial = 2 (set with --set): each trial trains twice,
  # with seed 42 and a seed of (tune seed, trial, execution); the objective
  # is their mean. 2 groups of 1 and 1 group of 2 give the same seeds and
  # objectives, and cnn-train best.ini --set train.seed=SEED reproduces
  # execution SEED's objective bit for bit.
  make_cfg "$work/e1.ini" "$work/e1" 1
  make_cfg "$work/e2.ini" "$work/e2" 2
  sets=(--set tune.executions_per_trial=2 --set tune.max_trials=2)
  run_tune 2 "$work/e1.ini" "$work/l1" "${sets[@]}" || { cat "$work/l1"; fail "2 groups of 1 failed"; }
  run_tune 2 "$work/e2.ini" "$work/l2" "${sets[@]}" || { cat "$work/l2"; fail "1 group of 2 failed"; }
  cat "$work/e1/trials.csv"
  grep -q '^executions_per_trial = 2' "$work/e1/search.ini" || fail "search.ini lacks the --set"
  [ "$(ls -d "$work"/e1/trials/*/exec1 | wc -l)" -eq 2 ] || fail "not 2 second executions"
  # id, values, epochs, objective, status; and seeds, execution_objectives
  diff <(results "$work/e1/trials.csv") <(results "$work/e2/trials.csv") ||
    fail "the objectives depend on the groups"
  diff <(cut -d, -f10,11 "$work/e1/trials.csv") <(cut -d, -f10,11 "$work/e2/trials.csv") ||
    fail "the executions depend on the groups"
  [ "$(tail -n +2 "$work/e1/trials.csv" | cut -d, -f10 | grep -c '^42 [0-9][0-9]*$')" -eq 2 ] ||
    fail "not 2 seeds a trial, the first 42"
  [ "$(tail -n +2 "$work/e1/trials.csv" | cut -d, -f10 | sort -u | wc -l)" -eq 2 ] ||
    fail "the second executions share a seed"
  tail -n +2 "$work/e1/trials.csv" | awk -F, '{split($11, o, " ");
      if (sprintf("%.17g", (o[1] + o[2]) / 2) != $6) { print "trial " $1 ": " $6 " is not the mean of " $11; bad = 1 } }
      END { exit bad }' || fail "an objective is not the mean of its executions"
  best=$(tail -n +2 "$work/e1/trials.csv" | sort -t, -k6 -g -r | head -1)
  seed=$(echo "$best" | cut -d, -f10 | cut -d' ' -f2)
  want=$(echo "$best" | cut -d, -f11 | cut -d' ' -f2)
  (cd "$work" && timeout 300 "$train" e1/best.ini --set train.seed="$seed" --set checkpoint.dir="$work/re" \
     --set train.history="$work/re.csv") >"$work/r" 2>&1 || { cat "$work/r"; fail "cnn-train best.ini failed"; }
  final=$(ls "$work/re"/ckpt-*.h5 | tail -1)
  got=$(h5dump -m %.17g -d /history/val_accuracy "$final" | grep -o '[0-9.e-]*$' | grep -v '^$' | sort -g | tail -1)
  [ "$got" = "$want" ] || fail "execution 1 rerun with seed $seed: $got, the search's $want"
  echo "best trial ${best%%,*}: executions $(echo "$best" | cut -d, -f11), mean $(echo "$best" | cut -d, -f6); seed $seed reran to $got"
  ;;
space_errors)
  # A search space or [tune] that cannot be used: one line naming the file
  # and the line, exit 2, and no rank trains (no trials directory).
  check() { # check SED_EXPR MESSAGE_REGEX
    make_cfg "$work/e.ini" "$work/e" 1 -e "$1"
    # shellcheck disable=SC2046
    timeout 60 mpirun $(mpiflags 2) -np 2 "$tune" "$work/e.ini" >"$work/o" 2>"$work/err"
    rc=$?
    [ $rc -eq 2 ] || { cat "$work/o" "$work/err"; fail "'$1': exit $rc, not 2"; }
    [ "$(grep -c '^cnn-tune: ' "$work/err")" -eq 1 ] || { cat "$work/err"; fail "'$1': not one line"; }
    grep -qE "^cnn-tune: $work/e.ini:$2" "$work/err" || { cat "$work/err"; fail "'$1': message"; }
    [ ! -e "$work/e/trials" ] || fail "'$1': trials started"
  }
  check 's/^optimizer.lr = .*/optimizer.lr = float(1e-2, 1e-4)/' '33: \[search\] optimizer.lr: min 0.01 is above max'
  check 's/^optimizer.lr = .*/optimizer.lr = float(0, 1, sampling=log)/' '33: \[search\] optimizer.lr: sampling = log needs min > 0'
  check 's/^optimizer.lr = .*/optimizer.lr = gauss(0, 1)/' "33: \[search\] optimizer.lr: unknown hyper-parameter type 'gauss'"
  check 's/^optimizer.lr = .*/optimizer.lr = float(1e-4, 1e-2, step=0)/' '33: \[search\] optimizer.lr: step must be a positive'
  check 's/^optimizer.lr = .*/optimizer.lr = float(1e-4)/' '33: \[search\] optimizer.lr: float\(\) needs min and max'
  check 's/^optimizer.lr = .*/optimizer.lr = choice(1, 1)/' "33: \[search\] optimizer.lr: '1' appears twice"
  check 's/^optimizer.lr = .*/optimizer.lr = int(1, 5/' '33: \[search\] optimizer.lr: expected float'
  check 's/^optimizer.lr = .*/optimizer.lrr = float(1e-4, 1e-2)/' '33: \[search\] optimizer.lrr: .*lrr'
  check 's/^optimizer.lr = .*/conv2d.filters = int(4, 8)/' '33: \[search\] conv2d.filters: .*2 \[conv2d\] layers'
  check 's/^optimizer.lr = .*/lr = float(1e-4, 1e-2)/' '33: \[search\] lr: the key must be section.key'
  check 's/^algorithm = random$/algorithm = grid/' '33: \[search\] optimizer.lr: grid search needs a step'
  check 's/^algorithm = random$/algorithm = bayes/' '25: \[tune\] algorithm'
  check 's/^max_trials = 6$/max_trial = 6/' '26: \[tune\] max_trial: unknown key'
  check 's/^ranks_per_trial = 1$/ranks_per_trial = 3/' '[0-9]+: \[tune\] ranks_per_trial = 3 does not divide'
  check 's/^objective = val_accuracy$/objective = val_f1/' '24: \[tune\] objective'
  # a --set that names nothing in the config
  make_cfg "$work/e.ini" "$work/e" 1
  # shellcheck disable=SC2046
  timeout 60 mpirun $(mpiflags 2) -np 2 "$tune" "$work/e.ini" --set bogus.x=1 >"$work/o" 2>"$work/err"
  rc=$?
  [ $rc -eq 2 ] && [ "$(grep -c '^cnn-tune: ' "$work/err")" -eq 1 ] &&
    grep -q "^cnn-tune: --set bogus.x=1: no section or layer named 'bogus' in $work/e.ini" "$work/err" ||
    { cat "$work/err"; fail "--set bogus.x=1: exit $rc"; }
  [ ! -e "$work/e/trials" ] || fail "--set bogus.x=1: trials started"
  ;;
cli)
  "$tune" --version | grep -q '^cnn-tune (cnn-train) ' || fail "--version"
  "$tune" >/dev/null 2>&1; [ $? -eq 2 ] || fail "no arguments: not exit 2"
  "$tune" --bogus x >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown option: not exit 2"
  "$tune" a.ini b.ini >/dev/null 2>&1; [ $? -eq 2 ] || fail "two configs: not exit 2"
  "$tune" --summary >/dev/null 2>&1; [ $? -eq 2 ] || fail "--summary without DIR: not exit 2"
  "$tune" --summary d --set train.epochs=1 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--summary with --set: not exit 2"
  "$tune" a.ini --set >/dev/null 2>&1; [ $? -eq 2 ] || fail "--set without a value: not exit 2"
  "$tune" --summary "$work/none" 2>"$work/err"; rc=$?
  [ $rc -ne 0 ] && grep -q "$work/none/search.ini" "$work/err" || fail "--summary of no search"
  ;;
*)
  fail "unknown case $case_name"
  ;;
esac
echo "PASS [$case_name]"
