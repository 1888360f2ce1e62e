//! The single writer with group commit.
//!
//! Appenders put requests on a bounded queue. The writer thread takes one, then everything
//! else already waiting (up to `group_max_bytes`), plans each request against the committed
//! state plus what the group has planned so far, encodes the records with gap-free
//! positions, writes the group with one `write_at`, calls `sync_data` once, publishes the
//! group to readers and subscribers, and only then answers every request of the group.
//! A failed write or sync poisons the engine: no later group is attempted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use annals_core::write::{self, PlannedRecord, StreamState, StreamView};
use annals_core::{
    AppendError, AppendResult, ContentType, Direction, Position, RecordedEvent, StorageError,
    StreamMetadata, StreamName, WriteRequest,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::engine::{Shared, apply_restriction, entries_for};
use crate::index::{KeyKind, key_hash};
use crate::log::{self, Segment};
use crate::record::{
    self, FLAG_JSON, FLAG_LAST_IN_TXN, FLAG_TOMBSTONE, RecordRef, SEGMENT_HEADER_LEN,
};

/// The longest a group waits for appenders answered by the previous group.
const MAX_LINGER: Duration = Duration::from_micros(250);

/// A queued write and where its answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) write: WriteRequest,
    pub(crate) reply: oneshot::Sender<Result<Vec<AppendResult>, AppendError>>,
}

type Reply = oneshot::Sender<Result<Vec<AppendResult>, AppendError>>;

/// Starts the writer and the index flusher; returns their threads.
pub(crate) fn start(
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    tail: (u64, u64),
) -> Result<Vec<JoinHandle<()>>, StorageError> {
    let segment = shared
        .log
        .segment(tail.0)
        .ok_or_else(|| StorageError::backend("the last segment vanished during open"))?;
    let (flush_tx, flush_rx) = std_mpsc::channel::<()>();
    let flusher_shared = Arc::clone(&shared);
    let spawn = |name: &str| std::thread::Builder::new().name(name.to_owned());
    let flusher = spawn("annals-flush")
        .spawn(move || {
            while flush_rx.recv().is_ok() {
                if let Err(e) = flusher_shared.index.flush_frozen() {
                    flusher_shared.poison(&e);
                }
            }
        })
        .map_err(|e| StorageError::io("starting the index flusher", e))?;
    let next_position = shared.published.read().next_position;
    let writer = Writer {
        shared,
        requests,
        segment,
        offset: tail.1,
        next_position,
        durable_through: next_position,
        flush_tx,
        seqs: HashMap::new(),
        states: HashMap::new(),
    };
    let writer = spawn("annals-writer")
        .spawn(move || writer.run())
        .map_err(|e| StorageError::io("starting the writer", e))?;
    Ok(vec![writer, flusher])
}

struct Writer {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    segment: Arc<Segment>,
    /// Where the next group goes in `segment`.
    offset: u64,
    next_position: u64,
    /// Every position below this is on stable storage (or would be, with `sync` off).
    durable_through: u64,
    flush_tx: std_mpsc::Sender<()>,
    /// Next sequence number per category / event-type key (only the writer assigns them).
    seqs: HashMap<u64, u64>,
    /// Last committed state of recently written streams (only the writer changes them).
    states: HashMap<StreamName, StreamState>,
}

/// Entries the writer's caches hold before they start over.
const CACHE_LIMIT: usize = 1 << 16;

/// A record of the group being built, with its offset in the group buffer.
struct Encoded {
    event: RecordedEvent,
    tombstone: bool,
    offset_in_group: u64,
}

impl Writer {
    fn run(mut self) {
        let limit = self.shared.config.group_max_bytes;
        // How many requests the previous group held, and how long its sync took: appenders
        // answered by the last group are usually about to send again, so a group that is
        // much smaller than the last one waits a moment (a fraction of a sync) for them.
        let mut previous = 0usize;
        let mut last_sync = Duration::ZERO;
        while let Some(first) = self.requests.blocking_recv() {
            let mut bytes = request_bytes(&first.write);
            let mut group = vec![first];
            let linger = (last_sync / 4).min(MAX_LINGER);
            let deadline = Instant::now() + linger;
            let mut target = None;
            loop {
                match self.requests.try_recv() {
                    Ok(request) => {
                        bytes += request_bytes(&request.write);
                        group.push(request);
                        if bytes >= limit {
                            break;
                        }
                    }
                    Err(_) => {
                        // What was already queued, plus the appenders the last group answered
                        // (they are about to send again).
                        let wanted = *target.get_or_insert(group.len() + previous);
                        if previous < 2 || group.len() >= wanted || Instant::now() >= deadline {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            }
            previous = group.len();
            let started = Instant::now();
            self.commit(group);
            last_sync = started.elapsed();
        }
    }

    fn commit(&mut self, group: Vec<Request>) {
        if let Some(poisoned) = self.shared.poisoned() {
            for request in group {
                let _ = request.reply.send(Err(poisoned.clone().into()));
            }
            return;
        }
        let group_start = self.next_position;
        let created = self.shared.config.clock.now();
        let mut pending = Pending::default();
        let mut buf = Vec::new();
        let mut encoded = Vec::new();
        let mut answers: Vec<(Reply, Result<Vec<AppendResult>, AppendError>)> = Vec::new();
        for request in group {
            let planned = {
                let mut view = GroupView {
                    shared: &self.shared,
                    pending: &mut pending,
                    states: &self.states,
                };
                write::poll_ready(write::plan(&mut view, request.write)).unwrap_or_else(|| {
                    Err(StorageError::backend("planning would have waited").into())
                })
            };
            let result = planned.map(|plan| {
                let positions: Vec<Position> = (0..plan.records.len() as u64)
                    .map(|i| Position(self.next_position + i))
                    .collect();
                self.next_position += positions.len() as u64;
                let last = plan.records.len().saturating_sub(1);
                for (i, (record, position)) in plan.records.iter().zip(&positions).enumerate() {
                    let event = recorded(record, *position, created);
                    let offset_in_group = buf.len() as u64;
                    encode(
                        &event,
                        record.tombstone,
                        i == last,
                        Position(group_start),
                        &mut buf,
                    );
                    pending.apply(&event, record.tombstone);
                    encoded.push(Encoded {
                        event,
                        tombstone: record.tombstone,
                        offset_in_group,
                    });
                }
                plan.results(&positions)
            });
            answers.push((request.reply, result));
        }
        if !buf.is_empty()
            && let Err(e) = self.write_group(&buf, &encoded)
        {
            {
                self.shared.poison(&e);
                self.next_position = group_start;
                for (reply, _) in answers {
                    let _ = reply.send(Err(e.clone().into()));
                }
                return;
            }
        }
        // Every answer below is for a group whose bytes are synced (or an answer that
        // wrote nothing).
        self.shared
            .stats
            .requests
            .fetch_add(answers.len() as u64, Relaxed);
        for (reply, result) in answers {
            if let Ok(results) = &result {
                // Nothing is acknowledged before the sync that covers it.
                debug_assert!(
                    results
                        .iter()
                        .filter_map(AppendResult::last_position)
                        .all(|p| p.0 < self.durable_through),
                    "acknowledging an append that is not yet durable"
                );
            }
            let _ = reply.send(result);
        }
        self.maybe_flush();
    }

    /// Writes, syncs and publishes a group.
    fn write_group(&mut self, buf: &[u8], encoded: &[Encoded]) -> Result<(), StorageError> {
        let len = buf.len() as u64;
        if self.offset > SEGMENT_HEADER_LEN && self.offset + len > self.shared.config.segment_bytes
        {
            self.roll(
                encoded
                    .first()
                    .map_or(self.next_position, |e| e.event.position.0),
            )?;
        }
        let device = &self.segment.device;
        let io = |what: &str, e| {
            StorageError::io(
                format!("{what} {} at {}", self.segment.path.display(), self.offset),
                e,
            )
        };
        device
            .write_at(buf, self.offset)
            .map_err(|e| io("writing", e))?;
        if self.shared.config.sync {
            device.sync_data().map_err(|e| io("syncing", e))?;
            self.shared.stats.syncs.fetch_add(1, Relaxed);
        }
        self.shared.stats.groups.fetch_add(1, Relaxed);
        self.shared
            .stats
            .records
            .fetch_add(encoded.len() as u64, Relaxed);
        self.durable_through = encoded
            .last()
            .map_or(self.durable_through, |e| e.event.position.0 + 1);
        self.publish(encoded)?;
        self.offset += len;
        self.segment
            .committed_len
            .store(self.offset, std::sync::atomic::Ordering::Release);
        let head = Position(self.next_position);
        self.shared.head.send_replace(head);
        Ok(())
    }

    /// Makes a synced group visible: index entries, restrictions, sparse index, head.
    fn publish(&mut self, encoded: &[Encoded]) -> Result<(), StorageError> {
        if self.seqs.len() > CACHE_LIMIT {
            self.seqs.clear();
        }
        if self.states.len() > CACHE_LIMIT {
            self.states.clear();
        }
        let mut entries = Vec::with_capacity(encoded.len() * 3);
        let mut sparse = Vec::new();
        for e in encoded {
            let address = log::address(self.segment.number, self.offset + e.offset_in_group);
            let first_in_segment = e.event.position == self.segment.base;
            let new = entries_for(
                &self.shared.index,
                &e.event,
                address,
                first_in_segment,
                &mut self.seqs,
            )?;
            let all = key_hash(KeyKind::All, "");
            sparse.extend(
                new.iter()
                    .filter(|n| n.key == all)
                    .map(|n| (n.position, n.address)),
            );
            entries.extend(new);
        }
        self.shared.index.insert(entries);
        let mut published = self.shared.published.write();
        for e in encoded
            .iter()
            .filter(|e| e.tombstone || e.event.stream.metadata_target().is_some())
        {
            apply_restriction(&mut published.restrictions, &e.event, e.tombstone);
        }
        published.sparse.extend(sparse);
        published.next_position = self.next_position;
        drop(published);
        for e in encoded {
            let state = StreamState {
                last_revision: Some(e.event.revision),
                last_event_id: Some(e.event.id),
                tombstoned: e.tombstone,
            };
            self.states.insert(e.event.stream.clone(), state);
        }
        Ok(())
    }

    /// Starts a new segment whose first record will be at `base`.
    fn roll(&mut self, base: u64) -> Result<(), StorageError> {
        let number = self.segment.number + 1;
        let vfs = self.shared.config.vfs.as_ref();
        let segment = Arc::new(Segment::create(
            vfs,
            &self.shared.log_dir,
            number,
            Position(base),
        )?);
        self.shared.log.push(Arc::clone(&segment));
        self.segment = segment;
        self.offset = SEGMENT_HEADER_LEN;
        Ok(())
    }

    fn maybe_flush(&mut self) {
        let index = &self.shared.index;
        if index.active_len() < self.shared.config.memtable_entries {
            return;
        }
        let address = log::address(self.segment.number, self.offset);
        if index.freeze(self.next_position, address) {
            let _ = self.flush_tx.send(());
        }
    }
}

fn request_bytes(request: &WriteRequest) -> usize {
    match request {
        WriteRequest::Append(writes) => writes
            .iter()
            .flat_map(|w| &w.events)
            .map(|e| e.payload_len() + record::FRAME_LEN + record::BODY_HEADER_LEN)
            .sum(),
        _ => 256,
    }
}

fn recorded(
    record: &PlannedRecord,
    position: Position,
    created: annals_core::Timestamp,
) -> RecordedEvent {
    RecordedEvent {
        stream: record.stream.clone(),
        revision: record.revision,
        position,
        id: record.event.id,
        event_type: record.event.event_type.clone(),
        content_type: record.event.content_type,
        data: record.event.data.clone(),
        metadata: record.event.metadata.clone(),
        created,
    }
}

fn encode(
    event: &RecordedEvent,
    tombstone: bool,
    last: bool,
    group_start: Position,
    buf: &mut Vec<u8>,
) {
    let mut flags = 0;
    if last {
        flags |= FLAG_LAST_IN_TXN;
    }
    if tombstone {
        flags |= FLAG_TOMBSTONE;
    }
    if event.content_type == ContentType::Json {
        flags |= FLAG_JSON;
    }
    record::encode(
        &RecordRef {
            stream: event.stream.as_str(),
            event_type: event.event_type.as_str(),
            revision: event.revision,
            position: event.position,
            group_start,
            created: event.created,
            id: event.id,
            flags,
            data: &event.data,
            metadata: &event.metadata,
        },
        buf,
    );
}

/// What the group has planned so far, layered over the committed state.
#[derive(Default)]
struct Pending {
    streams: HashMap<StreamName, PendingStream>,
    metadata: HashMap<StreamName, StreamMetadata>,
}

struct PendingStream {
    state: StreamState,
    /// (revision, id, position) of the records planned in this group.
    records: Vec<(u64, Uuid, Position)>,
}

impl Pending {
    fn apply(&mut self, event: &RecordedEvent, tombstone: bool) {
        let stream = self
            .streams
            .entry(event.stream.clone())
            .or_insert_with(|| PendingStream {
                state: StreamState::default(),
                records: Vec::new(),
            });
        stream.state = StreamState {
            last_revision: Some(event.revision),
            last_event_id: Some(event.id),
            tombstoned: tombstone,
        };
        stream
            .records
            .push((event.revision, event.id, event.position));
        if let Some(target) = event.stream.metadata_target()
            && let Ok(metadata) = StreamMetadata::from_bytes(&event.data)
        {
            self.metadata.insert(target, metadata);
        }
    }
}

struct GroupView<'a> {
    shared: &'a Shared,
    pending: &'a mut Pending,
    states: &'a HashMap<StreamName, StreamState>,
}

impl StreamView for GroupView<'_> {
    async fn stream_state(&mut self, stream: &StreamName) -> Result<StreamState, StorageError> {
        if let Some(pending) = self.pending.streams.get(stream) {
            return Ok(pending.state);
        }
        if let Some(state) = self.states.get(stream) {
            return Ok(*state);
        }
        Ok(self
            .shared
            .last_record(stream)?
            .map_or_else(StreamState::default, |r| StreamState {
                last_revision: Some(r.event.revision),
                last_event_id: Some(r.event.id),
                tombstoned: r.is_tombstone(),
            }))
    }

    async fn metadata(
        &mut self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, StorageError> {
        if let Some(metadata) = self.pending.metadata.get(stream) {
            return Ok(Some(metadata.clone()));
        }
        let published = self.shared.published.read();
        Ok(published
            .restrictions
            .get(stream)
            .and_then(|r| r.metadata.clone()))
    }

    async fn recorded(
        &mut self,
        stream: &StreamName,
        from: u64,
        count: usize,
    ) -> Result<Vec<(Uuid, Position)>, StorageError> {
        let key = key_hash(KeyKind::Stream, stream.as_str());
        let mut out = Vec::with_capacity(count);
        let mut next = from;
        // Committed records first (revisions below the group's), then the group's own.
        for entry in self
            .shared
            .index
            .range(key, from, Direction::Forward, count)?
        {
            if out.len() == count || entry.seq != next {
                continue;
            }
            let record = self.shared.record(&entry)?;
            if record.event.stream == *stream {
                out.push((record.event.id, record.event.position));
                next += 1;
            }
        }
        if let Some(pending) = self.pending.streams.get(stream) {
            for (revision, id, position) in &pending.records {
                if *revision == next && out.len() < count {
                    out.push((*id, *position));
                    next += 1;
                }
            }
        }
        Ok(out)
    }
}
