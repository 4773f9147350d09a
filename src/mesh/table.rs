//! The live target table the mesh's tasks share: each [`MeshTarget`] (its spec, rendered labels,
//! counters and recent window), the [`TargetTable`] in force, and [`MeshShared`], the state the
//! refresher, the scheduler and the renderers hold in common.
//!
//! Owns how a probe's outcome lands in its target (a target is the engine's [`AnswerSink`] for
//! its probes, so the receive task accounts a reply directly) and nothing else: the refresher
//! (`runner.rs`) builds tables, the scheduler sends, `view.rs` and `stats.rs` read.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;

use super::labels::LabelSet;
use super::plan::Unplaced;
use super::stats::TargetStats;
use super::targets::TargetSpec;
use super::window::ProbeError;
use super::window::RecentWindow;
use crate::config::mesh::MeshConfig;
use crate::icmp::{Answer, AnswerSink, EchoFailure, Pinger, ReplyObserver};

/// One live target.
pub struct MeshTarget {
    pub spec: TargetSpec,
    /// The label set its series carry: its own, or its peer group's with
    /// `inter_group_series: per_group` (then several targets share one).
    /// Interned: the targets of one per-group series set share one copy.
    pub exported_labels: Arc<LabelSet>,
    /// `exported_labels` in the text format (interned likewise).
    pub rendered_labels: Arc<str>,
    pub stats: Mutex<TargetStats>,
    /// The last probes' outcomes, for `/mesh` (separate from `stats` so scrapes never copy it).
    pub recent: Mutex<RecentWindow>,
    /// Send counter, for reordering detection.
    pub next_send_index: AtomicU64,
    /// The classic histogram's upper bounds (the table's, shared).
    pub buckets: Arc<[f64]>,
}

impl MeshTarget {
    pub fn stats(&self) -> MutexGuard<'_, TargetStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn recent(&self) -> MutexGuard<'_, RecentWindow> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine tells a target about duplicate replies to its own probes (and only its own: a
/// `/probe` of the same address, or another target with that address, is not credited).
impl ReplyObserver for MeshTarget {
    fn duplicate(&self) {
        self.stats().record_duplicate();
    }
}

/// A probe counts as sent when its outcome is known, so sent = received + lost holds at every
/// scrape; a probe that never left counts as a send error instead.
impl AnswerSink for MeshTarget {
    fn settle(&self, send_index: u64, outcome: Result<Answer, EchoFailure>) {
        let mut stats = self.stats();
        let mut recent = self.recent();
        match outcome {
            Ok(Answer::Echo { rtt, arrival, .. }) => {
                stats.record_sent();
                stats.record_reply(&self.buckets, rtt.as_secs_f64(), send_index, arrival);
                recent.record_reply(rtt);
            }
            Ok(Answer::IcmpError {
                kind, code, from, ..
            }) => {
                stats.record_sent();
                stats.record_lost(Some(kind));
                let error = ProbeError::Icmp { kind, code, from };
                recent.record_lost(Some(error), SystemTime::now());
            }
            Err(EchoFailure::Timeout) => {
                stats.record_sent();
                stats.record_lost(None);
                recent.record_lost(None, SystemTime::now());
            }
            Err(EchoFailure::Send(error)) => {
                stats.record_send_error();
                let errno = error.raw_os_error();
                recent.record_not_sent(ProbeError::Send { errno }, SystemTime::now());
            }
            Err(EchoFailure::Socket(_)) => {
                stats.record_send_error();
                recent.record_not_sent(ProbeError::Socket, SystemTime::now());
            }
            Err(EchoFailure::Busy) => {
                stats.record_send_error();
                recent.record_not_sent(ProbeError::Busy, SystemTime::now());
            }
        }
    }
}

/// The target set in force, with what the refresher learned.
#[derive(Default)]
pub struct TargetTable {
    pub targets: Vec<Arc<MeshTarget>>,
    pub unplaced: Vec<(String, Unplaced)>,
    pub source_errors: Vec<String>,
    pub buckets: Vec<f64>,
}

/// What the mesh's tasks share.
pub(super) struct MeshShared {
    pub(super) pinger: Pinger,
    pub(super) config: ArcSwapOption<MeshConfig>,
    pub(super) table: ArcSwap<TargetTable>,
    pub(super) late_sends: AtomicU64,
    /// Wakes the refresher after a config change.
    pub(super) reconfigured: Notify,
    /// Wakes the scheduler after a new table or config is stored.
    pub(super) table_changed: Notify,
}

impl MeshShared {
    pub(super) fn new(pinger: Pinger, config: Option<MeshConfig>) -> MeshShared {
        MeshShared {
            pinger,
            config: ArcSwapOption::from_pointee(config),
            table: ArcSwap::from_pointee(TargetTable::default()),
            late_sends: AtomicU64::new(0),
            reconfigured: Notify::new(),
            table_changed: Notify::new(),
        }
    }

    /// Puts a new table in force and tells the scheduler.
    pub(super) fn store_table(&self, table: TargetTable) {
        self.table.store(Arc::new(table));
        self.table_changed.notify_one();
    }
}
