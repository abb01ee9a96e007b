//! [`FaultyObserver`]: a wrapper that drops, delays or duplicates chosen event kinds, so
//! that tests can prove the engine detects what it was never told.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::{DeliveryGap, EventKind, ObserverResult, RaftEvent, RaftObserver};

/// What to do to a matching event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Do not forward it: the inner observer never sees it (and is not told).
    Drop,
    /// Forward it after a pause.
    Delay(Duration),
    /// Forward it twice.
    Duplicate,
}

/// A fault to inject: `action` on events of `kind`, for the next `times` matches (`None`:
/// all of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// The kind of event affected.
    pub kind: EventKind,
    /// What happens to it.
    pub action: FaultAction,
    /// How many more matching events to affect; `None` for every one.
    pub times: Option<usize>,
}

impl FaultRule {
    /// Affects every event of `kind`.
    pub fn always(kind: EventKind, action: FaultAction) -> Self {
        FaultRule {
            kind,
            action,
            times: None,
        }
    }

    /// Affects the next `times` events of `kind`.
    pub fn times(kind: EventKind, action: FaultAction, times: usize) -> Self {
        FaultRule {
            kind,
            action,
            times: Some(times),
        }
    }
}

/// Wraps an observer and applies [`FaultRule`]s to the events it receives (the first
/// matching rule with matches left wins). Gaps are always forwarded: the bus's own
/// reporting is not what is under test.
pub struct FaultyObserver<O> {
    inner: O,
    rules: Mutex<Vec<FaultRule>>,
    dropped: Mutex<Vec<RaftEvent>>,
}

impl<O: RaftObserver> FaultyObserver<O> {
    /// Wraps `inner` with `rules`.
    pub fn new(inner: O, rules: Vec<FaultRule>) -> Self {
        FaultyObserver {
            inner,
            rules: Mutex::new(rules),
            dropped: Mutex::new(Vec::new()),
        }
    }

    /// Adds a rule, after the existing ones.
    pub fn add_rule(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rule);
    }

    /// Removes every rule: events pass untouched from now on.
    pub fn clear_rules(&self) {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The events dropped so far, in order.
    pub fn dropped(&self) -> Vec<RaftEvent> {
        self.dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The wrapped observer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// Takes the action for `kind`, using up one match of its rule.
    fn action_for(&self, kind: EventKind) -> Option<FaultAction> {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let rule = rules
            .iter_mut()
            .find(|r| r.kind == kind && r.times != Some(0))?;
        if let Some(left) = rule.times.as_mut() {
            *left -= 1;
        }
        Some(rule.action)
    }
}

impl<O: RaftObserver> RaftObserver for FaultyObserver<O> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        match self.action_for(event.kind()) {
            None => self.inner.on_event(event),
            Some(FaultAction::Drop) => {
                self.dropped
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(event.clone());
                Ok(())
            }
            Some(FaultAction::Delay(pause)) => {
                std::thread::sleep(pause);
                self.inner.on_event(event)
            }
            Some(FaultAction::Duplicate) => {
                self.inner.on_event(event)?;
                self.inner.on_event(event)
            }
        }
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        self.inner.on_gap(gap);
    }
}
