//! A shuttle model of how writes that defer hand their queue to an applier without waking
//! it every time (`Stripes::wake_wanted`, `Stripes::poll`): a writer counts each deferred
//! write, then asks whether to wake the applier — yes only for the first ask while the
//! applier is not polling, which makes it poll; the applier, woken, drains, and polls
//! while it finds writes; after a round that finds none it stops polling and looks once
//! more. The model checks that no write is left behind unnoticed: when the writer is
//! done, every write is applied, or the applier still polls, or a wake waits for it. Two
//! broken versions must be caught: an applier that stops without the second look, and a
//! writer that asks before counting its write.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use shuttle::sync::Arc;
use shuttle::sync::atomic::Ordering::SeqCst;
use shuttle::sync::atomic::{AtomicBool, AtomicU64};
use shuttle::thread;

const SCHEDULES: usize = 20_000;
const WRITES: u64 = 3;

#[derive(Clone, Copy)]
struct Broken {
    no_second_look: bool,
    ask_before_counting: bool,
}

#[derive(Default)]
struct Model {
    deferred: AtomicU64,
    applied: AtomicU64,
    polled: AtomicBool,
    /// Wakes sent and not yet taken by the applier (the task channel).
    wakes: AtomicU64,
}

impl Model {
    /// `Stripes::wake_wanted` with a threshold of one write.
    fn wake_wanted(&self) -> bool {
        let waiting = self.deferred.load(SeqCst) - self.applied.load(SeqCst);
        waiting >= 1 && !self.polled.load(SeqCst) && !self.polled.swap(true, SeqCst)
    }

    /// A drain: applies what was counted when it looked.
    fn drain(&self) -> u64 {
        let (deferred, applied) = (self.deferred.load(SeqCst), self.applied.load(SeqCst));
        self.applied.store(deferred, SeqCst);
        deferred - applied
    }

    /// `Stripes::poll`.
    fn poll(&self, broken: Broken) {
        if !self.polled.load(SeqCst) || self.drain() > 0 {
            return;
        }
        self.polled.store(false, SeqCst);
        if !broken.no_second_look && self.drain() > 0 {
            self.polled.store(true, SeqCst);
        }
    }

    fn write(&self, broken: Broken) {
        let wake = if broken.ask_before_counting {
            let wake = !self.polled.load(SeqCst) && !self.polled.swap(true, SeqCst);
            self.deferred.fetch_add(1, SeqCst);
            wake
        } else {
            self.deferred.fetch_add(1, SeqCst);
            self.wake_wanted()
        };
        if wake {
            self.wakes.fetch_add(1, SeqCst);
        }
    }

    /// The applier's loop, for a few rounds: a wake first (a drain), else a poll round.
    fn applier(&self, broken: Broken) {
        for _ in 0..4 {
            let woken = (self.wakes.load(SeqCst) > 0).then(|| self.wakes.fetch_sub(1, SeqCst));
            if woken.is_some() {
                self.drain();
            } else {
                self.poll(broken);
            }
            thread::yield_now();
        }
    }
}

fn model(broken: Broken) {
    let run = move || {
        let model = Arc::new(Model::default());
        let applier = {
            let model = Arc::clone(&model);
            thread::spawn(move || model.applier(broken))
        };
        for _ in 0..WRITES {
            model.write(broken);
        }
        applier.join().unwrap();
        let behind = model.applied.load(SeqCst) < model.deferred.load(SeqCst);
        let coming = model.polled.load(SeqCst) || model.wakes.load(SeqCst) > 0;
        assert!(
            !behind || coming,
            "writes left queued, and nobody will come for them"
        );
    };
    shuttle::check_random(run, SCHEDULES);
    shuttle::check_pct(run, SCHEDULES, 3);
}

const SOUND: Broken = Broken {
    no_second_look: false,
    ask_before_counting: false,
};

#[test]
fn no_deferred_write_is_left_unnoticed() {
    model(SOUND);
}

#[test]
#[should_panic(expected = "nobody will come")]
fn an_applier_that_stops_without_a_second_look_is_caught() {
    model(Broken {
        no_second_look: true,
        ..SOUND
    });
}

#[test]
#[should_panic(expected = "nobody will come")]
fn a_writer_that_asks_before_counting_is_caught() {
    model(Broken {
        ask_before_counting: true,
        ..SOUND
    });
}
