# bench/lib.sh: what bench/probe_bench.sh and bench/mesh_bench.sh share, sourced by both after
# they set BENCH_NAME, REPO, MESHPROBE_BIN, NS_P/NS_Q, VETH_P/VETH_Q and RESULTS_DIR:
# logging, the processes and namespaces a run created and their cleanup on any exit, package
# installation, the meshprobe build, the two-namespace peer network, and /proc readers.
# Only processes the script started (by PID) and namespaces it created are ever touched.

die() { echo "$BENCH_NAME: error: $*" >&2; exit 1; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

PIDS=()          # every background process this script started
NS_CREATED=()

forget_pid() {
    local p=$1 i
    for i in "${!PIDS[@]}"; do [[ ${PIDS[$i]} == "$p" ]] && unset 'PIDS[i]'; done
    return 0
}

stop_pid() {   # stop_pid PID [SIGNAL]: signal one process we started, wait up to 5 s, then KILL it
    local p=$1 sig=${2:-TERM} i
    kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; forget_pid "$p"; return 0; }
    kill "-$sig" "$p" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
        log "pid $p did not exit on SIG$sig, sending SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
    forget_pid "$p"
}

cleanup() {
    local rc=$? p ns
    trap - EXIT INT TERM HUP
    set +e
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    for ns in "${NS_CREATED[@]}"; do ip netns del "$ns" 2>/dev/null; done
    if (( rc != 0 )); then log "exiting with status $rc; partial results (if any) in ${RESULTS_DIR:-(none yet)}"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

install_packages() {   # install_packages PKG...: apt-get install, non-interactive
    log "installing packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "$@"
}

build_meshprobe_if_missing() {
    [[ -x $MESHPROBE_BIN ]] && return 0
    log "$MESHPROBE_BIN missing: cargo build --release in $REPO"
    (cd "$REPO" && cargo build --release)
    [[ -x $MESHPROBE_BIN ]] || die "$MESHPROBE_BIN still missing after cargo build --release"
}

note_stale_namespaces() {   # note_stale_namespaces PREFIX: mention (never touch) other runs' namespaces
    local stale
    stale=$(ip netns list | awk -v p="^$1" '$1 ~ p {print $1}' | tr '\n' ' ')
    [[ -z $stale ]] || log "note: namespaces from another (or crashed) $BENCH_NAME run exist: $stale(not touched)"
}

meshprobe_meta() {   # key=value lines identifying the meshprobe binary and the checkout
    echo "meshprobe_bin=$MESHPROBE_BIN"
    echo "meshprobe_version=$("$MESHPROBE_BIN" --version 2>&1 | head -1)"
    echo "meshprobe_sha256=$(sha256sum "$MESHPROBE_BIN" | cut -d' ' -f1)"
    echo "meshprobe_mtime=$(date -Is -r "$MESHPROBE_BIN")"
}

repo_meta() {
    echo "repo_head=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "repo_dirty_files=$(git -C "$REPO" status --porcelain 2>/dev/null | wc -l)"
}

# make_peer_network ADDR_BATCH ROUTE ADDR_REGEX COUNT: the prober namespace NS_P (198.18.0.1 on
# VETH_P) and the peer namespace NS_Q (198.18.0.2 plus the ADDR_BATCH addresses on VETH_Q), with
# ROUTE via the peer; checks that COUNT addresses matching ADDR_REGEX answer there.
make_peer_network() {
    local batch=$1 route=$2 regex=$3 count=$4 ns got
    log "creating namespaces $NS_P and $NS_Q"
    ip netns add "$NS_P"; NS_CREATED+=("$NS_P")
    ip netns add "$NS_Q"; NS_CREATED+=("$NS_Q")
    # created inside the prober namespace, peer end moved straight into the peer namespace:
    # the root namespace never sees either end.
    ip -n "$NS_P" link add "$VETH_P" type veth peer name "$VETH_Q" netns "$NS_Q"
    for ns in "$NS_P" "$NS_Q"; do
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv4.icmp_ratelimit=0
        ip netns exec "$ns" sysctl -qw net.ipv6.icmp.ratelimit=0
    done
    ip -n "$NS_P" addr add 198.18.0.1/24 dev "$VETH_P"
    ip -n "$NS_Q" addr add 198.18.0.2/24 dev "$VETH_Q"
    ip -n "$NS_Q" -batch "$batch"
    ip -n "$NS_P" link set "$VETH_P" up
    ip -n "$NS_Q" link set "$VETH_Q" up
    ip -n "$NS_P" route add "$route" via 198.18.0.2 dev "$VETH_P"
    got=$(ip -n "$NS_Q" -4 -o addr show dev "$VETH_Q" | grep -c " $regex" || true)
    (( got == count )) || die "peer has $got of $count addresses"
}

cpu_ticks() {   # utime+stime of PID (all threads) in clock ticks (fields 14 and 15 of /proc/PID/stat)
    local s rest
    s=$(< "/proc/$1/stat")
    rest=${s##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

status_kb() {   # status_kb PID FIELD -> value in kB
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}

socket_counts() {   # raw / ping (dgram ICMP) sockets open in the prober namespace right now
    ip netns exec "$NS_P" sh -c \
        'echo "raw4=$(($(wc -l < /proc/net/raw) - 1)) ping4=$(($(wc -l < /proc/net/icmp) - 1))"'
}
