//! The Juju hook-tool client: `relation-get`, `relation-set`, `relation-list`, `relation-ids`,
//! `is-leader`, `config-get`, `status-set`, `juju-log`, `open-port`, `goal-state`, `action-*`,
//! and `systemctl`, behind the [`HookTools`] trait so tests can count and check the calls.
//!
//! Owns command lines and output parsing (always `--format=json` where the tool has it). It does
//! not decide anything; the hook handlers in `hooks.rs` do.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// A failed hook tool, with what it printed.
#[derive(Debug, thiserror::Error)]
#[error("{tool} failed: {message}")]
pub struct ToolError {
    pub tool: String,
    pub message: String,
}

pub type ToolResult<T> = Result<T, ToolError>;

/// The hook tools the charm uses. Relation ids are Juju's `endpoint:N` strings.
pub trait HookTools {
    /// All keys of `unit_or_app`'s bag (`--app` for an application bag).
    fn relation_get(
        &self,
        relation_id: &str,
        unit_or_app: &str,
        app: bool,
    ) -> ToolResult<BTreeMap<String, String>>;
    /// Writes keys into this unit's bag (or the app bag with `app`); an empty value deletes.
    fn relation_set(
        &self,
        relation_id: &str,
        values: &BTreeMap<String, String>,
        app: bool,
    ) -> ToolResult<()>;
    fn relation_list(&self, relation_id: &str) -> ToolResult<Vec<String>>;
    fn relation_ids(&self, endpoint: &str) -> ToolResult<Vec<String>>;
    fn is_leader(&self) -> ToolResult<bool>;
    fn config_get(&self) -> ToolResult<BTreeMap<String, Value>>;
    fn status_set(&self, status: &str, message: &str) -> ToolResult<()>;
    fn log(&self, level: &str, message: &str);
    fn open_port(&self, port: &str) -> ToolResult<()>;
    fn goal_state(&self) -> ToolResult<Value>;
    fn action_get(&self) -> ToolResult<BTreeMap<String, Value>>;
    fn action_set(&self, values: &BTreeMap<String, String>) -> ToolResult<()>;
    fn action_fail(&self, message: &str) -> ToolResult<()>;
    fn systemctl(&self, args: &[&str]) -> ToolResult<()>;
}

/// The real tools, run as processes found on `PATH`.
pub struct CommandTools;

fn run(tool: &str, args: &[&str], stdin: Option<&[u8]>) -> ToolResult<String> {
    let error = |message: String| ToolError {
        tool: tool.to_string(),
        message,
    };
    let mut command = Command::new(tool);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| error(format!("cannot run: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .map_err(|e| error(format!("cannot write stdin: {e}")))?;
    }
    let output = child.wait_with_output().map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        return Err(error(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| error("output is not UTF-8".into()))
}

fn json<T: serde::de::DeserializeOwned>(tool: &str, text: &str) -> ToolResult<T> {
    serde_json::from_str(text).map_err(|e| ToolError {
        tool: tool.to_string(),
        message: format!(
            "unexpected output {:?}: {e}",
            text.chars().take(200).collect::<String>()
        ),
    })
}

/// Relation bags come back as `{key: string}`; `null` (empty bag) becomes an empty map.
fn bag(tool: &str, text: &str) -> ToolResult<BTreeMap<String, String>> {
    let value: Value = json(tool, text)?;
    match value {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(map) => Ok(map
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect()),
        other => Err(ToolError {
            tool: tool.to_string(),
            message: format!("expected a map, got {other}"),
        }),
    }
}

impl HookTools for CommandTools {
    fn relation_get(
        &self,
        relation_id: &str,
        unit_or_app: &str,
        app: bool,
    ) -> ToolResult<BTreeMap<String, String>> {
        let mut args = vec!["--format=json", "-r", relation_id];
        if app {
            args.push("--app");
        }
        args.extend(["-", unit_or_app]);
        bag("relation-get", &run("relation-get", &args, None)?)
    }

    fn relation_set(
        &self,
        relation_id: &str,
        values: &BTreeMap<String, String>,
        app: bool,
    ) -> ToolResult<()> {
        let mut args = vec!["-r", relation_id];
        if app {
            args.push("--app");
        }
        args.extend(["--file", "-"]);
        let body = serde_json::to_vec(values).map_err(|e| ToolError {
            tool: "relation-set".into(),
            message: e.to_string(),
        })?;
        run("relation-set", &args, Some(&body)).map(|_| ())
    }

    fn relation_list(&self, relation_id: &str) -> ToolResult<Vec<String>> {
        let text = run("relation-list", &["--format=json", "-r", relation_id], None)?;
        let units: Option<Vec<String>> = json("relation-list", &text)?;
        Ok(units.unwrap_or_default())
    }

    fn relation_ids(&self, endpoint: &str) -> ToolResult<Vec<String>> {
        let text = run("relation-ids", &["--format=json", endpoint], None)?;
        let ids: Option<Vec<String>> = json("relation-ids", &text)?;
        Ok(ids.unwrap_or_default())
    }

    fn is_leader(&self) -> ToolResult<bool> {
        json("is-leader", &run("is-leader", &["--format=json"], None)?)
    }

    fn config_get(&self) -> ToolResult<BTreeMap<String, Value>> {
        let value: Option<BTreeMap<String, Value>> =
            json("config-get", &run("config-get", &["--format=json"], None)?)?;
        Ok(value.unwrap_or_default())
    }

    fn status_set(&self, status: &str, message: &str) -> ToolResult<()> {
        run("status-set", &[status, message], None).map(|_| ())
    }

    fn log(&self, level: &str, message: &str) {
        // Logging must never fail a hook.
        let _ = run("juju-log", &["--log-level", level, "--", message], None);
    }

    fn open_port(&self, port: &str) -> ToolResult<()> {
        run("open-port", &[port], None).map(|_| ())
    }

    fn goal_state(&self) -> ToolResult<Value> {
        json("goal-state", &run("goal-state", &["--format=json"], None)?)
    }

    fn action_get(&self) -> ToolResult<BTreeMap<String, Value>> {
        let value: Option<BTreeMap<String, Value>> =
            json("action-get", &run("action-get", &["--format=json"], None)?)?;
        Ok(value.unwrap_or_default())
    }

    fn action_set(&self, values: &BTreeMap<String, String>) -> ToolResult<()> {
        let args: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("action-set", &args, None).map(|_| ())
    }

    fn action_fail(&self, message: &str) -> ToolResult<()> {
        run("action-fail", &[message], None).map(|_| ())
    }

    fn systemctl(&self, args: &[&str]) -> ToolResult<()> {
        run("systemctl", args, None).map(|_| ())
    }
}
