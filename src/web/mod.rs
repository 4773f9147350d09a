//! The web configuration (`--web.config.file`, exporter-toolkit's `web-config.yml`): TLS, basic
//! auth and extra response headers, for every listener and every endpoint.
//!
//! This module owns the file model and its validation ([`WebConfig::parse`]: YAML in, a ready
//! [`WebConfig`] or a [`WebConfigError`] naming the file and the field out; unknown keys are
//! errors), the reloadable [`WebStore`], and [`guard`], which applies the rate limit, basic auth,
//! meshprobe's default security headers and the extra headers to each request. rustls settings live in [`tls`] (Go's setting names in
//! `tls_names`), basic auth in [`auth`], the per-connection transport (TLS or plain, the
//! answer to plain HTTP on a TLS port) in [`conn`], connection limits and timeouts in
//! [`limits`], binding and accepting in [`listener`], and the route prefix in [`prefix`].

pub mod auth;
pub mod conn;
pub mod limits;
pub mod listener;
pub mod prefix;
pub mod rate_limit;
pub mod tls;
mod tls_names;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response};
use serde::Deserialize;

use self::auth::{BasicAuth, Verdict};
use self::limits::ClientAddr;
use self::rate_limit::{RateLimiter, RawRateLimit, too_many_requests};

/// A web config problem, naming the file and (in the message) the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("web config file {file}: {message}")]
pub struct WebConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<RawHttpConfig>,
    basic_auth_users: Option<BTreeMap<String, Option<String>>>,
    rate_limit: Option<RawRateLimit>,
}

/// `tls_server_config` as written in the file; [`tls::server_config`] turns it into rustls's.
/// Empty strings mean "not set", as in exporter-toolkit.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_ca_file: Option<String>,
    pub client_ca: Option<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Option<Vec<String>>,
    pub curve_preferences: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub client_allowed_sans: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttpConfig {
    /// Accepted for compatibility and ignored: meshprobe serves HTTP/1.1 only.
    #[serde(rename = "http2")]
    _http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The response headers exporter-toolkit lets a web config set, with the values allowed where
/// the header is an enumeration (empty = any value).
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Sent on every response unless the web config sets the header itself: no MIME sniffing, and
/// HTML pages (the landing page, `/mesh`) may not be framed by another site (clickjacking).
const DEFAULT_HEADERS: [(&str, &str, bool); 2] = [
    ("x-content-type-options", "nosniff", false),
    ("x-frame-options", "deny", true),
];

/// A loaded, validated web configuration. The default serves plain HTTP with no auth.
#[derive(Default)]
pub struct WebConfig {
    tls: Option<tokio_rustls::TlsAcceptor>,
    headers: Vec<(HeaderName, HeaderValue)>,
    auth: Option<BasicAuth>,
    rate_limit: Option<Arc<RateLimiter>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers)
            .field("basic_auth_users", &self.basic_auth_users())
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl WebConfig {
    /// Parses and validates a web config. Relative file names in `tls_server_config` are
    /// resolved against the directory of `path`, as exporter-toolkit does; certificates, keys
    /// and CAs are read and checked now.
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let error = |message: String| WebConfigError {
            file: path.display().to_string(),
            message,
        };
        let raw: RawWebConfig = if text.lines().all(is_blank_or_comment) {
            RawWebConfig::default()
        } else {
            // No source snippets in errors: they could quote an inline private key into logs.
            let mut options = serde_saphyr::Options::default();
            options.with_snippet = false;
            serde_saphyr::from_str_with_options(text, options)
                .map_err(|e| error(format!("error parsing YAML: {e}")))?
        };
        let rate_limit = match &raw.rate_limit {
            Some(raw_limit) => RateLimiter::from_raw(raw_limit).map_err(error)?,
            None => None,
        };
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let tls = match &raw.tls_server_config {
            Some(file) => tls::server_config(file, dir).map_err(error)?,
            None => None,
        };
        let headers = match raw.http_server_config.and_then(|http| http.headers) {
            Some(headers) => validate_headers(&headers).map_err(error)?,
            None => Vec::new(),
        };
        let auth = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => Some(BasicAuth::new(users).map_err(error)?),
            _ => None,
        };
        Ok(WebConfig {
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            headers,
            auth,
            rate_limit: rate_limit.map(Arc::new),
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| WebConfigError {
            file: path.display().to_string(),
            message: format!("error reading file: {e}"),
        })?;
        WebConfig::parse(&text, path)
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS acceptor for new connections, when TLS is on.
    pub fn tls_acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    pub fn basic_auth_users(&self) -> usize {
        self.auth.as_ref().map_or(0, BasicAuth::user_count)
    }
}

fn is_blank_or_comment(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#') || line == "---"
}

fn validate_headers(
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let field = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = EXTRA_HEADERS
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
        else {
            let known: Vec<&str> = EXTRA_HEADERS.iter().map(|(known, _)| *known).collect();
            return Err(format!(
                "{field}: this header can not be configured; allowed: {}",
                known.join(", ")
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "{field}: invalid value {value:?}; expected one of {allowed:?}"
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("{field}: {value:?} is not a valid header value"))?;
        let name = HeaderName::from_bytes(canonical.as_bytes())
            .map_err(|_| format!("{field}: not a valid header name"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The web config in force, reloadable with the main config.
pub struct WebStore {
    path: Option<PathBuf>,
    current: ArcSwap<WebConfig>,
}

impl WebStore {
    /// Loads `path`, or plain HTTP without auth when `None`.
    pub fn load(path: Option<PathBuf>) -> Result<WebStore, WebConfigError> {
        let config = match &path {
            Some(path) => WebConfig::load(path)?,
            None => WebConfig::default(),
        };
        Ok(WebStore {
            path,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// A store that never has TLS or auth (no `--web.config.file`).
    pub fn disabled() -> WebStore {
        WebStore {
            path: None,
            current: ArcSwap::from_pointee(WebConfig::default()),
        }
    }

    pub fn current(&self) -> Arc<WebConfig> {
        self.current.load_full()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-reads the file (and the certificates it names, which may have been renewed); keeps
    /// the current config if the new one is invalid. Returns whether there is a file at all.
    pub fn reload(&self) -> Result<bool, WebConfigError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let mut config = WebConfig::load(path)?;
        // The same rate_limit settings keep their bucket, or every reload would refill it.
        if let (Some(new), Some(old)) = (&config.rate_limit, &self.current().rate_limit)
            && new.same_settings(old)
        {
            config.rate_limit = Some(Arc::clone(old));
        }
        self.current.store(Arc::new(config));
        Ok(true)
    }
}

/// Runs `handler` for `request` if the rate limit and basic auth (when configured) let it
/// through; answers 429 (rate limit, or too many pending password checks) or 401 otherwise.
/// Adds the default security headers, then the configured extra headers (which win).
pub async fn guard<B, F, Fut, ResBody>(
    web: &WebStore,
    request: Request<B>,
    handler: F,
) -> Response<ResBody>
where
    F: FnOnce(Request<B>) -> Fut,
    Fut: Future<Output = Response<ResBody>>,
    ResBody: From<Full<Bytes>>,
{
    let config = web.current();
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
    let limited = config.rate_limit.as_ref().is_some_and(|l| !l.allow());
    let verdict = match &config.auth {
        _ if limited => None,
        Some(auth) => Some(auth.check(request.headers(), client).await),
        None => Some(Verdict::Allowed),
    };
    let mut response = match verdict {
        None => too_many_requests("Too Many Requests\n").map(ResBody::from),
        Some(Verdict::Busy) => {
            too_many_requests("Too many password checks in progress; retry shortly\n")
                .map(ResBody::from)
        }
        Some(Verdict::Denied) => auth::unauthorized().map(ResBody::from),
        Some(Verdict::Allowed) => handler(request).await,
    };
    let headers = response.headers_mut();
    let html = headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    for (name, value, html_only) in DEFAULT_HEADERS {
        if html || !html_only {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    for (name, value) in &config.headers {
        headers.insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests;
