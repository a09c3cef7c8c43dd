#!/bin/bash
# A test cluster on one machine: N "hosts" as network namespaces, each with one veth link into a
# bridge that lives in its own namespace (so the root namespace's routes and firewall never see the
# test traffic), optionally shaped with tc to a given bandwidth (tbf) and latency (netem). `run`
# starts mpirun inside the first host and reaches the others through an rsh agent that enters
# their namespace with nsenter — no ssh. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
#
#   scripts/cluster.sh up N [--rate 1gbit] [--delay 0.2ms] [--slots 2]
#   scripts/cluster.sh run [mpirun args] -- PROGRAM ARGS   (default: every slot, --host from `up`)
#   scripts/cluster.sh status | down
#
# Hosts get 10.77.0.1 ... 10.77.0.N (TENSORPAR_CLUSTER_SUBNET=10.77.0 to change the /24). Ranks are
# mapped by slot: with 2 slots per host ranks 0,1 are on host 1 and 2,3 on host 2, so a tensor-
# parallel group (consecutive ranks, see comm/mesh.hpp) stays inside one host.
# TENSORPAR_CLUSTER=name keeps several clusters apart (namespaces name-1..name-N, name-br).
set -Eeuo pipefail

NAME=${TENSORPAR_CLUSTER:-tpc}
NET=${TENSORPAR_CLUSTER_SUBNET:-10.77.0}
SUBNET="$NET.0/24"
STATE=/run/tensorpar-cluster/$NAME
BRIDGE_NS="$NAME-br"
SKIP=77  # exit code of "this machine cannot host a namespace cluster" (CTest/GoogleTest skip it)

die() { echo "cluster.sh: error: $*" >&2; exit 1; }

# Run a command in a namespace. nsenter switches only the network namespace; `ip netns exec` and
# `ip -n` also remount / and /sys in a new mount namespace, which fails in a chroot ("mount
# --make-rslave /": / is not a mount point there).
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

# Every namespace of this cluster, hosts and bridge, including those of a crashed run.
our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NAME-([0-9]+|br)$" || true; }

down() {
  local ns pids
  for ns in $(our_namespaces); do
    # processes left in a host by a crashed run (mpirun, orted, ranks): only those inside our namespace
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n "$pids" ]]; then kill $pids 2>/dev/null || true; sleep 0.5; kill -9 $pids 2>/dev/null || true; fi
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$STATE"
  rmdir /run/tensorpar-cluster 2>/dev/null || true
  # `ip netns add` bind-mounts /run/netns onto itself; once no namespace is left, undo it, so a
  # chroot (the CI's) can be unmounted and removed afterwards
  if [[ -d /run/netns && -z "$(ls -A /run/netns 2>/dev/null)" ]] && mountpoint -q /run/netns; then
    umount /run/netns 2>/dev/null || true
  fi
}

# Bytes per second of a tc rate such as 1gbit, 500mbit, 100kbit.
rate_bytes() {
  local r=$1 n unit
  [[ $r =~ ^([0-9]+)([kmg]?bit)$ ]] || die "rate '$r' is not like 1gbit, 500mbit or 100kbit"
  n=${BASH_REMATCH[1]}; unit=${BASH_REMATCH[2]}
  case $unit in kbit) echo $((n * 1000 / 8));; mbit) echo $((n * 1000000 / 8));; gbit) echo $((n * 1000000000 / 8));; bit) echo $((n / 8));; esac
}

# Shape the egress of a host's link: netem adds the one-way delay, a tbf under it caps the rate.
shape() {
  local ns=$1 rate=$2 delay=$3 burst
  if [[ -n "$delay" ]] && ! in_ns "$ns" tc qdisc add dev eth0 root handle 1: netem delay "$delay" limit 100000; then
    die "cannot add a netem delay: this kernel has no sch_netem (modprobe sch_netem, or run without --delay)"
  fi
  if [[ -n "$rate" ]]; then
    # burst: 2 ms of traffic, at least a few 64 KB GSO segments, so tbf does not cap below its rate
    burst=$(($(rate_bytes "$rate") / 500)); ((burst < 262144)) && burst=262144
    local parent="root handle 1:"; [[ -n "$delay" ]] && parent="parent 1:1 handle 10:"
    in_ns "$ns" tc qdisc add dev eth0 $parent tbf rate "$rate" burst "$burst" latency 50ms ||
      die "cannot add a tbf rate limit: this kernel has no sch_tbf (modprobe sch_tbf, or run without --rate)"
  fi
}

up() {
  local n=${1:-}; shift || true
  local rate="" delay="" slots=2
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "usage: cluster.sh up N [--rate 1gbit] [--delay 0.2ms] [--slots 2]"
  while (($#)); do
    case $1 in
      --rate) rate=$2; shift 2;;
      --delay) delay=$2; shift 2;;
      --slots) slots=$2; shift 2;;
      *) die "unknown option '$1' of up";;
    esac
  done
  [[ -n "$rate" ]] && rate_bytes "$rate" >/dev/null
  ((n <= 250)) || die "at most 250 hosts in one /24"
  [[ $(id -u) == 0 ]] || { echo "cluster.sh: skipped: network namespaces need root (uid $(id -u))" >&2; exit $SKIP; }
  command -v ip >/dev/null || die "ip (iproute2) is not installed; apt-get install iproute2"
  down  # leftovers of an earlier or crashed run
  if ! err=$(ip netns add "$BRIDGE_NS" 2>&1); then
    echo "cluster.sh: skipped: cannot create a network namespace here ($err)" >&2
    exit $SKIP
  fi
  trap 'down' EXIT  # a failure half-way removes what was made
  in_ns "$BRIDGE_NS" ip link set lo up
  in_ns "$BRIDGE_NS" ip link add br0 type bridge
  in_ns "$BRIDGE_NS" ip link set br0 up
  mkdir -p "$STATE"
  : > "$STATE/hosts"
  local i ns addr hosts=""
  for ((i = 1; i <= n; i++)); do
    ns="$NAME-$i" addr="$NET.$i"
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
    # veth: eth0 inside the host, vh<i> on the bridge
    in_ns "$ns" ip link add eth0 type veth peer name "vh$i" netns "$BRIDGE_NS"
    in_ns "$ns" ip addr add "$addr/24" dev eth0
    in_ns "$ns" ip link set eth0 up
    in_ns "$BRIDGE_NS" ip link set "vh$i" master br0
    in_ns "$BRIDGE_NS" ip link set "vh$i" up
    shape "$ns" "$rate" "$delay"
    echo "$addr $ns" >> "$STATE/hosts"
    hosts+="${hosts:+,}$addr:$slots"
  done
  echo "$hosts" > "$STATE/host_list"
  awk -v s="$slots" '{print $1 " slots=" s}' "$STATE/hosts" > "$STATE/hostfile"
  # mpirun's rsh agent: `agent HOST CMD...` runs CMD (a shell command line, as ssh would) in HOST's namespace
  cat > "$STATE/rsh" <<EOF
#!/bin/sh
host=\$1; shift
ns=\$(awk -v h="\$host" '\$1 == h {print \$2}' "$STATE/hosts")
[ -n "\$ns" ] || { echo "cluster rsh: unknown host \$host" >&2; exit 1; }
exec nsenter --net="/run/netns/\$ns" /bin/sh -c "\$*"
EOF
  chmod +x "$STATE/rsh"
  trap - EXIT
  echo "cluster $NAME: $n hosts ($hosts) on $SUBNET${rate:+, rate $rate}${delay:+, delay $delay}; hostfile $STATE/hostfile"
}

run() {
  [[ -f "$STATE/host_list" ]] || die "no cluster '$NAME' is up; run: scripts/cluster.sh up N"
  local mpi_args=() has_hosts=0 has_np=0
  while (($#)) && [[ $1 != -- ]]; do
    case $1 in --host|-host|-H|--hostfile|-hostfile|--machinefile) has_hosts=1;; -np|-n|--np) has_np=1;; esac
    mpi_args+=("$1"); shift
  done
  [[ ${1:-} == -- ]] || die "usage: cluster.sh run [mpirun args] -- PROGRAM ARGS"
  shift
  ((has_hosts)) || mpi_args+=(--host "$(cat "$STATE/host_list")")
  if ((!has_np)) && ((!has_hosts)); then
    local total=0 h
    for h in $(tr ',' ' ' < "$STATE/host_list"); do total=$((total + ${h##*:})); done
    mpi_args+=(-np "$total")
  fi
  # all hosts share this machine's cores: a rank waiting for a message yields them (as Open MPI does
  # by itself under --oversubscribe), or busy-polling ranks starve the ones with work
  export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
  exec nsenter --net="/run/netns/$NAME-1" mpirun --map-by slot --bind-to none \
    --mca plm_rsh_agent "$STATE/rsh" \
    --mca btl tcp,self --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET" \
    "${mpi_args[@]}" "$@"
}

status() {
  local ns
  for ns in $(our_namespaces); do
    echo "== $ns"; in_ns "$ns" ip -br addr 2>/dev/null | grep -v '^lo' || true
    in_ns "$ns" tc qdisc show dev eth0 2>/dev/null || true
    # per-namespace counters (/proc/net follows the reader's namespace; /sys would not under nsenter)
    in_ns "$ns" awk '$1 == "eth0:" {print "eth0 rx_bytes " $2 " tx_bytes " $10}' /proc/net/dev
  done
}

cmd=${1:-}; shift || true
case $cmd in
  up) up "$@";;
  run) run "$@";;
  down) down;;
  status) status;;
  *) die "usage: cluster.sh up N [--rate R] [--delay D] [--slots S] | run [mpirun args] -- PROGRAM ARGS | status | down";;
esac
