//! The `mesh:` section of the configuration file: probing cadence, networks, histogram buckets
//! and kind (classic, native, both), extra labels and where the peers come from.
//!
//! Owns the fixed key names tools rely on (`mesh.interval`, `mesh.networks`, `mesh.peers.files`,
//! `mesh.peers.static`, `mesh.peers.dns`, and the fleet keys `mesh.strategy`, `mesh.group_by`,
//! `mesh.paths_between_groups`, `mesh.rotate_every`, `mesh.inter_group_series`; `mesh.trace` is
//! `mesh_trace.rs`), defaults, and
//! validation with errors naming the field.
//! Reading peer files and DNS happens in `crate::mesh::peers`, not here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::duration::{format_go_duration, parse_go_duration};
use super::mesh_trace::{RawTrace, TraceConfig, TraceView};
use super::network::NetworkSelector;
use crate::icmp::packet::MAX_PAYLOAD_SIZE;

/// Labels meshprobe sets itself on every mesh series.
pub const RESERVED_LABELS: [&str; 4] = ["peer", "network", "address", "ip_protocol"];
/// Label names no peer entry or `mesh.labels` may use: the histogram's `le`, `quantile` (which
/// Prometheus gives a meaning), `meshprobe_mesh_errors_total`'s `type`, and the two labels
/// meshprobe computes per target, and `meshprobe_mesh_path_info`'s `path`. Any of them would repeat a label on some series, and
/// Prometheus then rejects the whole scrape.
pub const SERIES_LABELS: [&str; 6] = ["le", "quantile", "type", "address", "ip_protocol", "path"];

/// Default `mesh.peers.max_file_bytes`: larger peer files are refused unread.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 8 << 20;
/// Default `mesh.peers.max_targets`: the most addresses one peer file may list.
pub const DEFAULT_MAX_TARGETS: usize = 20_000;

/// A Prometheus file_sd target group: addresses plus labels (`peer` required, `network` optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    /// Shared with every peer entry made from this group (no copy per entry).
    #[serde(default)]
    pub labels: std::sync::Arc<crate::mesh::labels::LabelSet>,
}

/// A DNS name whose A and AAAA records are all peers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsPeer {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Where peers come from, and the bounds on what is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerSources {
    #[serde(rename = "static", skip_serializing_if = "Vec::is_empty")]
    pub static_groups: Vec<TargetGroup>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsPeer>,
    /// A peer file larger than this is refused without being read.
    pub max_file_bytes: u64,
    /// A peer file listing more addresses than this is refused.
    pub max_targets: usize,
    /// The config's top-level `allowed_targets` (empty = any): peers outside it are not probed.
    #[serde(skip)]
    pub allowed_targets: Vec<IpNet>,
}

impl Default for PeerSources {
    fn default() -> Self {
        PeerSources {
            static_groups: Vec::new(),
            files: Vec::new(),
            dns: Vec::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_targets: DEFAULT_MAX_TARGETS,
            allowed_targets: Vec::new(),
        }
    }
}

/// `mesh.histogram`: which RTT histogram the protobuf exposition carries. The text format
/// always carries the classic buckets (it cannot carry native ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistogramMode {
    /// Classic buckets only; no native histogram is kept.
    Classic,
    /// The native histogram only (classic buckets left out of protobuf).
    Native,
    /// Both in the same message, as client_golang sends them (the default).
    #[default]
    Both,
}

impl HistogramMode {
    /// Whether targets keep a native histogram.
    pub fn native(self) -> bool {
        self != HistogramMode::Classic
    }

    /// Whether the protobuf message carries the classic buckets.
    pub fn classic_in_protobuf(self) -> bool {
        self != HistogramMode::Native
    }
}

/// `mesh.strategy`: who probes whom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every peer (the default).
    #[default]
    Full,
    /// A full mesh inside each `group_by` group and k paths between every pair of groups
    /// (`crate::mesh::tiered`).
    Tiered,
}

/// `mesh.inter_group_series`: how results for peers outside this node's group are exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterGroupSeries {
    /// One series set per peer (the default).
    #[default]
    PerPeer,
    /// One series set per peer group: `peer` and `address` dropped, counters summed.
    PerGroup,
}

/// The fleet keys: strategy, grouping, paths, rotation and the series budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    pub strategy: Strategy,
    /// The peer label whose value is a peer's group (required by `tiered` and `per_group`).
    pub group_by: Option<String>,
    /// k: node-to-node paths per ordered pair of groups per interval.
    pub paths_between_groups: usize,
    /// How often the inter-group choices rotate (`None`: never).
    pub rotate_every: Option<Duration>,
    pub inter_group_series: InterGroupSeries,
}

/// The validated `mesh:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    pub interval: Duration,
    pub packets_per_interval: u32,
    pub payload_size: usize,
    pub timeout: Duration,
    pub networks: Vec<NetworkSelector>,
    pub buckets: Vec<f64>,
    pub histogram: HistogramMode,
    pub labels: BTreeMap<String, String>,
    pub peers: PeerSources,
    /// How often peer files are checked for changes and DNS names re-resolved.
    pub refresh_interval: Duration,
    pub fleet: Fleet,
    /// The `/mesh` page's heading (`mesh.title`); the host name when absent.
    pub title: Option<String>,
    /// `mesh.trace`: automatic path tracing.
    pub trace: TraceConfig,
}

/// Default histogram buckets: 25 µs doubling 20 times (25 µs … 13.1 s), so that data-centre
/// RTTs of tens of microseconds land in distinct buckets.
pub fn default_buckets() -> Vec<f64> {
    (0..20).map(|i| 25e-6 * f64::from(1u32 << i)).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMesh {
    interval: Option<String>,
    packets_per_interval: Option<i64>,
    payload_size: Option<i64>,
    timeout: Option<String>,
    networks: Option<Vec<String>>,
    buckets: Option<Vec<f64>>,
    histogram: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    peers: RawPeers,
    refresh_interval: Option<String>,
    strategy: Option<Strategy>,
    group_by: Option<String>,
    paths_between_groups: Option<i64>,
    rotate_every: Option<String>,
    inter_group_series: Option<InterGroupSeries>,
    title: Option<String>,
    #[serde(default)]
    trace: RawTrace,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPeers {
    #[serde(default, rename = "static")]
    static_groups: Vec<TargetGroup>,
    #[serde(default)]
    files: Vec<PathBuf>,
    #[serde(default)]
    dns: Vec<DnsPeer>,
    max_file_bytes: Option<u64>,
    max_targets: Option<usize>,
}

fn duration_field(
    field: &str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(text) => parse_go_duration(&text).map_err(|e| format!("field \"mesh.{field}\": {e}")),
    }
}

/// A valid Prometheus label name that does not start with `__`.
pub fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid label name"))
    }
}

/// A label name a peer entry may carry: valid, and none of [`SERIES_LABELS`].
pub fn check_peer_label_name(name: &str) -> Result<(), String> {
    check_label_name(name)?;
    if SERIES_LABELS.contains(&name) {
        return Err(format!(
            "label {name:?} is reserved: meshprobe's series carry it already (reserved: {}); \
             rename it",
            SERIES_LABELS.join(", ")
        ));
    }
    Ok(())
}

/// Checks one file_sd-style group: addresses only, `peer` label present, label names valid
/// and not reserved.
pub fn check_target_group(group: &TargetGroup) -> Result<(), String> {
    for target in &group.targets {
        target.parse::<IpAddr>().map_err(|_| {
            format!("target {target:?} is not an IP address (use mesh.peers.dns for names)")
        })?;
    }
    match group.labels.get("peer") {
        Some(peer) if !peer.is_empty() => {}
        _ => {
            return Err(format!(
                "target group {:?} has no \"peer\" label",
                group.targets
            ));
        }
    }
    for (name, _) in group.labels.iter() {
        check_peer_label_name(name)?;
    }
    Ok(())
}

/// The most probes one target may have waiting at once: a sixteenth of the 65 536 ICMP sequence
/// numbers of one (address, echo id), leaving the rest for `/probe` and other targets.
pub const MAX_IN_FLIGHT_PER_TARGET: u64 = 4096;

/// How many probes of one target can wait at once: ⌈timeout / (interval / packets)⌉.
pub fn in_flight_per_target(interval: Duration, packets: u32, timeout: Duration) -> u64 {
    let spacing = interval.as_nanos() / u128::from(packets.max(1));
    if spacing == 0 {
        return u64::MAX;
    }
    u64::try_from(timeout.as_nanos().div_ceil(spacing)).unwrap_or(u64::MAX)
}

impl RawMesh {
    pub(super) fn validate(self) -> Result<MeshConfig, String> {
        let interval = duration_field("interval", self.interval.clone(), Duration::from_secs(1))?;
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(3600) {
            return Err("field \"mesh.interval\": must be between 10ms and 1h".into());
        }
        let fleet = self.fleet(interval)?;
        let packets_per_interval = match self.packets_per_interval {
            None => 1,
            Some(n) if (1..=100).contains(&n) => n as u32,
            Some(n) => {
                return Err(format!(
                    "field \"mesh.packets_per_interval\": {n} is not between 1 and 100"
                ));
            }
        };
        let payload_size = match self.payload_size {
            None => 0,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_PAYLOAD_SIZE)
                .ok_or_else(|| {
                    format!(
                        "field \"mesh.payload_size\": {n} is out of range (0 to {MAX_PAYLOAD_SIZE})"
                    )
                })?,
        };
        let timeout = duration_field(
            "timeout",
            self.timeout,
            interval.min(Duration::from_secs(1)),
        )?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err("field \"mesh.timeout\": must be above 0 and at most 60s".into());
        }
        let in_flight = in_flight_per_target(interval, packets_per_interval, timeout);
        if in_flight > MAX_IN_FLIGHT_PER_TARGET {
            return Err(format!(
                "field \"mesh.timeout\": {} with {packets_per_interval} packets every {} leaves up \
                 to {in_flight} probes per target waiting at once; at most \
                 {MAX_IN_FLIGHT_PER_TARGET} fit the ICMP sequence space (shorten the timeout, or \
                 send fewer packets)",
                format_go_duration(timeout),
                format_go_duration(interval),
            ));
        }
        let networks = match self.networks {
            None => vec![NetworkSelector::All],
            Some(list) if list.is_empty() => {
                return Err("field \"mesh.networks\": must not be empty (use [all])".into());
            }
            Some(list) => list
                .iter()
                .map(|s| NetworkSelector::parse(s))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("field \"mesh.networks\": {e}"))?,
        };
        let buckets = self.buckets.unwrap_or_else(default_buckets);
        let increasing = buckets.windows(2).all(|w| w[0] < w[1]);
        if buckets.is_empty() || !increasing || buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
        {
            return Err(
                "field \"mesh.buckets\": must be positive, finite and strictly increasing".into(),
            );
        }
        let histogram = match self.histogram.as_deref() {
            None | Some("both") => HistogramMode::Both,
            Some("classic") => HistogramMode::Classic,
            Some("native") => HistogramMode::Native,
            Some(other) => {
                return Err(format!(
                    "field \"mesh.histogram\": {other:?} is not one of classic, native, both"
                ));
            }
        };
        for name in self.labels.keys() {
            check_peer_label_name(name).map_err(|e| format!("field \"mesh.labels\": {e}"))?;
            if RESERVED_LABELS.contains(&name.as_str()) {
                return Err(format!(
                    "field \"mesh.labels\": {name:?} is set by meshprobe itself"
                ));
            }
        }
        for (index, group) in self.peers.static_groups.iter().enumerate() {
            check_target_group(group)
                .map_err(|e| format!("field \"mesh.peers.static\": entry {}: {e}", index + 1))?;
        }
        for dns in &self.peers.dns {
            crate::resolve::check_target_syntax(&dns.name)
                .map_err(|e| format!("field \"mesh.peers.dns\": {e}"))?;
            // `peer` is optional here: it defaults to the DNS name.
            for name in dns.labels.keys() {
                check_peer_label_name(name)
                    .map_err(|e| format!("field \"mesh.peers.dns\": {e}"))?;
            }
        }
        let max_file_bytes = self.peers.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES);
        if max_file_bytes == 0 {
            return Err("field \"mesh.peers.max_file_bytes\": must be above 0".into());
        }
        let max_targets = self.peers.max_targets.unwrap_or(DEFAULT_MAX_TARGETS);
        if max_targets == 0 {
            return Err("field \"mesh.peers.max_targets\": must be above 0".into());
        }
        let refresh_interval = duration_field(
            "refresh_interval",
            self.refresh_interval,
            Duration::from_secs(5),
        )?;
        if refresh_interval < Duration::from_millis(100) {
            return Err("field \"mesh.refresh_interval\": must be at least 100ms".into());
        }
        let title = match self.title.map(|t| t.trim().to_string()) {
            Some(title) if title.is_empty() => None,
            Some(title) if title.chars().count() > 200 || title.contains(char::is_control) => {
                return Err(
                    "field \"mesh.title\": at most 200 characters, without control characters"
                        .into(),
                );
            }
            other => other,
        };
        Ok(MeshConfig {
            fleet,
            interval,
            packets_per_interval,
            payload_size,
            timeout,
            networks,
            buckets,
            histogram,
            labels: self.labels,
            peers: PeerSources {
                static_groups: self.peers.static_groups,
                files: self.peers.files,
                dns: self.peers.dns,
                max_file_bytes,
                max_targets,
                allowed_targets: Vec::new(),
            },
            refresh_interval,
            title,
            trace: self.trace.validate()?,
        })
    }
}

impl RawMesh {
    fn fleet(&self, interval: Duration) -> Result<Fleet, String> {
        let strategy = self.strategy.unwrap_or_default();
        let inter_group_series = self.inter_group_series.unwrap_or_default();
        if let Some(label) = &self.group_by {
            check_label_name(label).map_err(|e| format!("field \"mesh.group_by\": {e}"))?;
            if RESERVED_LABELS.contains(&label.as_str()) {
                return Err(format!(
                    "field \"mesh.group_by\": {label:?} is set by meshprobe itself"
                ));
            }
        } else if strategy == Strategy::Tiered || inter_group_series == InterGroupSeries::PerGroup {
            return Err(
                "field \"mesh.group_by\": required by strategy: tiered and \
                 inter_group_series: per_group (the peer label that names a peer's group, e.g. rack)"
                    .into(),
            );
        }
        let paths_between_groups = match self.paths_between_groups {
            None => 2,
            Some(k) if (1..=64).contains(&k) => k as usize,
            Some(k) => {
                return Err(format!(
                    "field \"mesh.paths_between_groups\": {k} is not between 1 and 64"
                ));
            }
        };
        let rotate_every = match &self.rotate_every {
            None => None,
            Some(text) => {
                let every = parse_go_duration(text)
                    .map_err(|e| format!("field \"mesh.rotate_every\": {e}"))?;
                if every < interval.max(Duration::from_secs(1)) {
                    return Err(
                        "field \"mesh.rotate_every\": must be at least 1s and one interval".into(),
                    );
                }
                Some(every)
            }
        };
        Ok(Fleet {
            strategy,
            group_by: self.group_by.clone(),
            paths_between_groups,
            rotate_every,
            inter_group_series,
        })
    }
}

/// The `/config` view of the mesh section.
#[derive(Serialize)]
pub(super) struct MeshView<'a> {
    interval: String,
    packets_per_interval: u32,
    payload_size: usize,
    timeout: String,
    networks: Vec<String>,
    buckets: &'a [f64],
    histogram: HistogramMode,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    peers: &'a PeerSources,
    refresh_interval: String,
    strategy: Strategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<&'a str>,
    paths_between_groups: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotate_every: Option<String>,
    inter_group_series: InterGroupSeries,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    trace: TraceView,
}

impl MeshConfig {
    pub(super) fn view(&self) -> MeshView<'_> {
        MeshView {
            interval: format_go_duration(self.interval),
            packets_per_interval: self.packets_per_interval,
            payload_size: self.payload_size,
            timeout: format_go_duration(self.timeout),
            networks: self.networks.iter().map(ToString::to_string).collect(),
            buckets: &self.buckets,
            histogram: self.histogram,
            labels: &self.labels,
            peers: &self.peers,
            refresh_interval: format_go_duration(self.refresh_interval),
            strategy: self.fleet.strategy,
            group_by: self.fleet.group_by.as_deref(),
            paths_between_groups: self.fleet.paths_between_groups,
            rotate_every: self.fleet.rotate_every.map(format_go_duration),
            inter_group_series: self.fleet.inter_group_series,
            title: self.title.as_deref(),
            trace: self.trace.view(),
        }
    }
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;

#[cfg(test)]
mod example_tests {
    use super::super::Config;

    #[test]
    fn shipped_examples_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("config/meshprobe.yml");
        let text = std::fs::read_to_string(&path).expect("config/meshprobe.yml");
        let config = Config::parse(&text, "config/meshprobe.yml").expect("example config is valid");
        assert!(config.mesh.is_some());
        let peers = root.join("config/peers.example.json");
        let text = std::fs::read_to_string(&peers).expect("config/peers.example.json");
        let limits = crate::mesh::peers::FileLimits {
            max_bytes: super::DEFAULT_MAX_FILE_BYTES,
            max_targets: super::DEFAULT_MAX_TARGETS,
        };
        let groups = crate::mesh::peers::parse_file_sd(text.as_bytes(), &peers, limits)
            .expect("example peers file is valid");
        assert_eq!(groups.len(), 3);
    }
}
