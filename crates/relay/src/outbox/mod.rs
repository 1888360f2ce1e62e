//! The outbox writer API: enqueue messages inside the caller's own transaction.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use annals_relay::outbox::{NewMessage, Outbox};
//! let outbox = Outbox::new("public", "outbox")?;
//! outbox.migrate(&pool).await?; // once, at deploy time
//! let mut tx = pool.begin().await?;
//! sqlx::query("DELETE FROM members WHERE id = $1").bind("m-42").execute(&mut *tx).await?;
//! outbox
//!     .enqueue(&mut tx, &NewMessage::json("member", "m-42", "MemberWithdrawn", &serde_json::json!({"id": "m-42"}))?)
//!     .await?;
//! tx.commit().await?; // the message exists if and only if the delete committed
//! # Ok(()) }
//! ```

mod migrations;

use std::collections::BTreeMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{OutboxError, ident};

pub use migrations::schema_sql;

/// A message to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Message id; generated (UUIDv7) by the constructors. Brokers and inboxes dedup on it.
    pub id: Uuid,
    /// Aggregate type, e.g. `member`; part of the NATS subject / AMQP routing key.
    pub aggregate_type: String,
    /// Aggregate id: the ordering key. Messages of one key are published in commit order.
    pub aggregate_id: String,
    /// Event type, e.g. `MemberWithdrawn`.
    pub event_type: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Payload content type. Default `application/json`.
    pub content_type: String,
    /// Free-form string headers.
    pub headers: BTreeMap<String, String>,
    /// Correlation id (the business transaction this belongs to).
    pub correlation_id: Option<String>,
    /// Causation id (the message that caused this one).
    pub causation_id: Option<String>,
}

impl NewMessage {
    /// A message with raw payload bytes.
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        content_type: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            payload: payload.into(),
            content_type: content_type.into(),
            headers: BTreeMap::new(),
            correlation_id: None,
            causation_id: None,
        }
    }

    /// A message whose payload is `value` serialized as JSON.
    pub fn json<T: serde::Serialize>(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(
            aggregate_type,
            aggregate_id,
            event_type,
            serde_json::to_vec(value)?,
            "application/json",
        ))
    }

    /// Sets the id (for callers that derive ids, e.g. from a command id).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// Handle on one outbox table.
#[derive(Debug, Clone)]
pub struct Outbox {
    schema: String,
    table: String,
    insert_sql: String,
}

impl Outbox {
    /// An outbox at `schema.table`. Names must be plain identifiers (`[a-z_][a-z0-9_]*`).
    pub fn new(schema: &str, table: &str) -> Result<Self, OutboxError> {
        let qs = ident(schema).map_err(OutboxError::InvalidIdentifier)?;
        let qt = ident(table).map_err(OutboxError::InvalidIdentifier)?;
        let insert_sql = format!(
            "INSERT INTO {qs}.{qt} (id, aggregate_type, aggregate_id, event_type, payload, \
             content_type, headers, correlation_id, causation_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        Ok(Self {
            schema: schema.to_string(),
            table: table.to_string(),
            insert_sql,
        })
    }

    /// Schema name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// `"schema"."table"`, quoted.
    pub fn qualified(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }

    /// Creates the schema, table, indexes and the relay's state table if missing.
    /// Idempotent; safe to run at every start.
    pub async fn migrate(&self, pool: &sqlx::PgPool) -> Result<(), OutboxError> {
        let mut conn = pool.acquire().await?;
        // Serialize concurrent migrations (several services / relays starting at once).
        sqlx::query("SELECT pg_advisory_lock(1095451209, 0)")
            .execute(&mut *conn)
            .await?;
        let mut result = Ok(());
        for stmt in schema_sql(&self.schema, &self.table) {
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(&*stmt))
                .execute(&mut *conn)
                .await
            {
                result = Err(e.into());
                break;
            }
        }
        sqlx::query("SELECT pg_advisory_unlock(1095451209, 0)")
            .execute(&mut *conn)
            .await?;
        result
    }

    /// Inserts `msg` using the caller's connection, normally `&mut *tx` of the transaction
    /// that also changes the business data. The message is published if and only if that
    /// transaction commits.
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        msg: &NewMessage,
    ) -> Result<(), OutboxError> {
        let headers = serde_json::to_value(&msg.headers).unwrap_or_default();
        let res = sqlx::query(sqlx::AssertSqlSafe(&*self.insert_sql))
            .bind(msg.id)
            .bind(&msg.aggregate_type)
            .bind(&msg.aggregate_id)
            .bind(&msg.event_type)
            .bind(&msg.payload)
            .bind(&msg.content_type)
            .bind(headers)
            .bind(&msg.correlation_id)
            .bind(&msg.causation_id)
            .execute(conn)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(OutboxError::DuplicateId(msg.id))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts several messages in one statement, in slice order (so `seq`, and per-key
    /// order, follow the slice).
    pub async fn enqueue_all(
        &self,
        conn: &mut PgConnection,
        msgs: &[NewMessage],
    ) -> Result<(), OutboxError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {} (id, aggregate_type, aggregate_id, event_type, payload, content_type, \
             headers, correlation_id, causation_id) \
             SELECT id, t, a, e, p, c, h, co, ca FROM unnest($1::uuid[], $2::text[], $3::text[], \
               $4::text[], $5::bytea[], $6::text[], $7::jsonb[], $8::text[], $9::text[]) \
               WITH ORDINALITY AS u(id, t, a, e, p, c, h, co, ca, ord) ORDER BY ord",
            self.qualified()
        );
        let res = sqlx::query(sqlx::AssertSqlSafe(&*sql))
            .bind(msgs.iter().map(|m| m.id).collect::<Vec<_>>())
            .bind(
                msgs.iter()
                    .map(|m| m.aggregate_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                msgs.iter()
                    .map(|m| m.aggregate_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                msgs.iter()
                    .map(|m| m.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                msgs.iter()
                    .map(|m| m.payload.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                msgs.iter()
                    .map(|m| m.content_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                msgs.iter()
                    .map(|m| serde_json::to_value(&m.headers).unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
            .bind(
                msgs.iter()
                    .map(|m| m.correlation_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                msgs.iter()
                    .map(|m| m.causation_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .execute(conn)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                let id = msgs.first().map(|m| m.id).unwrap_or_default();
                Err(OutboxError::DuplicateId(id))
            }
            Err(e) => Err(e.into()),
        }
    }
}
