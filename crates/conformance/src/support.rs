//! Helpers the scenarios share: building names and events, opening stores with a manual
//! clock, reading everything, and waiting for subscription messages with a deadline.

use std::sync::Arc;
use std::time::Duration;

use annals_core::subscription::{Subscription, SubscriptionMessage};
use annals_core::{
    AppendError, EventReader, EventType, ExpectedRevision, ManualClock, NewEvent, Position,
    ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, ResolvedEvent, StreamName,
    Timestamp,
};
use futures::StreamExt;
use uuid::Uuid;

use crate::Backend;

/// The time every scenario's clock starts at: 2026-01-01T00:00:00Z.
pub const START: Timestamp = Timestamp(1_767_225_600_000_000);

/// How long a subscription scenario waits for one message before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh store of the backend with a manual clock showing [`START`].
pub async fn open<B: Backend>(backend: &B) -> (Arc<ManualClock>, Arc<B::Store>) {
    let clock = Arc::new(ManualClock::new(START));
    let store = backend.create(clock.clone()).await;
    (clock, store)
}

/// A stream name; panics on an invalid one.
pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("valid stream name")
}

/// An event type; panics on an invalid one.
pub fn ty(name: &str) -> EventType {
    EventType::new(name).expect("valid event type")
}

/// A JSON event of type `event_type` whose data is `{"n": n}`.
pub fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::json(ty(event_type), format!(r#"{{"n":{n}}}"#))
}

/// `count` JSON events of type `event_type` numbered from `first`.
pub fn events(event_type: &str, first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count)
        .map(|n| event(event_type, n))
        .collect()
}

/// The ids of events to append.
pub fn new_ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

/// The ids of events read.
pub fn ids(events: &[ResolvedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event.id).collect()
}

/// The revisions of events read (their own stream's).
pub fn revisions(events: &[ResolvedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.event.revision).collect()
}

/// The link revisions of events read through a virtual stream.
pub fn link_revisions(events: &[ResolvedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.link.as_ref().expect("event read through a link").revision)
        .collect()
}

/// The positions of events read.
pub fn positions(events: &[ResolvedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.event.position.0).collect()
}

/// `(stream, revision)` of events read.
pub fn places(events: &[ResolvedEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| (e.event.stream.as_str().to_owned(), e.event.revision))
        .collect()
}

/// Appends and panics on failure.
pub async fn append_ok<S: annals_core::EventStore + ?Sized>(
    store: &S,
    name: &str,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> annals_core::AppendResult {
    let target = stream(name);
    match store.append(&target, expected, events).await {
        Ok(result) => result,
        Err(e) => panic!("append to {name} at {expected}: {e}"),
    }
}

/// Reads a whole stream forward.
pub async fn read<S: EventReader + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Vec<ResolvedEvent>, ReadError> {
    store
        .read_stream(&stream(name), ReadStreamOptions::forward())
        .await
}

/// Reads a whole stream forward and panics on failure.
pub async fn read_ok<S: EventReader + ?Sized>(store: &S, name: &str) -> Vec<ResolvedEvent> {
    match read(store, name).await {
        Ok(events) => events,
        Err(e) => panic!("read of {name}: {e}"),
    }
}

/// Reads a stream with options and panics on failure.
pub async fn read_with<S: EventReader + ?Sized>(
    store: &S,
    name: &str,
    options: ReadStreamOptions,
) -> Vec<ResolvedEvent> {
    match store.read_stream(&stream(name), options).await {
        Ok(events) => events,
        Err(e) => panic!("read of {name} with {options:?}: {e}"),
    }
}

/// Every visible record of the global log, forward.
pub async fn read_all<S: EventReader + ?Sized>(store: &S) -> Vec<RecordedEvent> {
    let slice = store
        .read_all(ReadAllOptions::forward())
        .await
        .expect("read $all");
    assert!(slice.end_of_log, "an unlimited read reaches the end");
    slice.events.into_iter().map(|e| e.event).collect()
}

/// Asserts that a stream read fails with `StreamNotFound` naming the stream.
pub async fn assert_not_found<S: EventReader + ?Sized>(store: &S, name: &str) {
    match read(store, name).await {
        Err(ReadError::StreamNotFound { stream }) => assert_eq!(stream.as_str(), name),
        other => panic!("read of {name}: expected StreamNotFound, got {other:?}"),
    }
}

/// Asserts that a stream read fails with `StreamDeleted` naming the stream.
pub async fn assert_deleted<S: EventReader + ?Sized>(store: &S, name: &str) {
    match read(store, name).await {
        Err(ReadError::StreamDeleted { stream }) => assert_eq!(stream.as_str(), name),
        other => panic!("read of {name}: expected StreamDeleted, got {other:?}"),
    }
}

/// Asserts an append error is a conflict with exactly these fields.
pub fn assert_conflict<T: std::fmt::Debug>(
    result: Result<T, AppendError>,
    name: &str,
    expected: ExpectedRevision,
    actual: annals_core::CurrentRevision,
) {
    match result {
        Err(AppendError::WrongExpectedRevision {
            stream,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(stream.as_str(), name, "conflict names the stream");
            assert_eq!(e, expected, "conflict carries the expectation");
            assert_eq!(a, actual, "conflict carries the actual revision");
        }
        other => panic!("expected WrongExpectedRevision on {name}, got {other:?}"),
    }
}

/// Asserts an append error is `StreamDeleted` naming the stream.
pub fn assert_append_deleted<T: std::fmt::Debug>(result: Result<T, AppendError>, name: &str) {
    match result {
        Err(AppendError::StreamDeleted { stream }) => assert_eq!(stream.as_str(), name),
        other => panic!("expected StreamDeleted on {name}, got {other:?}"),
    }
}

/// The current head of the log.
pub fn head<S: EventReader + ?Sized>(store: &S) -> Position {
    *store.watch_head().borrow()
}

/// The position the `n`-th record (0-based) of a fresh store gets, when positions are
/// gap-free; `None` otherwise (the caller then checks order only).
pub fn expect_position<B: Backend>(n: u64) -> Option<Position> {
    B::GAP_FREE_POSITIONS.then_some(Position(n))
}

/// Asserts `positions` strictly increase, and (gap-free) are exactly `first, first + 1, …`.
pub fn assert_positions<B: Backend>(positions: &[u64], first: u64) {
    for pair in positions.windows(2) {
        assert!(pair[0] < pair[1], "positions not increasing: {positions:?}");
    }
    if B::GAP_FREE_POSITIONS {
        let expected: Vec<u64> = (first..first + positions.len() as u64).collect();
        assert_eq!(positions, expected, "gap-free positions");
    }
}

/// The next message of a subscription, failing after [`DEADLINE`], at its end or on an error.
pub async fn next_message(subscription: &mut Subscription) -> SubscriptionMessage {
    match tokio::time::timeout(DEADLINE, subscription.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no subscription message within {DEADLINE:?}"),
    }
}

/// The next event of a subscription (failing on anything else).
pub async fn next_event(subscription: &mut Subscription) -> ResolvedEvent {
    match next_message(subscription).await {
        SubscriptionMessage::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Asserts the next message is `CaughtUp`.
pub async fn expect_caught_up(subscription: &mut Subscription) {
    let message = next_message(subscription).await;
    assert!(
        matches!(message, SubscriptionMessage::CaughtUp),
        "expected CaughtUp, got {message:?}"
    );
}

/// Asserts nothing arrives for a while (no duplicate, no phantom event).
pub async fn expect_silence(subscription: &mut Subscription) {
    let quiet = Duration::from_millis(300);
    if let Ok(message) = tokio::time::timeout(quiet, subscription.next()).await {
        panic!("expected no message, got {message:?}");
    }
}

/// Asserts an append result: its current revision exactly, its positions exactly when the
/// backend is gap-free, otherwise that they are present (or absent) and ordered.
pub fn assert_result<B: Backend>(
    result: &annals_core::AppendResult,
    current: annals_core::CurrentRevision,
    positions: Option<(u64, u64)>,
) {
    assert_eq!(
        result.current_revision, current,
        "current revision of {result:?}"
    );
    if B::GAP_FREE_POSITIONS {
        assert_eq!(
            result.positions,
            positions.map(|(a, b)| (Position(a), Position(b))),
            "positions of {result:?}"
        );
    } else {
        assert_eq!(
            result.positions.is_some(),
            positions.is_some(),
            "{result:?}"
        );
        if let Some((first, last)) = result.positions {
            assert!(first <= last, "{result:?}");
        }
    }
}
