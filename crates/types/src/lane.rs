//! [`lane`]: a number per thread, taken in turn, for structures that give each thread a
//! shard of its own; [`LaneArc`]: an `Arc` whose clones count per lane.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

thread_local! {
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

/// This thread's lane: a number taken in turn the first time the thread asks, and kept.
///
/// Structures that readers on several threads update (counters, registration records)
/// keep one shard per lane modulo their shard count, each on cache lines of its own: the
/// threads running at one time, taken in turn, each write a shard no other writes, and
/// never move one cache line between cores. A lane changes no answer, only which shard
/// holds a thread's share of it.
///
/// ```
/// let mine = ime_types::lane();
/// assert_eq!(ime_types::lane(), mine);
/// let other = std::thread::spawn(ime_types::lane).join().unwrap();
/// assert_ne!(other, mine);
/// ```
#[inline]
pub fn lane() -> usize {
    LANE.with(|lane| {
        lane.get().unwrap_or_else(|| {
            let taken = NEXT_LANE.fetch_add(1, Ordering::Relaxed);
            lane.set(Some(taken));
            taken
        })
    })
}

/// Lanes a [`LaneArc`] keeps a handle for; threads of further lanes share them, modulo.
const LANE_HANDLES: usize = 4;

/// A handle's allocation, alone on its cache lines (two, for the adjacent-line
/// prefetcher): two handles' counts never share a line.
#[repr(align(128))]
#[derive(Debug)]
struct Padded<T>(T);

/// An `Arc<T>` that many reader threads clone at once, whose clones do not write one
/// shared line.
///
/// Cloning an `Arc` adds to its count and dropping the clone takes from it: two threads
/// that clone and drop the same `Arc` on every read move its count's cache line from core
/// to core each time, which costs more than much of the rest of a short read (a cached
/// point get). A `LaneArc` keeps one handle per lane ([`lane`], modulo a few), each an
/// allocation of its own holding a clone of the `Arc`, made by the lane's first
/// [`LaneArc::handle`]; a handle's clones count on that handle. Threads of different
/// lanes then write different lines, and the value is dropped once the `LaneArc` and
/// every handle are gone.
///
/// ```
/// use std::sync::Arc;
/// use ime_types::LaneArc;
///
/// let shared = LaneArc::new(Arc::new(7));
/// let mine = shared.handle();
/// let theirs = std::thread::scope(|s| s.spawn(|| shared.handle()).join().unwrap());
/// assert_eq!((*mine, *theirs), (7, 7));
/// assert!(!mine.same_handle(&theirs)); // two lanes, two handles
/// assert!(mine.same_handle(&shared.handle())); // one lane, one handle
/// ```
#[derive(Debug)]
pub struct LaneArc<T> {
    value: Arc<T>,
    handles: [OnceLock<LaneRef<T>>; LANE_HANDLES],
}

impl<T> LaneArc<T> {
    /// Shares `value`; no handle is made before a lane asks for one.
    pub fn new(value: Arc<T>) -> Self {
        LaneArc {
            value,
            handles: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// A clone of this thread's lane's handle (made on the lane's first call).
    #[inline]
    pub fn handle(&self) -> LaneRef<T> {
        let slot = &self.handles[lane() % LANE_HANDLES];
        slot.get_or_init(|| LaneRef::new(Arc::clone(&self.value)))
            .clone()
    }

    /// The `Arc` shared (its clones count on the one shared line).
    pub fn arc(&self) -> &Arc<T> {
        &self.value
    }
}

impl<T> std::ops::Deref for LaneArc<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// A clone of a [`LaneArc`]'s value that counts on its lane's handle, or on a handle of
/// its own ([`LaneRef::new`]).
#[derive(Debug)]
pub struct LaneRef<T>(Arc<Padded<Arc<T>>>);

impl<T> LaneRef<T> {
    /// A handle of its own for `value`: for a value one thread reads, or a few times.
    pub fn new(value: Arc<T>) -> Self {
        LaneRef(Arc::new(Padded(value)))
    }

    /// The `Arc` it holds a clone of.
    pub fn arc(&self) -> &Arc<T> {
        &self.0.0
    }

    /// Whether the two count on the same handle.
    pub fn same_handle(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Clone for LaneRef<T> {
    fn clone(&self) -> Self {
        LaneRef(Arc::clone(&self.0))
    }
}

impl<T> std::ops::Deref for LaneRef<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value lives while the `LaneArc` or any handle does, and no longer; each lane's
    /// handle is made once and shared by that lane's clones.
    #[test]
    fn the_value_lives_as_long_as_the_last_handle() {
        let value = Arc::new(String::from("v"));
        let shared = LaneArc::new(Arc::clone(&value));
        assert_eq!(Arc::strong_count(&value), 2, "no handle before a lane asks");
        let (a, b) = (shared.handle(), shared.handle());
        assert!(a.same_handle(&b));
        assert_eq!(Arc::strong_count(&value), 3, "one handle for the lane");
        let other = std::thread::scope(|s| s.spawn(|| shared.handle()).join().unwrap());
        assert!(!other.same_handle(&a));
        assert_eq!(Arc::strong_count(&value), 4);
        assert!(Arc::ptr_eq(a.arc(), &value) && Arc::ptr_eq(shared.arc(), &value));
        drop(shared);
        assert_eq!((a.as_str(), other.as_str()), ("v", "v"));
        drop((a, b));
        assert_eq!(
            Arc::strong_count(&value),
            2,
            "the other lane's handle is left"
        );
        drop(other);
        assert_eq!(Arc::strong_count(&value), 1);
    }

    /// Handles of different lanes lie on different cache lines; a handle of its own is
    /// another.
    #[test]
    fn handles_of_different_lanes_share_no_line() {
        let shared = LaneArc::new(Arc::new(0u64));
        let mut handles = vec![shared.handle(), LaneRef::new(Arc::clone(shared.arc()))];
        std::thread::scope(|s| {
            for _ in 0..LANE_HANDLES {
                handles.push(s.spawn(|| shared.handle()).join().unwrap());
            }
        });
        // A handle's count lies at the start of its allocation, the value 128 bytes on.
        let line = |h: &LaneRef<u64>| Arc::as_ptr(&h.0) as usize / 128;
        for (i, x) in handles.iter().enumerate() {
            for y in &handles[i + 1..] {
                assert!(x.same_handle(y) || line(x) != line(y));
            }
        }
        assert!(!handles[0].same_handle(&handles[1]));
    }
}
