//! Path tracing (`meshprobe trace` and the mesh's automatic tracer) through real routers: a
//! chain prober — r1 — r2 — r3 — peer of namespaces with forwarding on (or, for ECMP, two
//! equal-cost routers r2a and r2b between r1 and r3). Loss is injected with nftables on r2, rate
//! limiting with r1's own `icmp_ratelimit`, unreachability by taking r3's route away.
//!
//! Which hop is blamed when r2 drops only in its forward path: r2 still answers its own TTL
//! (time exceeded is sent before the forward hook), so the first hop that shows the persistent
//! loss is r3, and mtr's rule blames r3: the fault is at the blamed hop, the link into it, or the
//! forwarding of the hop before it.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const PEER_V4: &str = "198.18.53.1";
const PEER_V6: &str = "2001:2:53::1";
const R1_V4: &str = "198.18.50.254";
/// r2's and r3's addresses facing the prober side (where their ICMP errors come from).
const R2_V4: &str = "198.18.51.2";
const R3_V4: &str = "198.18.52.2";
const R2B_V4: &str = "198.18.55.2";

/// The namespaces of the chain (kept alive for the test's duration).
#[allow(dead_code)]
struct Chain {
    prober: Namespace,
    r1: Namespace,
    r2: Namespace,
    r3: Namespace,
    peer: Namespace,
    /// The second equal-cost router (ECMP chains only).
    r2b: Option<Namespace>,
}

fn router(role: &str) -> Namespace {
    let ns = Namespace::with_prefix("mptr", role);
    ns.sysctl("net.ipv4.ip_forward", "1");
    ns.sysctl("net.ipv6.conf.all.forwarding", "1");
    ns
}

impl Chain {
    fn new(ecmp: bool) -> Chain {
        let prober = Namespace::with_prefix("mptr", "p");
        let (r1, r2, r3) = (router("r1"), router("r2"), router("r3"));
        let peer = Namespace::with_prefix("mptr", "peer");
        veth(&prober, "p0", &r1, "a0");
        veth(&r1, "a1", &r2, "b0");
        veth(&r2, "b1", &r3, "c0");
        veth(&r3, "c1", &peer, "e0");
        prober.ip_batch(
            "addr add 198.18.50.1/24 dev p0\naddr add 2001:2:50::1/64 dev p0 nodad\n\
             route add default via 198.18.50.254\nroute add default via 2001:2:50::fe\n",
        );
        r1.ip_batch(
            "addr add 198.18.50.254/24 dev a0\naddr add 2001:2:50::fe/64 dev a0 nodad\n\
             addr add 198.18.51.1/24 dev a1\naddr add 2001:2:51::1/64 dev a1 nodad\n",
        );
        r2.ip_batch(
            "addr add 198.18.51.2/24 dev b0\naddr add 2001:2:51::2/64 dev b0 nodad\n\
             addr add 198.18.52.1/24 dev b1\naddr add 2001:2:52::1/64 dev b1 nodad\n\
             route add 198.18.53.0/24 via 198.18.52.2\nroute add 2001:2:53::/64 via 2001:2:52::2\n\
             route add 198.18.50.0/24 via 198.18.51.1\nroute add 2001:2:50::/64 via 2001:2:51::1\n",
        );
        r3.ip_batch(
            "addr add 198.18.52.2/24 dev c0\naddr add 2001:2:52::2/64 dev c0 nodad\n\
             addr add 198.18.53.254/24 dev c1\naddr add 2001:2:53::fe/64 dev c1 nodad\n\
             route add 198.18.50.0/24 via 198.18.52.1\nroute add 2001:2:50::/64 via 2001:2:52::1\n\
             route add 198.18.51.0/24 via 198.18.52.1\nroute add 2001:2:51::/64 via 2001:2:52::1\n",
        );
        peer.ip_batch(
            "addr add 198.18.53.1/24 dev e0\naddr add 2001:2:53::1/64 dev e0 nodad\n\
             route add default via 198.18.53.254\nroute add default via 2001:2:53::fe\n\
             route add local 198.18.60.0/24 dev lo\n",
        );
        let r2b = ecmp.then(|| {
            let r2b = router("r2b");
            veth(&r1, "a2", &r2b, "f0");
            veth(&r2b, "f1", &r3, "c2");
            r1.ip_batch("addr add 198.18.55.1/24 dev a2\n");
            r2b.ip_batch(
                "addr add 198.18.55.2/24 dev f0\naddr add 198.18.56.1/24 dev f1\n\
                 route add 198.18.53.0/24 via 198.18.56.2\nroute add 198.18.50.0/24 via 198.18.55.1\n",
            );
            r3.ip_batch("addr add 198.18.56.2/24 dev c2\n");
            r1.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
            r1.ip_batch(
                "route add 198.18.53.0/24 nexthop via 198.18.51.2 nexthop via 198.18.55.2\n\
                 route add 198.18.60.0/24 nexthop via 198.18.51.2 nexthop via 198.18.55.2\n",
            );
            r2.ip_batch("route add 198.18.60.0/24 via 198.18.52.2\n");
            r2b
        });
        if !ecmp {
            r1.ip_batch("route add default via 198.18.51.2\nroute add default via 2001:2:51::2\n");
            r2.ip_batch("route add 198.18.60.0/24 via 198.18.52.2\n");
        }
        r3.ip_batch("route add 198.18.60.0/24 via 198.18.53.1\n");
        std::thread::sleep(Duration::from_millis(100));
        Chain {
            prober,
            r1,
            r2,
            r3,
            peer,
            r2b,
        }
    }
}

/// Runs `meshprobe trace --json` in the prober's namespace.
fn trace_json(chain: &Chain, target: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        binary(),
        "trace",
        "--json",
        "-i",
        "0.1",
        "-W",
        "0.5",
        target,
    ];
    args.extend_from_slice(extra);
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &chain.prober.name])
        .args(&args)
        .output()
        .expect("run meshprobe trace");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&output.stderr)))
}

fn hop_addresses(trace: &Value) -> Vec<Vec<String>> {
    trace["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|hop| {
            hop["addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .map(|a| a.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect()
}

/// The series of `family` whose labels contain `needle`, and its value.
fn find(metrics: &Metrics, family: &str, needle: &str) -> (String, f64) {
    metrics
        .samples
        .iter()
        .find(|(name, _)| name.starts_with(&format!("{family}{{")) && name.contains(needle))
        .map(|(name, value)| (name.clone(), *value))
        .unwrap_or_else(|| panic!("no {family} series with {needle}: {:#?}", metrics.samples))
}

fn nft(ns: &Namespace, script: &str) {
    ns.exec("nft", &[script]);
}

/// Makes r2 drop 40 % of the ICMP packets arriving from r1, in `hook` (prerouting: the link
/// into r2; forward: only what r2 forwards).
fn lossy_r2(chain: &Chain, hook: &str) {
    nft(
        &chain.r2,
        &format!(
            "add table inet lossy_x; add chain inet lossy_x {hook}_x {{ type filter hook {hook} priority 0; policy accept; }}; \
             add rule inet lossy_x {hook}_x iifname \"b0\" meta l4proto icmp numgen random mod 100 < 40 drop"
        ),
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn a_clean_chain_is_traced_on_ipv4_and_ipv6_with_raw_and_ping_sockets() {
    require_namespaces!();
    let chain = Chain::new(false);
    for (target, kind) in [(PEER_V4, "raw"), (PEER_V6, "raw")] {
        let trace = trace_json(&chain, target, &["-c", "3"]);
        assert_eq!(trace["reached"], true, "{trace:#}");
        assert_eq!(trace["socket"], kind);
        assert_eq!(trace["hops"].as_array().map(Vec::len), Some(4), "{trace:#}");
        assert_eq!(trace["loss_starts_at"], Value::Null);
        assert_eq!(trace["hops"][3]["addresses"][0], target);
    }
    let v4 = trace_json(&chain, PEER_V4, &["-c", "3"]);
    assert_eq!(
        hop_addresses(&v4),
        vec![vec![R1_V4], vec![R2_V4], vec![R3_V4], vec![PEER_V4]]
    );
    // Unprivileged ping sockets get time exceeded through the error queue.
    chain
        .prober
        .sysctl("net.ipv4.ping_group_range", "0 2147483647");
    for target in [PEER_V4, PEER_V6] {
        let trace = trace_json(&chain, target, &["-c", "3"]);
        assert_eq!(trace["socket"], "dgram", "{trace:#}");
        assert_eq!(trace["reached"], true, "{trace:#}");
        assert_eq!(trace["hops"].as_array().map(Vec::len), Some(4), "{trace:#}");
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn loss_on_the_link_into_r2_is_blamed_on_r2_by_the_cli_and_the_mesh() {
    require_namespaces!();
    let chain = Chain::new(false);
    lossy_r2(&chain, "prerouting");
    let trace = trace_json(&chain, PEER_V4, &["-c", "25"]);
    assert_eq!(trace["loss_starts_at"], R2_V4, "{trace:#}");
    assert_eq!(trace["loss_starts_at_ttl"], 2);
    assert_eq!(trace["hops"][0]["received"], 25, "r1 is clean");
    // The mesh traces the peer on its own once it turns lossy, and says the same.
    let config = write_config(
        "mesh.yml",
        &format!(
            "modules: {{}}\nmesh:\n  interval: 50ms\n  timeout: 500ms\n  trace: {{max_per_minute: 2, rounds: 25}}\n  \
             peers:\n    static: [{{targets: [{PEER_V4}], labels: {{peer: far}}}}]\n"
        ),
    );
    let exporter = Exporter::start(&chain.prober, &["--config.file", path_str(&config)]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let path = loop {
        let body = exporter.get("/mesh.json").body;
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let path = json["targets"][0]["path"].clone();
        if !path.is_null() {
            break path;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic trace: {body}\n{}",
            exporter.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(path["loss_starts_at"], R2_V4, "{path:#}");
    assert_eq!(path["trigger"], "lossy");
    let metrics = exporter.metrics();
    let far = "peer=\"far\"";
    assert_eq!(
        find(&metrics, "meshprobe_mesh_path_loss_start_hop", far).1,
        2.0
    );
    assert_eq!(find(&metrics, "meshprobe_mesh_path_hops", far).1, 4.0);
    let (info, value) = find(&metrics, "meshprobe_mesh_path_info", far);
    assert_eq!(value, 1.0);
    assert!(
        info.contains(&format!("path=\"{R1_V4} {R2_V4} {R3_V4} {PEER_V4}\"")),
        "{info}"
    );
    let page = exporter.get("/mesh").body;
    assert!(
        page.contains(&format!("loss starts at hop 2 ({R2_V4})")),
        "the problem list names the hop"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn loss_in_r2_s_forward_path_only_is_blamed_on_r3_the_first_hop_that_shows_it() {
    require_namespaces!();
    let chain = Chain::new(false);
    lossy_r2(&chain, "forward");
    let trace = trace_json(&chain, PEER_V4, &["-c", "25"]);
    assert_eq!(
        trace["hops"][1]["received"], 25,
        "r2 answers its own TTL: {trace:#}"
    );
    assert_eq!(trace["loss_starts_at"], R3_V4, "{trace:#}");
    assert_eq!(trace["loss_starts_at_ttl"], 3);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn r1_rate_limiting_time_exceeded_is_not_blamed() {
    require_namespaces!();
    let chain = Chain::new(false);
    // Linux's per-destination limit: a burst of 6, then one per icmp_ratelimit ms.
    chain.r1.sysctl("net.ipv4.icmp_ratelimit", "1000");
    chain.r1.sysctl("net.ipv4.icmp_ratemask", "6168");
    let trace = trace_json(&chain, PEER_V4, &["-c", "20"]);
    let r1 = &trace["hops"][0];
    assert!(
        r1["received"].as_u64().unwrap_or(20) < 15,
        "r1 rate-limits: {trace:#}"
    );
    for hop in 1..4 {
        assert_eq!(
            trace["hops"][hop]["received"], 20,
            "later hops answer fully: {trace:#}"
        );
    }
    assert_eq!(trace["loss_starts_at"], Value::Null, "{trace:#}");
    assert_eq!(trace["rate_limited_ttls"], serde_json::json!([1]));
    assert!(
        trace["verdict"]
            .as_str()
            .unwrap_or_default()
            .contains("no hop is blamed")
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn a_trace_stops_at_r3_when_it_answers_unreachable() {
    require_namespaces!();
    let chain = Chain::new(false);
    chain
        .r3
        .exec("ip", &["route", "del", "198.18.53.0/24", "dev", "c1"]);
    let trace = trace_json(&chain, PEER_V4, &["-c", "3"]);
    assert_eq!(trace["reached"], false, "{trace:#}");
    assert_eq!(trace["stopped"]["reason"], "unreachable");
    assert_eq!(trace["stopped"]["from"], R3_V4);
    assert_eq!(trace["hops"].as_array().map(Vec::len), Some(3));
    let text = chain.prober.exec(
        "sh",
        &[
            "-c",
            &format!("{} trace -c 2 -i 0.1 -W 0.5 {PEER_V4}; true", binary()),
        ],
    );
    assert!(
        text.contains(&format!(
            "stopped at hop 3: {R3_V4} answered destination unreachable"
        )),
        "{text}"
    );
}

/// nftables counters of ICMP and UDP packets to the peer's range that r2a and r2b forward.
fn path_counters(chain: &Chain) -> [(u64, u64); 2] {
    let r2b = chain.r2b.as_ref().expect("ECMP chain");
    [&chain.r2, r2b].map(|ns| {
        let listing = ns.exec("nft", &["list", "chain", "inet", "count_x", "forward_x"]);
        let counts: Vec<u64> = listing
            .split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        (
            counts.first().copied().unwrap_or(0),
            counts.get(1).copied().unwrap_or(0),
        )
    })
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn ecmp_paths_are_traced_consistently_and_linux_hashes_no_icmp_field() {
    require_namespaces!();
    let chain = Chain::new(true);
    for ns in [&chain.r2, chain.r2b.as_ref().expect("r2b")] {
        nft(
            ns,
            "add table inet count_x; add chain inet count_x forward_x { type filter hook forward priority 0; policy accept; }; \
             add rule inet count_x forward_x ip daddr 198.18.53.1 meta l4proto icmp counter; \
             add rule inet count_x forward_x ip daddr 198.18.53.1 meta l4proto udp counter",
        );
    }
    // The Paris flow: every echo request of a trace carries the same checksum on the wire.
    let first = trace_json(&chain, PEER_V4, &["-c", "5"]);
    let checksum = first["flow"]["icmp_checksum"].as_u64().expect("checksum");
    nft(
        &chain.r1,
        &format!(
            "add table inet flow_x; add chain inet flow_x forward_x {{ type filter hook forward priority 0; policy accept; }}; \
             add rule inet flow_x forward_x icmp type echo-request counter; \
             add rule inet flow_x forward_x icmp type echo-request @th,16,16 {checksum:#x} counter"
        ),
    );
    let mut paths = Vec::new();
    for _ in 0..3 {
        let trace = trace_json(&chain, PEER_V4, &["-c", "5"]);
        assert_eq!(trace["reached"], true, "{trace:#}");
        let hops = hop_addresses(&trace);
        assert!(
            hops.iter().all(|addresses| addresses.len() == 1),
            "{trace:#}"
        );
        paths.push(hops);
    }
    assert!(
        paths.windows(2).all(|w| w[0] == w[1]),
        "one consistent path: {paths:?}"
    );
    assert!([R2_V4, R2B_V4].contains(&paths[0][1][0].as_str()));
    let flow = chain.r1.exec("nft", &["list", "table", "inet", "flow_x"]);
    let counts: Vec<&str> = flow
        .split("packets ")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert_eq!(counts.len(), 2, "{flow}");
    assert_eq!(
        counts[0], counts[1],
        "every echo request had the flow's checksum: {flow}"
    );
    // What Linux hashes under fib_multipath_hash_policy=1: ICMP with random ids, sequence
    // numbers and checksums (meshprobe ping on a raw socket) stays on one path, forwarded
    // (sent from the prober) or locally generated (sent from r1); UDP with varying ports, the
    // control, takes both.
    for (source, name) in [(&chain.prober, "forwarded"), (&chain.r1, "local")] {
        let before = path_counters(&chain);
        source.exec(
            binary(),
            &["ping", "-c", "40", "-i", "0.01", "-W", "0.5", PEER_V4],
        );
        source.enter(|| {
            for port in 0..40u16 {
                let socket = std::net::UdpSocket::bind(("0.0.0.0", 20000 + port)).expect("bind");
                let _ = socket.send_to(b"x", (PEER_V4, 33434 + port));
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let after = path_counters(&chain);
        let icmp = [after[0].0 - before[0].0, after[1].0 - before[1].0];
        let udp = [after[0].1 - before[0].1, after[1].1 - before[1].1];
        eprintln!("{name}: ICMP per path {icmp:?}, UDP per path {udp:?}");
        assert!(
            icmp.contains(&0) && icmp.iter().sum::<u64>() >= 40,
            "{name} ICMP: {icmp:?}"
        );
        assert!(
            udp.iter().all(|n| *n > 0),
            "{name} UDP uses both paths: {udp:?}"
        );
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn traces_keep_the_mesh_paced_and_its_counters_exact() {
    require_namespaces!();
    let chain = Chain::new(false);
    let targets: Vec<String> = (1..=8).map(|i| format!("198.18.60.{i}")).collect();
    let config = write_config(
        "mesh.yml",
        &format!(
            "modules: {{}}\nmesh:\n  interval: 100ms\n  timeout: 500ms\n  \
             trace: {{max_per_minute: 60, interval: 1m, rounds: 10}}\n  peers:\n    static:\n      \
             - {{targets: [{R1_V4}], labels: {{peer: r1}}}}\n{}",
            targets
                .iter()
                .enumerate()
                .map(|(i, t)| format!("      - {{targets: [{t}], labels: {{peer: far{i}}}}}\n"))
                .collect::<String>()
        ),
    );
    let exporter = Exporter::start(&chain.prober, &["--config.file", path_str(&config)]);
    // From the first traces on (start-up is not what is measured).
    std::thread::sleep(Duration::from_millis(1500));
    let before = exporter.metrics();
    std::thread::sleep(Duration::from_millis(7500));
    let metrics = exporter.metrics();
    let traces = |m: &Metrics| m.value("meshprobe_mesh_traces_total{trigger=\"schedule\"}");
    assert!(
        traces(&metrics) - traces(&before) >= 5.0,
        "traces ran during the measurement"
    );
    let late = |m: &Metrics| m.value("meshprobe_mesh_late_sends_total");
    eprintln!(
        "late sends: {} at start-up, {} during the traces",
        late(&before),
        late(&metrics) - late(&before)
    );
    assert_eq!(late(&metrics), late(&before), "{}", exporter.log());
    let mut total_sent = 0.0;
    for (name, value) in &metrics.samples {
        if name.starts_with("meshprobe_mesh_lost_total{") {
            assert_eq!(*value, 0.0, "no false loss: {name}");
        }
        if name.starts_with("meshprobe_mesh_duplicates_total{") {
            assert_eq!(*value, 0.0, "trace replies are no duplicates: {name}");
        }
        if let Some(labels) = name.strip_prefix("meshprobe_mesh_sent_total") {
            let received = metrics.value(&format!("meshprobe_mesh_received_total{labels}"));
            assert_eq!(*value, received, "sent = received for {labels}");
            total_sent += value;
        }
    }
    // 9 targets every 100 ms for about 9 s: trace probes are not counted as mesh probes.
    assert!(total_sent <= 9.0 * 95.0, "mesh sent {total_sent}");
    let hops = find(&metrics, "meshprobe_mesh_path_hops", "network=\"routed\"").1;
    assert_eq!(hops, 4.0, "the peer's AnyIP range is 4 hops away");
}
