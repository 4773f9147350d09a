//! Juju's hook selection and the hook runner: which hook a unit runs next (uniter resolver
//! rules, with per-remote-unit coalescing of `-changed` by bag version), the Juju environment
//! for it, and running `dispatch` inside the unit's namespace.
//!
//! Owns `resolve` (next hook), `prepare` (relation-view side effects such as relation-list
//! updates, and the env), and `execute` (spawn with setns, wait, collect stdout/stderr, call
//! log and transaction log; the watchdog in `mod.rs` kills hooks over `HOOK_TIMEOUT`). The
//! commit step is in `commit.rs`; scheduling in `sched.rs`.

use super::model::{APP, Life, MODEL_NAME, MODEL_UUID};
use super::{Core, Hook, Shared};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const FIELD: char = '\u{1f}';
pub const RECORD: char = '\u{1e}';
/// A hook that runs longer than this is killed and counted as failed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// A hook chosen for a unit, with everything needed to run it outside the lock.
pub struct Job {
    pub u: usize,
    pub hook: Hook,
    pub env: Vec<(String, String)>,
    pub netns_fd: i32,
    pub hook_dir: PathBuf,
}

pub struct Outcome {
    pub exit: i32,
    pub wall: Duration,
    pub stdout: String,
    pub stderr: String,
    pub calls: String,
    pub tx: String,
}

fn version(core: &Core, rid: u32, owner: &str) -> u64 {
    core.model.relations[&rid]
        .bags
        .get(owner)
        .map_or(0, |b| b.version)
}

/// The next hook for unit `u` per the uniter resolver: queued operations first, then for each
/// relation: pending `-changed` after `-joined`, departures, app-bag change, joins (by name),
/// unit-bag changes whose latest version was not delivered yet (one hook per remote unit).
pub fn resolve(core: &mut Core, u: usize) -> Option<Hook> {
    if let Some(hook) = core.model.units[u].queue.pop_front() {
        return Some(hook);
    }
    let unit = &core.model.units[u];
    if unit.life != Life::Alive || !unit.started {
        return None;
    }
    for (&rid, view) in &unit.views {
        if !view.created {
            continue;
        }
        let rel = &core.model.relations[&rid];
        let endpoint = rel.endpoint;
        if let Some(r) = &view.changed_pending {
            return Some(Hook::relation(endpoint, "changed", rid, r));
        }
        let remote = core.model.remote_members(u, rid);
        if let Some(gone) = view.known.keys().find(|k| !remote.contains(*k)) {
            let mut hook = Hook::relation(endpoint, "departed", rid, gone);
            hook.departing = gone.clone();
            return Some(hook);
        }
        let app = if rel.peer { APP } else { rel.remote_app };
        let app_version = version(core, rid, app);
        if app_version > view.app_seen
            && !(rel.peer && core.model.leader.as_deref() == Some(&unit.name))
        {
            let mut hook = Hook::relation(endpoint, "changed", rid, "");
            hook.remote_app = app.to_string();
            return Some(hook);
        }
        if let Some(new) = remote.iter().find(|r| !view.known.contains_key(*r)) {
            return Some(Hook::relation(endpoint, "joined", rid, new));
        }
        if let Some((k, _)) = view
            .known
            .iter()
            .find(|(k, v)| version(core, rid, k) != **v)
        {
            return Some(Hook::relation(endpoint, "changed", rid, k));
        }
    }
    None
}

/// Applies the hook's effect on the unit's relation view before it runs, and builds its env.
pub fn prepare(core: &mut Core, u: usize, mut hook: Hook, tools: &str, charm_dir: &str) -> Job {
    if let Some(rid) = hook.rel {
        if hook.remote_app.is_empty() {
            hook.remote_app = core.model.relations[&rid].remote_app.to_string();
        }
        let v = version(core, rid, &hook.remote_unit);
        let app_v = version(core, rid, &hook.remote_app);
        let name = hook.name.clone();
        if name.ends_with("-created") {
            core.model.create_view(u, rid);
        }
        let view = core.model.units[u].views.entry(rid).or_default();
        if name.ends_with("-joined") {
            view.known.insert(hook.remote_unit.clone(), 0);
            view.changed_pending = Some(hook.remote_unit.clone());
            core.model.write_list(u, rid);
        } else if name.ends_with("-changed") && hook.remote_unit.is_empty() {
            view.app_seen = app_v;
        } else if name.ends_with("-changed") {
            if view.changed_pending.as_deref() == Some(&hook.remote_unit) {
                view.changed_pending = None;
            }
            view.known.insert(hook.remote_unit.clone(), v);
        } else if name.ends_with("-departed") {
            view.known.remove(&hook.remote_unit);
            core.model.write_list(u, rid);
        }
    }
    core.seq += 1;
    let unit = &core.model.units[u];
    let leader = core.model.leader.as_deref() == Some(unit.name.as_str());
    let hook_dir = unit.dir.join("hook");
    let path = format!("{tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("LANG".into(), "C.UTF-8".into()),
        ("HOME".into(), "/root".into()),
        ("MPSIM_STATE".into(), core.model.state.display().to_string()),
        ("MPSIM_HOOK".into(), hook_dir.display().to_string()),
        ("MPSIM_UNITF".into(), unit.file.clone()),
        ("MPSIM_LEADER".into(), leader.to_string()),
        (
            "MESHPROBE_CHARM_ROOT".into(),
            unit.root.display().to_string(),
        ),
        ("JUJU_UNIT_NAME".into(), unit.name.clone()),
        ("JUJU_MODEL_NAME".into(), MODEL_NAME.into()),
        ("JUJU_MODEL_UUID".into(), MODEL_UUID.into()),
        ("JUJU_VERSION".into(), "3.6.8".into()),
        ("JUJU_CHARM_DIR".into(), charm_dir.into()),
        ("CHARM_DIR".into(), charm_dir.into()),
        ("JUJU_PRINCIPAL_UNIT".into(), unit.principal.clone()),
        ("JUJU_MACHINE_ID".into(), unit.num.to_string()),
        ("JUJU_AVAILABILITY_ZONE".into(), unit.zone.clone()),
        (
            "JUJU_CONTEXT_ID".into(),
            format!("{}-{}-{}", unit.name, hook.name, core.seq),
        ),
        ("JUJU_AGENT_SOCKET_ADDRESS".into(), "@sim".into()),
        ("JUJU_AGENT_SOCKET_NETWORK".into(), "unix".into()),
        ("JUJU_API_ADDRESSES".into(), "198.18.255.2:17070".into()),
        ("CLOUD_API_VERSION".into(), String::new()),
    ];
    if let Some(params) = &hook.action {
        env.push((
            "JUJU_DISPATCH_PATH".into(),
            format!("actions/{}", hook.name),
        ));
        env.push(("JUJU_HOOK_NAME".into(), String::new()));
        env.push(("JUJU_ACTION_NAME".into(), hook.name.clone()));
        let uuid = format!("{:08x}-0000-4000-8000-{:012x}", core.seq, core.seq);
        env.push(("JUJU_ACTION_TAG".into(), format!("action-{uuid}")));
        env.push(("JUJU_ACTION_UUID".into(), uuid));
        let dir = unit.dir.join("action");
        let _ = std::fs::remove_dir_all(&dir);
        let map: BTreeMap<String, Value> = params
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        super::model::write_value(&dir.join("all"), params);
        for (k, v) in map {
            super::model::put(
                &dir.join("k").join(format!("{k}.json")),
                v.to_string().as_bytes(),
            );
            let raw = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            super::model::put(&dir.join("k").join(format!("{k}.raw")), raw.as_bytes());
        }
    } else {
        env.push(("JUJU_DISPATCH_PATH".into(), format!("hooks/{}", hook.name)));
        env.push(("JUJU_HOOK_NAME".into(), hook.name.clone()));
    }
    if let Some(rid) = hook.rel {
        let endpoint = core.model.relations[&rid].endpoint;
        env.push(("JUJU_RELATION".into(), endpoint.into()));
        env.push(("JUJU_RELATION_ID".into(), format!("{endpoint}:{rid}")));
        env.push(("JUJU_REMOTE_UNIT".into(), hook.remote_unit.clone()));
        env.push(("JUJU_REMOTE_APP".into(), hook.remote_app.clone()));
        if hook.name.ends_with("-departed") {
            env.push(("JUJU_DEPARTING_UNIT".into(), hook.departing.clone()));
        }
    }
    let netns_fd = core.nets.get(&u).map_or(-1, |n| n.fd());
    Job {
        u,
        hook,
        env,
        netns_fd,
        hook_dir,
    }
}

fn read_lossy(path: &std::path::Path, cap: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]).into_owned();
    if bytes.len() > cap {
        s.push_str("…[truncated]");
    }
    s
}

/// Runs the job's `dispatch` in the unit's namespace; no lock held.
pub fn execute(shared: &Shared, job: &Job, charm_dir: &str) -> Outcome {
    let _ = std::fs::remove_dir_all(&job.hook_dir);
    std::fs::create_dir_all(&job.hook_dir).unwrap_or_else(|e| panic!("mkdir hook dir: {e}"));
    let out = std::fs::File::create(job.hook_dir.join("out")).expect("create stdout file");
    let err = std::fs::File::create(job.hook_dir.join("err")).expect("create stderr file");
    let mut cmd = Command::new(format!("{charm_dir}/dispatch"));
    cmd.env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .current_dir(charm_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    super::netns::apply_fd(&mut cmd, job.netns_fd);
    let start = Instant::now();
    let exit = match cmd.spawn() {
        Ok(mut child) => {
            let pid = child.id() as i32;
            shared.watch(pid, true);
            let status = child.wait();
            shared.watch(pid, false);
            match status {
                Ok(s) => s.code().unwrap_or(
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0),
                ),
                Err(_) => 255,
            }
        }
        Err(e) => {
            std::fs::write(
                job.hook_dir.join("err"),
                format!("sim: cannot spawn dispatch: {e}"),
            )
            .ok();
            255
        }
    };
    let wall = start.elapsed();
    Outcome {
        exit,
        wall,
        stdout: read_lossy(&job.hook_dir.join("out"), 64 * 1024),
        stderr: read_lossy(&job.hook_dir.join("err"), 64 * 1024),
        calls: std::fs::read_to_string(job.hook_dir.join("calls")).unwrap_or_default(),
        tx: std::fs::read_to_string(job.hook_dir.join("tx")).unwrap_or_default(),
    }
}
