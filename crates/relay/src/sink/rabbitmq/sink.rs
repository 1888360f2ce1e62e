use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::RabbitMqConfig;
use crate::envelope::{self, OutboxRecord, token};
use crate::error::SinkError;
use crate::sink::AckFuture;

const SINK: &str = "rabbitmq";

/// A connected RabbitMQ publisher (one channel in confirm mode).
pub struct RabbitMqSink {
    // Kept so the connection lives as long as the channel.
    _conn: Connection,
    channel: Channel,
    exchange: String,
    mandatory: bool,
    confirm_timeout: Duration,
    source: String,
}

impl std::fmt::Debug for RabbitMqSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqSink")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

impl RabbitMqSink {
    /// Connects, opens a confirm-mode channel and (when configured) declares the exchange.
    pub async fn connect(cfg: &RabbitMqConfig, envelope_source: &str) -> Result<Self, SinkError> {
        let err = |reason: String| SinkError::Connect { sink: SINK, reason };
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&cfg.url, ConnectionProperties::default()),
        )
        .await
        .map_err(|_| err("connect timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| err(e.to_string()))?;
        if cfg.declare_exchange {
            channel
                .exchange_declare(
                    ShortString::from(cfg.exchange.as_str()),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err(format!("exchange {}: {e}", cfg.exchange)))?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            _conn: conn,
            channel,
            exchange: cfg.exchange.clone(),
            mandatory: cfg.mandatory,
            confirm_timeout: Duration::from_millis(cfg.confirm_timeout_ms.max(1)),
            source: envelope_source.to_string(),
        })
    }

    /// The routing key of a record: `<aggregate_type>.<event_type>` (sanitized tokens).
    pub fn routing_key_for(r: &OutboxRecord) -> String {
        format!("{}.{}", token(&r.aggregate_type), token(&r.event_type))
    }

    /// Sends one persistent message; the future resolves on the publisher confirm.
    pub async fn publish(&self, r: &OutboxRecord) -> Result<AckFuture, SinkError> {
        let body = envelope::encode(r, &self.source)?;
        let id = r.id;
        let fail = move |reason: String| SinkError::Publish {
            sink: SINK,
            id,
            reason,
        };
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("ce-type"),
            AMQPValue::LongString(LongString::from(r.event_type.as_str())),
        );
        headers.insert(
            ShortString::from("ce-subject"),
            AMQPValue::LongString(LongString::from(r.aggregate_id.as_str())),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(id.to_string()))
            .with_content_type(ShortString::from(envelope::CONTENT_TYPE))
            .with_type(ShortString::from(r.event_type.as_str()))
            .with_timestamp(u64::try_from(r.created_at.timestamp()).unwrap_or(0))
            .with_headers(headers);
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(Self::routing_key_for(r)),
                BasicPublishOptions {
                    mandatory: self.mandatory,
                    ..Default::default()
                },
                &body,
                props,
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let timeout = self.confirm_timeout;
        Ok(Box::pin(async move {
            match tokio::time::timeout(timeout, confirm).await {
                Err(_) => Err(fail("publisher confirm timed out".into())),
                Ok(Err(e)) => Err(fail(e.to_string())),
                Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                Ok(Ok(Confirmation::Ack(Some(_returned)))) => {
                    Err(fail("unroutable (returned by the broker)".into()))
                }
                Ok(Ok(Confirmation::Nack(_))) => Err(fail("negative acknowledgement".into())),
                Ok(Ok(Confirmation::NotRequested)) => {
                    Err(fail("channel is not in confirm mode".into()))
                }
            }
        }))
    }
}
