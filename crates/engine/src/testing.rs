//! Switches for tests only, compiled with the `testing` feature (off in normal builds): an
//! engine broken on purpose (ignoring ApplySnapshot and every gap, as TiKV's did before
//! tikv/tikv#17430), fences that hold no load back (the mutation the simulator must
//! catch), and loads held at a stage to reach an interleaving precisely.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use ime_disk::DiskEngine;

use crate::Engine;
use crate::shared::Core;

/// A point in a load where a test can hold it, to reach an interleaving precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadStage {
    /// Before the region leaves Pending.
    BeforeStart,
    /// Loading, with its disk snapshot taken, before any key is copied.
    AfterStart,
    /// Every column family copied, none installed yet.
    Copied,
}

/// The switches' state, in the engine's core.
#[derive(Default)]
pub(crate) struct Switches {
    /// Where loads are held, and the condition they wait on.
    gate: Mutex<Option<LoadStage>>,
    gate_opened: Condvar,
    /// Loads waiting at the gate now.
    held: AtomicUsize,
}

impl Switches {
    /// Holds loads at `stage` (`None` releases them).
    fn hold(&self, stage: Option<LoadStage>) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) = stage;
        self.gate_opened.notify_all();
    }

    /// Waits while loads are held at `stage`, or until `closed` says the engine stops.
    pub(crate) fn wait_at(&self, stage: LoadStage, closed: &AtomicBool) {
        let mut gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        let waits = usize::from(*gate == Some(stage));
        self.held.fetch_add(waits, Ordering::SeqCst);
        while *gate == Some(stage) && !closed.load(Ordering::Acquire) {
            gate = self
                .gate_opened
                .wait_timeout(gate, Duration::from_millis(20))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.held.fetch_sub(waits, Ordering::SeqCst);
    }
}

impl<D: DiskEngine> Core<D> {
    /// Waits while loads are held at `stage`.
    pub(crate) fn hold_at(&self, stage: LoadStage) {
        self.switches.wait_at(stage, &self.closed);
    }
}

impl<D: DiskEngine> Engine<D> {
    /// An engine that ignores ApplySnapshot and every gap, as TiKV's did before
    /// tikv/tikv#17430: for tests that must see the checkers fail.
    pub fn break_for_tests(&self) {
        self.core.meta().ctl.break_for_tests();
    }

    /// Fences stop holding loads back (they still evict): the mutation that shows the
    /// simulator finds the stale reads fences prevent.
    pub fn unfence_for_tests(&self) {
        self.core.meta().ctl.unfence_for_tests();
    }

    /// Holds every load at `stage` until [`Engine::release_loads`] (or shutdown).
    pub fn hold_loads(&self, stage: LoadStage) {
        self.core.switches.hold(Some(stage));
    }

    /// How many loads wait at the stage [`Engine::hold_loads`] holds them at now.
    pub fn loads_held(&self) -> usize {
        self.core.switches.held.load(Ordering::SeqCst)
    }

    /// Releases loads held by [`Engine::hold_loads`].
    pub fn release_loads(&self) {
        self.core.switches.hold(None);
    }
}
