//! How to reach the database and how the store behaves.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use annals_core::{Clock, Limits, Position, SystemClock};
use futures::future::BoxFuture;

use crate::error::PgError;

/// A hook awaited after an append's records are inserted and before its transaction
/// commits, with their positions; an `Err` rolls the transaction back and fails the append.
/// A failpoint for tests (T6 holds transactions open and aborts some with it); production
/// configurations leave it unset.
pub type BeforeCommit =
    Arc<dyn Fn(&[Position]) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Configuration of a [`PgStore`](crate::PgStore).
#[derive(Clone)]
pub struct PgConfig {
    /// Connection URL, e.g. `postgres://postgres@127.0.0.1:5432/test`.
    pub url: String,
    /// The schema holding the store's tables (created on first use). Default `annals`.
    pub schema: String,
    /// Largest number of pooled connections. Default 32.
    pub max_connections: u32,
    /// How often the store re-checks the visible prefix without a notification: the most a
    /// lost notification delays a subscription. Default 250 ms.
    pub poll_interval: Duration,
    /// Attempts of one write when concurrent writers to the same stream keep winning.
    /// Default 100.
    pub max_attempts: u32,
    /// Commit timestamps and `$maxAge` checks.
    pub clock: Arc<dyn Clock>,
    /// Size limits on appends.
    pub limits: Limits,
    /// Test failpoint, see [`BeforeCommit`].
    pub before_commit: Option<BeforeCommit>,
}

impl PgConfig {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "annals".to_owned(),
            max_connections: 32,
            poll_interval: Duration::from_millis(250),
            max_attempts: 100,
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            before_commit: None,
        }
    }

    /// Sets the schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks what the database cannot check for us: the schema name is interpolated into
    /// DDL, so it must be a plain lower-case identifier.
    pub(crate) fn validate(&self) -> Result<(), PgError> {
        let s = self.schema.as_bytes();
        let plain = !s.is_empty()
            && s.len() <= 63
            && (s[0].is_ascii_lowercase() || s[0] == b'_')
            && s.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
        if !plain || self.schema.starts_with("pg_") {
            return Err(PgError::InvalidSchema(self.schema.clone()));
        }
        if self.max_connections < 2 {
            return Err(PgError::Config(
                "max_connections must be at least 2 (one for writes, one for head checks)".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("poll_interval", &self.poll_interval)
            .field("max_attempts", &self.max_attempts)
            .field("limits", &self.limits)
            .field("before_commit", &self.before_commit.is_some())
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_must_be_plain_identifiers() {
        let ok = |s: &str| PgConfig::new("postgres://x").schema(s).validate().is_ok();
        assert!(ok("annals"));
        assert!(ok("_t_42"));
        assert!(!ok(""));
        assert!(!ok("Annals"));
        assert!(!ok("a-b"));
        assert!(!ok("a;drop"));
        assert!(!ok("1abc"));
        assert!(!ok("pg_temp"));
        assert!(!ok(&"a".repeat(64)));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
