//! The bare group-commit ceiling: how many single-record durable appends per second this
//! machine allows `writers` closed-loop appenders when nothing but the unavoidable work is
//! done. It shares the engine's mechanics where they are not the engine's own work (tokio
//! tasks queueing on a bounded channel, leader/follower committer threads, one `write_at`
//! and one `fdatasync` per group into already written blocks, answers in write order on
//! oneshot channels) and leaves out everything else: no planning, encoding, CRC, index or
//! publishing. Measured in the same run as W1, it tells how much of W1's gap to a target
//! is the machine (disk latency, wake-ups) and how much is the engine; its appends' time
//! is split into the stages the engine's W1 lines use (queued, building, syncing,
//! answering, caller), so the two lines can be compared stage by stage.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::Position;
use annals_engine::device::StdVfs;
use annals_engine::log::Segment;
use annals_engine::record::SEGMENT_HEADER_LEN;
use annals_engine::zero_fill::ZeroFill;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::workloads::Stages;

/// Bytes per appended record: what one W1 event takes in the log (64-byte record header
/// with framing, names, 256 bytes of data and ~64 of metadata).
const RECORD_BYTES: usize = 420;
/// The file the groups go to, written once with zeros and then overwritten in a ring.
const FILE_BYTES: u64 = 256 << 20;
/// The largest group (64 writers' records fit many times over).
const GROUP_MAX: usize = 1 << 20;
static ZEROS: [u8; GROUP_MAX] = [0; GROUP_MAX];

/// Committer counts and lingers tried; the best is the ceiling. One committer lingering
/// until its appenders are back runs them in lock-step (every sync alone, so fastest);
/// two overlap their syncs.
const CONFIGS: [(usize, Duration); 2] = [
    (1, Duration::from_micros(100)),
    (2, Duration::from_micros(50)),
];

/// What the bare loop does besides the unavoidable, to measure what each costs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Variant {
    /// Write into new space, zero-filled ahead of the log by the engine's own filler thread
    /// (`annals_engine::zero_fill`), instead of overwriting blocks written before the run.
    pub(crate) zero_fill: bool,
    /// CPU the leader spends on each request as it takes it, while it holds the log (the
    /// engine plans and encodes each request as it takes it).
    pub(crate) leader_work: Duration,
    /// CPU each appender spends on the runtime's worker before it queues its request (the
    /// engine's callers build and validate theirs).
    pub(crate) appender_work: Duration,
}

impl Variant {
    /// How a line names it.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.zero_fill {
            parts.push("zero-filling new space".to_owned());
        }
        for (work, whose) in [
            (self.leader_work, "leader"),
            (self.appender_work, "appender"),
        ] {
            if !work.is_zero() {
                let us = work.as_nanos() as f64 / 1e3;
                parts.push(format!("{us:.1} µs {whose} CPU per event"));
            }
        }
        parts.join(", ")
    }
}

/// A bare log on the file system the bench measures.
pub(crate) struct BareLog {
    file: Arc<File>,
    path: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl BareLog {
    /// Creates and zero-fills the file (synced), so groups overwrite written blocks as the
    /// engine's do.
    pub(crate) fn create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("bare-group-commit");
        let file = File::create(&path)?;
        for chunk in 0..FILE_BYTES / GROUP_MAX as u64 {
            file.write_all_at(&ZEROS, chunk * GROUP_MAX as u64)?;
        }
        file.sync_all()?;
        Ok(Self {
            file: Arc::new(file),
            path,
            dir: dir.to_owned(),
        })
    }

    /// The best run over [`CONFIGS`], each run for `seconds`.
    pub(crate) async fn ceiling(
        &self,
        writers: usize,
        seconds: f64,
        variant: Variant,
    ) -> anyhow::Result<Measured> {
        let mut best: Option<Measured> = None;
        for (committers, linger) in CONFIGS {
            super::machine::settle_disk()?;
            let config = Config {
                committers,
                linger,
                variant,
            };
            let run = self.run(writers, config, seconds).await?;
            if best
                .as_ref()
                .is_none_or(|b| run.events_per_s > b.events_per_s)
            {
                best = Some(run);
            }
        }
        best.ok_or_else(|| anyhow::anyhow!("no bare group-commit configuration to run"))
    }

    /// The loop again with `variant`, in the configuration that made `best` (whose
    /// committers and linger won its [`BareLog::ceiling`]).
    pub(crate) async fn rerun(
        &self,
        writers: usize,
        seconds: f64,
        variant: Variant,
        best: &Measured,
    ) -> anyhow::Result<Measured> {
        super::machine::settle_disk()?;
        let config = Config {
            committers: best.committers,
            linger: best.linger,
            variant,
        };
        self.run(writers, config, seconds).await
    }

    async fn run(&self, writers: usize, config: Config, seconds: f64) -> anyhow::Result<Measured> {
        if !config.variant.zero_fill {
            let target = Target::Ring(Arc::clone(&self.file));
            return measure(writers, config, seconds, target)
                .await
                .map_err(|e| e.context(format!("bare group commit on {}", self.path.display())));
        }
        // New space is a new segment in a directory of its own, removed after the run.
        let dir = self.dir.join("bare-group-commit-new");
        std::fs::create_dir_all(&dir)?;
        let rate = measure_fresh(writers, config, seconds, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        rate.map_err(|e| e.context(format!("bare group commit in {}", dir.display())))
    }
}

/// One timed run into a new segment in `dir`, zero-filled by the engine's filler.
async fn measure_fresh(
    writers: usize,
    config: Config,
    seconds: f64,
    dir: &Path,
) -> anyhow::Result<Measured> {
    let segment = Arc::new(Segment::create(&StdVfs, dir, 0, Position(0))?);
    let (fill, filler) = ZeroFill::start(Arc::clone(&segment), SEGMENT_HEADER_LEN)?;
    let rate = measure(
        writers,
        config,
        seconds,
        Target::Fresh(segment, Arc::new(fill)),
    )
    .await;
    // The committers held the last handles: the filler has stopped or is stopping.
    let _ = filler.join();
    rate
}

/// Where the groups go.
#[derive(Clone)]
enum Target {
    /// Blocks written before the run, overwritten in a ring.
    Ring(Arc<File>),
    /// New space at the end of a new segment, zero-filled ahead by the engine's filler.
    Fresh(Arc<Segment>, Arc<ZeroFill>),
}

impl Target {
    /// Writes a group at the leader's offset and moves it on: in the ring, or in new space
    /// with zeros asked for ahead as the engine's writer asks.
    fn write(&self, leader: &mut Leader, group: &[u8]) -> std::io::Result<()> {
        let (offset, len) = (leader.offset, group.len() as u64);
        match self {
            Self::Ring(file) => {
                leader.offset = (offset + len) % (FILE_BYTES - GROUP_MAX as u64);
                file.write_all_at(group, offset)
            }
            Self::Fresh(segment, fill) => {
                fill.write(segment, group, offset)?;
                leader.offset = offset + len;
                fill.keep_ahead(leader.offset, u64::MAX);
                Ok(())
            }
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        match self {
            Self::Ring(file) => file.sync_data(),
            Self::Fresh(segment, _) => segment.device.sync_data(),
        }
    }
}

/// What one configuration of the bare loop reached.
pub(crate) struct Measured {
    pub(crate) events_per_s: f64,
    /// Where an append's time went, as the engine's append lines say it.
    pub(crate) stages: Option<Stages>,
    /// Committer threads, and how long each lingered for its appenders.
    pub(crate) committers: usize,
    pub(crate) linger: Duration,
}

/// Summed over the requests answered in the timed window, in nanoseconds: each stage of
/// an append, as the engine counts them, and the appenders' own measured latency.
#[derive(Default)]
struct StageClock {
    counting: AtomicBool,
    requests: AtomicU64,
    queued: AtomicU64,
    building: AtomicU64,
    syncing: AtomicU64,
    answering: AtomicU64,
    latency: AtomicU64,
    latencies: AtomicU64,
}

impl StageClock {
    fn add(counter: &AtomicU64, time: Duration) {
        let ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(ns, Ordering::Relaxed);
    }

    /// Counts a group of `n` requests once answered, `since_sync` after its sync returned.
    fn answered(&self, n: usize, times: &GroupTimes, since_sync: Duration) {
        if !self.counting.load(Ordering::Relaxed) {
            return;
        }
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.requests.fetch_add(n as u64, Ordering::Relaxed);
        Self::add(&self.queued, times.queued);
        Self::add(&self.building, times.building);
        Self::add(&self.syncing, times.synced * n32);
        Self::add(&self.answering, since_sync * n32);
    }

    fn latency(&self, time: Duration) {
        if self.counting.load(Ordering::Relaxed) {
            Self::add(&self.latency, time);
            self.latencies.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stages(&self) -> Option<Stages> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let requests = get(&self.requests);
        let latencies = get(&self.latencies);
        if requests == 0.0 || latencies == 0.0 {
            return None;
        }
        let per_request = |c: &AtomicU64| get(c) / requests / 1000.0;
        Some(Stages::from_means(
            [
                per_request(&self.queued),
                per_request(&self.building),
                per_request(&self.syncing),
                per_request(&self.answering),
            ],
            get(&self.latency) / latencies / 1000.0,
        ))
    }
}

/// A queued append: where its answer goes, and when it was queued.
type Request = (oneshot::Sender<()>, Instant);

/// One timed run of the loop on `target`.
async fn measure(
    writers: usize,
    config: Config,
    seconds: f64,
    target: Target,
) -> anyhow::Result<Measured> {
    let (tx, rx) = mpsc::channel::<Request>(1024);
    let clock = Arc::new(StageClock::default());
    let offset = match target {
        Target::Ring(_) => 0,
        Target::Fresh(..) => SEGMENT_HEADER_LEN,
    };
    let leader = Arc::new(Mutex::new(Leader {
        requests: rx,
        offset,
        seq: 0,
    }));
    let finisher = Arc::new(Mutex::new(VecDeque::new()));
    let failure = Arc::new(Mutex::new(None::<std::io::Error>));
    let threads: Vec<_> = (0..config.committers)
        .map(|_| {
            let committer = Committer {
                leader: Arc::clone(&leader),
                finisher: Arc::clone(&finisher),
                clock: Arc::clone(&clock),
                target: target.clone(),
                linger: config.linger,
                variant: config.variant,
            };
            let failure = Arc::clone(&failure);
            std::thread::spawn(move || {
                if let Err(e) = committer.run() {
                    *failure.lock() = Some(e);
                }
            })
        })
        .collect();
    drop(target);
    // Only the committers hold the queue's receiver now: if they all fail, the queued
    // requests are dropped and their appenders stop instead of waiting forever.
    drop(leader);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (tx, stop, done) = (tx.clone(), Arc::clone(&stop), Arc::clone(&done));
            let clock = Arc::clone(&clock);
            let work = config.variant.appender_work;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    spin(work);
                    let (answer, answered) = oneshot::channel();
                    let sent = Instant::now();
                    if tx.send((answer, sent)).await.is_err() || answered.await.is_err() {
                        return;
                    }
                    clock.latency(sent.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    drop(tx);
    // A short warm-up, as the engine's runs have while their writers start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    clock.counting.store(true, Ordering::Relaxed);
    let (from, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let events = done.load(Ordering::Relaxed) - from;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    clock.counting.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    for thread in threads {
        let _ = thread.join();
    }
    if let Some(e) = failure.lock().take() {
        return Err(e.into());
    }
    Ok(Measured {
        events_per_s: rate,
        stages: clock.stages(),
        committers: config.committers,
        linger: config.linger,
    })
}

impl Drop for BareLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One measured configuration.
#[derive(Debug, Clone, Copy)]
struct Config {
    committers: usize,
    linger: Duration,
    variant: Variant,
}

/// What the leader holds.
struct Leader {
    requests: mpsc::Receiver<Request>,
    offset: u64,
    seq: u64,
}

/// Groups waiting for their answers, in write order: (seq, the group once synced).
type Unanswered = VecDeque<(u64, Option<Group>)>;

/// A synced group: its answers, and where its requests' time went.
struct Group {
    answers: Vec<oneshot::Sender<()>>,
    times: GroupTimes,
}

struct GroupTimes {
    /// Summed over the requests: from queued until taken.
    queued: Duration,
    /// Summed over the requests: from taken until the group was written.
    building: Duration,
    /// Its own sync's length, and when it returned.
    synced: Duration,
    synced_at: Instant,
}

struct Committer {
    leader: Arc<Mutex<Leader>>,
    finisher: Arc<Mutex<Unanswered>>,
    clock: Arc<StageClock>,
    target: Target,
    linger: Duration,
    variant: Variant,
}

impl Committer {
    /// Leads (collects a group and writes it), lets the next committer lead, syncs, then
    /// answers every group that is ready, in order. Returns when the appenders are gone.
    fn run(self) -> std::io::Result<()> {
        let bytes = vec![0x5a_u8; GROUP_MAX];
        let mut cohort = 0;
        loop {
            let mut leader = self.leader.lock();
            let Some(collected) = self.collect(&mut leader, cohort) else {
                return Ok(());
            };
            let n = collected.answers.len();
            cohort = n;
            let len = (n * RECORD_BYTES).min(GROUP_MAX);
            leader.seq += 1;
            let seq = leader.seq;
            self.finisher.lock().push_back((seq, None));
            let written = self.target.write(&mut leader, &bytes[..len]);
            drop(leader);
            let written_at = Instant::now();
            let since_start = u32::try_from(n).unwrap_or(u32::MAX)
                * written_at.saturating_duration_since(collected.started);
            if let Err(e) = written.and_then(|()| self.target.sync()) {
                // Nothing more is answered: every waiting appender sees its answer dropped.
                self.finisher.lock().clear();
                return Err(e);
            }
            let group = Group {
                answers: collected.answers,
                times: GroupTimes {
                    queued: collected.queued,
                    building: since_start.saturating_sub(collected.taken_after_start),
                    synced: written_at.elapsed(),
                    synced_at: Instant::now(),
                },
            };
            let mut finisher = self.finisher.lock();
            if let Some(waiting) = finisher.iter_mut().find(|(s, _)| *s == seq) {
                waiting.1 = Some(group);
            }
            while let Some((_, Some(group))) = finisher.pop_front_if(|(_, g)| g.is_some()) {
                let n = group.answers.len();
                for answer in group.answers {
                    let _ = answer.send(());
                }
                let since_sync = group.times.synced_at.elapsed();
                self.clock.answered(n, &group.times, since_sync);
            }
        }
    }

    /// One request, everything already queued, and then up to `linger` more until the
    /// group is as large as this committer's last one (its appenders coming back).
    fn collect(&self, leader: &mut Leader, cohort: usize) -> Option<Collected> {
        let first = leader.requests.blocking_recv()?;
        let started = Instant::now();
        let deadline = started + self.linger;
        let mut group = Collected {
            answers: Vec::with_capacity(cohort.max(1)),
            started,
            queued: Duration::ZERO,
            taken_after_start: Duration::ZERO,
        };
        group.take(first);
        spin(self.variant.leader_work);
        while group.answers.len() * RECORD_BYTES < GROUP_MAX {
            match leader.requests.try_recv() {
                Ok(request) => {
                    group.take(request);
                    spin(self.variant.leader_work);
                }
                Err(_) if group.answers.len() >= cohort || Instant::now() >= deadline => break,
                Err(_) => std::thread::yield_now(),
            }
        }
        Some(group)
    }
}

/// A group being collected by its leader.
struct Collected {
    answers: Vec<oneshot::Sender<()>>,
    /// When its first request was taken.
    started: Instant,
    /// Summed over the requests: time queued, and from `started` until taken.
    queued: Duration,
    taken_after_start: Duration,
}

impl Collected {
    fn take(&mut self, (answer, queued): Request) {
        let now = Instant::now();
        self.queued += now.saturating_duration_since(queued);
        self.taken_after_start += now.saturating_duration_since(self.started);
        self.answers.push(answer);
    }
}

/// Busy CPU for `work`, in place of the engine's own ([`Variant`]).
fn spin(work: Duration) {
    if work.is_zero() {
        return;
    }
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}
