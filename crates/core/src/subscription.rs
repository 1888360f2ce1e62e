//! Catch-up subscriptions, generic over any [`EventReader`].
//!
//! A subscription reads pages from its cursor until a read comes back short, reports
//! [`SubscriptionMessage::CaughtUp`] once, then waits for the log head to move and reads
//! again. The head is observed *before* each read, so a commit that lands between the read
//! and the wait wakes the subscription immediately: no event is missed, and because the
//! cursor only moves past delivered events, none is delivered twice.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::error::ReadError;
use crate::event::ResolvedEvent;
use crate::name::StreamName;
use crate::position::Position;
use crate::read::{AllFrom, Direction, Filter, ReadAllOptions, ReadStreamOptions};
use crate::store::EventReader;

/// Events per read while catching up.
pub const PAGE_SIZE: u64 = 512;
/// Positions a filtered `$all` subscription examines per read before it reports a checkpoint.
pub const MAX_SCAN: u64 = 8192;

/// What a subscription follows.
#[derive(Debug, Clone)]
pub enum SubscriptionSource {
    /// A stream: regular, `$$<stream>`, `$ce-<category>` or `$et-<type>`.
    Stream(StreamName),
    /// The global log, optionally filtered.
    All(Option<Filter>),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeFrom<T> {
    /// From the first event.
    Start,
    /// From the next event committed.
    End,
    /// After this checkpoint (exclusive): a stream revision or a log position.
    After(T),
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionMessage {
    /// The next event.
    Event(ResolvedEvent),
    /// Everything committed when the subscription started has been delivered; from now on
    /// events arrive live. Sent once.
    CaughtUp,
    /// A filtered `$all` subscription examined every position up to and including this one;
    /// resume with `SubscribeFrom::After(position)`.
    Checkpoint(Position),
}

/// A running subscription.
pub type Subscription = BoxStream<'static, Result<SubscriptionMessage, ReadError>>;

/// Subscribes to a stream (revision checkpoints) or `$all` (position checkpoints).
///
/// For a stream `After(r)` resumes after revision `r` (for virtual streams: the link
/// revision); for `$all`, after position `r`. A stream that does not exist yet is waited for;
/// a tombstoned stream ends the subscription with `StreamDeleted`.
pub fn subscribe<S: EventReader + ?Sized + 'static>(
    store: Arc<S>,
    source: SubscriptionSource,
    from: SubscribeFrom<u64>,
) -> Subscription {
    let head = store.watch_head();
    // `End` means the head as of this call, not as of the first poll.
    let end_at = *head.borrow();
    match source {
        SubscriptionSource::Stream(stream) => {
            let state = Cursor {
                store,
                head,
                next: None,
                from,
                end_at,
                caught_up: false,
            };
            stream::unfold((state, stream), |(mut state, stream)| async move {
                let step = state.next_stream_page(&stream).await;
                Some((step, (state, stream)))
            })
            .flat_map(stream::iter)
            .boxed()
        }
        SubscriptionSource::All(filter) => {
            let state = Cursor {
                store,
                head,
                next: None,
                from,
                end_at,
                caught_up: false,
            };
            stream::unfold((state, filter), |(mut state, filter)| async move {
                let step = state.next_all_page(filter.as_ref()).await;
                Some((step, (state, filter)))
            })
            .flat_map(stream::iter)
            .boxed()
        }
    }
    .scan(false, |failed, item| {
        // End the stream after the first error.
        let out = (!*failed).then_some(item);
        *failed |= matches!(out, Some(Err(_)));
        futures::future::ready(out)
    })
    .boxed()
}

struct Cursor<S: ?Sized> {
    store: Arc<S>,
    head: watch::Receiver<Position>,
    /// The next revision / position to read; `None` until resolved from `from`.
    next: Option<u64>,
    from: SubscribeFrom<u64>,
    /// The log head when the subscription was made (where `End` starts).
    end_at: Position,
    caught_up: bool,
}

type Step = Vec<Result<SubscriptionMessage, ReadError>>;

impl<S: EventReader + ?Sized> Cursor<S> {
    /// Waits for the head to move unless `more` says the last read was not the end.
    async fn wait_unless(&mut self, more: bool, out: &mut Step) -> Result<(), ReadError> {
        if more {
            return Ok(());
        }
        if !self.caught_up {
            self.caught_up = true;
            out.push(Ok(SubscriptionMessage::CaughtUp));
            return Ok(());
        }
        if !out.is_empty() {
            // Deliver what this read found before waiting: the next read either finds
            // nothing new and waits, or sees commits made since (the head was observed
            // before this read, so none is missed).
            return Ok(());
        }
        self.head
            .changed()
            .await
            .map_err(|_| crate::error::StorageError::Closed)?;
        Ok(())
    }

    async fn stream_start(&self, stream: &StreamName) -> Result<u64, ReadError> {
        Ok(match self.from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(r) => r.saturating_add(1),
            SubscribeFrom::End => {
                // After the last event committed before the subscription was made; events
                // committed since then (before this first poll) are delivered.
                let recent = ReadStreamOptions::backward().limit(PAGE_SIZE);
                match self.store.read_stream(stream, recent).await {
                    Ok(events) => events
                        .iter()
                        .find(|e| e.event.position < self.end_at)
                        .or(events.last())
                        .map_or(0, |e| {
                            let before = e.event.position < self.end_at;
                            e.read_revision() + u64::from(before)
                        }),
                    Err(ReadError::StreamNotFound { .. }) => 0,
                    Err(e) => return Err(e),
                }
            }
        })
    }

    async fn next_stream_page(&mut self, stream: &StreamName) -> Step {
        let mut out = Vec::new();
        if let Err(e) = self.stream_page(stream, &mut out).await {
            out.push(Err(e));
        }
        out
    }

    async fn stream_page(&mut self, stream: &StreamName, out: &mut Step) -> Result<(), ReadError> {
        self.head.borrow_and_update();
        let next = match self.next {
            Some(next) => next,
            None => self.stream_start(stream).await?,
        };
        self.next = Some(next);
        let options = ReadStreamOptions::forward()
            .from_revision(next)
            .limit(PAGE_SIZE);
        let events = match self.store.read_stream(stream, options).await {
            Ok(events) => events,
            Err(ReadError::StreamNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let full = events.len() as u64 == PAGE_SIZE;
        if let Some(last) = events.last() {
            self.next = Some(last.read_revision() + 1);
        }
        out.extend(
            events
                .into_iter()
                .map(|e| Ok(SubscriptionMessage::Event(e))),
        );
        self.wait_unless(full, out).await
    }

    async fn next_all_page(&mut self, filter: Option<&Filter>) -> Step {
        let mut out = Vec::new();
        if let Err(e) = self.all_page(filter, &mut out).await {
            out.push(Err(e));
        }
        out
    }

    async fn all_page(&mut self, filter: Option<&Filter>, out: &mut Step) -> Result<(), ReadError> {
        let head = *self.head.borrow_and_update();
        let next = match (self.next, self.from) {
            (Some(next), _) => next,
            (None, SubscribeFrom::Start) => 0,
            (None, SubscribeFrom::After(p)) => p.saturating_add(1),
            (None, SubscribeFrom::End) => self.end_at.0.min(head.0),
        };
        self.next = Some(next);
        let options = ReadAllOptions {
            direction: Direction::Forward,
            from: AllFrom::Position(Position(next)),
            limit: PAGE_SIZE,
            filter: filter.cloned(),
            max_scan: filter.map(|_| MAX_SCAN),
        };
        let slice = self.store.read_all(options).await?;
        let examined_to = slice.next.map_or(next, |p| p.0);
        out.extend(
            slice
                .events
                .into_iter()
                .map(|e| Ok(SubscriptionMessage::Event(e))),
        );
        if filter.is_some() && examined_to > next {
            out.push(Ok(SubscriptionMessage::Checkpoint(Position(
                examined_to - 1,
            ))));
        }
        self.next = Some(examined_to.max(next));
        self.wait_unless(!slice.end_of_log, out).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::memory::MemoryStore;
    use crate::{EventAppender, EventType, ExpectedRevision, NewEvent};

    /// Regression: a live read used to hold the events it found until the *next* commit.
    #[tokio::test]
    async fn live_events_are_delivered_without_waiting_for_another_commit() {
        let store = Arc::new(MemoryStore::new());
        let stream = StreamName::new("a-1").unwrap();
        let event = || NewEvent::json(EventType::new("T").unwrap(), "{}");
        let append = |e: NewEvent| {
            let (store, stream) = (store.clone(), stream.clone());
            async move { store.append(&stream, ExpectedRevision::Any, vec![e]).await }
        };
        append(event()).await.unwrap();
        let source = SubscriptionSource::Stream(stream.clone());
        let mut sub = subscribe(store.clone(), source, SubscribeFrom::Start);
        let mut all = subscribe(
            store.clone(),
            SubscriptionSource::All(None),
            SubscribeFrom::Start,
        );
        for s in [&mut sub, &mut all] {
            assert!(matches!(
                s.next().await,
                Some(Ok(SubscriptionMessage::Event(_)))
            ));
            assert_eq!(
                s.next().await.unwrap().unwrap(),
                SubscriptionMessage::CaughtUp
            );
        }
        let live = event();
        append(live.clone()).await.unwrap();
        for s in [&mut sub, &mut all] {
            let next = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
            match next {
                Ok(Some(Ok(SubscriptionMessage::Event(e)))) => assert_eq!(e.event.id, live.id),
                other => panic!("expected the live event, got {other:?}"),
            }
        }
    }

    /// `End` is the head when `subscribe` was called: an append made before the first poll
    /// is delivered.
    #[tokio::test]
    async fn end_means_the_head_at_subscribe_time() {
        let store = Arc::new(MemoryStore::new());
        let stream = StreamName::new("b-1").unwrap();
        let event = || NewEvent::json(EventType::new("T").unwrap(), "{}");
        store
            .append(&stream, ExpectedRevision::Any, vec![event()])
            .await
            .unwrap();
        let mut sub = subscribe(
            store.clone(),
            SubscriptionSource::Stream(stream.clone()),
            SubscribeFrom::End,
        );
        let mut all = subscribe(
            store.clone(),
            SubscriptionSource::All(None),
            SubscribeFrom::End,
        );
        let late = event();
        store
            .append(&stream, ExpectedRevision::Any, vec![late.clone()])
            .await
            .unwrap();
        for s in [&mut sub, &mut all] {
            match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
                Ok(Some(Ok(SubscriptionMessage::Event(e)))) => assert_eq!(e.event.id, late.id),
                other => panic!("expected the event appended after subscribing, got {other:?}"),
            }
        }
    }
}
