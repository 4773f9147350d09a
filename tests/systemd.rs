//! The standalone systemd service: the real binary speaks the `Type=notify` protocol (READY,
//! watchdog keep-alives, RELOADING/READY around SIGHUP with the outcome in STATUS, STOPPING),
//! and both shipped units (`config/meshprobe.service` and the charm's unit derived from it) pass
//! `systemd-analyze verify` with a `systemd-analyze security` exposure under 2.0.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Receives notifications until one satisfies `wanted` or `timeout` passes; returns all seen.
fn receive_until(
    socket: &UnixDatagram,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(length) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let done = wanted(&message);
            seen.push(message);
            if done {
                break;
            }
        }
    }
    seen
}

fn notify_socket(name: &str) -> (UnixDatagram, std::path::PathBuf) {
    let path = write_config(name, "").with_extension("sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    (socket, path)
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn notifies_ready_reload_watchdog_and_stopping() {
    require_namespaces!();
    let namespace = Namespace::new("notify");
    let config = write_config("meshprobe.yml", "modules:\n  icmp:\n    prober: icmp\n");
    let (socket, socket_path) = notify_socket("notify");
    let exporter = Exporter::start_with_env(
        &namespace,
        binary(),
        &["--config.file", path_str(&config)],
        9115,
        &[
            ("NOTIFY_SOCKET", path_str(&socket_path)),
            ("WATCHDOG_USEC", "200000"),
        ],
    );

    let seen = receive_until(&socket, Duration::from_secs(5), |m| {
        m.starts_with("READY=1")
    });
    let ready = seen.last().expect("a notification");
    assert_eq!(
        ready, "READY=1\nSTATUS=Serving on 127.0.0.1:9115",
        "first notifications: {seen:?}"
    );

    // WATCHDOG_USEC=200ms: a keep-alive every 100 ms.
    let started = Instant::now();
    let seen = receive_until(&socket, Duration::from_secs(5), |_| false);
    let keepalives = seen.iter().filter(|m| *m == "WATCHDOG=1").count() as f64;
    let expected = started.elapsed().as_secs_f64() / 0.1;
    assert!(
        keepalives >= expected * 0.5 && keepalives <= expected * 1.5 + 1.0,
        "{keepalives} keep-alives in {:?}",
        started.elapsed()
    );

    exporter.sighup();
    let seen = receive_until(&socket, Duration::from_secs(5), |m| {
        m.starts_with("READY=1")
    });
    let reload: Vec<&String> = seen.iter().filter(|m| *m != "WATCHDOG=1").collect();
    assert_eq!(
        reload,
        [
            "RELOADING=1\nSTATUS=Reloading configuration",
            "READY=1\nSTATUS=Reloaded configuration"
        ]
    );

    std::fs::write(&config, "modules:\n  icmp:\n    prober: nonsense\n").expect("break config");
    exporter.sighup();
    let seen = receive_until(&socket, Duration::from_secs(5), |m| {
        m.starts_with("READY=1")
    });
    let outcome = seen.last().expect("a notification");
    assert!(
        outcome.starts_with("READY=1\nSTATUS=Reload failed, running the previous configuration: "),
        "{seen:?}"
    );
    assert!(outcome.contains("nonsense"), "{outcome}");
    assert_eq!(exporter.get("/-/healthy").status, 200);

    // SAFETY: SIGTERM to the exporter we spawned (`ip netns exec` execs it, same PID).
    unsafe { libc::kill(exporter.child.id() as i32, libc::SIGTERM) };
    let seen = receive_until(&socket, Duration::from_secs(5), |m| {
        m.starts_with("STOPPING=1")
    });
    assert_eq!(
        seen.last().map(String::as_str),
        Some("STOPPING=1\nSTATUS=Shutting down")
    );
    let _ = std::fs::remove_file(&socket_path);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn watchdog_meant_for_another_process_is_not_fed() {
    require_namespaces!();
    let namespace = Namespace::new("nowdog");
    let (socket, socket_path) = notify_socket("nowdog");
    let _exporter = Exporter::start_with_env(
        &namespace,
        binary(),
        &[],
        9115,
        &[
            ("NOTIFY_SOCKET", path_str(&socket_path)),
            ("WATCHDOG_USEC", "100000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let seen = receive_until(&socket, Duration::from_secs(1), |_| false);
    assert!(
        seen.iter().any(|m| m.starts_with("READY=1")),
        "no READY: {seen:?}"
    );
    assert!(!seen.iter().any(|m| m == "WATCHDOG=1"), "{seen:?}");
    let _ = std::fs::remove_file(&socket_path);
}

/// `systemd-analyze verify` (no complaints) and `security` (exposure under 2.0) on a unit file.
fn assert_unit_verifies_and_is_hardened(unit_path: &Path) {
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit_path)
        .output()
        .expect("run systemd-analyze verify");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {}: {}",
        unit_path.display(),
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(unit_path)
        .output()
        .expect("run systemd-analyze security");
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|line| line.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    println!("{}: exposure {exposure}", unit_path.display());
    assert!(
        security.status.success() && exposure < 2.0,
        "exposure {exposure} (want < 2.0):\n{report}"
    );
}

#[test]
#[ignore = "needs systemd-analyze (apt-get install systemd): run with --include-ignored (./test.sh)"]
fn standalone_unit_verifies_with_exposure_under_two() {
    require_tool("/usr/bin/systemd-analyze", "systemd");
    // verify needs ExecStart's binary to exist; point a copy of the unit at the test binary.
    let unit = std::fs::read_to_string(repo_path("config/meshprobe.service")).expect("unit");
    assert!(unit.contains("\nExecStart=/usr/bin/meshprobe "), "{unit}");
    let unit = unit.replace(
        "ExecStart=/usr/bin/meshprobe ",
        &format!("ExecStart={} ", binary()),
    );
    let path = write_config("meshprobe.service", &unit);
    assert_unit_verifies_and_is_hardened(&path);
}

#[test]
#[ignore = "needs systemd-analyze (apt-get install systemd): run with --include-ignored (./test.sh)"]
fn charm_unit_verifies_with_exposure_under_two() {
    require_tool("/usr/bin/systemd-analyze", "systemd");
    let charm_dir = Path::new(binary()).parent().expect("binary directory");
    let unit = meshprobe::charm::service::unit_file(
        charm_dir,
        Path::new("/var/lib/meshprobe/meshprobe.yml"),
        9115,
    );
    let path = write_config("meshprobe.service", &unit);
    assert_unit_verifies_and_is_hardened(&path);
}
