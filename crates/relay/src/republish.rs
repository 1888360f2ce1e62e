//! Republishing rows from the table (recovery after a slot loss).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::sink::{Sink, publish_all};
use crate::source::{COLUMNS, record_from_row};

/// Publishes every row created at or after `since`, in `seq` order, in batches; returns the
/// number acknowledged. Rows already published reach consumers again and are dropped by
/// JetStream's duplicate window or the consumers' inboxes.
pub async fn republish_since(
    cfg: &RelayConfig,
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<u64, RelayError> {
    let sink = Sink::connect(&cfg.sink, &cfg.envelope.source).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE created_at >= $1 AND seq > $2 ORDER BY seq LIMIT 1000",
        cfg.outbox()?.qualified()
    );
    let mut after = 0i64;
    let mut total = 0u64;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(&*sql))
            .bind(since)
            .bind(after)
            .fetch_all(pool)
            .await?;
        if rows.is_empty() {
            return Ok(total);
        }
        let mut batch = Vec::with_capacity(rows.len());
        for r in &rows {
            batch.push(record_from_row(r)?);
        }
        publish_all(&sink, &batch).await?;
        total += batch.len() as u64;
        after = batch.last().map(|r| r.seq).unwrap_or(after);
    }
}
