//! The HTTP surface: `/probe`, `/metrics`, `/-/healthy`, `/-/reload`, `/config`, `/mesh`,
//! `/mesh.json` and the landing page.
//!
//! Owns request parsing and validation (every bad input gets a 4xx with a plain-text reason),
//! routing, and the accept loop on each listen address. Probing is delegated to [`crate::probe`],
//! exporter metrics to [`crate::self_metrics`], and configuration to [`crate::config::store`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::expo;
use crate::mesh::page::{self, html_escape};
use crate::mesh::view::mesh_off_json;
use crate::probe::{self, ProbeLog};
use crate::proto;
use crate::resolve;
use crate::web;
use crate::web::prefix::Routed;
use stream::ResponseBody;

mod metrics;
pub mod stream;

use metrics::{accepts_gzip, metrics_response, probe_protobuf, scrape_format};

type HttpResponse = Response<ResponseBody>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(ResponseBody::Whole(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn with_content_type(mut response: HttpResponse, content_type: &'static str) -> HttpResponse {
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serves on `listener` until the process exits, under the limits of [`web::limits`].
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    loop {
        let tls = || state.web.current().tls_enabled();
        let (stream, guard) = web::listener::accept(&listener, tls).await;
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let connection_state = Arc::clone(&state);
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move {
                    let guarded = web::guard(&state.web, request, |request| route(&state, request));
                    Ok::<_, Infallible>(guarded.await)
                }
            });
            // TLS (when configured) and the HTTP/1.1 connection itself.
            web::conn::serve_connection(stream, guard, &connection_state.web, service).await;
        });
    }
}

/// Parses a `--web.listen-address` value: `:9115`, `host:port`, `[v6]:port`.
pub fn parse_listen_address(text: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in listen address {text:?}"))?;
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port))]);
    }
    text.to_socket_addrs()
        .map(|addresses| addresses.collect())
        .map_err(|e| format!("invalid listen address {text:?}: {e}"))
}

async fn route(state: &Arc<AppState>, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path().to_string();
    let route = match state.routes.route(&path) {
        Routed::Route(route) => route,
        Routed::Redirect(location) => return redirect(location),
    };
    match route {
        "/probe" => handle_probe(state, &request).await,
        "/metrics" => metrics_response(state, &request).await,
        "/-/healthy" => text(StatusCode::OK, "Healthy"),
        "/-/reload" => handle_reload(state, request.method()),
        "/config" => text(StatusCode::OK, state.config.current().to_yaml()),
        "/logs" => logs_response(state, request.uri().query().unwrap_or("")),
        "/mesh" => mesh_response(state, &request, MeshFormat::Html).await,
        "/mesh.json" => mesh_response(state, &request, MeshFormat::Json).await,
        "/" => with_content_type(
            text(StatusCode::OK, landing_page(state)),
            "text/html; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// Which allow-list refused `address`: the top-level one, else the module's.
fn refusing_list(
    config: &crate::config::Config,
    module_name: &str,
    address: std::net::IpAddr,
) -> String {
    let top_level = &config.allowed_targets;
    if !top_level.is_empty() && !top_level.iter().any(|net| net.contains(&address)) {
        "the top-level allowed_targets".to_string()
    } else {
        format!("allowed_targets of module {module_name:?}")
    }
}

/// blackbox's answer outside the route prefix: 302 to the prefix.
fn redirect(location: &str) -> HttpResponse {
    let mut response = text(StatusCode::FOUND, "");
    if let Ok(value) = HeaderValue::from_str(location) {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, value);
    }
    response
}

/// `/logs?id=N`: the debug output of a probe in the history, with blackbox's answers for an id
/// that is not a number (500) or no longer kept (404).
fn logs_response(state: &AppState, query: &str) -> HttpResponse {
    let id = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "id")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let Ok(id) = id.parse::<u64>() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "Invalid probe id");
    };
    let Some(entry) = state.history.get(id) else {
        return text(StatusCode::NOT_FOUND, "Probe id not found");
    };
    let config = state.config.current();
    text(
        StatusCode::OK,
        debug_output(
            &entry.log_lines,
            &entry.metrics,
            &entry.module,
            config.modules.get(&entry.module),
        ),
    )
}

/// What `debug=true` answers and `/logs?id=N` shows, laid out as blackbox does.
fn debug_output(
    log_lines: &[String],
    metrics: &str,
    module_name: &str,
    module: Option<&crate::config::Module>,
) -> String {
    let module_yaml = match module {
        Some(module) => crate::config::Config {
            modules: [(module_name.to_string(), module.clone())].into(),
            allowed_targets: Vec::new(),
            mesh: None,
        }
        .to_yaml(),
        None => format!("module {module_name:?} is no longer configured\n"),
    };
    format!(
        "Logs for the probe:\n{}\n\n\n\nMetrics that would have been returned:\n{metrics}\n\n\n\nModule configuration:\n{module_yaml}",
        log_lines.join("\n")
    )
}

fn handle_reload(state: &AppState, method: &Method) -> HttpResponse {
    if method != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "This endpoint requires a POST request.\n",
        );
    }
    match reload_configs(state) {
        Ok(()) => text(StatusCode::OK, ""),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {error}\n"),
        ),
    }
}

/// Reloads the config file and the web config file (POST /-/reload and SIGHUP). Each keeps its
/// running version when its new file is bad; the errors are logged and returned.
pub fn reload_configs(state: &AppState) -> Result<(), String> {
    let mut errors = Vec::new();
    match state.config.reload() {
        Ok(outcome) => {
            tracing::info!(
                changed = matches!(outcome, crate::config::store::ReloadOutcome::Reloaded),
                "Reloaded config file"
            );
            state.mesh.reconfigure(state.config.current().mesh.clone());
        }
        Err(error) => {
            tracing::error!(%error, "Error reloading config");
            errors.push(error.to_string());
        }
    }
    match state.web.reload() {
        Ok(true) => tracing::info!("Reloaded web config file"),
        Ok(false) => {}
        Err(error) => {
            tracing::error!(%error, "Error reloading web config; keeping the running one");
            errors.push(error.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MeshFormat {
    Html,
    Json,
}

/// `/mesh` (the matrix page, `?group=<label>` groups its rows) and `/mesh.json`; 404 with an
/// explanation while mesh mode is off. Collected and rendered on the blocking pool, like
/// `/metrics`, so a large mesh never delays the sends.
async fn mesh_response(
    state: &Arc<AppState>,
    request: &Request<Incoming>,
    format: MeshFormat,
) -> HttpResponse {
    let mut group = None;
    for (key, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        if key == "group" && !value.is_empty() {
            if let Err(message) = crate::config::mesh::check_label_name(&value) {
                return text(StatusCode::BAD_REQUEST, format!("group: {message}\n"));
            }
            group = Some(value.into_owned());
        }
    }
    let state = Arc::clone(state);
    let gzip = accepts_gzip(request);
    let rendered = tokio::task::spawn_blocking(move || {
        let view = state.mesh.view();
        let (status, body) = match (format, view) {
            (MeshFormat::Html, Some(view)) => {
                (StatusCode::OK, page::render(&view, group.as_deref()))
            }
            (MeshFormat::Html, None) => (StatusCode::NOT_FOUND, page::mesh_off_page()),
            (MeshFormat::Json, Some(view)) => (StatusCode::OK, view.to_json().to_string()),
            (MeshFormat::Json, None) => (StatusCode::NOT_FOUND, mesh_off_json().to_string()),
        };
        // A 400-target page is ~360 KB of repetitive markup; gzip shrinks it about tenfold.
        match gzip.then(|| gzip_bytes(body.as_bytes())).flatten() {
            Some(compressed) => (status, Bytes::from(compressed), true),
            None => (status, Bytes::from(body), false),
        }
    })
    .await;
    let (status, body, compressed) = match rendered {
        Ok(rendered) => rendered,
        Err(error) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot render the mesh view: {error}\n"),
            );
        }
    };
    let mut response = text(status, body);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if compressed {
        headers.insert(
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    match format {
        MeshFormat::Html => {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(
                hyper::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
            );
        }
        MeshFormat::Json => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    response
}

fn gzip_bytes(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// The query parameters `/probe` understands.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProbeQuery {
    pub target: Option<String>,
    pub module: Option<String>,
    pub debug: bool,
    /// What `--probe.strict` refuses and blackbox lets pass: conflicting duplicates (the first
    /// value wins, as Go's `Query().Get`) and `debug=` other than true/false (not debug).
    pub problems: Vec<String>,
}

/// Parses the `/probe` query string as blackbox does: the first value of each parameter wins and
/// only `debug=true` turns debug output on. What a strict server refuses is in `problems`.
pub fn parse_probe_query(query: &str) -> ProbeQuery {
    let mut parsed = ProbeQuery::default();
    let mut debug: Option<String> = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "target" => &mut parsed.target,
            "module" => &mut parsed.module,
            "debug" => &mut debug,
            _ => continue,
        };
        match slot {
            Some(existing) if *existing != value => parsed.problems.push(format!(
                "parameter {key:?} is given twice with different values ({existing:?} and {value:?})"
            )),
            Some(_) => {}
            None => *slot = Some(value.into_owned()),
        }
    }
    match debug.as_deref() {
        Some("true") => parsed.debug = true,
        None | Some("false" | "") => {}
        Some(other) => parsed.problems.push(format!(
            "debug must be \"true\" or \"false\", not {other:?}"
        )),
    }
    parsed
}

async fn handle_probe(state: &AppState, request: &Request<Incoming>) -> HttpResponse {
    let query = parse_probe_query(request.uri().query().unwrap_or(""));
    let strict = state.probe_options.strict_requests;
    if let (true, Some(problem)) = (strict, query.problems.first()) {
        return text(StatusCode::BAD_REQUEST, format!("{problem}\n"));
    }
    for problem in &query.problems {
        tracing::debug!(problem = %problem, "Lenient /probe request (blackbox semantics; --probe.strict refuses it)");
    }
    let config = state.config.current();
    let module_name = query.module.as_deref().unwrap_or("http_2xx");
    let Some(module) = config.modules.get(module_name) else {
        state
            .counters
            .module_unknown
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(module = module_name, "Unknown module");
        return text(
            StatusCode::BAD_REQUEST,
            format!("Unknown module {module_name:?}\n"),
        );
    };
    let header = request
        .headers()
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .map(|value| value.to_str().unwrap_or("<not text>"));
    let timeout = match probe::probe_timeout(module.timeout, header, state.timeout_offset) {
        Ok(timeout) => timeout,
        Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    if let Err(message) = probe::check_burst_budget(module, timeout) {
        return text(StatusCode::BAD_REQUEST, format!("{message}\n"));
    }
    let target = match query.target.as_deref() {
        None | Some("") => return text(StatusCode::BAD_REQUEST, "Target parameter is missing\n"),
        Some(target) => target,
    };
    if !module.is_icmp() {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "prober {:?} is not supported by meshprobe (module {module_name:?}); only icmp modules can be probed\n",
                module.prober
            ),
        );
    }
    let invalid_target = match resolve::check_target_syntax(target) {
        Ok(()) => None,
        Err(message) if strict => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
        Err(message) => Some(message),
    };
    let Some(_slot) = state.counters.try_start_probe(state.max_concurrent_probes) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many concurrent probes (limit {}); retry later or raise --probe.max-concurrency\n",
                state.max_concurrent_probes
            ),
        );
    };
    let mut log = ProbeLog::new(query.debug || state.history.enabled(), module_name, target);
    let is_allowed = |address| config.allows(module, address);
    let probed = match invalid_target {
        // blackbox's lookup fails on these; answer the same way without looking anything up.
        Some(problem) => Ok(probe::invalid_target(target, &problem, timeout, &mut log)),
        None => {
            probe::run_icmp_probe(
                &state.pinger,
                target,
                module,
                timeout,
                &is_allowed,
                &mut log,
            )
            .await
        }
    };
    let outcome = match probed {
        Ok(outcome) => outcome,
        Err(refused) => {
            state.counters.count_not_allowed();
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "target {target:?}: address {} is not in {}\n",
                    refused.address,
                    refusing_list(&config, module_name, refused.address)
                ),
            );
        }
    };
    state.counters.count_probe(outcome.success);
    let metrics = probe::render(&outcome, state.probe_options);
    let body = query
        .debug
        .then(|| debug_output(log.lines(), &metrics, module_name, Some(module)));
    if state.history.enabled() {
        let lines = log.take_lines();
        state
            .history
            .add(module_name, target, outcome.success, lines, metrics.clone());
    }
    match body {
        Some(body) => text(StatusCode::OK, body),
        None if scrape_format(request) == proto::Format::Protobuf => {
            probe_protobuf(&metrics, accepts_gzip(request))
        }
        None => with_content_type(text(StatusCode::OK, metrics), expo::CONTENT_TYPE),
    }
}

fn landing_page(state: &AppState) -> String {
    let config = state.config.current();
    let link = |route: &str| html_escape(&state.routes.link(route));
    let modules: String = config
        .modules
        .iter()
        .map(|(name, module)| {
            format!(
                "<li><code>{}</code> ({})</li>",
                html_escape(name),
                html_escape(&module.prober)
            )
        })
        .collect();
    let recent: String = state
        .history
        .recent()
        .into_iter()
        .map(|(id, module, target, success)| {
            let result = if success { "Success" } else { "<strong>Failure</strong>" };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{result}</td><td><a href=\"{}?id={id}\">Logs</a></td></tr>",
                html_escape(&module),
                html_escape(&target),
                link("/logs"),
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>meshprobe</title></head><body>\
         <h1>meshprobe</h1><p>blackbox_exporter-compatible ICMP exporter, version {}</p>\
         <ul><li><a href=\"{}?target=127.0.0.1&amp;module=icmp&amp;debug=true\">Debug probe</a></li>\
         <li><a href=\"{}\">Metrics</a></li><li><a href=\"{}\">Mesh matrix</a></li><li><a href=\"{}\">Configuration</a></li>\
         <li><a href=\"{}\">Health</a></li></ul>\
         <h2>Modules from {}</h2><ul>{modules}</ul>\
         <h2>Recent Probes</h2><table border=\"1\"><tr><th>Module</th><th>Target</th><th>Result</th><th>Debug</th></tr>{recent}</table>\
         </body></html>\n",
        env!("CARGO_PKG_VERSION"),
        link("/probe"),
        link("/metrics"),
        link("/mesh"),
        link("/config"),
        link("/-/healthy"),
        html_escape(&state.config.source_name()),
    )
}

#[cfg(test)]
mod tests;
