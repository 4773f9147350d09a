//! Unit tests for [`super`]: escaping of hostile label text, colors, states in the DOM, grouping,
//! and the size and render time of a 200 peers × 2 networks page.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::icmp::IcmpErrorKind;
use crate::mesh::palette::*;
use crate::mesh::window::{ProbeError, RecentWindow};

fn target(peer: &str, network: &str, rtt_ms: f64, lost: usize, replies: usize) -> TargetView {
    let mut window = RecentWindow::default();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    for _ in 0..replies {
        window.record_reply(Duration::from_secs_f64(rtt_ms / 1000.0));
    }
    for _ in 0..lost {
        let error = ProbeError::Icmp {
            kind: IcmpErrorKind::DestinationUnreachable,
            code: 3,
            from: None,
        };
        window.record_lost(Some(error), at);
    }
    let summary = window.summary();
    TargetView {
        peer: peer.to_string(),
        network: network.to_string(),
        address: "198.18.0.2".to_string(),
        extra_labels: vec![("rack".to_string(), format!("r-{}", peer.len() % 3))],
        state: State::of(&summary),
        summary,
        path: None,
    }
}

fn view(targets: Vec<TargetView>) -> MeshView {
    let mut networks: Vec<String> = targets.iter().map(|t| t.network.clone()).collect();
    networks.sort();
    networks.dedup();
    MeshView {
        node: "node-a".to_string(),
        title: None,
        generated_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1012),
        window_duration: Duration::from_secs(100),
        targets,
        networks,
        unplaced: vec![("<b>x</b>".to_string(), "no common network".to_string())],
    }
}

/// The opening tags of `class="cell"` elements.
fn cells(html: &str) -> Vec<&str> {
    html.match_indices("<span class=\"cell\"")
        .map(|(start, _)| {
            let end = html[start..].find('>').map_or(html.len(), |e| start + e);
            &html[start..end]
        })
        .collect()
}

#[test]
fn hostile_label_text_is_escaped_everywhere() {
    let hostile = "<script>alert(1)</script>\"' onmouseover=x";
    let mut evil = target(hostile, "net\"><script>", 0.2, 0, 10);
    evil.extra_labels = vec![("rack".to_string(), "<img src=x>".to_string())];
    let mut page_view = view(vec![evil]);
    page_view.node = "<node>".to_string();
    let html = render(&page_view, Some("rack"));
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<node>"));
    assert!(!html.contains("<b>x</b>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39; onmouseover=x"));
    assert!(html.contains("data-network=\"net&quot;&gt;&lt;script&gt;\""));
    // Every attribute in a cell stays one attribute: nothing broke out of its quotes.
    for cell in cells(&html) {
        assert_eq!(cell.matches('"').count(), 12, "{cell}");
    }
}

#[test]
fn rtt_colors_run_from_green_to_red_on_a_log_scale() {
    let channel = |hex: &str, at: usize| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex");
    let green = rtt_color(50e-6);
    let red = rtt_color(0.5);
    assert_eq!(green, rtt_color(100e-6), "clamped below 0.1 ms");
    assert_eq!(red, rtt_color(0.1), "clamped above 100 ms");
    assert!(
        channel(&green, 3) > 150 && channel(&green, 1) < 60,
        "{green}"
    );
    assert!(channel(&red, 1) > 150 && channel(&red, 3) < 60, "{red}");
    // Redness grows with the RTT, one decade at a time.
    let reds: Vec<u8> = [1e-4, 1e-3, 1e-2, 1e-1]
        .iter()
        .map(|s| channel(&rtt_color(*s), 1))
        .collect();
    assert!(reds.windows(2).all(|w| w[0] <= w[1]), "{reds:?}");
    assert_eq!(format_rtt(52e-6), "0.052 ms");
    assert_eq!(format_rtt(0.0123), "12.3 ms");
    assert_eq!(format_rtt(1.25), "1.25 s");
}

#[test]
fn cells_carry_state_color_and_hover_details() {
    let html = render(
        &view(vec![
            target("healthy", "n1", 0.1, 0, 100),
            target("slow", "n1", 150.0, 0, 100),
            target("lossy", "n1", 0.1, 30, 70),
            target("dead", "n1", 0.0, 20, 0),
            target("fresh", "n2", 0.0, 0, 0),
        ]),
        None,
    );
    let cell_of = |peer: &str| -> String {
        cells(&html)
            .into_iter()
            .find(|c| c.contains(&format!("data-peer=\"{peer}\"")))
            .unwrap_or_else(|| panic!("no cell for {peer} in {html}"))
            .to_string()
    };
    assert_eq!(cells(&html).len(), 5);
    let healthy = cell_of("healthy");
    assert!(healthy.contains("data-state=\"ok\""), "{healthy}");
    assert!(healthy.contains(&format!("background:{}", rtt_color(100e-6))));
    assert!(healthy.contains("border-color:transparent"));
    assert!(healthy.contains("p50 0.100 ms, p99 0.100 ms&#10;loss 0.0 % (0 of 100)"));
    assert!(cell_of("slow").contains("data-state=\"slow\""));
    let lossy = cell_of("lossy");
    assert!(lossy.contains("data-state=\"lossy\""));
    assert!(lossy.contains(&format!("border-color:{HEAVY_LOSS_OUTLINE}")));
    assert!(lossy.contains("loss 30.0 % (30 of 100)"));
    assert!(
        lossy.contains("last error: destination_unreachable (code 3), 12 s ago"),
        "{lossy}"
    );
    let dead = cell_of("dead");
    assert!(dead.contains("data-state=\"dead\""));
    assert!(dead.contains(&format!("background:{DEAD_FILL}")));
    let fresh = cell_of("fresh");
    assert!(fresh.contains("data-state=\"nodata\""));
    assert!(fresh.contains(&format!("background:{NO_DATA_FILL}")));
    // Four n1 targets and one n2 target: every peer row has a gap in the other column.
    assert_eq!(html.matches("<span class=\"gap\"></span>").count(), 5 + 1);
    assert!(html.contains("id=\"legend\""));
    assert!(html.contains("<summary>Table of all 5 targets</summary>"));
    assert!(html.contains("<span data-state=\"dead\">dead: 1</span>"));
    // Problems, worst first: dead, lossy, slow; healthy and fresh ones are not listed.
    let problems = html
        .split("<section id=\"problems\"><h2>Problems (4)</h2>")
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .expect("problems section");
    let listed: Vec<&str> = problems
        .match_indices("<li data-state=\"")
        .map(|(i, _)| problems[i + 16..].split('"').next().unwrap_or_default())
        .collect();
    assert_eq!(listed, ["dead", "lossy", "slow"]);
    assert!(
        problems.contains("(198.18.0.2) on"),
        "the address is named: {problems}"
    );
    // The unplaced peer is a problem too, with what to do about it.
    assert!(
        problems.contains("&lt;b&gt;x&lt;/b&gt; is not probed: no common network; fix: "),
        "{problems}"
    );
}

#[test]
fn the_title_is_configurable_and_escaped() {
    let mut titled = view(vec![target("a", "n1", 0.1, 0, 10)]);
    titled.title = Some("Lab <mesh>".to_string());
    let html = render(&titled, None);
    assert!(
        html.contains("<title>Lab &lt;mesh&gt; (node-a)</title>"),
        "{html}"
    );
    assert!(html.contains("<h1>Lab &lt;mesh&gt;</h1>"), "{html}");
    assert!(html.contains("<span id=\"node\">node-a</span>"));
    let plain = render(&view(vec![target("a", "n1", 0.1, 0, 10)]), None);
    assert!(plain.contains("<h1>Mesh from <span id=\"node\">node-a</span></h1>"));
}

#[test]
fn a_dual_stack_peer_cell_shows_its_worst_family() {
    let v4 = target("dual", "n1", 0.1, 0, 10);
    let mut v6 = target("dual", "n1", 0.1, 10, 0);
    v6.address = "2001:2::2".to_string();
    let html = render(&view(vec![v4, v6]), None);
    let cells = cells(&html);
    assert_eq!(cells.len(), 1, "one cell per peer and network");
    assert!(cells[0].contains("data-state=\"dead\""), "{}", cells[0]);
    assert!(html.contains("dual (2001:2::2) on n1: dead"), "{html}");
    assert!(html.contains("2 targets on 1 network."), "singular network");
}

#[test]
fn rows_group_by_a_label_and_links_offer_the_labels() {
    let html = render(
        &view(vec![
            target("a", "n1", 0.1, 0, 5),
            target("bb", "n1", 0.1, 0, 5),
            target("ccc", "n1", 0.1, 0, 5),
            target("dddd", "n1", 0.1, 0, 5),
        ]),
        Some("rack"),
    );
    assert!(html.contains("<a href=\"mesh?group=rack\">rack</a> (current)"));
    let groups: Vec<&str> = html
        .match_indices("<h2>rack = ")
        .map(|(i, _)| &html[i + 11..i + 14])
        .collect();
    assert_eq!(groups, ["r-0", "r-1", "r-2"]);
    let rack_one = html.split("<h2>rack = r-1</h2>").nth(1).expect("group r-1");
    let rack_one = rack_one.split("<h2>").next().unwrap_or_default();
    assert_eq!(cells(rack_one).len(), 2, "peers a and dddd");
}

#[test]
fn two_hundred_peers_on_two_networks_render_small_and_fast() {
    let mut targets = Vec::new();
    for index in 0..200 {
        let peer = format!("node-{index:03}.rack-{}.example.internal", index % 10);
        for network in ["198.18.0.0/24", "2001:2::/64"] {
            targets.push(target(
                &peer,
                network,
                0.05 * (index as f64 + 1.0),
                index % 7,
                95,
            ));
        }
    }
    let page_view = view(targets);
    let started = Instant::now();
    let html = render(&page_view, None);
    let elapsed = started.elapsed();
    let json = serde_json::to_string(&page_view.to_json()).expect("json");
    eprintln!(
        "400 targets: page {} bytes rendered in {:?}; JSON {} bytes",
        html.len(),
        elapsed,
        json.len()
    );
    assert_eq!(cells(&html).len(), 400);
    assert_eq!(html.matches("<div class=\"row\">").count(), 200);
    assert!(html.len() < 600_000, "page is {} bytes", html.len());
}

#[test]
fn a_mesh_without_targets_renders_an_empty_matrix() {
    let mut empty = view(Vec::new());
    empty.unplaced.clear();
    let html = render(&empty, Some("network"));
    assert!(html.contains("0 targets on 0 networks"));
    assert!(cells(&html).is_empty());
    assert!(!html.contains("id=\"problems\""));
}

#[test]
fn mesh_off_page_says_so() {
    let html = mesh_off_page();
    assert!(html.contains("Mesh mode is off"));
    assert!(html.contains("id=\"mesh-off\""));
}
