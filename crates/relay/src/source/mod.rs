//! Sources: how committed outbox rows are found. `polling/` claims batches with
//! `FOR UPDATE SKIP LOCKED`; `wal/` tails the outbox table through a logical replication slot.

pub mod polling;
pub mod wal;

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::envelope::OutboxRecord;

/// Columns selected by every query that reads whole outbox rows.
pub(crate) const COLUMNS: &str = "seq, id, aggregate_type, aggregate_id, event_type, payload, \
     content_type, headers, correlation_id, causation_id, created_at";

/// Maps a row selected with [`COLUMNS`].
pub(crate) fn record_from_row(row: &PgRow) -> Result<OutboxRecord, sqlx::Error> {
    let headers: serde_json::Value = row.try_get("headers")?;
    let payload: Vec<u8> = row.try_get("payload")?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    Ok(OutboxRecord {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        event_type: row.try_get("event_type")?,
        payload: Bytes::from(payload),
        content_type: row.try_get("content_type")?,
        headers: headers_from_json(&headers),
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        created_at,
    })
}

/// Keeps the string-valued entries of a JSON object; other values are rendered as JSON text.
pub(crate) fn headers_from_json(v: &serde_json::Value) -> BTreeMap<String, String> {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}
