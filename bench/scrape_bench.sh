#!/usr/bin/env bash
# scrape_bench.sh: what one /metrics scrape costs meshprobe with NADDR (100 000) mesh targets:
# CPU and peak RSS per scrape, text+gzip and protobuf+gzip (the two ways Prometheus scrapes), with
# per-peer series and with `inter_group_series: per_group`, for one or two binaries (e.g. before
# and after a change) on the same network in one run. Run as root.
#
#   sudo bench/scrape_bench.sh
#   sudo BINARIES="before:/tmp/meshprobe-old after:target/release/meshprobe" bench/scrape_bench.sh
#
# Network (namespaces this script creates and deletes; nothing is sent outside 198.18.0.0/15):
#
#   msb-prober-PID  [lo 127.0.0.1: /metrics]   msb-p 198.18.0.1/24 ── veth ──
#   msb-peer-PID    msb-q 198.18.0.2/24; AnyIP: `route add local R dev lo` for R in
#                   198.19.0.0/16, 198.18.128.0/17 and 198.18.64.0/18, so its kernel answers echo
#                   for every address in them without 100 000 addresses on an interface
#   prober routes:  the three ranges via 198.18.0.2 (one neighbour entry, as on a routed fabric)
#
# Targets: NADDR addresses (.1–.254 of each /24, 198.19.0.0/16 first), one peers-file entry each
# with labels peer, network and rack (racks of RACK_SIZE). The prober's own rack is r00000
# (`mesh.labels`), so with per_group its first RACK_SIZE targets keep per-peer series and every
# other rack is one series set.
#
# Per binary and series mode, meshprobe starts fresh (mesh.interval INTERVAL, 1 s timeout,
# histogram: both), waits until the log says all targets are loaded, warms up WARMUP s, measures
# its probing CPU over BASELINE s with no scrape, then makes SCRAPES scrapes per format with curl
# (Accept-Encoding: gzip, and Prometheus's Accept header: text, or protobuf as Prometheus asks
# with native histograms on). Per scrape: CPU = utime+stime delta minus the probing rate over the
# scrape's wall time; peak RSS = VmHWM after the scrape, the high-water mark having been reset
# just before it (`echo 5 > /proc/PID/clear_refs`), minus VmRSS before it; bytes on the wire and
# the wall time. INTERVAL defaults to 10 s (10 000 probes/s): the scrape's cost depends on the
# number of targets, not on the probe rate, and the engine of 2d01ddb could not probe 100 000
# targets per second (issue 17).
#
# Environment:
#   NADDR=100000 RACK_SIZE=40 INTERVAL=10s WARMUP=15 BASELINE=10 SCRAPES=3
#   SERIES="per_peer per_group"
#   BINARIES="after:<repo>/target/release/meshprobe"   (space-separated NAME:PATH pairs)
#   RESULTS_DIR=<repo>/bench-results/scrape-<timestamp>
# Only namespaces this script creates and processes it starts (by PID) are touched.
set -euo pipefail
echo "# command: $(printf '%q ' "$0" "$@")(NADDR=${NADDR:-100000} SERIES=${SERIES:-per_peer per_group} BINARIES=${BINARIES:-after})"

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_NAME=scrape_bench
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ ${EUID} -eq 0 ]] || die "must run as root (namespaces, veth, raw sockets, clear_refs)"
[[ $# -eq 0 ]] || die "no arguments; see the header of this file for the variables"

REPO="$(cd "$BENCH_DIR/.." && pwd)"
NADDR="${NADDR:-100000}"
RACK_SIZE="${RACK_SIZE:-40}"
INTERVAL="${INTERVAL:-10s}"
WARMUP="${WARMUP:-15}"
BASELINE="${BASELINE:-10}"
SCRAPES="${SCRAPES:-3}"
SERIES="${SERIES:-per_peer per_group}"
BINARIES="${BINARIES:-after:$REPO/target/release/meshprobe}"
PORT=19145
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results/scrape-$(date +%Y%m%dT%H%M%S)}"
NS_P="msb-prober-$$"; NS_Q="msb-peer-$$"; VETH_P=msb-p; VETH_Q=msb-q
for n in NADDR RACK_SIZE WARMUP BASELINE SCRAPES; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, got '${!n}'"
done
(( NADDR >= 1 && NADDR <= 113792 )) || die "NADDR must be 1..113792 (254 per /24 of the three ranges)"
(( RACK_SIZE >= 1 && SCRAPES >= 1 )) || die "RACK_SIZE and SCRAPES must be at least 1"
for s in $SERIES; do [[ $s == per_peer || $s == per_group ]] || die "SERIES: unknown '$s'"; done
for b in $BINARIES; do
    [[ $b == *:* && -x ${b#*:} ]] || die "BINARIES: '$b' is not NAME:PATH of an executable"
done
command -v curl >/dev/null || install_packages curl
mkdir -p "$RESULTS_DIR"
note_stale_namespaces msb-

RANGES="198.19.0.0/16 198.18.128.0/17 198.18.64.0/18"
for r in $RANGES; do echo "route add local $r dev lo"; done > "$RESULTS_DIR/anyip.batch"
make_peer_network "$RESULTS_DIR/anyip.batch" 198.19.0.0/16 "no-such-address" 0
ip -n "$NS_P" route add 198.18.128.0/17 via 198.18.0.2 dev "$VETH_P"
ip -n "$NS_P" route add 198.18.64.0/18 via 198.18.0.2 dev "$VETH_P"

python3 - "$NADDR" "$RACK_SIZE" > "$RESULTS_DIR/peers.json" <<'EOF'
import json, sys
n, rack = int(sys.argv[1]), int(sys.argv[2])
prefixes = [(198, 19, b) for b in range(256)] + [(198, 18, b) for b in range(128, 256)] \
    + [(198, 18, b) for b in range(64, 128)]
addresses = (f"{a}.{b}.{c}.{d}" for (a, b, c) in prefixes for d in range(1, 255))
entries = [{"targets": [next(addresses)],
            "labels": {"peer": f"p{i:06d}", "network": "bench", "rack": f"r{i // rack:05d}"}}
           for i in range(n)]
print(json.dumps(entries))
EOF
PEERS_BYTES=$(stat -c %s "$RESULTS_DIR/peers.json")

write_config() {  # write_config SERIES FILE
    cat > "$2" <<EOF
modules: {}
mesh:
  interval: $INTERVAL
  timeout: 1s
  histogram: both
  labels: {rack: r00000}
  group_by: rack
  inter_group_series: $1
  peers:
    files: ["$RESULTS_DIR/peers.json"]
    max_targets: $NADDR
    max_file_bytes: $(( PEERS_BYTES + 1024 ))
EOF
}

ACCEPT_TEXT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
ACCEPT_PROTO='application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
TICK=$(getconf CLK_TCK)
now() { date +%s.%N; }

scrape() {  # scrape PID FORMAT ACCEPT RATE -> one key=value line
    local pid=$1 format=$2 accept=$3 rate=$4 rss0 c0 t0 t1 c1 hwm out bytes series=""
    echo 5 > "/proc/$pid/clear_refs"   # VmHWM := VmRSS
    rss0=$(status_kb "$pid" VmRSS); c0=$(cpu_ticks "$pid"); t0=$(now)
    out="$RESULTS_DIR/last-$format.gz"
    bytes=$(ip netns exec "$NS_P" curl -sf -o "$out" -w '%{size_download}' -H "Accept: $accept" \
        -H 'Accept-Encoding: gzip' "http://127.0.0.1:$PORT/metrics") || die "scrape failed"
    t1=$(now); c1=$(cpu_ticks "$pid"); hwm=$(status_kb "$pid" VmHWM)
    [[ $format == text ]] && series=$(gzip -dc "$out" | grep -vc '^#' || true)
    gzip -t "$out" || die "$format scrape is not valid gzip"
    awk -v f="$format" -v c="$((c1 - c0))" -v r="$rate" -v t0="$t0" -v t1="$t1" -v hz="$TICK" \
        -v rss="$rss0" -v hwm="$hwm" -v b="$bytes" -v s="$series" 'BEGIN {
        printf "format=%s cpu_ms=%.0f wall_ms=%.0f rss_before_kb=%d peak_rise_kb=%d bytes=%d series=%s\n",
            f, 1000 * (c - r * (t1 - t0)) / hz, 1000 * (t1 - t0), rss, hwm - rss, b, s }'
}

run() {  # run NAME BIN SERIES
    local name=$1 bin=$2 series=$3 mp i t0 c0 t1 c1 rate cfg="$RESULTS_DIR/meshprobe-$3.yml"
    local logf="$RESULTS_DIR/meshprobe-$name-$series.log"
    write_config "$series" "$cfg"
    log "[$name $series] starting $bin with $NADDR targets"
    ip netns exec "$NS_P" "$bin" --config.file "$cfg" --web.listen-address "127.0.0.1:$PORT" \
        --log.level info 2> "$logf" &
    mp=$!; PIDS+=("$mp")
    for i in $(seq 600); do
        grep -q "targets=$NADDR" "$logf" && break
        kill -0 "$mp" 2>/dev/null || { cat "$logf" >&2; die "meshprobe exited"; }
        sleep 0.2
    done
    grep -q "targets=$NADDR" "$logf" || { tail "$logf" >&2; die "the target set never reached $NADDR"; }
    sleep "$WARMUP"
    local rss_idle hwm_idle
    rss_idle=$(status_kb "$mp" VmRSS); hwm_idle=$(status_kb "$mp" VmHWM)
    t0=$(now); c0=$(cpu_ticks "$mp"); sleep "$BASELINE"; t1=$(now); c1=$(cpu_ticks "$mp")
    rate=$(awk -v c="$((c1 - c0))" -v a="$t0" -v b="$t1" 'BEGIN { print c / (b - a) }')
    for i in $(seq "$SCRAPES"); do
        for f in text protobuf; do
            local accept=$ACCEPT_TEXT
            [[ $f == protobuf ]] && accept=$ACCEPT_PROTO
            echo "binary=$name series_mode=$series targets=$NADDR scrape=$i probing_cores=$(awk -v r="$rate" -v hz="$TICK" 'BEGIN { printf "%.3f", r / hz }') rss_idle_kb=$rss_idle hwm_before_scrapes_kb=$hwm_idle $(scrape "$mp" "$f" "$accept" "$rate")" \
                | tee -a "$RESULTS_DIR/results.txt"
        done
    done
    stop_pid "$mp"
    sleep 1
}

{ echo "date=$(date -Is)"; echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"; repo_meta
  for b in $BINARIES; do MESHPROBE_BIN=${b#*:}; echo "binary=${b%%:*}"; meshprobe_meta; done
} > "$RESULTS_DIR/meta.txt"
for s in $SERIES; do
    for b in $BINARIES; do run "${b%%:*}" "${b#*:}" "$s"; done
done

# Median per (binary, series mode, format).
python3 - "$RESULTS_DIR/results.txt" <<'EOF' | tee "$RESULTS_DIR/table.md"
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
keys = []
for r in rows:
    k = (r["series_mode"], r["format"], r["binary"])
    if k not in keys:
        keys.append(k)
print("| series | format | binary | series lines | gzip bytes | CPU ms/scrape | wall ms | peak RSS rise MiB | RSS before MiB | probing cores |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k in keys:
    g = [r for r in rows if (r["series_mode"], r["format"], r["binary"]) == k]
    med = lambda f: statistics.median(float(r[f]) for r in g)
    print(f"| {k[0]} | {k[1]} | {k[2]} | {g[0]['series'] or '–'} | {med('bytes'):,.0f} | {med('cpu_ms'):,.0f} | "
          f"{med('wall_ms'):,.0f} | {med('peak_rise_kb') / 1024:.1f} | {med('rss_before_kb') / 1024:.1f} | {g[0]['probing_cores']} |")
EOF
log "results in $RESULTS_DIR"
