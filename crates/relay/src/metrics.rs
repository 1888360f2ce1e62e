//! Prometheus metrics (names and meaning). The endpoint is served when `[metrics] listen` is
//! set.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `annals_relay_published_total{sink}` | counter | messages acknowledged by the broker |
//! | `annals_relay_errors_total{kind}` | counter | failures that made the relay reconnect (`kind` = sink, source, database, fatal) |
//! | `annals_relay_publish_latency_seconds` | histogram | commit (WAL) or row creation (polling) → broker ack, per message |
//! | `annals_relay_backlog` | gauge | polling: unpublished rows; WAL: messages read but not yet acknowledged |
//! | `annals_relay_lag_seconds` | gauge | now − commit time of the newest acknowledged transaction (WAL) or row (polling) |
//! | `annals_relay_slot_lag_bytes` | gauge | WAL between the server's current position and the slot's confirmed position |
//! | `annals_relay_slot_lost` | gauge | 1 when the slot is lost / recreated behind the relay's back |
//! | `annals_relay_heartbeat_lag_seconds` | gauge | write → receipt of the last heartbeat message |

use std::net::SocketAddr;
use std::time::Instant;

use chrono::Utc;

use crate::envelope::OutboxRecord;
use crate::error::RelayError;

/// Messages acknowledged by the broker.
pub const PUBLISHED: &str = "annals_relay_published_total";
/// Failures that made the relay reconnect.
pub const ERRORS: &str = "annals_relay_errors_total";
/// Commit → broker ack.
pub const PUBLISH_LATENCY: &str = "annals_relay_publish_latency_seconds";
/// Unpublished rows / unacknowledged messages.
pub const BACKLOG: &str = "annals_relay_backlog";
/// Age of the newest acknowledged commit.
pub const LAG: &str = "annals_relay_lag_seconds";
/// WAL retained by the slot.
pub const SLOT_LAG_BYTES: &str = "annals_relay_slot_lag_bytes";
/// Slot lost flag.
pub const SLOT_LOST: &str = "annals_relay_slot_lost";
/// Heartbeat lag.
pub const HEARTBEAT_LAG: &str = "annals_relay_heartbeat_lag_seconds";

/// Installs the global Prometheus recorder and its HTTP listener.
pub fn install(listen: &str) -> Result<(), RelayError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| RelayError::Metrics(format!("{listen}: {e}")))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| RelayError::Metrics(e.to_string()))
}

/// Records a batch acknowledged by the broker.
pub(crate) fn record_published(sink: &'static str, batch: &[OutboxRecord], _started: Instant) {
    metrics::counter!(PUBLISHED, "sink" => sink).increment(batch.len() as u64);
    let now = Utc::now();
    let h = metrics::histogram!(PUBLISH_LATENCY);
    for r in batch {
        h.record(seconds_since(r.created_at, now));
    }
    if let Some(last) = batch.last() {
        metrics::gauge!(LAG).set(seconds_since(last.created_at, now));
    }
}

pub(crate) fn seconds_since(t: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>) -> f64 {
    (now - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
}
