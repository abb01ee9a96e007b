//! Eviction callbacks that fire exactly once, whatever path the eviction takes.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// How an eviction ended, as its callback is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EvictionEnd {
    /// The region's data was dropped and its metadata removed.
    Removed,
    /// The region was not cached: there was nothing to evict.
    NotCached,
    /// The callback was dropped before the eviction finished (the map or the engine went
    /// away first).
    Abandoned,
}

type CallbackFn = Box<dyn FnOnce(EvictionEnd) + Send + 'static>;

/// A function to run once an eviction has finished.
///
/// It fires exactly once: when [`EvictCallback::fire`] is called, or else when it is
/// dropped. The map decides the [`EvictionEnd`] it reports; a callback dropped before the
/// map has decided reports [`EvictionEnd::Abandoned`]. So a callback can never be lost,
/// whatever path the eviction takes (a lost callback once left a merged TiKV region
/// never reloading).
///
/// The function must not panic: it may run from a destructor.
pub struct EvictCallback {
    /// Only ever taken through `&mut self` (no locking): the mutex makes the callback
    /// `Sync` without asking the function to be, so a map holding callbacks can be
    /// shared with readers.
    func: Mutex<Option<CallbackFn>>,
    end: EvictionEnd,
}

impl EvictCallback {
    /// Wraps `func`, to be called with how the eviction ended.
    pub fn new(func: impl FnOnce(EvictionEnd) + Send + 'static) -> Self {
        EvictCallback {
            func: Mutex::new(Some(Box::new(func))),
            end: EvictionEnd::Abandoned,
        }
    }

    /// Runs the callback now with the end the map recorded ([`EvictionEnd::Abandoned`]
    /// if none).
    pub fn fire(self) {
        drop(self);
    }

    /// How the callback will report the eviction's end when it fires.
    pub fn end(&self) -> EvictionEnd {
        self.end
    }

    /// Records how the eviction ended; the callback fires with it.
    pub(crate) fn ended(mut self, end: EvictionEnd) -> Self {
        self.end = end;
        self
    }
}

impl Drop for EvictCallback {
    fn drop(&mut self) {
        let func = self.func.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(func) = func.take() {
            func(self.end);
        }
    }
}

impl fmt::Debug for EvictCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvictCallback")
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting() -> (Arc<AtomicUsize>, EvictCallback) {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        (
            count,
            EvictCallback::new(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn is_send_and_sync_for_any_send_function() {
        fn shared<T: Send + Sync>(_: &T) {}
        let not_sync = std::cell::Cell::new(1);
        let callback = EvictCallback::new(move |_| not_sync.set(2));
        shared(&callback);
        callback.fire();
    }

    #[test]
    fn fires_once_when_fired() {
        let (count, callback) = counting();
        callback.ended(EvictionEnd::Removed).fire();
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn fires_once_when_dropped_and_reports_abandoned() {
        let end = Arc::new(std::sync::OnceLock::new());
        let seen = Arc::clone(&end);
        drop(EvictCallback::new(move |how| {
            let _ = seen.set(how);
        }));
        assert_eq!(end.get(), Some(&EvictionEnd::Abandoned));
        let (count, callback) = counting();
        drop(callback);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
