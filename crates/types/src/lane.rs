//! [`lane`]: a number per thread, taken in turn, for structures that give each thread a
//! shard of its own.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

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
