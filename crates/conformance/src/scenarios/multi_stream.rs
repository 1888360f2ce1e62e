//! Multi-stream appends: one atomic commit to several streams. Every expectation holds and
//! every event is written, or nothing is written anywhere and no position is consumed.

use annals_core::CurrentRevision::{Current, NoStream as Missing};
use annals_core::ExpectedRevision::{Any, Exact, NoStream, StreamExists};
use annals_core::{
    AppendError, EventAppender, EventReader, ExpectedRevision, InvalidInput, NewEvent, StreamWrite,
};

use crate::Backend;
use crate::support::*;

fn write(name: &str, expected: ExpectedRevision, events: Vec<NewEvent>) -> StreamWrite {
    StreamWrite {
        stream: stream(name),
        expected,
        events,
    }
}

/// A successful multi-stream append writes each stream's events in request order, with one
/// result per stream, and the records are contiguous in `$all`.
pub async fn multi_stream_append_writes_every_stream_atomically<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "cart-1", NoStream, events("Opened", 0, 1)).await;
    let order = events("Placed", 0, 2);
    let cart = events("Closed", 0, 1);
    let payment = events("Requested", 0, 1);
    let want: Vec<_> = [&order, &cart, &payment]
        .iter()
        .flat_map(|e| new_ids(e))
        .collect();
    let results = store
        .append_multi(vec![
            write("order-1", NoStream, order),
            write("cart-1", Exact(0), cart),
            write("payment-1", Any, payment),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_result::<B>(&results[0], Current(1), Some((1, 2)));
    assert_result::<B>(&results[1], Current(1), Some((3, 3)));
    assert_result::<B>(&results[2], Current(0), Some((4, 4)));
    let all = read_all(&*store).await;
    let got: Vec<_> = all[1..].iter().map(|e| e.id).collect();
    assert_eq!(got, want, "the commit's records in request order");
    let places: Vec<_> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.revision))
        .collect();
    assert_eq!(
        places,
        [
            ("cart-1", 0),
            ("order-1", 0),
            ("order-1", 1),
            ("cart-1", 1),
            ("payment-1", 0)
        ]
    );
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_positions::<B>(&positions, 0);
    assert_eq!(revisions(&read_ok(&*store, "cart-1").await), vec![0, 1]);
}

/// One failing expectation fails the whole commit with that stream's conflict: no stream is
/// written and no position is consumed.
pub async fn one_failing_check_writes_nothing_anywhere<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "cart-1", NoStream, events("Opened", 0, 2)).await;
    let head_before = head(&*store);
    // The failing check comes last, after two that pass.
    let result = store
        .append_multi(vec![
            write("order-1", NoStream, events("Placed", 0, 2)),
            write("payment-1", Any, events("Requested", 0, 1)),
            write("cart-1", Exact(0), events("Closed", 0, 1)),
        ])
        .await;
    assert_conflict(result, "cart-1", Exact(0), Current(1));
    // And first.
    let result = store
        .append_multi(vec![
            write("cart-1", StreamExists, events("Closed", 0, 1)),
            write("order-1", StreamExists, events("Placed", 0, 1)),
        ])
        .await;
    assert_conflict(result, "order-1", StreamExists, Missing);
    assert_eq!(head(&*store), head_before, "no position consumed");
    assert_not_found(&*store, "order-1").await;
    assert_not_found(&*store, "payment-1").await;
    assert_eq!(revisions(&read_ok(&*store, "cart-1").await), vec![0, 1]);
    assert_eq!(read_all(&*store).await.len(), 2);
    // The next commit takes the positions right after the last committed record.
    let results = store
        .append_multi(vec![
            write("order-1", NoStream, events("Placed", 0, 1)),
            write("cart-1", Exact(1), events("Closed", 0, 1)),
        ])
        .await
        .unwrap();
    assert_result::<B>(&results[0], Current(0), Some((2, 2)));
    assert_result::<B>(&results[1], Current(2), Some((3, 3)));
}

/// A tombstoned stream in the commit fails it with `StreamDeleted`; nothing is written.
pub async fn tombstoned_stream_fails_the_whole_commit<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "cart-1", NoStream, events("Opened", 0, 1)).await;
    store
        .tombstone_stream(&stream("cart-1"), Exact(0))
        .await
        .unwrap();
    let head_before = head(&*store);
    let result = store
        .append_multi(vec![
            write("order-1", NoStream, events("Placed", 0, 1)),
            write("cart-1", Any, events("Closed", 0, 1)),
        ])
        .await;
    assert_append_deleted(result, "cart-1");
    assert_eq!(head(&*store), head_before);
    assert_not_found(&*store, "order-1").await;
}

/// A malformed event in any stream of the commit refuses it; nothing is written.
pub async fn invalid_event_fails_the_whole_commit<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let bad = annals_core::NewEvent::json(ty("Placed"), "{not json");
    let bad_id = bad.id;
    let result = store
        .append_multi(vec![
            write("order-1", NoStream, events("Placed", 0, 1)),
            write("cart-1", Any, vec![bad]),
        ])
        .await;
    match result {
        Err(AppendError::Invalid(InvalidInput::InvalidJson { event_id, .. })) => {
            assert_eq!(event_id, bad_id);
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    let result = store
        .append_multi(vec![
            write("order-1", NoStream, events("Placed", 0, 1)),
            write("order-1", Any, events("Placed", 1, 1)),
        ])
        .await;
    match result {
        Err(AppendError::Invalid(InvalidInput::DuplicateStream { stream })) => {
            assert_eq!(stream.as_str(), "order-1");
        }
        other => panic!("expected DuplicateStream, got {other:?}"),
    }
    let result = store.append_multi(vec![]).await;
    assert!(
        matches!(result, Err(AppendError::Invalid(InvalidInput::NoStreams))),
        "{result:?}"
    );
    assert_eq!(head(&*store).0, 0);
    assert_not_found(&*store, "order-1").await;
    assert_not_found(&*store, "cart-1").await;
}

/// Recreating a soft-deleted stream inside a commit that fails writes no metadata either.
pub async fn failed_recreation_writes_no_metadata<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Placed", 0, 2)).await;
    store
        .delete_stream(&stream("order-1"), Exact(1))
        .await
        .unwrap();
    let (meta_revision, _) = store
        .stream_metadata(&stream("order-1"))
        .await
        .unwrap()
        .unwrap();
    let head_before = head(&*store);
    let result = store
        .append_multi(vec![
            write("order-1", NoStream, events("Placed", 2, 1)),
            write("cart-1", StreamExists, events("Closed", 0, 1)),
        ])
        .await;
    assert_conflict(result, "cart-1", StreamExists, Missing);
    assert_eq!(head(&*store), head_before);
    assert_not_found(&*store, "order-1").await;
    let (after, metadata) = store
        .stream_metadata(&stream("order-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, meta_revision, "no metadata record written");
    assert!(metadata.is_soft_deleted());
}
