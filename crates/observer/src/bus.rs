//! [`EventBus`]: prioritized observers, per-region FIFO, a synchronous path and a bounded
//! queued path, with failures contained and overflow reported as gaps.

use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use ime_region::RegionId;
use serde::{Deserialize, Serialize};

use crate::{Delivery, DeliveryGap, EventKind, GapCause, RaftEvent, RaftObserver};

/// Sizes of the bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusConfig {
    /// Capacity of the queued path; an event that finds it full is reported as a gap.
    pub queue_capacity: usize,
    /// Number of per-region lock stripes (regions hash onto them).
    pub stripes: usize,
    /// No dispatcher thread: queued events wait until [`EventBus::dispatch_queued`]
    /// delivers them on the caller's thread (or a sync event for any region, or the bus's
    /// close, delivers every one before it). For deterministic simulation.
    #[serde(default)]
    pub manual: bool,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            queue_capacity: 1024,
            stripes: 64,
            manual: false,
        }
    }
}

/// A registration, to unregister with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObserverId(u64);

/// One observer's failure on one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObserverFailure {
    /// The observer's name.
    pub observer: String,
    /// The event's kind.
    pub kind: EventKind,
    /// The event's regions.
    pub regions: Vec<RegionId>,
    /// The error message, or the panic's.
    pub detail: String,
    /// True for a panic, false for an error.
    pub panicked: bool,
}

/// What one `publish` did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct PublishReport {
    /// The path the event took.
    pub delivery: Delivery,
    /// For a sync event: observers that failed on it.
    pub failures: Vec<ObserverFailure>,
    /// For a queued event: the queue was full, and every observer was told of the gap.
    pub lost: bool,
}

/// Counters for one registered observer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserverStats {
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: i32,
    /// Events it handled successfully.
    pub delivered: u64,
    /// Events it failed on (error or panic).
    pub failures: u64,
    /// Gaps it was told of.
    pub gaps: u64,
}

struct Registered {
    id: ObserverId,
    priority: i32,
    observer: Arc<dyn RaftObserver>,
    delivered: AtomicU64,
    failures: AtomicU64,
    gaps: AtomicU64,
}

struct Shared {
    observers: RwLock<Arc<Vec<Arc<Registered>>>>,
    stripes: Vec<Mutex<()>>,
    /// Queued events not yet delivered, per region: a sync event waits for its regions'.
    pending: Mutex<HashMap<RegionId, usize>>,
    drained: Condvar,
    next_id: AtomicU64,
    lost: AtomicU64,
}

/// The Raft-event bus.
///
/// Observers are called in priority order (highest first; ties in registration order).
/// Sync events are delivered on the publisher's thread; queued ones on the bus's one
/// dispatcher thread, which [`EventBus::close`] (or drop) drains and joins.
pub struct EventBus {
    shared: Arc<Shared>,
    sender: Option<Sender<RaftEvent>>,
    dispatcher: Option<JoinHandle<()>>,
    /// With [`BusConfig::manual`]: the queue, delivered by [`EventBus::dispatch_queued`].
    manual: Option<Receiver<RaftEvent>>,
}

impl EventBus {
    /// A bus with the default sizes.
    ///
    /// # Errors
    /// When the dispatcher thread cannot be started.
    pub fn new() -> std::io::Result<Self> {
        EventBus::with_config(&BusConfig::default())
    }

    /// A bus with the given sizes (a zero is raised to one).
    ///
    /// # Errors
    /// When the dispatcher thread cannot be started.
    pub fn with_config(config: &BusConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            observers: RwLock::new(Arc::new(Vec::new())),
            stripes: (0..config.stripes.max(1)).map(|_| Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
            drained: Condvar::new(),
            next_id: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        let (sender, receiver) = bounded::<RaftEvent>(config.queue_capacity.max(1));
        if config.manual {
            return Ok(EventBus {
                shared,
                sender: Some(sender),
                dispatcher: None,
                manual: Some(receiver),
            });
        }
        let worker = Arc::clone(&shared);
        let dispatcher = std::thread::Builder::new()
            .name("ime-event-bus".to_owned())
            .spawn(move || {
                for event in receiver {
                    let _ = worker.deliver(&event);
                    worker.mark_delivered(&event);
                }
            })?;
        Ok(EventBus {
            shared,
            sender: Some(sender),
            dispatcher: Some(dispatcher),
            manual: None,
        })
    }

    /// With [`BusConfig::manual`]: delivers up to `max` queued events, oldest first, on
    /// this thread, and returns how many. Always 0 with a dispatcher thread.
    pub fn dispatch_queued(&self, max: usize) -> usize {
        let Some(receiver) = &self.manual else {
            return 0;
        };
        let mut delivered = 0;
        while delivered < max {
            let Ok(event) = receiver.try_recv() else {
                break;
            };
            let _ = self.shared.deliver(&event);
            self.shared.mark_delivered(&event);
            delivered += 1;
        }
        delivered
    }

    /// Events waiting in the queue (those a dispatcher thread has not taken yet).
    pub fn queued(&self) -> usize {
        self.sender.as_ref().map_or(0, Sender::len)
    }

    /// Waits until the queued events for `regions` are delivered; with a manual bus,
    /// delivers every queued event first (they are in order, so that is enough).
    fn wait_for_regions(&self, regions: &[RegionId]) {
        self.dispatch_queued(usize::MAX);
        self.shared.wait_for_pending(regions);
    }

    /// Registers `observer` at `priority` (higher is called first).
    pub fn register(&self, observer: Arc<dyn RaftObserver>, priority: i32) -> ObserverId {
        let id = ObserverId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let registered = Arc::new(Registered {
            id,
            priority,
            observer,
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        });
        let mut guard = self
            .shared
            .observers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<_> = guard.iter().cloned().collect();
        let at = list
            .iter()
            .position(|r| r.priority < priority)
            .unwrap_or(list.len());
        list.insert(at, registered);
        *guard = Arc::new(list);
        id
    }

    /// Removes an observer; false if it was not registered. Deliveries already under way
    /// may still reach it.
    pub fn unregister(&self, id: ObserverId) -> bool {
        let mut guard = self
            .shared
            .observers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let list: Vec<_> = guard.iter().filter(|r| r.id != id).cloned().collect();
        let removed = list.len() != guard.len();
        *guard = Arc::new(list);
        removed
    }

    /// Publishes `event` on the path [`RaftEvent::delivery`] picks.
    pub fn publish(&self, event: RaftEvent) -> PublishReport {
        match event.delivery() {
            Delivery::Sync => self.publish_sync(&event),
            Delivery::Queued => self.publish_queued(event),
        }
    }

    /// Delivers `event` on this thread, whatever its kind: returns once every observer
    /// has returned. Queued events published earlier for the same regions go first.
    pub fn publish_sync(&self, event: &RaftEvent) -> PublishReport {
        self.wait_for_regions(&event.regions());
        let failures = self.shared.deliver(event);
        PublishReport {
            delivery: Delivery::Sync,
            failures,
            lost: false,
        }
    }

    fn publish_queued(&self, event: RaftEvent) -> PublishReport {
        let regions = event.regions();
        self.shared.add_pending(&regions);
        let report = PublishReport {
            delivery: Delivery::Queued,
            failures: Vec::new(),
            lost: false,
        };
        let Some(sender) = &self.sender else {
            return self.lose(event, report);
        };
        match sender.try_send(event) {
            Ok(()) => report,
            Err(TrySendError::Full(event) | TrySendError::Disconnected(event)) => {
                self.lose(event, report)
            }
        }
    }

    /// The queue could not take `event`: every observer is told of the gap instead.
    ///
    /// The gap is ordered like an event: after every queued event already accepted for
    /// the same regions (the publisher waits for those), never during one.
    fn lose(&self, event: RaftEvent, report: PublishReport) -> PublishReport {
        self.shared.mark_delivered(&event);
        self.wait_for_regions(&event.regions());
        self.shared.lost.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(kind = %event.kind(), regions = ?event.regions(), "event queue full: reporting a gap");
        let gap = DeliveryGap::of(&event, GapCause::QueueFull);
        let _stripes = self.shared.lock_stripes(&event);
        for registered in self.shared.observers().iter() {
            self.shared.tell_gap(registered, &gap);
        }
        PublishReport {
            lost: true,
            ..report
        }
    }

    /// Counters per registered observer, in call order.
    pub fn stats(&self) -> Vec<ObserverStats> {
        let observers = self.shared.observers();
        let stats = observers.iter().map(|r| ObserverStats {
            name: r.observer.name().to_owned(),
            priority: r.priority,
            delivered: r.delivered.load(Ordering::Relaxed),
            failures: r.failures.load(Ordering::Relaxed),
            gaps: r.gaps.load(Ordering::Relaxed),
        });
        stats.collect()
    }

    /// The lock stripe region `id` maps to: events of regions on one stripe are delivered
    /// one at a time (for diagnosing contention, and for tests that need two regions
    /// whose deliveries cannot block each other).
    pub fn stripe_of(&self, id: RegionId) -> usize {
        stripe_of(id, self.shared.stripes.len())
    }

    /// Queued events lost to a full queue (each reported as a gap).
    pub fn lost_events(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Delivers every queued event, then stops the dispatcher thread and joins it.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.dispatch_queued(usize::MAX);
        drop(self.sender.take());
        if let Some(handle) = self.dispatcher.take()
            && handle.join().is_err()
        {
            tracing::error!("the event bus dispatcher thread panicked");
        }
    }
}

impl Drop for EventBus {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn observers(&self) -> Arc<Vec<Arc<Registered>>> {
        Arc::clone(
            &self
                .observers
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Delivers one event to every observer under its regions' stripe locks.
    fn deliver(&self, event: &RaftEvent) -> Vec<ObserverFailure> {
        let _stripes = self.lock_stripes(event);
        let mut failures = Vec::new();
        for registered in self.observers().iter() {
            let outcome = catch_unwind(AssertUnwindSafe(|| registered.observer.on_event(event)));
            let (detail, panicked) = match outcome {
                Ok(Ok(())) => {
                    registered.delivered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(Err(err)) => (err.to_string(), false),
                Err(payload) => (panic_message(&payload), true),
            };
            registered.failures.fetch_add(1, Ordering::Relaxed);
            let name = registered.observer.name().to_owned();
            tracing::error!(observer = %name, kind = %event.kind(), %detail, panicked, "observer failed");
            self.tell_gap(
                registered,
                &DeliveryGap::of(event, GapCause::ObserverFailed),
            );
            let regions = event.regions();
            failures.push(ObserverFailure {
                observer: name,
                kind: event.kind(),
                regions,
                detail,
                panicked,
            });
        }
        failures
    }

    fn tell_gap(&self, registered: &Registered, gap: &DeliveryGap) {
        registered.gaps.fetch_add(1, Ordering::Relaxed);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| registered.observer.on_gap(gap))) {
            let name = registered.observer.name();
            tracing::error!(observer = %name, detail = %panic_message(&payload), "observer panicked on a gap");
        }
    }

    /// Locks the stripes of the event's regions in index order; an event without regions
    /// (a bare range) locks them all.
    fn lock_stripes(&self, event: &RaftEvent) -> Vec<MutexGuard<'_, ()>> {
        let regions = event.regions();
        let mut indexes: Vec<usize> = if regions.is_empty() {
            (0..self.stripes.len()).collect()
        } else {
            regions
                .iter()
                .map(|id| stripe_of(*id, self.stripes.len()))
                .collect()
        };
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            .map(|i| {
                self.stripes[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect()
    }

    fn add_pending(&self, regions: &[RegionId]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for id in regions {
            *pending.entry(*id).or_default() += 1;
        }
    }

    fn mark_delivered(&self, event: &RaftEvent) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for id in event.regions() {
            if let Entry::Occupied(mut count) = pending.entry(id) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        self.drained.notify_all();
    }

    /// Waits until no queued event for `regions` (any region, if empty) is undelivered.
    fn wait_for_pending(&self, regions: &[RegionId]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let busy = |p: &HashMap<RegionId, usize>| {
            if regions.is_empty() {
                !p.is_empty()
            } else {
                regions.iter().any(|id| p.contains_key(id))
            }
        };
        while busy(&pending) {
            pending = self
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn stripe_of(id: RegionId, stripes: usize) -> usize {
    // Fibonacci hashing spreads consecutive ids over the stripes.
    let hash = id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    usize::try_from(hash >> 32).unwrap_or(0) % stripes
}

fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
