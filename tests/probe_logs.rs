//! Per-probe log lines, as blackbox writes them: a failed probe is logged at debug level (so the
//! default `--log.level=info` shows none), every line names `module` and `target`, and in JSON
//! the `target` key is the probe's target, not a Rust module path.

mod support;

use support::*;

const CONFIG: &str = "modules:\n  icmp:\n    prober: icmp\n    timeout: 1s\n";

fn probe_failed_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("Probe failed"))
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn failed_probe_is_logged_at_debug_with_module_and_target() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("blackbox.yml", CONFIG);
    let config_flag = format!("--config.file={}", path_str(&config));
    let debug = Exporter::start_program(
        &net.prober,
        binary(),
        &[&config_flag, "--log.level=debug"],
        9115,
    );
    let quiet = Exporter::start_program(&net.prober, binary(), &[&config_flag], 9116);
    let json = Exporter::start_program(
        &net.prober,
        binary(),
        &[&config_flag, "--log.level=debug", "--log.format=json"],
        9117,
    );
    let path = format!("/probe?module=icmp&target={SILENT_V4}");
    for exporter in [&debug, &quiet, &json] {
        let response = exporter.get(&path);
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(
            response.body.contains("probe_success 0"),
            "{}",
            response.body
        );
    }

    let log = debug.log();
    let lines = probe_failed_lines(&log);
    assert_eq!(lines.len(), 1, "one failed-probe line: {log}");
    for expected in [
        "level=debug",
        "module=icmp",
        &format!("target={SILENT_V4}"),
        "reason=timeout",
    ] {
        assert!(lines[0].contains(expected), "{expected} in {:?}", lines[0]);
    }
    for line in log.lines().filter(|line| line.contains("target=")) {
        assert!(
            line.contains("module=icmp"),
            "every probe line names the module: {line}"
        );
    }

    let quiet_log = quiet.log();
    assert!(
        probe_failed_lines(&quiet_log).is_empty() && !quiet_log.contains("level=error"),
        "blackbox logs failed probes at debug, hidden at the default info level: {quiet_log}"
    );

    let json_log = json.log();
    let line = probe_failed_lines(&json_log)
        .first()
        .map(|line| line.to_string())
        .unwrap_or_else(|| panic!("no failed-probe line: {json_log}"));
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(parsed["level"], "DEBUG", "{line}");
    assert_eq!(parsed["module"], "icmp", "{line}");
    assert_eq!(
        parsed["target"], SILENT_V4,
        "the probe's target, not meshprobe::probe: {line}"
    );
    assert!(
        !json_log.contains("meshprobe::"),
        "no Rust module path in JSON logs: {json_log}"
    );
}
