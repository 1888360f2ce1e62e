//! Stream reads: directions, starting revisions, limits, the end of the stream, missing
//! streams, and every field of an event coming back as written.

use annals_core::ExpectedRevision::{Any, NoStream};
use annals_core::read::StreamFrom;
use annals_core::{
    ContentType, Direction, EventReader, NewEvent, ReadError, ReadStreamOptions, Timestamp,
};
use bytes::Bytes;

use crate::Backend;
use crate::support::*;

/// `order-1` with five events (revisions 0..=4), `{"n": 0}` … `{"n": 4}`.
async fn five<B: Backend>(backend: &B) -> std::sync::Arc<B::Store> {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 5)).await;
    store
}

fn backward_from(revision: u64) -> ReadStreamOptions {
    ReadStreamOptions::backward().from_revision(revision)
}

/// A forward read returns each event with its stream, revision, position, id, type,
/// content type, data, metadata and commit time as written.
pub async fn forward_read_returns_every_field<B: Backend>(backend: &B) {
    let (clock, store) = open(backend).await;
    let first = event("OrderPlaced", 0).with_metadata(r#"{"correlation":"c-1"}"#);
    append_ok(&*store, "order-1", NoStream, vec![first.clone()]).await;
    clock.advance(std::time::Duration::from_secs(5));
    let second = NewEvent::json(ty("OrderPaid"), r#"{"amount": 12.5, "items": [1, 2]}"#);
    append_ok(&*store, "order-1", Any, vec![second.clone()]).await;
    let read = read_ok(&*store, "order-1").await;
    assert_eq!(read.len(), 2);
    for (i, (got, sent)) in read.iter().zip([&first, &second]).enumerate() {
        let e = &got.event;
        assert_eq!(e.stream.as_str(), "order-1");
        assert_eq!(e.revision, i as u64);
        assert_eq!(e.id, sent.id);
        assert_eq!(e.event_type, sent.event_type);
        assert_eq!(e.content_type, ContentType::Json);
        assert_eq!(e.data, sent.data);
        assert_eq!(e.metadata, sent.metadata);
        assert_eq!(got.link, None, "a stream read has no link");
        assert_eq!(got.read_revision(), i as u64);
    }
    assert_eq!(read[0].event.created, START);
    assert_eq!(
        read[1].event.created,
        Timestamp(START.0 + 5_000_000),
        "commit time from the store's clock"
    );
    assert_positions::<B>(&positions(&read), 0);
}

/// Backward reads from the end and from a revision, with and without limits.
pub async fn backward_reads_and_limits<B: Backend>(backend: &B) {
    let store = five(backend).await;
    let read = |options| read_with(&*store, "order-1", options);
    assert_eq!(
        revisions(&read(ReadStreamOptions::backward()).await),
        vec![4, 3, 2, 1, 0]
    );
    assert_eq!(
        revisions(&read(ReadStreamOptions::backward().limit(2)).await),
        vec![4, 3]
    );
    assert_eq!(revisions(&read(backward_from(2)).await), vec![2, 1, 0]);
    assert_eq!(
        revisions(&read(backward_from(3).limit(2)).await),
        vec![3, 2]
    );
    assert_eq!(revisions(&read(backward_from(0)).await), vec![0]);
    let from_start = ReadStreamOptions {
        direction: Direction::Backward,
        from: StreamFrom::Start,
        limit: u64::MAX,
    };
    assert_eq!(revisions(&read(from_start).await), vec![0]);
    assert_eq!(
        revisions(&read(ReadStreamOptions::forward().limit(3)).await),
        vec![0, 1, 2]
    );
    assert_eq!(
        revisions(&read(ReadStreamOptions::forward().limit(1)).await),
        vec![0]
    );
    assert!(read(ReadStreamOptions::forward().limit(0)).await.is_empty());
    assert!(
        read(ReadStreamOptions::backward().limit(0))
            .await
            .is_empty()
    );
}

/// Forward reads from a revision, with and without limits; paging concatenates.
pub async fn forward_reads_from_a_revision<B: Backend>(backend: &B) {
    let store = five(backend).await;
    let read = |options| read_with(&*store, "order-1", options);
    let forward = ReadStreamOptions::forward();
    assert_eq!(
        revisions(&read(forward.from_revision(2)).await),
        vec![2, 3, 4]
    );
    assert_eq!(
        revisions(&read(forward.from_revision(1).limit(2)).await),
        vec![1, 2]
    );
    assert_eq!(revisions(&read(forward.from_revision(4)).await), vec![4]);
    let data: Vec<Bytes> = read(forward.from_revision(3))
        .await
        .into_iter()
        .map(|e| e.event.data)
        .collect();
    assert_eq!(data, [Bytes::from(r#"{"n":3}"#), Bytes::from(r#"{"n":4}"#)]);
    let mut paged = Vec::new();
    let mut next = 0;
    loop {
        let page = read(forward.from_revision(next).limit(2)).await;
        let Some(last) = page.last() else { break };
        next = last.read_revision() + 1;
        paged.extend(revisions(&page));
    }
    assert_eq!(paged, vec![0, 1, 2, 3, 4]);
}

/// Reads past the end return nothing (not an error); backward from past the end starts at
/// the last event.
pub async fn reads_beyond_the_end_are_empty<B: Backend>(backend: &B) {
    let store = five(backend).await;
    let read = |options| read_with(&*store, "order-1", options);
    assert!(
        read(ReadStreamOptions::forward().from_revision(5))
            .await
            .is_empty()
    );
    assert!(
        read(ReadStreamOptions::forward().from_revision(1000))
            .await
            .is_empty()
    );
    let end = ReadStreamOptions {
        from: StreamFrom::End,
        ..ReadStreamOptions::forward()
    };
    assert!(read(end).await.is_empty());
    assert_eq!(
        revisions(&read(backward_from(1000)).await),
        vec![4, 3, 2, 1, 0]
    );
    assert_eq!(
        revisions(&read(backward_from(u64::MAX).limit(1)).await),
        vec![4]
    );
}

/// A stream that was never written is not found, in both directions; so is its metadata
/// stream when no metadata was set.
pub async fn missing_streams_are_not_found<B: Backend>(backend: &B) {
    let store = five(backend).await;
    assert_not_found(&*store, "order-2").await;
    assert_not_found(&*store, "$$order-1").await;
    assert_not_found(&*store, "$$order-2").await;
    let result = store
        .read_stream(&stream("order-2"), ReadStreamOptions::backward())
        .await;
    match result {
        Err(ReadError::StreamNotFound { stream }) => assert_eq!(stream.as_str(), "order-2"),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
    assert_eq!(
        store.stream_metadata(&stream("order-1")).await.unwrap(),
        None
    );
    assert_eq!(
        store.stream_metadata(&stream("order-2")).await.unwrap(),
        None
    );
}

/// Binary events and arbitrary bytes come back unchanged.
pub async fn binary_events_round_trip<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let blob = NewEvent::binary(ty("Blob"), bytes.clone()).with_metadata(vec![0u8, 1, 2, 255]);
    let empty = NewEvent::binary(ty("Empty"), Bytes::new());
    append_ok(
        &*store,
        "file-1",
        NoStream,
        vec![blob.clone(), empty.clone()],
    )
    .await;
    let read = read_ok(&*store, "file-1").await;
    assert_eq!(read[0].event.content_type, ContentType::Binary);
    assert_eq!(read[0].event.data, Bytes::from(bytes));
    assert_eq!(read[0].event.metadata, Bytes::from(vec![0u8, 1, 2, 255]));
    assert_eq!(read[0].event.id, blob.id);
    assert_eq!(read[1].event.content_type, ContentType::Binary);
    assert!(read[1].event.data.is_empty());
    assert_eq!(read[1].event.id, empty.id);
}
