//! The store's seeded scheduler: when the engine's background work runs (tasks, GC and
//! policy rounds, cross-checks), between steps and inside changes outside the write path.

use super::*;

impl Store {
    /// A point where the engine's background work may run: the seeded scheduler picks
    /// none, one or a few of the waiting tasks (load stages, GC collections, compactions,
    /// frees), in any order, and now and then a GC or a policy round. The simulator calls
    /// it between steps and inside every change outside the write path — between the
    /// event and the disk change, and between the disk change and the fence's end — so
    /// races are explored and a seed still replays.
    pub(crate) fn interleave(&mut self) {
        self.run_background(4, 2);
    }

    /// [`Store::interleave`] inside a change outside the write path, where a load that
    /// took its disk snapshot would copy data about to be replaced: the scheduler favours
    /// policy rounds here (they are what asks for loads), as a scheduler exploring races
    /// weights the points where they can happen.
    pub(super) fn interleave_in_fence(&mut self) {
        self.run_background(30, 2);
    }

    /// Compares every cached region with the disk (the ticker's cross-check duty) and
    /// keeps what differs for the report.
    pub(crate) fn cross_check(&mut self) {
        for difference in self.engine.cross_check() {
            let history = self
                .history
                .get(&difference.region.0)
                .cloned()
                .unwrap_or_default();
            let mismatch = Mismatch::from_difference(self.id, &difference, history);
            self.differences.push(mismatch);
        }
    }

    /// Runs a policy round with `policy` percent chance, a GC round with `gc` percent
    /// chance, a cross-check now and then, the ticker's duty (`Engine::tick`) one
    /// time in ten, and up to three waiting tasks.
    pub(super) fn run_background(&mut self, policy: u64, gc: u64) {
        // Queued events (load hints, statistics) reach the engine when the scheduler says.
        let events = self.scheduler.below(3) as usize;
        self.background_runs += self.dispatch_events(events) as u64;
        if self.scheduler.chance(policy) {
            self.engine.run_policy();
            self.background_runs += 1;
        }
        if self.scheduler.chance(gc) {
            self.engine.run_gc();
            self.background_runs += 1;
        }
        if self.scheduler.chance(1) {
            self.cross_check();
            self.background_runs += 1;
        }
        // The ticker's duty (no ticker runs here): among others, stripes nobody read since
        // stop parking, and their regions' writes queue their memory side again, for a
        // waiting `Drain` task, a reader, the next tick or the next event to apply.
        if self.scheduler.chance(10) {
            self.engine.tick();
            self.background_runs += 1;
        }
        for _ in 0..self.scheduler.below(4) {
            let waiting = self.engine.pending_tasks() as u64;
            if waiting == 0 {
                break;
            }
            let pick = self.scheduler.below(waiting) as usize;
            if self.engine.run_pending(pick).is_some() {
                self.background_runs += 1;
            }
        }
    }
}
