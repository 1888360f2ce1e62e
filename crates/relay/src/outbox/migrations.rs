//! DDL of the outbox table and the relay's bookkeeping table.

/// The statements that create the outbox at `schema.table` (idempotent). Identifiers must be
/// validated by the caller.
pub fn schema_sql(schema: &str, table: &str) -> Vec<String> {
    let s = format!("\"{schema}\"");
    let t = format!("{s}.\"{table}\"");
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        // `seq` orders rows of one key for the polling publisher; WAL tailing uses commit order.
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                seq            bigserial PRIMARY KEY,
                id             uuid NOT NULL UNIQUE,
                aggregate_type text NOT NULL,
                aggregate_id   text NOT NULL,
                event_type     text NOT NULL,
                payload        bytea NOT NULL,
                content_type   text NOT NULL DEFAULT 'application/json',
                headers        jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                correlation_id text,
                causation_id   text,
                created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
                published_at   timestamptz
            )"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_unpublished\" ON {t} (seq) \
             WHERE published_at IS NULL"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{table}_unpublished_key\" ON {t} \
             (aggregate_type, aggregate_id, seq) WHERE published_at IS NULL"
        ),
        format!("CREATE INDEX IF NOT EXISTS \"{table}_created\" ON {t} (created_at)"),
        format!("CREATE INDEX IF NOT EXISTS \"{table}_published\" ON {t} (published_at)"),
        // One row per replication slot: what the relay acknowledged, to detect a slot that
        // was lost or recreated behind its back.
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.\"annals_relay_slot\" (
                slot_name         text PRIMARY KEY,
                outbox_table      text NOT NULL,
                created_lsn       pg_lsn NOT NULL,
                acked_lsn         pg_lsn NOT NULL,
                acked_commit_time timestamptz,
                updated_at        timestamptz NOT NULL DEFAULT now()
            )"
        ),
    ]
}
