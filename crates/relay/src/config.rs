//! The relay's TOML configuration. Every option has a default; `annals relay print-config`
//! prints a complete file with all defaults filled in.
//!
//! ```toml
//! [database]
//! url = "postgres://postgres@127.0.0.1:5432/test"
//! [source]
//! mode = "wal"
//! [sink]
//! kind = "nats"
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ident};
use crate::sink::{nats::NatsConfig, rabbitmq::RabbitMqConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Where the outbox lives.
    pub database: DatabaseConfig,
    /// How rows are read: polling or WAL tailing.
    pub source: SourceConfig,
    /// Where messages go.
    pub sink: SinkConfig,
    /// Envelope attributes.
    pub envelope: EnvelopeConfig,
    /// Deleting or archiving published rows.
    pub housekeeping: HousekeepingConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Backoff after a transient failure (broker or database down).
    pub retry: RetryConfig,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. Default `postgres://postgres@127.0.0.1:5432/test`.
    pub url: String,
    /// Schema of the outbox table. Default `public`.
    pub schema: String,
    /// Outbox table name. Default `outbox`.
    pub table: String,
    /// Connection pool size for the relay's own queries. Default `4`.
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/test".into(),
            schema: "public".into(),
            table: "outbox".into(),
            pool_size: 4,
        }
    }
}

/// Which source reads the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// Logical replication (`pgoutput`) of the outbox table.
    Wal,
    /// `SELECT … FOR UPDATE SKIP LOCKED` batches.
    Polling,
}

/// `[source]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// `"wal"` (default) or `"polling"`.
    pub mode: SourceMode,
    /// Options of the polling publisher.
    pub polling: PollingConfig,
    /// Options of WAL tailing.
    pub wal: WalConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            mode: SourceMode::Wal,
            polling: PollingConfig::default(),
            wal: WalConfig::default(),
        }
    }
}

/// `[source.polling]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollingConfig {
    /// Rows claimed per batch (one transaction). Default `500`.
    pub batch_size: u32,
    /// Pause after an empty or partial batch, in milliseconds. Default `50`.
    pub poll_interval_ms: u64,
    /// First key of the two-key advisory locks that serialize one aggregate key across relay
    /// instances. Change it only if it collides with your application's advisory locks.
    /// Default `1095451209`.
    pub lock_namespace: i32,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval_ms: 50,
            lock_namespace: 1_095_451_209,
        }
    }
}

/// `[source.wal]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Logical replication slot name. Default `annals_relay`.
    pub slot: String,
    /// Publication of the outbox table (inserts only). Default `annals_outbox`.
    pub publication: String,
    /// How often progress is recorded and sent to PostgreSQL, in ms. Default `500`.
    pub feedback_interval_ms: u64,
    /// How often a heartbeat message is written into the WAL so an idle outbox never pins
    /// WAL and lag stays measurable, in ms. `0` disables. Default `10000`.
    pub heartbeat_interval_ms: u64,
    /// How often the slot's health (`wal_status`, lag in bytes) is checked, in ms.
    /// Default `5000`.
    pub slot_check_interval_ms: u64,
    /// Bound of the queue between the WAL reader and the publisher, in rows (handed over in
    /// chunks of up to 256 rows of one transaction). Default `8192`.
    pub queue_capacity: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            slot: "annals_relay".into(),
            publication: "annals_outbox".into(),
            feedback_interval_ms: 500,
            heartbeat_interval_ms: 10_000,
            slot_check_interval_ms: 5_000,
            queue_capacity: 8192,
        }
    }
}

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// NATS JetStream.
    Nats,
    /// RabbitMQ (AMQP 0-9-1).
    RabbitMq,
}

/// `[sink]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// `"nats"` (default) or `"rabbitmq"`.
    pub kind: SinkKind,
    /// WAL mode: messages published but not yet acknowledged, at most (plus up to 255 more
    /// when a transaction's chunk is being sent). Polling mode publishes one batch
    /// (`source.polling.batch_size`) at a time instead. Default `1024`.
    pub max_in_flight: usize,
    /// Options of the NATS JetStream sink.
    pub nats: NatsConfig,
    /// Options of the RabbitMQ sink.
    pub rabbitmq: RabbitMqConfig,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            kind: SinkKind::Nats,
            max_in_flight: 1024,
            nats: NatsConfig::default(),
            rabbitmq: RabbitMqConfig::default(),
        }
    }
}

/// `[envelope]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvelopeConfig {
    /// CloudEvents `source` attribute of every message. Default `annals-relay`.
    pub source: String,
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        Self {
            source: "annals-relay".into(),
        }
    }
}

/// What housekeeping does with published rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HousekeepingMode {
    /// Delete them.
    Delete,
    /// Move them into `archive_table` (same columns).
    Archive,
}

/// `[housekeeping]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HousekeepingConfig {
    /// Run housekeeping at all. Default `true`.
    pub enabled: bool,
    /// Keep published rows this long, in seconds. Default `86400` (one day).
    pub retention_secs: u64,
    /// Pause between housekeeping passes, in seconds. Default `60`.
    pub interval_secs: u64,
    /// `"delete"` (default) or `"archive"`.
    pub mode: HousekeepingMode,
    /// Archive table (same schema as the outbox) for `mode = "archive"`.
    /// Default `outbox_archive`.
    pub archive_table: String,
    /// Rows removed per statement. Default `5000`.
    pub batch_size: u32,
}

impl Default for HousekeepingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_secs: 86_400,
            interval_secs: 60,
            mode: HousekeepingMode::Delete,
            archive_table: "outbox_archive".into(),
            batch_size: 5000,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`), e.g. `127.0.0.1:9187`.
    /// Empty (default) turns the endpoint off.
    pub listen: String,
}

/// `[retry]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// First pause after a failure, in ms; doubles up to `max_backoff_ms`. Default `200`.
    pub initial_backoff_ms: u64,
    /// Longest pause, in ms. Default `5000`.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 200,
            max_backoff_ms: 5000,
        }
    }
}

impl RelayConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: RelayConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A complete TOML document with every default.
    pub fn default_toml() -> String {
        toml::to_string(&RelayConfig::default()).unwrap_or_default()
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = |field: &'static str, v: &str| {
            ident(v).map(|_| ()).map_err(|bad| ConfigError::Invalid {
                field,
                reason: format!("{bad:?} is not a plain identifier ([a-z_][a-z0-9_]*)"),
            })
        };
        id("database.schema", &self.database.schema)?;
        id("database.table", &self.database.table)?;
        id("source.wal.slot", &self.source.wal.slot)?;
        id("source.wal.publication", &self.source.wal.publication)?;
        id(
            "housekeeping.archive_table",
            &self.housekeeping.archive_table,
        )?;
        let positive = |field: &'static str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    field,
                    reason: "must be greater than 0".into(),
                })
            } else {
                Ok(())
            }
        };
        positive(
            "source.polling.batch_size",
            self.source.polling.batch_size.into(),
        )?;
        positive(
            "source.wal.feedback_interval_ms",
            self.source.wal.feedback_interval_ms,
        )?;
        positive(
            "source.wal.queue_capacity",
            self.source.wal.queue_capacity as u64,
        )?;
        positive("sink.max_in_flight", self.sink.max_in_flight as u64)?;
        positive(
            "housekeeping.interval_secs",
            self.housekeeping.interval_secs,
        )?;
        positive(
            "housekeeping.batch_size",
            self.housekeeping.batch_size.into(),
        )?;
        positive("database.pool_size", self.database.pool_size.into())?;
        positive("retry.initial_backoff_ms", self.retry.initial_backoff_ms)?;
        let at_most = |field: &'static str, v: u64, max: u64| {
            if v > max {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("must be at most {max}"),
                })
            } else {
                Ok(())
            }
        };
        at_most(
            "source.polling.batch_size",
            self.source.polling.batch_size.into(),
            100_000,
        )?;
        at_most(
            "source.wal.queue_capacity",
            self.source.wal.queue_capacity as u64,
            1_000_000,
        )?;
        at_most(
            "sink.max_in_flight",
            self.sink.max_in_flight as u64,
            1_000_000,
        )?;
        at_most("database.pool_size", self.database.pool_size.into(), 1000)?;
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid {
                field: "metrics.listen",
                reason: format!(
                    "{:?} is not an address like 127.0.0.1:9187",
                    self.metrics.listen
                ),
            });
        }
        self.sink.nats.validate()?;
        Ok(())
    }

    /// The outbox table handle described by `[database]`.
    pub fn outbox(&self) -> Result<crate::outbox::Outbox, crate::error::OutboxError> {
        crate::outbox::Outbox::new(&self.database.schema, &self.database.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_validate() {
        let text = RelayConfig::default_toml();
        let cfg = RelayConfig::from_toml(&text).expect("default config parses");
        assert_eq!(cfg.source.mode, SourceMode::Wal);
        assert_eq!(cfg.sink.kind, SinkKind::Nats);
        assert_eq!(cfg.database.table, "outbox");
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let cfg = RelayConfig::from_toml("").expect("empty config parses");
        assert_eq!(cfg.source.polling.batch_size, 500);
    }

    #[test]
    fn unknown_keys_and_bad_identifiers_are_refused() {
        assert!(matches!(
            RelayConfig::from_toml("[database]\nurll = \"x\""),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            RelayConfig::from_toml("[database]\ntable = \"out; drop table x\""),
            Err(ConfigError::Invalid {
                field: "database.table",
                ..
            })
        ));
        assert!(matches!(
            RelayConfig::from_toml("[sink]\nmax_in_flight = 0"),
            Err(ConfigError::Invalid {
                field: "sink.max_in_flight",
                ..
            })
        ));
        assert!(matches!(
            RelayConfig::from_toml("[sink]\nmax_in_flight = 9223372036854775807"),
            Err(ConfigError::Invalid {
                field: "sink.max_in_flight",
                ..
            })
        ));
        assert!(matches!(
            RelayConfig::from_toml("[metrics]\nlisten = \"nope\""),
            Err(ConfigError::Invalid {
                field: "metrics.listen",
                ..
            })
        ));
    }
}
