//! A shuttle model of how `ime-stripes` hands a reader a state both stores agree on, with
//! the fresh state kept for the next readers: many thousands of schedules (random, and
//! PCT, which seeks out rare orderings) of a writer of key A (both stores, under its
//! stripe), a writer of key B (the first store only, without its stripe: IME's region
//! with no memory), a thread letting idle states go, and two readers. Shuttle interleaves
//! sequentially consistently, which is what the protocol's `SeqCst` accesses promise.
//!
//! The protocol, as `lib.rs` runs it: a write parks the state before it (only if a reader
//! has looked at the stripe since the idle states were last let go, and tagged with the
//! version the write turns odd, after applying the writes queued before it), turns the
//! stripe's version odd, changes both stores and turns it even again. A write of a
//! stripe nobody looked at lately parks nothing and defers its second store's side: it
//! queues it and counts it while the version is odd; an applier (the thread letting
//! states go, or a reader) applies the queue and counts what it applied. A reader marks the stripe as read, then reads the
//! version; even, it reads the change token — what changed without the stripe: B's writes,
//! each counted once made (`Stripes::changed_outside`; A's writes hold the stripe and move
//! its version instead) — and takes the kept state if version and token are those it was
//! taken at; else, once every queued write is applied (it applies them itself, once; if
//! more are queued meanwhile, the first store alone), it takes a fresh state and, if the
//! version did not move meanwhile,
//! returns it — and keeps it if the state kept before was used. Otherwise it takes the
//! parked state if its tag is at least the first write that may overlap the look, else
//! the first store alone, as it is now. The model checks that A's two stores are in step
//! in every view that has both, and that
//! no read misses a write of A or B that ended before it began (B, which takes no stripe,
//! is read from the first store as it is now when the view is a parked state — the state
//! before a write of A may predate B's writes); five more models must be caught: one
//! drops the token from the check (only the version guards the kept state), one reads B
//! from a parked state, one takes a parked state whatever its tag, one reads the second
//! store without applying the queue, one parks a state without applying it first.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use shuttle::sync::atomic::AtomicU64;
use shuttle::sync::atomic::Ordering::SeqCst;
use shuttle::sync::{Arc, Mutex};
use shuttle::thread;

/// A view: the first store's A and B, and the second store's A (`None`: the first store
/// alone, a write in flight having parked nothing).
type View = (u64, u64, Option<u64>);

struct Kept {
    version: u64,
    token: u64,
    view: View,
    used: bool,
}

struct Model {
    writer: Mutex<()>,
    version: AtomicU64,
    /// 1 when a reader has looked since the idle states were let go.
    watched: AtomicU64,
    parked_for: AtomicU64,
    /// Stand for the `ArcSwapOption`s: each access is one atomic load or store.
    parked: Mutex<Option<View>>,
    kept: Mutex<Option<Kept>>,
    disk_a: AtomicU64,
    disk_b: AtomicU64,
    memory_a: AtomicU64,
    ended_a: AtomicU64,
    ended_b: AtomicU64,
    /// B's writes, counted once made: the token.
    outside: AtomicU64,
    /// A's writes queued for the second store and not yet taken by an applier.
    queue: Mutex<u64>,
    /// A's writes queued (counted under `queue`'s lock, while the version is odd), and
    /// of those the ones applied.
    deferred: AtomicU64,
    applied: AtomicU64,
    /// One applier at a time.
    applying: Mutex<()>,
    checks: Checks,
}

/// What the protocol checks; each `false` is a mutant the model must catch.
#[derive(Clone, Copy)]
struct Checks {
    token: bool,
    b_now_when_parked: bool,
    tag: bool,
    reader_applies: bool,
    writer_applies: bool,
}

const ALL: Checks = Checks {
    token: true,
    b_now_when_parked: true,
    tag: true,
    reader_applies: true,
    writer_applies: true,
};

impl Model {
    fn new(checks: Checks) -> Self {
        Model {
            writer: Mutex::new(()),
            version: AtomicU64::new(0),
            watched: AtomicU64::new(0),
            parked_for: AtomicU64::new(0),
            parked: Mutex::new(None),
            kept: Mutex::new(None),
            disk_a: AtomicU64::new(0),
            disk_b: AtomicU64::new(0),
            memory_a: AtomicU64::new(0),
            ended_a: AtomicU64::new(0),
            ended_b: AtomicU64::new(0),
            outside: AtomicU64::new(0),
            queue: Mutex::new(0),
            deferred: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            applying: Mutex::new(()),
            checks,
        }
    }

    /// Applies the writes queued so far, in one step (the memory store's batch).
    fn drain(&self) {
        if self.applied.load(SeqCst) == self.deferred.load(SeqCst) {
            return;
        }
        let _applying = self.applying.lock().unwrap();
        let taken = std::mem::take(&mut *self.queue.lock().unwrap());
        if taken > 0 {
            self.memory_a.fetch_add(taken, SeqCst);
            self.applied.fetch_add(taken, SeqCst);
        }
    }

    fn fresh(&self) -> View {
        let disk = (self.disk_a.load(SeqCst), self.disk_b.load(SeqCst));
        (disk.0, disk.1, Some(self.memory_a.load(SeqCst)))
    }

    fn token(&self) -> u64 {
        self.outside.load(SeqCst)
    }

    fn write_a(&self) {
        let held = self.writer.lock().unwrap();
        let watched = self.watched.load(SeqCst) == 1;
        if watched {
            if self.checks.writer_applies {
                self.drain();
            }
            *self.parked.lock().unwrap() = Some(self.fresh());
            self.parked_for.store(self.version.load(SeqCst) + 1, SeqCst);
        }
        self.version.fetch_add(1, SeqCst);
        self.disk_a.fetch_add(1, SeqCst);
        if watched {
            self.memory_a.fetch_add(1, SeqCst);
        } else {
            *self.queue.lock().unwrap() += 1;
            self.deferred.fetch_add(1, SeqCst);
        }
        self.version.fetch_add(1, SeqCst);
        drop(held);
        self.ended_a.fetch_add(1, SeqCst);
    }

    fn write_b(&self) {
        self.disk_b.fetch_add(1, SeqCst);
        self.outside.fetch_add(1, SeqCst);
        self.ended_b.fetch_add(1, SeqCst);
    }

    fn release_idle(&self) {
        self.watched.store(0, SeqCst);
        *self.kept.lock().unwrap() = None;
        if let Ok(_idle) = self.writer.try_lock() {
            *self.parked.lock().unwrap() = None;
        }
    }

    /// The view, and whether it is a parked state.
    fn view(&self) -> (View, bool) {
        self.watched.store(1, SeqCst);
        let mut helped = false;
        loop {
            let version = self.version.load(SeqCst);
            if version.is_multiple_of(2) {
                let now = self.token();
                let replace = {
                    let mut kept = self.kept.lock().unwrap();
                    if let Some(k) = kept.as_mut()
                        && k.version == version
                        && (k.token == now || !self.checks.token)
                    {
                        k.used = true;
                        return (k.view, false);
                    }
                    kept.as_ref().is_none_or(|k| k.used)
                };
                let waiting = self.applied.load(SeqCst) != self.deferred.load(SeqCst);
                if waiting && self.checks.reader_applies {
                    if !helped {
                        helped = true;
                        self.drain();
                        continue;
                    }
                    let (disk_a, disk_b, _) = self.fresh();
                    return ((disk_a, disk_b, None), false);
                }
                let view = self.fresh();
                if self.version.load(SeqCst) == version {
                    if replace {
                        let kept = Kept {
                            version,
                            token: now,
                            view,
                            used: false,
                        };
                        *self.kept.lock().unwrap() = Some(kept);
                    }
                    return (view, false);
                }
            }
            if !self.checks.tag || self.parked_for.load(SeqCst) >= version | 1 {
                if let Some(parked) = *self.parked.lock().unwrap() {
                    return (parked, true);
                }
                thread::yield_now();
                continue;
            }
            let (disk_a, disk_b, _) = self.fresh();
            return ((disk_a, disk_b, None), false);
        }
    }

    fn read_and_check(&self) {
        let ended = (self.ended_a.load(SeqCst), self.ended_b.load(SeqCst));
        let ((disk_a, disk_b, memory_a), parked) = self.view();
        if let Some(memory_a) = memory_a {
            assert_eq!(disk_a, memory_a, "A's two stores out of step");
        }
        assert!(
            disk_a >= ended.0,
            "a view missed a write of A that had ended"
        );
        // A parked state may predate B's writes (they take no stripe): a reader of B then
        // reads the first store as it is now, as IME's engine does for a region without
        // memory.
        let now = parked && self.checks.b_now_when_parked;
        let disk_b = if now {
            self.disk_b.load(SeqCst)
        } else {
            disk_b
        };
        assert!(
            disk_b >= ended.1,
            "a view missed a write of B that had ended"
        );
    }
}

/// Schedules tried per check.
const SCHEDULES: usize = 10_000;

fn model(checks: Checks) {
    let run = move || {
        let model = Arc::new(Model::new(checks));
        let work: [fn(&Model); 4] = [
            |m| {
                m.write_a();
                m.write_a();
            },
            |m| {
                m.write_b();
                m.write_b();
            },
            |m| {
                m.release_idle();
                m.drain();
                m.release_idle();
                m.drain();
            },
            |m| {
                m.read_and_check();
                m.read_and_check();
            },
        ];
        let threads = work.map(|work| {
            let model = Arc::clone(&model);
            thread::spawn(move || work(&model))
        });
        model.read_and_check();
        model.read_and_check();
        for thread in threads {
            thread.join().unwrap();
        }
    };
    shuttle::check_random(run, SCHEDULES);
    shuttle::check_pct(run, SCHEDULES, 3);
}

/// Every view holds A's two stores in step and every write that ended before the read.
#[test]
fn every_view_is_in_step_and_fresh() {
    model(ALL);
}

/// A kept state guarded by the version alone misses B's writes (they move no version):
/// the model finds such a schedule.
#[test]
fn a_kept_state_without_the_token_is_caught() {
    let token = false;
    let caught = std::panic::catch_unwind(|| model(Checks { token, ..ALL }));
    assert!(caught.is_err(), "the model missed the stale kept state");
}

/// A reader of B that reads it from a parked state misses B's writes since that state
/// was parked (IME's engine did so for a region without memory until 2026-12-01): the
/// model finds such a schedule.
#[test]
fn a_parked_state_read_for_b_is_caught() {
    let b_now_when_parked = false;
    let caught = std::panic::catch_unwind(|| {
        model(Checks {
            b_now_when_parked,
            ..ALL
        })
    });
    assert!(caught.is_err(), "the model missed the stale parked state");
}

/// A reader that takes whatever state is parked, whatever write parked it, may take one
/// from before a write of A that has ended since (a later write, with no reader looking
/// when it began, parked none): the model finds such a schedule.
#[test]
fn a_parked_state_taken_without_its_tag_is_caught() {
    let tag = false;
    let caught = std::panic::catch_unwind(|| model(Checks { tag, ..ALL }));
    assert!(caught.is_err(), "the model missed the stale parked state");
}

/// A reader that reads the second store while writes of its stripe wait in the queue
/// sees the first store ahead of it: the model finds such a schedule.
#[test]
fn a_reader_that_does_not_apply_the_queue_is_caught() {
    let reader_applies = false;
    let caught = std::panic::catch_unwind(|| {
        model(Checks {
            reader_applies,
            ..ALL
        })
    });
    assert!(caught.is_err(), "the model missed the unapplied queue");
}

/// A write that parks the state before it without applying the queue first parks a state
/// whose second store lacks the queued writes: the model finds such a schedule.
#[test]
fn a_state_parked_before_the_queue_is_applied_is_caught() {
    let writer_applies = false;
    let caught = std::panic::catch_unwind(|| {
        model(Checks {
            writer_applies,
            ..ALL
        })
    });
    assert!(
        caught.is_err(),
        "the model missed the parked state without the queue"
    );
}
