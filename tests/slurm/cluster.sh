# A one-node SLURM cluster in a directory, for the tests: munged, slurmctld
# and slurmd (Debian's slurm-wlm and munge) with their own key, socket,
# ports, state and logs. Sourced; needs root (slurmd starts jobs as their
# user). Stopping kills only the daemons started here, by their pid files.
#   cluster_start DIR NCPUS [TASK_PLUGIN]   (default task/none; exports
#                 SLURM_CONF; returns non-zero on failure)
#   cluster_stop DIR
#   cluster_wait_job JOBID SECONDS   (until the job has left the queue)

# A TCP port nobody listens on, from a range the system does not hand out.
cluster_free_port() {
  local p
  for p in $(shuf -i 20000-29999 -n 50); do
    [ -n "$(ss -ltnH "sport = :$p")" ] || { echo "$p"; return 0; }
  done
  return 1
}

# wait_for SECONDS COMMAND...: retries COMMAND every 0.2 s
cluster_wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

cluster_start() {
  local dir=$1 ncpus=$2 task=${3:-task/none} host port_ctl port_d
  host=$(hostname -s)
  port_ctl=$(cluster_free_port) && port_d=$(cluster_free_port) || return 1
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" || return 1
  chmod 700 "$dir"
  dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none && chmod 600 "$dir/munge.key"
  munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed" ||
    { cat "$dir/log/munged.log"; return 1; }
  cat >"$dir/slurm.conf" <<EOF
ClusterName=cnntest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it may start again
AuthInfo=socket=$dir/munge.socket,cred_expire=10
SlurmctldPort=$port_ctl
SlurmdPort=$port_d
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=$task
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
SchedulerType=sched/builtin
# look at the queue every 2 s (default 60): requeued jobs start soon after cred_expire
SchedulerParameters=sched_interval=2
MinJobAge=600
NodeName=$host CPUs=$ncpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -f "$SLURM_CONF" || { cat "$dir/log/slurmctld.log"; return 1; }
  slurmd -f "$SLURM_CONF" || { cat "$dir/log/slurmd.log"; return 1; }
  # the node is up once sinfo shows it idle
  cluster_wait_for 30 bash -c 'sinfo -h -N -o %t | grep -qx idle' ||
    { echo "slurm node not idle after 30 s"; sinfo -N; tail "$dir"/log/*.log; return 1; }
}

# Cancels the cluster's jobs (their step daemons end with them), then kills
# the daemons of DIR by pid file: TERM, then KILL after 10 s.
cluster_stop() {
  local dir=$1 f pid i
  if [ -s "$dir/slurmctld.pid" ] && [ -f "$dir/slurm.conf" ]; then
    SLURM_CONF=$dir/slurm.conf scancel --full --quiet --user=root 2>/dev/null
    SLURM_CONF=$dir/slurm.conf cluster_wait_for 30 bash -c '[ -z "$(squeue -h -o %i -t PD,R,CG,CF,S)" ]'
  fi
  for f in slurmd slurmctld munged; do
    [ -s "$dir/$f.pid" ] || continue
    pid=$(cat "$dir/$f.pid")
    # only the daemon that wrote the file, not a process that took its pid
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$f" ] && kill "$pid" 2>/dev/null || continue
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  done
}

# Waits until job JOBID is neither pending, running nor being requeued.
# SIGNALING (the --signal warning on its way, a moment before the time
# limit) and STAGE_OUT are passing states too: CI once saw SIGNALING and
# took it for the end of the job.
cluster_wait_job() {
  local job=$1 deadline=$((SECONDS + $2)) state
  while :; do
    state=$(scontrol show job "$job" 2>/dev/null | sed -nE 's/.*JobState=([A-Z_]+).*/\1/p')
    case "$state" in
    PENDING | RUNNING | REQUEUED | REQUEUE_HOLD | REQUEUE_FED | COMPLETING | CONFIGURING | \
      SUSPENDED | SIGNALING | STAGE_OUT | RESIZING | "") ;;
    *) echo "$state"; return 0 ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || { echo "TIMEOUT($state)"; return 1; }
    sleep 1
  done
}
