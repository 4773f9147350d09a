#!/usr/bin/env bash
# burst_bench.sh: multi-packet /probe (icmp.packets: 5) beside one packet (packets: 1), same
# binary, same network, one run. Run as root.
#
#   bench/burst_bench.sh                  # DURATION=10 per module, C=64 connections
#   DURATION=30 C=256 bench/burst_bench.sh
#
# Network (namespaces this script creates and deletes; nothing outside 198.18.0.0/15): the
# prober namespace mbb-prober-PID (198.18.0.1, meshprobe and wrk on its loopback) and the peer
# mbb-peer-PID (198.18.0.2, which answers 198.18.4.0/22 through AnyIP; one neighbour entry).
# For each module: a fresh meshprobe, wrk for DURATION seconds against
# /probe?target=198.18.4.N&module=M (1000 targets cycled by bench/probe.lua, which counts failed
# probes in its MPB_RESULT line), probes/s from wrk, CPU
# from /proc/PID/stat. Reported: probes/s, packets/s (probes x packets), CPU µs per probe and per
# packet; the issue's target is CPU per packet at packets: 5 <= at packets: 1.
#
# Environment: DURATION=10 C=64 THREADS=2 MESHPROBE_BIN=<repo>/target/release/meshprobe
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_NAME=burst_bench
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ ${EUID} -eq 0 ]] || die "must run as root (namespaces, veth, raw sockets)"

REPO="$(cd "$BENCH_DIR/.." && pwd)"
DURATION="${DURATION:-10}"
C="${C:-64}"
THREADS="${THREADS:-2}"
MESHPROBE_BIN="${MESHPROBE_BIN:-$REPO/target/release/meshprobe}"
RESULTS_DIR="${RESULTS_DIR:-$REPO/bench-results/burst-$(date +%Y%m%dT%H%M%S)}"
NS_P="mbb-prober-$$"
NS_Q="mbb-peer-$$"
VETH_P="mbb-p"
VETH_Q="mbb-q"
PORT=19117
for n in DURATION C THREADS; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer, got '${!n}'"
done
command -v wrk >/dev/null || install_packages wrk
build_meshprobe_if_missing
mkdir -p "$RESULTS_DIR"
CLK_TCK=$(getconf CLK_TCK)

echo "route add local 198.18.4.0/22 dev lo" > "$RESULTS_DIR/peer.batch"
make_peer_network "$RESULTS_DIR/peer.batch" 198.18.4.0/22 "198.18.0.2/" 1
TARGETS="$RESULTS_DIR/targets.txt"
for host in $(seq 1 1000); do echo "198.18.$((4 + host / 256)).$((host % 256))"; done > "$TARGETS"

cat > "$RESULTS_DIR/meshprobe.yml" <<'YAML'
modules:
  one:
    prober: icmp
    timeout: 2s
    icmp: {preferred_ip_protocol: ip4}
  five:
    prober: icmp
    timeout: 2s
    icmp: {preferred_ip_protocol: ip4, packets: 5, packet_interval: 1ms}
YAML

{
    meshprobe_meta
    repo_meta
    echo "duration=$DURATION connections=$C threads=$THREADS nproc=$(nproc)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$RESULTS_DIR/meta.txt"

printf '| module | packets | probes/s | packets/s | CPU µs/probe | CPU µs/packet |\n' > "$RESULTS_DIR/table.md"
printf '| --- | --- | --- | --- | --- | --- |\n' >> "$RESULTS_DIR/table.md"
for module in one five; do
    packets=1
    [[ $module == five ]] && packets=5
    ip netns exec "$NS_P" "$MESHPROBE_BIN" --config.file "$RESULTS_DIR/meshprobe.yml" \
        --web.listen-address "127.0.0.1:$PORT" --log.level warn > "$RESULTS_DIR/$module.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 50); do
        ip netns exec "$NS_P" curl -fs "http://127.0.0.1:$PORT/-/healthy" >/dev/null && break
        sleep 0.1
    done
    run=(ip netns exec "$NS_P" env MPB_TARGETS="$TARGETS" MPB_MODULE="$module" wrk -t "$THREADS"
        -c "$C" -s "$BENCH_DIR/probe.lua" "http://127.0.0.1:$PORT")
    "${run[@]}" -d 2 > /dev/null   # warm-up
    before=$(cpu_ticks "$pid")
    "${run[@]}" -d "$DURATION" > "$RESULTS_DIR/$module.wrk"
    after=$(cpu_ticks "$pid")
    stop_pid "$pid"
    rps=$(awk '/Requests\/sec/ {print $2}' "$RESULTS_DIR/$module.wrk")
    grep -o 'lua_failed=[0-9]*' "$RESULTS_DIR/$module.wrk" | sed "s/^/$module: /" >&2
    awk -v m="$module" -v p="$packets" -v rps="$rps" -v ticks=$((after - before)) -v hz="$CLK_TCK" \
        -v d="$DURATION" 'BEGIN {
            cpu = ticks / hz; probes = rps * d
            printf "| %s | %d | %.0f | %.0f | %.1f | %.1f |\n", m, p, rps, rps * p,
                1e6 * cpu / probes, 1e6 * cpu / (probes * p)
        }' >> "$RESULTS_DIR/table.md"
done
cat "$RESULTS_DIR/table.md"
log "results in $RESULTS_DIR"
