//! Errors of the server: one typed enum both APIs render, gRPC as a status with the metadata
//! KurrentDB clients read (`grpc/errors.rs`), HTTP as a JSON body naming the field
//! (`http/errors.rs`).

use annals_core::{AppendError, InvalidInput, ReadError, StreamName};

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A field of the request is malformed or missing. HTTP 400 / gRPC `INVALID_ARGUMENT`.
    #[error("{field}: {message}")]
    BadField {
        /// The field, as named in the request (e.g. `events[0].id`, `options.stream_identifier`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The request is larger than a configured limit. HTTP 413 / gRPC `INVALID_ARGUMENT` with
    /// `exception: maximum-append-size-exceeded`.
    #[error("{field}: {message}")]
    TooLarge {
        /// The field or part that is too large.
        field: String,
        /// Sizes and the limit.
        message: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is declared with a content type the endpoint does not take. HTTP 415.
    #[error("unsupported content type '{0}'; send application/json")]
    UnsupportedMediaType(String),
    /// No such route or resource. HTTP 404 / gRPC `UNIMPLEMENTED` for unknown methods.
    #[error("{0}")]
    NotFound(String),
    /// The server is shutting down. HTTP 503 / gRPC `UNAVAILABLE`.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A write failed (see [`AppendError`] for each variant's status).
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A read failed (see [`ReadError`] for each variant's status).
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl ApiError {
    /// A malformed field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field a core validation error concerns, when it names one.
    pub(crate) fn invalid_input_field(input: &InvalidInput) -> &'static str {
        match input {
            InvalidInput::Name(_)
            | InvalidInput::ReservedStream { .. }
            | InvalidInput::ReadOnlyStream { .. }
            | InvalidInput::DuplicateStream { .. }
            | InvalidInput::NoStreams => "stream",
            InvalidInput::InvalidJson { .. } => "data",
            InvalidInput::EventTooLarge { .. }
            | InvalidInput::AppendTooLarge { .. }
            | InvalidInput::TooManyEvents { .. } => "events",
            InvalidInput::DuplicateEventId { .. } => "id",
            InvalidInput::Metadata(_) => "metadata",
            _ => "request",
        }
    }
}

/// Parses a stream name from a request field.
pub(crate) fn stream_name(field: &str, raw: &[u8]) -> Result<StreamName, ApiError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| ApiError::field(field, "stream name is not valid UTF-8"))?;
    StreamName::new(text).map_err(|e| ApiError::field(field, e.to_string()))
}
