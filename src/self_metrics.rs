//! The exporter's own `/metrics`: config reload state, unknown modules, probe counts, engine
//! packet counters, build info and process metrics.
//!
//! Owns the names and help strings of meshprobe's own families (blackbox's exporter metrics
//! under a `meshprobe_` prefix) and reading `/proc/self` for `process_*`. Values come from
//! [`ExporterCounters`](crate::app::ExporterCounters), the config store and the engine's [`crate::icmp::stats::EngineStats`].

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use crate::app::AppState;
use crate::expo::{self, MetricType};
use crate::icmp::Family;
use crate::icmp::stats::{ICMP_ERROR_KINDS, RejectReason};
use crate::sys;

/// A chunk's buffer: the mesh hands chunks on once they reach 64 KiB, after at most one more
/// line (or histogram) is written.
const CHUNK_CAPACITY: usize = 72 * 1024;

/// Renders `/metrics` as text, handing it to `sink` in chunks of about 64 KiB (the last one
/// smaller), so a large mesh is never held in memory as text. Stops as soon as `sink` answers
/// `Break` (the client went away).
pub fn render_text(
    state: &AppState,
    sink: &mut dyn FnMut(&mut String) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut out = String::with_capacity(CHUNK_CAPACITY);
    render_own(state, &mut out);
    state.mesh.render(&mut out, sink)?;
    render_process(&mut out);
    sink(&mut out)
}

/// Renders `/metrics` in the protobuf exposition, handing it to `sink` in chunks as
/// [`render_text`] does. The exporter's own and the process families are the text rendering
/// converted (so both formats carry the same samples); the mesh encodes its own, with the
/// native RTT histogram.
pub fn render_protobuf(
    state: &AppState,
    sink: &mut dyn FnMut(&mut Vec<u8>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut out = Vec::with_capacity(CHUNK_CAPACITY);
    let mut text = String::with_capacity(4096);
    render_own(state, &mut text);
    for family in crate::proto::from_text::families(&text) {
        crate::proto::write_family(&mut out, &family);
    }
    state.mesh.render_protobuf(&mut out, sink)?;
    text.clear();
    render_process(&mut text);
    for family in crate::proto::from_text::families(&text) {
        crate::proto::write_family(&mut out, &family);
    }
    sink(&mut out)
}

/// The exporter's own families (everything before the mesh's).
fn render_own(state: &AppState, out: &mut String) {
    let counters = &state.counters;
    let engine = state.pinger.stats();
    expo::family(
        out,
        "meshprobe_build_info",
        "A metric with a constant '1' value labeled by version and the Rust target from which meshprobe was built.",
        MetricType::Gauge,
    );
    expo::sample(
        out,
        "meshprobe_build_info",
        &[
            ("arch", std::env::consts::ARCH),
            ("os", std::env::consts::OS),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    expo::single(
        out,
        "meshprobe_config_last_reload_success_timestamp_seconds",
        "Timestamp of the last successful configuration reload.",
        MetricType::Gauge,
        state.config.last_success_timestamp(),
    );
    expo::single(
        out,
        "meshprobe_config_last_reload_successful",
        "meshprobe config loaded successfully.",
        MetricType::Gauge,
        if state.config.last_reload_successful() {
            1.0
        } else {
            0.0
        },
    );
    expo::family(
        out,
        "meshprobe_icmp_errors_received_total",
        "ICMP errors that answered one of our probes, by type.",
        MetricType::Counter,
    );
    for kind in ICMP_ERROR_KINDS {
        expo::sample(
            out,
            "meshprobe_icmp_errors_received_total",
            &[("type", kind.as_str())],
            engine.icmp_errors(kind) as f64,
        );
    }
    expo::single(
        out,
        "meshprobe_module_unknown_total",
        "Count of unknown modules requested by probes",
        MetricType::Counter,
        counters.module_unknown.load(Ordering::Relaxed) as f64,
    );
    expo::family(
        out,
        "meshprobe_packets_received_total",
        "ICMP packets received on the shared sockets, before matching.",
        MetricType::Counter,
    );
    for (family, label) in [(Family::V4, "ip4"), (Family::V6, "ip6")] {
        expo::sample(
            out,
            "meshprobe_packets_received_total",
            &[("ip_protocol", label)],
            engine.received(family) as f64,
        );
    }
    expo::family(
        out,
        "meshprobe_packets_sent_total",
        "ICMP echo requests sent.",
        MetricType::Counter,
    );
    for (family, label) in [(Family::V4, "ip4"), (Family::V6, "ip6")] {
        expo::sample(
            out,
            "meshprobe_packets_sent_total",
            &[("ip_protocol", label)],
            engine.sent(family) as f64,
        );
    }
    expo::single(
        out,
        "meshprobe_probe_concurrency_limit",
        "The --probe.max-concurrency limit; probes beyond it get 503.",
        MetricType::Gauge,
        state.max_concurrent_probes as f64,
    );
    expo::single(
        out,
        "meshprobe_probes_in_flight",
        "Probes currently waiting for an answer.",
        MetricType::Gauge,
        counters.probes_in_flight.load(Ordering::Relaxed) as f64,
    );
    expo::family(
        out,
        "meshprobe_probes_total",
        "Probes run through /probe, by result.",
        MetricType::Counter,
    );
    expo::sample(
        out,
        "meshprobe_probes_total",
        &[("result", "failure")],
        counters.probes_failed.load(Ordering::Relaxed) as f64,
    );
    expo::sample(
        out,
        "meshprobe_probes_total",
        &[("result", "success")],
        counters.probes_succeeded.load(Ordering::Relaxed) as f64,
    );
    expo::family(
        out,
        "meshprobe_probes_refused_total",
        "Probe requests refused before any packet was sent: overload (503) or a target outside allowed_targets (403).",
        MetricType::Counter,
    );
    for (reason, counter) in [
        ("not_allowed", &counters.refused_not_allowed),
        ("overload", &counters.refused_overload),
    ] {
        expo::sample(
            out,
            "meshprobe_probes_refused_total",
            &[("reason", reason)],
            counter.load(Ordering::Relaxed) as f64,
        );
    }
    expo::single(
        out,
        "meshprobe_echo_busy_total",
        "Echo requests (from /probe or the mesh) not sent because every sequence number tried for their destination already had a probe waiting.",
        MetricType::Counter,
        engine.busy() as f64,
    );
    expo::single(
        out,
        "meshprobe_icmp_error_hints_total",
        "ICMP errors that quoted a waiting probe too briefly to carry its nonce; such an error fails the probe only if no reply arrives by its deadline.",
        MetricType::Counter,
        engine.error_hints() as f64,
    );
    expo::single(
        out,
        "meshprobe_replies_matched_total",
        "Echo replies accepted as the answer to a waiting probe.",
        MetricType::Counter,
        engine.matched() as f64,
    );
    expo::family(
        out,
        "meshprobe_replies_rejected_total",
        "Received ICMP packets not accepted as the answer to any probe, by reason.",
        MetricType::Counter,
    );
    for reason in RejectReason::ALL {
        expo::sample(
            out,
            "meshprobe_replies_rejected_total",
            &[("reason", reason.as_str())],
            engine.rejected(reason) as f64,
        );
    }
    expo::family(
        out,
        "meshprobe_socket_errors_total",
        "ICMP socket errors, by operation.",
        MetricType::Counter,
    );
    expo::sample(
        out,
        "meshprobe_socket_errors_total",
        &[("operation", "open")],
        engine.socket_open_errors() as f64,
    );
    expo::sample(
        out,
        "meshprobe_socket_errors_total",
        &[("operation", "receive")],
        engine.receive_errors() as f64,
    );
    expo::sample(
        out,
        "meshprobe_socket_errors_total",
        &[("operation", "send")],
        engine.send_errors() as f64,
    );
    expo::single(
        out,
        "meshprobe_socket_receive_drops_total",
        "Datagrams the kernel dropped on meshprobe's receiving ICMP sockets before they were read, mostly for a full receive buffer (SO_RXQ_OVFL). A probe whose reply was dropped here counts as lost although the network delivered it.",
        MetricType::Counter,
        engine.receive_drops() as f64,
    );
    expo::family(
        out,
        "meshprobe_sockets_open",
        "Shared ICMP sockets open, by address family and kind (dgram = unprivileged ping socket).",
        MetricType::Gauge,
    );
    for (family, label) in [(Family::V4, "ip4"), (Family::V6, "ip6")] {
        let (dgram, raw) = engine.sockets_open(family);
        expo::sample(
            out,
            "meshprobe_sockets_open",
            &[("ip_protocol", label), ("kind", "dgram")],
            dgram as f64,
        );
        expo::sample(
            out,
            "meshprobe_sockets_open",
            &[("ip_protocol", label), ("kind", "raw")],
            raw as f64,
        );
    }
    let runtime = tokio::runtime::Handle::current().metrics();
    expo::single(
        out,
        "meshprobe_runtime_alive_tasks",
        "Tasks alive in the async runtime (connections, probes, socket receivers).",
        MetricType::Gauge,
        runtime.num_alive_tasks() as f64,
    );
    crate::lookup::render(out);
    crate::web::limits::render(out);
    crate::mesh::peers::render(out);
}

/// `process_*` metrics as client_golang's process collector exports them.
fn render_process(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(after_comm) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return;
    };
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    let (Some(ticks), Some(page)) = (sys::clock_ticks_per_second(), sys::page_size()) else {
        return;
    };
    let (ticks, page) = (ticks as f64, page as f64);
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        expo::single(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            MetricType::Counter,
            (utime + stime) / ticks,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        expo::single(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            MetricType::Gauge,
            entries.count() as f64,
        );
    }
    if let Some(rss_pages) = field(21) {
        expo::single(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            MetricType::Gauge,
            rss_pages * page,
        );
    }
    if let (Some(start_ticks), Some(boot)) = (field(19), boot_time()) {
        expo::single(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            MetricType::Gauge,
            boot + start_ticks / ticks,
        );
    }
    if let Some(vsize) = field(20) {
        expo::single(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            MetricType::Gauge,
            vsize,
        );
    }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}
