//! Unit tests of `config/mesh.rs`, kept beside it so the module itself stays readable.

use super::super::Config;
use super::*;

const EXAMPLE: &str = r#"
modules:
  icmp:
    prober: icmp
mesh:
  interval: 500ms
  packets_per_interval: 2
  timeout: 400ms
  networks: [198.18.0.0/16, eth1, "space:internal"]
  labels: {site: lab}
  peers:
    static:
      - targets: [198.18.0.2, "2001:2::2"]
        labels: {peer: node-b, rack: r1}
    files: [/etc/meshprobe/peers.json]
    dns:
      - name: peers.example.test
        labels: {peer: dns-peers}
  strategy: tiered
  group_by: rack
  paths_between_groups: 3
  rotate_every: 5m
  inter_group_series: per_group
"#;

#[test]
fn full_section_parses_with_fixed_keys() {
    let config = Config::parse(EXAMPLE, "mesh.yml").expect("valid");
    let mesh = config.mesh.as_ref().expect("mesh section");
    assert_eq!(mesh.interval, Duration::from_millis(500));
    assert_eq!(mesh.packets_per_interval, 2);
    assert_eq!(mesh.timeout, Duration::from_millis(400));
    assert_eq!(mesh.networks.len(), 3);
    assert_eq!(mesh.peers.static_groups[0].labels["rack"], *"r1");
    assert_eq!(
        mesh.peers.files,
        [PathBuf::from("/etc/meshprobe/peers.json")]
    );
    assert_eq!(mesh.peers.dns[0].name, "peers.example.test");
    assert_eq!(mesh.buckets, default_buckets());
    assert_eq!(mesh.fleet.strategy, Strategy::Tiered);
    assert_eq!(mesh.fleet.group_by.as_deref(), Some("rack"));
    assert_eq!(mesh.fleet.paths_between_groups, 3);
    assert_eq!(mesh.fleet.rotate_every, Some(Duration::from_secs(300)));
    assert_eq!(mesh.fleet.inter_group_series, InterGroupSeries::PerGroup);
    assert_eq!(
        Config::parse(&config.to_yaml(), "dump").expect("dump parses"),
        config
    );
}

#[test]
fn defaults_and_buckets() {
    let config = Config::parse("modules: {}\nmesh: {}\n", "m.yml").expect("valid");
    let mesh = config.mesh.expect("mesh");
    assert_eq!(mesh.interval, Duration::from_secs(1));
    assert_eq!(mesh.timeout, Duration::from_secs(1));
    assert_eq!(mesh.networks, [NetworkSelector::All]);
    assert_eq!(mesh.fleet.strategy, Strategy::Full);
    assert_eq!(mesh.fleet.paths_between_groups, 2);
    assert!((mesh.buckets[0] - 25e-6).abs() < 1e-12);
    assert_eq!(mesh.buckets.len(), 20);
    assert_eq!(mesh.histogram, HistogramMode::Both);
    for (text, mode) in [
        ("classic", HistogramMode::Classic),
        ("native", HistogramMode::Native),
        ("both", HistogramMode::Both),
    ] {
        let yaml = format!("modules: {{}}\nmesh: {{histogram: {text}}}\n");
        let config = Config::parse(&yaml, "m.yml").expect("valid");
        assert_eq!(config.mesh.as_ref().map(|m| m.histogram), Some(mode));
        // /config dumps it, and the dump reads back the same.
        assert_eq!(Config::parse(&config.to_yaml(), "dump").ok(), Some(config));
    }
    assert!(
        Config::parse("modules: {}\n", "m.yml")
            .expect("valid")
            .mesh
            .is_none()
    );
}

#[test]
fn errors_name_the_field() {
    let cases = [
        ("interval: 1ms", "mesh.interval"),
        ("packets_per_interval: 0", "mesh.packets_per_interval"),
        ("payload_size: -3", "mesh.payload_size"),
        ("timeout: 2m", "mesh.timeout"),
        (
            "interval: 10ms\n  packets_per_interval: 100\n  timeout: 60s",
            "mesh.timeout",
        ),
        ("networks: [198.18.0.0/40]", "mesh.networks"),
        ("networks: []", "mesh.networks"),
        ("buckets: [0.1, 0.01]", "mesh.buckets"),
        ("histogram: sparse", "mesh.histogram"),
        ("labels: {peer: x}", "mesh.labels"),
        ("labels: {\"bad-name\": x}", "mesh.labels"),
        ("labels: {le: x}", "mesh.labels"),
        ("labels: {quantile: x}", "mesh.labels"),
        ("labels: {type: x}", "mesh.labels"),
        ("labels: {__meta: x}", "mesh.labels"),
        (
            "peers: {static: [{targets: [198.18.0.2], labels: {peer: b, le: x}}]}",
            "mesh.peers.static\": entry 1",
        ),
        (
            "peers: {dns: [{name: a.test, labels: {type: x}}]}",
            "mesh.peers.dns",
        ),
        ("peers: {max_targets: 0}", "mesh.peers.max_targets"),
        ("peers: {max_file_bytes: -1}", "max_file_bytes"),
        (
            "peers: {static: [{targets: [198.18.0.2]}]}",
            "mesh.peers.static",
        ),
        (
            "peers: {static: [{targets: [node-b], labels: {peer: b}}]}",
            "mesh.peers.static",
        ),
        ("peers: {dns: [{name: \"host:80\"}]}", "mesh.peers.dns"),
        ("peers: {fils: []}", "fils"),
        ("intervall: 1s", "intervall"),
        ("strategy: tiered", "mesh.group_by"),
        ("strategy: star", "strategy"),
        ("inter_group_series: per_group", "mesh.group_by"),
        ("group_by: peer", "mesh.group_by"),
        (
            "group_by: rack\n  paths_between_groups: 0",
            "mesh.paths_between_groups",
        ),
        ("group_by: rack\n  rotate_every: 10ms", "mesh.rotate_every"),
    ];
    for (line, field) in cases {
        let text = format!("modules: {{}}\nmesh:\n  {line}\n");
        let error = Config::parse(&text, "m.yml").expect_err(line).to_string();
        assert!(
            error.contains(field) && error.contains("m.yml"),
            "{line}: {error}"
        );
    }
}

#[test]
fn title_is_optional_trimmed_and_bounded() {
    let parse = |title: &str| {
        Config::parse(
            &format!("modules: {{}}\nmesh:\n  title: {title}\n"),
            "test.yml",
        )
        .map(|c| c.mesh.and_then(|m| m.title))
    };
    assert_eq!(parse("\" Lab mesh \""), Ok(Some("Lab mesh".to_string())));
    assert_eq!(parse("\"\""), Ok(None));
    assert!(parse(&"x".repeat(201)).is_err());
}
