use serde::{Deserialize, Serialize};

/// `[sink.rabbitmq]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitMqConfig {
    /// AMQP URL. Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Exchange messages are published to. Default `annals.outbox`.
    pub exchange: String,
    /// Declare the exchange (durable `topic`) when it does not exist. Default `true`.
    pub declare_exchange: bool,
    /// Publish with the `mandatory` flag and treat a message the broker could not route to
    /// any queue as a failed publish (retried). Default `false` (unroutable messages are
    /// dropped by RabbitMQ, as with any topic exchange without bindings).
    pub mandatory: bool,
    /// How long to wait for one publisher confirm, in ms. Default `5000`.
    pub confirm_timeout_ms: u64,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            exchange: "annals.outbox".into(),
            declare_exchange: true,
            mandatory: false,
            confirm_timeout_ms: 5000,
        }
    }
}
