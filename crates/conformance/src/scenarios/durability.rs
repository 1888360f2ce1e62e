//! Data survives closing and reopening the store. Each scenario returns early, passing, when
//! the backend keeps nothing across a close (`reopen` returns `None`).

use std::time::Duration;

use annals_core::CurrentRevision::{Current, NoStream as Missing};
use annals_core::ExpectedRevision::{Any, Exact, NoStream};
use annals_core::{
    EventAppender, EventReader, Position, ReadAllOptions, RecordedEvent, StreamMetadata,
    StreamWrite,
};

use crate::Backend;
use crate::support::*;

/// Everything a read can show, to compare before and after a reopen.
async fn snapshot<S: annals_core::EventStore + ?Sized>(store: &S, streams: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let all = store.read_all(ReadAllOptions::forward()).await.unwrap();
    out.push(format!("$all {:?}", all.events));
    for name in streams {
        let read = read(store, name).await;
        out.push(format!("{name} {read:?}"));
        let metadata = store.stream_metadata(&stream(name)).await;
        out.push(format!("$${name} {metadata:?}"));
    }
    out.push(format!("head {}", head(store)));
    out
}

/// Events of single and multi-stream appends read back identically after a reopen, in
/// streams, virtual streams and `$all`.
pub async fn events_survive_reopen<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Placed", 0, 3)).await;
    store
        .append_multi(vec![
            StreamWrite {
                stream: stream("order-2"),
                expected: NoStream,
                events: events("Placed", 3, 2),
            },
            StreamWrite {
                stream: stream("cart-1"),
                expected: Any,
                events: vec![annals_core::NewEvent::binary(ty("Blob"), vec![0u8, 255, 7])],
            },
        ])
        .await
        .unwrap();
    let names = ["order-1", "order-2", "cart-1", "$ce-order", "$et-Placed"];
    let before = snapshot(&*store, &names).await;
    let all_before = read_all(&*store).await;
    let Some(store) = backend.reopen(store).await else {
        return;
    };
    assert_eq!(snapshot(&*store, &names).await, before);
    let all_after: Vec<RecordedEvent> = read_all(&*store).await;
    assert_eq!(all_after, all_before);
    assert_eq!(all_after.len(), 6);
}

/// Metadata (with `max_age` judged by the same clock), soft deletes and tombstones survive.
pub async fn metadata_and_deletes_survive_reopen<B: Backend>(backend: &B) {
    let (clock, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 5)).await;
    append_ok(&*store, "order-2", NoStream, events("Step", 0, 2)).await;
    append_ok(&*store, "order-3", NoStream, events("Step", 0, 2)).await;
    append_ok(&*store, "order-4", NoStream, events("Step", 0, 1)).await;
    let metadata = StreamMetadata {
        max_count: Some(2),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream("order-1"), NoStream, metadata.clone())
        .await
        .unwrap();
    store
        .delete_stream(&stream("order-2"), Exact(1))
        .await
        .unwrap();
    store
        .tombstone_stream(&stream("order-3"), Exact(1))
        .await
        .unwrap();
    let aging = StreamMetadata {
        max_age: Some(Duration::from_secs(10)),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream("order-4"), Any, aging)
        .await
        .unwrap();
    let names = ["order-1", "order-2", "order-3", "order-4", "$ce-order"];
    let before = snapshot(&*store, &names).await;
    let Some(store) = backend.reopen(store).await else {
        return;
    };
    assert_eq!(snapshot(&*store, &names).await, before);
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![3, 4]);
    assert_eq!(
        store.stream_metadata(&stream("order-1")).await.unwrap(),
        Some((0, metadata))
    );
    assert_not_found(&*store, "order-2").await;
    assert_deleted(&*store, "order-3").await;
    assert_append_deleted(
        store
            .append(&stream("order-3"), Any, events("Step", 9, 1))
            .await,
        "order-3",
    );
    assert_eq!(read_ok(&*store, "order-4").await.len(), 1);
    clock.advance(Duration::from_secs(11));
    assert!(
        read_ok(&*store, "order-4").await.is_empty(),
        "max_age uses the clock"
    );
    // The soft-deleted stream recreates with continuing revisions.
    let result = append_ok(&*store, "order-2", NoStream, events("Step", 2, 1)).await;
    assert_eq!(result.current_revision, Current(2));
    assert_eq!(revisions(&read_ok(&*store, "order-2").await), vec![2]);
}

/// Expected revisions, idempotency and positions continue where they were.
pub async fn revisions_and_positions_continue_after_reopen<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 3)).await;
    let head_before = head(&*store);
    let last_before = read_all(&*store).await.last().unwrap().position;
    let Some(store) = backend.reopen(store).await else {
        return;
    };
    assert_eq!(head(&*store), head_before, "the head is restored");
    assert_conflict(
        store
            .append(&stream("order-1"), Exact(1), events("Step", 3, 1))
            .await,
        "order-1",
        Exact(1),
        Current(2),
    );
    assert_conflict(
        store
            .append(&stream("order-2"), Exact(0), events("Step", 0, 1))
            .await,
        "order-2",
        Exact(0),
        Missing,
    );
    let result = append_ok(&*store, "order-1", Exact(2), events("Step", 3, 2)).await;
    assert_eq!(result.current_revision, Current(4));
    let (first, _) = result.positions.unwrap();
    assert!(first > last_before);
    if B::GAP_FREE_POSITIONS {
        assert_eq!(first, Position(3));
    }
    assert_eq!(
        revisions(&read_ok(&*store, "order-1").await),
        vec![0, 1, 2, 3, 4]
    );
    let positions: Vec<u64> = read_all(&*store)
        .await
        .iter()
        .map(|e| e.position.0)
        .collect();
    assert_positions::<B>(&positions, 0);
}

/// Two reopens in a row, with writes in between, keep everything.
pub async fn reopen_twice<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 2)).await;
    let Some(store) = backend.reopen(store).await else {
        return;
    };
    append_ok(&*store, "order-1", Exact(1), events("Step", 2, 2)).await;
    append_ok(&*store, "order-2", NoStream, events("Step", 0, 1)).await;
    let before = snapshot(&*store, &["order-1", "order-2", "$ce-order"]).await;
    let Some(store) = backend.reopen(store).await else {
        panic!("the backend reopened once, then returned None");
    };
    assert_eq!(
        snapshot(&*store, &["order-1", "order-2", "$ce-order"]).await,
        before
    );
    assert_eq!(
        revisions(&read_ok(&*store, "order-1").await),
        vec![0, 1, 2, 3]
    );
    assert_eq!(read_all(&*store).await.len(), 5);
}
