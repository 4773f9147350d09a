//! Issue 13, finding 1: connection limits and timeouts. Silent and slowloris connections are
//! closed at `--web.read-header-timeout`, idle kept-alive ones at `--web.idle-timeout`; under a
//! 1 024-descriptor limit one client holding 1 100 idle connections no longer takes
//! `/-/healthy` and `/probe` off the air nor floods the log with accept errors; with TLS, a
//! stalled handshake and a connection idle after its handshake are closed too. Every test
//! reports the exporter's RSS, threads and descriptors under the attack.
//!
//! Attack connections come from other 127.x source addresses than the health checks, all on
//! the loopback of a namespace the test created.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::attack::{ProcStats, closed_by_server, hold_connections, watch};
use support::web::{TempDir, WebExporter, generate_pki};
use support::*;

const PARTIAL_HEAD: &[u8] = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n";
const FULL_REQUEST: &[u8] = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn silent_slow_and_idle_connections_are_closed_at_their_timeouts() {
    require_namespaces!();
    raise_open_file_limit();
    let namespace = Namespace::new("hl");
    let exporter = Exporter::start(
        &namespace,
        &["--web.read-header-timeout=1s", "--web.idle-timeout=4s"],
    );
    let pid = exporter.child.id();
    let idle = ProcStats::read(pid);
    let started = Instant::now();
    let mut silent = hold_connections(&namespace.name, exporter.port, "127.0.0.2", 300, b"");
    let mut slow = hold_connections(
        &namespace.name,
        exporter.port,
        "127.0.0.3",
        100,
        PARTIAL_HEAD,
    );
    let mut kept = hold_connections(
        &namespace.name,
        exporter.port,
        "127.0.0.4",
        200,
        FULL_REQUEST,
    );
    assert_eq!((silent.len(), slow.len(), kept.len()), (300, 100, 200));
    let held = ProcStats::read(pid);
    let seen = watch(
        &exporter,
        &["/-/healthy"],
        Duration::from_millis(2500).saturating_sub(started.elapsed()),
        Duration::from_millis(100),
    );
    let silent_closed = closed_by_server(&mut silent);
    let slow_closed = closed_by_server(&mut slow);
    let kept_closed_early = closed_by_server(&mut kept);
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(started.elapsed()));
    let kept_closed = closed_by_server(&mut kept);
    std::thread::sleep(Duration::from_millis(300));
    let after = ProcStats::read(pid);
    let metrics = exporter.metrics();
    eprintln!(
        "figures: idle {idle:?}; holding 600 connections {held:?}; worst /-/healthy {:?}; \
         after the timeouts {after:?}; closed: silent {silent_closed}/300, slowloris \
         {slow_closed}/100, kept-alive {kept_closed_early}/200 at 2.5 s and {kept_closed}/200 at 5.5 s",
        seen.worst
    );
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert_eq!(
        silent_closed, 300,
        "silent connections outlive the header timeout"
    );
    assert_eq!(
        slow_closed, 100,
        "slowloris connections outlive the header timeout"
    );
    assert_eq!(
        kept_closed_early, 0,
        "kept-alive connections closed before the idle timeout"
    );
    assert_eq!(
        kept_closed, 200,
        "kept-alive connections outlive the idle timeout"
    );
    assert!(after.fds < idle.fds + 10, "descriptors left: {after:?}");
    assert_eq!(
        metrics.value("meshprobe_http_connections_closed_total{reason=\"header_timeout\"}"),
        400.0
    );
    assert_eq!(
        metrics.value("meshprobe_http_connections_closed_total{reason=\"idle_timeout\"}"),
        200.0
    );
}

/// The measurement: a 1 024-descriptor limit and one client holding 1 100 idle
/// connections. The limit (1 024 − 64 reserved = 960) is reached; each new connection then
/// closes the one idle the longest, so health checks and probes keep being served.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn an_idle_flood_under_a_descriptor_limit_leaves_health_and_probes_served() {
    require_namespaces!();
    raise_open_file_limit();
    let namespace = Namespace::new("hl");
    let exporter = Exporter::start_program(
        &namespace,
        "prlimit",
        &["--nofile=1024:1024", binary()],
        9115,
    );
    let pid = exporter.child.id();
    let idle = ProcStats::read(pid);
    let mut flood = hold_connections(&namespace.name, exporter.port, "127.0.0.2", 1100, b"");
    let held = ProcStats::read(pid);
    let seen = watch(
        &exporter,
        &["/-/healthy", "/probe?module=icmp&target=127.0.0.1"],
        Duration::from_secs(3),
        Duration::from_millis(100),
    );
    let flood_closed = closed_by_server(&mut flood);
    let metrics = exporter.metrics();
    let log = exporter.log();
    let accept_lines = log.matches("accept failed").count();
    eprintln!(
        "figures: idle {idle:?}; flood of {} connections: {held:?}, peak {:?}; worst \
         /-/healthy or /probe {:?} over {} requests ({} failed); {flood_closed} flood connections \
         closed; {accept_lines} accept-error log lines",
        flood.len(),
        seen.peak,
        seen.worst,
        seen.samples,
        seen.failures.len()
    );
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert!(seen.worst < Duration::from_secs(1), "{:?}", seen.worst);
    assert!(seen.peak.fds <= 1024, "{:?}", seen.peak);
    assert!(accept_lines <= 1, "{log}");
    assert_eq!(metrics.value("meshprobe_http_connections_limit"), 960.0);
    assert!(metrics.value("meshprobe_http_connections_open") <= 960.0);
    assert!(metrics.value("meshprobe_http_connections_closed_total{reason=\"evicted\"}") >= 140.0);
}

/// The listening socket's backlog, as `ss` reports it (Send-Q of a listener): 128 with std's
/// listener, 4096 (the namespace's `net.core.somaxconn`) now.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn the_listen_backlog_is_sized_for_bursts() {
    require_namespaces!();
    let namespace = Namespace::new("hl");
    let exporter = Exporter::start(&namespace, &[]);
    let listing = namespace.exec("ss", &["-ltnH", &format!("sport = :{}", exporter.port)]);
    let backlog: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    eprintln!("figures: listen backlog {backlog:?}");
    assert_eq!(backlog, ["4096"], "{listing}");
}

/// Runs `openssl s_client` against the TLS port with stdin open, writing `input` first; returns
/// how long it ran before the server closed the connection (at most 8 s).
fn s_client_lifetime(namespace: &Namespace, port: u16, ca: &str, input: &[u8]) -> Duration {
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &namespace.name, "timeout", "8", "openssl"])
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-CAfile", ca])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(input);
    let _ = child.wait();
    drop(stdin);
    started.elapsed()
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn tls_handshakes_and_idle_tls_connections_are_bounded() {
    require_namespaces!();
    let namespace = Namespace::new("hl");
    let dir = TempDir::new("tls-limits");
    generate_pki(&dir);
    let web = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    );
    let exporter = WebExporter::start(
        &namespace,
        &[
            "--web.config.file",
            path_str(&web),
            "--web.read-header-timeout=1s",
            "--web.idle-timeout=2s",
        ],
        9443,
    );
    let ca = dir.file("ca.crt");
    // A handshake record's first byte, then nothing: the handshake must end by the deadline.
    let started = Instant::now();
    let mut stalled = hold_connections(&namespace.name, 9443, "127.0.0.2", 20, &[0x16]);
    std::thread::sleep(Duration::from_millis(1800).saturating_sub(started.elapsed()));
    let stalled_closed = closed_by_server(&mut stalled);
    // A finished handshake and no request: the first request's header deadline applies.
    let no_request = s_client_lifetime(&namespace, 9443, &ca, b"");
    // One request, then idle: the idle timeout applies.
    let after_request = s_client_lifetime(&namespace, 9443, &ca, FULL_REQUEST);
    eprintln!(
        "figures: stalled handshakes closed {stalled_closed}/20 by 1.8 s; TLS without a request \
         closed after {no_request:?}; TLS idle after a request closed after {after_request:?}"
    );
    assert_eq!(stalled_closed, 20, "{}", exporter.log());
    assert!(
        no_request < Duration::from_millis(2500),
        "idle TLS connection lived {no_request:?}"
    );
    assert!(
        after_request > Duration::from_millis(1900) && after_request < Duration::from_millis(3500),
        "kept-alive TLS connection lived {after_request:?}"
    );
}
