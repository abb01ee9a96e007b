//! [`KeyRange`]: a half-open range of keys, the one range type of every layer.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A key range `[start, end)`. An empty `end` means unbounded (up to and past every key);
/// an empty `start` is the smallest key.
///
/// The fields are private so that a range is always well formed: `start < end` when the
/// end is bounded. Keys are raw bytes; in JSON they appear as hex strings.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct KeyRange {
    start: Vec<u8>,
    end: Vec<u8>,
}

/// A bounded range whose end is not above its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRange {
    /// The start key given.
    pub start: Vec<u8>,
    /// The end key given.
    pub end: Vec<u8>,
}

impl fmt::Display for InvalidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid key range: start {} is not below end {}",
            self.start.escape_ascii(),
            self.end.escape_ascii()
        )
    }
}

impl std::error::Error for InvalidRange {}

impl KeyRange {
    /// Builds `[start, end)`; an empty `end` is unbounded.
    ///
    /// # Errors
    /// [`InvalidRange`] when the end is bounded and not above the start.
    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Result<Self, InvalidRange> {
        let (start, end) = (start.into(), end.into());
        if !end.is_empty() && start >= end {
            return Err(InvalidRange { start, end });
        }
        Ok(KeyRange { start, end })
    }

    /// Builds `[start, end)` from an optional end (`None`: unbounded).
    ///
    /// # Errors
    /// [`InvalidRange`] when the end is not above the start (an empty end included).
    pub fn with_end(start: impl Into<Vec<u8>>, end: Option<Vec<u8>>) -> Result<Self, InvalidRange> {
        match end {
            Some(end) if end.is_empty() => Err(InvalidRange {
                start: start.into(),
                end,
            }),
            Some(end) => KeyRange::new(start, end),
            None => KeyRange::new(start, Vec::new()),
        }
    }

    /// The range of every key: `[, +inf)`.
    pub fn everything() -> Self {
        KeyRange {
            start: Vec::new(),
            end: Vec::new(),
        }
    }

    /// The inclusive start key.
    pub fn start(&self) -> &[u8] {
        &self.start
    }

    /// The exclusive end key, `None` when unbounded.
    pub fn end(&self) -> Option<&[u8]> {
        (!self.end.is_empty()).then_some(self.end.as_slice())
    }

    /// True when `key` lies in `[start, end)`.
    #[inline]
    pub fn contains_key(&self, key: &[u8]) -> bool {
        cmp_key(key, self.start()).is_ge() && self.ends_after(key)
    }

    /// True when every key of `other` lies in `self`.
    pub fn contains(&self, other: &KeyRange) -> bool {
        other.start() >= self.start()
            && match (self.end(), other.end()) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs <= mine,
            }
    }

    /// True when the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        self.ends_after(other.start()) && other.ends_after(self.start())
    }

    /// The keys in both, `None` when they share none.
    pub fn intersect(&self, other: &KeyRange) -> Option<KeyRange> {
        let start = self.start().max(other.start()).to_vec();
        let end = match (self.end(), other.end()) {
            (None, end) | (end, None) => end.map(<[u8]>::to_vec),
            (Some(a), Some(b)) => Some(a.min(b).to_vec()),
        };
        KeyRange::with_end(start, end).ok()
    }

    /// True when `key` is below the end (always, for an unbounded end).
    #[inline]
    pub fn ends_after(&self, key: &[u8]) -> bool {
        self.end().is_none_or(|end| cmp_key(key, end).is_lt())
    }
}

/// `a.cmp(b)` (bytes, then length), eight bytes at a time as big-endian words, inline:
/// the keys a range is checked against share long prefixes with its bounds (a table's,
/// a region's), and for those this costs about half of a call to `memcmp`, which the
/// write path makes for every key of every batch.
#[inline]
fn cmp_key(a: &[u8], b: &[u8]) -> Ordering {
    let word = |chunk: &[u8]| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        u64::from_be_bytes(bytes)
    };
    for (p, q) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let (p, q) = (word(p), word(q));
        if p != q {
            return p.cmp(&q);
        }
    }
    let whole = a.len().min(b.len()) / 8 * 8;
    let (a, b) = (
        a.get(whole..).unwrap_or_default(),
        b.get(whole..).unwrap_or_default(),
    );
    for (p, q) in a.iter().zip(b) {
        if p != q {
            return p.cmp(q);
        }
    }
    a.len().cmp(&b.len())
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, ", self.start.escape_ascii())?;
        match self.end() {
            Some(end) => write!(f, "{})", end.escape_ascii()),
            None => write!(f, "+inf)"),
        }
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The serialized form of [`KeyRange`]: hex strings in human-readable formats (JSON),
/// raw bytes otherwise (bincode).
#[derive(Serialize, Deserialize)]
struct RawRange {
    #[serde(with = "crate::hex_bytes")]
    start: Vec<u8>,
    #[serde(with = "crate::hex_bytes")]
    end: Vec<u8>,
}

impl TryFrom<RawRange> for KeyRange {
    type Error = InvalidRange;

    fn try_from(raw: RawRange) -> Result<Self, InvalidRange> {
        KeyRange::new(raw.start, raw.end)
    }
}

impl From<KeyRange> for RawRange {
    fn from(range: KeyRange) -> Self {
        RawRange {
            start: range.start,
            end: range.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: &str, end: &str) -> KeyRange {
        KeyRange::new(start, end).expect("a valid range")
    }

    #[test]
    fn ranges_are_well_formed() {
        assert_eq!(
            KeyRange::new("b", "a"),
            Err(InvalidRange {
                start: b"b".to_vec(),
                end: b"a".to_vec()
            })
        );
        assert!(KeyRange::new("a", "a").is_err());
        assert!(KeyRange::with_end("a", Some(Vec::new())).is_err());
        assert_eq!(KeyRange::with_end("a", None), Ok(r("a", "")));
        assert_eq!(
            KeyRange::with_end("a", Some(b"b".to_vec())),
            Ok(r("a", "b"))
        );
        assert_eq!(r("a", "").end(), None);
    }

    #[test]
    fn containment_overlap_and_intersection() {
        let (ab, bc, az) = (r("a", "b"), r("b", "c"), r("a", ""));
        assert!(az.contains(&ab) && !ab.contains(&az));
        assert!(!ab.overlaps(&bc) && az.overlaps(&bc));
        assert_eq!(az.intersect(&bc), Some(bc.clone()));
        assert_eq!(ab.intersect(&bc), None);
        assert_eq!(r("a", "c").intersect(&r("b", "")), Some(bc));
        assert!(ab.contains_key(b"a") && !ab.contains_key(b"b"));
    }

    #[test]
    fn keys_compare_word_by_word_as_bytes_do() {
        // Every pair of a set with shared prefixes of every length around a word, ties,
        // prefixes of each other and bytes at both ends of their range.
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        let base: Vec<u8> = (0..24u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..=base.len() {
            let prefix = &base[..len];
            keys.push(prefix.to_vec());
            for last in [0u8, 1, 0x7f, 0x80, 0xfe, 0xff] {
                keys.push([prefix, &[last]].concat());
                keys.push([prefix, &[last, 0]].concat());
            }
        }
        for a in &keys {
            for b in &keys {
                assert_eq!(cmp_key(a, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn ranges_are_hex_in_json_and_checked_when_read() {
        let json = serde_json::to_string(&r("a", "b")).expect("serializes");
        assert_eq!(json, r#"{"start":"61","end":"62"}"#);
        assert_eq!(
            serde_json::from_str::<KeyRange>(&json).expect("reads"),
            r("a", "b")
        );
        assert!(serde_json::from_str::<KeyRange>(r#"{"start":"62","end":"61"}"#).is_err());
        assert_eq!(r("a", "").to_string(), "[a, +inf)");
    }
}
