#!/usr/bin/env bash
# mesh_bench.sh: meshprobe mesh mode vs Debian's smokeping_prober and `fping -l`, side by side on one
# namespace network in one run, then meshprobe alone with NADDR_BIG targets. Run as root.
#
#   sudo bench/mesh_bench.sh                  # full run (60 s window per program, ~10 minutes)
#   sudo QUICK=1 bench/mesh_bench.sh          # smoke test (DURATION=10)
#   sudo DURATION=30 MODES=raw PROGRAMS="meshprobe fping" bench/mesh_bench.sh
#
# Network (all inside namespaces this script creates and deletes; nothing in the root namespace
# is touched, nothing is sent outside 198.18.0.0/15):
#
#   mmb-prober-PID  [lo 127.0.0.1: /metrics]   mmb-p 198.18.0.1/24 ── veth ──
#   mmb-peer-PID    mmb-q 198.18.0.2/24 + max(NADDR, NADDR_BIG) /32 addresses in 198.18.64.0/18
#                   (198.18.64.1 … .254, 198.18.65.1 … : 254 per /24, at most 16 256)
#   prober route: 198.18.64.0/18 via 198.18.0.2 (so one neighbour entry, not 10 000)
#
# For each socket mode (ping: ping_group_range="0 2147483647" in the prober namespace; raw: "1 0")
# each program runs alone in the prober namespace (started fresh, one after the other, so no raw
# socket sees another program's replies), all at one echo per target per INTERVAL_MS:
#   meshprobe      mesh mode, NADDR targets from a file_sd peers file (one peer per address,
#                  explicit network label), interval 1s, timeout 1s
#   smokeping      prometheus-smokeping-prober --privileged, the same NADDR hosts from its config
#                  file (protocol icmp, interval 1s); raw sockets in both modes
#   fping          fping -l -q -p INTERVAL_MS -i FPING_INTERVAL -f targets (root: raw socket)
#   meshprobe-big  meshprobe mesh mode with NADDR_BIG targets
# Each: start, wait until its HTTP server answers (fping: 1 s), warm-up WARMUP s (VmHWM is recorded
# at its end, before any /metrics scrape), a plain /metrics scrape (which must show all targets
# being probed), then a measurement window of DURATION s with nothing else touching the program:
# CPU = utime+stime delta from /proc/PID/stat / wall time; VmRSS and VmHWM at its end; then one
# /metrics scrape plain and one with Accept-Encoding: gzip (sizes, series, scrape time) and VmHWM
# again. Loss and send counts are deltas between the scrapes at the window's edges (fping: its
# SIGQUIT interval summaries, sent at the edges) and totals since start (fping: the final summary
# it prints on SIGINT).
#
# Environment:
#   DURATION=60      seconds of measurement window per program      QUICK=1  DURATION=10
#   WARMUP=5         seconds between "it is probing" and the window
#   NADDR=1000       targets for meshprobe, smokeping and fping
#   NADDR_BIG=10000  targets for meshprobe-big (max 16256)
#   INTERVAL_MS=1000 per-target probe interval (all programs)
#   MODES="ping raw" PROGRAMS="meshprobe smokeping fping meshprobe-big"
#   MESHPROBE_BIN=<repo>/target/release/meshprobe (built with cargo build --release if missing)
#   SMOKEPING_BIN=/usr/bin/prometheus-smokeping-prober   FPING_BIN=/usr/bin/fping
#   FPING_INTERVAL=  fping -i (ms between any two sends); default 0.8 × INTERVAL_MS / NADDR so that
#                    one round fits in the period with headroom (fping caps its send rate at 1/-i)
#   PORT_MESHPROBE=19125 PORT_SMOKEPING=19126
#   SMOKEPING_GOMAXPROCS=  set GOMAXPROCS for smokeping_prober (default: unset, Go uses all CPUs)
#   RESULTS_DIR=<repo>/bench-results/mesh-<timestamp>
#   SETTLE=2         seconds of pause between programs
#   MESHPROBE_FLAGS= extra meshprobe flags (e.g. --runtime.worker-threads=1)
set -euo pipefail

# ---- command line, before any default is applied ------------------------------------------------
ENV_VARS=(QUICK DURATION WARMUP NADDR NADDR_BIG INTERVAL_MS MODES PROGRAMS MESHPROBE_BIN
          SMOKEPING_BIN FPING_BIN FPING_INTERVAL PORT_MESHPROBE PORT_SMOKEPING SMOKEPING_GOMAXPROCS
          RESULTS_DIR SETTLE MESHPROBE_FLAGS)
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
BENCH_NAME=mesh_bench
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ ${EUID} -eq 0 ]] || die "must run as root (namespaces, veth, sysctl, raw sockets)"

REPO="$(cd "$BENCH_DIR/.." && pwd)"
HELPER="$BENCH_DIR/mesh_bench_helper.py"

if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION="${DURATION:-10}"
fi
DURATION="${DURATION:-60}"
WARMUP="${WARMUP:-5}"
NADDR="${NADDR:-1000}"
NADDR_BIG="${NADDR_BIG:-10000}"
INTERVAL_MS="${INTERVAL_MS:-1000}"
MODES="${MODES:-ping raw}"
PROGRAMS="${PROGRAMS:-meshprobe smokeping fping meshprobe-big}"
MESHPROBE_BIN="${MESHPROBE_BIN:-$REPO/target/release/meshprobe}"
SMOKEPING_BIN="${SMOKEPING_BIN:-/usr/bin/prometheus-smokeping-prober}"
FPING_BIN="${FPING_BIN:-/usr/bin/fping}"
PORT_MESHPROBE="${PORT_MESHPROBE:-19125}"
PORT_SMOKEPING="${PORT_SMOKEPING:-19126}"
SMOKEPING_GOMAXPROCS="${SMOKEPING_GOMAXPROCS:-}"
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results/mesh-$(date +%Y%m%dT%H%M%S)}"
SETTLE="${SETTLE:-2}"
MESHPROBE_FLAGS="${MESHPROBE_FLAGS:-}"

for n in DURATION WARMUP NADDR NADDR_BIG INTERVAL_MS SETTLE; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer, got '${!n}'"
done
(( DURATION >= 1 )) || die "DURATION must be >= 1"
(( INTERVAL_MS >= 10 )) || die "INTERVAL_MS must be >= 10 (meshprobe's minimum mesh.interval)"
MAX_ADDR=$(( 64 * 254 ))
(( NADDR >= 1 && NADDR <= MAX_ADDR )) || die "NADDR must be 1..$MAX_ADDR (198.18.64.0/18, 254 per /24)"
(( NADDR_BIG >= 1 && NADDR_BIG <= MAX_ADDR )) || die "NADDR_BIG must be 1..$MAX_ADDR"
for m in $MODES; do [[ $m == ping || $m == raw ]] || die "MODES: unknown mode '$m' (ping, raw)"; done
for p in $PROGRAMS; do
    [[ $p == meshprobe || $p == smokeping || $p == fping || $p == meshprobe-big ]] \
        || die "PROGRAMS: unknown program '$p' (meshprobe smokeping fping meshprobe-big)"
done
has_prog() { [[ " $PROGRAMS " == *" $1 "* ]]; }
if [[ -z ${FPING_INTERVAL:-} ]]; then
    FPING_INTERVAL=$(awk -v p="$INTERVAL_MS" -v n="$NADDR" 'BEGIN { printf "%.3f", 0.8 * p / n }')
fi
[[ $FPING_INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "FPING_INTERVAL must be a number of ms"
INTERVAL_S=$(awk -v p="$INTERVAL_MS" 'BEGIN { printf "%g", p / 1000 }')

# ---- state for cleanup ---------------------------------------------------------------------------
NS_P="mmb-prober-$$"
NS_Q="mmb-peer-$$"
VETH_P="mmb-p"
VETH_Q="mmb-q"

# ---- dependencies --------------------------------------------------------------------------------
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v sysctl >/dev/null || missing+=(procps)
command -v python3 >/dev/null || missing+=(python3)
if has_prog smokeping && [[ ! -x $SMOKEPING_BIN ]]; then missing+=(prometheus-smokeping-prober); fi
if has_prog fping && [[ ! -x $FPING_BIN ]]; then missing+=(fping); fi
if (( ${#missing[@]} )); then
    install_packages "${missing[@]}"
fi
if has_prog smokeping; then [[ -x $SMOKEPING_BIN ]] || die "$SMOKEPING_BIN not found"; fi
if has_prog fping; then [[ -x $FPING_BIN ]] || die "$FPING_BIN not found"; fi
if { has_prog meshprobe || has_prog meshprobe-big; } && [[ ! -x $MESHPROBE_BIN ]]; then
    build_meshprobe_if_missing
fi

note_stale_namespaces mmb-

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
    echo "naddr=$NADDR"
    echo "naddr_big=$NADDR_BIG"
    echo "interval_ms=$INTERVAL_MS"
    echo "interval_s=$INTERVAL_S"
    echo "modes=$MODES"
    echo "programs=$PROGRAMS"
    echo "clk_tck=$CLK_TCK"
    if has_prog meshprobe || has_prog meshprobe-big; then
        meshprobe_meta
        echo "meshprobe_flags=$MESHPROBE_FLAGS"
        repo_meta
    fi
    if has_prog smokeping; then
        echo "smokeping_bin=$SMOKEPING_BIN"
        echo "smokeping_version=$("$SMOKEPING_BIN" --version 2>&1 | head -1)"
        echo "smokeping_gomaxprocs=${SMOKEPING_GOMAXPROCS:-unset}"
    fi
    if has_prog fping; then
        echo "fping_bin=$FPING_BIN"
        echo "fping_version=$("$FPING_BIN" --version 2>&1 | head -1)"
        echo "fping_interval_ms=$FPING_INTERVAL"
    fi
} > "$RESULTS_DIR/meta.kv"
sed 's/^/# /' "$RESULTS_DIR/meta.kv"

# ---- targets and configs -------------------------------------------------------------------------
NPEER=$NADDR
if has_prog meshprobe-big && (( NADDR_BIG > NPEER )); then NPEER=$NADDR_BIG; fi
ALL_TARGETS="$RESULTS_DIR/targets-all.txt"
ADDR_BATCH="$RESULTS_DIR/peer-addrs.batch"
awk -v n="$NPEER" 'BEGIN { for (i = 0; i < n; i++) printf "198.18.%d.%d\n", 64 + int(i / 254), 1 + i % 254 }' \
    > "$ALL_TARGETS"
awk -v dev="$VETH_Q" '{ print "address add " $1 "/32 dev " dev }' "$ALL_TARGETS" > "$ADDR_BATCH"
TARGETS="$RESULTS_DIR/targets.txt"            # NADDR: meshprobe, smokeping, fping
TARGETS_BIG="$RESULTS_DIR/targets-big.txt"    # NADDR_BIG: meshprobe-big
head -n "$NADDR" "$ALL_TARGETS" > "$TARGETS"
head -n "$NADDR_BIG" "$ALL_TARGETS" > "$TARGETS_BIG"

write_mesh_config() {   # write_mesh_config TARGETS PEERS_JSON CONFIG
    # One file_sd group per address, each its own peer, with an explicit network label (so the
    # addresses need not be on the prober's subnet).
    awk 'BEGIN { printf "[" }
         { printf "%s\n  {\"targets\": [\"%s\"], \"labels\": {\"peer\": \"p%05d\", \"network\": \"bench\"}}",
                  (NR > 1 ? "," : ""), $1, NR }
         END { print "\n]" }' "$1" > "$2"
    cat > "$3" <<EOF
modules: {}
mesh:
  interval: ${INTERVAL_MS}ms
  timeout: ${INTERVAL_MS}ms
  peers:
    files: ["$2"]
EOF
}
CFG_MESH="$RESULTS_DIR/mesh.yml"
CFG_MESH_BIG="$RESULTS_DIR/mesh-big.yml"
write_mesh_config "$TARGETS" "$RESULTS_DIR/peers.json" "$CFG_MESH"
write_mesh_config "$TARGETS_BIG" "$RESULTS_DIR/peers-big.json" "$CFG_MESH_BIG"

# smokeping_prober: its own config file (otherwise it also reads /etc/prometheus/smokeping_prober.yml,
# which pings localhost), protocol icmp = privileged raw sockets.
CFG_SMOKEPING="$RESULTS_DIR/smokeping.yml"
{
    echo "targets:"
    echo "- hosts:"
    sed 's/^/  - /' "$TARGETS"
    echo "  interval: ${INTERVAL_MS}ms"
    echo "  network: ip4"
    echo "  protocol: icmp"
} > "$CFG_SMOKEPING"

# ---- namespace network ---------------------------------------------------------------------------
make_peer_network "$ADDR_BATCH" 198.18.64.0/18 '198\.18\.\(6[4-9]\|[7-9][0-9]\|1[01][0-9]\|12[0-7]\)\.' "$NPEER"
log "peer answers on $NPEER addresses ($(head -1 "$ALL_TARGETS") … $(tail -1 "$ALL_TARGETS"))"

# ---- helpers -------------------------------------------------------------------------------------
now_s() { date +%s.%N; }

ctxt_switches() {   # voluntary + involuntary context switches of all threads of PID (living ones)
    cat "/proc/$1"/task/*/status 2>/dev/null \
        | awk '$1 == "voluntary_ctxt_switches:" || $1 == "nonvoluntary_ctxt_switches:" { n += $2 } END { print n + 0 }'
}


helper() { ip netns exec "$NS_P" python3 "$HELPER" "$@"; }

file_size() { stat -c %s "$1"; }

FPING_OFF=0
fping_signal() {   # fping_signal SIGNAL: ask fping for a summary (QUIT: interval summary, which also
    # resets its interval counters; INT: final summary and exit)
    FPING_OFF=$(file_size "$PROG_ERR")
    kill "-$1" "$PROG_PID"
}

fping_collect() {   # fping_collect NAME: wait for the NADDR-line summary asked for by fping_signal,
    # keep it as fping-MODE-NAME.txt and append its sums to $KV with prefix NAME.
    local name=$1 i n=0
    for i in $(seq 200); do
        n=$(python3 "$HELPER" count-lines "$PROG_ERR" 'xmt/rcv/%' --from "$FPING_OFF")
        (( n >= NADDR )) && break
        sleep 0.05
    done
    (( n >= NADDR )) || die "fping printed $n of $NADDR summary lines"
    tail -c "+$(( FPING_OFF + 1 ))" "$PROG_ERR" > "$RESULTS_DIR/fping-$MODE-$name.txt"
    python3 "$HELPER" fping-stats "$PROG_ERR" --from "$FPING_OFF" | sed "s/^/$name./" >> "$KV"
}

check_probing() {   # check_probing PROG N: the window-start scrape shows N targets being probed
    local prog=$1 n=$2 got sent
    case $prog in
        meshprobe|meshprobe-big)
            got=$(kv_get start.sum.meshprobe_mesh_targets)
            sent=$(kv_get start.sum.meshprobe_mesh_sent_total) ;;
        smokeping)
            got=$(kv_get start.count.smokeping_requests_total)
            sent=$(kv_get start.sum.smokeping_requests_total) ;;
    esac
    awk -v g="${got:-0}" -v n="$n" -v s="${sent:-0}" 'BEGIN { exit !(g + 0 == n && s + 0 > 0) }' \
        || { cat "$PROG_ERR" >&2; die "$prog ($MODE): $got targets, $sent sent after the warm-up (want $n, > 0)"; }
}

kv_get() { sed -n "s/^$1=//p" "$KV" | tail -1; }

PROG_PID=""
PROG_ERR=""
KV=""
MODE=""

start_program() {   # start_program PROG: starts it in the prober namespace; sets PROG_PID
    local prog=$1 bin i logf="$RESULTS_DIR/log-$MODE-$1.txt"
    PROG_ERR=$logf
    case $prog in
        meshprobe|meshprobe-big)
            bin=$MESHPROBE_BIN
            local cfg=$CFG_MESH
            [[ $prog == meshprobe-big ]] && cfg=$CFG_MESH_BIG
            # shellcheck disable=SC2086
            ip netns exec "$NS_P" "$MESHPROBE_BIN" --config.file "$cfg" \
                --web.listen-address "127.0.0.1:$PORT_MESHPROBE" --log.level warn $MESHPROBE_FLAGS \
                > "$logf" 2>&1 &
            ;;
        smokeping)
            bin=$SMOKEPING_BIN
            local envs=()
            [[ -n $SMOKEPING_GOMAXPROCS ]] && envs=(env "GOMAXPROCS=$SMOKEPING_GOMAXPROCS")
            ip netns exec "$NS_P" "${envs[@]}" "$SMOKEPING_BIN" --config.file "$CFG_SMOKEPING" \
                --web.listen-address "127.0.0.1:$PORT_SMOKEPING" --privileged \
                --ping.interval "${INTERVAL_MS}ms" --log.level warn > "$logf" 2>&1 &
            ;;
        fping)
            bin=$FPING_BIN
            ip netns exec "$NS_P" "$FPING_BIN" -l -q -p "$INTERVAL_MS" -i "$FPING_INTERVAL" \
                -f "$TARGETS" > "$RESULTS_DIR/fping-$MODE-stdout.txt" 2> "$logf" &
            ;;
    esac
    PROG_PID=$!
    PIDS+=("$PROG_PID")
    # `ip netns exec` (and env) exec the command, so $! becomes the program itself
    for i in $(seq 50); do
        [[ $(readlink "/proc/$PROG_PID/exe" 2>/dev/null) == "$(readlink -f "$bin")" ]] && break
        kill -0 "$PROG_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ $(readlink "/proc/$PROG_PID/exe" 2>/dev/null) == "$(readlink -f "$bin")" ]] \
        || { cat "$logf" >&2; die "$prog did not start (pid $PROG_PID)"; }
}

run_program() {   # run_program PROG: one program's whole measurement in the current MODE
    local prog=$1 n t_start t_ready c0 c1 w0 w1 x0 x1 sockets url="" scrape_out
    KV="$RESULTS_DIR/run-$MODE-$prog.kv"
    n=$NADDR
    [[ $prog == meshprobe-big ]] && n=$NADDR_BIG
    t_start=$(now_s)
    start_program "$prog"
    {
        echo "mode=$MODE"
        echo "program=$prog"
        echo "pid=$PROG_PID"
        echo "targets=$n"
        echo "clk_tck=$CLK_TCK"
        echo "ping_group_range=$(ip netns exec "$NS_P" sysctl -n net.ipv4.ping_group_range | tr '\t' ' ')"
    } > "$KV"
    case $prog in
        meshprobe|meshprobe-big) url="http://127.0.0.1:$PORT_MESHPROBE/metrics" ;;
        smokeping)               url="http://127.0.0.1:$PORT_SMOKEPING/metrics" ;;
    esac
    # Ready = its HTTP server answers (the landing page, not /metrics: the first /metrics scrape
    # is the window's start, so that VmHWM before any scrape can be recorded). fping: 1 s.
    if [[ -n $url ]]; then
        helper wait-http "${url%/metrics}/" --timeout 60 \
            || { cat "$PROG_ERR" >&2; die "$prog ($MODE) did not answer HTTP"; }
    else
        sleep 1
    fi
    t_ready=$(now_s)
    echo "ready_seconds=$(awk -v a="$t_start" -v b="$t_ready" 'BEGIN { printf "%.3f", b - a }')" >> "$KV"
    log "$prog ($MODE) started (pid $PROG_PID); warm-up ${WARMUP}s"
    sleep "$WARMUP"
    kill -0 "$PROG_PID" 2>/dev/null || { cat "$PROG_ERR" >&2; die "$prog ($MODE) died during warm-up"; }
    echo "vmhwm_warmup_kb=$(status_kb "$PROG_PID" VmHWM)" >> "$KV"

    # -- window start: counters first, then CPU, so our own scrape is outside the window
    if [[ -n $url ]]; then
        helper scrape "$url" "$RESULTS_DIR/metrics-$MODE-$prog-start.txt.gz" --prefix start. >> "$KV"
        check_probing "$prog" "$n"
    else
        fping_signal QUIT   # its interval counters restart now
    fi
    c0=$(cpu_ticks "$PROG_PID")
    w0=$(now_s)
    x0=$(ctxt_switches "$PROG_PID")
    [[ -n $url ]] || fping_collect warmup
    sleep "$(( DURATION / 2 ))"
    sockets=$(socket_counts)
    sleep "$(awk -v d="$DURATION" -v a="$w0" -v n="$(now_s)" 'BEGIN { r = d - (n - a); print (r > 0 ? r : 0) }')"
    c1=$(cpu_ticks "$PROG_PID")
    w1=$(now_s)
    x1=$(ctxt_switches "$PROG_PID")
    [[ -n $url ]] || fping_signal QUIT
    # -- window end
    {
        echo "cpu_ticks_before=$c0"
        echo "cpu_ticks_after=$c1"
        echo "ctxt_switches_before=$x0"
        echo "ctxt_switches_after=$x1"
        echo "window_seconds=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')"
        echo "vmrss_kb=$(status_kb "$PROG_PID" VmRSS)"
        echo "vmhwm_kb=$(status_kb "$PROG_PID" VmHWM)"
        echo "threads=$(status_kb "$PROG_PID" Threads)"
        echo "sockets_mid_window=$sockets"
    } >> "$KV"
    kill -0 "$PROG_PID" 2>/dev/null || die "$prog ($MODE) died during its window"
    echo "alive_at_end=1" >> "$KV"
    if [[ -n $url ]]; then
        scrape_out=$(helper scrape "$url" "$RESULTS_DIR/metrics-$MODE-$prog-end.txt.gz")
        sed 's/^/end./' <<< "$scrape_out" >> "$KV"
        sed 's/^/scrape_plain./' <<< "$scrape_out" >> "$KV"
        helper scrape "$url" "$RESULTS_DIR/metrics-$MODE-$prog-end-gzip.gz" --gzip --prefix scrape_gzip. >> "$KV"
    else
        fping_collect window
    fi
    {
        echo "vmrss_after_kb=$(status_kb "$PROG_PID" VmRSS)"
        echo "vmhwm_after_kb=$(status_kb "$PROG_PID" VmHWM)"
    } >> "$KV"
    if [[ -n $url ]]; then
        stop_pid "$PROG_PID"
    else
        fping_signal INT
        fping_collect final
        stop_pid "$PROG_PID"
    fi
    python3 - "$KV" "$prog" <<'EOF' >&2
import sys
kv = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
hz = float(kv["clk_tck"]); w = float(kv["window_seconds"])
cores = (int(kv["cpu_ticks_after"]) - int(kv["cpu_ticks_before"])) / hz / w
def f(k): return float(kv.get(k, "nan"))
p = sys.argv[2]
if p.startswith("meshprobe"):
    loss = "lost %g of %g sent since start, late sends %g" % (
        f("end.sum.meshprobe_mesh_lost_total"), f("end.sum.meshprobe_mesh_sent_total"),
        f("end.sum.meshprobe_mesh_late_sends_total"))
elif p == "smokeping":
    loss = "requests %g − responses %g since start" % (
        f("end.sum.smokeping_requests_total"), f("end.sum.smokeping_response_duration_seconds_count"))
else:
    loss = "window xmt %g rcv %g; final xmt %g rcv %g" % (
        f("window.xmt"), f("window.rcv"), f("final.xmt"), f("final.rcv"))
print("  %s: %.4f cores, VmRSS %s kB, VmHWM %s kB, %s, %s" % (
    p, cores, kv["vmrss_kb"], kv["vmhwm_kb"], kv["sockets_mid_window"], loss))
EOF
    sleep "$SETTLE"
}

# ---- the runs ------------------------------------------------------------------------------------
for MODE in $MODES; do
    case $MODE in
        ping) range="0 2147483647" ;;
        raw)  range="1 0" ;;
    esac
    ip netns exec "$NS_P" sysctl -qw net.ipv4.ping_group_range="$range"
    log "mode $MODE: net.ipv4.ping_group_range=\"$(ip netns exec "$NS_P" sysctl -n net.ipv4.ping_group_range | tr '\t' ' ')\" in $NS_P"
    for prog in meshprobe smokeping fping meshprobe-big; do
        has_prog "$prog" || continue
        run_program "$prog"
    done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RESULTS_DIR/meta.kv"

# ---- report --------------------------------------------------------------------------------------
echo
echo "## meshprobe mesh mode vs smokeping_prober $("$SMOKEPING_BIN" --version 2>&1 | head -1 | awk '{print $3}') and fping $("$FPING_BIN" --version 2>&1 | awk '{print $3}' | head -1) — ${NADDR} targets (and $NADDR_BIG for meshprobe alone) at 1 echo / ${INTERVAL_MS} ms, ${DURATION}s window after ${WARMUP}s warm-up, $(nproc) CPUs"
echo
echo "command: \`$CMDLINE\`"
echo
python3 "$HELPER" report "$RESULTS_DIR"
echo
echo "raw results: $RESULTS_DIR"
