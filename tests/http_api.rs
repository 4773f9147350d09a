//! The HTTP surface of the real binary: every bad `/probe` input gets a 4xx with a clear text,
//! reloads keep the old config when the new one is broken (via POST and SIGHUP), and the
//! exporter's own metrics track both. Also `--config.check` on good and bad files.

mod support;

use std::process::Command;

use support::*;

const GOOD: &str = "modules:\n  icmp:\n    prober: icmp\n    timeout: 2s\n  http_2xx:\n    prober: http\n    http:\n      method: GET\n";
const BROKEN: &str = "modules:\n  icmp:\n    prober: icmp\n    icmp:\n      payload_size: -5\n";
const CHANGED: &str = "modules:\n  icmp:\n    prober: icmp\n  icmp_new:\n    prober: icmp\n";

/// (path, headers, expected status, text the body must contain)
type BadRequest<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bad_probe_requests_get_4xx_with_a_reason() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("blackbox.yml", GOOD);
    let exporter = Exporter::start(
        &net.prober,
        &["--config.file", path_str(&config), "--probe.strict"],
    );
    let cases: &[BadRequest] = &[
        (
            "/probe?module=icmp",
            &[],
            400,
            "Target parameter is missing",
        ),
        (
            "/probe?module=icmp&target=",
            &[],
            400,
            "Target parameter is missing",
        ),
        // Without module=, blackbox's default `http_2xx` applies, an http module here.
        (
            "/probe?target=198.18.1.1",
            &[],
            400,
            "is not supported by meshprobe",
        ),
        (
            "/probe?target=198.18.1.1&module=nope",
            &[],
            400,
            "Unknown module \"nope\"",
        ),
        (
            "/probe?target=198.18.1.1&module=http_2xx",
            &[],
            400,
            "is not supported by meshprobe",
        ),
        ("/probe?target=host:80&module=icmp", &[], 400, "host:port"),
        (
            "/probe?target=http://198.18.1.1/&module=icmp",
            &[],
            400,
            "URL",
        ),
        (
            "/probe?target=%5B::1%5D&module=icmp",
            &[],
            400,
            "without brackets",
        ),
        (
            "/probe?target=a%20b&module=icmp",
            &[],
            400,
            "not a valid hostname",
        ),
        (
            "/probe?target=%00%ff&module=icmp",
            &[],
            400,
            "not a valid hostname",
        ),
        (
            "/probe?target=a&target=b&module=icmp",
            &[],
            400,
            "given twice",
        ),
        (
            "/probe?target=198.18.1.1&module=icmp&debug=maybe",
            &[],
            400,
            "debug must be",
        ),
        (
            "/probe?target=198.18.1.1&module=icmp",
            &[("X-Prometheus-Scrape-Timeout-Seconds", "soon")],
            400,
            "Failed to parse timeout",
        ),
        (
            "/probe?target=198.18.1.1&module=icmp",
            &[("X-Prometheus-Scrape-Timeout-Seconds", "-1")],
            400,
            "Failed to parse timeout",
        ),
        ("/nowhere", &[], 404, "404 page not found"),
        ("/-/reload", &[], 405, "requires a POST"),
    ];
    for (path, headers, status, text) in cases {
        let response = exporter.get_with_headers(path, headers);
        assert_eq!(response.status, *status, "{path}: {}", response.body);
        assert!(
            response.body.contains(text),
            "{path}: {:?} lacks {text:?}",
            response.body
        );
    }
    let long_target = "a".repeat(400);
    let response = exporter.get(&format!("/probe?module=icmp&target={long_target}"));
    assert_eq!(response.status, 400);
    assert!(response.body.contains("too long"));
    // The process survived all of it, and counted the unknown modules.
    assert_eq!(exporter.get("/-/healthy").body, "Healthy");
    let metrics = exporter.metrics();
    assert_eq!(metrics.value("meshprobe_module_unknown_total"), 1.0);
    assert_eq!(metrics.value("meshprobe_probes_in_flight"), 0.0);
    assert_eq!(
        metrics.value("meshprobe_packets_sent_total{ip_protocol=\"ip4\"}"),
        0.0,
        "no bad request may send a packet"
    );
}

/// Without `--probe.strict`, targets blackbox fails at resolution get its answer (200,
/// `probe_success 0`) plus the reason, and still nothing is looked up or sent.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn bad_targets_fail_the_probe_like_blackbox_by_default() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("blackbox.yml", GOOD);
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&config)]);
    for target in [
        "host:80",
        "198.18.1.1:80",
        "http://198.18.1.1/",
        "%5B::1%5D",
        "198.18.1.0/24",
        "a%20b",
        "%00%ff",
    ] {
        let path = format!("/probe?module=icmp&target={target}");
        let response = exporter.get(&path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let metrics = Metrics::parse(&response.body);
        assert_eq!(metrics.value("probe_success"), 0.0, "{path}");
        assert_eq!(
            metrics.value("probe_icmp_failure_reason{reason=\"invalid_target\"}"),
            1.0,
            "{path}"
        );
        assert_eq!(metrics.value("probe_ip_protocol"), 0.0, "{path}");
    }
    let debug = exporter.get("/probe?module=icmp&target=host:80&debug=true");
    assert!(
        debug.body.contains("host:port"),
        "the debug log names the problem: {}",
        debug.body
    );
    let log = exporter.log();
    assert!(
        log.contains("Modules of other probers are configured") && log.contains("http_2xx (http)"),
        "startup names the modules that will answer 400: {log}"
    );
    // Still a 400: blackbox refuses these too.
    assert_eq!(exporter.get("/probe?module=icmp&target=").status, 400);
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_packets_sent_total{ip_protocol=\"ip4\"}"),
        0.0,
        "an invalid target sends no packet"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn reload_keeps_the_old_config_when_the_new_one_is_broken() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("blackbox.yml", GOOD);
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&config)]);
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_config_last_reload_successful"),
        1.0
    );

    std::fs::write(&config, BROKEN).expect("write broken config");
    let response = exporter.post("/-/reload");
    assert_eq!(response.status, 500);
    assert!(
        response.body.contains("failed to reload config"),
        "{}",
        response.body
    );
    assert!(response.body.contains("payload_size"), "{}", response.body);
    assert!(
        response.body.contains(path_str(&config)),
        "{}",
        response.body
    );
    assert_eq!(
        exporter
            .metrics()
            .value("meshprobe_config_last_reload_successful"),
        0.0
    );
    // The old module still probes.
    let probe = exporter.get(&format!("/probe?target={TARGET_V4}&module=icmp"));
    assert_eq!(Metrics::parse(&probe.body).value("probe_success"), 1.0);
    assert!(exporter.get("/config").body.contains("timeout: 2s"));

    // SIGHUP with the file still broken: still the old config, and the log says why.
    exporter.sighup();
    wait_until(|| exporter.log().contains("Error reloading config"));
    assert!(exporter.get("/config").body.contains("http_2xx"));

    // Fixed file via SIGHUP: new modules apply, gauge goes back to 1.
    std::fs::write(&config, CHANGED).expect("write changed config");
    exporter.sighup();
    wait_until(|| exporter.get("/config").body.contains("icmp_new"));
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_config_last_reload_successful"),
        1.0
    );
    let probe = exporter.get(&format!("/probe?target={TARGET_V4}&module=icmp_new"));
    assert_eq!(Metrics::parse(&probe.body).value("probe_success"), 1.0);

    // Unchanged file: a no-op reload that still succeeds.
    assert_eq!(exporter.post("/-/reload").status, 200);
}

fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn config_check_reports_file_module_and_field() {
    let good = write_config("good.yml", GOOD);
    let status = Command::new(binary())
        .args(["--config.check", "--config.file", path_str(&good)])
        .output()
        .expect("run --config.check");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stderr).contains("Config file is ok"));

    let cases = [
        (
            "modules:\n  m:\n    prober: icmp\n    icmp:\n      payload_size: -1\n",
            "module \"m\"",
            "icmp.payload_size",
        ),
        (
            "modules:\n  pinger:\n    prober: icmp\n    icmp:\n      source_ip_address: not-an-ip\n",
            "pinger",
            "icmp.source_ip_address",
        ),
        (
            "modules:\n  p6:\n    prober: icmp\n    icmp:\n      preferred_ip_protocol: ipv6\n",
            "p6",
            "preferred_ip_protocol",
        ),
        (
            "modules:\n  t:\n    prober: icmp\n    icmp:\n      tll: 3\n",
            "blackbox.yml",
            "tll",
        ),
    ];
    for (text, module, field) in cases {
        let path = write_config("blackbox.yml", text);
        let output = Command::new(binary())
            .args(["check-config", "--config.file", path_str(&path)])
            .output()
            .expect("run check-config");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        assert!(stderr.contains(path_str(&path)), "{stderr}");
        assert!(stderr.contains(module), "{module}: {stderr}");
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
    // Every problem, each with file and line, in the user's words; the parser's excerpt intact.
    let two_bad_modules = "modules:\n  a:\n    prober: icmp\n    icmp:\n      ttl: 300\n  b:\n    prober: icmp\n    icmp:\n      payload_size: -1\n";
    let type_error = "modules:\n  a:\n    prober: icmp\n    icmp:\n      ttl: abc\n";
    let two_type_errors = "modules:\n  a:\n    prober: icmp\n    icmp:\n      ttl: abc\n      ip_protocol_fallback: maybe\n";
    let duplicate = "modules:\n  a:\n    prober: icmp\n  a:\n    prober: icmp\n";
    for (text, expected) in [
        (
            two_bad_modules,
            &[":5: module \"a\"", ":9: module \"b\"", "2 problems"][..],
        ),
        (
            type_error,
            &["blackbox.yml:5:12", "expected an integer", "^"][..],
        ),
        (
            duplicate,
            &["blackbox.yml:4:3", "key \"a\" is given twice"][..],
        ),
        (
            two_type_errors,
            &[
                "blackbox.yml:5:12: expected an integer",
                "blackbox.yml:6:29",
                "2 problems",
            ][..],
        ),
    ] {
        let path = write_config("blackbox.yml", text);
        let output = Command::new(binary())
            .args(["--config.check", "--config.file", path_str(&path)])
            .output()
            .expect("run --config.check");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        for needle in expected {
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
        for parser_internal in ["<input>", "DuplicateKeyPolicy", "i64", "string scalar"] {
            assert!(
                !stderr.contains(parser_internal),
                "{parser_internal}: {stderr}"
            );
        }
    }
    let missing = Command::new(binary())
        .args([
            "--config.check",
            "--config.file",
            "/nonexistent/blackbox.yml",
        ])
        .output()
        .expect("run");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/blackbox.yml"));
}
