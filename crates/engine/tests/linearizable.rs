//! T5: optimistic concurrency is linearizable. Concurrent clients append single events with
//! expected revisions to a few streams; the recorded history (invocation and response times,
//! outcome) is checked against the only order it allows.
//!
//! A stream's revision works like a compare-and-set register whose every value is written
//! once, so a history is linearizable exactly when (per stream):
//! 1. successes produce revisions 0, 1, 2, … each exactly once, and the one that produced
//!    revision r expected r - 1 (or no stream);
//! 2. real time agrees: a success that completed before another began has the lower revision;
//! 3. every failure reported an actual revision the stream really had during the call: the
//!    success producing it began before the failure returned, and the next success did not
//!    complete before the failure began.
//!
//! Rounds: `ANNALS_LINEARIZABILITY_ROUNDS` (default 20).
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;
use std::time::Instant;

use annals_core::{
    AppendError, CurrentRevision, EventAppender, EventType, ExpectedRevision, NewEvent, StreamName,
};
use annals_engine::device::sim::SplitMix;
use annals_engine::{Config, Engine};

#[derive(Debug, Clone)]
struct Op {
    stream: usize,
    expected: ExpectedRevision,
    invoked: u128,
    returned: u128,
    /// Ok(revision produced) or Err(actual revision reported).
    outcome: Result<u64, CurrentRevision>,
}

async fn client(engine: Arc<Engine>, streams: usize, seed: u64, start: Instant) -> Vec<Op> {
    let mut rng = SplitMix(seed);
    let mut known = vec![CurrentRevision::NoStream; streams];
    let event_type = EventType::new("Cas").unwrap();
    let mut ops = Vec::new();
    for _ in 0..40 {
        let stream = rng.below(streams as u64) as usize;
        let expected = match (rng.below(4), known[stream]) {
            (0, _) => ExpectedRevision::Any,
            (1, _) => ExpectedRevision::NoStream,
            (_, CurrentRevision::NoStream) => ExpectedRevision::NoStream,
            (_, CurrentRevision::Current(r)) => ExpectedRevision::Exact(r),
        };
        let name = StreamName::new(format!("cas-{stream}")).unwrap();
        let event = NewEvent::json(event_type.clone(), "{}");
        let invoked = start.elapsed().as_nanos();
        let result = engine.append(&name, expected, vec![event]).await;
        let returned = start.elapsed().as_nanos();
        let outcome = match result {
            Ok(r) => {
                known[stream] = r.current_revision;
                Ok(r.current_revision.revision().unwrap())
            }
            Err(AppendError::WrongExpectedRevision { actual, .. }) => {
                known[stream] = actual;
                Err(actual)
            }
            Err(other) => panic!("unexpected error {other}"),
        };
        ops.push(Op {
            stream,
            expected,
            invoked,
            returned,
            outcome,
        });
    }
    ops
}

/// Checks one stream's history; returns the violations found.
fn check_stream(ops: &[&Op]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut successes: Vec<&Op> = ops.iter().copied().filter(|o| o.outcome.is_ok()).collect();
    successes.sort_by_key(|o| o.outcome.ok());
    for (i, op) in successes.iter().enumerate() {
        let revision = op.outcome.unwrap_or(u64::MAX);
        if revision != i as u64 {
            problems.push(format!(
                "revision {revision} produced at index {i} (duplicate or gap)"
            ));
        }
        let valid = match op.expected {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => revision == 0,
            ExpectedRevision::StreamExists => revision > 0,
            ExpectedRevision::Exact(e) => revision == e + 1,
        };
        if !valid {
            problems.push(format!(
                "success at {revision} with expectation {}",
                op.expected
            ));
        }
    }
    for pair in successes.windows(2) {
        // The later revision must not have completed before the earlier one began.
        if pair[1].returned < pair[0].invoked {
            problems.push(format!(
                "real-time order broken at revision {:?}",
                pair[1].outcome
            ));
        }
    }
    for op in ops.iter().filter(|o| o.outcome.is_err()) {
        let Err(actual) = op.outcome else { continue };
        // The state `actual` existed from the success producing it until the next success.
        let (begin, next) = match actual {
            CurrentRevision::NoStream => (None, successes.first()),
            CurrentRevision::Current(r) => {
                (successes.get(r as usize), successes.get(r as usize + 1))
            }
        };
        if matches!(actual, CurrentRevision::Current(_)) && begin.is_none() {
            problems.push(format!(
                "failure reported revision {actual}, which never existed"
            ));
            continue;
        }
        if begin.is_some_and(|b| b.invoked > op.returned) {
            problems.push(format!(
                "failure saw revision {actual} before it was written"
            ));
        }
        if next.is_some_and(|n| n.returned < op.invoked) {
            problems.push(format!(
                "failure saw revision {actual} after it was overwritten"
            ));
        }
        if op.expected.is_satisfied_by(actual) {
            problems.push(format!(
                "failure with {} although the stream was at {actual}",
                op.expected
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_concurrent_expected_revision_appends_are_linearizable() {
    let rounds: u64 = std::env::var("ANNALS_LINEARIZABILITY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (mut total_ops, mut total_successes) = (0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), Config::default()).unwrap());
        let streams = 3;
        let start = Instant::now();
        let clients: Vec<_> = (0..8)
            .map(|c| tokio::spawn(client(Arc::clone(&engine), streams, round * 100 + c, start)))
            .collect();
        let mut history = Vec::new();
        for c in clients {
            history.extend(c.await.unwrap());
        }
        for stream in 0..streams {
            let ops: Vec<&Op> = history.iter().filter(|o| o.stream == stream).collect();
            total_successes += ops.iter().filter(|o| o.outcome.is_ok()).count();
            let problems = check_stream(&ops);
            assert!(
                problems.is_empty(),
                "round {round}, stream {stream}: {problems:#?}"
            );
        }
        total_ops += history.len();
    }
    println!(
        "T5: {rounds} rounds, {total_ops} appends ({total_successes} succeeded), linearizable"
    );
}

#[test]
fn the_checker_rejects_a_lost_update() {
    let op = |expected, invoked, returned, outcome| Op {
        stream: 0,
        expected,
        invoked,
        returned,
        outcome,
    };
    // Two successes both expected no stream: one of them must have been a lost update.
    let a = op(ExpectedRevision::NoStream, 0, 10, Ok(0));
    let b = op(ExpectedRevision::NoStream, 20, 30, Ok(1));
    assert!(!check_stream(&[&a, &b]).is_empty());
    // A failure that reports a revision written only after it returned.
    let c = op(ExpectedRevision::NoStream, 0, 5, Ok(0));
    let d = op(ExpectedRevision::Exact(0), 40, 50, Ok(1));
    let e = op(
        ExpectedRevision::Exact(5),
        10,
        20,
        Err(CurrentRevision::Current(1)),
    );
    assert!(!check_stream(&[&c, &d, &e]).is_empty());
    // A correct history passes.
    let f = op(
        ExpectedRevision::NoStream,
        6,
        30,
        Err(CurrentRevision::Current(0)),
    );
    assert!(check_stream(&[&c, &d, &f]).is_empty());
}
