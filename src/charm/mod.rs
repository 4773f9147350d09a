//! The embedded Juju charm: when `JUJU_DISPATCH_PATH` is set, the binary handles the hook or
//! action instead of serving.
//!
//! Layout: [`env`] reads the hook environment, [`tools`] is the hook-tool client, [`state`] the
//! unit's cache and files, [`model`] the shared data and its validation, [`publish`] the plan,
//! peers file and scrape jobs, [`context`] what every handler gets, [`hooks`] the handlers,
//! [`cos`] the Juju topology and alert rules COS reads, [`dashboards`] the Grafana dashboards,
//! [`promql`] the query rewriting both need, [`agent`] every unit's own data for Prometheus
//! (`metrics-endpoint` address, `cos-agent`), [`leader`] the application's data,
//! [`service`] the systemd service, [`actions`] the actions. See charm/README.md for the contract.

pub mod actions;
pub mod agent;
pub mod context;
pub mod cos;
pub mod dashboards;
pub mod env;
pub mod hooks;
pub mod leader;
pub mod model;
pub mod promql;
pub mod publish;
pub mod service;
pub mod state;
pub mod tools;

use std::process::ExitCode;

use context::{HookContext, PEER_ENDPOINT};
use env::JujuEnv;
use state::{Paths, load_cache};
use tools::{CommandTools, HookTools};

/// Handles the hook or action in the environment; `None` when not run by Juju.
pub fn dispatch_from_env() -> Option<ExitCode> {
    let env = match JujuEnv::from_env()? {
        Ok(env) => env,
        Err(message) => {
            eprintln!("meshprobe charm: {message}");
            return Some(ExitCode::FAILURE);
        }
    };
    Some(run(&env, &CommandTools, Paths::from_env()))
}

/// Runs one hook with the given tools and paths (tests pass their own).
pub fn run(env: &JujuEnv, tools: &dyn HookTools, paths: Paths) -> ExitCode {
    let cached = load_cache(&paths.cache());
    let cache_missing = cached.is_none();
    let mut ctx = HookContext {
        env,
        tools,
        paths,
        cache: cached.unwrap_or_default(),
    };
    let result = (|| {
        let peer_hook = env.relation.as_deref() == Some(PEER_ENDPOINT);
        if cache_missing && (peer_hook || env.is_action) && !env.hook.ends_with("-relation-created")
        {
            hooks::rebuild_cache(&mut ctx)?;
            ctx.cache.leader = tools.is_leader().unwrap_or(false);
        }
        if env.is_action {
            actions::run(&mut ctx)
        } else {
            hooks::handle(&mut ctx)
        }
    })();
    let result = result.and_then(|()| {
        if env.is_action {
            Ok(())
        } else {
            hooks::finish(&ctx)
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Bad config blocks the unit with the reason instead of failing every hook.
            if message.starts_with("mode")
                || message.starts_with("networks")
                || message.starts_with("interval")
                || message.starts_with("port")
                || message.starts_with("allowed-targets")
                || message.starts_with("modules")
            {
                let _ = tools.status_set("blocked", &format!("invalid config: {message}"));
                let _ = hooks::finish(&ctx);
                return ExitCode::SUCCESS;
            }
            tools.log("ERROR", &message);
            eprintln!("meshprobe charm: {}: {message}", env.hook);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cos;
