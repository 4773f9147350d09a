//! The shipped Prometheus and Grafana examples, checked with the real tools: `promtool check
//! config` on config/prometheus.yml, `promtool check rules` and `promtool test rules` on the
//! alert and recording rules, and every PromQL query of config/grafana-dashboard.json parsed by
//! promtool. (tests/prometheus_e2e.rs runs the same files against a live Prometheus.)

mod support;

use std::collections::HashSet;
use std::process::Command;

use support::grafana::{self, DashboardQuery};
use support::*;

const PROMTOOL: &str = "/usr/bin/promtool";

/// Runs promtool in config/ (so relative rule_files resolve) and returns its output.
fn promtool(args: &[&str]) -> String {
    let output = Command::new(PROMTOOL)
        .args(args)
        .current_dir(repo_path("config"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus): run with --include-ignored (./test.sh)"]
fn prometheus_config_example_is_valid() {
    require_tool(PROMTOOL, "prometheus");
    let output = promtool(&["check", "config", "prometheus.yml"]);
    assert!(output.contains("1 rule files found"), "{output}");
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus): run with --include-ignored (./test.sh)"]
fn rules_are_valid_and_every_alert_has_a_unit_test() {
    require_tool(PROMTOOL, "prometheus");
    promtool(&["check", "rules", "meshprobe-rules.yml"]);
    let output = promtool(&["test", "rules", "meshprobe-rules.test.yml"]);
    assert!(output.contains("SUCCESS"), "{output}");

    let rules = std::fs::read_to_string(repo_path("config/meshprobe-rules.yml")).expect("rules");
    let tests =
        std::fs::read_to_string(repo_path("config/meshprobe-rules.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 4, "{alerts:?}");
    for alert in alerts {
        let cases: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|case| case.starts_with(&format!("{alert}\n")))
            .collect();
        let firing = cases
            .iter()
            .filter(|case| case.contains("exp_labels"))
            .count();
        assert!(
            firing >= 1 && cases.len() > firing,
            "{alert} needs a firing case and a quiet case in meshprobe-rules.test.yml"
        );
    }
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let dashboard = grafana::load_dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let variables = grafana::variable_names(&dashboard);
    let mut ids = HashSet::new();
    for panel in grafana::panels(&dashboard) {
        let title = panel["title"].as_str().expect("panel title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("numeric id")),
            "duplicate id at {title}"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                !panel["targets"].as_array().is_none_or(Vec::is_empty),
                "{title}"
            );
        }
        if let Some(repeat) = panel["repeat"].as_str() {
            assert!(
                variables.iter().any(|v| v == repeat),
                "{title} repeats {repeat}"
            );
        }
    }
    let types: HashSet<&str> = grafana::panels(&dashboard)
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert!(
        types.contains("heatmap") && types.contains("table"),
        "{types:?}"
    );
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus): run with --include-ignored (./test.sh)"]
fn every_dashboard_query_parses() {
    require_tool(PROMTOOL, "prometheus");
    let dashboard = grafana::load_dashboard();
    let variables = grafana::variable_names(&dashboard);
    let queries: Vec<DashboardQuery> = grafana::queries(&dashboard);
    assert!(queries.len() >= 10, "only {} queries", queries.len());
    // One recording rule per query: `promtool check rules` parses each expression.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, query) in queries.iter().enumerate() {
        let expr = grafana::substitute(&query.expr, &variables);
        let quoted = serde_json::to_string(&expr).expect("quote");
        rules.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {quoted}\n"
        ));
    }
    let path = write_config("dashboard-rules.yml", &rules);
    let output = Command::new(PROMTOOL)
        .args(["check", "rules", path_str(&path)])
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "a dashboard query does not parse:\n{}\n{rules}",
        String::from_utf8_lossy(&output.stdout)
    );
}
