//! Counters the simulator keeps while hooks run, and the per-scenario report built from them.
//!
//! Owns what is measured (hooks by name, tool calls, relation-get calls per peer hook,
//! relation-set writes and no-op writes, peers-file writes, service restarts, published size,
//! Prometheus-side relation-changed events, hook wall times) and how the report is printed: to
//! stderr and appended to `target/charm-sim-report.md`. It does not decide what a hook is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Default, Clone, Debug)]
pub struct Counters {
    pub hooks: BTreeMap<String, u64>,
    pub failed: Vec<String>,
    pub tools: BTreeMap<String, u64>,
    /// relation-get calls in each mesh-relation-{joined,changed,departed} hook.
    pub peer_relation_gets: Vec<u32>,
    pub relation_set_calls: u64,
    pub relation_set_noops: u64,
    pub peers_file_writes: u64,
    pub peers_file_changes: u64,
    pub restarts: u64,
    /// Commits that changed the app bag, or an in-scope unit bag, on metrics-endpoint.
    pub prometheus_changed: u64,
    /// Units joining/leaving metrics-endpoint (Prometheus sees joined+changed / departed).
    pub prometheus_joins: u64,
    pub prometheus_departs: u64,
    /// Effective changes of the leader-written `scrape_jobs` value.
    pub scrape_jobs_changes: u64,
    pub stale_reads: u64,
    pub sim_errors: Vec<String>,
    pub walls: Vec<Duration>,
}

/// A finished scenario phase: the counters plus the state at its end.
#[derive(Clone, Debug)]
pub struct Report {
    pub title: String,
    pub c: Counters,
    pub scrape_jobs_bytes: usize,
    pub elapsed: Duration,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

impl Report {
    pub fn total_hooks(&self) -> u64 {
        self.c.hooks.values().sum()
    }

    pub fn hook(&self, name: &str) -> u64 {
        self.c.hooks.get(name).copied().unwrap_or(0)
    }

    pub fn p50_p99(&self) -> (Duration, Duration) {
        let mut walls = self.c.walls.clone();
        walls.sort();
        (pct(&walls, 0.5), pct(&walls, 0.99))
    }

    pub fn peer_relation_gets(&self) -> (u32, f64) {
        let v = &self.c.peer_relation_gets;
        let max = v.iter().copied().max().unwrap_or(0);
        let mean = if v.is_empty() {
            0.0
        } else {
            v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
        };
        (max, mean)
    }

    /// The report as a Markdown section.
    pub fn markdown(&self) -> String {
        let c = &self.c;
        let (p50, p99) = self.p50_p99();
        let (rg_max, rg_mean) = self.peer_relation_gets();
        let mut s = String::new();
        let _ = writeln!(s, "\n### {}\n", self.title);
        let _ = writeln!(s, "| Measure | Value |\n| --- | --- |");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "| {k} | {v} |");
        };
        row(
            "hooks run (failed)",
            format!("{} ({})", self.total_hooks(), c.failed.len()),
        );
        let hooks: Vec<String> = c.hooks.iter().map(|(k, v)| format!("{k} {v}")).collect();
        row("hooks by name", hooks.join(", "));
        let tools: Vec<String> = c.tools.iter().map(|(k, v)| format!("{k} {v}")).collect();
        row(
            "hook-tool calls",
            format!("{} ({})", c.tools.values().sum::<u64>(), tools.join(", ")),
        );
        row(
            "relation-get per peer hook (max / mean)",
            format!("{rg_max} / {rg_mean:.2}"),
        );
        row(
            "relation-set calls (no-op)",
            format!("{} ({})", c.relation_set_calls, c.relation_set_noops),
        );
        row(
            "peers.json writes (content changes)",
            format!("{} ({})", c.peers_file_writes, c.peers_file_changes),
        );
        row("service restarts", c.restarts.to_string());
        row(
            "scrape_jobs bytes (changes)",
            format!("{} ({})", self.scrape_jobs_bytes, c.scrape_jobs_changes),
        );
        row(
            "Prometheus-side relation-changed (+ joins / departs)",
            format!(
                "{} (+{} / {})",
                c.prometheus_changed, c.prometheus_joins, c.prometheus_departs
            ),
        );
        row(
            "hook wall p50 / p99",
            format!(
                "{:.1} ms / {:.1} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ),
        );
        row(
            "phase wall time",
            format!("{:.1} s", self.elapsed.as_secs_f64()),
        );
        if c.stale_reads > 0 {
            row(
                "own-bag reads after a write in the same hook (served stale)",
                c.stale_reads.to_string(),
            );
        }
        if !c.sim_errors.is_empty() {
            row(
                "simulator-detected tool misuse",
                c.sim_errors.len().to_string(),
            );
        }
        for f in c.failed.iter().take(5) {
            let _ = writeln!(s, "\nfailed: {}", f.replace('\n', " ⏎ "));
        }
        for e in c.sim_errors.iter().take(5) {
            let _ = writeln!(s, "\nmisuse: {e}");
        }
        s
    }

    /// Prints the report to stderr and appends it to target/charm-sim-report.md.
    pub fn publish(&self) {
        let text = self.markdown();
        eprintln!("{text}");
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/charm-sim-report.md");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = f.write_all(text.as_bytes());
        }
    }
}
