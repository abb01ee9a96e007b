//! `ime-stripes`: write stripes — writers of different keys run in parallel, and a reader
//! never waits for a writer.
//!
//! A writer changes two stores that readers must see in step (IME's disk and memory). Each
//! key (a region id) maps to one of [`STRIPES`] stripes. A write holds the mutexes of its
//! keys' stripes, so writes of one key are ordered; when readers may look at what it
//! changes, it first parks in each stripe the state just before it ([`View`]: what a
//! reader reads both stores at) and makes the stripe's version odd until both stores hold
//! the write. A reader reads the version around taking a fresh state: unchanged and even,
//! no write of the stripe overlapped it, so both stores agree for every key of the stripe;
//! otherwise it takes the parked state, which holds every write of the stripe that had
//! finished when that write began, and nothing of the write in flight.
//!
//! Taking a fresh state costs (IME: a RocksDB snapshot, which takes the database's
//! mutex), so the last fresh state is kept and handed to readers while nothing has
//! changed since it was taken: every change to the first store is announced with
//! [`Stripes::changed`] once it is in place, and a kept state taken before the latest
//! announcement is never handed out. A reader that begins after a change returned thus
//! reads it, as with a fresh state; [`Stripes::forget`] lets the kept state go (it pins
//! the store's old versions). The kept state serves every stripe, so it may have been
//! taken while a write of another stripe was between its two stores; that write
//! announces its change only once both hold it, before its stripes turn even again, so
//! a reader of its stripe never gets a state taken before that announcement.
//!
//! ```
//! use ime_stripes::{Stripes, View};
//! use std::sync::Arc;
//!
//! // The "stores": a number each side; a write adds one to both.
//! let stripes: Stripes<u64> = Stripes::new();
//! let mut write = stripes.begin_write([7].into_iter());
//! write.publish(View { disk: Arc::new(0), memory: 0 });
//! // Mid-write (disk already 1, memory still 0), a reader gets the parked state.
//! let view = stripes.view(7, true, || (1, 0));
//! assert_eq!((*view.disk, view.memory), (0, 0));
//! drop(write);
//! let view = stripes.view(7, true, || (1, 1));
//! assert_eq!((*view.disk, view.memory), (1, 1));
//! ```

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwapOption;

/// The number of stripes: keys share one when they are equal modulo it.
pub const STRIPES: usize = 64;

/// A state both stores agree on for a stripe's keys: the first store's snapshot and the
/// second's sequence number.
#[derive(Debug)]
pub struct View<S> {
    /// The first store's snapshot (IME: the disk's).
    pub disk: Arc<S>,
    /// The second store's sequence number (IME: the memory store's).
    pub memory: u64,
}

struct Stripe<S> {
    writer: Mutex<()>,
    /// Odd while a write that touches cached memory is between its two sides.
    version: AtomicU64,
    /// The state just before the write in flight began (none between writes).
    before: ArcSwapOption<View<S>>,
}

impl<S> Clone for View<S> {
    fn clone(&self) -> Self {
        View {
            disk: Arc::clone(&self.disk),
            memory: self.memory,
        }
    }
}

/// A fresh state kept for readers, and the count of changes it holds.
struct Kept<S> {
    changes: u64,
    view: View<S>,
}

/// The stripes of one pair of stores.
pub struct Stripes<S> {
    stripes: Vec<Stripe<S>>,
    /// Changes to the first store announced so far ([`Stripes::changed`]).
    changes: AtomicU64,
    /// The last fresh state, while no change has been announced since it was taken.
    kept: ArcSwapOption<Kept<S>>,
}

/// A write holding its stripes; dropping it ends the write.
#[must_use = "dropping the guard ends the write"]
pub struct WriteGuard<'a, S> {
    held: Vec<(&'a Stripe<S>, MutexGuard<'a, ()>)>,
    published: bool,
}

impl<S> Default for Stripes<S> {
    fn default() -> Self {
        Stripes::new()
    }
}

impl<S> Stripes<S> {
    /// Stripes with no write in flight.
    pub fn new() -> Self {
        Stripes {
            stripes: (0..STRIPES)
                .map(|_| Stripe {
                    writer: Mutex::new(()),
                    version: AtomicU64::new(0),
                    before: ArcSwapOption::empty(),
                })
                .collect(),
            changes: AtomicU64::new(0),
            kept: ArcSwapOption::empty(),
        }
    }

    /// A change is in place: states taken before it are no longer handed out. For a
    /// write that parked a state, call it once both stores hold the write, before its
    /// guard drops; for a change to the first store alone (a write to keys the second
    /// does not hold, an ingest), once it is in place. Either way, before the call that
    /// made the change returns.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// Lets the kept state go (it holds the first store's snapshot, and with it the
    /// versions that snapshot sees); the next reader takes a fresh one.
    pub fn forget(&self) {
        self.kept.store(None);
    }

    fn index(key: u64) -> usize {
        (key % STRIPES as u64) as usize
    }

    /// A write of `keys` begins: their stripes are held, in index order (so two writes
    /// never wait for each other in a cycle).
    pub fn begin_write(&self, keys: impl Iterator<Item = u64>) -> WriteGuard<'_, S> {
        let mut indexes: Vec<usize> = keys.map(Self::index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let held = indexes
            .into_iter()
            .map(|i| {
                let stripe = &self.stripes[i];
                let guard = stripe.writer.lock().unwrap_or_else(PoisonError::into_inner);
                (stripe, guard)
            })
            .collect();
        WriteGuard {
            held,
            published: false,
        }
    }

    /// A state both stores agree on for `key`: the kept state when `reuse` allows it and
    /// no change was announced since it was taken, else `fresh()` (the first store's
    /// snapshot and the second's latest sequence) — kept for the next readers — when no
    /// write of its stripe overlapped either; else the state the write in flight parked.
    /// Pass `reuse = false` when the second store refused the kept state (it moved on in a
    /// way that announces no change, such as a compaction). Takes no lock: a reader may
    /// hold locks a writer needs.
    pub fn view(&self, key: u64, reuse: bool, fresh: impl Fn() -> (S, u64)) -> View<S> {
        let stripe = &self.stripes[Self::index(key)];
        loop {
            let version = stripe.version.load(Ordering::SeqCst);
            if version.is_multiple_of(2) {
                let changes = self.changes.load(Ordering::SeqCst);
                let kept = self.kept.load();
                let kept = kept
                    .as_ref()
                    .filter(|kept| reuse && kept.changes == changes)
                    .map(|kept| kept.view.clone());
                let view = match kept {
                    Some(view) => view,
                    None => {
                        let (disk, memory) = fresh();
                        let disk = Arc::new(disk);
                        let view = View { disk, memory };
                        if self.changes.load(Ordering::SeqCst) == changes {
                            let view = view.clone();
                            self.kept.store(Some(Arc::new(Kept { changes, view })));
                        }
                        view
                    }
                };
                // Fresh or kept, the state counts only if no write of the stripe began
                // meanwhile: a kept state may have been taken during one (by a reader of
                // another stripe), which this version check is the one to catch.
                if stripe.version.load(Ordering::SeqCst) == version {
                    return view;
                }
            }
            // A write is in flight, or began since: it parked its state before making the
            // version odd, and lets it go only after making it even again.
            if let Some(parked) = stripe.before.load_full() {
                return View::clone(&parked);
            }
            // That write ended meanwhile: look again (never waiting on a writer's lock,
            // which may be waiting on the caller's).
            std::hint::spin_loop();
        }
    }
}

impl<S> WriteGuard<'_, S> {
    /// Readers may look at what the write changes: `before` (the state just before it)
    /// is parked in its stripes, and their versions turn odd until the write ends.
    pub fn publish(&mut self, before: View<S>) {
        let before = Arc::new(before);
        for (stripe, _) in &self.held {
            stripe.before.store(Some(Arc::clone(&before)));
            stripe.version.fetch_add(1, Ordering::SeqCst);
        }
        self.published = true;
    }
}

impl<S> Drop for WriteGuard<'_, S> {
    fn drop(&mut self) {
        if self.published {
            for (stripe, _) in &self.held {
                stripe.version.fetch_add(1, Ordering::SeqCst);
                // The parked snapshot is not kept past the write (it would pin old versions).
                stripe.before.store(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicBool;

    /// Two keys, each with a counter on disk and one in memory that a writer moves
    /// together (disk first); a reader must always see them equal for its key. The
    /// memory's "sequence" is both memory counters in one word (key `k` in bits
    /// `32k..32k+32`), as IME's memory sequence is one for the whole store.
    struct Stores {
        disk: [AtomicU64; 2],
        memory: AtomicU64,
        /// Writes ended (their guard dropped), by key.
        done: [AtomicU64; 2],
    }

    fn memory_of(sequence: u64, key: usize) -> u64 {
        (sequence >> (32 * key)) & 0xFFFF_FFFF
    }

    #[test]
    fn readers_always_see_both_stores_in_step() {
        const WRITES: u64 = 20_000;
        let stores = Stores {
            disk: [AtomicU64::new(0), AtomicU64::new(0)],
            memory: AtomicU64::new(0),
            done: [AtomicU64::new(0), AtomicU64::new(0)],
        };
        let stripes: Stripes<[u64; 2]> = Stripes::new();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            for key in 0..2u64 {
                let (stores, stripes) = (&stores, &stripes);
                s.spawn(move || {
                    for _ in 0..WRITES {
                        let k = key as usize;
                        let mut write = stripes.begin_write([key].into_iter());
                        let disk = [0, 1].map(|i| stores.disk[i].load(Ordering::SeqCst));
                        let memory = stores.memory.load(Ordering::SeqCst);
                        write.publish(View {
                            disk: Arc::new(disk),
                            memory,
                        });
                        stores.disk[k].fetch_add(1, Ordering::SeqCst);
                        std::hint::spin_loop();
                        stores.memory.fetch_add(1 << (32 * k), Ordering::SeqCst);
                        stripes.changed();
                        drop(write);
                        stores.done[k].fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            s.spawn(|| {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads < 1000 {
                    let key = reads % 2;
                    let k = key as usize;
                    // Writes that ended before the view is asked for must be in it,
                    // whether it is kept or fresh.
                    let ended = stores.done[k].load(Ordering::SeqCst);
                    let view = stripes.view(key, !reads.is_multiple_of(7), || {
                        let disk = [0, 1].map(|i| stores.disk[i].load(Ordering::SeqCst));
                        (disk, stores.memory.load(Ordering::SeqCst))
                    });
                    let memory = memory_of(view.memory, k);
                    assert_eq!(view.disk[k], memory, "key {key} out of step");
                    assert!(memory >= ended, "key {key}: a kept state missed a write");
                    reads += 1;
                }
            });
            // The writers end on their own; then the reader.
            while stores
                .done
                .iter()
                .any(|d| d.load(Ordering::SeqCst) < WRITES)
            {
                std::thread::yield_now();
            }
            done.store(true, Ordering::Release);
        });
    }

    #[test]
    fn a_kept_state_serves_until_a_change_is_announced() {
        let stripes: Stripes<u64> = Stripes::new();
        let taken = std::cell::Cell::new(0);
        let fresh = |disk: u64| {
            let taken = &taken;
            move || {
                taken.set(taken.get() + 1);
                (disk, disk)
            }
        };
        let first = stripes.view(1, true, fresh(1));
        // Kept for every key, whatever its stripe: no second fresh state.
        let again = stripes.view(2, true, fresh(9));
        assert!(Arc::ptr_eq(&first.disk, &again.disk));
        assert_eq!(taken.get(), 1);
        // Refused by the caller: fresh, and kept in its place.
        assert_eq!(*stripes.view(1, false, fresh(2)).disk, 2);
        assert_eq!(*stripes.view(3, true, fresh(9)).disk, 2);
        // A change announced: the kept state is not handed out again.
        stripes.changed();
        assert_eq!(*stripes.view(1, true, fresh(3)).disk, 3);
        assert_eq!(taken.get(), 3);
        // Forgotten: the next reader takes a fresh state.
        stripes.forget();
        assert_eq!(*stripes.view(1, true, fresh(4)).disk, 4);
        assert_eq!(taken.get(), 4);
    }

    #[test]
    fn a_state_kept_during_another_stripes_write_is_not_handed_to_that_stripe() {
        let stripes: Stripes<u64> = Stripes::new();
        // Key 2's write is between its stores (disk 1, memory 0) when a reader of key 1
        // takes a fresh state: it is kept.
        let mut write = stripes.begin_write([2].into_iter());
        write.publish(View {
            disk: Arc::new(0),
            memory: 0,
        });
        let other = stripes.view(1, true, || (1, 0));
        assert_eq!(*other.disk, 1);
        // A reader of key 2 mid-write gets the parked state, not the kept one.
        assert_eq!(*stripes.view(2, true, || (1, 0)).disk, 0);
        // The write ends, announcing its change first: the kept state is stale for all.
        stripes.changed();
        drop(write);
        let view = stripes.view(2, true, || (1, 1));
        assert_eq!((*view.disk, view.memory), (1, 1));
    }

    #[test]
    fn writes_of_different_stripes_do_not_wait_for_each_other() {
        let stripes: Stripes<()> = Stripes::new();
        let first = stripes.begin_write([1, 65].into_iter());
        // Key 2 is in another stripe: this does not block.
        let second = stripes.begin_write([2].into_iter());
        drop((first, second));
        // Keys 1 and 65 share a stripe: held once, not twice.
        let again = stripes.begin_write([65, 1, 1].into_iter());
        assert_eq!(again.held.len(), 1);
    }
}
