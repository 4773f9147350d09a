//! Mesh mode on a routed fabric with the real binary: 3 rack subnets of 3 nodes behind a router
//! namespace (a rack is a bridge in the router), each node its own namespace running meshprobe,
//! one shared peers file with a `rack` label and no `network` labels. `full` probes all 8 peers
//! (own rack on the rack subnet, the others `routed`); `tiered` probes every intra-rack pair and
//! covers every rack pair k = 2 times, exactly as the library's plan says; loss injected with
//! nftables in the router's forward hook shows on inter-rack series only.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use meshprobe::mesh::tiered::{Member, Tiered};
use serde_json::Value;
use support::*;

const RACKS: usize = 3;
const PER_RACK: usize = 3;

fn node_name(rack: usize, index: usize) -> String {
    format!("n{rack}{index}")
}

fn node_address(rack: usize, index: usize) -> String {
    format!("198.18.{}.{}", 10 + rack, 10 + index)
}

/// The router, the node namespaces (rack-major order) and their names.
struct Fabric {
    router: Namespace,
    nodes: Vec<(String, usize, Namespace)>,
}

impl Fabric {
    fn new() -> Fabric {
        let router = Namespace::with_prefix("mpf", "router");
        router.sysctl("net.ipv4.ip_forward", "1");
        // br_netfilter is built in here and on by default per namespace: without this, bridged
        // (intra-rack) frames would pass the inet forward hook too.
        router.sysctl("net.bridge.bridge-nf-call-iptables", "0");
        router.sysctl("net.bridge.bridge-nf-call-ip6tables", "0");
        let mut nodes = Vec::new();
        for rack in 0..RACKS {
            router.ip_batch(&format!(
                "link add br{rack} type bridge\nlink set br{rack} up\n\
                 addr add 198.18.{}.1/24 dev br{rack}\n",
                10 + rack
            ));
            for index in 0..PER_RACK {
                let node = Namespace::with_prefix("mpf", &node_name(rack, index));
                let port = format!("v{rack}{index}");
                veth(&node, "eth0", &router, &port);
                router.exec(
                    "ip",
                    &["link", "set", &port, "master", &format!("br{rack}")],
                );
                node.ip_batch(&format!(
                    "addr add {}/24 dev eth0\nroute add default via 198.18.{}.1\n",
                    node_address(rack, index),
                    10 + rack
                ));
                nodes.push((node_name(rack, index), rack, node));
            }
        }
        Fabric { router, nodes }
    }

    /// The shared peers file: every node with its `rack`, no `network` labels.
    fn peers_file(&self) -> std::path::PathBuf {
        let groups: Vec<Value> = (0..RACKS)
            .flat_map(|rack| (0..PER_RACK).map(move |index| (rack, index)))
            .map(|(rack, index)| {
                serde_json::json!({
                    "targets": [node_address(rack, index)],
                    "labels": {"peer": node_name(rack, index), "rack": format!("r{rack}")},
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&groups).expect("json");
        write_config("peers.json", &text)
    }

    fn start(&self, fleet_keys: &str) -> Vec<Exporter> {
        let peers = self.peers_file();
        let config = write_config(
            "mesh.yml",
            &format!(
                "modules: {{}}\nmesh:\n  interval: 100ms\n  timeout: 500ms\n{fleet_keys}  peers:\n    files: [{:?}]\n",
                path_str(&peers)
            ),
        );
        self.nodes
            .iter()
            .map(|(_, _, ns)| Exporter::start(ns, &["--config.file", path_str(&config)]))
            .collect()
    }
}

/// (peer, network, probes, lost) of every target in /mesh.json.
fn mesh_targets(exporter: &Exporter) -> Vec<(String, String, f64, f64)> {
    let body = exporter.get("/mesh.json").body;
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["targets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .map(|t| {
                    (
                        t["peer"].as_str().unwrap_or("").to_string(),
                        t["network"].as_str().unwrap_or("").to_string(),
                        t["probes"].as_f64().unwrap_or(0.0),
                        t["lost"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Series of `family` with their value, per label set text.
fn series(metrics: &Metrics, family: &str) -> BTreeMap<String, f64> {
    metrics
        .samples
        .iter()
        .filter_map(|(name, value)| {
            let labels = name.strip_prefix(&format!("{family}{{"))?;
            Some((labels.trim_end_matches('}').to_string(), *value))
        })
        .collect()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Makes every routed packet through the router a 30 % loss candidate (both directions).
fn lossy_router(router: &Namespace) {
    router.exec(
        "nft",
        &["add table inet lossy_x; \
           add chain inet lossy_x forward_x { type filter hook forward priority 0; policy accept; }; \
           add rule inet lossy_x forward_x numgen random mod 100 < 30 drop"],
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn full_mesh_on_a_routed_fabric_needs_no_labels_and_loss_shows_between_racks_only() {
    require_namespaces!();
    let fabric = Fabric::new();
    let exporters = fabric.start("");
    wait_until("every node probes all 8 peers", || {
        exporters.iter().all(|e| {
            let targets = mesh_targets(e);
            targets.len() == 8 && targets.iter().all(|t| t.2 >= 10.0)
        })
    });
    for ((name, rack, _), exporter) in fabric.nodes.iter().zip(&exporters) {
        let metrics = exporter.metrics();
        assert_eq!(metrics.value("meshprobe_mesh_targets"), 8.0, "{name}");
        assert_eq!(
            metrics.value("meshprobe_mesh_peers_without_common_network"),
            0.0
        );
        for (peer, network, _, lost) in mesh_targets(exporter) {
            let same_rack = peer.starts_with(&format!("n{rack}"));
            let want = if same_rack {
                format!("198.18.{}.0/24", 10 + rack)
            } else {
                "routed".to_string()
            };
            assert_eq!(network, want, "{name} -> {peer}");
            assert_eq!(lost, 0.0, "{name} -> {peer}: no loss before nftables");
        }
    }
    // Loss on the router: only the routed (inter-rack) series lose probes.
    let before: Vec<BTreeMap<String, f64>> = exporters
        .iter()
        .map(|e| series(&e.metrics(), "meshprobe_mesh_lost_total"))
        .collect();
    lossy_router(&fabric.router);
    std::thread::sleep(Duration::from_secs(4));
    for (((name, _, _), exporter), before) in fabric.nodes.iter().zip(&exporters).zip(&before) {
        let metrics = exporter.metrics();
        let lost = series(&metrics, "meshprobe_mesh_lost_total");
        let sent = series(&metrics, "meshprobe_mesh_sent_total");
        let received = series(&metrics, "meshprobe_mesh_received_total");
        assert_eq!(lost.len(), 8, "{name}");
        for (labels, value) in &lost {
            let delta = value - before.get(labels).copied().unwrap_or(0.0);
            if labels.contains("network=\"routed\"") {
                assert!(delta > 0.0, "{name} {labels}: routed series shows loss");
            } else {
                assert_eq!(delta, 0.0, "{name} {labels}: intra-rack series has no loss");
            }
            assert_eq!(sent[labels], received[labels] + value, "{name} {labels}");
        }
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn tiered_plan_on_a_routed_fabric_covers_racks_k_times_with_per_rack_series() {
    require_namespaces!();
    let fabric = Fabric::new();
    let exporters = fabric.start(
        "  strategy: tiered\n  group_by: rack\n  paths_between_groups: 2\n  inter_group_series: per_group\n",
    );
    let members: Vec<Member> = fabric
        .nodes
        .iter()
        .map(|(name, rack, _)| Member::new(name, &format!("r{rack}")))
        .collect();
    let plan = Tiered::new(&members, 2, 0);
    let expected = |name: &str| -> BTreeSet<String> {
        plan.targets_of(name)
            .unwrap_or_default()
            .into_iter()
            .map(|i| plan.members()[i].name.clone())
            .collect()
    };
    wait_until("every node probes its tiered targets", || {
        fabric
            .nodes
            .iter()
            .zip(&exporters)
            .all(|((name, _, _), e)| {
                let targets = mesh_targets(e);
                let peers: BTreeSet<String> = targets.iter().map(|t| t.0.clone()).collect();
                peers == expected(name) && targets.iter().all(|t| t.2 >= 10.0)
            })
    });
    let mut rack_pairs: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut intra: BTreeSet<(String, String)> = BTreeSet::new();
    lossy_router(&fabric.router);
    std::thread::sleep(Duration::from_secs(3));
    for ((name, rack, _), exporter) in fabric.nodes.iter().zip(&exporters) {
        let mut groups_probed = BTreeSet::new();
        for (peer, network, _, lost) in mesh_targets(exporter) {
            let peer_rack: usize = peer[1..2].parse().expect("rack digit");
            if peer_rack == *rack {
                intra.insert((name.clone(), peer.clone()));
                assert_eq!(lost, 0.0, "{name} -> {peer}: intra-rack, no loss");
            } else {
                assert_eq!(network, "routed");
                *rack_pairs.entry((*rack, peer_rack)).or_default() += 1;
                groups_probed.insert(format!("r{peer_rack}"));
            }
        }
        // Per-group series: own rack per peer, other racks one series set per rack.
        let metrics = exporter.metrics();
        let sent = series(&metrics, "meshprobe_mesh_sent_total");
        let received = series(&metrics, "meshprobe_mesh_received_total");
        let lost = series(&metrics, "meshprobe_mesh_lost_total");
        let routed: Vec<&String> = sent.keys().filter(|l| l.contains("routed")).collect();
        assert_eq!(routed.len(), groups_probed.len(), "{name}: {routed:?}");
        for labels in &routed {
            assert!(
                !labels.contains("peer=") && labels.contains("rack="),
                "{labels}"
            );
            assert!(
                lost[*labels] > 0.0,
                "{name} {labels}: routed series shows loss"
            );
        }
        for labels in sent.keys() {
            assert_eq!(
                sent[labels],
                received[labels] + lost[labels],
                "{name} {labels}"
            );
            if !labels.contains("routed") {
                assert_eq!(lost[labels], 0.0, "{name} {labels}");
            }
        }
    }
    assert_eq!(
        intra.len(),
        RACKS * PER_RACK * (PER_RACK - 1),
        "every intra-rack pair"
    );
    assert_eq!(rack_pairs.len(), RACKS * (RACKS - 1), "{rack_pairs:?}");
    assert!(
        rack_pairs.values().all(|n| *n == 2),
        "k = 2 paths per rack pair: {rack_pairs:?}"
    );
}
