//! Optimistic concurrency: every expectation (`Any`, `NoStream`, `StreamExists`, `Exact`)
//! against missing, existing, soft-deleted and tombstoned streams. A conflict carries the
//! expectation and the actual revision, and writes nothing.

use annals_core::CurrentRevision::{Current, NoStream as Missing};
use annals_core::ExpectedRevision::{Any, Exact, NoStream, StreamExists};
use annals_core::{EventAppender, EventStore};

use crate::Backend;
use crate::support::*;

/// A stream `name` with three events (revisions 0..=2).
async fn existing<S: EventStore + ?Sized>(store: &S, name: &str) {
    append_ok(store, name, NoStream, events("Created", 0, 3)).await;
}

/// Asserts that the store shows exactly `records` records in `$all` and `name` reads `count`
/// events (nothing was written by a failed request).
async fn assert_unchanged<S: EventStore + ?Sized>(
    store: &S,
    records: usize,
    name: &str,
    count: usize,
) {
    assert_eq!(read_all(store).await.len(), records, "records in $all");
    if count == 0 {
        assert_not_found(store, name).await;
    } else {
        assert_eq!(read_ok(store, name).await.len(), count, "events in {name}");
    }
}

/// `Any` on a missing stream creates it at revision 0.
pub async fn any_on_missing_stream_creates_it<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let new = events("Created", 0, 2);
    let want = new_ids(&new);
    let result = append_ok(&*store, "order-1", Any, new).await;
    assert_result::<B>(&result, Current(1), Some((0, 1)));
    let read = read_ok(&*store, "order-1").await;
    assert_eq!(ids(&read), want);
    assert_eq!(revisions(&read), vec![0, 1]);
}

/// `NoStream` on a missing stream creates it at revision 0.
pub async fn no_stream_on_missing_stream_creates_it<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let new = events("Created", 0, 3);
    let want = new_ids(&new);
    let result = append_ok(&*store, "order-1", NoStream, new).await;
    assert_result::<B>(&result, Current(2), Some((0, 2)));
    assert_eq!(result.next_expected(), Exact(2));
    let read = read_ok(&*store, "order-1").await;
    assert_eq!(ids(&read), want);
    assert_eq!(revisions(&read), vec![0, 1, 2]);
}

/// `StreamExists` on a missing stream conflicts with actual `NoStream`.
pub async fn stream_exists_on_missing_stream_conflicts<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let result = store
        .append(&stream("order-1"), StreamExists, events("Created", 0, 1))
        .await;
    assert_conflict(result, "order-1", StreamExists, Missing);
    assert_unchanged(&*store, 0, "order-1", 0).await;
}

/// `Exact(n)` on a missing stream conflicts with actual `NoStream`, for any `n`.
pub async fn exact_on_missing_stream_conflicts<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    for n in [0, 1, 7] {
        let result = store
            .append(&stream("order-1"), Exact(n), events("Created", 0, 1))
            .await;
        assert_conflict(result, "order-1", Exact(n), Missing);
    }
    assert_unchanged(&*store, 0, "order-1", 0).await;
}

/// `Any` on an existing stream appends after its last revision.
pub async fn any_on_existing_stream_appends<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    existing(&*store, "order-1").await;
    let result = append_ok(&*store, "order-1", Any, events("Paid", 3, 2)).await;
    assert_result::<B>(&result, Current(4), Some((3, 4)));
    assert_eq!(
        revisions(&read_ok(&*store, "order-1").await),
        vec![0, 1, 2, 3, 4]
    );
}

/// `NoStream` on an existing stream conflicts with its last revision.
pub async fn no_stream_on_existing_stream_conflicts<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    existing(&*store, "order-1").await;
    let result = store
        .append(&stream("order-1"), NoStream, events("Created", 9, 1))
        .await;
    assert_conflict(result, "order-1", NoStream, Current(2));
    assert_unchanged(&*store, 3, "order-1", 3).await;
}

/// `StreamExists` on an existing stream appends.
pub async fn stream_exists_on_existing_stream_appends<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    existing(&*store, "order-1").await;
    let result = append_ok(&*store, "order-1", StreamExists, events("Paid", 3, 1)).await;
    assert_result::<B>(&result, Current(3), Some((3, 3)));
    assert_eq!(read_ok(&*store, "order-1").await.len(), 4);
}

/// `Exact(n)` succeeds only when `n` is the stream's last revision.
pub async fn exact_on_existing_stream_checks_the_last_revision<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    existing(&*store, "order-1").await;
    for n in [0, 1, 3, 100] {
        let result = store
            .append(&stream("order-1"), Exact(n), events("Paid", 3, 1))
            .await;
        assert_conflict(result, "order-1", Exact(n), Current(2));
    }
    assert_unchanged(&*store, 3, "order-1", 3).await;
    let result = append_ok(&*store, "order-1", Exact(2), events("Paid", 3, 2)).await;
    assert_result::<B>(&result, Current(4), Some((3, 4)));
    // The same expectation again, with new events, is now stale.
    let result = store
        .append(&stream("order-1"), Exact(2), events("Paid", 5, 1))
        .await;
    assert_conflict(result, "order-1", Exact(2), Current(4));
    let result = append_ok(&*store, "order-1", Exact(4), events("Paid", 5, 1)).await;
    assert_result::<B>(&result, Current(5), Some((5, 5)));
}

/// A soft-deleted stream counts as missing: `Any` and `NoStream` recreate it with continuing
/// revisions; `StreamExists` and `Exact` conflict with actual `NoStream`.
pub async fn expectations_on_soft_deleted_stream<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    for name in ["a-1", "a-2", "a-3"] {
        existing(&*store, name).await;
        store.delete_stream(&stream(name), Exact(2)).await.unwrap();
    }
    // Records so far: 3 × (3 events + 1 metadata record) = 12.
    for expected in [StreamExists, Exact(2), Exact(0)] {
        let result = store
            .append(&stream("a-1"), expected, events("Again", 0, 1))
            .await;
        assert_conflict(result, "a-1", expected, Missing);
    }
    let all = read_all(&*store).await;
    let names: Vec<&str> = all.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(
        names,
        ["$$a-1", "$$a-2", "$$a-3"],
        "deleted events are hidden"
    );
    if B::GAP_FREE_POSITIONS {
        assert_eq!(head(&*store).0, 12);
    }
    // Recreation writes a metadata record (position 12), then the event (13).
    let result = append_ok(&*store, "a-1", Any, events("Again", 0, 1)).await;
    assert_result::<B>(&result, Current(3), Some((13, 13)));
    let result = append_ok(&*store, "a-2", NoStream, events("Again", 0, 2)).await;
    assert_result::<B>(&result, Current(4), Some((15, 16)));
    assert_eq!(revisions(&read_ok(&*store, "a-1").await), vec![3]);
    assert_eq!(revisions(&read_ok(&*store, "a-2").await), vec![3, 4]);
    assert_not_found(&*store, "a-3").await;
    // Once recreated, the stream exists again.
    let result = append_ok(&*store, "a-1", Exact(3), events("More", 0, 1)).await;
    assert_result::<B>(&result, Current(4), Some((17, 17)));
    let result = store
        .append(&stream("a-2"), NoStream, events("More", 0, 1))
        .await;
    assert_conflict(result, "a-2", NoStream, Current(4));
}

/// Every expectation against a tombstoned stream fails with `StreamDeleted`.
pub async fn expectations_on_tombstoned_stream<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    existing(&*store, "order-1").await;
    store
        .tombstone_stream(&stream("order-1"), Exact(2))
        .await
        .unwrap();
    let head_before = head(&*store);
    for expected in [Any, NoStream, StreamExists, Exact(2), Exact(3)] {
        let result = store
            .append(&stream("order-1"), expected, events("Again", 0, 1))
            .await;
        assert_append_deleted(result, "order-1");
    }
    assert_eq!(head(&*store), head_before, "nothing was written");
    assert_eq!(read_all(&*store).await.len(), 1, "only the tombstone shows");
}

/// An append of no events checks its expectation, returns the current revision without
/// positions and writes nothing.
pub async fn empty_appends_check_and_write_nothing<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let result = append_ok(&*store, "order-1", NoStream, vec![]).await;
    assert_result::<B>(&result, Missing, None);
    let result = append_ok(&*store, "order-1", Any, vec![]).await;
    assert_result::<B>(&result, Missing, None);
    assert_not_found(&*store, "order-1").await;
    assert_eq!(read_all(&*store).await.len(), 0);
    let result = store.append(&stream("order-1"), Exact(0), vec![]).await;
    assert_conflict(result, "order-1", Exact(0), Missing);

    existing(&*store, "order-1").await;
    let head_before = head(&*store);
    for expected in [Any, StreamExists, Exact(2)] {
        let result = append_ok(&*store, "order-1", expected, vec![]).await;
        assert_result::<B>(&result, Current(2), None);
    }
    let result = store.append(&stream("order-1"), NoStream, vec![]).await;
    assert_conflict(result, "order-1", NoStream, Current(2));
    assert_eq!(head(&*store), head_before);
    assert_unchanged(&*store, 3, "order-1", 3).await;
}

/// Soft delete and tombstone check their expectation against the stream.
pub async fn delete_and_tombstone_check_their_expectation<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    existing(&*store, "order-1").await;
    let target = stream("order-1");
    assert_conflict(
        store.delete_stream(&target, Exact(1)).await,
        "order-1",
        Exact(1),
        Current(2),
    );
    assert_conflict(
        store.delete_stream(&target, NoStream).await,
        "order-1",
        NoStream,
        Current(2),
    );
    assert_conflict(
        store.tombstone_stream(&target, Exact(3)).await,
        "order-1",
        Exact(3),
        Current(2),
    );
    assert_conflict(
        store
            .tombstone_stream(&stream("order-2"), StreamExists)
            .await,
        "order-2",
        StreamExists,
        Missing,
    );
    assert_unchanged(&*store, 3, "order-1", 3).await;
    assert_not_found(&*store, "order-2").await;

    // The delete writes the store's fourth record, revision 0 of `$$order-1`.
    let result = store.delete_stream(&target, StreamExists).await.unwrap();
    assert_result::<B>(&result, Current(0), Some((3, 3)));
    assert_not_found(&*store, "order-1").await;
    // A soft-deleted stream is missing for the next expectation too.
    assert_conflict(
        store.tombstone_stream(&target, Exact(2)).await,
        "order-1",
        Exact(2),
        Missing,
    );
    // The tombstone continues the stream's revisions.
    let result = store.tombstone_stream(&target, NoStream).await.unwrap();
    assert_result::<B>(&result, Current(3), Some((4, 4)));
    assert_deleted(&*store, "order-1").await;
}
