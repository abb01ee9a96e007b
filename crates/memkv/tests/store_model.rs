//! Differential tests against a `BTreeMap` model: random batches (puts, deletes, range
//! deletes) with sequence numbers, snapshots at random sequence numbers, compactions, and
//! gets and scans both ways — every answer equal. Then MVCC GC at random safe points: an
//! MVCC read at any read_ts at or above the safe point answers the same after GC.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeMap;

use ime_memkv::codec::{MvccKey, WriteRecord, WriteType};
use ime_memkv::mvcc::{newest_put_in, versions_at_or_below};
use ime_memkv::*;
use proptest::prelude::*;

type Versions = Vec<(u64, Option<Vec<u8>>)>;

/// The model: every version of every key, per column family.
#[derive(Default, Clone)]
struct Model {
    cfs: [BTreeMap<Vec<u8>, Versions>; 3],
}

impl Model {
    fn apply(&mut self, batch: &WriteBatch, first_seq: u64, bounds: &KeyRange) {
        for (i, op) in batch.ops().iter().enumerate() {
            let seq = first_seq + i as u64;
            match op {
                Op::Put(cf, k, v) if bounds.contains_key(k) => self
                    .cf(*cf)
                    .entry(k.clone())
                    .or_default()
                    .push((seq, Some(v.clone()))),
                Op::Delete(cf, k) if bounds.contains_key(k) => {
                    self.cf(*cf).entry(k.clone()).or_default().push((seq, None))
                }
                Op::DeleteRange(cf, s, e) => {
                    for (k, versions) in self.cf(*cf).range_mut(s.clone()..e.clone()) {
                        if bounds.contains_key(k) {
                            versions.push((seq, None));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn cf(&mut self, cf: Cf) -> &mut BTreeMap<Vec<u8>, Versions> {
        &mut self.cfs[cf_index(cf)]
    }

    fn visible(&self, cf: Cf, seq: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.cfs[cf_index(cf)]
            .iter()
            .filter_map(|(k, versions)| {
                let value = versions.iter().rev().find(|(s, _)| *s <= seq)?.1.clone()?;
                Some((k.clone(), value))
            })
            .collect()
    }
}

/// An empty store with `hard_limit` bytes (and a soft limit of half).
fn store(hard_limit: u64) -> MemKv {
    MemKv::new(MemConfig {
        hard_limit,
        soft_limit: hard_limit / 2,
    })
}

/// The keys from `start` up to `end`.
fn bounds(start: &str, end: &str) -> KeyRange {
    KeyRange::with_end(start.as_bytes().to_vec(), Some(end.as_bytes().to_vec())).unwrap()
}

fn cf_index(cf: Cf) -> usize {
    Cf::ALL.iter().position(|c| *c == cf).unwrap()
}

fn scan_forward(snapshot: &Snapshot, cf: Cf, bounds: KeyRange) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut iter = snapshot.iter(cf, bounds).unwrap();
    iter.seek_to_first();
    let mut out = Vec::new();
    while let Some((k, v)) = iter.entry() {
        out.push((k.to_vec(), v.to_vec()));
        iter.next();
    }
    out
}

fn scan_backward(snapshot: &Snapshot, cf: Cf, bounds: KeyRange) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut iter = snapshot.iter(cf, bounds).unwrap();
    iter.seek_to_last();
    let mut out = Vec::new();
    while let Some((k, v)) = iter.entry() {
        out.push((k.to_vec(), v.to_vec()));
        iter.prev();
    }
    out.reverse();
    out
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<(u8, u8, Option<u8>, u8)>),
    Snapshot,
    Compact,
    /// Start a compaction a piece at a time of the range at this index (modulo their
    /// number), pieces of about this many entries.
    StartCompaction(u8, u8),
    /// One step of every compaction under way.
    Piece,
    /// Split the range holding this key at it.
    Split(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop::collection::vec((0..3u8, 0..30u8, prop::option::weighted(0.7, any::<u8>()), 0..10u8), 1..6).prop_map(Step::Batch),
        2 => Just(Step::Snapshot),
        1 => Just(Step::Compact),
        1 => (any::<u8>(), 1..8u8).prop_map(|(range, piece)| Step::StartCompaction(range, piece)),
        2 => Just(Step::Piece),
        1 => (6..25u8).prop_map(Step::Split),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("k{k:02}").into_bytes()
}

/// Splits the range of `ranges` holding `at` there, if `at` is not its start.
fn split(kv: &MemKv, ranges: &mut Vec<(RangeId, KeyRange)>, next_id: &mut u64, at: &[u8]) {
    let Some(i) = ranges
        .iter()
        .position(|(_, b)| b.contains_key(at) && b.start() != at)
    else {
        return;
    };
    let (id, bounds) = ranges.remove(i);
    let left = (
        RangeId(*next_id),
        KeyRange::with_end(bounds.start().to_vec(), Some(at.to_vec())).unwrap(),
    );
    let right = (
        RangeId(*next_id + 1),
        KeyRange::with_end(at.to_vec(), bounds.end().map(<[u8]>::to_vec)).unwrap(),
    );
    *next_id += 2;
    kv.split_range(id, &[left.clone(), right.clone()]).unwrap();
    ranges.extend([left, right]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Writes, range deletes, snapshots, compactions and splits against a model: every
    /// scan (both ways, whole range and inner bounds), get, seek and seek_for_prev of every
    /// snapshot of every range equals the model's answer at that sequence. Half the cases
    /// begin with a load: its runs are copied at the first sequence and installed at a
    /// random step, after writes (deletions among them), compactions and splits of the
    /// range — as a load's copy runs beside the writes — and no snapshot is taken before.
    /// A range delete meanwhile is refused (the keys the load brings are not held yet).
    /// Compactions are also done a piece at a time, their steps between the other steps
    /// (writes, splits, other compactions); at the end, half of those under way are
    /// finished and the others dropped unfinished.
    #[test]
    fn every_read_equals_the_model(
        steps in prop::collection::vec(step(), 1..40),
        load in prop::option::weighted(0.5, (prop::collection::vec((0..3u8, 0..30u8, any::<u8>()), 0..20), any::<usize>())),
    ) {
        // The store holds k05..k25; keys outside are skipped.
        let bounds = KeyRange::with_end(key(5), Some(key(25))).unwrap();
        let kv = store(1 << 30);
        let target = kv.create_range(RangeId(1), bounds.clone()).unwrap();
        let mut ranges = vec![(RangeId(1), bounds.clone())];
        let mut next_id = 2;
        let mut model = Model::default();
        let mut seq = 0u64;
        let mut snapshots: Vec<(Snapshot, KeyRange, u64)> = Vec::new();
        let mut jobs: Vec<(Compaction, usize)> = Vec::new();
        let (mut pending, install_at) = match &load {
            Some((entries, at)) => {
                seq = 1; // the load's sequence, below every write
                let mut runs = Vec::new();
                for cf in Cf::ALL {
                    let copied: BTreeMap<Vec<u8>, Vec<u8>> = entries
                        .iter()
                        .filter(|(c, k, _)| Cf::ALL[usize::from(*c)] == cf && bounds.contains_key(&key(*k)))
                        .map(|(_, k, v)| (key(*k), vec![*v]))
                        .collect();
                    let mut loader = kv.loader_for(&target, cf, seq);
                    for (k, v) in copied {
                        loader.push(&k, &v).unwrap();
                        model.cf(cf).insert(k, vec![(seq, Some(v))]);
                    }
                    runs.push(loader.built().unwrap());
                }
                (Some(runs), at % (steps.len() + 1))
            }
            None => (None, 0),
        };
        drop(target); // the built runs keep the range loading until they are installed
        for (i, step) in steps.iter().enumerate() {
            if i == install_at
                && let Some(runs) = pending.take()
            {
                kv.install_loaded(runs).unwrap();
            }
            match step {
                Step::Batch(items) => {
                    let mut batch = WriteBatch::new();
                    for (cf, k, value, kind) in items {
                        let cf = Cf::ALL[usize::from(*cf)];
                        match (value, kind) {
                            (_, 0) => batch.delete_range(cf, key(*k), key(k + 4)),
                            (Some(v), _) => batch.put(cf, key(*k), vec![*v]),
                            (None, _) => batch.delete(cf, key(*k)),
                        };
                    }
                    match kv.write(&batch, seq + 1) {
                        Ok(_) => {
                            model.apply(&batch, seq + 1, &bounds);
                            seq += batch.len() as u64;
                        }
                        // The keys the load brings are not held yet: a range delete that
                        // would have to delete them is refused, and nothing is written.
                        Err(MemError::RangeDeleteWhileLoading(_)) => {
                            prop_assert!(pending.is_some());
                            prop_assert!(items.iter().any(|item| item.3 == 0));
                        }
                        Err(err) => prop_assert!(false, "{err}"),
                    }
                }
                Step::Snapshot if pending.is_some() => {} // loading: nothing is read yet
                Step::Snapshot => {
                    for (id, b) in &ranges {
                        snapshots.push((kv.snapshot(*id, seq).unwrap(), b.clone(), seq));
                    }
                }
                Step::Compact => {
                    for (id, _) in &ranges {
                        kv.compact(*id, None).unwrap();
                    }
                }
                Step::StartCompaction(at, piece) => {
                    let (id, _) = &ranges[usize::from(*at) % ranges.len()];
                    jobs.push((kv.compaction(*id).unwrap(), usize::from(*piece)));
                }
                Step::Piece => {
                    let mut left = Vec::new();
                    for (mut job, piece) in jobs.drain(..) {
                        if kv.compaction_step(&mut job, piece).unwrap().is_none() {
                            left.push((job, piece));
                        }
                    }
                    jobs = left;
                }
                Step::Split(at) => split(&kv, &mut ranges, &mut next_id, &key(*at)),
            }
        }
        for (i, (mut job, piece)) in jobs.into_iter().enumerate() {
            while i % 2 == 0 && kv.compaction_step(&mut job, piece).unwrap().is_none() {}
        }
        if let Some(runs) = pending.take() {
            kv.install_loaded(runs).unwrap();
        }
        // Compactions after the load drop deletions again: the reads stay the same.
        if load.is_some() {
            for (id, _) in &ranges {
                kv.compact(*id, None).unwrap();
            }
        }
        for (id, b) in &ranges {
            snapshots.push((kv.snapshot(*id, seq).unwrap(), b.clone(), seq));
        }
        check_snapshots(&snapshots, &model)?;
    }
}

/// Every read of every snapshot equals the model at the snapshot's sequence: scans both
/// ways (whole range and inner bounds), gets, seeks and seek_for_prev, and one cursor
/// seeking ahead again and again.
fn check_snapshots(
    snapshots: &[(Snapshot, KeyRange, u64)],
    model: &Model,
) -> Result<(), TestCaseError> {
    let inner = KeyRange::with_end(key(8), Some(key(17))).unwrap();
    for (snapshot, bounds, at) in snapshots {
        for cf in Cf::ALL {
            let expected: Vec<_> = model
                .visible(cf, *at)
                .into_iter()
                .filter(|(k, _)| bounds.contains_key(k))
                .collect();
            prop_assert_eq!(&scan_forward(snapshot, cf, bounds.clone()), &expected);
            prop_assert_eq!(&scan_backward(snapshot, cf, bounds.clone()), &expected);
            if let Some(inner) = inner.intersect(bounds) {
                let expected_inner: Vec<_> = expected
                    .iter()
                    .filter(|(k, _)| inner.contains_key(k))
                    .cloned()
                    .collect();
                prop_assert_eq!(
                    scan_forward(snapshot, cf, inner.clone()),
                    expected_inner.clone()
                );
                prop_assert_eq!(scan_backward(snapshot, cf, inner.clone()), expected_inner);
            }
            for k in 0..30 {
                let want = expected
                    .iter()
                    .find(|(key_, _)| *key_ == key(k))
                    .map(|(_, v)| v.clone());
                prop_assert_eq!(snapshot.get(cf, &key(k)), want);
                // seek / seek_for_prev land where the model says.
                let mut iter = snapshot.iter(cf, bounds.clone()).unwrap();
                iter.seek(&key(k));
                let at_or_after = expected.iter().find(|(key_, _)| *key_ >= key(k));
                let from_k = KeyRange::with_end(key(k), bounds.end().map(<[u8]>::to_vec)).ok();
                if let Some(from_k) = from_k {
                    prop_assert_eq!(
                        snapshot.first_in(cf, &from_k),
                        at_or_after.cloned(),
                        "first_in"
                    );
                }
                prop_assert_eq!(
                    iter.entry().map(|(a, _)| a.to_vec()),
                    at_or_after.map(|(a, _)| a.clone())
                );
                iter.seek_for_prev(&key(k));
                let at_or_before = expected.iter().rev().find(|(key_, _)| *key_ <= key(k));
                prop_assert_eq!(
                    iter.entry().map(|(a, _)| a.to_vec()),
                    at_or_before.map(|(a, _)| a.clone())
                );
            }
            // One cursor seeking ahead again and again, stepping on between seeks (a
            // scan's pattern: each seek gallops from where the cursor is), then back.
            let mut iter = snapshot.iter(cf, bounds.clone()).unwrap();
            let probes = (0..30).chain((0..30).step_by(4)).chain([29, 3, 17, 17, 2]);
            for (n, k) in probes.enumerate() {
                iter.seek(&key(k));
                let at = expected.iter().position(|(key_, _)| *key_ >= key(k));
                let want =
                    |i: Option<usize>| i.and_then(|i| expected.get(i)).map(|(a, _)| a.clone());
                prop_assert_eq!(
                    iter.entry().map(|(a, _)| a.to_vec()),
                    want(at),
                    "seek {}",
                    k
                );
                if n % 3 == 0 {
                    iter.next();
                    prop_assert_eq!(
                        iter.entry().map(|(a, _)| a.to_vec()),
                        want(at.map(|i| i + 1)),
                        "next after seek {}",
                        k
                    );
                }
            }
        }
    }
    Ok(())
}

/// A split that does not partition the range is refused and changes nothing.
#[test]
fn an_invalid_split_is_refused() {
    let kv = store(1 << 20);
    kv.create_range(RangeId(1), bounds("b", "f")).unwrap();
    kv.create_range(RangeId(2), bounds("f", "h")).unwrap();
    let cases: [&[(u64, &str, &str)]; 5] = [
        &[],
        &[(3, "b", "d"), (4, "d", "e")], // a gap
        &[(3, "b", "d"), (4, "c", "f")], // an overlap
        &[(3, "b", "d"), (3, "d", "f")], // one id twice
        &[(3, "b", "d"), (2, "d", "f")], // an id held elsewhere
    ];
    for case in cases {
        let children: Vec<(RangeId, KeyRange)> = case
            .iter()
            .map(|&(id, start, end)| (RangeId(id), bounds(start, end)))
            .collect();
        assert!(
            matches!(
                kv.split_range(RangeId(1), &children),
                Err(MemError::InvalidSplit { .. })
            ),
            "{children:?}"
        );
    }
    assert!(matches!(
        kv.split_range(RangeId(9), &[(RangeId(3), bounds("b", "f"))]),
        Err(MemError::NoSuchRange(_))
    ));
    assert_eq!(kv.ranges_held().len(), 2);
    kv.split_range(
        RangeId(1),
        &[
            (RangeId(1), bounds("b", "d")),
            (RangeId(3), bounds("d", "f")),
        ],
    )
    .unwrap();
    assert_eq!(kv.ranges_held().len(), 3);
}

/// The MVCC value of `user_key` at `read_ts`: the newest put or delete at or below it
/// (locks and rollbacks skipped), its value inline or in the default CF.
fn mvcc_get(snapshot: &Snapshot, user_key: &[u8], read_ts: u64) -> Option<Vec<u8>> {
    let start = MvccKey {
        user_key: user_key.to_vec(),
        ts: read_ts,
    }
    .encode();
    let mut end = MvccKey::encode_user_key(user_key);
    end.extend_from_slice(&[0xff; 9]);
    let mut iter = snapshot
        .iter(Cf::Write, KeyRange::with_end(start, Some(end)).unwrap())
        .unwrap();
    iter.seek_to_first();
    while let Some((_, value)) = iter.entry() {
        let record = WriteRecord::decode(value).unwrap();
        match record.kind() {
            WriteType::Put => {
                return record.short_value.or_else(|| {
                    let default_key = MvccKey {
                        user_key: user_key.to_vec(),
                        ts: record.start_ts,
                    }
                    .encode();
                    snapshot.get(Cf::Default, &default_key)
                });
            }
            WriteType::Delete => return None,
            WriteType::Lock | WriteType::Rollback => iter.next(),
        }
    }
    None
}

#[derive(Clone, Debug)]
struct Version {
    user: u8,
    commit_ts: u64,
    kind: u8,
    long: bool,
    twice: bool,
}

fn version() -> impl Strategy<Value = Version> {
    (
        0..6u8,
        1..60u64,
        0..4u8,
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(user, commit_ts, kind, long, twice)| Version {
            user,
            commit_ts,
            kind,
            long,
            twice,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// GC at a safe point never changes an MVCC read at or above it, and leaves at most
    /// one version at or below it per key.
    #[test]
    fn gc_keeps_every_read_at_or_above_the_safe_point(
        versions in prop::collection::vec(version(), 1..40),
        safe_point in 0..70u64,
    ) {
        let kv = store(1 << 30);
        kv.create_range(RangeId(1), KeyRange::with_end(Vec::new(), None).unwrap()).unwrap();
        let mut seq = 0;
        for v in &versions {
            let user = vec![b'u', v.user];
            let start_ts = v.commit_ts.saturating_sub(1).max(1);
            let kind = [WriteType::Put, WriteType::Delete, WriteType::Lock, WriteType::Rollback][usize::from(v.kind)];
            let value = format!("value-{}-{}", v.user, v.commit_ts).into_bytes();
            let mut batch = WriteBatch::new();
            let inline = (kind == WriteType::Put && !v.long).then(|| value.clone());
            if kind == WriteType::Put && v.long {
                batch.put(Cf::Default, MvccKey { user_key: user.clone(), ts: start_ts }.encode(), value);
            }
            let record = WriteRecord::new(kind, start_ts, inline).encode().unwrap();
            let write_key = MvccKey { user_key: user.clone(), ts: v.commit_ts }.encode();
            batch.put(Cf::Write, write_key.clone(), record.clone());
            if v.twice {
                // The same key and commit_ts written again at a later sequence (#17060).
                batch.put(Cf::Write, write_key, record);
            }
            kv.write(&batch, seq + 1).unwrap();
            seq += batch.len() as u64;
        }
        let before = kv.snapshot(RangeId(1), seq).unwrap();
        let stats = kv.compact(RangeId(1), Some(safe_point)).unwrap();
        let after = kv.snapshot(RangeId(1), seq).unwrap();
        for user in 0..6u8 {
            let user_key = vec![b'u', user];
            for read_ts in safe_point..=61 {
                prop_assert_eq!(mvcc_get(&after, &user_key, read_ts), mvcc_get(&before, &user_key, read_ts),
                    "user {} read_ts {} safe point {} ({:?})", user, read_ts, safe_point, stats);
            }
            // The point lookup the engine reads with agrees with the iterator's walk, from
            // memtables (before) and from the run alone (after), locks and rollbacks
            // stepped over.
            for (snapshot, side) in [(&before, "memtables"), (&after, "run")] {
                for read_ts in 0..=61 {
                    let versions = versions_at_or_below(&MvccKey::encode_user_key(&user_key), read_ts).unwrap();
                    let (put, _) = newest_put_in(snapshot, versions).unwrap();
                    let found = put.map(|record| record.short_value.or_else(|| {
                        snapshot.get(Cf::Default, &MvccKey { user_key: user_key.clone(), ts: record.start_ts }.encode())
                    }));
                    prop_assert_eq!(found.flatten(), mvcc_get(snapshot, &user_key, read_ts),
                        "{} user {} read_ts {}", side, user, read_ts);
                }
            }
            // At most one version at or below the safe point survives, and it is a put.
            let all = KeyRange::with_end(MvccKey::encode_user_key(&user_key), None).unwrap();
            let mut iter = after.iter(Cf::Write, all).unwrap();
            iter.seek_to_first();
            let mut old = 0;
            while let Some((k, v)) = iter.entry() {
                let key = MvccKey::decode(k).unwrap();
                if key.user_key != user_key { break; }
                if key.ts <= safe_point {
                    old += 1;
                    prop_assert_eq!(WriteRecord::decode(v).unwrap().kind(), WriteType::Put);
                }
                iter.next();
            }
            prop_assert!(old <= 1);
        }
        // The snapshot from before still reads the old layers, untouched.
        prop_assert!(before.get(Cf::Write, &[0]).is_none());
    }
}

/// Writes are routed to the range holding each key; keys in no range are skipped; a range
/// delete reaches every range it overlaps; an overlapping range cannot be created.
#[test]
fn writes_and_range_deletes_are_routed_across_ranges() {
    let kv = store(1 << 30);
    let bounds = |s: &str, e: Option<&str>| {
        KeyRange::with_end(s.as_bytes().to_vec(), e.map(|e| e.as_bytes().to_vec())).unwrap()
    };
    kv.create_range(RangeId(1), bounds("b", Some("d"))).unwrap();
    kv.create_range(RangeId(2), bounds("f", Some("h"))).unwrap();
    kv.create_range(RangeId(3), bounds("h", None)).unwrap();
    for (s, e) in [
        ("a", Some("c")),
        ("c", Some("g")),
        ("e", None),
        ("g", Some("h")),
    ] {
        assert!(
            matches!(
                kv.create_range(RangeId(9), bounds(s, e)),
                Err(MemError::RangeOverlaps { .. })
            ),
            "{s}"
        );
    }
    kv.create_range(RangeId(4), bounds("d", Some("f"))).unwrap();
    kv.drop_range(RangeId(4)).map(drop).unwrap();
    let mut batch = WriteBatch::new();
    for key in ["a", "b", "c", "e", "f", "g", "h", "z"] {
        batch.put(Cf::Lock, key, key);
    }
    assert_eq!(kv.write(&batch, 1).unwrap(), 6, "a and e are in no range");
    kv.write(WriteBatch::new().delete_range(Cf::Lock, "c", "hh"), 9)
        .unwrap();
    let keys = |id: u64| {
        let snapshot = kv.snapshot(RangeId(id), 9).unwrap();
        let b = kv
            .ranges_held()
            .into_iter()
            .find(|(r, _)| *r == RangeId(id))
            .unwrap()
            .1;
        scan_forward(&snapshot, Cf::Lock, b)
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(1), ["b"]);
    assert!(keys(2).is_empty());
    assert_eq!(keys(3), ["z"]);
}

/// `ranges_touched` names the ranges a batch would write to, each once, in id order: a
/// put or delete's range whatever the order of the keys, none for a key in no range, and
/// for a range delete the ranges where it finds keys (held, or written before it in the
/// same batch); a plan's `reaches_only` agrees with it.
#[test]
fn ranges_touched_names_the_ranges_a_batch_writes() {
    let kv = store(1 << 30);
    kv.create_range(RangeId(2), bounds("a", "m")).unwrap();
    kv.create_range(RangeId(1), bounds("m", "t")).unwrap();
    kv.write(WriteBatch::new().put(Cf::Lock, "p", "held"), 1)
        .unwrap();
    // A plan's `reaches_only` answers "are they all among these?" as the list does.
    let touched = |batch: &WriteBatch| {
        let ops: Vec<OpRef<'_>> = batch.ops().iter().map(Op::as_ref).collect();
        let list = kv.ranges_touched(&ops).unwrap();
        for allowed in [
            &[][..],
            &[RangeId(1)],
            &[RangeId(2)],
            &[RangeId(1), RangeId(2)],
        ] {
            let only = list.iter().all(|id| allowed.contains(id));
            let reaches_only = kv.with_plan(&ops, |plan| plan.reaches_only(allowed));
            assert_eq!(reaches_only.unwrap(), only, "{allowed:?}");
        }
        list
    };
    let mut batch = WriteBatch::new();
    for key in ["z", "n", "b", "c", "o"] {
        batch.put(Cf::Lock, key, key);
    }
    assert_eq!(touched(&batch), [RangeId(1), RangeId(2)]);
    assert_eq!(
        touched(WriteBatch::new().delete(Cf::Write, "c")),
        [RangeId(2)]
    );
    assert!(touched(WriteBatch::new().put(Cf::Lock, "z", "v")).is_empty());
    assert_eq!(
        touched(WriteBatch::new().delete_range(Cf::Lock, "o", "q")),
        [RangeId(1)]
    );
    assert!(touched(WriteBatch::new().delete_range(Cf::Lock, "c", "e")).is_empty());
    assert_eq!(
        touched(
            WriteBatch::new()
                .put(Cf::Lock, "d", "v")
                .delete_range(Cf::Lock, "c", "e")
        ),
        [RangeId(2)]
    );
}

/// A plan made before the store's ranges change is made again when written: a range
/// split meanwhile gets the writes through its children, and a key planned in no range
/// reaches the range created over it since.
#[test]
fn a_stale_plan_is_made_again_when_written() {
    let kv = store(1 << 30);
    kv.create_range(RangeId(1), bounds("a", "m")).unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(Cf::Lock, "b", "1")
        .put(Cf::Lock, "h", "2")
        .put(Cf::Lock, "n", "3");
    let ops: Vec<OpRef<'_>> = batch.ops().iter().map(Op::as_ref).collect();
    let (applied, last, reached) = kv
        .with_plan(&ops, |plan| {
            assert_eq!(plan.ranges().collect::<Vec<_>>(), [RangeId(1)]);
            kv.split_range(
                RangeId(1),
                &[
                    (RangeId(3), bounds("a", "f")),
                    (RangeId(4), bounds("f", "m")),
                ],
            )
            .unwrap();
            kv.create_range(RangeId(2), bounds("m", "t")).unwrap();
            let (applied, last) = kv.write_planned(plan).unwrap();
            let mut reached: Vec<RangeId> = plan.ranges().collect();
            reached.sort_unstable();
            (applied, last, reached)
        })
        .unwrap();
    assert_eq!(applied, 3);
    assert_eq!(reached, [RangeId(2), RangeId(3), RangeId(4)]);
    for (range, key, value) in [(3, "b", "1"), (4, "h", "2"), (2, "n", "3")] {
        let snapshot = kv.snapshot(RangeId(range), last).unwrap();
        assert_eq!(
            snapshot.get(Cf::Lock, key.as_bytes()).as_deref(),
            Some(value.as_bytes()),
            "{key} in range {range}"
        );
    }
}

/// A load at a sequence above every write so far (the disk moved on without the store)
/// survives a compaction: the load counts as a write at its sequence.
#[test]
fn a_load_ahead_of_the_writes_survives_compaction() {
    let kv = store(1 << 20);
    kv.create_range(RangeId(1), KeyRange::with_end("a", None).unwrap())
        .unwrap();
    kv.load(
        RangeId(1),
        Cf::Write,
        vec![(b"b".to_vec(), b"1".to_vec())],
        50,
    )
    .unwrap();
    kv.compact(RangeId(1), None).unwrap();
    assert_eq!(
        kv.snapshot(RangeId(1), 50).unwrap().get(Cf::Write, b"b"),
        Some(b"1".to_vec())
    );
    assert!(matches!(
        kv.write(WriteBatch::new().put(Cf::Write, "c", "2"), 50),
        Err(MemError::SequenceOutOfOrder { .. })
    ));
}

/// Two puts of one key pointing to one default-CF value (one start_ts): GC drops the older
/// record but keeps the value the newer one still points to (found by the GC proptest).
#[test]
fn gc_keeps_a_value_a_kept_put_still_points_to() {
    let kv = store(1 << 20);
    kv.create_range(RangeId(1), KeyRange::with_end(Vec::new(), None).unwrap())
        .unwrap();
    let user = b"u2".to_vec();
    let value_key = MvccKey {
        user_key: user.clone(),
        ts: 1,
    }
    .encode();
    let mut batch = WriteBatch::new();
    for commit_ts in [2, 1] {
        let record = WriteRecord::new(WriteType::Put, 1, None).encode().unwrap();
        batch.put(Cf::Default, value_key.clone(), b"the value".to_vec());
        batch.put(
            Cf::Write,
            MvccKey {
                user_key: user.clone(),
                ts: commit_ts,
            }
            .encode(),
            record,
        );
    }
    kv.write(&batch, 1).unwrap();
    let stats = kv.compact(RangeId(1), Some(2)).unwrap();
    assert_eq!(stats.versions_removed, 1);
    let after = kv.snapshot(RangeId(1), 4).unwrap();
    assert_eq!(mvcc_get(&after, &user, 2), Some(b"the value".to_vec()));
}

/// `wants_compaction`: memtables past the minimum, and past half of the runs, ask for
/// one; a compaction folds them and the answer goes back to no.
#[test]
fn grown_memtables_ask_for_a_compaction() {
    let kv = store(1 << 30);
    let bounds = KeyRange::with_end(b"a".to_vec(), Some(b"z".to_vec())).unwrap();
    kv.create_range(RangeId(1), bounds).unwrap();
    let min = ime_memkv::MEMTABLE_COMPACTION_MIN;
    let mut seq = 0;
    let mut put = |from: usize, to: usize| {
        for i in from..to {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Write, format!("k{i:08}").into_bytes(), b"v".to_vec());
            seq += 1;
            kv.write(&batch, seq).unwrap();
        }
    };
    put(0, min - 1);
    assert!(!kv.wants_compaction(RangeId(1)).unwrap());
    put(min - 1, min);
    assert!(kv.wants_compaction(RangeId(1)).unwrap());
    // Twice the minimum in the runs: the next compaction waits for half of that, which
    // is the minimum again; with four times, it waits for twice the minimum.
    put(min, 2 * min);
    kv.compact(RangeId(1), None).unwrap();
    assert!(!kv.wants_compaction(RangeId(1)).unwrap());
    put(2 * min, 3 * min - 1);
    assert!(
        !kv.wants_compaction(RangeId(1)).unwrap(),
        "half of 2x is 1x: not yet"
    );
    put(3 * min - 1, 3 * min);
    assert!(kv.wants_compaction(RangeId(1)).unwrap());
    // Three times the minimum in the runs: half of that is past the minimum, and rules.
    kv.compact(RangeId(1), None).unwrap();
    let half = 3 * min / 2;
    put(3 * min, 3 * min + half - 1);
    assert!(
        !kv.wants_compaction(RangeId(1)).unwrap(),
        "half of 3x is 1.5x: not yet"
    );
    put(3 * min + half - 1, 3 * min + half);
    assert!(kv.wants_compaction(RangeId(1)).unwrap());
    assert!(kv.wants_compaction(RangeId(9)).is_err());
}

/// The store's own clock: `write_next` numbers each batch after the last, snapshots at the
/// last sequence see every write that returned, and older snapshots do not.
#[test]
fn write_next_numbers_batches_on_the_stores_own_clock() {
    let kv = store(1 << 20);
    kv.create_range(RangeId(1), KeyRange::new("a", "z").unwrap())
        .unwrap();
    let put =
        |k: &'static str, v: &'static str| [OpRef::Put(Cf::Default, k.as_bytes(), v.as_bytes())];
    let (applied, first) = kv.write_next(&put("b", "1")).unwrap();
    assert_eq!((applied, first), (1, 1));
    let before = kv.snapshot(RangeId(1), kv.last_sequence()).unwrap();
    let (_, second) = kv
        .write_next(&[
            OpRef::Put(Cf::Default, b"b", b"2"),
            OpRef::Delete(Cf::Default, b"c"),
        ])
        .unwrap();
    assert_eq!(second, 3, "one sequence number per operation");
    assert_eq!(kv.last_sequence(), 3);
    let after = kv.snapshot(RangeId(1), kv.last_sequence()).unwrap();
    assert_eq!(before.get(Cf::Default, b"b"), Some(b"1".to_vec()));
    assert_eq!(after.get(Cf::Default, b"b"), Some(b"2".to_vec()));
    assert!(matches!(kv.write_next(&[]), Err(MemError::EmptyBatch)));
    // A caller-numbered write must still come after the clock.
    assert!(matches!(
        kv.write(WriteBatch::new().put(Cf::Default, "d", "x"), 2),
        Err(MemError::SequenceOutOfOrder { .. })
    ));
}

/// Writers on two ranges in parallel (each range's writes wait only for that range's
/// lock), compactions beside them, and readers at the last sequence: every snapshot sees
/// each batch whole or not at all, and never loses a batch it saw before.
#[test]
fn parallel_writers_on_two_ranges_keep_batches_whole() {
    const BATCHES: u64 = 20_000;
    let kv = store(1 << 30);
    kv.create_range(RangeId(1), KeyRange::new("a", "m").unwrap())
        .unwrap();
    kv.create_range(RangeId(2), KeyRange::new("m", "z").unwrap())
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = [("b", "c"), ("n", "o")]
            .into_iter()
            .map(|(x, y)| {
                let kv = &kv;
                s.spawn(move || {
                    for i in 1..=BATCHES {
                        let v = i.to_be_bytes();
                        kv.write_next(&[
                            OpRef::Put(Cf::Default, x.as_bytes(), &v),
                            OpRef::Put(Cf::Default, y.as_bytes(), &v),
                        ])
                        .unwrap();
                    }
                })
            })
            .collect();
        for (id, x, y) in [(1, "b", "c"), (2, "n", "o")] {
            let (kv, done) = (&kv, &done);
            s.spawn(move || {
                let mut seen = 0u64;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let Ok(snap) = kv.snapshot(RangeId(id), kv.last_sequence()) else {
                        continue; // a compaction raced the sequence: take a newer one
                    };
                    let read = |k: &str| {
                        snap.get(Cf::Default, k.as_bytes())
                            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()))
                    };
                    let (a, b) = (read(x), read(y));
                    assert_eq!(a, b, "range {id}: a batch seen in part");
                    assert!(a >= seen, "range {id}: batch {seen} seen, then {a}");
                    seen = a;
                }
            });
        }
        {
            let (kv, done) = (&kv, &done);
            s.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    for id in [1, 2] {
                        kv.compact(RangeId(id), None).unwrap();
                    }
                }
            });
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let last = kv.last_sequence();
    assert_eq!(
        last,
        2 * 2 * BATCHES,
        "every operation took one sequence number"
    );
    for (id, key) in [(1, "b"), (2, "o")] {
        let snap = kv.snapshot(RangeId(id), last).unwrap();
        assert_eq!(
            snap.get(Cf::Default, key.as_bytes()),
            Some(BATCHES.to_be_bytes().to_vec())
        );
    }
}

/// A snapshot below a range's load would see the range without the loaded entries: it is
/// refused, and one at the load's sequence sees them.
#[test]
fn a_snapshot_below_a_load_is_refused() {
    let kv = store(1 << 20);
    kv.create_range(RangeId(1), KeyRange::new("a", "z").unwrap())
        .unwrap();
    kv.load(
        RangeId(1),
        Cf::Default,
        vec![(b"k".to_vec(), b"v".to_vec())],
        10,
    )
    .unwrap();
    assert!(matches!(
        kv.snapshot(RangeId(1), 9),
        Err(MemError::SnapshotTooOld {
            requested: 9,
            compacted: 10,
            ..
        })
    ));
    let at_load = kv.snapshot(RangeId(1), 10).unwrap();
    assert_eq!(at_load.get(Cf::Default, b"k"), Some(b"v".to_vec()));
}

/// A load that began on a range keeps going when the range splits: a loader made from its
/// target after the split still copies the range's keys, and each run goes to the
/// children, each reading its own keys of it — whether it was installed before the split
/// (the children share it) or after (the children get it then), and even when a child
/// has split again or has a run of its own by then. A child dropped meanwhile is passed
/// over; a load whose range was dropped installs nothing and says so. A run built and
/// not installed holds its memory until it is installed or dropped.
#[test]
fn a_load_follows_its_range_through_splits() {
    let kv = store(1 << 20);
    let target = kv.create_range(RangeId(1), bounds("a", "z")).unwrap();
    let load = |cf: Cf, entries: &[(&[u8], &[u8])]| {
        let mut loader = kv.loader_for(&target, cf, 5);
        for (k, v) in entries {
            loader.push(k, v).unwrap();
        }
        loader.built().unwrap()
    };
    kv.install_loaded([load(Cf::Lock, &[(b"c", b"lock"), (b"p", b"lock")])])
        .unwrap();
    let write = load(Cf::Write, &[(b"b", b"1"), (b"m", b"2"), (b"q", b"3")]);
    kv.split_range(
        RangeId(1),
        &[
            (RangeId(2), bounds("a", "k")),
            (RangeId(3), bounds("k", "z")),
        ],
    )
    .unwrap();
    // Child 3 writes and compacts before the run arrives: the run merges with its own.
    kv.write(WriteBatch::new().put(Cf::Write, "r", "4"), 6)
        .unwrap();
    kv.compact(RangeId(3), None).unwrap();
    kv.split_range(
        RangeId(3),
        &[
            (RangeId(4), bounds("k", "o")),
            (RangeId(5), bounds("o", "z")),
        ],
    )
    .unwrap();
    let default = load(Cf::Default, &[(b"d", b"x"), (b"s", b"y")]);
    let used = kv.memory_used();
    let mut waiting = kv.loader_for(&target, Cf::Default, 5);
    waiting.push(b"e", b"z").unwrap();
    let built = waiting.built().unwrap();
    assert!(kv.memory_used() > used);
    drop(built);
    assert_eq!(kv.memory_used(), used);
    kv.install_loaded([write, default]).unwrap();
    let read = |id: u64, keys: KeyRange| {
        let snapshot = kv.snapshot(RangeId(id), 6).unwrap();
        let cfs = [Cf::Default, Cf::Lock, Cf::Write];
        cfs.map(|cf| scan_forward(&snapshot, cf, keys.clone()))
    };
    let pairs = |items: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        let pair = |(k, v): &(&str, &str)| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        items.iter().map(pair).collect()
    };
    assert_eq!(
        read(2, bounds("a", "k")),
        [
            pairs(&[("d", "x")]),
            pairs(&[("c", "lock")]),
            pairs(&[("b", "1")])
        ]
    );
    assert_eq!(
        read(4, bounds("k", "o")),
        [pairs(&[]), pairs(&[]), pairs(&[("m", "2")])]
    );
    assert_eq!(
        read(5, bounds("o", "z")),
        [
            pairs(&[("s", "y")]),
            pairs(&[("p", "lock")]),
            pairs(&[("q", "3"), ("r", "4")])
        ]
    );
    // Below the load, every piece refuses a snapshot: it would miss the loaded keys.
    for id in [2, 4, 5] {
        assert!(matches!(
            kv.snapshot(RangeId(id), 4),
            Err(MemError::SnapshotTooOld { .. })
        ));
    }

    // A piece dropped meanwhile is passed over; the others get the run.
    let late = load(Cf::Lock, &[(b"f", b"l2"), (b"t", b"l2")]);
    let _gone = kv.drop_range(RangeId(5)).unwrap();
    kv.install_loaded([late]).unwrap();
    let lock = |id: u64, key: &[u8]| kv.snapshot(RangeId(id), 6).unwrap().get(Cf::Lock, key);
    assert_eq!(lock(2, b"f"), Some(b"l2".to_vec()));

    // A load whose own range was dropped fails.
    kv.create_range(RangeId(9), bounds("z", "zz")).unwrap();
    let mut lost = kv.loader(RangeId(9), Cf::Write, 7).unwrap();
    lost.push(b"z1", b"9").unwrap();
    let _gone = kv.drop_range(RangeId(9)).unwrap();
    assert_eq!(lost.finish(), Err(MemError::NoSuchRange(RangeId(9))));
}

/// A deletion written while a load copies (above the load's sequence) survives a
/// compaction that runs before the load's run arrives: the run's older entry of the key
/// must stay hidden under it.
#[test]
fn a_deletion_during_a_load_survives_a_compaction_before_the_install() {
    let kv = store(1 << 20);
    let target = kv.create_range(RangeId(1), bounds("a", "z")).unwrap();
    let mut loader = kv.loader_for(&target, Cf::Lock, 5);
    loader.push(b"k", b"lock").unwrap();
    let lock = loader.built().unwrap();
    let mut batch = WriteBatch::new();
    batch.delete(Cf::Lock, "k");
    kv.write(&batch, 7).unwrap();
    kv.compact(RangeId(1), None).unwrap();
    kv.install_loaded([lock]).unwrap();
    assert_eq!(
        kv.snapshot(RangeId(1), 7).unwrap().get(Cf::Lock, b"k"),
        None
    );
    // Once no load is pending, a compaction drops the deletion and what it hides.
    drop(target);
    kv.compact(RangeId(1), None).unwrap();
    let snapshot = kv.snapshot(RangeId(1), 8).unwrap();
    assert_eq!(snapshot.get(Cf::Lock, b"k"), None);
    assert_eq!(
        scan_forward(&snapshot, Cf::Lock, bounds("a", "z")),
        Vec::new()
    );
}

/// A loader told the range's size ([`Loader::expecting`]) makes its room with the first
/// entry; whatever the hint (none, about right, far too small, absurd), the run reads the
/// same and holds the same memory once built (unused room is given back), and an absurd
/// hint is bounded by the memory the store may still take instead of failing the load.
#[test]
fn a_size_hint_changes_neither_the_run_nor_its_memory() {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..5_000u32)
        .map(|i| {
            (
                format!("k{i:06}").into_bytes(),
                vec![b'v'; (i % 50) as usize],
            )
        })
        .collect();
    let bytes: u64 = entries
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum();
    let load = |hint: u64| {
        let kv = store(4 << 20);
        let target = kv.create_range(RangeId(1), bounds("a", "z")).unwrap();
        let mut loader = kv.loader_for(&target, Cf::Write, 5).expecting(hint);
        for (k, v) in &entries {
            loader.push(k, v).unwrap();
        }
        kv.install_loaded([loader.built().unwrap()]).unwrap();
        let read = scan_forward(
            &kv.snapshot(RangeId(1), 6).unwrap(),
            Cf::Write,
            bounds("a", "z"),
        );
        (read, kv.memory_used())
    };
    let (read, memory) = load(0);
    assert_eq!(read, entries);
    for hint in [bytes, bytes * 3, bytes / 10, u64::MAX] {
        assert_eq!(load(hint), (entries.clone(), memory), "hint {hint}");
    }
}

/// A large range dropped leaves its runs' arrays as spare memory, outside the usage; a
/// load of the same size fills them (and reads only its own entries), and arrays no load
/// takes are freed after ten ticks ([`MemKv::age_spares`]).
#[test]
fn a_load_after_an_eviction_fills_the_arrays_it_left() {
    let entries = |value: u8| -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..20_000u32)
            .map(|i| (format!("k{i:06}").into_bytes(), vec![value; 100]))
            .collect()
    };
    let kv = store(64 << 20);
    let load = |entries: &[(Vec<u8>, Vec<u8>)]| {
        let target = kv.create_range(RangeId(1), bounds("a", "z")).unwrap();
        let mut loader = kv.loader_for(&target, Cf::Write, 5).expecting(2_200_000);
        for (k, v) in entries {
            loader.push(k, v).unwrap();
        }
        kv.install_loaded([loader.built().unwrap()]).unwrap();
        let snapshot = kv.snapshot(RangeId(1), 6).unwrap();
        scan_forward(&snapshot, Cf::Write, bounds("a", "z"))
    };
    assert_eq!(load(&entries(b'a')), entries(b'a'));
    let used = kv.memory_used();
    drop(kv.drop_range(RangeId(1)).unwrap());
    assert_eq!(kv.memory_used(), 0);
    assert!(
        kv.spare_bytes() >= used - 4096,
        "{} of {used}",
        kv.spare_bytes()
    );
    assert_eq!(load(&entries(b'b')), entries(b'b'));
    assert_eq!((kv.spare_bytes(), kv.memory_used()), (0, used));
    drop(kv.drop_range(RangeId(1)).unwrap());
    let spare = kv.spare_bytes();
    assert!(spare > 0);
    let freed: Vec<u64> = (0..10).map(|_| kv.age_spares()).collect();
    assert_eq!(freed, [vec![0; 9], vec![spare]].concat());
    assert_eq!(kv.spare_bytes(), 0);
}

/// A compaction a piece at a time cuts its pieces where the entries are: 10,000 new keys
/// written past every key of the run still come in pieces of about the size asked for
/// (here 2,048 entries: at least four pieces), not in one piece past the run's last key;
/// the runs the pieces build read as the writes do.
#[test]
fn pieces_follow_the_entries_wherever_they_lie() {
    let kv = store(1 << 30);
    let whole = KeyRange::with_end(b"a".to_vec(), Some(b"z".to_vec())).unwrap();
    let target = kv.create_range(RangeId(1), whole.clone()).unwrap();
    let mut loader = kv.loader_for(&target, Cf::Write, 1);
    for i in 0..1000 {
        loader.push(format!("b{i:05}").as_bytes(), b"old").unwrap();
    }
    kv.install_loaded([loader.built().unwrap()]).unwrap();
    drop(target);
    let mut seq = 1;
    for chunk in 0..100 {
        let mut batch = WriteBatch::new();
        for i in 0..100 {
            batch.put(
                Cf::Write,
                format!("y{:05}", chunk * 100 + i).into_bytes(),
                b"new".to_vec(),
            );
        }
        kv.write(&batch, seq + 1).unwrap();
        seq += batch.len() as u64;
    }
    let mut job = kv.compaction(RangeId(1)).unwrap();
    let mut steps = 0;
    let stats = loop {
        steps += 1;
        if let Some(stats) = kv.compaction_step(&mut job, 2048).unwrap() {
            break stats;
        }
    };
    assert!(stats.installed);
    // Two steps for the empty column families, and the write column family's pieces.
    assert!(steps >= 2 + 4, "{steps} steps");
    let snapshot = kv.snapshot(RangeId(1), seq).unwrap();
    assert_eq!(
        snapshot.get(Cf::Write, b"b00042").as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(
        snapshot.get(Cf::Write, b"y09999").as_deref(),
        Some(&b"new"[..])
    );
    let all = scan_forward(&snapshot, Cf::Write, whole);
    assert_eq!(all.len(), 11_000);
}

/// A compaction is claimed once until it ends: the first claim of a range whose
/// memtables have grown is granted and later ones are not while it is under way (between
/// its pieces too); `compact_some` ends it (the runs installed, reads unchanged), and the
/// next growth is claimed again, below `set_compaction_min`'s threshold. A range dropped
/// while claimed ends its claim with `NoSuchRange`.
#[test]
fn a_compaction_is_claimed_once_until_it_ends() {
    let kv = store(1 << 30);
    let bounds = KeyRange::with_end(b"a".to_vec(), Some(b"z".to_vec())).unwrap();
    kv.create_range(RangeId(1), bounds.clone()).unwrap();
    kv.set_compaction_min(100);
    let mut seq = 0;
    let mut put = |kv: &MemKv, from: usize, to: usize| {
        for i in from..to {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Write, format!("k{i:08}").into_bytes(), b"v".to_vec());
            seq += 1;
            kv.write(&batch, seq).unwrap();
        }
        seq
    };
    put(&kv, 0, 99);
    assert!(!kv.claim_compaction(RangeId(1)), "99 entries: not due");
    put(&kv, 99, 300);
    assert!(kv.claim_compaction(RangeId(1)));
    assert!(!kv.claim_compaction(RangeId(1)), "claimed already");
    let mut steps = 1;
    while kv.compact_some(RangeId(1), 16).unwrap().is_none() {
        assert!(!kv.claim_compaction(RangeId(1)), "under way");
        steps += 1;
    }
    assert!(steps > 3, "{steps} steps of 16 entries for 300");
    let at = put(&kv, 300, 310);
    let snapshot = kv.snapshot(RangeId(1), at).unwrap();
    assert_eq!(
        scan_forward(&snapshot, Cf::Write, bounds.clone()).len(),
        310
    );
    put(&kv, 310, 449);
    assert!(!kv.claim_compaction(RangeId(1)), "149 new: not due");
    put(&kv, 449, 450);
    assert!(
        kv.claim_compaction(RangeId(1)),
        "due again: 150 new, half of 300"
    );
    drop(kv.drop_range(RangeId(1)).unwrap());
    assert!(matches!(
        kv.compact_some(RangeId(1), usize::MAX),
        Err(MemError::NoSuchRange(_))
    ));
    kv.create_range(RangeId(1), bounds).unwrap();
    put(&kv, 450, 550);
    assert!(
        kv.claim_compaction(RangeId(1)),
        "the claim ended with the range"
    );
    assert!(kv.compact_some(RangeId(1), usize::MAX).unwrap().is_some());
}
