//! Correctness under attack, part two: duplicate and late replies, ICMP errors that quote a
//! probe (which must end it at once), and reordering, against the fake peer on raw and ping
//! sockets. The rig and the counter assertions are in `support::hostile`; part one is
//! `tests/hostile_replies.rs`.

mod support;

use std::time::Duration;

use support::fake_peer::{self, Behaviour, ErrorKind, Reply};
use support::hostile::*;

fn duplicates_and_late_replies(sockets: Sockets) {
    let rig = Rig::new(sockets);
    for (family, target, _) in families(60) {
        let context = format!("{sockets:?} {target} duplicate");
        rig.peer
            .set(target, Behaviour::duplicate(Duration::from_millis(30)));
        let before = rig.metrics();
        let metrics = rig.probe(target, "slow");
        assert_success_after(&metrics, Duration::ZERO, &context);
        assert!(rig.peer.wait_for_sent(target, 2, Duration::from_secs(2)));
        let after = rig.wait_for(
            &rejected("duplicate"),
            before.value(&rejected("duplicate")) + 1.0,
        );
        assert_eq!(delta(&before, &after, MATCHED), 1.0, "{context}");
        assert_rejections(&before, &after, &[("duplicate", 1.0)], &context);
        rig.check_path(family);
    }
    for (family, target, _) in families(61) {
        let context = format!("{sockets:?} {target} late");
        // The `fast` module gives up after 500 ms; the reply comes at 800 ms.
        rig.peer
            .set(target, Behaviour::late(Duration::from_millis(800)));
        let before = rig.metrics();
        let metrics = rig.probe(target, "fast");
        assert_failure(&metrics, "timeout", &context);
        let duration = metrics.value("probe_duration_seconds");
        assert!(duration < 0.75, "{context}: took {duration}");
        assert!(rig.peer.wait_for_sent(target, 1, Duration::from_secs(2)));
        let after = rig.wait_for(&rejected("late"), before.value(&rejected("late")) + 1.0);
        assert_eq!(delta(&before, &after, MATCHED), 0.0, "{context}");
        assert_rejections(&before, &after, &[("late", 1.0)], &context);
        rig.check_path(family);
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn duplicate_and_late_replies_are_rejected_on_raw_sockets() {
    require_namespaces!();
    duplicates_and_late_replies(Sockets::Raw);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn duplicate_and_late_replies_are_rejected_on_ping_sockets() {
    require_namespaces!();
    duplicates_and_late_replies(Sockets::Ping);
}

fn icmp_errors(sockets: Sockets) {
    let rig = Rig::new(sockets);
    for (family, target, _) in families(70) {
        let router = fake_peer::router_for(target);
        let unreachable_code = if target.is_ipv4() { 1 } else { 3 };
        let cases = [
            (
                ErrorKind::Unreachable {
                    code: unreachable_code,
                },
                "destination_unreachable",
                unreachable_code,
            ),
            (ErrorKind::TimeExceeded, "time_exceeded", 0),
        ];
        for (kind, label, code) in cases {
            let context = format!("{sockets:?} {target} {label}");
            rig.peer
                .set(target, Behaviour::only(Reply::Error { kind, from: router }));
            let before = rig.metrics();
            let metrics = rig.probe(target, "slow");
            assert_failure(&metrics, "icmp_error", &context);
            let series = format!(
                "probe_icmp_error_info{{code=\"{code}\",from=\"{router}\",type=\"{label}\"}}"
            );
            assert_eq!(metrics.value(&series), 1.0, "{context}: {metrics:#?}");
            // It failed at once, not at the 5 s module timeout.
            let duration = metrics.value("probe_duration_seconds");
            assert!(duration < 0.5, "{context}: took {duration}");
            let after = rig.metrics();
            let errors = format!("meshprobe_icmp_errors_received_total{{type=\"{label}\"}}");
            assert_eq!(delta(&before, &after, &errors), 1.0, "{context}");
            assert_eq!(delta(&before, &after, MATCHED), 0.0, "{context}");
            assert_rejections(&before, &after, &[], &context);
        }
        // Routers that follow RFC 792 to the letter quote the IP header and 8 bytes only: no
        // nonce to check, and an off-path forger who guessed (target, id, seq) could send the
        // same. Such an error is only a hint: the probe waits for a reply until its deadline,
        // and fails with the hinted error if none came.
        let context = format!("{sockets:?} {target} minimal quote");
        let header = if target.is_ipv4() { 20 } else { 40 };
        rig.peer.set(
            target,
            Behaviour::only(Reply::ShortError {
                kind: ErrorKind::TimeExceeded,
                from: router,
                quote: header + 8,
            }),
        );
        let before = rig.metrics();
        let metrics = rig.probe(target, "fast");
        assert_failure(&metrics, "icmp_error", &context);
        let series =
            format!("probe_icmp_error_info{{code=\"0\",from=\"{router}\",type=\"time_exceeded\"}}");
        assert_eq!(metrics.value(&series), 1.0, "{context}: {metrics:#?}");
        let duration = metrics.value("probe_duration_seconds");
        assert!(
            (0.45..1.0).contains(&duration),
            "{context}: took {duration}"
        );
        let after = rig.metrics();
        assert_eq!(
            delta(&before, &after, "meshprobe_icmp_error_hints_total"),
            1.0,
            "{context}"
        );

        // The attack: a short-quoted error for a live target, then its real reply. The target
        // stays up.
        let context = format!("{sockets:?} {target} forged short quote");
        let forged = Reply::ShortError {
            kind: ErrorKind::Unreachable {
                code: unreachable_code,
            },
            from: router,
            quote: header + 8,
        };
        rig.peer
            .set(target, Behaviour::bogus_then_echo(forged, REAL_AFTER));
        let metrics = rig.probe(target, "slow");
        assert_success_after(&metrics, REAL_AFTER, &context);

        // An error that quotes a request we never sent (same target, id and seq, another nonce)
        // must not end the probe; the real reply follows.
        let context = format!("{sockets:?} {target} foreign error");
        let foreign = Reply::ForeignError {
            kind: ErrorKind::Unreachable {
                code: unreachable_code,
            },
            from: router,
        };
        rig.peer
            .set(target, Behaviour::bogus_then_echo(foreign, REAL_AFTER));
        let before = rig.metrics();
        let metrics = rig.probe(target, "slow");
        assert_success_after(&metrics, REAL_AFTER, &context);
        let after = rig.metrics();
        assert_rejections(&before, &after, &[("unrelated", 1.0)], &context);
        assert_eq!(
            delta(
                &before,
                &after,
                "meshprobe_icmp_errors_received_total{type=\"destination_unreachable\"}"
            ),
            0.0,
            "{context}"
        );
        rig.check_path(family);
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn icmp_errors_end_the_probe_at_once_on_raw_sockets() {
    require_namespaces!();
    icmp_errors(Sockets::Raw);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn icmp_errors_end_the_probe_at_once_on_ping_sockets() {
    require_namespaces!();
    icmp_errors(Sockets::Ping);
}

/// Two overlapping probes to one address whose replies come back swapped: each probe gets its
/// own reply (the first waits for the second request, so its RTT is the longer one).
fn reordered_replies(sockets: Sockets) {
    let rig = Rig::new(sockets);
    for (family, target, _) in families(80) {
        let context = format!("{sockets:?} {target} reordered");
        rig.peer.set(target, Behaviour::echo().reordered());
        let before = rig.metrics();
        let gap = Duration::from_millis(100);
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| rig.probe(target, "slow"));
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while rig.peer.requests(target) < 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(gap);
            let second = scope.spawn(|| rig.probe(target, "slow"));
            (
                first.join().expect("first probe"),
                second.join().expect("second probe"),
            )
        });
        assert_success_after(&first, gap, &format!("{context}, first"));
        assert_success_after(&second, Duration::ZERO, &format!("{context}, second"));
        assert!(
            rtt(&second) < rtt(&first) - 0.05,
            "{context}: rtts {} and {}",
            rtt(&first),
            rtt(&second)
        );
        let after = rig.metrics();
        assert_eq!(delta(&before, &after, MATCHED), 2.0, "{context}");
        assert_rejections(&before, &after, &[], &context);
        assert_eq!(rig.peer.counts(target).requests, 2, "{context}");
        rig.check_path(family);
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn reordered_replies_reach_their_own_probes_on_raw_sockets() {
    require_namespaces!();
    reordered_replies(Sockets::Raw);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn reordered_replies_reach_their_own_probes_on_ping_sockets() {
    require_namespaces!();
    reordered_replies(Sockets::Ping);
}
