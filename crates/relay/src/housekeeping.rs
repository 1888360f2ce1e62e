//! Deletes or archives published rows after the retention period.
//!
//! Polling mode: rows with `published_at` older than the retention. WAL mode: rows are never
//! marked, so a row is removed once it is older than the retention **and** older than the
//! retention before the commit time the relay last acknowledged (`annals_relay_slot`); a
//! relay that stopped acknowledging therefore stops housekeeping too.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{HousekeepingMode, RelayConfig, SourceMode};
use crate::error::RelayError;

/// Runs one pass; returns the number of rows removed.
pub async fn run_once(cfg: &RelayConfig, pool: &PgPool) -> Result<u64, RelayError> {
    let hk = &cfg.housekeeping;
    let t = cfg.outbox()?.qualified();
    let retention = format!("{} seconds", hk.retention_secs);
    let cond = match cfg.source.mode {
        SourceMode::Polling => {
            "published_at IS NOT NULL AND published_at < now() - $1::interval".to_string()
        }
        SourceMode::Wal => format!(
            "created_at < now() - $1::interval AND created_at < (\
               SELECT acked_commit_time - $1::interval FROM \"{}\".\"annals_relay_slot\" \
               WHERE slot_name = $3)",
            cfg.database.schema
        ),
    };
    let pick = format!("SELECT seq FROM {t} WHERE {cond} ORDER BY seq LIMIT $2");
    let sql = match hk.mode {
        HousekeepingMode::Delete => format!("DELETE FROM {t} WHERE seq IN ({pick})"),
        HousekeepingMode::Archive => {
            let a = format!("\"{}\".\"{}\"", cfg.database.schema, hk.archive_table);
            sqlx::query(sqlx::AssertSqlSafe(&*format!(
                "CREATE TABLE IF NOT EXISTS {a} (LIKE {t} INCLUDING DEFAULTS)"
            )))
            .execute(pool)
            .await?;
            format!(
                "WITH moved AS (DELETE FROM {t} WHERE seq IN ({pick}) RETURNING *) \
                 INSERT INTO {a} SELECT * FROM moved"
            )
        }
    };
    let mut total = 0;
    loop {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&*sql))
            .bind(&retention)
            .bind(i64::from(hk.batch_size));
        if cfg.source.mode == SourceMode::Wal {
            q = q.bind(&cfg.source.wal.slot);
        }
        let n = q.execute(pool).await?.rows_affected();
        total += n;
        if n < u64::from(hk.batch_size) {
            return Ok(total);
        }
    }
}

/// Runs passes every `interval_secs` until `shutdown`.
pub async fn run_forever(cfg: RelayConfig, pool: PgPool, shutdown: CancellationToken) {
    loop {
        match run_once(&cfg, &pool).await {
            Ok(0) => {}
            Ok(n) => info!(rows = n, "housekeeping removed published rows"),
            Err(e) => warn!(error = %e, "housekeeping failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(cfg.housekeeping.interval_secs)) => {}
        }
    }
}
