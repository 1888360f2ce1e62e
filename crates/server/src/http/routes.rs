//! HTTP/JSON handlers: append, read (streams, `$all`, `$ce-`, `$et-`), metadata, delete,
//! health and metrics. Subscriptions over SSE are in [`super::sse`].

use annals_core::name::ALL_STREAM;
use annals_core::read::FilterTarget;
use annals_core::{
    AllFrom, AppendResult, Direction, ExpectedRevision, Filter, Position, ReadError, StreamFrom,
    StreamName, WriteRequest,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use http::{HeaderMap, StatusCode, header};

use super::json::{
    AppendJson, DeleteParams, EventJson, HealthJson, MetadataJson, ReadPageJson, ReadParams,
    SetMetadataJson, WriteResultJson, expected_from_json, expected_from_text, new_events, prefixes,
    query,
};
use crate::error::ApiError;
use crate::metrics::Api;
use crate::state::{AppState, append_request};

/// Header carrying the expected revision (instead of the body field).
pub(crate) const EXPECTED_REVISION_HEADER: &str = "expected-revision";

/// Default page size of reads.
const DEFAULT_PAGE: u64 = 100;

/// Reads a JSON body: checks the declared content type and the size limit, then decodes it,
/// naming the field at fault.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType(content_type.to_owned()));
    }
    // JSON and base64 inflate payloads: allow twice the append limit plus room for the framing.
    let limit = state.config.limits.max_append_bytes.saturating_mul(2) + (1 << 20);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge {
            field: "body".into(),
            message: format!("the request body is larger than {limit} bytes"),
            limit,
        })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::field(field, format!("malformed JSON: {}", e.inner()))
    })
}

/// The expected revision from the body field or the header; both given and different is an
/// error.
fn expected_revision(
    field: Option<&serde_json::Value>,
    headers: &HeaderMap,
) -> Result<ExpectedRevision, ApiError> {
    let from_body = field
        .map(|v| expected_from_json("expectedRevision", v))
        .transpose()?;
    let from_header = headers
        .get(EXPECTED_REVISION_HEADER)
        .map(|v| {
            let text = v
                .to_str()
                .map_err(|_| ApiError::field("Expected-Revision", "header is not visible ASCII"))?;
            expected_from_text("Expected-Revision", text)
        })
        .transpose()?;
    match (from_body, from_header) {
        (Some(a), Some(b)) if a != b => Err(ApiError::field(
            "expectedRevision",
            format!("the body says {a} but the Expected-Revision header says {b}"),
        )),
        (a, b) => Ok(a.or(b).unwrap_or(ExpectedRevision::Any)),
    }
}

fn stream_from_path(raw: &str) -> Result<StreamName, ApiError> {
    StreamName::new(raw).map_err(|e| ApiError::field("stream", e.to_string()))
}

fn write_result(result: Option<&AppendResult>) -> WriteResultJson {
    WriteResultJson {
        current_revision: result.and_then(|r| r.current_revision.revision()),
        first_position: result.and_then(|r| r.positions.map(|(a, _)| a.0)),
        last_position: result.and_then(|r| r.positions.map(|(_, b)| b.0)),
    }
}

/// Appends events to a stream.
#[utoipa::path(
    post,
    path = "/streams/{stream}",
    tag = "streams",
    params(
        ("stream" = String, Path, description = "The stream, e.g. order-42"),
        ("Expected-Revision" = Option<String>, Header, description = "any | no-stream | exists | N (or the body field)"),
    ),
    request_body(content = AppendJson, content_type = "application/json"),
    responses(
        (status = 200, description = "Appended durably (or an idempotent re-send)", body = WriteResultJson),
        (status = 400, description = "A malformed field, named in the body", body = super::json::ErrorJson),
        (status = 409, description = "Wrong expected revision", body = super::json::ErrorJson),
        (status = 410, description = "The stream is tombstoned", body = super::json::ErrorJson),
        (status = 413, description = "An event or the append is over the size limit", body = super::json::ErrorJson),
        (status = 415, description = "The body is not declared as application/json", body = super::json::ErrorJson),
    )
)]
pub(crate) async fn append(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WriteResultJson>, ApiError> {
    let stream = stream_from_path(&stream)?;
    let request: AppendJson = json_body(&state, &headers, body).await?;
    let expected = expected_revision(request.expected_revision.as_ref(), &headers)?;
    let events = new_events(request.events)?;
    let write = append_request(stream, expected, events)?;
    let results = state.write(Api::Http, write).await?;
    Ok(Json(write_result(results.first())))
}

/// The filter of a `$all` read or subscription from its query parameters.
pub(crate) fn all_filter(params: &ReadParams) -> Result<Option<Filter>, ApiError> {
    let regex = |target, field: &str, pattern: &str| {
        Filter::regex(target, pattern).map_err(|e| ApiError::field(field, e.to_string()))
    };
    let given = [
        params.stream_prefix.is_some(),
        params.event_type_prefix.is_some(),
        params.stream_regex.is_some(),
        params.event_type_regex.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::field(
            "streamPrefix",
            "give at most one of streamPrefix, eventTypePrefix, streamRegex, eventTypeRegex",
        ));
    }
    Ok(if let Some(p) = &params.stream_prefix {
        Some(Filter::stream_prefixes(prefixes(p)))
    } else if let Some(p) = &params.event_type_prefix {
        Some(Filter::event_type_prefixes(prefixes(p)))
    } else if let Some(r) = &params.stream_regex {
        Some(regex(FilterTarget::StreamName, "streamRegex", r)?)
    } else if let Some(r) = &params.event_type_regex {
        Some(regex(FilterTarget::EventType, "eventTypeRegex", r)?)
    } else {
        None
    })
}

fn direction(params: &ReadParams) -> Result<Direction, ApiError> {
    match params.direction.as_deref() {
        None | Some("forward") | Some("forwards") => Ok(Direction::Forward),
        Some("backward") | Some("backwards") => Ok(Direction::Backward),
        Some(other) => Err(ApiError::field(
            "direction",
            format!("'{other}' is not forward or backward"),
        )),
    }
}

/// `start` / `end` / a number.
pub(crate) enum ReadFrom {
    Start,
    End,
    At(u64),
}

pub(crate) fn parse_from(raw: Option<&str>, field: &str) -> Result<Option<ReadFrom>, ApiError> {
    match raw {
        None => Ok(None),
        Some("start") => Ok(Some(ReadFrom::Start)),
        Some("end") => Ok(Some(ReadFrom::End)),
        Some(n) => n.parse().map(|n| Some(ReadFrom::At(n))).map_err(|_| {
            ApiError::field(
                field,
                format!("'{n}' is not start, end or a non-negative integer"),
            )
        }),
    }
}

/// Reads a page of a stream, a virtual stream or `$all`.
#[utoipa::path(
    get,
    path = "/streams/{stream}",
    tag = "streams",
    params(
        ("stream" = String, Path, description = "A stream, $ce-<category>, $et-<type> or $all"),
        ReadParams,
    ),
    responses(
        (status = 200, description = "A page of events; `next` continues it", body = ReadPageJson),
        (status = 400, description = "A malformed parameter", body = super::json::ErrorJson),
        (status = 404, description = "No such stream (or soft-deleted)", body = super::json::ErrorJson),
        (status = 410, description = "The stream is tombstoned", body = super::json::ErrorJson),
    )
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReadPageJson>, ApiError> {
    let params: ReadParams = query(raw.as_deref())?;
    let direction = direction(&params)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > state.config.max_http_page {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {}", state.config.max_http_page),
        ));
    }
    let from = parse_from(params.from.as_deref(), "from")?;
    state.metrics.read(Api::Http);
    if stream == ALL_STREAM {
        let filter = all_filter(&params)?;
        let from = match (from, direction) {
            (Some(ReadFrom::At(p)), _) => AllFrom::Position(Position(p)),
            (Some(ReadFrom::Start), _) | (None, Direction::Forward) => AllFrom::Start,
            (Some(ReadFrom::End), _) | (None, Direction::Backward) => AllFrom::End,
        };
        // One page straight from the store, so `next` is exactly where it stopped.
        let slice = state
            .store
            .read_all(annals_core::ReadAllOptions {
                direction,
                from,
                limit,
                filter,
                max_scan: None,
            })
            .await?;
        let next = if slice.end_of_log {
            None
        } else {
            slice.next.map(|p| p.0)
        };
        return Ok(Json(ReadPageJson {
            events: slice.events.iter().map(EventJson::from).collect(),
            next,
        }));
    }
    if params.stream_prefix.is_some()
        || params.event_type_prefix.is_some()
        || params.stream_regex.is_some()
        || params.event_type_regex.is_some()
    {
        return Err(ApiError::field(
            "streamPrefix",
            "filters apply to $all only",
        ));
    }
    let stream = stream_from_path(&stream)?;
    let from = match (from, direction) {
        (Some(ReadFrom::At(r)), _) => StreamFrom::Revision(r),
        (Some(ReadFrom::Start), _) | (None, Direction::Forward) => StreamFrom::Start,
        (Some(ReadFrom::End), _) | (None, Direction::Backward) => StreamFrom::End,
    };
    let events: Vec<_> = state
        .read_stream(stream, direction, from, limit)
        .await?
        .try_collect()
        .await?;
    let next = if events.len() as u64 == limit {
        events.last().and_then(|e| match direction {
            Direction::Forward => e.read_revision().checked_add(1),
            Direction::Backward => e.read_revision().checked_sub(1),
        })
    } else {
        None
    };
    Ok(Json(ReadPageJson {
        events: events.iter().map(EventJson::from).collect(),
        next,
    }))
}

/// Deletes a stream: soft (revisions continue when written again) or tombstone.
#[utoipa::path(
    delete,
    path = "/streams/{stream}",
    tag = "streams",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("Expected-Revision" = Option<String>, Header, description = "any | no-stream | exists | N"),
        DeleteParams,
    ),
    responses(
        (status = 200, description = "Deleted", body = WriteResultJson),
        (status = 409, description = "Wrong expected revision", body = super::json::ErrorJson),
        (status = 410, description = "Already tombstoned", body = super::json::ErrorJson),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<WriteResultJson>, ApiError> {
    let stream = stream_from_path(&stream)?;
    let params: DeleteParams = query(raw.as_deref())?;
    let field = params
        .expected_revision
        .as_ref()
        .map(|s| serde_json::Value::String(s.clone()));
    let expected = expected_revision(field.as_ref(), &headers)?;
    let request = if params.tombstone.unwrap_or(false) {
        WriteRequest::Tombstone { stream, expected }
    } else {
        WriteRequest::Delete { stream, expected }
    };
    let results = state.write(Api::Http, request).await?;
    Ok(Json(write_result(results.first())))
}

/// Reads a stream's metadata.
#[utoipa::path(
    get,
    path = "/streams/{stream}/metadata",
    tag = "metadata",
    params(("stream" = String, Path, description = "The stream")),
    responses(
        (status = 200, description = "The metadata", body = MetadataJson),
        (status = 404, description = "No metadata was ever set", body = super::json::ErrorJson),
    )
)]
pub(crate) async fn get_metadata(
    State(state): State<AppState>,
    Path(stream): Path<String>,
) -> Result<Json<MetadataJson>, ApiError> {
    let stream = stream_from_path(&stream)?;
    state.metrics.read(Api::Http);
    match state.store.stream_metadata(&stream).await? {
        Some((revision, metadata)) => Ok(Json(MetadataJson {
            revision,
            metadata: metadata.to_json(),
        })),
        None => Err(ApiError::Read(ReadError::StreamNotFound {
            stream: stream.metadata_stream(),
        })),
    }
}

/// Replaces a stream's metadata (a `$metadata` event in `$$<stream>`).
#[utoipa::path(
    put,
    path = "/streams/{stream}/metadata",
    tag = "metadata",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("Expected-Revision" = Option<String>, Header, description = "Expected revision of $$<stream>"),
    ),
    request_body(content = SetMetadataJson, content_type = "application/json"),
    responses(
        (status = 200, description = "Written", body = WriteResultJson),
        (status = 400, description = "Malformed metadata, the field named", body = super::json::ErrorJson),
        (status = 409, description = "Wrong expected revision", body = super::json::ErrorJson),
    )
)]
pub(crate) async fn set_metadata(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WriteResultJson>, ApiError> {
    let stream = stream_from_path(&stream)?;
    let request: SetMetadataJson = json_body(&state, &headers, body).await?;
    let expected = expected_revision(request.expected_revision.as_ref(), &headers)?;
    let metadata = annals_core::StreamMetadata::from_json(request.metadata)
        .map_err(|e| ApiError::field("metadata", e.to_string()))?;
    let write = WriteRequest::SetMetadata {
        stream,
        expected,
        metadata: Box::new(metadata),
    };
    let results = state.write(Api::Http, write).await?;
    Ok(Json(write_result(results.first())))
}

/// Liveness and the log head.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Serving", body = HealthJson))
)]
pub(crate) async fn health(State(state): State<AppState>) -> Json<HealthJson> {
    Json(HealthJson {
        status: if state.is_shutting_down() {
            "shutting-down"
        } else {
            "ok"
        }
        .into(),
        version: env!("CARGO_PKG_VERSION").into(),
        head: state.head().0,
    })
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(state.head().0);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Anything else: a gRPC call to a method Annals does not implement gets `UNIMPLEMENTED`,
/// an HTTP request a JSON 404.
pub(crate) async fn fallback(headers: HeaderMap, uri: http::Uri) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        tracing::debug!(path = %uri.path(), "unimplemented gRPC method");
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE.as_str(), "application/grpc"),
                ("grpc-status", "12"),
                ("grpc-message", "method not implemented by Annals"),
            ],
        )
            .into_response();
    }
    ApiError::NotFound(format!("no route for {}", uri.path())).into_response()
}
