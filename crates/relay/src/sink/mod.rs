//! Sinks: where messages go. Each sink folder has the same files: `config.rs` (its TOML
//! section), `sink.rs` (connect, set up, publish with acknowledgement) and `tests.rs`
//! (against the real broker).
//!
//! Contract of every sink: [`Sink::publish`] hands one message to the broker in call order
//! and returns an [`AckFuture`] that resolves only once the broker acknowledged (stored)
//! the message. Callers pipeline: they may start many publishes before awaiting their acks,
//! and treat a row as published only when its ack resolved `Ok`.

pub mod nats;
pub mod rabbitmq;

use futures::future::BoxFuture;

use crate::config::{SinkConfig, SinkKind};
use crate::envelope::OutboxRecord;
use crate::error::SinkError;

/// Resolves when the broker acknowledged one message.
pub type AckFuture = BoxFuture<'static, Result<(), SinkError>>;

/// A connected sink.
#[derive(Debug)]
pub enum Sink {
    /// NATS JetStream.
    Nats(nats::NatsSink),
    /// RabbitMQ.
    RabbitMq(rabbitmq::RabbitMqSink),
}

impl Sink {
    /// Connects the sink named by `cfg.kind` and declares its stream / exchange when
    /// configured to.
    pub async fn connect(cfg: &SinkConfig, envelope_source: &str) -> Result<Self, SinkError> {
        Ok(match cfg.kind {
            SinkKind::Nats => Sink::Nats(
                nats::NatsSink::connect(&cfg.nats, cfg.max_in_flight, envelope_source).await?,
            ),
            SinkKind::RabbitMq => Sink::RabbitMq(
                rabbitmq::RabbitMqSink::connect(&cfg.rabbitmq, envelope_source).await?,
            ),
        })
    }

    /// Sends one message; the returned future resolves on the broker's ack.
    pub async fn publish(&self, record: &OutboxRecord) -> Result<AckFuture, SinkError> {
        match self {
            Sink::Nats(s) => s.publish(record).await,
            Sink::RabbitMq(s) => s.publish(record).await,
        }
    }

    /// Short name for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Nats(_) => "nats",
            Sink::RabbitMq(_) => "rabbitmq",
        }
    }
}

/// Publishes `records` in order, pipelined, and waits for every ack (in order).
/// Returns the number acknowledged; stops at the first failure.
pub async fn publish_all(sink: &Sink, records: &[OutboxRecord]) -> Result<usize, SinkError> {
    let mut acks = Vec::with_capacity(records.len());
    for r in records {
        acks.push(sink.publish(r).await?);
    }
    let mut n = 0;
    for a in acks {
        a.await?;
        n += 1;
    }
    Ok(n)
}
