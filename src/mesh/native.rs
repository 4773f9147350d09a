//! A Prometheus native (sparse, exponential) histogram of one target's RTTs.
//!
//! Owns the bucket arithmetic: schema [`SCHEMA`] (bucket boundaries 2^(k/16), each bucket
//! 4.4 % wide, so any value is within ±2.2 % of its bucket's geometric middle), the zero bucket
//! below [`ZERO_THRESHOLD`], the bounds of [`MAX_BUCKETS`] populated buckets and of a
//! [`MAX_SPAN`] from the lowest to the highest (beyond either the resolution halves, as
//! client_golang's `NativeHistogramMaxBucketNumber` does when it may not reset), and the
//! span/delta encoding of the protobuf message. The buckets are stored densely, one count per
//! index from the lowest populated bucket to the highest (an RTT distribution fills nearly every
//! bucket of its range), each count in the fewest bytes that hold the largest (1, 2, 4 or 8), and
//! the range grows a few slots at a time. It does no I/O and knows nothing about labels or
//! exposition.

use crate::proto::{BucketSpan, Histogram};

/// Starting resolution: 16 buckets per power of two (growth factor 2^(1/16) ≈ 1.044).
pub const SCHEMA: i32 = 4;

/// The coarsest schema Prometheus accepts (growth factor 65536).
const MIN_SCHEMA: i32 = -4;

/// Values at or below this are counted in the zero bucket: 2^-30 s ≈ 0.93 ns, below the 1 ns
/// resolution of the kernel timestamps an RTT is computed from.
pub const ZERO_THRESHOLD: f64 = 1.0 / (1u64 << 30) as f64;

/// Populated buckets kept per histogram. At schema 4 that spans at least 2^10 = 1024× in RTT
/// (say 20 µs … 20 ms) before the resolution has to halve.
pub const MAX_BUCKETS: usize = 160;

/// Bucket indices kept per histogram from the lowest populated bucket to the highest, empty ones
/// between included: at schema 4 twenty powers of two (say 10 µs … 10 s), so RTTs up to a
/// probe timeout keep the full resolution, while two values further apart (1 µs and 100 s) halve
/// it instead of making the dense storage large. At most 4 × 320 bytes for 32-bit counts, as
/// much as 160 buckets took when each one stored its index.
pub const MAX_SPAN: usize = 2 * MAX_BUCKETS;

/// Buckets of one target's RTT distribution. After every observation and merge at most
/// [`MAX_BUCKETS`] are populated and they span at most [`MAX_SPAN`] indices, the resolution
/// halved as often as that takes (not below schema −4, where any finite value is within 66
/// indices of any other).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeHistogram {
    schema: i32,
    zero_count: u64,
    /// Bucket k holds (2^((k-1)/2^s), 2^(k/2^s)].
    buckets: BucketCounts,
}

/// Empty slots a growing range gets beyond the new bucket, so the next buckets out at that edge
/// fit without a reallocation (doubling would leave a quarter of the memory unused on average).
const SPARE: i32 = 2;

/// Buckets, dense: slot i counts bucket `offset + i`, 0 if nothing fell in it (a populated
/// bucket has a count > 0). A count takes `width` bytes, little-endian: the fewest of 1, 2, 4
/// and 8 that hold the largest count, so counts stay exact (8 bytes after 2^32 replies in one
/// bucket, 136 years at one probe a second) and a young histogram is smaller. Equal histograms
/// compare equal: equality is by the populated (index, count) pairs, whatever the empty slots.
#[derive(Clone)]
struct BucketCounts {
    offset: i32,
    width: u8,
    /// Slots with a count > 0, and the first and the last of them, kept by
    /// [`BucketCounts::set`] (so neither an observation nor a merge scans the slots; a slot
    /// never goes back to 0 but in a new layout). Slots number at most [`MAX_SPAN`] plus spares,
    /// or 132 at schema −4, so 16 bits hold them.
    populated: u32,
    first: u16,
    last: u16,
    slots: Box<[u8]>,
}

/// The fewest bytes (1, 2, 4 or 8) that hold `count`.
fn width_of(count: u64) -> u8 {
    match count {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// Indices from the lowest to the highest of `bounds` and `low..=high`.
fn span(bounds: Option<(i32, i32)>, low: i32, high: i32) -> usize {
    let (low, high) = bounds.map_or((low, high), |(l, h)| (l.min(low), h.max(high)));
    (i64::from(high) - i64::from(low) + 1) as usize
}

impl Default for BucketCounts {
    fn default() -> BucketCounts {
        BucketCounts::zeroed(0, 0, 1)
    }
}

impl PartialEq for BucketCounts {
    fn eq(&self, other: &BucketCounts) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for BucketCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl BucketCounts {
    fn zeroed(offset: i32, slots: usize, width: u8) -> BucketCounts {
        let slots = vec![0; slots * usize::from(width)].into_boxed_slice();
        BucketCounts {
            offset,
            width,
            populated: 0,
            first: u16::MAX,
            last: 0,
            slots,
        }
    }

    fn slot_count(&self) -> usize {
        self.slots.len() / usize::from(self.width)
    }

    fn get(&self, slot: usize) -> u64 {
        let width = usize::from(self.width);
        let bytes = &self.slots[slot * width..][..width];
        match *bytes {
            [one] => u64::from(one),
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            _ => {
                let mut wide = [0; 8];
                wide.copy_from_slice(bytes);
                u64::from_le_bytes(wide)
            }
        }
    }

    fn set(&mut self, slot: usize, count: u64) {
        match (self.get(slot) > 0, count > 0) {
            (false, true) => {
                self.populated += 1;
                let slot = u16::try_from(slot).unwrap_or(u16::MAX);
                (self.first, self.last) = (self.first.min(slot), self.last.max(slot));
            }
            (true, false) => self.populated -= 1,
            _ => {}
        }
        let width = usize::from(self.width);
        self.slots[slot * width..][..width].copy_from_slice(&count.to_le_bytes()[..width]);
    }

    /// Populated buckets.
    fn len(&self) -> usize {
        self.populated as usize
    }

    /// The lowest and the highest populated index.
    fn bounds(&self) -> Option<(i32, i32)> {
        (self.populated > 0).then(|| {
            let (first, last) = (i32::from(self.first), i32::from(self.last));
            (self.offset + first, self.offset + last)
        })
    }

    /// Indices from the lowest populated bucket to the highest.
    fn range(&self) -> usize {
        self.bounds().map_or(0, |(low, high)| span(None, low, high))
    }

    /// Lays the populated buckets out again from bucket `offset`, in `slots` slots of `width`.
    fn relayout(&mut self, offset: i32, slots: usize, width: u8) {
        let mut moved = BucketCounts::zeroed(offset, slots, width);
        for (index, count) in self.iter() {
            moved.set((index - offset) as usize, count);
        }
        *self = moved;
    }

    /// Grows the range to hold buckets `low..=high`, with [`SPARE`] empty slots beyond them at
    /// an edge that grows.
    fn cover(&mut self, low: i32, high: i32) {
        if self.slots.is_empty() {
            self.offset = low;
        }
        let end = self.offset + self.slot_count() as i32;
        if low < self.offset || high >= end {
            let start = if low < self.offset {
                low - SPARE
            } else {
                self.offset
            };
            let end = if high >= end { high + 1 + SPARE } else { end };
            self.relayout(start, (end - start) as usize, self.width);
        }
    }

    /// Adds `count` to bucket `key`; true if that populated it.
    fn add(&mut self, key: i32, count: u64) -> bool {
        if count == 0 {
            return false;
        }
        self.cover(key, key);
        let slot = (key - self.offset) as usize;
        let before = self.get(slot);
        let total = before.saturating_add(count);
        if width_of(total) > self.width {
            self.relayout(self.offset, self.slot_count(), width_of(total));
        }
        self.set(slot, total);
        before == 0
    }

    /// (index, count) of the populated buckets in index order.
    fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        let offset = self.offset;
        let populated = match self.bounds() {
            Some(_) => usize::from(self.first)..usize::from(self.last) + 1,
            None => 0..0,
        };
        populated.filter_map(move |slot| {
            let count = self.get(slot);
            (count > 0).then_some((offset + slot as i32, count))
        })
    }

    /// Buckets from (index, count) pairs in index order, in as few slots as they take; the
    /// counts of a repeated index add up (halving maps pairs of buckets onto one).
    fn from_sorted(pairs: impl Iterator<Item = (i32, u64)>) -> BucketCounts {
        let mut sums: Vec<(i32, u64)> = Vec::new();
        for (index, count) in pairs {
            match sums.last_mut() {
                Some((last, total)) if *last == index => *total = total.saturating_add(count),
                _ => sums.push((index, count)),
            }
        }
        let (Some(&(low, _)), Some(&(high, _))) = (sums.first(), sums.last()) else {
            return BucketCounts::default();
        };
        let width = sums.iter().map(|&(_, count)| width_of(count)).max();
        let mut buckets = BucketCounts::zeroed(low, span(None, low, high), width.unwrap_or(1));
        for (index, count) in sums {
            buckets.set((index - low) as usize, count);
        }
        buckets
    }
}

/// The index, at a schema `shift` steps coarser, of the bucket that holds bucket `index`:
/// ⌈index / 2^shift⌉ (an arithmetic shift floors, so add 2^shift − 1 first).
fn coarser_index(index: i32, shift: i32) -> i32 {
    if shift <= 0 {
        return index;
    }
    let shift = shift.min(40) as u32;
    ((i64::from(index) + (1i64 << shift) - 1) >> shift) as i32
}

impl Default for NativeHistogram {
    fn default() -> NativeHistogram {
        NativeHistogram {
            schema: SCHEMA,
            zero_count: 0,
            buckets: BucketCounts::default(),
        }
    }
}

impl NativeHistogram {
    /// Counts `value` (seconds); +∞ counts in the bucket of the largest finite value.
    pub fn observe(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        if value <= ZERO_THRESHOLD {
            self.zero_count += 1;
            return;
        }
        let key = bucket_index(value.min(f64::MAX), self.schema);
        let shift = self.make_room(key, key, self.schema);
        if self.buckets.add(coarser_index(key, shift), 1) {
            self.keep_bounds();
        }
    }

    pub fn schema(&self) -> i32 {
        self.schema
    }

    pub fn populated_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Adds `other`'s observations (several targets exported as one series). The result has the
    /// coarser of the two schemas and stays within [`MAX_BUCKETS`] and [`MAX_SPAN`].
    pub fn merge(&mut self, other: &NativeHistogram) {
        while self.schema > other.schema {
            self.halve_resolution();
        }
        // Bucket k of schema s + d lies inside bucket ⌈k / 2^d⌉ of schema s: `other` is read
        // at this schema without a copy, and added in place (a scrape's group total already
        // holds nearly every bucket its targets have, so the range rarely grows, and then once).
        if let Some((low, high)) = other.buckets.bounds() {
            self.make_room(low, high, other.schema);
        }
        let shift = other.schema - self.schema;
        for (index, count) in other.buckets.iter() {
            self.buckets.add(coarser_index(index, shift), count);
        }
        self.zero_count += other.zero_count;
        self.keep_bounds();
    }

    /// Halves the resolution until buckets `low..=high` of `schema` (not coarser than this one)
    /// fit in [`MAX_SPAN`] with the populated ones, so the range never outgrows it, and grows
    /// the range to hold them; returns how many steps coarser than `schema` this one now is.
    fn make_room(&mut self, low: i32, high: i32, schema: i32) -> i32 {
        loop {
            let shift = schema - self.schema;
            let (low, high) = (coarser_index(low, shift), coarser_index(high, shift));
            if self.schema <= MIN_SCHEMA || span(self.buckets.bounds(), low, high) <= MAX_SPAN {
                self.buckets.cover(low, high);
                return shift;
            }
            self.halve_resolution();
        }
    }

    /// Halves the resolution until at most [`MAX_BUCKETS`] buckets are populated and they span
    /// at most [`MAX_SPAN`] indices.
    fn keep_bounds(&mut self) {
        while self.schema > MIN_SCHEMA
            && (self.buckets.len() > MAX_BUCKETS || self.buckets.range() > MAX_SPAN)
        {
            self.halve_resolution();
        }
    }

    /// Merges pairs of buckets: schema s → s−1. Bucket k of schema s lies inside bucket
    /// ⌈k/2⌉ of schema s−1, and the mapping keeps the order.
    fn halve_resolution(&mut self) {
        self.schema -= 1;
        let coarse = self
            .buckets
            .iter()
            .map(|(index, count)| (coarser_index(index, 1), count));
        self.buckets = BucketCounts::from_sorted(coarse);
    }

    /// Bytes of bucket storage on the heap.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.buckets.slots.len()
    }

    /// Fills the native fields of a protobuf histogram (count and sum are shared with the
    /// classic part and set by the caller). Gaps of one or two empty buckets are sent as zero
    /// deltas rather than a new span, as client_golang does, since that is smaller. An empty
    /// histogram gets the no-op span (offset 0, length 0) that marks it as native.
    pub fn fill(&self, histogram: &mut Histogram) {
        histogram.schema = Some(self.schema);
        histogram.zero_threshold = Some(ZERO_THRESHOLD);
        histogram.zero_count = Some(self.zero_count);
        let mut spans: Vec<BucketSpan> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.slot_count());
        let mut previous: Option<i32> = None;
        let mut previous_count = 0i64;
        for (index, count) in self.buckets.iter() {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            match previous {
                Some(last) if index - last <= 3 => {
                    // Extend the current span, with zero buckets for a gap of 1 or 2.
                    for _ in last + 1..index {
                        deltas.push(-previous_count);
                        previous_count = 0;
                    }
                    if let Some(span) = spans.last_mut() {
                        let gap = u32::try_from(index - last).unwrap_or(1);
                        span.length = Some(span.length.unwrap_or(0) + gap);
                    }
                }
                Some(last) => spans.push(BucketSpan {
                    offset: Some(index - last - 1),
                    length: Some(1),
                }),
                None => spans.push(BucketSpan {
                    offset: Some(index),
                    length: Some(1),
                }),
            }
            deltas.push(count - previous_count);
            previous_count = count;
            previous = Some(index);
        }
        if spans.is_empty() {
            spans.push(BucketSpan {
                offset: Some(0),
                length: Some(0),
            });
        }
        histogram.positive_span = spans;
        histogram.positive_delta = deltas;
    }
}

/// The index of the bucket that holds `value` (> 0) at `schema`: the k with
/// 2^((k−1)/2^s) < value ≤ 2^(k/2^s).
pub fn bucket_index(value: f64, schema: i32) -> i32 {
    let per_octave = 2f64.powi(schema);
    let estimate = (value.log2() * per_octave).ceil();
    // Saturating float → int conversion; RTTs are nowhere near the ends.
    let mut key = estimate as i32;
    // log2 may be off by an ulp right at a boundary: settle it with the boundaries themselves.
    if upper_bound(key - 1, schema) >= value {
        key -= 1;
    } else if upper_bound(key, schema) < value {
        key += 1;
    }
    key
}

/// The inclusive upper bound of bucket `key` at `schema`.
pub fn upper_bound(key: i32, schema: i32) -> f64 {
    2f64.powf(f64::from(key) / 2f64.powi(schema))
}

#[cfg(test)]
#[path = "native_tests.rs"]
mod tests;
