//! The listening sockets: binding with a backlog sized for bursts, and accepting under the
//! connection limits of [`super::limits`].
//!
//! Owns [`bind`] (std's listener has a backlog of 128, which a burst of Prometheus scrapes or
//! probes overflows into SYN retries a second later) and [`accept`]: a connection the limits
//! refuse gets a fixed 503 (plain HTTP) or is just closed (TLS), without reading from it; an
//! accept error such as EMFILE backs off (5 ms doubling to 1 s) instead of spinning, and is
//! logged at most once every 10 s with the number of errors since. It does no HTTP.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::limits::{self, ConnGuard};

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn` (4096 by default
/// since Linux 5.4).
pub const LISTEN_BACKLOG: i32 = 4096;
/// What a refused plain-HTTP connection is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 50\r\n\r\n\
too many open connections (--web.max-connections)\n";
/// Accept errors are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Binds a non-blocking listener with a [`LISTEN_BACKLOG`] backlog. `:port` (the unspecified
/// IPv6 address) falls back to IPv4 where IPv6 is unavailable.
pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    match bind_exact(address) {
        Err(error) if address.ip().is_unspecified() && address.is_ipv6() => {
            bind_exact(SocketAddr::from(([0, 0, 0, 0], address.port()))).map_err(|_| error)
        }
        result => result,
    }
}

fn bind_exact(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // As std does, so a restarted exporter can bind while old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts the next connection the limits admit. `tls` says whether the listener speaks TLS
/// now (a refused TLS client gets no plain-text answer).
pub async fn accept(listener: &TcpListener, tls: impl Fn() -> bool) -> (TcpStream, ConnGuard) {
    let mut backoff: Option<Duration> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                backoff = None;
                match limits::admit() {
                    Some(guard) => {
                        if guard.evicted_another() {
                            // Let the evicted connection's task close its socket first, so a
                            // burst at the limit does not run out of descriptors.
                            tokio::task::yield_now().await;
                        }
                        return (stream, guard);
                    }
                    None => refuse(stream, tls()),
                }
            }
            Err(error) => {
                limits::count_accept_error();
                log_accept_error(&error);
                if is_resource_shortage(&error) {
                    let wait = backoff.map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                    backoff = Some(wait);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Out of descriptors or memory: retrying at once would spin.
fn is_resource_shortage(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn refuse(stream: TcpStream, tls: bool) {
    if !tls {
        // One non-blocking write into an empty socket buffer; never waits for the client.
        let _ = stream.try_write(REFUSAL);
    }
    tracing::debug!("refused a connection: --web.max-connections connections are busy");
}

/// (when the last line was logged, errors since then)
static LOGGED: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

fn log_accept_error(error: &std::io::Error) {
    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    match logged.as_mut() {
        Some((at, since)) if at.elapsed() < LOG_EVERY => *since += 1,
        _ => {
            let suppressed = logged.map_or(0, |(_, since)| since);
            tracing::warn!(
                %error,
                errors_not_logged = suppressed,
                "accept failed; backing off (logged at most every 10s)"
            );
            *logged = Some((Instant::now(), 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_a_complete_response() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
    }
}
