//! HTTP basic auth against `basic_auth_users` (bcrypt hashes), as exporter-toolkit does it.
//!
//! Owns hash validation at load, parsing the `Authorization` header, the bcrypt check, caches
//! of successful and failed checks so that steady scrapes (and repeated wrong passwords) do not
//! pay bcrypt every time, and the 401 answer. Unknown users are checked against a hash of the
//! same cost as the real ones, so response time does not tell which users exist.
//!
//! bcrypt is bounded, because unauthenticated clients choose how much of it to cause: checks
//! run on the blocking pool at most [`bcrypt_slots`] at a time (half the cores, at least one),
//! concurrent requests with the same credentials share one check, each client address may have
//! one check of its own pending, and at most [`MAX_WAITING`] checks wait for a slot. A request
//! beyond those bounds is answered at once with 429 ([`Verdict::Busy`]) instead of queueing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Most cached successful (and, separately, failed) checks; a cache is emptied when it is full
/// (bcrypt ignores bytes past the 72nd, so one valid password has endless variants that would
/// otherwise pile up).
const CACHE_CAPACITY: usize = 1024;
/// Most checks waiting for a bcrypt slot; beyond it a new check is answered 429 at once.
pub const MAX_WAITING: usize = 16;

/// How many bcrypt checks run at once: half the cores, so the runtime thread keeps one.
pub fn bcrypt_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The outcome of an auth check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Too many checks pending (from this client, or in all): answer 429, check nothing.
    Busy,
}

/// A check in progress that others with the same credentials wait for.
type Pending = Arc<tokio::sync::OnceCell<bool>>;

/// Basic auth for one loaded web config.
pub struct BasicAuth {
    /// User name → bcrypt hash.
    users: HashMap<String, String>,
    /// Checked for unknown users: the hash of the costliest user, so the time is the same. The
    /// result is thrown away, so that it is a real user's hash does not matter.
    dummy_hash: String,
    /// Digests of (user, password) pairs that passed bcrypt.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// Digests of pairs that failed it.
    failures: Mutex<HashSet<[u8; 32]>>,
    /// Random per-config key mixed into the digests, so the cache holds no plain password hash.
    cache_key: [u8; 32],
    bcrypt_slots: Arc<Semaphore>,
    /// Checks waiting for a slot.
    waiting: AtomicUsize,
    /// Checks in progress, by digest, and the client addresses that started them.
    pending: Mutex<PendingChecks>,
}

/// Checks in progress: by credentials digest, and which client addresses started one.
#[derive(Default)]
struct PendingChecks {
    by_digest: HashMap<[u8; 32], Pending>,
    clients: HashSet<Option<IpAddr>>,
}

impl BasicAuth {
    /// Validates the hashes; errors name the user (never the hash).
    pub fn new(users: BTreeMap<String, Option<String>>) -> Result<BasicAuth, String> {
        let mut checked = HashMap::with_capacity(users.len());
        let mut dummy: Option<(u32, String)> = None;
        for (user, hash) in users {
            let field = format!("basic_auth_users.{user}");
            if user.is_empty() {
                return Err("basic_auth_users: a user name is empty".into());
            }
            if user.contains(':') {
                return Err(format!("{field}: a user name cannot contain ':'"));
            }
            let hash = hash.unwrap_or_default();
            let cost = bcrypt_cost(&hash).map_err(|message| format!("{field}: {message}"))?;
            if dummy.as_ref().is_none_or(|(max, _)| cost > *max) {
                dummy = Some((cost, hash.clone()));
            }
            checked.insert(user, hash);
        }
        let mut cache_key = [0u8; 32];
        let random = tokio_rustls::rustls::crypto::ring::default_provider().secure_random;
        random
            .fill(&mut cache_key)
            .map_err(|_| "basic_auth_users: no system randomness available".to_string())?;
        Ok(BasicAuth {
            users: checked,
            dummy_hash: dummy.map(|(_, hash)| hash).unwrap_or_default(),
            cache: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashSet::new()),
            cache_key,
            bcrypt_slots: Arc::new(Semaphore::new(bcrypt_slots())),
            waiting: AtomicUsize::new(0),
            pending: Mutex::new(PendingChecks::default()),
        })
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether the request carries the name and password of a configured user; `client` is
    /// the connection's peer address (one pending check of its own per address).
    pub async fn check(&self, headers: &HeaderMap, client: Option<IpAddr>) -> Verdict {
        let Some((user, password)) = headers.get(AUTHORIZATION).and_then(parse_basic) else {
            return Verdict::Denied;
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|name| self.users.get(name));
        let digest = self.digest(&user, &password);
        if known.is_some() && lock(&self.cache).contains(&digest) {
            return Verdict::Allowed;
        }
        if lock(&self.failures).contains(&digest) {
            return Verdict::Denied;
        }
        let (pending, started) = {
            let mut guard = lock(&self.pending);
            let PendingChecks { by_digest, clients } = &mut *guard;
            match by_digest.get(&digest) {
                Some(pending) => (Arc::clone(pending), None),
                None => {
                    let waiting = self.waiting.load(Ordering::Relaxed);
                    if waiting >= MAX_WAITING || !clients.insert(client) {
                        return Verdict::Busy;
                    }
                    let pending = Pending::default();
                    by_digest.insert(digest, Arc::clone(&pending));
                    let started = Started {
                        auth: self,
                        digest,
                        client,
                    };
                    (pending, Some(started))
                }
            }
        };
        let hash = known.unwrap_or(&self.dummy_hash).clone();
        let matched = *pending.get_or_init(|| self.bcrypt(password, hash)).await;
        let ok = matched && known.is_some();
        if started.is_some() {
            let mut cache = lock(if ok { &self.cache } else { &self.failures });
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(digest);
        }
        if ok {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    /// One bcrypt verification on the blocking pool, once a slot is free.
    async fn bcrypt(&self, password: Vec<u8>, hash: String) -> bool {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::clone(&self.bcrypt_slots).acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(slot) = slot else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            bcrypt::verify(&password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// The cache key: a keyed SHA-256 of the user and password (length-prefixed user).
    fn digest(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update((user.len() as u64).to_be_bytes());
        hasher.update(user);
        hasher.update(password);
        hasher.finalize().into()
    }
}

/// A check this request started: leaves the pending table when it ends or is cancelled (the
/// client went away), so its address may start another.
struct Started<'a> {
    auth: &'a BasicAuth,
    digest: [u8; 32],
    client: Option<IpAddr>,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.auth.pending);
        pending.by_digest.remove(&self.digest);
        pending.clients.remove(&self.client);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cost of a `$2a$`, `$2b$` or `$2y$` bcrypt hash, or why it is not one.
fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    if hash.is_empty() {
        return Err("the password hash is empty".into());
    }
    let prefix_ok = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix));
    let parts: Option<bcrypt::HashParts> = if prefix_ok { hash.parse().ok() } else { None };
    let Some(parts) = parts else {
        return Err(
            "not a bcrypt hash (expected 60 characters starting with $2a$, $2b$ or $2y$, \
             e.g. from `htpasswd -nB user`)"
                .into(),
        );
    };
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4..31"));
    }
    Ok(cost)
}

/// Splits `Basic base64(user:password)` (scheme case-insensitive, as in Go).
fn parse_basic(value: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.as_bytes();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&value[6..])
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Go's answer to a missing or wrong password.
pub fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Unauthorized\n")));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(password: &str) -> String {
        bcrypt::hash_with_salt(password, 4, [7; 16])
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoY)
    }

    fn header(user: &str, password: &str) -> HeaderMap {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).expect("header"),
        );
        headers
    }

    fn alice() -> BasicAuth {
        BasicAuth::new([("alice".to_string(), Some(hash("s3cret:x")))].into()).expect("valid")
    }

    #[tokio::test]
    async fn checks_passwords_and_caches_successes_and_failures() {
        let auth = alice();
        let check = |user: &'static str, password: &'static str| {
            let headers = header(user, password);
            let auth = &auth;
            async move { auth.check(&headers, None).await }
        };
        assert_eq!(check("alice", "s3cret:x").await, Verdict::Allowed);
        assert_eq!(lock(&auth.cache).len(), 1);
        assert_eq!(check("alice", "s3cret:x").await, Verdict::Allowed);
        assert_eq!(check("alice", "wrong").await, Verdict::Denied);
        assert_eq!(check("bob", "s3cret:x").await, Verdict::Denied);
        assert_eq!(auth.check(&HeaderMap::new(), None).await, Verdict::Denied);
        assert_eq!(lock(&auth.cache).len(), 1);
        assert_eq!(lock(&auth.failures).len(), 2);
        let pending = lock(&auth.pending);
        assert!(pending.by_digest.is_empty() && pending.clients.is_empty());
    }

    #[tokio::test]
    async fn one_pending_check_per_client_and_shared_checks_for_the_same_credentials() {
        // Cost 11 (about 0.1 s a check): with cost 4 the first check could finish on the blocking
        // pool while a loaded machine preempts this thread, before the others are polled.
        let slow_hash = bcrypt::hash_with_salt("s3cret:x", 11, [7; 16])
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoY);
        let auth = BasicAuth::new([("alice".to_string(), Some(slow_hash))].into()).expect("valid");
        let a: IpAddr = "198.18.0.1".parse().expect("ip");
        let b: IpAddr = "198.18.0.2".parse().expect("ip");
        let (right, right_again, wrong, other_client) = (
            header("alice", "s3cret:x"),
            header("alice", "s3cret:x"),
            header("alice", "guess"),
            header("alice", "other guess"),
        );
        let verdicts = tokio::join!(
            auth.check(&right, Some(a)),
            auth.check(&right_again, Some(a)),
            auth.check(&wrong, Some(a)),
            auth.check(&other_client, Some(b)),
        );
        assert_eq!(
            verdicts,
            (
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Busy,
                Verdict::Denied
            )
        );
        // The first check ended, so the client may start another.
        assert_eq!(auth.check(&wrong, Some(a)).await, Verdict::Denied);
    }

    #[test]
    fn header_parsing() {
        let value = |text: &str| HeaderValue::from_str(text).expect("header");
        assert_eq!(
            parse_basic(&value("bAsIc YTpiOmM=")),
            Some((b"a".to_vec(), b"b:c".to_vec()))
        );
        assert_eq!(parse_basic(&value("Bearer YTpi")), None);
        assert_eq!(parse_basic(&value("Basic !!!")), None);
        assert_eq!(parse_basic(&value("Basic YWJj")), None);
        assert_eq!(parse_basic(&value("Basic")), None);
    }

    #[test]
    fn hash_validation() {
        assert_eq!(bcrypt_cost(&hash("x")), Ok(4));
        assert!(bcrypt_cost(&hash("x").replacen("$2y$", "$2b$", 1)).is_ok());
        assert!(bcrypt_cost(&hash("x").replacen("$2y$", "$2x$", 1)).is_err());
        assert!(bcrypt_cost("plaintext").is_err());
        assert!(bcrypt_cost("").is_err());
        assert!(bcrypt_cost(&hash("x").replacen("$04$", "$99$", 1)).is_err());
        let error = BasicAuth::new([("bob".to_string(), Some("secret".into()))].into())
            .err()
            .expect("invalid");
        assert!(error.starts_with("basic_auth_users.bob:") && !error.contains("secret"));
        assert!(BasicAuth::new([("bob".to_string(), None)].into()).is_err());
    }
}
