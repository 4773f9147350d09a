//! The running mesh: the live target set, its refresh from peer sources and local networks, and
//! the hand-over of statistics across changes.
//!
//! Owns [`Mesh`]: a refresher task re-reads peers (and re-discovers networks) every
//! `mesh.refresh_interval` or at once after a config reload, rebuilds the target set, and swaps
//! it in; targets whose label set stays keep their counters, new ones start at zero, removed
//! ones disappear from `/metrics`. The table itself is `table.rs`; the sending loop is
//! `scheduler.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::discovery::{DiscoveryOptions, local_networks};
use super::peers::PeerLoader;
use super::plan::{LocalNetwork, Unplaced};
use super::stats::{RenderRow, TargetStats, render_labels};
use super::table::{MeshShared, MeshTarget, TargetTable};
use super::targets::{TargetSpec, build_targets};
use super::view::MeshView;
use super::window::RecentWindow;
use crate::config::mesh::{MeshConfig, PeerSources};
use crate::expo::{self, MetricType};
use crate::icmp::Pinger;

/// The mesh prober. Idle while the config has no `mesh:` section.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<MeshShared>,
}

impl Mesh {
    /// Starts the refresher and the scheduler on the current runtime.
    pub fn start(pinger: Pinger, config: Option<MeshConfig>) -> Mesh {
        let shared = Arc::new(MeshShared::new(pinger, config));
        tokio::spawn(refresh_loop(Arc::clone(&shared)));
        tokio::spawn(super::scheduler::run(Arc::clone(&shared)));
        Mesh { shared }
    }

    /// Applies a new `mesh:` section (or its removal) without restarting anything.
    pub fn reconfigure(&self, config: Option<MeshConfig>) {
        let unchanged = match (self.shared.config.load().as_deref(), config.as_ref()) {
            (Some(old), Some(new)) => old == new,
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            self.shared.config.store(config.map(Arc::new));
            self.shared.reconfigured.notify_one();
            self.shared.table_changed.notify_one();
        }
    }

    pub fn table(&self) -> Arc<TargetTable> {
        self.shared.table.load_full()
    }

    /// What `/mesh` shows, or `None` while mesh mode is off.
    pub fn view(&self) -> Option<MeshView> {
        let config = self.shared.config.load_full()?;
        let probe_spacing = config.interval / config.packets_per_interval.max(1);
        let mut view = MeshView::collect(&self.table(), probe_spacing);
        view.title = config.title.clone();
        Some(view)
    }

    /// Appends the mesh families to a `/metrics` body (nothing while the mesh is idle).
    pub fn render(&self, out: &mut String, flush: &mut dyn FnMut(&mut String)) {
        if self.shared.config.load().is_none() {
            return;
        }
        let table = self.table();
        expo::single(
            out,
            "meshprobe_mesh_late_sends_total",
            "Probes sent later than their slot allows (min(10ms, interval/10)), or skipped because the prober fell a whole interval behind.",
            MetricType::Counter,
            self.shared.late_sends.load(Ordering::Relaxed) as f64,
        );
        expo::single(
            out,
            "meshprobe_mesh_peer_source_errors",
            "Peer sources (files, DNS names) that failed at the last refresh; their last good content is still used.",
            MetricType::Gauge,
            table.source_errors.len() as f64,
        );
        expo::single(
            out,
            "meshprobe_mesh_peers_without_common_network",
            "Peers that got no target: no shared network, none among mesh.networks, or no usable address.",
            MetricType::Gauge,
            table.unplaced.len() as f64,
        );
        expo::single(
            out,
            "meshprobe_mesh_targets",
            "Targets being probed (peer x network x address).",
            MetricType::Gauge,
            table.targets.len() as f64,
        );
        let rows: Vec<RenderRow<'_>> = table
            .targets
            .iter()
            .map(|target| RenderRow {
                labels: &target.rendered_labels,
                stats: target.stats().snapshot(),
            })
            .collect();
        super::stats::render(out, &rows, &table.buckets, flush);
    }
}

async fn refresh_loop(shared: Arc<MeshShared>) {
    let mut loader: Option<PeerLoader> = None;
    let mut last_sources: Option<PeerSources> = None;
    let mut last_networks: Vec<LocalNetwork> = Vec::new();
    let mut last_config: Option<Arc<MeshConfig>> = None;
    loop {
        let config = shared.config.load_full();
        let Some(mesh_config) = config.clone() else {
            if !shared.table.load().targets.is_empty() {
                shared.store_table(TargetTable::default());
            }
            loader = None;
            last_sources = None;
            last_config = None;
            shared.reconfigured.notified().await;
            continue;
        };
        let loader = loader.get_or_insert_with(|| PeerLoader::new(mesh_config.peers.clone()));
        if last_sources.as_ref() != Some(&mesh_config.peers) {
            loader.set_sources(mesh_config.peers.clone());
            last_sources = Some(mesh_config.peers.clone());
        }
        let snapshot = loader.refresh().await;
        for error in &snapshot.new_errors {
            tracing::warn!(%error, "mesh peer source problem; keeping its last good content");
        }
        for source in &snapshot.recovered {
            tracing::info!(%source, "mesh peer source recovered; its content is in force again");
        }
        let networks = local_networks(DiscoveryOptions::default()).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot list local networks; keeping the previous list");
            last_networks.clone()
        });
        let config_changed = last_config.as_ref() != Some(&mesh_config);
        if snapshot.changed || networks != last_networks || config_changed {
            let set = build_targets(
                &snapshot.entries,
                &networks,
                &mesh_config.networks,
                &mesh_config.labels,
            );
            for (peer, reason) in &set.unplaced {
                tracing::info!(peer = %peer, reason = %reason, "mesh peer has no target");
            }
            let previous = shared.table.load_full();
            let table = build_table(
                &previous,
                set.targets,
                set.unplaced,
                snapshot.errors,
                &mesh_config.buckets,
            );
            tracing::info!(targets = table.targets.len(), "mesh target set updated");
            shared.store_table(table);
            last_networks = networks;
            last_config = Some(mesh_config.clone());
        } else if snapshot.errors != previous_errors(&shared) {
            let previous = shared.table.load_full();
            let table = TargetTable {
                targets: previous.targets.clone(),
                by_address: previous.by_address.clone(),
                unplaced: previous.unplaced.clone(),
                source_errors: snapshot.errors,
                buckets: previous.buckets.clone(),
            };
            shared.store_table(table);
        }
        tokio::select! {
            _ = tokio::time::sleep(mesh_config.refresh_interval) => {}
            _ = shared.reconfigured.notified() => {}
        }
    }
}

fn previous_errors(shared: &MeshShared) -> Vec<String> {
    shared.table.load().source_errors.clone()
}

/// Builds the new table, carrying over the stats of targets whose label set is unchanged (as
/// long as the histogram buckets are the same).
fn build_table(
    previous: &TargetTable,
    specs: Vec<TargetSpec>,
    unplaced: Vec<(String, Unplaced)>,
    source_errors: Vec<String>,
    buckets: &[f64],
) -> TargetTable {
    let same_buckets = previous.buckets == buckets;
    let mut old: HashMap<&[(String, String)], &Arc<MeshTarget>> = HashMap::new();
    if same_buckets {
        for target in &previous.targets {
            old.insert(&target.spec.labels, target);
        }
    }
    let targets: Vec<Arc<MeshTarget>> = specs
        .into_iter()
        .map(|spec| match old.get(spec.labels.as_slice()) {
            Some(kept) => Arc::clone(kept),
            None => Arc::new(MeshTarget {
                rendered_labels: render_labels(&spec.labels),
                spec,
                stats: Mutex::new(TargetStats::new(buckets.len())),
                recent: Mutex::new(RecentWindow::default()),
                next_send_index: AtomicU64::new(0),
            }),
        })
        .collect();
    let mut by_address: HashMap<IpAddr, Vec<Arc<MeshTarget>>> = HashMap::new();
    for target in &targets {
        by_address
            .entry(target.spec.address)
            .or_default()
            .push(Arc::clone(target));
    }
    TargetTable {
        targets,
        by_address,
        unplaced,
        source_errors,
        buckets: buckets.to_vec(),
    }
}

/// Gives memory freed after a large scrape back to the operating system, so RSS does not stay
/// at its high-water mark (glibc keeps freed heap otherwise).
pub fn release_memory() {
    crate::sys::release_freed_memory();
}
