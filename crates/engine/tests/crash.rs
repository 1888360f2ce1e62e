//! T2 (simulated power loss) and T4 (I/O faults, full disk) through the device trait.
//!
//! Each seed runs a small concurrent workload on an in-memory disk that loses power at a
//! random I/O operation (or fails one kind of operation from then on), reboots the disk,
//! reopens the engine and checks the log against what was acknowledged. Seeds:
//! `ANNALS_CRASH_SEEDS` (default 1000), starting at `ANNALS_CRASH_SEED_BASE` (default 0).
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use annals_core::{
    AppendError, AppendResult, EventAppender, EventReader, EventType, ExpectedRevision, NewEvent,
    ReadAllOptions, ReadStreamOptions, StorageError, StreamName,
};
use annals_engine::device::sim::{FaultKind, Plan, SimVfs, SplitMix};
use annals_engine::{Config, Engine};
use uuid::Uuid;

const STREAMS: u64 = 4;
const CLIENTS: u64 = 3;

fn config(vfs: SimVfs) -> Config {
    Config {
        vfs: Arc::new(vfs),
        segment_bytes: 2048,
        memtable_entries: 24,
        ..Config::default()
    }
}

/// How the clients of one seed behave.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Each client waits for one append before sending the next.
    OneAtATime,
    /// Each client sends all its appends at once, into small groups on a slow disk: the
    /// writer builds and writes the next group while the one before is being synced, so a
    /// crash can leave several unsynced groups behind.
    Pipelined,
}

impl Load {
    /// Odd seeds (and fault operations) run pipelined.
    fn for_seed(seed: u64) -> Self {
        if seed % 2 == 1 {
            Self::Pipelined
        } else {
            Self::OneAtATime
        }
    }
}

fn config_for(vfs: SimVfs, load: Load) -> Config {
    match load {
        Load::OneAtATime => config(vfs),
        // Segments of a few groups each: rolls, which wait for the group in flight, are
        // frequent without serialising every group.
        Load::Pipelined => Config {
            group_max_bytes: 1024,
            segment_bytes: 4 << 10,
            ..config(vfs.with_sync_delay(Duration::from_micros(300)))
        },
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One acknowledged append.
#[derive(Debug, Clone)]
struct Acked {
    ids: Vec<Uuid>,
    result: AppendResult,
}

/// What the workload did.
#[derive(Debug, Default)]
struct History {
    acked: Vec<Acked>,
    /// Every id ever sent, with its batch.
    attempted: HashMap<Uuid, usize>,
    batches: Vec<Vec<Uuid>>,
    /// Appends sent after a failure was reported that still succeeded (must not happen).
    ack_after_failure: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    lost: usize,
    unexpected: usize,
    duplicates: usize,
    partial_batches: usize,
    revision_gaps: usize,
    position_gaps: usize,
}

async fn workload(engine: Arc<Engine>, seed: u64, load: Load) -> History {
    let history = Arc::new(parking_lot::Mutex::new(History::default()));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (engine, history, failed) = (
            Arc::clone(&engine),
            Arc::clone(&history),
            Arc::clone(&failed),
        );
        clients.push(tokio::spawn(async move {
            let mut rng = SplitMix(seed.wrapping_mul(31).wrapping_add(client));
            let event_type = EventType::new("Crashed").unwrap();
            let mut sent = Vec::new();
            for _ in 0..6 + rng.below(8) {
                let stream = StreamName::new(format!("s-{}", rng.below(STREAMS))).unwrap();
                let count = 1 + rng.below(5) as usize;
                let ids: Vec<Uuid> = (0..count)
                    .map(|_| Uuid::from_u64_pair(rng.next_u64(), rng.next_u64()))
                    .collect();
                let events = ids
                    .iter()
                    .map(|id| {
                        let data =
                            format!("{{\"pad\":\"{}\"}}", "x".repeat(rng.below(300) as usize));
                        NewEvent::json(event_type.clone(), data).with_id(*id)
                    })
                    .collect();
                {
                    let mut h = history.lock();
                    let batch = h.batches.len();
                    h.batches.push(ids.clone());
                    for id in &ids {
                        h.attempted.insert(*id, batch);
                    }
                }
                let append = send(
                    Arc::clone(&engine),
                    Arc::clone(&history),
                    Arc::clone(&failed),
                    stream,
                    ids,
                    events,
                );
                match load {
                    Load::OneAtATime => append.await,
                    Load::Pipelined => sent.push(tokio::spawn(append)),
                }
            }
            for append in sent {
                append.await.unwrap();
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    Arc::try_unwrap(history).unwrap().into_inner()
}

/// Sends one append and records its outcome.
async fn send(
    engine: Arc<Engine>,
    history: Arc<parking_lot::Mutex<History>>,
    failed: Arc<std::sync::atomic::AtomicBool>,
    stream: StreamName,
    ids: Vec<Uuid>,
    events: Vec<NewEvent>,
) {
    // A request sent after a failure was reported must not succeed (requests already in a
    // group when the engine was poisoned may).
    let sent_after_failure = failed.load(std::sync::atomic::Ordering::SeqCst);
    match engine.append(&stream, ExpectedRevision::Any, events).await {
        Ok(result) => {
            let mut h = history.lock();
            if sent_after_failure {
                h.ack_after_failure += 1;
            }
            h.acked.push(Acked { ids, result });
        }
        Err(AppendError::Storage(_)) => {
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Err(other) => panic!("unexpected append error: {other}"),
    }
}

/// Checks a reopened engine against the history.
async fn check(engine: &Engine, history: &History) -> Counts {
    let mut counts = Counts::default();
    let all = engine
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap()
        .events;
    let mut seen = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        if e.event.position.0 != i as u64 {
            counts.position_gaps += 1;
        }
        if !history.attempted.contains_key(&e.event.id) {
            counts.unexpected += 1;
        }
        if seen
            .insert(e.event.id, (e.event.position, e.event.revision))
            .is_some()
        {
            counts.duplicates += 1;
        }
    }
    for acked in &history.acked {
        let (first, _) = acked.result.positions.unwrap();
        let last_revision = acked.result.current_revision.revision().unwrap();
        let first_revision = last_revision + 1 - acked.ids.len() as u64;
        for (i, id) in acked.ids.iter().enumerate() {
            let want = (
                annals_core::Position(first.0 + i as u64),
                first_revision + i as u64,
            );
            if seen.get(id) != Some(&want) {
                counts.lost += 1;
            }
        }
    }
    let present: HashSet<usize> = seen
        .keys()
        .filter_map(|id| history.attempted.get(id).copied())
        .collect();
    for batch in present {
        if !history.batches[batch]
            .iter()
            .all(|id| seen.contains_key(id))
        {
            counts.partial_batches += 1;
        }
    }
    for s in 0..STREAMS {
        let stream = StreamName::new(format!("s-{s}")).unwrap();
        if let Ok(events) = engine
            .read_stream(&stream, ReadStreamOptions::forward())
            .await
        {
            let contiguous = events
                .iter()
                .enumerate()
                .all(|(i, e)| e.event.revision == i as u64);
            counts.revision_gaps += usize::from(!contiguous);
        }
    }
    counts
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one seed of the power-loss test; returns whether the crash fired and how many
/// groups were written while the one before was being synced.
fn power_loss(seed: u64) -> (bool, u64) {
    let load = Load::for_seed(seed);
    // Pipelined runs take fewer operations (larger segments, fewer rolls and flushes).
    let ops = if load == Load::Pipelined { 60 } else { 160 };
    let mut rng = SplitMix(seed);
    let crash_at = 1 + rng.below(ops);
    let disk = SimVfs::new(Plan::CrashAt(crash_at));
    let rt = runtime();
    let mut overlapped = 0;
    let history = match Engine::open("/sim", config_for(disk.clone(), load)) {
        Ok(engine) => {
            let engine = Arc::new(engine);
            let history = rt.block_on(workload(Arc::clone(&engine), seed, load));
            overlapped = engine.stats().overlapped;
            Arc::try_unwrap(engine).unwrap().close();
            history
        }
        Err(_) => History::default(),
    };
    assert_eq!(
        history.ack_after_failure, 0,
        "seed {seed}: an append succeeded after a failure"
    );
    let crashed = disk.has_crashed();
    let rebooted = disk.after_power_loss(seed ^ 0x5EED);
    let engine = Engine::open("/sim", config(rebooted.clone()))
        .unwrap_or_else(|e| panic!("seed {seed} (crash at op {crash_at}): reopen failed: {e}"));
    let counts = rt.block_on(check(&engine, &history));
    assert_eq!(
        counts,
        Counts::default(),
        "seed {seed} (crash at op {crash_at})"
    );
    // The recovered store accepts writes and still verifies after another reopen.
    let mut history = history;
    let after = NewEvent::json(EventType::new("Ok").unwrap(), "{}");
    history.attempted.insert(after.id, history.batches.len());
    history.batches.push(vec![after.id]);
    let after_stream = StreamName::new("after").unwrap();
    rt.block_on(engine.append(&after_stream, ExpectedRevision::Any, vec![after]))
        .unwrap_or_else(|e| panic!("seed {seed}: append after recovery failed: {e}"));
    engine.close();
    let engine = Engine::open("/sim", config(rebooted)).unwrap();
    assert_eq!(
        rt.block_on(check(&engine, &history)),
        Counts::default(),
        "seed {seed}, second reopen"
    );
    (crashed, overlapped)
}

#[test]
fn t2_power_loss_at_random_io_operations_loses_nothing_acknowledged() {
    let seeds = env_u64("ANNALS_CRASH_SEEDS", 1000);
    let base = env_u64("ANNALS_CRASH_SEED_BASE", 0);
    let (mut fired, mut overlapped) = (0u64, 0u64);
    for seed in base..base + seeds {
        let (crashed, overlaps) = power_loss(seed);
        fired += u64::from(crashed);
        overlapped += overlaps;
    }
    println!(
        "T2: {seeds} seeds, {fired} crashed mid-workload, {overlapped} groups written while \
         the previous one was syncing, lost/unexpected/duplicate/partial/gaps: 0"
    );
    assert!(
        fired > seeds / 2,
        "too few crashes fired ({fired}); raise the op range"
    );
    assert!(
        overlapped > seeds / 10,
        "the pipelined path was hardly exercised ({overlapped} overlapped groups)"
    );
}

/// Runs one fault scenario: `kind` fails from operation `op` on.
fn fault(op: u64, kind: FaultKind) {
    let disk = SimVfs::new(Plan::FailAt { op, kind });
    let load = Load::for_seed(op);
    let rt = runtime();
    let Ok(engine) = Engine::open("/sim", config_for(disk.clone(), load)) else {
        return;
    };
    let engine = Arc::new(engine);
    let history = rt.block_on(workload(Arc::clone(&engine), op, load));
    assert_eq!(
        history.ack_after_failure, 0,
        "{kind:?} at {op}: acknowledged after a failure"
    );
    // Reads keep working on what was committed.
    let read = rt.block_on(engine.read_all(ReadAllOptions::forward()));
    assert!(
        read.is_ok(),
        "{kind:?} at {op}: reads failed: {:?}",
        read.err()
    );
    if history.acked.len() < history.batches.len() {
        let refused = rt.block_on(engine.append(
            &StreamName::new("late").unwrap(),
            ExpectedRevision::Any,
            vec![NewEvent::json(EventType::new("Late").unwrap(), "{}")],
        ));
        assert!(
            matches!(
                refused,
                Err(AppendError::Storage(StorageError::Poisoned { .. }))
            ),
            "{kind:?} at {op}: a poisoned engine accepted a write: {refused:?}"
        );
    }
    Arc::try_unwrap(engine).unwrap().close();
    let engine = Engine::open("/sim", config(disk.healed()))
        .unwrap_or_else(|e| panic!("{kind:?} at {op}: reopen after the fault failed: {e}"));
    assert_eq!(
        rt.block_on(check(&engine, &history)),
        Counts::default(),
        "{kind:?} at {op}"
    );
}

#[test]
fn t4_failed_writes_syncs_and_full_disks_poison_and_lose_nothing() {
    let max_op = env_u64("ANNALS_FAULT_OPS", 120);
    let kinds = [
        FaultKind::Write,
        FaultKind::Sync,
        FaultKind::SetLen,
        FaultKind::DiskFull,
    ];
    for kind in kinds {
        for op in 1..=max_op {
            fault(op, kind);
        }
    }
    println!(
        "T4: {} injected faults ({max_op} operations x {} kinds), all recovered",
        max_op * 4,
        kinds.len()
    );
}
