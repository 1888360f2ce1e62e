//! Stream metadata: max-count, max-age (with a manual clock), truncate-before, custom JSON,
//! the `$$<stream>` revision, and expected revisions on the metadata stream.

use std::time::Duration;

use annals_core::CurrentRevision::{Current, NoStream as Missing};
use annals_core::ExpectedRevision::{Any, Exact, NoStream, StreamExists};
use annals_core::metadata::Acl;
use annals_core::{
    EventAppender, EventReader, Filter, ReadAllOptions, ReadStreamOptions, StreamMetadata,
};
use serde_json::json;

use crate::Backend;
use crate::support::*;

async fn set<S: annals_core::EventStore + ?Sized>(
    store: &S,
    name: &str,
    metadata: StreamMetadata,
) -> annals_core::AppendResult {
    store
        .set_stream_metadata(&stream(name), Any, metadata)
        .await
        .unwrap()
}

fn max_count(n: u64) -> StreamMetadata {
    StreamMetadata {
        max_count: Some(n),
        ..StreamMetadata::default()
    }
}

/// Only the last `max_count` events are visible, in both directions; the window moves with
/// new appends.
pub async fn max_count_keeps_the_last_events<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 5)).await;
    set(&*store, "order-1", max_count(2)).await;
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![3, 4]);
    let backward = read_with(&*store, "order-1", ReadStreamOptions::backward()).await;
    assert_eq!(revisions(&backward), vec![4, 3]);
    let from_0 = ReadStreamOptions::forward().from_revision(0).limit(1);
    assert_eq!(
        revisions(&read_with(&*store, "order-1", from_0).await),
        vec![3]
    );
    let below = ReadStreamOptions::backward().from_revision(2);
    assert!(read_with(&*store, "order-1", below).await.is_empty());
    append_ok(&*store, "order-1", Exact(4), events("Step", 5, 1)).await;
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![4, 5]);
    // Expected revisions still see the real last revision.
    let result = store
        .append(&stream("order-1"), Exact(3), events("Step", 6, 1))
        .await;
    assert_conflict(result, "order-1", Exact(3), Current(5));
    // Raising the limit shows the older events again.
    set(&*store, "order-1", max_count(10)).await;
    assert_eq!(
        revisions(&read_ok(&*store, "order-1").await),
        vec![0, 1, 2, 3, 4, 5]
    );
}

/// Events older than `max_age` (by the store's clock) are hidden; the newest may all be
/// hidden, leaving an empty (not missing) stream.
pub async fn max_age_hides_old_events<B: Backend>(backend: &B) {
    let (clock, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 2)).await;
    clock.advance(Duration::from_secs(30));
    append_ok(&*store, "order-1", Exact(1), events("Step", 2, 1)).await;
    let metadata = StreamMetadata {
        max_age: Some(Duration::from_secs(60)),
        ..StreamMetadata::default()
    };
    set(&*store, "order-1", metadata).await;
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![0, 1, 2]);
    // Now = start + 75 s: the events of start + 0 s are 75 s old, the one of 30 s is 45 s old.
    clock.advance(Duration::from_secs(45));
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![2]);
    let backward = read_with(&*store, "order-1", ReadStreamOptions::backward()).await;
    assert_eq!(revisions(&backward), vec![2]);
    let in_all: Vec<_> = read_all(&*store)
        .await
        .into_iter()
        .filter(|e| e.stream.as_str() == "order-1")
        .map(|e| e.revision)
        .collect();
    assert_eq!(in_all, vec![2]);
    clock.advance(Duration::from_secs(20));
    assert!(read_ok(&*store, "order-1").await.is_empty());
    append_ok(&*store, "order-1", Exact(2), events("Step", 3, 1)).await;
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![3]);
}

/// Events below `truncate_before` are hidden.
pub async fn truncate_before_hides_earlier_revisions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 5)).await;
    let truncate = |tb| StreamMetadata {
        truncate_before: Some(tb),
        ..StreamMetadata::default()
    };
    set(&*store, "order-1", truncate(3)).await;
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![3, 4]);
    let backward = read_with(&*store, "order-1", ReadStreamOptions::backward()).await;
    assert_eq!(revisions(&backward), vec![4, 3]);
    let from_1 = ReadStreamOptions::forward().from_revision(1).limit(1);
    assert_eq!(
        revisions(&read_with(&*store, "order-1", from_1).await),
        vec![3]
    );
    // Truncating past the end hides everything, and later events show.
    set(&*store, "order-1", truncate(6)).await;
    assert!(read_ok(&*store, "order-1").await.is_empty());
    append_ok(&*store, "order-1", Exact(4), events("Step", 5, 2)).await;
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![6]);
    // max_count and truncate_before combine: the stricter wins.
    let both = StreamMetadata {
        max_count: Some(3),
        truncate_before: Some(5),
        ..StreamMetadata::default()
    };
    set(&*store, "order-1", both).await;
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![5, 6]);
}

/// Every field, including custom keys and ACLs, comes back from `stream_metadata` as set,
/// and the metadata stream holds it as a `$metadata` JSON event.
pub async fn custom_json_round_trips<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 1)).await;
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), json!("billing"));
    custom.insert(
        "limits".into(),
        json!({"daily": [1, 2.5, null], "on": true}),
    );
    custom.insert("ünïcode".into(), json!("✓"));
    let metadata = StreamMetadata {
        max_count: Some(100),
        max_age: Some(Duration::from_secs(86_400)),
        truncate_before: None,
        cache_control: Some(Duration::from_secs(30)),
        acl: Some(Acl {
            read: Some(vec!["$all".into()]),
            write: Some(vec!["ops".into(), "admins".into()]),
            ..Acl::default()
        }),
        custom,
    };
    set(&*store, "order-1", metadata.clone()).await;
    let got = store.stream_metadata(&stream("order-1")).await.unwrap();
    assert_eq!(got, Some((0, metadata.clone())));
    let raw = read_ok(&*store, "$$order-1").await;
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].event.event_type.as_str(), "$metadata");
    assert_eq!(raw[0].event.stream.as_str(), "$$order-1");
    let value: serde_json::Value = serde_json::from_slice(&raw[0].event.data).unwrap();
    assert_eq!(value["owner"], json!("billing"));
    assert_eq!(value["$maxCount"], json!(100));
    assert_eq!(value["$maxAge"], json!(86_400));
    assert_eq!(StreamMetadata::from_json(value).unwrap(), metadata);
}

/// `stream_metadata` reports the `$$` revision; `set_stream_metadata` checks its expectation
/// against the `$$` stream, not the stream itself.
pub async fn metadata_revision_and_expected_revision<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 3)).await;
    let target = stream("order-1");
    assert_eq!(store.stream_metadata(&target).await.unwrap(), None);
    let result = store
        .set_stream_metadata(&target, StreamExists, max_count(5))
        .await;
    assert_conflict(result, "$$order-1", StreamExists, Missing);
    let result = store
        .set_stream_metadata(&target, Exact(2), max_count(5))
        .await;
    assert_conflict(result, "$$order-1", Exact(2), Missing);
    let first = store
        .set_stream_metadata(&target, NoStream, max_count(5))
        .await
        .unwrap();
    assert_result::<B>(&first, Current(0), Some((3, 3)));
    assert_eq!(
        store.stream_metadata(&target).await.unwrap(),
        Some((0, max_count(5)))
    );
    let result = store
        .set_stream_metadata(&target, NoStream, max_count(6))
        .await;
    assert_conflict(result, "$$order-1", NoStream, Current(0));
    let second = store
        .set_stream_metadata(&target, Exact(0), max_count(6))
        .await
        .unwrap();
    assert_result::<B>(&second, Current(1), Some((4, 4)));
    let result = store
        .set_stream_metadata(&target, Exact(0), max_count(7))
        .await;
    assert_conflict(result, "$$order-1", Exact(0), Current(1));
    assert_eq!(
        store.stream_metadata(&target).await.unwrap(),
        Some((1, max_count(6)))
    );
    // The stream's own revision is untouched by metadata writes.
    let result = append_ok(&*store, "order-1", Exact(2), events("Step", 3, 1)).await;
    assert_result::<B>(&result, Current(3), Some((5, 5)));
    let meta_events = read_ok(&*store, "$$order-1").await;
    assert_eq!(revisions(&meta_events), vec![0, 1]);
}

/// Metadata set before the stream exists applies once it is written.
pub async fn metadata_before_the_stream_exists<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    set(&*store, "order-1", max_count(1)).await;
    assert_not_found(&*store, "order-1").await;
    let result = append_ok(&*store, "order-1", NoStream, events("Step", 0, 3)).await;
    assert_result::<B>(&result, Current(2), Some((1, 3)));
    assert_eq!(revisions(&read_ok(&*store, "order-1").await), vec![2]);
}

/// Metadata restrictions apply to `$all` too; metadata records themselves always show.
pub async fn metadata_restrictions_apply_to_all<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 4)).await;
    append_ok(&*store, "order-2", NoStream, events("Step", 0, 1)).await;
    set(&*store, "order-1", max_count(1)).await;
    let all = read_all(&*store).await;
    let got: Vec<_> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.revision))
        .collect();
    assert_eq!(got, [("order-1", 3), ("order-2", 0), ("$$order-1", 0)]);
    let slice = store
        .read_all(ReadAllOptions::backward().filter(Filter::exclude_system_events()))
        .await
        .unwrap();
    assert_eq!(
        places(&slice.events),
        [("order-2".to_owned(), 0), ("order-1".to_owned(), 3)]
    );
    let read = read_ok(&*store, "$ce-order").await;
    assert_eq!(link_revisions(&read), vec![3, 4]);
}
