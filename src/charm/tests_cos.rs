//! In-process tests of what the charm publishes for COS, with the recording fake hook tools of
//! `tests.rs`: the topology on every probe target, `scrape_metadata` across a leader change, the
//! `cos-agent` jobs per mode, `prometheus-manual` keys as membership and leadership change, and
//! the size of every bag at 200 units.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::cos::{CHARM_NAME, Topology};
use super::env::JujuEnv;
use super::model::Mode;
use super::publish::{JobInput, UnitData, compact};
use super::state::{Cache, Paths, PeerRecord, save_cache};
use super::tests::{FakeTools, network, peer_env, temp_paths};
use crate::mesh::plan::NetworkSelector;

const RELATIONS: &[(&str, &str)] = &[
    ("metrics-endpoint", "metrics-endpoint:3"),
    ("cos-agent", "cos-agent:4"),
    ("prometheus-manual", "prometheus-manual:5"),
    ("grafana-dashboard", "grafana-dashboard:6"),
];

/// Unit n: 198.18.10.n/24 everywhere, 198.18.20.n/24 on even units, 2001:2:0:30::n/64 on n < 2.
fn networks(n: u8) -> Vec<super::model::SharedNetwork> {
    let mut list = vec![network(&format!("198.18.10.{n}"), "198.18.10.0/24")];
    if n.is_multiple_of(2) {
        list.push(network(&format!("198.18.20.{n}"), "198.18.20.0/24"));
    }
    if n < 2 {
        list.push(network(&format!("2001:2:0:30::{n}"), "2001:2:0:30::/64"));
    }
    list
}

fn env(unit: &str, hook: &str) -> JujuEnv {
    JujuEnv {
        hook: hook.into(),
        unit: unit.into(),
        model_uuid: "5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a".into(),
        relation: None,
        relation_id: None,
        remote_unit: None,
        ..peer_env(hook, "")
    }
}

/// A cache for `unit` of a model with units 0..n, all relations known.
fn seed(paths: &Paths, unit: u8, n: u8, leader: bool) {
    let peers = (0..n)
        .filter(|p| *p != unit)
        .map(|p| {
            let record = PeerRecord {
                networks: networks(p),
                exporter: Some(format!("198.18.10.{p}:9115")),
                group: None,
                problem: None,
            };
            (format!("meshprobe/{p}"), record)
        })
        .collect();
    let mut relations: BTreeMap<String, Vec<String>> = RELATIONS
        .iter()
        .map(|(e, id)| (e.to_string(), vec![id.to_string()]))
        .collect();
    relations.insert("mesh".into(), vec!["mesh:1".into()]);
    let cache = Cache {
        own_networks: networks(unit),
        own_exporter: Some(format!("198.18.10.{unit}:9115")),
        peers,
        relations,
        leader,
        ..Cache::default()
    };
    save_cache(&paths.cache(), &cache).expect("seed cache");
}

fn tools(mode: &str, leader: bool) -> FakeTools {
    FakeTools {
        leader,
        config: BTreeMap::from([("mode".to_string(), json!(mode))]),
        relations: RELATIONS
            .iter()
            .map(|(e, id)| (e.to_string(), vec![id.to_string()]))
            .collect(),
        ..FakeTools::default()
    }
}

/// Every bag as the writes left it: (relation id, app) → key → value (empty values deleted).
fn bags(tools: &FakeTools) -> BTreeMap<(String, bool), BTreeMap<String, String>> {
    let mut out: BTreeMap<(String, bool), BTreeMap<String, String>> = BTreeMap::new();
    for (rid, values, app) in tools.sets.borrow().iter() {
        let bag = out.entry((rid.clone(), *app)).or_default();
        for (key, value) in values {
            if value.is_empty() {
                bag.remove(key);
            } else {
                bag.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

fn json_of(text: Option<&String>) -> Value {
    serde_json::from_str(text.map_or("null", String::as_str)).expect("JSON")
}

/// Asserts that every target of every probe job carries its source unit's topology.
fn assert_source_topology(jobs: &[Value], topology: &Topology) {
    let mut probe_jobs = 0;
    for job in jobs {
        let name = job["job_name"].as_str().expect("job name");
        for config in job["static_configs"].as_array().expect("static_configs") {
            let labels = &config["labels"];
            if !name.contains("meshprobe-probe-") {
                continue;
            }
            let source = labels["source"].as_str().expect("source label");
            assert!(name.contains(&source.replace('/', "-")), "{name}: {labels}");
            assert_eq!(labels["juju_unit"], source, "{name}");
            for (key, value) in topology.labels() {
                assert_eq!(labels[&key], value.as_str(), "{name}: {key}");
            }
        }
        probe_jobs += usize::from(name.contains("meshprobe-probe-"));
    }
    assert!(probe_jobs > 0, "no probe job in {jobs:?}");
}

#[test]
fn probe_mode_targets_carry_their_source_and_every_relation_gets_its_data() {
    for mode in ["probe", "both"] {
        let paths = temp_paths(&format!("cos-{mode}"));
        seed(&paths, 0, 4, true);
        let tools = tools(mode, true);
        let env = env("meshprobe/0", "update-status");
        assert_eq!(super::run(&env, &tools, paths.clone()), ExitCode::SUCCESS);
        let bags = bags(&tools);
        let topology = Topology::from_env(&env);
        let app = &bags[&("metrics-endpoint:3".to_string(), true)];
        let jobs = json_of(app.get("scrape_jobs"));
        let jobs = jobs.as_array().expect("jobs");
        assert_eq!(jobs.len(), if mode == "both" { 5 } else { 4 });
        assert_source_topology(jobs, &topology);
        let metadata = json_of(app.get("scrape_metadata"));
        assert_eq!(metadata["charm_name"], CHARM_NAME);
        assert_eq!(metadata["unit"], "meshprobe/0");
        let rules = json_of(app.get("alert_rules"));
        assert!(!rules["groups"].as_array().expect("groups").is_empty());

        let agent = json_of(bags[&("cos-agent:4".to_string(), false)].get("config"));
        let agent_jobs = agent["metrics_scrape_jobs"].as_array().expect("jobs");
        assert_eq!(
            agent_jobs.len(),
            if mode == "both" { 2 } else { 1 },
            "{mode}"
        );
        assert_source_topology(agent_jobs, &topology);
        assert!(compact(agent_jobs).contains(r#""replacement":"localhost:9115""#));
        assert_eq!(agent["metrics_alert_rules"], rules);
        assert_eq!(agent["dashboards"].as_array().map(Vec::len), Some(2));

        let manual = &bags[&("prometheus-manual:5".to_string(), false)];
        assert_eq!(manual.len(), jobs.len(), "{manual:?}");
        assert!(manual.values().all(|v| !v.contains("\"*:")), "{manual:?}");
        let dashboards =
            json_of(bags[&("grafana-dashboard:6".to_string(), true)].get("dashboards"));
        assert_eq!(
            dashboards["templates"].as_object().map(|t| t.len()),
            Some(2)
        );
        let _ = std::fs::remove_dir_all(&paths.root);
    }
}

#[test]
fn a_new_leader_rewrites_only_scrape_metadata() {
    let old = temp_paths("leader-old");
    seed(&old, 0, 3, true);
    let first = tools("mesh", true);
    assert_eq!(
        super::run(&env("meshprobe/0", "update-status"), &first, old.clone()),
        ExitCode::SUCCESS
    );
    let app = bags(&first)[&("metrics-endpoint:3".to_string(), true)].clone();
    // meshprobe/1 becomes the leader; the app bag holds what meshprobe/0 wrote.
    let new = temp_paths("leader-new");
    seed(&new, 1, 3, false);
    let mut second = tools("mesh", true);
    second.bags.insert("meshprobe".into(), app.clone());
    let env = env("meshprobe/1", "leader-elected");
    second.bags.insert(
        "meshprobe/0".into(),
        BTreeMap::from([("networks".into(), super::model::networks_json(&networks(0)))]),
    );
    second.bags.insert(
        "meshprobe/2".into(),
        BTreeMap::from([("networks".into(), super::model::networks_json(&networks(2)))]),
    );
    assert_eq!(super::run(&env, &second, new.clone()), ExitCode::SUCCESS);
    let app_writes: Vec<_> = second
        .sets
        .borrow()
        .iter()
        .filter(|(rid, _, app)| *app && rid == "metrics-endpoint:3")
        .map(|(_, values, _)| values.keys().cloned().collect::<Vec<_>>())
        .collect();
    assert_eq!(
        app_writes,
        [["scrape_metadata".to_string()]],
        "{app_writes:?}"
    );
    let metadata =
        json_of(bags(&second)[&("metrics-endpoint:3".to_string(), true)].get("scrape_metadata"));
    assert_eq!(metadata["unit"], "meshprobe/1");
    assert_eq!(metadata["charm_name"], CHARM_NAME);
    for paths in [old, new] {
        let _ = std::fs::remove_dir_all(&paths.root);
    }
}

#[test]
fn manual_requests_follow_the_jobs_and_leave_with_leadership() {
    let paths = temp_paths("manual");
    seed(&paths, 0, 4, true);
    let first = tools("probe", true);
    assert_eq!(
        super::run(&env("meshprobe/0", "update-status"), &first, paths.clone()),
        ExitCode::SUCCESS
    );
    let manual = |t: &FakeTools| {
        bags(t)
            .get(&("prometheus-manual:5".to_string(), false))
            .cloned()
            .unwrap_or_default()
    };
    assert!(manual(&first).contains_key("request_meshprobe-probe-meshprobe-3"));
    // meshprobe/3 leaves: its job's request is deleted, nothing else is rewritten needlessly.
    let mut departed = peer_env("mesh-relation-departed", "meshprobe/3");
    departed.departing_unit = Some("meshprobe/3".into());
    departed.model_uuid = "5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a".into();
    let second = tools("probe", true);
    assert_eq!(
        super::run(&departed, &second, paths.clone()),
        ExitCode::SUCCESS
    );
    let deleted: Vec<String> = second
        .sets
        .borrow()
        .iter()
        .filter(|(rid, _, _)| rid == "prometheus-manual:5")
        .flat_map(|(_, values, _)| {
            values
                .iter()
                .filter(|(_, v)| v.is_empty())
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(deleted, ["request_meshprobe-probe-meshprobe-3"]);
    // Losing leadership withdraws every request.
    let third = tools("probe", false);
    let mut env = env("meshprobe/0", "leader-settings-changed");
    env.model_uuid = "5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a".into();
    assert_eq!(super::run(&env, &third, paths.clone()), ExitCode::SUCCESS);
    let sets = third.sets.borrow();
    let withdrawn: Vec<&String> = sets
        .iter()
        .filter(|(rid, _, _)| rid == "prometheus-manual:5")
        .flat_map(|(_, values, _)| values.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| k))
        .collect();
    assert_eq!(withdrawn.len(), 3, "{withdrawn:?}");
    let _ = std::fs::remove_dir_all(&paths.root);
}

/// The size of every bag for 200 units on two /16 networks (the README's scale case).
#[test]
fn relation_data_at_200_units() {
    let units: BTreeMap<String, UnitData> = (0..200u32)
        .map(|n| {
            let (hi, lo) = (n / 250 + 1, n % 250 + 1);
            let nets = vec![
                network(&format!("198.18.{hi}.{lo}"), "198.18.0.0/16"),
                network(&format!("198.19.{hi}.{lo}"), "198.19.0.0/16"),
            ];
            let exporter = Some(format!("198.18.{hi}.{lo}:9115"));
            (
                format!("meshprobe/{n}"),
                UnitData {
                    networks: nets,
                    exporter,
                    group: None,
                },
            )
        })
        .collect();
    let topology = super::cos::tests::topology();
    let mut sizes = BTreeMap::new();
    for mode in [Mode::Mesh, Mode::Probe, Mode::Both] {
        let input = JobInput {
            mode,
            port: 9115,
            units: units.clone(),
            rules: crate::charm::publish::PlanRules {
                selectors: vec![NetworkSelector::All],
                paths: None,
                has_route: |_| false,
            },
            topology: topology.clone(),
        };
        let manual: usize = input
            .manual_jobs()
            .iter()
            .map(|j| compact(j).len() + 64)
            .sum();
        sizes.insert(
            format!("{mode:?} scrape_jobs"),
            compact(&input.scrape_jobs()).len(),
        );
        sizes.insert(
            format!("{mode:?} prometheus-manual (leader unit bag)"),
            manual,
        );
        sizes.insert(
            format!("{mode:?} cos-agent jobs (one unit)"),
            compact(&input.local_jobs("meshprobe/7")).len(),
        );
    }
    sizes.insert(
        "alert_rules".into(),
        compact(&super::cos::alert_rules(&topology)).len(),
    );
    sizes.insert(
        "cos-agent dashboards".into(),
        compact(&super::dashboards::encoded().expect("encode")).len(),
    );
    sizes.insert(
        "grafana-dashboard dashboards".into(),
        compact(&super::dashboards::grafana_dashboard_data(&topology).expect("encode")).len(),
    );
    for (what, bytes) in &sizes {
        eprintln!("200 units × 2 networks: {what}: {bytes} bytes");
    }
    // Far below Juju's practical limits (16 MB documents): the compact per-source form.
    assert!(sizes["Both scrape_jobs"] < 2_000_000, "{sizes:?}");
    assert!(
        sizes["Both cos-agent jobs (one unit)"] < 20_000,
        "{sizes:?}"
    );
}
