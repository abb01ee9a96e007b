//! `ime-stripes`: write stripes — writers of different keys run in parallel, and a reader
//! never waits for a writer.
//!
//! A writer changes two stores that readers must see in step (IME's disk and memory). Each
//! key (a region id) maps to one of [`STRIPES`] stripes. A write holds the mutexes of its
//! keys' stripes, so writes of one key are ordered; when readers may look at what it
//! changes, it makes the stripe's version odd until both stores hold the write — and if a
//! reader has looked at the stripe lately, it first parks there the state just before it
//! ([`View`]: what a reader reads both stores at). A reader reads the version around
//! taking a fresh state: unchanged and even, no write of the stripe overlapped it, so both
//! stores agree for every key of the stripe; otherwise it takes the parked state, which
//! holds every write of the stripe that had finished when that write began, and nothing
//! of the write in flight. A write that parked nothing (no reader had looked since
//! [`Stripes::release_idle`] last ran) leaves its readers the first store alone, as it is
//! now ([`View::memory`] is `None`): they never wait, and the writes of a stripe nobody
//! reads pay for no state (IME: a RocksDB snapshot taken and released per write).
//!
//! Such a write may also *defer* its second side ([`WriteGuard::defer`]): it changes the
//! first store, puts what the second needs in its stripe's queue (the caller's type,
//! [`Queue`]) and counts it, while the version is odd. Whoever comes first applies the
//! queue, in order ([`Stripes::drain`]): a background task, the next write that changes
//! the second store itself ([`WriteGuard::drain`], before it parks a state), or a reader,
//! which applies it before it reads the second store's sequence — a reader takes the
//! second store only when every write its stripe queued is applied (IME: the memory
//! inserts of writes nobody reads leave the apply thread).
//!
//! A fresh state is kept for the stripe's next readers: while the stripe's version and
//! the *change token* (the changes made without a stripe, [`Stripes::changed_outside`],
//! plus a number the caller makes for any other change a stripe's version does not
//! cover) are those it was taken at, nothing its keys read has changed since, and a
//! reader takes it instead of a fresh one (IME: no RocksDB snapshot per read while
//! nothing of the stripe's regions is written, however busy the other stripes are).
//!
//! ```
//! use ime_stripes::{Stripes, View};
//! use std::sync::Arc;
//!
//! // The "stores": a number each side; a write adds one to both.
//! let stripes: Stripes<u64> = Stripes::new();
//! // No reader has looked at key 7's stripe: the write parks nothing, and a reader
//! // mid-write (disk already 1, memory still 0) gets the disk alone, as it is now.
//! let mut write = stripes.begin_write([7].into_iter());
//! write.publish(|| unreachable!("nobody reads the stripe"));
//! let view = stripes.view(7, || 1, || (1, 0), |_| {});
//! assert_eq!((*view.disk, view.memory), (1, None));
//! drop(write);
//! // Since a reader looked, a write parks the state before it; readers mid-write get it.
//! let mut write = stripes.begin_write([7].into_iter());
//! write.publish(|| View::parked(Arc::new(1), 1));
//! let view = stripes.view(7, || 1, || (2, 1), |_| {});
//! assert_eq!((*view.disk, view.memory), (1, Some(1)));
//! drop(write);
//! let view = stripes.view(7, || 2, || (2, 2), |_| {});
//! assert_eq!((*view.disk, view.memory), (2, Some(2)));
//! // Nothing changed (the same token): the state just taken, not a fresh one.
//! let again = stripes.view(7, || 2, || unreachable!(), |_| {});
//! assert!(Arc::ptr_eq(view.disk.arc(), again.disk.arc()));
//!
//! // Deferring: key 9's stripe was never read, so a write may queue its second side
//! // (here, the amount to add); a reader applies the queue before it reads.
//! let stripes: Stripes<u64, Vec<u64>> = Stripes::new();
//! let memory = std::sync::atomic::AtomicU64::new(0);
//! let mut write = stripes.begin_write([9].into_iter());
//! assert!(write.may_defer());
//! write.publish(|| unreachable!("nobody reads the stripe"));
//! assert_eq!(write.defer(|queue| queue.push(1)), Some((9, 1))); // stripe 9, 1 waiting
//! drop(write);
//! let apply = |queue: &mut Vec<u64>| {
//!     memory.fetch_add(queue.iter().sum(), std::sync::atomic::Ordering::SeqCst);
//! };
//! let fresh = || (1, memory.load(std::sync::atomic::Ordering::SeqCst));
//! let view = stripes.view(9, || 0, fresh, apply);
//! assert_eq!((*view.disk, view.memory), (1, Some(1)));
//! ```

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use arc_swap::ArcSwapOption;
use ime_types::{LaneArc, LaneRef};
use smallvec::SmallVec;

/// The number of stripes: keys share one when they are equal modulo it.
pub const STRIPES: usize = 64;

/// A state both stores agree on for a stripe's keys: the first store's snapshot and the
/// second's sequence number.
#[derive(Debug)]
pub struct View<S> {
    /// The first store's snapshot (IME: the disk's). A kept state hands each reader its
    /// lane's handle of it ([`LaneArc`]): readers on different threads write no count in
    /// common.
    pub disk: LaneRef<S>,
    /// The second store's sequence number in step with `disk` (IME: the memory store's);
    /// `None` when a write of the stripe was in flight and had parked no state: `disk` is
    /// then the first store as the reader found it, and the second store must not be read
    /// with it.
    pub memory: Option<u64>,
    /// A state a write parked (what a writer publishes; what a reader gets while a write
    /// is in flight). It holds every write of its stripe that had ended when that write
    /// began — but not the first store's changes by writers that take no stripe since:
    /// a reader of such a key (IME: a region with no memory) must take the first store
    /// as it is now.
    pub parked: bool,
}

impl<S> View<S> {
    /// The first store alone, as a reader found it: the second must not be read with it.
    fn alone(disk: S) -> Self {
        View {
            disk: LaneRef::new(Arc::new(disk)),
            memory: None,
            parked: false,
        }
    }

    /// The state just before a write, as the writer publishes it.
    pub fn parked(disk: Arc<S>, memory: u64) -> Self {
        View {
            disk: LaneRef::new(disk),
            memory: Some(memory),
            parked: true,
        }
    }
}

/// A fresh state a reader took, with what it was taken at: the stripe's version and the
/// caller's change token.
struct Fresh<S> {
    version: u64,
    token: u64,
    /// The first store's snapshot, by lane.
    disk: LaneArc<S>,
    /// The second store's sequence number in step with it.
    memory: u64,
    /// Whether a reader has taken it since it was kept. A fresh state replaces a kept one
    /// only if that one was used: where changes come faster than reads, each kept state
    /// would go stale unused, and storing it (an `ArcSwap` store walks every reader
    /// thread's debt slots; the state it replaces drops its snapshot) would only slow the
    /// readers down. An unused one stays until [`Stripes::release_idle`] lets it go.
    used: AtomicBool,
}

struct Stripe<S, Q> {
    /// Its place among the stripes.
    index: usize,
    writer: Mutex<()>,
    /// Odd while a write that touches cached memory is between its two sides.
    version: AtomicU64,
    /// Whether a reader has looked at the stripe since [`Stripes::release_idle`] last ran:
    /// only then does a write park its state.
    watched: AtomicBool,
    /// The (odd) version of the write that parked the state in `before`, stored after it:
    /// a reader that finds it below the first write that may overlap its look knows the
    /// state is older than that write's, and does not take it.
    parked_for: AtomicU64,
    /// The state just before the last write that parked one began. Between writes it
    /// stays, unused (readers look at it only while a write is in flight), until the
    /// next write that parks replaces it or [`Stripes::release_idle`] lets it go: one
    /// store per write, not two (each store of an `ArcSwap` walks every thread's debt
    /// slots).
    before: ArcSwapOption<View<S>>,
    /// The last fresh state a reader took: the next readers take it while the version
    /// and the change token are still those it was taken at (until
    /// [`Stripes::release_idle`] lets it go).
    fresh: ArcSwapOption<Fresh<S>>,
    /// Writes that deferred their second side ([`WriteGuard::defer`]), counted under
    /// `queue`'s lock while the version is odd: it only moves with the version.
    deferred: AtomicU64,
    /// Of those, the ones applied ([`Stripes::drain`]), counted once applied.
    applied: AtomicU64,
    /// The deferred writes not yet taken for applying, in order.
    queue: Mutex<Q>,
    /// Held by whoever applies deferred writes (one at a time, so they are applied in
    /// order); holds the queue that takes the place of the one being applied, so that
    /// both keep their room.
    applying: Mutex<Q>,
}

/// What a stripe queues of the writes that defer their second side
/// ([`WriteGuard::defer`]): the caller's, emptied by [`Queue::clear`] once applied.
pub trait Queue: Default {
    /// Empties the queue once its writes are applied, keeping its room.
    fn clear(&mut self);
}

impl Queue for () {
    fn clear(&mut self) {}
}

impl<T> Queue for Vec<T> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// The stripes of one pair of stores; `Q` holds the writes that deferred their second
/// side ([`WriteGuard::defer`]).
pub struct Stripes<S, Q = ()> {
    stripes: Vec<Stripe<S, Q>>,
    /// Changes made without a stripe ([`Stripes::changed_outside`]): part of every kept
    /// state's change token.
    outside: AtomicU64,
    /// How many stripes a reader marked since [`Stripes::release_idle`] last ran (a hint:
    /// a mark racing with the reset may go uncounted until the next run).
    read_lately: AtomicU64,
    /// Writes holding stripes now.
    writing: AtomicU64,
    /// Whether an applier comes by itself now and then ([`Stripes::poll`]), so that a
    /// write that defers need not wake one ([`Stripes::wake_wanted`]).
    polled: AtomicBool,
}

/// A stripe a write holds, with its writer lock.
type Held<'a, S, Q> = (&'a Stripe<S, Q>, MutexGuard<'a, ()>);

/// A write holding its stripes; dropping it ends the write.
#[must_use = "dropping the guard ends the write"]
pub struct WriteGuard<'a, S, Q = ()> {
    /// A write of one or two regions (a merge) holds its stripes without allocating.
    held: SmallVec<[Held<'a, S, Q>; 2]>,
    /// Whether a reader had looked at one of its stripes lately when the write began:
    /// it then parks its state, and may not defer its second side.
    watched: bool,
    published: bool,
    /// The stripes' count of writes holding them, which this one leaves when it ends.
    writing: &'a AtomicU64,
}

impl<S, Q: Queue> Default for Stripes<S, Q> {
    fn default() -> Self {
        Stripes::new()
    }
}

impl<S, Q: Queue> Stripes<S, Q> {
    /// Stripes with no write in flight.
    pub fn new() -> Self {
        Stripes {
            stripes: (0..STRIPES)
                .map(|index| Stripe {
                    index,
                    writer: Mutex::new(()),
                    version: AtomicU64::new(0),
                    watched: AtomicBool::new(false),
                    parked_for: AtomicU64::new(0),
                    before: ArcSwapOption::empty(),
                    fresh: ArcSwapOption::empty(),
                    deferred: AtomicU64::new(0),
                    applied: AtomicU64::new(0),
                    queue: Mutex::new(Q::default()),
                    applying: Mutex::new(Q::default()),
                })
                .collect(),
            polled: AtomicBool::new(false),
            outside: AtomicU64::new(0),
            read_lately: AtomicU64::new(0),
            writing: AtomicU64::new(0),
        }
    }

    /// A change of the stores that held no stripe has been made (IME: a write of regions
    /// without memory, a disk change outside the write path): every kept state is stale
    /// from now on. Call it once the change is made.
    pub fn changed_outside(&self) {
        self.outside.fetch_add(1, Ordering::SeqCst);
    }

    fn index(key: u64) -> usize {
        (key % STRIPES as u64) as usize
    }

    /// Applies the writes stripe `index` (modulo [`STRIPES`]) has deferred, in order:
    /// `apply` gets them all at once and must apply them to the second store; returns
    /// how many there were. Writes deferred meanwhile wait for the next call.
    pub fn drain(&self, index: usize, mut apply: impl FnMut(&mut Q)) -> u64 {
        drain(&self.stripes[index % STRIPES], &mut apply)
    }

    /// [`Stripes::drain`], unless another caller is applying stripe `index`'s writes
    /// right now: then `None` at once, without waiting for it. For a writer that only
    /// wants its stripe's queue kept short: the applier at work takes the writes queued
    /// meanwhile on its next call, and waiting for it would stall the writer for the
    /// length of a whole apply, then have it apply the rest itself.
    pub fn try_drain(&self, index: usize, mut apply: impl FnMut(&mut Q)) -> Option<u64> {
        let stripe = &self.stripes[index % STRIPES];
        if nothing_waits(stripe) {
            return Some(0);
        }
        let spare = match stripe.applying.try_lock() {
            Ok(spare) => spare,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(drain_holding(stripe, spare, &mut apply))
    }

    /// [`Stripes::drain`] of every stripe.
    pub fn drain_all(&self, mut apply: impl FnMut(&mut Q)) -> u64 {
        (self.stripes.iter()).map(|s| drain(s, &mut apply)).sum()
    }

    /// Whether a write that leaves `waiting` deferred writes in its stripe should wake an
    /// applier (hand it the stripe): from `at` waiting on, unless an applier polls
    /// already ([`Stripes::poll`]). The first write to ask is told yes, and from then on
    /// the applier polls, so that a steady stream of writes wakes it once, not every `at`
    /// writes: on a virtual machine, waking a thread on another core costs the waker
    /// microseconds.
    pub fn wake_wanted(&self, waiting: u64, at: u64) -> bool {
        waiting >= at
            && !self.polled.load(Ordering::SeqCst)
            && !self.polled.swap(true, Ordering::SeqCst)
    }

    /// Whether the applier polls ([`Stripes::poll`]).
    pub fn polled(&self) -> bool {
        self.polled.load(Ordering::Relaxed)
    }

    /// The applier's round while it polls ([`Stripes::polled`], from the first
    /// [`Stripes::wake_wanted`] on): every stripe drained ([`Stripes::drain_all`]);
    /// returns how many writes it applied. After a round that found nothing it stops
    /// polling, and looks once more: a write that saw it polling (and woke nobody)
    /// counted its deferral before it looked, so either this second look sees that write
    /// (both in one total order) or the write saw the polling stop and woke the applier.
    pub fn poll(&self, mut apply: impl FnMut(&mut Q)) -> u64 {
        if !self.polled.load(Ordering::SeqCst) {
            return 0;
        }
        let found = self.drain_all(&mut apply);
        if found > 0 {
            return found;
        }
        self.polled.store(false, Ordering::SeqCst);
        let late = self.drain_all(&mut apply);
        if late > 0 {
            self.polled.store(true, Ordering::SeqCst); // writes keep coming
        }
        late
    }

    /// Whether a reader has looked at any stripe since [`Stripes::release_idle`] last ran
    /// (a hint, for scheduling: a look racing with that run may go unnoticed until the
    /// next).
    pub fn read_lately(&self) -> bool {
        self.read_lately.load(Ordering::Relaxed) > 0
    }

    /// A hint, for scheduling: the writes holding stripes now, plus one if a reader has
    /// looked at any stripe lately ([`Stripes::read_lately`]) — the foreground threads a
    /// background one would take its time from.
    pub fn busy(&self) -> u64 {
        self.writing.load(Ordering::Relaxed) + u64::from(self.read_lately())
    }

    /// A write of `keys` begins: their stripes are held, in index order (so two writes
    /// never wait for each other in a cycle).
    pub fn begin_write(&self, keys: impl Iterator<Item = u64>) -> WriteGuard<'_, S, Q> {
        // Pushed one by one: a write holds one stripe or two, and `collect` on a `SmallVec`
        // costs more than the lock itself for so few.
        let mut indexes: SmallVec<[usize; 2]> = SmallVec::new();
        for index in keys.map(Self::index) {
            if !indexes.contains(&index) {
                indexes.push(index);
            }
        }
        indexes.sort_unstable();
        let mut held: SmallVec<[_; 2]> = SmallVec::new();
        for stripe in indexes.into_iter().filter_map(|i| self.stripes.get(i)) {
            let guard = stripe.writer.lock().unwrap_or_else(PoisonError::into_inner);
            held.push((stripe, guard));
        }
        let watched = (held.iter()).any(|(stripe, _)| stripe.watched.load(Ordering::Relaxed));
        self.writing.fetch_add(1, Ordering::Relaxed);
        WriteGuard {
            held,
            watched,
            published: false,
            writing: &self.writing,
        }
    }

    /// A state both stores agree on for `key`: `fresh()` (the first store's snapshot and
    /// the second's latest sequence) when no write of its stripe overlapped taking it,
    /// else the state the write in flight parked — or, if it parked none (no reader had
    /// looked at the stripe lately), the first store alone, from `fresh()` taken now
    /// ([`View::memory`] `None`). Takes no lock: a reader may hold locks a writer needs.
    /// It marks the stripe as read: its writes park their states from now on, until
    /// [`Stripes::release_idle`] runs.
    ///
    /// `token()` must move (and never come back to a value it had) whenever the stores
    /// change in a way that neither the version of the stripe a write holds nor
    /// [`Stripes::changed_outside`] covers — for a key that only ever changes through
    /// writes that hold its stripe, nothing: a write of another stripe's keys changes
    /// nothing a reader of this one reads. A fresh state is kept, with the token read
    /// before it was taken, and the next readers take it instead of a fresh one while the
    /// stripe's version, the changes made outside the stripes and the token are
    /// unchanged: nothing this stripe's keys read was written since it was taken, so a
    /// fresh state would read the same. It replaces the state kept before only if a
    /// reader used that one.
    ///
    /// Writes of the stripe that deferred their second side are applied first, with
    /// `apply` (once: if more are deferred meanwhile, the view is the first store alone).
    pub fn view(
        &self,
        key: u64,
        token: impl Fn() -> u64,
        fresh: impl Fn() -> (S, u64),
        mut apply: impl FnMut(&mut Q),
    ) -> View<S> {
        self.look(key, token, fresh, Some(&mut apply))
    }

    /// [`Stripes::view`] for a caller that may not apply deferred writes (IME: one that
    /// holds a lock a failed apply needs): while any wait, the first store alone.
    pub fn view_without_applying(
        &self,
        key: u64,
        token: impl Fn() -> u64,
        fresh: impl Fn() -> (S, u64),
    ) -> View<S> {
        self.look(key, token, fresh, None)
    }

    fn look(
        &self,
        key: u64,
        token: impl Fn() -> u64,
        fresh: impl Fn() -> (S, u64),
        mut apply: Option<&mut dyn FnMut(&mut Q)>,
    ) -> View<S> {
        let stripe = &self.stripes[Self::index(key)];
        if !stripe.watched.load(Ordering::Relaxed) {
            stripe.watched.store(true, Ordering::Relaxed);
            self.read_lately.fetch_add(1, Ordering::Relaxed);
        }
        let mut helped = false;
        loop {
            let version = stripe.version.load(Ordering::SeqCst);
            if version.is_multiple_of(2) {
                // Both only grow, so their sum moves whenever either does.
                let now = token() + self.outside.load(Ordering::SeqCst);
                let kept = stripe.fresh.load();
                if let Some(kept) = kept.as_ref()
                    && kept.version == version
                    && kept.token == now
                {
                    if !kept.used.load(Ordering::Relaxed) {
                        kept.used.store(true, Ordering::Relaxed);
                    }
                    return View {
                        disk: kept.disk.handle(),
                        memory: Some(kept.memory),
                        parked: false,
                    };
                }
                let replace = kept.as_ref().is_none_or(|k| k.used.load(Ordering::Relaxed));
                drop(kept);
                // Every deferred write of the stripe ended before `version` was read (the
                // count moves only while the version is odd): all must be applied before
                // the second store's sequence is read, or it lacks some the first holds.
                let applied = stripe.applied.load(Ordering::SeqCst);
                if applied != stripe.deferred.load(Ordering::SeqCst) {
                    if let (false, Some(apply)) = (helped, apply.as_mut()) {
                        helped = true;
                        drain(stripe, apply);
                        continue;
                    }
                    // Behind again (writes keep deferring): the first store alone.
                    return View::alone(fresh().0);
                }
                let (disk, memory) = fresh();
                if stripe.version.load(Ordering::SeqCst) == version {
                    let disk = LaneArc::new(Arc::new(disk));
                    let view = View {
                        disk: disk.handle(),
                        memory: Some(memory),
                        parked: false,
                    };
                    if replace {
                        stripe.fresh.store(Some(Arc::new(Fresh {
                            version,
                            token: now,
                            disk,
                            memory,
                            used: AtomicBool::new(false),
                        })));
                    }
                    return view;
                }
            }
            // A write is in flight, or began since: the first one that may have is the
            // write that turned the version to `version | 1`. If it (or a later write)
            // parked its state, before making the version odd, the tag says so, and what
            // is parked is that state or a later one — each holds every write of the
            // stripe that ended before this call began.
            if stripe.parked_for.load(Ordering::SeqCst) >= version | 1 {
                if let Some(parked) = stripe.before.load_full() {
                    return View {
                        disk: parked.disk.clone(),
                        memory: parked.memory,
                        parked: true,
                    };
                }
                // That write ended meanwhile and its state was let go: look again (never
                // waiting on a writer's lock, which may be waiting on the caller's).
                std::hint::spin_loop();
                continue;
            }
            // It parked none (no reader had looked lately): the first store alone, as it
            // is now, which holds every write that ended before this call began.
            return View::alone(fresh().0);
        }
    }
}

/// [`Stripes::drain`] of one stripe.
fn drain<S, Q: Queue>(stripe: &Stripe<S, Q>, apply: &mut dyn FnMut(&mut Q)) -> u64 {
    if nothing_waits(stripe) {
        return 0;
    }
    let spare = stripe
        .applying
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    drain_holding(stripe, spare, apply)
}

/// Whether every write `stripe` deferred has been applied (read without its locks: a
/// write counted after this look is applied by a later call).
fn nothing_waits<S, Q>(stripe: &Stripe<S, Q>) -> bool {
    stripe.applied.load(Ordering::SeqCst) == stripe.deferred.load(Ordering::SeqCst)
}

/// [`drain`] with the stripe's applier lock held (`spare`).
fn drain_holding<S, Q: Queue>(
    stripe: &Stripe<S, Q>,
    mut spare: MutexGuard<'_, Q>,
    apply: &mut dyn FnMut(&mut Q),
) -> u64 {
    let count = {
        let mut queue = stripe.queue.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *queue, &mut *spare);
        // Under both locks: every write counted and not yet applied is in `spare`.
        stripe.deferred.load(Ordering::SeqCst) - stripe.applied.load(Ordering::SeqCst)
    };
    if count > 0 {
        apply(&mut spare);
        stripe.applied.fetch_add(count, Ordering::SeqCst);
    }
    spare.clear();
    count
}

impl<S, Q> Stripes<S, Q> {
    /// Lets go of the states parked by writes that have ended, and of the fresh states
    /// kept for readers (each holds the first store's snapshot, which may pin old
    /// versions there); a stripe with a write in flight keeps its parked state. Stripes
    /// nobody reads from now on stop parking: a write parks its state only if a reader
    /// has looked at its stripe since this last ran. Call it now and then, off the write
    /// path.
    pub fn release_idle(&self) {
        self.read_lately.store(0, Ordering::Relaxed);
        for stripe in &self.stripes {
            if stripe.watched.load(Ordering::Relaxed) {
                stripe.watched.store(false, Ordering::Relaxed);
            }
            if stripe.fresh.load().is_some() {
                drop(stripe.fresh.swap(None));
            }
            if stripe.before.load().is_none() {
                continue;
            }
            let writer = match stripe.writer.try_lock() {
                Ok(writer) => writer,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                // A write is in flight and needs its parked state; its successor or a
                // later call lets it go.
                Err(TryLockError::WouldBlock) => continue,
            };
            let parked = stripe.before.swap(None);
            drop(writer);
            drop(parked); // freed after the lock: no write waits for it
        }
    }
}

impl<S, Q: Queue> WriteGuard<'_, S, Q> {
    /// Whether the write may defer its second side ([`WriteGuard::defer`]): it holds one
    /// stripe, and no reader had looked at it lately when the write began.
    pub fn may_defer(&self) -> bool {
        !self.watched && self.held.len() == 1
    }

    /// Applies the writes its stripes deferred before it ([`Stripes::drain`]): a write
    /// that changes the second store itself does so first, to keep the order.
    pub fn drain(&self, mut apply: impl FnMut(&mut Q)) {
        for (stripe, _) in &self.held {
            drain(stripe, &mut apply);
        }
    }

    /// Readers may look at what the write changes: its stripes' versions turn odd until
    /// the write ends. If a reader had looked at one of them since
    /// [`Stripes::release_idle`] last ran when the write began, `before()` (the state
    /// just before the write, which must hold every deferred write of the stripes: call
    /// [`WriteGuard::drain`] first) is parked in each, in place of the last one;
    /// otherwise it is not called, and the readers that meet the write read the first
    /// store alone.
    pub fn publish(&mut self, before: impl FnOnce() -> View<S>) {
        let before = self.watched.then(|| Arc::new(before()));
        for (stripe, _) in &self.held {
            if let Some(before) = &before {
                stripe.before.store(Some(Arc::clone(before)));
                // The version only moves under the writer's lock, which this write holds.
                let odd = stripe.version.load(Ordering::SeqCst) + 1;
                stripe.parked_for.store(odd, Ordering::SeqCst);
            }
            stripe.version.fetch_add(1, Ordering::SeqCst);
        }
        self.published = true;
    }
}

impl<S, Q: Queue> WriteGuard<'_, S, Q> {
    /// The write's second side, deferred: `add` puts it in its stripe's queue, to be
    /// applied by [`Stripes::drain`] — by whoever comes first: a background task, the
    /// next write that changes the second store itself, or a reader, whose view applies
    /// them before it reads the second store's sequence. Returns the stripe's index and
    /// how many of its writes then wait, or `None` (nothing queued) unless
    /// [`WriteGuard::may_defer`] and [`WriteGuard::publish`] was called: the count must
    /// move with the version.
    pub fn defer(&self, add: impl FnOnce(&mut Q)) -> Option<(usize, u64)> {
        let [(stripe, _held)] = &self.held[..] else {
            return None;
        };
        if self.watched || !self.published {
            return None;
        }
        let mut queue = stripe.queue.lock().unwrap_or_else(PoisonError::into_inner);
        add(&mut queue);
        let deferred = stripe.deferred.fetch_add(1, Ordering::SeqCst) + 1;
        drop(queue);
        Some((
            stripe.index,
            deferred - stripe.applied.load(Ordering::SeqCst),
        ))
    }
}

impl<S, Q> Drop for WriteGuard<'_, S, Q> {
    fn drop(&mut self) {
        self.writing.fetch_sub(1, Ordering::Relaxed);
        if self.published {
            for (stripe, _) in &self.held {
                // The parked state stays until the next write or `release_idle`: readers
                // look at it only while the version is odd.
                stripe.version.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicBool;

    /// Two counters that a writer moves together (first one, then the other) and a reader
    /// must always see equal for its key (keys 0 and 1); key 64 lives on the first store
    /// only (IME: a region with no memory), written without its stripe, which it shares
    /// with key 0 (its counters are the third ones), each write counted as made outside
    /// the stripes. `ended` counts each key's writes that have ended.
    struct Stores {
        disk: [AtomicU64; 3],
        memory: [AtomicU64; 2],
        ended: [AtomicU64; 3],
    }

    const WRITES: u64 = 20_000;

    /// Readers see both stores in step, and never miss a write that ended before they
    /// began — while parked states and kept fresh ones are let go beside them, writes of
    /// the first store alone move the change token, and the other stripe's writes do not.
    /// A reader of key 64 given a parked state reads the first store as it is now, as
    /// IME's engine does for a region with no memory: the parked state may predate its
    /// writes.
    #[test]
    fn readers_always_see_both_stores_in_step() {
        let stores = Stores {
            disk: [0, 0, 0].map(AtomicU64::new),
            memory: [0, 0].map(AtomicU64::new),
            ended: [0, 0, 0].map(AtomicU64::new),
        };
        // The "snapshot" of the disk: its counters; the memory's "sequence": the counter
        // of the key read (a reader reads one key).
        // A deferred write queues its key: applying it moves that key's memory counter.
        let stripes: Stripes<[u64; 3], Vec<usize>> = Stripes::new();
        let done = AtomicBool::new(false);
        let disk = |stores: &Stores| [0, 1, 2].map(|i| stores.disk[i].load(Ordering::SeqCst));
        let apply = |queue: &mut Vec<usize>| {
            for &k in queue.iter() {
                stores.memory[k].fetch_add(1, Ordering::SeqCst);
            }
        };
        // Writers of keys 0 and 1 that have ended, having run both kinds of write.
        let finished = AtomicU64::new(0);
        std::thread::scope(|s| {
            for key in 0..2u64 {
                let (stores, stripes, finished) = (&stores, &stripes, &finished);
                s.spawn(move || {
                    // Which kind a write is depends on the reader's and the releaser's
                    // timing: a writer goes on past its count until it has run both
                    // (stripes read lately park, the others defer).
                    let (mut writes, mut deferred) = (0u64, 0u64);
                    while writes < WRITES || deferred == 0 || deferred == writes {
                        writes += 1;
                        let k = key as usize;
                        let mut write = stripes.begin_write([key].into_iter());
                        if write.may_defer() {
                            // Nobody read the stripe lately: memory's side is queued.
                            write.publish(|| unreachable!("parks only when read lately"));
                            stores.disk[k].fetch_add(1, Ordering::SeqCst);
                            assert!(write.defer(|queue| queue.push(k)).is_some());
                            deferred += 1;
                        } else {
                            write.drain(apply);
                            let memory = stores.memory[k].load(Ordering::SeqCst);
                            write.publish(|| View::parked(Arc::new(disk(stores)), memory));
                            stores.disk[k].fetch_add(1, Ordering::SeqCst);
                            std::hint::spin_loop();
                            stores.memory[k].fetch_add(1, Ordering::SeqCst);
                        }
                        drop(write);
                        stores.ended[k].fetch_add(1, Ordering::SeqCst);
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    stripes.drain_all(apply);
                    std::thread::yield_now();
                }
            });
            s.spawn(|| {
                for _ in 0..WRITES {
                    stores.disk[2].fetch_add(1, Ordering::SeqCst);
                    stripes.changed_outside();
                    stores.ended[2].fetch_add(1, Ordering::SeqCst);
                    std::thread::yield_now();
                }
            });
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    stripes.release_idle();
                    std::thread::yield_now();
                }
            });
            s.spawn(|| {
                // Nothing else changes the stores: the writes of keys 0 and 1 hold their
                // stripes, and key 64's are counted as made outside them. A kept state of
                // one stripe outlives the other stripe's writes.
                let token = || 0;
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads < 1000 {
                    let k = (reads % 3) as usize;
                    let key = [0, 1, 64][k];
                    let ended = stores.ended[k].load(Ordering::SeqCst);
                    // The second store's "sequence" is its counter of the stripe's key with
                    // memory (key 0 for stripe 0): one state serves every key of a stripe.
                    let fresh = || {
                        let memory = stores.memory[k % 2].load(Ordering::SeqCst);
                        (disk(&stores), memory)
                    };
                    let view = stripes.view(key, token, fresh, apply);
                    if let (true, Some(memory)) = (k < 2, view.memory) {
                        assert_eq!(view.disk[k], memory, "key {key} out of step");
                        assert!(memory >= ended, "key {key}: a stale state");
                    } else {
                        // Key 64, or the first store alone (a write that parked nothing).
                        let now = view.parked.then(|| disk(&stores)[k]);
                        let seen = now.unwrap_or(view.disk[k]);
                        assert!(seen >= ended, "key {key}: a stale state");
                    }
                    reads += 1;
                }
            });
            // The writers end on their own; then the reader.
            while finished.load(Ordering::SeqCst) < 2
                || stores.ended[2].load(Ordering::SeqCst) < WRITES
            {
                std::thread::yield_now();
            }
            done.store(true, Ordering::Release);
        });
        assert!(
            stores
                .ended
                .iter()
                .all(|e| e.load(Ordering::SeqCst) >= WRITES)
        );
    }

    /// A write's parked state stays after it (readers ignore it while the version is
    /// even) until the next write replaces it or `release_idle` lets it go; a stripe with
    /// a write in flight keeps its own.
    #[test]
    fn writes_in_flight_and_a_reader_lately_count_as_busy() {
        let stripes: Stripes<u64> = Stripes::new();
        assert!(!stripes.read_lately());
        stripes.view(5, || 0, || (0, 0), |_| {});
        assert!(stripes.read_lately());
        stripes.release_idle();
        assert!(!stripes.read_lately());
        let write = stripes.begin_write([5].into_iter());
        assert_eq!(stripes.busy(), 1, "one write holding a stripe");
        stripes.view(6, || 0, || (0, 0), |_| {});
        assert_eq!(stripes.busy(), 2, "and a reader lately");
        drop(write);
        assert_eq!(stripes.busy(), 1);
    }

    #[test]
    fn parked_states_are_let_go_when_idle() {
        let stripes: Stripes<u64> = Stripes::new();
        let parked = |key: usize| {
            stripes.stripes[key]
                .before
                .load()
                .as_ref()
                .and_then(|v| v.memory)
        };
        // Readers have looked at both stripes: writes park.
        stripes.view(1, || 0, || (0, 0), |_| {});
        stripes.view(2, || 0, || (0, 0), |_| {});
        let mut write = stripes.begin_write([1].into_iter());
        write.publish(|| View::parked(Arc::new(0), 7));
        drop(write);
        assert_eq!(parked(1), Some(7));
        // Even: readers take a fresh state, not the one parked.
        assert_eq!(stripes.view(1, || 1, || (1, 8), |_| {}).memory, Some(8));
        let mut write = stripes.begin_write([2].into_iter());
        write.publish(|| View::parked(Arc::new(0), 9));
        stripes.release_idle();
        assert_eq!(parked(1), None);
        assert_eq!(parked(2), Some(9), "held by the write in flight");
        assert_eq!(stripes.view(2, || 2, || (1, 10), |_| {}).memory, Some(9));
        drop(write);
        stripes.release_idle();
        assert_eq!(parked(2), None);
    }

    /// A write parks its state only if a reader has looked at its stripe since
    /// `release_idle` last ran; a reader that meets a write which parked none gets the
    /// first store alone, as it is now — never an older write's parked state.
    #[test]
    fn only_writes_of_stripes_read_lately_park() {
        let stripes: Stripes<u64> = Stripes::new();
        let parks = std::cell::Cell::new(0);
        let write = |memory: u64| {
            let mut write = stripes.begin_write([3].into_iter());
            write.publish(|| {
                parks.set(parks.get() + 1);
                View::parked(Arc::new(memory), memory)
            });
            write
        };
        // Nobody has read stripe 3: no state parked; a reader mid-write takes the disk
        // as it is now (here 5), alone.
        let first = write(1);
        assert_eq!(parks.get(), 0);
        let view = stripes.view(3, || 0, || (5, 1), |_| {});
        assert_eq!((*view.disk, view.memory, view.parked), (5, None, false));
        drop(first);
        // The reader looked: the next write parks, and a reader mid-write takes its state.
        let second = write(2);
        assert_eq!(parks.get(), 1);
        let view = stripes.view(3, || 0, || unreachable!("the parked state serves"), |_| {});
        assert_eq!((*view.disk, view.memory, view.parked), (2, Some(2), true));
        // Idle since: the stripe is no longer watched, but keeps the state of the write
        // in flight. The next write parks nothing, and its reader must not take the state
        // parked before `second`, which lacks `second`.
        stripes.release_idle();
        drop(second);
        let third = write(3);
        assert_eq!(parks.get(), 1);
        let view = stripes.view(3, || 0, || (7, 3), |_| {});
        assert_eq!((*view.disk, view.memory), (7, None));
        drop(third);
    }

    /// A fresh state is kept for the stripe's next readers while its version and the
    /// token are unchanged; a new token, a write of the stripe or `release_idle` makes the
    /// next reader take a fresh one, which is kept in turn only if the one before was
    /// used. A stripe keeps its own.
    #[test]
    fn a_fresh_state_is_kept_while_nothing_changes() {
        let stripes: Stripes<u64> = Stripes::new();
        let taken = &std::cell::Cell::new(0);
        let fresh = |memory: u64| {
            move || {
                taken.set(taken.get() + 1);
                (memory, memory)
            }
        };
        let first = stripes.view(1, || 5, fresh(1), |_| {});
        let again = stripes.view(1, || 5, fresh(2), |_| {});
        assert_eq!((again.memory, taken.get()), (Some(1), 1));
        assert!(Arc::ptr_eq(first.disk.arc(), again.disk.arc()));
        assert_eq!(
            stripes.view(2, || 5, fresh(3), |_| {}).memory,
            Some(3),
            "another stripe"
        );
        // The kept state was used: the next fresh one is kept instead.
        assert_eq!(
            stripes.view(1, || 6, fresh(4), |_| {}).memory,
            Some(4),
            "a new token"
        );
        let mut write = stripes.begin_write([1].into_iter());
        write.publish(|| View::parked(Arc::new(4), 4));
        drop(write);
        // The one kept at token 6 went stale unused: this one is not kept.
        assert_eq!(
            stripes.view(1, || 6, fresh(5), |_| {}).memory,
            Some(5),
            "a write since"
        );
        assert_eq!(
            stripes.view(1, || 6, fresh(6), |_| {}).memory,
            Some(6),
            "not kept"
        );
        stripes.release_idle();
        let after_idle = stripes.view(1, || 6, fresh(7), |_| {}).memory;
        assert_eq!(after_idle, Some(7), "let go when idle");
        assert_eq!(
            stripes.view(1, || 6, fresh(8), |_| {}).memory,
            Some(7),
            "kept again"
        );
        assert_eq!(taken.get(), 6);
    }

    /// A deferred write of key `key` (its stripe read by nobody), queued as `key`.
    fn defer_one(stripes: &Stripes<(), Vec<u64>>, key: u64) -> u64 {
        let mut write = stripes.begin_write([key].into_iter());
        write.publish(|| unreachable!("nobody reads"));
        let (_, waiting) = write.defer(|q| q.push(key)).unwrap();
        waiting
    }

    #[test]
    fn a_stream_of_deferred_writes_wakes_the_applier_once_and_it_polls_until_none_come() {
        let stripes: Stripes<(), Vec<u64>> = Stripes::new();
        let applied = std::cell::RefCell::new(Vec::new());
        let apply = |q: &mut Vec<u64>| applied.borrow_mut().extend(q.iter().copied());
        assert!(
            !stripes.wake_wanted(defer_one(&stripes, 1), 2),
            "below the threshold"
        );
        assert_eq!(stripes.poll(apply), 0, "not polling: nothing done");
        assert!(
            stripes.wake_wanted(defer_one(&stripes, 1), 2),
            "the first ask"
        );
        assert!(stripes.polled());
        assert!(
            !stripes.wake_wanted(defer_one(&stripes, 2), 1),
            "polled: no wake"
        );
        assert_eq!(stripes.poll(apply), 3, "every stripe drained");
        assert_eq!(*applied.borrow(), [1, 1, 2]);
        assert!(stripes.polled(), "it found writes: it comes again");
        assert_eq!(stripes.poll(apply), 0);
        assert!(!stripes.polled(), "a round with none: it stops");
        assert!(
            stripes.wake_wanted(defer_one(&stripes, 3), 1),
            "then a write wakes it"
        );
    }

    #[test]
    fn a_try_drain_gives_way_to_an_applier_at_work_and_loses_no_write() {
        let stripes: Stripes<(), Vec<u64>> = Stripes::new();
        let applied = std::cell::RefCell::new(Vec::new());
        let record = |q: &mut Vec<u64>| applied.borrow_mut().extend(q.iter().copied());
        assert_eq!(
            stripes.try_drain(1, record),
            Some(0),
            "free, and nothing waits"
        );
        defer_one(&stripes, 1);
        defer_one(&stripes, 1);
        // An applier at work on stripe 1 (this thread, inside its apply): a try gives way
        // at once, and what is queued meanwhile waits for the next call.
        let during = stripes.drain(1, |q| {
            record(q);
            let waiting = defer_one(&stripes, 1 + STRIPES as u64);
            assert_eq!(waiting, 3, "the two being applied count until they are");
            assert_eq!(stripes.try_drain(1, |_| unreachable!("held")), None);
            assert_eq!(
                stripes.try_drain(2, record),
                Some(0),
                "another stripe is free"
            );
        });
        assert_eq!(during, 2);
        assert_eq!(*applied.borrow(), [1, 1]);
        let after = stripes.try_drain(1 + STRIPES, record);
        assert_eq!(after, Some(1), "the same stripe, its index taken modulo");
        assert_eq!(*applied.borrow(), [1, 1, 1 + STRIPES as u64]);
        assert_eq!(stripes.drain(1, |_| unreachable!("none wait")), 0);
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
