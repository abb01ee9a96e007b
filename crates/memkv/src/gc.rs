//! Compaction and MVCC garbage collection: a range's frozen memtables folded into its
//! delta run, or its layers rebuilt into one base run per column family, dropping
//! shadowed entries and, below a safe point, dead versions.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};

use crate::codec::{WriteRecord, WriteType, encode_ts_desc, split_mvcc_key};
use crate::layer::{Packed, Run, RunBuilder, partition_point};
use crate::memory::MemoryTracker;
use crate::memtable::Span;
use crate::snapshot::run_span;
use crate::store::{CfLayers, RangeData};
use crate::{KeyRange, MemError, MemKv, RangeId};

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Entries the compaction read (the layers it merged, all column families: the
    /// memtables and the delta, and the base when it rebuilt that too).
    pub entries_before: usize,
    /// Entries in the runs it built.
    pub entries_after: usize,
    /// Write records removed by MVCC GC.
    pub versions_removed: usize,
    /// Default-CF values removed with the puts that pointed to them.
    pub values_removed: usize,
    /// Write-CF keys that could not be decoded (kept untouched).
    pub undecodable: usize,
    /// Whether the rebuilt runs replaced the range's layers. False when the work was lost:
    /// a concurrent compaction installed first, or the range was split or dropped
    /// meanwhile. A caller that needs the collection (a GC at a new safe point) must then
    /// run it again, on the range or on its split children.
    pub installed: bool,
}

impl MemKv {
    /// Folds range `id`'s memtables into its runs, in every column family. Most
    /// compactions rebuild only the delta run (the delta and the memtables merged, the
    /// base untouched); once the delta and the memtables reach the base, or with
    /// `safe_point`, the base, the delta and the memtables become one new base (the
    /// delta left empty). A rebuilt run keeps each key's newest entry; a new base drops
    /// deletions too, and a new delta those of keys the base does not hold. With
    /// `safe_point`, MVCC GC below it, with TiKV's rules: per user
    /// key keep every version above the safe point and the newest put at or below it;
    /// drop older versions, rollbacks and locks at or below it, and everything under a
    /// delete with the delete itself; drop the default-CF values of dropped puts. Two
    /// write records of one key and commit_ts (two sequence numbers) are one version
    /// (tikv/tikv#17060).
    ///
    /// Snapshots taken before keep reading the old layers; snapshots below the
    /// compaction's sequence are refused afterwards.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`], [`MemError::RunTooLarge`].
    pub fn compact(&self, id: RangeId, safe_point: Option<u64>) -> Result<GcStats, MemError> {
        let range = self.range(id)?;
        let mut stats = GcStats::default();
        // While a load is under way, its older entries must stay hidden under the writes
        // that came after them: deletions are kept, and GC (which drops what deletions
        // hide) waits for the load to end.
        let keep_deletions = range.loads.load(Ordering::SeqCst) > 0;
        if keep_deletions && safe_point.is_some() {
            return Ok(stats);
        }
        let Some(safe_point) = safe_point else {
            // A compaction without GC: the steps of [`MemKv::compaction`], one a column
            // family.
            let mut job = self.start(range, keep_deletions);
            loop {
                if let Some(stats) = self.compaction_step(&mut job, usize::MAX)? {
                    return Ok(stats);
                }
            }
        };
        let (layers, seq) = self.freeze(&range);
        let spans = layers.each_ref().map(|cf| {
            cf.frozen
                .iter()
                .map(|m| m.span_copy(&range.bounds, u64::MAX))
                .collect::<Vec<_>>()
        });
        let full = true;
        let tracker = Some(self.tracker());
        let bounds = &range.bounds;
        // Column family `i`'s merge, straight into its run (copied once), but the keys
        // `keep` refuses: the base, the delta and the memtables into a new base.
        let build = |i: usize, stats: &mut GcStats, keep: Option<Keep<'_>>| {
            let (run, sides) = sources(&layers[i], bounds, &spans[i], full);
            let builder = merge_builder(&layers[i], bounds, full, self.tracker());
            let mut sink = Builder { builder, keep };
            let deletions = Deletions::Drop;
            newest_entries(run, &sides, (bounds, seq, deletions), stats, &mut sink)?;
            stats.entries_after += sink.builder.len();
            Ok::<Run, MemError>(sink.builder.finish(tracker))
        };
        // The write CF is collected first: the values of the puts it drops leave the
        // default CF as that one is merged.
        let mut merged = Vec::new();
        let (run, sides) = sources(&layers[2], bounds, &spans[2], full);
        let at = (&**bounds, seq, Deletions::Drop);
        newest_entries(run, &sides, at, &mut stats, &mut merged)?;
        let (write, dropped_values) = gc_write_cf(merged, safe_point, &mut stats);
        stats.values_removed = dropped_values.len();
        stats.entries_after += write.len();
        let write = Run::from_parts(&write, tracker)?;
        let runs = [
            build(0, &mut stats, Some(&|key| !dropped_values.contains(key)))?,
            build(1, &mut stats, None)?,
            write,
        ];
        stats.installed = self.install(&range, &layers, (runs, full), seq);
        Ok(stats)
    }

    /// Whether a compaction of range `id` is due ([`MemKv::wants_compaction`]) and none is
    /// claimed yet; if so, it is claimed, until [`MemKv::compact_some`] ends it (installed,
    /// failed, or the range gone). So a compaction is asked for once, however many writes
    /// see the memtables grown.
    pub fn claim_compaction(&self, id: RangeId) -> bool {
        if !self.wants_compaction(id).unwrap_or(false) {
            return false;
        }
        let mut claims = self.claims();
        let fresh = !claims.contains_key(&id);
        if fresh {
            claims.insert(id, None);
        }
        fresh
    }

    /// Up to `entries` entries of range `id`'s compaction without GC (at least one step:
    /// see [`MemKv::compaction_step`]; `usize::MAX`: all of it), started if none is under
    /// way and kept between calls (by one caller at a time: the claim's holder). Returns
    /// its stats once it ended (the runs installed), `None` while pieces remain. Its claim
    /// ([`MemKv::claim_compaction`]) ends with it, or with an error.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`], [`MemError::RunTooLarge`].
    pub fn compact_some(&self, id: RangeId, entries: usize) -> Result<Option<GcStats>, MemError> {
        let under_way = self.claims().get_mut(&id).and_then(Option::take);
        let step = |job: &mut Compaction| loop {
            match self.compaction_step(job, entries) {
                Ok(None) if entries == usize::MAX => {}
                done => return done,
            }
        };
        let done = match under_way.map_or_else(|| self.compaction(id), Ok) {
            Ok(mut job) => match step(&mut job) {
                Ok(None) => {
                    self.claims().insert(id, Some(job));
                    return Ok(None);
                }
                done => done,
            },
            Err(err) => Err(err),
        };
        self.claims().remove(&id);
        done
    }

    fn claims(&self) -> MutexGuard<'_, HashMap<RangeId, Option<Compaction>>> {
        self.compactions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a compaction of range `id` without GC, to be done a piece at a time by
    /// [`MemKv::compaction_step`]: its memtables are frozen now (writes go on into new
    /// ones), and the runs built from them are installed by the step that ends it. Does
    /// what [`MemKv::compact`] does with no safe point, in pieces: between two steps,
    /// whoever runs them can do something else (another thread may take the next step).
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`].
    pub fn compaction(&self, id: RangeId) -> Result<Compaction, MemError> {
        let range = self.range(id)?;
        let keep_deletions = range.loads.load(Ordering::SeqCst) > 0;
        Ok(self.start(range, keep_deletions))
    }

    fn start(&self, range: Arc<RangeData>, keep_deletions: bool) -> Compaction {
        let (layers, seq) = self.freeze(&range);
        let full = wants_full(&layers, &range.bounds);
        Compaction {
            range,
            layers,
            seq,
            full,
            keep_deletions,
            stats: GcStats::default(),
            pieces: Vec::new(),
            building: None,
            runs: Vec::with_capacity(3),
            done: None,
        }
    }

    /// One step of `job`: the merge of one piece of a column family, about `entries`
    /// entries of its sources (cut at keys sampled from them; `usize::MAX` takes the
    /// whole column family), into the run it builds. Returns the compaction's stats once
    /// the step that ends it has installed the runs (and again, doing nothing, if asked
    /// once more); `None` while steps remain.
    ///
    /// # Errors
    /// [`MemError::RunTooLarge`]: the job is then to be dropped (the memtables stay,
    /// frozen, for a later compaction).
    pub fn compaction_step(
        &self,
        job: &mut Compaction,
        entries: usize,
    ) -> Result<Option<GcStats>, MemError> {
        if let Some(stats) = job.done {
            return Ok(Some(stats));
        }
        let cf = job.runs.len();
        let (layers, bounds) = (&job.layers[cf], &job.range.bounds);
        let (mut builder, whole) = match job.building.take() {
            Some(building) => building,
            None => {
                job.pieces = pieces(layers, bounds, job.full, entries);
                job.pieces.reverse(); // taken from the end
                let builder = merge_builder(layers, bounds, job.full, self.tracker());
                (
                    builder,
                    layers.frozen.iter().map(|m| m.len()).sum::<usize>(),
                )
            }
        };
        let piece = job.pieces.pop();
        let within = piece.as_ref().unwrap_or(bounds);
        // Room in each memtable's copy for about a piece's worth of its entries.
        let part = match &piece {
            Some(_) => (entries.min(whole), whole.max(1)),
            None => (1, 1),
        };
        let spans: Vec<Span> = (layers.frozen.iter())
            .map(|m| m.span_copy_part(within, u64::MAX, part))
            .collect();
        let (run, sides) = sources(layers, within, &spans, job.full);
        let deletions = match (job.keep_deletions, job.full) {
            (true, _) => Deletions::Keep,
            (false, true) => Deletions::Drop,
            (false, false) => Deletions::Over(&layers.run),
        };
        let mut sink = Builder {
            builder,
            keep: None,
        };
        let at = (within, job.seq, deletions);
        newest_entries(run, &sides, at, &mut job.stats, &mut sink)?;
        builder = sink.builder;
        if !job.pieces.is_empty() {
            job.building = Some((builder, whole));
            return Ok(None);
        }
        job.stats.entries_after += builder.len();
        job.runs.push(builder.finish(Some(self.tracker())));
        let runs = match <[Run; 3]>::try_from(std::mem::take(&mut job.runs)) {
            Ok(runs) => runs,
            Err(built) => {
                job.runs = built; // a column family still to merge
                return Ok(None);
            }
        };
        job.stats.installed = self.install(&job.range, &job.layers, (runs, job.full), job.seq);
        job.done = Some(job.stats);
        Ok(job.done)
    }
}

/// A compaction of one range without GC, done a piece at a time: started by
/// [`MemKv::compaction`], each step taken by [`MemKv::compaction_step`] (from any thread,
/// one at a time: it is `Send`, and a step takes it by `&mut`). The memtables it folds
/// were frozen when it started; the runs it builds replace them when its last step
/// installs them. Dropped unfinished, it leaves the range as it was (the frozen
/// memtables stay, for the next compaction to fold).
pub struct Compaction {
    range: Arc<RangeData>,
    layers: [CfLayers; 3],
    seq: u64,
    full: bool,
    keep_deletions: bool,
    stats: GcStats,
    /// The column family's pieces still to merge, last first.
    pieces: Vec<KeyRange>,
    /// The column family's run so far, and its memtables' entries.
    building: Option<(RunBuilder, usize)>,
    /// The runs built, in column family order.
    runs: Vec<Run>,
    done: Option<GcStats>,
}

impl Compaction {
    /// The range it compacts.
    pub fn range(&self) -> RangeId {
        self.range.id
    }
}

impl std::fmt::Debug for Compaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compaction")
            .field("range", &self.range.id)
            .field("full", &self.full)
            .field("column_families_built", &self.runs.len())
            .field("pieces_left", &self.pieces.len())
            .field("done", &self.done.is_some())
            .finish_non_exhaustive()
    }
}

/// The bounds of the pieces a merge of `layers` within `bounds` is cut into, about
/// `entries` entries of its sources each, in key order; none when it is not cut (it
/// holds fewer). The cuts are chosen among sampled keys of every source, about every
/// half piece: a run's entries at that interval, a memtable's nodes of the level whose
/// nodes lie about so far apart or closer. Each sample stands for the entries before
/// the next, and a piece ends where its samples reach `entries`: a piece holds about
/// that many, wherever the new entries lie (among the run's keys, or past them, as
/// appended keys are). A key's entries all fall in one piece (a cut is a key, and a
/// piece holds every entry of its keys), so pieces merged in order build the run one
/// merge builds.
fn pieces(layers: &CfLayers, bounds: &KeyRange, full: bool, entries: usize) -> Vec<KeyRange> {
    let entries = entries.max(1);
    let mut runs = vec![&layers.delta];
    if full {
        runs.push(&layers.run);
    }
    let spanned: Vec<_> = runs
        .iter()
        .map(|run| (run, run_span(run, bounds)))
        .collect();
    let total = spanned.iter().map(|(_, (lo, hi))| hi - lo).sum::<usize>()
        + layers.frozen.iter().map(|m| m.len()).sum::<usize>();
    if total <= entries {
        return Vec::new();
    }
    let every = (entries / 2).max(1);
    let mut samples: Vec<(Box<[u8]>, usize)> = Vec::new();
    for (run, (lo, hi)) in spanned {
        samples.extend((lo..hi).step_by(every).map(|i| (run.key(i).into(), every)));
    }
    for memtable in &layers.frozen {
        let keys = memtable.sample_keys(bounds, every);
        let each = memtable.len() / (keys.len() + 1);
        samples.extend(keys.into_iter().map(|key| (key, each)));
    }
    samples.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut starts: Vec<Box<[u8]>> = vec![bounds.start().into()];
    let mut taken = 0;
    for (key, weight) in samples {
        if taken >= entries && *key > *starts[starts.len() - 1] {
            starts.push(key);
            taken = 0;
        }
        taken += weight;
    }
    let ends =
        (starts.iter().skip(1).map(|k| Some(k.to_vec()))).chain([bounds.end().map(<[u8]>::to_vec)]);
    let cut: Result<Vec<KeyRange>, _> = (starts.iter().zip(ends))
        .map(|(start, end)| KeyRange::with_end(start.to_vec(), end))
        .collect();
    cut.ok()
        .filter(|pieces| pieces.len() > 1)
        .unwrap_or_default()
}

/// One entry of a compaction's sources, borrowed: key, sequence number, value (`None`
/// for a deletion).
pub(crate) type Part<'a> = (&'a [u8], u64, Option<&'a [u8]>);

/// Where a merge's entries go.
trait Sink<'a> {
    /// The next entry taken.
    fn part(&mut self, part: Part<'a>) -> Result<(), MemError>;

    /// Entries `from..to` of `source`, every one taken, or `None` when this sink takes
    /// them one at a time (the merge then hands each to [`Sink::part`]).
    fn stretch(
        &mut self,
        source: Source<'a>,
        from: usize,
        to: usize,
    ) -> Option<Result<(), MemError>> {
        _ = (source, from, to);
        None
    }
}

/// Where a stretch of a merge comes from: a run, or a memtable's copy.
#[derive(Clone, Copy)]
enum Source<'a> {
    Run(&'a Run),
    Span(&'a Span),
}

impl<'a> Source<'a> {
    /// Entry `i`: key, sequence number, value.
    #[inline]
    fn part(self, i: usize) -> Part<'a> {
        (self.key(i), self.seq(i), self.value(i))
    }

    #[inline]
    fn key(self, i: usize) -> &'a [u8] {
        match self {
            Source::Run(run) => run.key(i),
            Source::Span(span) => span.entry_key(i),
        }
    }

    #[inline]
    fn seq(self, i: usize) -> u64 {
        match self {
            Source::Run(run) => run.seq(i),
            Source::Span(span) => span.seq(i),
        }
    }

    #[inline]
    fn value(self, i: usize) -> Option<&'a [u8]> {
        match self {
            Source::Run(run) => run.value(i),
            Source::Span(span) => span.value(i),
        }
    }

    fn all_unique(self) -> bool {
        match self {
            Source::Run(run) => run.all_unique(),
            Source::Span(span) => span.all_unique(),
        }
    }

    fn copyable_at(self, seq: u64, deletions: bool) -> bool {
        match self {
            Source::Run(run) => run.copyable_at(seq, deletions),
            Source::Span(span) => span.copyable_at(seq, deletions),
        }
    }
}

/// A source merged beside a compaction's main run, and its entries within the range's
/// bounds: `from..to`.
#[derive(Clone, Copy)]
struct Side<'a> {
    source: Source<'a>,
    from: usize,
    to: usize,
}

/// Whether a compaction of `layers` (within `bounds`) should rebuild the base: when the
/// delta and the frozen memtables together reach the base, or a base holds entries
/// outside `bounds` (shared with a split sibling: a range's first compaction after a
/// split gives it runs of its own). Otherwise only the delta is rebuilt, with the
/// memtables folded in. With memtables compacted at half the runs
/// (`RUNS_PER_MEMTABLE_ENTRY`), a growing range's entries are each copied about 2.2
/// times (1.8 to 2.2, by where the growth stops), against 3 times when every compaction
/// rebuilt one whole run; a rebuild at half the base instead would copy each about 2.4
/// times (2.1 to 3.0).
fn wants_full(layers: &[CfLayers; 3], bounds: &KeyRange) -> bool {
    let (mut base, mut rest) = (0usize, 0usize);
    for cf in layers {
        if run_span(&cf.run, bounds) != (0, cf.run.len()) {
            return true;
        }
        base += cf.run.len();
        rest += cf.delta.len() + cf.frozen.iter().map(|m| m.len()).sum::<usize>();
    }
    rest >= base
}

/// Which deletions a merge hands on, when a deletion is its key's newest entry.
#[derive(Clone, Copy)]
enum Deletions<'a> {
    /// None: nothing lies under what the merge builds (a new base).
    Drop,
    /// Every one: a load's older entries of the key may still arrive.
    Keep,
    /// Those of keys this run holds: it lies under what the merge builds (a new delta
    /// over the base). A lock written and released between two compactions leaves
    /// nothing behind.
    Over(&'a Run),
}

impl Deletions<'_> {
    /// Whether every deletion is handed on (a stretch holding some may go whole).
    fn all_kept(self) -> bool {
        matches!(self, Deletions::Keep)
    }

    /// Whether a deletion of `key` is handed on.
    fn keeps(self, key: &[u8]) -> bool {
        match self {
            Deletions::Drop => false,
            Deletions::Keep => true,
            Deletions::Over(base) => {
                let i = base.lower(key, u64::MAX);
                i < base.len() && base.key(i) == key
            }
        }
    }
}

/// A compaction's main run, and the sources merged beside it: the base with the delta
/// and the memtables (`full`), or the delta with the memtables.
fn sources<'a>(
    layers: &'a CfLayers,
    bounds: &KeyRange,
    spans: &'a [Span],
    full: bool,
) -> (&'a Run, Vec<Side<'a>>) {
    let mut sides = Vec::with_capacity(spans.len() + 1);
    let (lo, hi) = run_span(&layers.delta, bounds);
    if full && lo < hi {
        let source = Source::Run(&layers.delta);
        sides.push(Side {
            source,
            from: lo,
            to: hi,
        });
    }
    sides.extend(spans.iter().map(|span| Side {
        source: Source::Span(span),
        from: 0,
        to: span.len(),
    }));
    (if full { &layers.run } else { &layers.delta }, sides)
}

/// The entries, borrowed, in order (what GC walks before it builds).
impl<'a> Sink<'a> for Vec<Part<'a>> {
    fn part(&mut self, part: Part<'a>) -> Result<(), MemError> {
        self.push(part);
        Ok(())
    }
}

/// Which keys a merge keeps.
type Keep<'k> = &'k dyn Fn(&[u8]) -> bool;

/// A compaction's new run, but the keys `keep` refuses; with no `keep`, a stretch of
/// the old run is copied whole ([`RunBuilder::extend_from`]).
struct Builder<'k> {
    builder: RunBuilder,
    keep: Option<Keep<'k>>,
}

impl<'a> Sink<'a> for Builder<'_> {
    fn part(&mut self, (key, seq, value): Part<'a>) -> Result<(), MemError> {
        match self.keep {
            Some(keep) if !keep(key) => Ok(()),
            _ => self.builder.push_above(key, seq, value),
        }
    }

    fn stretch(
        &mut self,
        source: Source<'a>,
        from: usize,
        to: usize,
    ) -> Option<Result<(), MemError>> {
        let builder = &mut self.builder;
        self.keep.is_none().then(|| match source {
            Source::Run(run) => builder.extend_from(run, from, to),
            Source::Span(span) => builder.extend_from(span, from, to),
        })
    }
}

/// The newest live entry at or below `seq` of every key within `bounds`, from `run` and
/// the `sides` beside it (the delta run, the frozen memtables' entries, each copied out),
/// in key order, each key once, handed to `sink`: one linear merge, borrowing every key and value. With
/// `deletions` saying so, a key whose newest entry is a deletion hands that on too (a
/// load's older entry of the key may still arrive, or the base under a new delta holds
/// the key: either must stay hidden).
///
/// The merge goes by stretches: the run's entries before the next entry of a side, then
/// that side's entries before the next entry of the run and of every other side,
/// each stretch's end found by galloping ([`gallop`]), not by comparing its entries one
/// by one (a source whose keys are unique needs only its stretch's first key compared
/// with the key taken last). When a source holds nothing the merge would leave out
/// ([`Packed::copyable_at`]), the rest of its stretch goes to `sink.stretch` whole.
///
/// A hot user key's new versions lie together, before its older ones in the run: with
/// 500 hot user keys, a memtable of 5,000 entries comes in stretches of ten. Copying
/// them whole took a quarter off a compaction's instructions (`compact_loop 20000 no-gc
/// 500`). With 100,000 keys, where the stretches are one entry long, the comparison that
/// ends each one cost about 1% more.
fn newest_entries<'a>(
    run: &'a Run,
    sides: &[Side<'a>],
    (bounds, seq, deletions): (&KeyRange, u64, Deletions<'_>),
    stats: &mut GcStats,
    sink: &mut dyn Sink<'a>,
) -> Result<(), MemError> {
    let (mut at_run, hi) = run_span(run, bounds);
    let mut at_side: Vec<usize> = sides.iter().map(|side| side.from).collect();
    let copyable = run.copyable_at(seq, deletions.all_kept());
    let mut current: Option<&'a [u8]> = None; // the key whose newest entry was taken
    // Whether the run's next entry is known to come before the memtables' next (the last
    // memtable stretch ended at it).
    let mut run_first = false;
    // Hands on `part` unless it lies above the compaction, is shadowed by a newer entry
    // of its key (`compare`: it may be), or is a deletion nobody needs.
    let take =
        |sink: &mut dyn Sink<'a>, current: &mut Option<&'a [u8]>, part: Part<'a>, compare| {
            let (key, s, value) = part;
            if s > seq || (compare && *current == Some(key)) {
                return Ok(());
            }
            *current = Some(key);
            if value.is_some() || deletions.keeps(key) {
                sink.part(part)
            } else {
                Ok(())
            }
        };
    loop {
        // The smallest head of a side in internal order (key ascending, sequence
        // descending).
        let mut best: Option<(usize, Part<'a>)> = None;
        for (m, side) in sides.iter().enumerate() {
            let i = at_side[m];
            if i < side.to {
                let part = side.source.part(i);
                let better = best.as_ref().is_none_or(|(_, b)| {
                    (part.0, std::cmp::Reverse(part.1)) < (b.0, std::cmp::Reverse(b.1))
                });
                if better {
                    best = Some((m, part));
                }
            }
        }
        // The run's entries before it (all that are left once the sides are done); on a
        // tie, the run's entry comes first. The first is known to when the last side's
        // stretch ended at it.
        let until = best.as_ref().map_or(hi, |&(_, (key, s, _))| {
            let start = at_run + usize::from(run_first);
            gallop(start, hi, |i| {
                (run.key(i), Reverse(run.seq(i))) <= (key, Reverse(s))
            })
        });
        stats.entries_before += until - at_run;
        let entry = |i: usize| (run.key(i), run.seq(i), run.value(i));
        let mut next = at_run;
        if copyable && until > at_run + 1 {
            // The first compared with the key taken last; every other one taken.
            take(sink, &mut current, entry(at_run), true)?;
            if let Some(copied) = sink.stretch(Source::Run(run), at_run + 1, until) {
                copied?;
                current = Some(run.key(until - 1));
                next = until;
            } else {
                next = at_run + 1;
            }
        }
        for i in next..until {
            take(sink, &mut current, entry(i), i == at_run || !run.unique())?;
        }
        at_run = until;
        let Some((m, part)) = best else {
            return Ok(());
        };
        // That side's entries before the next of the run and of every other side, as one
        // stretch, the same way.
        let (side, from) = (sides[m], at_side[m]);
        let span = side.source;
        let mut ahead = (at_run < hi).then(|| (run.key(at_run), run.seq(at_run)));
        run_first = ahead.is_some();
        for (o, other) in sides.iter().enumerate() {
            let i = at_side[o];
            if o == m || i >= other.to {
                continue;
            }
            let head = (other.source.key(i), other.source.seq(i));
            if ahead.is_none_or(|(key, s)| (head.0, Reverse(head.1)) < (key, Reverse(s))) {
                (ahead, run_first) = (Some(head), false);
            }
        }
        let until = ahead.map_or(side.to, |(key, s)| {
            gallop(from + 1, side.to, |i| {
                (span.key(i), Reverse(span.seq(i))) < (key, Reverse(s))
            })
        });
        stats.entries_before += until - from;
        at_side[m] = until;
        take(sink, &mut current, part, true)?;
        let mut next = from + 1;
        if span.copyable_at(seq, deletions.all_kept())
            && until > next
            && let Some(copied) = sink.stretch(span, next, until)
        {
            copied?;
            current = Some(span.key(until - 1));
            next = until;
        }
        for i in next..until {
            take(sink, &mut current, span.part(i), !span.all_unique())?;
        }
    }
}

/// The end of the stretch from `from` (below `hi`) of the entries `before` holds for, in
/// a sorted sequence where it holds for a prefix: found by galloping (probes 1, 2, 4, ...
/// entries on, then a binary search within the last step), so a stretch of n entries
/// costs about 2 log n looks, however long what follows it.
fn gallop(from: usize, hi: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut from, mut step) = (from, 1usize);
    let to = loop {
        let probe = from.saturating_add(step - 1).min(hi);
        if probe >= hi || !before(probe) {
            break probe;
        }
        from = probe + 1;
        step = step.saturating_mul(2);
    };
    from + partition_point(to - from, |i| before(from + i))
}

/// A builder with room for a merge of `layers` within `bounds`: the base and the delta
/// (`full`) or the delta, and the frozen memtables, what they hold together, an upper
/// bound of what the merge keeps (in the arrays of a run dropped lately, if some fit).
fn merge_builder(
    layers: &CfLayers,
    bounds: &KeyRange,
    full: bool,
    tracker: &MemoryTracker,
) -> RunBuilder {
    let (mut len, mut keys, mut values) = (0, 0, 0);
    let runs = if full {
        [Some(&layers.run), Some(&layers.delta)]
    } else {
        [Some(&layers.delta), None]
    };
    for run in runs.into_iter().flatten() {
        let (lo, hi) = run_span(run, bounds);
        let (k, v) = run.bytes_between(lo, hi);
        (len, keys, values) = (len + hi - lo, keys + k, values + v);
    }
    for memtable in &layers.frozen {
        let (k, v) = memtable.bytes();
        (len, keys, values) = (len + memtable.len(), keys + k, values + v);
    }
    let mut builder = RunBuilder::with_capacity(0, 0, 0);
    builder.reserve_reusing(&tracker.spares, len, keys, values);
    builder
}

/// TiKV's MVCC retention rule below a safe point, written once: GC applies it, and so does
/// anyone checking what GC may have removed (the engine's cross-checker). Feed it the
/// write column family in key order (user key ascending, commit_ts descending).
///
/// Per user key: every version above the safe point stays; at or below it, the newest
/// Put stays and everything older goes, a Delete goes with everything under it, Lock and
/// Rollback records go. A record that cannot be decoded stays, and so does everything
/// older than it (what it hides is unknown); an MVCC key that cannot be decoded stays.
///
/// ```
/// use ime_memkv::Retention;
/// use ime_memkv::codec::{MvccKey, WriteRecord, WriteType};
///
/// let key = |ts| MvccKey { user_key: b"k".to_vec(), ts }.encode();
/// let put = |start| WriteRecord::new(WriteType::Put, start, Some(b"v".to_vec())).encode().unwrap();
/// let mut rule = Retention::new(20);
/// assert!(rule.keeps(&key(30), &put(29))); // above the safe point
/// assert!(rule.keeps(&key(15), &put(14))); // the newest put at or below it
/// assert!(!rule.keeps(&key(10), &put(9))); // shadowed
/// ```
#[derive(Debug)]
pub struct Retention {
    safe_point: u64,
    /// The user key being walked.
    current: Option<Vec<u8>>,
    /// Whether the newest version at or below the safe point was decided for it.
    settled: bool,
}

/// What [`Retention`] says of one write-CF entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retained {
    /// It stays.
    Keep,
    /// It stays because it cannot be decoded (its key or its record).
    KeepUnreadable,
    /// It goes; for a Put with its value in the default CF, that value's key goes too
    /// (unless a kept Put points to it as well).
    Drop {
        /// The default-CF key of the dropped Put's value.
        value_key: Option<Vec<u8>>,
    },
}

impl Retention {
    /// The rule at `safe_point`.
    pub fn new(safe_point: u64) -> Self {
        Retention {
            safe_point,
            current: None,
            settled: false,
        }
    }

    /// Whether the next entry stays (see [`Retention::judge`]).
    pub fn keeps(&mut self, key: &[u8], value: &[u8]) -> bool {
        !matches!(self.judge(key, value), Retained::Drop { .. })
    }

    /// The verdict on the next entry, `key` and `value` of the write column family.
    pub fn judge(&mut self, key: &[u8], value: &[u8]) -> Retained {
        // Split and read in place: nothing is copied but a new user key's prefix.
        let Ok((user_key, ts)) = split_mvcc_key(key) else {
            return Retained::KeepUnreadable;
        };
        if self.current.as_deref() != Some(user_key) {
            let current = self.current.get_or_insert_with(Vec::new);
            current.clear();
            current.extend_from_slice(user_key);
            self.settled = false;
        }
        if ts > self.safe_point {
            return Retained::Keep;
        }
        let Ok((kind, start_ts, short_value)) = WriteRecord::decode_head(value) else {
            return Retained::KeepUnreadable;
        };
        let keep = !self.settled && kind == WriteType::Put;
        if matches!(kind, WriteType::Put | WriteType::Delete) {
            self.settled = true;
        }
        if keep {
            return Retained::Keep;
        }
        let value_key =
            (kind == WriteType::Put && !short_value).then(|| value_key(user_key, start_ts));
        Retained::Drop { value_key }
    }
}

/// The default-CF key of a value: the encoded user key, then `start_ts` (descending).
fn value_key(encoded_user_key: &[u8], start_ts: u64) -> Vec<u8> {
    [encoded_user_key, &encode_ts_desc(start_ts)].concat()
}

/// MVCC GC of the write column family at `safe_point` ([`Retention`]) over borrowed
/// entries in key order; returns the kept entries and the default-CF keys of the puts
/// dropped.
fn gc_write_cf<'a>(
    entries: Vec<Part<'a>>,
    safe_point: u64,
    stats: &mut GcStats,
) -> (Vec<Part<'a>>, HashSet<Vec<u8>>) {
    let mut kept = Vec::with_capacity(entries.len());
    let mut dropped_values = HashSet::new();
    let mut rule = Retention::new(safe_point);
    for entry in entries {
        let verdict = match entry.2 {
            Some(value) => rule.judge(entry.0, value),
            None => Retained::KeepUnreadable,
        };
        match verdict {
            Retained::Keep => kept.push(entry),
            Retained::KeepUnreadable => {
                stats.undecodable += 1;
                kept.push(entry);
            }
            Retained::Drop { value_key } => {
                stats.versions_removed += 1;
                dropped_values.extend(value_key);
            }
        }
    }
    // A value a kept put still points to stays, even if a dropped put pointed to it too
    // (two records with one start_ts: not TiKV's histories, but never lose a live value).
    if !dropped_values.is_empty() {
        for entry in &kept {
            if let Some(value_key) = default_key_of(entry) {
                dropped_values.remove(&value_key);
            }
        }
    }
    (kept, dropped_values)
}

/// The default-CF key a kept write record's value lives at, for a put without a short
/// value.
fn default_key_of(entry: &Part<'_>) -> Option<Vec<u8>> {
    let (user_key, _) = split_mvcc_key(entry.0).ok()?;
    let (kind, start_ts, short_value) = WriteRecord::decode_head(entry.2?).ok()?;
    (kind == WriteType::Put && !short_value).then(|| value_key(user_key, start_ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cf, KeyRange, MemConfig, WriteBatch};
    use std::sync::Arc;

    fn store_with_two_writes() -> MemKv {
        let kv = MemKv::new(MemConfig {
            hard_limit: 1 << 20,
            soft_limit: 1 << 19,
        });
        kv.create_range(RangeId(1), KeyRange::with_end("a", None).unwrap())
            .unwrap();
        kv.write(WriteBatch::new().put(Cf::Lock, "b", "1"), 1)
            .unwrap();
        kv.write(WriteBatch::new().put(Cf::Lock, "m", "2"), 2)
            .unwrap();
        kv
    }

    /// [`store_with_two_writes`], two more lock-CF writes (at 3 and 4), and a compaction:
    /// a base of four entries, and no delta.
    fn store_with_a_base_of_four() -> MemKv {
        let kv = store_with_two_writes();
        let batch = WriteBatch::new()
            .put(Cf::Lock, "d", "3")
            .put(Cf::Lock, "e", "4")
            .clone();
        kv.write(&batch, 3).unwrap();
        assert!(kv.compact(RangeId(1), None).unwrap().installed);
        kv
    }

    /// Empty runs for an install (what is installed does not matter to these tests).
    fn empty_runs(kv: &MemKv) -> [Run; 3] {
        [(); 3].map(|()| Run::new(&[], Some(kv.tracker())).unwrap())
    }

    #[test]
    fn a_compaction_says_it_installed() {
        let kv = store_with_two_writes();
        assert!(kv.compact(RangeId(1), Some(2)).unwrap().installed);
    }

    /// Another compaction installing between this one's freeze and install: the second
    /// install keeps nothing and says so (a GC round must then run again).
    #[test]
    fn a_compaction_that_loses_to_another_says_so() {
        let kv = store_with_two_writes();
        let range = kv.range(RangeId(1)).unwrap();
        let (layers, seq) = kv.freeze(&range);
        assert!(kv.compact(RangeId(1), None).unwrap().installed);
        assert!(!kv.install(&range, &layers, (empty_runs(&kv), false), seq));
    }

    /// The same when the compaction that installed first rebuilt only the delta (the base
    /// is the one this compaction read, the delta is not): nothing is installed over it.
    #[test]
    fn a_compaction_that_loses_to_a_delta_compaction_says_so() {
        let kv = store_with_a_base_of_four();
        kv.write(WriteBatch::new().put(Cf::Lock, "c", "5"), 5)
            .unwrap();
        let range = kv.range(RangeId(1)).unwrap();
        let (layers, seq) = kv.freeze(&range);
        assert!(kv.compact(RangeId(1), None).unwrap().installed);
        let now = range.layers(Cf::Lock);
        assert!(Arc::ptr_eq(&now.run, &layers[Cf::Lock.index()].run));
        assert_eq!(now.delta.len(), 1);
        assert!(!kv.install(&range, &layers, (empty_runs(&kv), false), seq));
        let snapshot = kv.snapshot(RangeId(1), seq).unwrap();
        assert_eq!(snapshot.get(Cf::Lock, b"c"), Some(b"5".to_vec()));
    }

    /// A lock written and released between two compactions, over a larger base, leaves
    /// nothing in the new delta; the deletion of a key the base holds stays there, and
    /// hides it.
    #[test]
    fn a_delta_keeps_only_the_deletions_the_base_needs() {
        let kv = store_with_a_base_of_four(); // b, d, e, m
        let released = WriteBatch::new()
            .put(Cf::Lock, "c", "5")
            .delete(Cf::Lock, "c")
            .delete(Cf::Lock, "d")
            .clone();
        kv.write(&released, 5).unwrap();
        assert!(kv.compact(RangeId(1), None).unwrap().installed);
        let range = kv.range(RangeId(1)).unwrap();
        let layers = range.layers(Cf::Lock);
        assert_eq!((layers.run.len(), layers.delta.len()), (4, 1));
        let snapshot = kv.snapshot(RangeId(1), 7).unwrap();
        let held = |key: &[u8]| snapshot.get(Cf::Lock, key);
        assert_eq!(
            [held(b"b"), held(b"c"), held(b"d")],
            [Some(b"1".to_vec()), None, None]
        );
    }

    /// A split between a compaction's freeze and its install: the parent is gone, the work
    /// installs nowhere, and the caller hears of it.
    #[test]
    fn a_compaction_that_loses_to_a_split_says_so() {
        let kv = store_with_two_writes();
        let range = kv.range(RangeId(1)).unwrap();
        let (layers, seq) = kv.freeze(&range);
        kv.split_range(
            RangeId(1),
            &[
                (
                    RangeId(2),
                    KeyRange::with_end("a", Some(b"k".to_vec())).unwrap(),
                ),
                (RangeId(3), KeyRange::with_end("k", None).unwrap()),
            ],
        )
        .unwrap();
        assert!(!kv.install(&range, &layers, (empty_runs(&kv), false), seq));
        assert!(kv.compact(RangeId(2), Some(2)).unwrap().installed);
    }

    /// A merge that takes stretches whole (a compaction's builder, from the run and from
    /// the memtables' copies) keeps exactly what one taking each entry by itself keeps:
    /// versions of user keys written in turn over a run of older versions, a key of the
    /// run written again, a deletion, an entry above the compaction's sequence, and a
    /// second memtable between the first's stretches.
    #[test]
    fn stretches_taken_whole_keep_what_entries_one_by_one_keep() {
        use crate::layer::RunEntry;
        use crate::memtable::Memtable;
        let tracker = MemoryTracker::new(u64::MAX, u64::MAX);
        let key = |user: u64, ts: u64| {
            let mut key = format!("t_{user:03}").into_bytes();
            key.extend_from_slice(&(u64::MAX - ts).to_be_bytes());
            key
        };
        let entry = |key: Vec<u8>, seq: u64| RunEntry {
            key: key.into(),
            seq,
            value: Some(seq.to_le_bytes().into()),
        };
        let mut entries: Vec<RunEntry> = (0..20)
            .flat_map(|user| (0..5).map(move |ts| (user, ts)))
            .map(|(user, ts)| entry(key(user, ts), 1 + user * 5 + ts))
            .collect();
        entries.sort_by(|a, b| (&a.key, Reverse(a.seq)).cmp(&(&b.key, Reverse(b.seq))));
        let run = Run::new(&entries, None).unwrap();
        let (first, second) = (Memtable::new(&tracker), Memtable::new(&tracker));
        let mut seq = 200u64;
        for round in 0..6 {
            for user in 0..20 {
                seq += 1;
                let table = if user % 7 == 3 { &second } else { &first };
                let value = seq.to_le_bytes();
                table.insert(&key(user, 10 + round), seq, Some(&value), 0);
            }
        }
        // The first memtable's stretches are taken whole; the second's are not (it holds
        // a deletion, and an entry above the compaction).
        first.insert(&key(4, 2), 500, Some(b"again"), 0); // a version the run holds
        second.insert(&key(9, 3), 501, None, 0);
        second.insert(&key(12, 1), 900, Some(b"later"), 0);
        // A delta run beside them: versions between the run's and the memtables', and a
        // version the run holds, written again.
        let mut delta: Vec<RunEntry> = (0..20)
            .step_by(3)
            .map(|user| entry(key(user, 7), 150 + user))
            .chain([entry(key(6, 1), 190)])
            .collect();
        delta.sort_by(|a, b| (&a.key, Reverse(a.seq)).cmp(&(&b.key, Reverse(b.seq))));
        let delta = Run::new(&delta, None).unwrap();
        let bounds = KeyRange::with_end("t", None).unwrap();
        let spans = [&first, &second].map(|m| m.span_copy(&bounds, u64::MAX));
        let copyable = spans.each_ref().map(|s| s.copyable_at(800, true));
        assert_eq!(copyable, [true, false]);
        let span_sides = spans.each_ref().map(|span| Side {
            source: Source::Span(span),
            from: 0,
            to: span.len(),
        });
        let delta_side = Side {
            source: Source::Run(&delta),
            from: 0,
            to: delta.len(),
        };
        let with_delta = [delta_side, span_sides[0], span_sides[1]];
        // The deletion (of a version the run holds) is kept when deletions are, and over
        // a base that holds its key; not over one that does not.
        let (other, elsewhere) = (Run::new(&[], None).unwrap(), key(30, 0));
        let other_base = Run::new(&[entry(elsewhere, 1)], None).unwrap();
        for (deletions, sides, kept) in [
            (Deletions::Drop, &span_sides[..], false),
            (Deletions::Keep, &span_sides[..], true),
            (Deletions::Drop, &with_delta[..], false),
            (Deletions::Keep, &with_delta[..], true),
            (Deletions::Over(&run), &with_delta[..], true),
            (Deletions::Over(&other), &with_delta[..], false),
            (Deletions::Over(&other_base), &span_sides[..], false),
        ] {
            let at = (&bounds, 800, deletions);
            let mut one_by_one = Vec::new();
            let mut stats = GcStats::default();
            newest_entries(&run, sides, at, &mut stats, &mut one_by_one).unwrap();
            let builder = RunBuilder::with_capacity(0, 0, 0);
            let mut whole = Builder {
                builder,
                keep: None,
            };
            let mut whole_stats = GcStats::default();
            newest_entries(&run, sides, at, &mut whole_stats, &mut whole).unwrap();
            let built = whole.builder.finish(None);
            let expected = Run::from_parts(&one_by_one, None).unwrap();
            assert_eq!(built.len(), expected.len());
            for i in 0..built.len() {
                let (got, want) = (built.entry(i), expected.entry(i));
                assert_eq!(
                    (got.key, got.seq, got.value),
                    (want.key, want.seq, want.value)
                );
            }
            assert_eq!(built.unique(), expected.unique());
            assert_eq!(stats, whole_stats);
            // 100 versions in the run, 120 in the memtables and 3 more: two of the run's
            // shadowed (by the version written again and by the deletion), one above the
            // compaction, and the deletion kept only when deletions are. The delta brings
            // 8 more, one of which shadows one of the run's.
            let delta = if sides.len() == 3 { 8 } else { 0 };
            assert_eq!(stats.entries_before, 223 + delta);
            let new_keys = delta.saturating_sub(1);
            assert_eq!(built.len(), 219 + new_keys + usize::from(kept));
        }
    }

    /// The retention rule, verdict by verdict: a record that cannot be decoded stays and
    /// keeps everything older (what it hides is unknown); a Delete takes what is under it;
    /// a dropped Put without a short value names its default-CF value.
    #[test]
    fn the_retention_rule_verdicts() {
        use crate::codec::{MvccKey, WriteRecord, WriteType};
        let key = |user: &[u8], ts| {
            MvccKey {
                user_key: user.to_vec(),
                ts,
            }
            .encode()
        };
        let record = |kind, start, short: Option<&[u8]>| {
            WriteRecord::new(kind, start, short.map(<[u8]>::to_vec))
                .encode()
                .unwrap()
        };
        let mut rule = Retention::new(50);
        assert_eq!(
            rule.judge(&key(b"a", 60), &record(WriteType::Delete, 59, None)),
            Retained::Keep
        );
        assert_eq!(
            rule.judge(&key(b"a", 40), b"not a record"),
            Retained::KeepUnreadable
        );
        assert_eq!(
            rule.judge(&key(b"a", 30), &record(WriteType::Put, 29, Some(b"v"))),
            Retained::Keep,
            "below an unreadable record, the newest put still stays"
        );
        assert_eq!(
            rule.judge(&key(b"a", 20), &record(WriteType::Put, 19, None)),
            Retained::Drop {
                value_key: Some(key(b"a", 19))
            }
        );
        assert_eq!(
            rule.judge(&key(b"b", 45), &record(WriteType::Delete, 44, None)),
            Retained::Drop { value_key: None }
        );
        assert_eq!(
            rule.judge(&key(b"b", 10), &record(WriteType::Put, 9, Some(b"v"))),
            Retained::Drop { value_key: None },
            "under a delete at or below the safe point"
        );
        assert_eq!(
            rule.judge(&key(b"c", 5), &record(WriteType::Rollback, 5, None)),
            Retained::Drop { value_key: None }
        );
        assert_eq!(rule.judge(b"\xff", b""), Retained::KeepUnreadable);
    }
}
