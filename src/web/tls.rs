//! rustls server settings from `tls_server_config`: the certificate and key (files or inline
//! PEM), the client certificate policy and CAs, protocol versions, cipher suites and key
//! exchange groups on rustls's ring provider (Go's names are mapped in `tls_names`).
//!
//! What rustls cannot do is refused with a reason instead of being ignored: TLS 1.0/1.1, Go
//! cipher suites and curves outside the ring provider, and `client_allowed_sans`. As in Go,
//! `cipher_suites` restricts the TLS 1.2 suites only; TLS 1.3 suites are always all enabled.
//! Every error message starts with the field it is about.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{NoClientAuth, ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};

use super::TlsFile;
use super::tls_names::{
    ClientAuth, FIELD, cipher_suites, kx_groups, parse_client_auth, parse_version,
};

/// A set, non-empty string field.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Reads PEM from `<field>_file` (relative to `dir`) or the inline `<field>`, never both.
fn pem_source(
    dir: &Path,
    file_field: &str,
    file: &Option<String>,
    inline_field: &str,
    inline: &Option<String>,
) -> Result<Option<(String, Vec<u8>)>, String> {
    match (set(file), set(inline)) {
        (Some(_), Some(_)) => Err(format!(
            "{FIELD}: set either {file_field} or {inline_field}, not both"
        )),
        (Some(file), None) => {
            let path: PathBuf = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| {
                format!("{FIELD}.{file_field}: cannot read {}: {e}", path.display())
            })?;
            Ok(Some((
                format!("{FIELD}.{file_field} ({})", path.display()),
                bytes,
            )))
        }
        (None, Some(text)) => Ok(Some((
            format!("{FIELD}.{inline_field}"),
            text.as_bytes().to_vec(),
        ))),
        (None, None) => Ok(None),
    }
}

fn certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Builds the rustls server config, or `None` when the section configures no TLS at all.
pub fn server_config(file: &TlsFile, dir: &Path) -> Result<Option<Arc<ServerConfig>>, String> {
    let enabled = [
        &file.cert_file,
        &file.cert,
        &file.key_file,
        &file.key,
        &file.client_ca_file,
        &file.client_ca,
        &file.client_auth_type,
    ]
    .into_iter()
    .any(|value| set(value).is_some());
    if !enabled {
        // exporter-toolkit silently serves plain HTTP here; a TLS setting without a certificate
        // is almost certainly a mistake, so say so.
        let stray = [
            ("min_version", set(&file.min_version).is_some()),
            ("max_version", set(&file.max_version).is_some()),
            ("cipher_suites", file.cipher_suites.is_some()),
            ("curve_preferences", file.curve_preferences.is_some()),
            ("client_allowed_sans", file.client_allowed_sans.is_some()),
        ];
        if let Some((name, _)) = stray.iter().find(|(_, present)| *present) {
            return Err(format!(
                "{FIELD}.{name} is set, but there is no cert_file or cert, so TLS is off; \
                 add a certificate and key or remove the setting"
            ));
        }
        return Ok(None);
    }

    // The settings first (cheap, and their errors are the most specific), then the files.
    let client_auth = parse_client_auth(file.client_auth_type.as_deref().unwrap_or(""))?;
    let min = parse_version("min_version", set(&file.min_version).unwrap_or("TLS12"))?;
    let max = parse_version("max_version", set(&file.max_version).unwrap_or("TLS13"))?;
    if min > max {
        return Err(format!(
            "{FIELD}: min_version TLS{min} is above max_version TLS{max}"
        ));
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, version)| version)
            .collect();
    let mut provider = ring::default_provider();
    if let Some(names) = &file.cipher_suites {
        provider.cipher_suites = cipher_suites(names)?;
        if max == 12 && !provider.cipher_suites.iter().any(|s| s.tls13().is_none()) {
            return Err(format!(
                "{FIELD}.cipher_suites: no TLS 1.2 suite listed, but max_version is TLS12"
            ));
        }
    }
    if let Some(names) = &file.curve_preferences {
        let groups = kx_groups(names)?;
        if !groups.is_empty() {
            provider.kx_groups = groups;
        }
    }
    let provider = Arc::new(provider);
    if file.client_allowed_sans.is_some() {
        return Err(format!(
            "{FIELD}.client_allowed_sans: not supported by meshprobe yet; restrict clients with \
             client_ca_file and RequireAndVerifyClientCert"
        ));
    }

    let cert = pem_source(dir, "cert_file", &file.cert_file, "cert", &file.cert)?;
    let key = pem_source(dir, "key_file", &file.key_file, "key", &file.key)?;
    let client_ca = pem_source(
        dir,
        "client_ca_file",
        &file.client_ca_file,
        "client_ca",
        &file.client_ca,
    )?;
    let (cert_what, cert_pem) =
        cert.ok_or_else(|| format!("{FIELD}: missing one of cert_file or cert"))?;
    let (key_what, key_pem) =
        key.ok_or_else(|| format!("{FIELD}: missing one of key_file or key"))?;
    let chain = certificates(&cert_what, &cert_pem)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!("{key_what}: no usable private key (PKCS#8, RSA or EC PEM block): {e}")
    })?;
    let verifier = client_verifier(client_auth, client_ca, &provider)?;

    let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{FIELD}: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|e| format!("{FIELD}: {cert_what} and {key_what} do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = file.prefer_server_cipher_suites.unwrap_or(true);
    Ok(Some(Arc::new(config)))
}

fn client_verifier(
    client_auth: ClientAuth,
    client_ca: Option<(String, Vec<u8>)>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let algorithms = provider.signature_verification_algorithms;
    let roots = match client_ca {
        None => None,
        Some((what, pem)) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certificates(&what, &pem)?);
            if added == 0 {
                return Err(format!("{what}: no usable CA certificate"));
            }
            Some(roots)
        }
    };
    match (client_auth, roots) {
        (ClientAuth::None, None) => Ok(Arc::new(NoClientAuth)),
        (ClientAuth::None, Some(_)) => Err(format!(
            "{FIELD}: client_ca_file (or client_ca) is set but client_auth_type is NoClientCert; \
             set client_auth_type, e.g. RequireAndVerifyClientCert"
        )),
        (ClientAuth::Request, _) => Ok(Arc::new(AnyClientCert {
            mandatory: false,
            algorithms,
        })),
        (ClientAuth::RequireAny, _) => Ok(Arc::new(AnyClientCert {
            mandatory: true,
            algorithms,
        })),
        (ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify, None) => Err(format!(
            "{FIELD}.client_auth_type: {client_auth:?} needs client_ca_file or client_ca to \
             verify client certificates against"
        )),
        (ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify, Some(roots)) => {
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            let builder = if client_auth == ClientAuth::VerifyIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| format!("{FIELD}.client_ca_file: {e}"))
        }
    }
}

/// Go's `RequestClientCert` / `RequireAnyClientCert`: any certificate is accepted without a
/// chain check, but the client must still prove it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_certificate_means_no_tls_unless_tls_settings_are_present() {
        let dir = Path::new("/nonexistent");
        assert!(matches!(server_config(&TlsFile::default(), dir), Ok(None)));
        let stray = TlsFile {
            min_version: Some("TLS13".into()),
            ..TlsFile::default()
        };
        assert!(
            server_config(&stray, dir)
                .unwrap_err()
                .contains("min_version")
        );
        let key_only = TlsFile {
            cert_file: Some("server.crt".into()),
            ..TlsFile::default()
        };
        let error = server_config(&key_only, dir).unwrap_err();
        assert!(
            error.contains("cert_file") && error.contains("/nonexistent/server.crt"),
            "{error}"
        );
        let both = TlsFile {
            cert_file: Some("a".into()),
            cert: Some("b".into()),
            ..TlsFile::default()
        };
        assert!(server_config(&both, dir).unwrap_err().contains("not both"));
    }
}
