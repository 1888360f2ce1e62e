//! NATS JetStream sink: publish, wait for the stream's ack; `Nats-Msg-Id` = envelope id so
//! JetStream drops duplicates inside its duplicate window.

mod config;
mod sink;
#[cfg(test)]
mod tests;

pub use config::NatsConfig;
pub use sink::NatsSink;
