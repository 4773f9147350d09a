//! One accepted connection: plain HTTP, or TLS when the web config in force has a certificate,
//! then served by hyper's HTTP/1.1, all under the connection's watchdog from [`super::limits`]
//! (header and idle timeouts, eviction).
//!
//! Owns the TLS handshake (which must end within the header timeout of the accept) and what a
//! plain-HTTP client gets on a TLS listener: the first byte of a TLS connection is a handshake record (0x16); anything else is
//! answered with Go's `400 Client sent an HTTP request to an HTTPS server.` and closed gently
//! (write, shut down, drain briefly), so the client reads the answer instead of a reset.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::WebStore;
use super::limits::{ConnGuard, Tracked, TrackedService};

/// The TLS record type of a handshake message, the first byte of every TLS connection.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What Go's net/http answers to plain HTTP on a TLS listener.
pub const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves one connection with `service`, over TLS when the current web config says so, until
/// it ends or `guard`'s watchdog closes it.
pub async fn serve_connection<S, B>(stream: TcpStream, guard: ConnGuard, web: &WebStore, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    let handshake_deadline = guard.header_deadline();
    let client = stream.peer_addr().ok().map(|a| a.ip().to_canonical());
    let stream = Tracked::new(stream, guard.state());
    let service = TrackedService::new(service, guard.state(), client);
    guard
        .watch(serve_stream(stream, handshake_deadline, web, service))
        .await;
}

async fn serve_stream<S, B>(
    stream: Tracked<TcpStream>,
    handshake_deadline: Instant,
    web: &WebStore,
    service: S,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    match web.current().tls_acceptor().cloned() {
        None => serve_http(stream, service).await,
        // Boxed: a TLS connection's state (rustls' connection, the handshake) is several KiB,
        // and inline it would make every plain connection's task that large too (12 KiB
        // instead of 2 at c = 1024 connections: 10 MiB of RSS).
        Some(acceptor) => Box::pin(serve_tls(stream, handshake_deadline, acceptor, service)).await,
    }
}

/// [`serve_stream`] over TLS: the first byte must start a handshake, which must end by
/// `handshake_deadline`.
async fn serve_tls<S, B>(
    stream: Tracked<TcpStream>,
    handshake_deadline: Instant,
    acceptor: tokio_rustls::TlsAcceptor,
    service: S,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    let peer = stream
        .get_ref()
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let mut first = [0u8; 1];
    match timeout_at(handshake_deadline, stream.get_ref().peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            tracing::debug!(%peer, "plain HTTP request on a TLS listener");
            answer_plain_http(stream).await;
            return;
        }
        // Closed before sending anything, an error, or silence.
        _ => return,
    }
    match timeout_at(handshake_deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_http(tls, service).await,
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_http<I, S, B>(io: I, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Scrape requests are small: an 8 KiB buffer cap keeps 1000+ open connections cheap.
    if let Err(error) = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(8192)
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

/// Writes Go's 400 and closes without a reset: closing a socket with unread input makes the
/// kernel send RST, which can destroy the answer before the client reads it.
async fn answer_plain_http(mut stream: Tracked<TcpStream>) {
    if stream.write_all(PLAIN_HTTP_ANSWER).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(Duration::from_secs(2), drain).await;
}
