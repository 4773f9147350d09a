//! Issue 13, findings 8 and 9 (headers), with the real binary and real requests: a flood of
//! wrong passwords keeps bcrypt bounded and lets a valid first login through quickly;
//! exporter-toolkit's `rate_limit` answers 429 beyond its bucket and follows reloads; HTML
//! pages carry `X-Frame-Options: deny` and every response `X-Content-Type-Options: nosniff`
//! unless the web config sets them. Everything runs inside a namespace the test creates.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use support::attack::{cpu_seconds, request_from};
use support::web::{TempDir, WebExporter};
use support::*;

const ATTACKERS: usize = 40;

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn get_as(namespace: &Namespace, source: &str, port: u16, auth: &str) -> (Duration, u16) {
    let started = Instant::now();
    let request = build_request("GET", "/-/healthy", &[("Authorization", auth)]);
    let status = request_from(&namespace.name, source, port, request).map_or(0, |r| r.status);
    (started.elapsed(), status)
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn a_wrong_password_flood_keeps_bcrypt_bounded_and_lets_a_valid_login_through() {
    require_namespaces!();
    raise_open_file_limit();
    let namespace = Namespace::new("wh");
    let dir = TempDir::new("bcrypt-flood");
    let hash = bcrypt::hash_with_result("right", 8)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY);
    let web = dir.write("web.yml", &format!("basic_auth_users:\n  alice: {hash}\n"));
    let exporter = WebExporter::start(&namespace, &["--web.config.file", path_str(&web)], 9115);
    let pid = exporter.child.id();
    // One uncached check with nothing else going on (a different password each time: cached
    // successes and failures skip bcrypt).
    let (alone, status) = get_as(&namespace, "127.0.0.1", 9115, &basic("alice", "warm-up"));
    assert_eq!(status, 401);

    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|thread| {
            let stop = Arc::clone(&stop);
            let name = namespace.name.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                let mut attempt = 0;
                while !stop.load(Ordering::Relaxed) {
                    attempt += 1;
                    let auth = basic("alice", &format!("guess-{thread}-{attempt}"));
                    let request = build_request("GET", "/-/healthy", &[("Authorization", &auth)]);
                    let status = request_from(&name, "127.0.0.2", 9115, request);
                    statuses.push(status.map_or(0, |r| r.status));
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (cpu_start, window_start) = (cpu_seconds(pid), Instant::now());
    let (first_login, first_status) =
        get_as(&namespace, "127.0.0.1", 9115, &basic("alice", "right"));
    let (cached_login, cached_status) =
        get_as(&namespace, "127.0.0.1", 9115, &basic("alice", "right"));
    std::thread::sleep(Duration::from_secs(3).saturating_sub(window_start.elapsed()));
    let window = window_start.elapsed().as_secs_f64();
    let cores = (cpu_seconds(pid) - cpu_start) / window;
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = attackers
        .into_iter()
        .flat_map(|a| a.join().expect("attacker"))
        .collect();
    let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
    let slots = (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1);
    eprintln!(
        "figures: one check alone {alone:?}; under {ATTACKERS} wrong-password clients: first \
         valid login {first_login:?} ({first_status}), cached {cached_login:?}; exporter CPU \
         {cores:.2} cores; attacker answers: {} x 401, \
         {} x 429, {} other",
        count(401),
        count(429),
        statuses.len() - count(401) - count(429)
    );
    assert_eq!((first_status, cached_status), (200, 200));
    assert!(
        first_login < alone * 3 + Duration::from_millis(300),
        "first valid login took {first_login:?} (one check alone: {alone:?})"
    );
    assert!(count(429) > 0, "no client was told to back off");
    // bcrypt on `slots` cores, plus answering the 429s.
    assert!(
        cores < slots as f64 + 0.6,
        "the exporter used {cores:.2} cores with {slots} bcrypt slots"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn rate_limit_answers_429_beyond_its_bucket_and_follows_reloads() {
    require_namespaces!();
    let namespace = Namespace::new("wh");
    let dir = TempDir::new("rate-limit");
    let limited = "rate_limit:\n  interval: 1h\n  burst: 1\n";
    let web = dir.write("web.yml", limited);
    let exporter = WebExporter::start(&namespace, &["--web.config.file", path_str(&web)], 9115);
    let status = || {
        let request = build_request("GET", "/-/healthy", &[]);
        request_from(&namespace.name, "127.0.0.1", 9115, request).map_or(0, |r| r.status)
    };
    assert_eq!(status(), 200, "the burst is spent by the first request");
    assert_eq!(status(), 429);
    assert_eq!(status(), 429);
    let reload = |content: &str, expected: &str| {
        dir.write("web.yml", content);
        exporter.sighup();
        exporter.wait_for_log(expected);
    };
    // An unchanged reload keeps the spent bucket.
    reload(limited, "Reloaded web config file");
    assert_eq!(status(), 429);
    // Removing rate_limit lifts the limit; putting it back gives a fresh burst.
    std::fs::write(&exporter.log_path, "").expect("truncate log");
    reload(
        "http_server_config:\n  http2: true\n",
        "Reloaded web config file",
    );
    assert_eq!((status(), status()), (200, 200));
    std::fs::write(&exporter.log_path, "").expect("truncate log");
    reload(
        "rate_limit:\n  interval: 1h\n  burst: 2\n",
        "Reloaded web config file",
    );
    assert_eq!((status(), status(), status()), (200, 200, 429));
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn html_pages_cannot_be_framed_and_nothing_is_sniffed_by_default() {
    require_namespaces!();
    let namespace = Namespace::new("wh");
    let exporter = Exporter::start(&namespace, &[]);
    for path in ["/", "/mesh"] {
        let response = exporter.get(path);
        let headers = response.headers.to_ascii_lowercase();
        assert!(
            headers.contains("content-type: text/html"),
            "{path}: {headers}"
        );
        assert!(
            headers.contains("x-frame-options: deny"),
            "{path}: {headers}"
        );
        assert!(
            headers.contains("x-content-type-options: nosniff"),
            "{path}: {headers}"
        );
    }
    let metrics = exporter.get("/metrics").headers.to_ascii_lowercase();
    assert!(
        metrics.contains("x-content-type-options: nosniff"),
        "{metrics}"
    );
    assert!(!metrics.contains("x-frame-options"), "{metrics}");
    drop(exporter);

    // The web config's own values win.
    let dir = TempDir::new("headers");
    let web = dir.write(
        "web.yml",
        "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n",
    );
    let exporter = WebExporter::start(&namespace, &["--web.config.file", path_str(&web)], 9116);
    let request = build_request("GET", "/", &[]);
    let response = request_from(&namespace.name, "127.0.0.1", 9116, request).expect("landing");
    let headers = response.headers.to_ascii_lowercase();
    assert!(headers.contains("x-frame-options: sameorigin"), "{headers}");
    assert_eq!(headers.matches("x-frame-options").count(), 1, "{headers}");
    drop(exporter);
}
