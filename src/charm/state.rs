//! The unit's local state between hooks: a cache of the peers' shared networks, this unit's own,
//! the last config and status, and what it last wrote to relation bags; plus the file paths the
//! charm owns and atomic, write-only-if-changed file writes.
//!
//! The cache is what makes peer hooks O(1): a `-changed` hook reads one remote bag and merges it
//! here instead of re-reading every peer. A missing or corrupt cache is rebuilt by the caller.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{CharmConfig, SharedNetwork};

/// Bumped when the cache layout changes; an older cache is rebuilt.
const CACHE_VERSION: u32 = 1;

/// What this unit knows about one peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub networks: Vec<SharedNetwork>,
    pub exporter: Option<String>,
    /// Its `group` bag key (grouping on).
    #[serde(default)]
    pub group: Option<String>,
    /// Why this peer's data was not usable, if it was not.
    pub problem: Option<String>,
}

/// The cache file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cache {
    pub version: u32,
    pub own_networks: Vec<SharedNetwork>,
    pub own_exporter: Option<String>,
    pub peers: BTreeMap<String, PeerRecord>,
    pub config: Option<CharmConfig>,
    pub leader: bool,
    pub status: String,
    /// `<relation-id> <unit|app> <key>` → the value this unit last wrote.
    pub written: BTreeMap<String, String>,
    /// Relation ids per endpoint, learned from relation hooks.
    pub relations: BTreeMap<String, Vec<String>>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            version: CACHE_VERSION,
            own_networks: Vec::new(),
            own_exporter: None,
            peers: BTreeMap::new(),
            config: None,
            leader: false,
            status: String::new(),
            written: BTreeMap::new(),
            relations: BTreeMap::new(),
        }
    }
}

/// Every path the charm writes, under `MESHPROBE_CHARM_ROOT` (default `/`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn from_env() -> Paths {
        Paths {
            root: std::env::var_os("MESHPROBE_CHARM_ROOT")
                .map_or_else(|| PathBuf::from("/"), PathBuf::from),
        }
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("var/lib/meshprobe/charm-cache.json")
    }
    pub fn peers_file(&self) -> PathBuf {
        self.root.join("var/lib/meshprobe/peers.json")
    }
    pub fn service_config(&self) -> PathBuf {
        self.root.join("etc/meshprobe/meshprobe.yml")
    }
    pub fn systemd_unit(&self) -> PathBuf {
        self.root.join("etc/systemd/system/meshprobe.service")
    }
}

/// Loads the cache; `None` when it is missing, unreadable, corrupt or from another version.
pub fn load_cache(path: &Path) -> Option<Cache> {
    let text = std::fs::read_to_string(path).ok()?;
    let cache: Cache = serde_json::from_str(&text).ok()?;
    (cache.version == CACHE_VERSION).then_some(cache)
}

pub fn save_cache(path: &Path, cache: &Cache) -> io::Result<()> {
    let text = serde_json::to_string(cache).map_err(io::Error::other)?;
    write_atomic(path, text.as_bytes())
}

/// Writes `content` to `path` through a temporary file and a rename, so a reader never sees half
/// a file. Creates the parent directory.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let temporary = parent.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

/// Writes the file only if its content differs; returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<bool> {
    if std::fs::read(path).is_ok_and(|current| current == content) {
        return Ok(false);
    }
    write_atomic(path, content)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trips_and_corruption_means_rebuild() {
        let dir =
            std::env::temp_dir().join(format!("meshprobe-charm-state-{}", std::process::id()));
        let paths = Paths { root: dir.clone() };
        let mut cache = Cache::default();
        cache
            .peers
            .insert("meshprobe/1".into(), PeerRecord::default());
        save_cache(&paths.cache(), &cache).expect("save");
        assert_eq!(load_cache(&paths.cache()), Some(cache));
        std::fs::write(paths.cache(), "{corrupt").expect("corrupt");
        assert_eq!(load_cache(&paths.cache()), None);
        assert!(write_if_changed(&paths.peers_file(), b"[]").expect("write"));
        assert!(!write_if_changed(&paths.peers_file(), b"[]").expect("write"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
