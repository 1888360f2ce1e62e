//! [`PgStore`]: opening, the visible prefix, and the trait implementations.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annals_core::readpath;
use annals_core::{
    AllSlice, AppendError, AppendResult, EventAppender, EventReader, Position, ReadAllOptions,
    ReadError, ReadStreamOptions, ResolvedEvent, StreamKind, StreamName, WriteRequest,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::{PgConfig, redact};
use crate::error::PgError;
use crate::read::PgAccess;
use crate::{append, live, migrations};

/// Advisory-lock class every appender holds (shared) while it runs: "ANNL".
pub(crate) const APPENDER_LOCK_CLASS: i32 = 0x414E_4E4C;
/// Advisory-lock class that serialises migrations of one schema: "ANNM".
pub(crate) const MIGRATION_LOCK_CLASS: i32 = 0x414E_4E4D;

/// The Annals event store on PostgreSQL.
///
/// # How `$all` stays gap-free for readers without a global lock
///
/// Every append runs in its own transaction, which first takes a *shared* advisory lock
/// (class "ANNL", key = hash of the schema; shared holders never wait for each other), then
/// gets its transaction id and writes its events at positions `xid << 20 | index`. Two
/// appends to different streams therefore never wait for each other, but they may commit
/// in an order other than their positions. A reader of `$all` first computes the *visible
/// prefix* (the `visible_prefix` SQL function): `bound` = the oldest transaction id of an
/// appender that holds the lock right now, or the next transaction id if none does, shifted
/// like positions. It then reads only positions below `bound`, in later snapshots. An
/// appender that holds no transaction id yet will get one at or above the next id, so at
/// or above `bound`; one with an older id is waited for. Hence every event below `bound`
/// has committed (or aborted) before the reader looked, and no event can ever appear below
/// a bound a reader has used: readers never skip a late commit, and a transaction open for
/// long only delays `$all` (never other appends, and never stream reads).
/// docs/design/postgres.md has the full argument.
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the store's tasks share.
pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) config: PgConfig,
    /// This schema's advisory-lock key.
    pub(crate) key: i32,
    /// The NOTIFY channel of this schema.
    pub(crate) channel: String,
    pub(crate) head: watch::Sender<Position>,
    /// Wakes the task that sends NOTIFY after commits.
    pub(crate) committed: Notify,
    /// Writes that ended so far; the head refresher serves them in rounds.
    pub(crate) writes_ended: AtomicU64,
    /// Wakes the head refresher.
    pub(crate) refresh_wanted: Notify,
    /// The count of ended writes the last finished refresh covers.
    pub(crate) refreshed: watch::Sender<u64>,
    /// `BEGIN` plus the appenders' registration, one round trip.
    pub(crate) begin_sql: String,
    /// Sent as the NOTIFY payload, so the listener can skip this store's own notifications.
    pub(crate) instance: String,
}

/// The visible prefix of the log at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Visible {
    /// Positions below this are final.
    pub(crate) bound: i64,
    /// The position after the last event below `bound`.
    pub(crate) head: Position,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.inner.config)
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, applies the schema migrations this build has, and starts listening for
    /// commits.
    pub async fn open(config: PgConfig) -> Result<Self, PgError> {
        config.validate()?;
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|source| PgError::Url {
                url: redact(&config.url),
                source,
            })?
            .application_name("annals")
            .options([("search_path", config.schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await
            .map_err(PgError::db("connecting"))?;
        let key = schema_key(&config.schema);
        migrations::migrate(&pool, &config.schema, key).await?;
        let inner = Arc::new(Inner {
            channel: format!("annals_{}", config.schema),
            pool,
            key,
            head: watch::Sender::new(Position(0)),
            committed: Notify::new(),
            writes_ended: AtomicU64::new(0),
            refresh_wanted: Notify::new(),
            refreshed: watch::Sender::new(0),
            begin_sql: format!(
                "BEGIN; SELECT pg_advisory_xact_lock_shared({APPENDER_LOCK_CLASS}, {key})"
            ),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            config,
        });
        inner.refresh_head().await?;
        let tasks = live::spawn(&inner);
        Ok(Self { inner, tasks })
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// Removes a store's schema and everything in it (for tests and decommissioning). The
    /// name is checked like [`PgConfig::schema`].
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), PgError> {
        use sqlx::Connection;
        PgConfig::new(url).schema(schema).validate()?;
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(PgError::db("connecting"))?;
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(PgError::db("dropping a schema"))?;
        Ok(())
    }

    /// Stops the background tasks and closes the connections.
    pub async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.inner.pool.close().await;
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// Computes the visible prefix on `conn`.
    pub(crate) async fn visible(&self, conn: &mut PgConnection) -> Result<Visible, PgError> {
        let (bound, head): (i64, i64) =
            sqlx::query_as("SELECT bound, head FROM visible_prefix($1, $2)")
                .bind(APPENDER_LOCK_CLASS)
                .bind(self.key)
                .fetch_one(conn)
                .await
                .map_err(PgError::db("computing the visible prefix"))?;
        let visible = Visible {
            bound,
            head: Position(u64::try_from(head).unwrap_or(0)),
        };
        self.publish(visible.head);
        Ok(visible)
    }

    /// Recomputes the head on a pooled connection and publishes it.
    pub(crate) async fn refresh_head(&self) -> Result<Visible, PgError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(PgError::db("getting a connection"))?;
        self.visible(&mut conn).await
    }

    /// After a write ended (commit or rollback): waits until a head refresh that started
    /// after it has finished, so the caller sees its commit in the head. Concurrent writers
    /// share refreshes, as commits share an fsync: the visible prefix reads the lock table,
    /// which should not happen once per commit.
    pub(crate) async fn head_after_write(&self) {
        let ticket = self.writes_ended.fetch_add(1, Ordering::SeqCst) + 1;
        self.refresh_wanted.notify_one();
        let mut refreshed = self.refreshed.subscribe();
        // An error means the store is closing; the write itself has ended either way.
        let _ = refreshed.wait_for(|done| *done >= ticket).await;
    }

    /// Moves the watched head forward (never back: concurrent refreshes may finish out of
    /// order).
    fn publish(&self, head: Position) {
        self.head.send_if_modified(|current| {
            let newer = head > *current;
            if newer {
                *current = head;
            }
            newer
        });
    }
}

/// The advisory-lock key of a schema: FNV-1a of its name, as a non-negative i32.
fn schema_key(schema: &str) -> i32 {
    let hash = schema.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::try_from(hash & 0x7fff_ffff).unwrap_or(0)
}

#[async_trait]
impl EventAppender for PgStore {
    async fn write(&self, request: WriteRequest) -> Result<Vec<AppendResult>, AppendError> {
        append::write(&self.inner, request).await
    }
}

#[async_trait]
impl EventReader for PgStore {
    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<ResolvedEvent>, ReadError> {
        let now = self.inner.config.clock.now();
        let mut access = match stream.kind() {
            // Virtual streams number their links by rank below the visible prefix.
            StreamKind::Category { .. } | StreamKind::EventType { .. } => {
                PgAccess::bounded(&self.inner).await?
            }
            // A stream's own revisions are gap-free under its version check.
            _ => PgAccess::unbounded(&self.inner).await?,
        };
        readpath::read_stream(&mut access, stream, options, now).await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllSlice, ReadError> {
        let now = self.inner.config.clock.now();
        let mut access = PgAccess::bounded(&self.inner).await?;
        readpath::read_all(&mut access, &options, now).await
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.head.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_keys_are_stable_and_non_negative() {
        assert_eq!(schema_key("annals"), schema_key("annals"));
        assert_ne!(schema_key("annals"), schema_key("annals2"));
        assert!(schema_key("zzzzzzzz") >= 0);
    }
}
