//! What every request handler shares, and the request path common to both APIs: validation
//! against the server's limits, the durable write with its metrics, paged reads, and
//! subscriptions that end when the server shuts down.

use std::sync::Arc;
use std::time::Instant;

use annals_core::metadata::METADATA_EVENT_TYPE;
use annals_core::subscription::{self, SubscribeFrom, SubscriptionSource};
use annals_core::{
    AllFrom, AppendError, AppendResult, Direction, EventStore, ExpectedRevision, Filter,
    InvalidInput, NewEvent, Position, ReadAllOptions, ReadError, ReadStreamOptions, ResolvedEvent,
    StreamFrom, StreamKind, StreamMetadata, StreamName, StreamWrite, SubscriptionMessage,
    WriteRequest,
};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::{Api, Metrics, Outcome};

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) metrics: Arc<Metrics>,
    /// Becomes `true` when the server starts shutting down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// This node's id, reported by Gossip.
    pub(crate) instance_id: uuid::Uuid,
    /// Lets the stopping server wait until no handler, task or response stream holds the
    /// store any more: whatever takes the store beyond a handler takes this too.
    pub(crate) in_use: crate::prompt::InUse,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds the write for an append to `stream`. An append to a metadata stream `$$<s>` is how
/// KurrentDB clients set stream metadata: exactly one `$metadata` event whose data is the
/// metadata JSON.
pub(crate) fn append_request(
    stream: StreamName,
    expected: ExpectedRevision,
    mut events: Vec<NewEvent>,
) -> Result<WriteRequest, ApiError> {
    if let StreamKind::Metadata { target } = stream.kind() {
        let target =
            StreamName::new(target).map_err(|e| ApiError::field("stream", e.to_string()))?;
        if events.len() != 1 {
            return Err(ApiError::field(
                "events",
                format!(
                    "a write to the metadata stream '{stream}' must carry exactly one {METADATA_EVENT_TYPE} event, got {}",
                    events.len()
                ),
            ));
        }
        let event = events.remove(0);
        if event.event_type.as_str() != METADATA_EVENT_TYPE {
            return Err(ApiError::field(
                "type",
                format!(
                    "events in metadata streams must have type {METADATA_EVENT_TYPE}, got '{}'",
                    event.event_type
                ),
            ));
        }
        let metadata = StreamMetadata::from_bytes(&event.data)
            .map_err(|e| ApiError::Append(AppendError::Invalid(InvalidInput::Metadata(e))))?;
        return Ok(WriteRequest::SetMetadata {
            stream: target,
            expected,
            metadata: Box::new(metadata),
        });
    }
    Ok(WriteRequest::Append(vec![StreamWrite {
        stream,
        expected,
        events,
    }]))
}

impl AppState {
    /// True once shutdown started.
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Validates a write against the server's limits, executes it durably and records it.
    pub(crate) async fn write(
        &self,
        api: Api,
        request: WriteRequest,
    ) -> Result<Vec<AppendResult>, ApiError> {
        if self.is_shutting_down() {
            return Err(ApiError::ShuttingDown);
        }
        let (events, bytes) = match &request {
            WriteRequest::Append(writes) => writes
                .iter()
                .flat_map(|w| &w.events)
                .fold((0u64, 0u64), |(n, b), e| {
                    (n + 1, b + e.payload_len() as u64)
                }),
            _ => (0, 0),
        };
        if let Err(e) = annals_core::write::validate(&request, &self.config.limits) {
            self.metrics.write_done(api, Outcome::Invalid, 0, 0);
            return Err(ApiError::Append(AppendError::Invalid(e)));
        }
        let started = Instant::now();
        let result = self.store.write(request).await;
        match &result {
            Ok(_) => {
                self.metrics.commit.observe(started.elapsed());
                self.metrics.write_done(api, Outcome::Ok, events, bytes);
            }
            Err(e) => self.metrics.write_done(api, Outcome::of(e), 0, 0),
        }
        result.map_err(ApiError::Append)
    }

    /// Reads up to `count` events of a stream in pages of `read_batch`, from `from`
    /// (inclusive) in `direction`. The first page's error (not found, deleted) is returned
    /// before the stream starts.
    pub(crate) async fn read_stream(
        &self,
        stream: StreamName,
        direction: Direction,
        from: StreamFrom,
        count: u64,
    ) -> Result<BoxStream<'static, Result<ResolvedEvent, ReadError>>, ReadError> {
        let batch = self.config.read_batch.max(1);
        let first = ReadStreamOptions {
            direction,
            from,
            limit: count.min(batch),
        };
        let events = self.store.read_stream(&stream, first).await?;
        let (store, in_use) = (Arc::clone(&self.store), self.in_use.clone());
        struct Cursor {
            page: std::vec::IntoIter<ResolvedEvent>,
            next: Option<u64>,
            remaining: u64,
        }
        let remaining = count.saturating_sub(events.len() as u64);
        let next = next_revision(&events, direction, first.limit);
        let cursor = Cursor {
            page: events.into_iter(),
            next,
            remaining,
        };
        let pages = stream::unfold(cursor, move |mut cursor| {
            let _held = &in_use;
            let store = Arc::clone(&store);
            let stream = stream.clone();
            async move {
                loop {
                    if let Some(event) = cursor.page.next() {
                        return Some((Ok(event), cursor));
                    }
                    let from = cursor.next.take()?;
                    if cursor.remaining == 0 {
                        return None;
                    }
                    let options = ReadStreamOptions {
                        direction,
                        from: StreamFrom::Revision(from),
                        limit: cursor.remaining.min(batch),
                    };
                    match store.read_stream(&stream, options).await {
                        Ok(events) => {
                            cursor.remaining -= events.len() as u64;
                            cursor.next = next_revision(&events, direction, options.limit);
                            cursor.page = events.into_iter();
                        }
                        Err(ReadError::StreamNotFound { .. }) => return None,
                        Err(e) => return Some((Err(e), cursor)),
                    }
                }
            }
        });
        Ok(pages.boxed())
    }

    /// Reads up to `count` events of `$all` in pages, from `from` (inclusive).
    pub(crate) fn read_all(
        &self,
        direction: Direction,
        from: AllFrom,
        count: u64,
        filter: Option<Filter>,
    ) -> BoxStream<'static, Result<ResolvedEvent, ReadError>> {
        let batch = self.config.read_batch.max(1);
        let (store, in_use) = (Arc::clone(&self.store), self.in_use.clone());
        struct Cursor {
            page: std::vec::IntoIter<ResolvedEvent>,
            from: Option<AllFrom>,
            remaining: u64,
        }
        let cursor = Cursor {
            page: Vec::new().into_iter(),
            from: Some(from),
            remaining: count,
        };
        stream::unfold(cursor, move |mut cursor| {
            let _held = &in_use;
            let store = Arc::clone(&store);
            let filter = filter.clone();
            async move {
                loop {
                    if let Some(event) = cursor.page.next() {
                        return Some((Ok(event), cursor));
                    }
                    if cursor.remaining == 0 {
                        return None;
                    }
                    let from = cursor.from.take()?;
                    let options = ReadAllOptions {
                        direction,
                        from,
                        limit: cursor.remaining.min(batch),
                        filter: filter.clone(),
                        max_scan: None,
                    };
                    match store.read_all(options).await {
                        Ok(slice) => {
                            cursor.remaining -= slice.events.len() as u64;
                            cursor.from = match (slice.end_of_log, slice.next) {
                                (false, Some(next)) => Some(AllFrom::Position(next)),
                                _ => None,
                            };
                            cursor.page = slice.events.into_iter();
                        }
                        Err(e) => return Some((Err(e), cursor)),
                    }
                }
            }
        })
        .boxed()
    }

    /// A catch-up subscription that ends (without error) when the server shuts down.
    pub(crate) fn subscribe(
        &self,
        source: SubscriptionSource,
        from: SubscribeFrom<u64>,
    ) -> BoxStream<'static, Result<SubscriptionMessage, ReadError>> {
        let mut shutdown = self.shutdown.clone();
        let in_use = self.in_use.clone();
        let stop = async move {
            // Held until the subscription ends.
            let _held = in_use;
            // Ends when shutdown becomes true or the sender is gone.
            let _ = shutdown.wait_for(|down| *down).await;
        };
        subscription::subscribe(Arc::clone(&self.store), source, from)
            .take_until(stop)
            .boxed()
    }

    /// The next position to be written.
    pub(crate) fn head(&self) -> Position {
        *self.store.watch_head().borrow()
    }
}

/// Where the next page of a stream read starts, if the page was full.
fn next_revision(events: &[ResolvedEvent], direction: Direction, limit: u64) -> Option<u64> {
    if (events.len() as u64) < limit {
        return None;
    }
    let last = events.last()?.read_revision();
    match direction {
        Direction::Forward => last.checked_add(1),
        Direction::Backward => last.checked_sub(1),
    }
}
