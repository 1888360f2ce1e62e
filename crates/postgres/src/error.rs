//! Errors of opening the store. Errors of reads and writes are the core's
//! [`StorageError`](annals_core::StorageError), wrapping [`PgError`].

use annals_core::{AppendError, ReadError, StorageError};

/// What went wrong with PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The configured schema name is not a plain identifier.
    #[error(
        "schema name '{0}' must be 1–63 characters of a-z, 0-9 and _, not start with a digit or pg_"
    )]
    InvalidSchema(String),
    /// Another configuration error.
    #[error("invalid PostgreSQL configuration: {0}")]
    Config(String),
    /// The connection URL does not parse.
    #[error("invalid PostgreSQL URL '{url}': {source}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// The parser's error.
        source: sqlx::Error,
    },
    /// The database has a newer schema than this build knows.
    #[error(
        "schema '{schema}' is at version {found}; this build knows up to {known}: upgrade Annals"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// The version found.
        found: i32,
        /// The newest version this build has.
        known: i32,
    },
    /// A stored row does not decode (a name or id that cannot have been written by Annals).
    #[error("stored row at position {position} is invalid: {detail}")]
    BadRow {
        /// The row's position.
        position: i64,
        /// What was wrong.
        detail: String,
    },
    /// A database operation failed.
    #[error("PostgreSQL error while {context}: {source}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
}

impl PgError {
    /// Wraps a driver error with what was being done.
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> PgError {
        move |source| PgError::Database { context, source }
    }
}

impl From<PgError> for StorageError {
    fn from(e: PgError) -> Self {
        StorageError::Backend(std::sync::Arc::new(e))
    }
}

impl From<PgError> for AppendError {
    fn from(e: PgError) -> Self {
        AppendError::Storage(e.into())
    }
}

impl From<PgError> for ReadError {
    fn from(e: PgError) -> Self {
        ReadError::Storage(e.into())
    }
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// `unique_violation`: another writer took the same stream row or `(stream, revision)`.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";
