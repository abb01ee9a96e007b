//! `ime-observer` benchmarks: the cost of dispatching one event (sync path, queued path)
//! against a locked dynamic call and a bare crossbeam channel, and journal append throughput
//! against encoding alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark harness: a failed setup should stop the run"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ime_observer::{
    BusConfig, DeliveryGap, EventBus, JournalEntry, JournalWriter, ObserverResult, RaftEvent,
    RaftObserver,
};
use ime_region::{KeyRange, Region, RegionEpoch, RegionId, SplitChild};

/// An observer that does nothing, so the bus's own cost is what is measured.
struct Noop;

impl RaftObserver for Noop {
    fn name(&self) -> &str {
        "noop"
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        black_box(event);
        Ok(())
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        black_box(gap);
    }
}

fn region(id: u64, start: &str, end: &str, version: u64) -> Region {
    let range = KeyRange::new(start, end).unwrap_or_else(|_| KeyRange::everything());
    Region::new(RegionId(id), range, RegionEpoch::new(version, 5))
}

fn split_event() -> RaftEvent {
    RaftEvent::Split {
        before: region(34855, "t_100_r_0000", "t_100_r_9999", 222),
        children: vec![
            SplitChild {
                region: region(34855, "t_100_r_0000", "t_100_r_5000", 223),
                applied_index: 151,
            },
            SplitChild {
                region: region(40000, "t_100_r_5000", "t_100_r_9999", 223),
                applied_index: 5,
            },
        ],
    }
}

fn compact_event(id: u64) -> RaftEvent {
    RaftEvent::CompactLog {
        region: region(id, "a", "z", 3),
        compact_index: 100,
    }
}

/// Events per chunk on the queued path: below the queue capacity, so none is lost.
const CHUNK: u64 = 4096;

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("observer/dispatch");
    group.throughput(Throughput::Elements(1));
    let event = split_event();
    // The least a synchronous bus must do: take a lock and make a dynamic call.
    let locked: std::sync::Mutex<Arc<dyn RaftObserver>> = std::sync::Mutex::new(Arc::new(Noop));
    group.bench_function("locked_dyn_call", |b| {
        b.iter(|| {
            locked
                .lock()
                .map(|observer| observer.on_event(black_box(&event)))
        })
    });

    let bus = EventBus::new().expect("bench setup");
    bus.register(Arc::new(Noop), 0);
    group.bench_function("sync", |b| b.iter(|| bus.publish_sync(black_box(&event))));

    let config = BusConfig {
        queue_capacity: CHUNK as usize * 2,
        ..BusConfig::default()
    };
    let queued_bus = EventBus::with_config(&config).expect("bench setup");
    queued_bus.register(Arc::new(Noop), 0);
    let queued = compact_event(7);
    group.bench_function("queued", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                for _ in 0..left.min(CHUNK) {
                    let report = queued_bus.publish(queued.clone());
                    assert!(!report.lost, "the bench queue overflowed");
                }
                // A sync publish for the same region waits for the queued ones.
                let _ = queued_bus.publish_sync(&queued);
                left = left.saturating_sub(CHUNK);
            }
            start.elapsed()
        });
    });
    group.bench_function("channel_baseline", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = crossbeam_channel::bounded::<RaftEvent>(CHUNK as usize * 2);
            let consumer = std::thread::spawn(move || rx.iter().for_each(|e| drop(black_box(e))));
            let start = Instant::now();
            for _ in 0..iters {
                let _ = tx.send(queued.clone());
            }
            drop(tx);
            let _ = consumer.join();
            start.elapsed()
        });
    });
    group.finish();
}

fn journal(c: &mut Criterion) {
    let mut group = c.benchmark_group("observer/journal");
    let entry = JournalEntry::Event(split_event());
    let config = bincode::config::standard();
    let size = bincode::serde::encode_to_vec(&entry, config)
        .map(|v| v.len())
        .unwrap_or(0);
    group.throughput(Throughput::Bytes(size as u64 + 8));
    group.bench_function("encode_only", |b| {
        b.iter(|| bincode::serde::encode_to_vec(black_box(&entry), config));
    });
    let dir = tempfile::tempdir().expect("bench setup");
    let mut writer = JournalWriter::create(dir.path().join("bench.journal")).expect("bench setup");
    group.bench_function("append_buffered", |b| {
        b.iter(|| writer.append(black_box(&entry)))
    });
    group.bench_function("append_flushed", |b| {
        b.iter(|| {
            let offset = writer.append(black_box(&entry));
            let _ = writer.flush();
            offset
        });
    });
    group.finish();
}

fn settings() -> Criterion {
    ime_benches::criterion().measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = settings();
    targets = dispatch, journal
}
criterion_main!(benches);
