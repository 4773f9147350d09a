//! A compact, immutable label set: the labels of a peer entry and of a mesh target.
//!
//! Owns one representation: the end offsets of every name and value (16-bit, or 32-bit for a
//! text of 64 KiB or more) followed by the names and values back to back, in one allocation,
//! sorted by name with unique names. Six labels cost one allocation of about 90 bytes, where a `BTreeMap<String, String>` costs a 544-byte node plus one allocation per string and a
//! `Vec<(String, String)>` one allocation per string; at 100 000 targets that is the difference
//! between 12 MB and 120 MB. Built once, read many times (lookups are a binary search); a
//! change makes a new set. Serialized and deserialized as a map, so config and peer files read
//! as before.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Labels sorted by name, names unique.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet {
    /// The end offset in the text of each name and each value, in that order, as 16-bit
    /// numbers (32-bit when `wide`), then the text: name0 value0 name1 value1 … back to back.
    /// One allocation: the label sets of 100 000 targets and of their peers are half the
    /// labels' memory, and a second allocation per set cost 8 MB there.
    packed: Box<[u8]>,
    /// How many end offsets (twice the labels).
    ends: u32,
    /// The offsets take 4 bytes: the text is 64 KiB or more.
    wide: bool,
}

impl LabelSet {
    /// A set of `pairs`; of two pairs with one name, the later wins (as inserting into a map).
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> LabelSet {
        let mut pairs: Vec<(K, V)> = pairs.into_iter().collect();
        // Stable: among equal names the original order stays, so the last one is the later.
        pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut kept: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for (name, value) in &pairs {
            match kept.last_mut() {
                Some(last) if last.0 == name.as_ref() => last.1 = value.as_ref(),
                _ => kept.push((name.as_ref(), value.as_ref())),
            }
        }
        let text_length: usize = kept.iter().map(|(n, v)| n.len() + v.len()).sum();
        let wide = text_length > usize::from(u16::MAX);
        let width = if wide { 4 } else { 2 };
        let ends = kept.len() * 2;
        let mut packed = Vec::with_capacity(ends * width + text_length);
        let mut end = 0usize;
        for part in kept.iter().flat_map(|(name, value)| [name, value]) {
            end += part.len();
            // Label sets are far below 4 GiB: a peers file is capped well before that.
            let offset = u32::try_from(end).unwrap_or(u32::MAX);
            match u16::try_from(offset) {
                Ok(narrow) if !wide => packed.extend_from_slice(&narrow.to_le_bytes()),
                _ => packed.extend_from_slice(&offset.to_le_bytes()),
            }
        }
        for part in kept.iter().flat_map(|(name, value)| [name, value]) {
            packed.extend_from_slice(part.as_bytes());
        }
        LabelSet {
            packed: packed.into_boxed_slice(),
            ends: u32::try_from(ends).unwrap_or(u32::MAX),
            wide,
        }
    }

    pub fn len(&self) -> usize {
        self.ends as usize / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends == 0
    }

    fn width(&self) -> usize {
        if self.wide { 4 } else { 2 }
    }

    /// The end offset in the text of part `index`.
    fn end(&self, index: usize) -> usize {
        let width = self.width();
        let mut bytes = [0u8; 4];
        if let Some(stored) = self.packed.get(index * width..(index + 1) * width) {
            bytes[..width].copy_from_slice(stored);
        }
        u32::from_le_bytes(bytes) as usize
    }

    fn part(&self, index: usize) -> &str {
        let text_start = self.ends as usize * self.width();
        let start = match index {
            0 => 0,
            _ => self.end(index - 1),
        };
        let bytes = self
            .packed
            .get(text_start + start..text_start + self.end(index))
            .unwrap_or_default();
        // Every part was a whole `&str` when packed: this never fails.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn name(&self, index: usize) -> &str {
        self.part(index * 2)
    }

    /// The `index`-th label (by name order).
    fn pair(&self, index: usize) -> (&str, &str) {
        (self.part(index * 2), self.part(index * 2 + 1))
    }

    /// (name, value) pairs, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.len()).map(|index| self.pair(index))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = (low + high) / 2;
            match self.name(middle).cmp(name) {
                Ordering::Less => low = middle + 1,
                Ordering::Greater => high = middle,
                Ordering::Equal => return Some(self.part(middle * 2 + 1)),
            }
        }
        None
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// These labels with `name` set to `value`.
    pub fn with(&self, name: &str, value: &str) -> LabelSet {
        LabelSet::new(self.iter().chain([(name, value)]))
    }

    /// The labels as owned pairs.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for LabelSet {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> LabelSet {
        LabelSet::new(pairs)
    }
}

impl From<BTreeMap<String, String>> for LabelSet {
    fn from(map: BTreeMap<String, String>) -> LabelSet {
        LabelSet::new(map)
    }
}

/// Ordered as the sequence of its (name, value) pairs.
impl Ord for LabelSet {
    fn cmp(&self, other: &LabelSet) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for LabelSet {
    fn partial_cmp(&self, other: &LabelSet) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&str> for LabelSet {
    type Output = str;

    /// The value of `name`; panics when it is missing, like a map's index (for tests and
    /// labels that are always set).
    fn index(&self, name: &str) -> &str {
        match self.get(name) {
            Some(value) => value,
            None => panic!("no label {name:?} in {self:?}"),
        }
    }
}

impl Serialize for LabelSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<LabelSet, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(LabelSet::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_the_later_pair_wins() {
        let set = LabelSet::new([("rack", "r1"), ("peer", "b"), ("rack", "r2"), ("a", "")]);
        let pairs: Vec<(&str, &str)> = set.iter().collect();
        assert_eq!(pairs, [("a", ""), ("peer", "b"), ("rack", "r2")]);
        assert_eq!(set.len(), 3);
        assert_eq!(set.get("rack"), Some("r2"));
        assert_eq!(set.get("a"), Some(""));
        assert_eq!(set.get("network"), None);
        assert_eq!(&set["peer"], "b");
        assert!(LabelSet::default().is_empty());
        assert_eq!(LabelSet::default().get("peer"), None);
    }

    #[test]
    fn equal_sets_are_equal_however_built_and_order_as_their_pairs() {
        let a = LabelSet::new([("peer", "b"), ("rack", "r1")]);
        let b: LabelSet = [("rack", "r1"), ("peer", "b")].into_iter().collect();
        assert_eq!(a, b);
        let state = std::hash::RandomState::new();
        let hash = |set: &LabelSet| std::hash::BuildHasher::hash_one(&state, set);
        assert_eq!(hash(&a), hash(&b));
        // "ab"+"c" and "a"+"bc" pack to the same text but are different sets.
        let left = LabelSet::new([("ab", "c")]);
        let right = LabelSet::new([("a", "bc")]);
        assert_ne!(left, right);
        assert!(right < left);
        let pairs = |set: &LabelSet| set.to_pairs();
        let mut sets = [a.with("rack", "r0"), a.clone(), right.clone()];
        sets.sort();
        let mut by_pairs = sets.clone();
        by_pairs.sort_by_key(pairs);
        assert_eq!(sets, by_pairs);
        assert_eq!(a.with("zone", "z").get("zone"), Some("z"));
        assert_eq!(a.with("peer", "c").get("peer"), Some("c"));
    }

    #[test]
    fn one_allocation_with_short_offsets_and_long_texts_still_exact() {
        let set = LabelSet::new([("peer", "p1"), ("rack", "r1")]);
        // Four 2-byte offsets and the text.
        assert_eq!(set.packed.len(), 4 * 2 + "peerp1rackr1".len());
        let long = "x".repeat(70_000);
        let big = LabelSet::new([("a", "1"), ("note", long.as_str()), ("z", "ü")]);
        assert!(big.wide);
        assert_eq!(big.get("note"), Some(long.as_str()));
        assert_eq!(big.get("z"), Some("ü"));
        assert_eq!(big.get("a"), Some("1"));
        assert_eq!(big.len(), 3);
    }

    #[test]
    fn reads_and_writes_as_a_map() {
        let set: LabelSet = serde_json::from_str(r#"{"rack":"r1","peer":"ü b"}"#).unwrap();
        assert_eq!(set.get("peer"), Some("ü b"));
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"{"peer":"ü b","rack":"r1"}"#
        );
        let error = serde_json::from_str::<LabelSet>(r#"["peer"]"#).unwrap_err();
        assert!(error.to_string().contains("a map"), "{error}");
        assert_eq!(format!("{set:?}"), r#"{"peer": "ü b", "rack": "r1"}"#);
    }
}
