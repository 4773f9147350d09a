//! Network selectors: the vocabulary of `mesh.networks` (and of the charm's `networks` option)
//! for choosing which local networks the mesh probes on: `all`, `routed`, a CIDR, `space:NAME`
//! or an interface name.
//!
//! Owns parsing (with errors that say what is accepted), the canonical spelling, and matching
//! against a network described by its parts. It knows nothing of how networks are discovered or
//! planned: `mesh::plan` matches selectors against its `LocalNetwork`s with
//! `NetworkSelector::matches_network`, which it defines on top of [`NetworkSelector::matches`].

use std::fmt;

use ipnet::IpNet;

/// The selector (and `network` label) of peers reached through the routing table.
pub const ROUTED: &str = "routed";

/// Which local networks to probe on (`mesh.networks`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkSelector {
    /// Every shared network and `routed`.
    All,
    /// Peers on no shared network, reached through the routing table.
    Routed,
    Cidr(IpNet),
    Interface(String),
    Space(String),
}

impl NetworkSelector {
    /// Parses `all`, a CIDR, `space:NAME`, or an interface name.
    pub fn parse(text: &str) -> Result<NetworkSelector, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty network selector".into());
        }
        if text == "all" {
            return Ok(NetworkSelector::All);
        }
        if text == ROUTED {
            return Ok(NetworkSelector::Routed);
        }
        if let Some(space) = text.strip_prefix("space:") {
            return Ok(NetworkSelector::Space(space.to_string()));
        }
        if text.contains('/') {
            return text
                .parse::<IpNet>()
                .map(|net| NetworkSelector::Cidr(net.trunc()))
                .map_err(|_| format!("{text:?} is not a valid CIDR"));
        }
        let valid_interface = text.len() <= 15
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        if valid_interface {
            Ok(NetworkSelector::Interface(text.to_string()))
        } else {
            Err(format!(
                "{text:?} is neither \"all\", \"routed\", a CIDR, \"space:NAME\" nor an interface name"
            ))
        }
    }

    /// Whether this selector picks a local network: the `network` (a CIDR with host bits
    /// cleared) on `interface`, in Juju space `space` if known. A CIDR selector picks networks
    /// that overlap it either way (inside it, or containing it).
    pub fn matches(&self, interface: &str, network: &IpNet, space: Option<&str>) -> bool {
        match self {
            NetworkSelector::All => true,
            NetworkSelector::Routed => false,
            NetworkSelector::Cidr(cidr) => {
                cidr.contains(&network.network()) || network.contains(&cidr.network())
            }
            NetworkSelector::Interface(name) => interface == name,
            NetworkSelector::Space(name) => space == Some(name.as_str()),
        }
    }
}

impl NetworkSelector {
    /// Whether this selector picks addresses reached through the routing table.
    pub fn matches_routed(&self) -> bool {
        matches!(self, NetworkSelector::All | NetworkSelector::Routed)
    }
}

impl fmt::Display for NetworkSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkSelector::All => f.write_str("all"),
            NetworkSelector::Routed => f.write_str(ROUTED),
            NetworkSelector::Cidr(cidr) => write!(f, "{cidr}"),
            NetworkSelector::Interface(name) => f.write_str(name),
            NetworkSelector::Space(space) => write!(f, "space:{space}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_parsing_explains_errors() {
        assert_eq!(NetworkSelector::parse("all"), Ok(NetworkSelector::All));
        assert!(NetworkSelector::parse("198.18.0.0/33").is_err());
        assert!(NetworkSelector::parse("").is_err());
        assert!(NetworkSelector::parse("not an interface").is_err());
        assert_eq!(
            NetworkSelector::parse("198.18.0.9/24").map(|s| s.to_string()),
            Ok("198.18.0.0/24".into())
        );
    }

    #[test]
    fn selectors_match_by_overlap_interface_or_space() {
        let net: IpNet = "198.18.0.0/24".parse().expect("cidr");
        let pick = |text: &str, space: Option<&str>| {
            NetworkSelector::parse(text)
                .expect("selector")
                .matches("eth1", &net, space)
        };
        assert!(pick("all", None));
        assert!(pick("198.18.0.0/16", None));
        assert!(pick("198.18.0.128/25", None));
        assert!(!pick("198.19.0.0/16", None));
        assert!(pick("eth1", None));
        assert!(!pick("eth0", None));
        assert!(pick("space:internal", Some("internal")));
        assert!(!pick("space:internal", Some("public")));
        assert!(!pick("space:internal", None));
    }
}
