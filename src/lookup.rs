//! Host-name lookups (getaddrinfo) on their own bounded set of threads.
//!
//! Owns the limit on lookups in flight (`--dns.max-concurrency`) and its counters. getaddrinfo
//! cannot be cancelled: a lookup whose DNS server never answers holds its thread for the
//! resolver's full retry time, long after the probe that asked has given up. Run on Tokio's
//! blocking pool, 600 such lookups once took 514 threads and left `/metrics` rendering (and
//! bcrypt, and the `/mesh` page) queued behind them for 9 s. Here each lookup gets a dedicated
//! thread that exits when getaddrinfo returns, at most `limit` of them exist, and a lookup
//! beyond the limit fails at once. It does not choose among the addresses (that is
//! [`crate::resolve`]'s job) and never touches the blocking pool.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::expo::{self, MetricType};

/// The default `--dns.max-concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_CONCURRENCY);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Sets the most lookups in flight at once (`--dns.max-concurrency`); 0 refuses every lookup.
pub fn set_max_concurrency(limit: usize) {
    LIMIT.store(limit, Ordering::Relaxed);
}

/// A lookup's place under the limit, released when its thread ends (or it never started).
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let limit = LIMIT.load(Ordering::Relaxed);
        let before = IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All addresses of `host` (IPv4-mapped ones made plain), in resolver order. Fails at once
/// when the limit is reached. The caller bounds the wait (the probe deadline); a lookup it
/// stops waiting for keeps its slot until getaddrinfo returns.
pub async fn lookup_host(host: &str) -> Result<Vec<IpAddr>, String> {
    let Some(slot) = Slot::take() else {
        return Err(format!(
            "too many DNS lookups in flight (limit {}, --dns.max-concurrency)",
            LIMIT.load(Ordering::Relaxed)
        ));
    };
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("meshprobe-dns".into())
        .spawn(move || {
            let _slot = slot;
            let result = (name.as_str(), 0u16)
                .to_socket_addrs()
                .map(|addresses| addresses.map(|a| a.ip().to_canonical()).collect())
                .map_err(|e| e.to_string());
            let _ = sender.send(result);
        })
        .map_err(|e| format!("cannot start a resolver thread: {e}"))?;
    receiver
        .await
        .unwrap_or_else(|_| Err("resolver thread ended without an answer".into()))
}

/// Appends the lookup families to `/metrics`.
pub fn render(out: &mut String) {
    expo::single(
        out,
        "meshprobe_dns_lookups_in_flight",
        "Host-name lookups running now; a lookup whose DNS server does not answer stays here until the resolver gives up.",
        MetricType::Gauge,
        IN_FLIGHT.load(Ordering::Relaxed) as f64,
    );
    expo::single(
        out,
        "meshprobe_dns_lookups_limit",
        "The --dns.max-concurrency limit on lookups in flight.",
        MetricType::Gauge,
        LIMIT.load(Ordering::Relaxed) as f64,
    );
    expo::single(
        out,
        "meshprobe_dns_lookups_refused_total",
        "Host-name lookups refused at once because --dns.max-concurrency lookups were in flight.",
        MetricType::Counter,
        REFUSED.load(Ordering::Relaxed) as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test owns the process-wide limit, so parallel tests do not race on it.
    #[tokio::test]
    async fn lookups_run_and_the_limit_refuses_at_once() {
        let addresses = lookup_host("localhost").await.expect("localhost resolves");
        assert!(addresses.iter().all(|a| a.is_loopback()), "{addresses:?}");
        set_max_concurrency(0);
        let refused_before = REFUSED.load(Ordering::Relaxed);
        let error = lookup_host("localhost").await.expect_err("limit 0");
        assert!(error.contains("--dns.max-concurrency"), "{error}");
        assert_eq!(REFUSED.load(Ordering::Relaxed), refused_before + 1);
        set_max_concurrency(DEFAULT_MAX_CONCURRENCY);
        assert!(lookup_host("localhost").await.is_ok());
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("meshprobe_dns_lookups_limit 64\n"), "{out}");
    }
}
