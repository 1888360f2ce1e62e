//! Errors, one enum per operation, each variant documented with what the APIs return for it.

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::metadata::MetadataError;
use crate::name::{NameError, StreamName};
use crate::position::{CurrentRevision, ExpectedRevision};

/// The storage under a backend failed. Not the caller's fault.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O operation failed. HTTP 500 / gRPC `UNAVAILABLE`.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// Stored data failed a check (checksum, framing, ordering). HTTP 500 / gRPC `DATA_LOSS`.
    #[error("corruption in {} at offset {offset}: {detail}", file.display())]
    Corruption {
        /// The file.
        file: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An earlier write or fsync failed; the store accepts no writes until it is reopened and
    /// recovered. HTTP 503 / gRPC `UNAVAILABLE`.
    #[error(
        "the store stopped accepting writes after an earlier failure ({cause}); reopen it to recover"
    )]
    Poisoned {
        /// The original failure.
        cause: Arc<str>,
    },
    /// The store was closed. HTTP 503 / gRPC `UNAVAILABLE`.
    #[error("the store is closed")]
    Closed,
    /// Another backend's failure (e.g. a PostgreSQL error). HTTP 500 / gRPC `UNAVAILABLE`.
    #[error("backend error: {0}")]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// A backend failure described by a message.
    pub fn backend(message: impl Into<String>) -> Self {
        let boxed: Box<dyn std::error::Error + Send + Sync> = message.into().into();
        StorageError::Backend(Arc::from(boxed))
    }

    /// A corruption report.
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> Self {
        StorageError::Corruption {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }
}

/// A request was malformed; nothing was written. HTTP 400 (413 for sizes) /
/// gRPC `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A stream name or event type is malformed.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Users may not append to streams starting with `$`.
    #[error("stream '{stream}' is reserved for the system (names starting with '$')")]
    ReservedStream {
        /// The stream.
        stream: StreamName,
    },
    /// Virtual streams (`$ce-`, `$et-`) and `$all` are read-only.
    #[error("stream '{stream}' is virtual and read-only")]
    ReadOnlyStream {
        /// The stream.
        stream: StreamName,
    },
    /// An event declared as JSON does not parse.
    #[error("event {event_id}: data is declared as JSON but does not parse: {detail}")]
    InvalidJson {
        /// The event.
        event_id: Uuid,
        /// The parser's message (line and column).
        detail: String,
    },
    /// One event is larger than the limit. HTTP 413.
    #[error("event {event_id} is {size} bytes; the limit is {limit}")]
    EventTooLarge {
        /// The event.
        event_id: Uuid,
        /// Its size (data + metadata + type).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The whole append is larger than the limit. HTTP 413.
    #[error("the append is {size} bytes; the limit is {limit}")]
    AppendTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The append holds more records than the backend can place in one commit (PostgreSQL:
    /// 2^20 - 1, the index part of a position). HTTP 413.
    #[error("the append holds {count} records; this backend takes at most {limit} per commit")]
    TooManyEvents {
        /// Records the append would write.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The same event id appears twice in one append.
    #[error("event id {id} appears more than once in the append")]
    DuplicateEventId {
        /// The id.
        id: Uuid,
    },
    /// The same stream appears twice in one multi-stream append.
    #[error("stream '{stream}' appears more than once in the multi-stream append")]
    DuplicateStream {
        /// The stream.
        stream: StreamName,
    },
    /// A multi-stream append named no stream.
    #[error("a multi-stream append needs at least one stream")]
    NoStreams,
    /// Stream metadata is malformed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Why an append (or a metadata write, delete or tombstone) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The stream is not at the expected revision; nothing was written.
    /// HTTP 409 / gRPC `WrongExpectedVersion`.
    #[error("stream '{stream}': expected revision {expected}, but the stream is at {actual}")]
    WrongExpectedRevision {
        /// The stream.
        stream: StreamName,
        /// What the writer expected.
        expected: ExpectedRevision,
        /// What the stream is at.
        actual: CurrentRevision,
    },
    /// The stream was tombstoned (hard-deleted); its name can never be written again.
    /// HTTP 410 / gRPC `StreamDeleted`.
    #[error("stream '{stream}' is deleted (tombstoned)")]
    StreamDeleted {
        /// The stream.
        stream: StreamName,
    },
    /// The request is malformed; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The storage failed. Whether the append took effect is unknown unless the error is
    /// [`StorageError::Poisoned`] or [`StorageError::Closed`] raised before writing.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<NameError> for AppendError {
    fn from(e: NameError) -> Self {
        AppendError::Invalid(InvalidInput::Name(e))
    }
}

/// Why a read or subscription failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream has no events, or was soft-deleted. HTTP 404 / gRPC `StreamNotFound`.
    #[error("stream '{stream}' not found")]
    StreamNotFound {
        /// The stream.
        stream: StreamName,
    },
    /// The stream was tombstoned. HTTP 410 / gRPC `StreamDeleted`.
    #[error("stream '{stream}' is deleted (tombstoned)")]
    StreamDeleted {
        /// The stream.
        stream: StreamName,
    },
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<NameError> for ReadError {
    fn from(e: NameError) -> Self {
        ReadError::Invalid(InvalidInput::Name(e))
    }
}

/// Any Annals error, for callers that handle them together.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An append failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}
