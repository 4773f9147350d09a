//! Fault survival with the real binary: 100 % loss, the peer's namespace deleted mid-run, the
//! prober's interface down and up, the route removed, and the bound source address removed.
//! Each fault gives the right probe result, and the same exporter process recovers by itself
//! once the fault is undone.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::*;

const CONFIG: &str = r#"
modules:
  icmp:
    prober: icmp
    timeout: 1s
  from_second:
    prober: icmp
    timeout: 1s
    icmp:
      preferred_ip_protocol: ip4
      source_ip_address: 198.18.0.2
"#;

/// (probe_success, failure reason or "") of one probe.
fn probe(exporter: &Exporter, target: &str, module: &str) -> (bool, String) {
    let response = exporter.get(&format!("/probe?module={module}&target={target}"));
    assert_eq!(response.status, 200, "{}", response.body);
    let metrics = Metrics::parse(&response.body);
    let reason = metrics
        .samples
        .keys()
        .find_map(|series| series.strip_prefix("probe_icmp_failure_reason{reason=\""))
        .map(|rest| rest.trim_end_matches("\"}").to_string())
        .unwrap_or_default();
    (metrics.value("probe_success") == 1.0, reason)
}

fn assert_recovers(exporter: &Exporter, target: &str, module: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (success, reason) = probe(exporter, target, module);
        if success {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{target} did not recover: last reason {reason}\n{}",
            exporter.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn start(net: &TestNet) -> Exporter {
    let config = write_config("faults.yml", CONFIG);
    Exporter::start(&net.prober, &["--config.file", path_str(&config)])
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn total_loss_times_out_and_recovers() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    assert!(probe(&exporter, TARGET_V4, "icmp").0);
    net.target.exec("nft", &["add table inet loss; add chain inet loss input { type filter hook input priority 0; }; add rule inet loss input icmp type echo-request drop; add rule inet loss input icmpv6 type echo-request drop"]);
    for target in [TARGET_V4, TARGET_V6] {
        assert_eq!(
            probe(&exporter, target, "icmp"),
            (false, "timeout".to_string())
        );
    }
    net.target.exec("nft", &["delete table inet loss"]);
    assert_recovers(&exporter, TARGET_V4, "icmp");
    assert_recovers(&exporter, TARGET_V6, "icmp");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn peer_namespace_deleted_mid_run_then_rebuilt() {
    require_namespaces!();
    let mut net = TestNet::new();
    let exporter = Arc::new(start(&net));
    // Keep probing from another thread across the whole fault; every answer must be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (exporter, stop) = (Arc::clone(&exporter), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut probes = 0;
            while !stop.load(Ordering::Relaxed) {
                probe(&exporter, TARGET_V4, "icmp");
                probes += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            probes
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    ip(&["netns", "del", &net.target.name]);
    // The kernel tears a namespace down asynchronously; wait until the router's end is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::process::Command::new("ip")
        .args(["-n", &net.router.name, "link", "show", "r1"])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "veth r1 never went away"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The router lost its route to the target network: it answers with net unreachable.
    for target in [TARGET_V4, TARGET_V6] {
        let (success, reason) = probe(&exporter, target, "icmp");
        assert!(!success);
        assert_eq!(reason, "icmp_error", "{target}");
    }
    net.rebuild_target();
    assert_recovers(&exporter, TARGET_V4, "icmp");
    assert_recovers(&exporter, TARGET_V6, "icmp");
    stop.store(true, Ordering::Relaxed);
    let probes = background.join().expect("background prober");
    assert!(probes > 3, "background prober ran {probes} probes");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn prober_interface_down_and_up() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    assert!(probe(&exporter, TARGET_V4, "icmp").0);
    net.prober.exec("ip", &["link", "set", "p0", "down"]);
    for target in [TARGET_V4, TARGET_V6] {
        let (success, reason) = probe(&exporter, target, "icmp");
        assert!(!success);
        assert_eq!(reason, "send", "{target}: no route while the link is down");
    }
    net.prober.exec("ip", &["link", "set", "p0", "up"]);
    net.restore_prober_addresses();
    assert_recovers(&exporter, TARGET_V4, "icmp");
    assert_recovers(&exporter, TARGET_V6, "icmp");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn route_removed_and_restored() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    assert!(probe(&exporter, TARGET_V6, "icmp").0);
    net.prober.exec("ip", &["route", "del", "default"]);
    net.prober.exec("ip", &["-6", "route", "del", "default"]);
    for target in [TARGET_V4, TARGET_V6] {
        let (success, reason) = probe(&exporter, target, "icmp");
        assert!(!success);
        assert_eq!(reason, "send", "{target}");
        let debug = exporter.get(&format!("/probe?module=icmp&target={target}&debug=true"));
        assert!(debug.body.contains("unreachable"), "{}", debug.body);
    }
    net.restore_prober_addresses();
    assert_recovers(&exporter, TARGET_V4, "icmp");
    assert_recovers(&exporter, TARGET_V6, "icmp");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bound_source_address_removed_and_restored() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    assert!(probe(&exporter, TARGET_V4, "from_second").0);
    net.prober
        .exec("ip", &["addr", "del", "198.18.0.2/24", "dev", "p0"]);
    let (success, reason) = probe(&exporter, TARGET_V4, "from_second");
    assert!(!success);
    assert_eq!(reason, "send");
    // Other modules are not affected.
    assert!(probe(&exporter, TARGET_V4, "icmp").0);
    net.restore_prober_addresses();
    assert_recovers(&exporter, TARGET_V4, "from_second");
}

/// The kernel's count of datagrams dropped on the namespace's IPv4 raw and ping sockets: the
/// `drops` column (the last) of /proc/net/raw and /proc/net/icmp.
fn kernel_socket_drops(namespace: &Namespace) -> u64 {
    ["/proc/net/raw", "/proc/net/icmp"]
        .iter()
        .flat_map(|table| {
            namespace
                .exec("cat", &[table])
                .lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Sends `count` unsolicited echo replies to `destination` from a raw socket opened on the
/// calling thread (which must be inside the test namespace); closes it before returning.
fn flood_echo_replies(destination: std::net::Ipv4Addr, count: usize) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw socket");
    // Type 0 (echo reply), code 0, identifier 0xbeef: no probe waits for it.
    let mut packet = [0u8, 0, 0, 0, 0xbe, 0xef, 0, 0];
    let address = SockAddr::from(std::net::SocketAddrV4::new(destination, 0));
    for sequence in 0..count {
        packet[6..8].copy_from_slice(&(sequence as u16).to_be_bytes());
        packet[2..4].copy_from_slice(&[0, 0]);
        let sum: u32 = packet
            .chunks(2)
            .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
        packet[2..4].copy_from_slice(&checksum.to_be_bytes());
        socket.send_to(&packet, &address).expect("send echo reply");
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn replies_the_kernel_drops_at_a_full_socket_are_counted_exactly() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    assert_eq!(probe(&exporter, TARGET_V4, "icmp"), (true, String::new()));
    assert_eq!(kernel_socket_drops(&net.prober), 0);
    // Stall the prober (our own child, by PID) and flood its receiving socket far past its
    // buffer: the kernel has to drop most of the flood.
    let pid = exporter.child.id() as i32;
    // SAFETY: signals to a PID we spawned and still own.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let prober_address: std::net::Ipv4Addr = "198.18.0.1".parse().expect("address");
    net.prober
        .enter(move || flood_echo_replies(prober_address, 60_000));
    // The loopback hands the flood to the socket in softirq work that may still run after the
    // last send returned: wait until the kernel's count stops moving.
    let mut dropped = kernel_socket_drops(&net.prober);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = kernel_socket_drops(&net.prober);
        if now == dropped {
            break;
        }
        dropped = now;
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        dropped > 10_000,
        "the kernel dropped only {dropped} datagrams"
    );
    // The prober first works through the backlog the flood left in its socket (thousands of
    // unknown replies, slow in a debug build on a busy runner; a reply that arrives while the
    // buffer is still full is dropped too), then probes as before. The reply of the probe that
    // succeeded carries the socket's whole drop count.
    assert_recovers(&exporter, TARGET_V4, "icmp");
    let metrics = exporter.metrics();
    let kernel_total = kernel_socket_drops(&net.prober);
    assert!(kernel_total >= dropped && kernel_total < dropped + 100);
    assert_eq!(
        metrics.value("meshprobe_socket_receive_drops_total"),
        kernel_total as f64,
        "{}",
        exporter.log()
    );
}
