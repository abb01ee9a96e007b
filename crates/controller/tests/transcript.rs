//! Transcript tests of the controller at the `RaftEvent` level: command sequences in
//! `tests/transcripts/*.txt`, each command followed by `----` and the expected output
//! (the call's answer, then every decision in order), driven by one helper.
//!
//! Run with `UPDATE_TRANSCRIPTS=1` to rewrite the expected outputs after a deliberate
//! change (then read the diff).
//!
//! A region is written `ID:RANGE:vVER:cCONF` (`1:a..m:v1:c1`; `a..` is unbounded), a
//! split child `REGION@INDEX`. Commands:
//!
//! ```text
//! at MS [mem=BYTES]                 the time (since start) and memory in use from now on
//! config KEY=VALUE...               replaces the configuration (TOML keys, one word each)
//! load REGION [index=N]             request_load: queued / fenced / deferred / ... / refused
//! start ID                          a load's first stage
//! finish ID [failed]                a load's last stage (the copy succeeded or not)
//! not-started ID                    the memory range could not be created
//! deleted ID                        the deleter freed an Evicting region
//! evict ID REASON [cb=NAME]         evict-range RANGE REASON
//! apply ID vVER cCONF FIRST[..LAST] read ID vVER index=N ts=T [as=NAME]
//! release NAME                      tick
//! pin RANGE | unpin RANGE           ready ID TERM  (may a leader transfer be acknowledged)
//! fence RANGE... [as=NAME]          lift NAME [abandoned]
//! event KIND ARGS...                bypass KIND ARGS... as=NAME   (see `event` below)
//! gap regions=ID,.. ranges=RANGE,.. split-failed ID...
//! gc TARGET                         collected ID RANGE_ID SAFE_POINT
//! policy [evict=ID:REASON,..] [load=ID,..]
//! regions                           peers
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ime_controller::{Action, Config, Controller, Decisions, Env, FenceId, LoadStart};
use ime_eviction::Decision;
use ime_observer::{DeliveryGap, EventKind, GapCause, PeerRole, RaftEvent};
use ime_region::{
    EvictCallback, KeyRange, LoadTicket, ReadRequest, Region, RegionEpoch, RegionId,
    SnapshotTicket, SplitChild,
};
use ime_types::RangeId;

#[test]
fn transcripts() {
    let dir = ime_testkit::crate_dir!().join("tests/transcripts");
    ime_testkit::check_transcripts(&dir, || {
        let mut driver = Driver::new();
        move |command: &str| driver.run(command)
    });
}

/// Every event kind and every admission outcome appears in some transcript.
#[test]
fn the_transcripts_cover_every_event_kind_and_admission_outcome() {
    let dir = ime_testkit::crate_dir!().join("tests/transcripts");
    let mut all = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for &kind in EventKind::ALL {
        let command = format!("event {}", event_word(kind));
        let bypass = format!("bypass {}", event_word(kind));
        assert!(
            all.contains(&command) || all.contains(&bypass),
            "no transcript sends a {kind} event (`{command}`)"
        );
    }
    for answer in [
        "queued",
        "fenced",
        "deferred",
        "already cached",
        "refused: the engine is disabled",
        "refused: the region is in flashback",
        "refused: memory",
        "refused: overlaps",
        "refused: an uninitialized peer",
    ] {
        assert!(
            all.contains(&format!("----\n{answer}")),
            "no transcript shows the admission outcome `{answer}`"
        );
    }
}

/// The command word of each event kind.
fn event_word(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ApplySnapshot => "apply-snapshot",
        EventKind::Split => "split",
        EventKind::PrepareMerge => "prepare-merge",
        EventKind::CommitMerge => "commit-merge",
        EventKind::RollbackMerge => "rollback-merge",
        EventKind::ChangePeer => "change-peer",
        EventKind::RoleChange => "role",
        EventKind::TransferLeader => "transfer-leader",
        EventKind::DestroyPeer => "destroy",
        EventKind::IngestSst => "ingest-sst",
        EventKind::DeleteRange => "delete-range",
        EventKind::UnsafeDestroyRange => "unsafe-destroy-range",
        EventKind::PrepareFlashback => "prepare-flashback",
        EventKind::FinishFlashback => "finish-flashback",
        EventKind::SwitchWitness => "switch-witness",
        EventKind::CompactLog => "compact-log",
        EventKind::UnsafeRecovery => "unsafe-recovery",
        EventKind::ForceLeader => "force-leader",
    }
}

struct Driver {
    ctl: Controller,
    env: Env,
    loads: HashMap<RegionId, LoadTicket>,
    snapshots: HashMap<String, SnapshotTicket>,
    fences: HashMap<String, FenceId>,
    fired: Arc<Mutex<Vec<String>>>,
}

impl Driver {
    fn new() -> Self {
        Driver {
            ctl: Controller::new(Config::default()),
            env: Env::default(),
            loads: HashMap::new(),
            snapshots: HashMap::new(),
            fences: HashMap::new(),
            fired: Arc::default(),
        }
    }

    /// Runs one command: its answer, then its decisions, one per line.
    fn run(&mut self, command: &str) -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        let mut decisions = Decisions::new();
        let answer = self.execute(&words, &mut decisions);
        if let Err(broken) = self.ctl.map().check_invariants() {
            panic!("invariant broken after `{command}`: {broken}");
        }
        let mut out = String::new();
        if !answer.is_empty() {
            out.push_str(answer.trim_end());
            out.push('\n');
        }
        for action in decisions {
            writeln!(out, "> {action}").unwrap();
            if let Action::Fire(callback) = action {
                callback.fire();
            }
        }
        for fired in self.fired.lock().unwrap().drain(..) {
            writeln!(out, "{fired}").unwrap();
        }
        out
    }

    fn execute(&mut self, words: &[&str], out: &mut Decisions) -> String {
        let env = self.env;
        let id = || RegionId(words[1].parse().unwrap());
        match words[0] {
            "at" => {
                self.env.now = Duration::from_millis(words[1].parse().unwrap());
                if let Some(mem) = words.get(2) {
                    self.env.memory_used = number(mem, "mem=");
                }
                String::new()
            }
            "config" => {
                let toml: String = words[1..]
                    .iter()
                    .map(|w| {
                        let (k, v) = w.split_once('=').unwrap();
                        let quoted = v.parse::<u64>().is_ok() || v == "true" || v == "false";
                        if quoted {
                            format!("{k} = {v}\n")
                        } else {
                            format!("{k} = \"{v}\"\n")
                        }
                    })
                    .collect();
                let config = Config::from_toml(&toml).unwrap();
                self.ctl.set_config(config, out);
                String::new()
            }
            "load" => {
                let index = words.get(2).map_or(0, |w| number(w, "index="));
                match self.ctl.request_load(region(words[1]), index, env, out) {
                    Ok(admission) => admission_word(admission).to_owned(),
                    Err(refusal) => format!("refused: {refusal}"),
                }
            }
            "start" => match self.ctl.start_load(id(), env, out) {
                LoadStart::Start { ticket, range } => {
                    let line = format!("start {range} for {}", ticket.region);
                    self.loads.insert(id(), ticket);
                    line
                }
                other => format!("{other:?}"),
            },
            "finish" | "not-started" => {
                let Some(ticket) = self.loads.remove(&id()) else {
                    return format!("error: no load of region {} was started", id());
                };
                if words[0] == "not-started" {
                    self.ctl.load_not_started(&ticket, out);
                } else {
                    let copied = words.get(2) != Some(&"failed");
                    self.ctl.finish_load(&ticket, copied, out);
                }
                String::new()
            }
            "deleted" => match self.ctl.finish_eviction(id(), env, out) {
                Ok(()) => String::new(),
                Err(err) => format!("error: {err}"),
            },
            "evict" => {
                let callback = words.get(3).map(|w| self.callback(w));
                let step = self
                    .ctl
                    .evict(id(), words[2].parse().unwrap(), callback, out);
                format!("{step:?}")
            }
            "evict-range" => {
                let evicted =
                    self.ctl
                        .evict_overlapping(&range(words[1]), words[2].parse().unwrap(), out);
                format!("evicted {evicted:?}")
            }
            "apply" => {
                let (first, last) = match words[4].split_once("..") {
                    Some((f, l)) => (f.parse().unwrap(), l.parse().unwrap()),
                    None => (words[4].parse().unwrap(), words[4].parse().unwrap()),
                };
                let epoch = epoch(words[2], words[3]);
                let header = ime_region::ApplyHeader {
                    region: id(),
                    epoch,
                    first_index: first,
                    last_index: last,
                };
                match self.ctl.on_applied(&header, out) {
                    Some(reason) => format!("evicted: {reason}"),
                    None => "ok".to_owned(),
                }
            }
            "read" => self.read(words, out),
            "release" => {
                let Some(ticket) = self.snapshots.remove(words[1]) else {
                    return format!("no snapshot {}", words[1]);
                };
                match self.ctl.release_snapshot(ticket, out) {
                    Ok(()) => String::new(),
                    Err(err) => format!("error: {err}"),
                }
            }
            "tick" => {
                self.ctl.on_tick(env);
                String::new()
            }
            "pin" => {
                self.ctl.pin(range(words[1]), env, out);
                String::new()
            }
            "unpin" => {
                self.ctl.unpin(&range(words[1]), out);
                String::new()
            }
            "ready" => {
                let term = words[2].parse().unwrap();
                let ready = self.ctl.transfer_leader_ready(id(), term, env.now);
                if ready { "ready" } else { "waiting" }.to_owned()
            }
            "fence" => {
                let (ranges, name) = named(&words[1..]);
                let ranges = ranges.iter().map(|r| range(r)).collect();
                let fence =
                    self.ctl
                        .begin_fence(ranges, ime_region::EvictReason::UnannouncedChange, out);
                self.fences.insert(name.to_owned(), fence);
                format!("fence {name}")
            }
            "lift" => {
                let fence = *self.fences.get(words[1]).expect("a fence's name");
                let abandoned = words.get(2) == Some(&"abandoned");
                match self.ctl.lift_fence(fence, abandoned, env, out) {
                    Some(ranges) => format!("lifted {ranges:?}"),
                    None => "unknown fence".to_owned(),
                }
            }
            "event" => {
                let event = event(&words[1..]);
                match self.ctl.on_event(&event, env, out) {
                    Ok(()) => String::new(),
                    Err(err) => format!("error: {err}"),
                }
            }
            "bypass" => {
                let (args, name) = named(&words[1..]);
                let event = event(&args);
                match self.ctl.begin_bypass(&event, env, out) {
                    Ok(fence) => {
                        self.fences.insert(name.to_owned(), fence);
                        format!("fence {name} over {:?}", event.bypass_ranges())
                    }
                    Err(err) => format!("error: {err}"),
                }
            }
            "gap" => {
                let mut gap = DeliveryGap {
                    regions: Vec::new(),
                    ranges: Vec::new(),
                    kind: EventKind::Split,
                    cause: GapCause::QueueFull,
                };
                for word in &words[1..] {
                    if let Some(ids) = word.strip_prefix("regions=") {
                        gap.regions = ids
                            .split(',')
                            .map(|i| RegionId(i.parse().unwrap()))
                            .collect();
                    } else if let Some(ranges) = word.strip_prefix("ranges=") {
                        gap.ranges = ranges.split(',').map(range).collect();
                    }
                }
                self.ctl.on_gap(&gap, out);
                String::new()
            }
            "split-failed" => {
                let ids = words[1..].iter().map(|w| RegionId(w.parse().unwrap()));
                self.ctl.memory_split_failed(ids, out);
                String::new()
            }
            "gc" => self
                .ctl
                .gc_targets(words[1].parse().unwrap())
                .iter()
                .map(|t| format!("collect {} {} at {}\n", t.region, t.range, t.safe_point))
                .collect(),
            "collected" => {
                let range = RangeId(words[2].parse().unwrap());
                self.ctl
                    .mark_collected(id(), range, words[3].parse().unwrap());
                String::new()
            }
            "policy" => {
                let mut decision = Decision::default();
                for word in &words[1..] {
                    if let Some(list) = word.strip_prefix("evict=") {
                        for item in list.split(',') {
                            let (id, reason) = item.split_once(':').unwrap();
                            let id = RegionId(id.parse().unwrap());
                            decision.evict.push((id, reason.parse().unwrap()));
                        }
                    } else if let Some(list) = word.strip_prefix("load=") {
                        decision.load = list
                            .split(',')
                            .map(|i| RegionId(i.parse().unwrap()))
                            .collect();
                    }
                }
                self.ctl.apply_policy(decision, env, out);
                String::new()
            }
            "regions" => self.regions(),
            "peers" => self
                .ctl
                .policy_stats(|_| None, |_| (0, 0, 0))
                .iter()
                .map(|p| {
                    let peer = self.ctl.peer(p.id).unwrap();
                    format!(
                        "{} {} {} leader={} pinned={} cached={} applied={}\n",
                        p.id,
                        peer.region.range,
                        peer.region.epoch,
                        p.is_leader,
                        p.pinned,
                        p.cached,
                        self.ctl.applied(p.id)
                    )
                })
                .collect(),
            other => panic!("unknown transcript command `{other}`"),
        }
    }

    fn read(&mut self, words: &[&str], out: &mut Decisions) -> String {
        let request = ReadRequest {
            epoch_version: number(words[2], "v"),
            applied_index: number(words[3], "index="),
            read_ts: number(words[4], "ts="),
        };
        let id = RegionId(words[1].parse().unwrap());
        match self.ctl.acquire_snapshot(id, request, out) {
            Ok((ticket, range)) => {
                let name = words.get(5).map_or("_", |w| w.trim_start_matches("as="));
                self.snapshots.insert(name.to_owned(), ticket);
                format!("snapshot {name} of {range}")
            }
            Err(miss) => format!("miss: {miss}"),
        }
    }

    /// The map, then what the controller keeps beside it.
    fn regions(&self) -> String {
        let mut out = String::new();
        for info in self.ctl.map().regions() {
            let id = info.region.id;
            write!(
                out,
                "{id} {} {} {} sp={} applied={} snaps={}",
                info.region.range,
                info.region.epoch,
                info.state,
                info.safe_point,
                info.applied_index,
                info.snapshots
            )
            .unwrap();
            if let Some(cached) = self.ctl.cached(id) {
                write!(out, " {} collected={}", cached.range, cached.collected).unwrap();
            }
            out.push('\n');
        }
        let deferred: Vec<_> = self.ctl.deferred().collect();
        if !deferred.is_empty() {
            writeln!(out, "deferred {deferred:?}").unwrap();
        }
        for (id, w) in self.ctl.warmups() {
            writeln!(
                out,
                "warm-up of {id} in term {} until {:?}",
                w.term, w.deadline
            )
            .unwrap();
        }
        let fenced: Vec<_> = self.ctl.fenced_loads().collect();
        if !fenced.is_empty() {
            writeln!(out, "held by fences {fenced:?}").unwrap();
        }
        out
    }

    fn callback(&self, word: &str) -> EvictCallback {
        let name = word.trim_start_matches("cb=").to_owned();
        let fired = Arc::clone(&self.fired);
        EvictCallback::new(move |end| {
            fired
                .lock()
                .unwrap()
                .push(format!("callback {name}: {end:?}"));
        })
    }
}

fn admission_word(admission: ime_controller::Admission) -> &'static str {
    match admission {
        ime_controller::Admission::Queued => "queued",
        ime_controller::Admission::Fenced => "fenced",
        ime_controller::Admission::Deferred => "deferred",
        ime_controller::Admission::AlreadyCached => "already cached",
    }
}

/// Splits a trailing `as=NAME` off `words`.
fn named<'a>(words: &[&'a str]) -> (Vec<&'a str>, &'a str) {
    match words.split_last() {
        Some((last, rest)) if last.starts_with("as=") => {
            (rest.to_vec(), last.trim_start_matches("as="))
        }
        _ => (words.to_vec(), "_"),
    }
}

/// An event from its command words (after `event`).
fn event(words: &[&str]) -> RaftEvent {
    let r = |i: usize| region(words[i]);
    let term = |i: usize| number(words[i], "term=");
    match words[0] {
        "apply-snapshot" => {
            let (mut before, mut index) = (None, 0);
            for word in &words[2..] {
                if let Some(b) = word.strip_prefix("before=") {
                    before = Some(region(b));
                } else {
                    index = number(word, "index=");
                }
            }
            RaftEvent::ApplySnapshot {
                before,
                after: r(1),
                applied_index: index,
            }
        }
        "split" => {
            assert_eq!(words[2], "into");
            let children = words[3..]
                .iter()
                .map(|w| {
                    let (region_word, index) = w.split_once('@').unwrap();
                    SplitChild {
                        region: region(region_word),
                        applied_index: index.parse().unwrap(),
                    }
                })
                .collect();
            RaftEvent::Split {
                before: r(1),
                children,
            }
        }
        "prepare-merge" => RaftEvent::PrepareMerge {
            before: r(1),
            after: r(2),
        },
        "commit-merge" => RaftEvent::CommitMerge {
            before: r(1),
            after: r(2),
            source: r(3),
        },
        "rollback-merge" => RaftEvent::RollbackMerge {
            before: r(1),
            after: r(2),
        },
        "change-peer" => RaftEvent::ChangePeer {
            before: r(1),
            after: r(2),
        },
        "role" => RaftEvent::RoleChange {
            region: r(1),
            role: match words[2] {
                "leader" => PeerRole::Leader,
                "follower" => PeerRole::Follower,
                "candidate" => PeerRole::Candidate,
                "learner" => PeerRole::Learner,
                other => panic!("unknown role {other}"),
            },
            term: term(3),
        },
        "transfer-leader" => RaftEvent::TransferLeader {
            region: r(1),
            term: term(2),
            cached: !words.contains(&"not-cached"),
        },
        "destroy" => RaftEvent::DestroyPeer {
            id: RegionId(words[1].parse().unwrap()),
            region: words.get(2).map(|w| region(w)),
        },
        "ingest-sst" => RaftEvent::IngestSst {
            region: r(1),
            ranges: words[2..].iter().map(|w| range(w)).collect(),
        },
        "delete-range" => RaftEvent::DeleteRange {
            region: r(1),
            range: range(words[2]),
        },
        "unsafe-destroy-range" => RaftEvent::UnsafeDestroyRange {
            range: range(words[1]),
        },
        "prepare-flashback" => RaftEvent::PrepareFlashback {
            before: r(1),
            after: r(2),
        },
        "finish-flashback" => RaftEvent::FinishFlashback {
            before: r(1),
            after: r(2),
        },
        "switch-witness" => RaftEvent::SwitchWitness {
            before: r(1),
            after: r(2),
            is_witness: words.get(3) == Some(&"witness"),
        },
        "compact-log" => RaftEvent::CompactLog {
            region: r(1),
            compact_index: number(words[2], "index="),
        },
        "unsafe-recovery" => RaftEvent::UnsafeRecovery { region: r(1) },
        "force-leader" => RaftEvent::ForceLeader {
            region: r(1),
            term: term(2),
        },
        other => panic!("unknown event `{other}`"),
    }
}

/// `ID:RANGE:vVER:cCONF`.
fn region(word: &str) -> Region {
    let parts: Vec<&str> = word.split(':').collect();
    assert_eq!(
        parts.len(),
        4,
        "a region is ID:RANGE:vVER:cCONF, not `{word}`"
    );
    Region::new(
        RegionId(parts[0].parse().unwrap()),
        range(parts[1]),
        epoch(parts[2], parts[3]),
    )
}

/// `start..end`, `start..` (unbounded) or `..` (every key).
fn range(word: &str) -> KeyRange {
    let (start, end) = word.split_once("..").unwrap();
    KeyRange::new(start, end).unwrap()
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
