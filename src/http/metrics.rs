//! `/metrics` responses: the exporter's own families and the mesh, as text (streamed into gzip
//! when the scraper accepts it) or, when Prometheus asks for it with native histograms on, as the
//! protobuf exposition; and the protobuf form of a `/probe` answer. Negotiation and encoding
//! only: what the families contain is `self_metrics` and `mesh`.

use super::*;

/// Whether the client sent `Accept-Encoding: gzip`.
pub(super) fn accepts_gzip(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(hyper::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|e| e.trim().split(';').next() == Some("gzip"))
        })
}

/// `/metrics`, gzip-compressed when the client accepts it (Prometheus always does): a large
/// mesh's exposition shrinks about twentyfold.
///
/// Rendering (and compressing) a large mesh takes tens of milliseconds, so it runs on the blocking
/// pool: the runtime thread keeps sending probes on time meanwhile.
pub(super) async fn metrics_response(
    state: &Arc<AppState>,
    request: &Request<Incoming>,
) -> HttpResponse {
    let accepts_gzip = accepts_gzip(request);
    let format = scrape_format(request);
    let state = Arc::clone(state);
    let encode = move || match format {
        proto::Format::Text => encode_metrics(&state, accepts_gzip),
        proto::Format::Protobuf => encode_metrics_protobuf(&state, accepts_gzip),
    };
    match tokio::task::spawn_blocking(encode).await {
        Ok(response) => response,
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {error}\n"),
        ),
    }
}

pub(super) fn encode_metrics(state: &AppState, accepts_gzip: bool) -> HttpResponse {
    use std::io::Write;
    if !accepts_gzip {
        let body = crate::self_metrics::render(state);
        let response = with_content_type(text(StatusCode::OK, body), expo::CONTENT_TYPE);
        crate::mesh::runner::release_memory();
        return response;
    }
    // Compress as the text is produced: only one 64 KiB chunk of text exists at a time.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut failed = false;
    let rest = crate::self_metrics::render_streaming(state, &mut |chunk: &mut String| {
        failed |= encoder.write_all(chunk.as_bytes()).is_err();
        chunk.clear();
    });
    failed |= encoder.write_all(rest.as_bytes()).is_err();
    let compressed = match encoder.finish() {
        Ok(compressed) if !failed => compressed,
        _ => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot compress metrics\n",
            );
        }
    };
    crate::mesh::runner::release_memory();
    let mut response = with_content_type(text(StatusCode::OK, compressed), expo::CONTENT_TYPE);
    response.headers_mut().insert(
        hyper::header::CONTENT_ENCODING,
        HeaderValue::from_static("gzip"),
    );
    response
}

// ---- Protobuf exposition (native histograms): negotiation and encoding only. ----

/// The exposition format a scrape of `/metrics` or `/probe` asked for in its `Accept` header,
/// read as client_golang's promhttp reads it ([`proto::negotiate`]).
pub(super) fn scrape_format(request: &Request<Incoming>) -> proto::Format {
    let accept = request.headers().get(hyper::header::ACCEPT);
    proto::negotiate(accept.and_then(|value| value.to_str().ok()))
}

/// `/metrics` as protobuf, compressed as it is produced when the client accepts gzip.
pub(super) fn encode_metrics_protobuf(state: &AppState, accepts_gzip: bool) -> HttpResponse {
    use std::io::Write;
    let body = if accepts_gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut failed = false;
        let rest = crate::self_metrics::render_protobuf(state, &mut |chunk: &mut Vec<u8>| {
            failed |= encoder.write_all(chunk).is_err();
            chunk.clear();
        });
        failed |= encoder.write_all(&rest).is_err();
        match encoder.finish() {
            Ok(compressed) if !failed => compressed,
            _ => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot compress metrics\n",
                );
            }
        }
    } else {
        let mut body = Vec::new();
        let rest = crate::self_metrics::render_protobuf(state, &mut |chunk: &mut Vec<u8>| {
            body.append(chunk);
        });
        body.extend_from_slice(&rest);
        body
    };
    crate::mesh::runner::release_memory();
    protobuf_response(body, accepts_gzip)
}

/// A protobuf body (already gzip-compressed if `gzipped`) with client_golang's content type.
pub(super) fn protobuf_response(body: Vec<u8>, gzipped: bool) -> HttpResponse {
    let mut response = with_content_type(text(StatusCode::OK, body), proto::CONTENT_TYPE);
    if gzipped {
        response.headers_mut().insert(
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    response
}

/// `/probe`'s text output as protobuf: the same samples, gzip-compressed when accepted.
pub(super) fn probe_protobuf(metrics: &str, accepts_gzip: bool) -> HttpResponse {
    let mut body = Vec::new();
    for family in proto::from_text::families(metrics) {
        proto::write_family(&mut body, &family);
    }
    match accepts_gzip.then(|| gzip_bytes(&body)).flatten() {
        Some(compressed) => protobuf_response(compressed, true),
        None => protobuf_response(body, false),
    }
}

// ---- end of protobuf exposition ----
