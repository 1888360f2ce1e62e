//! Virtual streams `$ce-<category>` and `$et-<type>`: served from indexes, each event carries
//! a [`Link`](annals_core::Link) with the virtual stream's own contiguous revision.

use annals_core::ExpectedRevision::{Any, Exact, NoStream};
use annals_core::{EventAppender, ReadStreamOptions, ResolvedEvent, StreamMetadata};

use crate::Backend;
use crate::support::*;

/// Interleaved writes: order-1 A, order-2 A, cart-1 A, order-1 B, solo A, order-2 C,
/// order B (no category: no `-`).
async fn interleaved<S: annals_core::EventStore + ?Sized>(store: &S) {
    append_ok(store, "order-1", NoStream, vec![event("A", 0)]).await;
    append_ok(store, "order-2", NoStream, vec![event("A", 1)]).await;
    append_ok(store, "cart-1", NoStream, vec![event("A", 2)]).await;
    append_ok(store, "order-1", Exact(0), vec![event("B", 3)]).await;
    append_ok(store, "solo", NoStream, vec![event("A", 4)]).await;
    append_ok(store, "order-2", Exact(0), vec![event("C", 5)]).await;
    append_ok(store, "order", NoStream, vec![event("B", 6)]).await;
}

fn linked(events: &[ResolvedEvent], virtual_stream: &str) -> Vec<(String, u64, u64)> {
    events
        .iter()
        .map(|e| {
            let link = e
                .link
                .as_ref()
                .expect("a virtual stream read carries links");
            assert_eq!(
                link.stream.as_str(),
                virtual_stream,
                "link names the stream"
            );
            assert_eq!(e.read_revision(), link.revision);
            (
                e.event.stream.as_str().to_owned(),
                e.event.revision,
                link.revision,
            )
        })
        .collect()
}

fn triples(items: &[(&str, u64, u64)]) -> Vec<(String, u64, u64)> {
    items
        .iter()
        .map(|(s, r, l)| ((*s).to_owned(), *r, *l))
        .collect()
}

/// `$ce-order` holds the events of `order-*` streams in commit order; each keeps its own
/// stream and revision and carries a link revision 0, 1, 2, ….
pub async fn category_stream_links_with_contiguous_revisions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    interleaved(&*store).await;
    let read = read_ok(&*store, "$ce-order").await;
    assert_eq!(
        linked(&read, "$ce-order"),
        triples(&[
            ("order-1", 0, 0),
            ("order-2", 0, 1),
            ("order-1", 1, 2),
            ("order-2", 1, 3)
        ])
    );
    let types: Vec<&str> = read.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(types, ["A", "A", "B", "C"]);
    let direct = read_ok(&*store, "order-1").await;
    assert_eq!(
        read[0].event, direct[0].event,
        "the same event as read directly"
    );
    let read = read_ok(&*store, "$ce-cart").await;
    assert_eq!(linked(&read, "$ce-cart"), triples(&[("cart-1", 0, 0)]));
    assert_positions::<B>(&positions(&read_ok(&*store, "$ce-order").await[..1]), 0);
}

/// `$et-A` holds every event of type `A`, whatever its stream.
pub async fn event_type_stream_links_with_contiguous_revisions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    interleaved(&*store).await;
    let read = read_ok(&*store, "$et-A").await;
    assert_eq!(
        linked(&read, "$et-A"),
        triples(&[
            ("order-1", 0, 0),
            ("order-2", 0, 1),
            ("cart-1", 0, 2),
            ("solo", 0, 3)
        ])
    );
    let read = read_ok(&*store, "$et-B").await;
    assert_eq!(
        linked(&read, "$et-B"),
        triples(&[("order-1", 1, 0), ("order", 0, 1)])
    );
    let positions = positions(&read);
    assert!(positions[0] < positions[1]);
}

/// Backward reads, reads from a link revision, and paging by `read_revision`.
pub async fn virtual_streams_backward_and_paging<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    interleaved(&*store).await;
    let read = read_with(&*store, "$ce-order", ReadStreamOptions::backward()).await;
    assert_eq!(link_revisions(&read), vec![3, 2, 1, 0]);
    let read = read_with(
        &*store,
        "$ce-order",
        ReadStreamOptions::backward().from_revision(2).limit(2),
    )
    .await;
    assert_eq!(link_revisions(&read), vec![2, 1]);
    assert_eq!(
        places(&read),
        [("order-1".to_owned(), 1), ("order-2".to_owned(), 0)]
    );
    let read = read_with(
        &*store,
        "$et-A",
        ReadStreamOptions::forward().from_revision(2),
    )
    .await;
    assert_eq!(link_revisions(&read), vec![2, 3]);
    let mut paged = Vec::new();
    let mut next = 0;
    loop {
        let options = ReadStreamOptions::forward().from_revision(next).limit(3);
        let page = read_with(&*store, "$et-A", options).await;
        let Some(last) = page.last() else { break };
        next = last.read_revision() + 1;
        paged.extend(link_revisions(&page));
    }
    assert_eq!(paged, vec![0, 1, 2, 3]);
    assert!(
        read_with(
            &*store,
            "$ce-order",
            ReadStreamOptions::forward().from_revision(4)
        )
        .await
        .is_empty()
    );
}

/// A category or event type without events is not found; a stream without `-` has no
/// category.
pub async fn virtual_streams_of_nothing_are_not_found<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    interleaved(&*store).await;
    assert_not_found(&*store, "$ce-invoice").await;
    assert_not_found(&*store, "$et-Nothing").await;
    assert_not_found(&*store, "$ce-solo").await;
    // `order` (no dash) is not in `$ce-order`: checked by the category scenario's exact list.
    let read = read_ok(&*store, "$ce-order").await;
    assert!(read.iter().all(|e| e.event.stream.as_str() != "order"));
}

/// Events hidden in their own stream (soft delete, truncation, tombstone) are hidden in the
/// virtual streams too; the others keep their link revisions.
pub async fn virtual_streams_hide_deleted_and_truncated_events<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("A", 0, 2)).await; // $ce-order 0, 1
    append_ok(&*store, "order-2", NoStream, events("A", 2, 2)).await; // 2, 3
    append_ok(&*store, "order-3", NoStream, events("A", 4, 2)).await; // 4, 5
    append_ok(&*store, "order-4", NoStream, events("A", 6, 1)).await; // 6
    store.delete_stream(&stream("order-1"), Any).await.unwrap();
    let truncate = StreamMetadata {
        truncate_before: Some(1),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream("order-2"), Any, truncate)
        .await
        .unwrap();
    store
        .tombstone_stream(&stream("order-3"), Any)
        .await
        .unwrap();
    let read = read_ok(&*store, "$ce-order").await;
    assert_eq!(
        linked(&read, "$ce-order"),
        triples(&[("order-2", 1, 3), ("order-4", 0, 6)])
    );
    let read = read_ok(&*store, "$et-A").await;
    assert_eq!(link_revisions(&read), vec![3, 6]);
    // A recreated stream's new events show.
    append_ok(&*store, "order-1", Any, vec![event("A", 9)]).await;
    let read = read_ok(&*store, "$ce-order").await;
    assert_eq!(
        linked(&read, "$ce-order"),
        triples(&[("order-2", 1, 3), ("order-4", 0, 6), ("order-1", 2, 8)])
    );
}
