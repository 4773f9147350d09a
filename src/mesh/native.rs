//! A Prometheus native (sparse, exponential) histogram of one target's RTTs.
//!
//! Owns the bucket arithmetic: schema [`SCHEMA`] (bucket boundaries 2^(k/16), each bucket
//! 4.4 % wide, so any value is within ±2.2 % of its bucket's geometric middle), the zero bucket
//! below [`ZERO_THRESHOLD`], the bound of [`MAX_BUCKETS`] populated buckets (beyond it the
//! resolution halves, as client_golang's `NativeHistogramMaxBucketNumber` does when it may not
//! reset), and the span/delta encoding of the protobuf message. Only populated buckets are
//! stored, 8 bytes each (a 32-bit count, widened to 64 bits for a bucket that passes 2^32), grown
//! a few at a time. It does no I/O and knows nothing about labels or exposition.

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

/// Buckets of one target's RTT distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeHistogram {
    schema: i32,
    zero_count: u64,
    /// Bucket k holds (2^((k-1)/2^s), 2^(k/2^s)].
    buckets: BucketCounts,
}

/// How many bucket slots a histogram grows by when a new bucket appears (doubling would leave a
/// quarter of the memory unused on average, at 100 000 targets 10 MB).
const GROWTH: usize = 8;

/// Populated buckets, sorted by index. A count is kept as a u32 in `narrow` until it would pass
/// `u32::MAX` (4.3 billion replies in one bucket: 136 years at one probe a second), then as a
/// u64 in `wide`; each bucket is in exactly one of them, so equal histograms compare equal.
#[derive(Debug, Clone, Default, PartialEq)]
struct BucketCounts {
    narrow: Vec<(i32, u32)>,
    wide: Vec<(i32, u64)>,
}

impl BucketCounts {
    fn len(&self) -> usize {
        self.narrow.len() + self.wide.len()
    }

    /// Adds `count` to bucket `key`.
    fn add(&mut self, key: i32, count: u64) {
        if let Ok(position) = self.wide.binary_search_by_key(&key, |(index, _)| *index) {
            self.wide[position].1 += count;
            return;
        }
        match self.narrow.binary_search_by_key(&key, |(index, _)| *index) {
            Ok(position) => {
                let total = u64::from(self.narrow[position].1) + count;
                match u32::try_from(total) {
                    Ok(total) => self.narrow[position].1 = total,
                    Err(_) => {
                        self.narrow.remove(position);
                        insert_wide(&mut self.wide, key, total);
                    }
                }
            }
            Err(position) => match u32::try_from(count) {
                Ok(count) => {
                    if self.narrow.len() == self.narrow.capacity() {
                        self.narrow.reserve_exact(GROWTH);
                    }
                    self.narrow.insert(position, (key, count));
                }
                Err(_) => insert_wide(&mut self.wide, key, count),
            },
        }
    }

    /// (index, count) in index order.
    fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        let mut narrow = self.narrow.iter().peekable();
        let mut wide = self.wide.iter().peekable();
        std::iter::from_fn(move || match (narrow.peek(), wide.peek()) {
            (Some(n), Some(w)) if w.0 < n.0 => wide.next().copied(),
            (Some(_), _) => narrow
                .next()
                .map(|&(index, count)| (index, u64::from(count))),
            (None, _) => wide.next().copied(),
        })
    }

    /// Buckets from (index, count) pairs in index order; the counts of a repeated index add
    /// up (halving maps pairs of buckets onto one).
    fn from_sorted(pairs: impl Iterator<Item = (i32, u64)>) -> BucketCounts {
        let mut sums: Vec<(i32, u64)> = Vec::new();
        for (index, count) in pairs {
            match sums.last_mut() {
                Some((last, total)) if *last == index => *total = total.saturating_add(count),
                _ => sums.push((index, count)),
            }
        }
        let mut buckets = BucketCounts::default();
        for (index, count) in sums {
            match u32::try_from(count) {
                Ok(count) => buckets.narrow.push((index, count)),
                Err(_) => buckets.wide.push((index, count)),
            }
        }
        buckets.narrow.shrink_to_fit();
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

fn insert_wide(wide: &mut Vec<(i32, u64)>, key: i32, count: u64) {
    let position = wide.partition_point(|(index, _)| *index < key);
    wide.insert(position, (key, count));
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
    pub fn observe(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        if value <= ZERO_THRESHOLD {
            self.zero_count += 1;
            return;
        }
        self.buckets.add(bucket_index(value, self.schema), 1);
        while self.buckets.len() > MAX_BUCKETS && self.schema > MIN_SCHEMA {
            self.halve_resolution();
        }
    }

    pub fn schema(&self) -> i32 {
        self.schema
    }

    pub fn populated_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Adds `other`'s observations (several targets exported as one series). The result has the
    /// coarser of the two schemas and stays within [`MAX_BUCKETS`].
    pub fn merge(&mut self, other: &NativeHistogram) {
        while self.schema > other.schema {
            self.halve_resolution();
        }
        // Bucket k of schema s + d lies inside bucket ⌈k / 2^d⌉ of schema s: `other` is read
        // at this schema without a copy, and added in place (a scrape's group total already
        // holds nearly every bucket its targets have, so this rarely inserts).
        let shift = other.schema - self.schema;
        for (index, count) in other.buckets.iter() {
            self.buckets.add(coarser_index(index, shift), count);
        }
        self.zero_count += other.zero_count;
        while self.buckets.len() > MAX_BUCKETS && self.schema > MIN_SCHEMA {
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

    /// Fills the native fields of a protobuf histogram (count and sum are shared with the
    /// classic part and set by the caller). Gaps of one or two empty buckets are sent as zero
    /// deltas rather than a new span, as client_golang does, since that is smaller. An empty
    /// histogram gets the no-op span (offset 0, length 0) that marks it as native.
    pub fn fill(&self, histogram: &mut Histogram) {
        histogram.schema = Some(self.schema);
        histogram.zero_threshold = Some(ZERO_THRESHOLD);
        histogram.zero_count = Some(self.zero_count);
        let mut spans: Vec<BucketSpan> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
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
mod tests {
    use super::*;

    /// Expands spans and deltas back into (index, count) pairs, as Prometheus does.
    fn expand(histogram: &Histogram) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let mut deltas = histogram.positive_delta.iter();
        let mut index = 0i32;
        let mut count = 0i64;
        for (n, span) in histogram.positive_span.iter().enumerate() {
            index += span.offset.unwrap_or(0) + i32::from(n > 0);
            for step in 0..span.length.unwrap_or(0) {
                count += deltas.next().copied().unwrap_or(0);
                if count > 0 {
                    out.push((index + step as i32, count as u64));
                }
            }
            index += span.length.unwrap_or(0) as i32 - 1;
        }
        out
    }

    #[test]
    fn buckets_are_exact_at_boundaries_and_within_resolution() {
        assert_eq!(bucket_index(1.0, 4), 0);
        assert_eq!(bucket_index(1.0000001, 4), 1);
        assert_eq!(bucket_index(2.0, 4), 16);
        assert_eq!(bucket_index(0.5, 4), -16);
        assert_eq!(bucket_index(upper_bound(-250, 4), 4), -250);
        for schema in [-4, 0, 3, 4, 8] {
            for value in [30e-6, 47.3e-6, 1e-3, 0.7, 13.0] {
                let key = bucket_index(value, schema);
                assert!(upper_bound(key - 1, schema) < value, "{value} {schema}");
                assert!(value <= upper_bound(key, schema), "{value} {schema}");
            }
        }
        // Relative error of the bucket's geometric middle at tens of microseconds: ≤ 2.2 %.
        let key = bucket_index(42e-6, SCHEMA);
        let middle = (upper_bound(key - 1, SCHEMA) * upper_bound(key, SCHEMA)).sqrt();
        assert!((middle / 42e-6 - 1.0).abs() < 0.022);
    }

    #[test]
    fn merging_equals_observing_everything_in_one() {
        let (mut a, mut b, mut both) = (
            NativeHistogram::default(),
            NativeHistogram::default(),
            NativeHistogram::default(),
        );
        for (i, value) in [30e-6, 45e-6, 1e-3, 2.5e-3, 0.0].into_iter().enumerate() {
            if i % 2 == 0 { &mut a } else { &mut b }.observe(value);
            both.observe(value);
        }
        // Force b to a coarser schema first: the merge must meet it there.
        let mut coarse = b.clone();
        coarse.halve_resolution();
        a.merge(&b);
        assert_eq!(a, both);
        let mut coarse_both = both.clone();
        coarse_both.halve_resolution();
        let mut from_coarse = NativeHistogram::default();
        for value in [30e-6, 1e-3, 0.0] {
            from_coarse.observe(value);
        }
        from_coarse.merge(&coarse);
        assert_eq!(from_coarse, coarse_both);
    }

    #[test]
    fn a_coarse_histogram_takes_a_finer_one_at_its_own_schema() {
        let values = [30e-6, 31e-6, 47e-6, 1e-3, 1.0, 2.5, 0.0];
        let mut fine = NativeHistogram::default();
        for value in values {
            fine.observe(value);
        }
        let mut coarse = NativeHistogram {
            schema: SCHEMA - 2,
            ..NativeHistogram::default()
        };
        coarse.observe(31e-6);
        coarse.merge(&fine);
        // The same as observing every value at the coarse schema (an independent reckoning of
        // which coarse bucket holds each value, negative indices included).
        let mut observed = NativeHistogram {
            schema: SCHEMA - 2,
            ..NativeHistogram::default()
        };
        for value in values.into_iter().chain([31e-6]) {
            observed.observe(value);
        }
        assert_eq!(coarse, observed);
        assert_eq!(coarse.schema(), SCHEMA - 2);
    }

    #[test]
    fn spans_and_deltas_round_trip() {
        let mut native = NativeHistogram::default();
        let mut histogram = Histogram::default();
        native.fill(&mut histogram);
        // Empty: the no-op span marks it as native.
        assert_eq!(histogram.positive_span.len(), 1);
        assert_eq!(histogram.positive_span[0].length, Some(0));
        for value in [30e-6, 30e-6, 31e-6, 33.5e-6, 90e-6, 1e-3, 0.0] {
            native.observe(value);
        }
        native.fill(&mut histogram);
        let expected: Vec<(i32, u64)> = native.buckets.iter().collect();
        assert_eq!(expand(&histogram), expected);
        assert_eq!(histogram.zero_count, Some(1));
        assert_eq!(histogram.schema, Some(4));
        // 30 and 31 µs share a bucket or are neighbours; 1 ms is a separate span.
        assert!(histogram.positive_span.len() >= 2);
    }

    #[test]
    fn bucket_count_is_bounded_by_halving_the_resolution() {
        let mut native = NativeHistogram::default();
        // 2000 distinct values from 1 µs to 100 s: far more than 160 buckets at schema 4.
        for step in 0..2000 {
            native.observe(1e-6 * 1.01f64.powi(step));
        }
        assert!(native.populated_buckets() <= MAX_BUCKETS);
        assert!(native.schema() < SCHEMA);
        let total: u64 = native.buckets.iter().map(|(_, c)| c).sum();
        assert_eq!(total, 2000);
        // Still a correct histogram after merging: every value in its bucket.
        let mut reference = NativeHistogram {
            schema: native.schema(),
            ..NativeHistogram::default()
        };
        for step in 0..2000 {
            reference.observe(1e-6 * 1.01f64.powi(step));
        }
        assert_eq!(reference, native);
    }

    #[test]
    fn a_bucket_past_u32_max_keeps_counting_exactly() {
        let mut buckets = BucketCounts::default();
        buckets.add(5, u64::from(u32::MAX) - 1);
        buckets.add(-3, 7);
        buckets.add(5, 1);
        assert_eq!(buckets.wide.len(), 0, "u32::MAX itself still fits");
        buckets.add(5, 1);
        buckets.add(9, 1);
        buckets.add(5, 10);
        let expected = [(-3, 7), (5, u64::from(u32::MAX) + 11), (9, 1)];
        assert_eq!(buckets.iter().collect::<Vec<_>>(), expected);
        assert_eq!(buckets.len(), 3);
        assert_eq!((buckets.narrow.len(), buckets.wide.len()), (2, 1));
        // Rebuilt from its pairs it is the same, and so is a merge into an empty histogram.
        assert_eq!(BucketCounts::from_sorted(expected.into_iter()), buckets);
        let mut native = NativeHistogram {
            buckets: buckets.clone(),
            ..NativeHistogram::default()
        };
        let mut merged = NativeHistogram::default();
        merged.merge(&native);
        assert_eq!(merged, native);
        // Halving adds the big bucket to its neighbour without losing a count.
        native.halve_resolution();
        let total: u64 = native.buckets.iter().map(|(_, count)| count).sum();
        assert_eq!(total, u64::from(u32::MAX) + 19);
        // And the protobuf deltas carry it.
        let mut histogram = Histogram::default();
        native.fill(&mut histogram);
        let sent: Vec<(i32, u64)> = expand(&histogram);
        assert_eq!(sent, native.buckets.iter().collect::<Vec<_>>());
    }

    #[test]
    fn growth_is_a_few_buckets_at_a_time() {
        let mut native = NativeHistogram::default();
        for step in 0..40 {
            native.observe(20e-6 * 1.05f64.powi(step));
        }
        let populated = native.populated_buckets();
        assert!(populated >= 30, "{populated}");
        assert!(native.buckets.narrow.capacity() < populated + GROWTH);
    }
}
