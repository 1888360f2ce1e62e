//! Polling publisher. Each pass, in one transaction:
//!
//! 1. claim up to `batch_size` unpublished rows in `seq` order with `FOR UPDATE SKIP LOCKED`,
//!    taking a transaction-scoped advisory lock per aggregate key (`pg_try_advisory_xact_lock`)
//!    so that no two relay instances hold rows of one key at the same time. The locks are
//!    tried on the oldest `4 × batch_size` unpublished rows only, and stop once the batch is
//!    full, so one pass holds at most `batch_size` of them whatever the backlog;
//! 2. cut each key's rows at the key's first unpublished row that is not in the batch: those
//!    rows wait for a later pass, so one key is never published out of order. A key's rows
//!    can be missing at the start or in the middle: its lock can come free half-way through
//!    the claim (another instance committed), and a row can be locked by some other
//!    transaction;
//! 3. publish the batch pipelined, wait for every broker ack, then set `published_at` and
//!    commit. A crash before the commit rolls back: the rows are published again (the
//!    message id lets the broker and the inbox drop the duplicate).

use std::collections::HashMap;
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

/// How many unpublished rows, in batches, a pass looks at for keys no other instance holds.
const CANDIDATE_WINDOW: i64 = 4;

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
    // The key locks are tried only on the first `window` unpublished rows, in `seq` order,
    // and only until `batch_size` rows are held: a filter on the table itself would be
    // evaluated on every unpublished row whenever the planner sorts (it does on stale
    // statistics), taking a lock per key of the whole backlog and, with some thousands of
    // keys, failing with "out of shared memory" (the lock table is shared and fixed). The
    // held rows are then fetched by `seq` through the index (an `IN` join scans the table).
    let claim_sql = format!(
        "WITH candidates AS MATERIALIZED ( \
           SELECT seq, aggregate_type, aggregate_id FROM {t} \
           WHERE published_at IS NULL ORDER BY seq LIMIT $3), \
         locked AS MATERIALIZED ( \
           SELECT seq FROM candidates c \
           WHERE pg_try_advisory_xact_lock($1, hashtext(c.aggregate_type || '/' || c.aggregate_id)) \
           LIMIT $2) \
         SELECT {COLUMNS} FROM {t} o \
         WHERE o.seq = ANY(ARRAY(SELECT seq FROM locked)) AND o.published_at IS NULL \
         ORDER BY o.seq LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let pending_sql = format!(
        "SELECT k.t, k.i, ARRAY(SELECT x.seq FROM {t} x WHERE x.published_at IS NULL \
                 AND x.aggregate_type = k.t AND x.aggregate_id = k.i AND x.seq <= k.last \
                 ORDER BY x.seq) \
         FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(t, i, last)"
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
            .bind(i64::from(p.batch_size) * CANDIDATE_WINDOW)
            .fetch_all(&mut *tx)
            .await?;
        let claimed = rows.len();
        let mut batch = Vec::with_capacity(claimed);
        for row in &rows {
            batch.push(record_from_row(row)?);
        }
        let batch = keep_gapless_prefixes(&mut tx, &pending_sql, batch).await?;
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

/// Keeps, of each key's rows in `batch` (in `seq` order), those before the key's first
/// unpublished row that is not in the batch. The advisory lock held since the claim keeps
/// other instances off these keys, so the answer stays true until the commit.
async fn keep_gapless_prefixes(
    tx: &mut sqlx::PgConnection,
    pending_sql: &str,
    batch: Vec<OutboxRecord>,
) -> Result<Vec<OutboxRecord>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(batch);
    }
    let mut ours: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for r in &batch {
        ours.entry((r.aggregate_type.as_str(), r.aggregate_id.as_str()))
            .or_default()
            .push(r.seq);
    }
    let mut types = Vec::with_capacity(ours.len());
    let mut ids = Vec::with_capacity(ours.len());
    let mut lasts = Vec::with_capacity(ours.len());
    for ((t, i), seqs) in &ours {
        types.push(*t);
        ids.push(*i);
        lasts.push(seqs.last().copied().unwrap_or(i64::MIN));
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(pending_sql))
        .bind(&types)
        .bind(&ids)
        .bind(&lasts)
        .fetch_all(&mut *tx)
        .await?;
    let mut cuts: HashMap<(String, String), i64> = HashMap::new();
    for row in rows {
        let t: String = row.try_get(0)?;
        let i: String = row.try_get(1)?;
        let pending: Vec<i64> = row.try_get(2)?;
        let claimed = ours
            .get(&(t.as_str(), i.as_str()))
            .map_or(&[][..], Vec::as_slice);
        if let Some(cut) = first_missing(&pending, claimed) {
            cuts.insert((t, i), cut);
        }
    }
    if cuts.is_empty() {
        return Ok(batch);
    }
    Ok(batch
        .into_iter()
        .filter(|r| {
            cuts.get(&(r.aggregate_type.clone(), r.aggregate_id.clone()))
                .is_none_or(|cut| r.seq < *cut)
        })
        .collect())
}

/// The first of `pending` (ascending) that is not in `claimed` (ascending).
fn first_missing(pending: &[i64], claimed: &[i64]) -> Option<i64> {
    let mut claimed = claimed.iter().peekable();
    for &seq in pending {
        while claimed.next_if(|c| **c < seq).is_some() {}
        if claimed.next_if_eq(&&seq).is_none() {
            return Some(seq);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::first_missing;

    #[test]
    fn first_missing_finds_a_gap_at_the_start_in_the_middle_or_none() {
        assert_eq!(first_missing(&[3, 5, 7], &[3, 5, 7]), None);
        assert_eq!(first_missing(&[1, 3, 5], &[3, 5]), Some(1));
        assert_eq!(first_missing(&[3, 4, 5, 6], &[3, 5, 6]), Some(4));
        assert_eq!(first_missing(&[3, 5], &[3, 5, 9]), None);
        assert_eq!(first_missing(&[], &[2]), None);
    }
}
