//! The running mesh: the live target set, its refresh from peer sources and local networks, and
//! the hand-over of statistics across changes.
//!
//! Owns [`Mesh`]: a refresher task re-reads peers (and re-discovers networks) every
//! `mesh.refresh_interval` or at once after a config reload, rebuilds the target set, and swaps
//! it in; targets whose label set stays keep their counters, new ones start at zero, removed
//! ones disappear from `/metrics`. The fleet keys are applied here too: the tiered selection
//! (rebuilt when the rotation epoch changes), routed peers (the kernel's route lookup), and
//! `inter_group_series: per_group`, where several targets share one exported label set: the
//! scrape sums them, and a target that leaves hands its counters to one that stays under the
//! same labels, so the sums never go back. The table itself is `table.rs`; the sending loop is
//! `scheduler.rs`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::discovery::{DiscoveryOptions, has_route, local_networks};
use super::fleet;
use super::labels::LabelSet;
use super::peers::PeerLoader;
use super::plan::{LocalNetwork, Unplaced};
use super::stats::{RenderRow, TargetStats, render_labels};
use super::stats_proto::ProtoRow;
use super::table::{MeshShared, MeshTarget, TargetTable};
use super::targets::{TargetSpec, build_targets};
use super::trace_auto::PathBook;
use super::view::MeshView;
use super::window::RecentWindow;
use crate::config::mesh::{MeshConfig, PeerSources};
use crate::expo::{self, MetricType};
use crate::icmp::Pinger;

/// The mesh prober. Idle while the config has no `mesh:` section.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<MeshShared>,
    /// The automatic tracer's last trace per target (`trace_auto.rs`).
    paths: Arc<PathBook>,
}

impl Mesh {
    /// Starts the refresher and the scheduler on the current runtime.
    pub fn start(pinger: Pinger, config: Option<MeshConfig>) -> Mesh {
        let shared = Arc::new(MeshShared::new(pinger, config));
        tokio::spawn(refresh_loop(Arc::clone(&shared)));
        tokio::spawn(super::scheduler::run(Arc::clone(&shared)));
        let paths = Arc::new(PathBook::default());
        tokio::spawn(super::trace_auto::run(
            Arc::clone(&shared),
            Arc::clone(&paths),
        ));
        Mesh { shared, paths }
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
        let mut view = MeshView::collect(&self.table(), probe_spacing, &self.paths);
        view.title = config.title.clone();
        Some(view)
    }

    /// Appends the mesh families to a `/metrics` body (nothing while the mesh is idle), handing
    /// `out` to `flush` every 64 KiB; stops when `flush` answers `Break`.
    pub fn render(
        &self,
        out: &mut String,
        flush: &mut dyn FnMut(&mut String) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if self.shared.config.load().is_none() {
            return ControlFlow::Continue(());
        }
        let table = self.table();
        self.render_mesh_wide(out, &table);
        let rows = exported_rows(
            &table,
            false,
            |target, stats| RenderRow {
                labels: &target.rendered_labels,
                stats,
            },
            |row| &mut row.stats,
        );
        super::stats::render(out, &rows, &table.buckets, flush)?;
        super::trace_export::render(out, &table, &self.paths);
        ControlFlow::Continue(())
    }

    /// The same families as [`Mesh::render`] in the protobuf exposition, with the RTT
    /// histogram native, classic or both as `mesh.histogram` says.
    pub fn render_protobuf(
        &self,
        out: &mut Vec<u8>,
        flush: &mut dyn FnMut(&mut Vec<u8>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let Some(config) = self.shared.config.load_full() else {
            return ControlFlow::Continue(());
        };
        let table = self.table();
        let mut text = String::new();
        self.render_mesh_wide(&mut text, &table);
        super::trace_export::render(&mut text, &table, &self.paths);
        for family in crate::proto::from_text::families(&text) {
            crate::proto::write_family(out, &family);
        }
        let rows = exported_rows(
            &table,
            true,
            |target, stats| ProtoRow {
                labels: &target.exported_labels,
                stats,
            },
            |row| &mut row.stats,
        );
        super::stats_proto::render(out, &rows, &table.buckets, config.histogram, flush)
    }

    /// The mesh-wide families (one sample each), as text.
    fn render_mesh_wide(&self, out: &mut String, table: &TargetTable) {
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
    }
}

async fn refresh_loop(shared: Arc<MeshShared>) {
    let mut loader: Option<PeerLoader> = None;
    let mut last_sources: Option<PeerSources> = None;
    let mut last_networks: Vec<LocalNetwork> = Vec::new();
    let mut last_config: Option<Arc<MeshConfig>> = None;
    let mut last_epoch: u64 = 0;
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
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let epoch = fleet::epoch(since_epoch, &mesh_config.fleet);
        let mut rebuilt = false;
        if snapshot.changed || networks != last_networks || config_changed || epoch != last_epoch {
            let own: BTreeSet<IpAddr> = networks.iter().map(|n| n.address).collect();
            let selection = fleet::select(
                &snapshot.entries,
                &own,
                &mesh_config.fleet,
                &mesh_config.labels,
                epoch,
            );
            if let Some(problem) = &selection.problem {
                tracing::error!(%problem, "mesh tiered plan");
            }
            let set = build_targets(
                &selection.entries,
                &networks,
                &mesh_config.networks,
                &mesh_config.labels,
                &has_route,
            );
            for (peer, reason) in &set.unplaced {
                tracing::info!(peer = %peer, reason = %reason, "mesh peer has no target");
            }
            let previous = shared.table.load_full();
            let export = |spec: &TargetSpec| {
                let labels = fleet::exported_labels(
                    spec,
                    selection.own_group.as_deref(),
                    &mesh_config.fleet,
                    &mesh_config.labels,
                );
                labels.map_or_else(|| Arc::clone(&spec.labels), Arc::new)
            };
            let table = build_table(
                &previous,
                set.targets,
                set.unplaced,
                snapshot.errors.clone(),
                &mesh_config.buckets,
                mesh_config.histogram.native(),
                &export,
            );
            tracing::info!(targets = table.targets.len(), "mesh target set updated");
            shared.store_table(table);
            rebuilt = true;
            last_networks = networks;
            last_config = Some(mesh_config.clone());
            last_epoch = epoch;
        } else if snapshot.errors != previous_errors(&shared) {
            let previous = shared.table.load_full();
            let table = TargetTable {
                targets: previous.targets.clone(),
                unplaced: previous.unplaced.clone(),
                source_errors: snapshot.errors.clone(),
                buckets: previous.buckets.clone(),
            };
            shared.store_table(table);
        }
        // Not kept while asleep: at 100 000 peers the entries are 3 MB.
        drop(snapshot);
        if rebuilt {
            // Building a table of 100 000 targets parses and copies far more than it keeps
            // (the selection, the target set, the previous table): hand the difference back
            // rather than keep it as RSS for the life of the process.
            crate::sys::release_freed_memory();
        }
        let mut sleep = mesh_config.refresh_interval;
        if let Some(every) = mesh_config.fleet.rotate_every {
            // Wake at the next epoch boundary, so the rotation is on time.
            let into = Duration::from_nanos(
                u64::try_from(since_epoch.as_nanos() % every.as_nanos()).unwrap_or(0),
            );
            sleep = sleep.min(every.saturating_sub(into) + Duration::from_millis(1));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shared.reconfigured.notified() => {}
        }
    }
}

fn previous_errors(shared: &MeshShared) -> Vec<String> {
    shared.table.load().source_errors.clone()
}

/// Builds the new table, carrying over the stats of targets whose label set is unchanged (as
/// long as the histogram buckets are the same and a native histogram is kept either both times
/// or neither). `export` gives a target's exported label set; the counters of a target that goes
/// while its exported set stays are handed to a target with that set, so a shared (per-group)
/// series never goes back.
fn build_table(
    previous: &TargetTable,
    specs: Vec<TargetSpec>,
    unplaced: Vec<(String, Unplaced)>,
    source_errors: Vec<String>,
    buckets: &[f64],
    native: bool,
    export: &dyn Fn(&TargetSpec) -> Arc<LabelSet>,
) -> TargetTable {
    let same_buckets = previous.buckets == buckets;
    let mut old: HashMap<&LabelSet, &Arc<MeshTarget>> = HashMap::new();
    if same_buckets {
        for target in &previous.targets {
            if target.stats().has_native() == native {
                old.insert(&*target.spec.labels, target);
            }
        }
    }
    let shared_buckets: Arc<[f64]> = Arc::from(buckets);
    // One copy of each exported label set (and its text form), however many targets share it.
    let mut interned: HashMap<Arc<LabelSet>, Arc<str>> = HashMap::new();
    let targets: Vec<Arc<MeshTarget>> = specs
        .into_iter()
        .map(|spec| {
            let exported = export(&spec);
            match old.get(&*spec.labels) {
                Some(kept) if kept.exported_labels == exported => Arc::clone(kept),
                _ => {
                    let (exported_labels, rendered_labels) = match interned.get_key_value(&exported)
                    {
                        Some((labels, rendered)) => (Arc::clone(labels), Arc::clone(rendered)),
                        None => {
                            let rendered: Arc<str> = Arc::from(render_labels(&exported));
                            interned.insert(Arc::clone(&exported), Arc::clone(&rendered));
                            (exported, rendered)
                        }
                    };
                    Arc::new(MeshTarget {
                        rendered_labels,
                        exported_labels,
                        spec,
                        stats: Mutex::new(TargetStats::with_native(buckets.len(), native)),
                        recent: Mutex::new(RecentWindow::default()),
                        next_send_index: AtomicU64::new(0),
                        buckets: Arc::clone(&shared_buckets),
                    })
                }
            }
        })
        .collect();
    if same_buckets {
        let kept: BTreeSet<*const MeshTarget> = targets.iter().map(Arc::as_ptr).collect();
        let mut heir: HashMap<&str, &Arc<MeshTarget>> = HashMap::new();
        for target in &targets {
            heir.entry(&target.rendered_labels).or_insert(target);
        }
        for gone in previous
            .targets
            .iter()
            .filter(|t| !kept.contains(&Arc::as_ptr(t)))
        {
            let shared = *gone.rendered_labels != render_labels(&gone.spec.labels);
            if let Some(heir) = heir.get(&*gone.rendered_labels).filter(|_| shared) {
                let stats = gone.stats().snapshot();
                heir.stats().absorb(&stats);
            }
        }
    }
    TargetTable {
        targets,
        unplaced,
        source_errors,
        buckets: buckets.to_vec(),
    }
}

/// One row per exported label set, made by `row` from the first target with that set and a
/// snapshot of its stats: targets that share one (`inter_group_series: per_group`) are summed
/// into it (through `stats_of`), so sent = received + lost holds for the shared series too.
/// The rows are built in their final form, so a scrape holds one snapshot per row, not two.
/// `with_native`: copy the native histograms too (the text format has none). Targets of one
/// group are usually adjacent in the table, so the previous row is tried first.
fn exported_rows<'t, Row>(
    table: &'t TargetTable,
    with_native: bool,
    row: impl Fn(&'t MeshTarget, TargetStats) -> Row,
    stats_of: impl Fn(&mut Row) -> &mut TargetStats,
) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    let mut previous: Option<(&'t Arc<str>, usize)> = None;
    for target in &table.targets {
        let stats = if with_native {
            target.stats().snapshot()
        } else {
            target.stats().counters_snapshot()
        };
        let same_as_previous = previous
            .filter(|(labels, _)| Arc::ptr_eq(labels, &target.rendered_labels))
            .map(|(_, index)| index);
        let index = match same_as_previous.or_else(|| row_of.get(&*target.rendered_labels).copied())
        {
            Some(index) => {
                stats_of(&mut rows[index]).absorb(&stats);
                index
            }
            None => {
                row_of.insert(&target.rendered_labels, rows.len());
                rows.push(row(target, stats));
                rows.len() - 1
            }
        };
        previous = Some((&target.rendered_labels, index));
    }
    rows.shrink_to_fit();
    rows
}

#[cfg(test)]
impl Mesh {
    /// A mesh that probes nothing (no tasks, an in-memory transport) and serves the targets of
    /// `specs`, each exported under `export`'s label set, for rendering tests.
    pub(crate) fn idle_for_tests(
        config: MeshConfig,
        specs: Vec<TargetSpec>,
        export: &dyn Fn(&TargetSpec) -> Arc<LabelSet>,
    ) -> Mesh {
        let pinger = Pinger::with_transport(crate::icmp::fake::FakeTransport::new());
        let table = build_table(
            &TargetTable::default(),
            specs,
            Vec::new(),
            Vec::new(),
            &config.buckets,
            config.histogram.native(),
            export,
        );
        let shared = Arc::new(MeshShared::new(pinger, Some(config)));
        shared.store_table(table);
        let paths = Arc::new(PathBook::default());
        Mesh { shared, paths }
    }
}
