#!/usr/bin/env bash
# A real Slurm with accounting on this one host, for the `slurm` tests and the benchmark.
#
#   bash scripts/slurm-testbed.sh start    install Debian's packages if missing, write configs, start
#                                          munge, MariaDB, slurmdbd, slurmctld and two slurmd (nodes n1, n2);
#                                          returns once both nodes are idle and sacct answers
#   bash scripts/slurm-testbed.sh stop     stop the Slurm daemons (MariaDB and munge are left running)
#   bash scripts/slurm-testbed.sh status   print what runs (exit 0 when Slurm answers)
#   bash scripts/slurm-testbed.sh node-start n1   (re)start one slurmd, e.g. after a node-failure test
#
# Runs as root, with no TTY, and is safe to re-run: daemons already up are left alone.
# Configuration goes to /etc/slurm (where sbatch/sacct look); state and logs to .testbed/slurm/.
#
# Cluster shape (fits a 2-core machine): nodes n1, n2 with 1 CPU and 4000 MB each;
#   partition `debug` (default, MaxTime 30 min), partition `short` (MaxTime 2 min);
#   accounting enforced: account `llm` (root's default) and `other` exist, any other account is refused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SLURM_TESTBED_DIR:-$ROOT/.testbed/slurm}"
ETC=/etc/slurm
CLUSTER=llmjobs-testbed
HOST="$(hostname -s)"
NODES=(n1 n2)
DB_PASS=llmjobs-testbed
PACKAGES=(munge mariadb-server slurmctld slurmd slurmdbd slurm-client)

log() { echo "[slurm-testbed] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_configs() {
  mkdir -p "$ETC" "$DIR"/{state,log,run} "${NODES[@]/#/$DIR/spool/}"
  cat >"$ETC/slurm.conf" <<EOF
# written by scripts/slurm-testbed.sh; rewritten on every start
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# requeued jobs wait one credential lifetime before they start again (default 120 s)
AuthInfo=cred_expire=30
SlurmctldPort=6817
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
# no cgroups in a container: track processes by parent pid, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
GresTypes=gpu
# two slurmd on one host share its hardware; keep the configured shape
SlurmdParameters=config_overrides
# accounting (sacct) and enforcement (unknown accounts refused at submit)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos
EnforcePartLimits=ALL
JobCompType=jobcomp/none
# fast reactions for tests: node failure noticed within ~30 s, jobs killed 5 s after their signal
SlurmdTimeout=30
SlurmctldTimeout=30
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=600
ReturnToService=2
MpiDefault=none
NodeName=n1 NodeHostname=$HOST Port=17001 CPUs=1 Sockets=1 CoresPerSocket=1 ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeHostname=$HOST Port=17002 CPUs=1 Sockets=1 CoresPerSocket=1 ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=00:30:00 State=UP
PartitionName=short Nodes=n[1-2] MaxTime=00:02:00 State=UP
EOF
  cat >"$ETC/slurmdbd.conf" <<EOF
# written by scripts/slurm-testbed.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"
  # no cgroup.conf: Slurm 22.05 autodetects the host's cgroup version for slurmd's own bookkeeping
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2; shift 2
  for _ in $(seq "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what did not come up within ${secs}s; logs in $DIR/log"
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge: /etc/munge/munge.key; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge: /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for 20 munge sh -c 'munge -n </dev/null | unmunge'
}

start_mariadb() {
  if mysqladmin ping >/dev/null 2>&1; then :; else
    mkdir -p /run/mysqld && chown mysql: /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    # mysqld_safe keeps the server up without systemd; it daemonizes itself
    (setsid mysqld_safe --user=mysql >"$DIR/log/mariadb.out" 2>&1 &)
    wait_for 60 MariaDB mysqladmin ping
  fi
  if [ "${1:-0}" = 1 ]; then
    # a fresh controller state restarts job ids at 1: accounting kept from an earlier testbed would then
    # hold old jobs under the new ids, and sacct would mix them (a new job read as an old one's end)
    log "fresh controller state: starting with an empty accounting database"
    mysql -uroot -e "DROP DATABASE IF EXISTS slurm_acct_db;"
  fi
  mysql -uroot <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
  pid_alive "$DIR/run/slurmdbd.pid" || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  # associations: the cluster, two accounts, root in both (llm by default)
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i -Q add account llm,other Cluster="$CLUSTER" Description=testbed Organization=llmjobs >/dev/null 2>&1 || true
  sacctmgr -i -Q add user root Account=llm,other DefaultAccount=llm Cluster="$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -n -P list assoc cluster="$CLUSTER" user=root format=account | grep -qx llm \
    || die "could not create the accounting associations (see $DIR/log/slurmdbd.log)"
}

start_slurmctld() {
  if pid_alive "$DIR/run/slurmctld.pid"; then
    scontrol reconfigure >/dev/null 2>&1 || true
  else
    slurmctld
  fi
  wait_for 60 slurmctld scontrol ping
}

start_slurmd() {  # start_slurmd NODE
  local node=$1
  pid_alive "$DIR/run/slurmd-$node.pid" && return 0
  slurmd -N "$node"
}

nodes_idle() {
  local states
  states=$(sinfo -h -N -p debug -o '%N %T' | sort -u)
  for n in "${NODES[@]}"; do
    echo "$states" | grep -Eq "^$n (idle|mixed|allocated)$" || return 1
  done
}

resume_down_nodes() {
  # a node that was down (e.g. after a slurmd kill) comes back by ReturnToService=2; this covers drained ones
  local down
  down=$(sinfo -h -N -o '%N %T' | awk '$2 ~ /down|drain|fail/ {print $1}' | sort -u | paste -sd, -)
  [ -n "$down" ] && scontrol update NodeName="$down" State=RESUME >/dev/null 2>&1 || true
}

cmd_start() {
  need_root
  local t0=$SECONDS fresh=0
  [ -e "$DIR/state/job_state" ] || pid_alive "$DIR/run/slurmctld.pid" || fresh=1
  install_packages
  write_configs
  start_munge
  start_mariadb "$fresh"
  start_slurmdbd
  start_slurmctld
  for n in "${NODES[@]}"; do start_slurmd "$n"; done
  for _ in $(seq 90); do
    nodes_idle && break
    resume_down_nodes
    sleep 1
  done
  nodes_idle || { sinfo -N >&2; die "nodes did not become idle; logs in $DIR/log"; }
  wait_for 30 sacct sacct -n -X -j 1
  log "up in $((SECONDS - t0))s: $(sinfo -h -N -o '%N:%T' | sort -u | paste -sd' ' -)"
}

cmd_node_start() {
  need_root
  local node=${1:?node name, e.g. n1}
  start_slurmd "$node"
  for _ in $(seq 90); do
    sinfo -h -N -n "$node" -o '%T' | grep -Eq '^(idle|mixed|allocated)$' && return 0
    resume_down_nodes
    sleep 1
  done
  die "$node did not come back"
}

stop_pidfile() {  # stop_pidfile FILE NAME
  local f=$1 name=$2 pid
  pid_alive "$f" || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || { log "stopped $name"; return 0; }; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  need_root
  # cancel what is left so that jobs do not outlive their daemons
  scancel --user=root >/dev/null 2>&1 || true
  for n in "${NODES[@]}"; do stop_pidfile "$DIR/run/slurmd-$n.pid" "slurmd $n"; done
  stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
  stop_pidfile "$DIR/run/slurmdbd.pid" slurmdbd
}

cmd_status() {
  for f in slurmdbd slurmctld "${NODES[@]/#/slurmd-}"; do
    if pid_alive "$DIR/run/$f.pid"; then echo "$f: running (pid $(cat "$DIR/run/$f.pid"))"; else echo "$f: stopped"; fi
  done
  scontrol ping >/dev/null 2>&1 || { echo "slurm: not answering"; return 1; }
  sinfo -N
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  node-start) cmd_node_start "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|node-start NODE" >&2; exit 2 ;;
esac
