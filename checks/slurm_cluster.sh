#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the SLURM tests (`make test-slurm`) and for trying
# `python sweep.py ... launcher=slurm` without a real cluster.
#
#   bash checks/slurm_cluster.sh start     # install (Debian packages, root, once), then munged, slurmctld, slurmd
#   export SLURM_CONF=/tmp/vipo-slurm/slurm.conf   # what `start` prints: sbatch/squeue/the tests find the cluster
#   bash checks/slurm_cluster.sh stop      # stop every daemon `start` started (slurmd first), by pid
#   bash checks/slurm_cluster.sh status
#   bash checks/slurm_cluster.sh running   # exit 0 when both daemons of this cluster are up
#
# No systemd and no cgroups: proctrack/linuxproc, task/none, no accounting. One node, `localhost`, with this
# machine's CPUs (VIPO_SLURM_CPUS to change) and memory. Exit 3 from `start` means SLURM cannot start here
# (not root, no apt, no packages); it prints one line saying why.
set -uo pipefail
D=${VIPO_SLURM_DIR:-/tmp/vipo-slurm}
CONF=$D/slurm.conf
cmd=${1:-status}

say() { echo "[slurm-cluster] $*"; }
cannot() { say "SLURM cannot start here: $*"; exit 3; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -f "$1" ] && cat "$1" 2>/dev/null; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || cannot "the SLURM packages are missing and installing them needs root"
  command -v apt-get >/dev/null || cannot "the SLURM packages are missing and there is no apt-get"
  say "installing slurmctld slurmd slurm-client munge (Debian packages)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge) >"$D/apt.log" 2>&1 || cannot "apt-get install failed (see $D/apt.log)"
}

write_conf() {
  local cpus=${VIPO_SLURM_CPUS:-$(nproc)}
  local mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$D/state" "$D/spool"
  cat >"$CONF" <<EOF
# written by checks/slurm_cluster.sh: one node, no cgroups, no accounting
ClusterName=vipo
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again after this many seconds (SLURM's default, 120 s, would make the requeue test slow)
AuthInfo=cred_expire=5
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
SlurmctldPort=${VIPO_SLURM_PORT:-6817}
SlurmdPort=$(( ${VIPO_SLURM_PORT:-6817} + 1 ))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# start queued and requeued jobs within a few seconds (defaults: 60 s and 30 s)
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
  mkdir -p "$D"
  if alive "$(pid_of "$D/slurmctld.pid")"; then say "already running (SLURM_CONF=$CONF)"; return 0; fi
  install
  [ "$(id -u)" = 0 ] || cannot "the daemons run as root here (SlurmUser=root) and this is uid $(id -u)"
  local t0; t0=$(date +%s.%N)
  write_conf
  rm -f "$D/started_munged"
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged || cannot "munged did not start"
    echo yes >"$D/started_munged"
  fi
  export SLURM_CONF=$CONF
  /usr/sbin/slurmctld -f "$CONF" -i || cannot "slurmctld did not start (see $D/slurmctld.log)"
  /usr/sbin/slurmd -f "$CONF" -N localhost || { stop; cannot "slurmd did not start (see $D/slurmd.log)"; }
  for _ in $(seq 1 150); do  # up to 30 s for the node to report idle
    if sinfo -h -o "%T" 2>/dev/null | grep -qx idle; then
      say "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" "BEGIN {printf \"%.1f\", b - a}") s: $(sinfo -h -o '%N %c CPUs %m MB %T')"
      say "export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.2
  done
  stop
  cannot "the node did not become idle within 30 s (see $D/slurmctld.log, $D/slurmd.log)"
}

stop_pid() {  # name pidfile
  local pid; pid=$(pid_of "$2")
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do alive "$pid" || { say "stopped $1 ($pid)"; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null && say "killed $1 ($pid): it ignored SIGTERM"
}

stop() {
  export SLURM_CONF=$CONF
  [ -f "$CONF" ] && scancel --quiet --user "$(id -un)" 2>/dev/null
  stop_pid slurmd "$D/slurmd.pid"        # first: slurmd may ignore SIGTERM once slurmctld is gone
  stop_pid slurmctld "$D/slurmctld.pid"
  if [ -f "$D/started_munged" ]; then stop_pid munged /run/munge/munged.pid; rm -f "$D/started_munged"; fi
  return 0
}

case "$cmd" in
  start) start ;;
  running) alive "$(pid_of "$D/slurmctld.pid")" && alive "$(pid_of "$D/slurmd.pid")" ;;
  stop) stop ;;
  status)
    for n in slurmctld slurmd; do
      pid=$(pid_of "$D/$n.pid"); if alive "$pid"; then say "$n running ($pid)"; else say "$n not running"; fi
    done
    [ -f "$CONF" ] && SLURM_CONF=$CONF sinfo 2>/dev/null ;;
  *) echo "usage: $0 start|stop|status|running" >&2; exit 2 ;;
esac
