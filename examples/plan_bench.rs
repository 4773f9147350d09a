//! The plan alone at fleet scale: `full` against `tiered` for 1 000 and 10 000 nodes in racks of
//! 40 (k = 2), printed as the table in BENCHMARKS.md. Run: `cargo run --example plan_bench`
//! (debug build; add `-- --quick` to skip the 10 000-node rotation simulation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use meshprobe::mesh::tiered::{Member, Tiered};

/// Counts live and peak heap bytes, so the plan's memory is measured, not guessed.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards to the system allocator with the caller's layout.
        let pointer = unsafe { System.alloc(layout) };
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        pointer
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `pointer` came from `alloc` with this layout.
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Classic histogram series per target: 20 buckets + +Inf + _sum + _count, and 7 counters/gauges.
const SERIES_PER_TARGET: usize = 30;
const RACK: usize = 40;
const K: usize = 2;

fn fleet(nodes: usize) -> Vec<Member> {
    (0..nodes)
        .map(|i| Member::new(&format!("node-{i:05}"), &format!("rack-{:03}", i / RACK)))
        .collect()
}

/// Measures `f`: (result, milliseconds, peak heap bytes above the start).
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let value = f();
    let millis = start.elapsed().as_secs_f64() * 1e3;
    (value, millis, PEAK.load(Ordering::Relaxed) - base)
}

fn stats(values: &[usize]) -> (usize, f64, usize) {
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    let mean = values.iter().sum::<usize>() as f64 / values.len().max(1) as f64;
    (min, mean, max)
}

/// Epochs until every ordered node pair has been an edge at least once (inter-group pairs only:
/// intra-group pairs are measured every interval).
fn coverage_epochs(members: &[Member], limit: u64) -> Option<u64> {
    let n = members.len();
    let mut seen = vec![0u64; (n * n).div_ceil(64)];
    let base = Tiered::new(members, K, 0);
    let paths = base.inter_paths();
    let mut missing: usize = (0..n)
        .flat_map(|a| (0..n).map(move |b| (a, b)))
        .filter(|(a, b)| base.group_of(*a) != base.group_of(*b))
        .count();
    for epoch in 0..limit {
        for path in &paths {
            let path = base.rotated(path, epoch);
            let cell = path.from * n + path.to;
            let (word, bit) = (cell / 64, 1u64 << (cell % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                missing -= 1;
            }
        }
        if missing == 0 {
            return Some(epoch + 1);
        }
    }
    None
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "| nodes | strategy | targets/node min/mean/max | packets/s/node (1 s interval) | in-degree max/mean | inter in-degree max/mean | series total (per peer) | series total (per group) | moved when one leaves | full coverage | plan time node / all | plan memory node / all |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for nodes in [1_000usize, 10_000] {
        let racks = nodes / RACK;
        let full_targets = nodes - 1;
        println!(
            "| {nodes} | full | {t}/{t}/{t} | {t} | 1.00 ({t}/{t}) | – | {s} | {g} | 0 | every interval | – | – |",
            t = full_targets,
            s = nodes * full_targets * SERIES_PER_TARGET,
            g = nodes * (RACK - 1 + racks - 1) * SERIES_PER_TARGET,
        );
        let members = fleet(nodes);
        let me = members[nodes / 2].name.clone();
        let ((), node_ms, node_bytes) = measure(|| {
            let plan = Tiered::new(&members, K, 0);
            std::hint::black_box(plan.targets_of(&me));
        });
        let (edges, all_ms, all_bytes) = measure(|| Tiered::new(&members, K, 0).edges());
        let plan = Tiered::new(&members, K, 0);
        let mut out = vec![0usize; nodes];
        let mut into = vec![0usize; nodes];
        let mut inter_in = vec![0usize; nodes];
        let mut groups_probed: Vec<std::collections::BTreeSet<usize>> =
            vec![Default::default(); nodes];
        for (from, to) in &edges {
            out[*from] += 1;
            into[*to] += 1;
            if plan.group_of(*from) != plan.group_of(*to) {
                inter_in[*to] += 1;
                groups_probed[*from].insert(plan.group_of(*to));
            }
        }
        let (tmin, tmean, tmax) = stats(&out);
        let (_, imean, imax) = stats(&into);
        let (_, xmean, xmax) = stats(&inter_in);
        let per_group: usize = (0..nodes)
            .map(|n| (RACK - 1 + groups_probed[n].len()) * SERIES_PER_TARGET)
            .sum();
        // One node leaves: which of the others' assignments move?
        let leaver = members[nodes / 3].name.clone();
        let rest: Vec<Member> = members
            .iter()
            .filter(|m| m.name != leaver)
            .cloned()
            .collect();
        let after = Tiered::new(&rest, K, 0);
        let index: HashMap<&str, usize> = plan
            .members()
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        let mut new_edges: Vec<(usize, usize)> = after
            .edges()
            .into_iter()
            .map(|(a, b)| {
                (
                    index[after.members()[a].name.as_str()],
                    index[after.members()[b].name.as_str()],
                )
            })
            .collect();
        new_edges.sort_unstable();
        let gone = index[leaver.as_str()];
        let kept: Vec<&(usize, usize)> = edges
            .iter()
            .filter(|(a, b)| *a != gone && *b != gone)
            .collect();
        let moved = kept
            .iter()
            .filter(|e| new_edges.binary_search(e).is_err())
            .count();
        let bound = plan.full_coverage_rotations();
        let coverage = if quick && nodes > 1_000 {
            format!("≤ {bound} rotations (bound)")
        } else {
            match coverage_epochs(&members, bound) {
                Some(epochs) => format!("{epochs} rotations (bound {bound})"),
                None => format!("NOT within {bound}"),
            }
        };
        println!(
            "| {nodes} | tiered k={K}, {racks} racks | {tmin}/{tmean:.1}/{tmax} | {tmean:.1} mean, {tmax} max | {r:.2} ({imax}/{imean:.1}) | {xr:.2} ({xmax}/{xmean:.2}) | {s} | {per_group} | {moved} of {kept} ({pct:.3} %) | {coverage} | {node_ms:.1} ms / {all_ms:.0} ms | {nb:.2} MB / {ab:.1} MB |",
            r = imax as f64 / imean,
            xr = xmax as f64 / xmean,
            s = edges.len() * SERIES_PER_TARGET,
            kept = kept.len(),
            pct = moved as f64 * 100.0 / kept.len() as f64,
            nb = node_bytes as f64 / 1e6,
            ab = all_bytes as f64 / 1e6,
        );
    }
}
