//! Target syntax checks and address resolution with blackbox's protocol preference rules.
//!
//! Owns turning a `/probe` target string into one IP address: IP literals (IPv6 zones included)
//! resolve without any lookup; hostnames go through the system resolver (getaddrinfo, so
//! /etc/hosts and nsswitch apply) on [`crate::lookup`]'s bounded threads, bounded by the probe
//! deadline. Selection
//! follows blackbox_exporter: the first address of the preferred family in resolver order, else
//! (with fallback) the last address seen. Also owns blackbox's FNV-1a address hash.

use std::net::IpAddr;

use crate::icmp::Family;

/// One address to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub address: IpAddr,
    /// IPv6 interface index from a `%zone` suffix; 0 if none.
    pub scope_id: u32,
}

/// Checks that `target` can be a hostname or IP address at all, so that a typo gets a clear
/// 400 instead of a probe that quietly fails. Returns a message for the user on failure.
pub fn check_target_syntax(target: &str) -> Result<(), String> {
    const HINT: &str = "ICMP targets are bare hostnames or IP addresses";
    if target.len() > 253 + 16 {
        return Err(format!(
            "target is too long ({} bytes); {HINT}",
            target.len()
        ));
    }
    if split_zone(target).0.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if target.contains("://") || target.contains('/') {
        return Err(format!(
            "target {target:?} looks like a URL or a CIDR; {HINT}"
        ));
    }
    if target.starts_with('[') {
        return Err(format!(
            "target {target:?}: write IPv6 addresses without brackets; {HINT}"
        ));
    }
    if target.contains(':') {
        return Err(format!(
            "target {target:?} looks like host:port or a malformed IPv6 address; {HINT}"
        ));
    }
    let name = target.strip_suffix('.').unwrap_or(target);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("target {target:?} is not a valid hostname; {HINT}"));
    }
    for label in name.split('.') {
        let valid_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !valid_chars {
            return Err(format!(
                "target {target:?} is not a valid hostname (label {label:?}); {HINT}"
            ));
        }
    }
    Ok(())
}

/// Splits `fe80::1%eth0` into the address part and the zone.
fn split_zone(target: &str) -> (&str, Option<&str>) {
    match target.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (target, None),
    }
}

fn zone_index(zone: &str) -> Result<u32, String> {
    if let Ok(index) = zone.parse::<u32>() {
        return Ok(index);
    }
    let name = std::ffi::CString::new(zone).map_err(|_| format!("invalid zone {zone:?}"))?;
    crate::sys::interface_index(&name)
        .ok_or_else(|| format!("unknown interface {zone:?} in IPv6 zone"))
}

/// Resolves `target` to the single address blackbox would probe.
pub async fn resolve(
    target: &str,
    preferred: Family,
    fallback: bool,
) -> Result<ResolvedTarget, String> {
    let (address_part, zone) = split_zone(target);
    if let Ok(literal) = address_part.parse::<IpAddr>() {
        let address = literal.to_canonical();
        let scope_id = match (zone, address) {
            (Some(zone), IpAddr::V6(_)) => zone_index(zone)?,
            (Some(_), IpAddr::V4(_)) => {
                return Err(format!("address {target}: zones are only valid for IPv6"));
            }
            (None, _) => 0,
        };
        if !fallback && !family_matches(address, preferred) {
            return Err(format!("address {target}: no suitable address found"));
        }
        return Ok(ResolvedTarget { address, scope_id });
    }
    let addresses = crate::lookup::lookup_host(target)
        .await
        .map_err(|e| format!("lookup {target}: {e}"))?;
    select_address(target, &addresses, preferred, fallback).map(|address| ResolvedTarget {
        address,
        scope_id: 0,
    })
}

fn family_matches(address: IpAddr, protocol: Family) -> bool {
    matches!(
        (address, protocol),
        (IpAddr::V4(_), Family::V4) | (IpAddr::V6(_), Family::V6)
    )
}

/// blackbox's choice among resolver results (utils.go `chooseProtocol`).
pub fn select_address(
    target: &str,
    addresses: &[IpAddr],
    preferred: Family,
    fallback: bool,
) -> Result<IpAddr, String> {
    if let Some(address) = addresses.iter().find(|a| family_matches(**a, preferred)) {
        return Ok(*address);
    }
    if !fallback {
        return Err(format!("lookup {target}: no suitable address found"));
    }
    addresses
        .last()
        .copied()
        .ok_or_else(|| "unable to find ip; no fallback".to_string())
}

/// FNV-1a 32-bit over the 4- or 16-byte address, as blackbox's `probe_ip_addr_hash`.
pub fn address_hash(address: IpAddr) -> u32 {
    let bytes: Vec<u8> = match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_blackbox_vectors() {
        for (ip, hash) in [
            ("127.0.0.1", 3_668_918_509u32),
            ("8.8.8.8", 2_350_491_669),
            ("1.1.1.1", 357_429_369),
            ("::1", 1_751_717_746),
            ("2001:4860:4860::8888", 2_978_199_130),
        ] {
            assert_eq!(address_hash(ip.parse().unwrap()), hash, "{ip}");
        }
    }

    #[test]
    fn selection_follows_blackbox() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v4b: IpAddr = "198.18.0.2".parse().unwrap();
        let v6: IpAddr = "2001:2::1".parse().unwrap();
        assert_eq!(select_address("h", &[v4, v6], Family::V6, true), Ok(v6));
        assert_eq!(select_address("h", &[v4, v4b], Family::V6, true), Ok(v4b));
        assert!(select_address("h", &[v4], Family::V6, false).is_err());
        assert!(select_address("h", &[], Family::V4, true).is_err());
    }

    #[test]
    fn syntax_check_accepts_hosts_and_literals_and_explains_the_rest() {
        for good in [
            "198.18.0.1",
            "2001:2::1",
            "fe80::1%eth0",
            "example.com",
            "host_1.lan.",
            "a",
        ] {
            assert_eq!(check_target_syntax(good), Ok(()), "{good}");
        }
        for bad in [
            "http://x",
            "host:80",
            "[::1]",
            "a b",
            "",
            "a..b",
            "198.18.0.0/24",
            "x\u{0}y",
        ] {
            assert!(check_target_syntax(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn literals_respect_fallback() {
        let resolved = resolve("::ffff:198.18.0.1", Family::V6, true).await;
        assert_eq!(
            resolved.map(|r| r.address),
            Ok("198.18.0.1".parse().unwrap())
        );
        assert!(resolve("198.18.0.1", Family::V6, false).await.is_err());
        assert!(resolve("198.18.0.1%eth0", Family::V4, true).await.is_err());
    }
}
