#!/usr/bin/env bash
# A real OpenPBS 23.06 server on this one host, for the `pbs_real` tests (tests/pbs/real/).
#
#   bash scripts/pbs-testbed.sh start          install the build dependencies if missing, build and install
#                                              OpenPBS into /opt/pbs once per machine (~10 min on 2 busy
#                                              cores; later starts reuse it), create the network namespace, start
#                                              pbs_comm, pbs_server, pbs_sched and pbs_mom inside it, configure
#                                              the server; returns once the node is free. Prints the shim dir.
#   bash scripts/pbs-testbed.sh stop           delete what is left of the jobs, stop the daemons
#   bash scripts/pbs-testbed.sh status         print what runs (exit 0 when the server answers)
#   bash scripts/pbs-testbed.sh exec -- CMD    run CMD inside the namespace (e.g. exec -- qstat -f)
#   bash scripts/pbs-testbed.sh build          only install the dependencies, build and install (once)
#   bash scripts/pbs-testbed.sh bin            print the shim dir (qsub/qstat/qdel/qmgr/pbsnodes that run
#                                              the real commands inside the namespace); put it first on PATH
#
# Source: the OpenPBS source release and the Python 3.11 patch in shared/vendor/openpbs/ next to the repository
# (override with LLMJOBS_OPENPBS_SRC=DIR). Runs as root, with no TTY, and is safe to re-run.
#
# Why a network namespace: PBS's network layer (TPP) skips every 127.0.0.0/8 address, so the server's name must
# resolve to another address. That address lives on the loopback of a namespace made for the test bed, never in
# this machine's own namespace; every daemon, client (qsub, qstat, qdel) and job runs inside that namespace.
# pbs_comm listens on 17101, not its default 17001 (the Slurm test bed's slurmd n1), so the two never meet,
# even without the namespace.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${LLMJOBS_OPENPBS_SRC:-$ROOT/../shared/vendor/openpbs}"
VERSION=23.06.06
PREFIX=/opt/pbs
HOME_DIR=/var/spool/pbs            # PBS_HOME
BUILD_DIR="${PBS_TESTBED_BUILD_DIR:-/var/tmp/llmjobs-openpbs-build}"
DIR="${PBS_TESTBED_DIR:-$ROOT/.testbed/pbs}"   # logs of this script, the shim dir
NS="${PBS_TESTBED_NS:-llmjobs-pbs}"
# an address outside 127.0.0.0/8 (TPP skips those); it exists only on the namespace's loopback
ADDR="${PBS_TESTBED_ADDR:-10.217.0.1}"
HOSTNAME_PBS="${PBS_TESTBED_HOST:-pbs-testbed}"
COMM_PORT=17101
QUEUE=workq
PACKAGES=(gcc make libtool libhwloc-dev libx11-dev libxt-dev libedit-dev libical-dev libncurses-dev perl
  postgresql-server-dev-all postgresql-contrib postgresql python3-dev tcl-dev tk-dev swig libexpat1-dev
  libssl-dev libxext-dev libxft-dev autoconf automake g++ libcjson-dev expat hwloc iproute2 patch)

log() { echo "[pbs-testbed] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages, builds into $PREFIX and starts daemons)"; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

installed_version() {
  # the marker is written after pbs_postinstall, so an interrupted install is built again
  [ -x "$PREFIX/sbin/pbs_server" ] && [ -f "$PREFIX/.llmjobs-testbed-version" ] || return 1
  "$PREFIX/sbin/pbs_server" --version 2>/dev/null | sed -n 's/^pbs_version = //p'
}

build_install() {
  if [ "$(installed_version || true)" = "$VERSION" ]; then return 0; fi
  local tarball="$SRC/openpbs-$VERSION.tar.gz" patch="$SRC/0001-compile-with-python-3.11.patch"
  [ -f "$tarball" ] && [ -f "$patch" ] \
    || die "no OpenPBS source and patch in $SRC (set LLMJOBS_OPENPBS_SRC to the folder holding them)"
  install_packages
  local t0=$SECONDS jobs
  jobs=$(nproc)
  log "building OpenPBS $VERSION into $PREFIX (once per machine; 4.5 min of CPU, ~10 min on 2 busy cores); log in $BUILD_DIR/build.log"
  rm -rf "$BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  tar -xzf "$tarball" -C "$BUILD_DIR"
  local src="$BUILD_DIR/openpbs-$VERSION"
  (
    cd "$src"
    # Debian 12's Python 3.11 has no <eval.h> (upstream commit 1d17427c, not in the 23.06 release)
    patch -p1 <"$patch"
    ./autogen.sh
    ./configure --prefix="$PREFIX" PYTHON=/usr/bin/python3
    make -j"$jobs"
    make install
  ) >"$BUILD_DIR/build.log" 2>&1 || { tail -30 "$BUILD_DIR/build.log" >&2; die "build failed; log in $BUILD_DIR/build.log"; }
  # writes /etc/pbs.conf (rewritten at start) and PBS_HOME's skeleton
  "$PREFIX/libexec/pbs_postinstall" >>"$BUILD_DIR/build.log" 2>&1 \
    || die "pbs_postinstall failed; log in $BUILD_DIR/build.log"
  echo "$VERSION" >"$PREFIX/.llmjobs-testbed-version"
  rm -rf "$src"  # ~180 MB of objects; the log stays
  log "built and installed in $((SECONDS - t0))s"
}

in_ns() { ip netns exec "$NS" "$@"; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$NS"; }

make_namespace() {
  ns_exists || ip netns add "$NS"
  in_ns ip link set lo up
  # the address lives on the namespace's own loopback; this machine's namespace never gets it
  in_ns ip -4 addr show dev lo | grep -q " $ADDR/" || in_ns ip addr add "$ADDR/32" dev lo
  if ! grep -Eq "^$ADDR[[:space:]]+$HOSTNAME_PBS([[:space:]]|\$)" /etc/hosts; then
    grep -Eq "[[:space:]]$HOSTNAME_PBS([[:space:]]|\$)" /etc/hosts \
      && die "/etc/hosts maps $HOSTNAME_PBS to another address; remove that line or set PBS_TESTBED_HOST"
    echo "$ADDR $HOSTNAME_PBS  # llmjobs PBS test bed (the address exists only in netns $NS)" >>/etc/hosts
  fi
}

write_configs() {
  cat >/etc/pbs.conf <<EOF
# written by scripts/pbs-testbed.sh; rewritten on every start
PBS_EXEC=$PREFIX
PBS_HOME=$HOME_DIR
PBS_SERVER=$HOSTNAME_PBS
PBS_START_SERVER=1
PBS_START_SCHED=1
PBS_START_COMM=1
PBS_START_MOM=1
PBS_CORE_LIMIT=unlimited
PBS_SCP=/usr/bin/scp
PBS_SERVER_HOST_NAME=$HOSTNAME_PBS
PBS_MOM_NODE_NAME=$HOSTNAME_PBS
PBS_LEAF_NAME=$HOSTNAME_PBS
PBS_COMM_NAME=$HOSTNAME_PBS:$COMM_PORT
PBS_LEAF_ROUTERS=$HOSTNAME_PBS:$COMM_PORT
EOF
  mkdir -p "$HOME_DIR/mom_priv"
  # jobs' -o/-e paths name this machine's hostname, which cannot be reached from inside the namespace:
  # the mom copies them with cp instead of scp
  cat >"$HOME_DIR/mom_priv/config" <<EOF
\$clienthost $HOSTNAME_PBS
\$usecp *:/ /
EOF
}

server_answers() { in_ns "$PREFIX/bin/qstat" -B >/dev/null 2>&1; }

qmgr_c() { in_ns "$PREFIX/bin/qmgr" -c "$1"; }

configure_server() {
  qmgr_c "set server acl_roots = root"
  qmgr_c "set server flatuid = True"
  qmgr_c "set server job_history_enable = True"
  qmgr_c "set server job_history_duration = 02:00:00"
  qmgr_c "set server scheduler_iteration = 10"
  qmgr_c "list node $HOSTNAME_PBS" >/dev/null 2>&1 || qmgr_c "create node $HOSTNAME_PBS"
  # more slots than cores (test jobs mostly sleep): a 4-shard array runs at once, and the cancel test fills
  # the node with 11 jobs so that some subjobs are still queued
  qmgr_c "set node $HOSTNAME_PBS resources_available.ncpus = 8"
  # a default queue, and ABCI's resource types, which are queues that the test profiles name
  local q
  for q in "$QUEUE" rt_HC rt_HG rt_HF; do
    qmgr_c "list queue $q" >/dev/null 2>&1 || qmgr_c "create queue $q queue_type = execution"
    qmgr_c "set queue $q enabled = True"
    qmgr_c "set queue $q started = True"
  done
  qmgr_c "set server default_queue = $QUEUE"
}

node_free() {
  in_ns "$PREFIX/bin/pbsnodes" "$HOSTNAME_PBS" 2>/dev/null | grep -Eq "^[[:space:]]*state = (free|job-busy)"
}

write_shims() {
  mkdir -p "$DIR/bin"
  local c
  for c in qsub qstat qdel qmgr pbsnodes qalter qhold qrls qsig qselect qrerun tracejob; do
    cat >"$DIR/bin/$c" <<EOF
#!/bin/sh
# written by scripts/pbs-testbed.sh: the real $c, run inside the test bed's network namespace
exec ip netns exec $NS $PREFIX/bin/$c "\$@"
EOF
    chmod 755 "$DIR/bin/$c"
  done
}

wait_for() {  # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2; shift 2
  for _ in $(seq "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what did not come up within ${secs}s; logs under $HOME_DIR (server_logs, mom_logs, sched_logs, comm_logs)"
}

daemons_up() {
  local d
  for d in pbs_comm pbs_server.bin pbs_sched pbs_mom; do in_ns pgrep -x "$d" >/dev/null 2>&1 || return 1; done
}

cmd_start() {
  need_root
  local t0=$SECONDS
  build_install
  make_namespace
  write_configs
  write_shims
  if ! daemons_up || ! server_answers; then
    log "starting pbs_comm, pbs_server, pbs_sched and pbs_mom in netns $NS"
    mkdir -p "$DIR"
    in_ns "$PREFIX/libexec/pbs_init.d" start >"$DIR/init.log" 2>&1 \
      || { cat "$DIR/init.log" >&2; die "pbs_init.d start failed"; }
  fi
  wait_for 60 pbs_server server_answers
  configure_server >/dev/null
  wait_for 60 "node $HOSTNAME_PBS" node_free
  log "up in $((SECONDS - t0))s. Every client and job runs inside netns $NS:"
  log "  ip netns exec $NS $PREFIX/bin/qstat   or   bash scripts/pbs-testbed.sh exec -- qstat"
  log "  or put the shims first on PATH (llmjobs calls qsub/qstat/qdel from PATH): export PATH=$DIR/bin:\$PATH"
  echo "$DIR/bin"
}

cmd_stop() {
  need_root
  [ -x "$PREFIX/libexec/pbs_init.d" ] && ns_exists || return 0
  if server_answers; then
    # delete what is left so that jobs do not outlive their daemons, one id at a time (a qdel of several
    # subjobs of one array plus another job crashes this release's server)
    local id
    for id in $(in_ns "$PREFIX/bin/qselect" 2>/dev/null || true); do
      in_ns "$PREFIX/bin/qdel" -W force "$id" >/dev/null 2>&1 || true
    done
  fi
  in_ns "$PREFIX/libexec/pbs_init.d" stop >/dev/null 2>&1 || true
  log "stopped"
}

cmd_status() {
  [ -x "$PREFIX/sbin/pbs_server" ] || { echo "OpenPBS: not installed in $PREFIX"; return 1; }
  echo "OpenPBS $(installed_version || echo '?') in $PREFIX; netns $NS; server $HOSTNAME_PBS ($ADDR)"
  ns_exists || { echo "netns $NS: missing"; return 1; }
  local d
  for d in pbs_comm pbs_server.bin pbs_sched pbs_mom; do
    if in_ns pgrep -x "$d" >/dev/null 2>&1; then echo "$d: running"; else echo "$d: stopped"; fi
  done
  server_answers || { echo "pbs_server: not answering"; return 1; }
  in_ns "$PREFIX/bin/pbsnodes" -aS
  echo "shims (put first on PATH): $DIR/bin"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  build) need_root; build_install ;;
  bin) echo "$DIR/bin" ;;
  exec)
    shift
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || die "usage: $0 exec -- CMD [ARGS...]"
    export PATH="$PREFIX/bin:$PATH"
    exec ip netns exec "$NS" "$@"
    ;;
  *) echo "usage: $0 start|stop|status|build|bin|exec -- CMD" >&2; exit 2 ;;
esac
