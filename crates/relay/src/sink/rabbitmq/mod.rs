//! RabbitMQ sink: persistent messages on a durable exchange, publisher confirms; a row counts
//! as published only after the broker's `basic.ack`. The AMQP `message_id` property is the
//! envelope id, for consumer-side deduplication (RabbitMQ itself does not deduplicate).

mod config;
mod sink;
#[cfg(test)]
mod tests;

pub use config::RabbitMqConfig;
pub use sink::RabbitMqSink;
