//! [`Config`]: the engine's settings (serde, TOML, kebab-case, TiKV's names where they
//! exist), the thresholds derived from them, and their validation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ime_eviction::Thresholds;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest `capacity` accepted: 1 PiB.
const MAX_CAPACITY: u64 = 1 << 50;
/// The longest interval accepted (GC, policy, cross-check): 30 days.
const MAX_INTERVAL: Duration = Duration::from_secs(720 * 3600);
/// The largest `region-split-size` accepted: 1 TiB.
const MAX_SPLIT_SIZE: u64 = 1 << 40;
/// TiKV's room for writes while an eviction frees memory: ten seconds at 20 MiB/s.
const WRITE_HEADROOM: u64 = 10 * (20 << 20);
/// The longest leader-transfer warm-up accepted: one hour.
const MAX_WARMUP: Duration = Duration::from_secs(3600);
/// The bounds of `memtable-compaction-entries`: below 16, compactions would come for a
/// handful of writes; above 2^24, memtables would grow past any cache.
const MIN_COMPACTION_ENTRIES: u64 = 16;
const MAX_COMPACTION_ENTRIES: u64 = 1 << 24;
/// Keys earlier versions accepted and this one refuses, each with why: a setting that
/// would be read and then ignored is worse than an error that says so.
const REMOVED_KEYS: &[(&str, &str)] = &[(
    "mvcc-amplification-threshold",
    "removed: the default eviction policy weighs each region's MVCC work (versions \
     scanned beyond the keys returned) per byte and loads a region only when that work \
     repays the load, which a fixed amplification cut-off would only second-guess; the \
     TiKV-style policy (ime_eviction::TikvPolicy) keeps its own \
     mvcc_amplification_threshold in TikvConfig",
)];

/// Bits of a TiKV timestamp below its physical part: a timestamp is
/// `physical_milliseconds << TSO_LOGICAL_BITS | logical`.
pub const TSO_LOGICAL_BITS: u32 = 18;

/// The current time as a TiKV timestamp (`physical_ms << 18 | logical`, as PD's TSO
/// hands them out): what the cache's own GC safe point follows
/// ([`Config::gc_target`]). The embedder supplies it; the controller only receives its
/// readings. Any `Fn() -> u64 + Send + Sync` is one.
pub trait TimestampSource: Send + Sync {
    /// Now, as a timestamp.
    fn now(&self) -> u64;
}

impl<F: Fn() -> u64 + Send + Sync> TimestampSource for F {
    fn now(&self) -> u64 {
        self()
    }
}

/// The engine's settings.
///
/// Every value [`Config::validate`] accepts is safe to run with: sizes and durations have
/// bounded ranges, so no threshold, deadline or interval derived from them can overflow.
///
/// ```
/// use ime_controller::Config;
///
/// let config = Config::from_toml(r#"
///     capacity = "2GiB"
///     gc-run-interval = "30s"
/// "#).unwrap();
/// let thresholds = config.thresholds();
/// assert_eq!(thresholds.evict_threshold, 2 * (1 << 30) - (200 << 20));
/// assert!(Config::from_toml("capacity = \"0B\"").unwrap_err().to_string().contains("capacity"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Whether regions are cached at all. Off: everything is evicted and reads go to disk.
    pub enable: bool,
    /// Memory the cache may hold; a write that would pass it evicts its region instead.
    pub capacity: ByteSize,
    /// Above this, the policy evicts down to the stop-load threshold; below capacity.
    /// Default, as TiKV derives it: capacity less the smaller of 10% of it and 200 MiB
    /// (ten seconds of writes at 20 MiB/s).
    pub evict_threshold: Option<ByteSize>,
    /// Loads stop at this usage. Default, as TiKV derives it: the evict threshold less the
    /// smaller of 15% of capacity and two split-size regions plus 200 MiB — but never
    /// below half the evict threshold (an explicit low evict threshold leaves no room
    /// for TiKV's band).
    pub stop_load_threshold: Option<ByteSize>,
    /// The store's region split size (TiKV's `coprocessor.region-split-size`): the
    /// stop-load band keeps room for two such regions. Default 256 MiB, TiKV's.
    pub region_split_size: ByteSize,
    /// How often cached regions are garbage-collected, and how much history memory keeps:
    /// with a timestamp source, the cache's own safe point is `now - gc-run-interval`
    /// (when above the embedder's GC safe point). Shorter: less memory and faster recent
    /// reads (fewer versions to step over); reads older than it go to disk. Longer: more
    /// versions kept in memory, and older reads served from it. Default 3 minutes.
    pub gc_run_interval: ReadableDuration,
    /// How often the eviction policy runs.
    pub load_evict_interval: ReadableDuration,
    /// How often the cross-checker compares memory with disk; zero turns it off.
    pub cross_check_interval: ReadableDuration,
    /// How long a leader transfer to this store may wait for its region to load.
    pub warmup_timeout: ReadableDuration,
    /// Entries a region's memtables hold at least before they are folded into its runs
    /// (and half of what the runs hold). Lower: less memory in memtables, more
    /// compactions. Default 4096.
    pub memtable_compaction_entries: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: true,
            capacity: ByteSize(1 << 30),
            evict_threshold: None,
            stop_load_threshold: None,
            region_split_size: ByteSize(256 << 20),
            gc_run_interval: ReadableDuration(Duration::from_secs(180)),
            load_evict_interval: ReadableDuration(Duration::from_secs(300)),
            cross_check_interval: ReadableDuration(Duration::ZERO),
            warmup_timeout: ReadableDuration(Duration::from_secs(1)),
            memtable_compaction_entries: 4096,
        }
    }
}

/// A setting that breaks a rule: the key, the rule, and the value seen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key's value breaks a rule.
    #[error("{key}: {rule} (got {value})")]
    Invalid {
        /// The key, as written in TOML.
        key: &'static str,
        /// The rule it breaks.
        rule: &'static str,
        /// The value seen.
        value: String,
    },
    /// The text is not valid TOML for this type.
    #[error("configuration: {0}")]
    Parse(String),
    /// A key this version no longer has.
    #[error("{key}: {reason}")]
    Removed {
        /// The key, as written in TOML.
        key: &'static str,
        /// Why it went, and what replaces it.
        reason: &'static str,
    },
}

impl Config {
    /// Parses and validates TOML.
    ///
    /// # Errors
    /// [`ConfigError::Parse`], [`ConfigError::Invalid`], or [`ConfigError::Removed`] for a
    /// key earlier versions had (with the reason).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let parse = |e: toml::de::Error| ConfigError::Parse(e.to_string());
        let table: toml::Table = toml::from_str(text).map_err(parse)?;
        if let Some((key, reason)) = REMOVED_KEYS.iter().find(|(k, _)| table.contains_key(*k)) {
            return Err(ConfigError::Removed { key, reason });
        }
        let config: Config = toml::from_str(text).map_err(parse)?;
        config.validate()?;
        Ok(config)
    }

    /// The TOML text of this configuration.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] if serialization fails.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Checks every rule; the first broken one is returned, naming its key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule, value: &dyn fmt::Display| {
            Err(ConfigError::Invalid {
                key,
                rule,
                value: value.to_string(),
            })
        };
        let t = self.thresholds();
        if !(1..=MAX_CAPACITY).contains(&self.capacity.0) {
            return invalid(
                "capacity",
                "must be above zero and at most 1PiB",
                &self.capacity,
            );
        }
        if !(1..=MAX_SPLIT_SIZE).contains(&self.region_split_size.0) {
            let rule = "must be above zero and at most 1TiB";
            return invalid("region-split-size", rule, &self.region_split_size);
        }
        if t.evict_threshold >= t.capacity {
            let value = ByteSize(t.evict_threshold);
            return invalid("evict-threshold", "must be below capacity", &value);
        }
        if t.stop_load_threshold > t.evict_threshold {
            let value = ByteSize(t.stop_load_threshold);
            return invalid(
                "stop-load-threshold",
                "must not be above evict-threshold",
                &value,
            );
        }
        if !(MIN_COMPACTION_ENTRIES..=MAX_COMPACTION_ENTRIES)
            .contains(&self.memtable_compaction_entries)
        {
            let rule = "must be at least 16 and at most 16777216";
            return invalid(
                "memtable-compaction-entries",
                rule,
                &self.memtable_compaction_entries,
            );
        }
        for (key, value, rule, range) in self.durations() {
            if !range.contains(&value.0) {
                return invalid(key, rule, &value);
            }
        }
        Ok(())
    }

    /// Every duration with its key, its rule and the range it must lie in: bounded, so
    /// that no deadline or interval computed from it can overflow.
    fn durations(
        &self,
    ) -> [(
        &'static str,
        ReadableDuration,
        &'static str,
        std::ops::RangeInclusive<Duration>,
    ); 4] {
        let interval = Duration::from_millis(1)..=MAX_INTERVAL;
        let rule = "must be at least 1ms and at most 720h";
        [
            (
                "gc-run-interval",
                self.gc_run_interval,
                rule,
                interval.clone(),
            ),
            (
                "load-evict-interval",
                self.load_evict_interval,
                rule,
                interval,
            ),
            (
                "cross-check-interval",
                self.cross_check_interval,
                "must be at most 720h (0s turns it off)",
                Duration::ZERO..=MAX_INTERVAL,
            ),
            (
                "warmup-timeout",
                self.warmup_timeout,
                "must be at most 1h",
                Duration::ZERO..=MAX_WARMUP,
            ),
        ]
    }

    /// The cache's own GC safe point at `now`, a TiKV timestamp (physical milliseconds
    /// shifted left by [`TSO_LOGICAL_BITS`], plus a logical counter): `now` less
    /// `gc-run-interval`, so that memory keeps only the history recent reads need.
    ///
    /// ```
    /// use ime_controller::{Config, TSO_LOGICAL_BITS};
    ///
    /// let config = Config::from_toml("gc-run-interval = \"3m\"").unwrap();
    /// let now = 1_000_000_000u64 << TSO_LOGICAL_BITS;
    /// assert_eq!(config.own_safe_point(now), (1_000_000_000 - 180_000) << TSO_LOGICAL_BITS);
    /// assert_eq!(config.own_safe_point(5), 0);
    /// ```
    pub fn own_safe_point(&self, now: u64) -> u64 {
        let millis = u64::try_from(self.gc_run_interval.0.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(millis.saturating_mul(1 << TSO_LOGICAL_BITS))
    }

    /// The safe point GC moves regions towards: the embedder's GC safe point, or the
    /// cache's own ([`Config::own_safe_point`]) when there is a clock (`now`) and it is
    /// higher. Each region's stays below its oldest live snapshot and never goes back
    /// (`ime_region::RegionMap::advance_safe_point`).
    pub fn gc_target(&self, embedder: u64, now: Option<u64>) -> u64 {
        embedder.max(now.map_or(0, |now| self.own_safe_point(now)))
    }

    /// The memory thresholds: the configured ones, or TiKV's derivation (its
    /// `InMemoryEngineConfig::validate`): evict at capacity less min(10% of capacity,
    /// 200 MiB); stop loading at the evict threshold less min(15% of capacity, two
    /// split-size regions plus 200 MiB), and at no less than half the evict threshold.
    ///
    /// ```
    /// use ime_controller::Config;
    ///
    /// let gib = 1u64 << 30;
    /// let small = Config::from_toml("capacity = \"1GiB\"").unwrap().thresholds();
    /// assert_eq!(small.evict_threshold, gib - gib / 10);
    /// assert_eq!(small.stop_load_threshold, gib - gib / 10 - gib * 15 / 100);
    /// let large = Config::from_toml("capacity = \"16GiB\"").unwrap().thresholds();
    /// assert_eq!(large.evict_threshold, 16 * gib - (200 << 20));
    /// assert_eq!(large.stop_load_threshold, large.evict_threshold - (712 << 20));
    /// ```
    pub fn thresholds(&self) -> Thresholds {
        let capacity = self.capacity.0;
        let evict = self
            .evict_threshold
            .map_or(capacity - (capacity / 10).min(WRITE_HEADROOM), |b| b.0);
        let band = (capacity * 15 / 100).min(2 * self.region_split_size.0 + WRITE_HEADROOM);
        let stop = self
            .stop_load_threshold
            .map_or(evict.saturating_sub(band).max(evict / 2), |b| b.0);
        Thresholds {
            capacity,
            evict_threshold: evict,
            stop_load_threshold: stop,
        }
    }
}

/// A size in bytes, written as a number of bytes or with a unit: `"512MiB"`, `"1GB"`,
/// `"64KiB"`, `"4096"` (`B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`; all binary, as
/// in TiKV).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: u64 = number.parse().map_err(|_| format!("{s:?} is not a size"))?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KB" | "KiB" => 10,
            "M" | "MB" | "MiB" => 20,
            "G" | "GB" | "GiB" => 30,
            "T" | "TB" | "TiB" => 40,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        number
            .checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, unit) in units {
            if self.0 != 0 && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written with a unit: `"100ms"`, `"30s"`, `"3m"`, `"1h"`, `"0s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadableDuration(pub Duration);

impl FromStr for ReadableDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        let duration = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
        };
        Ok(ReadableDuration(duration))
    }
}

impl fmt::Display for ReadableDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for ReadableDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReadableDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_key_is_refused_with_its_reason() {
        let err = Config::from_toml("mvcc-amplification-threshold = 10").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Removed {
                key: "mvcc-amplification-threshold",
                ..
            }
        ));
        assert!(err.to_string().contains("repays the load"), "{err}");
    }

    #[test]
    fn the_gc_target_is_the_higher_of_the_embedders_and_the_own_safe_point() {
        let config = Config::from_toml("gc-run-interval = \"1s\"").unwrap();
        let second = 1000u64 << TSO_LOGICAL_BITS;
        let now = 60 * second + 7;
        assert_eq!(config.own_safe_point(now), 59 * second + 7);
        // No clock: the embedder's alone, as before.
        assert_eq!(config.gc_target(42, None), 42);
        assert_eq!(config.gc_target(42, Some(now)), 59 * second + 7);
        // The embedder ahead of the clock (a store that keeps less history): its own.
        assert_eq!(config.gc_target(61 * second, Some(now)), 61 * second);
        // A clock near zero or the longest interval: no underflow.
        assert_eq!(config.gc_target(0, Some(3)), 0);
        let longest = Config::from_toml("gc-run-interval = \"720h\"").unwrap();
        assert_eq!(
            longest.own_safe_point(u64::MAX),
            u64::MAX - (2_592_000_000u64 << TSO_LOGICAL_BITS)
        );
    }

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let config = Config::default();
        config.validate().unwrap();
        let text = config.to_toml().unwrap();
        assert!(text.contains("gc-run-interval = \"3m\""), "{text}");
        assert_eq!(Config::from_toml(&text).unwrap(), config);
        let t = config.thresholds();
        let gib = 1u64 << 30;
        assert_eq!(
            (t.evict_threshold, t.stop_load_threshold),
            (gib - gib / 10, gib - gib / 10 - gib * 15 / 100)
        );
    }

    #[test]
    fn every_rule_names_its_key() {
        let cases = [
            ("capacity = 0", "capacity"),
            (
                "capacity = \"1GiB\"\nevict-threshold = \"2GiB\"",
                "evict-threshold",
            ),
            (
                "capacity = \"1GiB\"\nevict-threshold = \"1GiB\"",
                "evict-threshold",
            ),
            ("region-split-size = 0", "region-split-size"),
            ("region-split-size = \"2TiB\"", "region-split-size"),
            (
                "evict-threshold = \"100MiB\"\nstop-load-threshold = \"200MiB\"",
                "stop-load-threshold",
            ),
            ("gc-run-interval = \"0s\"", "gc-run-interval"),
            ("load-evict-interval = \"0ms\"", "load-evict-interval"),
            ("capacity = 2251799813685248", "capacity"),
            ("gc-run-interval = \"721h\"", "gc-run-interval"),
            (
                "cross-check-interval = \"99999999h\"",
                "cross-check-interval",
            ),
            (
                "warmup-timeout = \"18446744073709551615s\"",
                "warmup-timeout",
            ),
            ("warmup-timeout = \"2h\"", "warmup-timeout"),
            (
                "memtable-compaction-entries = 15",
                "memtable-compaction-entries",
            ),
            (
                "memtable-compaction-entries = 16777217",
                "memtable-compaction-entries",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
                "{text}: {err}"
            );
            assert!(err.to_string().starts_with(key), "{err}");
        }
        for text in [
            "capacity = \"1XB\"",
            "gc-run-interval = \"3 days\"",
            "no-such-key = 1",
        ] {
            assert!(
                matches!(Config::from_toml(text), Err(ConfigError::Parse(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn the_derived_stop_load_follows_the_evict_threshold_and_the_split_size() {
        let mib = 1u64 << 20;
        let stop = |text: &str| {
            Config::from_toml(text)
                .unwrap()
                .thresholds()
                .stop_load_threshold
        };
        // TiKV's band below an explicit evict threshold: 15% of capacity (153.6 MiB).
        let explicit = "capacity = \"1GiB\"\nevict-threshold = \"800MiB\"";
        assert_eq!(stop(explicit), 800 * mib - (1024 * mib * 15 / 100));
        // An evict threshold too low for the band: half of it, never zero.
        let low = "capacity = \"1GiB\"\nevict-threshold = \"100MiB\"";
        assert_eq!(stop(low), 50 * mib);
        // A large cache: two regions of the split size plus 200 MiB.
        let large = "capacity = \"16GiB\"\nregion-split-size = \"96MiB\"";
        let t = Config::from_toml(large).unwrap().thresholds();
        assert_eq!(
            t.evict_threshold - t.stop_load_threshold,
            2 * 96 * mib + 200 * mib
        );
    }

    #[test]
    fn sizes_and_durations_parse_and_print() {
        for (text, bytes) in [
            ("4096", 4096),
            ("64KiB", 64 << 10),
            ("1GB", 1 << 30),
            ("3 MiB", 3 << 20),
        ] {
            assert_eq!(text.parse::<ByteSize>().unwrap().0, bytes, "{text}");
        }
        assert_eq!(ByteSize(3 << 20).to_string(), "3MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        for (text, d) in [
            ("100ms", Duration::from_millis(100)),
            ("3m", Duration::from_secs(180)),
            ("1h", Duration::from_secs(3600)),
        ] {
            let parsed: ReadableDuration = text.parse().unwrap();
            assert_eq!(parsed.0, d);
            assert_eq!(parsed.to_string(), text);
        }
        assert!("99999999999999999999B".parse::<ByteSize>().is_err());
    }
}
