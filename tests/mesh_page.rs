//! The `/mesh` page in a real browser: meshprobe probes 200 peers on two networks from a test
//! namespace (195 healthy peers answered by a kernel, plus lossy, slow, ICMP-unreachable and dead
//! peers from the fake peer and an address with no host), headless Chromium loads `/mesh` inside
//! that namespace, and the test checks the DOM it built (one cell per target with the state and
//! color `/mesh.json` gives, legend, table, escaping) and saves a screenshot as a CI artifact.
//! Also: `/mesh` and `/mesh.json` while mesh mode is off.
//!
//! ```text
//!  mpw-…-p: meshprobe, fake peer (TUN, 198.18.64.0/24, 2001:2:0:64::/64)
//!     p0 198.18.0.1/24, 2001:2::1/64 ──veth── k0 (mpw-…-k): 198.18.0.10.., 2001:2::1:0..
//! ```

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::browser::{self, Element};
use support::fake_peer::{self, Behaviour, ErrorKind, FakePeer, Reply};
use support::*;

const HEALTHY_PEERS: usize = 195;
const RACKS: usize = 8;
/// On the prober's link, but no host has it: neighbour resolution fails.
const NO_HOST_V4: &str = "198.18.0.250";
const V4_NETWORK: &str = "lab-v4";
const V6_NETWORK: &str = "lab-v6";
const EVIL_PEER: &str = "evil<script>alert(1)</script>";

/// The two namespaces, the fake peer and the peers file entries (dropped in this order).
struct Rig {
    _fake_peer: FakePeer,
    _kernel: Namespace,
    prober: Namespace,
    groups: Vec<Value>,
}

fn group(peer: &str, network: &str, address: impl ToString, rack: Option<usize>) -> Value {
    let mut labels = json!({"peer": peer, "network": network});
    if let Some(rack) = rack {
        labels["rack"] = json!(format!("r{rack}"));
    }
    json!({"targets": [address.to_string()], "labels": labels})
}

impl Rig {
    fn new() -> Rig {
        let prober = Namespace::with_prefix("mpw", "p");
        let kernel = Namespace::with_prefix("mpw", "k");
        veth(&prober, "p0", &kernel, "k0");
        prober.ip_batch("addr add 198.18.0.1/24 dev p0\naddr add 2001:2::1/64 dev p0 nodad\n");
        // The browser resolves nothing: no name server it could reach.
        prober.etc_file("resolv.conf", "nameserver 127.0.0.1\n");
        prober.etc_file("hosts", "127.0.0.1 localhost\n");
        let mut batch = String::new();
        let mut groups = Vec::new();
        for index in 0..HEALTHY_PEERS {
            let (v4, v6) = (
                format!("198.18.0.{}", 10 + index),
                format!("2001:2::1:{index:x}"),
            );
            batch.push_str(&format!(
                "addr add {v4}/24 dev k0\naddr add {v6}/64 dev k0 nodad\n"
            ));
            let peer = format!("node-{index:03}");
            groups.push(group(&peer, V4_NETWORK, &v4, Some(index % RACKS)));
            groups.push(group(&peer, V6_NETWORK, &v6, Some(index % RACKS)));
        }
        let evil_address = format!("198.18.0.{}", 10 + HEALTHY_PEERS);
        batch.push_str(&format!("addr add {evil_address}/24 dev k0\n"));
        groups.push(group(EVIL_PEER, V4_NETWORK, &evil_address, None));
        kernel.ip_batch(&batch);

        let fake = FakePeer::start(&prober);
        for (peer, host) in [("lossy", 2u8), ("slow", 3), ("unreachable", 4)] {
            for (network, address) in [
                (V4_NETWORK, fake_peer::v4(host)),
                (V6_NETWORK, fake_peer::v6(u16::from(host))),
            ] {
                let behaviour = match peer {
                    "lossy" => Behaviour::echo().dropping(0.5),
                    "slow" => Behaviour::delayed(Duration::from_millis(30)),
                    _ => Behaviour::only(Reply::Error {
                        kind: ErrorKind::Unreachable { code: 1 },
                        from: fake_peer::router_for(address),
                    }),
                };
                fake.set(address, behaviour);
                groups.push(group(peer, network, address, None));
            }
        }
        fake.set(fake_peer::v6(5), Behaviour::silent());
        groups.push(group("dead", V4_NETWORK, NO_HOST_V4, None));
        groups.push(group("dead", V6_NETWORK, fake_peer::v6(5), None));
        Rig {
            _fake_peer: fake,
            _kernel: kernel,
            prober,
            groups,
        }
    }
}

/// The expected state of a peer's targets.
fn expected_state(peer: &str) -> &'static str {
    match peer {
        "lossy" => "lossy",
        "slow" => "slow",
        "unreachable" | "dead" => "dead",
        _ => "ok",
    }
}

fn rgb(style: &str) -> (u8, u8, u8) {
    let hex = style
        .split(';')
        .find_map(|part| part.strip_prefix("background:#"))
        .unwrap_or_else(|| panic!("no background color in {style:?}"));
    let channel = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex color");
    (channel(0), channel(2), channel(4))
}

fn wait_for_window(exporter: &Exporter, targets: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let response = exporter.get("/mesh.json");
        assert_eq!(response.status, 200, "{}", response.body);
        let document: Value = serde_json::from_str(&response.body).expect("mesh.json parses");
        let rows = document["targets"].as_array().cloned().unwrap_or_default();
        let filled = rows.iter().all(|t| t["probes"].as_u64().unwrap_or(0) >= 40);
        if rows.len() == targets && filled {
            return document;
        }
        assert!(
            Instant::now() < deadline,
            "window not filled: {} of {targets} targets\n{}",
            rows.len(),
            exporter.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn mesh_page_shows_healthy_lossy_slow_and_dead_peers_in_a_browser() {
    require_namespaces!();
    browser::require_chromium();
    let rig = Rig::new();
    let peers = write_config("peers.json", &Value::Array(rig.groups.clone()).to_string());
    let config = write_config(
        "mesh.yml",
        &format!(
            "modules: {{}}\nmesh:\n  interval: 250ms\n  timeout: 200ms\n  peers:\n    files: [\"{}\"]\n",
            path_str(&peers)
        ),
    );
    let exporter = Exporter::start(&rig.prober, &["--config.file", path_str(&config)]);
    let document = wait_for_window(&exporter, rig.groups.len());

    // /mesh.json: every target in its expected state, with the numbers behind it.
    let mut json_states: BTreeMap<(String, String), String> = BTreeMap::new();
    for target in document["targets"].as_array().into_iter().flatten() {
        let peer = target["peer"].as_str().unwrap_or_default().to_string();
        let network = target["network"].as_str().unwrap_or_default().to_string();
        let state = target["state"].as_str().unwrap_or_default().to_string();
        assert_eq!(state, expected_state(&peer), "{target}");
        let (p50, loss) = (
            target["rtt_p50_seconds"].as_f64(),
            target["loss_ratio"].as_f64(),
        );
        match peer.as_str() {
            "slow" => assert!(p50.is_some_and(|p50| p50 >= 0.030), "{target}"),
            "lossy" => assert!(loss.is_some_and(|loss| loss >= 0.2), "{target}"),
            "unreachable" => assert!(
                target["last_error"]["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("destination_unreachable (code 1)")),
                "{target}"
            ),
            "dead" => assert_eq!(target["received"], 0, "{target}"),
            _ => assert!(p50.is_some_and(|p50| p50 < 0.010), "{target}"),
        }
        json_states.insert((peer, network), state);
    }
    assert_eq!(document["window"]["probes"], 100);
    assert_eq!(document["networks"], json!([V4_NETWORK, V6_NETWORK]));

    // The page as Chromium built it.
    let url = format!("http://127.0.0.1:{}/mesh", exporter.port);
    let dom = browser::dump_dom(&rig.prober, &url);
    assert!(!dom.contains("<script"), "a peer name became markup");
    let cells: Vec<Element> = browser::elements(&dom, "span")
        .into_iter()
        .filter(|e| e.has_class("cell"))
        .collect();
    assert_eq!(cells.len(), rig.groups.len(), "one cell per target");
    for cell in &cells {
        let (peer, network) = (cell.attribute("data-peer"), cell.attribute("data-network"));
        let state = cell.attribute("data-state");
        let key = (peer.to_string(), network.to_string());
        assert_eq!(Some(&state.to_string()), json_states.get(&key), "{cell:?}");
        let style = cell.attribute("style");
        let (red, green, _) = rgb(style);
        match state {
            "ok" => assert!(green > red, "healthy is green: {style}"),
            "slow" => assert!(red > green, "slow is red-orange: {style}"),
            "dead" => assert_eq!((red, green), (0, 0), "dead is black: {style}"),
            "lossy" => assert!(!style.contains("border-color:transparent"), "{style}"),
            other => panic!("unexpected state {other} in {cell:?}"),
        }
        let title = cell.attribute("title");
        for detail in [
            format!("peer {peer}\n"),
            format!("network {network}\n"),
            "\np50 ".to_string(),
            "\nloss ".to_string(),
        ] {
            assert!(title.contains(&detail), "hover lacks {detail:?}: {title}");
        }
        if peer == "unreachable" {
            assert!(
                title.contains("last error: destination_unreachable"),
                "{title}"
            );
        }
    }
    assert!(cells.iter().any(|c| c.attribute("data-peer") == EVIL_PEER));
    let legend = browser::elements(&dom, "section")
        .into_iter()
        .find(|e| e.attribute("id") == "legend");
    assert!(legend.is_some(), "legend present");
    let swatches = browser::elements(&dom, "span");
    assert_eq!(
        swatches
            .iter()
            .filter(|e| e.attributes.contains_key("data-rtt"))
            .count(),
        7
    );
    assert!(
        swatches
            .iter()
            .any(|e| e.has_class("swatch") && e.attribute("data-state") == "dead")
    );
    let problems = browser::elements(&dom, "li")
        .into_iter()
        .filter(|e| e.attributes.contains_key("data-state"))
        .count();
    assert_eq!(
        problems, 8,
        "lossy, slow, unreachable and dead on both networks"
    );
    let table_rows = browser::elements(&dom, "tr")
        .into_iter()
        .filter(|e| e.attributes.contains_key("data-state"))
        .count();
    assert_eq!(
        table_rows,
        rig.groups.len(),
        "table fallback lists every target"
    );

    // Grouped by rack: eight racks plus the peers without one.
    let grouped = exporter.get("/mesh?group=rack");
    assert_eq!(grouped.body.matches("<h2>rack = ").count(), RACKS + 1);
    assert_eq!(exporter.get("/mesh?group=no-such-label!").status, 400);
    let page = exporter.get("/mesh");
    let headers = page.headers.to_ascii_lowercase();
    assert!(
        headers.contains("content-security-policy: default-src 'none'; style-src 'unsafe-inline'")
    );
    assert!(headers.contains("content-type: text/html"));
    // Chromium asked for gzip above and decoded it; the compressed page is much smaller.
    let compressed = exporter.get_with_headers("/mesh", &[("Accept-Encoding", "gzip")]);
    let compressed_headers = compressed.headers.to_ascii_lowercase();
    assert!(compressed_headers.contains("content-encoding: gzip"));
    let length = compressed_headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|l| l.trim().parse::<usize>().ok())
        .expect("content-length");
    assert!(
        length * 5 < page.body.len(),
        "{length} vs {}",
        page.body.len()
    );
    eprintln!("/mesh: {} bytes, {length} gzip", page.body.len());

    let path = browser::artifacts_dir().join("mesh-page.png");
    let _ = std::fs::remove_file(&path);
    browser::screenshot(&rig.prober, &url, &path, 1400, 1000);
    let png = std::fs::read(&path).expect("screenshot written");
    assert_eq!(browser::png_size(&png), Some((1400, 1000)));
    assert!(png.len() > 20_000, "screenshot is only {} bytes", png.len());
    // Straight to the process's stderr, past the test harness's capture, so the CI log shows it.
    let _ = writeln!(std::io::stderr(), "screenshot artifact: {}", path.display());
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn mesh_page_and_json_explain_when_mesh_mode_is_off() {
    require_namespaces!();
    let namespace = Namespace::with_prefix("mpw", "off");
    let config = write_config("blackbox.yml", "modules:\n  icmp:\n    prober: icmp\n");
    let exporter = Exporter::start(&namespace, &["--config.file", path_str(&config)]);
    let page = exporter.get("/mesh");
    assert_eq!(page.status, 404);
    assert!(page.body.contains("Mesh mode is off"), "{}", page.body);
    let json = exporter.get("/mesh.json");
    assert_eq!(json.status, 404);
    let document: Value = serde_json::from_str(&json.body).expect("JSON body");
    assert_eq!(document["mesh"], false);
    assert!(
        document["error"]
            .as_str()
            .is_some_and(|e| e.contains("mesh"))
    );
}
