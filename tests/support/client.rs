//! The tests' HTTP/1.1 client (one `Connection: close` exchange, chunked bodies decoded) and the
//! Prometheus text-format parser they assert on. Plain std sockets, so a call works from a thread
//! that entered a network namespace.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// A response from the exporter.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// One HTTP/1.1 exchange with `Connection: close` on 127.0.0.1:`port`.
pub fn http_exchange(port: u16, request: &str) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// One exchange that keeps the body as bytes (protobuf, gzip): (head, body).
pub fn http_exchange_raw(port: u16, request: &str) -> std::io::Result<(String, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    split_response(&raw)
}

/// (head, body) of a raw response, the body de-chunked when it was sent chunked.
fn split_response(raw: &[u8]) -> std::io::Result<(String, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "malformed response: {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((head, dechunk_bytes(body)?));
    }
    Ok((head, body.to_vec()))
}

/// A chunked body's content (streamed responses such as `/metrics` are chunked); an error if
/// it breaks off before the last chunk.
fn dechunk_bytes(mut body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| std::io::Error::other("chunked body ends without its last chunk"))?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size_text:?}")))?;
        let rest = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(std::io::Error::other("chunked body cut short"));
        }
        out.extend_from_slice(&rest[..size]);
        body = &rest[size + 2..];
    }
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let (head, body) = split_response(raw)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(HttpResponse {
        status,
        headers: head.to_string(),
        body,
    })
}

/// A parsed text exposition: samples by full series name, plus HELP and TYPE per family.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    pub help: BTreeMap<String, String>,
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                metrics.help.insert(name.into(), help.into());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                metrics.types.insert(name.into(), kind.into());
            } else if !line.is_empty() && !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').expect("sample line");
                let value = match value {
                    "NaN" => f64::NAN,
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v
                        .parse()
                        .unwrap_or_else(|_| panic!("bad value in {line:?}")),
                };
                metrics.samples.insert(series.into(), value);
            }
        }
        metrics
    }

    /// The value of a series, panicking with the whole exposition if it is missing.
    pub fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("series {series} missing from {:#?}", self.samples))
    }

    pub fn has(&self, series: &str) -> bool {
        self.samples.contains_key(series)
    }

    /// Label-name sets per family, e.g. {"probe_icmp_duration_seconds": {["phase"]}}.
    pub fn label_names(&self) -> BTreeMap<String, std::collections::BTreeSet<Vec<String>>> {
        let mut out: BTreeMap<String, std::collections::BTreeSet<Vec<String>>> = BTreeMap::new();
        for series in self.samples.keys() {
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series.as_str(), ""),
            };
            let mut names: Vec<String> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
                .collect();
            names.sort();
            out.entry(name.to_string()).or_default().insert(names);
        }
        out
    }
}
