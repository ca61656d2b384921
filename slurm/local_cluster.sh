#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, from Debian 12's packages (slurm-wlm 22.05, munge),
# for the tests of tests/scaleout (submitit sweeps, requeue, srun DDP). Idempotent and quick:
# returns at once when `sinfo` already shows the node up. Needs root (CI runs as root).
#   bash slurm/local_cluster.sh          # install if missing, start, wait for the node
#   bash slurm/local_cluster.sh stop     # stop the daemons it started (by their pid files)
set -euo pipefail

CONF=/etc/slurm/slurm.conf
PIDS=(/run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/munge/munged.pid)

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-start}" = stop ]; then
  for p in "${PIDS[@]}"; do running "$p" && kill "$(cat "$p")" && echo "stopped $(basename "$p" .pid)"; done
  exit 0
fi

node_up() { timeout 10 sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; }
if command -v sinfo >/dev/null && node_up; then echo "slurm: node up"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "slurm/local_cluster.sh: needs root to install and start slurmctld/slurmd" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sinfo >/dev/null; then
  echo "slurm: installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: the authentication daemon (the package created /etc/munge/munge.key)
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || /usr/sbin/create-munge-key; chown munge:munge /etc/munge/munge.key; }
running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged

mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /etc/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm /run/slurm
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
WANT=$(cat <<CONFEOF
# written by whylearn's slurm/local_cluster.sh: one node (this machine) as localhost
ClusterName=local
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONFEOF
)
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT" ]; then
  echo "$WANT" > "$CONF"
  # a changed configuration needs fresh daemons
  for p in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do running "$p" && kill "$(cat "$p")" || true; done
  sleep 1
fi

running /run/slurm/slurmctld.pid || /usr/sbin/slurmctld
running /run/slurm/slurmd.pid || /usr/sbin/slurmd -N localhost

for _ in $(seq 60); do
  if node_up; then echo "slurm: node up ($CPUS CPUs, ${MEM} MB)"; exit 0; fi
  # a node left down or drained by an earlier run: put it back
  timeout 5 scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  sleep 0.5
done
echo "slurm/local_cluster.sh: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
