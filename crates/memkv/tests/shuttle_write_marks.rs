//! A shuttle model of how `MemKv` keeps batches whole without a store-wide lock: many
//! thousands of schedules (random, and PCT, which seeks out rare orderings) of a writer on
//! one range, a writer on another, and a reader of the first taking a snapshot at the
//! last sequence number. Shuttle interleaves sequentially consistently, which is what the
//! protocol's `SeqCst` accesses promise.
//!
//! The protocol, as `store.rs` runs it: a write holds its range's lock, stores in the
//! range's `writing` mark a sequence number at or below its first (the last one taken,
//! plus one), takes its numbers from the shared counter, inserts its entries (published
//! with release stores, as the memtable's links are), and clears the mark. A snapshot at
//! `seq` reads the mark: above `seq`, the write in flight (if any) is above it and every
//! earlier one is in place; at or below, it waits on the range's lock. The model checks
//! that the reader sees a batch whole or not at all, and, in a second model, that
//! marking after taking the numbers (the wrong order) is caught.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use shuttle::sync::atomic::AtomicU64;
use shuttle::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use shuttle::sync::{Arc, Mutex};
use shuttle::thread;

const IDLE: u64 = u64::MAX;

/// One range: its writer lock, its mark, and two entry slots holding the sequence number
/// each entry was written at (0: not written).
struct Range {
    lock: Mutex<()>,
    writing: AtomicU64,
    entries: [AtomicU64; 2],
}

struct Store {
    last: AtomicU64,
    ranges: [Range; 2],
}

impl Store {
    fn new() -> Self {
        let range = || Range {
            lock: Mutex::new(()),
            writing: AtomicU64::new(IDLE),
            entries: [AtomicU64::new(0), AtomicU64::new(0)],
        };
        Store {
            last: AtomicU64::new(0),
            ranges: [range(), range()],
        }
    }

    /// A batch of two entries to range `r`; `mark_first` is the protocol's order.
    fn write(&self, r: usize, mark_first: bool) {
        let range = &self.ranges[r];
        let _held = range.lock.lock().unwrap();
        let floor = self.last.load(SeqCst) + 1;
        if mark_first {
            range.writing.store(floor, SeqCst);
        }
        let first = self.last.fetch_add(2, SeqCst) + 1;
        if !mark_first {
            range.writing.store(floor, SeqCst);
        }
        range.entries[0].store(first, Release);
        range.entries[1].store(first + 1, Release);
        range.writing.store(IDLE, SeqCst);
    }

    /// The entries of range `r` a snapshot at the last sequence number sees.
    fn read(&self, r: usize) -> [bool; 2] {
        let range = &self.ranges[r];
        let seq = self.last.load(SeqCst);
        let _wait = (range.writing.load(SeqCst) <= seq).then(|| range.lock.lock().unwrap());
        range.entries.each_ref().map(|e| {
            let at = e.load(Acquire);
            at != 0 && at <= seq
        })
    }
}

/// Schedules tried per check.
const SCHEDULES: usize = 20_000;

fn model(mark_first: bool) {
    let run = move || {
        let store = Arc::new(Store::new());
        let writers: Vec<_> = [0, 1]
            .into_iter()
            .map(|r| {
                let store = Arc::clone(&store);
                thread::spawn(move || store.write(r, mark_first))
            })
            .collect();
        let [a, b] = store.read(0);
        assert_eq!(a, b, "a snapshot saw part of a batch");
        for writer in writers {
            writer.join().unwrap();
        }
    };
    shuttle::check_random(run, SCHEDULES);
    shuttle::check_pct(run, SCHEDULES, 3);
}

/// The protocol keeps every batch whole in every schedule tried.
#[test]
fn a_snapshot_sees_a_batch_whole_or_not_at_all() {
    model(true);
}

/// Marking the range only after taking the numbers lets a reader at the new last
/// sequence in before the mark: the model finds such a schedule.
#[test]
fn marking_after_taking_the_numbers_is_caught() {
    let caught = std::panic::catch_unwind(|| model(false));
    assert!(caught.is_err(), "the model missed the wrong order");
}
