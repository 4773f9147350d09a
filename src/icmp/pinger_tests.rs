//! Engine tests on the in-memory transport: matching, per-packet TTL, one receiver per raw
//! family, ping-socket siblings, duplicates credited to their own probe, late replies, sequence
//! exhaustion, large payloads, ICMP errors with and without the nonce, and idle sockets.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::*;
use crate::icmp::fake::{FakeEndpoint, FakeTransport, SentPacket};
use crate::icmp::stats::RejectReason;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn request(destination: &str) -> EchoRequest {
    EchoRequest {
        destination: ip(destination),
        scope_id: 0,
        source: None,
        ttl: None,
        dont_fragment: false,
        payload_size: 0,
    }
}

fn key(family: Family, kind: SocketKind) -> SocketKey {
    SocketKey {
        family,
        kind,
        source: None,
        dont_fragment: false,
    }
}

fn raw_only() -> Arc<FakeTransport> {
    let transport = FakeTransport::new();
    transport.refuse_dgram.store(true, Ordering::Relaxed);
    transport
}

/// Starts an echo on its own task and waits until its packet went out.
async fn start_echo(
    pinger: &Pinger,
    (transport, sends_on): (&FakeTransport, SocketKey),
    request: EchoRequest,
    timeout: Duration,
    observer: Option<Arc<dyn ReplyObserver>>,
) -> (tokio::task::JoinHandle<EchoResult>, SentPacket) {
    let pinger = pinger.clone();
    let endpoint = || transport.try_endpoint(&sends_on);
    let before = sent_count(&endpoint);
    let task = tokio::spawn(async move {
        pinger
            .echo_observed(&request, Instant::now() + timeout, observer)
            .await
    });
    loop {
        if sent_count(&endpoint) > before {
            break;
        }
        tokio::task::yield_now().await;
    }
    let sent = endpoint()
        .and_then(|endpoint| endpoint.sent().last().cloned())
        .expect("a sent packet");
    (task, sent)
}

/// [`start_echo`] of a default request to `address`, with no observer.
async fn start_plain(
    pinger: &Pinger,
    sends_on: (&FakeTransport, SocketKey),
    address: &str,
    timeout: Duration,
) -> (tokio::task::JoinHandle<EchoResult>, SentPacket) {
    start_echo(pinger, sends_on, request(address), timeout, None).await
}

fn sent_count(endpoint: &impl Fn() -> Option<Arc<FakeEndpoint>>) -> usize {
    endpoint().map_or(0, |endpoint| endpoint.sent().len())
}

fn rtt_of(result: &EchoResult) -> Option<Duration> {
    match result.outcome {
        Ok(Answer::Echo { rtt, .. }) => Some(rtt),
        _ => None,
    }
}

#[tokio::test]
async fn replies_are_matched_on_every_family_and_kind() {
    for (kind, address) in [
        (SocketKind::Dgram, "198.18.0.1"),
        (SocketKind::Dgram, "2001:2::1"),
        (SocketKind::Raw, "198.18.0.1"),
        (SocketKind::Raw, "2001:2::1"),
    ] {
        let transport = if kind == SocketKind::Raw {
            raw_only()
        } else {
            FakeTransport::new()
        };
        let pinger = Pinger::with_transport(transport.clone());
        let family = Family::of(&ip(address));
        let endpoint_key = key(family, kind);
        let endpoint = || transport.endpoint(&endpoint_key);
        let (task, sent) = start_echo(
            &pinger,
            (&transport, endpoint_key),
            request(address),
            Duration::from_secs(5),
            None,
        )
        .await;
        endpoint().deliver(endpoint().reply_to(&sent, None), ip(address));
        let result = task.await.expect("echo task");
        assert!(rtt_of(&result).is_some(), "{kind:?} {address}: {result:?}");
        assert_eq!(result.socket_kind, Some(kind));
        assert_eq!(pinger.stats().matched(), 1);
        assert_eq!(pinger.stats().received(family), 1);
    }
}

#[tokio::test]
async fn every_ttl_shares_one_socket_and_is_set_per_packet() {
    let transport = raw_only();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Raw);
    let endpoint = || transport.endpoint(&endpoint_key);
    for ttl in [None, Some(64), Some(1)] {
        let probe = EchoRequest {
            ttl,
            ..request("198.18.0.1")
        };
        let (task, sent) = start_echo(
            &pinger,
            (&transport, endpoint_key),
            probe,
            Duration::from_secs(5),
            None,
        )
        .await;
        assert_eq!(sent.ttl, ttl);
        endpoint().deliver(endpoint().reply_to(&sent, None), sent.destination);
        assert!(rtt_of(&task.await.expect("echo task")).is_some());
    }
    assert_eq!(transport.open_count(), 1, "one raw socket for all TTLs");
    assert_eq!(pinger.stats().received(Family::V4), 3);
    assert_eq!(pinger.stats().rejected(RejectReason::UnknownProbe), 0);
}

#[tokio::test]
async fn bound_and_df_raw_sockets_only_send_into_the_family_receiver() {
    let transport = raw_only();
    let pinger = Pinger::with_transport(transport.clone());
    let receiver_key = key(Family::V4, SocketKind::Raw);
    let receiver = || transport.endpoint(&receiver_key);
    let bound_key = SocketKey {
        source: Some(ip("198.18.0.2")),
        dont_fragment: true,
        ..key(Family::V4, SocketKind::Raw)
    };
    let probe = EchoRequest {
        source: Some(ip("198.18.0.2")),
        dont_fragment: true,
        ..request("198.18.0.1")
    };
    let (task, sent) = start_echo(
        &pinger,
        (&transport, bound_key),
        probe,
        Duration::from_secs(5),
        None,
    )
    .await;
    let roles: Vec<_> = transport
        .opened
        .lock()
        .unwrap()
        .iter()
        .map(|(k, role, _)| (k.source, *role))
        .collect();
    assert_eq!(
        roles,
        vec![
            (None, Role::SendReceive),
            (Some(ip("198.18.0.2")), Role::SendOnly)
        ]
    );
    receiver().deliver(receiver().reply_to(&sent, None), sent.destination);
    assert!(rtt_of(&task.await.expect("echo task")).is_some());
    assert_eq!(pinger.stats().received(Family::V4), 1);
}

#[tokio::test]
async fn a_ping_socket_reply_seen_by_the_raw_socket_is_counted_once() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let dgram_key = key(Family::V4, SocketKind::Dgram);
    let dgram = || transport.endpoint(&dgram_key);
    let raw_df_key = SocketKey {
        dont_fragment: true,
        ..key(Family::V4, SocketKind::Raw)
    };
    let raw_key = key(Family::V4, SocketKind::Raw);
    let raw = || transport.endpoint(&raw_key);
    // A DF probe opens the raw receiver; an ordinary probe uses the ping socket.
    let df_probe = EchoRequest {
        dont_fragment: true,
        ..request("198.18.0.9")
    };
    let (df_task, df_sent) = start_echo(
        &pinger,
        (&transport, raw_df_key),
        df_probe,
        Duration::from_secs(5),
        None,
    )
    .await;
    let (task, sent) = start_plain(
        &pinger,
        (&transport, dgram_key),
        "198.18.0.1",
        Duration::from_secs(5),
    )
    .await;
    // The kernel hands the ping probe's reply to the ping socket and to every raw socket.
    let ping_reply_as_raw = raw().reply_to(&sent, None);
    raw().deliver(ping_reply_as_raw, sent.destination);
    dgram().deliver(dgram().reply_to(&sent, None), sent.destination);
    raw().deliver(raw().reply_to(&df_sent, None), df_sent.destination);
    assert!(rtt_of(&task.await.expect("echo task")).is_some());
    assert!(rtt_of(&df_task.await.expect("echo task")).is_some());
    let stats = pinger.stats();
    assert_eq!(stats.matched(), 2);
    assert_eq!(stats.received(Family::V4), 2, "each reply counted once");
    for reason in RejectReason::ALL {
        assert_eq!(stats.rejected(reason), 0, "{reason:?}");
    }
    assert_ne!(df_sent.id(), sent.id(), "raw ids avoid ping idents");
}

#[derive(Default)]
struct CountingObserver(AtomicUsize);

impl ReplyObserver for CountingObserver {
    fn duplicate(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn duplicates_are_credited_to_the_probe_that_asked() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Dgram);
    let endpoint = || transport.endpoint(&endpoint_key);
    let observer = Arc::new(CountingObserver::default());
    let as_observer: Arc<dyn ReplyObserver> = observer.clone();
    let (observed, observed_sent) = start_echo(
        &pinger,
        (&transport, endpoint_key),
        request("198.18.0.1"),
        Duration::from_secs(5),
        Some(as_observer),
    )
    .await;
    let (plain, plain_sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "198.18.0.1",
        Duration::from_secs(5),
    )
    .await;
    for sent in [&observed_sent, &plain_sent] {
        let reply = endpoint().reply_to(sent, None);
        endpoint().deliver(reply.clone(), sent.destination);
        endpoint().deliver(reply, sent.destination);
    }
    assert!(rtt_of(&observed.await.expect("echo task")).is_some());
    assert!(rtt_of(&plain.await.expect("echo task")).is_some());
    while pinger.stats().rejected(RejectReason::Duplicate) < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(observer.0.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_reply_after_the_deadline_is_late_not_an_answer() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V6, SocketKind::Dgram);
    let endpoint = || transport.endpoint(&endpoint_key);
    let (task, sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "2001:2::1",
        Duration::from_millis(50),
    )
    .await;
    let result = task.await.expect("echo task");
    assert!(matches!(result.outcome, Err(EchoFailure::Timeout)));
    endpoint().deliver(endpoint().reply_to(&sent, None), sent.destination);
    while pinger.stats().rejected(RejectReason::Late) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pinger.stats().matched(), 0);
}

#[tokio::test(start_paused = true)]
async fn exhausted_sequence_numbers_fail_busy_instead_of_spinning() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let probe = request("198.18.0.1");
    let mut waiting = FuturesUnordered::new();
    for _ in 0..65_536 {
        waiting.push(pinger.echo(&probe, deadline));
    }
    // Poll every probe once: each registers and sends, taking all 65 536 sequence numbers.
    assert!(
        futures_util::FutureExt::now_or_never(waiting.next()).is_none(),
        "no probe can finish yet"
    );
    let result = pinger.echo(&probe, deadline).await;
    assert!(
        matches!(result.outcome, Err(EchoFailure::Busy)),
        "{:?}",
        result.outcome
    );
    assert_eq!(pinger.stats().busy(), 1);
    let endpoint = transport.endpoint(&key(Family::V4, SocketKind::Dgram));
    assert_eq!(endpoint.sent().len(), 65_536);
    // Another destination is not affected.
    let other = pinger
        .echo(
            &request("198.18.0.2"),
            Instant::now() + Duration::from_millis(1),
        )
        .await;
    assert!(matches!(other.outcome, Err(EchoFailure::Timeout)));
}

#[test]
fn the_free_sequence_search_is_bounded() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let sender = pinger.socket_for(&request("198.18.0.1")).expect("socket");
    let tries = AtomicUsize::new(0);
    let found = pinger.free_key(&sender, ip("198.18.0.1"), None, |_| {
        tries.fetch_add(1, Ordering::Relaxed);
        true
    });
    assert!(found.is_none());
    assert_eq!(tries.load(Ordering::Relaxed), SEQUENCE_ATTEMPTS);
}

#[tokio::test]
async fn sequence_numbers_of_two_destinations_are_unrelated() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Dgram);
    let endpoint = || transport.endpoint(&endpoint_key);
    let mut offsets = Vec::new();
    for _ in 0..8 {
        let deadline = Instant::now() + Duration::from_millis(1);
        let a = pinger.echo(&request("198.18.0.1"), deadline).await.seq;
        let b = pinger.echo(&request("198.18.0.2"), deadline).await.seq;
        offsets.push(b.wrapping_sub(a));
    }
    // Consecutive probes to one destination advance by one, but the gap between the two
    // destinations is a secret offset, not the counter's step.
    assert!(offsets.iter().all(|offset| *offset == offsets[0]));
    assert_ne!(offsets[0], 1, "offset is keyed per destination");
    assert_eq!(endpoint().sent().len(), 16);
}

#[tokio::test]
async fn the_first_large_payload_reply_is_not_truncated() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Dgram);
    let endpoint = || transport.endpoint(&endpoint_key);
    let (small, small_sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "198.18.0.1",
        Duration::from_secs(5),
    )
    .await;
    endpoint().deliver(
        endpoint().reply_to(&small_sent, None),
        small_sent.destination,
    );
    assert!(rtt_of(&small.await.expect("echo task")).is_some());
    let large = EchoRequest {
        payload_size: 4000,
        ..request("198.18.0.1")
    };
    let (task, sent) = start_echo(
        &pinger,
        (&transport, endpoint_key),
        large,
        Duration::from_secs(5),
        None,
    )
    .await;
    endpoint().deliver(endpoint().reply_to(&sent, None), sent.destination);
    let result = task.await.expect("echo task");
    assert!(rtt_of(&result).is_some(), "{:?}", result.outcome);
    assert_eq!(pinger.stats().rejected(RejectReason::Truncated), 0);
}

#[tokio::test]
async fn an_icmp_error_carrying_the_nonce_ends_the_probe_at_once() {
    let transport = raw_only();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Raw);
    let endpoint = || transport.endpoint(&endpoint_key);
    let (task, sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "198.18.0.1",
        Duration::from_secs(3600),
    )
    .await;
    endpoint().deliver(
        endpoint().error_for(&sent, ip("198.18.0.254"), 28),
        ip("198.18.0.254"),
    );
    let result = task.await.expect("echo task");
    assert!(matches!(
        result.outcome,
        Ok(Answer::IcmpError { from: Some(from), .. }) if from == ip("198.18.0.254")
    ));
}

#[tokio::test]
async fn an_icmp_error_with_a_wrong_nonce_is_rejected() {
    let transport = raw_only();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Raw);
    let endpoint = || transport.endpoint(&endpoint_key);
    let (task, sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "198.18.0.1",
        Duration::from_secs(3600),
    )
    .await;
    let mut forged = sent.clone();
    forged.bytes[8] ^= 0xff;
    endpoint().deliver(
        endpoint().error_for(&forged, ip("198.18.0.66"), 28),
        ip("198.18.0.66"),
    );
    while pinger.stats().rejected(RejectReason::UnrelatedError) == 0 {
        tokio::task::yield_now().await;
    }
    endpoint().deliver(endpoint().reply_to(&sent, None), sent.destination);
    assert!(rtt_of(&task.await.expect("echo task")).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_short_quoted_error_is_a_hint_that_a_reply_overrides() {
    let transport = raw_only();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Raw);
    let endpoint = || transport.endpoint(&endpoint_key);
    // An off-path forger who guessed (id, seq) quotes only the 8-byte echo header.
    let (task, sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "198.18.0.1",
        Duration::from_secs(1),
    )
    .await;
    endpoint().deliver(
        endpoint().error_for(&sent, ip("198.18.0.66"), 0),
        ip("198.18.0.66"),
    );
    while pinger.stats().error_hints() == 0 {
        tokio::task::yield_now().await;
    }
    endpoint().deliver(endpoint().reply_to(&sent, None), sent.destination);
    assert!(rtt_of(&task.await.expect("echo task")).is_some());

    // Without a reply, the hint is the probe's outcome at its deadline.
    let (task, sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "198.18.0.1",
        Duration::from_secs(1),
    )
    .await;
    endpoint().deliver(
        endpoint().error_for(&sent, ip("198.18.0.254"), 0),
        ip("198.18.0.254"),
    );
    let result = task.await.expect("echo task");
    assert!(matches!(result.outcome, Ok(Answer::IcmpError { .. })));
}

#[tokio::test(start_paused = true)]
async fn ping_socket_errors_without_the_nonce_are_hints_too() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let endpoint_key = key(Family::V4, SocketKind::Dgram);
    let endpoint = || transport.endpoint(&endpoint_key);
    let (task, sent) = start_plain(
        &pinger,
        (&transport, endpoint_key),
        "198.18.0.1",
        Duration::from_secs(2),
    )
    .await;
    let queued = |quoted: usize| crate::icmp::socket::receive::QueuedError {
        original: sent.bytes[..packet::ECHO_HEADER_LEN + quoted].to_vec(),
        destination: Some(sent.destination),
        origin: libc::SO_EE_ORIGIN_ICMP,
        icmp_type: 3,
        icmp_code: 1,
        errno: libc::EHOSTUNREACH,
        offender: Some(ip("198.18.0.254")),
        kernel_rx_ns: None,
    };
    endpoint().deliver_error(queued(0));
    while pinger.stats().error_hints() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(!task.is_finished());
    endpoint().deliver_error(queued(8));
    let result = task.await.expect("echo task");
    assert!(matches!(result.outcome, Ok(Answer::IcmpError { .. })));
}

#[tokio::test(start_paused = true)]
async fn idle_sockets_are_closed_and_reopened_on_demand() {
    let transport = raw_only();
    let pinger = Pinger::with_transport(transport.clone());
    let bound = EchoRequest {
        source: Some(ip("198.18.0.2")),
        ..request("198.18.0.1")
    };
    let deadline = Instant::now() + Duration::from_millis(10);
    let _ = pinger.echo(&bound, deadline).await;
    assert_eq!(pinger.stats().sockets_open(Family::V4), (0, 2));
    tokio::time::sleep(IDLE_CLOSE + Duration::from_secs(60)).await;
    assert_eq!(pinger.stats().sockets_open(Family::V4), (0, 0));
    assert!(pinger.sockets().is_empty());
    let _ = pinger
        .echo(
            &request("198.18.0.1"),
            Instant::now() + Duration::from_millis(10),
        )
        .await;
    assert_eq!(pinger.stats().sockets_open(Family::V4), (0, 1));
    assert_eq!(transport.open_count(), 3);
}
