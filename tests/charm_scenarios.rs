//! Charm scenarios on the Juju model simulator (`tests/charm_sim/`): exact plans on a small
//! mixed network, a 200-unit bring-up (`MPSIM_SCALE` caps it: 100 under ./test.sh), scaling by
//! one, leader removal, an address change and bad peer data, all asserted against
//! charm/README.md (readings of ambiguous points are in `charm_sim/contract.rs`). Each test
//! writes a report table to stderr and appends it to target/charm-sim-report.md. Scenarios run
//! one at a time (they share 2 cores).

mod charm_sim;

use charm_sim::Sim;
use charm_sim::contract::{self, MESH_JOBS};
use charm_sim::model::{APP, METRICS, PEER};
use charm_sim::netns::{Iface, two_nets};
use charm_sim::report::Report;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn layouts(sim: &Sim, all: &BTreeMap<String, Vec<Iface>>) -> BTreeMap<String, Vec<Iface>> {
    let alive = sim.alive_units();
    all.iter()
        .filter(|(u, _)| alive.contains(u))
        .map(|(u, l)| (u.clone(), l.clone()))
        .collect()
}

/// Asserts every alive unit's peers.json is exactly its plan over the alive peers.
fn assert_peer_files(sim: &Sim, all: &BTreeMap<String, Vec<Iface>>) {
    let alive = layouts(sim, all);
    for (unit, layout) in &alive {
        let peers = alive
            .iter()
            .filter(|(u, _)| *u != unit)
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect();
        let (want, _) = contract::plan(layout, &peers);
        let file = sim
            .peers_json(unit)
            .unwrap_or_else(|| panic!("{unit} has no peers.json"));
        assert_eq!(
            contract::peers_file_targets(&file),
            want,
            "peers.json of {unit}"
        );
    }
}

fn scrape_jobs(sim: &Sim) -> String {
    sim.bag(METRICS, APP)
        .get("scrape_jobs")
        .cloned()
        .unwrap_or_default()
}

/// Deploys `n` units with `two_nets`, settles and reports the bring-up. In mesh mode the
/// leader must have published `scrape_jobs` exactly once.
fn bring_up(sim: &mut Sim, n: usize, title: &str) -> (BTreeMap<String, Vec<Iface>>, Report) {
    let names = sim.add_units((0..n).map(two_nets).collect());
    sim.settle();
    let report = sim.take_report(title);
    assert!(
        report.c.failed.is_empty(),
        "failed hooks: {:?}",
        &report.c.failed[..report.c.failed.len().min(5)]
    );
    assert!(
        report.c.sim_errors.is_empty(),
        "tool misuse: {:?}",
        report.c.sim_errors
    );
    assert_eq!(
        report.c.scrape_jobs_changes, 1,
        "the leader publishes once in mesh mode"
    );
    assert_eq!(report.c.restarts, 0, "no service restarts during bring-up");
    (
        names
            .into_iter()
            .enumerate()
            .map(|(i, u)| (u, two_nets(i)))
            .collect(),
        report,
    )
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn three_units_with_different_networks_get_exact_plans() {
    let _serial = serial();
    let mut sim = Sim::new();
    // A: two IPv4 networks; B: the first only; C: the second plus an IPv6 network nobody shares.
    // (2001:2:30::/64 from the brief lies outside 2001:2::/48; 2001:2:0:30::/64 is inside.)
    let layouts = vec![
        vec![
            Iface::new("eth0", &["198.18.10.1/24"]),
            Iface::new("eth1", &["198.18.20.1/24"]),
        ],
        vec![Iface::new("eth0", &["198.18.10.2/24"])],
        vec![
            Iface::new("eth0", &["198.18.20.3/24"]),
            Iface::new("eth1", &["2001:2:0:30::3/64"]),
        ],
    ];
    let names = sim.add_units(layouts.clone());
    let all: BTreeMap<String, Vec<Iface>> = names.iter().cloned().zip(layouts.clone()).collect();
    sim.settle();
    sim.assert_no_failures();
    for (unit, layout) in &all {
        let bag = sim.bag(PEER, unit);
        assert_eq!(
            bag.get("networks"),
            Some(&contract::networks_json(layout)),
            "networks of {unit}"
        );
        assert_eq!(
            bag.get("exporter"),
            Some(&contract::exporter(layout, 9115)),
            "exporter of {unit}"
        );
        let m = sim.bag(METRICS, unit);
        assert_eq!(
            m.get("prometheus_scrape_unit_name"),
            Some(unit),
            "{unit} metrics bag: {m:?}"
        );
        let addr = contract::exporter(layout, 9115)
            .rsplit_once(':')
            .map(|(a, _)| a.to_string());
        assert_eq!(
            m.get("prometheus_scrape_unit_address"),
            addr.as_ref(),
            "{unit} metrics bag"
        );
    }
    let expect = |unit: &str, targets: &[(&str, &str, &str)], unplaced: &[&str]| {
        let r = sim.run_action(unit, "show-targets", json!({}));
        assert_eq!(r.exit, 0, "show-targets on {unit}: {}", r.stderr);
        let (got, got_unplaced) = contract::show_targets(&r.results);
        let want: std::collections::BTreeSet<_> = targets
            .iter()
            .map(|(p, n, a)| (p.to_string(), n.to_string(), a.to_string()))
            .collect();
        assert_eq!(got, want, "show-targets of {unit}");
        assert_eq!(
            got_unplaced,
            unplaced.iter().map(|s| s.to_string()).collect(),
            "unplaced of {unit}"
        );
        let file = sim
            .peers_json(unit)
            .unwrap_or_else(|| panic!("{unit} has no peers.json"));
        assert_eq!(
            contract::peers_file_targets(&file),
            want,
            "peers.json of {unit}"
        );
    };
    expect(
        "meshprobe/0",
        &[
            ("meshprobe/1", "198.18.10.0/24", "198.18.10.2"),
            ("meshprobe/2", "198.18.20.0/24", "198.18.20.3"),
        ],
        &[],
    );
    expect(
        "meshprobe/1",
        &[("meshprobe/0", "198.18.10.0/24", "198.18.10.1")],
        &["meshprobe/2"],
    );
    expect(
        "meshprobe/2",
        &[("meshprobe/0", "198.18.20.0/24", "198.18.20.1")],
        &["meshprobe/1"],
    );
    assert_eq!(scrape_jobs(&sim), MESH_JOBS);
    let meta: serde_json::Value = serde_json::from_str(
        sim.bag(METRICS, APP)
            .get("scrape_metadata")
            .map_or("null", |s| s),
    )
    .expect("scrape_metadata is JSON");
    assert_eq!(meta["application"], APP);
    assert_eq!(meta["model"], charm_sim::model::MODEL_NAME);
    assert_eq!(meta["model_uuid"], charm_sim::model::MODEL_UUID);
    sim.take_report("3 units, mixed networks: bring-up (mesh)");

    sim.set_config("mode", json!("probe"));
    sim.settle();
    sim.assert_no_failures();
    let got = contract::parse_probe_jobs(&scrape_jobs(&sim));
    assert_eq!(got, contract::expected_probe_jobs(&all));
    let r = sim.take_report("3 units, mixed networks: mesh → probe");
    assert_eq!(r.c.scrape_jobs_changes, 1);
    assert_every_probe_target_carries_its_source(&sim);
}

/// Renders the metrics-endpoint data as the prometheus_scrape consumer does and asserts that
/// every probe target is labelled with its source unit (and every target with the charm).
fn assert_every_probe_target_carries_its_source(sim: &Sim) {
    let addresses: BTreeMap<String, String> = sim
        .alive_units()
        .into_iter()
        .filter_map(|u| {
            let address = sim
                .bag(METRICS, &u)
                .get("prometheus_scrape_unit_address")?
                .clone();
            Some((u, address))
        })
        .collect();
    let jobs = charm_sim::cos::prometheus_scrape_jobs(&sim.bag(METRICS, APP), &addresses);
    let mut probe_targets = 0;
    for job in &jobs {
        let name = job["job_name"].as_str().expect("job name");
        for sc in job["static_configs"].as_array().expect("static_configs") {
            let labels = &sc["labels"];
            assert_eq!(labels["juju_charm"], "meshprobe", "{name}: {labels}");
            let unit = labels["juju_unit"].as_str();
            assert!(unit.is_some(), "{name}: a target without juju_unit: {sc}");
            if name.contains("meshprobe-probe-") {
                assert_eq!(labels["source"].as_str(), unit, "{name}: {labels}");
                probe_targets += sc["targets"].as_array().map_or(0, Vec::len);
            }
        }
    }
    assert!(probe_targets > 0, "no probe targets in {jobs:?}");
}

/// Units in a large scenario: `full` (200 for the bring-up, 50 for the leader scenario), or
/// `MPSIM_SCALE` when that is smaller. ./test.sh caps them at 100 to keep the suite within
/// 10 minutes on 2 cores; .ci/run sets 200, the full scale.
fn scale(full: usize) -> usize {
    std::env::var("MPSIM_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(full, |cap: usize| cap.min(full))
}

fn peer_targets(
    sim: &Sim,
    units: &[String],
) -> BTreeMap<String, std::collections::BTreeSet<contract::Target>> {
    units
        .iter()
        .map(|u| {
            (
                u.clone(),
                sim.peers_json(u)
                    .map(|f| contract::peers_file_targets(&f))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Asserts that each unit's peers.json differs from `before` by exactly `peer`'s targets
/// (added when `added`, removed otherwise).
fn assert_changed_by(
    sim: &Sim,
    before: &BTreeMap<String, std::collections::BTreeSet<contract::Target>>,
    peer: &str,
    added: bool,
) {
    for (unit, old) in before {
        if unit == peer {
            continue;
        }
        let new = sim
            .peers_json(unit)
            .map(|f| contract::peers_file_targets(&f))
            .unwrap_or_default();
        let (bigger, smaller) = if added { (&new, old) } else { (old, &new) };
        let diff: Vec<_> = bigger.difference(smaller).collect();
        assert!(
            smaller.is_subset(bigger),
            "{unit}: peers.json lost unrelated targets"
        );
        assert_eq!(
            diff.len(),
            2,
            "{unit}: peers.json must change by {peer}'s 2 targets, got {diff:?}"
        );
        assert!(diff.iter().all(|t| t.0 == peer), "{unit}: {diff:?}");
    }
}

/// One 200-unit bring-up serves both scenarios (each costs ~80 000 hooks): the bring-up itself,
/// then, in mesh and in probe mode, removing one unit (200 → 199) and adding one back (199 → 200).
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bring_up_200_units_then_remove_and_add_one() {
    let _serial = serial();
    let mut sim = Sim::new();
    let n = scale(200);
    let (mut all, report) = bring_up(
        &mut sim,
        n,
        &format!("{n} units × 2 networks: bring-up (mesh)"),
    );
    eprintln!(
        "{n}-unit bring-up: {} hooks in {:.0} s",
        report.total_hooks(),
        report.elapsed.as_secs_f64()
    );
    for unit in all.keys() {
        let file = sim
            .peers_json(unit)
            .unwrap_or_else(|| panic!("{unit} has no peers.json"));
        assert_eq!(
            contract::peers_file_targets(&file).len(),
            (n - 1) * 2,
            "{unit}"
        );
    }
    assert_peer_files(&sim, &all);
    assert_eq!(scrape_jobs(&sim), MESH_JOBS);
    for mode in ["mesh", "probe"] {
        if mode == "probe" {
            sim.set_config("mode", json!("probe"));
            sim.settle();
            sim.assert_no_failures();
            assert_eq!(
                contract::parse_probe_jobs(&scrape_jobs(&sim)),
                contract::expected_probe_jobs(&layouts(&sim, &all))
            );
            let r = sim.take_report(&format!("{} units: mesh → probe", sim.alive_units().len()));
            assert_eq!(
                r.c.scrape_jobs_changes, 1,
                "one publication of the final probe jobs"
            );
        }
        let want_events = if mode == "mesh" { 0 } else { 1 };

        let units = sim.alive_units();
        let before = peer_targets(&sim, &units);
        let gone = units[units.len() / 2].clone();
        sim.remove_unit(&gone);
        sim.settle();
        let r = sim.take_report(&format!(
            "{mode} mode: remove {gone} ({} → {} units)",
            units.len(),
            units.len() - 1
        ));
        assert!(r.c.failed.is_empty(), "{:?}", r.c.failed.first());
        assert_eq!(
            r.hook("mesh-relation-departed") as usize,
            2 * (units.len() - 1),
            "one departed per remaining unit, and one per peer on the leaver"
        );
        if mode == "mesh" {
            assert_changed_by(&sim, &before, &gone, false);
            assert_peer_files(&sim, &all);
        }
        assert_eq!(
            r.c.restarts, 0,
            "membership changes never restart the service"
        );
        assert_eq!(
            r.c.prometheus_changed, want_events,
            "Prometheus-side relation-changed events after removing a unit in {mode} mode"
        );

        let units = sim.alive_units();
        let before = peer_targets(&sim, &units);
        let idx = sim.core().model.units.len();
        let added = sim.add_units(vec![two_nets(idx)]).remove(0);
        all.insert(added.clone(), two_nets(idx));
        sim.settle();
        let r = sim.take_report(&format!(
            "{mode} mode: add {added} to {} units",
            units.len()
        ));
        assert!(r.c.failed.is_empty(), "{:?}", r.c.failed.first());
        // peers.json feeds the mesh prober: it is only kept current in mesh (and both) mode.
        if mode == "mesh" {
            assert_changed_by(&sim, &before, &added, true);
            assert_peer_files(&sim, &all);
        }
        assert_eq!(
            r.c.restarts, 0,
            "membership changes never restart the service"
        );
        assert_eq!(
            r.c.prometheus_changed, want_events,
            "Prometheus-side relation-changed events after adding a unit in {mode} mode"
        );
        if mode == "probe" {
            assert_eq!(
                contract::parse_probe_jobs(&scrape_jobs(&sim)),
                contract::expected_probe_jobs(&layouts(&sim, &all))
            );
        }
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn removing_the_leader_rewrites_only_scrape_metadata() {
    let _serial = serial();
    let mut sim = Sim::new();
    let n = scale(50);
    let (all, _) = bring_up(&mut sim, n, &format!("{n} units: bring-up (mesh)"));
    let before = sim.bag(METRICS, APP);
    let leader = sim.leader().expect("a leader");
    sim.remove_unit(&leader);
    sim.settle();
    let r = sim.take_report(&format!("{n} units: remove the leader {leader}"));
    assert!(r.c.failed.is_empty(), "{:?}", r.c.failed.first());
    let new_leader = sim.leader().expect("a new leader");
    assert_ne!(new_leader, leader);
    assert_eq!(r.hook("leader-elected"), 1);
    assert_eq!(r.hook("leader-settings-changed") as usize, n - 2);
    let after = sim.bag(METRICS, APP);
    let mut changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    changed.dedup();
    // `scrape_metadata.unit` names the leader (as the prometheus_scrape library has it), so a
    // leader change rewrites that key and only that key: one event on the Prometheus side.
    assert_eq!(changed, ["scrape_metadata"], "{before:?} → {after:?}");
    let metadata: serde_json::Value =
        serde_json::from_str(&after["scrape_metadata"]).expect("scrape_metadata is JSON");
    assert_eq!(metadata["unit"], new_leader.as_str());
    assert_eq!(metadata["charm_name"], "meshprobe");
    assert_eq!(r.c.prometheus_changed, 1);
    assert_peer_files(&sim, &all);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn an_address_change_reaches_the_peers() {
    let _serial = serial();
    let mut sim = Sim::new();
    let (mut all, _) = bring_up(&mut sim, 4, "4 units: bring-up (mesh)");
    let unit = "meshprobe/1";
    sim.with_net(unit, |net| {
        net.change_address("198.18.1.2/16", "198.18.1.102/16")
    });
    all.insert(
        unit.to_string(),
        vec![
            Iface::new("eth0", &["198.18.1.102/16"]),
            Iface::new("eth1", &["198.19.1.2/16"]),
        ],
    );
    sim.queue(unit, "config-changed");
    sim.settle();
    let r = sim.take_report("4 units: one unit's address changes");
    assert!(r.c.failed.is_empty(), "{:?}", r.c.failed.first());
    assert_eq!(
        sim.bag(PEER, unit).get("networks"),
        Some(&contract::networks_json(&all[unit]))
    );
    assert_eq!(
        r.hook("mesh-relation-changed"),
        3,
        "each peer gets one -changed for the unit"
    );
    assert_peer_files(&sim, &all);
    assert_eq!(r.c.restarts, 0);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bad_peer_data_fails_no_hook_and_is_named() {
    let _serial = serial();
    let mut sim = Sim::new();
    let (all, _) = bring_up(&mut sim, 6, "6 units: bring-up (mesh)");
    let entry = r#"{"address":"198.18.77.1","cidr":"198.18.77.0/24","interface":"eth9"}"#;
    let huge = format!(
        "[{}]",
        vec![entry; 10 * 1024 * 1024 / entry.len()].join(",")
    );
    type Changes = Vec<(&'static str, Option<String>)>;
    let bad: Vec<(&str, Changes)> = vec![
        (
            "meshprobe/2",
            vec![("networks", Some("[{not json".to_string()))],
        ),
        (
            "meshprobe/3",
            vec![(
                "networks",
                Some(
                    r#"[{"address":"198.18.1.4","cidr":"198.18.0.0/33","interface":"eth0"}]"#
                        .to_string(),
                ),
            )],
        ),
        ("meshprobe/4", vec![("networks", Some(huge))]),
        ("meshprobe/5", vec![("networks", None), ("exporter", None)]),
    ];
    for (unit, changes) in &bad {
        sim.inject(
            PEER,
            unit,
            changes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
    }
    sim.settle();
    let r = sim.take_report("6 units: 4 peers publish bad data");
    assert!(
        r.c.failed.is_empty(),
        "no hook may fail on bad peer data: {:?}",
        r.c.failed.first()
    );
    let good: BTreeMap<String, Vec<Iface>> = all
        .iter()
        .filter(|(u, _)| *u == "meshprobe/0" || *u == "meshprobe/1")
        .map(|(u, l)| (u.clone(), l.clone()))
        .collect();
    for (unit, layout) in &good {
        let (status, message) = sim.status(unit);
        for (b, _) in &bad {
            assert!(
                message.contains(b),
                "status of {unit} ({status}: {message}) must name {b}"
            );
        }
        let peers = good
            .iter()
            .filter(|(u, _)| *u != unit)
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect();
        let (want, _) = contract::plan(layout, &peers);
        let file = sim.peers_json(unit).expect("peers.json");
        let got: std::collections::BTreeSet<_> = contract::peers_file_targets(&file)
            .into_iter()
            .filter(|t| good.contains_key(&t.0))
            .collect();
        assert_eq!(got, want, "{unit}: plan for the good peers is unaffected");
        let action = sim.run_action(unit, "show-targets", json!({}));
        let (targets, _) = contract::show_targets(&action.results);
        let targets: std::collections::BTreeSet<_> = targets
            .into_iter()
            .filter(|t| good.contains_key(&t.0))
            .collect();
        assert_eq!(targets, want, "{unit}: show-targets for the good peers");
    }
}
