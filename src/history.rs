//! The bounded history of recent `/probe` requests: blackbox's "Recent Probes" table on the
//! landing page and the `/logs?id=N` debug output, at most `--history.limit` entries.
//!
//! Owns the entries and their ids (from 0, as blackbox counts them); the oldest entry goes when
//! a new one would exceed the limit. It renders nothing and knows no HTTP: [`crate::http`] does.

use std::collections::VecDeque;
use std::sync::Mutex;

/// One probe as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub module: String,
    pub target: String,
    pub success: bool,
    /// The per-probe log lines, as `debug=true` shows them.
    pub log_lines: Vec<String>,
    /// The metrics the probe returned.
    pub metrics: String,
}

/// The last `limit` probes; `limit` 0 keeps none.
#[derive(Debug)]
pub struct ProbeHistory {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    entries: VecDeque<Entry>,
}

impl ProbeHistory {
    pub fn new(limit: usize) -> ProbeHistory {
        ProbeHistory {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether probes are kept at all (so whether their log lines need capturing).
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Adds a probe, dropping the oldest beyond the limit; returns its id.
    pub fn add(
        &self,
        module: &str,
        target: &str,
        success: bool,
        log_lines: Vec<String>,
        metrics: String,
    ) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.push_back(Entry {
            id,
            module: module.to_string(),
            target: target.to_string(),
            success,
            log_lines,
            metrics,
        });
        while inner.entries.len() > self.limit {
            inner.entries.pop_front();
        }
        Some(id)
    }

    /// The probe with this id, if it is still kept.
    pub fn get(&self, id: u64) -> Option<Entry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.iter().find(|entry| entry.id == id).cloned()
    }

    /// (id, module, target, success) of every kept probe, newest first.
    pub fn recent(&self) -> Vec<(u64, String, String, bool)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .entries
            .iter()
            .rev()
            .map(|e| (e.id, e.module.clone(), e.target.clone(), e.success))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_limit_probes_with_ids_from_zero() {
        let history = ProbeHistory::new(2);
        for target in ["a", "b", "c"] {
            history.add("icmp", target, target == "b", vec![], String::new());
        }
        let recent: Vec<(u64, String)> = history
            .recent()
            .into_iter()
            .map(|(id, _, target, _)| (id, target))
            .collect();
        assert_eq!(recent, vec![(2, "c".into()), (1, "b".into())]);
        assert!(history.get(0).is_none(), "the oldest went");
        assert_eq!(history.get(1).map(|e| e.success), Some(true));
        let off = ProbeHistory::new(0);
        assert!(!off.enabled());
        assert_eq!(off.add("icmp", "a", true, vec![], String::new()), None);
        assert!(off.recent().is_empty());
    }
}
