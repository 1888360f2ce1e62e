//! The write path: plan in a transaction, compare-and-set the stream rows, insert, commit.
//!
//! A write runs in one READ COMMITTED transaction that first takes the appenders' shared
//! advisory lock (see [`PgStore`](crate::PgStore)), then loads the rows of the streams it
//! touches and lets the shared planner decide on them. Each touched stream's row is then
//! updated only if its `version` is still the one read (or inserted if it had none), and the
//! events are inserted under the unique `(stream, revision)` constraint. A concurrent writer
//! that got there first makes the update match no row or the insert fail with SQLSTATE 23505;
//! the transaction is rolled back and the write planned again on the new state, where the
//! planner reports a real conflict, recognises a re-send, or appends after the winner.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use annals_core::write::{self, Plan, PlannedRecord, StreamState, StreamView};
use annals_core::{
    AppendError, AppendResult, InvalidInput, Position, StorageError, StreamMetadata, StreamName,
    WriteRequest,
};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres};
use uuid::Uuid;

use crate::error::{PgError, UNIQUE_VIOLATION, sqlstate};
use crate::rows::{self, StreamRow, signed, stream_columns};
use crate::store::Inner;

/// Records one transaction can hold: the low 20 bits of a position.
pub(crate) const MAX_RECORDS: usize = (1 << 20) - 1;

/// SQLSTATEs after which the write is planned again: a concurrent writer won.
const RETRY_STATES: &[&str] = &[UNIQUE_VIOLATION, "40001", "40P01"];

/// How one attempt ended.
enum Attempt {
    Done(Vec<AppendResult>),
    /// Another writer changed a touched stream first.
    Lost,
}

/// Executes a write request, planning it again while concurrent writers win.
pub(crate) async fn write(
    inner: &Inner,
    request: WriteRequest,
) -> Result<Vec<AppendResult>, AppendError> {
    write::validate(&request, &inner.config.limits)?;
    check_record_count(&request)?;
    let attempts = inner.config.max_attempts.max(1);
    for attempt in 1..=attempts {
        match attempt_write(inner, request.clone()).await? {
            Attempt::Done(results) => return Ok(results),
            Attempt::Lost => backoff(attempt).await,
        }
    }
    Err(StorageError::backend(format!(
        "gave up after {attempts} attempts: concurrent writers to the same streams kept winning"
    ))
    .into())
}

/// Positions keep 20 bits for the index in the transaction.
fn check_record_count(request: &WriteRequest) -> Result<(), InvalidInput> {
    let WriteRequest::Append(writes) = request else {
        return Ok(());
    };
    // Each stream may also get a metadata record (re-creation after a soft delete).
    let count: usize = writes.iter().map(|w| w.events.len() + 1).sum();
    if count > MAX_RECORDS {
        return Err(InvalidInput::TooManyEvents {
            count,
            limit: MAX_RECORDS,
        });
    }
    Ok(())
}

/// Waits a little, more after each lost race, so that contenders spread out.
async fn backoff(attempt: u32) {
    let jitter = u64::from(Uuid::new_v4().as_u128() as u16 % 100);
    let micros = u64::from(attempt.min(20)) * 50 + jitter;
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

async fn attempt_write(inner: &Inner, request: WriteRequest) -> Result<Attempt, AppendError> {
    let mut conn = inner
        .pool
        .acquire()
        .await
        .map_err(PgError::db("getting a connection"))?;
    // Register before the transaction gets an id (readers of `$all` wait for registered
    // appenders), in the same round trip as BEGIN.
    let mut tx = conn
        .begin_with(AssertSqlSafe(inner.begin_sql.as_str()))
        .await
        .map_err(PgError::db("starting a transaction"))?;
    let loaded = load_streams(&mut tx, &request).await?;
    let mut view = TxView {
        conn: &mut tx,
        rows: loaded.clone(),
    };
    let plan = write::plan(&mut view, request).await?;
    if plan.is_empty() {
        return Ok(Attempt::Done(plan.results(&[])));
    }
    // From here the transaction may hold an id: however it ends, the visible prefix may move,
    // so other processes are told (a rollback moves it as much as a commit).
    let _notify = NotifyOnExit(inner);
    let outcome = match store_plan(inner, &mut tx, &loaded, &plan).await {
        Ok(positions) if positions.is_empty() => Err(Attempt::Lost),
        Ok(positions) => Ok(positions),
        Err(e) if sqlstate(&e).is_some_and(|s| RETRY_STATES.contains(&s.as_str())) => {
            Err(Attempt::Lost)
        }
        Err(e) => return Err(StorageError::from(PgError::db("writing events")(e)).into()),
    };
    let failpoint = match (&outcome, &inner.config.before_commit) {
        (Ok(positions), Some(hook)) => hook(positions).await.err(),
        _ => None,
    };
    let positions = match (outcome, failpoint) {
        (Ok(positions), None) => positions,
        (_, failpoint) => {
            // Roll back before the notifier tells others that the prefix may have moved.
            tx.rollback().await.map_err(PgError::db("rolling back"))?;
            return match failpoint {
                Some(e) => Err(StorageError::backend(format!(
                    "before-commit failpoint rolled back: {e}"
                ))
                .into()),
                // Without a failpoint error, this arm only sees lost races.
                None => Ok(Attempt::Lost),
            };
        }
    };
    tx.commit()
        .await
        .map_err(PgError::db("committing (the outcome is unknown)"))?;
    drop(conn);
    inner.head_after_write().await;
    Ok(Attempt::Done(plan.results(&positions)))
}

/// Wakes the notifier when dropped.
struct NotifyOnExit<'a>(&'a Inner);

impl Drop for NotifyOnExit<'_> {
    fn drop(&mut self) {
        self.0.committed.notify_one();
    }
}

/// The base stream whose row holds a stream's state: itself, or for `$$x`, `x`.
fn base_stream(stream: &StreamName) -> String {
    stream
        .metadata_target()
        .map_or_else(|| stream.as_str().to_owned(), |t| t.as_str().to_owned())
}

/// Loads the rows of every stream a request can touch. Absent rows map to `None`.
async fn load_streams(
    conn: &mut PgConnection,
    request: &WriteRequest,
) -> Result<HashMap<String, Option<StreamRow>>, PgError> {
    let names: Vec<String> = match request {
        WriteRequest::Append(writes) => writes.iter().map(|w| base_stream(&w.stream)).collect(),
        WriteRequest::SetMetadata { stream, .. }
        | WriteRequest::Delete { stream, .. }
        | WriteRequest::Tombstone { stream, .. } => vec![base_stream(stream)],
    };
    let found: Vec<PgRow> = sqlx::query(concat!(
        "SELECT ",
        stream_columns!(),
        " FROM streams WHERE name = ANY($1)"
    ))
    .bind(&names)
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::db("reading stream states"))?;
    let mut rows: HashMap<String, Option<StreamRow>> =
        names.into_iter().map(|name| (name, None)).collect();
    for row in &found {
        let (name, state) = rows::stream_row(row)?;
        rows.insert(name, Some(state));
    }
    Ok(rows)
}

/// Writes a plan: compare-and-set of each touched stream row (in name order, so two
/// multi-stream writes never wait for each other in a cycle), then the events. Returns the
/// positions, or none when a stream row changed since it was read.
async fn store_plan(
    inner: &Inner,
    conn: &mut PgConnection,
    loaded: &HashMap<String, Option<StreamRow>>,
    plan: &Plan,
) -> Result<Vec<Position>, sqlx::Error> {
    for (name, (old, new)) in next_rows(loaded, &plan.records) {
        let changed = match old {
            Some(version) => update_row(conn, &name, version, &new).await?,
            None => insert_row(conn, &name, &new).await?,
        };
        if !changed {
            return Ok(Vec::new());
        }
    }
    let xid = insert_events(inner, conn, &plan.records).await?;
    let positions: Vec<Position> = (0..plan.records.len() as u64)
        .map(|i| Position((rows::unsigned(xid).unwrap_or(0) << 20) | i))
        .collect();
    Ok(positions)
}

/// Each touched stream's row version as read (`None`: no row) and its state after the plan.
fn next_rows(
    loaded: &HashMap<String, Option<StreamRow>>,
    records: &[PlannedRecord],
) -> BTreeMap<String, (Option<i64>, StreamRow)> {
    let mut next: BTreeMap<String, (Option<i64>, StreamRow)> = BTreeMap::new();
    for record in records {
        let base = base_stream(&record.stream);
        let (_, row) = next.entry(base.clone()).or_insert_with(|| {
            let old = loaded.get(&base).cloned().flatten();
            let version = old.as_ref().map(|r| r.version);
            let mut row = old.unwrap_or_default();
            row.version = version.map_or(0, |v| v + 1);
            (version, row)
        });
        if record.stream.metadata_target().is_some() {
            row.meta_revision = Some(record.revision);
            row.meta_event_id = Some(record.event.id);
            row.metadata = Some(record.event.data.to_vec());
        } else {
            row.last_revision = Some(record.revision);
            row.last_event_id = Some(record.event.id);
            row.tombstoned = record.tombstone;
        }
    }
    next
}

async fn update_row(
    conn: &mut PgConnection,
    name: &str,
    version: i64,
    row: &StreamRow,
) -> Result<bool, sqlx::Error> {
    let update = sqlx::query(
        "UPDATE streams SET version = $2, last_revision = $3, last_event_id = $4,
                tombstoned = $5, meta_revision = $6, meta_event_id = $7, metadata = $8
          WHERE name = $1 AND version = $9",
    );
    let done = bind_row(update, name, row)
        .bind(version)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn insert_row(
    conn: &mut PgConnection,
    name: &str,
    row: &StreamRow,
) -> Result<bool, sqlx::Error> {
    let insert = sqlx::query(
        "INSERT INTO streams (name, version, last_revision, last_event_id, tombstoned,
                              meta_revision, meta_event_id, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    );
    bind_row(insert, name, row).execute(&mut *conn).await?;
    Ok(true)
}

/// Binds a stream row's name and state as `$1`..`$8`.
fn bind_row<'q>(
    query: Query<'q, Postgres, PgArguments>,
    name: &'q str,
    row: &'q StreamRow,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(name)
        .bind(row.version)
        .bind(row.last_revision.map(signed))
        .bind(row.last_event_id)
        .bind(row.tombstoned)
        .bind(row.meta_revision.map(signed))
        .bind(row.meta_event_id)
        .bind(row.metadata.as_deref())
}

/// Inserts all records in one statement, at positions `xid << 20 | index`; returns the
/// transaction id.
async fn insert_events(
    inner: &Inner,
    conn: &mut PgConnection,
    records: &[PlannedRecord],
) -> Result<i64, sqlx::Error> {
    let created = signed(inner.config.clock.now().0);
    let mut columns = EventColumns::with_capacity(records.len());
    for record in records {
        columns.push(record);
    }
    sqlx::query_scalar(
        "INSERT INTO events (position, stream, revision, event_id, event_type, category,
                             is_json, data, metadata, created_us, tombstone)
         SELECT (pg_current_xact_id()::text::bigint << 20) | (o - 1), s, r, i, t, c, j, d, m,
                $10, x
           FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[],
                       $6::boolean[], $7::bytea[], $8::bytea[], $9::boolean[])
                WITH ORDINALITY AS u(s, r, i, t, c, j, d, m, x, o)
         RETURNING position >> 20",
    )
    .bind(columns.stream)
    .bind(columns.revision)
    .bind(columns.id)
    .bind(columns.event_type)
    .bind(columns.category)
    .bind(columns.is_json)
    .bind(columns.data)
    .bind(columns.metadata)
    .bind(columns.tombstone)
    .bind(created)
    .fetch_one(&mut *conn)
    .await
}

/// Records as column arrays, for `UNNEST`.
#[derive(Default)]
struct EventColumns {
    stream: Vec<String>,
    revision: Vec<i64>,
    id: Vec<Uuid>,
    event_type: Vec<String>,
    category: Vec<Option<String>>,
    is_json: Vec<bool>,
    data: Vec<Vec<u8>>,
    metadata: Vec<Vec<u8>>,
    tombstone: Vec<bool>,
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            stream: Vec::with_capacity(n),
            revision: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            is_json: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            tombstone: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, record: &PlannedRecord) {
        let event = &record.event;
        self.stream.push(record.stream.as_str().to_owned());
        self.revision.push(signed(record.revision));
        self.id.push(event.id);
        self.event_type.push(event.event_type.as_str().to_owned());
        self.category
            .push(record.stream.category().map(str::to_owned));
        self.is_json
            .push(event.content_type == annals_core::ContentType::Json);
        self.data.push(event.data.to_vec());
        self.metadata.push(event.metadata.to_vec());
        self.tombstone.push(record.tombstone);
    }
}

/// The planner's window on the transaction: the stream rows loaded at its start, and the
/// events table for re-send checks.
struct TxView<'a> {
    conn: &'a mut PgConnection,
    rows: HashMap<String, Option<StreamRow>>,
}

impl TxView<'_> {
    async fn row(&mut self, base: &str) -> Result<Option<StreamRow>, StorageError> {
        if let Some(row) = self.rows.get(base) {
            return Ok(row.clone());
        }
        let found: Vec<PgRow> = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE name = $1"
        ))
        .bind(base)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(PgError::db("reading a stream state"))?;
        let row = found
            .first()
            .map(rows::stream_row)
            .transpose()?
            .map(|(_, row)| row);
        self.rows.insert(base.to_owned(), row.clone());
        Ok(row)
    }
}

impl StreamView for TxView<'_> {
    async fn stream_state(&mut self, stream: &StreamName) -> Result<StreamState, StorageError> {
        let row = self.row(&base_stream(stream)).await?.unwrap_or_default();
        Ok(if stream.metadata_target().is_some() {
            StreamState {
                last_revision: row.meta_revision,
                last_event_id: row.meta_event_id,
                tombstoned: false,
            }
        } else {
            StreamState {
                last_revision: row.last_revision,
                last_event_id: row.last_event_id,
                tombstoned: row.tombstoned,
            }
        })
    }

    async fn metadata(
        &mut self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, StorageError> {
        let Some(row) = self.row(stream.as_str()).await? else {
            return Ok(None);
        };
        Ok(row.parsed_metadata(stream.as_str())?)
    }

    async fn recorded(
        &mut self,
        stream: &StreamName,
        from: u64,
        count: usize,
    ) -> Result<Vec<(Uuid, Position)>, StorageError> {
        let found: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT event_id, position FROM events
              WHERE stream = $1 AND revision >= $2 ORDER BY revision LIMIT $3",
        )
        .bind(stream.as_str())
        .bind(signed(from))
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(&mut *self.conn)
        .await
        .map_err(PgError::db("reading events for a re-send check"))?;
        Ok(found
            .into_iter()
            .map(|(id, p)| (id, Position(rows::unsigned(p).unwrap_or(0))))
            .collect())
    }
}
