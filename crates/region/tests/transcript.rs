//! Transcript tests: event sequences in `tests/transcripts/*.txt`, each command followed by
//! `----` and the expected output, driven against a [`RegionMap`] by one helper.
//!
//! Run with `UPDATE_TRANSCRIPTS=1` to rewrite the expected outputs after a deliberate
//! change (then read the diff).
//!
//! Commands (keys are text; a range is `start..end`, `start..` is unbounded):
//!
//! ```text
//! insert ID RANGE vVER cCONF [index=N]    evict ID REASON [cb=NAME]
//! load ID | loaded ID | load-failed ID     evict-range RANGE REASON
//! deleted ID                               split ID RANGE vVER cCONF into ID:RANGE:INDEX... vVER cCONF
//! apply ID vVER cCONF FIRST[..LAST]        change-peer ID vVER cCONF cNEWCONF
//! check-epoch ID vVER cCONF                read ID vVER index=N ts=T [as=NAME]
//! release NAME                             safepoint ID TS
//! regions                                  historical
//! release-alone NAME                       hand-back NAME
//! ```
//!
//! `release-alone` hands a ticket back on its own, without the map (as readers do); when
//! that empties a record the map waits on, the drained record is kept under the
//! snapshot's name until `hand-back`.
//!
//! After every command the map's invariants are checked (once every drained record is
//! handed back), and callbacks that fired are printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use ime_region::*;

#[test]
fn transcripts() {
    let dir = ime_testkit::crate_dir!().join("tests/transcripts");
    ime_testkit::check_transcripts(&dir, || {
        let mut driver = Driver::default();
        move |command: &str| driver.run(command)
    });
}

#[derive(Default)]
struct Driver {
    map: RegionMap,
    loads: HashMap<RegionId, LoadTicket>,
    snapshots: HashMap<String, SnapshotTicket>,
    drained: HashMap<String, Drained>,
    fired: Arc<Mutex<Vec<String>>>,
}

impl Driver {
    fn run(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        let mut out = self.execute(&words);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if let Err(broken) = self.map.check_invariants().or_else(|broken| {
            if self.drained.is_empty() {
                Err(broken)
            } else {
                Ok(())
            }
        }) {
            panic!("invariant broken after `{command}`: {broken}");
        }
        for fired in self.fired.lock().unwrap().drain(..) {
            writeln!(out, "{fired}").unwrap();
        }
        out
    }

    fn execute(&mut self, words: &[&str]) -> String {
        let id = || RegionId(words[1].parse().unwrap());
        match words[0] {
            "insert" => {
                let index = words.get(5).map_or(0, |w| number(w, "index="));
                match self
                    .map
                    .insert_pending(region(words[1], words[2], words[3], words[4]), index)
                {
                    Ok(replaced) if replaced.is_empty() => "ok".to_owned(),
                    Ok(replaced) => format!("ok, replaced {}", ids(&replaced)),
                    Err(rejected) => format!("rejected: {rejected}"),
                }
            }
            "load" => match self.map.start_loading(id()) {
                Ok(ticket) => {
                    let line = format!("Loading {}", ticket.region);
                    self.loads.insert(id(), ticket);
                    line
                }
                Err(err) => format!("error: {err}"),
            },
            "loaded" | "load-failed" => {
                let Some(ticket) = self.loads.remove(&id()) else {
                    return format!("error: no load of region {} was started", id());
                };
                let ends = if words[0] == "loaded" {
                    self.map.finish_loading(&ticket)
                } else {
                    self.map.fail_loading(&ticket)
                };
                ends.into_iter().map(|end| load_end(end) + "\n").collect()
            }
            "evict" => {
                let callback = words
                    .get(3)
                    .map(|w| self.callback(w.trim_start_matches("cb=")));
                let eviction = self.map.evict(id(), words[2].parse().unwrap(), callback);
                show_eviction(eviction)
            }
            "evict-range" => {
                let evictions = self
                    .map
                    .evict_overlapping(&range(words[1]), words[2].parse().unwrap());
                evictions
                    .into_iter()
                    .map(|e| show_eviction(e) + "\n")
                    .collect()
            }
            "deleted" => match self.map.finish_eviction(id()) {
                Ok(callbacks) => {
                    callbacks.into_iter().for_each(EvictCallback::fire);
                    "removed".to_owned()
                }
                Err(err) => format!("error: {err}"),
            },
            "split" => self.split(words),
            "apply" => {
                let (first, last) = match words[4].split_once("..") {
                    Some((f, l)) => (f.parse().unwrap(), l.parse().unwrap()),
                    None => (words[4].parse().unwrap(), words[4].parse().unwrap()),
                };
                match self
                    .map
                    .report_applied(id(), epoch(words[2], words[3]), first, last)
                {
                    ApplyOutcome::Gap(gap) => show_gap(gap),
                    other => format!("{other:?}"),
                }
            }
            "change-peer" => {
                let before = self
                    .map
                    .region(id())
                    .cloned()
                    .unwrap_or_else(|| region(words[1], "..", words[2], words[3]));
                let before = Region {
                    epoch: epoch(words[2], words[3]),
                    ..before
                };
                let after = Region {
                    epoch: epoch(words[2], words[4]),
                    ..before.clone()
                };
                match self.map.change_epoch(&before, &after) {
                    EpochChange::Gap(gap) => show_gap(gap),
                    other => format!("{other:?}"),
                }
            }
            "check-epoch" => match self.map.check_epoch(id(), epoch(words[2], words[3])) {
                Some(gap) => show_gap(gap),
                None => "consistent".to_owned(),
            },
            "read" => self.read(words),
            "release" => {
                let ticket = self
                    .snapshots
                    .remove(words[1])
                    .expect("unknown snapshot name");
                match self.map.release_snapshot(ticket) {
                    Ok(Some(ready)) => format!("released; region {ready} ready to delete"),
                    Ok(None) => "released".to_owned(),
                    Err(err) => format!("error: {err}"),
                }
            }
            "release-alone" => {
                let ticket = self
                    .snapshots
                    .remove(words[1])
                    .expect("unknown snapshot name");
                match ticket.release() {
                    Ok(Some(drained)) => {
                        self.drained.insert(words[1].to_owned(), drained);
                        "released; the record is drained".to_owned()
                    }
                    Ok(None) => "released".to_owned(),
                    Err(err) => format!("error: {err}"),
                }
            }
            "hand-back" => {
                let drained = self.drained.remove(words[1]).expect("nothing drained");
                match self.map.drained(drained) {
                    Some(ready) => format!("region {ready} ready to delete"),
                    None => "nothing to do".to_owned(),
                }
            }
            "safepoint" => match self.map.advance_safe_point(id(), words[2].parse().unwrap()) {
                Ok(sp) => format!("safe point {sp}"),
                Err(err) => format!("error: {err}"),
            },
            "regions" => self
                .map
                .regions()
                .iter()
                .map(|info| show_info(info) + "\n")
                .collect(),
            "historical" => self
                .map
                .historical()
                .iter()
                .map(|h| {
                    format!(
                        "{} v{} {} snapshots={} oldest={:?}\n",
                        h.region, h.version, h.range, h.snapshots, h.oldest_snapshot_ts
                    )
                })
                .collect(),
            other => panic!("unknown transcript command `{other}`"),
        }
    }

    fn split(&mut self, words: &[&str]) -> String {
        let source = region(words[1], words[2], words[3], words[4]);
        assert_eq!(words[5], "into");
        let (version, conf) = (words[words.len() - 2], words[words.len() - 1]);
        let children: Vec<SplitChild> = words[6..words.len() - 2]
            .iter()
            .map(|spec| {
                let mut parts = spec.split(':');
                let (id, range, index) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                SplitChild {
                    region: region(id, range, version, conf),
                    applied_index: index.parse().unwrap(),
                }
            })
            .collect();
        match self.map.split(&source, &children) {
            Ok(SplitOutcome::Gap(gap)) => show_gap(gap),
            Ok(SplitOutcome::Derived { state, children }) => {
                format!("derived {} as {state}", ids(&children))
            }
            Ok(SplitOutcome::ReplacedPending { inserted, rejected }) => {
                let rejected: Vec<String> = rejected
                    .iter()
                    .map(|(id, why)| format!("{id} ({why})"))
                    .collect();
                format!(
                    "replaced pending by {}; rejected [{}]",
                    ids(&inserted),
                    rejected.join(", ")
                )
            }
            Ok(other) => format!("{other:?}"),
            Err(err) => format!("error: {err}"),
        }
    }

    fn read(&mut self, words: &[&str]) -> String {
        let request = ReadRequest {
            epoch_version: number(words[2], "v"),
            applied_index: number(words[3], "index="),
            read_ts: number(words[4], "ts="),
        };
        match self
            .map
            .acquire_snapshot(RegionId(words[1].parse().unwrap()), request)
        {
            Ok(ticket) => {
                let name = words
                    .get(5)
                    .map_or("_", |w| w.trim_start_matches("as="))
                    .to_owned();
                self.snapshots.insert(name.clone(), ticket);
                format!("snapshot {name}")
            }
            Err(ReadRefused { gap: Some(gap), .. }) => format!("miss: {}", show_gap(gap)),
            Err(refused) => format!("miss: {}", refused.miss),
        }
    }

    fn callback(&self, name: &str) -> EvictCallback {
        let (fired, name) = (Arc::clone(&self.fired), name.to_owned());
        EvictCallback::new(move |end| {
            fired
                .lock()
                .unwrap()
                .push(format!("callback {name}: {end:?}"))
        })
    }
}

fn show_eviction(eviction: Eviction) -> String {
    let line = format!(
        "{} ({}): {:?}",
        eviction.region, eviction.reason, eviction.step
    );
    eviction.callbacks.into_iter().for_each(EvictCallback::fire);
    line
}

fn show_gap(gap: Gap) -> String {
    let line = gap.to_string();
    format!("{line}; {}", show_eviction(gap.eviction))
}

fn load_end(end: LoadEnd) -> String {
    match end {
        LoadEnd::Activated(id) => format!("{id} Active"),
        LoadEnd::Evicted(eviction) => show_eviction(eviction),
    }
}

fn show_info(info: &RegionInfo) -> String {
    let mut line = format!(
        "{} {} {} {} sp={} applied={} snaps={}",
        info.region.id,
        info.region.range,
        info.region.epoch,
        info.state,
        info.safe_point,
        info.applied_index,
        info.snapshots
    );
    if let Some(reason) = info.evict_reason {
        write!(line, " reason={reason}").unwrap();
    }
    line
}

fn ids(ids: &[RegionId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn number(word: &str, prefix: &str) -> u64 {
    word.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("`{word}` should start with `{prefix}`"))
        .parse()
        .unwrap()
}

fn epoch(version: &str, conf: &str) -> RegionEpoch {
    RegionEpoch::new(number(version, "v"), number(conf, "c"))
}

fn range(text: &str) -> KeyRange {
    let (start, end) = text.split_once("..").expect("a range is start..end");
    KeyRange::new(start, end).unwrap()
}

fn region(id: &str, range_text: &str, version: &str, conf: &str) -> Region {
    Region::new(
        RegionId(id.parse().unwrap()),
        range(range_text),
        epoch(version, conf),
    )
}
