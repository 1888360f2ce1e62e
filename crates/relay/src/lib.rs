//! Annals relay: the transactional outbox and its relay.
//!
//! - [`outbox`]: enqueue messages inside the caller's own sqlx transaction on PostgreSQL;
//!   the library owns the table's migration.
//! - [`source`]: how the relay finds committed rows — [`source::polling`] (batches with
//!   `FOR UPDATE SKIP LOCKED`, several instances side by side) or [`source::wal`] (a logical
//!   replication slot with `pgoutput`, heartbeats, slot-loss detection).
//! - [`sink`]: where they go — [`sink::nats`] (JetStream, `Nats-Msg-Id` dedup) and
//!   [`sink::rabbitmq`] (publisher confirms, persistent messages). A row counts as published
//!   only after the broker acknowledged it.
//! - [`envelope`]: the CloudEvents message format, the same for every sink.
//! - [`inbox`]: consumer-side dedup for an exactly-once effect.
//! - [`housekeeping`], [`metrics`], [`config`] (TOML), [`cli`] (`annals relay …`).
//!
//! See `docs/relay.md` for operating it.

pub mod cli;
pub mod config;
pub mod envelope;
pub mod error;
pub mod housekeeping;
pub mod inbox;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod republish;
pub mod sink;
pub mod source;
#[doc(hidden)]
pub mod testing;

pub use cli::{RelayCommand, run};
pub use config::RelayConfig;
pub use error::RelayError;
pub use relay::Relay;
