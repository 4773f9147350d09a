//! In-process tests of the hook handlers with recording fake hook tools: which tools a hook
//! calls and how often, and that bad peer data never fails a hook.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::env::JujuEnv;
use super::model::{SharedNetwork, networks_json};
use super::state::{Cache, Paths, load_cache, save_cache};
use super::tools::{HookTools, ToolResult};

/// (relation id, values, app bag)
pub type RelationWrite = (String, BTreeMap<String, String>, bool);

/// Answers from a fixed model and records every call.
#[derive(Default)]
pub struct FakeTools {
    /// Bags by unit or application name (the same on every relation).
    pub bags: BTreeMap<String, BTreeMap<String, String>>,
    pub leader: bool,
    /// `config-get` output; empty means `{"mode": "mesh"}`.
    pub config: BTreeMap<String, Value>,
    /// `relation-ids` output per endpoint; `mesh` defaults to `mesh:1`.
    pub relations: BTreeMap<String, Vec<String>>,
    pub calls: RefCell<Vec<String>>,
    pub sets: RefCell<Vec<RelationWrite>>,
}

impl FakeTools {
    fn record(&self, call: &str) {
        self.calls.borrow_mut().push(call.to_string());
    }
    pub fn count(&self, tool: &str) -> usize {
        self.calls
            .borrow()
            .iter()
            .filter(|c| c.as_str() == tool)
            .count()
    }
}

impl HookTools for FakeTools {
    fn relation_get(
        &self,
        _relation_id: &str,
        unit: &str,
        _app: bool,
    ) -> ToolResult<BTreeMap<String, String>> {
        self.record("relation-get");
        Ok(self.bags.get(unit).cloned().unwrap_or_default())
    }
    fn relation_set(
        &self,
        relation_id: &str,
        values: &BTreeMap<String, String>,
        app: bool,
    ) -> ToolResult<()> {
        self.record("relation-set");
        self.sets
            .borrow_mut()
            .push((relation_id.into(), values.clone(), app));
        Ok(())
    }
    fn relation_list(&self, _relation_id: &str) -> ToolResult<Vec<String>> {
        self.record("relation-list");
        Ok(self
            .bags
            .keys()
            .filter(|k| k.contains('/'))
            .cloned()
            .collect())
    }
    fn relation_ids(&self, endpoint: &str) -> ToolResult<Vec<String>> {
        self.record("relation-ids");
        Ok(match self.relations.get(endpoint) {
            Some(ids) => ids.clone(),
            None if endpoint == "mesh" => vec!["mesh:1".into()],
            None => vec![],
        })
    }
    fn is_leader(&self) -> ToolResult<bool> {
        self.record("is-leader");
        Ok(self.leader)
    }
    fn config_get(&self) -> ToolResult<BTreeMap<String, Value>> {
        self.record("config-get");
        if self.config.is_empty() {
            return Ok(BTreeMap::from([("mode".to_string(), json!("mesh"))]));
        }
        Ok(self.config.clone())
    }
    fn status_set(&self, _status: &str, message: &str) -> ToolResult<()> {
        self.record("status-set");
        self.calls.borrow_mut().push(format!("status: {message}"));
        Ok(())
    }
    fn log(&self, _level: &str, _message: &str) {
        self.record("juju-log");
    }
    fn open_port(&self, _port: &str) -> ToolResult<()> {
        self.record("open-port");
        Ok(())
    }
    fn goal_state(&self) -> ToolResult<Value> {
        self.record("goal-state");
        Ok(json!({"units": {}, "relations": {}}))
    }
    fn action_get(&self) -> ToolResult<BTreeMap<String, Value>> {
        self.record("action-get");
        Ok(BTreeMap::new())
    }
    fn action_set(&self, _values: &BTreeMap<String, String>) -> ToolResult<()> {
        self.record("action-set");
        Ok(())
    }
    fn action_fail(&self, _message: &str) -> ToolResult<()> {
        self.record("action-fail");
        Ok(())
    }
    fn systemctl(&self, args: &[&str]) -> ToolResult<()> {
        self.record(&format!("systemctl {}", args.join(" ")));
        Ok(())
    }
}

pub fn network(address: &str, cidr: &str) -> SharedNetwork {
    SharedNetwork {
        address: address.parse().expect("address"),
        cidr: cidr.parse().expect("cidr"),
        interface: "eth0".into(),
    }
}

pub fn peer_env(hook: &str, remote: &str) -> JujuEnv {
    JujuEnv {
        hook: hook.into(),
        is_action: false,
        unit: "meshprobe/0".into(),
        app: "meshprobe".into(),
        model: "m".into(),
        model_uuid: "u".into(),
        charm_dir: "/charm".into(),
        relation: Some("mesh".into()),
        relation_id: Some("mesh:1".into()),
        remote_unit: Some(remote.into()),
        departing_unit: None,
        availability_zone: None,
    }
}

pub fn temp_paths(name: &str) -> Paths {
    let root = std::env::temp_dir().join(format!("meshprobe-charm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    Paths { root }
}

fn seeded_cache(paths: &Paths) {
    let cache = Cache {
        own_networks: vec![network("198.18.10.1", "198.18.10.0/24")],
        own_exporter: Some("198.18.10.1:9115".into()),
        ..Cache::default()
    };
    save_cache(&paths.cache(), &cache).expect("seed cache");
}

#[test]
fn a_peer_changed_hook_reads_one_bag_and_writes_the_peers_file_once() {
    let paths = temp_paths("changed");
    seeded_cache(&paths);
    let mut tools = FakeTools::default();
    let bag = BTreeMap::from([
        (
            "networks".to_string(),
            networks_json(&[network("198.18.10.2", "198.18.10.0/24")]),
        ),
        ("exporter".to_string(), "198.18.10.2:9115".to_string()),
    ]);
    tools.bags.insert("meshprobe/1".into(), bag);
    let env = peer_env("mesh-relation-changed", "meshprobe/1");
    assert_eq!(super::run(&env, &tools, paths.clone()), ExitCode::SUCCESS);
    assert_eq!(tools.count("relation-get"), 1);
    assert_eq!(tools.count("relation-set"), 0);
    assert!(
        !tools
            .calls
            .borrow()
            .iter()
            .any(|c| c.starts_with("systemctl")),
        "no restart"
    );
    let peers = std::fs::read_to_string(paths.peers_file()).expect("peers file");
    assert_eq!(
        peers,
        "[{\"labels\":{\"network\":\"198.18.10.0/24\",\"peer\":\"meshprobe/1\"},\"targets\":[\"198.18.10.2\"]}]\n"
    );
    let written = std::fs::metadata(paths.peers_file())
        .and_then(|m| m.modified())
        .expect("mtime");
    // The same data again: no write, no status change.
    let again = FakeTools {
        bags: tools.bags.clone(),
        ..FakeTools::default()
    };
    assert_eq!(super::run(&env, &again, paths.clone()), ExitCode::SUCCESS);
    assert_eq!(again.count("relation-get"), 1);
    assert_eq!(again.count("status-set"), 0);
    assert_eq!(
        std::fs::metadata(paths.peers_file())
            .and_then(|m| m.modified())
            .expect("mtime"),
        written
    );
    let _ = std::fs::remove_dir_all(&paths.root);
}

#[test]
fn garbage_from_a_peer_is_skipped_and_named_in_the_status() {
    let paths = temp_paths("garbage");
    seeded_cache(&paths);
    let mut tools = FakeTools::default();
    tools.bags.insert(
        "meshprobe/7".into(),
        BTreeMap::from([("networks".to_string(), "{not json".to_string())]),
    );
    let env = peer_env("mesh-relation-changed", "meshprobe/7");
    assert_eq!(super::run(&env, &tools, paths.clone()), ExitCode::SUCCESS);
    let calls = tools.calls.borrow();
    let status = calls
        .iter()
        .find(|c| c.starts_with("status: "))
        .expect("status set");
    assert!(status.contains("skipped meshprobe/7"), "{status}");
    let cache = load_cache(&paths.cache()).expect("cache saved");
    assert!(cache.peers["meshprobe/7"].problem.is_some());
    let _ = std::fs::remove_dir_all(&paths.root);
}

#[test]
fn departed_reads_nothing_and_drops_the_unit() {
    let paths = temp_paths("departed");
    seeded_cache(&paths);
    let mut tools = FakeTools::default();
    tools.bags.insert(
        "meshprobe/1".into(),
        BTreeMap::from([(
            "networks".to_string(),
            networks_json(&[network("198.18.10.2", "198.18.10.0/24")]),
        )]),
    );
    assert_eq!(
        super::run(
            &peer_env("mesh-relation-joined", "meshprobe/1"),
            &tools,
            paths.clone()
        ),
        ExitCode::SUCCESS
    );
    let mut env = peer_env("mesh-relation-departed", "meshprobe/1");
    env.departing_unit = Some("meshprobe/1".into());
    let departed = FakeTools::default();
    assert_eq!(
        super::run(&env, &departed, paths.clone()),
        ExitCode::SUCCESS
    );
    assert_eq!(departed.count("relation-get"), 0);
    assert_eq!(
        std::fs::read_to_string(paths.peers_file()).expect("peers"),
        "[]\n"
    );
    let _ = std::fs::remove_dir_all(&paths.root);
}
