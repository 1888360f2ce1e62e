//! The message format, identical for every sink: a CloudEvents 1.0 event in structured JSON
//! mode (`application/cloudevents+json`).
//!
//! | attribute | value |
//! |---|---|
//! | `specversion` | `"1.0"` |
//! | `id` | the outbox message id (UUID); also the broker's dedup id |
//! | `source` | `[envelope] source` from the config |
//! | `type` | the outbox row's `event_type` |
//! | `subject` | the aggregate id (the ordering key) |
//! | `time` | when the row was written (RFC 3339, UTC) |
//! | `datacontenttype` | the row's `content_type` |
//! | `aggregatetype` | the row's `aggregate_type` (extension) |
//! | `sequence` | the row's `seq` in the outbox table, as a string (extension) |
//! | `correlationid`, `causationid` | when set on the row (extensions) |
//! | `headers` | the row's free-form string headers, when not empty (extension) |
//! | `data` | the payload, inline, when it is JSON and the content type says JSON |
//! | `data_base64` | the payload otherwise |

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;
use uuid::Uuid;

/// Content type of an encoded envelope.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Envelope encode / decode failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a JSON envelope, or a required attribute is missing or malformed.
    #[error("malformed envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// `specversion` is not 1.0.
    #[error("unsupported specversion {0:?}")]
    SpecVersion(String),
    /// `data_base64` is not valid base64.
    #[error("data_base64 is not valid base64")]
    Base64,
}

/// One outbox row as the relay reads it (from the table or from the WAL).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// Position in the outbox table (`bigserial`).
    pub seq: i64,
    /// Message id.
    pub id: Uuid,
    /// Aggregate type, e.g. `member`.
    pub aggregate_type: String,
    /// Aggregate id: the ordering key.
    pub aggregate_id: String,
    /// Event type, e.g. `MemberWithdrawn`.
    pub event_type: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// Payload content type.
    pub content_type: String,
    /// Free-form headers.
    pub headers: BTreeMap<String, String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    specversion: &'static str,
    id: Uuid,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: &'a str,
    time: String,
    datacontenttype: &'a str,
    aggregatetype: &'a str,
    sequence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

fn is_json(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim();
    base == "application/json" || base.ends_with("+json")
}

/// Encodes a record as a structured-mode CloudEvent.
pub fn encode(record: &OutboxRecord, source: &str) -> Result<Bytes, EnvelopeError> {
    let raw: Option<&RawValue> = if is_json(&record.content_type) {
        serde_json::from_slice::<&RawValue>(&record.payload).ok()
    } else {
        None
    };
    let data_base64 = match raw {
        Some(_) => None,
        None => Some(base64::engine::general_purpose::STANDARD.encode(&record.payload)),
    };
    let out = Outgoing {
        specversion: "1.0",
        id: record.id,
        source,
        event_type: &record.event_type,
        subject: &record.aggregate_id,
        time: record
            .created_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        datacontenttype: &record.content_type,
        aggregatetype: &record.aggregate_type,
        sequence: record.seq.to_string(),
        correlationid: record.correlation_id.as_deref(),
        causationid: record.causation_id.as_deref(),
        headers: &record.headers,
        data: raw,
        data_base64,
    };
    Ok(Bytes::from(serde_json::to_vec(&out)?))
}

/// A decoded envelope, as a consumer sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    /// Always `"1.0"`.
    pub specversion: String,
    /// Message id (dedup key for the inbox).
    pub id: Uuid,
    /// Producer.
    pub source: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Aggregate id.
    pub subject: String,
    /// When the row was written.
    pub time: DateTime<Utc>,
    /// Payload content type.
    pub datacontenttype: String,
    /// Aggregate type.
    pub aggregatetype: String,
    /// Outbox sequence, as a decimal string.
    pub sequence: String,
    /// Correlation id.
    #[serde(default)]
    pub correlationid: Option<String>,
    /// Causation id.
    #[serde(default)]
    pub causationid: Option<String>,
    /// Free-form headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Inline JSON payload.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    /// Non-JSON payload, base64.
    #[serde(default)]
    pub data_base64: Option<String>,
}

impl Envelope {
    /// Decodes an envelope from a message body.
    pub fn decode(body: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Envelope = serde_json::from_slice(body)?;
        if env.specversion != "1.0" {
            return Err(EnvelopeError::SpecVersion(env.specversion));
        }
        Ok(env)
    }

    /// The payload bytes, whichever way they were carried.
    pub fn data_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        match (&self.data, &self.data_base64) {
            (Some(raw), _) => Ok(raw.get().as_bytes().to_vec()),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| EnvelopeError::Base64),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// The payload deserialized from JSON.
    pub fn data_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        Ok(serde_json::from_slice(&self.data_bytes()?)?)
    }
}

/// Makes a string safe as one NATS subject token / AMQP routing-key word.
pub(crate) fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8], content_type: &str) -> OutboxRecord {
        OutboxRecord {
            seq: 7,
            id: Uuid::new_v4(),
            aggregate_type: "member".into(),
            aggregate_id: "m-1".into(),
            event_type: "MemberWithdrawn".into(),
            payload: Bytes::copy_from_slice(payload),
            content_type: content_type.into(),
            headers: BTreeMap::from([("tenant".to_string(), "t1".to_string())]),
            correlation_id: Some("corr".into()),
            causation_id: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn json_payload_is_inline_and_round_trips() {
        let r = record(br#"{"member":"m-1","n":3}"#, "application/json");
        let body = encode(&r, "svc").expect("encode");
        let text = std::str::from_utf8(&body).expect("utf8");
        assert!(text.contains(r#""data":{"member":"m-1","n":3}"#), "{text}");
        let env = Envelope::decode(&body).expect("decode");
        assert_eq!(env.id, r.id);
        assert_eq!(env.subject, "m-1");
        assert_eq!(env.event_type, "MemberWithdrawn");
        assert_eq!(env.sequence, "7");
        assert_eq!(env.correlationid.as_deref(), Some("corr"));
        assert_eq!(env.headers.get("tenant").map(String::as_str), Some("t1"));
        let v: serde_json::Value = env.data_json().expect("json");
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn binary_or_invalid_json_payload_goes_base64() {
        for (payload, ct) in [
            (&b"\x00\xff"[..], "application/octet-stream"),
            (b"{no", "application/json"),
        ] {
            let r = record(payload, ct);
            let env = Envelope::decode(&encode(&r, "svc").expect("encode")).expect("decode");
            assert!(env.data.is_none());
            assert_eq!(env.data_bytes().expect("bytes"), payload);
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(
            Envelope::decode(b"\x00garbage"),
            Err(EnvelopeError::Malformed(_))
        ));
        let bad = br#"{"specversion":"0.3","id":"6f1c3b1e-5b1a-4e8e-9d55-2b7f7e1c0a11","source":"s","type":"t","subject":"x","time":"2024-01-01T00:00:00Z","datacontenttype":"a","aggregatetype":"b","sequence":"1"}"#;
        assert!(matches!(
            Envelope::decode(bad),
            Err(EnvelopeError::SpecVersion(_))
        ));
    }

    #[test]
    fn tokens_are_sanitized() {
        assert_eq!(token("a.b c>*"), "a_b_c__");
        assert_eq!(token(""), "_");
    }
}
