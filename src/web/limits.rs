//! Connection limits for every HTTP listener: how many connections may be open at once
//! (`--web.max-connections`), how long a client may take to send a request head
//! (`--web.read-header-timeout`, TLS handshake included) and how long a kept-alive connection may
//! wait for its next request (`--web.idle-timeout`), with Go net/http's meaning of each.
//!
//! Owns the process-wide table of open connections, the admission rule at the limit (close the
//! connection that has been idle the longest, or refuse the new one when every connection is
//! busy), the per-connection watchdog ([`ConnGuard::watch`]), the IO and service wrappers that
//! feed it ([`Tracked`], [`TrackedService`]), and the counters on `/metrics`. hyper's own
//! `header_read_timeout` is not used: hyper restarts it the moment a kept-alive connection goes
//! idle, which would make the idle timeout and the header timeout one value. This module does
//! no HTTP parsing and never reads or writes a byte itself.

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::expo::{self, MetricType};

/// The default `--web.max-connections`. An idle connection costs 15–20 KiB (hyper's buffers,
/// the task), so this bounds idle connections to about 80 MiB; probes in flight need one
/// connection each, so a `--probe.max-concurrency` above it needs this raised too.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The default `--web.read-header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `--web.idle-timeout`: longer than a one-minute scrape interval, so Prometheus
/// keeps reusing its connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Descriptors left for sockets, peer files and accepting-to-refuse when the connection limit
/// is derived from the open-file limit.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// `requested` capped so that open connections cannot use up the open-file limit
/// (`nofile`, the soft RLIMIT_NOFILE; `None` when unknown).
pub fn cap_to_open_files(requested: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(0);
            requested.min(room.max(1))
        }
        None => requested,
    }
}

/// The soft open-file limit of this process, from /proc/self/limits.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// "No time": the slot holds no timestamp.
const NONE: u64 = u64::MAX;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(NONE - 1)
}

fn instant_of(ms: u64) -> Instant {
    *EPOCH + Duration::from_millis(ms)
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Header,
    Idle,
}

/// One open connection, as the watchdog and the admission rule see it.
pub struct ConnState {
    id: u64,
    /// Requests whose response is being produced.
    in_flight: AtomicUsize,
    /// When the connection last became idle (accepted, or a response finished).
    idle_since: AtomicU64,
    /// When the head of the next request began (accept for the first one), or [`NONE`].
    request_since: AtomicU64,
    /// The last byte read or written.
    last_io: AtomicU64,
    /// The deadline may have moved earlier, or a request finished.
    changed: Notify,
    /// Closed to make room for a new connection.
    evict: Notify,
}

impl ConnState {
    fn new(id: u64) -> ConnState {
        let now = now_ms();
        ConnState {
            id,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            request_since: AtomicU64::new(now),
            last_io: AtomicU64::new(now),
            changed: Notify::new(),
            evict: Notify::new(),
        }
    }

    /// When the connection expires and why; `None` while a request is being answered.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let request_since = self.request_since.load(Ordering::Acquire);
        if request_since != NONE {
            return Some((
                instant_of(request_since) + limits.header_timeout,
                Expiry::Header,
            ));
        }
        let idle = self
            .idle_since
            .load(Ordering::Acquire)
            .max(self.last_io.load(Ordering::Acquire));
        Some((instant_of(idle) + limits.idle_timeout, Expiry::Idle))
    }

    fn on_read(&self) {
        let now = now_ms();
        self.last_io.store(now, Ordering::Release);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .request_since
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The header deadline is usually earlier than the idle one the watchdog sleeps on.
            self.changed.notify_one();
        }
    }

    fn on_write(&self) {
        self.last_io.store(now_ms(), Ordering::Release);
    }
}

/// The process-wide table of open connections and its counters.
#[derive(Default)]
struct Table {
    limits: Mutex<Limits>,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    accept_errors: AtomicU64,
}

static TABLE: LazyLock<Table> = LazyLock::new(Table::default);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets the limits (at startup); connections already open keep running under the new ones.
pub fn configure(limits: Limits) {
    *lock(&TABLE.limits) = limits;
}

pub fn limits() -> Limits {
    *lock(&TABLE.limits)
}

/// Counts an accept error (the listener logs it).
pub fn count_accept_error() {
    TABLE.accept_errors.fetch_add(1, Ordering::Relaxed);
}

/// Admits a new connection. At the limit, the connection idle the longest is told to close to
/// make room; when every connection is busy answering a request, the new one is refused
/// (`None`) and counted.
pub fn admit() -> Option<ConnGuard> {
    let max = limits().max_connections;
    let mut open = lock(&TABLE.open);
    let evicted = open.len() >= max;
    if evicted {
        let victim = open
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
            .map(|c| c.id);
        let Some(victim) = victim.and_then(|id| open.remove(&id)) else {
            TABLE.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        victim.evict.notify_one();
        TABLE.evicted.fetch_add(1, Ordering::Relaxed);
    }
    let id = TABLE.next_id.fetch_add(1, Ordering::Relaxed);
    let state = Arc::new(ConnState::new(id));
    open.insert(id, Arc::clone(&state));
    Some(ConnGuard { state, evicted })
}

/// A connection's place in the table; leaves it on drop.
pub struct ConnGuard {
    state: Arc<ConnState>,
    evicted: bool,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = lock(&TABLE.open);
        if open
            .get(&self.state.id)
            .is_some_and(|c| Arc::ptr_eq(c, &self.state))
        {
            open.remove(&self.state.id);
        }
    }
}

impl ConnGuard {
    pub fn state(&self) -> Arc<ConnState> {
        Arc::clone(&self.state)
    }

    /// Whether another connection was told to close to admit this one (it closes when its
    /// task next runs, so the acceptor should let it run before taking more descriptors).
    pub fn evicted_another(&self) -> bool {
        self.evicted
    }

    /// When the first request's head (and the TLS handshake before it) must be complete.
    pub fn header_deadline(&self) -> Instant {
        let accepted = self.state.idle_since.load(Ordering::Acquire);
        instant_of(accepted) + limits().header_timeout
    }

    /// Runs the connection (`work`) until it ends, its header or idle deadline passes, or it
    /// is evicted; in the last two cases `work` is dropped, which closes the socket.
    pub async fn watch(self, work: impl Future<Output = ()>) {
        tokio::pin!(work);
        loop {
            let limits = limits();
            let deadline = self.state.deadline(&limits);
            let expiry = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut work => return,
                () = self.state.evict.notified() => {
                    tracing::debug!("closing the longest-idle connection to admit a new one");
                    return;
                }
                () = self.state.changed.notified() => {}
                () = expiry => {
                    // IO since the sleep began may have moved the deadline later.
                    let Some((at, why)) = self.state.deadline(&limits) else { continue };
                    if at > Instant::now() {
                        continue;
                    }
                    let (counter, reason) = match why {
                        Expiry::Header => (&TABLE.header_timeouts, "read_header_timeout"),
                        Expiry::Idle => (&TABLE.idle_timeouts, "idle_timeout"),
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(reason, "closing a connection at its timeout");
                    return;
                }
            }
        }
    }
}

/// A connection's socket (or TLS stream), noting reads and writes for the watchdog.
pub struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, state: Arc<ConnState>) -> Tracked<T> {
        Tracked { inner, state }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.on_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request being answered: the connection is busy (no timeout, not evictable) until it drops.
struct Busy(Arc<ConnState>);

impl Busy {
    fn start(state: Arc<ConnState>) -> Busy {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.request_since.store(NONE, Ordering::Release);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// The peer address of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// A hyper service that marks its connection busy while each request is answered, and tags
/// each request with the connection's [`ClientAddr`].
pub struct TrackedService<S> {
    inner: S,
    state: Arc<ConnState>,
    client: Option<IpAddr>,
}

impl<S> TrackedService<S> {
    pub fn new(inner: S, state: Arc<ConnState>, client: Option<IpAddr>) -> TrackedService<S> {
        TrackedService {
            inner,
            state,
            client,
        }
    }
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for TrackedService<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        if let Some(client) = self.client {
            request.extensions_mut().insert(ClientAddr(client));
        }
        let busy = Busy::start(Arc::clone(&self.state));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(busy);
            response
        })
    }
}

/// Appends the connection families to `/metrics`.
pub fn render(out: &mut String) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    expo::single(
        out,
        "meshprobe_http_accept_errors_total",
        "Errors accepting HTTP connections (e.g. out of file descriptors); accepting backs off after each.",
        MetricType::Counter,
        load(&TABLE.accept_errors),
    );
    expo::family(
        out,
        "meshprobe_http_connections_closed_total",
        "HTTP connections closed by the server: header_timeout (--web.read-header-timeout), idle_timeout (--web.idle-timeout) or evicted (idle the longest when --web.max-connections was reached).",
        MetricType::Counter,
    );
    for (reason, counter) in [
        ("evicted", &TABLE.evicted),
        ("header_timeout", &TABLE.header_timeouts),
        ("idle_timeout", &TABLE.idle_timeouts),
    ] {
        expo::sample(
            out,
            "meshprobe_http_connections_closed_total",
            &[("reason", reason)],
            load(counter),
        );
    }
    expo::single(
        out,
        "meshprobe_http_connections_limit",
        "The --web.max-connections limit in force (capped by the open-file limit).",
        MetricType::Gauge,
        limits().max_connections as f64,
    );
    expo::single(
        out,
        "meshprobe_http_connections_open",
        "HTTP connections open now.",
        MetricType::Gauge,
        lock(&TABLE.open).len() as f64,
    );
    expo::single(
        out,
        "meshprobe_http_connections_refused_total",
        "HTTP connections refused at once because --web.max-connections connections were all busy.",
        MetricType::Counter,
        load(&TABLE.refused),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_room_for_other_descriptors() {
        assert_eq!(cap_to_open_files(10_000, Some(1024)), 960);
        assert_eq!(
            cap_to_open_files(DEFAULT_MAX_CONNECTIONS, Some(65_536)),
            4096
        );
        assert_eq!(cap_to_open_files(100, Some(1024)), 100);
        assert_eq!(cap_to_open_files(10_000, Some(10)), 1);
        assert_eq!(cap_to_open_files(10_000, None), 10_000);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn deadlines_follow_go_semantics() {
        let limits = Limits {
            max_connections: 10,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(100),
        };
        let state = Arc::new(ConnState::new(7));
        // A new connection must send its first head within the header timeout.
        let (first, why) = state.deadline(&limits).expect("deadline");
        assert_eq!(why, Expiry::Header);
        let busy = Busy::start(Arc::clone(&state));
        assert!(
            state.deadline(&limits).is_none(),
            "busy connections never expire"
        );
        drop(busy);
        // Idle between requests: the idle timeout, until the next request's first byte.
        let (idle, why) = state.deadline(&limits).expect("deadline");
        assert_eq!(why, Expiry::Idle);
        assert!(idle > first);
        state.on_read();
        assert_eq!(state.deadline(&limits).map(|d| d.1), Some(Expiry::Header));
    }
}
