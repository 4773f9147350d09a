//! The charm's actions: `show-targets` (this unit's probe set), `probe` (one `/probe` through the
//! running service) and `show-jobs` (what the leader publishes).
//!
//! Results go back through `action-set`; a failure through `action-fail`, never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use super::context::HookContext;
use super::publish::{compact, plan_for};

pub fn run(ctx: &mut HookContext<'_>) -> Result<(), String> {
    let result = match ctx.env.hook.as_str() {
        "show-targets" => show_targets(ctx),
        "show-jobs" => show_jobs(ctx),
        "probe" => probe(ctx),
        other => Err(format!("unknown action {other:?}")),
    };
    match result {
        Ok(values) => ctx.tools.action_set(&values).map_err(|e| e.to_string()),
        Err(message) => ctx.tools.action_fail(&message).map_err(|e| e.to_string()),
    }
}

fn show_targets(ctx: &mut HookContext<'_>) -> Result<BTreeMap<String, String>, String> {
    let config = ctx.config()?;
    let plan = plan_for(&ctx.env.unit, &ctx.units(), &ctx.plan_rules(&config));
    let targets: Vec<Value> = plan
        .targets
        .iter()
        .map(|t| json!({"address": t.address.to_string(), "network": t.network_label(), "peer": t.peer}))
        .collect();
    let unplaced: Vec<Value> = plan
        .unplaced
        .iter()
        .map(|(peer, reason)| json!({"peer": peer, "reason": reason.to_string()}))
        .collect();
    Ok(BTreeMap::from([
        ("targets".to_string(), compact(&targets)),
        ("unplaced".to_string(), compact(&unplaced)),
    ]))
}

fn show_jobs(ctx: &mut HookContext<'_>) -> Result<BTreeMap<String, String>, String> {
    let jobs = compact(&ctx.job_input()?.scrape_jobs());
    Ok(BTreeMap::from([
        ("size".to_string(), jobs.len().to_string()),
        ("jobs".to_string(), jobs),
    ]))
}

fn probe(ctx: &mut HookContext<'_>) -> Result<BTreeMap<String, String>, String> {
    let params = ctx.tools.action_get().map_err(|e| e.to_string())?;
    let target = params
        .get("target")
        .and_then(Value::as_str)
        .ok_or("the target parameter is required")?
        .to_string();
    crate::resolve::check_target_syntax(&target)?;
    let module = params
        .get("module")
        .and_then(Value::as_str)
        .unwrap_or("icmp")
        .to_string();
    let config = ctx.config()?;
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("target", &target)
        .append_pair("module", &module)
        .finish();
    let address = SocketAddr::from(([127, 0, 0, 1], config.port));
    let body = http_get(address, &format!("/probe?{encoded}"))?;
    let success = body.lines().any(|l| l == "probe_success 1");
    Ok(BTreeMap::from([
        ("success".to_string(), success.to_string()),
        ("metrics".to_string(), body),
    ]))
}

/// A minimal HTTP/1.0 GET against the local service.
fn http_get(address: SocketAddr, path: &str) -> Result<String, String> {
    let error = |e: std::io::Error| format!("cannot reach the meshprobe service on {address}: {e}");
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(error)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(130)))
        .map_err(error)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(error)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(error)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "probe refused: {} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        ));
    }
    Ok(body.to_string())
}
