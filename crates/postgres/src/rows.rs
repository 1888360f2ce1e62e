//! Rows to core types.

use annals_core::{
    ContentType, EventType, Position, RecordedEvent, StreamMetadata, StreamName, Timestamp,
};
use bytes::Bytes;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::PgError;

/// The columns [`event`] decodes, in a `SELECT` list.
macro_rules! event_columns {
    () => {
        "position, stream, revision, event_id, event_type, is_json, data, metadata, created_us"
    };
}
pub(crate) use event_columns;

/// Decodes a row selected with [`event_columns!`].
pub(crate) fn event(row: &PgRow) -> Result<RecordedEvent, PgError> {
    let get = PgError::db("decoding an event row");
    let position: i64 = row.try_get("position").map_err(get)?;
    let bad = |detail: String| PgError::BadRow { position, detail };
    let stream: String = row
        .try_get("stream")
        .map_err(PgError::db("decoding a stream"))?;
    let event_type: String = row
        .try_get("event_type")
        .map_err(PgError::db("decoding an event type"))?;
    let revision: i64 = row
        .try_get("revision")
        .map_err(PgError::db("decoding a revision"))?;
    let created: i64 = row
        .try_get("created_us")
        .map_err(PgError::db("decoding a timestamp"))?;
    let is_json: bool = row
        .try_get("is_json")
        .map_err(PgError::db("decoding a content type"))?;
    let data: Vec<u8> = row.try_get("data").map_err(PgError::db("decoding data"))?;
    let metadata: Vec<u8> = row
        .try_get("metadata")
        .map_err(PgError::db("decoding metadata"))?;
    let id: Uuid = row
        .try_get("event_id")
        .map_err(PgError::db("decoding an event id"))?;
    Ok(RecordedEvent {
        stream: StreamName::new(&stream).map_err(|e| bad(format!("stream name: {e}")))?,
        revision: unsigned(revision).ok_or_else(|| bad(format!("revision {revision}")))?,
        position: Position(unsigned(position).ok_or_else(|| bad("negative position".into()))?),
        id,
        event_type: EventType::new(&event_type).map_err(|e| bad(format!("event type: {e}")))?,
        content_type: if is_json {
            ContentType::Json
        } else {
            ContentType::Binary
        },
        data: Bytes::from(data),
        metadata: Bytes::from(metadata),
        created: Timestamp(unsigned(created).ok_or_else(|| bad(format!("time {created}")))?),
    })
}

/// A stored stream's state: one row of `streams`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StreamRow {
    /// Bumped by every write to the stream or its metadata stream.
    pub version: i64,
    pub last_revision: Option<u64>,
    pub last_event_id: Option<Uuid>,
    pub tombstoned: bool,
    pub meta_revision: Option<u64>,
    pub meta_event_id: Option<Uuid>,
    pub metadata: Option<Vec<u8>>,
}

/// The columns [`stream_row`] decodes.
macro_rules! stream_columns {
    () => {
        "name, version, last_revision, last_event_id, tombstoned, meta_revision, meta_event_id, metadata"
    };
}
pub(crate) use stream_columns;

/// Decodes a row selected with [`stream_columns!`]: its name and state.
pub(crate) fn stream_row(row: &PgRow) -> Result<(String, StreamRow), PgError> {
    let get = || PgError::db("decoding a stream row");
    let revision = |column: &str| -> Result<Option<u64>, PgError> {
        let value: Option<i64> = row.try_get(column).map_err(get())?;
        Ok(value.and_then(unsigned))
    };
    Ok((
        row.try_get("name").map_err(get())?,
        StreamRow {
            version: row.try_get("version").map_err(get())?,
            last_revision: revision("last_revision")?,
            last_event_id: row.try_get("last_event_id").map_err(get())?,
            tombstoned: row.try_get("tombstoned").map_err(get())?,
            meta_revision: revision("meta_revision")?,
            meta_event_id: row.try_get("meta_event_id").map_err(get())?,
            metadata: row.try_get("metadata").map_err(get())?,
        },
    ))
}

impl StreamRow {
    /// The stream's metadata, if any was set.
    pub(crate) fn parsed_metadata(&self, stream: &str) -> Result<Option<StreamMetadata>, PgError> {
        self.metadata
            .as_deref()
            .map(StreamMetadata::from_bytes)
            .transpose()
            .map_err(|e| PgError::BadRow {
                position: -1,
                detail: format!("metadata of stream '{stream}': {e}"),
            })
    }
}

/// A non-negative database integer as u64.
pub(crate) fn unsigned(value: i64) -> Option<u64> {
    u64::try_from(value).ok()
}

/// A u64 the database stores as bigint (revisions, positions and times stay below 2^63).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
