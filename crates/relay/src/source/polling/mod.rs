//! Polling publisher. Each pass, in one transaction:
//!
//! 1. claim up to `batch_size` unpublished rows in `seq` order with `FOR UPDATE SKIP LOCKED`,
//!    taking a transaction-scoped advisory lock per aggregate key (`pg_try_advisory_xact_lock`)
//!    so that no two relay instances hold rows of one key at the same time;
//! 2. drop from the batch every key whose oldest unpublished row is not in the batch (another
//!    instance skipped ahead while it held that key): those rows wait for a later pass, so
//!    one key is never published out of order;
//! 3. publish the batch pipelined, wait for every broker ack, then set `published_at` and
//!    commit. A crash before the commit rolls back: the rows are published again (the
//!    message id lets the broker and the inbox drop the duplicate).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::RelayConfig;
use crate::envelope::OutboxRecord;
use crate::error::RelayError;
use crate::metrics as m;
use crate::relay::AckObserver;
use crate::sink::{Sink, publish_all};
use crate::source::{COLUMNS, record_from_row};

/// Runs the polling publisher until `shutdown` or an error.
pub async fn run(
    cfg: &RelayConfig,
    pool: &PgPool,
    sink: &Sink,
    shutdown: &CancellationToken,
    observer: Option<&AckObserver>,
) -> Result<(), RelayError> {
    let outbox = cfg.outbox()?;
    let t = outbox.qualified();
    let p = &cfg.source.polling;
    let claim_sql = format!(
        "SELECT {COLUMNS} FROM {t} o \
         WHERE o.published_at IS NULL \
           AND pg_try_advisory_xact_lock($1, hashtext(o.aggregate_type || '/' || o.aggregate_id)) \
         ORDER BY o.seq LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let heads_sql = format!(
        "SELECT k.t, k.i, (SELECT min(seq) FROM {t} x WHERE x.published_at IS NULL \
                 AND x.aggregate_type = k.t AND x.aggregate_id = k.i) AS head \
         FROM unnest($1::text[], $2::text[]) AS k(t, i)"
    );
    let mark_sql = format!("UPDATE {t} SET published_at = clock_timestamp() WHERE seq = ANY($1)");
    let backlog_sql = format!("SELECT count(*) FROM {t} WHERE published_at IS NULL");
    let mut last_backlog: Option<Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if last_backlog.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(&*backlog_sql))
                .fetch_one(pool)
                .await?;
            metrics::gauge!(m::BACKLOG).set(n as f64);
            last_backlog = Some(Instant::now());
        }
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(&*claim_sql))
            .bind(p.lock_namespace)
            .bind(i64::from(p.batch_size))
            .fetch_all(&mut *tx)
            .await?;
        let claimed = rows.len();
        let mut batch = Vec::with_capacity(claimed);
        for row in &rows {
            batch.push(record_from_row(row)?);
        }
        let batch = keep_key_heads(&mut tx, &heads_sql, batch).await?;
        if !batch.is_empty() {
            let started = Instant::now();
            publish_all(sink, &batch).await?;
            let seqs: Vec<i64> = batch.iter().map(|r| r.seq).collect();
            sqlx::query(sqlx::AssertSqlSafe(&*mark_sql))
                .bind(&seqs)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            m::record_published(sink.name(), &batch, started);
            if let Some(o) = observer {
                batch.iter().for_each(|r| o(r.id));
            }
            debug!(rows = batch.len(), "published batch");
        } else {
            tx.rollback().await?;
        }
        if claimed < p.batch_size as usize {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(p.poll_interval_ms)) => {}
            }
        }
    }
}

/// Removes the rows of every key whose oldest unpublished row is not part of `batch`.
async fn keep_key_heads(
    tx: &mut sqlx::PgConnection,
    heads_sql: &str,
    batch: Vec<OutboxRecord>,
) -> Result<Vec<OutboxRecord>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(batch);
    }
    let mut first: HashMap<(&str, &str), i64> = HashMap::new();
    for r in &batch {
        first
            .entry((r.aggregate_type.as_str(), r.aggregate_id.as_str()))
            .or_insert(r.seq);
    }
    let (types, ids): (Vec<&str>, Vec<&str>) = first.keys().copied().unzip();
    let rows = sqlx::query(sqlx::AssertSqlSafe(heads_sql))
        .bind(&types)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    let mut blocked: HashSet<(String, String)> = HashSet::new();
    for row in rows {
        let t: String = row.try_get(0)?;
        let i: String = row.try_get(1)?;
        let head: Option<i64> = row.try_get(2)?;
        let ours = first.get(&(t.as_str(), i.as_str())).copied();
        if let (Some(head), Some(ours)) = (head, ours)
            && head < ours
        {
            blocked.insert((t, i));
        }
    }
    if blocked.is_empty() {
        return Ok(batch);
    }
    Ok(batch
        .into_iter()
        .filter(|r| !blocked.contains(&(r.aggregate_type.clone(), r.aggregate_id.clone())))
        .collect())
}
