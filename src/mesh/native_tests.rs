//! Unit tests of `native.rs`: bucket arithmetic, merging, bounds, encoding and memory.

use super::*;
use std::collections::BTreeMap;

/// Pseudo-random numbers in [0, 1) (an LCG with Knuth's MMIX constants).
fn unit(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn log_uniform(state: &mut u64, low: f64, high: f64) -> f64 {
    low * (high / low).powf(unit(state))
}

/// The populated buckets of `values` at `schema`, the plain way: a map at [`SCHEMA`],
/// carried down to `schema`.
fn reference(values: &[f64], schema: i32) -> Vec<(i32, u64)> {
    let mut map = BTreeMap::new();
    for &value in values.iter().filter(|value| **value > ZERO_THRESHOLD) {
        let index = coarser_index(bucket_index(value, SCHEMA), SCHEMA - schema);
        *map.entry(index).or_insert(0) += 1;
    }
    map.into_iter().collect()
}

fn pairs(native: &NativeHistogram) -> Vec<(i32, u64)> {
    native.buckets.iter().collect()
}

fn within_bounds(buckets: &[(i32, u64)]) -> bool {
    let range = buckets.first().zip(buckets.last());
    buckets.len() <= MAX_BUCKETS
        && range.is_none_or(|(low, high)| span(None, low.0, high.0) <= MAX_SPAN)
}

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
    assert_eq!(buckets.width, 4, "u32::MAX itself still fits");
    buckets.add(5, 1);
    buckets.add(9, 1);
    buckets.add(5, 10);
    let expected = [(-3, 7), (5, u64::from(u32::MAX) + 11), (9, 1)];
    assert_eq!(buckets.iter().collect::<Vec<_>>(), expected);
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets.width, 8);
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
    // One byte a count, and at most SPARE empty slots beyond either end.
    let slots = native.buckets.slot_count();
    assert_eq!(native.heap_bytes(), slots);
    assert!(slots <= native.buckets.range() + 2 * SPARE as usize);
}

#[test]
fn dense_buckets_hold_what_a_plain_map_holds() {
    let mut layouts_differed = false;
    for seed in 1..=8u64 {
        // A body of 50 µs … 5 ms, with none, 2 % or 20 % outliers from 1 µs to 100 s.
        let outliers = [0, 2, 20][seed as usize % 3];
        let mut state = seed;
        let values: Vec<f64> = (0..3000)
            .map(|i| match unit(&mut state) * 100.0 {
                _ if i % 500 == 7 => 0.0,
                roll if roll < f64::from(outliers) => log_uniform(&mut state, 1e-6, 100.0),
                _ => log_uniform(&mut state, 50e-6, 5e-3),
            })
            .collect();
        // The body alone keeps schema 4; the outliers alone are coarser.
        let [mut native, mut reversed, mut body, mut rest]: [NativeHistogram; 4] =
            Default::default();
        for &value in &values {
            native.observe(value);
            if (50e-6..5e-3).contains(&value) {
                &mut body
            } else {
                &mut rest
            }
            .observe(value);
        }
        values.iter().rev().for_each(|&v| reversed.observe(v));
        let expected = reference(&values, native.schema());
        assert_eq!(pairs(&native), expected, "seed {seed}");
        let mut histogram = Histogram::default();
        native.fill(&mut histogram);
        assert_eq!(expand(&histogram), expected, "seed {seed}");
        // Encoded as before: a new span only after a gap of 3 or more empty buckets.
        let gaps = expected
            .windows(2)
            .map(|pair| (pair[1].0 - pair[0].0) as usize);
        let spans = 1 + gaps.clone().filter(|gap| *gap > 3).count();
        let deltas = 1 + gaps.map(|gap| if gap > 3 { 1 } else { gap }).sum::<usize>();
        assert_eq!(histogram.positive_span.len(), spans);
        assert_eq!(histogram.positive_delta.len(), deltas);
        assert_eq!(native.zero_count, 6);
        // Halved only as far as the bounds need.
        let finer = reference(&values, native.schema() + 1);
        assert!(within_bounds(&expected));
        assert!(native.schema() == SCHEMA || !within_bounds(&finer));
        let range = span(None, expected[0].0, expected[expected.len() - 1].0);
        assert!(native.buckets.slot_count() <= range + 2 * SPARE as usize);
        // Order, history and spare slots do not change what compares equal.
        assert_eq!(reversed, native, "seed {seed}");
        layouts_differed |= reversed.buckets.offset != native.buckets.offset;
        let mut merged = body.clone();
        merged.merge(&rest);
        assert_eq!(merged, native, "seed {seed}");
        rest.merge(&body);
        assert_eq!(rest, native, "seed {seed}");
    }
    assert!(layouts_differed);
}

#[test]
fn a_dense_range_takes_at_most_four_bytes_a_bucket() {
    let mut state = 1;
    let mut native = NativeHistogram::default();
    for _ in 0..10_000 {
        native.observe(log_uniform(&mut state, 50e-6, 5e-3));
    }
    let (populated, range) = (native.populated_buckets(), native.buckets.range());
    assert_eq!((native.schema(), populated, range), (SCHEMA, 107, 107));
    // Before: 8 bytes a populated bucket, grown 8 at a time.
    let before = 8 * populated.next_multiple_of(8);
    assert_eq!(before, 896);
    // Fewer than 256 replies in any bucket: one byte a slot, SPARE at most beyond each end.
    let bound = range + 2 * SPARE as usize;
    assert!(native.heap_bytes() <= bound, "{}", native.heap_bytes());
    // 100 000 more in each (a day or more of probing): four bytes a slot, half of before.
    for (index, _) in pairs(&native) {
        native.buckets.add(index, 100_000);
    }
    assert_eq!(native.buckets.width, 4);
    assert!(native.heap_bytes() <= 4 * bound, "{}", native.heap_bytes());
    assert!(2 * native.heap_bytes() <= before, "{}", native.heap_bytes());
}

#[test]
fn far_apart_values_halve_the_resolution_to_bound_the_range() {
    // 20 µs and 10 s: 304 indices at schema 4, within the bound, full resolution.
    let mut native = NativeHistogram::default();
    [20e-6, 10.0, 21e-6]
        .into_iter()
        .for_each(|v| native.observe(v));
    assert_eq!((native.schema(), native.buckets.range()), (SCHEMA, 304));
    // 1 µs and 100 s: 426 indices at schema 4, 214 at schema 3.
    assert_eq!(
        span(None, bucket_index(1e-6, 4), bucket_index(100.0, 4)),
        426
    );
    let values: Vec<f64> = [1e-6, 100.0, 3e-4, 1e-6].repeat(300);
    let [mut native, mut low, mut high]: [NativeHistogram; 3] = Default::default();
    for &value in &values {
        native.observe(value);
        if value < 1e-3 { &mut low } else { &mut high }.observe(value);
    }
    assert_eq!((native.schema(), native.buckets.range()), (SCHEMA - 1, 214));
    // Counts up to 600 a bucket: two bytes a slot.
    assert!(native.heap_bytes() <= 2 * (MAX_SPAN + 2 * SPARE as usize));
    assert_eq!(pairs(&native), reference(&values, SCHEMA - 1));
    assert_eq!(
        pairs(&native).iter().map(|(_, count)| count).sum::<u64>(),
        1200
    );
    // The same when the two ends meet in a merge (it halves before growing the range).
    low.merge(&high);
    assert_eq!(low, native);
    // +∞ counts with the largest finite value (index 16384 at schema 4), within the bound.
    let mut infinite = NativeHistogram::default();
    [20e-6, f64::INFINITY]
        .into_iter()
        .for_each(|v| infinite.observe(v));
    let top = bucket_index(f64::MAX, infinite.schema());
    assert_eq!(pairs(&infinite).last(), Some(&(top, 1)));
    assert!(infinite.heap_bytes() <= MAX_SPAN + 2 * SPARE as usize);
}
