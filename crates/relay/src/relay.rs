//! The relay's run loop: connect source and sink, run until shutdown, reconnect with backoff
//! after transient failures, stop on fatal ones (bad config, slot lost).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{RelayConfig, SourceMode};
use crate::error::RelayError;
use crate::metrics as m;
use crate::sink::Sink;
use crate::source::{polling, wal};

/// Called with each message id right after the broker acknowledged it (WAL mode; polling:
/// after the batch was marked published) — a hook
/// for benchmarks and tests. Must be cheap.
pub type AckObserver = Arc<dyn Fn(uuid::Uuid) + Send + Sync>;

/// A configured relay.
pub struct Relay {
    cfg: RelayConfig,
    observer: Option<AckObserver>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Opens the relay's pool on `[database]`.
pub async fn connect_pool(cfg: &RelayConfig) -> Result<PgPool, RelayError> {
    Ok(PgPoolOptions::new()
        .max_connections(cfg.database.pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&cfg.database.url)
        .await?)
}

impl Relay {
    /// A relay for a validated configuration.
    pub fn new(cfg: RelayConfig) -> Result<Self, RelayError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            observer: None,
        })
    }

    /// Installs an [`AckObserver`].
    pub fn with_ack_observer(mut self, observer: AckObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Creates the outbox table (and, in WAL mode, publication and slot) if missing.
    pub async fn setup(&self, pool: &PgPool) -> Result<(), RelayError> {
        self.cfg.outbox()?.migrate(pool).await?;
        if self.cfg.source.mode == SourceMode::Wal {
            wal::slot::prepare(pool, &self.cfg).await?;
        }
        Ok(())
    }

    /// Runs until `shutdown` is cancelled (returns `Ok`) or a fatal error.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let cfg = &self.cfg;
        let mut backoff = Duration::from_millis(cfg.retry.initial_backoff_ms);
        let max_backoff =
            Duration::from_millis(cfg.retry.max_backoff_ms.max(cfg.retry.initial_backoff_ms));
        let mut housekeeping: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let attempt = async {
                let pool = connect_pool(cfg).await?;
                cfg.outbox()?.migrate(&pool).await?;
                if housekeeping.as_ref().is_none_or(|h| h.is_finished()) && cfg.housekeeping.enabled
                {
                    housekeeping = Some(tokio::spawn(crate::housekeeping::run_forever(
                        cfg.clone(),
                        pool.clone(),
                        shutdown.clone(),
                    )));
                }
                let sink = Sink::connect(&cfg.sink, &cfg.envelope.source).await?;
                info!(mode = ?cfg.source.mode, sink = sink.name(), "relay running");
                match cfg.source.mode {
                    SourceMode::Polling => {
                        polling::run(cfg, &pool, &sink, &shutdown, self.observer.as_ref()).await
                    }
                    SourceMode::Wal => {
                        wal::run(cfg, &pool, sink, &shutdown, self.observer.clone()).await
                    }
                }
            };
            let result: Result<(), RelayError> = attempt.await;
            match result {
                Ok(()) => {
                    if let Some(h) = housekeeping.take() {
                        h.abort();
                    }
                    info!("relay stopped");
                    return Ok(());
                }
                Err(e) if e.is_fatal() => {
                    metrics::counter!(m::ERRORS, "kind" => "fatal").increment(1);
                    error!(error = %e, "relay stopped on a fatal error");
                    if let Some(h) = housekeeping.take() {
                        h.abort();
                    }
                    return Err(e);
                }
                Err(e) => {
                    let kind = match &e {
                        RelayError::Sink(_) => "sink",
                        _ => "source",
                    };
                    metrics::counter!(m::ERRORS, "kind" => kind).increment(1);
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "relay failed; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = backoff.saturating_mul(2).min(max_backoff);
                }
            }
        }
    }
}
