//! Reads of the global log `$all`: both directions, from positions, and paging through
//! [`AllSlice::next`](annals_core::AllSlice::next).

use annals_core::ExpectedRevision::{Any, NoStream};
use annals_core::{AllFrom, EventReader, Position, ReadAllOptions, RecordedEvent};

use crate::Backend;
use crate::support::*;

/// Seven records over three streams (one of them a metadata record); returns them in commit
/// order as `$all` shows them.
async fn seven<S: annals_core::EventStore + ?Sized>(store: &S) -> Vec<RecordedEvent> {
    append_ok(store, "order-1", NoStream, events("Placed", 0, 2)).await;
    append_ok(store, "cart-1", NoStream, events("Opened", 0, 1)).await;
    store
        .set_stream_metadata(
            &stream("cart-1"),
            Any,
            annals_core::StreamMetadata::default(),
        )
        .await
        .unwrap();
    append_ok(store, "order-1", Any, events("Paid", 2, 1)).await;
    append_ok(store, "user-1", Any, events("Registered", 0, 2)).await;
    let all = read_all(store).await;
    assert_eq!(all.len(), 7);
    all
}

fn places(events: &[annals_core::ResolvedEvent]) -> Vec<(String, u64)> {
    crate::support::places(events)
}

fn places_of(events: &[RecordedEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| (e.stream.as_str().to_owned(), e.revision))
        .collect()
}

/// Forward from the start returns every record in commit order; backward from the end, the
/// reverse.
pub async fn all_forward_and_backward<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let all = seven(&*store).await;
    let expected: Vec<(String, u64)> = [
        ("order-1", 0),
        ("order-1", 1),
        ("cart-1", 0),
        ("$$cart-1", 0),
        ("order-1", 2),
        ("user-1", 0),
        ("user-1", 1),
    ]
    .iter()
    .map(|(s, r)| ((*s).to_owned(), *r))
    .collect();
    assert_eq!(places_of(&all), expected);
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_positions::<B>(&positions, 0);
    let meta = &all[3];
    assert_eq!(meta.event_type.as_str(), "$metadata");

    let backward = store.read_all(ReadAllOptions::backward()).await.unwrap();
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(places(&backward.events), reversed);
    assert!(backward.end_of_log);
    assert_eq!(backward.next, None, "backward past position 0");

    let forward = store.read_all(ReadAllOptions::forward()).await.unwrap();
    assert!(forward.end_of_log);
    assert_eq!(
        forward.next,
        Some(head(&*store)),
        "forward ends at the head"
    );
    if B::GAP_FREE_POSITIONS {
        assert_eq!(forward.next, Some(Position(7)));
    }

    let limited = store
        .read_all(ReadAllOptions::backward().limit(2))
        .await
        .unwrap();
    assert_eq!(places(&limited.events), reversed[..2].to_vec());
    assert!(!limited.end_of_log);
}

/// Reads from a position include it, in both directions; from the end forward is empty.
pub async fn all_from_positions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let all = seven(&*store).await;
    let at = |i: usize| all[i].position;
    let slice = store
        .read_all(ReadAllOptions::forward().from_position(at(4)))
        .await
        .unwrap();
    assert_eq!(places(&slice.events), places_of(&all[4..]));
    let slice = store
        .read_all(ReadAllOptions::forward().from_position(at(2)).limit(2))
        .await
        .unwrap();
    assert_eq!(places(&slice.events), places_of(&all[2..4]));
    assert_eq!(slice.next.map(|p| p > at(3) && p <= at(4)), Some(true));
    assert!(!slice.end_of_log);

    let slice = store
        .read_all(ReadAllOptions::backward().from_position(at(3)))
        .await
        .unwrap();
    let mut expected = places_of(&all[..4]);
    expected.reverse();
    assert_eq!(places(&slice.events), expected);
    let slice = store
        .read_all(ReadAllOptions::backward().from_position(at(5)).limit(3))
        .await
        .unwrap();
    let mut expected = places_of(&all[3..6]);
    expected.reverse();
    assert_eq!(places(&slice.events), expected);
    assert_eq!(slice.next.map(|p| p < at(3) && p >= at(2)), Some(true));

    let end = ReadAllOptions {
        from: AllFrom::End,
        ..ReadAllOptions::forward()
    };
    let slice = store.read_all(end).await.unwrap();
    assert!(slice.events.is_empty());
    assert!(slice.end_of_log);
    assert_eq!(slice.next, Some(head(&*store)));
    let far = Position(at(6).0 + 1_000);
    let slice = store
        .read_all(ReadAllOptions::backward().from_position(far).limit(1))
        .await
        .unwrap();
    assert_eq!(places(&slice.events), places_of(&all[6..]));
    if B::GAP_FREE_POSITIONS {
        let slice = store
            .read_all(ReadAllOptions::forward().from_position(Position(6)))
            .await
            .unwrap();
        assert_eq!(places(&slice.events), places_of(&all[6..]));
        assert_eq!(slice.next, Some(Position(7)));
    }
}

/// Paging forward and backward through `next` visits every record once, in order.
pub async fn all_paging_with_next<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let all = seven(&*store).await;
    for page in [1, 2, 3, 7, 10] {
        let mut seen = Vec::new();
        let mut options = ReadAllOptions::forward().limit(page);
        let mut reads = 0;
        loop {
            let slice = store.read_all(options.clone()).await.unwrap();
            reads += 1;
            assert!(slice.events.len() <= page as usize);
            seen.extend(slice.events.into_iter().map(|e| e.event));
            if slice.end_of_log {
                break;
            }
            options = options.from_position(slice.next.expect("forward slices continue"));
            assert!(reads < 20, "paging does not end");
        }
        assert_eq!(seen, all, "forward pages of {page}");

        let mut seen = Vec::new();
        let mut options = ReadAllOptions::backward().limit(page);
        loop {
            let slice = store.read_all(options.clone()).await.unwrap();
            seen.extend(slice.events.into_iter().map(|e| e.event));
            match slice.next {
                Some(next) if !slice.end_of_log => options = options.from_position(next),
                _ => break,
            }
        }
        seen.reverse();
        assert_eq!(seen, all, "backward pages of {page}");
    }
}

/// An empty store reads as an empty log in both directions.
pub async fn all_on_empty_store<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let forward = store.read_all(ReadAllOptions::forward()).await.unwrap();
    assert!(forward.events.is_empty());
    assert!(forward.end_of_log);
    let backward = store.read_all(ReadAllOptions::backward()).await.unwrap();
    assert!(backward.events.is_empty());
    assert!(backward.end_of_log);
    assert_eq!(backward.next, None);
    if B::GAP_FREE_POSITIONS {
        assert_eq!(forward.next, Some(Position(0)));
        assert_eq!(head(&*store), Position(0));
    }
}
