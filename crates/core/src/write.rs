//! Write requests and the planner every backend shares.
//!
//! A backend validates a request ([`validate`]) where it arrives, then turns it into a
//! [`Plan`] ([`plan`]) against a [`StreamView`] of the current state — the engine's writer
//! does this inside its group, the in-memory store under its lock, PostgreSQL inside its
//! transaction. The plan holds the exact records to write, in order, and computes the
//! results once positions are known. Expected-revision checks, idempotency, soft delete,
//! re-creation and tombstones are therefore decided in one place for every backend.

use std::collections::HashSet;
use std::future::Future;

use bytes::Bytes;
use uuid::Uuid;

use crate::error::{AppendError, InvalidInput, StorageError};
use crate::event::{ContentType, NewEvent};
use crate::metadata::{
    METADATA_EVENT_TYPE, SOFT_DELETED_TRUNCATE_BEFORE, StreamMetadata, TOMBSTONE_EVENT_TYPE,
};
use crate::name::{EventType, StreamKind, StreamName};
use crate::position::{AppendResult, CurrentRevision, ExpectedRevision, Position};

/// One stream's part of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWrite {
    /// The stream.
    pub stream: StreamName,
    /// The writer's expectation.
    pub expected: ExpectedRevision,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

/// Everything that writes to a store.
#[derive(Debug, Clone)]
pub enum WriteRequest {
    /// Append to one or more streams, atomically.
    Append(Vec<StreamWrite>),
    /// Replace a stream's metadata (`expected` is about the metadata stream `$$<stream>`).
    SetMetadata {
        /// The stream whose metadata is set.
        stream: StreamName,
        /// Expected revision of `$$<stream>`.
        expected: ExpectedRevision,
        /// The new metadata.
        metadata: Box<StreamMetadata>,
    },
    /// Soft delete: the stream reads as not found until written again.
    Delete {
        /// The stream.
        stream: StreamName,
        /// Expected revision of the stream.
        expected: ExpectedRevision,
    },
    /// Hard delete: the name is dead forever.
    Tombstone {
        /// The stream.
        stream: StreamName,
        /// Expected revision of the stream.
        expected: ExpectedRevision,
    },
}

impl WriteRequest {
    /// An append of `events` to one stream.
    pub fn append_one(
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Self {
        Self::Append(vec![StreamWrite {
            stream: stream.clone(),
            expected,
            events,
        }])
    }
}

/// Size limits a backend enforces on appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event (data + metadata + type), in bytes.
    pub max_event_bytes: usize,
    /// Largest append (all events together), in bytes.
    pub max_append_bytes: usize,
}

impl Default for Limits {
    /// 8 MiB per event and 32 MiB per append.
    fn default() -> Self {
        Self {
            max_event_bytes: 8 << 20,
            max_append_bytes: 32 << 20,
        }
    }
}

/// Checks a request without looking at the store: names, sizes, JSON, duplicate ids.
pub fn validate(request: &WriteRequest, limits: &Limits) -> Result<(), InvalidInput> {
    match request {
        WriteRequest::Append(writes) => validate_append(writes, limits),
        WriteRequest::SetMetadata { stream, .. }
        | WriteRequest::Delete { stream, .. }
        | WriteRequest::Tombstone { stream, .. } => writable(stream),
    }
}

fn writable(stream: &StreamName) -> Result<(), InvalidInput> {
    match stream.kind() {
        StreamKind::Regular => Ok(()),
        StreamKind::Category { .. } | StreamKind::EventType { .. } => {
            Err(InvalidInput::ReadOnlyStream {
                stream: stream.clone(),
            })
        }
        StreamKind::Metadata { .. } | StreamKind::System => Err(InvalidInput::ReservedStream {
            stream: stream.clone(),
        }),
    }
}

fn validate_append(writes: &[StreamWrite], limits: &Limits) -> Result<(), InvalidInput> {
    if writes.is_empty() {
        return Err(InvalidInput::NoStreams);
    }
    let mut streams = Distinct::new(writes.len());
    let mut ids = Distinct::new(writes.iter().map(|w| w.events.len()).sum());
    let mut total = 0usize;
    for write in writes {
        writable(&write.stream)?;
        if !streams.insert(&write.stream) {
            return Err(InvalidInput::DuplicateStream {
                stream: write.stream.clone(),
            });
        }
        for event in &write.events {
            let size = event.payload_len();
            if size > limits.max_event_bytes {
                return Err(InvalidInput::EventTooLarge {
                    event_id: event.id,
                    size,
                    limit: limits.max_event_bytes,
                });
            }
            total += size;
            if !ids.insert(event.id) {
                return Err(InvalidInput::DuplicateEventId { id: event.id });
            }
            check_json(event)?;
        }
    }
    if total > limits.max_append_bytes {
        return Err(InvalidInput::AppendTooLarge {
            size: total,
            limit: limits.max_append_bytes,
        });
    }
    Ok(())
}

/// Tells whether values were seen before: a scan of an array on the stack while there are
/// few (most appends carry a single event to a single stream, and validation runs for every
/// one, in the caller's task), a hash set beyond.
enum Distinct<T> {
    Few { seen: [Option<T>; FEW], len: usize },
    Many(HashSet<T>),
}

const FEW: usize = 16;

impl<T: Copy + Eq + std::hash::Hash> Distinct<T> {
    fn new(expected: usize) -> Self {
        if expected <= FEW {
            Self::Few {
                seen: [None; FEW],
                len: 0,
            }
        } else {
            Self::Many(HashSet::with_capacity(expected))
        }
    }

    /// False if `value` was inserted before.
    fn insert(&mut self, value: T) -> bool {
        match self {
            Self::Few { seen, len } => {
                if seen[..*len].contains(&Some(value)) {
                    return false;
                }
                if let Some(slot) = seen.get_mut(*len) {
                    *slot = Some(value);
                    *len += 1;
                    return true;
                }
                // More values than announced: keep counting in a set.
                let mut set: HashSet<T> = seen.iter().flatten().copied().collect();
                set.insert(value);
                *self = Self::Many(set);
                true
            }
            Self::Many(seen) => seen.insert(value),
        }
    }
}

fn check_json(event: &NewEvent) -> Result<(), InvalidInput> {
    if event.content_type != ContentType::Json || event.data.is_empty() {
        return Ok(());
    }
    if crate::json_check::is_json(&event.data) {
        return Ok(());
    }
    // Refused: serde_json says what is wrong and where, or else it is the encoding.
    let detail = match serde_json::from_slice::<serde::de::IgnoredAny>(&event.data) {
        Err(e) => e.to_string(),
        Ok(_) => match std::str::from_utf8(&event.data) {
            Err(e) => format!("not UTF-8: {e}"),
            Ok(_) => "not a JSON text".to_owned(),
        },
    };
    Err(InvalidInput::InvalidJson {
        event_id: event.id,
        detail,
    })
}

/// What a backend knows about one stream, for planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamState {
    /// Revision of the stream's last record (the tombstone included), if any.
    pub last_revision: Option<u64>,
    /// Id of that record.
    pub last_event_id: Option<Uuid>,
    /// True when the last record is a tombstone.
    pub tombstoned: bool,
}

/// The planner's window on a backend's current state (committed, plus whatever the backend
/// has already planned in the same commit).
pub trait StreamView {
    /// The state of a stream (regular or `$$` metadata stream).
    fn stream_state(
        &mut self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<StreamState, StorageError>> + Send;

    /// The stream's current metadata, if any was ever set.
    fn metadata(
        &mut self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<Option<StreamMetadata>, StorageError>> + Send;

    /// Ids and positions of the records at revisions `from..from + count` (fewer if the stream
    /// ends first).
    fn recorded(
        &mut self,
        stream: &StreamName,
        from: u64,
        count: usize,
    ) -> impl Future<Output = Result<Vec<(Uuid, Position)>, StorageError>> + Send;
}

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRecord {
    /// Its stream.
    pub stream: StreamName,
    /// Its revision in that stream.
    pub revision: u64,
    /// The event.
    pub event: NewEvent,
    /// True for the tombstone of a hard delete.
    pub tombstone: bool,
}

#[derive(Debug, Clone)]
enum Outcome {
    /// Records `first..first + count` of the plan; the stream ends at `last_revision`.
    Written {
        first: usize,
        count: usize,
        last_revision: u64,
    },
    /// An idempotent re-send: the original result.
    Duplicate(AppendResult),
    /// Nothing to write (an append of zero events that passed its check).
    Unchanged(CurrentRevision),
}

/// The outcomes of a request's stream writes, in order. Most requests write one stream, so
/// the first is kept inline: planning a one-stream append allocates no list for it.
#[derive(Debug, Clone, Default)]
struct Outcomes {
    first: Option<Outcome>,
    rest: Vec<Outcome>,
}

impl Outcomes {
    fn push(&mut self, outcome: Outcome) {
        if self.first.is_none() {
            self.first = Some(outcome);
        } else {
            self.rest.push(outcome);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Outcome> {
        self.first.iter().chain(&self.rest)
    }
}

/// The records a request writes, and how to report its result.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Records to write atomically, in this order.
    pub records: Vec<PlannedRecord>,
    outcomes: Outcomes,
}

impl Plan {
    /// One result per stream write of the request (one in all for metadata, delete and
    /// tombstone), given the positions assigned to `records`.
    pub fn results(&self, positions: &[Position]) -> Vec<AppendResult> {
        results_with(&self.outcomes, |i| positions.get(i).copied()).collect()
    }

    /// The results, for when `records` were given consecutive positions from `first` (they
    /// may have been taken out of the plan since): kept as the outcomes and `first` until
    /// [`ResultsFrom::into_results`] builds them, so that the result list can be allocated
    /// where it is sent rather than where the plan was made.
    pub fn into_results_from(self, first: Position) -> ResultsFrom {
        ResultsFrom {
            outcomes: self.outcomes,
            first,
        }
    }

    /// True when the request writes nothing (duplicates and empty appends only).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn push_written(&mut self, records: Vec<PlannedRecord>) {
        let first = self.records.len();
        let count = records.len();
        let last_revision = records.last().map_or(0, |r| r.revision);
        if self.records.is_empty() {
            self.records = records;
        } else {
            self.records.extend(records);
        }
        self.outcomes.push(Outcome::Written {
            first,
            count,
            last_revision,
        });
    }
}

/// A plan's results before they are built: see [`Plan::into_results_from`].
#[derive(Debug, Clone)]
pub struct ResultsFrom {
    outcomes: Outcomes,
    first: Position,
}

impl ResultsFrom {
    /// Results known already (nothing left to compute from positions).
    pub fn ready(results: Vec<AppendResult>) -> Self {
        let mut outcomes = Outcomes::default();
        for result in results {
            outcomes.push(Outcome::Duplicate(result));
        }
        Self {
            outcomes,
            first: Position(0),
        }
    }

    /// One result per stream write of the request, built as they are taken: a caller that
    /// wants only the first (a one-stream append) allocates no list.
    pub fn results(&self) -> impl Iterator<Item = AppendResult> + '_ {
        let first = self.first.0;
        results_with(&self.outcomes, move |i| Some(Position(first + i as u64)))
    }

    /// One result per stream write of the request.
    pub fn into_results(self) -> Vec<AppendResult> {
        self.results().collect()
    }
}

fn results_with<'a>(
    outcomes: &'a Outcomes,
    position: impl Fn(usize) -> Option<Position> + 'a,
) -> impl Iterator<Item = AppendResult> + 'a {
    outcomes.iter().map(move |outcome| match *outcome {
        Outcome::Written {
            first,
            count,
            last_revision,
        } => AppendResult {
            current_revision: CurrentRevision::Current(last_revision),
            positions: position(first).zip(position(first + count - 1)),
        },
        Outcome::Duplicate(result) => result,
        Outcome::Unchanged(current) => AppendResult {
            current_revision: current,
            positions: None,
        },
    })
}

/// The writer-facing state of a stream: its current revision, or `StreamDeleted`.
///
/// The metadata comes boxed: it is rarely set, and held unboxed across the planner's awaits
/// it would make every planning future a few hundred bytes larger, all moved per request.
async fn current<V: StreamView>(
    view: &mut V,
    stream: &StreamName,
) -> Result<(StreamState, Option<Box<StreamMetadata>>, CurrentRevision), AppendError> {
    let state = view.stream_state(stream).await?;
    if state.tombstoned {
        return Err(AppendError::StreamDeleted {
            stream: stream.clone(),
        });
    }
    let metadata = view.metadata(stream).await?.map(Box::new);
    let soft_deleted = metadata.as_ref().is_some_and(|m| m.is_soft_deleted());
    let current = match state.last_revision {
        Some(r) if !soft_deleted => CurrentRevision::Current(r),
        _ => CurrentRevision::NoStream,
    };
    Ok((state, metadata, current))
}

fn check(
    stream: &StreamName,
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> Result<(), AppendError> {
    if expected.is_satisfied_by(actual) {
        Ok(())
    } else {
        Err(AppendError::WrongExpectedRevision {
            stream: stream.clone(),
            expected,
            actual,
        })
    }
}

/// Plans a validated request against the current state.
pub async fn plan<V: StreamView>(view: &mut V, request: WriteRequest) -> Result<Plan, AppendError> {
    let mut plan = Plan::default();
    match request {
        WriteRequest::Append(writes) => {
            for write in writes {
                plan_stream_write(view, &mut plan, write).await?;
            }
        }
        WriteRequest::SetMetadata {
            stream,
            expected,
            metadata,
        } => {
            current(view, &stream).await?;
            let record = metadata_record(view, &stream, expected, &metadata).await?;
            plan.push_written(vec![record]);
        }
        WriteRequest::Delete { stream, expected } => {
            let (_, metadata, actual) = current(view, &stream).await?;
            check(&stream, expected, actual)?;
            let metadata = Box::new(StreamMetadata {
                truncate_before: Some(SOFT_DELETED_TRUNCATE_BEFORE),
                ..metadata.map(|m| *m).unwrap_or_default()
            });
            let record = metadata_record(view, &stream, ExpectedRevision::Any, &metadata).await?;
            plan.push_written(vec![record]);
        }
        WriteRequest::Tombstone { stream, expected } => {
            let (state, _, actual) = current(view, &stream).await?;
            check(&stream, expected, actual)?;
            let record = PlannedRecord {
                revision: state.last_revision.map_or(0, |r| r + 1),
                event: NewEvent::binary(system_type(TOMBSTONE_EVENT_TYPE), Bytes::new()),
                stream,
                tombstone: true,
            };
            plan.push_written(vec![record]);
        }
    }
    Ok(plan)
}

async fn plan_stream_write<V: StreamView>(
    view: &mut V,
    plan: &mut Plan,
    write: StreamWrite,
) -> Result<(), AppendError> {
    let StreamWrite {
        stream,
        expected,
        events,
    } = write;
    let (state, metadata, actual) = current(view, &stream).await?;
    if let Some(original) = find_duplicate(view, &stream, expected, &events, &state, actual).await?
    {
        plan.outcomes.push(Outcome::Duplicate(original));
        return Ok(());
    }
    check(&stream, expected, actual)?;
    if events.is_empty() {
        plan.outcomes.push(Outcome::Unchanged(actual));
        return Ok(());
    }
    let first_revision = state.last_revision.map_or(0, |r| r + 1);
    if let Some(metadata) = metadata.filter(|m| m.is_soft_deleted()) {
        // Re-creating a soft-deleted stream: revisions continue, the old events stay hidden.
        let revived = Box::new(StreamMetadata {
            truncate_before: Some(first_revision),
            ..*metadata
        });
        let record = metadata_record(view, &stream, ExpectedRevision::Any, &revived).await?;
        plan.records.push(record);
    }
    let records = events
        .into_iter()
        .zip(first_revision..)
        .map(|(event, revision)| PlannedRecord {
            stream: stream.clone(),
            revision,
            event,
            tombstone: false,
        })
        .collect();
    plan.push_written(records);
    Ok(())
}

/// Recognises a re-send of an append that already took effect.
///
/// `Exact(n)` and `NoStream` re-sends are recognised wherever they landed: the events at
/// revisions `n + 1 ..` (or `0 ..`) carry the same ids. `Any` and `StreamExists` re-sends are
/// recognised when they are the stream's most recent append.
async fn find_duplicate<V: StreamView>(
    view: &mut V,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: &[NewEvent],
    state: &StreamState,
    actual: CurrentRevision,
) -> Result<Option<AppendResult>, AppendError> {
    let (Some(last_event), Some(last_revision)) = (events.last(), state.last_revision) else {
        return Ok(None);
    };
    let count = events.len() as u64;
    let from = match expected {
        _ if actual == CurrentRevision::NoStream => return Ok(None),
        ExpectedRevision::Exact(n) if actual == CurrentRevision::Current(n) => return Ok(None),
        ExpectedRevision::Exact(n) => n + 1,
        ExpectedRevision::NoStream => 0,
        ExpectedRevision::Any | ExpectedRevision::StreamExists => {
            if state.last_event_id != Some(last_event.id) || last_revision + 1 < count {
                return Ok(None);
            }
            last_revision + 1 - count
        }
    };
    if from + count > last_revision + 1 {
        return Ok(None);
    }
    let recorded = view.recorded(stream, from, events.len()).await?;
    let same = recorded.len() == events.len()
        && recorded
            .iter()
            .zip(events)
            .all(|((id, _), event)| *id == event.id);
    if !same {
        return Ok(None);
    }
    Ok(Some(AppendResult {
        current_revision: CurrentRevision::Current(from + count - 1),
        positions: recorded
            .first()
            .zip(recorded.last())
            .map(|(a, b)| (a.1, b.1)),
    }))
}

async fn metadata_record<V: StreamView>(
    view: &mut V,
    stream: &StreamName,
    expected: ExpectedRevision,
    metadata: &StreamMetadata,
) -> Result<PlannedRecord, AppendError> {
    let meta_stream = stream.metadata_stream();
    let state = view.stream_state(&meta_stream).await?;
    let actual = state
        .last_revision
        .map_or(CurrentRevision::NoStream, CurrentRevision::Current);
    check(&meta_stream, expected, actual)?;
    Ok(PlannedRecord {
        revision: state.last_revision.map_or(0, |r| r + 1),
        event: NewEvent::json(system_type(METADATA_EVENT_TYPE), metadata.to_bytes()),
        stream: meta_stream,
        tombstone: false,
    })
}

fn system_type(name: &str) -> EventType {
    // The system's own type names are constants known to be valid.
    EventType::new(name).unwrap_or_else(|_| unreachable!("valid system event type {name}"))
}

/// Polls a future that is known to complete without waiting (a [`StreamView`] over in-memory
/// state); `None` if it would have waited.
pub fn poll_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> NewEvent {
        NewEvent::json(EventType::new("T").unwrap(), data.to_owned())
    }

    fn write(stream: &str, events: Vec<NewEvent>) -> StreamWrite {
        StreamWrite {
            stream: StreamName::new(stream).unwrap(),
            expected: ExpectedRevision::Any,
            events,
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let limits = Limits {
            max_event_bytes: 10,
            max_append_bytes: 15,
        };
        let check = |writes| validate(&WriteRequest::Append(writes), &limits);
        assert_eq!(check(vec![]), Err(InvalidInput::NoStreams));
        assert!(matches!(
            check(vec![write("$x", vec![])]),
            Err(InvalidInput::ReservedStream { .. })
        ));
        assert!(matches!(
            check(vec![write("$ce-x", vec![])]),
            Err(InvalidInput::ReadOnlyStream { .. })
        ));
        assert!(matches!(
            check(vec![write("a", vec![event("{")])]),
            Err(InvalidInput::InvalidJson { .. })
        ));
        assert!(matches!(
            check(vec![write("a", vec![event("[1,2,3,4,5,6,7,8]")])]),
            Err(InvalidInput::EventTooLarge { .. })
        ));
        assert!(matches!(
            check(vec![write(
                "a",
                vec![event("111"), event("222"), event("333"), event("444")]
            )]),
            Err(InvalidInput::AppendTooLarge {
                size: 16,
                limit: 15
            })
        ));
        let e = event("1");
        assert!(matches!(
            check(vec![write("a", vec![e.clone(), e])]),
            Err(InvalidInput::DuplicateEventId { .. })
        ));
        assert!(matches!(
            check(vec![write("a", vec![]), write("a", vec![])]),
            Err(InvalidInput::DuplicateStream { .. })
        ));
        assert_eq!(
            check(vec![write(
                "a",
                vec![
                    event("{\"k\": 1}"),
                    NewEvent::binary(EventType::new("B").unwrap(), "{")
                ]
            )]),
            Ok(())
        );
    }

    #[test]
    fn distinct_keeps_counting_past_what_was_announced() {
        let mut seen = Distinct::new(2);
        for value in 0..40u32 {
            assert!(seen.insert(value), "{value} is new");
        }
        for value in [0, 15, 16, 39] {
            assert!(!seen.insert(value), "{value} was seen");
        }
    }

    #[test]
    fn results_from_a_first_position_equal_results_from_the_positions() {
        let mut plan = Plan::default();
        let record = |revision| PlannedRecord {
            stream: StreamName::new("s-1").unwrap(),
            revision,
            event: event("1"),
            tombstone: false,
        };
        plan.push_written(vec![record(0), record(1)]);
        plan.outcomes
            .push(Outcome::Unchanged(CurrentRevision::NoStream));
        plan.push_written(vec![record(7)]);
        let positions = [Position(40), Position(41), Position(42)];
        let expected = plan.results(&positions);
        assert_eq!(expected[0].positions, Some((Position(40), Position(41))));
        assert_eq!(expected[2].positions, Some((Position(42), Position(42))));
        // Also once the records were taken out, as the engine's writer does.
        plan.records.clear();
        let later = plan.into_results_from(Position(40));
        assert_eq!(later.into_results(), expected);
        assert_eq!(
            ResultsFrom::ready(expected.clone()).into_results(),
            expected
        );
    }

    #[test]
    fn duplicates_are_found_in_small_and_large_appends() {
        let check = |writes| validate(&WriteRequest::Append(writes), &Limits::default());
        for count in [2, 16, 17, 100] {
            let mut events: Vec<NewEvent> = (0..count).map(|_| event("1")).collect();
            assert_eq!(
                check(vec![write("a", events.clone())]),
                Ok(()),
                "{count} events"
            );
            let first = events[0].clone();
            events.push(first);
            assert!(
                matches!(
                    check(vec![write("a", events)]),
                    Err(InvalidInput::DuplicateEventId { .. })
                ),
                "{count} events and a repeated id"
            );
            let mut writes: Vec<StreamWrite> = (0..count)
                .map(|i| write(&format!("s-{i}"), vec![]))
                .collect();
            assert_eq!(check(writes.clone()), Ok(()), "{count} streams");
            writes.push(write("s-0", vec![]));
            assert!(
                matches!(check(writes), Err(InvalidInput::DuplicateStream { .. })),
                "{count} streams and a repeated one"
            );
        }
    }
}
