use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage};

use super::NatsConfig;
use crate::envelope::{self, OutboxRecord, token};
use crate::error::SinkError;
use crate::sink::AckFuture;

const SINK: &str = "nats";

/// A connected JetStream publisher.
#[derive(Debug)]
pub struct NatsSink {
    js: jetstream::Context,
    prefix: String,
    source: String,
}

impl NatsSink {
    /// Connects and (when configured) creates the stream.
    pub async fn connect(
        cfg: &NatsConfig,
        max_in_flight: usize,
        envelope_source: &str,
    ) -> Result<Self, SinkError> {
        let err = |reason: String| SinkError::Connect { sink: SINK, reason };
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .max_reconnects(Some(5))
            .connect(cfg.url.as_str())
            .await
            .map_err(|e| err(format!("{}: {e}", cfg.url)))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(cfg.ack_timeout_ms))
            // The relay bounds what it has in flight itself (WAL: `max_in_flight` plus one chunk
            // of a transaction; polling: one batch, at most 100,000). This limit sits above
            // both so it never blocks a publish whose earlier acks are not being polled.
            .max_ack_inflight(max_in_flight.saturating_add(101_000))
            .backpressure_on_inflight(true)
            .build(client);
        if cfg.create_stream {
            js.get_or_create_stream(jetstream::stream::Config {
                name: cfg.stream.clone(),
                subjects: vec![format!("{}.>", cfg.subject_prefix)],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(cfg.duplicate_window_secs),
                ..Default::default()
            })
            .await
            .map_err(|e| err(format!("stream {}: {e}", cfg.stream)))?;
        } else {
            js.get_stream(&cfg.stream)
                .await
                .map_err(|e| err(format!("stream {}: {e}", cfg.stream)))?;
        }
        Ok(Self {
            js,
            prefix: cfg.subject_prefix.clone(),
            source: envelope_source.to_string(),
        })
    }

    /// The subject a record is published to.
    pub fn subject_for(&self, r: &OutboxRecord) -> String {
        format!(
            "{}.{}.{}",
            self.prefix,
            token(&r.aggregate_type),
            token(&r.event_type)
        )
    }

    /// Sends one message; the future resolves on the stream's ack.
    pub async fn publish(&self, r: &OutboxRecord) -> Result<AckFuture, SinkError> {
        let body = envelope::encode(r, &self.source)?;
        let id = r.id;
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", envelope::CONTENT_TYPE);
        headers.insert("ce-id", id.to_string().as_str());
        headers.insert("ce-type", r.event_type.as_str());
        headers.insert("ce-subject", r.aggregate_id.as_str());
        let publish = PublishMessage::build()
            .payload(body)
            .headers(headers)
            .message_id(id.to_string());
        let pending = self
            .js
            .send_publish(self.subject_for(r), publish)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => SinkError::TooLarge {
                    sink: SINK,
                    id,
                    seq: r.seq,
                    reason: e.to_string(),
                },
                _ => SinkError::Publish {
                    sink: SINK,
                    id,
                    reason: e.to_string(),
                },
            })?;
        Ok(Box::pin(async move {
            // A duplicate ack (`duplicate: true`) means the stream already holds this id:
            // stored, so acknowledged.
            pending
                .await
                .map(|_ack| ())
                .map_err(|e| SinkError::Publish {
                    sink: SINK,
                    id,
                    reason: e.to_string(),
                })
        }))
    }
}
