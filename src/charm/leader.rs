//! Publishing to Prometheus: every unit's own address on `metrics-endpoint` and its `cos-agent`
//! config, and (leader only) the application's scrape jobs on `metrics-endpoint` and
//! `prometheus-manual`.
//!
//! Owns the "write only when it changed" and "hold back until settled" rules. In probe mode the
//! leader waits until `goal-state` shows no unit still coming and every joined peer has shared its
//! networks; the last such peer's `-changed` hook on the leader is what publishes, so the final
//! state never depends on a later hook. A new leader compares with what the app bag already holds
//! and writes nothing when it is identical.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::context::{HookContext, PEER_ENDPOINT};
use super::publish::{compact, mesh_job, scrape_jobs};

const METRICS: &str = "metrics-endpoint";
const COS_AGENT: &str = "cos-agent";
const MANUAL: &str = "prometheus-manual";

/// Unit-bag data every unit writes (address for Prometheus' wildcard expansion; cos-agent jobs).
pub fn share_unit_address(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let Some(exporter) = ctx.cache.own_exporter.clone() else {
        return Ok(());
    };
    let address = exporter
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or(exporter);
    for relation_id in ctx.cache_relations(METRICS).unwrap_or_default() {
        let values = BTreeMap::from([
            (
                "prometheus_scrape_unit_address".to_string(),
                address.clone(),
            ),
            (
                "prometheus_scrape_unit_name".to_string(),
                ctx.env.unit.clone(),
            ),
        ]);
        ctx.set_if_changed(&relation_id, values, false)?;
    }
    let config = ctx.config()?;
    for relation_id in ctx.cache_relations(COS_AGENT).unwrap_or_default() {
        let mut job = mesh_job(config.port);
        job["static_configs"] = json!([{"targets": [format!("localhost:{}", config.port)]}]);
        let data = json!({
            "dashboards": [], "log_alert_rules": {}, "log_slots": [],
            "metrics_alert_rules": {}, "metrics_scrape_jobs": [job],
        });
        ctx.set_if_changed(
            &relation_id,
            BTreeMap::from([("config".to_string(), compact(&data))]),
            false,
        )?;
    }
    Ok(())
}

/// Handles a hook of a non-peer relation.
pub fn relation_hook(ctx: &mut HookContext<'_>, endpoint: &str) -> Result<(), String> {
    if ![METRICS, COS_AGENT, MANUAL].contains(&endpoint)
        || ctx.env.hook.ends_with("-relation-broken")
    {
        return Ok(());
    }
    share_unit_address(ctx)?;
    publish(ctx)
}

/// Whether every expected peer has arrived and shared its networks (probe mode only).
fn settled(ctx: &HookContext<'_>) -> Result<bool, String> {
    let goal = ctx.tools.goal_state().map_err(|e| e.to_string())?;
    let coming = |status: Option<&str>| matches!(status, Some("allocating" | "waiting"));
    if let Some(units) = goal.get("units").and_then(Value::as_object)
        && units
            .values()
            .any(|u| coming(u.get("status").and_then(Value::as_str)))
    {
        return Ok(false);
    }
    let peers = goal
        .get("relations")
        .and_then(|r| r.get(PEER_ENDPOINT))
        .and_then(Value::as_object);
    // Real Juju's goal-state may list neither peers nor subordinate units; then the cache is
    // the only evidence: every peer that has joined must have shared its networks.
    let pending = ctx
        .cache
        .peers
        .values()
        .any(|record| record.networks.is_empty() && record.problem.is_none());
    if pending {
        return Ok(false);
    }
    for (unit, state) in peers.into_iter().flatten() {
        if unit == &ctx.env.unit
            || !unit.contains('/')
            || state.get("status").and_then(Value::as_str) == Some("dying")
        {
            continue;
        }
        let shared = ctx
            .cache
            .peers
            .get(unit)
            .is_some_and(|record| !record.networks.is_empty() || record.problem.is_some());
        if !shared {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Leader only: writes the scrape jobs wherever Prometheus reads them, if they changed.
pub fn publish(ctx: &mut HookContext<'_>) -> Result<(), String> {
    if !ctx.cache.leader {
        return Ok(());
    }
    let metrics_ids = ctx.cache_relations(METRICS).unwrap_or_default();
    let manual_ids = ctx.cache_relations(MANUAL).unwrap_or_default();
    if metrics_ids.is_empty() && manual_ids.is_empty() {
        return Ok(());
    }
    let config = ctx.config()?;
    if config.mode.probe() && !settled(ctx)? {
        ctx.tools
            .log("DEBUG", "peers are still joining; holding back publication");
        return Ok(());
    }
    let jobs = scrape_jobs(config.mode, config.port, &ctx.units(), &config.selectors());
    let jobs_json = compact(&jobs);
    for relation_id in metrics_ids {
        publish_app_bag(ctx, &relation_id, &jobs_json)?;
    }
    for relation_id in manual_ids {
        let values: BTreeMap<String, String> = jobs
            .iter()
            .filter_map(|job| {
                let name = job.get("job_name")?.as_str()?.to_string();
                Some((
                    format!("request_{name}"),
                    compact(&json!({"job_name": name, "job_data": job})),
                ))
            })
            .collect();
        ctx.set_if_changed(&relation_id, values, false)?;
    }
    Ok(())
}

fn publish_app_bag(
    ctx: &mut HookContext<'_>,
    relation_id: &str,
    jobs_json: &str,
) -> Result<(), String> {
    let known = ctx
        .cache
        .written
        .get(&format!("{relation_id} app scrape_jobs"))
        .cloned();
    if known.as_deref() == Some(jobs_json) {
        return Ok(());
    }
    // Not known (new leader or rebuilt cache): compare with what the bag holds before writing.
    let current = ctx
        .tools
        .relation_get(relation_id, &ctx.env.app, true)
        .map_err(|e| e.to_string())?;
    let metadata = match current.get("scrape_metadata") {
        Some(existing) if serde_json::from_str::<Value>(existing).is_ok() => existing.clone(),
        _ => compact(&json!({
            "application": ctx.env.app, "model": ctx.env.model,
            "model_uuid": ctx.env.model_uuid, "unit": ctx.env.unit,
        })),
    };
    // Seed the cache with the bag's content so that only differing keys are written.
    for key in ["scrape_jobs", "scrape_metadata"] {
        let cache_key = format!("{relation_id} app {key}");
        match current.get(key) {
            Some(value) => ctx.cache.written.insert(cache_key, value.clone()),
            None => ctx.cache.written.remove(&cache_key),
        };
    }
    if current.get("scrape_jobs").map(String::as_str) == Some(jobs_json)
        && current.contains_key("scrape_metadata")
    {
        return Ok(());
    }
    if !ctx.tools.is_leader().map_err(|e| e.to_string())? {
        ctx.cache.leader = false;
        return Ok(());
    }
    let values = BTreeMap::from([
        ("scrape_jobs".to_string(), jobs_json.to_string()),
        ("scrape_metadata".to_string(), metadata),
    ]);
    ctx.set_if_changed(relation_id, values, true)?;
    Ok(())
}
