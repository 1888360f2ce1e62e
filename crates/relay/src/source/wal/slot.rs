//! The replication slot and publication: creation, the relay's bookkeeping row, and the checks
//! that detect a slot lost or recreated behind the relay's back.
//!
//! Invariant: the relay writes its acknowledged LSN into `annals_relay_slot.acked_lsn`
//! *before* it reports that LSN to PostgreSQL. So for the relay's own slot,
//! `confirmed_flush_lsn <= acked_lsn` always holds. A slot whose confirmed position is ahead
//! was created or advanced by someone else; a missing slot with a bookkeeping row was lost.

use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};
use tracing::{info, warn};

use crate::config::RelayConfig;
use crate::error::{ConfigError, RelayError, SourceError};

/// Parses `X/Y` (hex) into a 64-bit LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats a 64-bit LSN as `X/Y`.
pub fn fmt_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

/// What `pg_replication_slots` says about the slot.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    /// Output plugin.
    pub plugin: String,
    /// Database the slot belongs to.
    pub database: String,
    /// `confirmed_flush_lsn`.
    pub confirmed: u64,
    /// `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: String,
    /// WAL bytes retained behind the server's current position.
    pub lag_bytes: i64,
    /// `active_pid`: the walsender attached to the slot, if any.
    pub active_pid: Option<i32>,
}

/// The relay's bookkeeping row.
#[derive(Debug, Clone)]
pub struct SlotRecord {
    /// LSN the slot was created at.
    pub created: u64,
    /// Last LSN the relay recorded as acknowledged by the sink.
    pub acked: u64,
    /// Commit time of the transaction at `acked`, when known.
    pub acked_commit_time: Option<chrono::DateTime<chrono::Utc>>,
}

fn state_table(cfg: &RelayConfig) -> String {
    format!("\"{}\".\"annals_relay_slot\"", cfg.database.schema)
}

/// Reads the slot's row in `pg_replication_slots`.
pub async fn slot_info(pool: &PgPool, slot: &str) -> Result<Option<SlotInfo>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT plugin, database, confirmed_flush_lsn::text AS confirmed, \
                coalesce(wal_status, '') AS wal_status, active_pid, \
                coalesce(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::bigint AS lag \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let confirmed: Option<String> = row.try_get("confirmed")?;
    Ok(Some(SlotInfo {
        plugin: row
            .try_get::<Option<String>, _>("plugin")?
            .unwrap_or_default(),
        database: row
            .try_get::<Option<String>, _>("database")?
            .unwrap_or_default(),
        confirmed: confirmed.as_deref().and_then(parse_lsn).unwrap_or(0),
        wal_status: row.try_get("wal_status")?,
        lag_bytes: row.try_get("lag")?,
        active_pid: row.try_get("active_pid")?,
    }))
}

/// Reads the relay's bookkeeping row for the slot.
pub async fn slot_record(
    pool: &PgPool,
    cfg: &RelayConfig,
) -> Result<Option<SlotRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT created_lsn::text AS c, acked_lsn::text AS a, acked_commit_time \
         FROM {} WHERE slot_name = $1",
        state_table(cfg)
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(&*sql))
        .bind(&cfg.source.wal.slot)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let c: String = row.try_get("c")?;
    let a: String = row.try_get("a")?;
    Ok(Some(SlotRecord {
        created: parse_lsn(&c).unwrap_or(0),
        acked: parse_lsn(&a).unwrap_or(0),
        acked_commit_time: row.try_get("acked_commit_time")?,
    }))
}

/// Fails unless `wal_level = logical`.
pub async fn check_wal_level(pool: &PgPool) -> Result<(), RelayError> {
    let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(pool)
        .await?;
    if level != "logical" {
        return Err(SourceError::WalLevel(level).into());
    }
    Ok(())
}

/// Creates the publication of the outbox table (inserts only) if missing.
pub async fn ensure_publication(pool: &PgPool, cfg: &RelayConfig) -> Result<(), RelayError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(&cfg.source.wal.publication)
            .fetch_one(pool)
            .await?;
    if !exists {
        let sql = format!(
            "CREATE PUBLICATION \"{}\" FOR TABLE {} WITH (publish = 'insert')",
            cfg.source.wal.publication,
            cfg.outbox()?.qualified()
        );
        match sqlx::query(sqlx::AssertSqlSafe(&*sql)).execute(pool).await {
            Ok(_) => info!(publication = %cfg.source.wal.publication, "created publication"),
            // A concurrent relay created it first.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42710") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Creates the slot and (re)writes the bookkeeping row at its consistent point.
async fn create_slot(pool: &PgPool, cfg: &RelayConfig) -> Result<u64, RelayError> {
    let lsn: String = sqlx::query_scalar(
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
    )
    .bind(&cfg.source.wal.slot)
    .fetch_one(pool)
    .await?;
    let sql = format!(
        "INSERT INTO {} (slot_name, outbox_table, created_lsn, acked_lsn) \
         VALUES ($1, $2, $3::pg_lsn, $3::pg_lsn) \
         ON CONFLICT (slot_name) DO UPDATE SET created_lsn = EXCLUDED.created_lsn, \
           acked_lsn = EXCLUDED.acked_lsn, acked_commit_time = NULL, updated_at = now()",
        state_table(cfg)
    );
    sqlx::query(sqlx::AssertSqlSafe(&*sql))
        .bind(&cfg.source.wal.slot)
        .bind(cfg.outbox()?.qualified())
        .bind(&lsn)
        .execute(pool)
        .await?;
    info!(slot = %cfg.source.wal.slot, lsn = %lsn, "created replication slot");
    Ok(parse_lsn(&lsn).unwrap_or(0))
}

/// Makes sure the slot exists and is the relay's own. Creates it on a fresh install; refuses
/// (typed error, `annals_relay_slot_lost` = 1) when it was lost or recreated. Returns the
/// relay's acknowledged LSN.
pub async fn prepare(pool: &PgPool, cfg: &RelayConfig) -> Result<u64, RelayError> {
    check_wal_level(pool).await?;
    ensure_publication(pool, cfg).await?;
    let slot = &cfg.source.wal.slot;
    let info = slot_info(pool, slot).await?;
    let record = slot_record(pool, cfg).await?;
    let lost = |detail: String, acked: u64| -> RelayError {
        metrics::gauge!(crate::metrics::SLOT_LOST).set(1.0);
        SourceError::SlotLost {
            slot: slot.clone(),
            detail,
            acked_lsn: fmt_lsn(acked),
        }
        .into()
    };
    match (info, record) {
        (None, None) => create_slot(pool, cfg).await,
        (None, Some(rec)) => Err(lost("it no longer exists".into(), rec.acked)),
        (Some(info), rec) => {
            let db: String = sqlx::query_scalar("SELECT current_database()")
                .fetch_one(pool)
                .await?;
            if info.plugin != "pgoutput" || info.database != db {
                return Err(ConfigError::Invalid {
                    field: "source.wal.slot",
                    reason: format!(
                        "slot {slot} uses plugin {:?} in database {:?}; the relay needs a \
                         pgoutput slot in {db:?}",
                        info.plugin, info.database
                    ),
                }
                .into());
            }
            match rec {
                None => {
                    warn!(slot = %slot, "adopting an existing slot without bookkeeping row");
                    let sql = format!(
                        "INSERT INTO {} (slot_name, outbox_table, created_lsn, acked_lsn) \
                         VALUES ($1, $2, $3::pg_lsn, $3::pg_lsn) ON CONFLICT DO NOTHING",
                        state_table(cfg)
                    );
                    sqlx::query(sqlx::AssertSqlSafe(&*sql))
                        .bind(slot)
                        .bind(cfg.outbox()?.qualified())
                        .bind(fmt_lsn(info.confirmed))
                        .execute(pool)
                        .await?;
                    Ok(info.confirmed)
                }
                Some(rec) => {
                    if info.wal_status == "lost" {
                        return Err(lost(
                            "its WAL was removed (wal_status = lost)".into(),
                            rec.acked,
                        ));
                    }
                    verify_not_recreated(cfg, &info, &rec)?;
                    metrics::gauge!(crate::metrics::SLOT_LOST).set(0.0);
                    Ok(rec.acked)
                }
            }
        }
    }
}

/// Fails with [`SourceError::SlotRecreated`] when the slot is ahead of the relay's record.
pub fn verify_not_recreated(
    cfg: &RelayConfig,
    info: &SlotInfo,
    rec: &SlotRecord,
) -> Result<(), RelayError> {
    if info.confirmed > rec.acked {
        metrics::gauge!(crate::metrics::SLOT_LOST).set(1.0);
        return Err(SourceError::SlotRecreated {
            slot: cfg.source.wal.slot.clone(),
            slot_lsn: fmt_lsn(info.confirmed),
            acked_lsn: fmt_lsn(rec.acked),
        }
        .into());
    }
    Ok(())
}

/// Records `lsn` as acknowledged (monotonic). Called before reporting it to PostgreSQL.
pub async fn persist_acked(
    pool: &PgPool,
    cfg: &RelayConfig,
    lsn: u64,
    commit_time: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE {} SET acked_lsn = $2::pg_lsn, \
           acked_commit_time = coalesce($3, acked_commit_time), updated_at = now() \
         WHERE slot_name = $1 AND acked_lsn <= $2::pg_lsn",
        state_table(cfg)
    );
    sqlx::query(sqlx::AssertSqlSafe(&*sql))
        .bind(&cfg.source.wal.slot)
        .bind(fmt_lsn(lsn))
        .bind(commit_time)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops the slot (if present) and creates it anew at the current WAL position, rewriting
/// the bookkeeping row. Returns the previous record so the operator knows the gap.
pub async fn recreate(pool: &PgPool, cfg: &RelayConfig) -> Result<Option<SlotRecord>, RelayError> {
    check_wal_level(pool).await?;
    ensure_publication(pool, cfg).await?;
    let old = slot_record(pool, cfg).await?;
    drop_slot_only(pool, &cfg.source.wal.slot, SLOT_RELEASE_WAIT).await?;
    create_slot(pool, cfg).await?;
    metrics::gauge!(crate::metrics::SLOT_LOST).set(0.0);
    Ok(old)
}

/// How long a drop waits for a walsender to let go of the slot: one that has just stopped
/// takes a moment to exit after its connection closes.
pub const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Drops the slot if present. While a walsender holds it (SQLSTATE 55006), retries for up to
/// `wait`, then fails with [`SourceError::SlotInUse`] naming the holder.
async fn drop_slot_only(pool: &PgPool, slot: &str, wait: Duration) -> Result<(), RelayError> {
    let deadline = Instant::now() + wait;
    loop {
        let dropped = sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
        )
        .bind(slot)
        .execute(pool)
        .await;
        match dropped {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55006") => {
                if Instant::now() >= deadline {
                    return Err(SourceError::SlotInUse {
                        slot: slot.to_string(),
                        pid: slot_info(pool, slot).await?.and_then(|i| i.active_pid),
                        waited_ms: wait.as_millis() as u64,
                    }
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drops the slot and its bookkeeping row (decommissioning; frees the WAL it pinned). Waits
/// up to [`SLOT_RELEASE_WAIT`] for a just-stopped relay's walsender to release the slot.
pub async fn drop_slot(pool: &PgPool, cfg: &RelayConfig) -> Result<(), RelayError> {
    drop_slot_within(pool, cfg, SLOT_RELEASE_WAIT).await
}

/// [`drop_slot`], waiting up to `wait` for the slot to be released. The slot and its row stay
/// as they were when it is still in use after that.
pub async fn drop_slot_within(
    pool: &PgPool,
    cfg: &RelayConfig,
    wait: Duration,
) -> Result<(), RelayError> {
    drop_slot_only(pool, &cfg.source.wal.slot, wait).await?;
    let sql = format!("DELETE FROM {} WHERE slot_name = $1", state_table(cfg));
    // The bookkeeping table may not exist if setup never ran.
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(&*sql))
        .bind(&cfg.source.wal.slot)
        .execute(pool)
        .await
    {
        match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {}
            _ => return Err(e.into()),
        }
    }
    Ok(())
}
