//! Every unit's own data for Prometheus: its address on `metrics-endpoint` (for the consumer's
//! wildcard expansion) and its `config` on `cos-agent` (the collector on its machine: this unit's
//! mesh and probe jobs against `localhost`, the alert rules and the dashboards, in the
//! `CosAgentProviderUnitData` form of the `cos_agent` library).
//!
//! Owns the `cos_agent` job names (`<app>_<job>_<8-hex hash of the rest of the job>`, the shape
//! the library gives them; the hash here is SHA-256 where the library uses BLAKE2b, and nothing
//! reads it back) and the same hold-back rule as the leader: in probe mode nothing is written
//! while peers are still joining, so a bring-up does not rewrite every unit's bag per peer.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::Digest;

use super::context::HookContext;
use super::cos::alert_rules;
use super::dashboards;
use super::publish::compact;

pub const METRICS: &str = "metrics-endpoint";
pub const COS_AGENT: &str = "cos-agent";

/// `<app>_<job_name>_<hash>` for every job, sorted by name (as `COSAgentProvider` does).
fn agent_job_names(app: &str, jobs: Vec<Value>) -> Vec<Value> {
    let mut named: Vec<Value> = jobs
        .into_iter()
        .map(|mut job| {
            let name = job
                .get("job_name")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            if let Some(map) = job.as_object_mut() {
                map.remove("job_name");
            }
            let digest = sha2::Sha256::digest(compact(&job).as_bytes());
            let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            job["job_name"] = Value::String(format!("{app}_{name}_{hash}"));
            job
        })
        .collect();
    named.sort_by(|a, b| a["job_name"].as_str().cmp(&b["job_name"].as_str()));
    named
}

/// The `config` value of this unit's `cos-agent` bag.
pub fn cos_agent_config(ctx: &mut HookContext<'_>) -> Result<String, String> {
    let input = ctx.job_input()?;
    let jobs = agent_job_names(&ctx.env.app, input.local_jobs(&ctx.env.unit));
    let data = json!({
        "dashboards": dashboards::encoded()?,
        "log_alert_rules": {},
        "log_slots": [],
        "metrics_alert_rules": alert_rules(&input.topology),
        "metrics_scrape_jobs": jobs,
    });
    Ok(compact(&data))
}

/// Writes this unit's address on `metrics-endpoint` and its `cos-agent` config, where they
/// changed.
pub fn publish(ctx: &mut HookContext<'_>) -> Result<(), String> {
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
    let agent_ids = ctx.cache_relations(COS_AGENT).unwrap_or_default();
    if agent_ids.is_empty() {
        return Ok(());
    }
    if ctx.config()?.mode.probe() && !ctx.peers_settled()? {
        ctx.tools.log(
            "DEBUG",
            "peers are still joining; holding back the cos-agent jobs",
        );
        return Ok(());
    }
    let data = cos_agent_config(ctx)?;
    for relation_id in agent_ids {
        let values = BTreeMap::from([("config".to_string(), data.clone())]);
        ctx.set_if_changed(&relation_id, values, false)?;
    }
    Ok(())
}
