//! The JSON shapes of the HTTP API (documented in the OpenAPI document) and their conversions.

use annals_core::{ContentType, EventType, ExpectedRevision, NewEvent, ResolvedEvent};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// An event as returned by reads and subscriptions.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    /// The stream the event belongs to.
    pub stream: String,
    /// Its 0-based index in that stream.
    pub revision: u64,
    /// Its place in the global log.
    pub position: u64,
    /// Its id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `application/json` or `application/octet-stream`.
    pub content_type: String,
    /// Commit time, RFC 3339 UTC.
    pub created: String,
    /// The data, when it is JSON.
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// The data in base64, when it is binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// The metadata, when it is JSON (null when empty).
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// The metadata in base64, when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_base64: Option<String>,
    /// Set when the event was read through a virtual stream (`$ce-…`, `$et-…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkJson>,
}

/// Where an event sits in the virtual stream it was read through.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkJson {
    /// The virtual stream.
    pub stream: String,
    /// The event's index in it.
    pub revision: u64,
}

impl From<&ResolvedEvent> for EventJson {
    fn from(resolved: &ResolvedEvent) -> Self {
        let e = &resolved.event;
        let (data, data_base64) = match e.content_type {
            ContentType::Json if e.data.is_empty() => (None, None),
            ContentType::Json => match serde_json::from_slice(&e.data) {
                Ok(v) => (Some(v), None),
                Err(_) => (None, Some(BASE64.encode(&e.data))),
            },
            ContentType::Binary => (None, Some(BASE64.encode(&e.data))),
        };
        let (metadata, metadata_base64) = if e.metadata.is_empty() {
            (None, None)
        } else {
            match serde_json::from_slice(&e.metadata) {
                Ok(v) => (Some(v), None),
                Err(_) => (None, Some(BASE64.encode(&e.metadata))),
            }
        };
        Self {
            stream: e.stream.to_string(),
            revision: e.revision,
            position: e.position.0,
            id: e.id.to_string(),
            event_type: e.event_type.to_string(),
            content_type: e.content_type.mime().to_owned(),
            created: e.created.to_string(),
            data,
            data_base64,
            metadata,
            metadata_base64,
            link: resolved.link.as_ref().map(|l| LinkJson {
                stream: l.stream.to_string(),
                revision: l.revision,
            }),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEventJson {
    /// A UUID; re-sending the same id at the same expected revision is idempotent. Default: a
    /// new random id.
    pub id: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// JSON data (the event's content type is then `application/json`).
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// Binary data in base64 (content type `application/octet-stream`); instead of `data`.
    pub data_base64: Option<String>,
    /// JSON metadata.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

/// An append request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppendJson {
    /// `"any"`, `"no-stream"`, `"exists"` or a revision number. May be given as the
    /// `Expected-Revision` header instead. Default `"any"`.
    #[schema(value_type = Object, example = "no-stream")]
    pub expected_revision: Option<Value>,
    /// The events, in order.
    pub events: Vec<NewEventJson>,
}

/// The outcome of an append, metadata write or delete.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteResultJson {
    /// The stream's last revision afterwards (null: the stream has no events).
    pub current_revision: Option<u64>,
    /// Position of the first event written (or originally written, for an idempotent re-send).
    pub first_position: Option<u64>,
    /// Position of the last event written.
    pub last_position: Option<u64>,
}

/// A page of events.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadPageJson {
    /// The events, in the read's direction.
    pub events: Vec<EventJson>,
    /// Pass as `from` to read the next page; null when there is none.
    pub next: Option<u64>,
}

/// Stream metadata with the revision of `$$<stream>` that holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetadataJson {
    /// Revision of the metadata stream (use it as the expected revision of the next write).
    pub revision: u64,
    /// KurrentDB-style metadata: `$maxCount`, `$maxAge`, `$tb`, `$cacheControl`, `$acl`,
    /// custom keys.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// A metadata write.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetMetadataJson {
    /// Expected revision of `$$<stream>` (as for appends). Default `"any"`.
    #[schema(value_type = Object)]
    pub expected_revision: Option<Value>,
    /// The new metadata document.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// An error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorJson {
    /// What went wrong.
    pub error: ErrorDetailJson,
}

/// The details of an error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetailJson {
    /// A stable code: `invalid_field`, `too_large`, `unsupported_media_type`, `not_found`,
    /// `stream_not_found`, `stream_deleted`, `wrong_expected_revision`, `shutting_down`,
    /// `storage`.
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// The request field at fault, when there is one (e.g. `events[0].id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The stream concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// For a wrong expected revision: what the request expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// For a wrong expected revision: where the stream is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthJson {
    /// `ok`.
    pub status: String,
    /// Annals' version.
    pub version: String,
    /// Next position to be written.
    pub head: u64,
}

/// Query parameters of reads and subscriptions.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Reads: where to start, inclusive (`start`, `end`, or a revision — a position for
    /// `$all`). Subscriptions: `start`, `end` (default), or a revision/position to resume
    /// after (exclusive; the `Last-Event-ID` header does the same).
    pub from: Option<String>,
    /// `forward` (default) or `backward`.
    pub direction: Option<String>,
    /// Page size (default 100, at most the server's `max_http_page`).
    pub limit: Option<u64>,
    /// `$all` only: comma-separated stream-name prefixes.
    pub stream_prefix: Option<String>,
    /// `$all` only: comma-separated event-type prefixes.
    pub event_type_prefix: Option<String>,
    /// `$all` only: a regular expression on stream names.
    pub stream_regex: Option<String>,
    /// `$all` only: a regular expression on event types.
    pub event_type_regex: Option<String>,
}

/// Query parameters of `DELETE /streams/{stream}`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Expected revision of the stream (default `any`; or the `Expected-Revision` header).
    pub expected_revision: Option<String>,
    /// `true` for a hard delete: the name can never be written again.
    pub tombstone: Option<bool>,
}

/// Parses an expected revision given as JSON (a number or a word).
pub(crate) fn expected_from_json(field: &str, value: &Value) -> Result<ExpectedRevision, ApiError> {
    match value {
        Value::Number(n) => n.as_u64().map(ExpectedRevision::Exact).ok_or_else(|| {
            ApiError::field(
                field,
                format!("{n} is not a revision (a non-negative integer)"),
            )
        }),
        Value::String(s) => expected_from_text(field, s),
        other => Err(ApiError::field(
            field,
            format!("expected any, no-stream, exists or a revision number, got {other}"),
        )),
    }
}

/// Parses an expected revision given as text.
pub(crate) fn expected_from_text(field: &str, text: &str) -> Result<ExpectedRevision, ApiError> {
    text.trim()
        .parse()
        .map_err(|e: String| ApiError::field(field, e))
}

/// Builds the events of an append, naming the field of the first problem.
pub(crate) fn new_events(events: Vec<NewEventJson>) -> Result<Vec<NewEvent>, ApiError> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let field = |name: &str| format!("events[{i}].{name}");
            let id = match &e.id {
                Some(text) => text.parse().map_err(|err| {
                    ApiError::field(field("id"), format!("'{text}' is not a UUID: {err}"))
                })?,
                None => uuid::Uuid::new_v4(),
            };
            let event_type = EventType::new(&e.event_type)
                .map_err(|err| ApiError::field(field("type"), err.to_string()))?;
            let (content_type, data) = match (e.data, e.data_base64) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::field(
                        field("dataBase64"),
                        "give either data or dataBase64, not both",
                    ));
                }
                (Some(v), None) => (ContentType::Json, Bytes::from(v.to_string())),
                (None, Some(b64)) => (
                    ContentType::Binary,
                    Bytes::from(BASE64.decode(b64.as_bytes()).map_err(|err| {
                        ApiError::field(field("dataBase64"), format!("not base64: {err}"))
                    })?),
                ),
                (None, None) => (ContentType::Json, Bytes::new()),
            };
            let metadata = e
                .metadata
                .map_or_else(Bytes::new, |m| Bytes::from(m.to_string()));
            Ok(NewEvent {
                id,
                event_type,
                content_type,
                data,
                metadata,
            })
        })
        .collect()
}

/// Parses a query string into `T`, naming the parameter at fault.
pub(crate) fn query<T: serde::de::DeserializeOwned + Default>(
    raw: Option<&str>,
) -> Result<T, ApiError> {
    let Some(raw) = raw else {
        return Ok(T::default());
    };
    serde_urlencoded::from_str(raw).map_err(|e| ApiError::field("query", e.to_string()))
}

/// The comma-separated prefixes of a query parameter.
pub(crate) fn prefixes(raw: &str) -> Vec<String> {
    raw.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}
