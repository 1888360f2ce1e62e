//! The model test: random operation sequences run on a backend and on the in-memory
//! reference store ([`MemoryStore`]), asserting both give the same outcome for every
//! operation.
//!
//! Operations: appends to a handful of streams with random expected revisions (right and
//! wrong ones), re-sends of earlier appends (idempotency), multi-stream appends, metadata
//! (max-count, truncate-before), soft deletes, tombstones, reads of streams, metadata
//! streams, `$ce-`, `$et-` and `$all` in both directions with limits and filters, and
//! reopening the backend. Outcomes are compared on results, error variants and their fields,
//! and read events on (stream, revision, id, type, data, link); positions too when the
//! backend is gap-free.
//!
//! Failing cases are shrunk and persisted to the file named in [`ModelConfig::regressions`]
//! (commit it); they are replayed first on every run.

use std::fmt::Write as _;
use std::sync::Arc;

use annals_core::memory::MemoryStore;
use annals_core::read::{FilterTarget, StreamFrom};
use annals_core::{
    AllFrom, AppendError, AppendResult, Clock, Direction, EventAppender, EventReader, EventType,
    ExpectedRevision, Filter, ManualClock, NewEvent, Position, ReadAllOptions, ReadError,
    ReadStreamOptions, ResolvedEvent, StreamMetadata, StreamName, StreamWrite, WriteRequest,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use uuid::Uuid;

use crate::Backend;
use crate::support::START;

/// Environment variable overriding [`ModelConfig::cases`].
pub const CASES_ENV: &str = "ANNALS_MODEL_CASES";

/// How a model test runs.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Random sequences to try (overridden by `ANNALS_MODEL_CASES`).
    pub cases: u32,
    /// Longest sequence of operations.
    pub max_ops: usize,
    /// The file failing cases are saved to and replayed from, normally
    /// `concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/model.txt")`.
    pub regressions: &'static str,
}

impl ModelConfig {
    /// 64 cases of up to 40 operations, failures persisted to `regressions`.
    pub fn new(regressions: &'static str) -> Self {
        Self {
            cases: 64,
            max_ops: 40,
            regressions,
        }
    }

    fn effective_cases(&self) -> u32 {
        match std::env::var(CASES_ENV) {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{CASES_ENV}={v} is not a number")),
            Err(_) => self.cases,
        }
    }
}

const STREAMS: [&str; 5] = ["acct-0", "acct-1", "user-0", "user-1", "misc"];
const CATEGORIES: [&str; 3] = ["acct", "user", "misc"];
const TYPES: [&str; 3] = ["Opened", "Moved", "Closed"];

/// An expected revision as generated: `Right` is resolved against the model when the
/// operation runs.
#[derive(Debug, Clone, Copy)]
enum Exp {
    Right,
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    ty: usize,
    id: u128,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Stream(usize),
    Metadata(usize),
    Category(usize),
    EventType(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        expected: Exp,
        events: Vec<Ev>,
    },
    Multi {
        writes: Vec<(usize, Exp, Vec<Ev>)>,
    },
    Resend {
        pick: Index,
    },
    SetMetadata {
        stream: usize,
        expected: Exp,
        max_count: Option<u64>,
        truncate_before: Option<u64>,
    },
    Delete {
        stream: usize,
        expected: Exp,
    },
    Tombstone {
        stream: usize,
        expected: Exp,
    },
    Read {
        target: Target,
        backward: bool,
        from: Option<u64>,
        limit: u64,
    },
    ReadAll {
        backward: bool,
        from: Option<u64>,
        limit: u64,
        filter: Option<usize>,
    },
    Reopen,
}

fn exp() -> impl Strategy<Value = Exp> {
    prop_oneof![
        4 => Just(Exp::Right),
        1 => Just(Exp::Any),
        1 => Just(Exp::NoStream),
        1 => Just(Exp::StreamExists),
        1 => (0u64..6).prop_map(Exp::Exact),
    ]
}

fn evs() -> impl Strategy<Value = Vec<Ev>> {
    proptest::collection::vec(
        (0..TYPES.len(), any::<u128>()).prop_map(|(ty, id)| Ev { ty, id }),
        0..4,
    )
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => (0..STREAMS.len()).prop_map(Target::Stream),
        1 => (0..STREAMS.len()).prop_map(Target::Metadata),
        1 => (0..CATEGORIES.len()).prop_map(Target::Category),
        1 => (0..TYPES.len()).prop_map(Target::EventType),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    prop_oneof![
        10 => (stream.clone(), exp(), evs())
            .prop_map(|(stream, expected, events)| Op::Append { stream, expected, events }),
        2 => proptest::collection::vec((stream.clone(), exp(), evs()), 1..4)
            .prop_map(|writes| Op::Multi { writes }),
        3 => any::<Index>().prop_map(|pick| Op::Resend { pick }),
        2 => (
            stream.clone(),
            exp(),
            proptest::option::of(1u64..4),
            proptest::option::of(0u64..5)
        )
            .prop_map(|(stream, expected, max_count, truncate_before)| Op::SetMetadata {
                stream,
                expected,
                max_count,
                truncate_before,
            }),
        1 => (stream.clone(), exp()).prop_map(|(stream, expected)| Op::Delete { stream, expected }),
        1 => (stream, exp()).prop_map(|(stream, expected)| Op::Tombstone { stream, expected }),
        5 => (target(), any::<bool>(), proptest::option::of(0u64..8), 1u64..8)
            .prop_map(|(target, backward, from, limit)| Op::Read { target, backward, from, limit }),
        3 => (
            any::<bool>(),
            proptest::option::of(0u64..40),
            1u64..12,
            proptest::option::of(0usize..4)
        )
            .prop_map(|(backward, from, limit, filter)| Op::ReadAll {
                backward,
                from,
                limit,
                filter,
            }),
        1 => Just(Op::Reopen),
    ]
}

fn name(i: usize) -> StreamName {
    StreamName::new(STREAMS[i]).expect("valid stream name")
}

fn new_event(ev: &Ev) -> NewEvent {
    let ty = EventType::new(TYPES[ev.ty]).expect("valid event type");
    NewEvent::json(ty, format!(r#"{{"v":{}}}"#, ev.id % 1000)).with_id(Uuid::from_u128(ev.id))
}

fn filter(i: usize) -> Filter {
    match i {
        0 => Filter::stream_prefixes(["acct-"]),
        1 => Filter::event_type_prefixes(["Mo", "$"]),
        2 => Filter::exclude_system_events(),
        _ => Filter::regex(FilterTarget::StreamName, "-1$").expect("valid regex"),
    }
}

/// Resolves an expectation for `stream`: `Right` becomes what the model says it is.
async fn resolve(model: &MemoryStore, stream: &StreamName, exp: Exp) -> ExpectedRevision {
    match exp {
        Exp::Any => ExpectedRevision::Any,
        Exp::NoStream => ExpectedRevision::NoStream,
        Exp::StreamExists => ExpectedRevision::StreamExists,
        Exp::Exact(n) => ExpectedRevision::Exact(n),
        // An empty append writes nothing and reports the current revision.
        Exp::Right => match model.append(stream, ExpectedRevision::Any, vec![]).await {
            Ok(result) => result.next_expected(),
            Err(_) => ExpectedRevision::Any,
        },
    }
}

async fn resolve_metadata(model: &MemoryStore, stream: &StreamName, exp: Exp) -> ExpectedRevision {
    match exp {
        Exp::Right => match model.stream_metadata(stream).await {
            Ok(Some((revision, _))) => ExpectedRevision::Exact(revision),
            _ => ExpectedRevision::NoStream,
        },
        other => resolve(model, stream, other).await,
    }
}

/// A write's outcome in comparable form.
fn write_outcome(
    result: Result<Vec<AppendResult>, AppendError>,
    gap_free: bool,
) -> Result<String, TestCaseError> {
    Ok(match result {
        Ok(results) => {
            let mut out = String::from("ok");
            for r in results {
                let positions = if gap_free {
                    format!("{:?}", r.positions)
                } else {
                    format!("{}", r.positions.is_some())
                };
                let _ = write!(out, " [{:?} {positions}]", r.current_revision);
            }
            out
        }
        Err(AppendError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        }) => format!("conflict {stream} expected {expected:?} actual {actual:?}"),
        Err(AppendError::StreamDeleted { stream }) => format!("deleted {stream}"),
        Err(AppendError::Invalid(e)) => format!("invalid {e:?}"),
        Err(e) => return Err(TestCaseError::fail(format!("storage failure: {e}"))),
    })
}

fn event_line(e: &ResolvedEvent, gap_free: bool) -> String {
    let ev = &e.event;
    // System records (metadata, tombstones) get fresh random ids from each store.
    let id = if ev.event_type.is_system() {
        String::from("-")
    } else {
        ev.id.to_string()
    };
    let mut line = format!(
        "{}@{} {id} {} {}",
        ev.stream,
        ev.revision,
        ev.event_type,
        String::from_utf8_lossy(&ev.data)
    );
    if let Some(link) = &e.link {
        let _ = write!(line, " via {}@{}", link.stream, link.revision);
    }
    if gap_free {
        let _ = write!(line, " at {}", ev.position);
    }
    line
}

fn read_outcome(
    result: Result<Vec<ResolvedEvent>, ReadError>,
    gap_free: bool,
) -> Result<String, TestCaseError> {
    Ok(match result {
        Ok(events) => events
            .iter()
            .map(|e| event_line(e, gap_free))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(ReadError::StreamNotFound { stream }) => format!("not found {stream}"),
        Err(ReadError::StreamDeleted { stream }) => format!("deleted {stream}"),
        Err(ReadError::Invalid(e)) => format!("invalid {e:?}"),
        Err(e) => return Err(TestCaseError::fail(format!("storage failure: {e}"))),
    })
}

/// One case's two stores and what the sequence has done so far.
struct Run<'a, B: Backend> {
    backend: &'a B,
    store: Option<Arc<B::Store>>,
    model: MemoryStore,
    persistent: bool,
    /// Append requests sent so far, for re-sends.
    sent: Vec<Vec<StreamWrite>>,
}

impl<B: Backend> Run<'_, B> {
    fn store(&self) -> &B::Store {
        self.store.as_deref().expect("the store is open")
    }

    /// Runs one operation on both stores; returns (backend outcome, model outcome).
    async fn step(&mut self, op: &Op) -> Result<(String, String), TestCaseError> {
        let gap_free = B::GAP_FREE_POSITIONS;
        let request = match op {
            Op::Append {
                stream,
                expected,
                events,
            } => {
                let stream = name(*stream);
                let expected = resolve(&self.model, &stream, *expected).await;
                let events = events.iter().map(new_event).collect();
                let writes = vec![StreamWrite {
                    stream,
                    expected,
                    events,
                }];
                self.sent.push(writes.clone());
                WriteRequest::Append(writes)
            }
            Op::Multi { writes } => {
                let mut out: Vec<StreamWrite> = Vec::new();
                for (stream, expected, events) in writes {
                    let stream = name(*stream);
                    if out.iter().any(|w| w.stream == stream) {
                        continue;
                    }
                    let expected = resolve(&self.model, &stream, *expected).await;
                    let events = events.iter().map(new_event).collect();
                    out.push(StreamWrite {
                        stream,
                        expected,
                        events,
                    });
                }
                self.sent.push(out.clone());
                WriteRequest::Append(out)
            }
            Op::Resend { pick } => {
                if self.sent.is_empty() {
                    return Ok((String::new(), String::new()));
                }
                WriteRequest::Append(self.sent[pick.index(self.sent.len())].clone())
            }
            Op::SetMetadata {
                stream,
                expected,
                max_count,
                truncate_before,
            } => {
                let stream = name(*stream);
                let expected = resolve_metadata(&self.model, &stream, *expected).await;
                let metadata = StreamMetadata {
                    max_count: *max_count,
                    truncate_before: *truncate_before,
                    ..StreamMetadata::default()
                };
                WriteRequest::SetMetadata {
                    stream,
                    expected,
                    metadata: Box::new(metadata),
                }
            }
            Op::Delete { stream, expected } => {
                let stream = name(*stream);
                let expected = resolve(&self.model, &stream, *expected).await;
                WriteRequest::Delete { stream, expected }
            }
            Op::Tombstone { stream, expected } => {
                let stream = name(*stream);
                let expected = resolve(&self.model, &stream, *expected).await;
                WriteRequest::Tombstone { stream, expected }
            }
            Op::Read {
                target,
                backward,
                from,
                limit,
            } => {
                let stream = match *target {
                    Target::Stream(i) => name(i),
                    Target::Metadata(i) => name(i).metadata_stream(),
                    Target::Category(i) => {
                        StreamName::for_category(CATEGORIES[i]).expect("valid category stream")
                    }
                    Target::EventType(i) => {
                        let ty = EventType::new(TYPES[i]).expect("valid event type");
                        StreamName::for_event_type(&ty).expect("valid event type stream")
                    }
                };
                let options = ReadStreamOptions {
                    direction: if *backward {
                        Direction::Backward
                    } else {
                        Direction::Forward
                    },
                    from: match from {
                        Some(r) => StreamFrom::Revision(*r),
                        None if *backward => StreamFrom::End,
                        None => StreamFrom::Start,
                    },
                    limit: *limit,
                };
                let got = self.store().read_stream(&stream, options).await;
                let want = self.model.read_stream(&stream, options).await;
                return Ok((read_outcome(got, gap_free)?, read_outcome(want, gap_free)?));
            }
            Op::ReadAll {
                backward,
                from,
                limit,
                filter: f,
            } => {
                let from = match from {
                    // Positions mean the same on both sides only when gap-free.
                    Some(p) if gap_free => AllFrom::Position(Position(*p)),
                    _ if *backward => AllFrom::End,
                    _ => AllFrom::Start,
                };
                let options = ReadAllOptions {
                    direction: if *backward {
                        Direction::Backward
                    } else {
                        Direction::Forward
                    },
                    from,
                    limit: *limit,
                    filter: f.map(filter),
                    max_scan: None,
                };
                let describe = |result: Result<annals_core::AllSlice, ReadError>| {
                    result.map(|slice| {
                        let next = if gap_free {
                            format!("{:?}", slice.next)
                        } else {
                            String::new()
                        };
                        (
                            slice.events,
                            format!("end {} next {next}", slice.end_of_log),
                        )
                    })
                };
                let got = describe(self.store().read_all(options.clone()).await);
                let want = describe(self.model.read_all(options).await);
                let text = |r: Result<(Vec<ResolvedEvent>, String), ReadError>| {
                    let (events, tail) = match r {
                        Ok((events, tail)) => (Ok(events), tail),
                        Err(e) => (Err(e), String::new()),
                    };
                    read_outcome(events, gap_free).map(|s| format!("{s}\n{tail}"))
                };
                return Ok((text(got)?, text(want)?));
            }
            Op::Reopen => {
                if self.persistent {
                    let store = self.store.take().expect("the store is open");
                    let reopened = self.backend.reopen(store).await;
                    let Some(reopened) = reopened else {
                        return Err(TestCaseError::fail("reopen returned None this time"));
                    };
                    self.store = Some(reopened);
                }
                return Ok((String::new(), String::new()));
            }
        };
        let got = self.store().write(request.clone()).await;
        let want = self.model.write(request).await;
        Ok((
            write_outcome(got, gap_free)?,
            write_outcome(want, gap_free)?,
        ))
    }
}

async fn run_case<B: Backend>(
    backend: &B,
    persistent: bool,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(START));
    let store = backend.create(clock.clone()).await;
    let mut run = Run {
        backend,
        store: Some(store),
        model: MemoryStore::with_clock(clock),
        persistent,
        sent: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        let (got, want) = run.step(op).await?;
        if got != want {
            return Err(TestCaseError::fail(format!(
                "operation {i} {op:?} differs\nbackend:\n{got}\nmodel:\n{want}"
            )));
        }
    }
    // The whole log agrees at the end.
    let got = run
        .store()
        .read_all(ReadAllOptions::forward())
        .await
        .map(|s| s.events);
    let want = run
        .model
        .read_all(ReadAllOptions::forward())
        .await
        .map(|s| s.events);
    let (got, want) = (
        read_outcome(got, B::GAP_FREE_POSITIONS)?,
        read_outcome(want, B::GAP_FREE_POSITIONS)?,
    );
    if got != want {
        return Err(TestCaseError::fail(format!(
            "final $all differs\nbackend:\n{got}\nmodel:\n{want}"
        )));
    }
    Ok(())
}

/// Runs random operation sequences on backends from `make_backend` (a fresh one per case)
/// and on the in-memory model, and panics with the shrunk sequence on the first difference.
///
/// Run it from a plain `#[test]`: it builds its own runtime.
pub fn model_test<B: Backend>(make_backend: impl Fn() -> B, config: ModelConfig) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Whether the backend persists: probe once, so `Reopen` is skipped for those that do not.
    let persistent = runtime.block_on(async {
        let backend = make_backend();
        let store = backend.create(Arc::new(ManualClock::new(START))).await;
        backend.reopen(store).await.is_some()
    });
    let proptest_config = Config {
        cases: config.effective_cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(config.regressions))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(proptest_config);
    let strategy = proptest::collection::vec(op(), 1..=config.max_ops.max(1));
    let result = runner.run(&strategy, |ops| {
        let backend = make_backend();
        runtime.block_on(run_case(&backend, persistent, &ops))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!("model test failed: {reason}\nminimal sequence: {ops:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}
