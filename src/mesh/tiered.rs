//! The tiered plan (`mesh.strategy: tiered`): who probes whom in a fleet too large for a full
//! mesh, as a pure, deterministic function of the member list (Pingmesh's tiers, no controller).
//!
//! Members are grouped by a label (`mesh.group_by`, e.g. `rack`). Inside a group: a full mesh.
//! Between groups: every ordered pair of groups (A, B) gets `k` paths (`mesh.paths_between_groups`)
//! every interval, each from one member of A to one member of B. The sending side of each path is
//! chosen by **rendezvous hashing with bounded loads** over A's members (every slot (B, p) ranks
//! A's members by a hash of (slot, member) and takes the best one still under the cap
//! c = ⌈k·(groups−1)/|A|⌉, or c + 1 where that keeps the k paths of one group pair on distinct
//! members), and the receiving side likewise over B's members, so probes sent and received are
//! spread evenly (at most c + 1 each), and a member joining or leaving only moves the slots it held plus a short
//! cascade; no list position matters. With rotation (`mesh.rotate_every`), epoch `e` shifts
//! every sender `e` places along its group's hash ring and every receiver `⌊e/M⌋` places (M =
//! the largest group size rounded up to a multiple of 8, so that it rarely changes): the same
//! permutation for a whole group, so the balance holds in every epoch, and each path walks
//! through all |A|·|B| member pairs within M·|B| ≤ M² epochs, after which every pair of nodes in
//! the fleet has been measured. Hashes are FNV-1a with a splitmix64
//! finaliser, identical on every platform and Rust version. It must not do I/O or read clocks:
//! the epoch is an input.

use std::collections::BTreeMap;

/// One member of the fleet: its name (the `peer` label) and its group (the `group_by` label's
/// value; empty when it has none, which makes one group of all unlabelled members).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub name: String,
    pub group: String,
}

impl Member {
    pub fn new(name: &str, group: &str) -> Member {
        Member {
            name: name.to_string(),
            group: group.to_string(),
        }
    }
}

/// One inter-group path of the plan: the `path`-th of the ordered group pair, between members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterPath {
    pub from_group: usize,
    pub to_group: usize,
    pub path: usize,
    pub from: usize,
    pub to: usize,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    splitmix(hash)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Which side of a path a slot assignment picks.
#[derive(Clone, Copy)]
enum Side {
    Send,
    Receive,
}

struct Group {
    name: String,
    /// Member indices on the group's hash ring (sorted by a hash of (group, member)).
    ring: Vec<usize>,
}

/// The tiered plan of one member list. Build once, then ask for one member's targets (cheap:
/// it computes only the groups that member's paths touch) or for every path (tests, benches).
pub struct Tiered {
    members: Vec<Member>,
    member_hash: Vec<u64>,
    groups: Vec<Group>,
    group_of: Vec<usize>,
    rank: Vec<usize>,
    largest: usize,
    paths: usize,
    epoch: u64,
}

impl Tiered {
    /// `members` in any order (duplicate names: the first group by sort order wins); `paths` is
    /// k (at least 1); `epoch` is 0 without rotation.
    pub fn new(members: &[Member], paths: usize, epoch: u64) -> Tiered {
        let mut sorted: Vec<Member> = members.to_vec();
        sorted.sort();
        sorted.dedup_by(|a, b| a.name == b.name);
        let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, member) in sorted.iter().enumerate() {
            by_group.entry(&member.group).or_default().push(index);
        }
        let member_hash: Vec<u64> = sorted.iter().map(|m| fnv(&[m.name.as_bytes()])).collect();
        let mut group_of = vec![0; sorted.len()];
        let mut rank = vec![0; sorted.len()];
        let mut groups = Vec::with_capacity(by_group.len());
        for (group_index, (name, mut ring)) in by_group.into_iter().enumerate() {
            let seed = fnv(&[b"ring", name.as_bytes()]);
            ring.sort_by_key(|m| (splitmix(seed ^ member_hash[*m]), *m));
            for (position, member) in ring.iter().enumerate() {
                group_of[*member] = group_index;
                rank[*member] = position;
            }
            groups.push(Group {
                name: name.to_string(),
                ring,
            });
        }
        let largest = groups
            .iter()
            .map(|g| g.ring.len())
            .max()
            .unwrap_or(0)
            .next_multiple_of(8);
        Tiered {
            members: sorted,
            member_hash,
            groups,
            group_of,
            rank,
            largest,
            paths: paths.max(1),
            epoch,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn group_name(&self, group: usize) -> &str {
        self.groups.get(group).map_or("", |g| g.name.as_str())
    }

    pub fn group_of(&self, member: usize) -> usize {
        self.group_of[member]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()
    }

    /// Rotations after which every pair of members has been measured: M² (M = the largest
    /// group rounded up to a multiple of 8), an upper bound for every group pair.
    pub fn full_coverage_rotations(&self) -> u64 {
        (self.largest as u64).pow(2)
    }

    /// For every other group `h` and path `p`, the member of `group` that holds slot (h, p) on
    /// `side`, before rotation; indexed `h * k + p` (`usize::MAX` for `h == group`).
    fn assign(&self, group: usize, side: Side) -> Vec<usize> {
        let k = self.paths;
        let count = self.groups.len();
        let ring = &self.groups[group].ring;
        let mut result = vec![usize::MAX; count * k];
        if ring.is_empty() || count < 2 {
            return result;
        }
        let side_tag: &[u8] = match side {
            Side::Send => b"send",
            Side::Receive => b"receive",
        };
        let own = self.groups[group].name.as_bytes();
        // Slots in the order of their own hash: independent of who the members are.
        let mut slots: Vec<(u64, usize, usize)> = Vec::with_capacity((count - 1) * k);
        for (other, other_group) in self.groups.iter().enumerate() {
            if other == group {
                continue;
            }
            for path in 0..k {
                let path_tag = path.to_le_bytes();
                let hash = fnv(&[side_tag, own, other_group.name.as_bytes(), &path_tag]);
                slots.push((hash, other, path));
            }
        }
        slots.sort_unstable();
        let cap = slots.len().div_ceil(ring.len());
        let mut load = vec![0usize; ring.len()];
        let mut used: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (hash, other, path) in slots {
            // The best member under the cap not yet on another path of this group pair; failing
            // that, one a single slot over the cap; failing that, any member under the cap.
            let pick = |limit: usize, fresh_only: bool| {
                ring.iter()
                    .enumerate()
                    .filter(|(position, _)| load[*position] < limit)
                    .filter(|(position, _)| !fresh_only || !used[other].contains(position))
                    .max_by_key(|(_, member)| splitmix(hash ^ self.member_hash[**member]))
                    .map(|(position, _)| position)
            };
            let choice = pick(cap, true)
                .or_else(|| pick(cap + 1, true))
                .or_else(|| pick(cap, false));
            if let Some(position) = choice {
                load[position] += 1;
                used[other].push(position);
                result[other * k + path] = ring[position];
            }
        }
        result
    }

    /// The member `base` of `group` after the rotation of `side` for this epoch.
    fn rotate(&self, group: usize, base: usize, side: Side) -> usize {
        self.rotate_at(group, base, side, self.epoch)
    }

    fn rotate_at(&self, group: usize, base: usize, side: Side, epoch: u64) -> usize {
        let ring = &self.groups[group].ring;
        let shift = match side {
            Side::Send => epoch,
            Side::Receive => epoch / (self.largest.max(1) as u64),
        };
        let length = ring.len() as u64;
        let position = (self.rank[base] as u64 + shift % length) % length;
        ring[position as usize]
    }

    /// `path` of this plan built at epoch 0 (unrotated), as it is at `epoch`: the same result
    /// as building the plan at `epoch`, without recomputing the assignment (benchmarks).
    pub fn rotated(&self, path: &InterPath, epoch: u64) -> InterPath {
        InterPath {
            from: self.rotate_at(path.from_group, path.from, Side::Send, epoch),
            to: self.rotate_at(path.to_group, path.to, Side::Receive, epoch),
            ..*path
        }
    }

    /// Every inter-group path of the plan, sorted.
    pub fn inter_paths(&self) -> Vec<InterPath> {
        let receive: Vec<Vec<usize>> = (0..self.groups.len())
            .map(|g| self.assign(g, Side::Receive))
            .collect();
        let k = self.paths;
        let mut out = Vec::new();
        for group in 0..self.groups.len() {
            let send = self.assign(group, Side::Send);
            for (other, receivers) in receive.iter().enumerate() {
                if other == group {
                    continue;
                }
                for path in 0..k {
                    let from = send[other * k + path];
                    let to = receivers[group * k + path];
                    if from == usize::MAX || to == usize::MAX {
                        continue;
                    }
                    out.push(InterPath {
                        from_group: group,
                        to_group: other,
                        path,
                        from: self.rotate(group, from, Side::Send),
                        to: self.rotate(other, to, Side::Receive),
                    });
                }
            }
        }
        out.sort();
        out
    }

    /// The members `name` probes: its own group in full, and the inter-group paths it sends.
    /// `None` when `name` is not a member. Sorted, no duplicates, never `name` itself.
    pub fn targets_of(&self, name: &str) -> Option<Vec<usize>> {
        let me = self.index_of(name)?;
        let group = self.group_of[me];
        let mut targets: Vec<usize> = self.groups[group]
            .ring
            .iter()
            .copied()
            .filter(|m| *m != me)
            .collect();
        let send = self.assign(group, Side::Send);
        let k = self.paths;
        for other in 0..self.groups.len() {
            if other == group {
                continue;
            }
            let mine = (0..k).any(|path| {
                let from = send[other * k + path];
                from != usize::MAX && self.rotate(group, from, Side::Send) == me
            });
            if !mine {
                continue;
            }
            let receivers = self.assign(other, Side::Receive);
            for path in 0..k {
                let from = send[other * k + path];
                let to = receivers[group * k + path];
                if from != usize::MAX
                    && to != usize::MAX
                    && self.rotate(group, from, Side::Send) == me
                {
                    targets.push(self.rotate(other, to, Side::Receive));
                }
            }
        }
        targets.sort_unstable();
        targets.dedup();
        Some(targets)
    }

    /// Every directed (from, to) member pair of the plan, sorted: the full meshes inside groups
    /// and the inter-group paths.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut edges: Vec<(usize, usize)> = Vec::new();
        for group in &self.groups {
            for from in &group.ring {
                for to in &group.ring {
                    if from != to {
                        edges.push((*from, *to));
                    }
                }
            }
        }
        edges.extend(self.inter_paths().iter().map(|p| (p.from, p.to)));
        edges.sort_unstable();
        edges.dedup();
        edges
    }
}

#[cfg(test)]
#[path = "tiered_tests.rs"]
mod tests;
