//! The bus's promises: priority order, per-region FIFO under concurrent producers, sync
//! delivery that returns only after the observers, overflow reported as a gap, and
//! failures contained.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::region;
use ime_observer::*;
use ime_region::RegionId;

/// A sync event carrying sequence number `seq` for region `id` (in `conf_ver`).
fn sync_event(id: u64, seq: u64) -> RaftEvent {
    RaftEvent::ChangePeer {
        before: region(id, "", "", 1, seq),
        after: region(id, "", "", 1, seq),
    }
}

/// A queued event carrying sequence number `seq` for region `id`.
fn queued_event(id: u64, seq: u64) -> RaftEvent {
    RaftEvent::CompactLog {
        region: region(id, "", "", 1, 1),
        compact_index: seq,
    }
}

fn seq_of(event: &RaftEvent) -> (RegionId, u64) {
    match event {
        RaftEvent::ChangePeer { after, .. } => (after.id, after.epoch.conf_ver),
        RaftEvent::CompactLog {
            region,
            compact_index,
        } => (region.id, *compact_index),
        other => panic!("unexpected {other:?}"),
    }
}

/// Checks that no two deliveries of one region overlap, and records the order.
#[derive(Default)]
struct OrderChecker {
    in_flight: Mutex<HashMap<RegionId, bool>>,
    seen: Mutex<HashMap<RegionId, Vec<u64>>>,
    overlaps: AtomicUsize,
}

impl RaftObserver for OrderChecker {
    fn name(&self) -> &str {
        "order-checker"
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        let (id, seq) = seq_of(event);
        if self.in_flight.lock().unwrap().insert(id, true) == Some(true) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::yield_now();
        self.seen.lock().unwrap().entry(id).or_default().push(seq);
        self.in_flight.lock().unwrap().insert(id, false);
        Ok(())
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        panic!("no gap expected: {gap}");
    }
}

#[test]
fn per_region_order_holds_under_concurrent_producers() {
    let bus = Arc::new(
        EventBus::with_config(&BusConfig {
            queue_capacity: 100_000,
            stripes: 8,
            ..BusConfig::default()
        })
        .unwrap(),
    );
    let checker = Arc::new(OrderChecker::default());
    bus.register(checker.clone(), 0);
    let producers: Vec<_> = (0..4u64)
        .map(|producer| {
            let bus = Arc::clone(&bus);
            std::thread::spawn(move || {
                // Each producer owns three regions and interleaves sync and queued events.
                for seq in 1..=300u64 {
                    let id = producer * 10 + seq % 3;
                    let event = if seq % 4 == 0 {
                        sync_event(id, seq)
                    } else {
                        queued_event(id, seq)
                    };
                    let report = bus.publish(event);
                    assert!(!report.lost && report.failures.is_empty());
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    Arc::into_inner(bus).expect("producers are done").close();
    assert_eq!(
        checker.overlaps.load(Ordering::SeqCst),
        0,
        "two deliveries of one region overlapped"
    );
    let seen = checker.seen.lock().unwrap();
    assert_eq!(seen.len(), 12);
    for (id, seqs) in seen.iter() {
        let expected: Vec<u64> = (1..=300).filter(|s| (id.0 % 10) == s % 3).collect();
        assert_eq!(
            seqs, &expected,
            "region {id} saw events out of order or lost some"
        );
    }
}

/// An observer that, for one region, signals when it starts and waits to be released.
struct Gate {
    region: RegionId,
    entered: mpsc::SyncSender<()>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl RaftObserver for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        if event.regions().first() == Some(&self.region) {
            self.entered.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        Ok(())
    }

    fn on_gap(&self, _gap: &DeliveryGap) {}
}

fn gate(region: u64) -> (Arc<Gate>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::sync_channel(1);
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        region: RegionId(region),
        entered: entered_tx,
        release: Mutex::new(release_rx),
    });
    (gate, entered_rx, release_tx)
}

#[test]
fn a_sync_publish_returns_only_after_every_observer() {
    let bus = Arc::new(EventBus::new().unwrap());
    let (gate, entered, release) = gate(34855);
    bus.register(gate, 10);
    let recorder = Arc::new(Recorder::new("after-gate"));
    bus.register(recorder.clone(), 0);
    let returned = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (bus, returned) = (Arc::clone(&bus), Arc::clone(&returned));
        std::thread::spawn(move || {
            let report = bus.publish(common::seed_sequence().remove(1));
            returned.store(true, Ordering::SeqCst);
            report
        })
    };
    entered.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !returned.load(Ordering::SeqCst),
        "publish returned while an observer was still running"
    );
    assert!(
        recorder.events().is_empty(),
        "a lower-priority observer ran before a higher one finished"
    );
    release.send(()).unwrap();
    let report = publisher.join().unwrap();
    assert!(returned.load(Ordering::SeqCst));
    assert_eq!(report.delivery, Delivery::Sync);
    assert_eq!(
        recorder.events().len(),
        1,
        "publish returned before every observer ran"
    );
}

#[test]
fn a_full_queue_is_reported_as_a_gap_to_every_observer() {
    let bus = EventBus::with_config(&BusConfig {
        queue_capacity: 1,
        stripes: 64,
        ..BusConfig::default()
    })
    .unwrap();
    // Three regions on three different stripes, so the blocked one cannot hold the others.
    let ids: Vec<u64> = {
        let mut ids: Vec<u64> = Vec::new();
        let mut stripes = Vec::new();
        for id in 1.. {
            let stripe = bus.stripe_of(RegionId(id));
            if !stripes.contains(&stripe) {
                stripes.push(stripe);
                ids.push(id);
            }
            if ids.len() == 3 {
                break;
            }
        }
        ids
    };
    let (gate, entered, release) = gate(ids[0]);
    bus.register(gate, 10);
    let recorder = Arc::new(Recorder::new("recorder"));
    bus.register(recorder.clone(), 0);

    assert!(!bus.publish(queued_event(ids[0], 1)).lost);
    entered.recv().unwrap(); // the dispatcher is now stuck in the gate
    assert!(!bus.publish(queued_event(ids[1], 2)).lost); // fills the queue
    let report = bus.publish(queued_event(ids[2], 3));
    assert!(report.lost, "the third event cannot fit");
    assert_eq!(bus.lost_events(), 1);
    let gaps = recorder.gaps();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].regions, [RegionId(ids[2])]);
    assert_eq!(
        (gaps[0].cause, gaps[0].kind),
        (GapCause::QueueFull, EventKind::CompactLog)
    );
    release.send(()).unwrap();
    bus.close();
    let delivered: Vec<_> = recorder.events().iter().map(seq_of).collect();
    assert_eq!(delivered, [(RegionId(ids[0]), 1), (RegionId(ids[1]), 2)]);
}

struct Faulty {
    panics: bool,
    gaps: Mutex<Vec<DeliveryGap>>,
}

impl RaftObserver for Faulty {
    fn name(&self) -> &str {
        if self.panics { "panicker" } else { "failer" }
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        if event.kind() == EventKind::ApplySnapshot {
            if self.panics {
                panic!("observer bug on {event}");
            }
            return Err(format!("cannot handle {event}").into());
        }
        Ok(())
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        self.gaps.lock().unwrap().push(gap.clone());
    }
}

#[test]
fn a_panicking_or_failing_observer_is_contained_and_reported() {
    let bus = EventBus::new().unwrap();
    let panicker = Arc::new(Faulty {
        panics: true,
        gaps: Mutex::default(),
    });
    let failer = Arc::new(Faulty {
        panics: false,
        gaps: Mutex::default(),
    });
    let recorder = Arc::new(Recorder::new("recorder"));
    bus.register(panicker.clone(), 30);
    bus.register(failer.clone(), 20);
    bus.register(recorder.clone(), 10);
    let seed = common::seed_sequence();
    for event in &seed {
        let report = bus.publish(event.clone());
        let expected = usize::from(event.kind() == EventKind::ApplySnapshot) * 2;
        assert_eq!(report.failures.len(), expected, "{event}");
        if expected > 0 {
            let names: Vec<_> = report
                .failures
                .iter()
                .map(|f| (f.observer.as_str(), f.panicked))
                .collect();
            assert_eq!(names, [("panicker", true), ("failer", false)]);
            assert!(report.failures[0].detail.contains("observer bug"));
        }
    }
    bus.close();
    // The others kept receiving everything, in order.
    assert_eq!(recorder.events(), seed);
    // Each failing observer was told its view of the region may be wrong.
    for faulty in [&panicker, &failer] {
        let gaps = faulty.gaps.lock().unwrap();
        assert_eq!(gaps.len(), 1);
        assert_eq!(
            (gaps[0].cause, gaps[0].regions.as_slice()),
            (GapCause::ObserverFailed, &[RegionId(34855)][..])
        );
    }
}

#[test]
fn observers_run_in_priority_order_and_can_unregister() {
    let bus = EventBus::new().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    struct Named(&'static str, Arc<Mutex<Vec<&'static str>>>);
    impl RaftObserver for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn on_event(&self, _: &RaftEvent) -> ObserverResult {
            self.1.lock().unwrap().push(self.0);
            Ok(())
        }
        fn on_gap(&self, _: &DeliveryGap) {}
    }
    bus.register(Arc::new(Named("low", log.clone())), -5);
    let middle = bus.register(Arc::new(Named("middle", log.clone())), 0);
    bus.register(Arc::new(Named("high", log.clone())), 5);
    bus.register(Arc::new(Named("middle-2", log.clone())), 0);
    let _ = bus.publish(sync_event(1, 1));
    assert_eq!(*log.lock().unwrap(), ["high", "middle", "middle-2", "low"]);
    assert!(bus.unregister(middle));
    assert!(!bus.unregister(middle));
    log.lock().unwrap().clear();
    let _ = bus.publish(sync_event(1, 2));
    assert_eq!(*log.lock().unwrap(), ["high", "middle-2", "low"]);
    let stats = bus.stats();
    assert_eq!(
        stats.iter().map(|s| s.delivered).collect::<Vec<_>>(),
        [2, 2, 2]
    );
}

#[test]
fn close_delivers_every_queued_event_first() {
    let bus = EventBus::new().unwrap();
    let recorder = Arc::new(Recorder::new("recorder"));
    bus.register(recorder.clone(), 0);
    for seq in 1..=500 {
        assert!(!bus.publish(queued_event(seq % 7, seq)).lost);
    }
    bus.close();
    assert_eq!(recorder.events().len(), 500);
}

/// A manual bus has no dispatcher thread: queued events wait for `dispatch_queued`, in
/// order; a sync event delivers the queued ones before itself; close delivers the rest.
#[test]
fn a_manual_bus_delivers_queued_events_when_told() {
    let bus = EventBus::with_config(&BusConfig {
        manual: true,
        ..BusConfig::default()
    })
    .unwrap();
    let recorder = Arc::new(Recorder::new("recorder"));
    bus.register(recorder.clone(), 0);
    for seq in 1..=3 {
        let _ = bus.publish(queued_event(1, seq));
    }
    assert!(recorder.events().is_empty(), "nothing before dispatch");
    assert_eq!(bus.queued(), 3);
    assert_eq!(bus.dispatch_queued(1), 1);
    assert_eq!(
        recorder.events().iter().map(seq_of).collect::<Vec<_>>(),
        [(RegionId(1), 1)]
    );
    let _ = bus.publish(sync_event(1, 4));
    let order: Vec<_> = recorder.events().iter().map(seq_of).collect();
    assert_eq!(order, (1..=4).map(|s| (RegionId(1), s)).collect::<Vec<_>>());
    let _ = bus.publish(queued_event(2, 5));
    bus.close();
    assert_eq!(recorder.events().len(), 5, "close delivers what was queued");
}
