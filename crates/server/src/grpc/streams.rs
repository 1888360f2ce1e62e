//! `event_store.client.streams.Streams`: Read (reads and catch-up subscriptions), Append,
//! Delete, Tombstone. BatchAppend is in [`super::batch`].

use std::time::{Instant, SystemTime};

use annals_core::read::FilterTarget;
use annals_core::subscription::{SubscribeFrom, SubscriptionSource};
use annals_core::{
    AllFrom, AppendError, AppendResult, CurrentRevision, Direction, ExpectedRevision, Filter,
    Position, ReadError, StreamFrom, StreamName, SubscriptionMessage, Timestamp, WriteRequest,
};
use futures::stream::{self, BoxStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::errors::{decode_failure, status};
use super::{expected, proposed_event, read_event, stream_id};
use crate::error::{ApiError, stream_name};
use crate::metrics::Api;
use crate::proto::event_store::client::streams::{self as pb, read_req::options as ro};
use crate::state::{AppState, append_request};

/// The Streams service.
#[derive(Debug, Clone)]
pub(crate) struct StreamsService {
    pub(crate) state: AppState,
}

type ReadStream = BoxStream<'static, Result<pb::ReadResp, Status>>;

fn resp(content: pb::read_resp::Content) -> pb::ReadResp {
    pb::ReadResp {
        content: Some(content),
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// A server-side `$all` filter from the request.
fn filter(options: Option<ro::FilterOptions>) -> Result<Option<Filter>, ApiError> {
    let Some(options) = options else {
        return Ok(None);
    };
    let (target, expression, field) = match options.filter {
        Some(ro::filter_options::Filter::StreamIdentifier(e)) => (
            FilterTarget::StreamName,
            e,
            "options.filter.stream_identifier",
        ),
        Some(ro::filter_options::Filter::EventType(e)) => {
            (FilterTarget::EventType, e, "options.filter.event_type")
        }
        None => {
            return Err(ApiError::field(
                "options.filter",
                "missing filter expression",
            ));
        }
    };
    if !expression.regex.is_empty() {
        return Filter::regex(target, &expression.regex)
            .map(Some)
            .map_err(|e| ApiError::field(format!("{field}.regex"), e.to_string()));
    }
    if expression.prefix.is_empty() {
        return Err(ApiError::field(
            field,
            "give a regex or at least one prefix",
        ));
    }
    Ok(Some(match target {
        FilterTarget::StreamName => Filter::stream_prefixes(expression.prefix),
        FilterTarget::EventType => Filter::event_type_prefixes(expression.prefix),
    }))
}

impl StreamsService {
    async fn read_inner(&self, request: pb::ReadReq) -> Result<ReadStream, ApiError> {
        let options = request
            .options
            .ok_or_else(|| ApiError::field("options", "missing read options"))?;
        let structured = matches!(
            options.uuid_option.and_then(|u| u.content),
            Some(ro::uuid_option::Content::Structured(_))
        );
        let resolve = options.resolve_links;
        let direction = match ro::ReadDirection::try_from(options.read_direction) {
            Ok(ro::ReadDirection::Forwards) => Direction::Forward,
            Ok(ro::ReadDirection::Backwards) => Direction::Backward,
            Err(_) => {
                return Err(ApiError::field(
                    "options.read_direction",
                    format!("unknown direction {}", options.read_direction),
                ));
            }
        };
        let filter = match options.filter_option {
            Some(ro::FilterOption::Filter(f)) => filter(Some(f))?,
            _ => None,
        };
        let stream_option = options
            .stream_option
            .ok_or_else(|| ApiError::field("options.stream_option", "give a stream or $all"))?;
        let count_option = options.count_option.ok_or_else(|| {
            ApiError::field("options.count_option", "give a count or a subscription")
        })?;
        self.state.metrics.read(Api::Grpc);
        match (stream_option, count_option) {
            (ro::StreamOption::Stream(s), ro::CountOption::Count(count)) => {
                let stream = stream_name(
                    "options.stream.stream_identifier",
                    &s.stream_identifier.unwrap_or_default().stream_name,
                )?;
                let from = match s.revision_option {
                    Some(ro::stream_options::RevisionOption::Revision(r)) => {
                        StreamFrom::Revision(r)
                    }
                    Some(ro::stream_options::RevisionOption::End(_)) => StreamFrom::End,
                    Some(ro::stream_options::RevisionOption::Start(_)) | None => StreamFrom::Start,
                };
                self.read_stream(stream, direction, from, count, structured, resolve)
                    .await
            }
            (ro::StreamOption::All(a), ro::CountOption::Count(count)) => {
                let from = match (a.all_option, direction) {
                    (Some(ro::all_options::AllOption::Position(p)), Direction::Forward) => {
                        Some(AllFrom::Position(Position(p.commit_position)))
                    }
                    // Backwards from a position excludes it (KurrentDB's convention).
                    (Some(ro::all_options::AllOption::Position(p)), Direction::Backward) => p
                        .commit_position
                        .checked_sub(1)
                        .map(|p| AllFrom::Position(Position(p))),
                    (Some(ro::all_options::AllOption::End(_)), _) => Some(AllFrom::End),
                    (Some(ro::all_options::AllOption::Start(_)) | None, _) => Some(AllFrom::Start),
                };
                let Some(from) = from else {
                    return Ok(stream::empty().boxed());
                };
                let events = self.state.read_all(direction, from, count, filter);
                Ok(events
                    .map(move |item| match item {
                        Ok(event) => Ok(resp(pb::read_resp::Content::Event(read_event(
                            &event, structured, resolve,
                        )))),
                        Err(e) => Err(status(ApiError::Read(e))),
                    })
                    .boxed())
            }
            (ro::StreamOption::Stream(s), ro::CountOption::Subscription(_)) => {
                let stream = stream_name(
                    "options.stream.stream_identifier",
                    &s.stream_identifier.unwrap_or_default().stream_name,
                )?;
                let from = match s.revision_option {
                    Some(ro::stream_options::RevisionOption::Revision(r)) => {
                        SubscribeFrom::After(r)
                    }
                    Some(ro::stream_options::RevisionOption::End(_)) => SubscribeFrom::End,
                    Some(ro::stream_options::RevisionOption::Start(_)) | None => {
                        SubscribeFrom::Start
                    }
                };
                Ok(self.subscription(
                    SubscriptionSource::Stream(stream),
                    from,
                    structured,
                    resolve,
                ))
            }
            (ro::StreamOption::All(a), ro::CountOption::Subscription(_)) => {
                let from = match a.all_option {
                    Some(ro::all_options::AllOption::Position(p)) => {
                        SubscribeFrom::After(p.commit_position)
                    }
                    Some(ro::all_options::AllOption::End(_)) => SubscribeFrom::End,
                    Some(ro::all_options::AllOption::Start(_)) | None => SubscribeFrom::Start,
                };
                Ok(self.subscription(SubscriptionSource::All(filter), from, structured, resolve))
            }
        }
    }

    async fn read_stream(
        &self,
        stream: StreamName,
        direction: Direction,
        from: StreamFrom,
        count: u64,
        structured: bool,
        resolve: bool,
    ) -> Result<ReadStream, ApiError> {
        match self
            .state
            .read_stream(stream.clone(), direction, from, count)
            .await
        {
            Ok(events) => Ok(events
                .map(move |item| match item {
                    Ok(event) => Ok(resp(pb::read_resp::Content::Event(read_event(
                        &event, structured, resolve,
                    )))),
                    Err(e) => Err(status(ApiError::Read(e))),
                })
                .boxed()),
            Err(ReadError::StreamNotFound { .. }) => {
                let not_found = pb::read_resp::StreamNotFound {
                    stream_identifier: Some(stream_id(stream.as_str())),
                };
                Ok(
                    stream::iter([Ok(resp(pb::read_resp::Content::StreamNotFound(not_found)))])
                        .boxed(),
                )
            }
            Err(e) => Err(ApiError::Read(e)),
        }
    }

    fn subscription(
        &self,
        source: SubscriptionSource,
        from: SubscribeFrom<u64>,
        structured: bool,
        resolve: bool,
    ) -> ReadStream {
        let all = matches!(source, SubscriptionSource::All(_));
        let guard = self.state.metrics.subscription(Api::Grpc, all);
        let id = uuid::Uuid::new_v4().to_string();
        tracing::debug!(subscription = %id, ?source, ?from, "gRPC subscription started");
        let confirmation = resp(pb::read_resp::Content::Confirmation(
            pb::read_resp::SubscriptionConfirmation {
                subscription_id: id,
            },
        ));
        let mut live = false;
        let mut last: Option<(u64, u64)> = None; // (revision as read, position)
        let messages = self.state.subscribe(source, from).map(move |item| {
            let message = match item {
                Ok(m) => m,
                Err(e) => return Err(status(ApiError::Read(e))),
            };
            Ok(match message {
                SubscriptionMessage::Event(event) => {
                    let position = event.event.position.0;
                    guard.delivered(position);
                    if live {
                        let lag = Timestamp::now()
                            .as_micros()
                            .saturating_sub(event.event.created.as_micros());
                        guard
                            .metrics()
                            .delivery
                            .observe(std::time::Duration::from_micros(lag));
                    }
                    last = Some((event.read_revision(), position));
                    resp(pb::read_resp::Content::Event(read_event(
                        &event, structured, resolve,
                    )))
                }
                SubscriptionMessage::CaughtUp => {
                    live = true;
                    resp(pb::read_resp::Content::CaughtUp(pb::read_resp::CaughtUp {
                        timestamp: Some(now()),
                        stream_revision: (!all)
                            .then_some(last.map(|(r, _)| i64::try_from(r).unwrap_or(i64::MAX)))
                            .flatten(),
                        position: all
                            .then_some(last.map(|(_, p)| pb::read_resp::Position {
                                commit_position: p,
                                prepare_position: p,
                            }))
                            .flatten(),
                    }))
                }
                SubscriptionMessage::Checkpoint(p) => {
                    guard.delivered(p.0);
                    resp(pb::read_resp::Content::Checkpoint(
                        pb::read_resp::Checkpoint {
                            commit_position: p.0,
                            prepare_position: p.0,
                            timestamp: Some(now()),
                        },
                    ))
                }
            })
        });
        stream::iter([Ok(confirmation)]).chain(messages).boxed()
    }

    async fn append_inner(
        &self,
        request: Request<Streaming<pb::AppendReq>>,
    ) -> Result<pb::AppendResp, ApiError> {
        let mut input = request.into_inner();
        let limit = self.state.config.limits.max_append_bytes;
        let next = |m: Result<Option<pb::AppendReq>, Status>| {
            m.map_err(|s| ApiError::field("request", decode_failure(s).message().to_owned()))
        };
        let first = next(input.message().await)?
            .ok_or_else(|| ApiError::field("options", "the call carried no options message"))?;
        let Some(pb::append_req::Content::Options(options)) = first.content else {
            return Err(ApiError::field(
                "options",
                "the first message must be the options",
            ));
        };
        let stream = stream_name(
            "options.stream_identifier",
            &options.stream_identifier.unwrap_or_default().stream_name,
        )?;
        use pb::append_req::options::ExpectedStreamRevision as X;
        let expected_revision = match options.expected_stream_revision {
            Some(X::Revision(r)) => expected(
                "options.expected_stream_revision",
                Some(r),
                false,
                false,
                false,
            ),
            Some(X::NoStream(_)) => Ok(ExpectedRevision::NoStream),
            Some(X::Any(_)) => Ok(ExpectedRevision::Any),
            Some(X::StreamExists(_)) => Ok(ExpectedRevision::StreamExists),
            None => expected(
                "options.expected_stream_revision",
                None,
                false,
                false,
                false,
            ),
        }?;
        let mut events = Vec::new();
        let mut total = 0usize;
        while let Some(message) = next(input.message().await)? {
            let field = format!("proposed_message[{}]", events.len());
            match message.content {
                Some(pb::append_req::Content::ProposedMessage(m)) => {
                    let event = proposed_event(
                        &field,
                        m.id.as_ref(),
                        &m.metadata,
                        m.custom_metadata,
                        m.data,
                    )?;
                    total += event.payload_len();
                    if total > limit {
                        // Stop reading: an oversized append is refused without buffering it.
                        return Err(ApiError::TooLarge {
                            field: "proposed_message".into(),
                            message: format!("the append exceeds the limit of {limit} bytes"),
                            limit,
                        });
                    }
                    events.push(event);
                }
                Some(pb::append_req::Content::Options(_)) => {
                    return Err(ApiError::field(field, "options may be sent only once"));
                }
                None => return Err(ApiError::field(field, "empty message")),
            }
        }
        let request = append_request(stream, expected_revision, events)?;
        match self.state.write(Api::Grpc, request).await {
            Ok(results) => Ok(append_success(results.first())),
            Err(ApiError::Append(AppendError::WrongExpectedRevision {
                expected, actual, ..
            })) => Ok(wrong_expected_version(expected, actual)),
            Err(e) => Err(e),
        }
    }

    async fn delete_or_tombstone(
        &self,
        stream: Option<Vec<u8>>,
        expected_revision: Result<ExpectedRevision, ApiError>,
        tombstone: bool,
    ) -> Result<Option<Position>, ApiError> {
        let stream = stream_name("options.stream_identifier", &stream.unwrap_or_default())?;
        let expected = expected_revision?;
        let request = if tombstone {
            WriteRequest::Tombstone { stream, expected }
        } else {
            WriteRequest::Delete { stream, expected }
        };
        let results = self.state.write(Api::Grpc, request).await?;
        Ok(results.first().and_then(AppendResult::last_position))
    }
}

fn append_success(result: Option<&AppendResult>) -> pb::AppendResp {
    use pb::append_resp::success::{CurrentRevisionOption as C, PositionOption as P};
    let current = result.map_or(CurrentRevision::NoStream, |r| r.current_revision);
    let position = result.and_then(AppendResult::last_position);
    pb::AppendResp {
        result: Some(pb::append_resp::Result::Success(pb::append_resp::Success {
            current_revision_option: Some(match current {
                CurrentRevision::Current(n) => C::CurrentRevision(n),
                CurrentRevision::NoStream => C::NoStream(Default::default()),
            }),
            position_option: Some(match position {
                Some(p) => P::Position(pb::append_resp::Position {
                    commit_position: p.0,
                    prepare_position: p.0,
                }),
                None => P::NoPosition(Default::default()),
            }),
        })),
    }
}

fn wrong_expected_version(expected: ExpectedRevision, actual: CurrentRevision) -> pb::AppendResp {
    use pb::append_resp::wrong_expected_version::{
        CurrentRevisionOption as C, CurrentRevisionOption2060 as C0, ExpectedRevisionOption as E,
        ExpectedRevisionOption2060 as E0,
    };
    let (current, current_old) = match actual {
        CurrentRevision::Current(n) => (C::CurrentRevision(n), C0::CurrentRevision2060(n)),
        CurrentRevision::NoStream => (
            C::CurrentNoStream(Default::default()),
            C0::NoStream2060(Default::default()),
        ),
    };
    let (expected_new, expected_old) = match expected {
        ExpectedRevision::Exact(n) => (E::ExpectedRevision(n), Some(E0::ExpectedRevision2060(n))),
        ExpectedRevision::Any => (
            E::ExpectedAny(Default::default()),
            Some(E0::Any2060(Default::default())),
        ),
        ExpectedRevision::StreamExists => (
            E::ExpectedStreamExists(Default::default()),
            Some(E0::StreamExists2060(Default::default())),
        ),
        ExpectedRevision::NoStream => (E::ExpectedNoStream(Default::default()), None),
    };
    pb::AppendResp {
        result: Some(pb::append_resp::Result::WrongExpectedVersion(
            pb::append_resp::WrongExpectedVersion {
                current_revision_option_20_6_0: Some(current_old),
                expected_revision_option_20_6_0: expected_old,
                current_revision_option: Some(current),
                expected_revision_option: Some(expected_new),
            },
        )),
    }
}

fn log_failure(method: &str, started: Instant, error: &ApiError) {
    tracing::debug!(method, elapsed = ?started.elapsed(), %error, "gRPC request failed");
}

#[tonic::async_trait]
impl pb::streams_server::Streams for StreamsService {
    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<pb::ReadReq>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let started = Instant::now();
        self.read_inner(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| {
                log_failure("Read", started, &e);
                status(e)
            })
    }

    async fn append(
        &self,
        request: Request<Streaming<pb::AppendReq>>,
    ) -> Result<Response<pb::AppendResp>, Status> {
        let started = Instant::now();
        self.append_inner(request)
            .await
            .map(Response::new)
            .map_err(|e| {
                log_failure("Append", started, &e);
                status(e)
            })
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteReq>,
    ) -> Result<Response<pb::DeleteResp>, Status> {
        use pb::delete_req::options::ExpectedStreamRevision as X;
        use pb::delete_resp::PositionOption as P;
        let options = request.into_inner().options.unwrap_or_default();
        let expected_revision = match options.expected_stream_revision {
            Some(X::Revision(r)) => Ok(ExpectedRevision::Exact(r)),
            Some(X::NoStream(_)) => Ok(ExpectedRevision::NoStream),
            Some(X::Any(_)) => Ok(ExpectedRevision::Any),
            Some(X::StreamExists(_)) => Ok(ExpectedRevision::StreamExists),
            None => expected(
                "options.expected_stream_revision",
                None,
                false,
                false,
                false,
            ),
        };
        let stream = options.stream_identifier.map(|s| s.stream_name.to_vec());
        let position = self
            .delete_or_tombstone(stream, expected_revision, false)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResp {
            position_option: Some(match position {
                Some(p) => P::Position(pb::delete_resp::Position {
                    commit_position: p.0,
                    prepare_position: p.0,
                }),
                None => P::NoPosition(Default::default()),
            }),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<pb::TombstoneReq>,
    ) -> Result<Response<pb::TombstoneResp>, Status> {
        use pb::tombstone_req::options::ExpectedStreamRevision as X;
        use pb::tombstone_resp::PositionOption as P;
        let options = request.into_inner().options.unwrap_or_default();
        let expected_revision = match options.expected_stream_revision {
            Some(X::Revision(r)) => Ok(ExpectedRevision::Exact(r)),
            Some(X::NoStream(_)) => Ok(ExpectedRevision::NoStream),
            Some(X::Any(_)) => Ok(ExpectedRevision::Any),
            Some(X::StreamExists(_)) => Ok(ExpectedRevision::StreamExists),
            None => expected(
                "options.expected_stream_revision",
                None,
                false,
                false,
                false,
            ),
        };
        let stream = options.stream_identifier.map(|s| s.stream_name.to_vec());
        let position = self
            .delete_or_tombstone(stream, expected_revision, true)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::TombstoneResp {
            position_option: Some(match position {
                Some(p) => P::Position(pb::tombstone_resp::Position {
                    commit_position: p.0,
                    prepare_position: p.0,
                }),
                None => P::NoPosition(Default::default()),
            }),
        }))
    }

    type BatchAppendStream = super::batch::BatchStream;

    async fn batch_append(
        &self,
        request: Request<Streaming<pb::BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Ok(Response::new(super::batch::run(
            self.state.clone(),
            request.into_inner(),
        )))
    }
}
