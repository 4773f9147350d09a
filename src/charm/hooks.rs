//! Hook handlers: what each Juju hook does to the cache, the relation bags, the peers file and
//! the service.
//!
//! Owns the per-hook cost model: peer `-joined`/`-changed` read only `JUJU_REMOTE_UNIT`'s bag,
//! `-departed` reads nothing, full relation reads happen only when the cache is missing or in
//! `leader-elected`/`upgrade-charm`, and every write (bags, peers file, service) happens only when
//! the content changes. The context the handlers share lives in `context.rs`, leader publishing in
//! `leader.rs`.

use std::collections::BTreeMap;

use super::agent;
use super::context::{HookContext, PEER_ENDPOINT};
use super::leader;
use super::model::{SharedNetwork, check_group, networks_json, parse_exporter, parse_networks};
use super::publish::{peers_file, plan_for};
use super::service;
use super::state::{PeerRecord, save_cache, write_if_changed};
use crate::mesh::discovery::{DiscoveryOptions, local_networks};

/// Runs the handler for the current hook. Unknown hooks do nothing.
pub fn handle(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let hook = ctx.env.hook.clone();
    let relation = ctx.env.relation.clone();
    match (hook.as_str(), relation.as_deref()) {
        ("install", _) => install(ctx),
        ("upgrade-charm", _) => {
            install(ctx)?;
            rebuild_cache(ctx)?;
            share_networks(ctx)?;
            service::restart(ctx.tools)?;
            after_membership_change(ctx)
        }
        ("start", _) => service::start(ctx.tools),
        ("stop", _) => service::stop(ctx.tools),
        ("remove", _) => service::remove(ctx.tools, &ctx.paths),
        ("config-changed", _) => config_changed(ctx),
        ("leader-elected", _) => {
            ctx.cache.leader = true;
            rebuild_cache(ctx)?;
            after_membership_change(ctx)
        }
        ("leader-settings-changed", _) => {
            ctx.cache.leader = false;
            leader::step_down(ctx)
        }
        ("update-status", _) => publish(ctx),
        (_, Some(PEER_ENDPOINT)) => peer_hook(ctx, &hook),
        (_, Some(endpoint)) => {
            remember_relation(ctx, endpoint);
            leader::relation_hook(ctx, endpoint)
        }
        _ => Ok(()),
    }
}

fn install(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let config = ctx.refresh_config()?;
    ctx.cache.own_networks = discover()?;
    service::write_files(
        ctx.tools,
        &ctx.paths,
        &ctx.env.charm_dir,
        &config,
        &ctx.cache.own_networks,
    )?;
    ctx.tools
        .open_port(&format!("{}/tcp", config.port))
        .map_err(|e| e.to_string())?;
    ctx.tools.open_port("icmp").map_err(|e| e.to_string())
}

fn config_changed(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let old_port = ctx.cache.config.as_ref().map(|c| c.port);
    let config = ctx.refresh_config()?;
    share_networks(ctx)?;
    let (unit_changed, config_file_changed) = service::write_files(
        ctx.tools,
        &ctx.paths,
        &ctx.env.charm_dir,
        &config,
        &ctx.cache.own_networks,
    )?;
    if old_port.is_some_and(|p| p != config.port) {
        ctx.tools
            .open_port(&format!("{}/tcp", config.port))
            .map_err(|e| e.to_string())?;
    }
    if unit_changed {
        service::restart(ctx.tools)?;
    } else if config_file_changed {
        service::reload(ctx.tools)?;
    }
    after_membership_change(ctx)
}

/// This machine's networks, as shared with peers.
fn discover() -> Result<Vec<SharedNetwork>, String> {
    let networks = local_networks(DiscoveryOptions::default())
        .map_err(|e| format!("cannot list interfaces: {e}"))?;
    let mut shared: Vec<SharedNetwork> = networks.iter().map(SharedNetwork::from_local).collect();
    shared.sort_by_key(|n| (n.cidr, n.address));
    Ok(shared)
}

/// Publishes this unit's networks and exporter address in its peer bag (only if changed).
fn share_networks(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let config = ctx.config()?;
    ctx.cache.own_networks = discover()?;
    let selectors = config.selectors();
    let exporter = ctx
        .cache
        .own_networks
        .iter()
        .find(|n| selectors.iter().any(|s| s.matches_network(&n.to_local())))
        .or(ctx.cache.own_networks.first())
        .map(|n| std::net::SocketAddr::new(n.address, config.port).to_string());
    ctx.cache.own_exporter = exporter.clone();
    let relation_ids = peer_relation_ids(ctx)?;
    for relation_id in relation_ids {
        let mut values = BTreeMap::from([(
            "networks".to_string(),
            networks_json(&ctx.cache.own_networks),
        )]);
        if let Some(exporter) = &exporter {
            values.insert("exporter".into(), exporter.clone());
        }
        // Only with grouping on, or to delete a group written before (an empty value deletes
        // the key): writing nothing new triggers no peer hooks.
        let written = ctx.cache.written.get(&format!("{relation_id} unit group"));
        match ctx.own_group() {
            Some(group) => {
                values.insert("group".into(), group);
            }
            None if written.is_some_and(|g| !g.is_empty()) => {
                values.insert("group".into(), String::new());
            }
            None => {}
        }
        ctx.set_if_changed(&relation_id, values, false)?;
    }
    agent::publish(ctx)
}

fn peer_relation_ids(ctx: &mut HookContext<'_>) -> Result<Vec<String>, String> {
    if ctx.env.relation.as_deref() == Some(PEER_ENDPOINT)
        && let Some(id) = &ctx.env.relation_id
    {
        return Ok(vec![id.clone()]);
    }
    if let Some(ids) = ctx.cache_relations(PEER_ENDPOINT) {
        return Ok(ids);
    }
    read_peer_relation_ids(ctx)
}

/// Asks Juju for the peer relation ids and caches them.
fn read_peer_relation_ids(ctx: &mut HookContext<'_>) -> Result<Vec<String>, String> {
    let ids = ctx
        .tools
        .relation_ids(PEER_ENDPOINT)
        .map_err(|e| e.to_string())?;
    ctx.cache
        .relations
        .insert(PEER_ENDPOINT.into(), ids.clone());
    Ok(ids)
}

fn remember_relation(ctx: &mut HookContext<'_>, endpoint: &str) {
    let Some(id) = ctx.env.relation_id.clone() else {
        return;
    };
    let ids = ctx.cache.relations.entry(endpoint.to_string()).or_default();
    if ctx.env.hook.ends_with("-relation-broken") {
        ids.retain(|known| known != &id);
    } else if !ids.contains(&id) {
        ids.push(id);
        ids.sort();
    }
}

/// Turns one peer's raw bag into a record, never failing.
fn peer_record(bag: &BTreeMap<String, String>) -> PeerRecord {
    let mut record = PeerRecord::default();
    if let Some(text) = bag.get("networks") {
        match parse_networks(text) {
            Ok(networks) => record.networks = networks,
            Err(problem) => record.problem = Some(problem),
        }
    }
    if let Some(text) = bag.get("group").filter(|g| !g.is_empty()) {
        match check_group(text) {
            Ok(()) => record.group = Some(text.clone()),
            Err(problem) => record.problem = record.problem.take().or(Some(problem)),
        }
    }
    if let Some(text) = bag.get("exporter") {
        match parse_exporter(text) {
            Ok(address) => record.exporter = Some(address.to_string()),
            Err(problem) => record.problem = record.problem.take().or(Some(problem)),
        }
    }
    record
}

fn peer_hook(ctx: &mut HookContext<'_>, hook: &str) -> Result<(), String> {
    remember_relation(ctx, PEER_ENDPOINT);
    if hook.ends_with("-relation-created") {
        return share_networks(ctx);
    }
    if hook.ends_with("-relation-departed") {
        if let Some(departing) = ctx.env.departing_unit.clone()
            && departing != ctx.env.unit
        {
            ctx.cache.peers.remove(&departing);
        }
        return after_membership_change(ctx);
    }
    if hook.ends_with("-relation-joined") || hook.ends_with("-relation-changed") {
        // App-bag changes arrive with an empty JUJU_REMOTE_UNIT: nothing of ours to read.
        let (Some(remote), Some(relation_id)) =
            (ctx.env.remote_unit.clone(), ctx.env.relation_id.clone())
        else {
            return Ok(());
        };
        let bag = match ctx.tools.relation_get(&relation_id, &remote, false) {
            Ok(bag) => bag,
            Err(error) => {
                // The remote's data could not be read; keep what we knew.
                ctx.tools
                    .log("WARNING", &format!("cannot read {remote}'s data: {error}"));
                return Ok(());
            }
        };
        let record = peer_record(&bag);
        if ctx.cache.peers.get(&remote) == Some(&record) {
            return publish(ctx);
        }
        ctx.cache.peers.insert(remote, record);
        return after_membership_change(ctx);
    }
    Ok(())
}

/// Re-reads every peer's bag (only when the cache is missing, and on leader-elected/upgrade).
pub fn rebuild_cache(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let ids = read_peer_relation_ids(ctx)?;
    let mut peers = BTreeMap::new();
    for relation_id in &ids {
        for unit in ctx
            .tools
            .relation_list(relation_id)
            .map_err(|e| e.to_string())?
        {
            let record = match ctx.tools.relation_get(relation_id, &unit, false) {
                Ok(bag) => peer_record(&bag),
                Err(error) => PeerRecord {
                    problem: Some(format!("cannot read its data: {error}")),
                    ..PeerRecord::default()
                },
            };
            peers.insert(unit, record);
        }
    }
    ctx.cache.peers = peers;
    if ctx.cache.own_networks.is_empty() {
        ctx.cache.own_networks = discover()?;
    }
    for endpoint in leader::ENDPOINTS {
        if let Ok(ids) = ctx.tools.relation_ids(endpoint) {
            ctx.cache.relations.insert(endpoint.to_string(), ids);
        }
    }
    Ok(())
}

/// Recomputes this unit's plan, rewrites the peers file if it changed, lets the leader publish,
/// and updates the status.
pub fn after_membership_change(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let config = ctx.config()?;
    let units = ctx.units();
    let plan = plan_for(&ctx.env.unit, &units, &ctx.plan_rules(&config));
    if config.mode.mesh() {
        write_if_changed(
            &ctx.paths.peers_file(),
            peers_file(&plan, &units).as_bytes(),
        )
        .map_err(|e| format!("cannot write the peers file: {e}"))?;
    }
    publish(ctx)?;
    update_status(ctx, &plan);
    Ok(())
}

/// This unit's data for Prometheus (every unit), then the application's (leader only).
fn publish(ctx: &mut HookContext<'_>) -> Result<(), String> {
    agent::publish(ctx)?;
    leader::publish(ctx)
}

fn update_status(ctx: &mut HookContext<'_>, plan: &crate::mesh::plan::Plan) {
    let mut peers: Vec<&str> = plan.targets.iter().map(|t| t.peer.as_str()).collect();
    peers.dedup();
    let mut networks: Vec<String> = plan.targets.iter().map(|t| t.network_label()).collect();
    networks.sort();
    networks.dedup();
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    let mut message = format!(
        "probing {} on {}",
        plural(peers.len(), "peer"),
        plural(networks.len(), "network")
    );
    let without = plan.unplaced.len();
    if without > 0 {
        message.push_str(&format!(
            "; {} without a common network",
            plural(without, "peer")
        ));
    }
    let waiting: Vec<&str> = ctx
        .cache
        .peers
        .iter()
        .filter(|(_, record)| record.networks.is_empty() && record.problem.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    if !waiting.is_empty() {
        let mut names = waiting
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if waiting.len() > 3 {
            names.push_str(", …");
        }
        message.push_str(&format!(
            "; waiting for {} to share {} networks ({names})",
            plural(waiting.len(), "peer"),
            if waiting.len() == 1 { "its" } else { "their" }
        ));
    }
    let skipped: Vec<String> = ctx
        .cache
        .peers
        .iter()
        .filter_map(|(name, record)| record.problem.as_ref().map(|p| format!("{name}: {p}")))
        .collect();
    if !skipped.is_empty() {
        message.push_str(&format!("; skipped {}", skipped.join("; ")));
    }
    let status = format!("active {message}");
    if ctx.cache.status != status && ctx.tools.status_set("active", &message).is_ok() {
        ctx.cache.status = status;
    }
}

/// Saves the cache at the end of a successful hook.
pub fn finish(ctx: &HookContext<'_>) -> Result<(), String> {
    save_cache(&ctx.paths.cache(), &ctx.cache)
        .map_err(|e| format!("cannot save the charm cache: {e}"))
}
