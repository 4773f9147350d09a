//! Soak test: the real binary under a sustained open-loop load of more than 1000 `/probe`
//! requests per second against a mix of answering, silent, lossy and hostile fake-peer targets
//! (`support::fake_peer`), IPv4 and IPv6, on raw sockets. Owns the proof that under load every
//! response is for its own target, answering targets always succeed, silent ones always fail,
//! every hostile packet is counted under its reason exactly once, and the process does not grow:
//! resident memory, open file descriptors and live runtime tasks after the run are compared with
//! a sample taken after a warm-up period.
//!
//! The main phase lasts `MESHPROBE_SOAK_SECONDS` (default 15, so CI runs a short version) after a
//! 3-second warm-up. For a long run by hand, as root (the summary line shows the samples):
//!
//! ```sh
//! MESHPROBE_SOAK_SECONDS=1800 ./test.sh --test soak -- --nocapture
//! ```
//!
//! Tolerances, from a quiescent sample after warm-up to a quiescent sample after the run:
//! runtime tasks and open fds may differ by at most [`TASK_AND_FD_SLACK`] (a connection still
//! being torn down when `/metrics` is read); resident memory may grow by at most
//! [`RSS_SLACK_BYTES`], which covers the engine's bounded memory of finished probes (16384 per
//! socket, about 1.7 MB each, full after ~30 s at this rate) and allocator slack. Measured on a
//! debug build: +2.3 MiB after 15 s, +3.7 MiB after 60 s, fds and tasks unchanged. A leak of
//! 100 bytes per probe exceeds the tolerance within 90 seconds.

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::fake_peer::{self, Behaviour, ErrorKind, FakePeer, Reply};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Probes started per second (open loop); the completed rate must stay at or above 1000/s.
const RATE: f64 = 1100.0;
const MIN_COMPLETED_RATE: f64 = 1000.0;
const WARM_UP: Duration = Duration::from_secs(3);
const DEFAULT_SECONDS: u64 = 15;
const TASK_AND_FD_SLACK: f64 = 2.0;
const RSS_SLACK_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// Module timeout (in [`MODULES`]); short so silent targets do not pile up.
const TIMEOUT: Duration = Duration::from_millis(500);
/// When the real reply follows a bogus one.
const REAL_AFTER: Duration = Duration::from_millis(20);
/// When a late reply comes (after the 500 ms deadline).
const LATE_AFTER: Duration = Duration::from_millis(700);

const MODULES: &str = "modules:\n  icmp:\n    prober: icmp\n    timeout: 500ms\n";

/// What a target does; each class has addresses of both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Answer,
    Silent,
    Lossy,
    Forged,
    WrongSeq,
    Duplicate,
    CorruptPayload,
    BadChecksum,
    ForeignError,
    Late,
    IcmpError,
}

const CLASSES: [Class; 11] = [
    Class::Answer,
    Class::Silent,
    Class::Lossy,
    Class::Forged,
    Class::WrongSeq,
    Class::Duplicate,
    Class::CorruptPayload,
    Class::BadChecksum,
    Class::ForeignError,
    Class::Late,
    Class::IcmpError,
];

/// What a probe to a class must return.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Success with an RTT of at least this.
    Success(Duration),
    Timeout,
    IcmpError,
    /// Either success or timeout (loss); checked against the peer's drop count.
    SuccessOrTimeout,
}

impl Class {
    fn behaviour(self, target: IpAddr) -> Behaviour {
        let other = if target.is_ipv4() {
            fake_peer::v4(250)
        } else {
            fake_peer::v6(250)
        };
        let router = fake_peer::router_for(target);
        let unreachable = ErrorKind::Unreachable { code: 1 };
        let then_real = |bogus| Behaviour::bogus_then_echo(bogus, REAL_AFTER);
        match self {
            Class::Answer => {
                Behaviour::delayed(Duration::from_millis(1)).with_jitter(Duration::from_millis(4))
            }
            Class::Silent => Behaviour::silent(),
            Class::Lossy => Behaviour::delayed(Duration::from_millis(1)).dropping(0.3),
            Class::Forged => then_real(Reply::FromSource(other)),
            Class::WrongSeq => then_real(Reply::WrongSeq),
            Class::Duplicate => Behaviour::duplicate(Duration::from_millis(5)),
            Class::CorruptPayload => then_real(Reply::CorruptPayload),
            Class::BadChecksum => then_real(Reply::BadChecksum),
            Class::ForeignError => then_real(Reply::ForeignError {
                kind: unreachable,
                from: router,
            }),
            Class::Late => Behaviour::late(LATE_AFTER),
            Class::IcmpError => Behaviour::only(Reply::Error {
                kind: unreachable,
                from: router,
            }),
        }
    }

    fn expect(self) -> Expect {
        match self {
            Class::Answer => Expect::Success(Duration::from_millis(1)),
            Class::Duplicate => Expect::Success(Duration::ZERO),
            Class::Silent | Class::Late => Expect::Timeout,
            Class::Lossy => Expect::SuccessOrTimeout,
            Class::IcmpError => Expect::IcmpError,
            Class::Forged
            | Class::WrongSeq
            | Class::CorruptPayload
            | Class::BadChecksum
            | Class::ForeignError => Expect::Success(REAL_AFTER),
        }
    }

    /// The rejection each probe to this class must cause (the kernel drops ICMPv6 packets with a
    /// bad checksum before meshprobe sees them).
    fn rejection(self, target: IpAddr) -> Option<&'static str> {
        match self {
            Class::Forged | Class::WrongSeq => Some("unknown_probe"),
            Class::Duplicate => Some("duplicate"),
            Class::CorruptPayload => Some("payload_mismatch"),
            Class::BadChecksum if target.is_ipv4() => Some("bad_checksum"),
            Class::ForeignError => Some("unrelated"),
            Class::Late => Some("late"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    address: IpAddr,
    class: Class,
}

/// Per-target results as the client saw them.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    probes: u64,
    successes: u64,
    timeouts: u64,
    icmp_errors: u64,
}

#[derive(Default)]
struct Tally {
    seen: HashMap<IpAddr, Seen>,
    problems: u64,
    first_problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, message: String) {
        self.problems += 1;
        if self.first_problems.len() < 20 {
            self.first_problems.push(message);
        }
    }
}

fn targets() -> Vec<Target> {
    let mut targets = Vec::new();
    for (index, class) in CLASSES.iter().enumerate() {
        for copy in 0..2u8 {
            let host = 10 + 2 * index as u8 + copy;
            for address in [fake_peer::v4(host), fake_peer::v6(u16::from(host))] {
                targets.push(Target {
                    address,
                    class: *class,
                });
            }
        }
    }
    targets
}

async fn fetch(port: u16, path: &str) -> Result<HttpResponse, String> {
    let request = build_request("GET", path, &[]);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no response within 10 s".into()),
    }
}

/// Checks one `/probe` response against its target's class; returns what happened.
fn check(target: &Target, response: Result<HttpResponse, String>) -> Result<Seen, String> {
    let who = format!("{:?} {}", target.class, target.address);
    let response = response.map_err(|e| format!("{who}: {e}"))?;
    if response.status != 200 {
        return Err(format!("{who}: status {}", response.status));
    }
    let metrics = Metrics::parse(&response.body);
    let value = |series: &str| metrics.samples.get(series).copied();
    if value("probe_ip_addr_hash") != Some(fnv1a(target.address)) {
        return Err(format!(
            "{who}: answer for another target: {:?}",
            value("probe_ip_addr_hash")
        ));
    }
    let protocol = if target.address.is_ipv4() { 4.0 } else { 6.0 };
    if value("probe_ip_protocol") != Some(protocol) {
        return Err(format!("{who}: wrong protocol"));
    }
    let success = value("probe_success") == Some(1.0);
    let rtt = value("probe_icmp_duration_seconds{phase=\"rtt\"}");
    let timeout = value("probe_icmp_failure_reason{reason=\"timeout\"}") == Some(1.0);
    let icmp_error = value("probe_icmp_failure_reason{reason=\"icmp_error\"}") == Some(1.0);
    let duration = value("probe_duration_seconds").unwrap_or(f64::NAN);
    if !success && rtt.is_some() {
        return Err(format!("{who}: failed probe reports an RTT"));
    }
    let mut seen = Seen {
        probes: 1,
        ..Seen::default()
    };
    let outcome_ok = match target.class.expect() {
        Expect::Success(min_rtt) => {
            seen.successes = 1;
            success && rtt.is_some_and(|r| r >= min_rtt.as_secs_f64() && r < 0.5)
        }
        Expect::Timeout => {
            seen.timeouts = 1;
            // It waited for the whole module timeout, not less.
            !success && timeout && duration >= TIMEOUT.as_secs_f64()
        }
        Expect::IcmpError => {
            seen.icmp_errors = 1;
            let info = format!(
                "probe_icmp_error_info{{code=\"1\",from=\"{}\",type=\"destination_unreachable\"}}",
                fake_peer::router_for(target.address)
            );
            // It ended at once instead of waiting for the timeout.
            !success
                && icmp_error
                && value(&info) == Some(1.0)
                && duration < TIMEOUT.as_secs_f64() * 0.8
        }
        Expect::SuccessOrTimeout => {
            if success {
                seen.successes = 1;
                rtt.is_some_and(|r| r > 0.0 && r < 0.5)
            } else {
                seen.timeouts = 1;
                timeout
            }
        }
    };
    if outcome_ok {
        Ok(seen)
    } else {
        let summary: Vec<&str> = response
            .body
            .lines()
            .filter(|l| {
                ["probe_success", "probe_duration", "probe_icmp_"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        Err(format!(
            "{who}: expected {:?}, got {}",
            target.class.expect(),
            summary.join("; ")
        ))
    }
}

struct Phase {
    started: usize,
    elapsed: Duration,
}

/// Starts probes at `RATE` for `duration` (open loop), waits for all of them, and returns how many
/// were started and how long it took until the last response.
fn run_phase(
    namespace: &Namespace,
    port: u16,
    targets: &Arc<Vec<Target>>,
    duration: Duration,
    tally: &Arc<Mutex<Tally>>,
) -> Phase {
    let targets = Arc::clone(targets);
    let tally = Arc::clone(tally);
    namespace.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let start = Instant::now();
            let total = (RATE * duration.as_secs_f64()) as usize;
            let mut started = 0;
            while started < total {
                let due = ((start.elapsed().as_secs_f64() * RATE) as usize).min(total);
                while started < due {
                    let target = targets[started % targets.len()].clone();
                    let tally = Arc::clone(&tally);
                    tasks.spawn(async move {
                        let path = format!("/probe?module=icmp&target={}", target.address);
                        let result = check(&target, fetch(port, &path).await);
                        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                        match result {
                            Ok(seen) => {
                                let entry = tally.seen.entry(target.address).or_default();
                                entry.probes += seen.probes;
                                entry.successes += seen.successes;
                                entry.timeouts += seen.timeouts;
                                entry.icmp_errors += seen.icmp_errors;
                            }
                            Err(problem) => {
                                tally.seen.entry(target.address).or_default().probes += 1;
                                tally.problem(problem);
                            }
                        }
                    });
                    started += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            while let Some(joined) = tasks.join_next().await {
                joined.expect("probe task");
            }
            Phase {
                started,
                elapsed: start.elapsed(),
            }
        })
    })
}

/// Process samples compared for flatness.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: f64,
    fds: f64,
    tasks: f64,
}

/// Waits until nothing is in flight (client, exporter, fake peer), then samples the exporter.
fn quiescent_sample(exporter: &Exporter, peer: &FakePeer) -> (Sample, Metrics) {
    assert!(
        peer.wait_until_idle(Duration::from_secs(5)),
        "fake peer still has replies queued"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = exporter.metrics();
        // The /metrics request itself is not a probe.
        if metrics.value("meshprobe_probes_in_flight") == 0.0 || Instant::now() >= deadline {
            // Let the last replies (late, duplicate) reach the receiver and close connections.
            std::thread::sleep(Duration::from_millis(300));
            let metrics = exporter.metrics();
            let sample = Sample {
                rss: metrics.value("process_resident_memory_bytes"),
                fds: metrics.value("process_open_fds"),
                tasks: metrics.value("meshprobe_runtime_alive_tasks"),
            };
            return (sample, metrics);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn soak_mixed_targets_at_1000_probes_per_second() {
    require_namespaces!();
    raise_open_file_limit();
    let seconds = std::env::var("MESHPROBE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let namespace = Namespace::new("soak");
    let peer = FakePeer::start(&namespace);
    let targets = Arc::new(targets());
    for target in targets.iter() {
        peer.set(target.address, target.class.behaviour(target.address));
    }
    let config = write_config("soak.yml", MODULES);
    let exporter = Exporter::start(&namespace, &["--config.file", path_str(&config)]);
    let tally = Arc::new(Mutex::new(Tally::default()));

    let warm_up = run_phase(&namespace, exporter.port, &targets, WARM_UP, &tally);
    let (warm, _) = quiescent_sample(&exporter, &peer);
    let main = run_phase(
        &namespace,
        exporter.port,
        &targets,
        Duration::from_secs(seconds),
        &tally,
    );
    let (end, metrics) = quiescent_sample(&exporter, &peer);
    let rate = main.started as f64 / main.elapsed.as_secs_f64();
    println!(
        "soak: {} probes in {:.1} s ({rate:.0}/s completed) after {} warm-up probes; \
         warm {warm:?}, end {end:?}",
        main.started,
        main.elapsed.as_secs_f64(),
        warm_up.started
    );

    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(
        tally.problems,
        0,
        "{} wrong responses, first ones:\n{}",
        tally.problems,
        tally.first_problems.join("\n")
    );
    assert!(
        rate >= MIN_COMPLETED_RATE,
        "only {rate:.0} probes/s completed"
    );
    let total = (warm_up.started + main.started) as u64;
    assert_eq!(tally.seen.values().map(|s| s.probes).sum::<u64>(), total);

    // The fake peer saw exactly one request per probe; lossy targets failed exactly when dropped.
    let mut expected_rejections: HashMap<&str, u64> = HashMap::new();
    let mut successes = 0;
    for target in targets.iter() {
        let seen = tally.seen.get(&target.address).copied().unwrap_or_default();
        let counts = peer.counts(target.address);
        assert_eq!(counts.requests, seen.probes, "{target:?}");
        if target.class == Class::Lossy {
            assert_eq!(counts.dropped, seen.timeouts, "{target:?}");
            assert!(
                seen.successes > 0 && seen.timeouts > 0,
                "{target:?}: {seen:?}"
            );
        }
        if let Some(reason) = target.class.rejection(target.address) {
            *expected_rejections.entry(reason).or_default() += seen.probes;
        }
        successes += seen.successes;
    }
    assert_eq!(peer.malformed_requests(), 0);
    assert_eq!(peer.write_errors(), 0);

    // The engine's counters agree with the client, reason by reason.
    let sent = metrics.value("meshprobe_packets_sent_total{ip_protocol=\"ip4\"}")
        + metrics.value("meshprobe_packets_sent_total{ip_protocol=\"ip6\"}");
    assert_eq!(sent, total as f64);
    assert_eq!(
        metrics.value("meshprobe_replies_matched_total"),
        successes as f64
    );
    for reason in support::hostile::REASONS {
        let expected = expected_rejections.get(reason).copied().unwrap_or(0);
        assert_eq!(
            metrics.value(&format!(
                "meshprobe_replies_rejected_total{{reason=\"{reason}\"}}"
            )),
            expected as f64,
            "rejected{{reason={reason}}}"
        );
    }
    let icmp_error_probes: u64 = targets
        .iter()
        .filter(|t| t.class == Class::IcmpError)
        .map(|t| tally.seen.get(&t.address).map_or(0, |s| s.icmp_errors))
        .sum();
    assert_eq!(
        metrics.value("meshprobe_icmp_errors_received_total{type=\"destination_unreachable\"}"),
        icmp_error_probes as f64
    );

    // Flat: nothing grew beyond the stated tolerances since the warm-up sample.
    assert!(
        end.tasks <= warm.tasks + TASK_AND_FD_SLACK,
        "runtime tasks grew from {} to {}",
        warm.tasks,
        end.tasks
    );
    assert!(
        end.fds <= warm.fds + TASK_AND_FD_SLACK,
        "open fds grew from {} to {}",
        warm.fds,
        end.fds
    );
    assert!(
        end.rss <= warm.rss + RSS_SLACK_BYTES,
        "resident memory grew from {} to {} bytes",
        warm.rss,
        end.rss
    );
}
