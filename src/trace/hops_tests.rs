//! Unit tests of hop aggregation and mtr's loss rule (no root, no network).

use super::*;

fn address(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// A recorder fed `rounds` rounds over `path` (one address per hop, the last the destination);
/// `answers(ttl, round)` says whether that probe was answered.
fn traced(path: &[&str], rounds: u32, answers: impl Fn(u8, u32) -> bool) -> TraceReport {
    let destination = address(path[path.len() - 1]);
    let mut recorder = HopRecorder::new(destination, 30);
    for round in 0..rounds {
        recorder.start_round();
        for (index, hop) in path.iter().enumerate() {
            let ttl = u8::try_from(index + 1).expect("ttl");
            let from = address(hop);
            let outcome = if !answers(ttl, round) {
                ProbeOutcome::Lost
            } else if index + 1 == path.len() {
                ProbeOutcome::Reply { from, rtt: ms(4) }
            } else {
                ProbeOutcome::TimeExceeded {
                    from,
                    rtt: ms(u64::from(ttl)),
                }
            };
            recorder.record(ttl, outcome);
        }
    }
    recorder.finish()
}

const PATH: [&str; 4] = ["198.18.0.254", "198.18.2.2", "198.18.3.2", "198.18.1.1"];

#[test]
fn a_clean_path_blames_nobody() {
    let report = traced(&PATH, 10, |_, _| true);
    assert!(report.reached());
    assert_eq!(report.hops.len(), 4);
    assert_eq!(report.hop_count(), 4);
    assert_eq!(report.loss_start, None);
    assert!(report.rate_limited.is_empty());
    let first = &report.hops[0];
    assert_eq!((first.sent, first.received), (10, 10));
    assert_eq!(first.addresses, vec![(address(PATH[0]), 10)]);
    assert_eq!(first.rtt_min, Some(ms(1)));
    assert_eq!(report.path_text(), PATH.join(" "));
}

#[test]
fn loss_that_persists_to_the_destination_starts_at_its_first_hop() {
    // Hop 2 and everything after it lose some rounds (not always the same ones).
    let report = traced(&PATH, 10, |ttl, round| {
        ttl < 2 || (round + u32::from(ttl)) % 3 != 0
    });
    let start = report.loss_start.expect("loss start");
    assert_eq!(start.ttl, 2);
    assert_eq!(start.address, Some(address(PATH[1])));
    assert!(report.rate_limited.is_empty());
}

#[test]
fn a_hop_that_drops_replies_while_later_hops_answer_is_rate_limiting() {
    let report = traced(&PATH, 10, |ttl, round| ttl != 1 || round < 4);
    assert_eq!(report.hops[0].received, 4);
    assert!((report.hops[0].loss_ratio() - 0.6).abs() < 1e-9);
    assert_eq!(report.loss_start, None, "the destination lost nothing");
    assert_eq!(report.rate_limited, vec![1]);
}

#[test]
fn a_lossless_hop_in_between_moves_the_blame_after_it() {
    // Hops 1 and 3 and the destination lose; hop 2 answers fully: loss starts at hop 3.
    let report = traced(&PATH, 10, |ttl, round| ttl == 2 || round % 2 == 0);
    assert_eq!(report.loss_start.map(|s| s.ttl), Some(3));
    assert_eq!(report.rate_limited, vec![1]);
}

#[test]
fn a_dead_destination_blames_the_first_silent_hop() {
    let mut recorder = HopRecorder::new(address("198.18.1.1"), 8);
    for _ in 0..3 {
        recorder.start_round();
        for ttl in 1..=8u8 {
            let outcome = match ttl {
                1 => ProbeOutcome::TimeExceeded {
                    from: address(PATH[0]),
                    rtt: ms(1),
                },
                _ => ProbeOutcome::Lost,
            };
            recorder.record(ttl, outcome);
        }
    }
    let report = recorder.finish();
    assert_eq!(report.stop, Stop::MaxHops);
    assert_eq!(
        report.hops.len(),
        2,
        "one silent hop after the last that answered"
    );
    assert_eq!(report.hop_count(), 1);
    assert_eq!(
        report.loss_start,
        Some(LossStart {
            ttl: 2,
            address: None
        })
    );
    assert_eq!(report.path_text(), "198.18.0.254 *");
}

#[test]
fn an_unreachable_ends_the_path_at_its_hop() {
    let mut recorder = HopRecorder::new(address("198.18.1.1"), 30);
    recorder.start_round();
    for ttl in 1..=5u8 {
        let from = address(PATH[usize::from(ttl.min(3)) - 1]);
        let outcome = if ttl < 3 {
            ProbeOutcome::TimeExceeded { from, rtt: ms(1) }
        } else {
            ProbeOutcome::Unreachable {
                from: Some(from),
                icmp_type: 3,
                code: 0,
                rtt: ms(1),
            }
        };
        recorder.record(ttl, outcome);
    }
    assert_eq!(recorder.end_ttl(), Some(3));
    let report = recorder.finish();
    assert!(!report.reached());
    assert_eq!(report.hops.len(), 3);
    assert_eq!(
        report.stop,
        Stop::Unreachable {
            from: Some(address(PATH[2])),
            icmp_type: 3,
            code: 0
        }
    );
    assert_eq!(report.loss_start, None);
}

#[test]
fn probes_beyond_the_destination_are_left_out() {
    let mut recorder = HopRecorder::new(address(PATH[1]), 30);
    recorder.start_round();
    recorder.record(
        1,
        ProbeOutcome::TimeExceeded {
            from: address(PATH[0]),
            rtt: ms(1),
        },
    );
    for ttl in 2..=6 {
        let from = address(PATH[1]);
        recorder.record(ttl, ProbeOutcome::Reply { from, rtt: ms(2) });
    }
    let report = recorder.finish();
    assert!(report.reached());
    assert_eq!(report.hops.len(), 2);
}

#[test]
fn varying_addresses_are_all_listed_most_frequent_first() {
    let mut recorder = HopRecorder::new(address("198.18.1.1"), 30);
    for round in 0..5u64 {
        recorder.start_round();
        let from = address(if round == 0 {
            "198.18.7.1"
        } else {
            "198.18.7.2"
        });
        recorder.record(
            1,
            ProbeOutcome::TimeExceeded {
                from,
                rtt: ms(round + 1),
            },
        );
        let from = address("198.18.1.1");
        recorder.record(2, ProbeOutcome::Reply { from, rtt: ms(3) });
    }
    let report = recorder.finish();
    let hop = &report.hops[0];
    assert_eq!(
        hop.addresses,
        vec![(address("198.18.7.2"), 4), (address("198.18.7.1"), 1)]
    );
    assert_eq!(
        (hop.rtt_min, hop.rtt_avg, hop.rtt_max),
        (Some(ms(1)), Some(ms(3)), Some(ms(5)))
    );
}

#[test]
fn path_changes_ignore_silent_hops() {
    let a = traced(&PATH, 3, |_, _| true);
    let silent_second = traced(&PATH, 3, |ttl, _| ttl != 2);
    assert!(!a.path_differs(&silent_second));
    let mut other = PATH;
    other[1] = "198.18.5.2";
    let b = traced(&other, 3, |_, _| true);
    assert!(a.path_differs(&b));
    let shorter = traced(&["198.18.0.254", "198.18.1.1"], 3, |_, _| true);
    assert!(a.path_differs(&shorter));
}

#[test]
fn the_loss_rule_on_bare_hops() {
    let hop = |ttl: u8, sent: u32, received: u32| Hop {
        ttl,
        addresses: Vec::new(),
        sent,
        received,
        rtt_min: None,
        rtt_avg: None,
        rtt_max: None,
    };
    assert_eq!(loss_start(&[]), None);
    assert_eq!(loss_start(&[hop(1, 10, 10), hop(2, 10, 9)]), Some(1));
    assert_eq!(loss_start(&[hop(1, 10, 9), hop(2, 10, 9)]), Some(0));
    assert_eq!(loss_start(&[hop(1, 10, 0), hop(2, 10, 10)]), None);
    assert_eq!(
        loss_start(&[hop(1, 10, 5), hop(2, 10, 10), hop(3, 10, 0), hop(4, 10, 7)]),
        Some(2)
    );
}
