//! `/metrics` responses: the exporter's own families and the mesh, as text or, when Prometheus
//! asks for it with native histograms on, as the protobuf exposition, both streamed (and gzip'd
//! when the scraper accepts it) through [`super::stream`]; and the protobuf form of a `/probe`
//! answer. Negotiation and encoding only: what the families contain is `self_metrics` and
//! `mesh`.

use super::stream::{self, ResponseBody};
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
/// The body is streamed ([`stream::render_streamed`]): rendered on the blocking pool in 64 KiB
/// chunks and compressed chunk by chunk as the client takes them, so the runtime thread keeps
/// sending probes on time, and a scrape holds a few chunks, never the whole body. The bytes are
/// the same as a whole render's; the response is chunked instead of carrying a length.
pub(super) async fn metrics_response(
    state: &Arc<AppState>,
    request: &Request<Incoming>,
) -> HttpResponse {
    let gzip = accepts_gzip(request);
    let format = scrape_format(request);
    let state = Arc::clone(state);
    let body = stream::render_streamed(gzip, move |sink| match format {
        proto::Format::Text => {
            crate::self_metrics::render_text(&state, &mut |chunk| sink.send_text(chunk))
        }
        proto::Format::Protobuf => {
            crate::self_metrics::render_protobuf(&state, &mut |chunk| sink.send_bytes(chunk))
        }
    })
    .await;
    let content_type = match format {
        proto::Format::Text => expo::CONTENT_TYPE,
        proto::Format::Protobuf => proto::CONTENT_TYPE,
    };
    let mut response = Response::new(ResponseBody::Streamed(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if gzip {
        headers.insert(
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    response
}

// ---- Protobuf exposition (native histograms): negotiation and encoding only. ----

/// The exposition format a scrape of `/metrics` or `/probe` asked for in its `Accept` header,
/// read as client_golang's promhttp reads it ([`proto::negotiate`]).
pub(super) fn scrape_format(request: &Request<Incoming>) -> proto::Format {
    let accept = request.headers().get(hyper::header::ACCEPT);
    proto::negotiate(accept.and_then(|value| value.to_str().ok()))
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
