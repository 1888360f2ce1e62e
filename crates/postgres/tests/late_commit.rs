//! T6: a transaction that took its position and commits late is never skipped.
//!
//! Each run holds an append open (the `before_commit` failpoint) after its events are
//! inserted, while other appends to other streams commit with later positions, a reader
//! reads `$all` and a `$all` subscription runs. While the late append is open, neither the
//! reader nor the subscription may return anything at or after its position (they would
//! have skipped it); once it commits (or aborts), both must return every committed event
//! exactly once, in position order, the late events in their place.
//!
//! `ANNALS_T6_RUNS` (default 1000) sets the number of runs, `ANNALS_T6_SEED` the seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::subscription::{
    SubscribeFrom, SubscriptionMessage, SubscriptionSource, subscribe,
};
use annals_core::{
    EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, Position, ReadAllOptions,
    StreamName, StreamWrite,
};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// SplitMix64: a seed reproduces a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

fn events(n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json(EventType::new("T6").unwrap(), format!("{{\"i\":{i}}}")))
        .collect()
}

fn stream(name: String) -> StreamName {
    StreamName::new(name).unwrap()
}

/// A held append: its positions, and the switch that commits (`true`) or aborts it.
type Held = (Vec<Position>, oneshot::Sender<bool>);

/// Ids of events at or after `position` in a list.
fn at_or_after(events: &[(Position, Uuid)], position: Position) -> usize {
    events.iter().filter(|(p, _)| *p >= position).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_late_commits_are_delivered_in_place() {
    let runs = env_number("ANNALS_T6_RUNS", 1000);
    let seed = env_number("ANNALS_T6_SEED", u64::from(Uuid::new_v4().as_u128() as u32));
    println!("T6: {runs} runs, ANNALS_T6_SEED={seed}");
    let mut rng = Rng(seed);
    let schemas = Mutex::new(Vec::new());
    let config = common::fresh_config(&schemas);

    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<Held>();
    let mut late_config = config.clone();
    late_config.before_commit = Some(Arc::new(move |positions| {
        let held_tx = held_tx.clone();
        let positions = positions.to_vec();
        Box::pin(async move {
            let (decide, decision) = oneshot::channel();
            held_tx
                .send((positions, decide))
                .map_err(|e| e.to_string())?;
            match decision.await {
                Ok(true) => Ok(()),
                _ => Err("aborted by T6".to_owned()),
            }
        })
    }));
    let late = Arc::new(common::open(late_config).await);
    let store = Arc::new(common::open(config).await);

    // One subscription for the whole test, collecting what it delivers.
    let delivered: Arc<Mutex<Vec<(Position, Uuid)>>> = Arc::default();
    let mut subscription = subscribe(
        Arc::clone(&store),
        SubscriptionSource::All(None),
        SubscribeFrom::Start,
    );
    let sink = Arc::clone(&delivered);
    let collector = tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let SubscriptionMessage::Event(e) = message.expect("subscription failed") {
                sink.lock().push((e.event.position, e.event.id));
            }
        }
    });

    let mut committed: Vec<(Position, Uuid)> = Vec::new();
    let (mut late_committed, mut late_aborted, mut later_appends) = (0, 0, 0);
    let mut slowest = Duration::ZERO;
    for run in 0..runs {
        // 1. A late append takes its positions and stays open.
        let late_streams = 1 + rng.below(2);
        let writes: Vec<StreamWrite> = (0..late_streams)
            .map(|s| StreamWrite {
                stream: stream(format!("late-{run}x{s}")),
                expected: ExpectedRevision::NoStream,
                events: events(1 + rng.below(3)),
            })
            .collect();
        let late_ids: Vec<Uuid> = writes
            .iter()
            .flat_map(|w| w.events.iter().map(|e| e.id))
            .collect();
        let writer = Arc::clone(&late);
        let pending = tokio::spawn(async move { writer.append_multi(writes).await });
        let (late_positions, decide) = held_rx.recv().await.expect("the late append is held");
        let first_late = late_positions[0];

        // 2. Later appends to other streams commit while it is open.
        for i in 0..1 + rng.below(4) {
            let events = events(1 + rng.below(3));
            let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
            let result = store
                .append(
                    &stream(format!("w-{run}x{i}")),
                    ExpectedRevision::NoStream,
                    events,
                )
                .await
                .expect("a later append");
            let (first, last) = result.positions.expect("positions");
            assert!(
                first > *late_positions.last().unwrap(),
                "later appends sort after"
            );
            let span = store
                .read_all(ReadAllOptions::forward().from_position(first))
                .await
                .unwrap();
            assert!(
                span.events.is_empty(),
                "run {run}: $all returned a later event while an earlier append is open"
            );
            committed.extend(
                ids.into_iter()
                    .zip((0..).map(|k| Position(first.0 + k)))
                    .map(|(id, p)| (p, id)),
            );
            assert_eq!(committed.last().map(|(p, _)| *p), Some(last));
            later_appends += 1;
            if rng.below(2) == 0 {
                tokio::time::sleep(Duration::from_micros(rng.below(2000))).await;
            }
        }

        // 3. Nothing at or after the open append is visible yet, to the reader or the
        // subscription.
        let read = store.read_all(ReadAllOptions::forward()).await.unwrap();
        let seen: Vec<(Position, Uuid)> = read
            .events
            .iter()
            .map(|e| (e.event.position, e.event.id))
            .collect();
        assert_eq!(
            at_or_after(&seen, first_late),
            0,
            "run {run}: the reader skipped past an open append"
        );
        assert_eq!(
            at_or_after(&delivered.lock(), first_late),
            0,
            "run {run}: the subscription skipped past an open append"
        );

        // 4. Commit or abort it.
        let commit = rng.below(5) != 0;
        decide.send(commit).expect("the late append waits");
        let outcome = pending.await.expect("the late append task");
        if commit {
            outcome.expect("the late append commits");
            committed.extend(late_positions.iter().copied().zip(late_ids));
            late_committed += 1;
        } else {
            assert!(outcome.is_err(), "an aborted append reports failure");
            late_aborted += 1;
        }
        committed.sort();

        // 5. The subscription delivers everything, in order, the late events in place.
        let started = Instant::now();
        while delivered.lock().len() < committed.len() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "run {run}: the subscription stalled at {} of {} events",
                delivered.lock().len(),
                committed.len()
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            *delivered.lock(),
            committed,
            "run {run}: subscription order"
        );
    }
    let all = store.read_all(ReadAllOptions::forward()).await.unwrap();
    let read: Vec<(Position, Uuid)> = all
        .events
        .iter()
        .map(|e| (e.event.position, e.event.id))
        .collect();
    assert_eq!(
        read, committed,
        "a final read returns every committed event in order"
    );
    println!(
        "T6: {runs} runs: {late_committed} late appends committed, {late_aborted} aborted, \
         {later_appends} later appends; {} events delivered, 0 skipped, 0 duplicated, \
         0 out of order; slowest delivery after a late commit {slowest:?}",
        committed.len()
    );
    collector.abort();
    drop((late, store));
    common::drop_schemas(std::mem::take(&mut *schemas.lock()));
}
