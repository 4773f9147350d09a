//! The commit step after a hook: replays the hook's transaction log (relation-set,
//! action-set/-fail, open/close-port) only when it exited 0, as Juju's `CommitHookChanges`
//! does; applies scope entry, install/start/remove transitions and status; and updates the
//! counters (tool calls, relation-get per peer hook, restarts, peers-file writes,
//! Prometheus-side events). It does not choose or run hooks.

use super::model::{APP, Life, METRICS, PEER};
use super::runner::{FIELD, Job, Outcome, RECORD};
use super::{ActionResult, Core, HookRecord};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Parses `--file` content (YAML or JSON map) into changes; scalars become strings, null or
/// "" deletes.
fn file_changes(text: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let map: BTreeMap<String, Value> = serde_saphyr::from_str(text)
        .map_err(|e| format!("relation-set --file: not a YAML map: {e}"))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let v = match v {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s),
            Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
            other => {
                return Err(format!(
                    "relation-set --file: value of {k:?} is not a string: {other}"
                ));
            }
        };
        out.insert(k, v);
    }
    Ok(out)
}

/// Applies the hook's results to the model (relation data and ports only on exit 0).
pub fn commit(core: &mut Core, job: Job, out: Outcome) {
    let u = job.u;
    let hook = job.hook;
    let unit_name = core.model.units[u].name.clone();
    let c = &mut core.counters;
    *c.hooks.entry(hook.name.clone()).or_default() += 1;
    c.walls.push(out.wall);
    // Call log: counts, relation-get per peer hook, restarts.
    let mut relation_gets = 0u32;
    let mut calls = Vec::new();
    let mut stopped = false;
    for rec in out.calls.split(RECORD).filter(|r| !r.is_empty()) {
        let mut fields = rec.split(FIELD).map(str::to_string);
        let tool = fields.next().unwrap_or_default();
        let args: Vec<String> = fields.collect();
        if tool == "stale-read" {
            c.stale_reads += 1;
            continue;
        }
        *c.tools.entry(tool.clone()).or_default() += 1;
        if tool == "relation-get" {
            relation_gets += 1;
        }
        if tool == "systemctl"
            && core.model.units[u].started
            && core.model.units[u].life == Life::Alive
        {
            let verb = args
                .iter()
                .find(|a| !a.starts_with('-'))
                .map(String::as_str)
                .unwrap_or("");
            match verb {
                "restart" | "try-restart" | "reload-or-restart" | "force-reload" => c.restarts += 1,
                "stop" => stopped = true,
                "start" if stopped => {
                    c.restarts += 1;
                    stopped = false;
                }
                _ => {}
            }
        }
        if core.keep_calls {
            calls.push((tool, args));
        }
    }
    if hook.rel == Some(PEER)
        && ["joined", "changed", "departed"]
            .iter()
            .any(|s| hook.name.ends_with(s))
    {
        c.peer_relation_gets.push(relation_gets);
    }
    let mut exit = out.exit;
    let mut action = hook.action.as_ref().map(|_| ActionResult {
        unit: unit_name.clone(),
        name: hook.name.clone(),
        ..Default::default()
    });
    let scrape_before = core.model.bag(METRICS, APP).get("scrape_jobs").cloned();
    let mut changed_bags: BTreeSet<(u32, String)> = BTreeSet::new();
    let applied = if exit == 0 {
        apply_tx(
            core,
            u,
            &out.tx,
            &job.hook_dir,
            &mut changed_bags,
            action.as_mut(),
        )
    } else {
        Ok(())
    };
    if let Err(e) = applied {
        core.counters
            .sim_errors
            .push(format!("{unit_name} {}: {e}", hook.name));
        exit = 254;
    }
    let c = &mut core.counters;
    if exit != 0 {
        c.failed.push(format!(
            "{unit_name} {} (remote {:?}) exit {exit}: {}",
            hook.name,
            hook.remote_unit,
            out.stderr.chars().take(600).collect::<String>()
        ));
    }
    c.prometheus_changed += changed_bags
        .iter()
        .filter(|(rid, _)| *rid == METRICS)
        .count() as u64;
    if core.model.bag(METRICS, APP).get("scrape_jobs").cloned() != scrape_before {
        core.counters.scrape_jobs_changes += 1;
    }
    // Hook-specific transitions.
    let mut goal_dirty = false;
    let unit = &mut core.model.units[u];
    match hook.name.as_str() {
        "install" => {
            unit.installed = true;
            goal_dirty = true;
        }
        "start" => unit.started = true,
        "remove" => {
            unit.life = Life::Dead;
            goal_dirty = true;
            if let Some(net) = core.nets.remove(&u) {
                super::netns::delete(std::slice::from_ref(&net.name));
            }
        }
        _ => {}
    }
    if let Some(rid) = hook.rel.filter(|_| hook.name.ends_with("-created")) {
        let address = core.model.units[u].address.clone();
        core.model.enter_scope(rid, &unit_name, &address);
        if rid == METRICS {
            core.counters.prometheus_joins += 1;
        }
        changed_bags.insert((rid, unit_name.clone()));
    }
    // Status (status-set applies at once, even when the hook failed).
    let unit = &mut core.model.units[u];
    let status_path = core
        .model
        .state
        .join("u")
        .join(format!("{}.status", unit.file));
    if let Ok(text) = std::fs::read_to_string(&status_path) {
        let (s, m) = text.split_once('\n').unwrap_or((&text, ""));
        let new = (s.to_string(), m.to_string());
        if new != unit.workload {
            goal_dirty |= new.0 != unit.workload.0;
            unit.workload = new;
        }
    }
    // peers.json writes, by mtime and content.
    let peers = unit.root.join("var/lib/meshprobe/peers.json");
    if let Ok(meta) = std::fs::metadata(&peers) {
        let mtime = meta.modified().expect("mtime");
        if unit.peers_file.as_ref().map(|p| p.0) != Some(mtime) {
            let content = std::fs::read(&peers).unwrap_or_default();
            core.counters.peers_file_writes += 1;
            if unit.peers_file.as_ref().map(|p| &p.1) != Some(&content) {
                core.counters.peers_file_changes += 1;
            }
            unit.peers_file = Some((mtime, content));
        }
    }
    if let Some(mut a) = action {
        a.exit = exit;
        a.stdout = out.stdout.clone();
        a.stderr = out.stderr.clone();
        core.actions.push(a);
    }
    core.records.push(HookRecord {
        unit: unit_name,
        hook: hook.name.clone(),
        remote: hook.remote_unit.clone(),
        wall: out.wall,
        exit,
        relation_gets,
        stdout: out.stdout.chars().take(4096).collect(),
        stderr: out.stderr.chars().take(4096).collect(),
        calls,
    });
    if goal_dirty {
        core.model.write_goal_state();
    }
    if !changed_bags.is_empty() || goal_dirty {
        core.wake_all();
    }
    core.wake(u);
}

/// Replays the transaction log of a successful hook.
fn apply_tx(
    core: &mut Core,
    u: usize,
    tx: &str,
    hook_dir: &std::path::Path,
    changed: &mut BTreeSet<(u32, String)>,
    mut action: Option<&mut ActionResult>,
) -> Result<(), String> {
    let unit_name = core.model.units[u].name.clone();
    for rec in tx.split(RECORD).filter(|r| !r.is_empty()) {
        let fields: Vec<&str> = rec.split(FIELD).collect();
        match fields[0] {
            "relation-set" => {
                let rid: u32 = fields
                    .get(1)
                    .and_then(|r| r.parse().ok())
                    .ok_or("relation-set: bad relation id")?;
                let owner = if fields.get(2) == Some(&"1") {
                    APP.to_string()
                } else {
                    unit_name.clone()
                };
                let mut changes = match fields.get(3).filter(|f| !f.is_empty()) {
                    Some(file) => file_changes(
                        &std::fs::read_to_string(hook_dir.join(file))
                            .map_err(|e| format!("relation-set --file: {e}"))?,
                    )?,
                    None => BTreeMap::new(),
                };
                let mut seen = BTreeSet::new();
                for kv in &fields[4..] {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or("relation-set: expected key=value")?;
                    if !seen.insert(k) {
                        return Err(format!("relation-set: duplicate key {k:?}"));
                    }
                    changes.insert(k.to_string(), (!v.is_empty()).then(|| v.to_string()));
                }
                core.counters.relation_set_calls += 1;
                if core.model.update_bag(rid, &owner, &changes) {
                    let in_scope =
                        core.model.relations[&rid].members.contains(&unit_name) || owner == APP;
                    if in_scope {
                        changed.insert((rid, owner.clone()));
                    }
                    if owner == APP && rid == PEER {
                        let v = core.model.relations[&PEER].bags[APP].version;
                        core.model.units[u].views.entry(PEER).or_default().app_seen = v;
                    }
                } else {
                    core.counters.relation_set_noops += 1;
                }
            }
            "action-set" => {
                let a = action
                    .as_deref_mut()
                    .ok_or("action-set outside an action")?;
                for kv in &fields[1..] {
                    let (k, v) = kv.split_once('=').ok_or("action-set: expected key=value")?;
                    let ok = k.split('.').all(|p| {
                        !p.is_empty()
                            && p.chars().all(|ch| {
                                ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'
                            })
                            && !p.starts_with('-')
                            && !p.ends_with('-')
                    });
                    if !ok
                        || ["stdout", "stderr", "stdout-encoding", "stderr-encoding"].contains(&k)
                    {
                        return Err(format!("action-set: invalid key {k:?}"));
                    }
                    a.results.insert(k.to_string(), v.to_string());
                }
            }
            "action-fail" => {
                let a = action
                    .as_deref_mut()
                    .ok_or("action-fail outside an action")?;
                a.failed = Some(fields.get(1).unwrap_or(&"").to_string());
            }
            "open-port" | "close-port" => {
                let port = fields.get(1).unwrap_or(&"").to_string();
                let ports = &mut core.model.units[u].ports;
                if fields[0] == "open-port" {
                    ports.insert(port);
                } else {
                    ports.remove(&port);
                }
            }
            other => return Err(format!("unknown transaction record {other:?}")),
        }
    }
    Ok(())
}
