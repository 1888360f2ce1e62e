//! The official KurrentDB Rust client (`kurrentdb` 1.2) against `annals-server`: every call a
//! KurrentDB user makes for streams, unchanged.

mod common;

use common::Backend;

use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, BatchAppendOptions, CurrentRevision, DeleteStreamOptions, Error,
    EventData, ReadAllOptions, ReadStreamOptions, StreamMetadata, StreamMetadataResult,
    StreamPosition, StreamState, SubscribeToAllOptions, SubscribeToStreamOptions,
    SubscriptionEvent, SubscriptionFilter, TombstoneStreamOptions,
};
use serde_json::json;

fn event(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &json!({ "n": n })).expect("serializable")
}

/// The gRPC status code name of a client error that carries one.
fn grpc_code(err: &Error) -> Option<String> {
    match err {
        Error::Grpc { code, .. } => Some(format!("{code:?}")),
        _ => None,
    }
}

fn state(s: StreamState) -> AppendToStreamOptions {
    AppendToStreamOptions::default().stream_state(s)
}

async fn read_revisions(
    client: &kurrentdb::Client,
    stream: &str,
    options: &ReadStreamOptions,
) -> Vec<u64> {
    let mut reader = client
        .read_stream(stream, options)
        .await
        .expect("read starts");
    let mut out = Vec::new();
    while let Some(e) = reader.next().await.expect("read continues") {
        out.push(e.get_original_event().revision);
    }
    out
}

async fn read_error(client: &kurrentdb::Client, stream: &str) -> Error {
    let mut reader = match client
        .read_stream(stream, &ReadStreamOptions::default())
        .await
    {
        Ok(r) => r,
        Err(e) => return e,
    };
    match reader.next().await {
        Err(e) => e,
        Ok(other) => panic!("expected an error reading {stream}, got {other:?}"),
    }
}

async fn server_info_reports_a_version_the_client_accepts(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let info = client
        .server_info()
        .await
        .expect("server features answered");
    assert_eq!(info.version().major(), 24);
    assert_eq!(info.version().minor(), 10);
    server.stop().await;
}

async fn appends_honour_every_expected_revision(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let stream = common::unique("order");

    let first = client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::NoStream),
            event("Placed", 0),
        )
        .await
        .expect("no-stream append to a new stream");
    assert_eq!(first.next_expected_version, 0);

    let err = client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::NoStream),
            event("Placed", 1),
        )
        .await
        .expect_err("no-stream on an existing stream");
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                current: CurrentRevision::Current(0),
                expected: StreamState::NoStream
            }
        ),
        "{err:?}"
    );

    let second = client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::StreamRevision(0)),
            vec![event("Paid", 1), event("Shipped", 2)],
        )
        .await
        .expect("exact revision");
    assert_eq!(second.next_expected_version, 2);
    assert!(second.position.commit > first.position.commit);

    let err = client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::StreamRevision(0)),
            event("Late", 3),
        )
        .await
        .expect_err("stale revision");
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                current: CurrentRevision::Current(2),
                expected: StreamState::StreamRevision(0)
            }
        ),
        "{err:?}"
    );

    client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::StreamExists),
            event("Noted", 3),
        )
        .await
        .expect("stream exists");
    client
        .append_to_stream(stream.as_str(), &state(StreamState::Any), event("Noted", 4))
        .await
        .expect("any");

    let missing = common::unique("order");
    let err = client
        .append_to_stream(
            missing.as_str(),
            &state(StreamState::StreamExists),
            event("X", 0),
        )
        .await
        .expect_err("stream-exists on a missing stream");
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                current: CurrentRevision::NoStream,
                expected: StreamState::StreamExists
            }
        ),
        "{err:?}"
    );

    let revisions = read_revisions(&client, &stream, &ReadStreamOptions::default()).await;
    assert_eq!(revisions, vec![0, 1, 2, 3, 4]);
    server.stop().await;
}

async fn resending_the_same_event_ids_is_idempotent(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let stream = common::unique("pay");
    let id = uuid::Uuid::new_v4();
    let once = client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::NoStream),
            event("Paid", 1).id(id),
        )
        .await
        .expect("first send");
    let again = client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::NoStream),
            event("Paid", 1).id(id),
        )
        .await
        .expect("re-send answers the original result");
    assert_eq!(once.next_expected_version, again.next_expected_version);
    assert_eq!(once.position, again.position);
    let revisions = read_revisions(&client, &stream, &ReadStreamOptions::default()).await;
    assert_eq!(revisions, vec![0]);
    server.stop().await;
}

async fn reads_go_forward_and_backward_from_a_revision(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let stream = common::unique("cart");
    let events: Vec<_> = (0..10).map(|n| event("Added", n)).collect();
    client
        .append_to_stream(stream.as_str(), &state(StreamState::NoStream), events)
        .await
        .expect("append");

    let forward = ReadStreamOptions::default()
        .position(StreamPosition::Position(3))
        .max_count(4);
    assert_eq!(
        read_revisions(&client, &stream, &forward).await,
        vec![3, 4, 5, 6]
    );

    let backward = ReadStreamOptions::default()
        .backwards()
        .position(StreamPosition::Position(5))
        .max_count(3);
    assert_eq!(
        read_revisions(&client, &stream, &backward).await,
        vec![5, 4, 3]
    );

    let from_end = ReadStreamOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(2);
    assert_eq!(
        read_revisions(&client, &stream, &from_end).await,
        vec![9, 8]
    );

    let mut reader = client
        .read_stream(stream.as_str(), &ReadStreamOptions::default().max_count(1))
        .await
        .expect("read");
    let first = reader.next().await.expect("ok").expect("one event");
    let recorded = first.get_original_event();
    assert_eq!(recorded.event_type, "Added");
    assert!(recorded.is_json);
    assert_eq!(
        recorded.as_json::<serde_json::Value>().expect("json"),
        json!({"n": 0})
    );
    assert!(
        recorded.created.timestamp() > 1_600_000_000,
        "created is a real time: {}",
        recorded.created
    );

    let err = read_error(&client, &common::unique("missing")).await;
    assert!(matches!(err, Error::ResourceNotFound), "{err:?}");
    server.stop().await;
}

async fn all_reads_filter_by_stream_and_event_type(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let a = format!("alpha{tag}-1");
    let b = format!("beta{tag}-1");
    client
        .append_to_stream(
            a.as_str(),
            &state(StreamState::Any),
            vec![event(&format!("A{tag}"), 0), event(&format!("A{tag}"), 1)],
        )
        .await
        .expect("a");
    client
        .append_to_stream(
            b.as_str(),
            &state(StreamState::Any),
            vec![event(&format!("B{tag}"), 0)],
        )
        .await
        .expect("b");

    let collect = |options: ReadAllOptions| {
        let client = client.clone();
        async move {
            let mut reader = client.read_all(&options).await.expect("read_all");
            let mut out = Vec::new();
            while let Some(e) = reader.next().await.expect("read_all continues") {
                let r = e.get_original_event();
                out.push((r.stream_id().to_owned(), r.revision, r.position));
            }
            out
        }
    };
    let by_stream = collect(
        ReadAllOptions::default()
            .filter(SubscriptionFilter::on_stream_name().add_prefix(format!("alpha{tag}"))),
    )
    .await;
    assert_eq!(
        by_stream
            .iter()
            .map(|e| (e.0.as_str(), e.1))
            .collect::<Vec<_>>(),
        vec![(a.as_str(), 0), (a.as_str(), 1)]
    );

    let by_type = collect(
        ReadAllOptions::default()
            .filter(SubscriptionFilter::on_event_type().add_prefix(format!("B{tag}"))),
    )
    .await;
    assert_eq!(
        by_type.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        vec![b.as_str()]
    );

    let by_regex = collect(
        ReadAllOptions::default()
            .filter(SubscriptionFilter::on_stream_name().regex(format!("^(alpha|beta){tag}-1$"))),
    )
    .await;
    assert_eq!(by_regex.len(), 3);

    // Forward from a position includes it; backward from a position excludes it.
    let second_of_a = by_stream[1].2;
    let from = collect(
        ReadAllOptions::default()
            .position(StreamPosition::Position(second_of_a))
            .max_count(1),
    )
    .await;
    assert_eq!(from[0].2, second_of_a);
    let before = collect(
        ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::Position(second_of_a))
            .max_count(1),
    )
    .await;
    assert!(before[0].2 < second_of_a);

    let last = collect(
        ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(1),
    )
    .await;
    assert_eq!(last[0].0, b);
    server.stop().await;
}

async fn next_event(sub: &mut kurrentdb::Subscription) -> (String, u64) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), sub.next_subscription_event())
            .await
            .expect("subscription delivers within 10 s")
            .expect("subscription healthy");
        if let SubscriptionEvent::EventAppeared(e) = event {
            let r = e.get_original_event();
            return (r.stream_id().to_owned(), r.revision);
        }
    }
}

async fn stream_subscription_catches_up_then_receives_live_events(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let stream = common::unique("sub");
    client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::NoStream),
            vec![event("E", 0), event("E", 1)],
        )
        .await
        .expect("backlog");

    let mut sub = client
        .subscribe_to_stream(
            stream.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    assert_eq!(next_event(&mut sub).await.1, 0);
    assert_eq!(next_event(&mut sub).await.1, 1);
    client
        .append_to_stream(
            stream.as_str(),
            &state(StreamState::StreamRevision(1)),
            event("E", 2),
        )
        .await
        .expect("live");
    assert_eq!(next_event(&mut sub).await.1, 2);

    // Resuming after revision 1 starts at 2.
    let mut resumed = client
        .subscribe_to_stream(
            stream.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(1)),
        )
        .await;
    assert_eq!(next_event(&mut resumed).await.1, 2);
    server.stop().await;
}

async fn filtered_all_subscription_receives_later_live_events(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let wanted = format!("watched{tag}-1");
    let other = format!("ignored{tag}-1");
    client
        .append_to_stream(wanted.as_str(), &state(StreamState::Any), event("E", 0))
        .await
        .expect("backlog");

    let filter = SubscriptionFilter::on_stream_name().add_prefix(format!("watched{tag}"));
    let mut sub = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Start)
                .filter(filter),
        )
        .await;
    assert_eq!(next_event(&mut sub).await, (wanted.clone(), 0));
    client
        .append_to_stream(other.as_str(), &state(StreamState::Any), event("E", 0))
        .await
        .expect("other");
    client
        .append_to_stream(wanted.as_str(), &state(StreamState::Any), event("E", 1))
        .await
        .expect("live");
    assert_eq!(next_event(&mut sub).await, (wanted.clone(), 1));

    // Unfiltered from the end: only events committed after subscribing.
    let mut tail = client
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::End))
        .await;
    // Wait for the confirmation so the subscription is established before the append.
    let first = tokio::time::timeout(Duration::from_secs(10), tail.next_subscription_event())
        .await
        .expect("confirmed in time")
        .expect("healthy");
    assert!(
        matches!(first, SubscriptionEvent::Confirmed(_)),
        "{first:?}"
    );
    client
        .append_to_stream(other.as_str(), &state(StreamState::Any), event("E", 1))
        .await
        .expect("live");
    assert_eq!(next_event(&mut tail).await, (other.clone(), 1));
    server.stop().await;
}

async fn delete_and_tombstone(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let soft = common::unique("soft");
    client
        .append_to_stream(
            soft.as_str(),
            &state(StreamState::NoStream),
            vec![event("E", 0), event("E", 1)],
        )
        .await
        .expect("append");
    let err = client
        .delete_stream(
            soft.as_str(),
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(0)),
        )
        .await
        .expect_err("stale delete");
    assert_eq!(
        grpc_code(&err).as_deref(),
        Some("FailedPrecondition"),
        "{err:?}"
    );
    client
        .delete_stream(
            soft.as_str(),
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
        )
        .await
        .expect("delete");
    assert!(matches!(
        read_error(&client, &soft).await,
        Error::ResourceNotFound
    ));
    let again = client
        .append_to_stream(soft.as_str(), &state(StreamState::NoStream), event("E", 2))
        .await
        .expect("a soft-deleted stream can be written again");
    assert_eq!(
        again.next_expected_version, 2,
        "revisions continue after a soft delete"
    );
    assert_eq!(
        read_revisions(&client, &soft, &ReadStreamOptions::default()).await,
        vec![2]
    );

    let hard = common::unique("hard");
    client
        .append_to_stream(hard.as_str(), &state(StreamState::NoStream), event("E", 0))
        .await
        .expect("append");
    client
        .tombstone_stream(
            hard.as_str(),
            &TombstoneStreamOptions::default().stream_state(StreamState::Any),
        )
        .await
        .expect("tombstone");
    assert!(matches!(
        read_error(&client, &hard).await,
        Error::ResourceDeleted
    ));
    let err = client
        .append_to_stream(hard.as_str(), &state(StreamState::Any), event("E", 1))
        .await
        .expect_err("a tombstoned stream is dead");
    assert!(matches!(err, Error::ResourceDeleted), "{err:?}");
    server.stop().await;
}

async fn stream_metadata_round_trips_through_the_metadata_stream(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let stream = common::unique("meta");
    let none = client
        .get_stream_metadata(
            stream.as_str(),
            &ReadStreamOptions::default()
                .backwards()
                .position(StreamPosition::End)
                .max_count(1),
        )
        .await
        .expect("get");
    assert!(none.is_not_found(), "{none:?}");

    let events: Vec<_> = (0..5).map(|n| event("E", n)).collect();
    client
        .append_to_stream(stream.as_str(), &state(StreamState::NoStream), events)
        .await
        .expect("append");
    let mut builder = StreamMetadata::builder().max_count(2);
    builder = builder.insert_custom_property("owner", "billing");
    let written = client
        .set_stream_metadata(
            stream.as_str(),
            &state(StreamState::NoStream),
            &builder.build(),
        )
        .await
        .expect("set metadata");
    assert_eq!(written.next_expected_version, 0);

    let got = client
        .get_stream_metadata(
            stream.as_str(),
            &ReadStreamOptions::default()
                .backwards()
                .position(StreamPosition::End)
                .max_count(1),
        )
        .await
        .expect("get");
    let StreamMetadataResult::Success(versioned) = got else {
        panic!("metadata not found: {got:?}");
    };
    assert_eq!(versioned.version(), 0);
    assert_eq!(versioned.metadata().max_count, Some(2));
    assert_eq!(
        versioned.metadata().custom_properties.get("owner"),
        Some(&json!("billing"))
    );
    // $maxCount applies to reads.
    assert_eq!(
        read_revisions(&client, &stream, &ReadStreamOptions::default()).await,
        vec![3, 4]
    );

    let err = client
        .set_stream_metadata(
            stream.as_str(),
            &state(StreamState::NoStream),
            &StreamMetadata::builder().max_count(3).build(),
        )
        .await
        .expect_err("metadata stream already exists");
    assert!(matches!(err, Error::WrongExpectedVersion { .. }), "{err:?}");
    server.stop().await;
}

async fn batch_append_writes_and_reports_conflicts(backend: Backend) {
    let server = common::start_on(backend).await;
    let client = server.client();
    let batch = client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch client");
    let stream = common::unique("batch");
    let result = batch
        .append_to_stream(
            stream.as_str(),
            StreamState::NoStream,
            vec![event("E", 0), event("E", 1), event("E", 2)],
        )
        .await
        .expect("batch append");
    assert_eq!(result.current_revision(), Some(2));
    assert!(result.current_position().is_some());

    let err = batch
        .append_to_stream(stream.as_str(), StreamState::NoStream, vec![event("E", 3)])
        .await
        .expect_err("conflict");
    assert_eq!(
        grpc_code(&err).as_deref(),
        Some("FailedPrecondition"),
        "{err:?}"
    );

    // This client ends its batch session after a failed item (the server would keep the call
    // open); a new session continues, and the failed item wrote nothing.
    let batch = client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("second batch client");
    let next = batch
        .append_to_stream(
            stream.as_str(),
            StreamState::StreamRevision(2),
            vec![event("E", 3)],
        )
        .await
        .expect("a new batch session works");
    assert_eq!(next.current_revision(), Some(3));
    assert_eq!(
        read_revisions(&client, &stream, &ReadStreamOptions::default()).await,
        vec![0, 1, 2, 3]
    );
    server.stop().await;
}

async fn client_errors_are_typed_and_change_nothing(backend: Backend) {
    let mut config = common::config();
    config.limits.max_event_bytes = 1024;
    config.limits.max_append_bytes = 4096;
    let server = common::start_on_with(backend, config).await;
    let client = server.client();
    let stream = common::unique("limits");

    let big = EventData::binary("Big", bytes::Bytes::from(vec![7u8; 2048]));
    let err = client
        .append_to_stream(stream.as_str(), &state(StreamState::Any), big)
        .await
        .expect_err("event over the limit");
    assert_eq!(
        grpc_code(&err).as_deref(),
        Some("InvalidArgument"),
        "{err:?}"
    );

    let many: Vec<_> = (0..8)
        .map(|_| EventData::binary("Mid", bytes::Bytes::from(vec![1u8; 900])))
        .collect();
    let err = client
        .append_to_stream(stream.as_str(), &state(StreamState::Any), many)
        .await
        .expect_err("append over the limit");
    assert_eq!(
        grpc_code(&err).as_deref(),
        Some("InvalidArgument"),
        "{err:?}"
    );

    let err = client
        .append_to_stream("$ce-limits", &state(StreamState::Any), event("E", 0))
        .await
        .expect_err("virtual streams are read-only");
    assert_eq!(
        grpc_code(&err).as_deref(),
        Some("InvalidArgument"),
        "{err:?}"
    );

    assert!(
        matches!(read_error(&client, &stream).await, Error::ResourceNotFound),
        "nothing was written"
    );
    server.stop().await;
}

/// Runs every scenario above on both backends: `engine::…` and `postgres::…`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod engine {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::Backend::Engine).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_every_backend!(
    server_info_reports_a_version_the_client_accepts,
    appends_honour_every_expected_revision,
    resending_the_same_event_ids_is_idempotent,
    reads_go_forward_and_backward_from_a_revision,
    all_reads_filter_by_stream_and_event_type,
    stream_subscription_catches_up_then_receives_live_events,
    filtered_all_subscription_receives_later_live_events,
    delete_and_tombstone,
    stream_metadata_round_trips_through_the_metadata_stream,
    batch_append_writes_and_reports_conflicts,
    client_errors_are_typed_and_change_nothing,
);

/// The official client leaves Nagle's algorithm on, so each request's second frame waits for
/// the server to acknowledge the first; with Linux's delayed acknowledgements that was 40 ms
/// per append for a lone writer (about 20 appends a second). The server acknowledges at once,
/// so a lone writer's appends take the time of a durable write. The bound is a behaviour
/// check with a wide margin, not a performance target: delayed acknowledgements put every
/// append at 40 ms or more, while a prompt server answers in about a millisecond.
#[tokio::test(flavor = "multi_thread")]
async fn a_lone_client_is_not_held_back_by_delayed_acknowledgements() {
    let server = common::start_on(Backend::Engine).await;
    let client = server.client();
    let stream = common::unique("lone");
    let mut expected = StreamState::NoStream;
    let mut took = Vec::new();
    for n in 0..41 {
        let started = std::time::Instant::now();
        let written = client
            .append_to_stream(stream.as_str(), &state(expected), event("Tick", n))
            .await
            .expect("append");
        took.push(started.elapsed());
        expected = StreamState::StreamRevision(written.next_expected_version);
    }
    // The first append also connects; the median of the rest is what a lone writer sees.
    took.remove(0);
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "a lone client's append took {median:?} (median of {}): held back by delayed \
         acknowledgements",
        took.len()
    );
    server.stop().await;
}
