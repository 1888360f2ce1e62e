//! The traits every backend implements: [`EventAppender`] writes, [`EventReader`] reads,
//! [`EventStore`] is both. Subscriptions are built on top of them ([`crate::subscription`]).

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{AppendError, ReadError};
use crate::event::NewEvent;
use crate::event::ResolvedEvent;
use crate::metadata::StreamMetadata;
use crate::name::StreamName;
use crate::position::{AppendResult, ExpectedRevision, Position};
use crate::read::{AllSlice, ReadAllOptions, ReadStreamOptions};
use crate::write::{StreamWrite, WriteRequest};

/// Writes to a store. Only [`EventAppender::write`] is required.
#[async_trait]
pub trait EventAppender: Send + Sync {
    /// Executes a write request atomically and durably: when this returns `Ok`, the records
    /// are on stable storage. Returns one result per stream write (one for metadata, delete
    /// and tombstone requests).
    async fn write(&self, request: WriteRequest) -> Result<Vec<AppendResult>, AppendError>;

    /// Appends events to one stream.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        single(
            self.write(WriteRequest::append_one(stream, expected, events))
                .await?,
        )
    }

    /// Appends to several streams in one atomic commit: every expectation holds and all
    /// events are written, or nothing is.
    async fn append_multi(
        &self,
        writes: Vec<StreamWrite>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        self.write(WriteRequest::Append(writes)).await
    }

    /// Replaces a stream's metadata; `expected` concerns the metadata stream `$$<stream>`.
    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<AppendResult, AppendError> {
        let metadata = Box::new(metadata);
        let request = WriteRequest::SetMetadata {
            stream: stream.clone(),
            expected,
            metadata,
        };
        single(self.write(request).await?)
    }

    /// Soft-deletes a stream: it reads as not found until it is written again, and its
    /// revisions then continue where they stopped.
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, AppendError> {
        single(
            self.write(WriteRequest::Delete {
                stream: stream.clone(),
                expected,
            })
            .await?,
        )
    }

    /// Hard-deletes a stream: its name can never be written again.
    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, AppendError> {
        single(
            self.write(WriteRequest::Tombstone {
                stream: stream.clone(),
                expected,
            })
            .await?,
        )
    }
}

/// The one result of a single-stream write (an append to one stream, a metadata change, a
/// delete or a tombstone); a backend that returned none is at fault.
pub fn single(
    results: impl IntoIterator<Item = AppendResult>,
) -> Result<AppendResult, AppendError> {
    results.into_iter().next().ok_or_else(|| {
        AppendError::Storage(crate::error::StorageError::backend(
            "backend returned no result for a single-stream write",
        ))
    })
}

/// Reads from a store.
#[async_trait]
pub trait EventReader: Send + Sync {
    /// Reads a stream: a regular stream, a metadata stream `$$<stream>`, or a virtual stream
    /// `$ce-<category>` / `$et-<type>` (whose events carry a [`crate::Link`]).
    ///
    /// Fails with `StreamNotFound` when the stream has no records or was soft-deleted, and
    /// with `StreamDeleted` when it was tombstoned.
    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<ResolvedEvent>, ReadError>;

    /// Reads the global log.
    async fn read_all(&self, options: ReadAllOptions) -> Result<AllSlice, ReadError>;

    /// Watches the head of the log: the position after the last committed record. It
    /// changes after every commit; subscriptions use it to wake up.
    fn watch_head(&self) -> watch::Receiver<Position>;

    /// A stream's current metadata and the revision of `$$<stream>` that holds it.
    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<(u64, StreamMetadata)>, ReadError> {
        let options = ReadStreamOptions::backward().limit(1);
        let last = match self.read_stream(&stream.metadata_stream(), options).await {
            Ok(events) => events.into_iter().next(),
            Err(ReadError::StreamNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(last) = last else { return Ok(None) };
        let metadata = StreamMetadata::from_bytes(&last.event.data)
            .map_err(|e| ReadError::Invalid(e.into()))?;
        Ok(Some((last.event.revision, metadata)))
    }
}

/// A store that reads and writes.
pub trait EventStore: EventAppender + EventReader {}

impl<T: EventAppender + EventReader + ?Sized> EventStore for T {}
