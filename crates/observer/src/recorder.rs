//! [`Recorder`]: an observer that remembers what it was told, for tests and replays.

use std::sync::{Mutex, PoisonError};

use crate::{DeliveryGap, ObserverResult, RaftEvent, RaftObserver};

/// What a [`Recorder`] saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// An event.
    Event(RaftEvent),
    /// A gap report.
    Gap(DeliveryGap),
}

/// Records every event and gap it receives.
#[derive(Debug, Default)]
pub struct Recorder {
    name: String,
    seen: Mutex<Vec<Observed>>,
}

impl Recorder {
    /// A recorder called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Recorder {
            name: name.into(),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Everything seen so far, in order.
    pub fn seen(&self) -> Vec<Observed> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The events seen so far, in order.
    pub fn events(&self) -> Vec<RaftEvent> {
        let seen = self.seen();
        let events = seen.into_iter().filter_map(|o| match o {
            Observed::Event(event) => Some(event),
            Observed::Gap(_) => None,
        });
        events.collect()
    }

    /// The gaps seen so far, in order.
    pub fn gaps(&self) -> Vec<DeliveryGap> {
        let seen = self.seen();
        let gaps = seen.into_iter().filter_map(|o| match o {
            Observed::Gap(gap) => Some(gap),
            Observed::Event(_) => None,
        });
        gaps.collect()
    }

    fn push(&self, observed: Observed) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(observed);
    }
}

impl RaftObserver for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        self.push(Observed::Event(event.clone()));
        Ok(())
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        self.push(Observed::Gap(gap.clone()));
    }
}
