//! Peer sources: static target groups, watched file_sd files (JSON or YAML), and DNS names
//! expanded to all their A/AAAA records.
//!
//! Owns reading and re-reading them. [`PeerLoader::refresh`] re-reads a file only when its
//! content changed, keeps the last good content of a file that became unreadable or invalid (and
//! reports why), and re-resolves DNS names. It produces a flat list of [`PeerEntry`]s; deciding
//! which of them to ping is `targets.rs`'s job.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::mesh::{PeerSources, TargetGroup, check_target_group};

/// One address of one peer, with its labels (`peer` always set; `network` optional).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerEntry {
    pub address: IpAddr,
    pub labels: BTreeMap<String, String>,
}

impl PeerEntry {
    pub fn peer(&self) -> &str {
        self.labels.get("peer").map_or("", String::as_str)
    }
}

/// Parses a Prometheus file_sd document: a list of `{targets: [...], labels: {...}}` groups, as
/// JSON (by `.json` extension or a leading `[`) or YAML.
pub fn parse_file_sd(text: &str, path: &Path) -> Result<Vec<TargetGroup>, String> {
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('[');
    let groups: Vec<TargetGroup> = if text.trim().is_empty() {
        Vec::new()
    } else if is_json {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?
    };
    for group in &groups {
        check_target_group(group)?;
    }
    Ok(groups)
}

fn entries_of(groups: &[TargetGroup]) -> impl Iterator<Item = PeerEntry> + '_ {
    groups.iter().flat_map(|group| {
        group.targets.iter().filter_map(move |target| {
            target.parse::<IpAddr>().ok().map(|address| PeerEntry {
                address: address.to_canonical(),
                labels: group.labels.clone(),
            })
        })
    })
}

struct FileState {
    content: String,
    groups: Vec<TargetGroup>,
}

/// The result of one refresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSnapshot {
    /// Sorted and deduplicated.
    pub entries: Vec<PeerEntry>,
    /// Problems with individual sources; their last good content is still in `entries`.
    pub errors: Vec<String>,
    /// True when `entries` differ from the previous refresh.
    pub changed: bool,
}

/// Loads peers from their sources, remembering what it last saw.
pub struct PeerLoader {
    sources: PeerSources,
    files: HashMap<PathBuf, FileState>,
    dns: HashMap<String, Vec<IpAddr>>,
    last: Vec<PeerEntry>,
}

impl PeerLoader {
    pub fn new(sources: PeerSources) -> PeerLoader {
        PeerLoader {
            sources,
            files: HashMap::new(),
            dns: HashMap::new(),
            last: Vec::new(),
        }
    }

    /// Replaces the sources (config reload), keeping what was read from files that stay.
    pub fn set_sources(&mut self, sources: PeerSources) {
        self.files.retain(|path, _| sources.files.contains(path));
        self.dns
            .retain(|name, _| sources.dns.iter().any(|d| &d.name == name));
        self.sources = sources;
    }

    /// Re-reads changed files and re-resolves DNS names (on [`crate::lookup`]'s threads).
    pub async fn refresh(&mut self) -> PeerSnapshot {
        let mut errors = Vec::new();
        for path in self.sources.files.clone() {
            if let Err(error) = self.refresh_file(&path) {
                errors.push(format!("peers file {}: {error}", path.display()));
            }
        }
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
        let mut entries: Vec<PeerEntry> = entries_of(&self.sources.static_groups).collect();
        for path in &self.sources.files {
            if let Some(state) = self.files.get(path) {
                entries.extend(entries_of(&state.groups));
            }
        }
        for dns in &self.sources.dns {
            let mut labels = dns.labels.clone();
            labels
                .entry("peer".into())
                .or_insert_with(|| dns.name.clone());
            for address in self.dns.get(&dns.name).into_iter().flatten() {
                entries.push(PeerEntry {
                    address: *address,
                    labels: labels.clone(),
                });
            }
        }
        entries.sort();
        entries.dedup();
        let changed = entries != self.last;
        self.last = entries.clone();
        PeerSnapshot {
            entries,
            errors,
            changed,
        }
    }

    fn refresh_file(&mut self, path: &Path) -> Result<(), String> {
        let content = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        if self
            .files
            .get(path)
            .is_some_and(|state| state.content == content)
        {
            return Ok(());
        }
        let groups = parse_file_sd(&content, path)?;
        self.files
            .insert(path.to_path_buf(), FileState { content, groups });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[tokio::test]
    async fn files_are_reread_on_change_and_bad_content_keeps_the_last_good() {
        let dir = std::env::temp_dir().join(format!("meshprobe-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let json = write(
            &dir,
            "peers.json",
            r#"[{"targets": ["198.18.0.2"], "labels": {"peer": "b"}}]"#,
        );
        let yaml = write(
            &dir,
            "peers.yml",
            "- targets: [\"2001:2::3\"]\n  labels: {peer: c, network: lab}\n",
        );
        let mut loader = PeerLoader::new(PeerSources {
            files: vec![json.clone(), yaml.clone()],
            ..PeerSources::default()
        });
        let first = loader.refresh().await;
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert!(first.changed);
        let peers: Vec<&str> = first.entries.iter().map(PeerEntry::peer).collect();
        assert_eq!(peers, ["b", "c"]);
        assert_eq!(first.entries[1].labels["network"], "lab");
        assert!(!loader.refresh().await.changed);

        write(
            &dir,
            "peers.json",
            r#"[{"targets": ["198.18.0.2", "198.18.0.4"], "labels": {"peer": "b"}}]"#,
        );
        let grown = loader.refresh().await;
        assert!(grown.changed);
        assert_eq!(grown.entries.len(), 3);

        write(
            &dir,
            "peers.json",
            "[{\"targets\": [\"not-an-ip\"], \"labels\": {\"peer\": \"b\"}}]",
        );
        let broken = loader.refresh().await;
        assert_eq!(broken.errors.len(), 1, "{:?}", broken.errors);
        assert!(broken.errors[0].contains("not-an-ip"));
        assert_eq!(broken.entries.len(), 3, "the last good content stays");
        assert!(!broken.changed);

        std::fs::remove_file(&json).expect("remove");
        let missing = loader.refresh().await;
        assert_eq!(missing.errors.len(), 1);
        assert_eq!(missing.entries.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_sd_requires_peer_labels_and_addresses() {
        let path = Path::new("x.json");
        assert!(parse_file_sd("[{\"targets\": [\"198.18.0.1\"]}]", path).is_err());
        assert!(
            parse_file_sd(
                "[{\"targets\": [\"198.18.0.1:9100\"], \"labels\": {\"peer\": \"a\"}}]",
                path
            )
            .is_err()
        );
        assert!(parse_file_sd("{\"targets\": []}", path).is_err());
        assert_eq!(parse_file_sd("", path), Ok(Vec::new()));
        assert_eq!(parse_file_sd("[]", path), Ok(Vec::new()));
    }
}
