//! A migrated unit keeps its flags: meshprobe starts with blackbox_exporter 0.23's full flag set
//! (`prometheus-blackbox-exporter --help`), serves every endpoint under the route prefix,
//! redirects outside it as blackbox does, keeps the last `--history.limit` probes on the landing
//! page with their logs at `/logs?id=N`, and takes its listener from systemd socket activation.

mod support;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = "modules:\n  icmp:\n    prober: icmp\n    timeout: 2s\n";

/// Starts `program args` in the prober namespace and waits until `health_path` answers 200.
fn start_raw(net: &TestNet, program: &str, args: &[&str], port: u16, health: &str) -> Exporter {
    let stderr_path = std::env::temp_dir().join(format!("{}-flags-{port}.log", net.prober.name));
    let stderr = File::create(&stderr_path).expect("create log file");
    let child = Command::new("ip")
        .args(["netns", "exec", &net.prober.name, program])
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start exporter");
    let exporter = Exporter {
        child,
        namespace: net.prober.name.clone(),
        port,
        stderr_path,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exporter
        .request("GET", health, &[])
        .is_ok_and(|r| r.status == 200)
    {
        assert!(
            Instant::now() < deadline,
            "did not start: {}",
            exporter.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    exporter
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn starts_with_blackbox_full_flag_set() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("blackbox.yml", CONFIG);
    let web_config = write_config("web.yml", "# plain HTTP\n");
    let config_flag = format!("--config.file={}", path_str(&config));
    let web_flag = format!("--web.config.file={}", path_str(&web_config));
    let flags = [
        config_flag.as_str(),
        "--timeout-offset=0.5",
        "--history.limit=3",
        "--web.external-url=http://probe.example:9115/bb/",
        "--web.route-prefix=/bb",
        "--web.listen-address=127.0.0.1:9115",
        web_flag.as_str(),
        "--log.level=info",
        "--log.format=logfmt",
        // kingpin's negations of boolean flags.
        "--no-web.systemd-socket",
        "--no-config.check",
    ];
    let exporter = start_raw(&net, binary(), &flags, 9115, "/bb/-/healthy");

    let outside = exporter.get("/metrics");
    assert_eq!(outside.status, 302, "outside the prefix: {}", outside.body);
    assert!(
        outside
            .headers
            .to_ascii_lowercase()
            .contains("location: /bb"),
        "{}",
        outside.headers
    );
    for _ in 0..4 {
        let probe = exporter.get(&format!("/bb/probe?module=icmp&target={TARGET_V4}"));
        assert_eq!(probe.status, 200, "{}", probe.body);
        assert!(probe.body.contains("probe_success 1"), "{}", probe.body);
    }
    let failed = exporter.get("/bb/probe?module=icmp&target=host:80");
    assert!(failed.body.contains("probe_success 0"), "{}", failed.body);

    let landing = exporter.get("/bb/");
    assert_eq!(landing.status, 200);
    assert!(landing.body.contains("Recent Probes"), "{}", landing.body);
    assert_eq!(
        landing.body.matches("/bb/logs?id=").count(),
        3,
        "history.limit bounds the table: {}",
        landing.body
    );
    assert!(
        landing.body.contains("href=\"/bb/metrics\""),
        "{}",
        landing.body
    );
    assert!(
        landing.body.contains("<strong>Failure</strong>"),
        "{}",
        landing.body
    );

    let logs = exporter.get("/bb/logs?id=3");
    assert_eq!(logs.status, 200, "{}", logs.body);
    assert!(logs.body.contains("Logs for the probe:"), "{}", logs.body);
    assert!(logs.body.contains("Probe succeeded"), "{}", logs.body);
    assert!(logs.body.contains("probe_success 1"), "{}", logs.body);
    let failed_logs = exporter.get("/bb/logs?id=4");
    assert!(
        failed_logs.body.contains("host:port"),
        "{}",
        failed_logs.body
    );
    assert_eq!(exporter.get("/bb/logs?id=0").status, 404, "evicted");
    assert_eq!(exporter.get("/bb/logs?id=x").status, 500);
    drop(exporter);

    for help in ["--help-long", "--help-man"] {
        let output = Command::new(binary()).arg(help).output().expect("run");
        assert!(output.status.success(), "{help}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("--history.limit"));
    }

    let check = Command::new(binary())
        .args(flags)
        .arg("--config.check")
        .output()
        .expect("run --config.check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn takes_its_listener_from_systemd_socket_activation() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("blackbox.yml", CONFIG);
    let config_flag = format!("--config.file={}", path_str(&config));
    let exporter = start_raw(
        &net,
        "systemd-socket-activate",
        &[
            "--listen=127.0.0.1:9119",
            binary(),
            &config_flag,
            "--web.systemd-socket",
            // Ignored with --web.systemd-socket, as in blackbox.
            "--web.listen-address=127.0.0.1:9120",
        ],
        9119,
        "/-/healthy",
    );
    let probe = exporter.get(&format!("/probe?module=icmp&target={TARGET_V4}"));
    assert!(probe.body.contains("probe_success 1"), "{}", probe.body);
    let request = build_request("GET", "/-/healthy", &[]);
    let listen_address = in_namespace(&net.prober.name, move || http_exchange(9120, &request));
    assert!(
        listen_address.is_err(),
        "--web.listen-address is not bound with --web.systemd-socket"
    );

    let without_systemd = Command::new(binary())
        .args([config_flag.as_str(), "--web.systemd-socket"])
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .output()
        .expect("run");
    assert!(!without_systemd.status.success());
    assert!(
        String::from_utf8_lossy(&without_systemd.stderr).contains("LISTEN_PID"),
        "{}",
        String::from_utf8_lossy(&without_systemd.stderr)
    );
}
