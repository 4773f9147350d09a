//! exporter-toolkit's `rate_limit` (`interval`, `burst`): one token bucket for all requests to
//! all listeners, checked before basic auth, answering 429 when empty.
//!
//! Owns the section's validation and the bucket, with golang.org/x/time/rate's meaning: the
//! bucket holds up to `burst` tokens, starts full, and gains one every `interval`; a request
//! takes one or is refused. `interval: 0` (or no section) means no limit. A reload with the same
//! settings keeps the bucket (a fresh one would hand out a new burst on every reload). It knows
//! nothing about HTTP beyond the 429 answer.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use std::time::Instant;

use crate::config::duration::parse_go_duration;

/// `rate_limit` as written in the web config file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    interval: Option<String>,
    burst: Option<i64>,
}

/// A token bucket.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// (tokens, when they were counted)
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// Validates the section: `None` when it sets no limit (interval absent or 0).
    pub fn from_raw(raw: &RawRateLimit) -> Result<Option<RateLimiter>, String> {
        let interval = match raw.interval.as_deref() {
            None | Some("") => Duration::ZERO,
            Some(text) => {
                parse_go_duration(text).map_err(|e| format!("rate_limit.interval: {e}"))?
            }
        };
        if interval.is_zero() {
            return Ok(None);
        }
        let burst = match raw.burst {
            Some(burst) if burst >= 1 => u32::try_from(burst)
                .map_err(|_| format!("rate_limit.burst: {burst} is too large"))?,
            other => {
                return Err(format!(
                    "rate_limit.burst: must be at least 1 when rate_limit.interval is set (got {}); \
                     with 0 every request would be refused",
                    other.unwrap_or(0)
                ));
            }
        };
        Ok(Some(RateLimiter::new(interval, burst)))
    }

    pub fn new(interval: Duration, burst: u32) -> RateLimiter {
        RateLimiter {
            interval,
            burst,
            bucket: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Whether `other` has the same settings (so its bucket can be kept across a reload).
    pub fn same_settings(&self, other: &RateLimiter) -> bool {
        self.interval == other.interval && self.burst == other.burst
    }

    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let gained =
            now.saturating_duration_since(bucket.1).as_secs_f64() / self.interval.as_secs_f64();
        let tokens = (bucket.0 + gained).min(f64::from(self.burst));
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

/// Go's `http.Error(w, "Too Many Requests", 429)`, with a hint when to retry.
pub fn too_many_requests(body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(interval: Option<&str>, burst: Option<i64>) -> RawRateLimit {
        RawRateLimit {
            interval: interval.map(str::to_string),
            burst,
        }
    }

    #[test]
    fn settings() {
        assert!(matches!(
            RateLimiter::from_raw(&raw(None, Some(3))),
            Ok(None)
        ));
        assert!(matches!(
            RateLimiter::from_raw(&raw(Some("0s"), None)),
            Ok(None)
        ));
        let error = RateLimiter::from_raw(&raw(Some("1s"), Some(0))).expect_err("burst 0");
        assert!(error.starts_with("rate_limit.burst"), "{error}");
        let error = RateLimiter::from_raw(&raw(Some("1x"), Some(1))).expect_err("bad interval");
        assert!(error.starts_with("rate_limit.interval"), "{error}");
        let limiter = RateLimiter::from_raw(&raw(Some("1m"), Some(2)))
            .expect("valid")
            .expect("limited");
        assert!(limiter.same_settings(&RateLimiter::new(Duration::from_secs(60), 2)));
        assert!(!limiter.same_settings(&RateLimiter::new(Duration::from_secs(60), 3)));
    }

    #[test]
    fn the_bucket_refills_one_token_per_interval() {
        let limiter = RateLimiter::new(Duration::from_secs(1), 2);
        let start = limiter.bucket.lock().expect("bucket").1;
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(limiter.allow_at(at(0)) && limiter.allow_at(at(0)));
        assert!(!limiter.allow_at(at(0)));
        assert!(!limiter.allow_at(at(500)));
        assert!(limiter.allow_at(at(1000)));
        assert!(!limiter.allow_at(at(1000)));
        assert!(limiter.allow_at(at(11_000)) && limiter.allow_at(at(11_000)));
        assert!(!limiter.allow_at(at(11_000)));
    }
}
