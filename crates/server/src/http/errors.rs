//! [`ApiError`] as an HTTP response: a status code and a JSON body that names the field.

use annals_core::{AppendError, InvalidInput, ReadError, StorageError};
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::json::{ErrorDetailJson, ErrorJson};
use crate::error::ApiError;

impl ApiError {
    /// The HTTP status and JSON body.
    pub(crate) fn to_http(&self) -> (StatusCode, ErrorJson) {
        let mut detail = ErrorDetailJson {
            code: String::new(),
            message: self.to_string(),
            field: None,
            stream: None,
            expected: None,
            actual: None,
        };
        let status = match self {
            ApiError::BadField { field, .. } => {
                detail.code = "invalid_field".into();
                detail.field = Some(field.clone());
                StatusCode::BAD_REQUEST
            }
            ApiError::TooLarge { field, .. } => {
                detail.code = "too_large".into();
                detail.field = Some(field.clone());
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => {
                detail.code = "unsupported_media_type".into();
                detail.field = Some("Content-Type".into());
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::NotFound(_) => {
                detail.code = "not_found".into();
                StatusCode::NOT_FOUND
            }
            ApiError::ShuttingDown => {
                detail.code = "shutting_down".into();
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Append(AppendError::WrongExpectedRevision {
                stream,
                expected,
                actual,
            }) => {
                detail.code = "wrong_expected_revision".into();
                detail.field = Some("expectedRevision".into());
                detail.stream = Some(stream.to_string());
                detail.expected = Some(expected.to_string());
                detail.actual = Some(actual.to_string());
                StatusCode::CONFLICT
            }
            ApiError::Append(AppendError::StreamDeleted { stream })
            | ApiError::Read(ReadError::StreamDeleted { stream }) => {
                detail.code = "stream_deleted".into();
                detail.stream = Some(stream.to_string());
                StatusCode::GONE
            }
            ApiError::Read(ReadError::StreamNotFound { stream }) => {
                detail.code = "stream_not_found".into();
                detail.stream = Some(stream.to_string());
                StatusCode::NOT_FOUND
            }
            ApiError::Append(AppendError::Invalid(input))
            | ApiError::Read(ReadError::Invalid(input)) => {
                detail.field = Some(ApiError::invalid_input_field(input).into());
                if matches!(
                    input,
                    InvalidInput::EventTooLarge { .. }
                        | InvalidInput::AppendTooLarge { .. }
                        | InvalidInput::TooManyEvents { .. }
                ) {
                    detail.code = "too_large".into();
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    detail.code = "invalid_field".into();
                    StatusCode::BAD_REQUEST
                }
            }
            ApiError::Append(AppendError::Storage(e)) | ApiError::Read(ReadError::Storage(e)) => {
                detail.code = "storage".into();
                match e {
                    StorageError::Poisoned { .. } | StorageError::Closed => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
            _ => {
                detail.code = "internal".into();
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, ErrorJson { error: detail })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.to_http();
        if status.is_server_error() {
            tracing::error!(error = %self, "HTTP request failed");
        }
        (status, Json(body)).into_response()
    }
}
