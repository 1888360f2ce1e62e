//! The KurrentDB-compatible gRPC API (protocol v1): Streams, ServerFeatures and Gossip.
//!
//! Served by tonic on the same port as the HTTP API. Conversions between the wire messages
//! and Annals' types live here; each service has its own module.

pub(crate) mod batch;
pub(crate) mod errors;
pub(crate) mod gossip;
pub(crate) mod server_features;
pub(crate) mod streams;

use std::collections::HashMap;

use annals_core::{
    ContentType, EventType, ExpectedRevision, NewEvent, RecordedEvent, ResolvedEvent, Timestamp,
};
use bytes::Bytes;
use http::{HeaderValue, Response};

use crate::error::ApiError;
use crate::proto::event_store::client as pb;
use crate::proto::event_store::client::streams::read_resp;

/// Wire metadata key of the event type.
const TYPE_KEY: &str = "type";
/// Wire metadata key of the content type.
const CONTENT_TYPE_KEY: &str = "content-type";
/// Wire metadata key of the commit time (100 ns ticks since the Unix epoch).
const CREATED_KEY: &str = "created";

/// A UUID from the wire: either form; a missing or malformed one names `field`.
pub(crate) fn uuid_from(field: &str, id: Option<&pb::Uuid>) -> Result<uuid::Uuid, ApiError> {
    match id.and_then(|id| id.value.as_ref()) {
        None => Err(ApiError::field(field, "missing UUID")),
        Some(pb::uuid::Value::Structured(s)) => {
            let high = u128::from(s.most_significant_bits as u64) << 64;
            let low = u128::from(s.least_significant_bits as u64);
            Ok(uuid::Uuid::from_u128(high | low))
        }
        Some(pb::uuid::Value::String(text)) => text
            .parse()
            .map_err(|e| ApiError::field(field, format!("'{text}' is not a UUID: {e}"))),
    }
}

/// A UUID for the wire, in the form the client asked for.
pub(crate) fn uuid_to(id: uuid::Uuid, structured: bool) -> pb::Uuid {
    let value = if structured {
        let n = id.as_u128();
        pb::uuid::Value::Structured(pb::uuid::Structured {
            most_significant_bits: (n >> 64) as u64 as i64,
            least_significant_bits: n as u64 as i64,
        })
    } else {
        pb::uuid::Value::String(id.to_string())
    };
    pb::Uuid { value: Some(value) }
}

/// 100 ns ticks since the Unix epoch, as KurrentDB reports `created`.
pub(crate) fn ticks(t: Timestamp) -> u64 {
    t.as_micros().saturating_mul(10)
}

/// The expected revision of the four oneof shapes the protocol uses.
pub(crate) fn expected(
    field: &str,
    revision: Option<u64>,
    no_stream: bool,
    any: bool,
    exists: bool,
) -> Result<ExpectedRevision, ApiError> {
    match (revision, no_stream, any, exists) {
        (Some(r), ..) => Ok(ExpectedRevision::Exact(r)),
        (None, true, ..) => Ok(ExpectedRevision::NoStream),
        (None, _, true, _) => Ok(ExpectedRevision::Any),
        (None, _, _, true) => Ok(ExpectedRevision::StreamExists),
        _ => Err(ApiError::field(field, "missing expected revision")),
    }
}

/// An event proposed by a client (Append and BatchAppend share the shape).
pub(crate) fn proposed_event(
    field: &str,
    id: Option<&pb::Uuid>,
    metadata: &HashMap<String, String>,
    custom_metadata: Bytes,
    data: Bytes,
) -> Result<NewEvent, ApiError> {
    let id = uuid_from(&format!("{field}.id"), id)?;
    let event_type = metadata
        .get(TYPE_KEY)
        .ok_or_else(|| ApiError::field(format!("{field}.metadata.type"), "missing event type"))?;
    let event_type = EventType::new(event_type)
        .map_err(|e| ApiError::field(format!("{field}.metadata.type"), e.to_string()))?;
    let content_type = match metadata.get(CONTENT_TYPE_KEY).map(String::as_str) {
        Some("application/json") => ContentType::Json,
        Some("application/octet-stream") | None => ContentType::Binary,
        Some(other) => {
            return Err(ApiError::field(
                format!("{field}.metadata.content-type"),
                format!("'{other}' is not application/json or application/octet-stream"),
            ));
        }
    };
    Ok(NewEvent {
        id,
        event_type,
        content_type,
        data,
        metadata: custom_metadata,
    })
}

/// An event as the wire carries it.
pub(crate) fn recorded(
    event: &RecordedEvent,
    structured: bool,
) -> read_resp::read_event::RecordedEvent {
    let metadata = HashMap::from([
        (TYPE_KEY.to_owned(), event.event_type.as_str().to_owned()),
        (
            CONTENT_TYPE_KEY.to_owned(),
            event.content_type.mime().to_owned(),
        ),
        (CREATED_KEY.to_owned(), ticks(event.created).to_string()),
    ]);
    read_resp::read_event::RecordedEvent {
        id: Some(uuid_to(event.id, structured)),
        stream_identifier: Some(stream_id(event.stream.as_str())),
        stream_revision: event.revision,
        prepare_position: event.position.0,
        commit_position: event.position.0,
        metadata,
        custom_metadata: event.metadata.clone(),
        data: event.data.clone(),
    }
}

/// A stream identifier for the wire.
pub(crate) fn stream_id(name: &str) -> pb::StreamIdentifier {
    pb::StreamIdentifier {
        stream_name: Bytes::copy_from_slice(name.as_bytes()),
    }
}

/// An event for a read or subscription response. Events read through a virtual stream
/// (`$ce-…`, `$et-…`) are links, as KurrentDB's projections would have written them: the
/// link record (type `$>`, data `<revision>@<stream>`) in the virtual stream, resolved to the
/// event when `resolve_links` is set.
pub(crate) fn read_event(
    event: &ResolvedEvent,
    structured: bool,
    resolve_links: bool,
) -> read_resp::ReadEvent {
    let position = Some(read_resp::read_event::Position::CommitPosition(
        event.event.position.0,
    ));
    let Some(link) = &event.link else {
        return read_resp::ReadEvent {
            event: Some(recorded(&event.event, structured)),
            link: None,
            position,
        };
    };
    let original = &event.event;
    let link_record = RecordedEvent {
        stream: link.stream.clone(),
        revision: link.revision,
        position: original.position,
        id: original.id,
        event_type: EventType::new("$>").unwrap_or_else(|_| original.event_type.clone()),
        content_type: ContentType::Binary,
        data: Bytes::from(format!("{}@{}", original.revision, original.stream)),
        metadata: Bytes::new(),
        created: original.created,
    };
    if resolve_links {
        read_resp::ReadEvent {
            event: Some(recorded(original, structured)),
            link: Some(recorded(&link_record, structured)),
            position,
        }
    } else {
        read_resp::ReadEvent {
            event: Some(recorded(&link_record, structured)),
            link: None,
            position,
        }
    }
}

/// tonic reports a request that does not decode as `INTERNAL`; this middleware turns those
/// into `INVALID_ARGUMENT` (the client sent garbage, the server is fine).
pub(crate) fn decode_errors_are_invalid_arguments<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|s| s == "13");
    let decode = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("decod"));
    if internal && decode {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
    }
    response
}
