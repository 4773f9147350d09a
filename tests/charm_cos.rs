//! The charm's COS data checked with the real tools, without a model: the alert rules it
//! publishes (`alert_rules`, `metrics_alert_rules`) pass `promtool check rules` once the
//! topology matchers are filled in as the COS libraries would (and with the placeholder only
//! stripped, as they do without cos-tool); its dashboards decompress with Python's lzma into
//! dashboard JSON whose every query promtool parses; and the probe jobs, rendered by the
//! `prometheus_scrape` consumer (tests/charm_sim/cos.rs), give every target its source unit's
//! `juju_unit` and make a prometheus.yml that `promtool check config` accepts.

mod support;

#[allow(dead_code)]
#[path = "charm_sim/cos.rs"]
mod cos;

use std::collections::BTreeMap;
use std::process::Command;

use meshprobe::charm::cos::{Topology, alert_rules};
use meshprobe::charm::dashboards;
use meshprobe::charm::model::{Mode, SharedNetwork};
use meshprobe::charm::publish::{JobInput, UnitData};
use meshprobe::mesh::plan::NetworkSelector;
use serde_json::{Value, json};
use support::grafana;
use support::{path_str, write_config};

const PROMTOOL: &str = "/usr/bin/promtool";

fn topology() -> Topology {
    Topology {
        model: "cos-lab".into(),
        model_uuid: "5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a".into(),
        application: "meshprobe".into(),
        unit: "meshprobe/0".into(),
        charm_name: "meshprobe".into(),
    }
}

fn promtool(args: &[&str]) {
    let output = Command::new(PROMTOOL)
        .args(args)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs system tools (./test.sh installs them): run with --include-ignored (./test.sh)"]
fn published_alert_rules_pass_promtool_once_the_topology_is_filled_in() {
    support::require_tool(PROMTOOL, "prometheus");
    let rules = alert_rules(&topology());
    for strip in [false, true] {
        let filled = cos::fill_topology(&rules, strip);
        let text = filled.to_string();
        assert!(!text.contains("%%"), "{text}");
        if !strip {
            assert!(text.contains(r#"juju_application=\"meshprobe\""#));
        }
        let path = write_config("cos-rules.json", &text);
        promtool(&["check", "rules", path_str(&path)]);
    }
}

#[test]
#[ignore = "needs system tools (./test.sh installs them): run with --include-ignored (./test.sh)"]
fn dashboards_decompress_to_dashboards_whose_queries_parse() {
    let encoded = dashboards::encoded().expect("encode");
    assert_eq!(encoded.len(), 2);
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut count = 0;
    for text in &encoded {
        let dashboard = cos::decode_dashboard(text);
        assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
        let variables = grafana::variable_names(&dashboard);
        for name in [
            "prometheusds",
            "juju_model",
            "juju_model_uuid",
            "juju_application",
            "juju_unit",
        ] {
            assert!(
                variables.iter().any(|v| v == name),
                "no {name} in {variables:?}"
            );
        }
        for query in grafana::queries(&dashboard) {
            if !query.place.starts_with("variable") {
                assert!(
                    query.expr.contains(r#"juju_unit=~"$juju_unit""#),
                    "{}: {}",
                    query.place,
                    query.expr
                );
            }
            let expr = grafana::substitute(&query.expr, &variables);
            rules.push_str(&format!(
                "      - record: dashboard:query_{count}\n        expr: {}\n",
                serde_json::to_string(&expr).expect("quote")
            ));
            count += 1;
        }
    }
    assert!(count >= 15, "only {count} queries");
    support::require_tool(PROMTOOL, "prometheus");
    let path = write_config("cos-dashboard-rules.yml", &rules);
    promtool(&["check", "rules", path_str(&path)]);
}

fn network(address: &str, cidr: &str, interface: &str) -> SharedNetwork {
    SharedNetwork {
        address: address.parse().expect("address"),
        cidr: cidr.parse().expect("cidr"),
        interface: interface.into(),
    }
}

/// 8 units: everyone on 198.18.10.0/24 (the address Prometheus knows them by), the even ones
/// on 198.18.20.0/24, the first three on 2001:2:0:30::/64.
fn units() -> BTreeMap<String, UnitData> {
    (0..8u8)
        .map(|n| {
            let mut networks = vec![network(
                &format!("198.18.10.{}", n + 1),
                "198.18.10.0/24",
                "eth0",
            )];
            if n % 2 == 0 {
                networks.push(network(
                    &format!("198.18.20.{}", n + 1),
                    "198.18.20.0/24",
                    "eth1",
                ));
            }
            if n < 3 {
                networks.push(network(
                    &format!("2001:2:0:30::{}", n + 1),
                    "2001:2:0:30::/64",
                    "eth2",
                ));
            }
            let exporter = Some(format!("198.18.10.{}:9115", n + 1));
            (
                format!("meshprobe/{n}"),
                UnitData {
                    networks,
                    exporter,
                    group: None,
                },
            )
        })
        .collect()
}

#[test]
#[ignore = "needs system tools (./test.sh installs them): run with --include-ignored (./test.sh)"]
fn every_target_cos_renders_carries_its_source_unit() {
    let units = units();
    let addresses: BTreeMap<String, String> = units
        .iter()
        .map(|(u, d)| (u.clone(), d.networks[0].address.to_string()))
        .collect();
    for mode in [Mode::Probe, Mode::Both] {
        let input = JobInput {
            mode,
            port: 9115,
            units: units.clone(),
            rules: meshprobe::charm::publish::PlanRules {
                selectors: vec![NetworkSelector::All],
                paths: None,
                has_route: |_| false,
            },
            topology: topology(),
        };
        let app = BTreeMap::from([
            (
                "scrape_jobs".to_string(),
                Value::from(input.scrape_jobs()).to_string(),
            ),
            (
                "scrape_metadata".to_string(),
                topology().metadata().to_string(),
            ),
        ]);
        let jobs = cos::prometheus_scrape_jobs(&app, &addresses);
        // Targets on 198.18.10.0/24 are unit addresses: the consumer splits them per unit.
        assert!(jobs.len() > 16, "{} jobs", jobs.len());
        let mut targets = 0;
        for job in &jobs {
            let name = job["job_name"].as_str().expect("name");
            for sc in job["static_configs"].as_array().expect("static_configs") {
                let labels = &sc["labels"];
                assert_eq!(labels["juju_charm"], "meshprobe", "{name}");
                let unit = labels["juju_unit"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no juju_unit: {labels}"));
                if name.contains("meshprobe-probe-") {
                    assert_eq!(
                        labels["source"], unit,
                        "{name}: juju_unit must be the source"
                    );
                    assert!(name.contains(&unit.replace('/', "-")), "{name} vs {unit}");
                }
                targets += sc["targets"].as_array().map_or(0, Vec::len);
            }
        }
        // Every planned probe target survives the consumer: 8 sources × their peers.
        let planned: usize = input
            .scrape_jobs()
            .iter()
            .flat_map(|j| j["static_configs"].as_array().cloned().unwrap_or_default())
            .filter(|sc| sc["labels"]["source"].is_string())
            .map(|sc| sc["targets"].as_array().map_or(0, Vec::len))
            .sum();
        let mesh = if mode == Mode::Both { 8 } else { 0 };
        assert_eq!(targets, planned + mesh);
        // cos-agent: the unit's own jobs, labelled by the consumer with that unit.
        for unit in units.keys() {
            let config = json!({"metrics_scrape_jobs": input.local_jobs(unit)});
            let jobs = cos::cos_agent_jobs(
                &config,
                "cos-lab",
                "5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a",
                unit,
            );
            assert!(
                jobs.iter().any(|j| j["metrics_path"] == "/probe"),
                "{unit}: no probe job over cos-agent in {mode:?}"
            );
            for sc in jobs
                .iter()
                .flat_map(|j| j["static_configs"].as_array().cloned().unwrap_or_default())
            {
                assert_eq!(sc["labels"]["juju_unit"], unit.as_str());
            }
        }
        {
            support::require_tool(PROMTOOL, "prometheus");
            let config = json!({"global": {"scrape_interval": "15s"}, "scrape_configs": jobs});
            let path = write_config("cos-prometheus.yml", &config.to_string());
            promtool(&["check", "config", path_str(&path)]);
        }
    }
}
