#!/usr/bin/env bash
# probe_bench.sh: meshprobe /probe vs Debian's blackbox_exporter icmp prober, side by side on one
# namespace network in one run. Run as root.
#
#   sudo bench/probe_bench.sh                 # full run (15 s per measured wrk run)
#   sudo QUICK=1 bench/probe_bench.sh         # smoke test (DURATION=3, WARMUP=1)
#   sudo DURATION=30 MODES=raw bench/probe_bench.sh
#
# Network (all inside namespaces this script creates and deletes; nothing in the root namespace
# is touched, nothing is sent outside 198.18.0.0/15):
#
#   mpb-prober-PID  [lo 127.0.0.1: exporters + wrk]   mpb-p 198.18.0.1/24 ── veth ──
#   mpb-peer-PID    mpb-q 198.18.0.2/24 + NADDR /32 addresses spread over 198.18.4.0/22
#   prober route: 198.18.4.0/22 via 198.18.0.2 (so one neighbour entry, not 1000)
#
# For each socket mode (ping: ping_group_range="0 2147483647"; raw: "1 0") and each exporter
# (started fresh, one at a time, so that an idle exporter's sockets do not see the other one's
# packets): warm-up, wrk at C_LOW and C_HIGH (throughput, CPU/probe from /proc/PID/stat), then wrk
# at C_RTT with tcpdump on mpb-p (reported RTT vs wire RTT). Peak RSS = VmHWM at the end.
#
# Environment:
#   DURATION=15      seconds per measured wrk run          QUICK=1  DURATION=3 WARMUP=1
#   WARMUP=3         seconds of warm-up (c=C_LOW) per exporter start
#   C_LOW=64 C_HIGH=1024 C_RTT=256 THREADS=2 WRK_TIMEOUT=10s
#   NADDR=1000       peer addresses (max 1016)
#   MODES="ping raw" EXPORTERS="meshprobe blackbox"
#   MESHPROBE_BIN=<repo>/target/release/meshprobe (built with cargo build --release if missing)
#   BLACKBOX_BIN=/usr/bin/prometheus-blackbox-exporter
#   PORT_MESHPROBE=19115 PORT_BLACKBOX=19116
#   SCRAPE_TIMEOUT=10  value of X-Prometheus-Scrape-Timeout-Seconds sent by wrk ("" = no header)
#   RESULTS_DIR=<repo>/bench-results/probe-<timestamp>   KEEP_PCAP=0 (1 keeps the .pcap files)
#   SETTLE=1         seconds of pause between runs
#   MESHPROBE_FLAGS= extra meshprobe flags (e.g. --runtime.worker-threads=1)
set -euo pipefail

# ---- command line, before any default is applied ------------------------------------------------
ENV_VARS=(QUICK DURATION WARMUP C_LOW C_HIGH C_RTT THREADS WRK_TIMEOUT NADDR MODES EXPORTERS
          MESHPROBE_BIN BLACKBOX_BIN PORT_MESHPROBE PORT_BLACKBOX SCRAPE_TIMEOUT RESULTS_DIR
          KEEP_PCAP SETTLE MESHPROBE_FLAGS)
CMDLINE=""
for v in "${ENV_VARS[@]}"; do
    if [[ -n "${!v+x}" ]]; then CMDLINE+="$(printf '%q=%q ' "$v" "${!v}")"; fi
done
CMDLINE+="$(printf '%q' "$0")"
for a in "$@"; do CMDLINE+=" $(printf '%q' "$a")"; done
echo "# command: $CMDLINE"

if [[ $# -gt 0 ]]; then
    echo "usage: [ENV=value ...] $0   (no arguments; see the header of this file for the variables)" >&2
    exit 64
fi

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_NAME=probe_bench
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ ${EUID} -eq 0 ]] || die "must run as root (namespaces, veth, sysctl, raw sockets, tcpdump)"

REPO="$(cd "$BENCH_DIR/.." && pwd)"
HELPER="$BENCH_DIR/bench_helper.py"
LUA="$BENCH_DIR/probe.lua"

if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION="${DURATION:-3}"
    WARMUP="${WARMUP:-1}"
fi
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-3}"
C_LOW="${C_LOW:-64}"
C_HIGH="${C_HIGH:-1024}"
C_RTT="${C_RTT:-256}"
THREADS="${THREADS:-2}"
WRK_TIMEOUT="${WRK_TIMEOUT:-10s}"
NADDR="${NADDR:-1000}"
MODES="${MODES:-ping raw}"
EXPORTERS="${EXPORTERS:-meshprobe blackbox}"
MESHPROBE_BIN="${MESHPROBE_BIN:-$REPO/target/release/meshprobe}"
BLACKBOX_BIN="${BLACKBOX_BIN:-/usr/bin/prometheus-blackbox-exporter}"
PORT_MESHPROBE="${PORT_MESHPROBE:-19115}"
PORT_BLACKBOX="${PORT_BLACKBOX:-19116}"
SCRAPE_TIMEOUT="${SCRAPE_TIMEOUT-10}"
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results/probe-$(date +%Y%m%dT%H%M%S)}"
KEEP_PCAP="${KEEP_PCAP:-0}"
SETTLE="${SETTLE:-1}"
MESHPROBE_FLAGS="${MESHPROBE_FLAGS:-}"

for n in DURATION WARMUP C_LOW C_HIGH C_RTT THREADS NADDR SETTLE; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer, got '${!n}'"
done
(( DURATION >= 1 )) || die "DURATION must be >= 1"
(( NADDR >= 1 && NADDR <= 1016 )) || die "NADDR must be 1..1016 (4 x 254 addresses in 198.18.4.0/22)"
for m in $MODES; do [[ $m == ping || $m == raw ]] || die "MODES: unknown mode '$m' (ping, raw)"; done
for e in $EXPORTERS; do
    [[ $e == meshprobe || $e == blackbox ]] || die "EXPORTERS: unknown exporter '$e'"
done

# ---- state for cleanup ---------------------------------------------------------------------------
NS_P="mpb-prober-$$"
NS_Q="mpb-peer-$$"
VETH_P="mpb-p"
VETH_Q="mpb-q"

# ---- dependencies --------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v ip >/dev/null || missing+=(iproute2)
command -v sysctl >/dev/null || missing+=(procps)
command -v python3 >/dev/null || missing+=(python3)
[[ -x $BLACKBOX_BIN ]] || missing+=(prometheus-blackbox-exporter)
if (( ${#missing[@]} )); then
    install_packages prometheus-blackbox-exporter wrk tcpdump iproute2 procps python3
fi
[[ -x $BLACKBOX_BIN ]] || die "$BLACKBOX_BIN not found"
if [[ " $EXPORTERS " == *" meshprobe "* && ! -x $MESHPROBE_BIN ]]; then
    build_meshprobe_if_missing
fi

# wrk needs one descriptor per connection
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) > C_HIGH + C_RTT + 64 )) || die "open-file limit $(ulimit -n) too low for C_HIGH=$C_HIGH"

note_stale_namespaces mpb-

mkdir -p "$RESULTS_DIR"
CLK_TCK=$(getconf CLK_TCK)

# ---- record the setup ----------------------------------------------------------------------------
{
    echo "command=$CMDLINE"
    echo "date=$(date -Is)"
    echo "kernel=$(uname -r)"
    echo "nproc=$(nproc)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "duration=$DURATION"
    echo "warmup=$WARMUP"
    echo "threads=$THREADS"
    echo "wrk_timeout=$WRK_TIMEOUT"
    echo "naddr=$NADDR"
    echo "modes=$MODES"
    echo "exporters=$EXPORTERS"
    echo "concurrencies=$C_LOW $C_HIGH"
    echo "rtt_concurrency=$C_RTT"
    echo "scrape_timeout_header=$SCRAPE_TIMEOUT"
    echo "clk_tck=$CLK_TCK"
    echo "blackbox_bin=$BLACKBOX_BIN"
    echo "blackbox_version=$("$BLACKBOX_BIN" --version 2>&1 | head -1)"
    if [[ " $EXPORTERS " == *" meshprobe "* ]]; then
        meshprobe_meta
        repo_meta
    fi
    echo "wrk_version=$(wrk --version 2>&1 | head -1 | cut -c1-60)"
    echo "tcpdump_version=$(tcpdump --version 2>&1 | head -1)"
} > "$RESULTS_DIR/meta.kv"
sed 's/^/# /' "$RESULTS_DIR/meta.kv"

CFG="$RESULTS_DIR/probe.yml"
cat > "$CFG" <<'EOF'
modules:
  icmp:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
EOF

TARGETS="$RESULTS_DIR/targets.txt"
ADDR_BATCH="$RESULTS_DIR/peer-addrs.batch"
: > "$TARGETS"
: > "$ADDR_BATCH"
for (( i = 0; i < NADDR; i++ )); do
    a="198.18.$(( 4 + i / 254 )).$(( 1 + i % 254 ))"
    echo "$a" >> "$TARGETS"
    echo "address add $a/32 dev $VETH_Q" >> "$ADDR_BATCH"
done

# ---- namespace network ---------------------------------------------------------------------------
make_peer_network "$ADDR_BATCH" 198.18.4.0/22 '198\.18\.[4-7]\.' "$NADDR"
log "peer answers on $NADDR addresses ($(head -1 "$TARGETS") … $(tail -1 "$TARGETS"))"

# ---- helpers -------------------------------------------------------------------------------------

EXP_PID=""
EXP_NAME=""
EXP_PORT=""

start_exporter() {   # start_exporter NAME MODE
    local name=$1 mode=$2 logf="$RESULTS_DIR/log-$2-$1.txt" bin i
    case $name in
        meshprobe)
            EXP_PORT=$PORT_MESHPROBE
            bin=$MESHPROBE_BIN
            ip netns exec "$NS_P" "$MESHPROBE_BIN" --config.file "$CFG" \
                --web.listen-address "127.0.0.1:$EXP_PORT" --log.level warn $MESHPROBE_FLAGS > "$logf" 2>&1 &
            ;;
        blackbox)
            EXP_PORT=$PORT_BLACKBOX
            bin=$BLACKBOX_BIN
            ip netns exec "$NS_P" "$BLACKBOX_BIN" --config.file "$CFG" \
                --web.listen-address "127.0.0.1:$EXP_PORT" --log.level=warn > "$logf" 2>&1 &
            ;;
    esac
    EXP_PID=$!
    EXP_NAME=$name
    PIDS+=("$EXP_PID")
    # `ip netns exec` execs the command, so $! becomes the exporter itself
    for i in $(seq 50); do
        [[ $(readlink "/proc/$EXP_PID/exe" 2>/dev/null) == "$(readlink -f "$bin")" ]] && break
        kill -0 "$EXP_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ $(readlink "/proc/$EXP_PID/exe" 2>/dev/null) == "$(readlink -f "$bin")" ]] \
        || { cat "$logf" >&2; die "$name did not start (pid $EXP_PID)"; }
    if ! ip netns exec "$NS_P" python3 "$HELPER" wait-probe \
            "http://127.0.0.1:$EXP_PORT/probe?module=icmp&target=$(head -1 "$TARGETS")" \
            "$RESULTS_DIR/first-probe-$mode-$name.txt" --timeout 30; then
        cat "$logf" >&2
        die "$name ($mode) did not answer a first successful probe"
    fi
    log "$name started (pid $EXP_PID, 127.0.0.1:$EXP_PORT, $(socket_counts))"
}

stop_exporter() {   # records peak RSS, then stops the exporter
    local mode=$1 kv="$RESULTS_DIR/exporter-$mode-$EXP_NAME.kv"
    if kill -0 "$EXP_PID" 2>/dev/null; then
        {
            echo "pid=$EXP_PID"
            echo "vmhwm_kb=$(status_kb "$EXP_PID" VmHWM)"
            echo "vmrss_kb=$(status_kb "$EXP_PID" VmRSS)"
            echo "threads=$(status_kb "$EXP_PID" Threads)"
            echo "cpu_ticks_total=$(cpu_ticks "$EXP_PID")"
            echo "alive_at_end=1"
        } > "$kv"
    else
        echo "alive_at_end=0" > "$kv"
        log "WARNING: $EXP_NAME ($mode) had exited before the end of its runs"
    fi
    stop_pid "$EXP_PID"
    EXP_PID=""
}

run_wrk() {   # run_wrk MODE CONCURRENCY DURATION LABEL [capture]
    local mode=$1 conc=$2 dur=$3 label=$4 capture=${5:-} key="$1-$EXP_NAME-$4"
    local out="$RESULTS_DIR/wrk-$key.txt" kv="$RESULTS_DIR/run-$key.kv"
    local pcap="$RESULTS_DIR/capture-$key.pcap" tdlog="$RESULTS_DIR/tcpdump-$key.txt"
    local td_pid="" wrk_pid wrk_rc=0 c0 c1 i half
    kill -0 "$EXP_PID" 2>/dev/null || die "$EXP_NAME ($mode) is not running before run $label"
    if [[ -n $capture ]]; then
        ip netns exec "$NS_P" tcpdump -i "$VETH_P" -w "$pcap" -s 96 -B 65536 -n -Z root \
            --time-stamp-precision=nano icmp > "$tdlog" 2>&1 &
        td_pid=$!
        PIDS+=("$td_pid")
        for i in $(seq 100); do
            grep -q 'listening on' "$tdlog" 2>/dev/null && break
            kill -0 "$td_pid" 2>/dev/null || break
            sleep 0.05
        done
        grep -q 'listening on' "$tdlog" || { cat "$tdlog" >&2; die "tcpdump did not start"; }
    fi
    c0=$(cpu_ticks "$EXP_PID")
    ip netns exec "$NS_P" env MPB_TARGETS="$TARGETS" MPB_MODULE=icmp MPB_SCRAPE_TIMEOUT="$SCRAPE_TIMEOUT" \
        wrk -t"$THREADS" -c"$conc" -d"${dur}s" --timeout "$WRK_TIMEOUT" --latency -s "$LUA" \
        "http://127.0.0.1:$EXP_PORT/" > "$out" 2>&1 &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    half=$(( dur / 2 ))
    sleep "$half".5
    local sockets
    sockets=$(socket_counts)
    wait "$wrk_pid" || wrk_rc=$?
    forget_pid "$wrk_pid"
    c1=$(cpu_ticks "$EXP_PID" 2>/dev/null || echo "$c0")
    if [[ -n $td_pid ]]; then
        # libpcap's TPACKET_V3 ring hands a block to tcpdump only when it is full or its 1 s
        # timeout expires; packets in a block not yet handed over are lost on SIGINT. Wait it out.
        sleep 1.5
        stop_pid "$td_pid" INT
    fi
    {
        echo "mode=$mode"
        echo "exporter=$EXP_NAME"
        echo "concurrency=$conc"
        echo "duration=$dur"
        echo "wrk_rc=$wrk_rc"
        echo "clk_tck=$CLK_TCK"
        echo "cpu_ticks_before=$c0"
        echo "cpu_ticks_after=$c1"
        echo "sockets_mid_run=$sockets"
        if kill -0 "$EXP_PID" 2>/dev/null; then echo "exporter_alive_after=1"; else echo "exporter_alive_after=0"; fi
        if [[ -n $td_pid ]]; then
            echo "tcpdump_dropped=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$tdlog" | head -1)"
            echo "tcpdump_captured=$(sed -n 's/^\([0-9]*\) packets captured.*/\1/p' "$tdlog" | head -1)"
            echo "tcpdump_received=$(sed -n 's/^\([0-9]*\) packets received by filter.*/\1/p' "$tdlog" | head -1)"
        fi
    } > "$kv"
    (( wrk_rc == 0 )) || { cat "$out" >&2; die "wrk failed (rc $wrk_rc) for $key"; }
    local res
    res=$(grep '^MPB_RESULT' "$out" || true)
    [[ -n $res ]] || { cat "$out" >&2; die "no MPB_RESULT in wrk output for $key"; }
    log "  $key: $(awk '/Requests\/sec/ {print $2 " req/s"}' "$out"), $(sed -E 's/.* ok=([0-9]+) lua_failed=([0-9]+).*err_connect=([0-9]+) err_read=([0-9]+) err_write=([0-9]+) err_status=([0-9]+) err_timeout=([0-9]+).*/ok=\1 failed=\2 errors(c\/r\/w\/s\/t)=\3\/\4\/\5\/\6\/\7/' <<< "$res"), cpu $(( c1 - c0 )) ticks, $sockets"
    if [[ -n $td_pid ]]; then
        python3 "$HELPER" pcap-rtt "$pcap" > "$RESULTS_DIR/pcap-$key.json"
        [[ $KEEP_PCAP == 1 ]] || rm -f "$pcap"
    fi
    kill -0 "$EXP_PID" 2>/dev/null || die "$EXP_NAME ($mode) died during run $label (see log-$mode-$EXP_NAME.txt)"
    sleep "$SETTLE"
}

# ---- the runs ------------------------------------------------------------------------------------
for mode in $MODES; do
    case $mode in
        ping) range="0 2147483647" ;;
        raw)  range="1 0" ;;
    esac
    ip netns exec "$NS_P" sysctl -qw net.ipv4.ping_group_range="$range"
    log "mode $mode: net.ipv4.ping_group_range=\"$(ip netns exec "$NS_P" sysctl -n net.ipv4.ping_group_range | tr '\t' ' ')\" in $NS_P"
    for exp in $EXPORTERS; do
        start_exporter "$exp" "$mode"
        if (( WARMUP > 0 )); then
            log "  warm-up ${WARMUP}s at c=$C_LOW"
            run_wrk "$mode" "$C_LOW" "$WARMUP" "warmup"
        fi
        run_wrk "$mode" "$C_LOW" "$DURATION" "c$C_LOW"
        run_wrk "$mode" "$C_HIGH" "$DURATION" "c$C_HIGH"
        run_wrk "$mode" "$C_RTT" "$DURATION" "c$C_RTT" capture
        stop_exporter "$mode"
    done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RESULTS_DIR/meta.kv"

# ---- report --------------------------------------------------------------------------------------
echo
echo "## meshprobe vs blackbox_exporter $("$BLACKBOX_BIN" --version 2>&1 | head -1 | awk '{print $3}') — ICMP /probe, ${DURATION}s per run, $NADDR targets, $(nproc) CPUs"
echo
python3 "$HELPER" report "$RESULTS_DIR"
echo
echo "raw results: $RESULTS_DIR"
