//! Outbox rows from pgoutput's text-format tuples.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use pg_walstream::RowData;

use crate::envelope::OutboxRecord;
use crate::error::SourceError;
use crate::source::headers_from_json;

fn text<'a>(row: &'a RowData, col: &str) -> Option<&'a str> {
    row.get(col)
        .filter(|v| !v.is_null())
        .and_then(|v| v.as_str())
}

/// Decodes a `bytea` in PostgreSQL's hex output format (`\x0a1b…`).
pub(crate) fn bytea_hex(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses `timestamptz` output (`2026-11-22 10:00:00.123456+00`).
pub(crate) fn timestamptz(s: &str) -> Option<DateTime<Utc>> {
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// Builds a record from an inserted tuple. `fallback_time` (the commit time) is used only
/// if `created_at` cannot be parsed.
pub(crate) fn record(
    row: &RowData,
    lsn: u64,
    fallback_time: DateTime<Utc>,
) -> Result<OutboxRecord, SourceError> {
    let err = |reason: String| SourceError::Decode {
        lsn: super::slot::fmt_lsn(lsn),
        reason,
    };
    let req = |col: &str| text(row, col).ok_or_else(|| err(format!("column {col} missing")));
    let seq = req("seq")?
        .parse::<i64>()
        .map_err(|e| err(format!("seq: {e}")))?;
    let id = req("id")?
        .parse::<uuid::Uuid>()
        .map_err(|e| err(format!("id: {e}")))?;
    let payload = bytea_hex(req("payload")?).ok_or_else(|| err("payload: not hex bytea".into()))?;
    let headers = match text(row, "headers") {
        Some(h) => {
            headers_from_json(&serde_json::from_str(h).map_err(|e| err(format!("headers: {e}")))?)
        }
        None => Default::default(),
    };
    Ok(OutboxRecord {
        seq,
        id,
        aggregate_type: req("aggregate_type")?.to_string(),
        aggregate_id: req("aggregate_id")?.to_string(),
        event_type: req("event_type")?.to_string(),
        payload: Bytes::from(payload),
        content_type: text(row, "content_type")
            .unwrap_or("application/octet-stream")
            .to_string(),
        headers,
        correlation_id: text(row, "correlation_id").map(str::to_string),
        causation_id: text(row, "causation_id").map(str::to_string),
        created_at: text(row, "created_at")
            .and_then(timestamptz)
            .unwrap_or(fallback_time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_and_time_formats() {
        assert_eq!(bytea_hex("\\x00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(bytea_hex("\\x0"), None);
        assert_eq!(bytea_hex("00"), None);
        assert_eq!(bytea_hex("\\xzz"), None);
        let t = timestamptz("2026-11-22 10:00:00.123456+00").expect("parses");
        assert_eq!(t.timestamp_subsec_micros(), 123_456);
        let t2 = timestamptz("2026-11-22 12:00:00+02").expect("parses");
        assert_eq!(t2.timestamp(), t.timestamp());
        let t3 = timestamptz("2026-11-22 15:30:00+05:30").expect("parses");
        assert_eq!(t3.timestamp(), t.timestamp());
    }
}
