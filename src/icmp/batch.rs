//! Batched probes: [`Pinger::send_batch`] sends many echo requests with one `sendmmsg` per
//! socket, and [`Pinger::expire`] ends the ones nobody answered by their deadline.
//!
//! This is the mesh's send path at scale. No future, timer, channel or task exists per probe:
//! a probe is one entry in its channel's table whose [`AnswerSink`] the receive task tells
//! directly, and the sender keeps the returned [`Ticket`]s in deadline order (a FIFO is a
//! perfect timer queue when every probe has the same timeout) and expires them on its pacing
//! tick. Whoever takes the entry out of the table (receiver or expiry) settles the probe, so
//! every probe is settled exactly once. A reply that arrives after the deadline but before the
//! tick's expiry is still late (the entry carries its deadline), and one that arrived before it
//! but was not read yet is matched (expiry first reads what is queued, and a reply is judged by
//! its kernel arrival time), so accounting depends neither on the tick nor on a busy receiver.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{ASYNC_ERROR_RETRIES, Pinger, SendSocket};
use crate::icmp::channel::Channel;
use crate::icmp::demux;
use crate::icmp::echo::{AnswerSink, EchoFailure, EchoRequest};
use crate::icmp::packet;
use crate::icmp::socket::{self, send_many::MAX_BATCH};
use crate::icmp::table::{Completion, PendingProbe, ProbeKey};
use crate::icmp::transport::OutDatagram;

/// One probe of a batch.
pub struct BatchProbe {
    pub request: EchoRequest,
    /// Told the outcome (and duplicates).
    pub sink: Arc<dyn AnswerSink>,
    /// Handed back to the sink with the outcome.
    pub send_index: u64,
}

/// A sent batch probe; hand it to [`Pinger::expire`] once its deadline passed.
pub struct Ticket {
    channel: Arc<Channel>,
    key: ProbeKey,
}

/// A registered probe of one socket's batch, waiting for its turn in `sendmmsg`.
struct Registered {
    key: ProbeKey,
    bytes: Range<usize>,
    destination: std::net::SocketAddr,
    ttl: Option<u8>,
}

impl Pinger {
    /// Sends `probes` now, in order, one `sendmmsg` per socket (chunks of at most 1024), and
    /// appends a ticket per sent probe to `tickets`. Their sinks hear each answer as it
    /// arrives; a reply after `deadline` counts as a timeout. Probes that cannot be sent (no
    /// socket, no free sequence number, a send error) are settled at once with the reason.
    pub async fn send_batch(
        &self,
        probes: Vec<BatchProbe>,
        deadline: tokio::time::Instant,
        tickets: &mut Vec<Ticket>,
    ) {
        let mut groups: Vec<(Arc<SendSocket>, Vec<BatchProbe>)> = Vec::new();
        for probe in probes {
            match self.socket_for(&probe.request) {
                Err(error) => probe
                    .sink
                    .settle(probe.send_index, Err(EchoFailure::Socket(error))),
                Ok(sender) => match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &sender)) {
                    Some((_, group)) => group.push(probe),
                    None => groups.push((sender, vec![probe])),
                },
            }
        }
        for (sender, group) in groups {
            self.send_group(&sender, group, deadline.into_std(), tickets)
                .await;
        }
    }

    /// Ends probes whose deadline passed, as [`Pinger::expire`] does, after reading every reply
    /// already queued on their channels: when the receive loop is behind (a busy machine), a
    /// reply that arrived before its deadline is still matched, never counted lost.
    pub fn expire_all(&self, tickets: Vec<Ticket>) {
        let mut channels: Vec<&Arc<Channel>> = Vec::new();
        for ticket in &tickets {
            if !channels
                .iter()
                .any(|seen| Arc::ptr_eq(seen, &ticket.channel))
            {
                channels.push(&ticket.channel);
            }
        }
        for channel in channels {
            channel.read_queued_now(&self.inner.core);
        }
        for ticket in tickets {
            self.expire(ticket);
        }
    }

    /// Ends a probe whose deadline passed: if nobody answered it yet, its sink hears
    /// `Timeout` (or the ICMP error a short quote hinted at).
    pub fn expire(&self, ticket: Ticket) {
        let expired = ticket.channel.probes().expire(&ticket.key);
        if let Some(probe) = expired {
            demux::settle_expired(self.stats(), probe);
        }
    }

    async fn send_group(
        &self,
        sender: &SendSocket,
        probes: Vec<BatchProbe>,
        deadline: Instant,
        tickets: &mut Vec<Ticket>,
    ) {
        let channel = &sender.channel;
        let family = sender.key.family;
        let mut bytes = Vec::with_capacity(probes.len() * (packet::ECHO_HEADER_LEN + 64));
        let mut scratch = Vec::new();
        let mut registered = Vec::with_capacity(probes.len());
        let mut busy = Vec::new();
        {
            let mut table = channel.probes();
            let provisional = Instant::now();
            for probe in probes {
                let request = &probe.request;
                let free =
                    self.free_key(sender, request.destination, None, |k| table.is_waiting(k));
                let Some(key) = free else {
                    busy.push(probe);
                    continue;
                };
                let nonce = fastrand::u64(..);
                packet::encode_echo_request(
                    &mut scratch,
                    family,
                    key.id,
                    key.seq,
                    request.payload_size,
                    nonce,
                );
                let start = bytes.len();
                bytes.extend_from_slice(&scratch);
                registered.push(Registered {
                    key,
                    bytes: start..bytes.len(),
                    destination: socket::destination_addr(request.destination, request.scope_id),
                    ttl: request.ttl,
                });
                table.insert(
                    key,
                    PendingProbe {
                        nonce,
                        payload_size: request.payload_size,
                        sent_realtime_ns: socket::realtime_ns() as i64,
                        sent_at: provisional,
                        completion: Completion::Sink {
                            sink: probe.sink,
                            send_index: probe.send_index,
                        },
                        expires_at: Some(deadline),
                        hint: None,
                    },
                );
            }
        }
        for probe in busy {
            self.stats().count_busy();
            probe.sink.settle(probe.send_index, Err(EchoFailure::Busy));
        }
        let mut next = 0;
        let mut retries = ASYNC_ERROR_RETRIES;
        while next < registered.len() {
            let chunk = &registered[next..registered.len().min(next + MAX_BATCH)];
            self.stamp(channel, chunk);
            let datagrams: Vec<OutDatagram<'_>> = chunk
                .iter()
                .map(|r| OutDatagram {
                    bytes: &bytes[r.bytes.clone()],
                    destination: r.destination,
                    ttl: r.ttl,
                })
                .collect();
            let started = Instant::now();
            match sender.endpoint.try_send_many(&datagrams) {
                Ok(0) => {
                    if sender.endpoint.writable().await.is_err() {
                        break;
                    }
                }
                Ok(sent) => {
                    self.learn_send_cost(started.elapsed().as_nanos() as u64, sent);
                    for done in &chunk[..sent] {
                        self.stats().count_sent(family);
                        tickets.push(Ticket {
                            channel: Arc::clone(channel),
                            key: done.key,
                        });
                    }
                    next += sent;
                    retries = ASYNC_ERROR_RETRIES;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = sender.endpoint.writable().await {
                        self.fail_unsent(channel, &registered[next..], &error);
                        return;
                    }
                }
                Err(error) if sender.clears_stale_error(&error, &mut retries) => {}
                Err(error) => {
                    self.fail_unsent(channel, &registered[next..next + 1], &error);
                    next += 1;
                    retries = ASYNC_ERROR_RETRIES;
                }
            }
        }
        if next < registered.len() {
            let closed = io::Error::other("socket closed while sending");
            self.fail_unsent(channel, &registered[next..], &closed);
        }
    }

    /// Stamps each probe of a chunk with its estimated send time, just before the call that
    /// sends them: the n-th leaves about n datagram-times after the first.
    fn stamp(&self, channel: &Channel, chunk: &[Registered]) {
        let per_datagram = self.inner.batch_ns_per_datagram.load(Ordering::Relaxed);
        let mut table = channel.probes();
        let base = Instant::now();
        let base_realtime = socket::realtime_ns() as i64;
        for (index, probe) in chunk.iter().enumerate() {
            let offset = per_datagram * index as u64;
            table.stamp_sent(
                &probe.key,
                base + std::time::Duration::from_nanos(offset),
                base_realtime + offset as i64,
            );
        }
    }

    fn learn_send_cost(&self, elapsed_ns: u64, datagrams: usize) {
        let measured = elapsed_ns / datagrams.max(1) as u64;
        let cost = &self.inner.batch_ns_per_datagram;
        let previous = cost.load(Ordering::Relaxed);
        cost.store((previous * 7 + measured) / 8, Ordering::Relaxed);
    }

    /// Takes probes that were registered but not sent out of the table and settles them with
    /// the send error.
    fn fail_unsent(&self, channel: &Channel, unsent: &[Registered], error: &io::Error) {
        for probe in unsent {
            let taken = channel.probes().expire(&probe.key);
            if let Some(taken) = taken {
                self.stats().count_send_error();
                let copy = match error.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => io::Error::new(error.kind(), error.to_string()),
                };
                taken.completion.settle(Err(EchoFailure::Send(copy)));
            }
        }
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
