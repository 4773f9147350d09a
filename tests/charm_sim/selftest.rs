//! The simulator's own tests: a tiny shell charm (its `dispatch` calls the fake hook tools and
//! logs what it sees under `$MESHPROBE_CHARM_ROOT/log`) driven through Juju's hook order, to
//! check ordering, coalescing, commit-on-exit-0, databag permissions, tool output formats,
//! actions, departures and leader change. Independent of the real charm.

use super::Sim;
use super::model::PEER;
use super::netns::Iface;
use serde_json::json;
use std::collections::BTreeMap;

const CHARM: &str = r#"#!/bin/sh
L="$MESHPROBE_CHARM_ROOT/log"
say() { printf '%s\n' "$*" >> "$L"; }
case "$JUJU_DISPATCH_PATH" in
hooks/install)
  status-set maintenance installing
  say "addrs $(ip -o addr show scope global | awk '{print $2, $4}' | sort | tr '\n' ' ')"
  say "up $(ip -o link show up | grep -c 'state UP')" ;;
hooks/mesh-relation-created)
  printf '{"addr": "%s"}' "$(network-get mesh --bind-address)" | relation-set -r "$JUJU_RELATION_ID" --file - ;;
hooks/leader-elected) relation-set -r mesh:1 --app leader="$JUJU_UNIT_NAME"; say "leader-elected" ;;
hooks/leader-settings-changed)
  if relation-set -r mesh:1 --app leader=me 2>/dev/null; then say "app-write allowed"; else say "app-write denied"; fi ;;
hooks/config-changed)
  mode=$(config-get mode)
  relation-set -r mesh:1 "mode=$mode"
  if [ "$mode" = fail ]; then status-set blocked failing; exit 1; fi ;;
hooks/start) status-set active started; say "ids $(relation-ids --format=json mesh) port $(config-get --format=json port)"; open-port icmp ;;
hooks/mesh-relation-joined) say "joined $JUJU_REMOTE_UNIT list=$(relation-list --format=json)" ;;
hooks/mesh-relation-changed)
  if [ -z "$JUJU_REMOTE_UNIT" ]; then say "app-changed $(relation-get --format=json leader)"
  else say "changed $JUJU_REMOTE_UNIT addr=$(relation-get --format=json addr) missing=$(relation-get --format=json nope)"; fi ;;
hooks/mesh-relation-departed) say "departed $JUJU_REMOTE_UNIT by=$JUJU_DEPARTING_UNIT list=$(relation-list --format=json)" ;;
hooks/metrics-endpoint-relation-changed)
  if out=$(relation-get -r "$JUJU_RELATION_ID" --app --format=json - meshprobe 2>&1); then say "own-app-read ok $out"; else say "own-app-read $out"; fi
  say "is-leader $(is-leader --format=json)" ;;
actions/hello) action-set greeting="hi $(action-get who)" ;;
esac
exit 0
"#;

fn layout(n: u32) -> Vec<Iface> {
    vec![
        Iface::new("eth0", &[&format!("198.18.10.{}/24", n + 1)]),
        Iface::new(
            "eth1",
            &[
                &format!("198.18.20.{}/24", n + 1),
                &format!("2001:2:0:20::{}/64", n + 1),
            ],
        ),
    ]
}

fn log(sim: &Sim, unit: &str) -> String {
    std::fs::read_to_string(sim.root(unit).join("log")).unwrap_or_default()
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn sim_runs_a_shell_charm_through_juju_semantics() {
    let mut sim = Sim::new();
    sim.set_dispatch(CHARM);
    let units = sim.add_units((0..3).map(layout).collect());
    sim.settle();
    sim.assert_no_failures();
    let setup = sim.take_report("selftest: setup");
    assert_eq!(setup.hook("install"), 3);
    assert_eq!(setup.hook("mesh-relation-joined"), 6);
    assert!(
        setup.hook("mesh-relation-changed") >= 6 + 2,
        "{}",
        setup.markdown()
    );

    // Namespaces: the unit sees its own addresses; veth ends are operationally up.
    let l1 = log(&sim, "meshprobe/1");
    assert!(
        l1.contains("addrs eth0 198.18.10.2/24 eth1 198.18.20.2/24 eth1 2001:2:0:20::2/64"),
        "{l1}"
    );
    assert!(l1.contains("up 4"), "{l1}");
    // Tool formats and permissions.
    assert!(
        l1.contains("changed meshprobe/0 addr=\"198.18.10.1\" missing=null"),
        "{l1}"
    );
    assert!(l1.contains("app-write denied"), "{l1}");
    assert!(l1.contains("app-changed \"meshprobe/0\""), "{l1}");
    assert!(l1.contains("ids [\"mesh:1\"] port 9115"), "{l1}");
    assert!(l1.contains("own-app-read ERROR permission denied"), "{l1}");
    assert!(l1.contains("is-leader false"), "{l1}");
    let l0 = log(&sim, "meshprobe/0");
    assert!(l0.contains("own-app-read ok {}"), "{l0}");
    assert!(l0.contains("is-leader true"), "{l0}");
    assert!(
        !l0.contains("app-changed"),
        "the leader gets no event for its own app-bag write: {l0}"
    );
    let joined: Vec<&str> = l0.lines().filter(|l| l.starts_with("joined")).collect();
    assert_eq!(joined.len(), 2);
    assert!(
        joined[1].contains("[\"meshprobe/1\",\"meshprobe/2\"]"),
        "relation-list excludes self: {joined:?}"
    );
    assert_eq!(sim.bag(PEER, "meshprobe")["leader"], "meshprobe/0");
    assert_eq!(
        sim.status("meshprobe/2"),
        ("active".into(), "started".into())
    );
    assert!(sim.ports("meshprobe/2").contains("icmp"));
    // Hook order per unit.
    let recs = sim.records();
    assert!(recs.is_empty(), "take_report clears records");

    // One write per unit: each other unit gets exactly one -changed for it.
    sim.set_config("mode", json!("probe"));
    sim.settle();
    sim.assert_no_failures();
    let r = sim.take_report("selftest: config change");
    assert_eq!(
        (r.hook("config-changed"), r.hook("mesh-relation-changed")),
        (3, 6),
        "{}",
        r.markdown()
    );

    // Coalescing: two commits to one bag before the others run → one -changed each.
    for v in ["1", "2"] {
        sim.inject(
            PEER,
            "meshprobe/2",
            BTreeMap::from([("x".to_string(), Some(v.to_string()))]),
        );
    }
    sim.settle();
    let r = sim.take_report("selftest: coalescing");
    assert_eq!(r.hook("mesh-relation-changed"), 2, "{}", r.markdown());

    // Commit only on exit 0; status-set applies anyway.
    sim.set_config("mode", json!("fail"));
    sim.settle();
    let r = sim.take_report("selftest: failing hook");
    assert_eq!(r.c.failed.len(), 3);
    assert_eq!(
        r.hook("mesh-relation-changed"),
        0,
        "failed hooks commit nothing"
    );
    assert_eq!(sim.bag(PEER, "meshprobe/1")["mode"], "probe");
    assert_eq!(sim.status("meshprobe/1").0, "blocked");

    // Actions.
    let a = sim.run_action("meshprobe/1", "hello", json!({"who": "bob"}));
    assert_eq!(
        a.results.get("greeting").map(String::as_str),
        Some("hi bob"),
        "{a:?}"
    );

    // Departure of a non-leader, then of the leader.
    sim.remove_unit("meshprobe/2");
    sim.settle();
    let l2 = log(&sim, "meshprobe/2");
    assert_eq!(
        l2.lines()
            .filter(|l| l.starts_with("departed") && l.contains("by=meshprobe/2"))
            .count(),
        2,
        "{l2}"
    );
    assert!(
        log(&sim, "meshprobe/0")
            .contains("departed meshprobe/2 by=meshprobe/2 list=[\"meshprobe/1\"]")
    );
    sim.remove_unit(&units[0]);
    sim.settle();
    let r = sim.take_report("selftest: removals");
    assert_eq!(sim.leader().as_deref(), Some("meshprobe/1"));
    assert_eq!(r.hook("leader-elected"), 1);
    assert!(log(&sim, "meshprobe/1").contains("leader-elected"));
    assert_eq!(r.hook("remove"), 2);
}
