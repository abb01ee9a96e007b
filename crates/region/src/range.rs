//! Region identity and shape: [`RegionId`], [`RegionEpoch`] and [`Region`] (its keys a
//! [`KeyRange`], shared with every layer).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

/// A region's id, as Raft (and PD) assign it. Stable across splits for the region that
/// keeps it; a split creates new ids for the other children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegionId(pub u64);

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A map keyed by region id, hashed with [`RegionIdHasher`]: the maps the read and write
/// paths look a region up in.
pub type RegionHashMap<V> = HashMap<RegionId, V, BuildHasherDefault<RegionIdHasher>>;

/// A hasher for [`RegionId`]s in a few instructions (one wide multiply, folded), where the
/// standard library's SipHash costs about a hundred on every write and read. Region ids
/// come from the cluster (Raft and PD), never from a party choosing keys to collide, so
/// no resistance to chosen collisions is needed; the multiply spreads consecutive ids over
/// every bit, the high ones a `HashMap` uses included.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegionIdHasher(u64);

impl RegionIdHasher {
    /// An odd constant with well-spread bits (2^64 over the golden ratio).
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

    fn mix(&mut self, word: u64) {
        let full = u128::from(self.0 ^ word) * u128::from(Self::MULTIPLIER);
        let [low, high] = [full, full >> 64].map(|half| (half & u128::from(u64::MAX)) as u64);
        self.0 = low ^ high;
    }
}

impl Hasher for RegionIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|b| self.mix(u64::from(*b)));
    }

    fn write_u64(&mut self, word: u64) {
        self.mix(word);
    }
}

pub use ime_types::KeyRange;

/// The end of `range` as the map's index orders it: unbounded sorts after every bounded
/// end.
pub(crate) fn end_key(range: &KeyRange) -> EndKey {
    match range.end() {
        Some(end) => EndKey::Bounded(end.to_vec()),
        None => EndKey::Unbounded,
    }
}

/// A range end as the map's index orders it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EndKey {
    Bounded(Vec<u8>),
    Unbounded,
}

/// A region's epoch: `version` grows on split and merge, `conf_ver` on membership change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegionEpoch {
    /// Bumped by every split and merge: a new version means a new key range.
    pub version: u64,
    /// Bumped by every membership change: the range and data stay the same.
    pub conf_ver: u64,
}

/// How one epoch relates to another, as Raft compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpochOrder {
    /// Both components equal.
    Same,
    /// No component higher and at least one lower: an older view of the region.
    Stale,
    /// No component lower and at least one higher: a later view of the region.
    Newer,
    /// One component higher and the other lower: the two views cannot both be right.
    Diverged,
}

impl RegionEpoch {
    /// An epoch from its two components.
    pub const fn new(version: u64, conf_ver: u64) -> Self {
        RegionEpoch { version, conf_ver }
    }

    /// Compares `self` with `other` component by component.
    pub fn compare(&self, other: &RegionEpoch) -> EpochOrder {
        match (
            self.version.cmp(&other.version),
            self.conf_ver.cmp(&other.conf_ver),
        ) {
            (Ordering::Equal, Ordering::Equal) => EpochOrder::Same,
            (Ordering::Less | Ordering::Equal, Ordering::Less | Ordering::Equal) => {
                EpochOrder::Stale
            }
            (Ordering::Greater | Ordering::Equal, Ordering::Greater | Ordering::Equal) => {
                EpochOrder::Newer
            }
            _ => EpochOrder::Diverged,
        }
    }

    /// TiKV's `is_epoch_stale`: true when either component of `self` is below `other`'s.
    pub fn is_stale_than(&self, other: &RegionEpoch) -> bool {
        self.version < other.version || self.conf_ver < other.conf_ver
    }
}

impl fmt::Display for RegionEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}/c{}", self.version, self.conf_ver)
    }
}

/// A region as Raft describes it at one moment: id, key range and epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Region {
    /// The region's id.
    pub id: RegionId,
    /// The keys it covers.
    pub range: KeyRange,
    /// Its epoch.
    pub epoch: RegionEpoch,
}

impl Region {
    /// A region from its parts.
    pub fn new(id: RegionId, range: KeyRange, epoch: RegionEpoch) -> Self {
        Region { id, range, epoch }
    }

    /// Whether the peer holds the region at all. A peer created by a Raft message, before
    /// its first snapshot, knows only the region's id: its epoch is `0/0` (every real
    /// region starts at `1/1`) and its range is a placeholder, so it must never be cached.
    pub fn is_initialized(&self) -> bool {
        self.epoch != RegionEpoch::default()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "region {} {} {}", self.id, self.range, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: &str) -> KeyRange {
        KeyRange::new(start, end).unwrap()
    }

    #[test]
    fn region_ids_hash_apart_in_every_part_of_the_hash() {
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<RegionIdHasher>::default();
        let hashes: Vec<u64> = (1..=4096u64)
            .map(|id| build.hash_one(RegionId(id)))
            .collect();
        let distinct = |part: &dyn Fn(u64) -> u64| {
            hashes
                .iter()
                .map(|h| part(*h))
                .collect::<HashSet<_>>()
                .len()
        };
        assert_eq!(distinct(&|h| h), 4096, "consecutive ids never collide");
        // A `HashMap` picks the bucket from the low bits and a tag from the top seven.
        assert!(distinct(&|h| h & 0xFFF) > 2500, "low bits spread");
        assert_eq!(distinct(&|h| h >> 57), 128, "every tag in use");
        let mut map: RegionHashMap<u64> = RegionHashMap::default();
        map.extend((1..=1000).map(|id| (RegionId(id), id * 2)));
        assert!((1..=1000).all(|id| map.get(&RegionId(id)) == Some(&(id * 2))));
        assert_eq!(map.get(&RegionId(1001)), None);
    }

    #[test]
    fn a_bounded_range_must_not_be_empty() {
        assert!(matches!(
            KeyRange::new("b", "b"),
            Err(ime_types::InvalidRange { .. })
        ));
        assert!(matches!(
            KeyRange::new("c", "b"),
            Err(ime_types::InvalidRange { .. })
        ));
        assert!(KeyRange::new("c", "").is_ok());
        assert!(KeyRange::new("", "").is_ok());
    }

    #[test]
    fn contains_key_honours_both_ends() {
        let r = range("b", "d");
        assert!(!r.contains_key(b"a"));
        assert!(r.contains_key(b"b"));
        assert!(r.contains_key(b"c\xff"));
        assert!(!r.contains_key(b"d"));
        let open = range("b", "");
        assert!(open.contains_key(b"\xff\xff\xff"));
        assert!(!open.contains_key(b"a"));
        assert!(KeyRange::everything().contains_key(b""));
    }

    #[test]
    fn overlap_is_symmetric_and_exclusive_at_the_end() {
        let cases = [
            (("a", "c"), ("c", "e"), false),
            (("a", "c"), ("b", "e"), true),
            (("a", ""), ("z", ""), true),
            (("a", "c"), ("z", ""), false),
            (("m", ""), ("a", "m"), false),
            (("m", ""), ("a", "n"), true),
            (("", ""), ("q", "r"), true),
        ];
        for ((s1, e1), (s2, e2), expected) in cases {
            let (a, b) = (range(s1, e1), range(s2, e2));
            assert_eq!(a.overlaps(&b), expected, "{a} vs {b}");
            assert_eq!(b.overlaps(&a), expected, "{b} vs {a}");
        }
    }

    #[test]
    fn containment_with_unbounded_ends() {
        assert!(range("a", "").contains(&range("b", "")));
        assert!(range("a", "").contains(&range("b", "c")));
        assert!(!range("a", "z").contains(&range("b", "")));
        assert!(range("a", "z").contains(&range("a", "z")));
        assert!(!range("b", "z").contains(&range("a", "c")));
    }

    #[test]
    fn epochs_compare_as_raft_does() {
        let e = RegionEpoch::new;
        assert_eq!(e(5, 3).compare(&e(5, 3)), EpochOrder::Same);
        assert_eq!(e(5, 3).compare(&e(6, 3)), EpochOrder::Stale);
        assert_eq!(e(5, 3).compare(&e(5, 4)), EpochOrder::Stale);
        assert_eq!(e(6, 4).compare(&e(5, 3)), EpochOrder::Newer);
        assert_eq!(e(6, 2).compare(&e(5, 3)), EpochOrder::Diverged);
        assert!(e(6, 2).is_stale_than(&e(5, 3)));
        assert!(!e(6, 3).is_stale_than(&e(5, 3)));
    }

    #[test]
    fn ranges_serialize_as_hex_in_json_and_validate_on_the_way_in() {
        let r = range("a\x00", "");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"start":"6100","end":""}"#);
        assert_eq!(serde_json::from_str::<KeyRange>(&json).unwrap(), r);
        assert!(serde_json::from_str::<KeyRange>(r#"{"start":"62","end":"61"}"#).is_err());
        assert!(serde_json::from_str::<KeyRange>(r#"{"start":"6","end":""}"#).is_err());
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(range("a", "").to_string(), "[a, +inf)");
        assert_eq!(range("a\x01", "b").to_string(), "[a\\x01, b)");
        assert_eq!(RegionEpoch::new(221, 5).to_string(), "v221/c5");
    }
}
