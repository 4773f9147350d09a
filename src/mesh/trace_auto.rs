//! The mesh's automatic tracer: when a target turns `lossy` or `dead` (the `/mesh` states), or
//! when its baseline is due (`mesh.trace.interval`), trace its path, at most
//! `mesh.trace.max_per_minute` traces a minute and one at a time, and keep the last trace per
//! target in the [`PathBook`].
//!
//! Owns the trigger rules, the rate limit (a token bucket of `max_per_minute` tokens, refilled
//! evenly over the minute) and the path-change count. It reads target states the way `/mesh`
//! does and never touches the scheduler, the table or a target's counters: a trace's probes are
//! its own [`crate::icmp::Pinger::echo_in_flow`] calls, with no observer, in a task of their own.
//! Rendering is `trace_export.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::table::{MeshShared, MeshTarget, TargetTable};
use super::view::State;
use crate::config::mesh::MeshConfig;
use crate::icmp::flow::payload_fits_flow;
use crate::trace::{self, TraceOptions, TraceReport};

/// How often target states are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Why a trace ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    Lossy,
    Dead,
    Schedule,
}

impl Trigger {
    pub const ALL: [Trigger; 3] = [Trigger::Lossy, Trigger::Dead, Trigger::Schedule];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Lossy => "lossy",
            Trigger::Dead => "dead",
            Trigger::Schedule => "schedule",
        }
    }
}

/// A target as the tracer knows it: (peer, network, address), unique per target.
pub type TargetKey = (String, String, IpAddr);

pub fn target_key(target: &MeshTarget) -> TargetKey {
    (
        target.spec.label("peer").to_string(),
        target.spec.label("network").to_string(),
        target.spec.address,
    )
}

/// The last trace of one target.
#[derive(Debug, Clone)]
pub struct TracedPath {
    pub report: TraceReport,
    pub traced_at: SystemTime,
    pub trigger: Trigger,
    /// Traces of this target whose path differed from the one before
    /// ([`TraceReport::path_differs`]).
    pub changes: u64,
}

/// The last trace per target, and the tracer's own counters.
#[derive(Default)]
pub struct PathBook {
    paths: Mutex<HashMap<TargetKey, Arc<TracedPath>>>,
    traces: [AtomicU64; 3],
    queued: AtomicU64,
}

impl PathBook {
    fn paths(&self) -> MutexGuard<'_, HashMap<TargetKey, Arc<TracedPath>>> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last trace of a target, if it was traced.
    pub fn get(&self, key: &TargetKey) -> Option<Arc<TracedPath>> {
        self.paths().get(key).cloned()
    }

    /// Traces run, per trigger, in [`Trigger::ALL`] order.
    pub fn traces_total(&self) -> [(Trigger, u64); 3] {
        let mut index = 0;
        Trigger::ALL.map(|trigger| {
            let count = self.traces[index].load(Ordering::Relaxed);
            index += 1;
            (trigger, count)
        })
    }

    /// Traces waiting for the rate limit.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Stores a finished trace, counting a path change against the previous one.
    pub fn store(&self, key: TargetKey, report: TraceReport, trigger: Trigger) {
        let mut paths = self.paths();
        let changes = match paths.get(&key) {
            Some(previous) => previous.changes + u64::from(previous.report.path_differs(&report)),
            None => 0,
        };
        let index = Trigger::ALL.iter().position(|t| *t == trigger).unwrap_or(0);
        self.traces[index].fetch_add(1, Ordering::Relaxed);
        paths.insert(
            key,
            Arc::new(TracedPath {
                report,
                traced_at: SystemTime::now(),
                trigger,
                changes,
            }),
        );
    }

    /// The targets with a path.
    fn keys(&self) -> Vec<TargetKey> {
        self.paths().keys().cloned().collect()
    }

    /// Forgets targets that left the table.
    fn retain(&self, keep: impl Fn(&TargetKey) -> bool) {
        self.paths().retain(|key, _| keep(key));
    }
}

/// `mesh.trace.max_per_minute` as a token bucket: full at start, one token every
/// 60 s / max_per_minute.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimit {
    pub fn new(now: Instant, max_per_minute: u32) -> RateLimit {
        RateLimit {
            tokens: f64::from(max_per_minute),
            refilled_at: now,
        }
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant, max_per_minute: u32) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let capacity = f64::from(max_per_minute);
        self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The trace options the mesh uses for its config.
pub fn options_for(config: &MeshConfig) -> TraceOptions {
    TraceOptions {
        max_hops: config.trace.max_hops,
        rounds: config.trace.rounds,
        timeout: config.timeout,
        round_interval: config
            .interval
            .clamp(Duration::from_millis(100), Duration::from_secs(1)),
        payload_size: if payload_fits_flow(config.payload_size) {
            config.payload_size
        } else {
            0
        },
        ..TraceOptions::default()
    }
}

/// What the tracer remembers between looks.
#[derive(Default)]
struct Watch {
    /// The targets that were lossy or dead at the last look (only those: a key costs two
    /// strings, and a healthy mesh of 100 000 targets should hold none).
    in_trouble: HashSet<TargetKey>,
    /// Keys in trace order; a key may appear twice (moved to the front when it turned bad),
    /// and only the entry `queued` still holds counts.
    queue: VecDeque<TargetKey>,
    /// What is queued, and why: O(1) membership however long the queue.
    queued: HashMap<TargetKey, Trigger>,
    /// When each target's baseline trace was last queued.
    baseline_queued: HashMap<TargetKey, Instant>,
    /// The table the last look saw, to forget targets only when it changed (a `Weak` keeps
    /// its address from being reused by a later table).
    table_seen: Weak<TargetTable>,
}

/// Targets looked at between two yields to the runtime.
const LOOK_CHUNK: usize = 2_048;

/// Traces queued at most: far more than `max_per_minute` can run before their cause is stale.
const MAX_QUEUED: usize = 1_024;

/// Which of `candidates` are keys of `targets`. Makes a key only for a target at a candidate's
/// address: a key for every target would be 14 MB of short-lived strings at 100 000 targets,
/// freed where the allocator may keep them.
fn present_keys(targets: &[Arc<MeshTarget>], candidates: HashSet<TargetKey>) -> HashSet<TargetKey> {
    if candidates.is_empty() {
        return candidates;
    }
    let addresses: HashSet<IpAddr> = candidates.iter().map(|key| key.2).collect();
    targets
        .iter()
        .filter(|target| addresses.contains(&target.spec.address))
        .map(|target| target_key(target))
        .filter(|key| candidates.contains(key))
        .collect()
}

impl Watch {
    /// Queues what the targets' states and the schedule ask for. O(targets), no queue scans,
    /// and a key is made only for a target in trouble or with a baseline schedule. Yields to
    /// the runtime every [`LOOK_CHUNK`] targets: at 100 000 targets a whole pass takes tens of
    /// milliseconds, and the scheduler's sends must not wait behind it.
    async fn look(&mut self, table: &Arc<TargetTable>, config: &MeshConfig, book: &PathBook) {
        let now = Instant::now();
        let targets = &table.targets;
        if !Weak::ptr_eq(&self.table_seen, &Arc::downgrade(table)) {
            self.table_seen = Arc::downgrade(table);
            let remembered: HashSet<TargetKey> = (self.in_trouble.iter())
                .chain(self.baseline_queued.keys())
                .chain(self.queued.keys())
                .chain(&self.queue)
                .cloned()
                .chain(book.keys())
                .collect();
            let present = present_keys(targets, remembered);
            self.in_trouble.retain(|key| present.contains(key));
            self.baseline_queued.retain(|key, _| present.contains(key));
            self.queued.retain(|key, _| present.contains(key));
            self.queue.retain(|key| present.contains(key));
            book.retain(|key| present.contains(key));
        }
        let mut in_trouble = HashSet::new();
        for (position, target) in targets.iter().enumerate() {
            if position % LOOK_CHUNK == LOOK_CHUNK - 1 {
                tokio::task::yield_now().await;
            }
            let trigger = match State::trouble_of(&target.recent()) {
                Some(State::Lossy) => Some(Trigger::Lossy),
                Some(State::Dead) => Some(Trigger::Dead),
                _ => None,
            };
            if trigger.is_none() && config.trace.interval.is_none() {
                continue;
            }
            let key = target_key(target);
            if let Some(trigger) = trigger {
                let turned_bad = !self.in_trouble.contains(&key);
                if turned_bad && (self.queued.len() < MAX_QUEUED || self.queued.contains_key(&key))
                {
                    self.queued.insert(key.clone(), trigger);
                    self.queue.push_front(key.clone());
                }
                in_trouble.insert(key.clone());
            }
            if let Some(every) = config.trace.interval {
                let due = self
                    .baseline_queued
                    .get(&key)
                    .is_none_or(|at| now.saturating_duration_since(*at) >= every);
                if due && !self.queued.contains_key(&key) && self.queued.len() < MAX_QUEUED {
                    self.baseline_queued.insert(key.clone(), now);
                    self.queued.insert(key.clone(), Trigger::Schedule);
                    self.queue.push_back(key);
                }
            }
        }
        self.in_trouble = in_trouble;
        if self.queue.len() > 2 * MAX_QUEUED {
            let queued = &self.queued;
            self.queue.retain(|key| queued.contains_key(key));
        }
    }

    /// The next trace to run.
    fn pop(&mut self) -> Option<(TargetKey, Trigger)> {
        while let Some(key) = self.queue.pop_front() {
            if let Some(trigger) = self.queued.remove(&key) {
                return Some((key, trigger));
            }
        }
        None
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.queued.clear();
    }
}

/// How often target states are looked at: every [`LOOK_EVERY`], and less often for large
/// meshes (one look costs a pass over every target's recent window: at 100 000 targets, every
/// 5 s).
fn look_every(targets: usize) -> Duration {
    LOOK_EVERY * (targets / 10_000).max(1) as u32
}

/// Runs forever beside the scheduler; idles while the mesh is off or `max_per_minute` is 0.
pub(super) async fn run(shared: Arc<MeshShared>, book: Arc<PathBook>) {
    let mut watch = Watch::default();
    let mut limit: Option<RateLimit> = None;
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    let mut next_look = Instant::now();
    loop {
        tokio::time::sleep_until(next_look).await;
        next_look = Instant::now() + look_every(shared.table.load().targets.len());
        let Some(config) = shared.config.load_full() else {
            watch = Watch::default();
            book.retain(|_| false);
            continue;
        };
        let max_per_minute = config.trace.max_per_minute;
        if max_per_minute == 0 {
            watch.clear();
            book.queued.store(0, Ordering::Relaxed);
            continue;
        }
        let table = shared.table.load_full();
        watch.look(&table, &config, &book).await;
        let limit = limit.get_or_insert_with(|| RateLimit::new(Instant::now(), max_per_minute));
        let idle = running.as_ref().is_none_or(|task| task.is_finished());
        if idle
            && !watch.queued.is_empty()
            && limit.try_take(Instant::now(), max_per_minute)
            && let Some((key, trigger)) = watch.pop()
        {
            let options = options_for(&config);
            let pinger = shared.pinger.clone();
            let book = Arc::clone(&book);
            running = Some(tokio::spawn(async move {
                tracing::info!(peer = %key.0, network = %key.1, address = %key.2,
                    trigger = trigger.as_str(), "mesh: tracing the path to a target");
                let traced = trace::trace(&pinger, key.2, 0, &options).await;
                tracing::info!(peer = %key.0, address = %key.2,
                    path = %traced.report.path_text(),
                    verdict = %trace::render::verdict_text(&traced.report),
                    "mesh: path traced");
                book.store(key, traced.report, trigger);
            }));
        }
        book.queued
            .store(watch.queued.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str, peer: &str, network: &str) -> Arc<MeshTarget> {
        let labels = Arc::new(crate::mesh::labels::LabelSet::new([
            ("peer", peer),
            ("network", network),
        ]));
        Arc::new(MeshTarget {
            spec: crate::mesh::targets::TargetSpec {
                address: address.parse().expect("test address"),
                labels: Arc::clone(&labels),
            },
            exported_labels: labels,
            rendered_labels: Arc::from(""),
            stats: Mutex::new(crate::mesh::stats::TargetStats::new(1)),
            recent: Mutex::new(crate::mesh::window::RecentWindow::default()),
            next_send_index: std::sync::atomic::AtomicU64::new(0),
            buckets: Arc::from(vec![0.1]),
        })
    }

    #[test]
    fn only_remembered_keys_still_in_the_table_are_present() {
        let targets = [
            target("198.18.0.2", "b", "lan"),
            target("198.18.0.3", "c", "lan"),
            target("198.18.0.3", "c", "wan"),
        ];
        let key = |peer: &str, network: &str, address: &str| {
            (
                peer.to_string(),
                network.to_string(),
                address.parse::<IpAddr>().expect("test address"),
            )
        };
        let remembered: HashSet<TargetKey> = [
            key("b", "lan", "198.18.0.2"),
            // Same address, another network or peer: gone.
            key("c", "mgmt", "198.18.0.3"),
            key("d", "lan", "198.18.0.2"),
            key("c", "wan", "198.18.0.3"),
            key("e", "lan", "198.18.0.9"),
        ]
        .into();
        let present = present_keys(&targets, remembered);
        let expected: HashSet<TargetKey> =
            [key("b", "lan", "198.18.0.2"), key("c", "wan", "198.18.0.3")].into();
        assert_eq!(present, expected);
        assert!(present_keys(&targets, HashSet::new()).is_empty());
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_share_of_the_minute() {
        let start = Instant::now();
        let mut limit = RateLimit::new(start, 2);
        assert!(limit.try_take(start, 2));
        assert!(limit.try_take(start, 2));
        assert!(!limit.try_take(start, 2), "the burst is max_per_minute");
        assert!(!limit.try_take(start + Duration::from_secs(29), 2));
        assert!(
            limit.try_take(start + Duration::from_secs(30), 2),
            "one every 30 s"
        );
        assert!(!limit.try_take(start + Duration::from_secs(31), 2));
        // A long pause refills to the burst, no more.
        let later = start + Duration::from_secs(600);
        assert!(limit.try_take(later, 2) && limit.try_take(later, 2));
        assert!(!limit.try_take(later, 2));
    }
}
