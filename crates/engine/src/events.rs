//! The engine as an observer of the Raft layer: each event and delivery gap goes to the
//! controller's event table ([`ime_controller::Controller::on_event`]), and its decisions
//! are carried out before the call returns.

use std::sync::Arc;

use ime_disk::DiskEngine;
use ime_observer::{DeliveryGap, ObserverResult, RaftEvent, RaftObserver};
use ime_region::RegionId;

use crate::shared::Core;
use crate::{Engine, EngineError};
use ime_metrics::GapSource;

impl<D: DiskEngine> Engine<D> {
    /// Handles one Raft event (what the bus calls; callable directly). Returns once the
    /// event's effect is in place: a region that must stop being served from memory has.
    ///
    /// # Errors
    /// [`EngineError::Region`] for a malformed event (a split whose children do not
    /// partition the source); the regions it names are evicted all the same.
    pub fn on_event(&self, event: &RaftEvent) -> Result<(), EngineError> {
        self.core.on_event(event)
    }

    /// An observer to register on an [`ime_observer::EventBus`]: it forwards every event
    /// and gap to this engine.
    pub fn observer(&self) -> Arc<dyn RaftObserver> {
        Arc::new(EngineObserver {
            core: Arc::clone(self.core.arc()),
        })
    }

    /// Whether a leader transfer of `region` in `term` may be acknowledged now: yes once
    /// the region is loaded, once the warm-up's deadline has passed (retries do not extend
    /// it), or when no warm-up is pending for that term.
    pub fn transfer_leader_ready(&self, region: RegionId, term: u64) -> bool {
        let now = self.core.started.elapsed();
        (self.core.meta().ctl).transfer_leader_ready(region, term, now)
    }
}

/// The engine's face on the bus.
struct EngineObserver<D: DiskEngine> {
    core: Arc<Core<D>>,
}

impl<D: DiskEngine> RaftObserver for EngineObserver<D> {
    fn name(&self) -> &str {
        "ime-engine"
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        self.core.on_event(event).map_err(Into::into)
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        tracing::warn!(%gap, "events lost: evicting the regions they concerned");
        self.core.metrics.gap(GapSource::Delivery);
        self.core.decide(|ctl, _, out| ctl.on_gap(gap, out));
    }
}

impl<D: DiskEngine> Core<D> {
    /// Handles one event: the controller decides, the decisions are carried out.
    fn on_event(&self, event: &RaftEvent) -> Result<(), EngineError> {
        tracing::debug!(kind = %event.kind(), regions = ?event.regions(), "raft event");
        self.metrics.event(event.kind());
        self.settle_deferred(0..ime_stripes::STRIPES); // a split or merge moves keys
        self.decide(|ctl, env, out| ctl.on_event(event, env, out))
            .map_err(|err| {
                tracing::error!(%err, "malformed event: the regions it names are evicted");
                err.into()
            })
    }
}
