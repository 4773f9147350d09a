#!/usr/bin/env bash
# pinger_bench.sh: meshprobe as a data-centre pinger (1 000, 10 000, 100 000 targets at one echo
# per target per second) beside `fping -l` and smokeping_prober on the same targets, one program
# at a time, in one run. Run as root.
#
#   sudo bench/pinger_bench.sh                              # SCALES="1000 10000 100000"
#   sudo SCALES=10000 PROGRAMS=meshprobe STRESS=2 bench/pinger_bench.sh   # pacing under a CPU hog
#   sudo SCALES=100000 PROGRAMS=meshprobe PERF=1 bench/pinger_bench.sh    # where the CPU goes
#
# Network (namespaces this script creates and deletes; nothing is sent outside 198.18.0.0/15):
#
#   mpg-prober-PID  mpg-p 198.18.0.1/30 ── mpg-g1 198.18.0.2/30  mpg-gw-PID (forwarding)
#                                          mpg-g2 198.18.0.5/30 ── mpg-q 198.18.0.6/30  mpg-peer-PID
#   TOPOLOGY=direct: no gateway namespace; the peer (mpg-q 198.18.0.2/30) is the prober's next hop
#   peer: AnyIP `route add local` 198.18.64.0/18, 198.18.128.0/17, 198.19.0.0/16 dev lo (its
#   kernel answers echo for every address there: 113 792 targets, x.x.x.1-254); prober and gateway
#   route those ranges through one next hop, so each has one neighbour entry, as on a routed
#   fabric. ICMP rate limits are off in all three namespaces. The network loses nothing, so every
#   lost probe is false loss.
#
# Per scale and program (each started fresh, alone in the prober namespace; with STRESS=N a
# `stress-ng --cpu N` hog runs beside it for its whole life): start, wait until it probes, WARMUP
# s, then a window of DURATION s: CPU = utime+stime delta / wall time; probes/s, lost and late
# sends = deltas of the program's own counters between the window's edges (meshprobe:
# /metrics with gzip, sums of meshprobe_mesh_{sent,received,lost}_total and
# meshprobe_mesh_late_sends_total, and socket_drops = meshprobe_socket_receive_drops_total, the
# replies its own receive buffer dropped; fping: its SIGQUIT interval summaries;
# smokeping_prober: smokeping_requests_total and smokeping_response_duration_seconds_count, whose
# difference includes the probes in flight at the edge; echo_floor: its own cumulative counts,
# likewise); VmRSS after the closing gzip scrape and VmHWM.
# meshprobe runs with `inter_group_series: per_group` (groups of 1 000 targets), as a pinger
# holding a region would, so a scrape is 100 groups, not 3 million series.
#
# Environment:
#   SCALES="1000 10000 100000"   PROGRAMS="meshprobe fping smokeping"
#   DURATION=30 WARMUP=10        SMOKEPING_MAX=10000 (smokeping_prober only up to this scale)
#   STRESS=0       CPU hogs (stress-ng --cpu STRESS) beside each program
#   MESHPROBE_NICE=0             run meshprobe under `nice -n` this (e.g. -5)
#   MESH_INTERVAL=1s             meshprobe's mesh.interval (e.g. 1h: its memory without traffic)
#   MESHPROBE_FLAGS=             extra meshprobe flags (e.g. --runtime.worker-threads=2)
#   TOPOLOGY=gateway             or direct (see above). A veth transmit runs the receiving
#                                namespace's stack in the sender's softirq, so the gateway's
#                                forwarding (both ways) is charged to the prober's CPU time;
#                                direct leaves only the peer's echo reply there.
#   ISOLATE=0      1: keep the test network's kernel work off the prober's CPU, as a real NIC
#                  would: the program is pinned to CPU 0 (taskset), and receive packet steering
#                  (rps_cpus) processes every packet that enters the gateway or the peer on
#                  CPU 1, and the replies that come back to the prober on CPU 0. The prober's
#                  cores are then its own sends, its own receives and its user time.
#   PERF=0         1: per-syscall counts (perf stat) and the top symbols (perf record) of the
#                  window, for meshprobe
#   MESHPROBE_BIN=<repo>/target/release/meshprobe  FPING_BIN=/usr/bin/fping
#   SMOKEPING_BIN=/usr/bin/prometheus-smokeping-prober
#   RESULTS_DIR=<repo>/bench-results/pinger-<timestamp>
#
#   FLOOR_BIN=<repo>/target/release/examples/echo_floor   (PROGRAMS=floor; built if missing)
#
# PROGRAMS=floor runs examples/echo_floor.rs: one thread, one raw socket, a prebuilt packet per
# target, sendmmsg per 10 ms tick and non-blocking recvmmsg, nothing else. Its cores are the
# physical floor of this machine (one send plus one receive in the kernel per echo, and a wakeup
# per tick), the figure meshprobe's cores are compared with.
#
# Only namespaces this script creates and processes it starts (by PID) are touched.
set -euo pipefail
echo "# command: $(printf '%q ' "$0" "$@") (SCALES=${SCALES:-1000 10000 100000} PROGRAMS=${PROGRAMS:-meshprobe fping smokeping} DURATION=${DURATION:-30} STRESS=${STRESS:-0} MESHPROBE_NICE=${MESHPROBE_NICE:-0})"

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_NAME=pinger_bench
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ ${EUID} -eq 0 ]] || die "must run as root (namespaces, veth, raw sockets)"

REPO="$(cd "$BENCH_DIR/.." && pwd)"
SCALES="${SCALES:-1000 10000 100000}"
PROGRAMS="${PROGRAMS:-meshprobe fping smokeping}"
DURATION="${DURATION:-30}"
WARMUP="${WARMUP:-10}"
SMOKEPING_MAX="${SMOKEPING_MAX:-10000}"
STRESS="${STRESS:-0}"
MESHPROBE_NICE="${MESHPROBE_NICE:-0}"
PERF="${PERF:-0}"
ISOLATE="${ISOLATE:-0}"
MESH_INTERVAL="${MESH_INTERVAL:-1s}"
MESHPROBE_FLAGS="${MESHPROBE_FLAGS:-}"
TOPOLOGY="${TOPOLOGY:-gateway}"
[[ $TOPOLOGY == gateway || $TOPOLOGY == direct ]] || die "TOPOLOGY must be gateway or direct"
MESHPROBE_BIN="${MESHPROBE_BIN:-$REPO/target/release/meshprobe}"
FPING_BIN="${FPING_BIN:-/usr/bin/fping}"
SMOKEPING_BIN="${SMOKEPING_BIN:-/usr/bin/prometheus-smokeping-prober}"
FLOOR_BIN="${FLOOR_BIN:-$REPO/target/release/examples/echo_floor}"
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results/pinger-$(date +%Y%m%dT%H%M%S)}"
PORT=19145
HELPER="$BENCH_DIR/mesh_bench_helper.py"
NS_P="mpg-prober-$$"; NS_G="mpg-gw-$$"; NS_Q="mpg-peer-$$"
TICK=$(getconf CLK_TCK)

for scale in $SCALES; do
    (( scale >= 1 && scale <= 113792 )) || die "SCALES: $scale is not in 1..113792"
done
missing=()
[[ -x $FPING_BIN ]] || missing+=(fping)
[[ -x $SMOKEPING_BIN ]] || missing+=(prometheus-smokeping-prober)
(( STRESS == 0 )) || command -v stress-ng > /dev/null || missing+=(stress-ng)
(( PERF == 0 )) || command -v perf > /dev/null || missing+=(linux-perf)
(( ${#missing[@]} == 0 )) || install_packages "${missing[@]}"
build_meshprobe_if_missing
if [[ " $PROGRAMS " == *" floor "* && ! -x $FLOOR_BIN ]]; then
    log "building examples/echo_floor"
    (cd "$REPO" && cargo build --release --quiet --example echo_floor)
fi
mkdir -p "$RESULTS_DIR"
note_stale_namespaces mpg-

# ---- network ------------------------------------------------------------------------------------
RANGES=(198.18.64.0/18 198.18.128.0/17 198.19.0.0/16)
if [[ $TOPOLOGY == direct ]]; then
    log "creating namespaces $NS_P and $NS_Q (direct)"
    for ns in "$NS_P" "$NS_Q"; do
        ip netns add "$ns"; NS_CREATED+=("$ns")
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv4.icmp_ratelimit=0
    done
    ip -n "$NS_P" link add mpg-p type veth peer name mpg-q netns "$NS_Q"
    ip -n "$NS_P" addr add 198.18.0.1/30 dev mpg-p
    ip -n "$NS_Q" addr add 198.18.0.2/30 dev mpg-q
    ip -n "$NS_P" link set mpg-p up
    ip -n "$NS_Q" link set mpg-q up
    for range in "${RANGES[@]}"; do
        ip -n "$NS_P" route add "$range" via 198.18.0.2
        ip -n "$NS_Q" route add local "$range" dev lo
    done
else
    log "creating namespaces $NS_P, $NS_G and $NS_Q"
    for ns in "$NS_P" "$NS_G" "$NS_Q"; do
        ip netns add "$ns"; NS_CREATED+=("$ns")
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv4.icmp_ratelimit=0
    done
    ip -n "$NS_P" link add mpg-p type veth peer name mpg-g1 netns "$NS_G"
    ip -n "$NS_G" link add mpg-g2 type veth peer name mpg-q netns "$NS_Q"
    ip -n "$NS_P" addr add 198.18.0.1/30 dev mpg-p
    ip -n "$NS_G" addr add 198.18.0.2/30 dev mpg-g1
    ip -n "$NS_G" addr add 198.18.0.5/30 dev mpg-g2
    ip -n "$NS_Q" addr add 198.18.0.6/30 dev mpg-q
    for link in "$NS_P mpg-p" "$NS_G mpg-g1" "$NS_G mpg-g2" "$NS_Q mpg-q"; do
        # shellcheck disable=SC2086
        set -- $link; ip -n "$1" link set "$2" up
    done
    ip netns exec "$NS_G" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$NS_Q" route add default via 198.18.0.5
    for range in "${RANGES[@]}"; do
        ip -n "$NS_P" route add "$range" via 198.18.0.2
        ip -n "$NS_G" route add "$range" via 198.18.0.6
        ip -n "$NS_Q" route add local "$range" dev lo
    done
fi
if (( ISOLATE == 1 )); then
    (( $(nproc) >= 2 )) || die "ISOLATE=1 needs two CPUs"
    set_rps() { ip netns exec "$1" sh -c "echo $3 > /sys/class/net/$2/queues/rx-0/rps_cpus"; }
    set_rps "$NS_P" mpg-p 1                      # replies back to the prober: CPU 0
    set_rps "$NS_Q" mpg-q 2                      # the peer's echo work: CPU 1
    if [[ $TOPOLOGY == gateway ]]; then
        set_rps "$NS_G" mpg-g1 2; set_rps "$NS_G" mpg-g2 2   # forwarding: CPU 1
    fi
    PIN=(taskset -c 0)
else
    PIN=()
fi
ip netns exec "$NS_P" "$FPING_BIN" -q -c 1 -t 2000 198.19.255.254 2> /dev/null || die "the peer does not answer"

python3 - "$RESULTS_DIR" $SCALES <<'EOF'
import ipaddress, json, sys
out, scales = sys.argv[1], [int(s) for s in sys.argv[2:]]
def addresses():
    for net in ("198.18.64.0/18", "198.18.128.0/17", "198.19.0.0/16"):
        for a in ipaddress.ip_network(net):
            if a.packed[3] not in (0, 255):
                yield str(a)
for n in scales:
    chosen = [a for _, a in zip(range(n), addresses())]
    with open(f"{out}/targets-{n}.txt", "w") as f:
        f.write("\n".join(chosen) + "\n")
    with open(f"{out}/peers-{n}.json", "w") as f:
        json.dump([{"targets": [a], "labels": {"peer": f"p{i}", "rack": f"r{i // 1000}",
                    "network": "fabric"}} for i, a in enumerate(chosen)], f)
    with open(f"{out}/smokeping-{n}.yml", "w") as f:
        f.write("targets:\n- interval: 1s\n  network: ip4\n  protocol: icmp\n  hosts:\n")
        f.writelines(f"  - {a}\n" for a in chosen)
EOF

{ meshprobe_meta; repo_meta; echo "fping_version=$("$FPING_BIN" --version 2>&1 | head -1)";
  echo "smokeping_version=$("$SMOKEPING_BIN" --version 2>&1 | head -1)"; echo "kernel=$(uname -r)";
  echo "cpus=$(nproc)"; } > "$RESULTS_DIR/meta.txt"

# ---- one program at one scale -------------------------------------------------------------------
in_ns() { ip netns exec "$NS_P" "$@"; }
metric_sum() {  # metric_sum KVFILE NAME: the sum of NAME's samples in a helper scrape
    awk -F= -v k="sum.$2" '$1 == k { printf "%.0f", $2; found=1 } END { if (!found) print 0 }' "$1"
}
scrape() {  # scrape URL NAME: gzip scrape into NAME.kv
    in_ns python3 "$HELPER" scrape "$1" "$RESULTS_DIR/$2.metrics.gz" --gzip --timeout 60 > "$RESULTS_DIR/$2.kv"
}
fping_summary() {  # fping_summary LOG NAME N: SIGQUIT fping, wait for its N summary lines
    local log=$1 name=$2 n=$3 from got i
    from=$(stat -c %s "$log")
    kill -QUIT "$PROG_PID"
    for i in $(seq 600); do
        got=$(python3 "$HELPER" count-lines "$log" 'xmt/rcv/%' --from "$from")
        (( got >= n )) && break
        sleep 0.1
    done
    python3 "$HELPER" fping-stats "$log" --from "$from" > "$RESULTS_DIR/$name.kv"
}
floor_counts() {  # floor_counts LOG: echo_floor's last cumulative line, as sent=N and received=N lines
    tail -1 "$1" | tr ' ' '\n'
}
kv() { awk -F= -v k="$2" '$1 == k { print $2 }' "$1"; }

run() {  # run PROGRAM SCALE
    local prog=$1 n=$2 name="$1-$2" stress_pid="" log t0 t1 c0 c1 sent received lost late hwm rss drops=n/a
    log="$RESULTS_DIR/$name.log"
    if (( STRESS > 0 )); then
        stress-ng --cpu "$STRESS" --quiet > /dev/null 2>&1 &
        stress_pid=$!; PIDS+=("$stress_pid")
    fi
    case $prog in
        meshprobe)
            cat > "$RESULTS_DIR/$name.yml" <<EOF
modules: {icmp: {prober: icmp}}
mesh:
  interval: $MESH_INTERVAL
  timeout: 1s
  group_by: rack
  inter_group_series: per_group
  labels: {rack: pinger}
  peers:
    files: ["$RESULTS_DIR/peers-$n.json"]
    max_targets: 200000
    max_file_bytes: 67108864
EOF
            ip netns exec "$NS_P" "${PIN[@]}" nice -n "$MESHPROBE_NICE" "$MESHPROBE_BIN" --config.file "$RESULTS_DIR/$name.yml" \
                --web.listen-address "127.0.0.1:$PORT" $MESHPROBE_FLAGS > "$log" 2>&1 &
            ;;
        fping)
            ip netns exec "$NS_P" "${PIN[@]}" "$FPING_BIN" -l -q -p 1000 -i "$(awk -v n="$n" 'BEGIN { printf "%.3f", 800 / n }')" \
                -f "$RESULTS_DIR/targets-$n.txt" > /dev/null 2> "$log" &
            ;;
        floor)
            ip netns exec "$NS_P" "${PIN[@]}" "$FLOOR_BIN" "$RESULTS_DIR/targets-$n.txt" > "$log" 2>&1 &
            ;;
        smokeping)
            ip netns exec "$NS_P" "${PIN[@]}" "$SMOKEPING_BIN" --config.file "$RESULTS_DIR/smokeping-$n.yml" --privileged \
                --web.listen-address "127.0.0.1:$PORT" --log.level warn > "$log" 2>&1 &
            ;;
    esac
    # `ip netns exec`, taskset and nice exec the program, so $! is the program itself.
    PROG_PID=$!; PIDS+=("$PROG_PID")
    sleep 1
    kill -0 "$PROG_PID" 2>/dev/null || die "$name exited at start: $(tail -3 "$log")"
    if [[ $prog == floor ]]; then
        sleep 1.5
    elif [[ $prog != fping ]]; then
        in_ns python3 "$HELPER" wait-http "http://127.0.0.1:$PORT/metrics" --timeout 120 \
            || die "$name: /metrics never answered"
    fi
    log "[$name] warm-up $WARMUP s"
    sleep "$WARMUP"
    case $prog in
        fping) fping_summary "$log" "$name-start" "$n" ;;
        floor) floor_counts "$log" > "$RESULTS_DIR/$name-start.kv" ;;
        *) scrape "http://127.0.0.1:$PORT/metrics" "$name-start" ;;
    esac
    t0=$(date +%s.%N); c0=$(cpu_ticks "$PROG_PID")
    if (( PERF == 1 )) && [[ $prog == meshprobe ]]; then
        perf stat -e 'syscalls:sys_enter_sendmmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_recvmsg,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex' \
            -p "$PROG_PID" -o "$RESULTS_DIR/$name.perf-stat.txt" -- sleep "$DURATION" &
        local perf_stat=$!
        perf record -F 499 -g -p "$PROG_PID" -o "$RESULTS_DIR/$name.perf.data" -- sleep "$DURATION" \
            > /dev/null 2>&1 &
        wait "$perf_stat" $! || true
    else
        sleep "$DURATION"
    fi
    t1=$(date +%s.%N); c1=$(cpu_ticks "$PROG_PID")
    case $prog in
        meshprobe)
            scrape "http://127.0.0.1:$PORT/metrics" "$name-end"
            sent=$(( $(metric_sum "$RESULTS_DIR/$name-end.kv" meshprobe_mesh_sent_total) - $(metric_sum "$RESULTS_DIR/$name-start.kv" meshprobe_mesh_sent_total) ))
            received=$(( $(metric_sum "$RESULTS_DIR/$name-end.kv" meshprobe_mesh_received_total) - $(metric_sum "$RESULTS_DIR/$name-start.kv" meshprobe_mesh_received_total) ))
            lost=$(( $(metric_sum "$RESULTS_DIR/$name-end.kv" meshprobe_mesh_lost_total) - $(metric_sum "$RESULTS_DIR/$name-start.kv" meshprobe_mesh_lost_total) ))
            late=$(( $(metric_sum "$RESULTS_DIR/$name-end.kv" meshprobe_mesh_late_sends_total) - $(metric_sum "$RESULTS_DIR/$name-start.kv" meshprobe_mesh_late_sends_total) ))
            drops=$(( $(metric_sum "$RESULTS_DIR/$name-end.kv" meshprobe_socket_receive_drops_total) - $(metric_sum "$RESULTS_DIR/$name-start.kv" meshprobe_socket_receive_drops_total) ))
            ;;
        smokeping)
            scrape "http://127.0.0.1:$PORT/metrics" "$name-end"
            sent=$(( $(metric_sum "$RESULTS_DIR/$name-end.kv" smokeping_requests_total) - $(metric_sum "$RESULTS_DIR/$name-start.kv" smokeping_requests_total) ))
            received=$(( $(metric_sum "$RESULTS_DIR/$name-end.kv" smokeping_response_duration_seconds_count) - $(metric_sum "$RESULTS_DIR/$name-start.kv" smokeping_response_duration_seconds_count) ))
            lost=$(( sent - received )); late=n/a
            ;;
        floor)
            floor_counts "$log" > "$RESULTS_DIR/$name-end.kv"
            sent=$(( $(kv "$RESULTS_DIR/$name-end.kv" sent) - $(kv "$RESULTS_DIR/$name-start.kv" sent) ))
            received=$(( $(kv "$RESULTS_DIR/$name-end.kv" received) - $(kv "$RESULTS_DIR/$name-start.kv" received) ))
            lost=$(( sent - received )); late=n/a
            ;;
        fping)
            fping_summary "$log" "$name-end" "$n"
            sent=$(kv "$RESULTS_DIR/$name-end.kv" xmt); received=$(kv "$RESULTS_DIR/$name-end.kv" rcv)
            lost=$(kv "$RESULTS_DIR/$name-end.kv" lost); late=n/a
            ;;
    esac
    rss=$(status_kb "$PROG_PID" VmRSS); hwm=$(status_kb "$PROG_PID" VmHWM)
    echo "program=$prog targets=$n topology=$TOPOLOGY isolate=$ISOLATE stress=$STRESS nice=$MESHPROBE_NICE window_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') cores=$(awk -v c="$((c1 - c0))" -v a="$t0" -v b="$t1" -v hz="$TICK" 'BEGIN{printf "%.4f", c / hz / (b - a)}') probes_per_s=$(awk -v s="$sent" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", s / (b - a)}') sent=$sent received=$received lost=$lost late=$late socket_drops=$drops vmrss_kb=$rss vmhwm_kb=$hwm" \
        | tee -a "$RESULTS_DIR/results.txt"
    # A program started in the background of a script ignores SIGINT unless it catches it
    # (meshprobe, fping and smokeping_prober do); echo_floor does not, so it gets SIGTERM.
    if [[ $prog == floor ]]; then stop_pid "$PROG_PID" TERM; else stop_pid "$PROG_PID" INT; fi
    [[ -z $stress_pid ]] || stop_pid "$stress_pid"
    if (( PERF == 1 )) && [[ -f $RESULTS_DIR/$name.perf.data ]]; then
        perf report -i "$RESULTS_DIR/$name.perf.data" --stdio --no-children --sort symbol 2>/dev/null \
            | grep -E '^ +[0-9]' | head -25 > "$RESULTS_DIR/$name.perf-top.txt" || true
    fi
    sleep 2
}

for n in $SCALES; do
    for prog in $PROGRAMS; do
        [[ $prog == smokeping ]] && (( n > SMOKEPING_MAX )) && continue
        run "$prog" "$n"
    done
done
log "results in $RESULTS_DIR/results.txt"
cat "$RESULTS_DIR/results.txt"
