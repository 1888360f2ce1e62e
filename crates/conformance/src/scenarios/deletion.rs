//! Soft delete (the stream reads as not found until written again; revisions continue, old
//! events stay hidden) and tombstone (the name is dead forever; reads and writes fail with
//! `StreamDeleted`; the tombstone record shows in `$all`).

use annals_core::CurrentRevision::Current;
use annals_core::ExpectedRevision::{Any, Exact, NoStream, StreamExists};
use annals_core::metadata::{SOFT_DELETED_TRUNCATE_BEFORE, TOMBSTONE_EVENT_TYPE};
use annals_core::{
    AppendError, EventAppender, EventReader, ReadAllOptions, ReadStreamOptions, StreamMetadata,
};
use serde_json::json;

use crate::Backend;
use crate::support::*;

/// A soft-deleted stream reads as not found in both directions; other streams are
/// untouched; its events disappear from `$all` and its category.
pub async fn soft_delete_reads_not_found<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 3)).await;
    append_ok(&*store, "order-2", NoStream, events("Step", 0, 1)).await;
    let result = store
        .delete_stream(&stream("order-1"), Exact(2))
        .await
        .unwrap();
    assert_result::<B>(&result, Current(0), Some((4, 4)));
    assert_not_found(&*store, "order-1").await;
    let backward = store
        .read_stream(&stream("order-1"), ReadStreamOptions::backward())
        .await;
    assert!(
        matches!(backward, Err(annals_core::ReadError::StreamNotFound { .. })),
        "{backward:?}"
    );
    assert_eq!(revisions(&read_ok(&*store, "order-2").await), vec![0]);
    let all = read_all(&*store).await;
    let got: Vec<_> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.revision))
        .collect();
    assert_eq!(got, [("order-2", 0), ("$$order-1", 0)]);
    assert_eq!(
        places(&read_ok(&*store, "$ce-order").await),
        [("order-2".to_owned(), 0)]
    );
}

/// Writing to a soft-deleted stream recreates it: revisions continue after the last one
/// before the delete, and the old events stay hidden everywhere.
pub async fn soft_deleted_stream_is_recreated_with_continuing_revisions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let old = events("Step", 0, 3);
    append_ok(&*store, "order-1", NoStream, old.clone()).await;
    store
        .delete_stream(&stream("order-1"), StreamExists)
        .await
        .unwrap();
    // Position 4 holds the metadata record that revives the stream, 5 and 6 the events.
    let new = events("Again", 3, 2);
    let result = append_ok(&*store, "order-1", NoStream, new.clone()).await;
    assert_result::<B>(&result, Current(4), Some((5, 6)));
    let read = read_ok(&*store, "order-1").await;
    assert_eq!(revisions(&read), vec![3, 4]);
    assert_eq!(ids(&read), new_ids(&new));
    let backward = read_with(&*store, "order-1", ReadStreamOptions::backward()).await;
    assert_eq!(revisions(&backward), vec![4, 3]);
    let from_0 = ReadStreamOptions::forward().from_revision(0);
    assert_eq!(
        revisions(&read_with(&*store, "order-1", from_0).await),
        vec![3, 4]
    );
    let all = read_all(&*store).await;
    let in_all: Vec<_> = all
        .iter()
        .filter(|e| e.stream.as_str() == "order-1")
        .map(|e| e.id)
        .collect();
    assert_eq!(in_all, new_ids(&new), "old events hidden from $all");
    let in_category = read_ok(&*store, "$ce-order").await;
    assert_eq!(ids(&in_category), new_ids(&new));
    let (_, metadata) = store
        .stream_metadata(&stream("order-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(metadata.truncate_before, Some(3));
    // Deleted and recreated again.
    store
        .delete_stream(&stream("order-1"), Exact(4))
        .await
        .unwrap();
    assert_not_found(&*store, "order-1").await;
    let result = append_ok(&*store, "order-1", Any, events("Third", 5, 1)).await;
    assert_eq!(result.current_revision, Current(5));
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![5]);
}

/// A soft delete keeps the stream's other metadata, through deletion and recreation.
pub async fn soft_delete_keeps_other_metadata<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 2)).await;
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), json!("billing"));
    let metadata = StreamMetadata {
        max_count: Some(5),
        custom,
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream("order-1"), Any, metadata.clone())
        .await
        .unwrap();
    store.delete_stream(&stream("order-1"), Any).await.unwrap();
    let (revision, deleted) = store
        .stream_metadata(&stream("order-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision, 1);
    assert!(deleted.is_soft_deleted());
    assert_eq!(
        deleted,
        StreamMetadata {
            truncate_before: Some(SOFT_DELETED_TRUNCATE_BEFORE),
            ..metadata.clone()
        }
    );
    append_ok(&*store, "order-1", Any, events("Again", 2, 1)).await;
    let (revision, revived) = store
        .stream_metadata(&stream("order-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision, 2);
    assert_eq!(
        revived,
        StreamMetadata {
            truncate_before: Some(2),
            ..metadata
        }
    );
}

/// A tombstoned stream reads as `StreamDeleted` in both directions, and so does its
/// category's view of it (its events are gone from `$ce-`).
pub async fn tombstone_reads_stream_deleted<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 3)).await;
    append_ok(&*store, "order-2", NoStream, events("Step", 0, 1)).await;
    let result = store
        .tombstone_stream(&stream("order-1"), Exact(2))
        .await
        .unwrap();
    assert_result::<B>(&result, Current(3), Some((4, 4)));
    assert_deleted(&*store, "order-1").await;
    let backward = store
        .read_stream(&stream("order-1"), ReadStreamOptions::backward())
        .await;
    assert!(
        matches!(backward, Err(annals_core::ReadError::StreamDeleted { .. })),
        "{backward:?}"
    );
    assert_eq!(
        places(&read_ok(&*store, "$ce-order").await),
        [("order-2".to_owned(), 0)]
    );
    assert_eq!(
        places(&read_ok(&*store, "$et-Step").await),
        [("order-2".to_owned(), 0)]
    );
}

/// Appends, deletes, tombstones and metadata writes to a tombstoned stream all fail with
/// `StreamDeleted` and write nothing.
pub async fn tombstone_refuses_every_write<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 1)).await;
    store
        .tombstone_stream(&stream("order-1"), Any)
        .await
        .unwrap();
    let head_before = head(&*store);
    let target = stream("order-1");
    assert_append_deleted(
        store.append(&target, Any, events("Step", 1, 1)).await,
        "order-1",
    );
    assert_append_deleted(store.delete_stream(&target, Any).await, "order-1");
    assert_append_deleted(store.tombstone_stream(&target, Any).await, "order-1");
    assert_append_deleted(
        store
            .set_stream_metadata(&target, Any, StreamMetadata::default())
            .await,
        "order-1",
    );
    let result = store
        .append_multi(vec![
            annals_core::StreamWrite {
                stream: stream("order-2"),
                expected: NoStream,
                events: events("Step", 0, 1),
            },
            annals_core::StreamWrite {
                stream: target.clone(),
                expected: Any,
                events: vec![],
            },
        ])
        .await;
    assert!(
        matches!(result, Err(AppendError::StreamDeleted { .. })),
        "{result:?}"
    );
    assert_eq!(head(&*store), head_before);
    assert_not_found(&*store, "order-2").await;
}

/// The tombstone itself is a record of the stream, visible in `$all` (and only there).
pub async fn tombstone_record_is_visible_in_all<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 2)).await;
    store
        .tombstone_stream(&stream("order-1"), Exact(1))
        .await
        .unwrap();
    let all = read_all(&*store).await;
    assert_eq!(all.len(), 1);
    let tombstone = &all[0];
    assert_eq!(tombstone.stream.as_str(), "order-1");
    assert_eq!(tombstone.revision, 2);
    assert_eq!(tombstone.event_type.as_str(), TOMBSTONE_EVENT_TYPE);
    if B::GAP_FREE_POSITIONS {
        assert_eq!(tombstone.position.0, 2);
    }
    let backward = store.read_all(ReadAllOptions::backward()).await.unwrap();
    assert_eq!(backward.events.len(), 1);
    assert_eq!(backward.events[0].event, *tombstone);
}

/// A stream that never existed can be tombstoned; the name is dead from then on.
pub async fn tombstone_of_missing_stream<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let result = store
        .tombstone_stream(&stream("order-1"), NoStream)
        .await
        .unwrap();
    assert_result::<B>(&result, Current(0), Some((0, 0)));
    assert_deleted(&*store, "order-1").await;
    assert_append_deleted(
        store
            .append(&stream("order-1"), NoStream, events("Step", 0, 1))
            .await,
        "order-1",
    );
}
