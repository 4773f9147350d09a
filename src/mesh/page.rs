//! The `/mesh` HTML page: a matrix with one row per peer and one column per network, cells
//! colored by median RTT and outlined by loss, a legend, hover details and a full table.
//!
//! Owns the layout, the hover and table text, and HTML escaping (colors are in `palette.rs`). Rendered on the server as static HTML and CSS:
//! no script, no external resources (the page works under `default-src 'none'`). Rows come in
//! blocks of 30 that wrap side by side, so 200 peers fit on one screen. Every piece of label
//! text comes from config or peer files and is escaped. Data comes from [`super::view`].

use std::collections::BTreeMap;
use std::fmt::Write;

use super::palette::{STYLE, cell_style, legend};
use super::trace_export;
use super::view::{MeshView, State, TargetView};
use super::window::WINDOW_PROBES;

/// The `Content-Security-Policy` the page is served with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

/// "0.052 ms", "12.3 ms", "1.25 s": three significant digits.
pub fn format_rtt(seconds: f64) -> String {
    let (value, unit) = if seconds < 1.0 {
        (seconds * 1000.0, "ms")
    } else {
        (seconds, "s")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else if value >= 1.0 {
        2
    } else {
        3
    };
    format!("{value:.decimals$} {unit}")
}

fn format_optional_rtt(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "–".to_string(), format_rtt)
}

fn format_loss(target: &TargetView) -> String {
    let summary = &target.summary;
    match summary.loss_ratio() {
        None => "no probes yet".to_string(),
        Some(loss) => format!(
            "{:.1} % ({} of {})",
            loss * 100.0,
            summary.lost + summary.not_sent,
            summary.probes
        ),
    }
}

fn format_last_error(target: &TargetView, view: &MeshView) -> String {
    match target.summary.last_error {
        None => "none".to_string(),
        Some(last) => {
            let age = view
                .generated_at
                .duration_since(last.at)
                .unwrap_or_default()
                .as_secs();
            format!("{}, {age} s ago", last.error)
        }
    }
}

/// The hover text of a cell (escaped by the caller).
fn details(target: &TargetView, view: &MeshView) -> String {
    let mut text = format!(
        "peer {}\nnetwork {}\naddress {}\n",
        target.peer, target.network, target.address
    );
    for (key, value) in &target.extra_labels {
        let _ = writeln!(text, "{key} {value}");
    }
    let _ = write!(
        text,
        "state {}\np50 {}, p99 {}\nloss {}\nlast error: {}",
        target.state.as_str(),
        format_optional_rtt(target.summary.rtt_p50_seconds),
        format_optional_rtt(target.summary.rtt_p99_seconds),
        format_loss(target),
        format_last_error(target, view),
    );
    if let Some(path) = &target.path {
        let _ = write!(text, "\n{}", trace_export::hover(path, view.generated_at));
    }
    text
}

/// What the last trace says about a problem target: "; loss starts at hop N (router)".
fn trace_verdict(target: &TargetView) -> String {
    target.path.as_ref().map_or_else(String::new, |path| {
        format!("; {}", trace_export::verdict(path))
    })
}

/// Renders the page. `group` names a label whose values group the rows (e.g. `rack`).
pub fn render(view: &MeshView, group: Option<&str>) -> String {
    let mut out = String::with_capacity(1024 + view.targets.len() * 700);
    let node = html_escape(&view.node);
    // `mesh.title` when set (the node still named under it), else "Mesh from <node>".
    let (title, heading) = match view.title.as_deref() {
        Some(title) => {
            let title = html_escape(title);
            (
                format!("{title} ({node})"),
                format!("{title}</h1><p class=\"meta\">from <span id=\"node\">{node}</span></p>"),
            )
        }
        None => (
            format!("meshprobe mesh from {node}"),
            format!("Mesh from <span id=\"node\">{node}</span></h1>"),
        ),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <h1>{heading}\
         <p class=\"meta\">{} on {}. Window: the last {WINDOW_PROBES} probes \
         per target (about {} s at the configured interval). <a href=\"mesh.json\">JSON</a></p>",
        count(view.targets.len(), "target", "targets"),
        count(view.networks.len(), "network", "networks"),
        view.window_duration.as_secs(),
    );
    out.push_str("<p id=\"summary\" class=\"meta\">");
    for (state, count) in view.state_counts() {
        let _ = write!(
            out,
            "<span data-state=\"{}\">{}: {count}</span> ",
            state.as_str(),
            state.as_str()
        );
    }
    out.push_str("</p>");
    problems(&mut out, view);
    group_links(&mut out, view, group);
    legend(&mut out);
    matrix(&mut out, view, group);
    table(&mut out, view);
    unplaced(&mut out, view);
    out.push_str("</body></html>\n");
    out
}

/// The page while mesh mode is off.
pub fn mesh_off_page() -> String {
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>meshprobe: mesh mode is off</title></head>\
     <body><h1>Mesh mode is off</h1><p id=\"mesh-off\">This meshprobe has no <code>mesh:</code> section in its \
     configuration file, so it probes no peers and there is no matrix to show. Add a <code>mesh:</code> section \
     (see the README, \"Mesh mode\") and reload.</p></body></html>\n"
        .to_string()
}

/// `1 network`, `2 networks`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How bad a state is, for the one cell a peer's targets on a network share (IPv4 and IPv6
/// addresses under one label): the cell shows the worst of them.
fn severity(state: State) -> u8 {
    match state {
        State::Ok => 0,
        State::NoData => 1,
        State::Slow => 2,
        State::Lossy => 3,
        State::Dead => 4,
    }
}

/// What to do about a peer without a target, by the reason `plan` gave.
fn unplaced_fix(reason: &str) -> &'static str {
    match reason {
        "no common network" => {
            "give it an address on one of this node's networks, or a \"network\" label to reach it through the routing table"
        }
        "no common network among the chosen networks" => {
            "add one of the networks it shares with this node to mesh.networks"
        }
        "no usable address" => "list an IP address in its targets",
        "all its addresses are claimed by another peer" => "give each peer its own addresses",
        _ => "see the README, \"Mesh mode\"",
    }
}

/// Problem targets listed by name above the matrix, worst first, at most this many.
const PROBLEMS_LISTED: usize = 40;

fn problems(out: &mut String, view: &MeshView) {
    let mut problems: Vec<&TargetView> = view
        .targets
        .iter()
        .filter(|t| matches!(t.state, State::Slow | State::Lossy | State::Dead))
        .collect();
    if problems.is_empty() && view.unplaced.is_empty() {
        return;
    }
    // Stable: within a state, targets keep their network-then-peer order.
    problems.sort_by_key(|t| std::cmp::Reverse(t.state));
    let _ = write!(
        out,
        "<section id=\"problems\"><h2>Problems ({})</h2><ul>",
        problems.len() + view.unplaced.len()
    );
    for target in problems.iter().take(PROBLEMS_LISTED) {
        let _ = write!(
            out,
            "<li data-state=\"{}\"><span class=\"swatch\" style=\"{}\"></span> {} ({}) on {}: {}, p50 {}, loss {}<span class=\"trace\">{}</span></li>",
            target.state.as_str(),
            cell_style(target),
            html_escape(&target.peer),
            html_escape(&target.address),
            html_escape(&target.network),
            target.state.as_str(),
            format_optional_rtt(target.summary.rtt_p50_seconds),
            format_loss(target),
            html_escape(&trace_verdict(target)),
        );
    }
    if problems.len() > PROBLEMS_LISTED {
        let _ = write!(
            out,
            "<li>and {} more (see the table)</li>",
            problems.len() - PROBLEMS_LISTED
        );
    }
    for (peer, reason) in view.unplaced.iter().take(PROBLEMS_LISTED) {
        let _ = write!(
            out,
            "<li class=\"unplaced\">{} is not probed: {}; fix: {}</li>",
            html_escape(peer),
            html_escape(reason),
            html_escape(unplaced_fix(reason))
        );
    }
    out.push_str("</ul></section>");
}

fn group_links(out: &mut String, view: &MeshView, group: Option<&str>) {
    let mut keys: Vec<&str> = view
        .targets
        .iter()
        .flat_map(|t| t.extra_labels.iter().map(|(key, _)| key.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return;
    }
    out.push_str("<nav>Group rows by: <a href=\"mesh\">none</a>");
    for key in keys {
        let query: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
        let marker = if group == Some(key) { " (current)" } else { "" };
        let _ = write!(
            out,
            " · <a href=\"mesh?group={}\">{}</a>{marker}",
            html_escape(&query),
            html_escape(key)
        );
    }
    out.push_str("</nav>");
}

/// Rows per block of the matrix; blocks sit side by side, so 200 peers fit on one screen.
const ROWS_PER_BLOCK: usize = 30;

/// Column letters for the networks (A, B, …, then AA…), keyed in the page header.
fn column_name(index: usize) -> String {
    let letter = |i: usize| char::from(b'A' + (i % 26) as u8);
    if index < 26 {
        letter(index).to_string()
    } else {
        format!("{}{}", letter(index / 26 - 1), letter(index))
    }
}

fn matrix(out: &mut String, view: &MeshView, group: Option<&str>) {
    out.push_str("<section id=\"matrix\"><p class=\"meta\">Rows: peers. Columns: ");
    for (index, network) in view.networks.iter().enumerate() {
        let _ = write!(
            out,
            "<b>{}</b> <span class=\"network\">{}</span> ",
            column_name(index),
            html_escape(network)
        );
    }
    out.push_str("</p>");
    // Rows: (group value, peer) -> one target slot per network; BTreeMap keeps them sorted.
    type Slots<'a> = Vec<Option<&'a TargetView>>;
    let mut groups: BTreeMap<&str, BTreeMap<&str, Slots<'_>>> = BTreeMap::new();
    for target in &view.targets {
        let group_value = group.map_or("", |key| target.label(key).unwrap_or("(none)"));
        let slots = groups
            .entry(group_value)
            .or_default()
            .entry(target.peer.as_str())
            .or_insert_with(|| vec![None; view.networks.len()]);
        // One cell per (peer, network): with IPv4 and IPv6 addresses it shows the worst.
        if let Some(column) = view.networks.iter().position(|n| *n == target.network)
            && slots[column].is_none_or(|shown| severity(target.state) > severity(shown.state))
        {
            slots[column] = Some(target);
        }
    }
    for (group_value, rows) in &groups {
        out.push_str("<div class=\"group\">");
        if let Some(key) = group {
            let _ = write!(
                out,
                "<h2>{} = {}</h2>",
                html_escape(key),
                html_escape(group_value)
            );
        }
        out.push_str("<div class=\"blocks\">");
        let rows: Vec<(&&str, &Slots<'_>)> = rows.iter().collect();
        for block in rows.chunks(ROWS_PER_BLOCK) {
            out.push_str(
                "<div class=\"block\"><div class=\"row head\"><span class=\"name\">peer</span>",
            );
            for index in 0..view.networks.len() {
                let _ = write!(out, "<span class=\"col\">{}</span>", column_name(index));
            }
            out.push_str("</div>");
            for (peer, slots) in block {
                let peer = html_escape(peer);
                let _ = write!(
                    out,
                    "<div class=\"row\"><span class=\"name\" title=\"{peer}\">{peer}</span>"
                );
                for slot in slots.iter() {
                    match slot {
                        Some(target) => cell(out, target, view),
                        None => out.push_str("<span class=\"gap\"></span>"),
                    }
                }
                out.push_str("</div>");
            }
            out.push_str("</div>");
        }
        out.push_str("</div></div>");
    }
    out.push_str("</section>");
}

fn cell(out: &mut String, target: &TargetView, view: &MeshView) {
    let glyph = if target.state == State::Dead {
        "×"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<span class=\"cell\" data-peer=\"{}\" data-network=\"{}\" data-state=\"{}\" style=\"{}\" title=\"{}\">{glyph}</span>",
        html_escape(&target.peer),
        html_escape(&target.network),
        target.state.as_str(),
        cell_style(target),
        html_escape(&details(target, view)),
    );
}

fn table(out: &mut String, view: &MeshView) {
    let _ = write!(
        out,
        "<details id=\"table\"><summary>Table of all {} targets</summary><table><thead><tr>\
         <th>network</th><th>peer</th><th>address</th><th>labels</th><th>state</th><th>p50</th>\
         <th>p99</th><th>loss</th><th>last error</th></tr></thead><tbody>",
        view.targets.len()
    );
    for target in &view.targets {
        let labels: Vec<String> = target
            .extra_labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let _ = write!(
            out,
            "<tr data-peer=\"{}\" data-network=\"{}\" data-state=\"{}\"><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td><span class=\"swatch\" style=\"{}\"></span> {}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            html_escape(&target.peer),
            html_escape(&target.network),
            target.state.as_str(),
            html_escape(&target.network),
            html_escape(&target.peer),
            html_escape(&target.address),
            html_escape(&labels.join(", ")),
            cell_style(target),
            target.state.as_str(),
            format_optional_rtt(target.summary.rtt_p50_seconds),
            format_optional_rtt(target.summary.rtt_p99_seconds),
            format_loss(target),
            html_escape(&format_last_error(target, view)),
        );
    }
    out.push_str("</tbody></table></details>");
}

fn unplaced(out: &mut String, view: &MeshView) {
    if view.unplaced.is_empty() {
        return;
    }
    out.push_str("<section id=\"unplaced\"><h2>Peers without a target</h2><ul>");
    for (peer, reason) in &view.unplaced {
        let _ = write!(
            out,
            "<li>{}: {}</li>",
            html_escape(peer),
            html_escape(reason)
        );
    }
    out.push_str("</ul></section>");
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
