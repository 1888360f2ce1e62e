//! Global positions: strictly increasing in commit order, and gap-free (0, 1, 2, …) when the
//! backend says so ([`Backend::GAP_FREE_POSITIONS`](crate::Backend::GAP_FREE_POSITIONS)),
//! across single and multi-stream appends, metadata records and tombstones.

use std::collections::HashSet;

use annals_core::ExpectedRevision::{Any, Exact, NoStream};
use annals_core::{EventAppender, EventReader, Position, StreamMetadata, StreamWrite};

use crate::Backend;
use crate::support::*;

/// Each append's positions follow the previous one's; reads report the same positions.
pub async fn single_appends_get_increasing_positions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let mut reported = Vec::new();
    for (i, name) in ["a-1", "b-1", "a-1", "c-1", "a-1"].iter().enumerate() {
        let count = (i % 3 + 1) as u64;
        let result = append_ok(&*store, name, Any, events("Step", 0, count)).await;
        let (first, last) = result.positions.unwrap();
        assert!(last >= first);
        if B::GAP_FREE_POSITIONS {
            assert_eq!(last.0 - first.0 + 1, count, "one position per event");
        }
        reported.push((first, last));
    }
    for pair in reported.windows(2) {
        assert!(pair[0].1 < pair[1].0, "appends are ordered: {reported:?}");
    }
    let all = read_all(&*store).await;
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_positions::<B>(&positions, 0);
    assert_eq!(all.first().map(|e| e.position), Some(reported[0].0));
    assert_eq!(all.last().map(|e| e.position), Some(reported[4].1));
    let a = read_ok(&*store, "a-1").await;
    let a_positions = crate::support::positions(&a);
    assert!(a_positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(a.last().map(|e| e.event.position), Some(reported[4].1));
}

/// A multi-stream append's events take consecutive positions across its streams.
pub async fn multi_stream_positions_are_contiguous<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    append_ok(&*store, "a-1", NoStream, events("Step", 0, 1)).await;
    let results = store
        .append_multi(vec![
            StreamWrite {
                stream: stream("b-1"),
                expected: NoStream,
                events: events("Step", 0, 2),
            },
            StreamWrite {
                stream: stream("a-1"),
                expected: Exact(0),
                events: events("Step", 1, 3),
            },
        ])
        .await
        .unwrap();
    let (b_first, b_last) = results[0].positions.unwrap();
    let (a_first, a_last) = results[1].positions.unwrap();
    assert!(b_first < b_last && b_last < a_first && a_first < a_last);
    if B::GAP_FREE_POSITIONS {
        assert_eq!(
            (b_first, b_last, a_first, a_last),
            (Position(1), Position(2), Position(3), Position(5))
        );
    }
    let all = read_all(&*store).await;
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_positions::<B>(&positions, 0);
    let b = read_ok(&*store, "b-1").await;
    assert_eq!(b[0].event.position, b_first);
    assert_eq!(b[1].event.position, b_last);
}

/// Metadata records, soft deletes and tombstones take positions like events.
pub async fn metadata_and_tombstones_take_positions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let r0 = append_ok(&*store, "a-1", NoStream, events("Step", 0, 1)).await;
    let meta = store
        .set_stream_metadata(&stream("a-1"), Any, StreamMetadata::default())
        .await
        .unwrap();
    let r1 = append_ok(&*store, "b-1", NoStream, events("Step", 0, 1)).await;
    let deleted = store.delete_stream(&stream("b-1"), Any).await.unwrap();
    let tomb = store.tombstone_stream(&stream("a-1"), Any).await.unwrap();
    let r2 = append_ok(&*store, "c-1", NoStream, events("Step", 0, 1)).await;
    let order: Vec<Position> = [r0, meta, r1, deleted, tomb, r2]
        .iter()
        .map(|r| r.positions.unwrap().0)
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    if B::GAP_FREE_POSITIONS {
        assert_eq!(order, (0..6).map(Position).collect::<Vec<_>>());
    }
    assert!(head(&*store) > order[5]);
}

/// Failed appends (conflicts, tombstoned streams, bad input) take no position.
pub async fn failed_appends_consume_no_positions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let first = append_ok(&*store, "a-1", NoStream, events("Step", 0, 2)).await;
    store
        .tombstone_stream(&stream("t-1"), NoStream)
        .await
        .unwrap();
    let before = head(&*store);
    for _ in 0..3 {
        let conflict = store
            .append(&stream("a-1"), NoStream, events("Step", 0, 1))
            .await;
        assert!(conflict.is_err());
        let dead = store
            .append(&stream("t-1"), Any, events("Step", 0, 1))
            .await;
        assert!(dead.is_err());
        let bad = store
            .append(
                &stream("a-1"),
                Any,
                vec![annals_core::NewEvent::json(ty("Bad"), "{")],
            )
            .await;
        assert!(bad.is_err());
    }
    assert_eq!(head(&*store), before);
    let next = append_ok(&*store, "a-1", Exact(1), events("Step", 2, 1)).await;
    let position = next.positions.unwrap().0;
    assert!(position > first.positions.unwrap().1);
    if B::GAP_FREE_POSITIONS {
        assert_eq!(position, Position(3), "no hole after failed appends");
    }
}

/// Appends from many tasks at once get unique positions; `$all` shows them strictly
/// increasing (and gap-free when promised), each stream's revisions contiguous.
pub async fn concurrent_appends_get_unique_increasing_positions<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("load-{}", t % 4);
                let mut reported = Vec::new();
                for i in 0..25u64 {
                    let count = i % 3 + 1;
                    let result = append_ok(&*store, &name, Any, events("Step", i, count)).await;
                    reported.push(result.positions.unwrap());
                }
                reported
            })
        })
        .collect();
    let mut reported = Vec::new();
    for task in tasks {
        reported.extend(task.await.unwrap());
    }
    let all = read_all(&*store).await;
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_positions::<B>(&positions, 0);
    let expected_count: u64 = 8 * (0..25u64).map(|i| i % 3 + 1).sum::<u64>();
    assert_eq!(positions.len() as u64, expected_count);
    let stored: HashSet<u64> = positions.iter().copied().collect();
    for (first, last) in &reported {
        assert!(stored.contains(&first.0) && stored.contains(&last.0));
    }
    for t in 0..4 {
        let read = read_ok(&*store, &format!("load-{t}")).await;
        assert_eq!(revisions(&read), (0..read.len() as u64).collect::<Vec<_>>());
    }
}

/// The watched head moves past every commit, and not on failures or re-sends.
pub async fn head_follows_commits<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let mut watch = store.watch_head();
    let start = *watch.borrow_and_update();
    if B::GAP_FREE_POSITIONS {
        assert_eq!(start, Position(0));
    }
    let sent = events("Step", 0, 3);
    let result = append_ok(&*store, "a-1", NoStream, sent.clone()).await;
    assert!(watch.has_changed().unwrap(), "a commit moves the head");
    let after = *watch.borrow_and_update();
    assert!(after > result.last_position().unwrap());
    if B::GAP_FREE_POSITIONS {
        assert_eq!(after, Position(3));
    }
    append_ok(&*store, "a-1", NoStream, sent).await;
    let failed = store
        .append(&stream("a-1"), NoStream, events("Step", 0, 1))
        .await;
    assert!(failed.is_err());
    assert_eq!(*watch.borrow(), after, "no move without a commit");
}
