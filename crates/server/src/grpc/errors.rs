//! [`ApiError`] as gRPC statuses, with the `exception` metadata KurrentDB clients read
//! (`wrong-expected-version`, `stream-deleted`, `stream-not-found`,
//! `maximum-append-size-exceeded`, `access-denied`), and as the `google.rpc.Status` with a
//! packed detail that BatchAppend responses carry.

use annals_core::{
    AppendError, CurrentRevision, ExpectedRevision, InvalidInput, ReadError, StorageError,
};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::ApiError;
use crate::proto::event_store::client as pb;
use crate::proto::google::rpc;

/// KurrentDB's numbers for expected revisions: -1 no stream, -2 any, -4 stream exists.
fn expected_number(e: ExpectedRevision) -> String {
    match e {
        ExpectedRevision::Any => "-2".into(),
        ExpectedRevision::NoStream => "-1".into(),
        ExpectedRevision::StreamExists => "-4".into(),
        ExpectedRevision::Exact(n) => n.to_string(),
    }
}

fn current_number(c: CurrentRevision) -> String {
    match c {
        CurrentRevision::NoStream => "-1".into(),
        CurrentRevision::Current(n) => n.to_string(),
    }
}

/// Header values must be visible ASCII; anything else becomes `?`.
fn ascii(value: &str) -> MetadataValue<tonic::metadata::Ascii> {
    let clean: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    MetadataValue::try_from(clean.as_str()).unwrap_or_else(|_| MetadataValue::from_static("?"))
}

fn with_metadata(code: Code, message: String, pairs: &[(&'static str, String)]) -> Status {
    let mut status = Status::new(code, message);
    for (key, value) in pairs {
        status.metadata_mut().insert(*key, ascii(value));
    }
    status
}

/// A size limit was exceeded.
fn too_large(message: String, limit: usize) -> Status {
    with_metadata(
        Code::InvalidArgument,
        message,
        &[
            ("exception", "maximum-append-size-exceeded".into()),
            ("maximum-append-size", limit.to_string()),
        ],
    )
}

fn storage_code(e: &StorageError) -> Code {
    match e {
        StorageError::Corruption { .. } => Code::DataLoss,
        _ => Code::Unavailable,
    }
}

/// The status a failed request ends with.
pub(crate) fn status(error: ApiError) -> Status {
    let message = error.to_string();
    match error {
        ApiError::BadField { .. } | ApiError::UnsupportedMediaType(_) => {
            Status::invalid_argument(message)
        }
        ApiError::TooLarge { limit, .. } => too_large(message, limit),
        ApiError::NotFound(_) => Status::not_found(message),
        ApiError::ShuttingDown => Status::unavailable(message),
        ApiError::Append(AppendError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        }) => with_metadata(
            Code::FailedPrecondition,
            message,
            &[
                ("exception", "wrong-expected-version".into()),
                ("stream-name", stream.to_string()),
                ("expected-version", expected_number(expected)),
                ("actual-version", current_number(actual)),
            ],
        ),
        ApiError::Append(AppendError::StreamDeleted { stream })
        | ApiError::Read(ReadError::StreamDeleted { stream }) => with_metadata(
            Code::FailedPrecondition,
            message,
            &[
                ("exception", "stream-deleted".into()),
                ("stream-name", stream.to_string()),
            ],
        ),
        ApiError::Read(ReadError::StreamNotFound { stream }) => with_metadata(
            Code::NotFound,
            message,
            &[
                ("exception", "stream-not-found".into()),
                ("stream-name", stream.to_string()),
            ],
        ),
        ApiError::Append(AppendError::Invalid(
            InvalidInput::EventTooLarge { limit, .. } | InvalidInput::AppendTooLarge { limit, .. },
        )) => too_large(message, limit),
        ApiError::Append(AppendError::Invalid(_)) | ApiError::Read(ReadError::Invalid(_)) => {
            Status::invalid_argument(message)
        }
        ApiError::Append(AppendError::Storage(e)) | ApiError::Read(ReadError::Storage(e)) => {
            tracing::error!(error = %e, "storage failure answering a gRPC request");
            Status::new(storage_code(&e), message)
        }
        _ => Status::unknown(message),
    }
}

fn any<M: Message>(name: &str, message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: message.encode_to_vec(),
    }
}

/// The `google.rpc.Status` of a failed BatchAppend, with the detail clients unpack.
pub(crate) fn rpc_status(error: &ApiError, stream: &str) -> rpc::Status {
    let message = error.to_string();
    let (code, details) = match error {
        ApiError::Append(AppendError::WrongExpectedRevision {
            expected, actual, ..
        }) => {
            use pb::wrong_expected_version::{
                CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as E,
            };
            let detail = pb::WrongExpectedVersion {
                current_stream_revision_option: Some(match actual {
                    CurrentRevision::NoStream => C::CurrentNoStream(()),
                    CurrentRevision::Current(n) => C::CurrentStreamRevision(*n),
                }),
                expected_stream_position_option: Some(match expected {
                    ExpectedRevision::Any => E::ExpectedAny(()),
                    ExpectedRevision::NoStream => E::ExpectedNoStream(()),
                    ExpectedRevision::StreamExists => E::ExpectedStreamExists(()),
                    ExpectedRevision::Exact(n) => E::ExpectedStreamPosition(*n),
                }),
            };
            (
                Code::FailedPrecondition,
                any("event_store.client.WrongExpectedVersion", &detail),
            )
        }
        ApiError::Append(AppendError::StreamDeleted { .. }) => (
            Code::FailedPrecondition,
            any(
                "event_store.client.StreamDeleted",
                &pb::StreamDeleted {
                    stream_identifier: Some(super::stream_id(stream)),
                },
            ),
        ),
        ApiError::TooLarge { limit, .. }
        | ApiError::Append(AppendError::Invalid(
            InvalidInput::EventTooLarge { limit, .. } | InvalidInput::AppendTooLarge { limit, .. },
        )) => (
            Code::InvalidArgument,
            any(
                "event_store.client.MaximumAppendSizeExceeded",
                &pb::MaximumAppendSizeExceeded {
                    max_append_size: u32::try_from(*limit).unwrap_or(u32::MAX),
                },
            ),
        ),
        ApiError::BadField { .. }
        | ApiError::UnsupportedMediaType(_)
        | ApiError::Append(AppendError::Invalid(_)) => (
            Code::InvalidArgument,
            any(
                "event_store.client.BadRequest",
                &pb::BadRequest {
                    message: message.clone(),
                },
            ),
        ),
        _ => (
            Code::Unavailable,
            any("event_store.client.Unknown", &pb::Unknown {}),
        ),
    };
    rpc::Status {
        code: code as i32,
        message,
        details: Some(details),
    }
}

/// Turns a stream decoding failure from tonic into `INVALID_ARGUMENT`.
pub(crate) fn decode_failure(status: Status) -> Status {
    if status.code() == Code::Internal && status.message().contains("decod") {
        Status::invalid_argument(format!("malformed request: {}", status.message()))
    } else {
        status
    }
}
