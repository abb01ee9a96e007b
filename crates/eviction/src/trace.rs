//! Workload traces for judging policies, and a seeded generator for four shapes of load.

use ime_region::RegionId;
use serde::{Deserialize, Serialize};

/// A region in a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRegion {
    /// Its id.
    pub id: RegionId,
    /// Bytes it occupies when cached.
    pub size: u64,
}

/// The reads of one region in one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRead {
    /// Index into [`Trace::regions`].
    pub region: usize,
    /// Read requests.
    pub reads: u64,
    /// MVCC versions they scanned.
    pub scanned_versions: u64,
    /// Keys they returned.
    pub returned_keys: u64,
}

/// One step of a trace: a policy round's worth of traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// Reads served by this store during the step.
    pub reads: Vec<TraceRead>,
    /// Regions this store does not lead during the step (indexes into the regions).
    pub followers: Vec<usize>,
    /// Regions whose size changed (index, new size), for write-heavy phases.
    pub resized: Vec<(usize, u64)>,
    /// Regions this store follows that were read during the step through the store
    /// leading them (what keeps them warm in that store's cache).
    #[serde(default)]
    pub remote_reads: Vec<usize>,
}

/// A workload: regions, then steps of `step_seconds` each. Serializable (JSON) so that a
/// trace from a real run can be replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// What it models.
    pub name: String,
    /// Seconds per step (one policy round).
    pub step_seconds: u64,
    /// The regions, with their initial sizes.
    pub regions: Vec<TraceRegion>,
    /// The steps.
    pub steps: Vec<TraceStep>,
}

impl Trace {
    /// Total bytes of all regions at the start.
    pub fn total_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }
}

/// The shapes of load the generator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceKind {
    /// A zipf-hot set of regions that drifts: every 20 steps some hot regions cool and
    /// cold ones heat up.
    ZipfDrift,
    /// The drifting zipf load plus one-off full scans of cold regions: enormous MVCC work
    /// once, never again (cache pollution bait).
    ScanStorm,
    /// The drifting zipf load while leadership moves: a region this store stops leading
    /// gets no reads here until it comes back (they go to its leader:
    /// [`TraceStep::remote_reads`]).
    LeaderMoves,
    /// Normal load, then a write-heavy phase: some regions grow and their MVCC
    /// amplification climbs as versions pile up.
    WriteHeavy,
}

impl TraceKind {
    /// Every kind.
    pub const ALL: [TraceKind; 4] = [
        TraceKind::ZipfDrift,
        TraceKind::ScanStorm,
        TraceKind::LeaderMoves,
        TraceKind::WriteHeavy,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            TraceKind::ZipfDrift => "zipf-drift",
            TraceKind::ScanStorm => "scan-storm",
            TraceKind::LeaderMoves => "leader-moves",
            TraceKind::WriteHeavy => "write-heavy",
        }
    }
}

/// SplitMix64: a small, seeded, deterministic generator.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

/// Sizes of a generated trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceShape {
    /// Regions.
    pub regions: usize,
    /// Steps (policy rounds).
    pub steps: usize,
    /// Read requests per step.
    pub reads_per_step: usize,
    /// Seconds per step.
    pub step_seconds: u64,
}

impl Default for TraceShape {
    fn default() -> Self {
        TraceShape {
            regions: 200,
            steps: 480,
            reads_per_step: 2000,
            step_seconds: 60,
        }
    }
}

/// Generates a trace of `kind` from `seed`: the same inputs give the same trace.
pub fn generate(kind: TraceKind, seed: u64, shape: TraceShape) -> Trace {
    let mut rng = Rng::new(seed ^ (kind as u64).wrapping_mul(0x51_7CC1_B727_220A));
    let n = shape.regions.max(1);
    let regions: Vec<TraceRegion> = (0..n)
        .map(|i| TraceRegion {
            id: RegionId(i as u64 + 1),
            size: (1 << 20) + (rng.next_u64() % (15 << 20)),
        })
        .collect();
    // Per-region MVCC amplification: most regions modest, some heavy.
    let mut amplification: Vec<u64> = (0..n)
        .map(|_| 1 + (rng.unit().powi(3) * 150.0) as u64)
        .collect();
    // The popularity order (rank -> region), drifting over time.
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut rng);
    let cdf = zipf_cdf(n, 1.0);
    let mut followers = vec![false; n];
    let mut scanned_once = vec![false; n];
    let mut steps = Vec::with_capacity(shape.steps);
    for step in 0..shape.steps {
        let mut current = TraceStep::default();
        if step > 0 && step % 20 == 0 {
            drift(&mut order, &mut rng);
        }
        if kind == TraceKind::LeaderMoves {
            for (i, follower) in followers.iter_mut().enumerate() {
                if rng.unit() < 0.02 {
                    *follower = !*follower;
                }
                if *follower {
                    current.followers.push(i);
                }
            }
        }
        if kind == TraceKind::WriteHeavy && step >= shape.steps / 2 {
            for &region in order.iter().skip(n / 4).take(n / 10) {
                amplification[region] += 2;
                current.resized.push((
                    region,
                    regions[region].size + (step - shape.steps / 2) as u64 * (64 << 10),
                ));
            }
        }
        let mut counts = vec![0u64; n];
        for _ in 0..shape.reads_per_step {
            let rank = cdf.partition_point(|c| *c < rng.unit()).min(n - 1);
            counts[order[rank]] += 1;
        }
        for (region, reads) in counts.into_iter().enumerate() {
            if reads == 0 {
                continue;
            }
            if followers[region] {
                current.remote_reads.push(region);
                continue;
            }
            let returned = reads * 10;
            current.reads.push(TraceRead {
                region,
                reads,
                scanned_versions: returned * amplification[region],
                returned_keys: returned,
            });
        }
        if kind == TraceKind::ScanStorm && rng.unit() < 0.3 {
            // A full scan of a cold region never scanned before: every version it
            // holds, once.
            let cold: Vec<usize> = order[n / 2..]
                .iter()
                .copied()
                .filter(|r| !scanned_once[*r])
                .collect();
            if !cold.is_empty() {
                let region = cold[rng.below(cold.len())];
                scanned_once[region] = true;
                let scanned = regions[region].size / crate::BYTES_PER_VERSION;
                current.reads.push(TraceRead {
                    region,
                    reads: 1,
                    scanned_versions: scanned,
                    returned_keys: scanned / 20,
                });
            }
        }
        steps.push(current);
    }
    Trace {
        name: kind.name().to_owned(),
        step_seconds: shape.step_seconds,
        regions,
        steps,
    }
}

fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

fn shuffle(items: &mut [usize], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// Swaps a few hot ranks with random colder ones.
fn drift(order: &mut [usize], rng: &mut Rng) {
    let n = order.len();
    for hot in 0..(n / 20).max(1) {
        let cold = hot + 1 + rng.below(n - hot - 1 + usize::from(n == hot + 1));
        if cold < n {
            order.swap(hot, cold);
        }
    }
}
