//! exporter-toolkit's (that is, Go's) names for TLS settings, mapped onto rustls's ring
//! provider: `client_auth_type`, `min_version`/`max_version`, `cipher_suites` and
//! `curve_preferences`. Names Go knows but rustls cannot serve (TLS 1.0/1.1, CBC, RSA key
//! exchange, P-521) are refused with that reason; typos are refused as unknown.

use tokio_rustls::rustls::SupportedCipherSuite;
use tokio_rustls::rustls::crypto::{SupportedKxGroup, ring};

pub const FIELD: &str = "tls_server_config";

/// exporter-toolkit's `client_auth_type` values (and the old alias `RequireClientCert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Request,
    RequireAny,
    VerifyIfGiven,
    RequireAndVerify,
}

pub fn parse_client_auth(value: &str) -> Result<ClientAuth, String> {
    Ok(match value {
        "" | "NoClientCert" => ClientAuth::None,
        "RequestClientCert" => ClientAuth::Request,
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAny,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        other => {
            return Err(format!(
                "{FIELD}.client_auth_type: unknown value {other:?}; expected NoClientCert, \
                 RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                 RequireAndVerifyClientCert"
            ));
        }
    })
}

/// Parses `min_version`/`max_version` into 12 or 13.
pub fn parse_version(field: &str, value: &str) -> Result<u8, String> {
    match value {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err(format!(
            "{FIELD}.{field}: {value} is not supported: meshprobe's TLS library (rustls) speaks \
             only TLS12 and TLS13"
        )),
        other => Err(format!(
            "{FIELD}.{field}: unknown TLS version {other:?}; expected TLS12 or TLS13"
        )),
    }
}

/// rustls's TLS 1.2 suites under Go's names (`tls.CipherSuites()`), plus Go's old aliases.
fn tls12_suite(name: &str) -> Option<SupportedCipherSuite> {
    use ring::cipher_suite::*;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// Go's TLS 1.3 suite names: accepted and, as in Go, without effect.
const TLS13_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Go suites that rustls does not implement (CBC, RSA key exchange, RC4, 3DES).
fn is_go_only_suite(name: &str) -> bool {
    name.starts_with("TLS_")
        && (name.contains("_CBC_") || name.contains("_RC4_") || name.starts_with("TLS_RSA_WITH_"))
}

pub fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, String> {
    let field = format!("{FIELD}.cipher_suites");
    let mut suites: Vec<SupportedCipherSuite> = ring::ALL_CIPHER_SUITES
        .iter()
        .filter(|suite| suite.tls13().is_some())
        .copied()
        .collect();
    for name in names {
        if let Some(suite) = tls12_suite(name) {
            if !suites.contains(&suite) {
                suites.push(suite);
            }
        } else if !TLS13_NAMES.contains(&name.as_str()) {
            let why = if is_go_only_suite(name) {
                "is not supported by rustls (no CBC, RC4, 3DES or RSA key exchange)"
            } else {
                "is not a known cipher suite"
            };
            return Err(format!(
                "{field}: {name:?} {why}; TLS 1.2 suites available: \
                 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, \
                 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, \
                 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            ));
        }
    }
    Ok(suites)
}

pub fn kx_groups(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    names
        .iter()
        .map(|name| match name.as_str() {
            "X25519" => Ok(ring::kx_group::X25519),
            "CurveP256" => Ok(ring::kx_group::SECP256R1),
            "CurveP384" => Ok(ring::kx_group::SECP384R1),
            "CurveP521" => Err(format!(
                "{FIELD}.curve_preferences: CurveP521 is not supported by rustls; use X25519, \
                 CurveP256 or CurveP384"
            )),
            other => Err(format!(
                "{FIELD}.curve_preferences: unknown curve {other:?}; expected X25519, CurveP256 \
                 or CurveP384"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_names() {
        assert_eq!(parse_version("min_version", "TLS13"), Ok(13));
        let old = parse_version("min_version", "TLS10").unwrap_err();
        assert!(old.contains("tls_server_config.min_version") && old.contains("rustls"));
        assert!(parse_version("max_version", "TLS1.3").is_err());
        assert_eq!(
            parse_client_auth("RequireClientCert"),
            Ok(ClientAuth::RequireAny)
        );
        assert!(parse_client_auth("requireandverifyclientcert").is_err());
    }

    #[test]
    fn cipher_suites_map_go_names() {
        let suites = cipher_suites(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()]).unwrap();
        let tls12: Vec<_> = suites.iter().filter(|s| s.tls13().is_none()).collect();
        assert_eq!(tls12.len(), 1);
        assert_eq!(suites.iter().filter(|s| s.tls13().is_some()).count(), 3);
        let cbc = cipher_suites(&["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into()]).unwrap_err();
        assert!(cbc.contains("not supported by rustls"), "{cbc}");
        let typo = cipher_suites(&["TLS_FOO".into()]).unwrap_err();
        assert!(typo.contains("not a known cipher suite"), "{typo}");
        assert!(cipher_suites(&["TLS_AES_128_GCM_SHA256".into()]).is_ok());
    }

    #[test]
    fn curves() {
        assert_eq!(
            kx_groups(&["X25519".into(), "CurveP384".into()])
                .unwrap()
                .len(),
            2
        );
        assert!(
            kx_groups(&["CurveP521".into()])
                .unwrap_err()
                .contains("CurveP521")
        );
        assert!(kx_groups(&["P256".into()]).is_err());
    }
}
