//! The composition root: [`AppState`], everything a request handler needs (the config store,
//! the ICMP engine, the mesh, the web config and the flags that shape probes), and
//! [`ExporterCounters`], the counts the HTTP layer keeps for `/metrics`.
//!
//! `main` builds one `AppState`; [`crate::http`] serves requests from it, [`crate::self_metrics`]
//! renders `/metrics` from it, and the SIGHUP handler reloads through it. It owns no behaviour
//! beyond the counters' bookkeeping and depends on none of its users, so dependencies run one
//! way: `http` and `self_metrics` → `app` → the parts (config, engine, mesh, web).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::config::store::ConfigStore;
use crate::history::ProbeHistory;
use crate::icmp::Pinger;
use crate::mesh::runner::Mesh;
use crate::probe::ProbeOptions;
use crate::web::WebStore;
use crate::web::prefix::RoutePrefix;

/// Everything a request handler needs: built once by `main`, shared by every connection.
pub struct AppState {
    pub config: ConfigStore,
    pub pinger: Pinger,
    pub counters: ExporterCounters,
    pub timeout_offset: f64,
    pub probe_options: ProbeOptions,
    /// `--probe.max-concurrency`: beyond it `/probe` answers 503 at once.
    pub max_concurrent_probes: usize,
    /// `--web.config.file`: TLS, basic auth and extra headers (see [`crate::web`]).
    pub web: WebStore,
    /// Mesh mode; idle while the config has no `mesh:` section.
    pub mesh: Mesh,
    /// `--history.limit`: the recent probes on the landing page and `/logs?id=N`.
    pub history: ProbeHistory,
    /// `--web.route-prefix` and `--web.external-url`.
    pub routes: RoutePrefix,
}

/// Counters the HTTP layer keeps; [`crate::self_metrics`] exports them.
#[derive(Debug, Default)]
pub struct ExporterCounters {
    pub module_unknown: AtomicU64,
    pub probes_in_flight: AtomicI64,
    // Read by `self_metrics`; written only through the methods below.
    pub(crate) probes_succeeded: AtomicU64,
    pub(crate) probes_failed: AtomicU64,
    pub(crate) refused_overload: AtomicU64,
    pub(crate) refused_not_allowed: AtomicU64,
}

/// A probe's place under the concurrency limit; released on drop, even if the request is
/// cancelled mid-probe.
pub struct ProbeSlot<'a> {
    counters: &'a ExporterCounters,
}

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.counters
            .probes_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl ExporterCounters {
    /// Takes a slot if fewer than `limit` probes are running; counts the refusal otherwise.
    pub fn try_start_probe(&self, limit: usize) -> Option<ProbeSlot<'_>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = self.probes_in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = ProbeSlot { counters: self };
        if before >= limit {
            drop(slot);
            self.refused_overload.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(slot)
    }

    pub fn count_not_allowed(&self) {
        self.refused_not_allowed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_probe(&self, success: bool) {
        let counter = if success {
            &self.probes_succeeded
        } else {
            &self.probes_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
