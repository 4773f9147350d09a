//! Batch sending on the in-memory transport: one system call per batch, every probe settled
//! exactly once (by its reply, by expiry, or at once when it could not be sent), and a reply
//! after the deadline counted late even before the sender expired the probe.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::icmp::fake::FakeTransport;
use crate::icmp::packet::Family;
use crate::icmp::socket::{SocketKey, SocketKind};
use crate::icmp::stats::RejectReason;
use crate::icmp::{Answer, ReplyObserver};

/// What a sink heard, per send index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    Reply,
    Timeout,
    SendError,
    Other,
}

#[derive(Default)]
struct RecordingSink {
    heard: Mutex<HashMap<u64, Vec<Heard>>>,
    duplicates: std::sync::atomic::AtomicUsize,
}

impl RecordingSink {
    fn count(&self, wanted: Heard) -> usize {
        let heard = self.heard.lock().expect("lock");
        heard.values().flatten().filter(|h| **h == wanted).count()
    }

    fn settled_once_each(&self, indexes: std::ops::Range<u64>) -> bool {
        let heard = self.heard.lock().expect("lock");
        indexes
            .clone()
            .all(|i| heard.get(&i).is_some_and(|h| h.len() == 1))
            && heard.len() == indexes.count()
    }
}

impl ReplyObserver for RecordingSink {
    fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }
}

impl AnswerSink for RecordingSink {
    fn settle(&self, send_index: u64, outcome: Result<crate::icmp::Answer, EchoFailure>) {
        let heard = match outcome {
            Ok(Answer::Echo { .. }) => Heard::Reply,
            Err(EchoFailure::Timeout) => Heard::Timeout,
            Err(EchoFailure::Send(_)) => Heard::SendError,
            _ => Heard::Other,
        };
        let mut all = self.heard.lock().expect("lock");
        all.entry(send_index).or_default().push(heard);
    }
}

fn address(index: usize) -> IpAddr {
    format!("198.18.{}.{}", index / 250, 1 + index % 250)
        .parse()
        .expect("test address")
}

fn probes(count: usize, sink: &Arc<RecordingSink>) -> Vec<BatchProbe> {
    (0..count)
        .map(|index| BatchProbe {
            request: EchoRequest {
                destination: address(index),
                scope_id: 0,
                source: None,
                ttl: None,
                dont_fragment: false,
                payload_size: 0,
            },
            sink: Arc::clone(sink) as Arc<dyn AnswerSink>,
            send_index: index as u64,
        })
        .collect()
}

const V4_PING: SocketKey = SocketKey {
    family: Family::V4,
    kind: SocketKind::Dgram,
    source: None,
    dont_fragment: false,
};

#[tokio::test(start_paused = true)]
async fn a_batch_is_one_system_call_and_every_probe_is_settled_once() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let sink = Arc::new(RecordingSink::default());
    let mut tickets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    pinger
        .send_batch(probes(300, &sink), deadline, &mut tickets)
        .await;
    let endpoint = transport.endpoint(&V4_PING);
    assert_eq!(endpoint.send_calls.load(Ordering::Relaxed), 1);
    assert_eq!(tickets.len(), 300);
    let sent = endpoint.sent();
    assert_eq!(sent.len(), 300);
    // Every other probe is answered; one of those answers comes twice.
    for packet in sent.iter().step_by(2) {
        endpoint.deliver(endpoint.reply_to(packet, None), packet.destination);
    }
    endpoint.deliver(endpoint.reply_to(&sent[0], None), sent[0].destination);
    while sink.count(Heard::Reply) < 150 || sink.duplicates.load(Ordering::Relaxed) < 1 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep_until(deadline).await;
    for ticket in tickets {
        pinger.expire(ticket);
    }
    assert_eq!(sink.count(Heard::Reply), 150);
    assert_eq!(sink.count(Heard::Timeout), 150);
    assert_eq!(sink.duplicates.load(Ordering::Relaxed), 1);
    assert!(sink.settled_once_each(0..300));
    assert_eq!(pinger.stats().matched(), 150);
}

#[tokio::test(start_paused = true)]
async fn a_reply_after_the_deadline_is_late_before_the_sender_expires_it() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let sink = Arc::new(RecordingSink::default());
    let mut tickets = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(100);
    pinger
        .send_batch(probes(1, &sink), deadline, &mut tickets)
        .await;
    tokio::time::sleep_until(deadline + Duration::from_millis(5)).await;
    let endpoint = transport.endpoint(&V4_PING);
    let sent = endpoint.sent();
    endpoint.deliver(endpoint.reply_to(&sent[0], None), sent[0].destination);
    while pinger.stats().rejected(RejectReason::Late) == 0 {
        tokio::task::yield_now().await;
    }
    for ticket in tickets {
        pinger.expire(ticket);
    }
    assert_eq!(sink.count(Heard::Timeout), 1);
    assert!(sink.settled_once_each(0..1));
    assert_eq!(pinger.stats().matched(), 0);
}

/// The receive loop is stalled (this test holds the runtime's only thread) while replies sit in
/// the socket past their deadline: expiry reads them first, and they count by when they arrived.
#[tokio::test]
async fn replies_queued_before_the_deadline_are_matched_even_when_the_receiver_is_behind() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let sink = Arc::new(RecordingSink::default());
    let mut tickets = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(150);
    pinger
        .send_batch(probes(40, &sink), deadline, &mut tickets)
        .await;
    let endpoint = transport.endpoint(&V4_PING);
    let sent = endpoint.sent();
    // Half the replies arrive in time, then nothing reads them until after the deadline.
    for packet in &sent[..20] {
        endpoint.deliver(endpoint.reply_to(packet, None), packet.destination);
    }
    std::thread::sleep(Duration::from_millis(250));
    // The other half arrive after it, still unread when the sender expires.
    for packet in &sent[20..] {
        endpoint.deliver(endpoint.reply_to(packet, None), packet.destination);
    }
    assert!(Instant::now() > deadline);
    pinger.expire_all(tickets);
    assert_eq!(sink.count(Heard::Reply), 20, "arrived in time: received");
    assert_eq!(sink.count(Heard::Timeout), 20, "arrived late: lost");
    assert!(sink.settled_once_each(0..40));
    assert_eq!(pinger.stats().matched(), 20);
    assert_eq!(pinger.stats().rejected(RejectReason::Late), 20);
}

#[tokio::test]
async fn a_send_error_fails_only_its_own_probe() {
    let transport = FakeTransport::new();
    let pinger = Pinger::with_transport(transport.clone());
    let sink = Arc::new(RecordingSink::default());
    let mut tickets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    // Open the socket first so the refusal can be set on it.
    pinger
        .send_batch(probes(1, &sink), deadline, &mut tickets)
        .await;
    let endpoint = transport.endpoint(&V4_PING);
    *endpoint.refused_destination.lock().expect("lock") = Some((address(2), libc::EINVAL));
    let sink = Arc::new(RecordingSink::default());
    tickets.clear();
    pinger
        .send_batch(probes(5, &sink), deadline, &mut tickets)
        .await;
    assert_eq!(tickets.len(), 4, "the others were sent");
    assert_eq!(sink.count(Heard::SendError), 1);
    assert_eq!(
        sink.heard.lock().expect("lock").get(&2),
        Some(&vec![Heard::SendError])
    );
    // 1 call for the first batch, then: 0..=1 sent, 2 fails, 3..=4 sent.
    assert_eq!(endpoint.send_calls.load(Ordering::Relaxed), 4);
    assert_eq!(pinger.stats().send_errors(), 1);
}
