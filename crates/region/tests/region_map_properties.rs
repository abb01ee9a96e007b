//! Property test: random sequences of load / activate / split / merge / evict / snapshot
//! acquire and release / safe-point advance / epoch bumps / apply reports, checked after
//! every step against the map's invariants and against facts the test tracks itself:
//! no two regions overlap, the indexes agree, safe points are monotonic and never above a
//! live snapshot over the region (including split parents' snapshots), every callback
//! fires exactly once and only once its region is gone, and no sequence panics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ime_region::*;
use proptest::prelude::*;

/// How often the runs reached the paths worth reaching; checked after the property runs,
/// so that a change to the generators cannot silently stop exercising them.
#[derive(Default)]
struct Coverage {
    historical_snapshots: AtomicUsize,
    clamped_by_parent: AtomicUsize,
    pending_evict: AtomicUsize,
    load_canceled: AtomicUsize,
    epoch_gaps: AtomicUsize,
    index_gaps: AtomicUsize,
    replaced_pending: AtomicUsize,
    removed_callbacks: AtomicUsize,
}

static COVERAGE: std::sync::LazyLock<Coverage> = std::sync::LazyLock::new(Coverage::default);

fn hit(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Keys are single bytes `a..=p`; position 16 stands for an unbounded end.
const KEYS: u8 = 16;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        id: u64,
        start: u8,
        len: u8,
        version: u64,
    },
    /// Insert, start loading and finish loading in a row: an Active region, often.
    Warm {
        id: u64,
        start: u8,
        len: u8,
        version: u64,
    },
    StartLoad {
        id: u64,
    },
    FinishLoad {
        id: u64,
        fail: bool,
    },
    Evict {
        id: Pick,
        reason: usize,
        callback: bool,
    },
    EvictRange {
        start: u8,
        len: u8,
    },
    FinishEviction {
        id: Pick,
    },
    Split {
        id: Pick,
        at: u8,
        stale_source: bool,
    },
    Merge {
        id: Pick,
    },
    Acquire {
        id: Pick,
        ts: u64,
        version_skew: i8,
        index_skew: i8,
    },
    /// Hands a ticket back: through the map, or on its own (its `Drained`, if any, held
    /// until a later `HandBack`).
    Release {
        nth: usize,
        alone: bool,
    },
    HandBack {
        nth: usize,
    },
    SafePoint {
        id: Pick,
        ts: u64,
    },
    Apply {
        id: Pick,
        epoch_skew: bool,
        gap: u8,
        len: u8,
    },
    ChangePeer {
        id: Pick,
        stale: bool,
    },
}

/// A region to act on: mostly one of the cached regions (by position in the listing, so
/// split children are reached too), sometimes an id that is not cached.
#[derive(Clone, Copy, Debug)]
struct Pick(u8);

fn op() -> impl Strategy<Value = Op> {
    let id = 1..=4u64;
    let pick = || any::<u8>().prop_map(Pick);
    let skew = || prop::sample::select(vec![0i8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 1]);
    prop_oneof![
        3 => (id.clone(), 0..KEYS, 2..=KEYS, 1..20u64)
            .prop_map(|(id, start, len, version)| Op::Insert { id, start, len, version }),
        3 => (id.clone(), 0..KEYS, 2..=KEYS, 1..20u64)
            .prop_map(|(id, start, len, version)| Op::Warm { id, start, len, version }),
        3 => id.clone().prop_map(|id| Op::StartLoad { id }),
        4 => (id.clone(), prop::bool::weighted(0.1)).prop_map(|(id, fail)| Op::FinishLoad { id, fail }),
        2 => (pick(), 0..EvictReason::ALL.len(), any::<bool>())
            .prop_map(|(id, reason, callback)| Op::Evict { id, reason, callback }),
        1 => (0..KEYS, 1..=4u8).prop_map(|(start, len)| Op::EvictRange { start, len }),
        3 => pick().prop_map(|id| Op::FinishEviction { id }),
        4 => (pick(), 0..KEYS, prop::bool::weighted(0.2))
            .prop_map(|(id, at, stale_source)| Op::Split { id, at, stale_source }),
        1 => pick().prop_map(|id| Op::Merge { id }),
        6 => (pick(), 0..60u64, skew(), skew()).prop_map(|(id, ts, version_skew, index_skew)| {
            Op::Acquire { id, ts, version_skew, index_skew }
        }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(nth, alone)| Op::Release { nth, alone }),
        1 => any::<usize>().prop_map(|nth| Op::HandBack { nth }),
        3 => (pick(), 0..60u64).prop_map(|(id, ts)| Op::SafePoint { id, ts }),
        4 => (pick(), prop::bool::weighted(0.03), prop::sample::select(vec![0u8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3]), 1..3u8)
            .prop_map(|(id, epoch_skew, gap, len)| Op::Apply { id, epoch_skew, gap, len }),
        1 => (pick(), prop::bool::weighted(0.2)).prop_map(|(id, stale)| Op::ChangePeer { id, stale }),
    ]
}

fn key(position: u8) -> Vec<u8> {
    if position >= KEYS {
        Vec::new()
    } else {
        vec![b'a' + position]
    }
}

/// A registered callback: how often it fired, and for which region.
struct Tracked {
    region: RegionId,
    /// Whether its firing has been checked against the map yet.
    checked: bool,
    fired: Arc<AtomicUsize>,
    ends: Arc<std::sync::Mutex<Vec<EvictionEnd>>>,
}

/// A snapshot the test holds, with the range it covered when taken.
struct Held {
    ticket: SnapshotTicket,
    range: KeyRange,
}

#[derive(Default)]
struct Harness {
    map: RegionMap,
    loads: HashMap<u64, LoadTicket>,
    held: Vec<Held>,
    /// Records emptied by tickets released on their own, not handed back yet.
    drained: Vec<Drained>,
    callbacks: Vec<Tracked>,
    safe_points: HashMap<RegionId, u64>,
    next_id: u64,
}

impl Harness {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Insert {
                id,
                start,
                len,
                version,
            } => {
                let end = if start + len >= KEYS {
                    KEYS
                } else {
                    start + len
                };
                let range = KeyRange::new(key(start), key(end)).unwrap();
                let region = Region::new(RegionId(id), range, RegionEpoch::new(version, 1));
                self.insert(region, 10);
            }
            Op::Warm {
                id,
                start,
                len,
                version,
            } => {
                self.apply(&Op::Insert {
                    id,
                    start,
                    len,
                    version,
                });
                self.apply(&Op::StartLoad { id });
                self.apply(&Op::FinishLoad { id, fail: false });
            }
            Op::StartLoad { id } => {
                if let Ok(ticket) = self.map.start_loading(RegionId(id)) {
                    self.loads.insert(id, ticket);
                }
            }
            Op::FinishLoad { id, fail } => {
                if let Some(ticket) = self.loads.remove(&id) {
                    let ends = if fail {
                        self.map.fail_loading(&ticket)
                    } else {
                        self.map.finish_loading(&ticket)
                    };
                    for end in ends {
                        if let LoadEnd::Activated(id) = end {
                            assert_eq!(self.map.state(id), Some(RegionState::Active));
                        }
                    }
                }
            }
            Op::Evict {
                id,
                reason,
                callback,
            } => {
                let id = self.resolve(id);
                let callback = callback.then(|| self.track(id));
                let eviction = self.map.evict(id, EvictReason::ALL[reason], callback);
                self.check_eviction(eviction);
            }
            Op::EvictRange { start, len } => {
                let range = KeyRange::new(key(start), key((start + len).min(KEYS))).unwrap();
                for eviction in self.map.evict_overlapping(&range, EvictReason::DeleteRange) {
                    self.check_eviction(eviction);
                }
            }
            Op::FinishEviction { id } => {
                let id = self.resolve(id);
                let was = self.map.state(id);
                match self.map.finish_eviction(id) {
                    Ok(callbacks) => {
                        assert_eq!(was, Some(RegionState::Evicting));
                        callbacks.into_iter().for_each(EvictCallback::fire);
                    }
                    Err(_) => assert_ne!(was, Some(RegionState::Evicting)),
                }
            }
            Op::Split {
                id,
                at,
                stale_source,
            } => self.split(self.resolve(id), at, stale_source),
            Op::Merge { id } => self.merge(self.resolve(id)),
            Op::Acquire {
                id,
                ts,
                version_skew,
                index_skew,
            } => {
                self.acquire(self.resolve(id), ts, version_skew, index_skew);
            }
            Op::Release { nth, alone } => {
                if !self.held.is_empty() {
                    let held = self.held.swap_remove(nth % self.held.len());
                    if alone {
                        let drained = held.ticket.release().expect("a held ticket is known");
                        self.drained.extend(drained);
                    } else {
                        self.map
                            .release_snapshot(held.ticket)
                            .expect("a held ticket is always known");
                    }
                }
            }
            Op::HandBack { nth } => {
                if !self.drained.is_empty() {
                    let drained = self.drained.swap_remove(nth % self.drained.len());
                    self.hand_back(drained);
                }
            }
            Op::SafePoint { id, ts } => {
                let id = self.resolve(id);
                let own_oldest = self.map.info(id).and_then(|i| i.oldest_snapshot_ts);
                if let Ok(sp) = self.map.advance_safe_point(id, ts)
                    && sp < ts
                    && own_oldest.is_none_or(|own| sp < own)
                {
                    hit(&COVERAGE.clamped_by_parent);
                }
            }
            Op::Apply {
                id,
                epoch_skew,
                gap,
                len,
            } => {
                let id = self.resolve(id);
                let Some(info) = self.map.info(id) else {
                    return;
                };
                let mut epoch = info.region.epoch;
                epoch.version += u64::from(epoch_skew);
                let first = info.applied_index + 1 + u64::from(gap);
                let last = first + u64::from(len) - 1;
                // The shared path first: where it decides, the map alone finds nothing left
                // to do; where it declines, it changed nothing and the map alone evicts.
                let tried = self.map.try_report_applied(id, epoch, first, last);
                let index = |map: &RegionMap| map.info(id).map(|i| i.applied_index);
                let after_try = index(&self.map);
                let outcome = self.map.report_applied(id, epoch, first, last);
                match tried {
                    Some(ApplyOutcome::Advanced) if info.state == RegionState::Pending => {
                        assert!(matches!(outcome, ApplyOutcome::Advanced), "{outcome:?}");
                        assert_eq!(index(&self.map), after_try);
                    }
                    Some(ApplyOutcome::Advanced) => {
                        assert!(matches!(outcome, ApplyOutcome::Unchanged), "{outcome:?}");
                        assert_eq!(after_try, Some(last));
                    }
                    Some(decided) => assert_eq!(
                        std::mem::discriminant(&outcome),
                        std::mem::discriminant(&decided),
                        "{outcome:?} after {decided:?}"
                    ),
                    None => {
                        assert!(matches!(outcome, ApplyOutcome::Gap(_)), "{outcome:?}");
                        assert_eq!(after_try, Some(info.applied_index), "declined: unchanged");
                    }
                }
                if let ApplyOutcome::Gap(gap) = outcome {
                    assert!(
                        info.state != RegionState::Pending
                            || gap.kind.reason() == EvictReason::EpochGap
                    );
                    self.check_eviction(gap.eviction);
                }
            }
            Op::ChangePeer { id, stale } => {
                let Some(mut before) = self.map.region(self.resolve(id)).cloned() else {
                    return;
                };
                before.epoch.conf_ver -= u64::from(stale);
                let mut after = before.clone();
                after.epoch.conf_ver = before.epoch.conf_ver + 2;
                if let EpochChange::Gap(gap) = self.map.change_epoch(&before, &after) {
                    assert!(stale);
                    self.check_eviction(gap.eviction);
                }
            }
        }
    }

    /// The region a [`Pick`] names: one in five is an id that is not cached.
    fn resolve(&self, pick: Pick) -> RegionId {
        let regions = self.map.regions();
        if regions.is_empty() || pick.0 % 5 == 4 {
            return RegionId(900 + u64::from(pick.0 % 3));
        }
        regions[usize::from(pick.0) % regions.len()].region.id
    }

    fn split(&mut self, id: RegionId, at: u8, stale_source: bool) {
        let Some(mut source) = self.map.region(id).cloned() else {
            return;
        };
        let split_key = key(at);
        if split_key.is_empty()
            || !source.range.contains_key(&split_key)
            || split_key == source.range.start()
        {
            return;
        }
        if stale_source {
            source.epoch.version += 1;
        }
        let epoch = RegionEpoch::new(source.epoch.version + 1, source.epoch.conf_ver);
        let end = source.range.end().map(<[u8]>::to_vec).unwrap_or_default();
        self.next_id += 1;
        let new_id = RegionId(1000 + self.next_id);
        let children = [
            SplitChild {
                region: Region::new(
                    id,
                    KeyRange::new(source.range.start(), split_key.clone()).unwrap(),
                    epoch,
                ),
                applied_index: 20,
            },
            SplitChild {
                region: Region::new(new_id, KeyRange::new(split_key, end).unwrap(), epoch),
                applied_index: 5,
            },
        ];
        let state = self.map.state(id);
        match self
            .map
            .split(&source, &children)
            .expect("a well-formed split is never refused")
        {
            SplitOutcome::Derived {
                state: inherited, ..
            } => {
                assert!(!stale_source);
                if !self.map.historical().is_empty() {
                    hit(&COVERAGE.historical_snapshots);
                }
                assert_eq!(Some(inherited), state);
                self.safe_points.remove(&new_id);
                if let Some(sp) = self.safe_points.get(&id).copied() {
                    self.safe_points.insert(new_id, sp);
                }
            }
            SplitOutcome::Gap(gap) => {
                assert!(stale_source);
                self.check_eviction(gap.eviction);
            }
            SplitOutcome::ReplacedPending { .. } => {
                assert_eq!(state, Some(RegionState::Pending));
                hit(&COVERAGE.replaced_pending);
                self.safe_points.remove(&id);
            }
            SplitOutcome::Ignored(s) => assert!(s.is_evicting()),
            SplitOutcome::NotCached => panic!("{id} was cached"),
        }
    }

    /// PrepareMerge on `id`, CommitMerge on its right neighbour, then the merged region is
    /// offered for loading (refused until both sources' data is gone).
    fn merge(&mut self, id: RegionId) {
        let Some(left) = self.map.region(id).cloned() else {
            return;
        };
        let Some(end) = left.range.end() else { return };
        let Some(right_id) = self.map.region_at(end) else {
            return;
        };
        let Some(right) = self.map.region(right_id).cloned() else {
            return;
        };
        let prepare = self.map.evict(id, EvictReason::PrepareMerge, None);
        self.check_eviction(prepare);
        let callback = self.track(right_id);
        let commit = self.map.evict(right_id, EvictReason::Merge, Some(callback));
        self.check_eviction(commit);
        self.check_fired_callbacks();
        let merged_end = right.range.end().map(<[u8]>::to_vec).unwrap_or_default();
        let version = left.epoch.version.max(right.epoch.version) + 1;
        let merged = Region::new(
            right_id,
            KeyRange::new(left.range.start(), merged_end).unwrap(),
            RegionEpoch::new(version, 1),
        );
        self.insert(merged, 30);
    }

    /// Inserts a Pending region; a replaced stale Pending record starts a new safe-point
    /// history.
    fn insert(&mut self, region: Region, applied_index: u64) {
        let id = region.id;
        if let Ok(replaced) = self.map.insert_pending(region, applied_index) {
            for gone in replaced.into_iter().chain([id]) {
                self.safe_points.remove(&gone);
            }
        }
    }

    fn acquire(&mut self, id: RegionId, ts: u64, version_skew: i8, index_skew: i8) {
        let Some(info) = self.map.info(id) else {
            return;
        };
        let request = ReadRequest {
            epoch_version: info
                .region
                .epoch
                .version
                .saturating_add_signed(version_skew.into()),
            applied_index: info.applied_index.saturating_add_signed(index_skew.into()),
            read_ts: ts,
        };
        // Even read_ts through a shared reference first (as many readers at once would):
        // the same answer, except that a gap is only evicted by the exclusive call.
        let shared = ts
            .is_multiple_of(2)
            .then(|| self.map.try_acquire_snapshot(id, request));
        let answer = match shared {
            Some(Ok(ticket)) => Ok(ticket),
            Some(Err(miss)) if !matches!(miss, ReadMiss::Gap(_)) => {
                let exclusive = self.map.acquire_snapshot(id, request);
                assert!(
                    matches!(&exclusive, Err(r) if r.miss == miss && r.gap.is_none()),
                    "shared {miss:?}, exclusive {exclusive:?}"
                );
                exclusive
            }
            Some(Err(_)) | None => self.map.acquire_snapshot(id, request),
        };
        match answer {
            Ok(ticket) => {
                assert_eq!(info.state, RegionState::Active);
                assert!(version_skew == 0 && index_skew <= 0 && ts > info.safe_point);
                self.held.push(Held {
                    ticket,
                    range: info.region.range,
                });
            }
            Err(ReadRefused {
                miss: ReadMiss::Gap(kind),
                gap: Some(gap),
            }) => {
                assert!(version_skew > 0 || index_skew > 0, "a gap without a skew");
                assert_eq!(kind, gap.kind);
                self.check_eviction(gap.eviction);
            }
            Err(refused) => assert!(refused.gap.is_none(), "{refused:?}"),
        }
    }

    fn track(&mut self, region: RegionId) -> EvictCallback {
        let fired = Arc::new(AtomicUsize::new(0));
        let ends = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (f, e) = (Arc::clone(&fired), Arc::clone(&ends));
        self.callbacks.push(Tracked {
            region,
            checked: false,
            fired,
            ends,
        });
        EvictCallback::new(move |end| {
            f.fetch_add(1, Ordering::SeqCst);
            e.lock().unwrap().push(end);
        })
    }

    fn check_eviction(&mut self, eviction: Eviction) {
        let state = self.map.state(eviction.region);
        match (eviction.step, eviction.reason) {
            (EvictStep::AwaitingSnapshots, _) => hit(&COVERAGE.pending_evict),
            (EvictStep::LoadCanceled, _) => hit(&COVERAGE.load_canceled),
            (_, EvictReason::EpochGap) => hit(&COVERAGE.epoch_gaps),
            (_, EvictReason::IndexGap) => hit(&COVERAGE.index_gaps),
            _ => {}
        }
        match eviction.step {
            EvictStep::NotCached | EvictStep::Removed => assert_eq!(state, None),
            EvictStep::LoadCanceled => assert_eq!(state, Some(RegionState::LoadingCanceled)),
            EvictStep::AwaitingSnapshots => assert_eq!(state, Some(RegionState::PendingEvict)),
            EvictStep::ReadyToDelete => assert_eq!(state, Some(RegionState::Evicting)),
            EvictStep::AlreadyEvicting => assert!(state.is_some_and(RegionState::is_evicting)),
        }
        eviction.callbacks.into_iter().for_each(EvictCallback::fire);
    }

    /// A drained record handed back: a PendingEvict region it frees is now Evicting.
    fn hand_back(&mut self, drained: Drained) {
        let region = drained.region();
        if let Some(ready) = self.map.drained(drained) {
            assert_eq!(ready, region);
            assert_eq!(self.map.state(region), Some(RegionState::Evicting));
        }
    }

    /// Checks everything that must hold after any step.
    fn check(&mut self) {
        if self.drained.is_empty() {
            // The map counts a record as drained once it is handed back.
            self.map.check_invariants().unwrap();
        }
        let regions = self.map.regions();
        for info in &regions {
            let previous = self
                .safe_points
                .insert(info.region.id, info.safe_point)
                .unwrap_or(0);
            assert!(
                info.safe_point >= previous,
                "safe point of {} went back",
                info.region.id
            );
            for held in self
                .held
                .iter()
                .filter(|h| h.range.overlaps(&info.region.range))
            {
                assert!(
                    info.safe_point <= held.ticket.read_ts(),
                    "{} passed a live snapshot",
                    info.region.id
                );
            }
        }
        self.safe_points
            .retain(|id, _| regions.iter().any(|r| r.region.id == *id));
        self.check_fired_callbacks();
    }

    /// A callback fires at most once, and reports `Removed` only once its region is gone.
    fn check_fired_callbacks(&mut self) {
        for tracked in self.callbacks.iter_mut().filter(|t| !t.checked) {
            let fired = tracked.fired.load(Ordering::SeqCst);
            assert!(fired <= 1, "a callback fired {fired} times");
            let ends = tracked.ends.lock().unwrap();
            if let Some(end) = ends.first() {
                tracked.checked = true;
                if *end == EvictionEnd::Removed {
                    hit(&COVERAGE.removed_callbacks);
                }
                let state = self.map.state(tracked.region);
                assert!(
                    *end != EvictionEnd::Removed || state.is_none(),
                    "fired while {state:?}"
                );
            }
        }
        for tracked in &self.callbacks {
            assert!(
                tracked.fired.load(Ordering::SeqCst) <= 1,
                "a callback fired twice"
            );
        }
    }

    /// Drains everything: snapshots released, loads finished, evictions completed; then the
    /// map is dropped. Every callback must have fired exactly once.
    fn finish(mut self) {
        for held in std::mem::take(&mut self.held) {
            self.map
                .release_snapshot(held.ticket)
                .expect("a held ticket is always known");
        }
        for drained in std::mem::take(&mut self.drained) {
            self.hand_back(drained);
        }
        self.map.check_invariants().unwrap();
        for (_, ticket) in std::mem::take(&mut self.loads) {
            let _ = self.map.finish_loading(&ticket);
        }
        for info in self.map.regions() {
            let eviction = self.map.evict(info.region.id, EvictReason::Disabled, None);
            self.check_eviction(eviction);
        }
        for info in self.map.regions() {
            assert_eq!(info.state, RegionState::Evicting, "{info:?} is stuck");
            let callbacks = self.map.finish_eviction(info.region.id).unwrap();
            callbacks.into_iter().for_each(EvictCallback::fire);
        }
        assert!(self.map.is_empty() && self.map.historical().is_empty());
        drop(self.map);
        for tracked in &self.callbacks {
            assert_eq!(
                tracked.fired.load(Ordering::SeqCst),
                1,
                "callback for {} fired wrongly",
                tracked.region
            );
        }
    }
}

#[test]
fn random_sequences_keep_every_invariant() {
    let config = ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..150), |ops| {
        let mut harness = Harness::default();
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        harness.finish();
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let c = &*COVERAGE;
    let counts = [
        ("historical snapshots", &c.historical_snapshots),
        (
            "safe point clamped by a split parent's snapshot",
            &c.clamped_by_parent,
        ),
        ("PendingEvict", &c.pending_evict),
        ("LoadCanceled", &c.load_canceled),
        ("EpochGap", &c.epoch_gaps),
        ("IndexGap", &c.index_gaps),
        ("pending replaced by a split", &c.replaced_pending),
        ("callbacks fired as Removed", &c.removed_callbacks),
    ];
    for (what, count) in counts {
        assert!(
            count.load(Ordering::Relaxed) >= 5,
            "only {count:?} runs reached {what}"
        );
    }
}

/// Callbacks handed to a map that is dropped mid-eviction still fire, as Abandoned.
#[test]
fn callbacks_fire_when_the_map_is_dropped() {
    let mut harness = Harness::default();
    harness.apply(&Op::Insert {
        id: 1,
        start: 0,
        len: 3,
        version: 1,
    });
    harness.apply(&Op::StartLoad { id: 1 });
    harness.apply(&Op::Evict {
        id: Pick(0),
        reason: 0,
        callback: true,
    });
    let Harness { map, callbacks, .. } = harness;
    assert_eq!(callbacks[0].fired.load(Ordering::SeqCst), 0);
    drop(map);
    assert_eq!(callbacks[0].fired.load(Ordering::SeqCst), 1);
    assert_eq!(*callbacks[0].ends.lock().unwrap(), [EvictionEnd::Abandoned]);
}
