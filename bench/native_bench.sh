#!/usr/bin/env bash
# native_bench.sh: what native histograms save. meshprobe in mesh mode probes NADDR kernel-answered
# targets (AnyIP: `route add local 198.18.64.0/18 dev lo` in the peer namespace) and a real
# Prometheus scrapes it every SCRAPE_INTERVAL for DURATION seconds, twice on the same network:
#   idle     Prometheus with nothing to scrape: its fixed cost, the baseline of the other runs
#   classic  meshprobe mesh.histogram: both (the default), Prometheus without feature flags:
#            text format, 20 classic buckets + _sum + _count
#   native   meshprobe mesh.histogram: native, Prometheus --enable-feature=native-histograms:
#            protobuf, one native series per target
#   both     (only if RUNS names it) mesh.histogram: both scraped by a native Prometheus: the
#            protobuf carries the classic buckets too, which Prometheus 2.42 parses and drops
# Per run, before Prometheus starts: SCRAPES back-to-back scrapes with that run's Accept header and
# gzip (as Prometheus sends them); CPU per scrape = meshprobe's CPU ticks over the burst minus its
# probing CPU at the rate measured over BASELINE idle seconds just before, bytes per scrape from
# curl. At the end of each run: Prometheus's head series (/api/v1/status/tsdb), its VmRSS and peak
# VmHWM, and its Go heap in use (go_memstats_heap_inuse_bytes, without the GC slack RSS carries).
#
#   sudo bench/native_bench.sh        # NADDR=2000 DURATION=600: what BENCHMARKS.md reports
#   sudo DURATION=180 RUNS="classic native" bench/native_bench.sh    # a quicker look
#
# Only namespaces this script creates and processes it starts (by PID) are touched.
set -euo pipefail
echo "# command: $(printf '%q ' "$0" "$@") (DURATION=${DURATION:-600} NADDR=${NADDR:-2000})"

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_NAME=native_bench
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ ${EUID} -eq 0 ]] || die "must run as root (namespaces, veth, raw sockets)"

REPO="$(cd "$BENCH_DIR/.." && pwd)"
NADDR="${NADDR:-2000}"
DURATION="${DURATION:-600}"
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-5s}"
SCRAPES="${SCRAPES:-20}"
BASELINE="${BASELINE:-10}"
IDLE_DURATION="${IDLE_DURATION:-120}"
RUNS="${RUNS:-idle classic native}"
MESHPROBE_BIN="${MESHPROBE_BIN:-$REPO/target/release/meshprobe}"
PROMETHEUS_BIN="${PROMETHEUS_BIN:-/usr/bin/prometheus}"
PORT=19135
PROM_PORT=19136
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results/native-$(date +%Y%m%dT%H%M%S)}"
NS_P="nhb-prober-$$"; NS_Q="nhb-peer-$$"; VETH_P=nhb-p; VETH_Q=nhb-q
(( NADDR >= 1 && NADDR <= 16000 )) || die "NADDR must be 1..16000"
[[ -x $MESHPROBE_BIN ]] || die "$MESHPROBE_BIN missing: cargo build --release"
[[ -x $PROMETHEUS_BIN ]] || die "$PROMETHEUS_BIN missing: apt-get install prometheus"
mkdir -p "$RESULTS_DIR"
note_stale_namespaces nhb-

echo "route add local 198.18.64.0/18 dev lo" > "$RESULTS_DIR/anyip.batch"
make_peer_network "$RESULTS_DIR/anyip.batch" 198.18.64.0/18 "no-such-address" 0

python3 - "$NADDR" > "$RESULTS_DIR/peers.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps([{"targets": [f"198.18.{64 + i // 250}.{1 + i % 250}"],
                   "labels": {"peer": f"p{i}", "network": "lab"}} for i in range(n)]))
EOF
for mode in classic native both; do
    cat > "$RESULTS_DIR/meshprobe-$mode.yml" <<EOF
modules: {icmp: {prober: icmp}}
mesh:
  interval: 1s
  timeout: 1s
  histogram: $mode
  peers: {files: ["$RESULTS_DIR/peers.json"]}
EOF
done
cat > "$RESULTS_DIR/prometheus.yml" <<EOF
global: {scrape_interval: $SCRAPE_INTERVAL, scrape_timeout: 5s}
scrape_configs:
  - job_name: meshprobe
    static_configs: [{targets: ["127.0.0.1:$PORT"]}]
EOF
cat > "$RESULTS_DIR/prometheus-idle.yml" <<EOF
global: {scrape_interval: $SCRAPE_INTERVAL, scrape_timeout: 5s}
scrape_configs: []
EOF

ACCEPT_TEXT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
ACCEPT_PROTO='application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
TICK=$(getconf CLK_TCK)

in_ns() { ip netns exec "$NS_P" "$@"; }
scrape_bytes() {  # scrape_bytes ACCEPT -> bytes on the wire (gzip)
    in_ns curl -s -o /dev/null -w '%{size_download}' -H "Accept: $1" -H 'Accept-Encoding: gzip' \
        "http://127.0.0.1:$PORT/metrics"
}

prometheus_heap_kb() {  # prometheus_heap_kb: Prometheus's own Go heap in use, in KiB
    in_ns curl -s "http://127.0.0.1:$PROM_PORT/metrics" \
        | awk '$1 == "go_memstats_heap_inuse_bytes" { printf "%d", $2 / 1024 }'
}

run_idle() {  # Prometheus alone: its fixed cost at this version on this machine
    local pp
    rm -rf "$RESULTS_DIR/data-idle"
    ip netns exec "$NS_P" "$PROMETHEUS_BIN" --config.file "$RESULTS_DIR/prometheus-idle.yml" \
        --storage.tsdb.path "$RESULTS_DIR/data-idle" --web.listen-address "127.0.0.1:$PROM_PORT" \
        --enable-feature=native-histograms 2> "$RESULTS_DIR/prometheus-idle.log" &
    pp=$!; PIDS+=("$pp")
    log "[idle] Prometheus with nothing to scrape for $IDLE_DURATION s"
    sleep "$IDLE_DURATION"
    echo "run=idle duration_s=$IDLE_DURATION prometheus_vmrss_kb=$(status_kb "$pp" VmRSS) prometheus_vmhwm_kb=$(status_kb "$pp" VmHWM) prometheus_heap_inuse_kb=$(prometheus_heap_kb)" \
        | tee -a "$RESULTS_DIR/results.txt"
    stop_pid "$pp"
    sleep 2
}

run() {  # run NAME HISTOGRAM_MODE ACCEPT PROMETHEUS_FLAGS...
    local name=$1 mode=$2 accept=$3; shift 3
    local mp pp t0 c0 t1 c1 c2 t2 bytes i base_rate per_scrape
    log "[$name] starting meshprobe with $NADDR targets"
    ip netns exec "$NS_P" "$MESHPROBE_BIN" --config.file "$RESULTS_DIR/meshprobe-$mode.yml" \
        --web.listen-address "127.0.0.1:$PORT" 2> "$RESULTS_DIR/meshprobe-$name.log" &
    mp=$!; PIDS+=("$mp")
    for i in $(seq 100); do
        [[ $(in_ns curl -s "http://127.0.0.1:$PORT/metrics" | grep -c '^meshprobe_mesh_sent_total{') == "$NADDR" ]] && break
        sleep 0.5
    done
    sleep 3
    t0=$(date +%s.%N); c0=$(cpu_ticks "$mp"); sleep "$BASELINE"
    t1=$(date +%s.%N); c1=$(cpu_ticks "$mp")
    for i in $(seq "$SCRAPES"); do bytes=$(scrape_bytes "$accept"); done
    t2=$(date +%s.%N); c2=$(cpu_ticks "$mp")
    base_rate=$(awk -v c="$((c1 - c0))" -v t0="$t0" -v t1="$t1" 'BEGIN { print c / (t1 - t0) }')
    per_scrape=$(awk -v c="$((c2 - c1))" -v r="$base_rate" -v t1="$t1" -v t2="$t2" -v n="$SCRAPES" -v hz="$TICK" \
        'BEGIN { printf "%.1f", 1000 * (c - r * (t2 - t1)) / n / hz }')
    log "[$name] $bytes bytes per scrape, ${per_scrape} ms CPU per scrape (probing: $(awk -v r="$base_rate" -v hz="$TICK" 'BEGIN{printf "%.1f", 100*r/hz}') % CPU)"
    rm -rf "$RESULTS_DIR/data-$name"
    ip netns exec "$NS_P" "$PROMETHEUS_BIN" --config.file "$RESULTS_DIR/prometheus.yml" \
        --storage.tsdb.path "$RESULTS_DIR/data-$name" --web.listen-address "127.0.0.1:$PROM_PORT" \
        "$@" 2> "$RESULTS_DIR/prometheus-$name.log" &
    pp=$!; PIDS+=("$pp")
    log "[$name] Prometheus $* scraping every $SCRAPE_INTERVAL for $DURATION s"
    sleep "$DURATION"
    local tsdb series rss mp_cpu
    tsdb=$(in_ns curl -s "http://127.0.0.1:$PROM_PORT/api/v1/status/tsdb")
    series=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["headStats"]["numSeries"])' <<< "$tsdb")
    rss=$(status_kb "$pp" VmRSS)
    mp_cpu=$(cpu_ticks "$mp")
    echo "run=$name histogram=$mode prometheus_vmhwm_kb=$(status_kb "$pp" VmHWM) prometheus_heap_inuse_kb=$(prometheus_heap_kb) naddr=$NADDR duration_s=$DURATION bytes_per_scrape=$bytes cpu_ms_per_scrape=$per_scrape prometheus_head_series=$series series_per_target=$(awk -v s="$series" -v n="$NADDR" 'BEGIN{printf "%.2f", s/n}') prometheus_vmrss_kb=$rss meshprobe_vmrss_kb=$(status_kb "$mp" VmRSS) meshprobe_cpu_s=$(awk -v c="$mp_cpu" -v hz="$TICK" 'BEGIN{printf "%.1f", c/hz}')" \
        | tee -a "$RESULTS_DIR/results.txt"
    stop_pid "$pp"; stop_pid "$mp"
    sleep 2
}

{ meshprobe_meta; repo_meta; "$PROMETHEUS_BIN" --version 2>&1 | head -1; } > "$RESULTS_DIR/meta.txt"
for name in $RUNS; do
    case $name in
        idle) run_idle ;;
        classic) run classic both "$ACCEPT_TEXT" ;;
        native) run native native "$ACCEPT_PROTO" --enable-feature=native-histograms ;;
        both) run both both "$ACCEPT_PROTO" --enable-feature=native-histograms ;;
        *) die "unknown run $name in RUNS (idle classic native both)" ;;
    esac
done
log "results in $RESULTS_DIR/results.txt"
cat "$RESULTS_DIR/results.txt"
