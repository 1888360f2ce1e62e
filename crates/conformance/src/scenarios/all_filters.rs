//! Server-side filters on `$all`: stream-name prefix, event-type prefix, regular
//! expressions, excluding system events, and `max_scan` bounding a sparse scan.

use annals_core::ExpectedRevision::{Any, NoStream};
use annals_core::read::FilterTarget;
use annals_core::{
    EventReader, Filter, ReadAllOptions, RecordedEvent, ResolvedEvent, StreamMetadata,
};

use crate::Backend;
use crate::support::*;

/// The log: order-1 `OrderPlaced`, cart-1 `CartOpened`, `$$order-1` `$metadata`, order-2
/// `OrderShipped`, customer-1 `CustomerCreated`, orderbook-1 `BookOpened`.
async fn mixed<S: annals_core::EventStore + ?Sized>(store: &S) -> Vec<RecordedEvent> {
    append_ok(store, "order-1", NoStream, vec![event("OrderPlaced", 0)]).await;
    append_ok(store, "cart-1", NoStream, vec![event("CartOpened", 1)]).await;
    let metadata = StreamMetadata {
        max_count: Some(10),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream("order-1"), Any, metadata)
        .await
        .unwrap();
    append_ok(store, "order-2", NoStream, vec![event("OrderShipped", 2)]).await;
    append_ok(
        store,
        "customer-1",
        NoStream,
        vec![event("CustomerCreated", 3)],
    )
    .await;
    append_ok(store, "orderbook-1", NoStream, vec![event("BookOpened", 4)]).await;
    let all = read_all(store).await;
    assert_eq!(all.len(), 6);
    all
}

fn names(events: &[ResolvedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.stream.as_str()).collect()
}

async fn filtered<S: annals_core::EventStore + ?Sized>(
    store: &S,
    filter: Filter,
) -> Vec<ResolvedEvent> {
    let slice = store
        .read_all(ReadAllOptions::forward().filter(filter))
        .await
        .unwrap();
    assert!(slice.end_of_log);
    slice.events
}

/// Stream-name prefixes, one or several; a metadata stream does not match its target's
/// prefix.
pub async fn stream_prefix_filter<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    mixed(&*store).await;
    let got = filtered(&*store, Filter::stream_prefixes(["order-"])).await;
    assert_eq!(names(&got), ["order-1", "order-2"]);
    let got = filtered(&*store, Filter::stream_prefixes(["order"])).await;
    assert_eq!(names(&got), ["order-1", "order-2", "orderbook-1"]);
    let got = filtered(&*store, Filter::stream_prefixes(["cart-", "customer-"])).await;
    assert_eq!(names(&got), ["cart-1", "customer-1"]);
    let got = filtered(&*store, Filter::stream_prefixes(["$$"])).await;
    assert_eq!(names(&got), ["$$order-1"]);
    let got = filtered(&*store, Filter::stream_prefixes(["invoice-"])).await;
    assert!(got.is_empty());
}

/// Event-type prefixes.
pub async fn event_type_prefix_filter<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    mixed(&*store).await;
    let got = filtered(&*store, Filter::event_type_prefixes(["Order"])).await;
    assert_eq!(names(&got), ["order-1", "order-2"]);
    let got = filtered(&*store, Filter::event_type_prefixes(["Cart", "Book"])).await;
    assert_eq!(names(&got), ["cart-1", "orderbook-1"]);
    let got = filtered(&*store, Filter::event_type_prefixes(["$"])).await;
    assert_eq!(names(&got), ["$$order-1"]);
}

/// Unanchored regular expressions on stream names and event types.
pub async fn regex_filters<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    mixed(&*store).await;
    let by_stream = Filter::regex(FilterTarget::StreamName, "^c(art|ustomer)-[0-9]+$").unwrap();
    assert_eq!(
        names(&filtered(&*store, by_stream).await),
        ["cart-1", "customer-1"]
    );
    let by_type = Filter::regex(FilterTarget::EventType, "(Shipped|Created)$").unwrap();
    assert_eq!(
        names(&filtered(&*store, by_type).await),
        ["order-2", "customer-1"]
    );
    let unanchored = Filter::regex(FilterTarget::StreamName, "book").unwrap();
    assert_eq!(names(&filtered(&*store, unanchored).await), ["orderbook-1"]);
}

/// `exclude_system_events` drops events whose type starts with `$`.
pub async fn exclude_system_events_filter<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let all = mixed(&*store).await;
    let got = filtered(&*store, Filter::exclude_system_events()).await;
    let expected: Vec<_> = all
        .iter()
        .filter(|e| e.stream.as_str() != "$$order-1")
        .cloned()
        .collect();
    let got: Vec<_> = got.into_iter().map(|e| e.event).collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 5);
}

/// A filtered read backward, and with a limit that continues through `next`.
pub async fn filtered_backward_read_with_limit<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let all = mixed(&*store).await;
    let filter = Filter::stream_prefixes(["order"]);
    let slice = store
        .read_all(ReadAllOptions::backward().filter(filter.clone()))
        .await
        .unwrap();
    assert_eq!(names(&slice.events), ["orderbook-1", "order-2", "order-1"]);
    let slice = store
        .read_all(ReadAllOptions::forward().filter(filter.clone()).limit(1))
        .await
        .unwrap();
    assert_eq!(names(&slice.events), ["order-1"]);
    assert!(!slice.end_of_log);
    let next = slice.next.unwrap();
    assert!(next > all[0].position && next <= all[1].position, "{next}");
    let slice = store
        .read_all(
            ReadAllOptions::forward()
                .filter(filter.clone())
                .limit(1)
                .from_position(next),
        )
        .await
        .unwrap();
    assert_eq!(names(&slice.events), ["order-2"]);
    let slice = store
        .read_all(ReadAllOptions::backward().filter(filter).limit(2))
        .await
        .unwrap();
    assert_eq!(names(&slice.events), ["orderbook-1", "order-2"]);
    assert!(!slice.end_of_log);
}

/// `max_scan` stops a sparse filtered read after examining that many positions, with `next`
/// just past the last examined one; reading on from there finds the rest.
pub async fn max_scan_bounds_the_examined_positions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let all = mixed(&*store).await;
    let customers = Filter::stream_prefixes(["customer-"]);
    let options = ReadAllOptions {
        max_scan: Some(2),
        ..ReadAllOptions::forward().filter(customers.clone())
    };
    let slice = store.read_all(options.clone()).await.unwrap();
    assert!(slice.events.is_empty(), "{:?}", slice.events);
    assert!(!slice.end_of_log);
    let next = slice.next.unwrap();
    assert!(next > all[1].position && next <= all[2].position, "{next}");
    if B::GAP_FREE_POSITIONS {
        assert_eq!(next.0, 2);
    }
    // Positions 2, 3, 4: the customer event is the third examined.
    let slice = store
        .read_all(ReadAllOptions {
            max_scan: Some(3),
            ..options.clone().from_position(next)
        })
        .await
        .unwrap();
    assert_eq!(names(&slice.events), ["customer-1"]);
    assert!(!slice.end_of_log);
    let next = slice.next.unwrap();
    assert!(next > all[4].position && next <= all[5].position, "{next}");
    let slice = store.read_all(options.from_position(next)).await.unwrap();
    assert!(slice.events.is_empty());
    assert!(slice.end_of_log);
    assert_eq!(slice.next, Some(head(&*store)));
    // The budget also bounds unfiltered reads.
    let slice = store
        .read_all(ReadAllOptions {
            max_scan: Some(4),
            ..ReadAllOptions::forward()
        })
        .await
        .unwrap();
    assert_eq!(slice.events.len(), 4);
    assert!(!slice.end_of_log);
}
