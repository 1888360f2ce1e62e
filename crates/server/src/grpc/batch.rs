//! `Streams.BatchAppend`: a bidirectional call carrying many appends. Each append has a
//! correlation id; its events may arrive over several requests, the first with the options and
//! the last with `is_final`. Complete appends are written concurrently (bounded by
//! `ServerConfig::batch_append_inflight`, so they share group commits) and answered in the
//! order they finish. A failed append is answered with a `google.rpc.Status` carrying the
//! detail clients unpack; the call itself only ends on a malformed request it cannot answer.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{AppendResult, CurrentRevision, ExpectedRevision, NewEvent, StreamName};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::errors::{decode_failure, rpc_status, status};
use super::{proposed_event, stream_id, uuid_from};
use crate::error::{ApiError, stream_name};
use crate::metrics::Api;
use crate::proto::event_store::client as shared;
use crate::proto::event_store::client::streams as pb;
use crate::state::{AppState, append_request};

/// The response stream.
pub(crate) type BatchStream = BoxStream<'static, Result<pb::BatchAppendResp, Status>>;

/// An append whose final request has not arrived yet.
struct Pending {
    correlation: shared::Uuid,
    stream: StreamName,
    expected: ExpectedRevision,
    echo: Option<pb::batch_append_resp::ExpectedStreamPosition>,
    events: Vec<NewEvent>,
    bytes: usize,
    /// Set when the append already failed; later requests are dropped until `is_final`.
    failed: bool,
}

/// Starts serving one BatchAppend call.
pub(crate) fn run(state: AppState, input: Streaming<pb::BatchAppendReq>) -> BatchStream {
    let (tx, rx) = mpsc::channel(state.config.stream_buffer.max(1));
    tokio::spawn(serve(state, input, tx));
    ReceiverStream::new(rx).boxed()
}

type Tx = mpsc::Sender<Result<pb::BatchAppendResp, Status>>;

async fn serve(state: AppState, mut input: Streaming<pb::BatchAppendReq>, tx: Tx) {
    let limits = state.config.limits;
    let max_pending = state.config.batch_append_inflight.max(1);
    let inflight = Arc::new(Semaphore::new(max_pending));
    let mut pending: HashMap<uuid::Uuid, Pending> = HashMap::new();
    loop {
        let request = match input.message().await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(decode_failure(e))).await;
                break;
            }
        };
        let id = match uuid_from("correlation_id", request.correlation_id.as_ref()) {
            Ok(id) => id,
            Err(e) => {
                // Without a correlation id no answer can be addressed: end the call.
                let _ = tx.send(Err(status(e))).await;
                break;
            }
        };
        if !pending.contains_key(&id) {
            if pending.len() >= max_pending {
                let _ = tx
                    .send(Err(Status::resource_exhausted(format!(
                        "more than {max_pending} unfinished appends on one BatchAppend call"
                    ))))
                    .await;
                break;
            }
            match start(
                request.correlation_id.clone().unwrap_or_default(),
                request.options.clone(),
            ) {
                Ok(p) => {
                    pending.insert(id, p);
                }
                Err(e) => {
                    let stream = request
                        .options
                        .as_ref()
                        .and_then(|o| o.stream_identifier.as_ref())
                        .map(|s| String::from_utf8_lossy(&s.stream_name).into_owned())
                        .unwrap_or_default();
                    let answer = failure(
                        request.correlation_id.clone().unwrap_or_default(),
                        &stream,
                        None,
                        &e,
                    );
                    if tx.send(Ok(answer)).await.is_err() {
                        break;
                    }
                    if !request.is_final {
                        // Remember the failure so later parts are dropped.
                        pending.insert(
                            id,
                            failed_placeholder(request.correlation_id.unwrap_or_default()),
                        );
                    }
                    continue;
                }
            }
        }
        let Some(entry) = pending.get_mut(&id) else {
            continue;
        };
        if !entry.failed
            && let Err(e) = add_events(entry, request.proposed_messages, limits.max_append_bytes)
        {
            entry.failed = true;
            let answer = failure(
                entry.correlation.clone(),
                entry.stream.as_str(),
                entry.echo,
                &e,
            );
            if tx.send(Ok(answer)).await.is_err() {
                break;
            }
        }
        if !request.is_final {
            continue;
        }
        let Some(done) = pending.remove(&id) else {
            continue;
        };
        if done.failed {
            continue;
        }
        let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else {
            break;
        };
        let state = state.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let answer = commit(&state, done).await;
            let _ = tx.send(Ok(answer)).await;
            drop(permit);
        });
    }
    // Returning drops this task's sender; the response stream ends once every spawned commit
    // has answered.
}

fn failed_placeholder(correlation: shared::Uuid) -> Pending {
    Pending {
        correlation,
        stream: StreamName::new("-").unwrap_or_else(|_| unreachable!("'-' is a valid stream name")),
        expected: ExpectedRevision::Any,
        echo: None,
        events: Vec::new(),
        bytes: 0,
        failed: true,
    }
}

fn start(
    correlation: shared::Uuid,
    options: Option<pb::batch_append_req::Options>,
) -> Result<Pending, ApiError> {
    use pb::batch_append_req::options::ExpectedStreamPosition as X;
    use pb::batch_append_resp::ExpectedStreamPosition as Echo;
    let options = options.ok_or_else(|| {
        ApiError::field(
            "options",
            "the first request of an append must carry its options",
        )
    })?;
    let stream = stream_name(
        "options.stream_identifier",
        &options.stream_identifier.unwrap_or_default().stream_name,
    )?;
    let (expected, echo) = match options.expected_stream_position {
        Some(X::StreamPosition(n)) => (ExpectedRevision::Exact(n), Echo::StreamPosition(n)),
        Some(X::NoStream(())) => (ExpectedRevision::NoStream, Echo::NoStream(())),
        Some(X::Any(())) => (ExpectedRevision::Any, Echo::Any(())),
        Some(X::StreamExists(())) => (ExpectedRevision::StreamExists, Echo::StreamExists(())),
        None => {
            return Err(ApiError::field(
                "options.expected_stream_position",
                "missing expected revision",
            ));
        }
    };
    Ok(Pending {
        correlation,
        stream,
        expected,
        echo: Some(echo),
        events: Vec::new(),
        bytes: 0,
        failed: false,
    })
}

fn add_events(
    pending: &mut Pending,
    messages: Vec<pb::batch_append_req::ProposedMessage>,
    limit: usize,
) -> Result<(), ApiError> {
    for m in messages {
        let field = format!("proposed_messages[{}]", pending.events.len());
        let event = proposed_event(
            &field,
            m.id.as_ref(),
            &m.metadata,
            m.custom_metadata,
            m.data,
        )?;
        pending.bytes += event.payload_len();
        if pending.bytes > limit {
            return Err(ApiError::TooLarge {
                field: "proposed_messages".into(),
                message: format!("the append exceeds the limit of {limit} bytes"),
                limit,
            });
        }
        pending.events.push(event);
    }
    Ok(())
}

async fn commit(state: &AppState, pending: Pending) -> pb::BatchAppendResp {
    let Pending {
        correlation,
        stream,
        expected,
        echo,
        events,
        ..
    } = pending;
    let result = match append_request(stream.clone(), expected, events) {
        Ok(request) => state.write(Api::Grpc, request).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(results) => success(correlation, stream.as_str(), echo, results.first()),
        Err(e) => failure(correlation, stream.as_str(), echo, &e),
    }
}

fn success(
    correlation: shared::Uuid,
    stream: &str,
    echo: Option<pb::batch_append_resp::ExpectedStreamPosition>,
    result: Option<&AppendResult>,
) -> pb::BatchAppendResp {
    use pb::batch_append_resp::success::{CurrentRevisionOption as C, PositionOption as P};
    let current = result.map_or(CurrentRevision::NoStream, |r| r.current_revision);
    let position = result.and_then(AppendResult::last_position);
    pb::BatchAppendResp {
        correlation_id: Some(correlation),
        result: Some(pb::batch_append_resp::Result::Success(
            pb::batch_append_resp::Success {
                current_revision_option: Some(match current {
                    CurrentRevision::Current(n) => C::CurrentRevision(n),
                    CurrentRevision::NoStream => C::NoStream(()),
                }),
                position_option: Some(match position {
                    Some(p) => P::Position(shared::AllStreamPosition {
                        commit_position: p.0,
                        prepare_position: p.0,
                    }),
                    None => P::NoPosition(()),
                }),
            },
        )),
        stream_identifier: Some(stream_id(stream)),
        expected_stream_position: echo,
    }
}

fn failure(
    correlation: shared::Uuid,
    stream: &str,
    echo: Option<pb::batch_append_resp::ExpectedStreamPosition>,
    error: &ApiError,
) -> pb::BatchAppendResp {
    pb::BatchAppendResp {
        correlation_id: Some(correlation),
        result: Some(pb::batch_append_resp::Result::Error(rpc_status(
            error, stream,
        ))),
        stream_identifier: Some(stream_id(stream)),
        expected_stream_position: echo,
    }
}
