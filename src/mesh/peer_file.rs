//! One watched peer file (Prometheus file_sd, JSON or YAML), read defensively.
//!
//! Owns when a file's content may replace the peers in force, and reading it without letting it
//! hurt the process: only regular files are read (the metadata of the *opened* file is checked,
//! so a symlink to a FIFO or `/dev/zero` is refused, and the open itself never blocks); a file
//! above `mesh.peers.max_file_bytes` is refused unread, and one listing more than
//! `mesh.peers.max_targets` addresses is refused while parsing; an unchanged file (same device,
//! inode, size, mtime and ctime) is not read again, and a changed one is parsed only when its
//! bytes differ. A new content must also be stable (two reads [`SETTLE`] apart give the same
//! bytes), and one that drops more than half of the file's targets (or all of them) is applied
//! only when a later refresh reads it again unchanged. Refused content keeps the last good one.
//! Everything here blocks; `peers.rs` calls it off the runtime thread.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};

use super::labels::LabelSet;
use crate::config::mesh::{PeerSources, TargetGroup, check_target_group};

/// How long apart the two reads of a changed file are.
pub const SETTLE: Duration = Duration::from_millis(250);
/// A new content with fewer than this share of the targets in force waits for confirmation.
pub const DROP_CONFIRM_RATIO: f64 = 0.5;

/// The bounds on one file, from `mesh.peers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    pub max_bytes: u64,
    pub max_targets: usize,
}

impl FileLimits {
    pub fn of(sources: &PeerSources) -> FileLimits {
        FileLimits {
            max_bytes: sources.max_file_bytes,
            max_targets: sources.max_targets,
        }
    }
}

/// Which version of which file: what fstat says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(meta: &Metadata) -> Fingerprint {
        Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// One address the file lists (canonical: an IPv4-mapped IPv6 address as IPv4) and the labels
/// of its group, shared with the group's other addresses.
pub type FileEntry = (IpAddr, Arc<LabelSet>);

/// A content that was applied: its digest (not its bytes, which at 100 000 targets are 10 MB
/// kept for nothing) and its addresses, flat (32 bytes each, where the parsed groups with an
/// address string each took about 100).
#[derive(Debug, Clone, PartialEq)]
struct Accepted {
    digest: Digest,
    entries: Box<[FileEntry]>,
}

/// The addresses of parsed (and checked) groups, flat.
fn flatten(groups: Vec<TargetGroup>) -> Box<[FileEntry]> {
    groups
        .into_iter()
        .flat_map(|group| {
            let labels = group.labels;
            group.targets.into_iter().filter_map(move |target| {
                let address = target.parse::<IpAddr>().ok()?.to_canonical();
                Some((address, Arc::clone(&labels)))
            })
        })
        .collect()
}

/// A value's length (bytes of a content, entries of a list) and two differently salted 64-bit
/// SipHashes of it: a change of the same length goes unnoticed only if both hashes collide
/// (files and peer lists come from the operator, not from an adversary, so a keyed or
/// cryptographic hash would buy nothing). Kept instead of the value where only "did it change"
/// is asked: 10 MB of file, or 3 MB of entries, at 100 000 targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Digest {
    len: usize,
    hashes: [u64; 2],
}

impl Digest {
    pub(super) fn of<T: std::hash::Hash>(items: &[T]) -> Digest {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash, Hasher};
        let hashes = [0u8, 1].map(|salt| {
            let mut hasher = BuildHasherDefault::<DefaultHasher>::default().build_hasher();
            hasher.write_u8(salt);
            items.hash(&mut hasher);
            hasher.finish()
        });
        Digest {
            len: items.len(),
            hashes,
        }
    }
}

/// A parsed content that drops too many targets, waiting for a later read to confirm it.
#[derive(Debug, Clone, PartialEq)]
struct PendingDrop {
    fingerprint: Fingerprint,
    accepted: Accepted,
}

/// What the last look at the file found.
#[derive(Debug, Clone, PartialEq, Default)]
enum Status {
    #[default]
    Good,
    /// Refused; the message says why (the file is not named in it).
    Broken(String),
}

/// The state kept for one file between refreshes.
#[derive(Debug, Default)]
pub struct WatchedFile {
    good: Option<Accepted>,
    /// The version last looked at, so an unchanged file is not read again.
    seen: Option<Fingerprint>,
    pending_drop: Option<PendingDrop>,
    status: Status,
}

/// Reading and parsing a file, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Nothing new.
    Unchanged,
    /// A new content is in force.
    Applied,
    /// A new content drops many targets; applied only if the next refresh reads it again.
    AwaitingConfirmation { before: usize, after: usize },
    /// The content changed between two reads; it is looked at again next refresh.
    Unstable,
}

impl WatchedFile {
    /// The addresses in force (the last good content), if any.
    pub fn entries(&self) -> &[FileEntry] {
        self.good.as_ref().map_or(&[], |good| &good.entries)
    }

    /// Why the file is refused now, if it is.
    pub fn problem(&self) -> Option<&str> {
        match &self.status {
            Status::Good => None,
            Status::Broken(message) => Some(message),
        }
    }

    /// Looks at the file once (blocking: reads it, and sleeps [`SETTLE`] when it changed).
    pub fn refresh(&mut self, path: &Path, limits: FileLimits) -> Event {
        self.try_refresh(path, limits).unwrap_or_else(|message| {
            self.status = Status::Broken(message);
            Event::Unchanged
        })
    }

    fn try_refresh(&mut self, path: &Path, limits: FileLimits) -> Result<Event, String> {
        // Unchanged since the last look: whatever it was judged then still holds.
        let Some((fingerprint, bytes)) = read_bounded(path, limits.max_bytes, self.seen)? else {
            return Ok(self.confirm_drop());
        };
        self.seen = Some(fingerprint);
        let digest = Digest::of(&bytes);
        if self.good.as_ref().is_some_and(|good| good.digest == digest) {
            self.pending_drop = None;
            self.status = Status::Good;
            return Ok(Event::Unchanged);
        }
        std::thread::sleep(SETTLE);
        match read_bounded(path, limits.max_bytes, None)? {
            Some((again, ref reread)) if again == fingerprint && *reread == bytes => {}
            _ => {
                // Being written: look again next time.
                self.seen = None;
                return Ok(Event::Unstable);
            }
        }
        let groups = parse_file_sd(&bytes, path, limits)?;
        self.status = Status::Good;
        drop(bytes);
        let accepted = Accepted {
            digest,
            entries: flatten(groups),
        };
        let before = self.entries().len();
        let after = accepted.entries.len();
        if (after as f64) < before as f64 * DROP_CONFIRM_RATIO {
            self.pending_drop = Some(PendingDrop {
                fingerprint,
                accepted,
            });
            return Ok(Event::AwaitingConfirmation { before, after });
        }
        self.pending_drop = None;
        self.good = Some(accepted);
        Ok(Event::Applied)
    }

    /// The file is unchanged since the last read: a drop waiting for it is now confirmed.
    fn confirm_drop(&mut self) -> Event {
        match self.pending_drop.take() {
            Some(pending) if Some(pending.fingerprint) == self.seen => {
                self.good = Some(pending.accepted);
                Event::Applied
            }
            other => {
                self.pending_drop = other;
                Event::Unchanged
            }
        }
    }
}

/// Reads the file if it is a regular file of at most `max_bytes` whose fingerprint differs
/// from `seen`; `None` when it is unchanged.
fn read_bounded(
    path: &Path,
    max_bytes: u64,
    seen: Option<Fingerprint>,
) -> Result<Option<(Fingerprint, Vec<u8>)>, String> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "not a regular file ({}); only regular files are read",
            kind_of(&meta)
        ));
    }
    let fingerprint = Fingerprint::of(&meta);
    if seen == Some(fingerprint) {
        return Ok(None);
    }
    if meta.size() > max_bytes {
        return Err(format!(
            "{} bytes, above mesh.peers.max_file_bytes ({max_bytes}); not read",
            meta.size()
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.size()).unwrap_or(0));
    File::take(file, max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "grew above mesh.peers.max_file_bytes ({max_bytes}) while being read"
        ));
    }
    Ok(Some((fingerprint, bytes)))
}

fn kind_of(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Parses a Prometheus file_sd document: a list of `{targets: [...], labels: {...}}` groups, as
/// JSON (by `.json` extension or a leading `[`) or YAML, with at most `limits.max_targets`
/// addresses. Errors name the entry (1-based) and, when it has one, its peer.
pub fn parse_file_sd(
    bytes: &[u8],
    path: &Path,
    limits: FileLimits,
) -> Result<Vec<TargetGroup>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('[');
    let too_many = || {
        format!(
            "lists more than mesh.peers.max_targets ({}) addresses",
            limits.max_targets
        )
    };
    let mut groups: Vec<TargetGroup> = if text.trim().is_empty() {
        Vec::new()
    } else if is_json {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let groups = BoundedGroups(limits.max_targets)
            .deserialize(&mut deserializer)
            .map_err(|e| {
                if e.to_string().contains(TOO_MANY) {
                    too_many()
                } else {
                    format!("invalid JSON: {e}")
                }
            })?;
        deserializer
            .end()
            .map_err(|e| format!("invalid JSON: {e}"))?;
        groups
    } else {
        // The parser's node and event budgets follow the size limit, so any YAML file within
        // it parses as its JSON twin would (the default 250 000 nodes stop at ~31 000 entries
        // with a label).
        let mut options = serde_saphyr::Options::default();
        let mut budget = serde_saphyr::budget::Budget::default();
        let room = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
        budget.max_nodes = budget.max_nodes.max(room / 2);
        budget.max_events = budget.max_events.max(room);
        budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(room);
        options.budget = Some(budget);
        let groups: Vec<TargetGroup> = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| format!("invalid YAML: {e}"))?;
        if groups.iter().map(|g| g.targets.len()).sum::<usize>() > limits.max_targets {
            return Err(too_many());
        }
        groups
    };
    for group in &mut groups {
        // Kept for the file's life: without the parser's spare capacity (a one-address group
        // would hold room for four, 70 bytes per target).
        group.targets.shrink_to_fit();
    }
    groups.shrink_to_fit();
    for (index, group) in groups.iter().enumerate() {
        check_target_group(group).map_err(|e| {
            let peer = group
                .labels
                .get("peer")
                .map(|p| format!(" (peer {p:?})"))
                .unwrap_or_default();
            format!("entry {}{peer}: {e}", index + 1)
        })?;
    }
    Ok(groups)
}

const TOO_MANY: &str = "meshprobe: too many targets";

/// Deserializes a list of target groups, stopping as soon as they hold more than `.0`
/// addresses, so a huge file is never held in memory as groups.
struct BoundedGroups(usize);

impl<'de> DeserializeSeed<'de> for BoundedGroups {
    type Value = Vec<TargetGroup>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedGroups {
    type Value = Vec<TargetGroup>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of target groups")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut groups = Vec::new();
        let mut targets = 0usize;
        while let Some(group) = seq.next_element::<TargetGroup>()? {
            targets += group.targets.len();
            if targets > self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            groups.push(group);
        }
        Ok(groups)
    }
}

#[cfg(test)]
#[path = "peer_file_tests.rs"]
mod tests;
