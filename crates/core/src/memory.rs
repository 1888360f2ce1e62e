//! The in-memory reference backend: the simplest correct [`EventStore`](crate::EventStore),
//! used as the model in tests and for embedding without durability.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::error::{AppendError, ReadError, StorageError};
use crate::event::{RecordedEvent, ResolvedEvent};
use crate::metadata::StreamMetadata;
use crate::name::{StreamKind, StreamName};
use crate::position::{AppendResult, Position};
use crate::read::{AllSlice, Direction, ReadAllOptions, ReadStreamOptions};
use crate::readpath::{self, IndexEntry, IndexKey, LogAccess};
use crate::store::{EventAppender, EventReader};
use crate::visibility::Restriction;
use crate::write::{self, Limits, StreamState, StreamView, WriteRequest};

/// In-memory planning and reading never wait; this reports a broken promise.
const WOULD_WAIT: &str = "in-memory store: planning or reading would have waited";

/// An event store held in memory. Positions are gap-free from 0.
#[derive(Debug)]
pub struct MemoryStore {
    state: RwLock<State>,
    head: watch::Sender<Position>,
    clock: Arc<dyn Clock>,
    limits: Limits,
}

#[derive(Debug, Default)]
struct State {
    log: Vec<Stored>,
    streams: HashMap<StreamName, Vec<Position>>,
    categories: HashMap<String, Vec<Position>>,
    event_types: HashMap<String, Vec<Position>>,
}

#[derive(Debug)]
struct Stored {
    event: RecordedEvent,
    tombstone: bool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the system clock and default limits.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store with the given clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: RwLock::new(State::default()),
            head: watch::Sender::new(Position(0)),
            clock,
            limits: Limits::default(),
        }
    }

    /// Replaces the size limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl State {
    fn stored(&self, position: Position) -> Result<&Stored, StorageError> {
        usize::try_from(position.0)
            .ok()
            .and_then(|i| self.log.get(i))
            .ok_or_else(|| StorageError::backend(format!("no record at position {position}")))
    }

    fn last_of(&self, stream: &StreamName) -> Option<&Stored> {
        let position = self.streams.get(stream)?.last()?;
        self.stored(*position).ok()
    }

    fn metadata_of(&self, stream: &StreamName) -> Result<Option<StreamMetadata>, StorageError> {
        if stream.kind() != StreamKind::Regular {
            return Ok(None);
        }
        let Some(last) = self.last_of(&stream.metadata_stream()) else {
            return Ok(None);
        };
        StreamMetadata::from_bytes(&last.event.data)
            .map(Some)
            .map_err(|e| StorageError::backend(format!("stored metadata of '{stream}': {e}")))
    }

    fn index(&self, key: IndexKey<'_>) -> Option<&Vec<Position>> {
        match key {
            IndexKey::Stream(name) => StreamName::new(name)
                .ok()
                .and_then(|n| self.streams.get(&n)),
            IndexKey::Category(c) => self.categories.get(c),
            IndexKey::EventType(t) => self.event_types.get(t),
        }
    }

    fn push(&mut self, event: RecordedEvent, tombstone: bool) {
        let position = event.position;
        self.streams
            .entry(event.stream.clone())
            .or_default()
            .push(position);
        if let Some(category) = event.stream.category() {
            self.categories
                .entry(category.to_owned())
                .or_default()
                .push(position);
        }
        self.event_types
            .entry(event.event_type.as_str().to_owned())
            .or_default()
            .push(position);
        self.log.push(Stored { event, tombstone });
    }
}

/// The planner's view: committed state only (the store plans one request at a time).
struct View<'a>(&'a State);

impl StreamView for View<'_> {
    async fn stream_state(&mut self, stream: &StreamName) -> Result<StreamState, StorageError> {
        Ok(self
            .0
            .last_of(stream)
            .map_or_else(StreamState::default, |last| StreamState {
                last_revision: Some(last.event.revision),
                last_event_id: Some(last.event.id),
                tombstoned: last.tombstone,
            }))
    }

    async fn metadata(
        &mut self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, StorageError> {
        self.0.metadata_of(stream)
    }

    async fn recorded(
        &mut self,
        stream: &StreamName,
        from: u64,
        count: usize,
    ) -> Result<Vec<(Uuid, Position)>, StorageError> {
        let positions = self.0.streams.get(stream).map_or(&[][..], Vec::as_slice);
        let from = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(positions.len());
        positions[from..]
            .iter()
            .take(count)
            .map(|p| self.0.stored(*p).map(|s| (s.event.id, *p)))
            .collect()
    }
}

impl LogAccess for View<'_> {
    fn head(&self) -> Position {
        Position(self.0.log.len() as u64)
    }

    fn scan(
        &mut self,
        from: Position,
        direction: Direction,
        max: usize,
        out: &mut Vec<ResolvedEvent>,
    ) -> Result<usize, StorageError> {
        let len = self.0.log.len();
        let from = usize::try_from(from.0).unwrap_or(usize::MAX);
        let events = match direction {
            Direction::Forward => self.0.log.get(from.min(len)..).unwrap_or_default(),
            Direction::Backward => &self.0.log[..(from.saturating_add(1)).min(len)],
        };
        let before = out.len();
        let resolved = |s: &Stored| ResolvedEvent::from(s.event.clone());
        match direction {
            Direction::Forward => out.extend(events.iter().take(max).map(resolved)),
            Direction::Backward => out.extend(events.iter().rev().take(max).map(resolved)),
        }
        Ok(out.len() - before)
    }

    fn last_seq(&mut self, key: IndexKey<'_>) -> Result<Option<u64>, StorageError> {
        Ok(self
            .0
            .index(key)
            .and_then(|v| (v.len() as u64).checked_sub(1)))
    }

    fn entries(
        &mut self,
        key: IndexKey<'_>,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<IndexEntry>, StorageError> {
        let positions = self.0.index(key).map_or(&[][..], Vec::as_slice);
        let entry = |(seq, position): (usize, &Position)| IndexEntry {
            seq: seq as u64,
            position: *position,
            address: position.0,
        };
        let first = usize::try_from(first).unwrap_or(usize::MAX);
        Ok(match direction {
            Direction::Forward => positions
                .iter()
                .enumerate()
                .skip(first)
                .take(max)
                .map(entry)
                .collect(),
            Direction::Backward => {
                let end = first.saturating_add(1).min(positions.len());
                positions[..end]
                    .iter()
                    .enumerate()
                    .rev()
                    .take(max)
                    .map(entry)
                    .collect()
            }
        })
    }

    fn record(&mut self, entry: &IndexEntry) -> Result<RecordedEvent, StorageError> {
        self.0.stored(entry.position).map(|s| s.event.clone())
    }

    fn restriction(&mut self, stream: &StreamName) -> Result<Restriction, StorageError> {
        let last = self.0.last_of(stream);
        Ok(Restriction {
            metadata: self.0.metadata_of(stream)?,
            last_revision: last.map(|s| s.event.revision),
            tombstone_revision: last.filter(|s| s.tombstone).map(|s| s.event.revision),
        })
    }
}

#[async_trait]
impl EventAppender for MemoryStore {
    async fn write(&self, request: WriteRequest) -> Result<Vec<AppendResult>, AppendError> {
        write::validate(&request, &self.limits)?;
        let mut state = self.state.write();
        let plan = write::poll_ready(write::plan(&mut View(&state), request))
            .ok_or_else(|| StorageError::backend(WOULD_WAIT))??;
        let created = self.clock.now();
        let mut positions = Vec::with_capacity(plan.records.len());
        for record in &plan.records {
            let position = Position(state.log.len() as u64);
            positions.push(position);
            let event = RecordedEvent {
                stream: record.stream.clone(),
                revision: record.revision,
                position,
                id: record.event.id,
                event_type: record.event.event_type.clone(),
                content_type: record.event.content_type,
                data: record.event.data.clone(),
                metadata: record.event.metadata.clone(),
                created,
            };
            state.push(event, record.tombstone);
        }
        let head = Position(state.log.len() as u64);
        drop(state);
        if !plan.is_empty() {
            self.head.send_replace(head);
        }
        Ok(plan.results(&positions))
    }
}

#[async_trait]
impl EventReader for MemoryStore {
    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<ResolvedEvent>, ReadError> {
        let state = self.state.read();
        let mut access = View(&state);
        let read = readpath::read_stream(&mut access, stream, options, self.clock.now());
        write::poll_ready(read).ok_or_else(|| StorageError::backend(WOULD_WAIT))?
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllSlice, ReadError> {
        let state = self.state.read();
        let mut access = View(&state);
        let read = readpath::read_all(&mut access, &options, self.clock.now());
        write::poll_ready(read).ok_or_else(|| StorageError::backend(WOULD_WAIT))?
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }
}
