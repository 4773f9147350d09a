//! The configuration file model: blackbox's `modules:` with their `icmp` settings, validated.
//!
//! This module owns parsing and validation only: YAML text in, a [`Config`] or a [`ConfigError`]
//! naming the file, module and field out. Unknown keys are errors (as in blackbox's
//! `KnownFields(true)`); http/tcp/dns/grpc/unix/websocket modules load but are marked unsupported.
//! Loading from disk and reloading live in [`store`]; Go durations in [`duration`]; the `mesh:`
//! section in [`mesh`], and its network selectors in [`network`]; error wording and locations in
//! `diagnostics`. Address families are
//! [`crate::icmp::Family`], spelled `ip4`/`ip6` as blackbox does ([`ip_protocol_name`]).

pub mod burst;
mod diagnostics;
pub mod duration;
pub mod mesh;
pub mod mesh_trace;
pub mod network;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::icmp::Family;
use crate::icmp::packet::MAX_PAYLOAD_SIZE;

/// The configuration used when no `--config.file` is given.
pub const EMBEDDED_CONFIG: &str = include_str!("../../config/default.yml");
/// The name under which the embedded configuration is reported.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// The probers blackbox knows. Only `icmp` runs here; the rest load and are refused at `/probe`.
const KNOWN_PROBERS: [&str; 7] = ["http", "tcp", "icmp", "dns", "grpc", "unix", "websocket"];

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub modules: BTreeMap<String, Module>,
    /// meshprobe extension: targets any module may probe (empty = any).
    pub allowed_targets: Vec<IpNet>,
    /// Mesh mode runs whenever this section is present.
    pub mesh: Option<mesh::MeshConfig>,
}

/// One `modules:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    pub prober: String,
    /// Module timeout; zero means "use the scrape timeout minus the offset".
    pub timeout: Duration,
    pub icmp: IcmpSettings,
}

impl Module {
    pub fn is_icmp(&self) -> bool {
        self.prober == "icmp"
    }
}

/// blackbox's spelling of an address family in `preferred_ip_protocol`: `ip4` or `ip6`.
pub fn ip_protocol_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip4",
        Family::V6 => "ip6",
    }
}

fn serialize_ip_protocol<S: serde::Serializer>(
    family: &Family,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(ip_protocol_name(*family))
}

/// The `icmp:` block of a module, with blackbox's defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IcmpSettings {
    /// The family a module prefers (`preferred_ip_protocol`, written `ip4`/`ip6`).
    #[serde(serialize_with = "serialize_ip_protocol")]
    pub preferred_ip_protocol: Family,
    pub ip_protocol_fallback: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<IpAddr>,
    pub payload_size: usize,
    pub dont_fragment: bool,
    pub ttl: u8,
    /// meshprobe extension: targets this module may probe (empty = any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_targets: Vec<IpNet>,
    /// meshprobe extension: several echo requests per probe (one by default).
    #[serde(flatten)]
    pub burst: burst::Burst,
}

impl Default for IcmpSettings {
    fn default() -> Self {
        IcmpSettings {
            preferred_ip_protocol: Family::V6,
            ip_protocol_fallback: true,
            source_ip_address: None,
            payload_size: 0,
            dont_fragment: false,
            ttl: 64,
            allowed_targets: Vec::new(),
            burst: burst::Burst::default(),
        }
    }
}

/// A configuration problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config file {file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    modules: BTreeMap<String, RawModule>,
    #[serde(default)]
    allowed_targets: Vec<String>,
    mesh: Option<mesh::RawMesh>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// Other probers' blocks are accepted so a blackbox.yml loads, and never read.
struct RawModule {
    prober: Option<String>,
    #[serde(default, deserialize_with = "go_duration_field")]
    timeout: Option<Duration>,
    icmp: Option<RawIcmp>,
    #[serde(rename = "http")]
    _http: Option<IgnoredAny>,
    #[serde(rename = "tcp")]
    _tcp: Option<IgnoredAny>,
    #[serde(rename = "dns")]
    _dns: Option<IgnoredAny>,
    #[serde(rename = "grpc")]
    _grpc: Option<IgnoredAny>,
    #[serde(rename = "unix")]
    _unix: Option<IgnoredAny>,
    #[serde(rename = "websocket")]
    _websocket: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIcmp {
    preferred_ip_protocol: Option<String>,
    ip_protocol_fallback: Option<bool>,
    source_ip_address: Option<String>,
    payload_size: Option<i64>,
    dont_fragment: Option<bool>,
    ttl: Option<i64>,
    #[serde(default)]
    allowed_targets: Vec<String>,
    packets: Option<i64>,
    packet_interval: Option<String>,
    min_received: Option<i64>,
}

/// Accepts a Go duration string, or the integer 0 (as yaml.v3 does for `time.Duration`).
fn go_duration_field<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a Go duration such as \"5s\" or \"1m30s\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            duration::parse_go_duration(text)
                .map(Some)
                .map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            if value == 0 {
                Ok(Some(Duration::ZERO))
            } else {
                Err(E::custom(format!(
                    "{value} has no unit; write a Go duration such as \"{value}s\""
                )))
            }
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            self.visit_i64(i64::try_from(value).unwrap_or(i64::MAX))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(DurationVisitor)
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Config {
        match Config::parse(EMBEDDED_CONFIG, EMBEDDED_NAME) {
            Ok(config) => config,
            // The embedded file is checked by a unit test, so this cannot happen in a release.
            Err(error) => panic!("embedded default config is invalid: {error}"),
        }
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            file: file.to_string(),
            message,
        };
        if text.trim().is_empty() {
            return Err(error(
                "the file is empty; it needs a modules: section".into(),
            ));
        }
        let problems = match serde_saphyr::from_str::<RawConfig>(text) {
            Ok(raw) => match validate(raw, text, file) {
                Ok(config) => return Ok(config),
                Err(problems) => problems,
            },
            Err(e) => {
                // The parser's errors, then the validation problems of the rest of the file.
                let report = diagnostics::parse_report::<RawConfig>(text, file, &e);
                let mut problems = report.problems;
                if let Some((raw, repaired)) = report.repaired
                    && let Err(more) = validate(raw, &repaired, file)
                {
                    problems.extend(more);
                }
                problems
            }
        };
        let heading = match problems.len() {
            1 => String::new(),
            count => format!("{count} problems:\n"),
        };
        Err(error(format!("{heading}{}", problems.join("\n"))))
    }

    /// A YAML dump of the effective configuration, defaults filled in (the `/config` page).
    pub fn to_yaml(&self) -> String {
        #[derive(Serialize)]
        struct ModuleView<'a> {
            prober: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            timeout: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            icmp: Option<&'a IcmpSettings>,
        }
        #[derive(Serialize)]
        struct ConfigView<'a> {
            modules: BTreeMap<&'a str, ModuleView<'a>>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            allowed_targets: &'a Vec<IpNet>,
            #[serde(skip_serializing_if = "Option::is_none")]
            mesh: Option<mesh::MeshView<'a>>,
        }
        let view = ConfigView {
            allowed_targets: &self.allowed_targets,
            mesh: self.mesh.as_ref().map(mesh::MeshConfig::view),
            modules: self
                .modules
                .iter()
                .map(|(name, module)| {
                    let view = ModuleView {
                        prober: &module.prober,
                        timeout: (!module.timeout.is_zero())
                            .then(|| duration::format_go_duration(module.timeout)),
                        icmp: module.is_icmp().then_some(&module.icmp),
                    };
                    (name.as_str(), view)
                })
                .collect(),
        };
        serde_saphyr::to_string(&view).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Validates a parsed file: the [`Config`], or every problem, each with `file:line:` when found.
fn validate(raw: RawConfig, text: &str, file: &str) -> Result<Config, Vec<String>> {
    // Every validation problem, not just the first.
    let mut problems = Vec::new();
    let mut modules = BTreeMap::new();
    for (name, raw_module) in raw.modules {
        match validate_module(&name, raw_module) {
            Ok(module) => {
                modules.insert(name, module);
            }
            Err(message) => {
                let line = diagnostics::locate(text, &["modules", &name], &message);
                problems.push(diagnostics::at_line(
                    file,
                    line,
                    format!("module {name:?}: {message}"),
                ));
            }
        }
    }
    let allowed_targets = parse_networks(&raw.allowed_targets)
        .map_err(|message| {
            let line = diagnostics::locate(text, &["allowed_targets"], "");
            let message = format!("field \"allowed_targets\": {message}");
            problems.push(diagnostics::at_line(file, line, message));
        })
        .unwrap_or_default();
    let mut mesh = match raw.mesh.map(|raw_mesh| raw_mesh.validate()) {
        Some(Ok(mesh)) => Some(mesh),
        Some(Err(message)) => {
            let line = diagnostics::locate(text, &["mesh"], &message);
            problems.push(diagnostics::at_line(file, line, message));
            None
        }
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    // The top-level allow-list applies to mesh peers too.
    if let Some(mesh) = &mut mesh {
        mesh.peers.allowed_targets = allowed_targets.clone();
    }
    Ok(Config {
        modules,
        allowed_targets,
        mesh,
    })
}

/// Parses CIDRs (or bare addresses, meaning one host) for `allowed_targets`.
fn parse_networks(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!("{entry:?} is not a CIDR such as 198.18.0.0/15 or an IP address")
                })
        })
        .collect()
}

impl Config {
    /// Whether `module` may probe `address` under the global and the module's `allowed_targets`.
    pub fn allows(&self, module: &Module, address: IpAddr) -> bool {
        let within = |nets: &[IpNet]| nets.is_empty() || nets.iter().any(|n| n.contains(&address));
        within(&self.allowed_targets) && within(&module.icmp.allowed_targets)
    }
}

fn validate_module(name: &str, raw: RawModule) -> Result<Module, String> {
    let _ = name;
    let prober = raw
        .prober
        .ok_or_else(|| "field \"prober\" is missing (use prober: icmp)".to_string())?;
    if !KNOWN_PROBERS.contains(&prober.as_str()) {
        return Err(format!(
            "field \"prober\": prober {prober:?} is not valid (valid: {})",
            KNOWN_PROBERS.join(", ")
        ));
    }
    let timeout = raw.timeout.unwrap_or(Duration::ZERO);
    let icmp = match raw.icmp {
        Some(raw_icmp) => validate_icmp(raw_icmp, timeout)?,
        None => IcmpSettings::default(),
    };
    Ok(Module {
        prober,
        timeout,
        icmp,
    })
}

fn validate_icmp(raw: RawIcmp, module_timeout: Duration) -> Result<IcmpSettings, String> {
    let mut settings = IcmpSettings {
        burst: burst::Burst::validate(
            raw.packets,
            raw.packet_interval.as_deref(),
            raw.min_received,
            module_timeout,
        )?,
        ..IcmpSettings::default()
    };
    if let Some(protocol) = raw.preferred_ip_protocol {
        settings.preferred_ip_protocol = match protocol.as_str() {
            "" | "ip6" => Family::V6,
            "ip4" => Family::V4,
            other => {
                return Err(format!(
                    "field \"icmp.preferred_ip_protocol\": {other:?} is not valid (use \"ip4\" or \"ip6\")"
                ));
            }
        };
    }
    if let Some(fallback) = raw.ip_protocol_fallback {
        settings.ip_protocol_fallback = fallback;
    }
    if let Some(source) = raw.source_ip_address.filter(|s| !s.is_empty()) {
        let parsed: IpAddr = source.parse().map_err(|_| {
            format!("field \"icmp.source_ip_address\": {source:?} is not an IP address")
        })?;
        settings.source_ip_address = Some(parsed.to_canonical());
    }
    if let Some(size) = raw.payload_size {
        settings.payload_size = usize::try_from(size)
            .ok()
            .filter(|size| *size <= MAX_PAYLOAD_SIZE)
            .ok_or_else(|| {
                format!(
                    "field \"icmp.payload_size\": {size} is out of range (0 to {MAX_PAYLOAD_SIZE}; 0 means the 28-byte default)"
                )
            })?;
    }
    settings.allowed_targets = parse_networks(&raw.allowed_targets)
        .map_err(|message| format!("field \"icmp.allowed_targets\": {message}"))?;
    if let Some(dont_fragment) = raw.dont_fragment {
        settings.dont_fragment = dont_fragment;
    }
    if let Some(ttl) = raw.ttl {
        if ttl < 0 {
            return Err("field \"icmp.ttl\": \"ttl\" cannot be negative".into());
        }
        settings.ttl = u8::try_from(ttl)
            .map_err(|_| "field \"icmp.ttl\": \"ttl\" cannot exceed 255".to_string())?;
    }
    Ok(settings)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
