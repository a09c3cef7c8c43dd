#!/bin/bash
# A one-node Slurm cluster on this machine (Debian's slurm-wlm and munge), for trying and testing
# `sbatch` runs of tensorpar. No systemd: munged, slurmctld and slurmd are started directly, each
# with explicit config, socket, log and pid paths under one state directory, so it also works in a
# bare chroot. Must run as root (slurmd starts jobs as their user).
#
#   scripts/slurm_local.sh start [--cpus 4]   then: export SLURM_CONF=<printed path>; sbatch ...
#   scripts/slurm_local.sh stop               stops the daemons and removes the state directory
#   scripts/slurm_local.sh env                prints the export line for SLURM_CONF
#
# TENSORPAR_SLURM_DIR (default /tmp/tensorpar-slurm) holds everything; ports 16817/16818 (not
# Slurm's defaults, so a real Slurm on the machine is left alone; TENSORPAR_SLURM_PORT to change).
set -Eeuo pipefail

DIR=${TENSORPAR_SLURM_DIR:-/tmp/tensorpar-slurm}
PORT=${TENSORPAR_SLURM_PORT:-16817}
CONF=$DIR/slurm.conf
SKIP=77

die() { echo "slurm_local.sh: error: $*" >&2; exit 1; }
skip() { echo "slurm_local.sh: skipped: $*" >&2; exit $SKIP; }

# Stop a daemon by the pid it recorded (only that process), waiting for it to exit.
stop_pid() {
  local file=$1 pid
  [[ -f "$file" ]] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  if [[ -f "$CONF" ]]; then SLURM_CONF=$CONF scancel --full --quiet -u root 2>/dev/null || true; fi
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
  stop_pid "$DIR/munged.pid"
  rm -rf "$DIR"
}

start() {
  local cpus=4
  while (($#)); do
    case $1 in
      --cpus) cpus=$2; shift 2;;
      *) die "unknown option '$1' of start";;
    esac
  done
  [[ $(id -u) == 0 ]] || skip "a local Slurm needs root (uid $(id -u))"
  local bin
  for bin in munged mungekey slurmctld slurmd sinfo sbatch; do
    command -v "$bin" >/dev/null || PATH=$PATH:/usr/sbin command -v "$bin" >/dev/null ||
      skip "$bin is not installed (apt-get install --no-install-recommends slurm-wlm munge)"
  done
  export PATH=$PATH:/usr/sbin
  stop  # leftovers of an earlier or crashed run
  local port
  for port in $PORT $((PORT + 1)); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
      die "port $port is in use (another slurm_local.sh cluster? stop it with its TENSORPAR_SLURM_DIR, or set TENSORPAR_SLURM_PORT)"
    fi
  done
  trap 'stop' EXIT  # a failure half-way stops what was started
  mkdir -p "$DIR"/{munge,state,spool,log}
  chmod 700 "$DIR/munge"
  local node
  node=$(hostname -s)

  # munge: a fresh key; root may run munged only with --force
  mungekey --create --keyfile="$DIR/munge/munge.key" --force >/dev/null
  chmod 600 "$DIR/munge/munge.key"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    die "munged did not start: $(tail -n 3 "$DIR/log/munged.log" 2>/dev/null)"

  # CPUs may exceed the cores (ranks oversubscribe the machine); config_overrides lets slurmd accept it
  cat > "$CONF" <<EOF
ClusterName=tensorpar
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  # -D: stay in the foreground (no systemd, no double fork); we background them and they write pid files
  setsid slurmctld -D -i -f "$CONF" > "$DIR/log/slurmctld.out" 2>&1 < /dev/null &
  setsid slurmd -D -f "$CONF" -N "$node" > "$DIR/log/slurmd.out" 2>&1 < /dev/null &
  local state=""
  for _ in $(seq 150); do
    state=$(SLURM_CONF=$CONF sinfo -h -n "$node" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.2
  done
  [[ $state == idle ]] || die "node $node is '${state:-unreachable}', not idle, after 30 s; see $DIR/log/ ($(tail -n 2 "$DIR/log/slurmd.log" "$DIR/log/slurmctld.log" 2>/dev/null | tr '\n' ' '))"
  trap - EXIT
  echo "slurm: node $node idle with $cpus CPUs; export SLURM_CONF=$CONF"
}

case ${1:-} in
  start) shift; start "$@";;
  stop) stop;;
  env) echo "export SLURM_CONF=$CONF";;
  *) die "usage: slurm_local.sh start [--cpus N] | stop | env";;
esac
