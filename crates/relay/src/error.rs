//! Error types. One enum per area, all converting into [`RelayError`].

use thiserror::Error;

/// Errors from reading or validating the relay's TOML configuration.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path that was read.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown / mistyped keys.
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is syntactically fine but not allowed (e.g. a bad SQL identifier).
    #[error("invalid config value for `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Errors from the outbox writer API and schema setup.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A table or schema name is not a plain SQL identifier.
    #[error("invalid SQL identifier {0:?}: use [a-z_][a-z0-9_]* (at most 63 bytes)")]
    InvalidIdentifier(String),
    /// A message with the same id is already in the outbox (SQLSTATE 23505).
    #[error("a message with id {0} is already in the outbox")]
    DuplicateId(uuid::Uuid),
    /// The database refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Errors from a sink (broker) connection or publish.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Could not connect to the broker or set up its stream / exchange.
    #[error("{sink}: cannot connect or set up: {reason}")]
    Connect {
        /// Which sink.
        sink: &'static str,
        /// What failed.
        reason: String,
    },
    /// The broker did not accept a message (send failed, negative ack, timeout).
    #[error("{sink}: publish of message {id} not acknowledged: {reason}")]
    Publish {
        /// Which sink.
        sink: &'static str,
        /// The envelope id of the message.
        id: uuid::Uuid,
        /// What failed.
        reason: String,
    },
    /// The broker refuses this message for its size whatever the retry: the relay stops
    /// rather than skip it (never skipped silently, like an undecodable row).
    #[error(
        "{sink}: message {id} (outbox seq {seq}) is too large for the broker: {reason}. \
         Raise the broker's limit (NATS: `max_payload`), or move the payload out of the \
         outbox row (see docs/relay.md, 'A message the broker refuses')"
    )]
    TooLarge {
        /// Which sink.
        sink: &'static str,
        /// The envelope id of the message.
        id: uuid::Uuid,
        /// The outbox row's `seq`.
        seq: i64,
        /// The broker's limit and the message's size.
        reason: String,
    },
    /// The message could not be encoded into an envelope.
    #[error(transparent)]
    Envelope(#[from] crate::envelope::EnvelopeError),
}

/// Errors from a source (polling query or replication stream).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The database refused a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The logical replication stream failed.
    #[error("replication stream error: {0}")]
    Replication(#[from] pg_walstream::ReplicationError),
    /// A row from the WAL could not be decoded into an outbox message.
    #[error("cannot decode outbox row at LSN {lsn}: {reason}")]
    Decode {
        /// LSN of the change.
        lsn: String,
        /// What was wrong.
        reason: String,
    },
    /// The replication slot the relay used is gone (dropped or invalidated). Rows committed
    /// after its last confirmed position may not have been published: never skipped silently.
    #[error(
        "replication slot {slot} is lost ({detail}); last acknowledged LSN {acked_lsn}. \
         Run `annals relay setup --recreate-slot` after republishing rows newer than that \
         (see docs/relay.md, 'Slot loss')"
    )]
    SlotLost {
        /// Slot name.
        slot: String,
        /// What was observed.
        detail: String,
        /// Last LSN the relay recorded as acknowledged.
        acked_lsn: String,
    },
    /// The slot exists but was not created or advanced by this relay (its confirmed position
    /// is ahead of anything this relay acknowledged): it was recreated or advanced by hand.
    #[error(
        "replication slot {slot} was recreated or advanced outside the relay: confirmed \
         position {slot_lsn} is ahead of the relay's acknowledged {acked_lsn}; rows in between \
         may be unpublished (see docs/relay.md, 'Slot loss')"
    )]
    SlotRecreated {
        /// Slot name.
        slot: String,
        /// The slot's `confirmed_flush_lsn`.
        slot_lsn: String,
        /// The relay's recorded acknowledged LSN.
        acked_lsn: String,
    },
    /// The slot could not be dropped: a replication connection (another relay, or a client
    /// started by hand) still held it after the wait.
    #[error(
        "replication slot {slot} is still in use by PID {} after waiting {waited_ms} ms; \
         stop the relay or client attached to it (pg_stat_replication shows it) and retry",
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    SlotInUse {
        /// Slot name.
        slot: String,
        /// `active_pid` of the slot when the wait ended (gone by then if `None`).
        pid: Option<i32>,
        /// How long the drop waited.
        waited_ms: u64,
    },
    /// PostgreSQL is not configured for logical decoding.
    #[error("wal_level is {0:?}, logical replication needs `logical` (run `annals relay setup`)")]
    WalLevel(String),
}

/// Errors from the inbox helper.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InboxError {
    /// A table or schema name is not a plain SQL identifier.
    #[error("invalid SQL identifier {0:?}")]
    InvalidIdentifier(String),
    /// The database refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Umbrella error of the relay.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RelayError {
    /// See [`ConfigError`]. Fatal.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// See [`OutboxError`].
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// See [`SinkError`]. Retried with backoff.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// See [`SourceError`]. Retried with backoff, except slot loss and decode errors (fatal).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Metrics exporter could not start. Fatal.
    #[error("metrics exporter: {0}")]
    Metrics(String),
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        RelayError::Source(SourceError::Database(e))
    }
}

impl RelayError {
    /// True when retrying cannot help: the relay stops and reports instead.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            RelayError::Config(_)
                | RelayError::Metrics(_)
                | RelayError::Outbox(OutboxError::InvalidIdentifier(_))
                | RelayError::Source(
                    SourceError::SlotLost { .. }
                        | SourceError::SlotRecreated { .. }
                        | SourceError::Decode { .. }
                        | SourceError::WalLevel(_),
                )
                | RelayError::Sink(SinkError::Envelope(_) | SinkError::TooLarge { .. })
        )
    }
}

/// Quotes a validated SQL identifier; refuses anything but `[a-z_][a-z0-9_]*`.
pub(crate) fn ident(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(name.to_string())
    }
}
