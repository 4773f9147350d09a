//! A Juju model simulator for testing the meshprobe charm without Juju: units of `meshprobe`
//! (subordinates of `ubuntu/N` on machine N, each in its own `mpc-*` network namespace),
//! relations `mesh:1` (peers), `juju-info:2` (container scope) and `metrics-endpoint:3` (to
//! `prometheus/0`), fake hook tools on PATH backed by files, Juju's hook order and coalescing,
//! commit-on-exit-0, and a per-phase report.
//!
//! Owns the public API the scenarios use (`Sim`), the shared state behind one mutex (`Core`),
//! and the worker threads. Submodules: `model` (state and its file mirror), `tools` (the sh
//! hook tools), `runner` (hook selection, environment, execution, commit), `netns` (namespaces),
//! `report` (counters and the report table), `cos` (what COS does with the relation data),
//! `selftest` (the simulator's own tests, with a
//! tiny shell charm). It knows nothing of what the charm should compute.

#![allow(dead_code)]

pub mod commit;
pub mod contract;
pub mod cos;
pub mod model;
pub mod netns;
pub mod report;
pub mod runner;
pub mod sched;
pub mod tools;

#[path = "../support/needs.rs"]
mod needs;

#[cfg(test)]
mod selftest;

use model::{APP, JUJU_INFO, Life, METRICS, Model, PEER, UnitState, file_name};
use netns::{Iface, UnitNet};
use report::{Counters, Report};
pub use sched::{Core, Shared};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Worker threads: independent units' hooks run in parallel (Juju serialises per machine only).
pub const WORKERS: usize = 2;
static NEXT_SIM: AtomicUsize = AtomicUsize::new(0);

/// One hook or action to run on a unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hook {
    /// `install`, `mesh-relation-changed`, … or the action name.
    pub name: String,
    pub rel: Option<u32>,
    pub remote_unit: String,
    pub remote_app: String,
    pub departing: String,
    /// Action parameters (an object) when this is an action.
    pub action: Option<Value>,
}

impl Hook {
    pub fn op(name: &str) -> Hook {
        Hook {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn relation(endpoint: &str, kind: &str, rid: u32, remote: &str) -> Hook {
        Hook {
            name: format!("{endpoint}-relation-{kind}"),
            rel: Some(rid),
            remote_unit: remote.to_string(),
            ..Default::default()
        }
    }
}

/// One hook run.
#[derive(Clone, Debug)]
pub struct HookRecord {
    pub unit: String,
    pub hook: String,
    pub remote: String,
    pub wall: Duration,
    pub exit: i32,
    pub relation_gets: u32,
    pub stdout: String,
    pub stderr: String,
    /// (tool, args) per hook-tool call; only kept when `Sim::keep_calls` is on.
    pub calls: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Debug, Default)]
pub struct ActionResult {
    pub unit: String,
    pub name: String,
    pub results: BTreeMap<String, String>,
    pub failed: Option<String>,
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
}

pub struct Sim {
    shared: Arc<Shared>,
    base: PathBuf,
    charm_dir: PathBuf,
    tools: PathBuf,
    id: usize,
    stop: Arc<AtomicBool>,
    watchdog: Option<std::thread::JoinHandle<()>>,
    phase_start: Instant,
}

/// The charm's config defaults (charm/README.md "Config").
pub fn default_config() -> BTreeMap<String, Value> {
    [
        ("mode", json!("mesh")),
        ("networks", json!("all")),
        ("interval", json!("1s")),
        ("modules", json!("")),
        ("port", json!(9115)),
        ("allowed-targets", json!("")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Sim {
    /// A new empty model; fails the test when namespaces cannot be created (the scenarios are
    /// `#[ignore]`d: `./test.sh` runs them as root).
    pub fn new() -> Sim {
        needs::namespaces();
        let id = NEXT_SIM.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("mpc-sim-{}-{id}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let state = base.join("state");
        let tools = base.join("tools");
        let charm_dir = base.join("charm");
        std::fs::create_dir_all(&state).expect("create state dir");
        tools::install(&tools);
        install_charm(&charm_dir);
        let mut model = Model::new(state);
        model.config = default_config();
        model.write_config();
        model.write_goal_state();
        let core = Core {
            model,
            nets: BTreeMap::new(),
            ready: VecDeque::new(),
            ready_set: BTreeSet::new(),
            running: 0,
            counters: Counters::default(),
            records: Vec::new(),
            actions: Vec::new(),
            keep_calls: false,
            seq: 0,
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            cv: Condvar::new(),
            watched: Mutex::new(BTreeMap::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let now = Instant::now();
                    for (pid, deadline) in shared.watched.lock().expect("watch lock").iter() {
                        if *deadline < now {
                            // SAFETY: signalling a process group this simulator started.
                            unsafe { libc::kill(-pid, libc::SIGKILL) };
                        }
                    }
                }
            })
        };
        Sim {
            shared,
            base,
            charm_dir,
            tools,
            id,
            stop,
            watchdog: Some(watchdog),
            phase_start: Instant::now(),
        }
    }

    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.shared
            .core
            .lock()
            .expect("simulator lock poisoned (a worker panicked)")
    }

    /// Records every hook-tool call in `HookRecord::calls` (small tests only).
    pub fn keep_calls(&self, on: bool) {
        self.core().keep_calls = on;
    }

    /// Adds units with the given interface layouts and queues their setup hooks: install →
    /// mesh/juju-info/metrics-endpoint -relation-created → leader-elected (the first unit of an
    /// empty model) or leader-settings-changed → config-changed → start. Returns their names.
    pub fn add_units(&self, layouts: Vec<Vec<Iface>>) -> Vec<String> {
        let mut core = self.core();
        let first = core.model.units.len();
        let names: Vec<String> = (first..first + layouts.len())
            .map(|n| format!("mpc-{}-{}-{n}", std::process::id(), self.id))
            .collect();
        let nets = netns::create(&names, layouts);
        let mut added = Vec::new();
        for (i, net) in nets.into_iter().enumerate() {
            let num = (first + i) as u32;
            let name = format!("{APP}/{num}");
            let dir = core.model.state.join("u").join(file_name(&name));
            let root = dir.join("root");
            std::fs::create_dir_all(&root).expect("create unit root");
            let address = model::primary_address(&net.layout);
            let leader = core.model.leader.is_none();
            if leader {
                core.model.leader = Some(name.clone());
            }
            let mut queue: VecDeque<Hook> = VecDeque::new();
            queue.push_back(Hook::op("install"));
            for (endpoint, rid) in [
                ("mesh", PEER),
                ("juju-info", JUJU_INFO),
                ("metrics-endpoint", METRICS),
            ] {
                queue.push_back(Hook::relation(endpoint, "created", rid, ""));
            }
            queue.push_back(Hook::op(if leader {
                "leader-elected"
            } else {
                "leader-settings-changed"
            }));
            queue.push_back(Hook::op("config-changed"));
            queue.push_back(Hook::op("start"));
            let principal = format!("ubuntu/{num}");
            core.model.enter_scope(JUJU_INFO, &principal, &address);
            let u = core.model.units.len();
            core.model.units.push(UnitState {
                num,
                name: name.clone(),
                file: file_name(&name),
                principal,
                life: Life::Alive,
                installed: false,
                started: false,
                workload: ("unknown".into(), String::new()),
                views: BTreeMap::new(),
                queue,
                root,
                dir,
                peers_file: None,
                zone: String::new(),
                running: false,
                address,
                ports: BTreeSet::new(),
            });
            core.model.write_network(u, &net.layout);
            core.nets.insert(u, net);
            core.wake(u);
            added.push(name);
        }
        core.model.write_goal_state();
        added
    }

    fn index(core: &Core, unit: &str) -> usize {
        core.model
            .units
            .iter()
            .position(|u| u.name == unit)
            .unwrap_or_else(|| panic!("no unit {unit}"))
    }

    /// Queues an operation hook (e.g. `config-changed`, `update-status`) on one unit.
    pub fn queue(&self, unit: &str, hook: &str) {
        let mut core = self.core();
        let u = Self::index(&core, unit);
        core.model.units[u].queue.push_back(Hook::op(hook));
        core.wake(u);
    }

    /// Queues a hook on every alive unit.
    pub fn queue_all(&self, hook: &str) {
        for unit in self.alive_units() {
            self.queue(&unit, hook);
        }
    }

    /// Puts `unit` in availability zone `zone` (`JUJU_AVAILABILITY_ZONE` of its later hooks).
    pub fn set_zone(&self, unit: &str, zone: &str) {
        let mut core = self.core();
        if let Some(state) = core.model.units.iter_mut().find(|u| u.name == unit) {
            state.zone = zone.to_string();
        }
    }

    /// Sets a config option and queues `config-changed` on every alive unit.
    pub fn set_config(&self, key: &str, value: Value) {
        {
            let mut core = self.core();
            core.model.config.insert(key.to_string(), value);
            core.model.write_config();
        }
        self.queue_all("config-changed");
    }

    /// upgrade-charm → config-changed → start on every unit.
    pub fn upgrade_charm(&self) {
        for unit in self.alive_units() {
            for hook in ["upgrade-charm", "config-changed", "start"] {
                self.queue(&unit, hook);
            }
        }
    }

    /// Removes a unit: it leaves scope at once (the others get `-departed`), and runs one
    /// `mesh-relation-departed` per peer it knew (JUJU_DEPARTING_UNIT = itself), departed for
    /// its principal and prometheus/0, stop, the -broken hooks, remove. Removing the leader
    /// elects the lowest-numbered remaining unit: it gets leader-elected, the others
    /// leader-settings-changed.
    pub fn remove_unit(&self, unit: &str) {
        let mut core = self.core();
        let u = Self::index(&core, unit);
        core.model.units[u].life = Life::Dying;
        for rid in [PEER, JUJU_INFO, METRICS] {
            core.model
                .relations
                .get_mut(&rid)
                .expect("relation")
                .members
                .remove(unit);
        }
        let principal = core.model.units[u].principal.clone();
        core.model
            .relations
            .get_mut(&JUJU_INFO)
            .expect("juju-info")
            .members
            .remove(&principal);
        core.counters.prometheus_departs += 1;
        let mut queue = VecDeque::new();
        let known: Vec<String> = core.model.units[u]
            .views
            .get(&PEER)
            .map(|v| v.known.keys().cloned().collect())
            .unwrap_or_default();
        for (endpoint, rid, remotes) in [
            ("mesh", PEER, known),
            (
                "metrics-endpoint",
                METRICS,
                vec!["prometheus/0".to_string()],
            ),
            ("juju-info", JUJU_INFO, vec![principal]),
        ] {
            for remote in remotes {
                let mut hook = Hook::relation(endpoint, "departed", rid, &remote);
                hook.departing = unit.to_string();
                queue.push_back(hook);
            }
        }
        queue.push_back(Hook::op("stop"));
        queue.push_back(Hook::relation("metrics-endpoint", "broken", METRICS, ""));
        queue.push_back(Hook::relation("juju-info", "broken", JUJU_INFO, ""));
        queue.push_back(Hook::op("remove"));
        core.model.units[u].queue = queue;
        if core.model.leader.as_deref() == Some(unit) {
            let next = core.model.units.iter().position(|x| x.life == Life::Alive);
            core.model.leader = next.map(|n| core.model.units[n].name.clone());
            for (i, x) in core.model.units.iter_mut().enumerate() {
                if x.life == Life::Alive {
                    x.queue.push_back(Hook::op(if Some(i) == next {
                        "leader-elected"
                    } else {
                        "leader-settings-changed"
                    }));
                }
            }
        }
        core.model.write_goal_state();
        core.wake_all();
    }

    /// Runs hooks on 2 workers until no unit has anything left to run.
    pub fn settle(&self) {
        let tools = self.tools.display().to_string();
        let charm = self.charm_dir.display().to_string();
        self.core().wake_all();
        std::thread::scope(|s| {
            for _ in 0..WORKERS {
                s.spawn(|| sched::worker(&self.shared, &tools, &charm));
            }
        });
    }

    /// Runs an action on a unit (after settling whatever is queued) and returns its result.
    pub fn run_action(&self, unit: &str, name: &str, params: Value) -> ActionResult {
        {
            let mut core = self.core();
            let u = Self::index(&core, unit);
            core.model.units[u].queue.push_back(Hook {
                name: name.to_string(),
                action: Some(params),
                ..Default::default()
            });
            core.wake(u);
        }
        self.settle();
        let core = self.core();
        core.actions
            .iter()
            .rev()
            .find(|a| a.unit == unit && a.name == name)
            .cloned()
            .expect("action ran")
    }

    /// Writes `changes` (None deletes) into a bag as if its owner had committed them, and
    /// notifies the other units. For injecting bad peer data.
    pub fn inject(&self, rid: u32, owner: &str, changes: BTreeMap<String, Option<String>>) {
        let mut core = self.core();
        core.model.update_bag(rid, owner, &changes);
        core.wake_all();
    }

    /// Changes a unit's network namespace (e.g. moves an address) and its network-get files.
    pub fn with_net(&self, unit: &str, f: impl FnOnce(&mut UnitNet)) {
        let mut core = self.core();
        let u = Self::index(&core, unit);
        let net = core.nets.get_mut(&u).expect("unit has a namespace");
        f(net);
        let layout = net.layout.clone();
        core.model.write_network(u, &layout);
    }

    pub fn alive_units(&self) -> Vec<String> {
        self.core()
            .model
            .units
            .iter()
            .filter(|u| u.life == Life::Alive)
            .map(|u| u.name.clone())
            .collect()
    }

    pub fn leader(&self) -> Option<String> {
        self.core().model.leader.clone()
    }

    pub fn bag(&self, rid: u32, owner: &str) -> BTreeMap<String, String> {
        self.core().model.bag(rid, owner)
    }

    pub fn status(&self, unit: &str) -> (String, String) {
        let core = self.core();
        core.model.units[Self::index(&core, unit)].workload.clone()
    }

    pub fn ports(&self, unit: &str) -> BTreeSet<String> {
        let core = self.core();
        core.model.units[Self::index(&core, unit)].ports.clone()
    }

    pub fn root(&self, unit: &str) -> PathBuf {
        let core = self.core();
        core.model.units[Self::index(&core, unit)].root.clone()
    }

    /// The unit's `var/lib/meshprobe/peers.json`, parsed.
    pub fn peers_json(&self, unit: &str) -> Option<Value> {
        let path = self.root(unit).join("var/lib/meshprobe/peers.json");
        let text = std::fs::read_to_string(&path).ok()?;
        Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())),
        )
    }

    pub fn records(&self) -> Vec<HookRecord> {
        self.core().records.clone()
    }

    /// Panics with the first failures when any hook failed in this phase.
    pub fn assert_no_failures(&self) {
        let core = self.core();
        let c = &core.counters;
        assert!(
            c.failed.is_empty() && c.sim_errors.is_empty(),
            "{} hooks failed, e.g.:\n{}\n{}",
            c.failed.len(),
            c.failed
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            c.sim_errors.join("\n")
        );
    }

    /// Ends a phase: builds its report, prints and appends it, and resets the counters.
    pub fn take_report(&mut self, title: &str) -> Report {
        let mut core = self.core();
        let c = std::mem::take(&mut core.counters);
        core.records.clear();
        let bytes = core
            .model
            .bag(METRICS, APP)
            .get("scrape_jobs")
            .map_or(0, String::len);
        drop(core);
        let report = Report {
            title: title.to_string(),
            c,
            scrape_jobs_bytes: bytes,
            elapsed: self.phase_start.elapsed(),
        };
        self.phase_start = Instant::now();
        report.publish();
        report
    }

    /// Replaces the charm's `dispatch` (the simulator's self-tests use a shell charm).
    pub fn set_dispatch(&self, script: &str) {
        let path = self.charm_dir.join("dispatch");
        std::fs::write(&path, script).expect("write dispatch");
    }

    pub fn state_dir(&self) -> PathBuf {
        self.base.join("state")
    }
}

/// The charm dir: the repository's `charm/dispatch` (or an equivalent while it does not exist)
/// and `meshprobe` → the binary under test.
fn install_charm(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("create charm dir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("charm/dispatch");
    let dispatch = std::fs::read_to_string(&repo)
        .unwrap_or_else(|_| "#!/bin/sh\nexec \"$JUJU_CHARM_DIR/meshprobe\" \"$@\"\n".to_string());
    let path = dir.join("dispatch");
    std::fs::write(&path, dispatch).expect("write dispatch");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod dispatch");
    // MESHPROBE_CHARM_BINARY lets CI run the scenarios on the release build (hook time is
    // mostly the binary's own work); the default is the binary cargo built for this test.
    let binary = std::env::var_os("MESHPROBE_CHARM_BINARY").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_BIN_EXE_meshprobe")),
        std::path::PathBuf::from,
    );
    std::os::unix::fs::symlink(&binary, dir.join("meshprobe")).expect("symlink meshprobe");
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        let mut core = self.shared.core.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<String> = std::mem::take(&mut core.nets)
            .into_values()
            .map(|n| n.name.clone())
            .collect();
        netns::delete(&names);
        if std::env::var_os("MPSIM_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}
