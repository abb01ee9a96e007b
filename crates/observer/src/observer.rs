//! The [`RaftObserver`] trait: what the bus calls, and what each side promises.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use ime_region::{KeyRange, RegionId};
use serde::{Deserialize, Serialize};

use crate::{EventKind, RaftEvent};

/// What an observer returns from [`RaftObserver::on_event`].
pub type ObserverResult = Result<(), Box<dyn Error + Send + Sync>>;

/// A component that follows the Raft layer's changes to regions (the engine is one).
///
/// # The bus promises
/// - Events of one region arrive in the order they were published, never two at once
///   (per-region FIFO; events of different regions may arrive concurrently).
/// - A [`Delivery::Sync`](crate::Delivery::Sync) event is delivered before its `publish`
///   call returns.
/// - An event that cannot be delivered (the queue is full) is never dropped silently:
///   every observer gets [`RaftObserver::on_gap`] for the regions it concerned.
/// - A panic or an error in one observer reaches neither the publisher nor the other
///   observers; that observer gets `on_gap` for the event's regions, since its view of
///   them may now be wrong.
///
/// # The observer promises
/// - `on_event` returns only once the event's effect is in place (for the engine: once
///   the region has stopped being served from memory, where the event says so).
/// - It never publishes to the bus from inside `on_event` or `on_gap` (the delivery holds
///   the lock of the event's regions; publishing could wait on itself).
/// - It treats `on_gap` as "an event for these regions or ranges may be missing" and
///   stops trusting what it holds for them (the engine evicts).
pub trait RaftObserver: Send + Sync {
    /// A short name for reports and logs.
    fn name(&self) -> &str;

    /// Handles one event.
    ///
    /// # Errors
    /// Any error: the bus reports it and sends this observer a gap for the event.
    fn on_event(&self, event: &RaftEvent) -> ObserverResult;

    /// Events concerning `gap.regions` or `gap.ranges` may have been lost for this
    /// observer.
    fn on_gap(&self, gap: &DeliveryGap);
}

impl<T: RaftObserver + ?Sized> RaftObserver for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        (**self).on_event(event)
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        (**self).on_gap(gap);
    }
}

/// Why an observer may have missed events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GapCause {
    /// The queued path was full: the event was not delivered to anyone.
    QueueFull,
    /// This observer failed (error or panic) while handling the event.
    ObserverFailed,
}

/// Events that may be missing, as the bus reports them to an observer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryGap {
    /// The regions concerned.
    pub regions: Vec<RegionId>,
    /// The key ranges concerned (for events that name ranges rather than regions, and
    /// the ranges of the regions named).
    pub ranges: Vec<KeyRange>,
    /// The kind of the event that was lost.
    pub kind: EventKind,
    /// Why.
    pub cause: GapCause,
}

impl DeliveryGap {
    /// The gap `event` leaves when it is lost for `cause`.
    pub fn of(event: &RaftEvent, cause: GapCause) -> Self {
        DeliveryGap {
            regions: event.regions(),
            ranges: event.ranges(),
            kind: event.kind(),
            cause,
        }
    }
}

impl fmt::Display for DeliveryGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} lost a {} event for regions {:?}",
            self.cause, self.kind, self.regions
        )
    }
}
