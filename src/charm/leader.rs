//! Leader publishing: the application's data on `metrics-endpoint` (`scrape_jobs`,
//! `scrape_metadata`, `alert_rules`), its jobs on `prometheus-manual` (the leader's unit bag,
//! `request_<job>` keys) and its dashboards on `grafana-dashboard` (`dashboards`).
//!
//! Owns the "write only when it changed" and "hold back until settled" rules. In probe mode the
//! leader waits until `goal-state` shows no unit still coming and every joined peer has shared its
//! networks; the last such peer's `-changed` hook on the leader is what publishes, so the final
//! state never depends on a later hook. A new leader compares with what the app bag already holds
//! and writes only the keys that differ (`scrape_metadata` names the leader, so that one does).
//! Keys of jobs no longer published are deleted, and a unit that loses leadership deletes its
//! `prometheus-manual` requests.

use std::collections::BTreeMap;

use serde_json::json;

use super::agent::{self, COS_AGENT, METRICS};
use super::context::HookContext;
use super::cos::alert_rules;
use super::dashboards;
use super::publish::compact;

pub const MANUAL: &str = "prometheus-manual";
pub const DASHBOARD: &str = "grafana-dashboard";

/// The non-peer endpoints the charm writes to.
pub const ENDPOINTS: &[&str] = &[METRICS, COS_AGENT, MANUAL, DASHBOARD];

const REQUEST_PREFIX: &str = "request_";

/// Handles a hook of a non-peer relation.
pub fn relation_hook(ctx: &mut HookContext<'_>, endpoint: &str) -> Result<(), String> {
    if !ENDPOINTS.contains(&endpoint) || ctx.env.hook.ends_with("-relation-broken") {
        return Ok(());
    }
    agent::publish(ctx)?;
    publish(ctx)
}

/// Leader only: writes the application's data wherever its consumers read it, if it changed.
pub fn publish(ctx: &mut HookContext<'_>) -> Result<(), String> {
    if !ctx.cache.leader {
        return Ok(());
    }
    let metrics_ids = ctx.cache_relations(METRICS).unwrap_or_default();
    let manual_ids = ctx.cache_relations(MANUAL).unwrap_or_default();
    let dashboard_ids = ctx.cache_relations(DASHBOARD).unwrap_or_default();
    if metrics_ids.is_empty() && manual_ids.is_empty() && dashboard_ids.is_empty() {
        return Ok(());
    }
    let config = ctx.config()?;
    if config.mode.probe() && !ctx.peers_settled()? {
        ctx.tools
            .log("DEBUG", "peers are still joining; holding back publication");
        return Ok(());
    }
    let input = ctx.job_input()?;
    let topology = &input.topology;
    if !metrics_ids.is_empty() {
        let values = BTreeMap::from([
            ("scrape_jobs".to_string(), compact(&input.scrape_jobs())),
            ("scrape_metadata".to_string(), compact(&topology.metadata())),
            ("alert_rules".to_string(), compact(&alert_rules(topology))),
        ]);
        for relation_id in &metrics_ids {
            publish_app_bag(ctx, relation_id, &values)?;
        }
    }
    if !dashboard_ids.is_empty() {
        let data = dashboards::grafana_dashboard_data(topology)?;
        let values = BTreeMap::from([("dashboards".to_string(), compact(&data))]);
        for relation_id in &dashboard_ids {
            publish_app_bag(ctx, relation_id, &values)?;
        }
    }
    if manual_ids.is_empty() {
        return Ok(());
    }
    let requests: BTreeMap<String, String> = input
        .manual_jobs()
        .iter()
        .filter_map(|job| {
            let name = job.get("job_name")?.as_str()?.to_string();
            Some((
                format!("{REQUEST_PREFIX}{name}"),
                compact(&json!({"job_name": name, "job_data": job})),
            ))
        })
        .collect();
    for relation_id in manual_ids {
        replace_requests(ctx, &relation_id, requests.clone())?;
    }
    Ok(())
}

/// Writes `requests` into this unit's bag on `relation_id` and deletes every other
/// `request_…` key there (from jobs no longer published, or all of them when `requests` is
/// empty).
fn replace_requests(
    ctx: &mut HookContext<'_>,
    relation_id: &str,
    mut requests: BTreeMap<String, String>,
) -> Result<(), String> {
    let prefix = format!("{relation_id} unit {REQUEST_PREFIX}");
    let known: Vec<String> = ctx
        .cache
        .written
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{relation_id} unit ")))
        .filter(|k| k.starts_with(REQUEST_PREFIX))
        .map(str::to_string)
        .collect();
    let mut present = known;
    if !ctx
        .cache
        .written
        .keys()
        .any(|k| k.starts_with(&format!("{relation_id} unit ")))
    {
        // Nothing known about our own bag (new relation or rebuilt cache): read it once.
        let bag = ctx
            .tools
            .relation_get(relation_id, &ctx.env.unit, false)
            .map_err(|e| e.to_string())?;
        for (key, value) in bag {
            if key.starts_with(REQUEST_PREFIX) {
                ctx.cache
                    .written
                    .insert(format!("{relation_id} unit {key}"), value);
                present.push(key);
            }
        }
    }
    for stale in present {
        requests.entry(stale).or_default();
    }
    ctx.set_if_changed(relation_id, requests, false)?;
    ctx.cache
        .written
        .retain(|k, v| !(k.starts_with(&prefix) && v.is_empty()));
    Ok(())
}

/// A unit that is no longer the leader withdraws its `prometheus-manual` requests.
pub fn step_down(ctx: &mut HookContext<'_>) -> Result<(), String> {
    for relation_id in ctx.cache_relations(MANUAL).unwrap_or_default() {
        replace_requests(ctx, &relation_id, BTreeMap::new())?;
    }
    Ok(())
}

/// Writes `values` into the application bag of `relation_id`, only the keys that differ. When
/// the cache does not know the bag (new leader, rebuilt cache), the bag is read once first.
fn publish_app_bag(
    ctx: &mut HookContext<'_>,
    relation_id: &str,
    values: &BTreeMap<String, String>,
) -> Result<(), String> {
    let cache_key = |key: &str| format!("{relation_id} app {key}");
    let known = |ctx: &HookContext<'_>, key: &str| ctx.cache.written.get(&cache_key(key)).cloned();
    if values
        .iter()
        .all(|(key, value)| known(ctx, key).as_ref() == Some(value))
    {
        return Ok(());
    }
    if values.keys().any(|key| known(ctx, key).is_none()) {
        let current = ctx
            .tools
            .relation_get(relation_id, &ctx.env.app, true)
            .map_err(|e| e.to_string())?;
        for key in values.keys() {
            match current.get(key) {
                Some(value) => ctx.cache.written.insert(cache_key(key), value.clone()),
                None => ctx.cache.written.remove(&cache_key(key)),
            };
        }
        if values
            .iter()
            .all(|(key, value)| current.get(key) == Some(value))
        {
            return Ok(());
        }
    }
    if !ctx.tools.is_leader().map_err(|e| e.to_string())? {
        ctx.cache.leader = false;
        return Ok(());
    }
    ctx.set_if_changed(relation_id, values.clone(), true)?;
    Ok(())
}
