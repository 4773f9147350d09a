//! The charm's data: a unit's shared networks (as published in the peer bag), the charm config,
//! and the validation of everything a peer can put in its bag.
//!
//! Owns the canonical JSON of the `networks` key and the rules that make a peer's data usable:
//! bounded size, valid addresses and CIDRs that contain them, sane interface names. Untrusted
//! input never panics and never fails a hook; it yields a reason the status can name.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mesh::plan::{LocalNetwork, NetworkSelector};

/// Largest `networks` value accepted from a peer (bytes).
pub const MAX_NETWORKS_JSON: usize = 64 * 1024;
/// Most networks accepted from one peer.
pub const MAX_NETWORKS: usize = 256;

/// One entry of a unit's `networks` key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedNetwork {
    // Field order = sort order = canonical JSON key order (alphabetical).
    pub address: IpAddr,
    pub cidr: IpNet,
    pub interface: String,
}

impl SharedNetwork {
    pub fn from_local(local: &LocalNetwork) -> SharedNetwork {
        SharedNetwork {
            address: local.address,
            cidr: local.network,
            interface: local.interface.clone(),
        }
    }

    pub fn to_local(&self) -> LocalNetwork {
        LocalNetwork {
            interface: self.interface.clone(),
            address: self.address,
            network: self.cidr,
            space: None,
        }
    }
}

/// Canonical JSON for a list of networks: sorted by (cidr, address), keys sorted, no spaces.
pub fn networks_json(networks: &[SharedNetwork]) -> String {
    let mut sorted = networks.to_vec();
    sorted.sort_by_key(|n| (n.cidr, n.address));
    sorted.dedup();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".into())
}

/// Parses and checks a peer's `networks` value.
pub fn parse_networks(text: &str) -> Result<Vec<SharedNetwork>, String> {
    if text.len() > MAX_NETWORKS_JSON {
        return Err(format!(
            "networks is {} bytes (limit {MAX_NETWORKS_JSON})",
            text.len()
        ));
    }
    let networks: Vec<SharedNetwork> =
        serde_json::from_str(text).map_err(|e| format!("networks is not valid JSON: {e}"))?;
    if networks.len() > MAX_NETWORKS {
        return Err(format!(
            "{} networks (limit {MAX_NETWORKS})",
            networks.len()
        ));
    }
    for network in &networks {
        if !network.cidr.contains(&network.address) {
            return Err(format!(
                "address {} is not in {}",
                network.address, network.cidr
            ));
        }
        let valid_interface = !network.interface.is_empty()
            && network.interface.len() <= 15
            && network.interface.bytes().all(|b| b.is_ascii_graphic());
        if !valid_interface {
            return Err(format!("invalid interface name {:?}", network.interface));
        }
    }
    Ok(networks)
}

/// Checks a peer's `exporter` value (`address:port`).
pub fn parse_exporter(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "exporter {:?} is not address:port",
            text.chars().take(64).collect::<String>()
        )
    })
}

/// The charm's validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharmConfig {
    pub mode: Mode,
    pub networks: Vec<String>,
    pub interval: String,
    pub modules: String,
    pub port: u16,
    pub allowed_targets: Vec<String>,
    /// `group`: empty (full mesh), `availability-zone` (`JUJU_AVAILABILITY_ZONE`), or a literal
    /// group name for this application's units.
    #[serde(default)]
    pub group: String,
    /// `paths-between-groups`: k of the tiered plan.
    #[serde(default = "default_paths")]
    pub paths_between_groups: usize,
}

fn default_paths() -> usize {
    2
}

/// The `group` value that means "this unit's Juju availability zone".
pub const GROUP_BY_ZONE: &str = "availability-zone";

/// A group name shared in the peer bag: 1 to 64 printable ASCII characters.
pub fn check_group(text: &str) -> Result<(), String> {
    if !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "group {:?} is not 1 to 64 printable characters",
            text.chars().take(64).collect::<String>()
        ))
    }
}

/// `mode` config option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Mesh,
    Probe,
    Both,
}

impl Mode {
    pub fn mesh(self) -> bool {
        matches!(self, Mode::Mesh | Mode::Both)
    }
    pub fn probe(self) -> bool {
        matches!(self, Mode::Probe | Mode::Both)
    }
}

fn list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_str)
        .unwrap_or("")
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl CharmConfig {
    /// Validates `config-get` output; errors are shown as a blocked status.
    pub fn from_values(values: &BTreeMap<String, Value>) -> Result<CharmConfig, String> {
        let mode = match values.get("mode").and_then(Value::as_str).unwrap_or("mesh") {
            "mesh" => Mode::Mesh,
            "probe" => Mode::Probe,
            "both" => Mode::Both,
            other => return Err(format!("mode {other:?} is not mesh, probe or both")),
        };
        let mut networks = list(values.get("networks"));
        if networks.is_empty() {
            networks.push("all".into());
        }
        for selector in &networks {
            NetworkSelector::parse(selector).map_err(|e| format!("networks: {e}"))?;
        }
        let interval = values
            .get("interval")
            .and_then(Value::as_str)
            .unwrap_or("1s")
            .to_string();
        crate::config::duration::parse_go_duration(&interval)
            .map_err(|e| format!("interval: {e}"))?;
        let port = match values.get("port") {
            None => 9115,
            Some(value) => value
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {value} is not between 1 and 65535"))?,
        };
        let allowed_targets = list(values.get("allowed-targets"));
        for cidr in &allowed_targets {
            cidr.parse::<IpNet>()
                .map(|_| ())
                .or_else(|_| cidr.parse::<IpAddr>().map(|_| ()))
                .map_err(|_| format!("allowed-targets: {cidr:?} is not a CIDR"))?;
        }
        let group = values
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string();
        if !group.is_empty() {
            check_group(&group)?;
        }
        let paths_between_groups = match values.get("paths-between-groups") {
            None => 2,
            Some(value) => value
                .as_u64()
                .filter(|k| (1..=64).contains(k))
                .map(|k| k as usize)
                .ok_or_else(|| format!("paths-between-groups {value} is not between 1 and 64"))?,
        };
        Ok(CharmConfig {
            group,
            paths_between_groups,
            mode,
            networks,
            interval,
            modules: values
                .get("modules")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            port,
            allowed_targets,
        })
    }

    /// This unit's group: `None` without grouping; the zone (or `""` when Juju gives none) for
    /// `availability-zone`; the literal otherwise.
    pub fn own_group(&self, availability_zone: Option<&str>) -> Option<String> {
        match self.group.as_str() {
            "" => None,
            GROUP_BY_ZONE => Some(availability_zone.unwrap_or("").to_string()),
            literal => Some(literal.to_string()),
        }
    }

    /// The tiered plan's k, when grouping is on.
    pub fn tier_paths(&self) -> Option<usize> {
        (!self.group.is_empty()).then_some(self.paths_between_groups)
    }

    pub fn selectors(&self) -> Vec<NetworkSelector> {
        self.networks
            .iter()
            .filter_map(|s| NetworkSelector::parse(s).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_json_is_canonical_and_round_trips() {
        let a = SharedNetwork {
            address: "198.18.20.5".parse().unwrap(),
            cidr: "198.18.20.0/24".parse().unwrap(),
            interface: "eth1".into(),
        };
        let b = SharedNetwork {
            address: "198.18.10.5".parse().unwrap(),
            cidr: "198.18.10.0/24".parse().unwrap(),
            interface: "eth0".into(),
        };
        let text = networks_json(&[a.clone(), b.clone()]);
        assert_eq!(
            text,
            r#"[{"address":"198.18.10.5","cidr":"198.18.10.0/24","interface":"eth0"},{"address":"198.18.20.5","cidr":"198.18.20.0/24","interface":"eth1"}]"#
        );
        assert_eq!(networks_json(&[b.clone(), a.clone()]), text);
        assert_eq!(parse_networks(&text), Ok(vec![b, a]));
    }

    #[test]
    fn garbage_from_peers_is_refused_with_a_reason() {
        let cases = [
            ("not json", "not valid JSON"),
            (
                r#"[{"address":"10.0.0.5","cidr":"10.0.0.0/33","interface":"eth0"}]"#,
                "not valid JSON",
            ),
            (
                r#"[{"address":"10.1.0.5","cidr":"10.0.0.0/24","interface":"eth0"}]"#,
                "is not in",
            ),
            (
                r#"[{"address":"10.0.0.5","cidr":"10.0.0.0/24"}]"#,
                "not valid JSON",
            ),
            (
                r#"[{"address":"10.0.0.5","cidr":"10.0.0.0/24","interface":""}]"#,
                "interface",
            ),
            (r#"{"address":"10.0.0.5"}"#, "not valid JSON"),
        ];
        for (text, reason) in cases {
            let error = parse_networks(text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
        let huge = format!(
            "[{}]",
            vec![r#"{"address":"10.0.0.5","cidr":"10.0.0.0/24","interface":"eth0"}"#; 2000]
                .join(",")
        );
        assert!(parse_networks(&huge).is_err());
        assert!(parse_exporter("10.0.0.5:9115").is_ok());
        assert!(parse_exporter("garbage").is_err());
    }

    #[test]
    fn config_validation() {
        let values = |pairs: &[(&str, Value)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let config = CharmConfig::from_values(&values(&[
            ("mode", Value::from("both")),
            ("networks", Value::from("198.18.0.0/16, eth1")),
            ("port", Value::from(9200)),
        ]))
        .expect("valid");
        assert_eq!(config.mode, Mode::Both);
        assert_eq!(config.networks, ["198.18.0.0/16", "eth1"]);
        assert_eq!(config.port, 9200);
        for bad in [
            values(&[("mode", Value::from("mush"))]),
            values(&[("networks", Value::from("198.18.0.0/40"))]),
            values(&[("port", Value::from(70000))]),
            values(&[("interval", Value::from("5"))]),
            values(&[("allowed-targets", Value::from("nonsense"))]),
            values(&[("group", Value::from("has space"))]),
            values(&[("paths-between-groups", Value::from(0))]),
        ] {
            assert!(CharmConfig::from_values(&bad).is_err());
        }
    }
}
