use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// `[sink.nats]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// JetStream stream that stores the messages. Default `ANNALS_OUTBOX`.
    pub stream: String,
    /// Subject prefix; a message goes to `<prefix>.<aggregate_type>.<event_type>` (tokens
    /// sanitized to `[A-Za-z0-9_-]`). Default `annals.outbox`.
    pub subject_prefix: String,
    /// Create the stream (subjects `<prefix>.>`, file storage) when it does not exist.
    /// Default `true`.
    pub create_stream: bool,
    /// JetStream duplicate window for streams the relay creates, in seconds: redeliveries of
    /// one message id inside it are dropped by the server. Default `600`.
    pub duplicate_window_secs: u64,
    /// How long to wait for one publish ack, in ms. Default `5000`.
    pub ack_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "ANNALS_OUTBOX".into(),
            subject_prefix: "annals.outbox".into(),
            create_stream: true,
            duplicate_window_secs: 600,
            ack_timeout_ms: 5000,
        }
    }
}

impl NatsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad_stream = self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
        if bad_stream {
            return Err(ConfigError::Invalid {
                field: "sink.nats.stream",
                reason: "must be non-empty without spaces, '.', '*', '>', '/'".into(),
            });
        }
        let bad_prefix = self.subject_prefix.is_empty()
            || self.subject_prefix.split('.').any(|t| {
                t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>')
            });
        if bad_prefix {
            return Err(ConfigError::Invalid {
                field: "sink.nats.subject_prefix",
                reason: "must be dot-separated non-empty tokens without wildcards".into(),
            });
        }
        if self.ack_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                field: "sink.nats.ack_timeout_ms",
                reason: "must be greater than 0".into(),
            });
        }
        Ok(())
    }
}
