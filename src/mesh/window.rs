//! The recent window of one mesh target: the outcomes of its last [`WINDOW_PROBES`] finished
//! probes and its last error, for the `/mesh` page.
//!
//! Owns the bounded memory behind "recent" (the `/metrics` counters and histogram are cumulative
//! since start and never forget). Each outcome is two bytes: an RTT on a logarithmic scale (100 ns
//! to 100 s, 0.016 % resolution) or a loss marker, in a fixed ring: 216 bytes per target, plus 48
//! for the last error once there is one, and it never grows. It also computes the window's summary (p50/p99
//! nearest-rank RTT and loss). It must not do any I/O or know about HTML or JSON.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::icmp::IcmpErrorKind;

/// How many finished probes the window holds (100 s at the default 1 s interval).
pub const WINDOW_PROBES: usize = 100;

/// The smallest and largest RTT the two-byte encoding distinguishes.
const RTT_FLOOR_SECONDS: f64 = 100e-9;
const RTT_CEILING_SECONDS: f64 = 100.0;
/// Codes above the RTT range.
const LOST: u16 = u16::MAX;
const NOT_SENT: u16 = u16::MAX - 1;
const LARGEST_RTT_CODE: u16 = u16::MAX - 2;

fn rtt_step() -> f64 {
    (RTT_CEILING_SECONDS / RTT_FLOOR_SECONDS).ln() / f64::from(LARGEST_RTT_CODE)
}

/// Encodes an RTT as a two-byte code (clamped to 100 ns … 100 s).
fn encode_rtt(seconds: f64) -> u16 {
    let clamped = seconds.clamp(RTT_FLOOR_SECONDS, RTT_CEILING_SECONDS);
    let code = ((clamped / RTT_FLOOR_SECONDS).ln() / rtt_step()).round();
    code.clamp(0.0, f64::from(LARGEST_RTT_CODE)) as u16
}

fn decode_rtt(code: u16) -> f64 {
    RTT_FLOOR_SECONDS * (f64::from(code) * rtt_step()).exp()
}

/// Why a probe did not get an echo reply, other than plain silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// An ICMP error answered the probe.
    Icmp {
        kind: IcmpErrorKind,
        code: u8,
        from: Option<IpAddr>,
    },
    /// The kernel refused to send (`errno`, when known).
    Send { errno: Option<i32> },
    /// No ICMP socket could be opened.
    Socket,
    /// Too many probes to this address were in flight: no free sequence number.
    Busy,
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Icmp { kind, code, from } => {
                write!(f, "{} (code {code})", kind.as_str())?;
                match from {
                    Some(router) => write!(f, " from {router}"),
                    None => Ok(()),
                }
            }
            ProbeError::Send { errno: Some(errno) } => write!(
                f,
                "send failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            ProbeError::Send { errno: None } => f.write_str("send failed"),
            ProbeError::Socket => f.write_str("no ICMP socket could be opened"),
            ProbeError::Busy => f.write_str("too many probes in flight (no free sequence number)"),
        }
    }
}

/// The most recent error and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastError {
    pub error: ProbeError,
    pub at: SystemTime,
}

/// The ring of recent outcomes.
#[derive(Debug, Clone)]
pub struct RecentWindow {
    codes: [u16; WINDOW_PROBES],
    /// Slot the next outcome goes to.
    next: u8,
    /// Filled slots (at most [`WINDOW_PROBES`]).
    len: u8,
    /// Boxed: most targets never have one (40 bytes inline, 8 boxed).
    last_error: Option<Box<LastError>>,
}

const _: () = assert!(WINDOW_PROBES <= u8::MAX as usize);

impl Default for RecentWindow {
    fn default() -> Self {
        RecentWindow {
            codes: [0; WINDOW_PROBES],
            next: 0,
            len: 0,
            last_error: None,
        }
    }
}

impl RecentWindow {
    fn push(&mut self, code: u16) {
        self.codes[usize::from(self.next)] = code;
        self.next = ((usize::from(self.next) + 1) % WINDOW_PROBES) as u8;
        self.len = (usize::from(self.len) + 1).min(WINDOW_PROBES) as u8;
    }

    pub fn record_reply(&mut self, rtt: Duration) {
        self.push(encode_rtt(rtt.as_secs_f64()));
    }

    /// No echo reply by the deadline; `error` is what ended the probe early, if anything.
    pub fn record_lost(&mut self, error: Option<ProbeError>, at: SystemTime) {
        self.push(LOST);
        if let Some(error) = error {
            self.last_error = Some(Box::new(LastError { error, at }));
        }
    }

    /// The probe could not be sent: it counts against the window like a loss.
    pub fn record_not_sent(&mut self, error: ProbeError, at: SystemTime) {
        self.push(NOT_SENT);
        self.last_error = Some(Box::new(LastError { error, at }));
    }

    /// Outcomes in the window, oldest first.
    fn outcomes(&self) -> impl Iterator<Item = u16> + '_ {
        let len = usize::from(self.len);
        let start = (usize::from(self.next) + WINDOW_PROBES - len) % WINDOW_PROBES;
        (0..len).map(move |offset| self.codes[(start + offset) % WINDOW_PROBES])
    }

    /// (finished probes, probes with a reply) in the window: what loss needs, without the
    /// sorting and the allocation of [`RecentWindow::summary`].
    pub fn reply_counts(&self) -> (usize, usize) {
        let received = self
            .outcomes()
            .filter(|code| *code != LOST && *code != NOT_SENT)
            .count();
        (usize::from(self.len), received)
    }

    pub fn summary(&self) -> WindowSummary {
        let mut rtts: Vec<u16> = Vec::with_capacity(usize::from(self.len));
        let (mut lost, mut not_sent) = (0, 0);
        for code in self.outcomes() {
            match code {
                LOST => lost += 1,
                NOT_SENT => not_sent += 1,
                rtt => rtts.push(rtt),
            }
        }
        rtts.sort_unstable();
        WindowSummary {
            probes: usize::from(self.len),
            received: rtts.len(),
            lost,
            not_sent,
            rtt_p50_seconds: nearest_rank(&rtts, 0.5).map(decode_rtt),
            rtt_p99_seconds: nearest_rank(&rtts, 0.99).map(decode_rtt),
            last_error: self.last_error.as_deref().copied(),
        }
    }
}

/// The nearest-rank quantile of sorted values: the smallest value with at least `q` of the
/// values at or below it.
fn nearest_rank(sorted: &[u16], q: f64) -> Option<u16> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// What the window says about a target.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSummary {
    /// Finished probes in the window (received + lost + not sent).
    pub probes: usize,
    pub received: usize,
    /// No reply by the deadline (timeouts and ICMP errors).
    pub lost: usize,
    /// Refused by the kernel; counted as lost for the loss ratio.
    pub not_sent: usize,
    pub rtt_p50_seconds: Option<f64>,
    pub rtt_p99_seconds: Option<f64>,
    pub last_error: Option<LastError>,
}

impl WindowSummary {
    /// Lost and unsent probes over all probes in the window, `None` without probes.
    pub fn loss_ratio(&self) -> Option<f64> {
        (self.probes > 0).then(|| (self.lost + self.not_sent) as f64 / self.probes as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_codes_round_trip_within_a_fraction_of_a_percent() {
        for seconds in [150e-9, 12e-6, 48.5e-6, 1e-3, 0.150, 2.5, 59.9] {
            let back = decode_rtt(encode_rtt(seconds));
            assert!(
                (back - seconds).abs() / seconds < 2e-4,
                "{seconds} came back as {back}"
            );
        }
        assert_eq!(encode_rtt(0.0), 0);
        assert_eq!(encode_rtt(1e6), LARGEST_RTT_CODE);
        assert!(encode_rtt(1e-3) < encode_rtt(1.001e-3), "order is kept");
    }

    #[test]
    fn window_keeps_only_the_newest_probes() {
        let mut window = RecentWindow::default();
        let at = SystemTime::UNIX_EPOCH;
        // 60 losses, then 100 replies of 1..=100 ms: the losses fall out of the window.
        for _ in 0..60 {
            window.record_lost(None, at);
        }
        assert_eq!(window.summary().loss_ratio(), Some(1.0));
        for ms in 1..=100u64 {
            window.record_reply(Duration::from_millis(ms));
        }
        let summary = window.summary();
        assert_eq!(
            (summary.probes, summary.received, summary.lost),
            (100, 100, 0)
        );
        assert_eq!(summary.loss_ratio(), Some(0.0));
        let p50 = summary.rtt_p50_seconds.expect("p50");
        let p99 = summary.rtt_p99_seconds.expect("p99");
        assert!((p50 - 0.050).abs() < 1e-5, "{p50}");
        assert!((p99 - 0.099).abs() < 1e-4, "{p99}");
    }

    #[test]
    fn loss_counts_timeouts_errors_and_refused_sends_and_remembers_the_last_error() {
        let mut window = RecentWindow::default();
        assert_eq!(window.summary().loss_ratio(), None);
        assert_eq!(window.summary().rtt_p50_seconds, None);
        let unreachable = ProbeError::Icmp {
            kind: IcmpErrorKind::DestinationUnreachable,
            code: 1,
            from: Some("198.18.0.254".parse().expect("address")),
        };
        let first = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let second = first + Duration::from_secs(5);
        window.record_reply(Duration::from_micros(80));
        window.record_lost(Some(unreachable), first);
        window.record_lost(None, second);
        window.record_not_sent(ProbeError::Send { errno: Some(101) }, second);
        let summary = window.summary();
        assert_eq!(
            (
                summary.probes,
                summary.received,
                summary.lost,
                summary.not_sent
            ),
            (4, 1, 2, 1)
        );
        assert_eq!(summary.loss_ratio(), Some(0.75));
        let last = summary.last_error.expect("last error");
        assert_eq!(last.at, second);
        assert!(
            last.error.to_string().starts_with("send failed: "),
            "{}",
            last.error
        );
        assert_eq!(
            unreachable.to_string(),
            "destination_unreachable (code 1) from 198.18.0.254"
        );
    }

    #[test]
    fn window_memory_stays_small() {
        // The budget the README quotes: a 10 000-target mesh adds under 3 MB.
        let per_target = std::mem::size_of::<std::sync::Mutex<RecentWindow>>();
        eprintln!("recent window per target: {per_target} bytes");
        assert!(per_target <= 264, "{per_target} bytes");
    }
}
