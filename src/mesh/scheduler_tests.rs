//! Scheduler tests: the slot arithmetic as pure functions, and the real sending loop on the
//! engine's in-memory transport under Tokio's paused clock (exact send times, no root).

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::*;
use crate::config::Config;
use crate::icmp::fake::FakeTransport;
use crate::icmp::socket::SocketKey;
use crate::icmp::{Family, SocketKind};
use crate::mesh::stats::TargetStats;
use crate::mesh::targets::TargetSpec;
use crate::mesh::window::RecentWindow;

#[test]
fn slots_spread_evenly_over_the_round() {
    let start = Instant::now();
    let interval = Duration::from_secs(1);
    let dues: Vec<Duration> = (0..4)
        .map(|slot| slot_due(start, interval, slot, 4) - start)
        .collect();
    assert_eq!(dues, [0, 250, 500, 750].map(Duration::from_millis).to_vec());
    assert_eq!(slot_due(start, interval, 0, 0), start);
}

#[test]
fn the_first_slot_at_a_moment_skips_the_slots_behind_it() {
    let start = Instant::now();
    let interval = Duration::from_secs(60);
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    // Slot 0 (due at 0 s) is behind us even at 0 s; slot 1 is due at 30 s.
    assert_eq!(first_slot_at(start, interval, 2, at(0)), 1);
    assert_eq!(first_slot_at(start, interval, 2, at(10)), 1);
    assert_eq!(first_slot_at(start, interval, 2, at(30)), 2);
    assert_eq!(first_slot_at(start, interval, 2, at(31)), 2);
    assert_eq!(first_slot_at(start, interval, 4, at(59)), 4);
    assert_eq!(first_slot_at(start, interval, 4, at(600)), 4);
    assert_eq!(first_slot_at(start, Duration::ZERO, 4, at(1)), 4);
}

#[test]
fn a_change_before_the_next_round_resumes_the_current_one() {
    let start = Instant::now();
    let interval = Duration::from_secs(60);
    let next_round = start + interval;
    let now = start + Duration::from_secs(10);
    assert_eq!(round_containing(next_round, interval, now), start);
    assert_eq!(round_containing(start, interval, now), start);
}

fn mesh_config(interval: &str) -> MeshConfig {
    let text = format!(
        "modules: {{}}\nmesh:\n  interval: {interval}\n  timeout: 1s\n  \
         peers: {{static: [{{targets: [198.18.0.1], labels: {{peer: a}}}}]}}\n"
    );
    Config::parse(&text, "test.yml")
        .expect("valid config")
        .mesh
        .expect("mesh section")
}

fn table(addresses: &[&str]) -> TargetTable {
    let targets: Vec<Arc<MeshTarget>> = addresses
        .iter()
        .map(|address| {
            let address: IpAddr = address.parse().expect("test address");
            Arc::new(MeshTarget {
                spec: TargetSpec {
                    address,
                    labels: Arc::new(crate::mesh::labels::LabelSet::new([(
                        "peer",
                        address.to_string(),
                    )])),
                },
                exported_labels: Arc::new(crate::mesh::labels::LabelSet::new([(
                    "peer",
                    address.to_string(),
                )])),
                rendered_labels: Arc::from(format!("peer=\"{address}\"")),
                stats: Mutex::new(TargetStats::new(1)),
                recent: Mutex::new(RecentWindow::default()),
                next_send_index: AtomicU64::new(0),
                buckets: Arc::from(vec![0.1]),
            })
        })
        .collect();
    TargetTable {
        targets,
        buckets: vec![0.1],
        ..TargetTable::default()
    }
}

fn sends(transport: &FakeTransport) -> Vec<(IpAddr, Duration)> {
    let key = SocketKey {
        family: Family::V4,
        kind: SocketKind::Dgram,
        source: None,
        dont_fragment: false,
    };
    let opened = transport.opened.lock().expect("lock");
    let Some((_, _, endpoint)) = opened.iter().find(|(k, _, _)| *k == key) else {
        return Vec::new();
    };
    endpoint
        .sent()
        .iter()
        .map(|sent| (sent.destination, sent.at.elapsed()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn sends_are_evenly_paced_within_the_round() {
    let transport = FakeTransport::new();
    let shared = Arc::new(MeshShared::new(
        Pinger::with_transport(transport.clone()),
        Some(mesh_config("1s")),
    ));
    shared.store_table(table(&[
        "198.18.0.1",
        "198.18.0.2",
        "198.18.0.3",
        "198.18.0.4",
    ]));
    let start = Instant::now();
    let scheduler = tokio::spawn(run(Arc::clone(&shared)));
    tokio::time::sleep_until(start + Duration::from_millis(1990)).await;
    scheduler.abort();
    let now = Instant::now();
    let offsets: Vec<u128> = sends(&transport)
        .iter()
        .map(|(_, ago)| (now - *ago - start).as_millis())
        .collect();
    // One tick is interval/100 = 10 ms: a send may go out up to one tick before its slot.
    let expected = [0, 250, 500, 750, 1000, 1250, 1500, 1750];
    assert_eq!(offsets.len(), expected.len(), "{offsets:?}");
    for (got, want) in offsets.iter().zip(expected) {
        assert!(*got <= want && want - *got <= 10, "{offsets:?}");
    }
    assert_eq!(shared.late_sends.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_removed_peer_is_not_probed_for_the_rest_of_the_round() {
    let transport = FakeTransport::new();
    let shared = Arc::new(MeshShared::new(
        Pinger::with_transport(transport.clone()),
        Some(mesh_config("60s")),
    ));
    shared.store_table(table(&["198.18.0.1", "198.18.0.2"]));
    let start = Instant::now();
    let scheduler = tokio::spawn(run(Arc::clone(&shared)));
    tokio::time::sleep_until(start + Duration::from_secs(10)).await;
    let a: IpAddr = "198.18.0.1".parse().expect("address");
    let b: IpAddr = "198.18.0.2".parse().expect("address");
    assert_eq!(
        sends(&transport)
            .iter()
            .map(|(to, _)| *to)
            .collect::<Vec<_>>(),
        [a]
    );
    // b leaves at 10 s; its slot was at 30 s.
    shared.store_table(table(&["198.18.0.1"]));
    tokio::time::sleep_until(start + Duration::from_secs(125)).await;
    scheduler.abort();
    let destinations: Vec<IpAddr> = sends(&transport).iter().map(|(to, _)| *to).collect();
    assert_eq!(destinations, [a, a, a], "b is never probed after it left");

    // A target added mid-round is probed from its slot in the current round on.
    let transport = FakeTransport::new();
    let shared = Arc::new(MeshShared::new(
        Pinger::with_transport(transport.clone()),
        Some(mesh_config("60s")),
    ));
    shared.store_table(table(&["198.18.0.1"]));
    let start = Instant::now();
    let scheduler = tokio::spawn(run(Arc::clone(&shared)));
    tokio::time::sleep_until(start + Duration::from_secs(10)).await;
    shared.store_table(table(&["198.18.0.1", "198.18.0.2"]));
    tokio::time::sleep_until(start + Duration::from_secs(45)).await;
    scheduler.abort();
    let destinations: Vec<IpAddr> = sends(&transport).iter().map(|(to, _)| *to).collect();
    assert_eq!(
        destinations,
        [a, b],
        "b joins at its slot (30 s), not a round later"
    );
}

#[test]
fn a_tick_holds_about_a_batch_of_slots_between_1_and_10_ms() {
    let second = Duration::from_secs(1);
    assert_eq!(tick_for(second, 10), Duration::from_millis(10));
    assert_eq!(tick_for(second, 10_000), Duration::from_micros(6_400));
    assert_eq!(tick_for(second, 100_000), Duration::from_millis(1));
    assert_eq!(tick_for(second, 0), Duration::from_millis(10));
}

fn v4_ping_endpoint(transport: &FakeTransport) -> Option<Arc<crate::icmp::fake::FakeEndpoint>> {
    transport.try_endpoint(&SocketKey {
        family: Family::V4,
        kind: SocketKind::Dgram,
        source: None,
        dont_fragment: false,
    })
}

#[tokio::test(start_paused = true)]
async fn the_probes_of_one_tick_go_out_in_one_system_call() {
    let transport = FakeTransport::new();
    let shared = Arc::new(MeshShared::new(
        Pinger::with_transport(transport.clone()),
        Some(mesh_config("1s")),
    ));
    let addresses: Vec<String> = (0..1000)
        .map(|i| format!("198.18.{}.{}", i / 250, 1 + i % 250))
        .collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    shared.store_table(table(&addresses));
    let start = Instant::now();
    let scheduler = tokio::spawn(run(Arc::clone(&shared)));
    tokio::time::sleep_until(start + Duration::from_millis(995)).await;
    scheduler.abort();
    let endpoint = v4_ping_endpoint(&transport).expect("ping socket opened");
    let calls = endpoint.send_calls.load(Ordering::Relaxed);
    // A batch goes out up to a tick (10 ms) early: the next round's first slots may be in.
    let sent = endpoint.sent().len();
    assert!((1000..=1011).contains(&sent), "{sent} sent");
    // 1000 slots per second, a 10 ms tick: the slots due from a wakeup to a tick later (10 or
    // 11 of them) share a batch, so about 91 calls, not 1000.
    assert!((85..=105).contains(&calls), "{calls} send calls");
    assert_eq!(shared.late_sends.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn every_probe_ends_as_received_or_lost_and_counts_stay_exact() {
    let transport = FakeTransport::new();
    let shared = Arc::new(MeshShared::new(
        Pinger::with_transport(transport.clone()),
        Some(mesh_config("100ms")),
    ));
    let addresses: Vec<String> = (1..=20).map(|i| format!("198.18.0.{i}")).collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    shared.store_table(table(&addresses));
    let start = Instant::now();
    let scheduler = tokio::spawn(run(Arc::clone(&shared)));
    // The "network": answers every probe to an even address 2 ms after it was sent.
    let mut answered = 0;
    while Instant::now() < start + Duration::from_millis(2_500) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let Some(endpoint) = v4_ping_endpoint(&transport) else {
            continue;
        };
        let sent = endpoint.sent();
        for packet in &sent[answered..] {
            if let IpAddr::V4(v4) = packet.destination
                && v4.octets()[3] % 2 == 0
            {
                endpoint.deliver(endpoint.reply_to(packet, None), packet.destination);
            }
        }
        answered = sent.len();
    }
    // Stop sending, then let every deadline (timeout 1 s) pass.
    let probed = shared.table.load_full();
    shared.store_table(TargetTable::default());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    scheduler.abort();
    let mut total_sent = 0;
    for target in &probed.targets {
        let address = target.spec.address.to_string();
        let stats = target.stats().clone();
        assert_eq!(stats.sent, stats.received + stats.lost, "{address}");
        let even = address.ends_with(['0', '2', '4', '6', '8']);
        assert_eq!(stats.lost == 0, even, "{address}: {stats:?}");
        assert_eq!(stats.received == 0, !even, "{address}: {stats:?}");
        total_sent += stats.sent;
    }
    let endpoint = v4_ping_endpoint(&transport).expect("ping socket opened");
    assert_eq!(
        total_sent,
        endpoint.sent().len() as u64,
        "every probe settled"
    );
}
