//! The simulated Juju model: units, relations, databags, config, goal state, and the files the
//! fake hook tools read.
//!
//! Owns the state and its on-disk mirror under the state dir `S`:
//! `S/r/<rid>/<bag>.{json,yaml}` and `S/r/<rid>/<bag>/<key>.{json,raw}` (one bag per unit or
//! app; `<bag>` is `meshprobe-3` or `meshprobe`), `S/r/<rid>/peer` (peer relations),
//! `S/r/<rid>/remote-app.{json,raw}`, `S/u/<unit>/rel/<rid>/list.{json,raw}` (units this unit
//! has seen join), `S/u/<unit>/ids/<endpoint>.{json,raw}`, `S/u/<unit>/net/*`,
//! `S/u/<unit>/action/*`, `S/u/<unit>.status`, `S/config/*`, `S/goal-state.{json,yaml}`,
//! `S/bindings/<endpoint>`. Files change only when their content does, by rename, so a tool
//! never reads half a file. It does not run hooks (see `runner.rs`).

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const APP: &str = "meshprobe";
pub const PEER: u32 = 1;
pub const JUJU_INFO: u32 = 2;
pub const METRICS: u32 = 3;
pub const MODEL_NAME: &str = "sim";
pub const MODEL_UUID: &str = "5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a";
pub const BINDINGS: &[&str] = &[
    "juju-info",
    "mesh",
    "metrics-endpoint",
    "cos-agent",
    "prometheus-manual",
];

/// One databag: string values, and a version bumped on every effective change.
#[derive(Clone, Debug, Default)]
pub struct Bag {
    pub data: BTreeMap<String, String>,
    pub version: u64,
}

pub struct Relation {
    pub id: u32,
    pub endpoint: &'static str,
    pub remote_app: &'static str,
    pub peer: bool,
    /// Units in scope (both sides).
    pub members: BTreeSet<String>,
    /// Bags by unit or app name. Departed units' bags stay readable.
    pub bags: BTreeMap<String, Bag>,
}

/// What one unit's agent knows about one relation (the uniter's local relation state).
#[derive(Clone, Debug, Default)]
pub struct View {
    pub created: bool,
    /// Remote units whose `-joined` ran here, with the bag version last delivered.
    pub known: BTreeMap<String, u64>,
    pub changed_pending: Option<String>,
    pub app_seen: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Alive,
    Dying,
    Dead,
}

/// Canonical JSON of a string map.
pub fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("string map serialises")
}

pub fn yaml<T: serde::Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).expect("yaml serialises")
}

/// `meshprobe/3` -> `meshprobe-3`.
pub fn file_name(unit: &str) -> String {
    unit.replace('/', "-")
}

/// Writes `content` to `path` by rename, unless it already holds exactly that.
pub fn put(path: &Path, content: &[u8]) -> bool {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return false;
    }
    let dir = path.parent().expect("path has a parent");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::write(&tmp, content).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
    true
}

/// Per-key files are named after the key; keys that cannot be file names are not served
/// per key (the tool then prints `null`, as for a missing key).
fn key_file_ok(key: &str) -> bool {
    !key.is_empty() && key != "." && key != ".." && !key.contains('/') && key.len() < 200
}

/// Mirrors a string map to `<base>.json`, `<base>.yaml` and `<base>/<key>.{json,raw}`.
pub fn write_map(
    base: &Path,
    old: Option<&BTreeMap<String, String>>,
    new: &BTreeMap<String, String>,
) {
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", base.display()));
    put(&with("json"), format!("{}\n", map_json(new)).as_bytes());
    put(
        &with("yaml"),
        if new.is_empty() {
            "{}\n".to_string()
        } else {
            yaml(new)
        }
        .as_bytes(),
    );
    std::fs::create_dir_all(base).unwrap_or_else(|e| panic!("mkdir {}: {e}", base.display()));
    for (key, value) in new {
        if !key_file_ok(key) || old.and_then(|o| o.get(key)) == Some(value) {
            continue;
        }
        put(
            &base.join(format!("{key}.json")),
            serde_json::to_string(value).expect("string").as_bytes(),
        );
        put(&base.join(format!("{key}.raw")), value.as_bytes());
    }
    for key in old.into_iter().flat_map(|o| o.keys()) {
        if !new.contains_key(key) && key_file_ok(key) {
            let _ = std::fs::remove_file(base.join(format!("{key}.json")));
            let _ = std::fs::remove_file(base.join(format!("{key}.raw")));
        }
    }
}

/// Writes a JSON value as `<base>.json` (compact) and `<base>.yaml`.
pub fn write_value(base: &Path, value: &Value) {
    put(
        &PathBuf::from(format!("{}.json", base.display())),
        format!("{value}\n").as_bytes(),
    );
    put(
        &PathBuf::from(format!("{}.yaml", base.display())),
        yaml(value).as_bytes(),
    );
}

/// One simulated unit of the charm.
pub struct UnitState {
    pub num: u32,
    pub name: String,
    pub file: String,
    pub principal: String,
    pub life: Life,
    pub installed: bool,
    pub started: bool,
    pub workload: (String, String),
    pub views: BTreeMap<u32, View>,
    /// Explicit hook queue (setup, leadership, config, upgrade, actions, teardown).
    pub queue: std::collections::VecDeque<crate::charm_sim::Hook>,
    pub root: PathBuf,
    pub dir: PathBuf,
    /// peers.json as last seen: (mtime, content).
    pub peers_file: Option<(std::time::SystemTime, Vec<u8>)>,
    pub running: bool,
    /// The primary address (Juju's private-address / ingress-address).
    pub address: String,
    pub ports: BTreeSet<String>,
    /// `JUJU_AVAILABILITY_ZONE` in this unit's hooks (empty: a cloud without zones).
    pub zone: String,
}

/// The model: relations, config, leader, goal state; file mirror under `state`.
pub struct Model {
    pub state: PathBuf,
    pub relations: BTreeMap<u32, Relation>,
    pub config: BTreeMap<String, Value>,
    pub leader: Option<String>,
    pub units: Vec<UnitState>,
}

impl Model {
    pub fn new(state: PathBuf) -> Model {
        let mut relations = BTreeMap::new();
        for (id, endpoint, remote_app, peer) in [
            (PEER, "mesh", APP, true),
            (JUJU_INFO, "juju-info", "ubuntu", false),
            (METRICS, "metrics-endpoint", "prometheus", false),
        ] {
            let mut rel = Relation {
                id,
                endpoint,
                remote_app,
                peer,
                members: BTreeSet::new(),
                bags: BTreeMap::new(),
            };
            rel.bags.insert(APP.to_string(), Bag::default());
            rel.bags.insert(remote_app.to_string(), Bag::default());
            relations.insert(id, rel);
        }
        let mut model = Model {
            state,
            relations,
            config: BTreeMap::new(),
            leader: None,
            units: Vec::new(),
        };
        for b in BINDINGS {
            put(&model.state.join("bindings").join(b), b"");
        }
        for id in [PEER, JUJU_INFO, METRICS] {
            let rel = &model.relations[&id];
            let dir = model.state.join("r").join(id.to_string());
            if rel.peer {
                put(&dir.join("peer"), b"");
            }
            put(
                &dir.join("remote-app.json"),
                json!(rel.remote_app).to_string().as_bytes(),
            );
            put(&dir.join("remote-app.raw"), rel.remote_app.as_bytes());
            for app in [APP, rel.remote_app] {
                write_map(&dir.join(app), None, &BTreeMap::new());
            }
        }
        // prometheus/0 is in scope on metrics-endpoint from the start, with Juju's keys.
        model.enter_scope(METRICS, "prometheus/0", "198.18.255.1");
        model.write_config();
        model
    }

    /// Adds `unit` to the relation's scope, creating its bag with the keys Juju pre-populates.
    pub fn enter_scope(&mut self, rid: u32, unit: &str, address: &str) {
        let rel = self.relations.get_mut(&rid).expect("relation");
        rel.members.insert(unit.to_string());
        if !rel.bags.contains_key(unit) {
            let mut data = BTreeMap::new();
            data.insert("egress-subnets".to_string(), format!("{address}/32"));
            data.insert("ingress-address".to_string(), address.to_string());
            data.insert("private-address".to_string(), address.to_string());
            let dir = self.state.join("r").join(rid.to_string());
            write_map(&dir.join(file_name(unit)), None, &data);
            rel.bags.insert(unit.to_string(), Bag { data, version: 1 });
        }
    }

    /// Applies `changes` (None = delete) to a bag; returns true when the bag changed.
    pub fn update_bag(
        &mut self,
        rid: u32,
        owner: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> bool {
        let rel = self.relations.get_mut(&rid).expect("relation");
        let bag = rel.bags.entry(owner.to_string()).or_default();
        let old = bag.data.clone();
        for (key, value) in changes {
            match value {
                Some(v) => bag.data.insert(key.clone(), v.clone()),
                None => bag.data.remove(key),
            };
        }
        if bag.data == old {
            return false;
        }
        bag.version += 1;
        let dir = self.state.join("r").join(rid.to_string());
        write_map(&dir.join(file_name(owner)), Some(&old), &bag.data);
        true
    }

    pub fn bag(&self, rid: u32, owner: &str) -> BTreeMap<String, String> {
        self.relations[&rid]
            .bags
            .get(owner)
            .map(|b| b.data.clone())
            .unwrap_or_default()
    }

    pub fn write_config(&self) {
        let all: serde_json::Map<String, Value> = self.config.clone().into_iter().collect();
        let dir = self.state.join("config");
        write_value(&dir.join("all"), &Value::Object(all));
        let _ = std::fs::remove_dir_all(dir.join("k"));
        for (key, value) in &self.config {
            put(
                &dir.join("k").join(format!("{key}.json")),
                value.to_string().as_bytes(),
            );
            let raw = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            put(&dir.join("k").join(format!("{key}.raw")), raw.as_bytes());
        }
    }

    /// The remote units unit `u` should see in relation `rid`.
    pub fn remote_members(&self, u: usize, rid: u32) -> BTreeSet<String> {
        let unit = &self.units[u];
        let rel = &self.relations[&rid];
        rel.members
            .iter()
            .filter(|m| match rid {
                PEER => **m != unit.name,
                JUJU_INFO => **m == unit.principal,
                _ => !m.starts_with(&format!("{APP}/")),
            })
            .cloned()
            .collect()
    }

    /// Rewrites unit `u`'s `relation-list` files for `rid` from its view.
    pub fn write_list(&self, u: usize, rid: u32) {
        let unit = &self.units[u];
        let known: Vec<&String> = unit
            .views
            .get(&rid)
            .map(|v| v.known.keys().collect())
            .unwrap_or_default();
        let dir = unit.dir.join("rel").join(rid.to_string());
        put(
            &dir.join("list.json"),
            format!("{}\n", json!(known)).as_bytes(),
        );
        let raw: String = known.iter().map(|k| format!("{k}\n")).collect();
        put(&dir.join("list.raw"), raw.as_bytes());
    }

    /// Makes relation `rid` visible to unit `u` (relation-ids, relation-list, -r checks).
    pub fn create_view(&mut self, u: usize, rid: u32) {
        let endpoint = self.relations[&rid].endpoint;
        let unit = &mut self.units[u];
        unit.views.entry(rid).or_default().created = true;
        let ids: Vec<String> = unit
            .views
            .keys()
            .filter(|r| self.relations[r].endpoint == endpoint)
            .map(|r| format!("{endpoint}:{r}"))
            .collect();
        let dir = unit.dir.join("ids");
        put(
            &dir.join(format!("{endpoint}.json")),
            format!("{}\n", json!(ids)).as_bytes(),
        );
        put(
            &dir.join(format!("{endpoint}.raw")),
            ids.iter()
                .map(|i| format!("{i}\n"))
                .collect::<String>()
                .as_bytes(),
        );
        self.write_list(u, rid);
    }

    /// Goal state as Juju computes it (uniter goalStateUnits/goalStateRelations), except that
    /// `units` lists every unit of the application: real Juju 3.6 filters subordinate units by
    /// `PrincipalName() == <calling unit>`, which for a subordinate caller drops them all (see the
    /// report). Unit status: `allocating` before install ran, then the workload status
    /// (`unknown` until the charm sets one, as Juju reports after an install hook that set
    /// none), `dying` once removal started. Peer relations are omitted (Juju ignores them); no
    /// `since` fields.
    pub fn write_goal_state(&self) {
        let mut units = serde_json::Map::new();
        for unit in &self.units {
            let status = match unit.life {
                Life::Dead => continue,
                Life::Dying => "dying".to_string(),
                Life::Alive if !unit.installed => "allocating".to_string(),
                Life::Alive => unit.workload.0.clone(),
            };
            units.insert(unit.name.clone(), json!({ "status": status }));
        }
        let mut info = serde_json::Map::new();
        info.insert("ubuntu".into(), json!({"status": "joined"}));
        for unit in self.units.iter().filter(|u| u.life != Life::Dead) {
            info.insert(unit.principal.clone(), json!({"status": "active"}));
        }
        let metrics =
            json!({"prometheus": {"status": "joined"}, "prometheus/0": {"status": "active"}});
        let value =
            json!({"units": units, "relations": {"juju-info": info, "metrics-endpoint": metrics}});
        write_value(&self.state.join("goal-state"), &value);
    }

    /// network-get / unit-get files for unit `u`: the first interface's first IPv4 (else first)
    /// address is the binding address; every binding is in the same (default) space.
    pub fn write_network(&self, u: usize, layout: &[crate::charm_sim::netns::Iface]) {
        let unit = &self.units[u];
        let primary = primary_address(layout);
        let bind: Vec<Value> = layout
            .iter()
            .map(|iface| {
                let addrs: Vec<Value> = iface
                    .addrs
                    .iter()
                    .map(|a| json!({"hostname": "", "value": a.addr().to_string(), "cidr": a.trunc().to_string(), "address": a.addr().to_string()}))
                    .collect();
                json!({"mac-address": "", "interface-name": iface.name, "addresses": addrs, "macaddress": "", "interfacename": iface.name})
            })
            .collect();
        let egress = vec![format!("{primary}/32")];
        let dir = unit.dir.join("net");
        let full = json!({"bind-addresses": bind, "egress-subnets": egress, "ingress-addresses": [primary]});
        write_value(&dir.join("full"), &full);
        put(&dir.join("b.json"), json!(primary).to_string().as_bytes());
        put(&dir.join("b.raw"), format!("{primary}\n").as_bytes());
        put(&dir.join("i.json"), json!(primary).to_string().as_bytes());
        put(&dir.join("i.raw"), format!("{primary}\n").as_bytes());
        put(
            &dir.join("e.json"),
            json!(egress.join(",")).to_string().as_bytes(),
        );
        put(
            &dir.join("e.raw"),
            format!("{}\n", egress.join(",")).as_bytes(),
        );
        for combo in ["be", "bi", "ei", "bei"] {
            let mut map = serde_json::Map::new();
            if combo.contains('b') {
                map.insert("bind-address".into(), json!(primary));
            }
            if combo.contains('e') {
                map.insert("egress-subnets".into(), json!(egress));
            }
            if combo.contains('i') {
                map.insert("ingress-address".into(), json!(primary));
            }
            write_value(&dir.join(combo), &Value::Object(map));
        }
    }
}

/// The unit's primary address: first IPv4 address of the first interface that has one.
pub fn primary_address(layout: &[crate::charm_sim::netns::Iface]) -> String {
    let all: Vec<_> = layout.iter().flat_map(|i| i.addrs.iter()).collect();
    all.iter()
        .find(|a| a.addr().is_ipv4())
        .or(all.first())
        .map(|a| a.addr().to_string())
        .unwrap_or_else(|| "198.18.255.254".to_string())
}
