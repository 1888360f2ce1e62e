//! Idempotent appends: re-sending the same event ids at the same expected revision returns
//! the first result and writes nothing, also after a reopen.

use annals_core::CurrentRevision::{Current, NoStream as Missing};
use annals_core::ExpectedRevision::{Any, Exact, NoStream};
use annals_core::{AppendResult, EventAppender, EventStore, NewEvent, StreamWrite};

use crate::Backend;
use crate::support::*;

/// Re-sends `events` to `name` at `expected`, asserting the original result comes back and
/// neither the head nor the stream moved.
async fn assert_resend<S: EventStore + ?Sized>(
    store: &S,
    name: &str,
    expected: annals_core::ExpectedRevision,
    events: Vec<NewEvent>,
    original: AppendResult,
) {
    let head_before = head(store);
    let stream_before = read_ok(store, name).await;
    let again = append_ok(store, name, expected, events).await;
    assert_eq!(again, original, "a re-send returns the first result");
    assert_eq!(head(store), head_before, "a re-send writes nothing");
    assert_eq!(read_ok(store, name).await, stream_before);
}

/// `NoStream` re-sends, right away and after the stream moved on.
pub async fn no_stream_resend_returns_the_first_result<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let first = events("Placed", 0, 2);
    let original = append_ok(&*store, "order-1", NoStream, first.clone()).await;
    assert_result::<B>(&original, Current(1), Some((0, 1)));
    assert_resend(&*store, "order-1", NoStream, first.clone(), original).await;
    append_ok(&*store, "order-1", Exact(1), events("Paid", 2, 1)).await;
    assert_resend(&*store, "order-1", NoStream, first, original).await;
    assert_eq!(read_ok(&*store, "order-1").await.len(), 3);
}

/// `Exact` re-sends, right away and after the stream moved on.
pub async fn exact_resend_returns_the_first_result<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Placed", 0, 1)).await;
    let second = events("Paid", 1, 3);
    let original = append_ok(&*store, "order-1", Exact(0), second.clone()).await;
    assert_result::<B>(&original, Current(3), Some((1, 3)));
    assert_resend(&*store, "order-1", Exact(0), second.clone(), original).await;
    append_ok(&*store, "order-1", Exact(3), events("Shipped", 4, 2)).await;
    assert_resend(&*store, "order-1", Exact(0), second, original).await;
    assert_eq!(
        revisions(&read_ok(&*store, "order-1").await),
        vec![0, 1, 2, 3, 4, 5]
    );
}

/// An `Any` re-send of the stream's most recent append returns its result.
pub async fn any_resend_returns_the_first_result<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", Any, events("Placed", 0, 2)).await;
    append_ok(&*store, "order-2", Any, events("Placed", 0, 1)).await;
    let latest = events("Paid", 2, 2);
    let original = append_ok(&*store, "order-1", Any, latest.clone()).await;
    assert_result::<B>(&original, Current(3), Some((3, 4)));
    assert_resend(&*store, "order-1", Any, latest, original).await;
    let ids_read = ids(&read_ok(&*store, "order-1").await);
    let mut unique = ids_read.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids_read.len(), "no id is stored twice");
}

/// A re-sent multi-stream append returns every stream's first result.
pub async fn multi_stream_resend_returns_the_first_results<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "cart-1", NoStream, events("Opened", 0, 1)).await;
    let writes = vec![
        StreamWrite {
            stream: stream("order-1"),
            expected: NoStream,
            events: events("Placed", 0, 2),
        },
        StreamWrite {
            stream: stream("cart-1"),
            expected: Exact(0),
            events: events("Closed", 1, 1),
        },
    ];
    let original = store.append_multi(writes.clone()).await.unwrap();
    assert_result::<B>(&original[0], Current(1), Some((1, 2)));
    assert_result::<B>(&original[1], Current(1), Some((3, 3)));
    let head_before = head(&*store);
    let again = store.append_multi(writes).await.unwrap();
    assert_eq!(again, original);
    assert_eq!(head(&*store), head_before);
    assert_eq!(read_all(&*store).await.len(), 4);
}

/// Different ids at the same stale expectation are a conflict, not a re-send; so are the
/// same ids sent after a different first event.
pub async fn resend_with_other_ids_still_conflicts<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let first = events("Placed", 0, 2);
    append_ok(&*store, "order-1", NoStream, first.clone()).await;
    let result = store
        .append(&stream("order-1"), NoStream, events("Placed", 0, 2))
        .await;
    assert_conflict(result, "order-1", NoStream, Current(1));
    // The first id only matches at revision 0, not at revision 1.
    let result = store
        .append(&stream("order-1"), Exact(0), vec![first[0].clone()])
        .await;
    assert_conflict(result, "order-1", Exact(0), Current(1));
    // Reordered ids are not the same append.
    let reordered = vec![first[1].clone(), first[0].clone()];
    let result = store.append(&stream("order-1"), NoStream, reordered).await;
    assert_conflict(result, "order-1", NoStream, Current(1));
    let result = store
        .append(&stream("order-2"), Exact(0), first.clone())
        .await;
    assert_conflict(result, "order-2", Exact(0), Missing);
    assert_eq!(read_all(&*store).await.len(), 2);
}

/// Re-sends after a reopen still return the first result (backends that persist).
pub async fn resend_after_reopen_returns_the_first_result<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let first = events("Placed", 0, 2);
    let second = events("Paid", 2, 1);
    let latest = events("Shipped", 3, 1);
    let r1 = append_ok(&*store, "order-1", NoStream, first.clone()).await;
    let r2 = append_ok(&*store, "order-1", Exact(1), second.clone()).await;
    let r3 = append_ok(&*store, "order-1", Any, latest.clone()).await;
    let Some(store) = backend.reopen(store).await else {
        return;
    };
    assert_resend(&*store, "order-1", NoStream, first, r1).await;
    assert_resend(&*store, "order-1", Exact(1), second, r2).await;
    assert_resend(&*store, "order-1", Any, latest, r3).await;
    assert_eq!(
        revisions(&read_ok(&*store, "order-1").await),
        vec![0, 1, 2, 3]
    );
}
