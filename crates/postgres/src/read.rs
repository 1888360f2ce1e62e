//! The shared read path's window on PostgreSQL ([`AsyncLogAccess`]).
//!
//! `$all` and virtual streams read below the visible prefix ([`PgAccess::bounded`]), so
//! every position and every link revision they return is final. A virtual stream's link
//! revision is the event's rank among the virtual stream's events below the prefix: stable,
//! because nothing is ever added below it, and gap-free without a per-category counter that
//! every append to the category would have to lock. Reading a virtual stream from revision
//! `n` costs O(n) index entries. A stream's own reads need no bound (its revisions are
//! written under its version check), so they see every committed append at once.

use std::collections::HashMap;

use annals_core::readpath::{AsyncLogAccess, IndexEntry, IndexKey};
use annals_core::visibility::Restriction;
use annals_core::{
    Direction, Position, RecordedEvent, ResolvedEvent, StorageError, StreamKind, StreamName,
};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;

use crate::error::PgError;
use crate::rows::{self, event_columns, signed, stream_columns};
use crate::store::Inner;

/// One read's connection, bound and caches.
pub(crate) struct PgAccess {
    conn: PoolConnection<Postgres>,
    /// Positions at or above this are not read (`i64::MAX` for stream reads).
    bound: i64,
    head: Position,
    /// Records fetched with their index entries, by position.
    fetched: HashMap<u64, RecordedEvent>,
    restrictions: HashMap<String, Restriction>,
}

type Result<T> = std::result::Result<T, StorageError>;

impl PgAccess {
    /// For reads of `$all` and virtual streams: below the visible prefix.
    pub(crate) async fn bounded(inner: &Inner) -> Result<Self> {
        let mut access = Self::unbounded(inner).await?;
        let visible = inner.visible(&mut access.conn).await?;
        access.bound = visible.head.0.try_into().unwrap_or(i64::MAX);
        access.head = visible.head;
        Ok(access)
    }

    /// For a stream's own reads: everything committed.
    pub(crate) async fn unbounded(inner: &Inner) -> Result<Self> {
        let conn = inner
            .pool
            .acquire()
            .await
            .map_err(PgError::db("getting a connection"))?;
        Ok(Self {
            conn,
            bound: i64::MAX,
            head: Position(u64::MAX),
            fetched: HashMap::new(),
            restrictions: HashMap::new(),
        })
    }

    async fn fetch_events(
        &mut self,
        query: sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<RecordedEvent>> {
        let rows: Vec<PgRow> = query
            .fetch_all(&mut *self.conn)
            .await
            .map_err(PgError::db("reading events"))?;
        Ok(rows
            .iter()
            .map(rows::event)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Loads the restrictions of the regular streams of `events` not loaded yet, in one
    /// query.
    async fn load_restrictions(&mut self, events: &[RecordedEvent]) -> Result<()> {
        let mut missing: Vec<String> = events
            .iter()
            .filter(|e| e.stream.kind() == StreamKind::Regular)
            .map(|e| e.stream.as_str())
            .filter(|s| !self.restrictions.contains_key(*s))
            .map(str::to_owned)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let rows: Vec<PgRow> = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE name = ANY($1)"
        ))
        .bind(&missing)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(PgError::db("reading stream states"))?;
        for row in &rows {
            let (name, restriction) = restriction_of(row)?;
            self.restrictions.insert(name, restriction);
        }
        for name in missing {
            self.restrictions.entry(name).or_default();
        }
        Ok(())
    }

    fn keep(
        &mut self,
        events: Vec<RecordedEvent>,
        seqs: impl Iterator<Item = u64>,
    ) -> Vec<IndexEntry> {
        let mut entries = Vec::with_capacity(events.len());
        for (event, seq) in events.into_iter().zip(seqs) {
            let position = event.position;
            entries.push(IndexEntry {
                seq,
                position,
                address: position.0,
            });
            self.fetched.insert(position.0, event);
        }
        entries
    }

    /// A stream's own entries: its revisions.
    async fn stream_entries(
        &mut self,
        stream: &str,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<IndexEntry>> {
        let sql = match direction {
            Direction::Forward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE stream = $1 AND revision >= $2 ORDER BY revision LIMIT $3"
            ),
            Direction::Backward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE stream = $1 AND revision <= $2",
                " ORDER BY revision DESC LIMIT $3"
            ),
        };
        let query = sqlx::query(sql)
            .bind(stream.to_owned())
            .bind(signed(first))
            .bind(limit(max));
        let events = self.fetch_events(query).await?;
        let seqs: Vec<u64> = events.iter().map(|e| e.revision).collect();
        Ok(self.keep(events, seqs.into_iter()))
    }
}

impl AsyncLogAccess for PgAccess {
    fn head(&self) -> Position {
        self.head
    }

    async fn scan(
        &mut self,
        from: Position,
        direction: Direction,
        max: usize,
        out: &mut Vec<ResolvedEvent>,
    ) -> Result<usize> {
        let sql = match direction {
            Direction::Forward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE position >= $1 AND position < $2 ORDER BY position LIMIT $3"
            ),
            Direction::Backward => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE position <= $1 AND position < $2",
                " ORDER BY position DESC LIMIT $3"
            ),
        };
        let query = sqlx::query(sql)
            .bind(signed(from.0))
            .bind(self.bound)
            .bind(limit(max));
        let events = self.fetch_events(query).await?;
        self.load_restrictions(&events).await?;
        let scanned = events.len();
        out.extend(events.into_iter().map(ResolvedEvent::from));
        Ok(scanned)
    }

    async fn last_seq(&mut self, key: IndexKey<'_>) -> Result<Option<u64>> {
        let (sql, value) = match key {
            IndexKey::Stream(stream) => (
                "SELECT max(revision) FROM events WHERE stream = $1 AND $2 > 0",
                stream,
            ),
            IndexKey::Category(c) => (
                "SELECT count(*) - 1 FROM events WHERE category = $1 AND position < $2",
                c,
            ),
            IndexKey::EventType(t) => (
                "SELECT count(*) - 1 FROM events WHERE event_type = $1 AND position < $2",
                t,
            ),
        };
        let last: Option<i64> = sqlx::query_scalar(sql)
            .bind(value)
            .bind(self.bound)
            .fetch_one(&mut *self.conn)
            .await
            .map_err(PgError::db("finding the end of a stream"))?;
        Ok(last.and_then(rows::unsigned))
    }

    async fn entries(
        &mut self,
        key: IndexKey<'_>,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<IndexEntry>> {
        let (column, value) = match key {
            IndexKey::Stream(stream) => {
                return self.stream_entries(stream, first, direction, max).await;
            }
            IndexKey::Category(c) => ("category", c),
            IndexKey::EventType(t) => ("event_type", t),
        };
        let sql = match (column, direction) {
            ("category", Direction::Forward) => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE category = $1 AND position < $2",
                " ORDER BY position OFFSET $3 LIMIT $4"
            ),
            (_, Direction::Forward) => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE event_type = $1 AND position < $2",
                " ORDER BY position OFFSET $3 LIMIT $4"
            ),
            ("category", Direction::Backward) => concat!(
                "SELECT * FROM (SELECT ",
                event_columns!(),
                " FROM events WHERE category = $1 AND position < $2",
                " ORDER BY position LIMIT $3 + 1) s ORDER BY position DESC LIMIT $4"
            ),
            (_, Direction::Backward) => concat!(
                "SELECT * FROM (SELECT ",
                event_columns!(),
                " FROM events WHERE event_type = $1 AND position < $2",
                " ORDER BY position LIMIT $3 + 1) s ORDER BY position DESC LIMIT $4"
            ),
        };
        let query = sqlx::query(sql)
            .bind(value.to_owned())
            .bind(self.bound)
            .bind(signed(first))
            .bind(limit(max));
        let events = self.fetch_events(query).await?;
        self.load_restrictions(&events).await?;
        Ok(match direction {
            Direction::Forward => self.keep(events, first..),
            Direction::Backward => self.keep(events, (0..=first).rev()),
        })
    }

    async fn records(&mut self, entries: &[IndexEntry]) -> Result<Vec<RecordedEvent>> {
        let missing: Vec<i64> = entries
            .iter()
            .filter(|e| !self.fetched.contains_key(&e.position.0))
            .map(|e| signed(e.position.0))
            .collect();
        if !missing.is_empty() {
            let query = sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE position = ANY($1)"
            ))
            .bind(missing);
            for event in self.fetch_events(query).await? {
                self.fetched.insert(event.position.0, event);
            }
        }
        entries
            .iter()
            .map(|e| {
                self.fetched.remove(&e.position.0).ok_or_else(|| {
                    StorageError::backend(format!("no event at position {}", e.position))
                })
            })
            .collect()
    }

    async fn restriction(&mut self, stream: &StreamName) -> Result<Restriction> {
        if stream.kind() != StreamKind::Regular {
            return Ok(Restriction::default());
        }
        if !self.restrictions.contains_key(stream.as_str()) {
            let rows: Vec<PgRow> = sqlx::query(concat!(
                "SELECT ",
                stream_columns!(),
                " FROM streams WHERE name = $1"
            ))
            .bind(stream.as_str().to_owned())
            .fetch_all(&mut *self.conn)
            .await
            .map_err(PgError::db("reading a stream state"))?;
            let restriction = match rows.first() {
                Some(row) => restriction_of(row)?.1,
                None => Restriction::default(),
            };
            self.restrictions
                .insert(stream.as_str().to_owned(), restriction);
        }
        Ok(self
            .restrictions
            .get(stream.as_str())
            .cloned()
            .unwrap_or_default())
    }
}

/// A stream's name and restriction from its `streams` row.
fn restriction_of(row: &PgRow) -> Result<(String, Restriction)> {
    let (name, state) = rows::stream_row(row)?;
    let restriction = Restriction {
        metadata: state.parsed_metadata(&name)?,
        last_revision: state.last_revision,
        tombstone_revision: state.last_revision.filter(|_| state.tombstoned),
    };
    Ok((name, restriction))
}

/// A batch size as a SQL `LIMIT`.
fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}
