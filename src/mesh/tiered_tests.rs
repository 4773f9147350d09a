//! Property tests for [`super::Tiered`]: determinism, balance, stability, coverage, rotation.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use proptest::prelude::*;

/// `sizes[g]` members in group `g`, named `n{g}-{i}` in group `rack{g}`.
fn fleet(sizes: &[usize]) -> Vec<Member> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(g, size)| {
            (0..*size).map(move |i| Member::new(&format!("n{g}-{i}"), &format!("rack{g}")))
        })
        .collect()
}

fn named_edges(plan: &Tiered) -> BTreeSet<(String, String)> {
    let members = plan.members();
    plan.edges()
        .into_iter()
        .map(|(a, b)| (members[a].name.clone(), members[b].name.clone()))
        .collect()
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..9, 1..7)
}

/// Inter-group probes sent and received per member.
fn inter_degrees(plan: &Tiered) -> (Vec<usize>, Vec<usize>) {
    let mut out = vec![0; plan.members().len()];
    let mut into = vec![0; plan.members().len()];
    for path in plan.inter_paths() {
        out[path.from] += 1;
        into[path.to] += 1;
    }
    (out, into)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn deterministic_whatever_the_order(sizes in sizes(), k in 1usize..4, epoch in 0u64..50, seed in any::<u64>()) {
        let members = fleet(&sizes);
        let mut shuffled = members.clone();
        fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
        let a = Tiered::new(&members, k, epoch);
        let b = Tiered::new(&shuffled, k, epoch);
        prop_assert_eq!(a.edges(), b.edges());
        // What one member computes for itself is its slice of the whole plan.
        let edges = a.edges();
        for (index, member) in a.members().iter().enumerate() {
            let mine: Vec<usize> = edges.iter().filter(|(f, _)| *f == index).map(|(_, t)| *t).collect();
            prop_assert_eq!(b.targets_of(&member.name), Some(mine));
        }
    }

    #[test]
    fn full_mesh_inside_groups_and_k_paths_between(sizes in sizes(), k in 1usize..4, epoch in 0u64..50) {
        let plan = Tiered::new(&fleet(&sizes), k, epoch);
        let edges: BTreeSet<(usize, usize)> = plan.edges().into_iter().collect();
        let n = plan.members().len();
        for a in 0..n {
            for b in 0..n {
                if a != b && plan.group_of(a) == plan.group_of(b) {
                    prop_assert!(edges.contains(&(a, b)));
                }
            }
        }
        let mut per_pair: BTreeMap<(usize, usize), Vec<InterPath>> = BTreeMap::new();
        for path in plan.inter_paths() {
            prop_assert_ne!(path.from_group, path.to_group);
            prop_assert_eq!(plan.group_of(path.from), path.from_group);
            prop_assert_eq!(plan.group_of(path.to), path.to_group);
            per_pair.entry((path.from_group, path.to_group)).or_default().push(path);
        }
        let groups = plan.group_count();
        prop_assert_eq!(per_pair.len(), groups * (groups - 1));
        for ((from, to), paths) in &per_pair {
            prop_assert_eq!(paths.len(), k);
            // Distinct senders (receivers) while the group has k members.
            let senders: BTreeSet<usize> = paths.iter().map(|p| p.from).collect();
            let receivers: BTreeSet<usize> = paths.iter().map(|p| p.to).collect();
            prop_assert!(senders.len() >= k.min(sizes[*from]), "{:?}", paths);
            prop_assert!(receivers.len() >= k.min(sizes[*to]), "{:?}", paths);
        }
    }

    #[test]
    fn balanced_in_every_epoch(sizes in sizes(), k in 1usize..4, epoch in 0u64..200) {
        let plan = Tiered::new(&fleet(&sizes), k, epoch);
        let (out, into) = inter_degrees(&plan);
        let slots = k * (plan.group_count() - 1);
        for (member, (sent, received)) in out.iter().zip(&into).enumerate() {
            let size = sizes[plan.group_of(member)];
            let cap = slots.div_ceil(size) + 1;
            prop_assert!(*sent <= cap && *received <= cap, "member {member}: {sent}/{received} > {cap}");
        }
    }

    #[test]
    fn a_leaving_member_moves_only_paths_of_its_group(sizes in sizes(), k in 1usize..4, epoch in 0u64..50, pick in any::<usize>()) {
        let members = fleet(&sizes);
        let leaver = members[pick % members.len()].clone();
        let rest: Vec<Member> = members.iter().filter(|m| **m != leaver).cloned().collect();
        let before = Tiered::new(&members, k, epoch);
        let after = Tiered::new(&rest, k, epoch);
        // A group that vanishes with its last member changes every group's slot list.
        prop_assume!(rest.iter().any(|m| m.group == leaver.group));
        let old = named_edges(&before);
        let new = named_edges(&after);
        let group_of = |name: &str| members.iter().find(|m| m.name == name).map(|m| m.group.clone()).unwrap_or_default();
        for (from, to) in old.symmetric_difference(&new) {
            if *from == leaver.name || *to == leaver.name {
                continue;
            }
            // Intra-group pairs never move; inter-group ones only on the leaver's group's side
            // (while the rotation step M stays the same, as it does unless the largest group
            // crosses a multiple of 8).
            prop_assert_ne!(group_of(from), group_of(to));
            if before.largest == after.largest {
                prop_assert!(group_of(from) == leaver.group || group_of(to) == leaver.group,
                    "{from}->{to} moved when {} left", leaver.name);
            }
        }
    }
}

#[test]
fn rotation_covers_every_pair_within_the_stated_rotations() {
    for (sizes, k) in [(vec![3, 3, 3], 2), (vec![2, 5, 1, 4], 1), (vec![4, 4], 3)] {
        let members = fleet(&sizes);
        let n = members.len();
        let bound = Tiered::new(&members, k, 0).full_coverage_rotations();
        let mut seen: BTreeSet<(usize, usize)> = BTreeSet::new();
        let base = Tiered::new(&members, k, 0);
        let base_paths = base.inter_paths();
        for epoch in 0..bound {
            let plan = Tiered::new(&members, k, epoch);
            // Rotating the epoch-0 paths gives the same as planning at the epoch.
            let mut rotated: Vec<InterPath> =
                base_paths.iter().map(|p| base.rotated(p, epoch)).collect();
            rotated.sort();
            assert_eq!(rotated, plan.inter_paths());
            seen.extend(plan.edges());
        }
        assert_eq!(seen.len(), n * (n - 1), "{sizes:?} k={k} within {bound}");
    }
}

#[test]
fn fleet_scale_targets_hold_for_one_thousand_nodes() {
    // 25 racks of 40 (the 10 000-node case is in BENCHMARKS.md: `cargo run --example plan_bench`).
    let members = fleet(&[40; 25]);
    let plan = Tiered::new(&members, 2, 0);
    let (out, into) = inter_degrees(&plan);
    let mean = into.iter().sum::<usize>() as f64 / into.len() as f64;
    let max = *into.iter().max().unwrap_or(&0) as f64;
    assert!(max <= 1.25 * mean.ceil(), "in-degree max {max} mean {mean}");
    assert!(out.iter().all(|o| *o <= 2 * 24usize.div_ceil(40) + 1));
    let old = named_edges(&plan);
    let leaver = "n7-13";
    let rest: Vec<Member> = members
        .iter()
        .filter(|m| m.name != leaver)
        .cloned()
        .collect();
    let new = named_edges(&Tiered::new(&rest, 2, 0));
    let kept: Vec<&(String, String)> = old
        .iter()
        .filter(|(a, b)| a != leaver && b != leaver)
        .collect();
    let moved = kept.iter().filter(|e| !new.contains(**e)).count();
    assert!(moved * 100 <= kept.len(), "{moved} of {} moved", kept.len());
}
