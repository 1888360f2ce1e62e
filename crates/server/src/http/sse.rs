//! Subscriptions as Server-Sent Events: `GET /streams/{stream}/subscribe`.
//!
//! Each event is an SSE message whose `id` is its checkpoint — the revision for a stream (the
//! link revision for `$ce-`/`$et-`), the position for `$all` — and whose data is the event's
//! JSON. A reconnecting client sends `Last-Event-ID` and resumes right after it. Markers come
//! as named events: `caught-up` once the backlog is delivered, `checkpoint` (with an id) while
//! a filtered `$all` subscription scans, `error` before the stream ends on a failure.

use std::convert::Infallible;
use std::time::Duration;

use annals_core::name::ALL_STREAM;
use annals_core::subscription::{SubscribeFrom, SubscriptionSource};
use annals_core::{StreamName, SubscriptionMessage, Timestamp};
use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{Stream, StreamExt};
use http::HeaderMap;

use super::json::{EventJson, ReadParams, query};
use super::routes::{ReadFrom, all_filter, parse_from};
use crate::error::ApiError;
use crate::metrics::Api;
use crate::state::AppState;

/// Follows a stream, a virtual stream or `$all`: catch up, then live.
#[utoipa::path(
    get,
    path = "/streams/{stream}/subscribe",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "A stream, $ce-<category>, $et-<type> or $all"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this revision/position"),
        ReadParams,
    ),
    responses(
        (status = 200, description = "An SSE stream: events (id = revision or position, data = event JSON), `caught-up`, `checkpoint`, `error`", content_type = "text/event-stream", body = EventJson),
        (status = 400, description = "A malformed parameter", body = super::json::ErrorJson),
    )
)]
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params: ReadParams = query(raw.as_deref())?;
    if params.direction.is_some() || params.limit.is_some() {
        return Err(ApiError::field(
            "direction",
            "subscriptions go forward without a limit",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::field("Last-Event-ID", "must be a non-negative integer"))
        })
        .transpose()?;
    let from = match (last_event_id, parse_from(params.from.as_deref(), "from")?) {
        (Some(id), _) => SubscribeFrom::After(id),
        (None, Some(ReadFrom::At(n))) => SubscribeFrom::After(n),
        (None, Some(ReadFrom::Start)) => SubscribeFrom::Start,
        (None, Some(ReadFrom::End) | None) => SubscribeFrom::End,
    };
    let all = stream == ALL_STREAM;
    let source = if all {
        SubscriptionSource::All(all_filter(&params)?)
    } else {
        let name =
            StreamName::new(&stream).map_err(|e| ApiError::field("stream", e.to_string()))?;
        SubscriptionSource::Stream(name)
    };
    let guard = state.metrics.subscription(Api::Http, all);
    let mut live = false;
    let events = state
        .subscribe(source, from)
        .map(move |item| match item {
            Ok(SubscriptionMessage::Event(event)) => {
                guard.delivered(event.event.position.0);
                if live {
                    let lag = Timestamp::now()
                        .as_micros()
                        .saturating_sub(event.event.created.as_micros());
                    guard.metrics().delivery.observe(Duration::from_micros(lag));
                }
                let id = if all {
                    event.event.position.0
                } else {
                    event.read_revision()
                };
                let json = serde_json::to_string(&EventJson::from(&event)).unwrap_or_default();
                Event::default().id(id.to_string()).data(json)
            }
            Ok(SubscriptionMessage::CaughtUp) => {
                live = true;
                Event::default().event("caught-up").data("{}")
            }
            Ok(SubscriptionMessage::Checkpoint(p)) => {
                guard.delivered(p.0);
                Event::default()
                    .event("checkpoint")
                    .id(p.0.to_string())
                    .data(format!("{{\"position\":{}}}", p.0))
            }
            Err(e) => {
                let (_, body) = ApiError::Read(e).to_http();
                Event::default()
                    .event("error")
                    .data(serde_json::to_string(&body).unwrap_or_default())
            }
        })
        .map(Ok);
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}
