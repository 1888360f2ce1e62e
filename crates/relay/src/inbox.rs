//! Inbox: consumer-side deduplication. Record each message id in the consumer's own
//! transaction, together with the message's effect; a redelivered message finds its id and is
//! skipped. At-least-once delivery + inbox = exactly-once effect.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool, body: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use annals_relay::{envelope::Envelope, inbox::Inbox};
//! let inbox = Inbox::new("public", "inbox")?;
//! inbox.migrate(&pool).await?;
//! let env = Envelope::decode(body)?;
//! let mut tx = pool.begin().await?;
//! if inbox.record(&mut tx, "mailer", env.id).await? {
//!     // first delivery: apply the effect in the same transaction
//! }
//! tx.commit().await?; // then ack the broker message
//! # Ok(()) }
//! ```

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{InboxError, ident};

/// Handle on one inbox table (`consumer`, `message_id`, `received_at`).
#[derive(Debug, Clone)]
pub struct Inbox {
    table: String,
    schema: String,
    insert_sql: String,
}

impl Inbox {
    /// An inbox at `schema.table`.
    pub fn new(schema: &str, table: &str) -> Result<Self, InboxError> {
        let qs = ident(schema).map_err(InboxError::InvalidIdentifier)?;
        let qt = ident(table).map_err(InboxError::InvalidIdentifier)?;
        let insert_sql = format!(
            "INSERT INTO {qs}.{qt} (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        );
        Ok(Self {
            table: format!("{qs}.{qt}"),
            schema: qs,
            insert_sql,
        })
    }

    /// Creates the table if missing.
    pub async fn migrate(&self, pool: &PgPool) -> Result<(), InboxError> {
        sqlx::query(sqlx::AssertSqlSafe(&*format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            self.schema
        )))
        .execute(pool)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(&*format!(
            "CREATE TABLE IF NOT EXISTS {} (
                consumer    text NOT NULL,
                message_id  uuid NOT NULL,
                received_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer, message_id)
            )",
            self.table
        )))
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Records `message_id` for `consumer` in the caller's transaction. Returns `true` the
    /// first time (apply the effect), `false` for a duplicate (skip it). Concurrent
    /// deliveries of one id serialize on the primary key: the second waits for the first
    /// transaction and then sees the duplicate.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        consumer: &str,
        message_id: Uuid,
    ) -> Result<bool, InboxError> {
        let res = sqlx::query(sqlx::AssertSqlSafe(&*self.insert_sql))
            .bind(consumer)
            .bind(message_id)
            .execute(conn)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Deletes entries older than `older_than` (keep them longer than any redelivery window).
    pub async fn prune(
        &self,
        pool: &PgPool,
        older_than: std::time::Duration,
    ) -> Result<u64, InboxError> {
        let res = sqlx::query(sqlx::AssertSqlSafe(&*format!(
            "DELETE FROM {} WHERE received_at < now() - $1::interval",
            self.table
        )))
        .bind(format!("{} seconds", older_than.as_secs()))
        .execute(pool)
        .await?;
        Ok(res.rows_affected())
    }
}
