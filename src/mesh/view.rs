//! What `/mesh` and `/mesh.json` show: every target's recent-window summary and its state
//! (ok, slow, lossy, dead, no data), and the JSON document for scripts.
//!
//! Owns the state thresholds and the JSON shape. It reads the live target table (one short lock
//! per target to copy its window) and never touches probing; the HTML lives in `page.rs`.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::table::TargetTable;
use super::trace_auto::{PathBook, TracedPath, target_key};
use super::trace_export::path_json;
use super::window::{RecentWindow, WINDOW_PROBES, WindowSummary};
use crate::config::mesh::RESERVED_LABELS;

/// A target whose window loses at least this share of probes is "lossy".
pub const LOSSY_RATIO: f64 = 0.02;
/// A target whose median RTT over the window is at least this is "slow".
pub const SLOW_P50_SECONDS: f64 = 0.010;

/// A target's state over the window, in order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok,
    Slow,
    Lossy,
    Dead,
    NoData,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Ok,
        State::Slow,
        State::Lossy,
        State::Dead,
        State::NoData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Slow => "slow",
            State::Lossy => "lossy",
            State::Dead => "dead",
            State::NoData => "nodata",
        }
    }

    /// [`State::Lossy`] or [`State::Dead`] if [`State::of`] would judge the window so, from its
    /// counts alone (no quantiles): what the automatic tracer asks of every target.
    pub fn trouble_of(window: &RecentWindow) -> Option<State> {
        match window.reply_counts() {
            (0, _) => None,
            (_, 0) => Some(State::Dead),
            (probes, received) if (probes - received) as f64 / probes as f64 >= LOSSY_RATIO => {
                Some(State::Lossy)
            }
            _ => None,
        }
    }

    /// Judges a window: no probes yet, no reply at all, loss, then median RTT.
    pub fn of(summary: &WindowSummary) -> State {
        match (summary.loss_ratio(), summary.rtt_p50_seconds) {
            (None, _) => State::NoData,
            (_, None) => State::Dead,
            (Some(loss), _) if loss >= LOSSY_RATIO => State::Lossy,
            (_, Some(p50)) if p50 >= SLOW_P50_SECONDS => State::Slow,
            _ => State::Ok,
        }
    }
}

/// One target as the page shows it.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub peer: String,
    pub network: String,
    pub address: String,
    /// Labels beyond peer, network, address and ip_protocol (from `mesh.labels` and peer files).
    pub extra_labels: Vec<(String, String)>,
    pub summary: WindowSummary,
    pub state: State,
    /// The automatic tracer's last trace of this target, if any.
    pub path: Option<std::sync::Arc<TracedPath>>,
}

impl TargetView {
    /// The value of any of the target's labels (`peer`, `network`, `address` or an extra one).
    pub fn label(&self, name: &str) -> Option<&str> {
        match name {
            "peer" => Some(&self.peer),
            "network" => Some(&self.network),
            "address" => Some(&self.address),
            _ => self
                .extra_labels
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str()),
        }
    }
}

/// The whole view at one instant.
#[derive(Debug, Clone)]
pub struct MeshView {
    /// This machine's host name.
    pub node: String,
    /// `mesh.title`, shown instead of "Mesh from <node>" when set.
    pub title: Option<String>,
    pub generated_at: SystemTime,
    /// How long the window lasts at the configured interval and packets per interval.
    pub window_duration: Duration,
    /// Targets sorted by network, then peer, then address.
    pub targets: Vec<TargetView>,
    /// Network names in sorted order.
    pub networks: Vec<String>,
    /// Peers that got no target, with the reason.
    pub unplaced: Vec<(String, String)>,
}

impl MeshView {
    /// Copies every target's window (and last trace) out of the live table.
    pub fn collect(table: &TargetTable, probe_spacing: Duration, paths: &PathBook) -> MeshView {
        let mut targets: Vec<TargetView> = table
            .targets
            .iter()
            .map(|target| {
                let summary = target.recent().summary();
                let spec = &target.spec;
                TargetView {
                    peer: spec.label("peer").to_string(),
                    network: spec.label("network").to_string(),
                    address: spec.address.to_string(),
                    extra_labels: spec
                        .labels
                        .iter()
                        .filter(|(key, _)| !RESERVED_LABELS.contains(key))
                        .map(|(key, value)| (key.to_string(), value.to_string()))
                        .collect(),
                    state: State::of(&summary),
                    summary,
                    path: paths.get(&target_key(target)),
                }
            })
            .collect();
        targets.sort_by(|a, b| {
            (&a.network, &a.peer, &a.address).cmp(&(&b.network, &b.peer, &b.address))
        });
        let mut networks: Vec<String> = targets.iter().map(|t| t.network.clone()).collect();
        networks.dedup();
        MeshView {
            node: host_name(),
            title: None,
            generated_at: SystemTime::now(),
            window_duration: probe_spacing * WINDOW_PROBES as u32,
            targets,
            networks,
            unplaced: table
                .unplaced
                .iter()
                .map(|(peer, reason)| (peer.clone(), reason.to_string()))
                .collect(),
        }
    }

    /// How many targets are in each state, in [`State::ALL`] order.
    pub fn state_counts(&self) -> [(State, usize); 5] {
        State::ALL.map(|state| {
            let count = self.targets.iter().filter(|t| t.state == state).count();
            (state, count)
        })
    }

    /// The `/mesh.json` document.
    pub fn to_json(&self) -> Value {
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|target| target_json(target, self.generated_at))
            .collect();
        let unplaced: Vec<Value> = self
            .unplaced
            .iter()
            .map(|(peer, reason)| json!({"peer": peer, "reason": reason}))
            .collect();
        json!({
            "mesh": true,
            "node": self.node,
            "title": self.title,
            "generated_at_unix_seconds": unix_seconds(self.generated_at),
            "window": {
                "probes": WINDOW_PROBES,
                "seconds": self.window_duration.as_secs_f64(),
            },
            "thresholds": {
                "lossy_ratio": LOSSY_RATIO,
                "slow_p50_seconds": SLOW_P50_SECONDS,
            },
            "networks": self.networks,
            "states": self.state_counts().iter()
                .map(|(state, count)| (state.as_str().to_string(), json!(count)))
                .collect::<serde_json::Map<String, Value>>(),
            "targets": targets,
            "unplaced": unplaced,
        })
    }
}

fn target_json(target: &TargetView, now: SystemTime) -> Value {
    let summary = &target.summary;
    let labels: serde_json::Map<String, Value> = target
        .extra_labels
        .iter()
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    let last_error = summary.last_error.map(|last| {
        json!({
            "error": last.error.to_string(),
            "at_unix_seconds": unix_seconds(last.at),
            "age_seconds": now.duration_since(last.at).unwrap_or_default().as_secs_f64(),
        })
    });
    json!({
        "peer": target.peer,
        "network": target.network,
        "address": target.address,
        "labels": labels,
        "state": target.state.as_str(),
        "probes": summary.probes,
        "received": summary.received,
        "lost": summary.lost,
        "not_sent": summary.not_sent,
        "loss_ratio": summary.loss_ratio(),
        "rtt_p50_seconds": summary.rtt_p50_seconds,
        "rtt_p99_seconds": summary.rtt_p99_seconds,
        "last_error": last_error,
        "path": path_json(target.path.as_deref(), now),
    })
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `/mesh.json` while mesh mode is off.
pub fn mesh_off_json() -> Value {
    json!({
        "mesh": false,
        "error": "mesh mode is off: the configuration file has no mesh: section",
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::window::RecentWindow;

    #[test]
    fn trouble_from_counts_agrees_with_the_full_judgement() {
        let at = SystemTime::UNIX_EPOCH;
        let refused = crate::mesh::window::ProbeError::Busy;
        // Every mix of replies, losses and refused sends up to 30 probes, fast and slow.
        for replies in 0..30u32 {
            for lost in 0..30u32 {
                for not_sent in [0u32, 3] {
                    for rtt_ms in [1u64, 900] {
                        let mut window = RecentWindow::default();
                        for n in 0..replies + lost + not_sent {
                            if n < replies {
                                window.record_reply(Duration::from_millis(rtt_ms));
                            } else if n < replies + lost {
                                window.record_lost(None, at);
                            } else {
                                window.record_not_sent(refused, at);
                            }
                        }
                        let full = State::of(&window.summary());
                        let expected = matches!(full, State::Lossy | State::Dead).then_some(full);
                        assert_eq!(
                            State::trouble_of(&window),
                            expected,
                            "{replies} replies, {lost} lost, {not_sent} not sent, {rtt_ms} ms"
                        );
                    }
                }
            }
        }
    }

    fn summary_of(replies_ms: &[f64], losses: usize) -> WindowSummary {
        let mut window = RecentWindow::default();
        for ms in replies_ms {
            window.record_reply(Duration::from_secs_f64(ms / 1000.0));
        }
        for _ in 0..losses {
            window.record_lost(None, SystemTime::UNIX_EPOCH);
        }
        window.summary()
    }

    #[test]
    fn states_follow_loss_then_median_rtt() {
        assert_eq!(State::of(&summary_of(&[], 0)), State::NoData);
        assert_eq!(State::of(&summary_of(&[], 3)), State::Dead);
        assert_eq!(State::of(&summary_of(&[0.1; 98], 2)), State::Lossy);
        assert_eq!(State::of(&summary_of(&[0.1; 99], 1)), State::Ok);
        assert_eq!(State::of(&summary_of(&[150.0; 50], 0)), State::Slow);
        assert_eq!(State::of(&summary_of(&[150.0; 50], 25)), State::Lossy);
        assert_eq!(State::of(&summary_of(&[9.9; 50], 0)), State::Ok);
    }
}
