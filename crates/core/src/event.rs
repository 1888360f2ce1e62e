//! Events as written by clients and as read back from a store.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::name::{EventType, StreamName};
use crate::position::Position;

/// How `data` is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// `application/json`: the store checks that `data` parses as JSON.
    #[default]
    Json,
    /// `application/octet-stream`: opaque bytes.
    Binary,
}

impl ContentType {
    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

/// A point in time: microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// This time plus a duration, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }

    /// This time minus a duration, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let micros = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        Self(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with microseconds, e.g. `2026-11-22T10:00:00.000000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000;
        let micros = self.0 % 1_000_000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id; re-sending the same ids makes an append idempotent.
    pub id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// How `data` is encoded.
    pub content_type: ContentType,
    /// The payload.
    pub data: Bytes,
    /// Free-form metadata (JSON by convention: correlation id, causation id, …).
    pub metadata: Bytes,
}

impl NewEvent {
    /// A JSON event with a fresh random id and no metadata.
    pub fn json(event_type: EventType, data: impl Into<Bytes>) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_type,
            content_type: ContentType::Json,
            data: data.into(),
            metadata: Bytes::new(),
        }
    }

    /// A binary event with a fresh random id and no metadata.
    pub fn binary(event_type: EventType, data: impl Into<Bytes>) -> Self {
        Self {
            content_type: ContentType::Binary,
            ..Self::json(event_type, data)
        }
    }

    /// Replaces the id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Bytes this event occupies in payload (data, metadata, type), used for size limits.
    pub fn payload_len(&self) -> usize {
        self.data.len() + self.metadata.len() + self.event_type.as_str().len()
    }
}

/// An event as stored: its place in its stream and in the global log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Its 0-based index in the stream.
    pub revision: u64,
    /// Its place in the global log.
    pub position: Position,
    /// The id given at append.
    pub id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// How `data` is encoded.
    pub content_type: ContentType,
    /// The payload.
    pub data: Bytes,
    /// The metadata given at append.
    pub metadata: Bytes,
    /// When the store committed it.
    pub created: Timestamp,
}

/// Where an event was found when it was read through a virtual stream (`$ce-…`, `$et-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The virtual stream.
    pub stream: StreamName,
    /// The event's 0-based index in the virtual stream.
    pub revision: u64,
}

/// An event as returned by reads and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEvent {
    /// The event itself, with its own stream and revision.
    pub event: RecordedEvent,
    /// Set when the event was read through a virtual stream.
    pub link: Option<Link>,
}

impl ResolvedEvent {
    /// The revision to continue from when paging the stream that was read: the link's
    /// revision for virtual streams, the event's own otherwise.
    pub fn read_revision(&self) -> u64 {
        self.link
            .as_ref()
            .map_or(self.event.revision, |l| l.revision)
    }
}

impl From<RecordedEvent> for ResolvedEvent {
    fn from(event: RecordedEvent) -> Self {
        Self { event, link: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000Z");
        // 2026-11-22T10:20:30.123456Z
        assert_eq!(
            Timestamp(1_795_342_830_123_456).to_string(),
            "2026-11-22T10:20:30.123456Z"
        );
        // A leap day.
        assert_eq!(
            Timestamp(951_782_400_000_000).to_string(),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
