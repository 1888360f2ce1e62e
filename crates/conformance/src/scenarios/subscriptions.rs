//! Catch-up subscriptions to a stream, a category and (filtered) `$all`: from the start, the
//! end or after a checkpoint; catch-up, one `CaughtUp`, then live events while other tasks
//! append — every event exactly once, in order. Every wait has a deadline.

use std::sync::Arc;

use annals_core::ExpectedRevision::{Any, Exact, NoStream};
use annals_core::subscription::{
    SubscribeFrom, Subscription, SubscriptionMessage, SubscriptionSource, subscribe,
};
use annals_core::{
    EventAppender, EventReader, EventStore, Filter, Position, ReadAllOptions, ReadError,
    ResolvedEvent,
};
use futures::StreamExt;
use uuid::Uuid;

use crate::Backend;
use crate::support::*;

fn to_stream<S: EventStore + 'static>(
    store: &Arc<S>,
    name: &str,
    from: SubscribeFrom<u64>,
) -> Subscription {
    subscribe(
        store.clone(),
        SubscriptionSource::Stream(stream(name)),
        from,
    )
}

fn to_all<S: EventStore + 'static>(
    store: &Arc<S>,
    filter: Option<Filter>,
    from: SubscribeFrom<u64>,
) -> Subscription {
    subscribe(store.clone(), SubscriptionSource::All(filter), from)
}

/// Asserts the next events have these ids, in order.
async fn expect_ids(subscription: &mut Subscription, ids: &[Uuid]) -> Vec<ResolvedEvent> {
    let mut got = Vec::new();
    for id in ids {
        let event = next_event(subscription).await;
        assert_eq!(event.event.id, *id, "event {} of {:?}", got.len(), ids);
        got.push(event);
    }
    got
}

/// From the start: the existing events, `CaughtUp`, then new events as they are committed;
/// other streams' events do not show.
pub async fn stream_subscription_from_start_catches_up_then_goes_live<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let old = events("Step", 0, 3);
    append_ok(&*store, "order-1", NoStream, old.clone()).await;
    let mut sub = to_stream(&store, "order-1", SubscribeFrom::Start);
    let got = expect_ids(&mut sub, &new_ids(&old)).await;
    assert_eq!(revisions(&got), vec![0, 1, 2]);
    expect_caught_up(&mut sub).await;
    let new = events("Step", 3, 2);
    append_ok(&*store, "order-1", Exact(2), new.clone()).await;
    let got = expect_ids(&mut sub, &new_ids(&new)).await;
    assert_eq!(revisions(&got), vec![3, 4]);
    append_ok(&*store, "order-2", NoStream, events("Step", 0, 1)).await;
    expect_silence(&mut sub).await;
    let last = event("Step", 5);
    append_ok(&*store, "order-1", Any, vec![last.clone()]).await;
    assert_eq!(next_event(&mut sub).await.event.id, last.id);
}

/// From the end: `CaughtUp` first, then only events committed afterwards.
pub async fn stream_subscription_from_end<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 3)).await;
    let mut sub = to_stream(&store, "order-1", SubscribeFrom::End);
    expect_caught_up(&mut sub).await;
    let new = event("Step", 3);
    append_ok(&*store, "order-1", Exact(2), vec![new.clone()]).await;
    let got = next_event(&mut sub).await;
    assert_eq!((got.event.id, got.event.revision), (new.id, 3));
    expect_silence(&mut sub).await;
}

/// After a revision: the events after it, `CaughtUp`, then live.
pub async fn stream_subscription_after_revision<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let old = events("Step", 0, 5);
    append_ok(&*store, "order-1", NoStream, old.clone()).await;
    let mut sub = to_stream(&store, "order-1", SubscribeFrom::After(2));
    expect_ids(&mut sub, &new_ids(&old[3..])).await;
    expect_caught_up(&mut sub).await;
    let new = event("Step", 5);
    append_ok(&*store, "order-1", Exact(4), vec![new.clone()]).await;
    assert_eq!(next_event(&mut sub).await.event.revision, 5);
    // After the last revision: nothing to catch up.
    let mut sub = to_stream(&store, "order-1", SubscribeFrom::After(5));
    expect_caught_up(&mut sub).await;
    expect_silence(&mut sub).await;
}

/// A subscription to a stream that does not exist yet reports `CaughtUp` and waits for it.
pub async fn subscription_to_missing_stream_waits_for_it<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let mut sub = to_stream(&store, "order-9", SubscribeFrom::Start);
    expect_caught_up(&mut sub).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 2)).await;
    expect_silence(&mut sub).await;
    let first = events("Step", 0, 2);
    append_ok(&*store, "order-9", NoStream, first.clone()).await;
    let got = expect_ids(&mut sub, &new_ids(&first)).await;
    assert_eq!(revisions(&got), vec![0, 1]);
}

/// A soft delete pauses a stream subscription; the recreated stream's events follow with
/// their continuing revisions.
pub async fn subscription_follows_soft_delete_and_recreation<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 2)).await;
    let mut sub = to_stream(&store, "order-1", SubscribeFrom::Start);
    assert_eq!(next_event(&mut sub).await.event.revision, 0);
    assert_eq!(next_event(&mut sub).await.event.revision, 1);
    expect_caught_up(&mut sub).await;
    store
        .delete_stream(&stream("order-1"), Exact(1))
        .await
        .unwrap();
    expect_silence(&mut sub).await;
    let again = event("Again", 2);
    append_ok(&*store, "order-1", NoStream, vec![again.clone()]).await;
    let got = next_event(&mut sub).await;
    assert_eq!((got.event.id, got.event.revision), (again.id, 2));
}

/// Tombstoning a stream ends its subscription with `StreamDeleted`.
pub async fn subscription_ends_when_stream_is_tombstoned<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 1)).await;
    let mut sub = to_stream(&store, "order-1", SubscribeFrom::Start);
    assert_eq!(next_event(&mut sub).await.event.revision, 0);
    expect_caught_up(&mut sub).await;
    store
        .tombstone_stream(&stream("order-1"), Exact(0))
        .await
        .unwrap();
    let item = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("the subscription reports the tombstone");
    match item {
        Some(Err(ReadError::StreamDeleted { stream })) => assert_eq!(stream.as_str(), "order-1"),
        other => panic!("expected StreamDeleted, got {other:?}"),
    }
    let end = tokio::time::timeout(DEADLINE, sub.next()).await.unwrap();
    assert!(
        end.is_none(),
        "the subscription ends after its error: {end:?}"
    );
    // A new subscription to the dead stream fails right away.
    let mut sub = to_stream(&store, "order-1", SubscribeFrom::Start);
    let item = tokio::time::timeout(DEADLINE, sub.next()).await.unwrap();
    assert!(
        matches!(item, Some(Err(ReadError::StreamDeleted { .. }))),
        "{item:?}"
    );
}

/// Category and event-type subscriptions deliver linked events and resume after a link
/// revision.
pub async fn category_subscription_uses_link_revisions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, vec![event("A", 0)]).await;
    append_ok(&*store, "cart-1", NoStream, vec![event("A", 1)]).await;
    append_ok(&*store, "order-2", NoStream, vec![event("B", 2)]).await;
    let mut sub = to_stream(&store, "$ce-order", SubscribeFrom::After(0));
    let got = next_event(&mut sub).await;
    assert_eq!(got.event.stream.as_str(), "order-2");
    assert_eq!(got.read_revision(), 1);
    assert_eq!(
        got.link.as_ref().map(|l| l.stream.as_str()),
        Some("$ce-order")
    );
    expect_caught_up(&mut sub).await;
    let mut by_type = to_stream(&store, "$et-A", SubscribeFrom::Start);
    assert_eq!(next_event(&mut by_type).await.read_revision(), 0);
    assert_eq!(next_event(&mut by_type).await.read_revision(), 1);
    expect_caught_up(&mut by_type).await;
    append_ok(&*store, "order-1", Exact(0), vec![event("A", 3)]).await;
    let got = next_event(&mut sub).await;
    assert_eq!(
        (
            got.event.stream.as_str(),
            got.event.revision,
            got.read_revision()
        ),
        ("order-1", 1, 2)
    );
    let got = next_event(&mut by_type).await;
    assert_eq!(
        (
            got.event.stream.as_str(),
            got.event.revision,
            got.read_revision()
        ),
        ("order-1", 1, 2)
    );
    let mut from_end = to_stream(&store, "$ce-order", SubscribeFrom::End);
    expect_caught_up(&mut from_end).await;
    append_ok(&*store, "order-3", NoStream, vec![event("C", 4)]).await;
    assert_eq!(next_event(&mut from_end).await.read_revision(), 3);
    assert_eq!(next_event(&mut sub).await.read_revision(), 3);
}

/// `$all` from the start, the end and after a position; without a filter there are no
/// checkpoints.
pub async fn all_subscription_from_start_end_and_after<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "order-1", NoStream, events("Step", 0, 2)).await;
    append_ok(&*store, "cart-1", NoStream, events("Step", 0, 1)).await;
    let all = read_all(&*store).await;
    let all_ids: Vec<Uuid> = all.iter().map(|e| e.id).collect();
    let mut from_start = to_all(&store, None, SubscribeFrom::Start);
    expect_ids(&mut from_start, &all_ids).await;
    expect_caught_up(&mut from_start).await;
    let mut from_end = to_all(&store, None, SubscribeFrom::End);
    expect_caught_up(&mut from_end).await;
    let mut after = to_all(&store, None, SubscribeFrom::After(all[0].position.0));
    expect_ids(&mut after, &all_ids[1..]).await;
    expect_caught_up(&mut after).await;
    let new = event("Step", 2);
    append_ok(&*store, "order-1", Exact(1), vec![new.clone()]).await;
    for sub in [&mut from_start, &mut from_end, &mut after] {
        let message = next_message(sub).await;
        match message {
            SubscriptionMessage::Event(e) => assert_eq!(e.event.id, new.id),
            other => panic!("expected the new event, got {other:?}"),
        }
        expect_silence(sub).await;
    }
}

/// A filtered `$all` subscription delivers matching events and checkpoints that tell how far
/// it examined the log — also while nothing matches — and resumes after a checkpoint.
pub async fn filtered_all_subscription_emits_checkpoints<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "cart-1", NoStream, events("Step", 0, 3)).await;
    let order = event("Placed", 0);
    let placed = append_ok(&*store, "order-1", NoStream, vec![order.clone()]).await;
    let p3 = placed.last_position().unwrap();
    let filter = Filter::stream_prefixes(["order-"]);
    let mut sub = to_all(&store, Some(filter.clone()), SubscribeFrom::Start);
    assert_eq!(next_event(&mut sub).await.event.id, order.id);
    let message = next_message(&mut sub).await;
    assert_eq!(message, SubscriptionMessage::Checkpoint(p3));
    expect_caught_up(&mut sub).await;
    // A non-matching event moves the checkpoint.
    let skipped = append_ok(&*store, "cart-1", Exact(2), events("Step", 3, 1)).await;
    let p4 = skipped.last_position().unwrap();
    assert_eq!(
        next_message(&mut sub).await,
        SubscriptionMessage::Checkpoint(p4)
    );
    let shipped = event("Shipped", 1);
    let result = append_ok(&*store, "order-2", NoStream, vec![shipped.clone()]).await;
    let p5 = result.last_position().unwrap();
    assert_eq!(next_event(&mut sub).await.event.id, shipped.id);
    assert_eq!(
        next_message(&mut sub).await,
        SubscriptionMessage::Checkpoint(p5)
    );
    expect_silence(&mut sub).await;
    // Resuming after a checkpoint delivers only what follows it.
    let mut resumed = to_all(&store, Some(filter), SubscribeFrom::After(p4.0));
    assert_eq!(next_event(&mut resumed).await.event.id, shipped.id);
    assert_eq!(
        next_message(&mut resumed).await,
        SubscriptionMessage::Checkpoint(p5)
    );
    expect_caught_up(&mut resumed).await;
}

/// What a subscription delivered until it saw `count` events.
struct Delivered {
    events: Vec<ResolvedEvent>,
    caught_up: usize,
    /// Each checkpoint with the number of events delivered before it.
    checkpoints: Vec<(usize, Position)>,
}

async fn collect(subscription: &mut Subscription, count: usize) -> Delivered {
    let mut delivered = Delivered {
        events: Vec::new(),
        caught_up: 0,
        checkpoints: Vec::new(),
    };
    while delivered.events.len() < count {
        match next_message(subscription).await {
            SubscriptionMessage::Event(e) => delivered.events.push(e),
            SubscriptionMessage::CaughtUp => delivered.caught_up += 1,
            SubscriptionMessage::Checkpoint(p) => {
                delivered.checkpoints.push((delivered.events.len(), p));
            }
        }
    }
    delivered
}

/// Spawns a writer appending `total` events to `name` in batches of 1 to 4 with `Any`.
fn spawn_writer<S: EventStore + 'static>(
    store: &Arc<S>,
    name: &'static str,
    total: u64,
) -> tokio::task::JoinHandle<Vec<Uuid>> {
    let store = store.clone();
    tokio::spawn(async move {
        let mut written = Vec::new();
        let mut n = 0;
        while n < total {
            let batch = (n % 4 + 1).min(total - n);
            let events = events("Load", n, batch);
            written.extend(new_ids(&events));
            append_ok(&*store, name, Any, events).await;
            n += batch;
            tokio::task::yield_now().await;
        }
        written
    })
}

/// Ids of `written` appear in `delivered` in the same relative order.
fn assert_in_order(delivered: &[Uuid], written: &[Uuid]) {
    let index: std::collections::HashMap<Uuid, usize> = delivered
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let places: Vec<usize> = written
        .iter()
        .map(|id| *index.get(id).expect("every written event delivered"))
        .collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "writer order kept");
}

const PRELOADED: u64 = 40;
const PER_WRITER: u64 = 120;

/// A stream subscription started during concurrent writes delivers every event exactly
/// once, in revision order, with one `CaughtUp`.
pub async fn concurrent_writers_stream_subscription<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "load-1", NoStream, events("Load", 0, PRELOADED)).await;
    let mut sub = to_stream(&store, "load-1", SubscribeFrom::Start);
    let writers = [
        spawn_writer(&store, "load-1", PER_WRITER),
        spawn_writer(&store, "load-1", PER_WRITER),
    ];
    let total = (PRELOADED + 2 * PER_WRITER) as usize;
    let delivered = collect(&mut sub, total).await;
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.unwrap());
    }
    assert!(
        delivered.caught_up <= 1,
        "CaughtUp at most once before the end"
    );
    assert_eq!(
        revisions(&delivered.events),
        (0..total as u64).collect::<Vec<_>>()
    );
    let stored = read_ok(&*store, "load-1").await;
    assert_eq!(
        ids(&delivered.events),
        ids(&stored),
        "exactly the stored events"
    );
    for w in &written {
        assert_in_order(&ids(&delivered.events), w);
    }
    if delivered.caught_up == 0 {
        expect_caught_up(&mut sub).await;
    }
    expect_silence(&mut sub).await;
}

/// A category subscription under concurrent writes to two streams: every event once, link
/// revisions contiguous, each stream's revisions in order.
pub async fn concurrent_writers_category_subscription<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "load-1", NoStream, events("Load", 0, PRELOADED)).await;
    let mut sub = to_stream(&store, "$ce-load", SubscribeFrom::Start);
    let writers = [
        spawn_writer(&store, "load-1", PER_WRITER),
        spawn_writer(&store, "load-2", PER_WRITER),
        spawn_writer(&store, "other-1", PER_WRITER / 2),
    ];
    let total = (PRELOADED + 2 * PER_WRITER) as usize;
    let delivered = collect(&mut sub, total).await;
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(delivered.caught_up <= 1);
    assert_eq!(
        link_revisions(&delivered.events),
        (0..total as u64).collect::<Vec<_>>()
    );
    let stored = read_ok(&*store, "$ce-load").await;
    assert_eq!(ids(&delivered.events), ids(&stored));
    for name in ["load-1", "load-2"] {
        let own: Vec<u64> = delivered
            .events
            .iter()
            .filter(|e| e.event.stream.as_str() == name)
            .map(|e| e.event.revision)
            .collect();
        let expected = if name == "load-1" {
            PRELOADED + PER_WRITER
        } else {
            PER_WRITER
        };
        assert_eq!(own, (0..expected).collect::<Vec<_>>(), "{name}");
    }
    expect_silence_after_caught_up(&mut sub, delivered.caught_up).await;
}

async fn expect_silence_after_caught_up(sub: &mut Subscription, caught_up: usize) {
    if caught_up == 0 {
        expect_caught_up(sub).await;
    }
    expect_silence(sub).await;
}

/// `$all` subscriptions, unfiltered and filtered, under concurrent writers: every (matching)
/// event once, in position order; checkpoints never run ahead of delivered events.
pub async fn concurrent_writers_all_subscription<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "alpha-1", NoStream, events("Load", 0, PRELOADED)).await;
    let mut all = to_all(&store, None, SubscribeFrom::Start);
    let filter = Filter::stream_prefixes(["alpha-"]);
    let mut alpha = to_all(&store, Some(filter.clone()), SubscribeFrom::Start);
    let writers = [
        spawn_writer(&store, "alpha-1", PER_WRITER),
        spawn_writer(&store, "beta-1", PER_WRITER),
        spawn_writer(&store, "alpha-2", PER_WRITER / 2),
    ];
    let total_all = (PRELOADED + PER_WRITER * 5 / 2) as usize;
    let total_alpha = (PRELOADED + PER_WRITER * 3 / 2) as usize;
    let (got_all, mut got_alpha) = tokio::join!(
        collect(&mut all, total_all),
        collect(&mut alpha, total_alpha)
    );
    // The page that delivered the last matching event reports how far it looked right after
    // it (when the writers finish before the first read, that is the only checkpoint).
    match next_message(&mut alpha).await {
        SubscriptionMessage::Checkpoint(p) => got_alpha.checkpoints.push((total_alpha, p)),
        other => panic!("expected a checkpoint after the last matching event, got {other:?}"),
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let stored = store.read_all(ReadAllOptions::forward()).await.unwrap();
    assert_eq!(ids(&got_all.events), ids(&stored.events));
    assert!(
        got_all.checkpoints.is_empty(),
        "no checkpoints without a filter"
    );
    let positions = positions(&got_all.events);
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    if B::GAP_FREE_POSITIONS {
        assert_eq!(positions, (0..total_all as u64).collect::<Vec<_>>());
    }
    let stored_alpha = store
        .read_all(ReadAllOptions::forward().filter(filter))
        .await
        .unwrap();
    assert_eq!(ids(&got_alpha.events), ids(&stored_alpha.events));
    let mut last_checkpoint = None;
    for (delivered_before, checkpoint) in &got_alpha.checkpoints {
        assert!(
            last_checkpoint.is_none_or(|last| last <= *checkpoint),
            "checkpoints move forward"
        );
        last_checkpoint = Some(*checkpoint);
        // Every matching event at or before the checkpoint was delivered before it.
        let due = got_alpha
            .events
            .iter()
            .filter(|e| e.event.position <= *checkpoint)
            .count();
        assert_eq!(due, *delivered_before, "checkpoint {checkpoint} ran ahead");
    }
    expect_silence_after_caught_up(&mut all, got_all.caught_up).await;
}
