//! The memtable: recent writes of one column family of one range, in a skiplist laid out
//! in an arena of atomic 64-bit words.
//!
//! - **No allocation per entry.** Nodes are carved out of chunks that grow with the
//!   memtable (from 1 KiB, doubling every eight chunks); a node is its sequence
//!   number, one word of lengths and height, its forward links, and its key and value
//!   bytes packed together. A 40-byte entry takes about 64-72 bytes.
//! - **One writer, readers that never wait.** Inserts take a small mutex that only other
//!   inserts take; a node is written in full, then linked bottom-up with release stores,
//!   and readers follow links with acquire loads: a reader sees a node whole or not at
//!   all, and never takes a lock.
//! - **Searches that pass few nodes.** An insert searches from the last one (a batch
//!   comes in key order), at about the logarithm of the distance. Between two inserts
//!   of neighbouring user keys lie all the versions of the first, each node a cache
//!   miss: so the writer also keeps, per user key (in a set of four slots that its hash
//!   names), the last node inserted for it and its neighbour before it on level 0, and
//!   links the next version of that user key between them with no search, after
//!   checking that they are still neighbours and that it lies between them (the key
//!   before is read only until the table has noted that it holds a smaller user key:
//!   see [`APART`]); such a version goes on level 0 alone unless its height is drawn
//!   above two (one in sixteen). In a memtable of hot user keys, each user key's first
//!   node stands four levels tall, and a taller version links after it on its levels
//!   with no search; only one in 256 searches. The table takes a slot per two entries
//!   from 1,024 entries on (from the first insert, sized for the user keys of the
//!   memtable before, when that one's table was worth keeping), grows while a quarter
//!   of its slots hold pairs, is charged, and is given up until the memtable doubles
//!   when it saves too few searches.
//! - **Freed whole.** The arena is freed when the memtable drops: after a compaction
//!   folded it into a run and the last snapshot reading it is gone.
//! - **No `unsafe`.** Every word is an `AtomicU64` (plain loads and stores on x86-64 and
//!   AArch64 at the orderings used), so a reader racing the writer reads words, never
//!   torn or freed memory.
//!
//! Order: user key ascending, then sequence number descending (newest first), as runs.

use std::cmp::Ordering as Cmp;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::layer::{IValue, Packed, Run, RunBuilder, RunEntry, SPARE_MIN_BYTES, Spare};
use crate::memory::{Charge, MemoryTracker};
use crate::{KeyRange, MemError};

/// The tallest a node gets. With a branching factor of 4, twelve levels index 16M entries
/// at full speed; memtables are compacted long before.
const MAX_HEIGHT: usize = 12;

/// Chunks an arena can have (see [`chunk_words`]: about 16 GiB in all, beyond any
/// memory limit this store is run with; [`Memtable::room`] tells a writer what is left).
const CHUNKS: usize = 128;

/// Words before a node's links: its sequence number and its header.
const FIXED_WORDS: usize = 2;

/// A header's value length that marks a deletion.
const TOMBSTONE: u64 = 0xFFFF_FFFF;

/// The level whose nodes cut a compaction's walk of level 0 into segments (see
/// [`Arena::each_in_waves`]): with a branching factor of 4, about 256 nodes apart.
const WAVE_LEVEL: usize = 4;

/// Segments walked side by side (see [`Arena::each_in_waves`]): about 4,096 nodes a
/// wave, a few hundred kilobytes, which stay in the cache until they are copied.
const WAVE: usize = 16;

/// Keys longer than this (256 MiB) do not fit a header; the store refuses them first.
pub(crate) const MAX_KEY_LEN: usize = (1 << 28) - 1;

/// Values this long or longer (4 GiB) do not fit a header; the store refuses them first.
pub(crate) const MAX_VALUE_LEN: usize = TOMBSTONE as usize;

/// Words of chunk `i`: eight chunks of 1 KiB, then the size doubles every eight chunks,
/// so that a new chunk is at most about an eighth of what the memtable holds: the tail
/// not filled yet (allocated, charged, unused) stays under that, and so does what one new
/// chunk charges at once. The last eight chunks double each (to 8 GiB), so that a
/// memtable can outgrow any memory limit before it runs out of chunks.
const fn chunk_words(i: usize) -> usize {
    let doublings = if i < CHUNKS - 8 {
        i / 8
    } else {
        i + 24 - CHUNKS
    };
    128 << doublings
}

/// Bytes the chunks from `i` on hold together (`ROOM_FROM[CHUNKS]` is zero): what an
/// arena can still take once chunk `i - 1` is full.
const ROOM_FROM: [u64; CHUNKS + 1] = {
    let mut room = [0u64; CHUNKS + 1];
    let mut i = CHUNKS;
    while i > 0 {
        i -= 1;
        room[i] = room[i + 1] + chunk_words(i) as u64 * 8;
    }
    room
};
/// Words a node of this height and these lengths takes.
fn node_words(height: usize, key_len: usize, value_len: usize) -> usize {
    FIXED_WORDS + height + (key_len + value_len).div_ceil(8)
}

/// Bytes a node of this key and value takes at the tallest height: what a write reserves
/// per entry for its limit check before the arena charges its chunks, so that the node
/// always fits under the hard limit.
pub(crate) fn entry_estimate(key: &[u8], value: Option<&[u8]>) -> u64 {
    (node_words(MAX_HEIGHT, key.len(), value.map_or(0, <[u8]>::len)) * 8) as u64
}

/// A node's place: chunk index plus one in the high half (zero is no node), word offset in
/// the low half.
type NodeRef = u64;

const NIL: NodeRef = 0;

fn node_ref(chunk: usize, offset: usize) -> NodeRef {
    ((chunk as u64 + 1) << 32) | offset as u64
}

/// The chunks, and the head's links.
#[derive(Debug)]
struct Arena {
    chunks: [OnceLock<Box<[AtomicU64]>>; CHUNKS],
    head: [AtomicU64; MAX_HEIGHT],
    /// Levels in use: a search starts there instead of at the tallest level.
    height: AtomicUsize,
}

/// Where the writer allocates next, and its height generator.
#[derive(Debug)]
struct Writer {
    /// The chunk being filled (`None` before the first insert) and words used in it.
    chunk: Option<usize>,
    used: usize,
    /// xorshift64 state: deterministic heights, so that runs repeat exactly.
    rng: u64,
    /// The last node inserted, and per level a node at that level before it (the node
    /// itself up to its height): where an insert of a larger key, the common case of a
    /// batch in key order, finds its predecessors with one comparison per level.
    hint: Option<(NodeRef, [NodeRef; MAX_HEIGHT])>,
    /// Per user key (a key's bytes but the last eight: an MVCC key's user key), in one
    /// of the [`WAYS`] slots of the set its hash names, the last node inserted for it and
    /// the node before it on level 0: where the next version of that user key goes,
    /// between the two, while they are still neighbours (see [`Writer::between`]).
    /// Empty until the memtable holds [`HEADS_FROM`] entries (unless it follows a
    /// memtable whose table was judged worth keeping: see [`Memtable::following`]);
    /// then a slot for every [`ENTRIES_PER_SLOT`] entries, grown each time the entries
    /// double while a quarter of its slots or more hold pairs (up to [`HEADS_MAX`]
    /// slots, its pairs moved over), and given up until the next doubling when it saves
    /// too few searches (see [`Writer::judge_heads`]).
    heads: Vec<(NodeRef, NodeRef)>,
    /// Inserts that looked in the table since it began, and those it placed; how many
    /// looks it is judged after (zero once judged worth keeping).
    looked: usize,
    placed: usize,
    judged_after: usize,
    /// Slots of [`Writer::heads`] that hold a pair.
    occupied: usize,
    /// Slots of a table to keep from the first insert (see [`Memtable::following`]).
    begin_with: usize,
    /// Whether the table was judged worth keeping, or inherited so (see
    /// [`Memtable::following`]), and not judged otherwise since: a memtable that follows
    /// this one keeps a table from its first insert.
    proven: bool,
    /// Whether the memtable before this one ended with its table placing three inserts
    /// in four or more (see [`Writer::tall_first`]).
    hot: bool,
    /// First nodes raised to [`TALL_FIRST`] so far.
    tall_firsts: usize,
    /// The bytes of the keys and of the values inserted: what a copy of every entry
    /// ([`Memtable::span_copy`]) takes, reserved before it copies.
    key_bytes: usize,
    value_bytes: usize,
}

/// Entries a memtable holds before its writer keeps [`Writer::heads`]: smaller ones are
/// searched quickly enough.
const HEADS_FROM: usize = 1024;

/// The most slots [`Writer::heads`] takes (16 bytes each: 1 MiB, from 128k entries on).
const HEADS_MAX: usize = 1 << 16;

/// Entries a memtable holds per slot of [`Writer::heads`]: 8 bytes an entry, at most,
/// while the table is kept. A slot serves one user key at a time, and two user keys that
/// share one take turns in it: with a slot per eight entries, a memtable over 500 hot
/// user keys has 512 slots at 4,096 entries, and its inserts cost about 10% more
/// instructions than with a slot per two.
const ENTRIES_PER_SLOT: usize = 2;

/// The tallest drawn height at which an insert that [`Writer::heads`] places goes on
/// level 0 alone. A taller one needs its predecessors on the levels above, and searches
/// for them unless the node before it stands as tall (see [`TALL_FIRST`]).
///
/// A node's height only sets how fast the list is searched, never what it holds, so the
/// choice is free: at 1 (every node as drawn) a quarter of the placed versions still
/// searched; at 2, one in sixteen does, and the upper levels of a user key's versions
/// thin out to match, so that a search ends with a longer walk on level 0. Measured
/// (`compact_loop 20000 no-gc 500`, 500 hot user keys): inserts 13% fewer
/// instructions, MVCC point gets in a memtable of 320,000 versions 9% more; at 3, inserts
/// 4% fewer again and those gets 60% more.
const FLAT_MAX: usize = 2;

/// The least height of a user key's first node in a memtable whose table of neighbours
/// places most inserts ([`Writer::tall_first`]).
///
/// A new version of user key K goes right after the last node of the user key before
/// it, and that node is the first one inserted for that key in this memtable (the
/// oldest of its versions, which sorts last). On every level that node stands on, it is
/// the new version's predecessor (a node between them there would lie between them on
/// level 0 too), so a placed version drawn taller than [`FLAT_MAX`] links after it on
/// each of its levels with no search, when it stands as tall. First nodes are one per
/// user key, so raising them costs a few link words per hot user key. With 500 hot user
/// keys and first nodes as drawn, the placed versions drawn taller than `FLAT_MAX` (one
/// in sixteen) searched, at about 1,500 instructions each, most of them cache misses;
/// with first nodes raised, only those drawn taller than this (one in 256) do.
const TALL_FIRST: usize = 4;

/// First nodes a memtable raises to [`TALL_FIRST`] before it counts them against its
/// entries ([`Writer::tall_first`]).
const TALL_FIRSTS_FREE: usize = 4096;

/// Where a key's pairs go in [`Writer::heads`]: a slot (the first of its set, from
/// [`head_slot`]; one of the set's ways, from [`Writer::way`]), and a tag (never zero)
/// that tells its user key's pair from another's in the same set, kept in the bits of
/// the pair's second node reference above [`TAG_SHIFT`] (a reference uses the low 40).
#[derive(Clone, Copy, Debug)]
struct HeadSlot {
    index: usize,
    tag: u64,
}

/// Slots of a set of [`Writer::heads`]: a user key's pair goes in any slot of the set its
/// hash names, so that hot user keys that share a set keep their pairs. With one slot a
/// set, two hot user keys that shared one pushed each other out, and their every version
/// was searched for (a sixth of the searches, with 500 hot user keys); with two, the
/// keys of a set of three did. Measured with `compact_loop 20000 no-gc 500`, against
/// one way: four ways, 4% fewer instructions for the inserts; four ways and tables
/// begun at a memtable's first insert ([`Memtable::following`], sized for the user
/// keys), 7% fewer; one way and tables begun so, 10% more; two ways so, 1% fewer.
const WAYS: usize = 4;

/// Bytes of one slot of [`Writer::heads`].
const HEAD_BYTES: u64 = std::mem::size_of::<(NodeRef, NodeRef)>() as u64;

/// Where a pair's tag starts in its second node reference.
const TAG_SHIFT: u32 = 48;

/// A flag in a pair's first node reference: that node's key differs from the second's
/// within the second's user key (its bytes but the last eight, as [`head_slot`] takes
/// them) and is the smaller there, so it lies before every key that begins with those
/// bytes and is no shorter than the second's. A new version of the second's user key
/// then goes after the first with no look at its key (see [`Writer::between`]).
const APART: u64 = 1 << 63;
const _: () = assert!((CHUNKS as u64 + 1) << 32 <= APART);
const _: () = assert!(((CHUNKS as u64) << 32 | 0xFFFF_FFFF) >> TAG_SHIFT == 0);

/// The set of `key` among `slots` slots (a power of two, [`WAYS`] or more): a hash of its
/// bytes but the last eight (an MVCC key's encoded timestamp), so that every version of a
/// user key shares one.
fn head_slot(key: &[u8], slots: usize) -> HeadSlot {
    let user = &key[..key.len().saturating_sub(8)];
    let mut words = user.chunks_exact(8);
    let mut hash = user.len() as u64;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        hash = (hash ^ u64::from_le_bytes(bytes)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    let tail = words
        .remainder()
        .iter()
        .fold(0u64, |n, &b| (n << 8) | u64::from(b));
    hash = (hash ^ tail).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // A product carries a difference only upwards: fold the high bits down (a
    // finalizer's steps), or keys that differ in their last bytes would share slot and
    // tag.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    hash ^= hash >> 29;
    HeadSlot {
        index: (hash >> 32) as usize & slots.wrapping_sub(1) & !(WAYS - 1),
        tag: ((hash >> 16) & 0xFFFF) | 1,
    }
}

/// An ordered map of recent writes: a skiplist in an arena (see the module docs).
#[derive(Debug)]
pub(crate) struct Memtable {
    /// Allocated at the first insert: an empty memtable (most of them, after a load or a
    /// compaction) costs a few words.
    arena: OnceLock<Box<Arena>>,
    writer: Mutex<Writer>,
    entries: AtomicUsize,
    charge: Charge,
}

/// One node, read: its words from the header on.
struct Node<'a> {
    words: &'a [AtomicU64],
    seq: u64,
    height: usize,
    key_len: usize,
    /// `None` for a deletion.
    value_len: Option<usize>,
}

impl<'a> Node<'a> {
    fn data_start(&self) -> usize {
        FIXED_WORDS + self.height
    }

    /// Byte `i` of the packed key and value.
    #[inline]
    fn word(&self, i: usize) -> [u8; 8] {
        self.words
            .get(self.data_start() + i)
            .map_or([0; 8], |w| w.load(Ordering::Relaxed).to_le_bytes())
    }

    /// The key compared with `probe`, eight bytes at a time (as big-endian integers).
    #[inline]
    fn cmp_key(&self, probe: &[u8]) -> Cmp {
        self.cmp_key_at(probe).0
    }

    /// [`Node::cmp_key`], and where the two first differ: the index of their first
    /// differing byte, or the shorter one's length when one is a prefix of the other.
    #[inline]
    fn cmp_key_at(&self, probe: &[u8]) -> (Cmp, usize) {
        let common = self.key_len.min(probe.len());
        let start = self.data_start();
        let words = self
            .words
            .get(start..start + common.div_ceil(8))
            .unwrap_or_default();
        let mut probe_words = probe[..common].chunks_exact(8);
        let mut mine_words = words.iter();
        let mut at = 0;
        for (theirs, mine) in probe_words.by_ref().zip(mine_words.by_ref()) {
            let mine = u64::from_be_bytes(mine.load(Ordering::Relaxed).to_le_bytes());
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(theirs);
            let theirs = u64::from_be_bytes(bytes);
            if mine != theirs {
                let byte = (mine ^ theirs).leading_zeros() as usize / 8;
                return (mine.cmp(&theirs), at + byte);
            }
            at += 8;
        }
        // The last few bytes as numbers too: the word's first bytes (its high ones, read
        // big-endian) against the probe's, without a call to compare slices.
        let rest = probe_words.remainder();
        if let Some(mine) = mine_words.next() {
            let shift = 64 - 8 * rest.len() as u32;
            let mine = u64::from_be_bytes(mine.load(Ordering::Relaxed).to_le_bytes())
                .checked_shr(shift)
                .unwrap_or(0);
            let theirs = rest.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
            if mine != theirs {
                // The differing bits sit in the low `rest.len()` bytes.
                let byte = ((mine ^ theirs).leading_zeros() - shift) as usize / 8;
                return (mine.cmp(&theirs), at + byte);
            }
        }
        (self.key_len.cmp(&probe.len()), common)
    }

    /// `len` bytes of the packed data from byte `from`, copied out.
    fn bytes(&self, from: usize, len: usize) -> Box<[u8]> {
        let mut out = Vec::with_capacity(len);
        self.copy_into(from, len, &mut out);
        out.into_boxed_slice()
    }

    /// The packed key and value, handed to `f` in one slice (the key its first
    /// `key_len` bytes): read a word a load into a buffer on the stack when they fit it,
    /// else into one on the heap. Copying an entry out this way costs a load and a store
    /// a word and one copy of each part, not a copy for every word.
    fn with_packed<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let total = self.key_len + self.value_len.unwrap_or(0);
        if total > PACK_BUFFER {
            let mut heap = Vec::with_capacity(total + 8);
            self.copy_into(0, total, &mut heap);
            return f(&heap);
        }
        let mut buffer = [0u8; PACK_BUFFER];
        let start = self.data_start();
        let words = self
            .words
            .get(start..start + total.div_ceil(8))
            .unwrap_or_default();
        for (bytes, word) in buffer.chunks_exact_mut(8).zip(words) {
            bytes.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        f(buffer.get(..total).unwrap_or_default())
    }

    /// `len` bytes of the packed data from byte `from`, appended to `out`.
    fn copy_into(&self, from: usize, len: usize, out: &mut Vec<u8>) {
        let (end, base) = (from + len, out.len());
        out.reserve(len + 8);
        let mut at = from;
        // The first word's bytes from `from` (a value starts inside one); then whole
        // words, eight bytes a store, the last one's bytes past the end cut off.
        if !at.is_multiple_of(8) {
            let word = self.word(at / 8);
            let to = (8 - at % 8).min(len) + at % 8;
            out.extend_from_slice(word.get(at % 8..to).unwrap_or_default());
            at += to - at % 8;
        }
        while at < end {
            out.extend_from_slice(&self.word(at / 8));
            at += 8;
        }
        out.truncate(base + len);
    }

    fn key(&self) -> Box<[u8]> {
        self.bytes(0, self.key_len)
    }

    fn value(&self) -> IValue {
        self.value_len.map(|len| self.bytes(self.key_len, len))
    }

    fn next(&self, level: usize) -> NodeRef {
        self.words
            .get(FIXED_WORDS + level)
            .map_or(NIL, |w| w.load(Ordering::Acquire))
    }

    /// Where it stands against `(key, seq)` in internal order.
    #[inline]
    fn cmp(&self, key: &[u8], seq: u64) -> Cmp {
        self.cmp_key(key).then_with(|| seq.cmp(&self.seq))
    }
}

impl Arena {
    fn new() -> Self {
        Arena {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            head: std::array::from_fn(|_| AtomicU64::new(NIL)),
            height: AtomicUsize::new(1),
        }
    }

    /// The node at `at` (`None` for [`NIL`], or a reference that leads nowhere).
    #[inline]
    fn node(&self, at: NodeRef) -> Option<Node<'_>> {
        let chunk = usize::try_from(at >> 32).ok()?.checked_sub(1)?;
        let offset = (at & 0xFFFF_FFFF) as usize;
        let words = self.chunks.get(chunk)?.get()?.get(offset..)?;
        let seq = words.first()?.load(Ordering::Relaxed);
        let header = words.get(1)?.load(Ordering::Relaxed);
        let value_len = header & TOMBSTONE;
        Some(Node {
            words,
            seq,
            height: (header >> 60) as usize,
            key_len: ((header >> 32) & MAX_KEY_LEN as u64) as usize,
            value_len: (value_len != TOMBSTONE).then_some(value_len as usize),
        })
    }

    /// The link at `level` out of `at` (the head for [`NIL`]): read straight from its
    /// word, the node not decoded.
    #[inline]
    fn next(&self, at: NodeRef, level: usize) -> NodeRef {
        self.link_word(at, level)
            .map_or(NIL, |w| w.load(Ordering::Acquire))
    }

    /// Whether the node at `at` lies before `(key, seq)` in internal order (`false` for
    /// [`NIL`]: the end of a level lies after everything).
    #[inline]
    fn before(&self, at: NodeRef, key: &[u8], seq: u64) -> bool {
        self.node(at)
            .is_some_and(|node| node.cmp(key, seq) == Cmp::Less)
    }

    /// From `at` (before `(key, seq)`, or the head), the last node of `level` before
    /// `(key, seq)`, and the node after it there. `stop` is a node known not to lie
    /// before it (where the level above stopped): reaching it ends the walk without a
    /// comparison.
    #[inline]
    fn walk(
        &self,
        mut at: NodeRef,
        level: usize,
        key: &[u8],
        seq: u64,
        stop: NodeRef,
    ) -> (NodeRef, NodeRef) {
        loop {
            let next = self.next(at, level);
            if next == NIL || next == stop || !self.before(next, key, seq) {
                return (at, next);
            }
            at = next;
        }
    }

    fn link_word(&self, at: NodeRef, level: usize) -> Option<&AtomicU64> {
        if at == NIL {
            return self.head.get(level);
        }
        let chunk = usize::try_from(at >> 32).ok()?.checked_sub(1)?;
        let offset = (at & 0xFFFF_FFFF) as usize;
        self.chunks
            .get(chunk)?
            .get()?
            .get(offset + FIXED_WORDS + level)
    }

    /// How many levels the node at `at` stands on (every level for [`NIL`], the head;
    /// none for a reference that leads nowhere).
    fn height_of(&self, at: NodeRef) -> usize {
        if at == NIL {
            return MAX_HEIGHT;
        }
        self.node(at).map_or(0, |node| node.height)
    }

    /// For each level below `height`, the last node before `(key, seq)` ([`NIL`] for the
    /// head), searching from level `height - 1` down.
    fn predecessors(&self, key: &[u8], seq: u64, height: usize) -> [NodeRef; MAX_HEIGHT] {
        let mut preds = [NIL; MAX_HEIGHT];
        let (mut at, mut stop) = (NIL, NIL);
        for level in (0..height).rev() {
            (at, stop) = self.walk(at, level, key, seq, stop);
            preds[level] = at;
        }
        preds
    }

    /// Calls `f` with each node from `first` to `stop` (not included) on level 0, in
    /// order, `bounds` the keys they hold (`first` is the first node at or past its
    /// start, `stop` the first at or past its end). The list must not change meanwhile
    /// (the caller holds the writer lock).
    ///
    /// A walk of level 0 node by node waits for each node's cache miss before it can
    /// read the next link: in a memtable larger than the cache, most of a compaction's
    /// copy. So the stretch is cut into segments at the nodes of level [`WAVE_LEVEL`]
    /// (a few hundred nodes apart), and [`WAVE`] segments at a time are walked side by
    /// side, a link of each in turn: their misses are independent, and the processor
    /// waits for several at once. The nodes a wave found (a few hundred kilobytes, still
    /// in the cache) are then handed to `f` segment by segment, in order.
    fn each_in_waves<E>(
        &self,
        first: NodeRef,
        stop: NodeRef,
        bounds: &KeyRange,
        mut f: impl FnMut(&Node<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let height = self.height.load(Ordering::Acquire).clamp(1, MAX_HEIGHT);
        let mut starts = vec![first];
        if height > WAVE_LEVEL {
            let preds = self.predecessors(bounds.start(), u64::MAX, height);
            let mut at = self.next(preds[WAVE_LEVEL], WAVE_LEVEL);
            let within = |at| match bounds.end() {
                Some(end) => self.before(at, end, u64::MAX),
                None => at != NIL,
            };
            // (`first` itself, when it stands that tall, starts an empty segment.)
            while within(at) {
                starts.push(at);
                at = self.next(at, WAVE_LEVEL);
            }
        }
        let mut found: [Vec<NodeRef>; WAVE] = std::array::from_fn(|_| Vec::new());
        for (w, wave) in starts.chunks(WAVE).enumerate() {
            let mut walks = [(NIL, NIL); WAVE];
            for (i, (walk, list)) in walks.iter_mut().zip(&mut found).enumerate() {
                let end = starts.get(w * WAVE + i + 1).copied().unwrap_or(stop);
                *walk = (wave.get(i).copied().unwrap_or(end), end);
                list.clear();
            }
            // A link of each segment in turn, until every one reached its end (a segment
            // that met the end of the list ends there too).
            let mut going = true;
            while going {
                going = false;
                for ((at, end), list) in walks.iter_mut().zip(&mut found) {
                    if *at != *end && *at != NIL {
                        list.push(*at);
                        *at = self.next(*at, 0);
                        going = true;
                    }
                }
            }
            for &at in found.iter().flatten() {
                if let Some(node) = self.node(at) {
                    f(&node)?;
                }
            }
        }
        Ok(())
    }

    /// The keys of the nodes of `level` within `bounds` (about `4^level` nodes apart),
    /// in order: a sample of where its entries lie. None when no node stands that tall.
    fn sample_keys(&self, bounds: &KeyRange, level: usize) -> Vec<Box<[u8]>> {
        let height = self.height.load(Ordering::Acquire).clamp(1, MAX_HEIGHT);
        let mut keys = Vec::new();
        if height <= level {
            return keys;
        }
        let preds = self.predecessors(bounds.start(), u64::MAX, height);
        let mut at = self.next(preds[level], level);
        while let Some(node) = self.node(at) {
            let key = node.key();
            if bounds.end().is_some_and(|end| *key >= *end) {
                break;
            }
            keys.push(key);
            at = node.next(level);
        }
        keys
    }

    /// The first node at or after `(key, seq)`: the node the search compared last, not a
    /// second read of the link (an insert may have put a smaller node there meanwhile).
    #[inline]
    fn lower_bound(&self, key: &[u8], seq: u64) -> NodeRef {
        let height = self.height.load(Ordering::Acquire).clamp(1, MAX_HEIGHT);
        let (mut at, mut stop) = (NIL, NIL);
        for level in (0..height).rev() {
            (at, stop) = self.walk(at, level, key, seq, stop);
        }
        stop
    }
}

impl Memtable {
    pub(crate) fn new(tracker: &Arc<MemoryTracker>) -> Self {
        Memtable {
            arena: OnceLock::new(),
            writer: Mutex::new(Writer {
                chunk: None,
                used: 0,
                rng: 0x9E37_79B9_7F4A_7C15,
                hint: None,
                heads: Vec::new(),
                looked: 0,
                placed: 0,
                judged_after: 0,
                occupied: 0,
                begin_with: 0,
                proven: false,
                hot: false,
                tall_firsts: 0,
                key_bytes: 0,
                value_bytes: 0,
            }),
            entries: AtomicUsize::new(0),
            charge: Charge::new(tracker),
        }
    }

    /// A memtable that takes over from `self` as the active one (a freeze): when `self`'s
    /// table of neighbours was judged worth keeping (or was inherited so, and not judged
    /// otherwise since), the new one keeps a table from its first insert, sized for the
    /// user keys `self`'s held (four slots for each pair it held). Its writes are most
    /// likely to the same hot user keys, and a table begun at [`HEADS_FROM`] entries would
    /// search for each of them again, and be given up for placing nothing while it meets
    /// each for the first time. The new table is judged as any other.
    pub(crate) fn following(&self, tracker: &Arc<MemoryTracker>) -> Self {
        let next = Memtable::new(tracker);
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let slots = if writer.heads.is_empty() {
            writer.begin_with // none inserted: what it was to begin with
        } else {
            (writer.occupied * 4)
                .next_power_of_two()
                .clamp(HEADS_FROM / ENTRIES_PER_SLOT, HEADS_MAX)
        };
        if writer.proven && slots > 0 {
            let mut next_writer = next.writer.lock().unwrap_or_else(PoisonError::into_inner);
            (next_writer.begin_with, next_writer.proven) = (slots, true);
            next_writer.hot = writer.looked > 0 && writer.placed * 4 >= writer.looked * 3;
        }
        drop(writer);
        next
    }

    /// Bytes charged for it: its arena's chunks.
    pub(crate) fn charged(&self) -> u64 {
        self.charge.bytes()
    }

    /// Entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    /// Keys of entries within `bounds`, about `every` entries apart or closer (the nodes
    /// of the level whose nodes lie so: the skiplist's branching factor is four), in
    /// order: where a compaction may cut its pieces. Its writer lock is held while it
    /// walks (no node is linked meanwhile).
    pub(crate) fn sample_keys(&self, bounds: &KeyRange, every: usize) -> Vec<Box<[u8]>> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let level = (every.max(1).ilog2() / 2) as usize;
        self.arena.get().map_or_else(Vec::new, |arena| {
            arena.sample_keys(bounds, level.min(MAX_HEIGHT - 1))
        })
    }

    /// The bytes of the keys and of the values it holds: what a copy of every entry
    /// ([`Memtable::span_copy`]) takes.
    pub(crate) fn bytes(&self) -> (usize, usize) {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        (writer.key_bytes, writer.value_bytes)
    }

    /// True when it holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes its first insert charges before any entry: the arena's directory of chunks.
    pub(crate) fn first_insert_cost(&self) -> u64 {
        match self.arena.get() {
            Some(_) => 0,
            None => std::mem::size_of::<Arena>() as u64,
        }
    }

    /// Bytes of entries it can still take: the free tail of its chunk and the chunks it
    /// has not allocated yet (see [`CHUNKS`]).
    pub(crate) fn room(&self) -> u64 {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(current) = writer.chunk else {
            return ROOM_FROM[0];
        };
        let size = self
            .arena
            .get()
            .and_then(|a| a.chunks.get(current)?.get())
            .map_or(0, |c| c.len());
        let later = ROOM_FROM.get(current + 1).copied().unwrap_or(0);
        (size.saturating_sub(writer.used) * 8) as u64 + later
    }

    /// One [`Inserter::insert`] under a lock of its own.
    #[cfg(test)]
    pub(crate) fn insert(&self, key: &[u8], seq: u64, value: Option<&[u8]>, reserved: u64) -> bool {
        self.inserter().insert(key, seq, value, reserved)
    }

    /// The memtable's writer, held for several inserts (a batch's, one lock for all):
    /// [`Inserter::insert`] is [`Memtable::insert`] without taking the lock again.
    pub(crate) fn inserter(&self) -> Inserter<'_> {
        let arena = self.arena.get_or_init(|| {
            // Covered by the first insert's `reserved` (see `first_insert_cost`).
            let bytes = std::mem::size_of::<Arena>() as u64;
            self.charge.tracker().force_reserve(bytes);
            self.charge.add_reserved(bytes);
            Box::new(Arena::new())
        });
        Inserter {
            memtable: self,
            arena,
            writer: self.writer.lock().unwrap_or_else(PoisonError::into_inner),
            owed: 0,
        }
    }

    /// Room for `words` words: in the current chunk, or in a new one (charged whole; the
    /// tail left unused in the old one stays charged, as it stays allocated). `owed`
    /// reserved bytes are given back before a new chunk is charged.
    fn allocate(
        &self,
        arena: &Arena,
        writer: &mut Writer,
        words: usize,
        owed: &mut u64,
    ) -> Option<(usize, usize)> {
        if let Some(chunk) = writer.chunk {
            let size = arena.chunks.get(chunk)?.get()?.len();
            if writer.used + words <= size {
                let offset = writer.used;
                writer.used += words;
                return Some((chunk, offset));
            }
        }
        let next = writer.chunk.map_or(0, |c| c + 1);
        if next >= CHUNKS {
            return None;
        }
        // A full chunk if the hard limit allows it, else what it allows, else the node
        // alone: the write that brings it reserved room for it, given back first.
        let tracker = self.charge.tracker();
        tracker.release(std::mem::take(owed));
        let (least, most) = (
            (words * 8) as u64,
            (chunk_words(next).max(words) * 8) as u64,
        );
        let bytes = tracker.try_reserve_up_to(least, most).unwrap_or_else(|| {
            tracker.force_reserve(least);
            least
        });
        tracker.release(bytes % 8);
        let bytes = bytes - bytes % 8;
        let size = (bytes / 8) as usize;
        let chunk: Box<[AtomicU64]> = std::iter::repeat_with(|| AtomicU64::new(0))
            .take(size)
            .collect();
        self.charge.add_reserved(bytes);
        arena.chunks.get(next)?.set(chunk).ok()?;
        writer.chunk = Some(next);
        writer.used = words;
        Some((next, 0))
    }

    /// The newest entry of `key` with sequence `<= seq`: `(seq, value)`.
    #[inline]
    pub(crate) fn get(&self, key: &[u8], seq: u64) -> Option<(u64, IValue)> {
        let arena = self.arena.get()?;
        let node = arena.node(arena.lower_bound(key, seq))?;
        (node.cmp_key(key) == Cmp::Equal).then(|| (node.seq, node.value()))
    }

    /// The smallest user key after `key` (or at it, when `inclusive`) with any entry.
    pub(crate) fn next_key(&self, key: &[u8], inclusive: bool) -> Option<Box<[u8]>> {
        let arena = self.arena.get()?;
        // Entries of `key` itself run from (key, MAX) down to (key, 0).
        let mut at = arena.lower_bound(key, if inclusive { u64::MAX } else { 0 });
        loop {
            let node = arena.node(at)?;
            if inclusive || node.cmp_key(key) != Cmp::Equal {
                return Some(node.key());
            }
            at = node.next(0);
        }
    }

    /// [`Memtable::span`] as a run (charged to nothing): the entries' bytes copied into
    /// the run's arenas, with no allocation per entry.
    ///
    /// # Errors
    /// [`MemError::RunTooLarge`] when its keys or values pass 4 GiB.
    pub(crate) fn span_run(&self, bounds: &KeyRange, seq: u64) -> Result<Run, MemError> {
        let mut builder = RunBuilder::with_capacity(0, 0, 0);
        let mut value = Vec::new();
        self.each_visible(bounds, seq, |node, key| {
            value.clear();
            if let Some(len) = node.value_len {
                node.copy_into(node.key_len, len, &mut value);
            }
            builder.push(key, node.seq, node.value_len.map(|_| value.as_slice()))
        })?;
        Ok(builder.finish(None))
    }

    /// [`Memtable::span`] copied out for a compaction's merge ([`Span`]): the keys and
    /// values in one buffer each, nothing built for lookups, room for every entry taken
    /// at the start. Each node's bytes are read out once ([`Node::with_packed`]) and its
    /// key and value copied into the span, unless it repeats the entry before it, key and
    /// sequence; a key met twice (two sequence numbers) marks the span as not unique.
    pub(crate) fn span_copy(&self, bounds: &KeyRange, seq: u64) -> Span {
        self.span_copy_part(bounds, seq, (1, 1))
    }

    /// [`Memtable::span_copy`] of bounds that hold about `part.0 / part.1` of its
    /// entries (a piece of a compaction): room taken for that share of its bytes.
    pub(crate) fn span_copy_part(&self, bounds: &KeyRange, seq: u64, part: (usize, usize)) -> Span {
        // Held through the walk: no insert comes between (see `each_within`). Room for
        // the share of its entries' bytes (and a word to spare).
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let share = |n: usize| n / part.1.max(1) * part.0.min(part.1) + 8;
        let (keys, values, ends) = (
            share(writer.key_bytes),
            share(writer.value_bytes),
            share(self.len()),
        );
        // In the buffers of a copy dropped lately, if one is kept: memory touched already.
        let tracker = self.charge.tracker();
        let want = keys + values + ends * std::mem::size_of::<SpanEnds>();
        let mut buffers = (tracker.spares.take_span(want as u64)).unwrap_or_default();
        buffers.keys.reserve_exact(keys);
        buffers.values.reserve_exact(values);
        buffers.ends.reserve_exact(ends);
        let mut span = Span {
            buffers,
            unique: true,
            any_deleted: false,
            max_seq: 0,
            spares: Arc::clone(tracker),
        };
        let Ok(()) = self.each_within(bounds, Some(&writer), |node| {
            if node.seq > seq {
                return Ok::<(), std::convert::Infallible>(());
            }
            node.with_packed(|bytes| {
                let (key, value) = bytes.split_at(node.key_len.min(bytes.len()));
                let out = &mut span.buffers;
                // The same key as the entry before: looked at when the lengths and the
                // last eight bytes (an MVCC key's timestamp) agree, as between most
                // neighbours they do not.
                let before = out.ends.len().checked_sub(2).map_or(0, |i| out.ends[i].key);
                let last = out.keys.get(before..).unwrap_or_default();
                let tail = |key: &[u8]| {
                    let at = key.len().checked_sub(8)?;
                    Some(u64::from_le_bytes(key.get(at..)?.try_into().ok()?))
                };
                let same_key = !out.ends.is_empty()
                    && last.len() == key.len()
                    && tail(last) == tail(key)
                    && last == key;
                if same_key {
                    if out.ends.last().is_some_and(|last| last.seq == node.seq) {
                        return; // one entry inserted twice: taken once
                    }
                    span.unique = false;
                }
                out.keys.extend_from_slice(key);
                if node.value_len.is_some() {
                    out.values.extend_from_slice(value);
                }
                span.any_deleted |= node.value_len.is_none();
                span.max_seq = span.max_seq.max(node.seq);
                out.ends.push(SpanEnds {
                    key: out.keys.len(),
                    value: out.values.len(),
                    seq: node.seq,
                    deleted: node.value_len.is_none(),
                });
            });
            Ok(())
        });
        span
    }

    /// The entries within `bounds` with sequence `<= seq`, in order.
    pub(crate) fn span(&self, bounds: &KeyRange, seq: u64) -> Vec<RunEntry> {
        let mut out: Vec<RunEntry> = Vec::new();
        let Ok(()) = self.each_visible(bounds, seq, |node, key| {
            out.push(RunEntry {
                key: key.into(),
                seq: node.seq,
                value: node.value(),
            });
            Ok::<(), std::convert::Infallible>(())
        });
        out
    }

    /// Calls `f` with each node within `bounds` with sequence `<= seq`, in order, and its
    /// key (a node repeating the entry before, key and sequence, is skipped); stops at
    /// the first error.
    fn each_visible<E>(
        &self,
        bounds: &KeyRange,
        seq: u64,
        mut f: impl FnMut(&Node<'_>, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut key = Vec::new();
        let mut taken: Option<u64> = None; // the sequence of the entry taken last
        self.each_within(bounds, None, |node| {
            let repeat = taken == Some(node.seq) && node.cmp_key(&key) == Cmp::Equal;
            if node.seq <= seq && !repeat {
                key.clear();
                node.copy_into(0, node.key_len, &mut key);
                f(node, &key)?;
                taken = Some(node.seq);
            }
            Ok(())
        })
    }

    /// Calls `f` with each node within `bounds`, in order (every sequence); stops at the
    /// first error. With the memtable's `writer` lock held, no node can be linked while
    /// the walk goes on: the first node at or past the bounds' end is found once, and the
    /// walk, in waves of segments side by side ([`Arena::each_in_waves`]), ends there,
    /// comparing no key. Without the lock, each node's key is compared with the end.
    fn each_within<E>(
        &self,
        bounds: &KeyRange,
        writer: Option<&MutexGuard<'_, Writer>>,
        mut f: impl FnMut(&Node<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(arena) = self.arena.get() else {
            return Ok(());
        };
        let mut at = arena.lower_bound(bounds.start(), u64::MAX);
        let stop = (writer.is_some()).then(|| {
            bounds
                .end()
                .map_or(NIL, |end| arena.lower_bound(end, u64::MAX))
        });
        if let Some(stop) = stop {
            return arena.each_in_waves(at, stop, bounds, f);
        }
        while let Some(node) = (Some(at) != stop).then(|| arena.node(at)).flatten() {
            let past = |end| node.cmp_key(end) != Cmp::Less;
            if stop.is_none() && bounds.end().is_some_and(past) {
                break;
            }
            f(&node)?;
            at = node.next(0);
        }
        Ok(())
    }
}

/// A memtable's entries within some bounds, copied out in order ([`Memtable::span_copy`]):
/// what a compaction merges into its new run, never searched, so it holds only the bytes
/// and where each entry ends, laid out as a run's ([`Packed`]) so that the merge copies
/// stretches of it whole.
#[derive(Debug)]
pub(crate) struct Span {
    /// Its keys, values and entry ends (left to the spare arrays when it drops).
    buffers: SpanBuffers,
    /// No two entries share a key; whether any is a deletion; the highest sequence
    /// number (what [`Packed::copyable_at`] looks at).
    unique: bool,
    any_deleted: bool,
    max_seq: u64,
    /// Whose spare arrays ([`SpareRuns`](crate::layer::SpareRuns)) its buffers join
    /// when it drops, if large enough: its memtable's tracker's.
    spares: Arc<MemoryTracker>,
}

impl Drop for Span {
    /// Large enough, it leaves its buffers to the spare arrays, in the room under the
    /// hard limit.
    fn drop(&mut self) {
        let tracker = &self.spares;
        let buffers = std::mem::take(&mut self.buffers);
        if buffers.heap_bytes() >= SPARE_MIN_BYTES {
            let room = tracker.hard_limit().saturating_sub(tracker.used());
            tracker.spares.keep(Spare::Span(buffers), room);
        }
    }
}

/// A [`Span`]'s buffers, kept emptied among the spare arrays
/// ([`SpareRuns`](crate::layer::SpareRuns)) for the next copy.
#[derive(Debug, Default)]
pub(crate) struct SpanBuffers {
    keys: Vec<u8>,
    values: Vec<u8>,
    ends: Vec<SpanEnds>,
}

impl SpanBuffers {
    /// Bytes its buffers hold room for.
    pub(crate) fn heap_bytes(&self) -> u64 {
        let ends = self.ends.capacity() * std::mem::size_of::<SpanEnds>();
        (self.keys.capacity() + self.values.capacity() + ends) as u64
    }

    /// Empties them, keeping their room.
    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.ends.clear();
    }
}

/// Where one entry of a [`Span`] ends in its buffers, its sequence number, and whether
/// it is a deletion (its value then is empty).
#[derive(Debug, Clone, Copy)]
struct SpanEnds {
    key: usize,
    value: usize,
    seq: u64,
    deleted: bool,
}

impl Span {
    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.buffers.ends.len()
    }

    /// Entry `i`'s sequence number.
    pub(crate) fn seq(&self, i: usize) -> u64 {
        self.buffers.ends.get(i).map_or(0, |e| e.seq)
    }

    /// Entry `i`'s value, `None` for a deletion.
    pub(crate) fn value(&self, i: usize) -> Option<&[u8]> {
        let end = self.buffers.ends.get(i).filter(|e| !e.deleted)?.value;
        let (_, start) = self.entry_start(i);
        Some(&self.buffers.values[start..end])
    }

    /// Bytes of its keys and of its values.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> (usize, usize) {
        (self.buffers.keys.len(), self.buffers.values.len())
    }
}

impl Packed for Span {
    fn key_bytes(&self) -> &[u8] {
        &self.buffers.keys
    }

    fn value_bytes(&self) -> &[u8] {
        &self.buffers.values
    }

    #[inline]
    fn entry_end(&self, i: usize) -> (usize, usize, u64, bool) {
        let end = self.buffers.ends[i];
        (end.key, end.value, end.seq, end.deleted)
    }

    fn all_unique(&self) -> bool {
        self.unique
    }

    fn any_deletion(&self) -> bool {
        self.any_deleted
    }

    fn highest_seq(&self) -> u64 {
        self.max_seq
    }

    fn ends_between(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = (usize, usize, u64, bool)> {
        let ends = self.buffers.ends.get(from..to).unwrap_or_default();
        ends.iter().map(|e| (e.key, e.value, e.seq, e.deleted))
    }
}

/// A memtable's writer lock, held across inserts: see [`Memtable::inserter`].
pub(crate) struct Inserter<'a> {
    memtable: &'a Memtable,
    arena: &'a Arena,
    writer: MutexGuard<'a, Writer>,
    /// Reservations of the entries inserted, given back together: before a new chunk is
    /// charged (so that it sees the tracker as it would after each entry) and at the end.
    owed: u64,
}

impl Drop for Inserter<'_> {
    fn drop(&mut self) {
        self.memtable.charge.tracker().release(self.owed);
    }
}

impl Inserter<'_> {
    /// Inserts an entry; false (nothing inserted) when the key or value is too long for a
    /// header ([`MAX_KEY_LEN`], [`MAX_VALUE_LEN`]) or the arena has no room left: the
    /// store checks both before it writes anything, so that a batch is all or nothing.
    /// `reserved` bytes (an [`entry_estimate`]) were reserved on the tracker by the
    /// caller; they are given back (at the latest when the inserter drops), and what the
    /// arena allocates is charged instead: a new chunk takes what the hard limit allows,
    /// and at least the node (which the reservation given back first covers).
    pub(crate) fn insert(
        &mut self,
        key: &[u8],
        seq: u64,
        value: Option<&[u8]>,
        reserved: u64,
    ) -> bool {
        let (memtable, arena) = (self.memtable, self.arena);
        self.owed += reserved;
        if key.len() > MAX_KEY_LEN || value.is_some_and(|v| v.len() >= MAX_VALUE_LEN) {
            return false;
        }
        let writer = &mut *self.writer;
        if writer.begin_with > 0 {
            let slots = std::mem::take(&mut writer.begin_with);
            writer.keep_heads(arena, slots, &memtable.charge);
        }
        let drawn = writer.random_height();
        // A new version of a user key written before goes between the pair of
        // neighbours the table holds for it, with no search: on level 0 alone unless its
        // height was drawn above `FLAT_MAX`, and then on each level it was drawn to when
        // the neighbour before it stands that tall (see `TALL_FIRST`).
        let head =
            (!writer.heads.is_empty()).then(|| writer.way(head_slot(key, writer.heads.len())));
        // `between`: the node to link after, and on how many levels; `unplaced`: no pair
        // of the table places it (mostly its user key's first node in the memtable).
        let (between, unplaced) = match head {
            Some(at) => {
                let found = writer.between(arena, key, seq, at);
                writer.judge_heads(found.is_some(), &memtable.charge);
                match found {
                    Some(pred) if drawn <= FLAT_MAX => (Some((pred, 1)), false),
                    Some(pred) if drawn <= arena.height_of(pred.0) => (Some((pred, drawn)), false),
                    Some(_) => (None, false),
                    None => (None, true),
                }
            }
            None => (None, false),
        };
        let height = match between {
            Some((_, height)) => height,
            None if unplaced && writer.tall_first(memtable.len()) => {
                writer.tall_firsts += 1;
                drawn.max(TALL_FIRST)
            }
            None => drawn,
        };
        let value_len = value.map_or(0, <[u8]>::len);
        let words = node_words(height, key.len(), value_len);
        let Some((chunk, offset)) = memtable.allocate(arena, writer, words, &mut self.owed) else {
            return false;
        };
        let Some(slot) = arena
            .chunks
            .get(chunk)
            .and_then(OnceLock::get)
            .and_then(|c| c.get(offset..offset + words))
        else {
            return false;
        };
        // The node, written whole before it is linked.
        slot[0].store(seq, Ordering::Relaxed);
        let header = ((height as u64) << 60)
            | ((key.len() as u64) << 32)
            | value.map_or(TOMBSTONE, |v| v.len() as u64);
        slot[1].store(header, Ordering::Relaxed);
        pack(
            &slot[FIXED_WORDS + height..],
            key,
            value.unwrap_or_default(),
        );
        let me = node_ref(chunk, offset);
        // A node whose key goes between a pair of neighbours the table holds: linked
        // after the first on each of its levels (bottom-up), with no search. On level 0
        // alone, the hint stays: it only names nodes of levels this insert leaves alone,
        // and level 0's is the last insert itself, which a node added elsewhere on level
        // 0 does not move. Taller, it may now lie between a level's hinted node and the
        // last insert, which the next hinted search must not skip: the hint goes.
        if let Some(((pred, apart), height)) = between {
            for level in 0..height {
                slot[FIXED_WORDS + level].store(arena.next(pred, level), Ordering::Relaxed);
                if let Some(link) = arena.link_word(pred, level) {
                    link.store(me, Ordering::Release);
                }
            }
            writer.remember(head, pred | if apart { APART } else { 0 }, me);
            if height > 1 {
                writer.hint = None;
                let list_height = arena.height.load(Ordering::Relaxed).max(height);
                arena.height.store(list_height, Ordering::Release);
            }
        } else {
            // Linked bottom-up: a reader that finds it at any level finds it at level 0.
            // Only inserts store the list's height, and they hold the writer lock.
            let list_height = arena.height.load(Ordering::Relaxed).max(height);
            // The predecessors at every level (what this insert links below `height`,
            // and what the next hint needs above it): from the hint, else from the top.
            let preds = writer
                .hinted(arena, key, seq, list_height)
                .unwrap_or_else(|| arena.predecessors(key, seq, list_height));
            for (level, pred) in preds.iter().enumerate().take(height) {
                let next = arena.next(*pred, level);
                slot[FIXED_WORDS + level].store(next, Ordering::Relaxed);
                if let Some(link) = arena.link_word(*pred, level) {
                    link.store(me, Ordering::Release);
                }
            }
            writer.remember(head, preds[0], me);
            let mut hint = preds;
            hint[..height].fill(me);
            writer.hint = Some((me, hint));
            arena.height.store(list_height, Ordering::Release);
        }
        // Only inserts change the count, and they hold the writer lock: no read-modify-write.
        let entries = memtable.entries.load(Ordering::Relaxed);
        memtable.entries.store(entries + 1, Ordering::Release);
        writer.key_bytes += key.len();
        writer.value_bytes += value_len;
        let count = entries + 1;
        // Grown while a quarter of its slots or more hold pairs: a table that holds every
        // hot user key with room to spare is left as it is.
        if count >= HEADS_FROM
            && count.is_power_of_two()
            && writer.occupied * 4 >= writer.heads.len()
        {
            writer.keep_heads(
                arena,
                (count / ENTRIES_PER_SLOT).min(HEADS_MAX),
                &memtable.charge,
            );
        }
        true
    }
}

/// Entries of at most this many bytes (key and value) are packed through a buffer on the
/// stack: two copies and a store a word, not a copy for every part of a word.
const PACK_BUFFER: usize = 128;

/// Packs `key` then `value` into `words`, eight bytes a word (little-endian), the last
/// word padded with zeros.
fn pack(words: &[AtomicU64], key: &[u8], value: &[u8]) {
    let total = key.len() + value.len();
    if total <= PACK_BUFFER {
        let mut buffer = [0u8; PACK_BUFFER];
        buffer[..key.len()].copy_from_slice(key);
        buffer[key.len()..total].copy_from_slice(value);
        let used = buffer.get(..total.div_ceil(8) * 8).unwrap_or_default();
        for (bytes, w) in used.chunks_exact(8).zip(words) {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        return;
    }
    let mut at = words.iter();
    let mut word = [0u8; 8];
    let mut fill = 0;
    for mut part in [key, value] {
        if fill > 0 {
            let take = (8 - fill).min(part.len());
            word[fill..fill + take].copy_from_slice(&part[..take]);
            fill += take;
            part = &part[take..];
            if fill < 8 {
                continue;
            }
            if let Some(w) = at.next() {
                w.store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
        }
        let mut whole = part.chunks_exact(8);
        // Bytes first: a zip would take a word for the chunk that is not there.
        for (bytes, w) in whole.by_ref().zip(at.by_ref()) {
            let mut full = [0u8; 8];
            full.copy_from_slice(bytes);
            w.store(u64::from_le_bytes(full), Ordering::Relaxed);
        }
        let rest = whole.remainder();
        word = [0; 8];
        word[..rest.len()].copy_from_slice(rest);
        fill = rest.len();
    }
    if fill > 0
        && let Some(w) = at.next()
    {
        w.store(u64::from_le_bytes(word), Ordering::Relaxed);
    }
}

impl Writer {
    /// The predecessors of `(key, seq)` at every level below `list_height`, found from
    /// the hint when the key comes after the last one inserted (a batch in key order, or
    /// the next key of one); `None` sends the insert to a search from the top.
    ///
    /// A finger search: the hint holds, per level, the last node of that level at or
    /// before the last insert. Climbing from level 0 finds the lowest level whose hint is
    /// already the key's predecessor (its next node is not before the key); the hints
    /// above it are too (a node of a higher level between would be one of this level).
    /// The climb passes, at each level below, the first node of that level after the last
    /// insert (it was compared: it lies before the key); the descent starts from the one
    /// of the level just below, and each level below from where the level above ended (a
    /// node of every lower level, and no nearer the last insert than that level's first
    /// node after it). The node that ended the climb, and then each level's walk, ends
    /// the walk below without another comparison. The search costs about the logarithm
    /// of the distance from the last insert, not of the memtable's size.
    fn hinted(
        &self,
        arena: &Arena,
        key: &[u8],
        seq: u64,
        list_height: usize,
    ) -> Option<[NodeRef; MAX_HEIGHT]> {
        let (last, mut preds) = self.hint?;
        if !arena.before(last, key, seq) {
            return None;
        }
        let top = list_height.clamp(1, MAX_HEIGHT);
        let (mut exact, mut at, mut stop) = (0, NIL, NIL);
        while exact < top {
            let next = arena.next(preds[exact], exact);
            if next == NIL || !arena.before(next, key, seq) {
                stop = next;
                break;
            }
            at = next;
            exact += 1;
        }
        for level in (0..exact).rev() {
            (at, stop) = arena.walk(at, level, key, seq, stop);
            preds[level] = at;
        }
        Some(preds)
    }

    /// Where `(key, seq)` goes on level 0 without a search: the node before it, when the
    /// table's pair for its slot are still neighbours on level 0 and the key lies
    /// between them; with it, the [`APART`] flag for the pair it and the new node make.
    /// The table only ever saves a search: a pair of another user key (its tag differs,
    /// but for one in 32,768), or one that a later insert separated, fails the checks,
    /// and a pair that passes them is the key's place whoever put it there.
    ///
    /// The key is compared with the second node of the pair; with the first too unless
    /// the pair is flagged [`APART`] and the key begins with the second's user key (and
    /// is no shorter): then the first lies before it. A new version of a hot user key so
    /// reads one neighbour, not two (the first is the previous user key's oldest
    /// version, seldom in the cache).
    fn between(
        &self,
        arena: &Arena,
        key: &[u8],
        seq: u64,
        at: HeadSlot,
    ) -> Option<(NodeRef, bool)> {
        let &(first, tagged) = self.heads.get(at.index)?;
        if tagged >> TAG_SHIFT != at.tag {
            return None; // another user key's pair, or none
        }
        let (pred, apart) = (first & !APART, first & APART != 0);
        let next = tagged & ((1 << TAG_SHIFT) - 1);
        if arena.next(pred, 0) != next {
            return None;
        }
        let after = arena.node(next)?;
        let (order, differs_at) = after.cmp_key_at(key);
        if order.then_with(|| seq.cmp(&after.seq)) == Cmp::Less {
            return None; // it lies after the second
        }
        let user = after.key_len.saturating_sub(8);
        if pred == NIL || (apart && differs_at >= user && key.len() >= after.key_len) {
            return Some((pred, true));
        }
        let before = arena.node(pred)?;
        let (order, differs_at) = before.cmp_key_at(key);
        let placed = order.then_with(|| seq.cmp(&before.seq)) == Cmp::Less;
        placed.then_some((
            pred,
            order == Cmp::Less && differs_at < key.len().saturating_sub(8),
        ))
    }

    /// The slot of set `at` (see [`head_slot`]) for its user key: the way that holds its
    /// tag's pair, else the first empty way, else the last way, whose pair it replaces.
    /// The other ways keep the user keys they hold: hot user keys written in turn, more
    /// of them than a set has ways, would otherwise push one another out before each came
    /// back, and none would be placed. Ways fill in order and empty only all together
    /// (a new table), so no pair of the tag lies after an empty way.
    fn way(&self, at: HeadSlot) -> HeadSlot {
        let mut index = at.index;
        if let Some(set) = self.heads.get(at.index..at.index + WAYS) {
            for &(_, tagged) in set {
                if tagged >> TAG_SHIFT == at.tag || tagged == NIL {
                    break;
                }
                index += 1;
            }
        }
        HeadSlot {
            index: index.min(at.index + WAYS - 1),
            tag: at.tag,
        }
    }

    /// Notes that `me` was linked after `pred` on level 0, in slot `at` (a way of its
    /// set) when the writer keeps [`Writer::heads`].
    fn remember(&mut self, at: Option<HeadSlot>, pred: NodeRef, me: NodeRef) {
        if let Some(at) = at
            && let Some(head) = self.heads.get_mut(at.index)
        {
            self.occupied += usize::from(head.1 == NIL);
            *head = (pred, me | at.tag << TAG_SHIFT);
        }
    }

    /// Keeps [`Writer::heads`] in `slots` slots from now on, charged to `charge` in
    /// place of the table before, if the hard limit has room for it (else the table
    /// before stays). The pairs of the table before move to their slots in the new one
    /// (each found again from its last node's key): begun empty, the table would miss
    /// the next version of every user key it held, and that insert would search.
    fn keep_heads(&mut self, arena: &Arena, slots: usize, charge: &Charge) {
        if slots <= self.heads.len() {
            return;
        }
        let (bytes, before) = (
            slots as u64 * HEAD_BYTES,
            self.heads.len() as u64 * HEAD_BYTES,
        );
        if charge.tracker().try_reserve(bytes) {
            charge.add_reserved(bytes);
            let old = std::mem::replace(&mut self.heads, vec![(NIL, NIL); slots]);
            self.occupied = 0;
            let mut key = Vec::new();
            for (pred, tagged) in old {
                let last = tagged & ((1 << TAG_SHIFT) - 1);
                let Some(node) = (tagged >> TAG_SHIFT != 0)
                    .then(|| arena.node(last))
                    .flatten()
                else {
                    continue;
                };
                key.clear();
                node.copy_into(0, node.key_len, &mut key);
                self.remember(Some(self.way(head_slot(&key, slots))), pred, last);
            }
            charge.give_back(before);
            (self.looked, self.placed) = (0, 0);
            self.judged_after = slots / 2;
        }
    }

    /// Counts a look in [`Writer::heads`] (`placed`: it saved a search). After half as
    /// many looks as it has slots, a table that placed fewer than one in eight (writes of
    /// keys that do not come back before the next compaction, say) is given up, its
    /// memory given back: it costs every insert a hash and a cache miss, and saves none
    /// of them a search. The next doubling tries again, with a table begun empty.
    ///
    /// A table begun empty meets every hot user key once before it can place one: with
    /// 500 user keys written over and over, the tables begun at 1,024 and 2,048 entries
    /// are given up before the keys come back. Not counting looks at empty slots keeps
    /// them (500 keys' inserts: 1.0% fewer instructions), but keeps a table for keys that
    /// never come back longer too (100,000 keys: 3.5% more); it was measured and not
    /// taken.
    fn judge_heads(&mut self, placed: bool, charge: &Charge) {
        self.looked += 1;
        self.placed += usize::from(placed);
        if self.judged_after == 0 || self.looked < self.judged_after {
            return;
        }
        self.judged_after = 0;
        self.proven = self.placed * 8 >= self.looked;
        if !self.proven {
            charge.give_back(self.heads.len() as u64 * HEAD_BYTES);
            self.heads = Vec::new();
            self.occupied = 0;
        }
    }

    /// Whether a user key's first node stands at least [`TALL_FIRST`] levels tall: in a
    /// memtable that follows one whose table placed three inserts in four or more since
    /// it last grew (a memtable of hot user keys: see [`Memtable::following`]), for its
    /// first [`TALL_FIRSTS_FREE`] first nodes, then while they are at most one entry in
    /// eight (`entries`), so that the link words they take stay few whatever comes.
    fn tall_first(&self, entries: usize) -> bool {
        self.hot && (self.tall_firsts < TALL_FIRSTS_FREE || self.tall_firsts * 8 <= entries)
    }

    /// A height with probability 1/4 of each level above the first.
    fn random_height(&mut self) -> usize {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let mut height = 1;
        let mut bits = x;
        while height < MAX_HEIGHT && bits & 3 == 0 {
            height += 1;
            bits >>= 2;
        }
        height
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn pack_puts_key_then_value_eight_bytes_a_word() {
        // Short entries (packed through the stack buffer) and long ones (part by part).
        let lens = || (0..20usize).chain([60, 61, 127, 128, 129, 300]);
        for key_len in lens() {
            for value_len in lens() {
                let key: Vec<u8> = (0..key_len).map(|i| (i % 250) as u8 + 1).collect();
                let value: Vec<u8> = (0..value_len).map(|i| 200 - (i % 200) as u8).collect();
                let words: Vec<AtomicU64> = (0..(key_len + value_len).div_ceil(8) + 1)
                    .map(|_| AtomicU64::new(u64::MAX))
                    .collect();
                pack(&words, &key, &value);
                let bytes: Vec<u8> = words
                    .iter()
                    .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
                    .collect();
                let total = key_len + value_len;
                assert_eq!(&bytes[..key_len], &key[..]);
                assert_eq!(&bytes[key_len..total], &value[..]);
                let padded = total.div_ceil(8) * 8;
                assert!(
                    bytes[total..padded].iter().all(|b| *b == 0),
                    "{key_len}+{value_len}"
                );
                assert!(
                    bytes[padded..].iter().all(|b| *b == 0xFF),
                    "wrote past the node"
                );
            }
        }
    }

    fn tracker() -> Arc<MemoryTracker> {
        MemoryTracker::new(u64::MAX, u64::MAX)
    }

    fn insert(mem: &Memtable, key: &[u8], seq: u64, value: Option<&[u8]>) {
        let reserved = entry_estimate(key, value) + mem.first_insert_cost();
        mem.charge.tracker().force_reserve(reserved);
        assert!(mem.insert(key, seq, value, reserved));
    }

    type Model = BTreeMap<(Vec<u8>, std::cmp::Reverse<u64>), Option<Vec<u8>>>;

    fn model_get(model: &Model, key: &[u8], seq: u64) -> Option<(u64, Option<Vec<u8>>)> {
        model
            .range((key.to_vec(), std::cmp::Reverse(seq))..)
            .next()
            .filter(|((k, _), _)| k == key)
            .map(|((_, s), v)| (s.0, v.clone()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Gets, key walks and spans agree with an ordered map, for keys of every length
        /// around the word size (prefixes of one another included), values short and long,
        /// and deletions, inserted at random or in batches in key order (the hinted path);
        /// with `few_keys`, keys of at most two bytes, so that each gathers many versions
        /// and a hinted insert passes many nodes. With `heads`, the writer keeps its table of neighbours from the first insert
        /// (it starts at [`HEADS_FROM`] entries otherwise); with `hot` too, as if the
        /// memtable before had been one of hot user keys (first nodes raised, taller
        /// versions linked after them).
        #[test]
        fn agrees_with_an_ordered_map(
            sorted_batches in any::<bool>(),
            few_keys in any::<bool>(),
            heads in any::<bool>(),
            hot in any::<bool>(),
            mvcc in any::<bool>(),
            mut ops in prop::collection::vec(
                (
                    prop::collection::vec(0u8..4, 0..20),
                    // Short values, and now and then one that takes an entry past the
                    // buffer a copy reads short entries through (`PACK_BUFFER`).
                    prop::option::of(prop_oneof![
                        4 => prop::collection::vec(any::<u8>(), 0..20),
                        1 => prop::collection::vec(any::<u8>(), 100..140),
                    ]),
                ),
                1..400,
            ),
            probes in prop::collection::vec((prop::collection::vec(0u8..4, 0..20), 0u64..250), 1..50),
        ) {
            if few_keys {
                for (key, _) in &mut ops {
                    key.truncate(2);
                }
            }
            if mvcc {
                // MVCC-like keys: a user key of up to three bytes (some prefixes of
                // others), then eight bytes of a timestamp that comes in any order, so
                // that versions of one user key land between the table's pairs, before
                // them and after them (see `APART`).
                for (key, _) in &mut ops {
                    let digits = key.get(3..).unwrap_or_default().iter();
                    let ts = digits.fold(0u64, |n, &b| n * 4 + u64::from(b));
                    key.truncate(3);
                    key.extend_from_slice(&(ts % 8).to_be_bytes());
                }
            }
            if sorted_batches {
                for batch in ops.chunks_mut(16) {
                    batch.sort_by(|a, b| a.0.cmp(&b.0));
                }
            }
            let tracker = tracker();
            let mem = Memtable::new(&tracker);
            if heads {
                let mut writer = mem.writer.lock().unwrap();
                writer.keep_heads(&Arena::new(), 4, &mem.charge);
                writer.hot = hot;
            }
            let mut model = Model::new();
            for (i, (key, value)) in ops.iter().enumerate() {
                let seq = i as u64 + 1;
                insert(&mem, key, seq, value.as_deref());
                model.insert((key.clone(), std::cmp::Reverse(seq)), value.clone());
            }
            prop_assert_eq!(mem.len(), model.len());
            // Every level in order and whole (a level out of order or missing a node still
            // reads right, through level 0, only slower: the model alone would not see it).
            prop_assert_eq!(levels_out_of_place(&mem), None);
            prop_assert_eq!(mem.arena.get().map_or(0, |a| a.nodes_on(0)), model.len());
            for (key, seq) in &probes {
                let got = mem.get(key, *seq).map(|(s, v)| (s, v.map(|v| v.to_vec())));
                prop_assert_eq!(got, model_get(&model, key, *seq));
                for inclusive in [true, false] {
                    let expected = model
                        .keys()
                        .map(|(k, _)| k)
                        .find(|k| if inclusive { k.as_slice() >= key.as_slice() } else { k.as_slice() > key.as_slice() })
                        .cloned();
                    prop_assert_eq!(mem.next_key(key, inclusive).map(|k| k.to_vec()), expected);
                }
                let end = [key.as_slice(), &[2]].concat();
                let bounds = KeyRange::with_end(key.clone(), Some(end.clone())).unwrap();
                let span: Vec<_> = mem.span(&bounds, *seq).into_iter().map(|e| (e.key.to_vec(), e.seq, e.value.map(|v| v.to_vec()))).collect();
                let expected: Vec<_> = model
                    .iter()
                    .filter(|((k, s), _)| k.as_slice() >= key.as_slice() && k.as_slice() < end.as_slice() && s.0 <= *seq)
                    .map(|((k, s), v)| (k.clone(), s.0, v.clone()))
                    .collect();
                prop_assert_eq!(&span, &expected);
                let run = mem.span_run(&bounds, *seq).unwrap();
                let copied: Vec<_> = (0..run.len()).map(|i| (run.key(i).to_vec(), run.seq(i), run.value(i).map(<[u8]>::to_vec))).collect();
                prop_assert_eq!(&copied, &expected);
                let span = mem.span_copy(&bounds, *seq);
                let span_bytes = expected.iter().fold((0, 0), |(k, v), e| (k + e.0.len(), v + e.2.as_ref().map_or(0, Vec::len)));
                let copied: Vec<_> = (0..span.len()).map(|i| (span.entry_key(i).to_vec(), span.seq(i), span.value(i).map(<[u8]>::to_vec))).collect();
                prop_assert_eq!(copied, expected);
                let (keys, values) = span.bytes();
                prop_assert_eq!(keys, span_bytes.0);
                prop_assert_eq!(values, span_bytes.1);
            }
        }
    }

    /// A node's key against a probe: the order, and where the two first differ (the
    /// shorter's length when one is a prefix of the other), in a whole word and in the
    /// last few bytes.
    #[test]
    fn a_comparison_tells_where_the_keys_first_differ() {
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        let key = b"abcdefghijkl"; // a word and four bytes
        insert(&mem, key, 1, Some(b"v"));
        let arena = mem.arena.get().unwrap();
        let node = arena.node(arena.next(NIL, 0)).unwrap();
        for (probe, order, at) in [
            (&b"abcdefghijkl"[..], Cmp::Equal, 12),
            (b"abcdefghijkm", Cmp::Less, 11),
            (b"abcdefghij", Cmp::Greater, 10),
            (b"abcdefghijklmnop", Cmp::Less, 12),
            (b"abcdeZ", Cmp::Greater, 5),
            (b"b", Cmp::Less, 0),
            (b"", Cmp::Greater, 0),
            (b"abcdefgh", Cmp::Greater, 8),
            (b"abcdefgi", Cmp::Less, 7),
        ] {
            assert_eq!(node.cmp_key_at(probe), (order, at), "{probe:?}");
            assert_eq!(node.cmp_key(probe), key.as_slice().cmp(probe), "{probe:?}");
        }
    }

    /// An entry inserted twice, key and sequence (the store never does, but a copy must
    /// not count it twice): every copy takes it once, and its neighbours as they are.
    #[test]
    fn copies_take_an_entry_inserted_twice_once() {
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        for (key, seq, value) in [
            (&b"a"[..], 1, &b"1"[..]),
            (b"b", 2, b"2"),
            (b"b", 2, b"2"),
            (b"b", 1, b"old"),
            (b"longer than a word", 3, b"3"),
            (b"longer than a word", 3, b"3"),
        ] {
            insert(&mem, key, seq, Some(value));
        }
        let all = KeyRange::with_end(Vec::new(), None).unwrap();
        let expected: Vec<(Vec<u8>, u64)> = [
            (&b"a"[..], 1),
            (b"b", 2),
            (b"b", 1),
            (b"longer than a word", 3),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_vec(), s))
        .collect();
        let span = mem.span_copy(&all, u64::MAX);
        let copied: Vec<_> = (0..span.len())
            .map(|i| (span.entry_key(i).to_vec(), span.seq(i)))
            .collect();
        assert_eq!(copied, expected);
        assert_eq!(span.value(2), Some(&b"old"[..]));
        let listed: Vec<_> = mem
            .span(&all, u64::MAX)
            .into_iter()
            .map(|e| (e.key.to_vec(), e.seq))
            .collect();
        assert_eq!(listed, expected);
    }

    /// A memtable tall enough to be copied in waves (its list stands above
    /// [`WAVE_LEVEL`], in more segments than a wave walks) copies, for bounds that cut
    /// segments anywhere, exactly what a walk of level 0 node by node lists.
    #[test]
    fn copies_in_waves_take_every_entry_within_bounds_in_order() {
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        // Keys inserted out of order, some twice with two sequence numbers.
        for i in 0..40_000u64 {
            let user = i.wrapping_mul(2_654_435_761) % 30_000;
            let key = format!("key{user:06}");
            insert(&mem, key.as_bytes(), i + 1, Some(b"v"));
        }
        let height = mem.arena.get().unwrap().height.load(Ordering::Relaxed);
        assert!(
            height > WAVE_LEVEL + 1,
            "{height} levels: waves of several segments"
        );
        let bounds = [
            KeyRange::with_end(Vec::new(), None),
            KeyRange::with_end(b"key00".to_vec(), Some(b"key02".to_vec())),
            KeyRange::with_end(b"key012345".to_vec(), Some(b"key027777x".to_vec())),
            KeyRange::with_end(b"key029990".to_vec(), None),
            KeyRange::with_end(b"key1".to_vec(), None),
            KeyRange::with_end(b"key013".to_vec(), Some(b"key0130001".to_vec())),
        ];
        for bounds in bounds.map(Result::unwrap) {
            let span = mem.span_copy(&bounds, u64::MAX);
            let copied: Vec<_> = (0..span.len())
                .map(|i| (span.entry_key(i).to_vec(), span.seq(i)))
                .collect();
            let listed: Vec<_> = (mem.span(&bounds, u64::MAX).into_iter())
                .map(|e| (e.key.to_vec(), e.seq))
                .collect();
            assert_eq!(copied.len(), listed.len(), "{bounds:?}");
            assert!(
                copied == listed,
                "{bounds:?}: the copy differs from the walk"
            );
        }
    }

    /// A large copy leaves its buffers among the spares when it drops, and the next copy
    /// fills them (reading only its own entries); a small copy, or one whose buffers the
    /// room under the hard limit does not hold, frees them.
    #[test]
    fn a_copy_leaves_its_buffers_to_the_next() {
        let entries: Vec<(Vec<u8>, u64)> = (0..40_000u64)
            .map(|i| (format!("key{i:06}").into_bytes(), i + 1))
            .collect();
        let copied = |span: &Span| -> Vec<(Vec<u8>, u64)> {
            (0..span.len())
                .map(|i| (span.entry_key(i).to_vec(), span.seq(i)))
                .collect()
        };
        let all = KeyRange::with_end(Vec::new(), None).unwrap();
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        for (key, seq) in &entries {
            insert(&mem, key, *seq, Some(b"value"));
        }
        drop(mem.span_copy(&all, u64::MAX));
        let kept = tracker.spares.bytes();
        assert!(kept >= SPARE_MIN_BYTES, "{kept} bytes kept");
        let again = mem.span_copy(&all, u64::MAX);
        assert_eq!(tracker.spares.bytes(), 0, "the next copy took them");
        assert_eq!(copied(&again), entries);
        drop(again);
        assert_eq!(tracker.spares.bytes(), kept);
        // A few entries: too small a copy to keep.
        let bounds = KeyRange::with_end(b"key0".to_vec(), Some(b"key00001".to_vec())).unwrap();
        let few = mem.span_copy(&bounds, u64::MAX);
        assert_eq!(few.len(), 10);
        drop(few);
        assert_eq!(tracker.spares.bytes(), kept);
        // No room under the hard limit: freed.
        let full = mem.span_copy(&all, u64::MAX);
        tracker.set_limits(tracker.used(), tracker.used());
        drop(full);
        assert_eq!(tracker.spares.bytes(), 0);
    }

    /// The arena charges what it allocates: chunks, and the arena itself; all of it
    /// returns when the memtable drops. An empty memtable charges nothing.
    #[test]
    fn charges_its_chunks_and_gives_them_back() {
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        assert_eq!(tracker.used(), 0);
        for i in 0..10_000u64 {
            insert(
                &mem,
                format!("key{i:08}").as_bytes(),
                i + 1,
                Some(b"0123456789abcdef"),
            );
        }
        let chunks: u64 = (0..CHUNKS)
            .filter_map(|c| mem.arena.get()?.chunks[c].get().map(|c| c.len() as u64 * 8))
            .sum();
        // The writer's table of neighbours, if it holds one.
        let heads = (mem.writer.lock().unwrap().heads.len()
            * std::mem::size_of::<(NodeRef, NodeRef)>()) as u64;
        assert_eq!(
            tracker.used(),
            chunks + std::mem::size_of::<Arena>() as u64 + heads
        );
        assert_eq!(mem.charged(), tracker.used());
        // 27 bytes of key and value: four words of data, two fixed, about 1.3 of links.
        let per_entry = chunks as f64 / 10_000.0;
        eprintln!("{per_entry} bytes per entry");
        assert!(
            (56.0..80.0).contains(&per_entry),
            "{per_entry} bytes per entry"
        );
        drop(mem);
        assert_eq!(tracker.used(), 0);
    }

    /// Versions of a few hundred user keys, batches of 16 neighbours in key order, each
    /// batch a newer timestamp (an MVCC write's shape), past the entries from which the
    /// writer keeps its table of neighbours; with some older versions inserted out of
    /// order between. Every level stays in order, few versions reach level 1, and every
    /// entry reads back.
    #[test]
    fn versions_linked_between_remembered_neighbours_read_back() {
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        let mut model = Model::new();
        let mvcc = |user: u64, ts: u64| {
            let mut key = format!("t_{user:06}_r").into_bytes();
            key.extend_from_slice(&(u64::MAX - ts).to_be_bytes());
            key
        };
        let mut seq = 0u64;
        for batch in 0..800u64 {
            for k in 0..16 {
                let user = (batch * 16 + k) % 300;
                // Every seventh batch also writes an old version, out of order.
                let ts = if batch % 7 == 3 && k == 5 {
                    batch / 2
                } else {
                    10_000 + batch
                };
                seq += 1;
                let key = mvcc(user, ts);
                let value = seq.to_le_bytes().to_vec();
                insert(&mem, &key, seq, Some(&value));
                model.insert((key, std::cmp::Reverse(seq)), Some(value));
            }
        }
        let writer = mem.writer.lock().unwrap();
        assert!(!writer.heads.is_empty());
        // Judged worth keeping: most versions were placed without a search.
        assert!(
            writer.placed * 2 > writer.looked,
            "{} of {}",
            writer.placed,
            writer.looked
        );
        drop(writer);
        let arena = mem.arena.get().unwrap();
        for level in 0..MAX_HEIGHT {
            let (mut at, mut seen) = (arena.next(NIL, level), 0);
            while let Some(node) = arena.node(at) {
                let next = node.next(level);
                if let Some(after) = arena.node(next) {
                    assert_eq!(
                        after.cmp(&node.key(), node.seq),
                        Cmp::Greater,
                        "level {level}"
                    );
                }
                at = next;
                seen += 1;
            }
            assert!(level > 0 || seen == model.len());
            // Versions the table placed go on level 0 alone unless drawn above
            // `FLAT_MAX`: fewer than a sixth reach level 1, not a quarter.
            assert!(level != 1 || seen * 6 < model.len(), "{seen} on level 1");
        }
        for ((key, seq), value) in &model {
            let got = mem.get(key, seq.0).map(|(s, v)| (s, v.map(|v| v.to_vec())));
            assert_eq!(got, Some((seq.0, value.clone())));
        }
    }

    /// Every version of a user key (its bytes but the last eight) has one set and tag;
    /// neighbouring user keys, which differ in their last bytes only, spread over sets
    /// and tags (a plain product would give them all the same).
    #[test]
    fn head_slots_spread_neighbouring_user_keys_and_keep_versions_together() {
        let key = |user: u64, ts: u64| {
            let mut key = format!("t_{user:06}_r").into_bytes();
            key.extend_from_slice(&ts.to_be_bytes());
            key
        };
        let place = |k: &[u8]| {
            let at = head_slot(k, 1 << 12);
            (at.index, at.tag)
        };
        let places: std::collections::HashSet<_> = (0..1000).map(|u| place(&key(u, 7))).collect();
        assert!(places.len() >= 995, "{} of 1000", places.len());
        let sets: std::collections::HashSet<_> = places.iter().map(|p| p.0).collect();
        assert!(sets.iter().all(|&s| s % WAYS == 0));
        // Spread at random, 1,000 keys meet about 638 of 1,024 sets.
        assert!(
            sets.len() >= 590,
            "{} sets of 1024 for 1000 keys",
            sets.len()
        );
        for u in 0..100 {
            assert_eq!(place(&key(u, 1)), place(&key(u, u64::MAX - u)));
        }
    }

    /// When the entries double, the table grows with its pairs moved over: each pair
    /// to a slot of its own (a larger table tells apart what a smaller one did), and the
    /// next version of each user key is placed with no search.
    #[test]
    fn a_growing_table_of_neighbours_keeps_its_pairs() {
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        let key = |user: u64, ts: u64| {
            let mut key = format!("t_{user:06}_r").into_bytes();
            key.extend_from_slice(&(u64::MAX - ts).to_be_bytes());
            key
        };
        let taken = |mem: &Memtable| {
            let writer = mem.writer.lock().unwrap();
            let taken = writer.heads.iter().filter(|&&(_, t)| t != NIL).count();
            (writer.heads.len(), taken)
        };
        // 200 user keys, versions in turn, up to the doubling at 2,048 entries.
        let mut seq = 0;
        for ts in 0.. {
            for user in 0..200 {
                seq += 1;
                insert(&mem, &key(user, 100 + ts), seq, Some(b"v"));
                if seq == 2047 {
                    break;
                }
            }
            if seq == 2047 {
                break;
            }
        }
        let (slots, before) = taken(&mem);
        assert_eq!(slots, 1024 / ENTRIES_PER_SLOT);
        assert!(before > 100, "{before} pairs");
        // The 2,048th entry, a user key's next version, then the doubling.
        insert(&mem, &key(47, 1_000), 2048, Some(b"v"));
        assert_eq!(taken(&mem), (2048 / ENTRIES_PER_SLOT, before));
        let placed = mem.writer.lock().unwrap().placed;
        for user in 0..200 {
            insert(&mem, &key(user, 2_000), 2049 + user, Some(b"v"));
        }
        let writer = mem.writer.lock().unwrap();
        assert!(
            writer.placed - placed > 100,
            "{} placed",
            writer.placed - placed
        );
    }

    /// An MVCC key of user key `user` at `ts`, as the tables' tests write them.
    fn mvcc_key(user: u64, ts: u64) -> Vec<u8> {
        let mut key = format!("t_{user:06}_r").into_bytes();
        key.extend_from_slice(&(u64::MAX - ts).to_be_bytes());
        key
    }

    impl Arena {
        /// How many nodes level `level` links.
        fn nodes_on(&self, level: usize) -> usize {
            let (mut at, mut seen) = (self.next(NIL, level), 0);
            while let Some(node) = self.node(at) {
                (at, seen) = (node.next(level), seen + 1);
            }
            seen
        }
    }

    /// What is wrong with `mem`'s levels, if anything: a level out of order, or one that
    /// does not link every node that stands on it (as level 0 counts their heights).
    fn levels_out_of_place(mem: &Memtable) -> Option<String> {
        let arena = mem.arena.get()?;
        let mut standing = [0usize; MAX_HEIGHT];
        let mut at = arena.next(NIL, 0);
        while let Some(node) = arena.node(at) {
            standing.iter_mut().take(node.height).for_each(|n| *n += 1);
            at = node.next(0);
        }
        for (level, &standing) in standing.iter().enumerate() {
            let mut at = arena.next(NIL, level);
            while let Some(node) = arena.node(at) {
                let next = node.next(level);
                if let Some(after) = arena.node(next)
                    && after.cmp(&node.key(), node.seq) != Cmp::Greater
                {
                    return Some(format!("level {level} out of order"));
                }
                at = next;
            }
            let linked = arena.nodes_on(level);
            if linked != standing {
                return Some(format!("level {level} links {linked} of {standing} nodes"));
            }
        }
        None
    }

    /// In a memtable that follows one of hot user keys, every user key's first node
    /// stands at least [`TALL_FIRST`] levels tall, and a later version drawn taller than
    /// [`FLAT_MAX`] links after the one before it on its levels: every level stays in
    /// order and links every node standing on it, and reads find every version.
    #[test]
    fn versions_link_after_raised_first_nodes() {
        let tracker = tracker();
        let first = Memtable::new(&tracker);
        versions_in_turn(&first, 200, 40, 100, 0);
        let next = first.following(&tracker);
        assert!(next.writer.lock().unwrap().hot);
        versions_in_turn(&next, 200, 60, 1_000, 8_000);
        let arena = next.arena.get().unwrap();
        let mut taller = 0;
        for user in 0..200 {
            for round in 0..60 {
                let key = mvcc_key(user, 1_000 + round);
                let node = arena.node(arena.lower_bound(&key, u64::MAX)).unwrap();
                assert_eq!(node.cmp_key(&key), Cmp::Equal);
                if round == 0 {
                    assert!(node.height >= TALL_FIRST, "user key {user}'s first node");
                } else if node.height > FLAT_MAX {
                    taller += 1;
                }
            }
        }
        // One version in sixteen drawn taller than `FLAT_MAX` (11,800 later versions).
        assert!(
            (400..1100).contains(&taller),
            "{taller} later versions taller"
        );
        assert_eq!(levels_out_of_place(&next), None);
        assert_eq!(arena.nodes_on(0), 12_000);

        // User keys in a shuffled order each round, new ones among them, so that searched
        // inserts (new user keys, versions drawn taller than the node before them) come
        // after versions linked without a search on either side of them.
        let shuffled = first.following(&tracker);
        let mut model = Model::new();
        let (mut rng, mut seq) = (0x9E37_79B9_7F4A_7C15u64, 0);
        for round in 0..40 {
            let mut users: Vec<u64> = (0..300 + 10 * round).collect();
            for i in (1..users.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                users.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            for user in users {
                seq += 1;
                let key = mvcc_key(user, 1_000 + round);
                insert(&shuffled, &key, seq, Some(b"v"));
                model.insert((key, std::cmp::Reverse(seq)), Some(b"v".to_vec()));
            }
        }
        assert_eq!(levels_out_of_place(&shuffled), None);
        for ((key, seq), value) in &model {
            let got = shuffled
                .get(key, seq.0)
                .map(|(s, v)| (s, v.map(|v| v.to_vec())));
            assert_eq!(got, Some((seq.0, value.clone())));
        }
    }

    /// Versions of `users` user keys written in turn into `mem`, `rounds` of them, from
    /// timestamp `ts` and sequence `seq` on; the next sequence.
    fn versions_in_turn(mem: &Memtable, users: u64, rounds: u64, ts: u64, seq: u64) -> u64 {
        let mut seq = seq;
        for round in 0..rounds {
            for user in 0..users {
                seq += 1;
                insert(mem, &mvcc_key(user, ts + round), seq, Some(b"v"));
            }
        }
        seq
    }

    /// More hot user keys than a set has slots, all in one set (a table of one set):
    /// the first [`WAYS`] - 1 keep their pairs, and every version of them after the first
    /// is placed with no search; the others take turns in the last slot.
    #[test]
    fn a_set_keeps_the_pairs_of_its_first_user_keys() {
        let mem = Memtable::new(&tracker());
        let arena = Arena::new();
        let mut writer = mem.writer.lock().unwrap();
        writer.keep_heads(&arena, WAYS, &mem.charge);
        writer.judged_after = 0; // kept, whatever it places
        drop(writer);
        let (users, rounds) = (WAYS as u64 + 2, 20);
        versions_in_turn(&mem, users, rounds, 100, 0);
        let writer = mem.writer.lock().unwrap();
        assert_eq!(writer.heads.len(), WAYS);
        assert_eq!(writer.occupied, WAYS);
        // Drawn taller than `FLAT_MAX`, a version is searched for without a look.
        let kept = (WAYS - 1) * (rounds as usize - 1);
        assert!(
            writer.placed * 10 >= kept * 8,
            "{} of {kept}",
            writer.placed
        );
        assert!(writer.placed <= kept, "{} of {kept}", writer.placed);
    }

    /// A memtable that follows one whose table was judged worth keeping keeps a table from
    /// its first insert, sized for the user keys the first held (not for its entries),
    /// and places the next version of each of them; one that follows a memtable whose
    /// table placed nothing begins none until [`HEADS_FROM`] entries.
    #[test]
    fn a_memtable_following_a_kept_table_keeps_one_from_its_first_insert() {
        let tracker = tracker();
        let first = Memtable::new(&tracker);
        versions_in_turn(&first, 200, 40, 100, 0);
        let writer = first.writer.lock().unwrap();
        assert!(writer.proven);
        // 200 user keys in 8,000 entries: grown while a quarter of its slots held pairs.
        assert_eq!(writer.heads.len(), 1024);
        drop(writer);
        let next = first.following(&tracker);
        let seq = versions_in_turn(&next, 200, 1, 1_000, 8_000);
        let placed = next.writer.lock().unwrap().placed;
        assert_eq!(placed, 0, "every user key met for the first time");
        versions_in_turn(&next, 200, 1, 2_000, seq);
        let writer = next.writer.lock().unwrap();
        assert_eq!(writer.heads.len(), (200 * 4usize).next_power_of_two());
        assert!(writer.placed > 150, "{} placed", writer.placed);
        drop(writer);

        let once = Memtable::new(&tracker);
        for i in 0..8191u64 {
            insert(&once, format!("key{i:08}").as_bytes(), i + 1, Some(b"v"));
        }
        assert!(!once.writer.lock().unwrap().proven);
        let next = once.following(&tracker);
        versions_in_turn(&next, 200, 2, 100, 0);
        assert!(next.writer.lock().unwrap().heads.is_empty());
    }

    /// Keys that never come back (no versions): the table of neighbours places none of
    /// them, and is given up, its charge given back, until the next doubling.
    #[test]
    fn a_table_of_neighbours_that_places_nothing_is_given_up() {
        let tracker = tracker();
        let mem = Memtable::new(&tracker);
        let slots = 4096 / ENTRIES_PER_SLOT;
        // The next doubling, which would begin a table afresh, comes at 8,192.
        for i in 0..8191u64 {
            insert(&mem, format!("key{i:08}").as_bytes(), i + 1, Some(b"v"));
            if i + 1 == 4096 {
                assert_eq!(mem.writer.lock().unwrap().heads.len(), slots);
            }
        }
        let writer = mem.writer.lock().unwrap();
        assert!(writer.heads.is_empty());
        assert_eq!(
            (writer.looked, writer.placed, writer.judged_after),
            (slots / 2, 0, 0)
        );
        drop(writer);
        let chunks: u64 = (0..CHUNKS)
            .filter_map(|c| mem.arena.get()?.chunks[c].get().map(|c| c.len() as u64 * 8))
            .sum();
        assert_eq!(tracker.used(), chunks + std::mem::size_of::<Arena>() as u64);
        assert_eq!(mem.charged(), tracker.used());
    }

    /// A key or value larger than a chunk gets a chunk of its own size.
    #[test]
    fn an_entry_larger_than_a_chunk_fits() {
        let mem = Memtable::new(&tracker());
        let big = vec![7u8; 3 << 20];
        insert(&mem, b"a", 1, Some(&big));
        insert(&mem, &big, 2, None);
        insert(&mem, b"b", 3, Some(b"small"));
        assert_eq!(mem.get(b"a", 9).unwrap().1.unwrap().len(), big.len());
        assert_eq!(mem.get(&big, 9), Some((2, None)));
        assert_eq!(mem.get(b"b", 9), Some((3, Some(b"small".to_vec().into()))));
    }

    /// A reader beside the writer, reading at the last sequence the writer finished,
    /// gets exactly the newest version at or below it, while newer versions of the same
    /// keys go in around the nodes it searches (a search that read a link twice returned
    /// such a newer node).
    #[test]
    fn readers_at_a_sequence_see_exactly_its_versions_beside_the_writer() {
        const KEYS: u64 = 8;
        const WRITES: u64 = 40_000;
        let mem = Arc::new(Memtable::new(&tracker()));
        let published = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (mem, published) = (Arc::clone(&mem), Arc::clone(&published));
                std::thread::spawn(move || {
                    let mut checks = 0u64;
                    loop {
                        let at = published.load(Ordering::Acquire);
                        if at >= KEYS {
                            for k in 0..KEYS {
                                let key = format!("key{k}");
                                let expected = at - (at + KEYS - k) % KEYS;
                                let got = mem.get(key.as_bytes(), at).map(|(s, _)| s);
                                assert_eq!(got, Some(expected), "{key} at {at}");
                                checks += 1;
                            }
                        }
                        if at == WRITES {
                            return checks;
                        }
                    }
                })
            })
            .collect();
        for seq in 1..=WRITES {
            let key = format!("key{}", seq % KEYS);
            insert(&mem, key.as_bytes(), seq, Some(b"v"));
            published.store(seq, Ordering::Release);
        }
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    }

    /// A reader running beside the writer sees, for every key, a prefix of its versions:
    /// never a half-written node, never a version without the ones before it.
    #[test]
    fn readers_beside_the_writer_see_whole_nodes() {
        let mem = Arc::new(Memtable::new(&tracker()));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (mem, done) = (Arc::clone(&mem), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !done.load(Ordering::Acquire) || checks == 0 {
                    for k in 0..64u64 {
                        let key = format!("k{k:03}");
                        if let Some((seq, value)) = mem.get(key.as_bytes(), u64::MAX) {
                            let expected = format!("{key}@{seq}").repeat(3);
                            assert_eq!(value.as_deref(), Some(expected.as_bytes()));
                            checks += 1;
                        }
                    }
                }
                checks
            })
        };
        let mut seq = 0;
        for round in 0..200u64 {
            for k in 0..64u64 {
                seq += 1;
                let key = format!("k{:03}", (k * 37 + round) % 64);
                let value = format!("{key}@{seq}").repeat(3);
                insert(&mem, key.as_bytes(), seq, Some(value.as_bytes()));
            }
        }
        done.store(true, Ordering::Release);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(mem.len(), 200 * 64);
    }
}
