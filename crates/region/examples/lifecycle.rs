//! `ime-region` alone: one region's life in the cache, driven the way an engine drives
//! it — load, apply reports, a reader's snapshot holding back GC, a split that its
//! children inherit, an eviction that waits for the reader, and a missed apply report
//! caught as a gap instead of a crash.
//!
//! Run it: `cargo run -p ime-region --example lifecycle`.

use ime_region::{
    ApplyOutcome, EvictReason, EvictStep, KeyRange, LoadEnd, ReadMiss, ReadRequest, Region,
    RegionEpoch, RegionId, RegionMap, RegionState, SplitChild, SplitOutcome,
};

/// A refusal this example does not expect, as an error.
fn refused(what: impl std::fmt::Debug) -> String {
    format!("unexpected refusal: {what:?}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut map = RegionMap::new();
    let epoch = RegionEpoch::new(5, 1);
    let region = Region::new(RegionId(1), KeyRange::new("a", "z")?, epoch);

    // Asked for at applied index 10: Pending, then Loading (the loader takes its disk
    // snapshot), then Active.
    map.insert_pending(region.clone(), 10).map_err(refused)?;
    let load = map.start_loading(RegionId(1))?;
    assert!(matches!(
        map.finish_loading(&load)[..],
        [LoadEnd::Activated(RegionId(1))]
    ));
    println!("region 1: {:?}", map.state(RegionId(1)));

    // The apply side reports entries 11..=12; a reader at index 12 and epoch 5 gets a
    // snapshot ticket, and the region's safe point cannot pass its read_ts.
    assert!(matches!(
        map.report_applied(RegionId(1), epoch, 11, 12),
        ApplyOutcome::Advanced
    ));
    let read = ReadRequest {
        epoch_version: 5,
        applied_index: 12,
        read_ts: 400,
    };
    let ticket = map.acquire_snapshot(RegionId(1), read).map_err(refused)?;
    assert_eq!(map.advance_safe_point(RegionId(1), 1_000)?, 400);
    println!("safe point held at 400 by the reader");

    // The region splits at "m" (version 6): the children inherit Active, and the
    // reader's ticket on the parent still holds their safe points back.
    let children = [
        SplitChild {
            region: Region::new(
                RegionId(1),
                KeyRange::new("a", "m")?,
                RegionEpoch::new(6, 1),
            ),
            applied_index: 13,
        },
        SplitChild {
            region: Region::new(
                RegionId(2),
                KeyRange::new("m", "z")?,
                RegionEpoch::new(6, 1),
            ),
            applied_index: 13,
        },
    ];
    let SplitOutcome::Derived {
        state,
        children: ids,
    } = map.split(&region, &children)?
    else {
        return Err("the cached region matched the split's source: it derives".into());
    };
    println!("split into {ids:?}, both {state:?}");
    assert_eq!(map.advance_safe_point(RegionId(2), 1_000)?, 400);

    // The reader finishes: the children's safe points are free to move.
    map.release_snapshot(ticket)?;
    assert_eq!(map.advance_safe_point(RegionId(2), 1_000)?, 1_000);

    // Evicting region 2 while a reader holds it waits for the reader; its release lets
    // the eviction go on, and the engine then drops the data.
    let read = ReadRequest {
        epoch_version: 6,
        applied_index: 13,
        read_ts: 1_500,
    };
    let ticket = map.acquire_snapshot(RegionId(2), read).map_err(refused)?;
    let eviction = map.evict(RegionId(2), EvictReason::Manual, None);
    assert_eq!(eviction.step, EvictStep::AwaitingSnapshots);
    assert_eq!(map.release_snapshot(ticket)?, Some(RegionId(2)));
    assert_eq!(map.state(RegionId(2)), Some(RegionState::Evicting));
    map.finish_eviction(RegionId(2))?;

    // Entry 14 of region 1 was applied but never reported: the report of 15 shows the
    // gap, and the region is evicted (IndexGap) rather than served stale.
    let ApplyOutcome::Gap(gap) = map.report_applied(RegionId(1), RegionEpoch::new(6, 1), 15, 15)
    else {
        return Err("a report past the next index is a gap".into());
    };
    println!("{gap}");
    assert_eq!(gap.eviction.reason, EvictReason::IndexGap);
    let late = ReadRequest {
        epoch_version: 6,
        applied_index: 15,
        read_ts: 2_000,
    };
    assert!(matches!(
        map.try_acquire_snapshot(RegionId(1), late),
        Err(ReadMiss::NotReadable(_))
    ));
    map.finish_eviction(RegionId(1))?;
    assert!(map.is_empty());
    Ok(map.check_invariants()?)
}
