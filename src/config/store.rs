//! The live configuration: loading from a file or the embedded default, and reloading safely.
//!
//! [`ConfigStore`] hands out the current [`Config`] without locks, and [`ConfigStore::reload`]
//! replaces it only when the new file is valid. A bad file keeps the old config and is reported
//! through the returned error and the reload gauges. Like blackbox, an unchanged file (same
//! SHA-256) is not re-parsed, but still counts as a successful reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::{Config, ConfigError, EMBEDDED_NAME};

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    Reloaded,
    Unchanged,
}

/// Holds the current configuration and the reload bookkeeping.
pub struct ConfigStore {
    path: Option<PathBuf>,
    current: ArcSwap<Config>,
    checksum: std::sync::Mutex<[u8; 32]>,
    last_reload_successful: AtomicBool,
    last_success_timestamp_bits: AtomicU64,
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn read_file(path: &PathBuf) -> Result<(String, [u8; 32]), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        message: format!("error reading YAML file: {e}"),
    })?;
    let checksum: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    Ok((text, checksum))
}

impl ConfigStore {
    /// Loads `path`, or the embedded default when `None`.
    pub fn load(path: Option<PathBuf>) -> Result<ConfigStore, ConfigError> {
        let (config, checksum) = match &path {
            Some(path) => {
                let (text, checksum) = read_file(path)?;
                (Config::parse(&text, &path.display().to_string())?, checksum)
            }
            None => (Config::embedded(), [0; 32]),
        };
        Ok(ConfigStore {
            path,
            current: ArcSwap::from_pointee(config),
            checksum: std::sync::Mutex::new(checksum),
            last_reload_successful: AtomicBool::new(true),
            last_success_timestamp_bits: AtomicU64::new(now_seconds().to_bits()),
        })
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Where the configuration comes from, for logs and the landing page.
    pub fn source_name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| EMBEDDED_NAME.to_string(), |p| p.display().to_string())
    }

    /// Re-reads the file; keeps the current config if the new one is invalid.
    pub fn reload(&self) -> Result<ReloadOutcome, ConfigError> {
        let result = self.try_reload();
        match &result {
            Ok(_) => {
                self.last_reload_successful.store(true, Ordering::Relaxed);
                self.last_success_timestamp_bits
                    .store(now_seconds().to_bits(), Ordering::Relaxed);
            }
            Err(_) => self.last_reload_successful.store(false, Ordering::Relaxed),
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadOutcome, ConfigError> {
        let Some(path) = &self.path else {
            return Ok(ReloadOutcome::Unchanged);
        };
        let (text, checksum) = read_file(path)?;
        let mut current_checksum = self.checksum.lock().unwrap_or_else(|p| p.into_inner());
        if *current_checksum == checksum {
            return Ok(ReloadOutcome::Unchanged);
        }
        let config = Config::parse(&text, &path.display().to_string())?;
        self.current.store(Arc::new(config));
        *current_checksum = checksum;
        Ok(ReloadOutcome::Reloaded)
    }

    pub fn last_reload_successful(&self) -> bool {
        self.last_reload_successful.load(Ordering::Relaxed)
    }

    pub fn last_success_timestamp(&self) -> f64 {
        f64::from_bits(self.last_success_timestamp_bits.load(Ordering::Relaxed))
    }
}
