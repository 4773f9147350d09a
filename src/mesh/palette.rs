//! The `/mesh` page's look: the RTT color scale, loss outlines, the dead and no-data fills, the
//! stylesheet, and the legend that explains them.
//!
//! Owns every color the page uses, so the legend and the cells can never disagree. Pure string
//! building; the page structure is in `page.rs`.

use std::fmt::Write;

use super::page::format_rtt;
use super::view::{LOSSY_RATIO, SLOW_P50_SECONDS, State, TargetView};

/// RTTs at or below this are fully green; at or above [`RTT_RED_SECONDS`] fully red.
pub const RTT_GREEN_SECONDS: f64 = 100e-6;
pub const RTT_RED_SECONDS: f64 = 0.100;
/// Legend stops of the RTT scale.
pub const RTT_STOPS_SECONDS: [f64; 7] = [100e-6, 300e-6, 1e-3, 3e-3, 10e-3, 30e-3, 100e-3];
/// Loss levels: below [`LOSSY_RATIO`] no outline; up to this one light violet; above, deep purple.
pub const HEAVY_LOSS_RATIO: f64 = 0.20;
pub const LOSSY_OUTLINE: &str = "#c77dff";
pub const HEAVY_LOSS_OUTLINE: &str = "#5a189a";
pub const DEAD_FILL: &str = "#000000";
pub const NO_DATA_FILL: &str = "#c8c8c8";

/// The cell color for a median RTT: hue from green (120°) to red (0°) on a log scale.
pub fn rtt_color(p50_seconds: f64) -> String {
    let span = (RTT_RED_SECONDS / RTT_GREEN_SECONDS).log10();
    let position = ((p50_seconds / RTT_GREEN_SECONDS).log10() / span).clamp(0.0, 1.0);
    hsl_hex(120.0 * (1.0 - position), 0.70, 0.42)
}

fn hsl_hex(hue: f64, saturation: f64, lightness: f64) -> String {
    let chroma = (1.0 - (2.0 * lightness - 1.0).abs()) * saturation;
    let sector = hue / 60.0;
    let second = chroma * (1.0 - (sector % 2.0 - 1.0).abs());
    let (r, g, b) = match sector as u32 {
        0 => (chroma, second, 0.0),
        1 => (second, chroma, 0.0),
        _ => (0.0, chroma, second),
    };
    let base = lightness - chroma / 2.0;
    let byte = |v: f64| ((v + base) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

/// The inline style of a target's cell: fill by RTT (black when dead, grey without data),
/// outline by loss.
pub fn cell_style(target: &TargetView) -> String {
    let summary = &target.summary;
    let fill = match (target.state, summary.rtt_p50_seconds) {
        (State::Dead, _) => DEAD_FILL.to_string(),
        (_, Some(p50)) => rtt_color(p50),
        (_, None) => NO_DATA_FILL.to_string(),
    };
    let outline = match summary.loss_ratio() {
        Some(loss) if loss >= 1.0 => DEAD_FILL,
        Some(loss) if loss >= HEAVY_LOSS_RATIO => HEAVY_LOSS_OUTLINE,
        Some(loss) if loss >= LOSSY_RATIO => LOSSY_OUTLINE,
        _ => "transparent",
    };
    format!("background:{fill};border-color:{outline}")
}

pub const STYLE: &str = "body{font:13px/1.3 sans-serif;margin:12px;color:#222}\
h1{font-size:18px;margin:0 0 4px}h2{font-size:13px;margin:8px 0 2px}\
.meta,nav{color:#555;margin:2px 0}\
#legend{display:flex;flex-wrap:wrap;gap:4px 18px;margin:8px 0;align-items:center}\
.scale{display:flex;gap:2px;align-items:center}.stop{display:inline-flex;flex-direction:column;align-items:center;font-size:10px}\
.blocks{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:flex-start}\
.row{display:flex;align-items:center;gap:2px;height:17px}\
.row.head{font-size:10px;color:#555}\
.name{width:130px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font:11px monospace}\
.cell,.gap,.swatch,.col{box-sizing:border-box;display:inline-block;width:22px;height:15px;text-align:center;\
font-size:11px;line-height:9px}\
.cell,.swatch{border:3px solid transparent;color:#fff}.gap{background:repeating-linear-gradient(45deg,#fff 0 3px,#e4e4e4 3px 6px)}\
.cell[data-state=nodata]{border:2px dashed #888}\
#problems ul{columns:3 26em;margin:2px 0;padding:0;list-style:none;font-size:12px}\
#problems .swatch{vertical-align:middle}\
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:1px 6px;text-align:left}\
td.num{text-align:right}";

pub fn legend(out: &mut String) {
    out.push_str(
        "<section id=\"legend\"><span>Fill: median RTT (p50)</span><span class=\"scale\">",
    );
    for stop in RTT_STOPS_SECONDS {
        let _ = write!(
            out,
            "<span class=\"stop\"><span class=\"swatch\" data-rtt=\"{stop}\" style=\"background:{}\"></span>{}</span>",
            rtt_color(stop),
            format_rtt(stop)
        );
    }
    let _ = write!(
        out,
        "</span><span>slow: p50 ≥ {}</span><span class=\"scale\">Outline: loss \
         <span class=\"swatch\" data-loss=\"lossy\" style=\"background:#888;border-color:{LOSSY_OUTLINE}\"></span> ≥ {:.0} % \
         <span class=\"swatch\" data-loss=\"heavy\" style=\"background:#888;border-color:{HEAVY_LOSS_OUTLINE}\"></span> ≥ {:.0} %</span>\
         <span class=\"scale\"><span class=\"swatch\" data-state=\"dead\" style=\"background:{DEAD_FILL}\">×</span> dead (no reply in the window)</span>\
         <span class=\"scale\"><span class=\"swatch\" data-state=\"nodata\" style=\"background:{NO_DATA_FILL}\"></span> no data yet</span>\
         <span class=\"scale\"><span class=\"gap\"></span> not a target on that network</span></section>",
        format_rtt(SLOW_P50_SECONDS),
        LOSSY_RATIO * 100.0,
        HEAVY_LOSS_RATIO * 100.0,
    );
}
