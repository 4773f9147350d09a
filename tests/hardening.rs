//! Hardening with the real binary: the concurrency limit answers 503 at once, `allowed_targets`
//! answers 403 before any packet is sent, and `--run-as` drops root while keeping only
//! CAP_NET_RAW when raw sockets are still needed (in the bounding set too), with all of the
//! user's groups.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn beyond_the_concurrency_limit_probe_answers_503_at_once() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config(
        "c.yml",
        "modules:\n  icmp:\n    prober: icmp\n    timeout: 2s\n",
    );
    let exporter = Exporter::start(
        &net.prober,
        &[
            "--config.file",
            path_str(&config),
            "--probe.max-concurrency",
            "3",
        ],
    );
    let port = exporter.port;
    let namespace = net.prober.name.clone();
    let blockers: Vec<_> = (0..3)
        .map(|i| {
            let namespace = namespace.clone();
            std::thread::spawn(move || {
                let path = format!("/probe?module=icmp&target=198.18.9.{}", i + 1);
                in_namespace(&namespace, move || {
                    http_exchange(port, &build_request("GET", &path, &[]))
                })
            })
        })
        .collect();
    // Wait until all three hold their slots.
    let deadline = Instant::now() + Duration::from_secs(2);
    while exporter.metrics().value("meshprobe_probes_in_flight") < 3.0 {
        assert!(Instant::now() < deadline, "blockers never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let refused = exporter.get(&format!("/probe?module=icmp&target={TARGET_V4}"));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("--probe.max-concurrency"),
        "{}",
        refused.body
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "503 must not wait"
    );
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_probes_refused_total{reason=\"overload\"}"),
        1.0
    );
    assert_eq!(metrics.value("meshprobe_probe_concurrency_limit"), 3.0);
    for blocker in blockers {
        let response = blocker
            .join()
            .expect("blocker thread")
            .expect("blocker response");
        assert_eq!(Metrics::parse(&response.body).value("probe_success"), 0.0);
    }
    // Slots are released: probing works again.
    let response = exporter.get(&format!("/probe?module=icmp&target={TARGET_V4}"));
    assert_eq!(Metrics::parse(&response.body).value("probe_success"), 1.0);
    assert_eq!(exporter.metrics().value("meshprobe_probes_in_flight"), 0.0);
}

const ALLOW_LIST: &str = r#"
allowed_targets: [198.18.0.0/16]
modules:
  icmp:
    prober: icmp
    timeout: 2s
  narrow:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      allowed_targets: [198.18.1.1/32]
"#;

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn targets_outside_allowed_targets_get_403_without_a_packet() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("a.yml", ALLOW_LIST);
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&config)]);
    let ok = exporter.get(&format!("/probe?module=narrow&target={TARGET_V4}"));
    assert_eq!(
        Metrics::parse(&ok.body).value("probe_success"),
        1.0,
        "{}",
        ok.body
    );
    let top_level = "not in the top-level allowed_targets";
    for (module, target, list) in [
        (
            "narrow",
            "198.18.9.1",
            "not in allowed_targets of module \"narrow\"",
        ),
        ("icmp", TARGET_V6, top_level),
        ("icmp", "peer-v6.test", top_level),
        ("icmp", "198.19.0.1", top_level),
    ] {
        let response = exporter.get(&format!("/probe?module={module}&target={target}"));
        assert_eq!(response.status, 403, "{module} {target}: {}", response.body);
        assert!(response.body.contains(list), "{list}: {}", response.body);
    }
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_probes_refused_total{reason=\"not_allowed\"}"),
        4.0
    );
    assert_eq!(
        metrics.value("meshprobe_packets_sent_total{ip_protocol=\"ip4\"}"),
        1.0
    );
    assert_eq!(
        metrics.value("meshprobe_packets_sent_total{ip_protocol=\"ip6\"}"),
        0.0
    );
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| panic!("{field} missing from status"))
}

fn run_as_nobody(ping_sockets: bool, expected_caps: &str) {
    let net = TestNet::new();
    if ping_sockets {
        net.prober
            .sysctl("net.ipv4.ping_group_range", "0 2147483647");
    }
    let config = write_config(
        "r.yml",
        "modules:\n  icmp:\n    prober: icmp\n    timeout: 2s\n  ttl1:\n    prober: icmp\n    icmp:\n      ttl: 1\n",
    );
    // The config directory must be readable by nobody for reloads; the file was read as root.
    let exporter = Exporter::start(
        &net.prober,
        &["--config.file", path_str(&config), "--run-as", "nobody"],
    );
    let pid = exporter.child.id();
    let uids = status_field(pid, "Uid");
    assert!(
        uids.split_whitespace().all(|uid| uid == "65534"),
        "Uid: {uids}"
    );
    assert_eq!(status_field(pid, "CapEff"), expected_caps);
    assert_eq!(status_field(pid, "CapPrm"), expected_caps);
    // The bounding set too, so nothing the process could still exec (or gain) exceeds it.
    assert_eq!(status_field(pid, "CapBnd"), expected_caps);
    assert_eq!(status_field(pid, "CapInh"), "0000000000000000");
    assert_eq!(status_field(pid, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // Sockets opened after the drop still work, including a new key (TTL 1).
    let ok = exporter.get(&format!("/probe?module=icmp&target={TARGET_V4}"));
    assert_eq!(
        Metrics::parse(&ok.body).value("probe_success"),
        1.0,
        "{}",
        ok.body
    );
    let v6 = exporter.get(&format!("/probe?module=icmp&target={TARGET_V6}"));
    assert_eq!(
        Metrics::parse(&v6.body).value("probe_success"),
        1.0,
        "{}",
        v6.body
    );
    let ttl = Metrics::parse(
        &exporter
            .get(&format!("/probe?module=ttl1&target={TARGET_V4}"))
            .body,
    );
    assert_eq!(
        ttl.value("probe_icmp_failure_reason{reason=\"icmp_error\"}"),
        1.0
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn run_as_keeps_only_cap_net_raw_when_raw_sockets_are_needed() {
    require_namespaces!();
    run_as_nobody(false, "0000000000002000");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn run_as_drops_every_capability_when_ping_sockets_are_allowed() {
    require_namespaces!();
    run_as_nobody(true, "0000000000000000");
}

/// A throwaway system user (primary group `nogroup`) that is also a member of a group of its
/// own; both are removed on drop.
struct TestUser {
    name: String,
    group: String,
}

impl TestUser {
    fn create() -> TestUser {
        let user = TestUser {
            name: format!("mpu{}", std::process::id()),
            group: format!("mpg{}", std::process::id()),
        };
        run("groupadd", &["--system", &user.group]);
        run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--no-user-group",
                "--gid",
                "nogroup",
                "--groups",
                &user.group,
                "--shell",
                "/usr/sbin/nologin",
                &user.name,
            ],
        );
        user
    }

    fn group_id(&self) -> String {
        let entry = run("getent", &["group", &self.group]);
        entry.trim().split(':').nth(2).expect("gid").to_string()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .output();
        let _ = std::process::Command::new("groupdel")
            .arg(&self.group)
            .output();
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn run_as_takes_all_of_the_users_groups() {
    require_namespaces!();
    let net = TestNet::new();
    let user = TestUser::create();
    let exporter = Exporter::start(&net.prober, &["--run-as", &user.name]);
    let pid = exporter.child.id();
    assert!(
        status_field(pid, "Gid")
            .split_whitespace()
            .all(|gid| gid == "65534"),
        "Gid: {}",
        status_field(pid, "Gid")
    );
    // initgroups: the primary group and every group the user is a member of, nothing else.
    let mut groups: Vec<String> = status_field(pid, "Groups")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    groups.sort();
    let mut expected = vec!["65534".to_string(), user.group_id()];
    expected.sort();
    assert_eq!(groups, expected);
    drop(exporter);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn run_as_refuses_unknown_users() {
    require_namespaces!();
    let net = TestNet::new();
    let output = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.prober.name,
            binary(),
            "--run-as",
            "no-such-user-x",
            "--web.listen-address",
            "127.0.0.1:9115",
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such user"));
}
