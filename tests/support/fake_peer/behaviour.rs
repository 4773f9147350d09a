//! What the fake peer can be told to do: the replies it can send ([`Reply`], [`ErrorKind`]), when
//! ([`Action`]), and per address ([`Behaviour`]: a script, jitter, drops, reordering, or a cycle
//! of scripts over consecutive requests). Plain data; the peer's thread acts on it.

use std::net::IpAddr;
use std::time::Duration;

/// ICMP error types the fake peer can send; mapped to ICMPv4 or ICMPv6 numbers per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Destination unreachable with this code (ICMPv4 type 3, ICMPv6 type 1).
    Unreachable { code: u8 },
    /// Time exceeded in transit (ICMPv4 type 11, ICMPv6 type 3), code 0.
    TimeExceeded,
}

/// One packet the fake peer sends in answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The correct echo reply.
    Echo,
    /// The correct reply with its ICMP checksum spoiled.
    BadChecksum,
    /// The reply with the last payload byte flipped and a valid checksum (nonce intact).
    CorruptPayload,
    /// The reply with another echo id (id ^ 0x8000).
    WrongId,
    /// The reply with another sequence number (seq ^ 0x8000).
    WrongSeq,
    /// The correct reply, but from this source address instead of the target.
    FromSource(IpAddr),
    /// An ICMP error from `from` quoting the request.
    Error { kind: ErrorKind, from: IpAddr },
    /// An ICMP error from `from` quoting a request to the same target with the same id and seq
    /// but another nonce: an error that looks like ours but is not.
    ForeignError { kind: ErrorKind, from: IpAddr },
    /// An ICMP error from `from` quoting only the first `quote` bytes of the request datagram
    /// (IP header included): 28 (IPv4) or 48 (IPv6) is RFC 792's minimum, header plus 8 bytes.
    ShortError {
        kind: ErrorKind,
        from: IpAddr,
        quote: usize,
    },
    /// The reply with the correct header and payload, zero-padded to this many payload bytes.
    Oversized(usize),
}

/// A reply and how long after the request it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub after: Duration,
    pub reply: Reply,
}

impl Action {
    pub fn now(reply: Reply) -> Action {
        Action::after(Duration::ZERO, reply)
    }

    pub fn after(after: Duration, reply: Reply) -> Action {
        Action { after, reply }
    }
}

/// How the fake peer answers requests to one address.
///
/// Each request that is not dropped gets every action of the script, each `after` its delay plus
/// one jitter sample per request (so a script keeps its order). With `reorder`, a request's
/// replies are held until the next request to that address arrives; then that request's replies
/// go out first and the held ones after them (a reply held when no further request comes is never
/// sent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    pub actions: Vec<Action>,
    /// When not empty, the n-th request to the address gets `per_request[n % len]` instead of
    /// `actions` (counting from the first request after the behaviour was set).
    pub per_request: Vec<Vec<Action>>,
    pub jitter: Duration,
    /// Share of requests ignored, drawn from the peer's seeded generator.
    pub drop_share: f64,
    pub reorder: bool,
}

impl Behaviour {
    /// Never answers.
    pub fn silent() -> Behaviour {
        Behaviour::default()
    }

    /// Answers correctly at once.
    pub fn echo() -> Behaviour {
        Behaviour::delayed(Duration::ZERO)
    }

    /// Answers correctly after `delay`.
    pub fn delayed(delay: Duration) -> Behaviour {
        Behaviour::script(vec![Action::after(delay, Reply::Echo)])
    }

    /// Answers correctly after `delay`, which the test chooses beyond the probe's deadline.
    pub fn late(delay: Duration) -> Behaviour {
        Behaviour::delayed(delay)
    }

    /// Answers correctly twice, `gap` apart.
    pub fn duplicate(gap: Duration) -> Behaviour {
        Behaviour::script(vec![
            Action::now(Reply::Echo),
            Action::after(gap, Reply::Echo),
        ])
    }

    /// Sends only `reply`, at once.
    pub fn only(reply: Reply) -> Behaviour {
        Behaviour::script(vec![Action::now(reply)])
    }

    /// Sends `bogus` at once, then the correct reply after `delay`.
    pub fn bogus_then_echo(bogus: Reply, delay: Duration) -> Behaviour {
        Behaviour::script(vec![Action::now(bogus), Action::after(delay, Reply::Echo)])
    }

    pub fn script(actions: Vec<Action>) -> Behaviour {
        Behaviour {
            actions,
            ..Behaviour::default()
        }
    }

    /// Answers consecutive requests with consecutive scripts, cycling.
    pub fn cycle(scripts: Vec<Vec<Action>>) -> Behaviour {
        Behaviour {
            per_request: scripts,
            ..Behaviour::default()
        }
    }

    /// Adds a uniform random delay in `0..=jitter` to every request's replies.
    pub fn with_jitter(mut self, jitter: Duration) -> Behaviour {
        self.jitter = jitter;
        self
    }

    /// Ignores this share (0.0..=1.0) of requests.
    pub fn dropping(mut self, share: f64) -> Behaviour {
        self.drop_share = share;
        self
    }

    /// Swaps the replies of consecutive requests.
    pub fn reordered(mut self) -> Behaviour {
        self.reorder = true;
        self
    }
}
