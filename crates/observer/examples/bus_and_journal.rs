//! `ime-observer` alone: a bus that tells two observers what Raft does to regions — one
//! of them failing on purpose, which the bus contains and reports as a gap for it alone —
//! with a journal recording every event, replayed afterwards in the same order.
//!
//! Run it: `cargo run -p ime-observer --example bus_and_journal`.

use std::error::Error;
use std::sync::{Arc, Mutex};

use ime_observer::{
    DeliveryGap, EventBus, JournalObserver, JournalWriter, ObserverResult, PeerRole, RaftEvent,
    RaftObserver, Recorder, replay,
};
use ime_region::{KeyRange, Region, RegionEpoch, RegionId, SplitChild};

/// Counts the events it sees and the gaps it is told of; refuses every membership change.
#[derive(Default)]
struct Picky {
    seen: Mutex<(usize, Vec<DeliveryGap>)>,
}

impl RaftObserver for Picky {
    fn name(&self) -> &str {
        "picky"
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        if let Ok(mut seen) = self.seen.lock() {
            seen.0 += 1;
        }
        match event {
            RaftEvent::ChangePeer { .. } => Err("membership changes are not for me".into()),
            _ => Ok(()),
        }
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.1.push(gap.clone());
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.journal");
    let bus = EventBus::new()?;
    // Higher priority first: the journal records an event before anyone acts on it.
    bus.register(
        Arc::new(JournalObserver::new(JournalWriter::create(&path)?)),
        100,
    );
    let picky = Arc::new(Picky::default());
    bus.register(Arc::clone(&picky) as Arc<dyn RaftObserver>, 10);

    let range = KeyRange::new("a", "z")?;
    let region = |version, conf_ver| {
        Region::new(
            RegionId(7),
            range.clone(),
            RegionEpoch::new(version, conf_ver),
        )
    };
    let events = [
        RaftEvent::RoleChange {
            region: region(1, 1),
            role: PeerRole::Leader,
            term: 3,
        },
        RaftEvent::ChangePeer {
            before: region(1, 1),
            after: region(1, 2),
        },
        RaftEvent::Split {
            before: region(1, 2),
            children: vec![
                SplitChild {
                    region: child(7, "a", "m")?,
                    applied_index: 20,
                },
                SplitChild {
                    region: child(8, "m", "z")?,
                    applied_index: 5,
                },
            ],
        },
    ];
    for event in events {
        let kind = event.kind();
        let report = bus.publish(event);
        println!(
            "{kind:?}: {:?}, {} failure(s)",
            report.delivery,
            report.failures.len()
        );
    }
    bus.close(); // queued events are delivered, the journal flushed

    let (seen, gaps) = picky.seen.lock().map_err(|_| "poisoned")?.clone();
    println!(
        "picky saw {seen} events and was told of {} gap(s)",
        gaps.len()
    );
    assert_eq!(
        (seen, gaps.len()),
        (3, 1),
        "its own failure is a gap for it"
    );

    let recorder = Recorder::new("replay");
    let (contents, errors) = replay(&path, &recorder)?;
    assert!(errors.is_empty() && contents.truncated_at.is_none());
    let kinds: Vec<_> = recorder.events().iter().map(RaftEvent::kind).collect();
    println!("replayed from {}: {kinds:?}", path.display());
    assert_eq!(kinds.len(), 3);
    Ok(())
}

fn child(id: u64, start: &str, end: &str) -> Result<Region, Box<dyn Error>> {
    Ok(Region::new(
        RegionId(id),
        KeyRange::new(start, end)?,
        RegionEpoch::new(2, 2),
    ))
}
