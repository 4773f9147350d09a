//! The counts of one target's classic RTT histogram, in 4 bytes a bucket.
//!
//! Owns how the non-cumulative bucket counts are stored: as `u32` until one would pass
//! `u32::MAX` (4.3 billion replies in one bucket: 136 years at one probe a second), then every
//! bucket as `u64`, so a count is always exact. At the default 21 buckets that is 88 bytes of
//! heap per target instead of 176.

/// Non-cumulative counts per classic bucket; the last slot is the +Inf overflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicCounts {
    Narrow(Box<[u32]>),
    Wide(Box<[u64]>),
}

impl Default for ClassicCounts {
    fn default() -> ClassicCounts {
        ClassicCounts::Narrow(Box::default())
    }
}

impl ClassicCounts {
    /// `slots` zero counts.
    pub fn zeros(slots: usize) -> ClassicCounts {
        ClassicCounts::Narrow(vec![0; slots].into_boxed_slice())
    }

    pub fn len(&self) -> usize {
        match self {
            ClassicCounts::Narrow(counts) => counts.len(),
            ClassicCounts::Wide(counts) => counts.len(),
        }
    }

    /// The counts, slot by slot.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (narrow, wide): (&[u32], &[u64]) = match self {
            ClassicCounts::Narrow(counts) => (counts, &[]),
            ClassicCounts::Wide(counts) => (&[], counts),
        };
        narrow
            .iter()
            .map(|count| u64::from(*count))
            .chain(wide.iter().copied())
    }

    /// Adds `count` to slot `slot` (ignored past the last slot).
    pub fn add(&mut self, slot: usize, count: u64) {
        if let ClassicCounts::Narrow(counts) = self
            && let Some(current) = counts.get_mut(slot)
        {
            match u32::try_from(u64::from(*current) + count) {
                Ok(total) => {
                    *current = total;
                    return;
                }
                Err(_) => self.widen(),
            }
        }
        if let ClassicCounts::Wide(counts) = self
            && let Some(current) = counts.get_mut(slot)
        {
            *current += count;
        }
    }

    fn widen(&mut self) {
        let wide: Box<[u64]> = self.iter().collect();
        *self = ClassicCounts::Wide(wide);
    }

    /// Adds `other` slot by slot, growing to its length first.
    pub fn absorb(&mut self, other: &ClassicCounts) {
        if self.len() < other.len() {
            let mut grown: Vec<u64> = self.iter().collect();
            grown.resize(other.len(), 0);
            *self = ClassicCounts::Wide(grown.into_boxed_slice());
        }
        for (slot, count) in other.iter().enumerate() {
            if count > 0 {
                self.add(slot, count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_past_u32_max_stays_exact_and_the_rest_keep_theirs() {
        let mut counts = ClassicCounts::zeros(3);
        counts.add(0, 5);
        counts.add(1, u64::from(u32::MAX) - 1);
        assert!(matches!(counts, ClassicCounts::Narrow(_)));
        counts.add(1, 3);
        assert!(matches!(counts, ClassicCounts::Wide(_)));
        counts.add(2, 1);
        counts.add(7, 1);
        assert_eq!(
            counts.iter().collect::<Vec<u64>>(),
            [5, u64::from(u32::MAX) + 2, 1]
        );
    }

    #[test]
    fn absorbing_a_longer_set_grows_to_it() {
        let mut mine = ClassicCounts::zeros(2);
        mine.add(0, 1);
        let mut theirs = ClassicCounts::zeros(3);
        theirs.add(0, 2);
        theirs.add(2, 4);
        mine.absorb(&theirs);
        assert_eq!(mine.iter().collect::<Vec<u64>>(), [3, 0, 4]);
        assert_eq!(mine.len(), 3);
    }
}
