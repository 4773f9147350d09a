//! Issue 13, findings 5 and 9 (mesh), with the real binary: peer labels that would break the
//! scrape (`le`, `quantile`, `type`, `__…`, invalid names) are refused naming the file and the
//! entry, and `mesh.labels` ones fail `--config.check`; the top-level `allowed_targets` applies
//! to mesh peers; peer names lose control and bidi characters and are capped before they reach
//! `/metrics` and `/mesh`.
//!
//! The exporter runs in a namespace with only a loopback; peers carry an explicit `network`
//! label, so they become targets without a shared network, and their probes cannot leave.

mod support;

use std::time::{Duration, Instant};

use support::web::{TempDir, run_to_exit};
use support::*;

fn start_mesh(namespace: &Namespace, head: &str, peers: &str) -> Exporter {
    let config = write_config(
        "mesh.yml",
        &format!("{head}modules: {{}}\nmesh:\n  refresh_interval: 100ms\n  peers:\n{peers}"),
    );
    Exporter::start(namespace, &["--config.file", path_str(&config)])
}

fn wait_until(exporter: &Exporter, what: &str, condition: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = exporter.metrics();
        if condition(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "no {what}: {}", exporter.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every series of the exposition names each label once.
fn assert_no_repeated_labels(body: &str) {
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.rsplit_once('}').map_or("", |(l, _)| l);
        let mut names: Vec<&str> = labels
            .split("\",")
            .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "repeated label in {line}");
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn reserved_peer_labels_are_refused_naming_the_file_and_entry() {
    require_namespaces!();
    let namespace = Namespace::new("pe");
    let dir = TempDir::new("reserved-labels");
    let good =
        "{\"targets\": [\"198.18.1.1\"], \"labels\": {\"peer\": \"a\", \"network\": \"lab\"}}";
    let path = dir.write("peers.json", &format!("[{good}]"));
    let exporter = start_mesh(
        &namespace,
        "",
        &format!("    files: [\"{}\"]\n", path.display()),
    );
    wait_until(&exporter, "the first peer", |m| {
        m.value("meshprobe_mesh_targets") == 1.0
    });
    for name in ["le", "quantile", "type", "__name__", "bad-name"] {
        let bad = format!(
            "{{\"targets\": [\"198.18.1.2\"], \"labels\": {{\"peer\": \"b\", \"network\": \"lab\", \"{name}\": \"x\"}}}}"
        );
        dir.write("peers.json", &format!("[{good},\n{bad}]"));
        let metrics = wait_until(&exporter, "a source error", |m| {
            m.value("meshprobe_mesh_peer_source_errors") == 1.0
        });
        assert_eq!(metrics.value("meshprobe_mesh_targets"), 1.0, "{name}");
        assert_no_repeated_labels(&exporter.get("/metrics").body);
        let expected = format!("peers file {}: entry 2 (peer \\\"b\\\")", path.display());
        let log = exporter.log();
        assert!(
            log.contains(&expected) && log.contains(name),
            "{name}: {log}"
        );
        dir.write("peers.json", &format!("[{good}]"));
        wait_until(&exporter, "the error to clear", |m| {
            m.value("meshprobe_mesh_peer_source_errors") == 0.0
        });
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn reserved_mesh_labels_fail_the_config_check() {
    require_namespaces!();
    let namespace = Namespace::new("pe");
    for name in ["le", "quantile", "type", "__x"] {
        let config = write_config(
            "labels.yml",
            &format!("modules: {{}}\nmesh:\n  labels: {{{name}: x}}\n"),
        );
        let (code, stderr) = run_to_exit(
            &namespace,
            &["--config.check", "--config.file", path_str(&config)],
        );
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains("mesh.labels") && stderr.contains(name),
            "{stderr}"
        );
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn mesh_peers_outside_allowed_targets_are_not_probed() {
    require_namespaces!();
    let namespace = Namespace::new("pe");
    let dir = TempDir::new("allowed-peers");
    let file = dir.write(
        "peers.json",
        "[{\"targets\": [\"198.18.2.7\", \"10.1.1.1\"], \"labels\": {\"peer\": \"from-file\", \"network\": \"lab\"}}]",
    );
    let exporter = start_mesh(
        &namespace,
        "allowed_targets: [198.18.0.0/16]\n",
        &format!(
            "    files: [\"{}\"]\n    static:\n      - targets: [198.18.2.5, 198.19.2.5]\n        \
             labels: {{peer: from-config, network: lab}}\n",
            file.display()
        ),
    );
    wait_until(&exporter, "the allowed peers", |m| {
        m.value("meshprobe_mesh_targets") == 2.0
    });
    std::thread::sleep(Duration::from_millis(300));
    let body = exporter.get("/metrics").body;
    let parsed = Metrics::parse(&body);
    assert_eq!(parsed.value("meshprobe_mesh_targets"), 2.0, "{body}");
    assert_eq!(parsed.value("meshprobe_mesh_peers_not_allowed"), 2.0);
    assert!(!body.contains("10.1.1.1") && !body.contains("198.19.2.5"));
    let log = exporter.log();
    assert!(log.contains("outside allowed_targets"), "{log}");
    assert!(log.contains("from-file 10.1.1.1") && log.contains("from-config 198.19.2.5"));
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn peer_names_lose_hidden_characters_and_are_capped() {
    require_namespaces!();
    let namespace = Namespace::new("pe");
    let dir = TempDir::new("names");
    let long = "n".repeat(5000);
    let file = dir.write(
        "peers.json",
        &format!(
            "[{{\"targets\": [\"198.18.3.1\"], \"labels\": {{\"peer\": \"evil\\u202egnp.exe\\u0000\\u0007x\", \"network\": \"lab\"}}}},\n\
              {{\"targets\": [\"198.18.3.2\"], \"labels\": {{\"peer\": \"{long}\", \"network\": \"lab\"}}}}]"
        ),
    );
    let exporter = start_mesh(
        &namespace,
        "",
        &format!("    files: [\"{}\"]\n", file.display()),
    );
    wait_until(&exporter, "the peers", |m| {
        m.value("meshprobe_mesh_targets") == 2.0
    });
    let metrics = exporter.get("/metrics").body;
    let page = exporter.get("/mesh").body;
    let json = exporter.get("/mesh.json").body;
    for (what, body) in [
        ("/metrics", &metrics),
        ("/mesh", &page),
        ("/mesh.json", &json),
    ] {
        for hidden in [
            "\u{202e}", "\u{0}", "\u{7}", "\\u0000", "\\u202e", "\\u0007", "\\x00",
        ] {
            assert!(!body.contains(hidden), "{what} contains {hidden:?}");
        }
        assert!(body.contains("evilgnp.exex"), "{what}");
        assert!(
            !body.contains(&"n".repeat(129)),
            "{what} has an uncapped name"
        );
    }
    let log = exporter.log();
    assert!(
        log.contains("had control or bidi characters removed"),
        "{log}"
    );
}
