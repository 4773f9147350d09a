//! Peer sources: static target groups, watched file_sd files (JSON or YAML), and DNS names
//! expanded to all their A/AAAA records.
//!
//! Owns re-reading them and the one place where peer entries are made: [`PeerLoader::refresh`]
//! reads the files off the runtime thread (each through `peer_file.rs`, which decides when a
//! file's content may replace the last good one), re-resolves DNS names on
//! [`crate::lookup`]'s threads, cleans every label value (control and bidi characters removed,
//! at most [`MAX_LABEL_VALUE_CHARS`] characters), drops entries outside the config's top-level
//! `allowed_targets`, and logs each refusal or rewrite once per change. It produces a flat list
//! of [`PeerEntry`]s; deciding which of them to ping is `targets.rs`'s job.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::labels::LabelSet;
use super::peer_file::{Digest, Event, WatchedFile};
use crate::config::mesh::{PeerSources, TargetGroup};
use crate::expo::{self, MetricType};

pub use super::peer_file::{FileLimits, parse_file_sd};

/// Label values (peer names above all) are cut to this many characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 128;

/// Entries refused at the last refresh because their address is outside `allowed_targets`.
static NOT_ALLOWED: AtomicUsize = AtomicUsize::new(0);

/// A peer entry's labels. Shared: every address of a target group, and every copy of an entry
/// (selection, plan, change detection), points at one packed set, so 100 000 entries cost one
/// label set each, not one per copy.
pub type PeerLabels = Arc<LabelSet>;

/// One address of one peer, with its labels (`peer` always set; `network` optional).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerEntry {
    pub address: IpAddr,
    pub labels: PeerLabels,
}

impl PeerEntry {
    pub fn peer(&self) -> &str {
        self.labels.get("peer").unwrap_or("")
    }
}

/// Characters that render invisibly or reorder text: C0/C1 controls (NUL included), bidi
/// embeddings, overrides, isolates and marks, zero-width characters and the BOM.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}')
        || matches!(c, '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// `value` without hidden characters and at most [`MAX_LABEL_VALUE_CHARS`] long (a cut value
/// ends in `~` and a hash of the whole, so two long names stay apart); `None` if it is fine.
pub fn clean_label_value(value: &str) -> Option<String> {
    let visible: String = value.chars().filter(|c| !is_hidden(*c)).collect();
    let cleaned = if visible.chars().count() > MAX_LABEL_VALUE_CHARS {
        let head: String = visible.chars().take(MAX_LABEL_VALUE_CHARS - 9).collect();
        format!("{head}~{:08x}", fnv1a(value))
    } else {
        visible
    };
    (cleaned != value).then_some(cleaned)
}

/// An entry's labels with every value cleaned. A peer name with nothing visible left becomes
/// `peer-<hash>`.
fn cleaned_labels(labels: &LabelSet) -> LabelSet {
    labels
        .iter()
        .map(|(name, value)| {
            let value = match clean_label_value(value) {
                Some(cleaned) if cleaned.is_empty() && name == "peer" => {
                    format!("peer-{:08x}", fnv1a(value))
                }
                Some(cleaned) => cleaned,
                None => value.to_string(),
            };
            (name, value)
        })
        .collect()
}

/// The result of one refresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSnapshot {
    /// Sorted and deduplicated.
    pub entries: Vec<PeerEntry>,
    /// Sources that are refused now; their last good content is still in `entries`.
    pub errors: Vec<String>,
    /// The members of `errors` that were not there at the previous refresh: log these, so a
    /// broken file is reported once per change rather than at every refresh.
    pub new_errors: Vec<String>,
    /// Sources (`peers file PATH`, `peers DNS name NAME`) that had a problem at the previous
    /// refresh and have none now: log these, so the recovery is as visible as the problem.
    pub recovered: Vec<String>,
    /// True when `entries` differ from the previous refresh.
    pub changed: bool,
    /// Entries left out because their address is outside `allowed_targets`.
    pub not_allowed: usize,
}

/// Loads peers from their sources, remembering what it last saw.
pub struct PeerLoader {
    sources: PeerSources,
    files: HashMap<PathBuf, WatchedFile>,
    dns: HashMap<String, Vec<IpAddr>>,
    /// The entries of the previous refresh, as a digest (to tell whether anything changed).
    last: Digest,
    /// Errors and notices of the previous refresh (each is logged when it first appears).
    reported: BTreeSet<String>,
    /// The sources that had an error at the previous refresh.
    broken_sources: BTreeSet<String>,
}

/// The source an error is about: its text before the first `": "` (`peers file PATH`).
fn source_of(error: &str) -> &str {
    error.split_once(": ").map_or(error, |(source, _)| source)
}

impl PeerLoader {
    pub fn new(sources: PeerSources) -> PeerLoader {
        PeerLoader {
            sources,
            files: HashMap::new(),
            dns: HashMap::new(),
            last: Digest::of::<PeerEntry>(&[]),
            reported: BTreeSet::new(),
            broken_sources: BTreeSet::new(),
        }
    }

    /// Replaces the sources (config reload), keeping what was read from files that stay.
    pub fn set_sources(&mut self, sources: PeerSources) {
        self.files.retain(|path, _| sources.files.contains(path));
        self.dns
            .retain(|name, _| sources.dns.iter().any(|d| &d.name == name));
        self.sources = sources;
    }

    /// Re-reads changed files (on the blocking pool) and re-resolves DNS names.
    pub async fn refresh(&mut self) -> PeerSnapshot {
        let mut errors = Vec::new();
        let mut notices = Vec::new();
        self.refresh_files(&mut errors, &mut notices).await;
        for dns in self.sources.dns.clone() {
            match crate::lookup::lookup_host(&dns.name).await {
                Ok(mut addresses) => {
                    addresses.sort();
                    addresses.dedup();
                    self.dns.insert(dns.name.clone(), addresses);
                }
                Err(error) => errors.push(format!("peers DNS name {}: {error}", dns.name)),
            }
        }
        let mut raw: Vec<RawEntry> = Vec::new();
        add_groups(&mut raw, "mesh.peers.static", &self.sources.static_groups);
        for path in &self.sources.files {
            if let Some(file) = self.files.get(path) {
                let source = format!("peers file {}", path.display());
                let source: Arc<str> = Arc::from(source);
                raw.extend(
                    file.entries().iter().map(|(address, labels)| {
                        (Arc::clone(&source), *address, Arc::clone(labels))
                    }),
                );
            }
        }
        for dns in &self.sources.dns {
            let mut labels = dns.labels.clone();
            labels
                .entry("peer".into())
                .or_insert_with(|| dns.name.clone());
            let labels = Arc::new(LabelSet::from(labels));
            let source: Arc<str> = Arc::from(format!("peers DNS name {}", dns.name));
            for address in self.dns.get(&dns.name).into_iter().flatten() {
                raw.push((Arc::clone(&source), *address, Arc::clone(&labels)));
            }
        }
        let (mut entries, not_allowed) = self.admit(raw, &mut notices);
        NOT_ALLOWED.store(not_allowed, Ordering::Relaxed);
        entries.sort();
        entries.dedup();
        let digest = Digest::of(&entries);
        let changed = digest != self.last;
        self.last = digest;
        let current: BTreeSet<String> = errors.iter().chain(&notices).cloned().collect();
        let new_errors = errors
            .iter()
            .filter(|e| !self.reported.contains(*e))
            .cloned()
            .collect();
        for notice in notices.iter().filter(|n| !self.reported.contains(*n)) {
            tracing::warn!(%notice, "mesh peers");
        }
        self.reported = current;
        let broken_now: BTreeSet<String> =
            errors.iter().map(|e| source_of(e).to_string()).collect();
        let recovered = self
            .broken_sources
            .difference(&broken_now)
            .cloned()
            .collect();
        self.broken_sources = broken_now;
        PeerSnapshot {
            entries,
            errors,
            new_errors,
            recovered,
            changed,
            not_allowed,
        }
    }

    /// Reads the files on the blocking pool, so a slow disk or a huge file never holds up the
    /// runtime thread that serves HTTP and sends probes.
    async fn refresh_files(&mut self, errors: &mut Vec<String>, notices: &mut Vec<String>) {
        let paths = self.sources.files.clone();
        let limits = FileLimits::of(&self.sources);
        let mut files = std::mem::take(&mut self.files);
        let work = tokio::task::spawn_blocking(move || {
            let events: Vec<(PathBuf, Event)> = paths
                .into_iter()
                .map(|path| {
                    let event = files
                        .entry(path.clone())
                        .or_default()
                        .refresh(&path, limits);
                    (path, event)
                })
                .collect();
            (files, events)
        });
        let events = match work.await {
            Ok((files, events)) => {
                self.files = files;
                events
            }
            Err(error) => {
                errors.push(format!("peer files: the reading task failed: {error}"));
                Vec::new()
            }
        };
        for (path, event) in events {
            if let Event::AwaitingConfirmation { before, after } = event {
                notices.push(format!(
                    "peers file {}: the new content has {after} targets instead of {before}; \
                     applied only if the next refresh reads it unchanged",
                    path.display()
                ));
            }
        }
        for path in &self.sources.files {
            if let Some(problem) = self.files.get(path).and_then(WatchedFile::problem) {
                errors.push(format!("peers file {}: {problem}", path.display()));
            }
        }
    }

    /// Makes the entries: cleans their labels and drops those outside `allowed_targets`,
    /// with a notice per source for each. Also returns how many were dropped.
    fn admit(&self, raw: Vec<RawEntry>, notices: &mut Vec<String>) -> (Vec<PeerEntry>, usize) {
        let allowed = &self.sources.allowed_targets;
        let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut cleaned: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut entries = Vec::with_capacity(raw.len());
        for (source, address, mut labels) in raw {
            // Copy-on-write: only an entry whose labels need cleaning gets a map of its own.
            if labels
                .iter()
                .any(|(_, value)| clean_label_value(value).is_some())
            {
                let original = labels.get("peer").unwrap_or_default().to_string();
                labels = Arc::new(cleaned_labels(&labels));
                cleaned
                    .entry(source.to_string())
                    .or_default()
                    .push(original);
            }
            if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(&address)) {
                let peer = labels.get("peer").unwrap_or_default();
                refused
                    .entry(source.to_string())
                    .or_default()
                    .push(format!("{peer} {address}"));
                continue;
            }
            entries.push(PeerEntry { address, labels });
        }
        let not_allowed = refused.values().map(Vec::len).sum();
        for (source, list) in refused {
            notices.push(format!(
                "{source}: {} not probed, outside allowed_targets: {}",
                plural(list.len(), "entry", "entries"),
                sample(&list)
            ));
        }
        for (source, list) in cleaned {
            notices.push(format!(
                "{source}: {} had control or bidi characters removed or were cut to {} \
                 characters: {}",
                plural(list.len(), "entry's labels", "entries' labels"),
                MAX_LABEL_VALUE_CHARS,
                sample(&list)
            ));
        }
        (entries, not_allowed)
    }
}

/// An entry before cleaning: its source (for notices), address and labels.
type RawEntry = (Arc<str>, IpAddr, PeerLabels);

fn add_groups(raw: &mut Vec<RawEntry>, source: &str, groups: &[TargetGroup]) {
    let source: Arc<str> = Arc::from(source);
    for group in groups {
        let labels = Arc::clone(&group.labels);
        for target in &group.targets {
            if let Ok(address) = target.parse::<IpAddr>() {
                let address = address.to_canonical();
                raw.push((Arc::clone(&source), address, Arc::clone(&labels)));
            }
        }
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// The first few items, escaped (they may hold the very characters being removed).
fn sample(items: &[String]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(5)
        .map(|item| format!("{:?}", item.chars().take(40).collect::<String>()))
        .collect();
    let more = items.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Appends the peer-source families to `/metrics`.
pub fn render(out: &mut String) {
    expo::single(
        out,
        "meshprobe_mesh_peers_not_allowed",
        "Peer entries (addresses) not probed at the last refresh because they are outside the config's top-level allowed_targets.",
        MetricType::Gauge,
        NOT_ALLOWED.load(Ordering::Relaxed) as f64,
    );
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
