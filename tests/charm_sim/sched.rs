//! Scheduling: the state behind the simulator's one lock (`Core`), the ready queue of units
//! with work, and the worker loop. A worker takes the next ready unit that is not running,
//! asks the resolver for its next hook, runs it without the lock, then commits under the lock
//! and wakes the units the commit may have given work. Hooks of one unit never overlap (Juju's
//! machine lock: one unit per machine here); different units run in parallel.

use super::model::{Life, Model};
use super::report::Counters;
use super::{ActionResult, HookRecord, commit, runner};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Everything behind the lock.
pub struct Core {
    pub model: Model,
    pub nets: BTreeMap<usize, super::netns::UnitNet>,
    pub ready: VecDeque<usize>,
    pub ready_set: BTreeSet<usize>,
    pub running: usize,
    pub counters: Counters,
    pub records: Vec<HookRecord>,
    pub actions: Vec<ActionResult>,
    pub keep_calls: bool,
    pub seq: u64,
}

impl Core {
    pub fn wake(&mut self, u: usize) {
        if self.model.units[u].life != Life::Dead && self.ready_set.insert(u) {
            self.ready.push_back(u);
        }
    }

    pub fn wake_all(&mut self) {
        for u in 0..self.model.units.len() {
            self.wake(u);
        }
    }
}

pub struct Shared {
    pub core: Mutex<Core>,
    pub cv: Condvar,
    /// Running hook process groups and their deadlines.
    pub watched: Mutex<BTreeMap<i32, Instant>>,
}

impl Shared {
    pub fn watch(&self, pid: i32, on: bool) {
        let mut w = self.watched.lock().expect("watch lock");
        if on {
            w.insert(pid, Instant::now() + runner::HOOK_TIMEOUT);
        } else {
            w.remove(&pid);
        }
    }
}

pub fn worker(shared: &Shared, tools: &str, charm: &str) {
    loop {
        let job = {
            let mut core = shared.core.lock().expect("simulator lock poisoned");
            loop {
                if let Some(job) = pick(&mut core, tools, charm) {
                    break job;
                }
                if core.running == 0 {
                    shared.cv.notify_all();
                    return;
                }
                core = shared.cv.wait(core).expect("simulator lock poisoned");
            }
        };
        let out = runner::execute(shared, &job, charm);
        let mut core = shared.core.lock().expect("simulator lock poisoned");
        core.model.units[job.u].running = false;
        core.running -= 1;
        commit::commit(&mut core, job, out);
        shared.cv.notify_all();
    }
}

fn pick(core: &mut Core, tools: &str, charm: &str) -> Option<runner::Job> {
    while let Some(u) = core.ready.pop_front() {
        core.ready_set.remove(&u);
        if core.model.units[u].running {
            continue;
        }
        if let Some(hook) = runner::resolve(core, u) {
            core.model.units[u].running = true;
            core.running += 1;
            return Some(runner::prepare(core, u, hook, tools, charm));
        }
    }
    None
}
