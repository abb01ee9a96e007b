//! The fault-injection wrapper drops, delays and duplicates chosen kinds, and nothing else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use ime_observer::*;

#[test]
fn a_dropped_apply_snapshot_never_reaches_the_observer() {
    // `docs/scenarios.md` item 2: the apply-snapshot event is lost on its way to the engine.
    let faulty = Arc::new(FaultyObserver::new(
        Recorder::new("engine"),
        vec![FaultRule::times(
            EventKind::ApplySnapshot,
            FaultAction::Drop,
            1,
        )],
    ));
    let bus = EventBus::new().unwrap();
    bus.register(faulty.clone(), 0);
    let seed = common::seed_sequence();
    for event in seed.iter().chain(&seed) {
        let _ = bus.publish(event.clone());
    }
    bus.close();
    let kinds: Vec<_> = faulty
        .inner()
        .events()
        .iter()
        .map(RaftEvent::kind)
        .collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [RoleChange, Split, RoleChange, ApplySnapshot, Split],
        "only the first snapshot is dropped"
    );
    assert_eq!(faulty.dropped(), [seed[1].clone()]);
    assert!(
        faulty.inner().gaps().is_empty(),
        "a dropped event is silent: detecting it is the engine's job"
    );
}

#[test]
fn duplicate_and_delay_keep_the_order() {
    let faulty = FaultyObserver::new(Recorder::new("engine"), Vec::new());
    faulty.add_rule(FaultRule::always(EventKind::Split, FaultAction::Duplicate));
    faulty.add_rule(FaultRule::always(
        EventKind::ApplySnapshot,
        FaultAction::Delay(Duration::from_millis(5)),
    ));
    for event in common::seed_sequence() {
        faulty.on_event(&event).unwrap();
    }
    let kinds: Vec<_> = faulty
        .inner()
        .events()
        .iter()
        .map(RaftEvent::kind)
        .collect();
    use EventKind::*;
    assert_eq!(kinds, [RoleChange, ApplySnapshot, Split, Split]);
    faulty.clear_rules();
    faulty.on_event(&common::seed_sequence()[2]).unwrap();
    assert_eq!(faulty.inner().events().len(), 5);
}
