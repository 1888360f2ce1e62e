//! The single writer with pipelined group commit, run by leader/follower committers.
//!
//! One writer state ([`Writer`]) exists; [`COMMITTERS`] threads take turns holding it. The
//! holder is the **leader**: it takes one request from the bounded queue, then everything
//! else already waiting (up to `group_max_bytes`). It plans each request as it takes it,
//! against the committed state, the groups in flight and what this group has planned so
//! far, and encodes its records with gap-free positions, so a group waiting for appenders
//! that are about to send is built meanwhile. Then it writes the group with one `write_at`
//! and queues it for its answers, lets the next committer lead, and calls `sync_data` for
//! its own group on its own thread; when that returns, the queued groups whose own syncs
//! have returned are published to readers and subscribers and their requests answered,
//! strictly in write order (the [`Finisher`], which hands each group's answers to
//! [`Answerer`]).
//!
//! So the next group is built while earlier ones sync, consecutive syncs overlap, and a
//! group's sync starts as soon as its bytes are written: no hand-off to another thread sits
//! between write and sync (a thread wake-up costs ~15 µs on the 2-vCPU VMs this is measured
//! on). At most [`COMMITTERS`] groups are unsynced at once. A group is answered only after
//! its own sync returned and every group before it was answered; no answer relies on one
//! sync covering another group's writes (a write-back error reported to one concurrent
//! `fdatasync` need not reach the other). When nothing else is in flight or queued and the
//! group was quick to build, the leader syncs and finishes it without letting another
//! committer in: for a lone appender that wake-up would cost more than the overlap gains.
//! Every answer, including a rejection or an idempotent re-send that wrote nothing, goes
//! out after the groups before it were synced: nothing a caller hears depends on bytes that
//! are not durable. A failed write or sync poisons the engine: no later group is written,
//! and every request not yet answered fails.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use annals_core::write::{self, PlannedRecord, ResultsFrom, StreamState, StreamView};
use annals_core::{
    AppendError, ContentType, Direction, Position, RecordedEvent, StorageError, StreamMetadata,
    StreamName, Timestamp, WriteRequest,
};
use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::answer::Answerer;
use crate::engine::{IndexedRecord, KeyHashes, Shared, apply_restriction, entries_for};
use crate::index::{Entry, KeyKind, key_hash};
use crate::log::{self, Segment};
use crate::record::{
    self, FLAG_JSON, FLAG_LAST_IN_TXN, FLAG_TOMBSTONE, RecordRef, SEGMENT_HEADER_LEN,
};
use crate::zero_fill::ZeroFill;

/// The longest a group waits for appenders answered by the previous group (and never longer
/// than the last sync took: a straggler left for the next group waits about that long).
const MAX_LINGER: Duration = Duration::from_micros(200);

/// Zero-filled space is kept ahead of the log ([`Writer::zero_ahead`]) while recent groups
/// averaged at most this many bytes.
const ZERO_FILL_GROUP_MAX: u64 = 128 << 10;

/// How often the writer checks whether the groups in flight are synced, when it must wait.
const SYNCED_POLL: Duration = Duration::from_micros(50);

/// Committer threads: one leads (builds and writes the next group) while the other syncs
/// and answers the group it wrote, so at most this many groups are unsynced at once. Two
/// measured best on a 2-core VM (W1 64 writers, 10 alternating runs: ~201,000 events/s
/// against ~188,000 with three): a third lets a third sync overlap, which makes every sync
/// slower, and the leader hands over to it with a wake-up before its own sync.
pub(crate) const COMMITTERS: usize = 2;

/// A queued write and where its answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) write: WriteRequest,
    pub(crate) reply: Reply,
    /// When the appender queued it.
    pub(crate) queued: Instant,
}

/// Where a request's answer goes. A success is sent as its [`ResultsFrom`], from which the
/// appender builds its results: a list for a whole write, none for a one-stream append, and
/// never on the leader.
pub(crate) type Reply = oneshot::Sender<Result<ResultsFrom, AppendError>>;
/// A reply and what it will say.
pub(crate) type Answer = (Reply, Result<ResultsFrom, AppendError>);

/// Starts the committers, the index flusher and the zero-filler; returns their threads.
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
                match flusher_shared.index.flush_frozen() {
                    Ok(()) => {
                        flusher_shared.stats.index_flushes.fetch_add(1, Release);
                    }
                    Err(e) => flusher_shared.poison(&e),
                }
            }
        })
        .map_err(|e| StorageError::io("starting the index flusher", e))?;
    let file_len = segment
        .device
        .len()
        .map_err(|e| StorageError::io(format!("sizing {}", segment.path.display()), e))?;
    let (zero_fill, filler) = ZeroFill::start(Arc::clone(&segment), file_len)?;
    let next_position = shared.published.read().next_position;
    let finisher = Arc::new(Mutex::new(Finisher {
        shared: Arc::clone(&shared),
        durable_through: next_position,
        last_sync: Duration::ZERO,
        flush_tx,
        queue: VecDeque::new(),
        answerer: Answerer::start(),
    }));
    let sync = shared.config.sync;
    let writer = Arc::new(Mutex::new(Writer {
        shared,
        requests,
        segment,
        offset: tail.1,
        zero_fill,
        next_position,
        buf: Vec::new(),
        finisher: Arc::clone(&finisher),
        handed: 0,
        previous_requests: 0,
        previous_events: 0,
        previous_build: Duration::ZERO,
        linger: Duration::ZERO,
        recent_group_bytes: 0,
        seqs: HashMap::default(),
        keys: KeyHashes::default(),
        states: HashMap::default(),
        in_flight: VecDeque::new(),
    }));
    let mut threads = Vec::with_capacity(COMMITTERS + 2);
    for n in 0..COMMITTERS {
        let committer = Committer {
            writer: Arc::clone(&writer),
            finisher: Arc::clone(&finisher),
            sync,
        };
        threads.push(
            spawn(&format!("annals-commit-{n}"))
                .spawn(move || committer.run())
                .map_err(|e| StorageError::io("starting a committer", e))?,
        );
    }
    threads.push(flusher);
    threads.push(filler);
    Ok(threads)
}

/// One of the [`COMMITTERS`]: leads (builds and writes a group), then syncs and answers it.
struct Committer {
    writer: Arc<Mutex<Writer>>,
    finisher: Arc<Mutex<Finisher>>,
    /// `Config::sync`: off, groups are finished without syncing.
    sync: bool,
}

impl Committer {
    fn run(self) {
        let mut writer = self.writer.lock();
        loop {
            let Some(job) = writer.lead() else {
                return;
            };
            let Some(job) = job else {
                continue;
            };
            if writer.sync_while_leading() {
                sync_and_answer(&self.finisher, job, self.sync);
                continue;
            }
            drop(writer);
            sync_and_answer(&self.finisher, job, self.sync);
            writer = self.writer.lock();
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    segment: Arc<Segment>,
    /// Where the next group goes in `segment`.
    offset: u64,
    /// Writes groups into `segment` and keeps zero-filled space ahead of them.
    zero_fill: ZeroFill,
    next_position: u64,
    /// The encoded records of the group being built, kept between groups.
    buf: Vec<u8>,
    finisher: Arc<Mutex<Finisher>>,
    /// Groups handed to the finisher so far (the last one's number in write order).
    handed: u64,
    /// How many requests and records the previous group held, and how long planning,
    /// encoding and writing it took (without the waits for its requests).
    previous_requests: usize,
    previous_events: usize,
    previous_build: Duration,
    /// How long a group waits for the last group's appenders: [`MAX_LINGER`], or the last
    /// sync's length if shorter (zero when groups are not synced).
    linger: Duration,
    /// Moving average of the groups' sizes, in bytes (see [`Writer::zero_ahead`]).
    recent_group_bytes: u64,
    /// Next sequence number per category / event-type key (only the writer assigns them),
    /// including the groups in flight.
    seqs: HashMap<u64, u64>,
    keys: KeyHashes,
    /// Last state of recently written streams (only the writer changes them), including the
    /// groups in flight and the group being built (a failed group poisons the engine, so
    /// states it planned are never read).
    states: HashMap<StreamName, StreamState>,
    /// What the groups handed to the finisher planned, oldest first, with the position after
    /// each; they may not be published yet.
    in_flight: VecDeque<(u64, Pending)>,
}

/// The group buffer is kept for the next group up to this capacity (a larger one, left by
/// a group of big events, is freed).
const GROUP_BUFFER_KEPT: usize = 1 << 20;

/// Entries the writer's caches hold before they start over.
const CACHE_LIMIT: usize = 1 << 16;

/// A group being built: its requests, planned and encoded as they were taken from the queue.
struct Building {
    /// When the group's first request was taken.
    started: Instant,
    /// The position of its first record.
    group_start: u64,
    /// The published head when the group began: every position below it is synced.
    synced_before: Position,
    created: Timestamp,
    /// What the group has planned so far, layered over the committed state.
    pending: Pending,
    /// The encoded records.
    buf: Vec<u8>,
    /// The requests' records, as planned.
    encoded: Vec<Encoded>,
    /// Their index entries, each address an offset in `buf` until the group is written.
    entries: Vec<Entry>,
    /// Why the group cannot be written, if indexing a record failed.
    failed: Option<StorageError>,
    answers: Vec<Answer>,
    /// The requests' encoded size, roughly.
    bytes: usize,
    /// Summed over the requests: time in the queue, and from `started` until planned.
    queued: Duration,
    planned_after_start: Duration,
    /// Time spent waiting for requests once the first was taken.
    waited: Duration,
}

/// A request's records in the group being built, with the position of the first. They
/// stay in the list the planner made, which goes with the group to be freed after its sync,
/// not on the leader.
struct Encoded {
    records: Vec<PlannedRecord>,
    first: Position,
}

/// What a record is the last of, among a request's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// The request (its transaction).
    Request,
    /// Its stream's run of records in the request.
    Stream,
    Nothing,
}

impl Encoded {
    /// The records with their positions.
    fn positioned(&self) -> impl Iterator<Item = (&PlannedRecord, Position)> {
        self.records.iter().zip((self.first.0..).map(Position))
    }
}

/// Metadata and tombstone records change what readers may see.
fn restricts(record: &PlannedRecord) -> bool {
    record.tombstone || record.stream.metadata_target().is_some()
}

/// `$all` sparse index entries: (position, address).
type Sparse = Vec<(u64, u64)>;

/// A group on its way from the writer to its answers.
struct Written {
    /// What the group wrote; `None` when every request was answered without writing.
    log: Option<WrittenLog>,
    answers: Vec<Answer>,
    /// Where its requests' time went so far, for [`Counters`](crate::engine::Counters).
    timing: GroupTiming,
}

/// A group's time in the queue and in the leader's hands, summed over its requests.
struct GroupTiming {
    queued: Duration,
    building: Duration,
    written_at: Instant,
}

/// The log side of a written group: what to sync and what to publish after.
struct WrittenLog {
    segment: Arc<Segment>,
    /// The segment's length after the group.
    end_offset: u64,
    /// The position after the group's last record.
    end_position: u64,
    records: u64,
    /// The group's bytes in the log.
    bytes: u64,
    entries: Vec<Entry>,
    sparse: Sparse,
    /// Metadata and tombstone records, which change the restrictions.
    restricting: Vec<(RecordedEvent, bool)>,
}

impl Writer {
    /// Waits for a request, then takes everything else already queued (up to
    /// `group_max_bytes`), planning and encoding each as it comes, and writes the group;
    /// returns its sync, or `None` once the engine is closing. The appenders the last group
    /// answered are usually about to send again, so a group smaller than the last one waits
    /// a moment for them ([`MAX_LINGER`]) and builds what has come meanwhile: a straggler
    /// left out would wait a whole sync for the next group.
    fn lead(&mut self) -> Option<Option<SyncJob>> {
        let first = self.requests.blocking_recv()?;
        let mut group = match self.begin() {
            Ok(group) => group,
            Err(e) => {
                fail([first.reply], &e);
                return Some(None);
            }
        };
        let limit = self.shared.config.group_max_bytes;
        let wanted = self.previous_requests;
        let deadline = Instant::now() + self.linger;
        self.add(&mut group, first);
        while group.bytes < limit {
            match self.requests.try_recv() {
                Ok(request) => self.add(&mut group, request),
                Err(_) if group.answers.len() >= wanted => break,
                Err(_) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    std::thread::yield_now();
                    group.waited += now.elapsed();
                }
            }
        }
        self.previous_requests = group.answers.len();
        Some(self.finish(group))
    }

    /// Starts a group; fails if the engine is poisoned (also while it waits for the groups
    /// in flight before starting its caches over).
    fn begin(&mut self) -> Result<Building, StorageError> {
        if let Some(poisoned) = self.shared.poisoned() {
            return Err(poisoned);
        }
        self.trim_caches()?;
        // Published means synced: recovery may treat damage at or after this as a torn tail.
        let synced_before = Position(self.shared.published.read().next_position);
        // Published groups are in the index, so their planning layers can go.
        while self
            .in_flight
            .front()
            .is_some_and(|(end, _)| *end <= synced_before.0)
        {
            self.in_flight.pop_front();
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        Ok(Building {
            started: Instant::now(),
            group_start: self.next_position,
            synced_before,
            created: self.shared.config.clock.now(),
            pending: Pending {
                records: Vec::with_capacity(self.previous_events),
                metadata: HashMap::default(),
            },
            buf,
            encoded: Vec::with_capacity(self.previous_requests + 1),
            entries: Vec::with_capacity(self.previous_events * 3),
            failed: None,
            answers: Vec::with_capacity(self.previous_requests + 1),
            bytes: 0,
            queued: Duration::ZERO,
            planned_after_start: Duration::ZERO,
            waited: Duration::ZERO,
        })
    }

    /// Plans a request against the committed state, the groups in flight and what the group
    /// has planned so far, and encodes its records with gap-free positions.
    fn add(&mut self, group: &mut Building, request: Request) {
        let planning = Instant::now();
        group.queued += planning.saturating_duration_since(request.queued);
        group.planned_after_start += planning.saturating_duration_since(group.started);
        group.bytes += request_bytes(&request.write);
        let planned = {
            let mut view = GroupView {
                shared: &self.shared,
                pending: &mut group.pending,
                in_flight: &self.in_flight,
                states: &self.states,
            };
            write::poll_ready(write::plan(&mut view, request.write))
                .unwrap_or_else(|| Err(StorageError::backend("planning would have waited").into()))
        };
        let result = planned.map(|mut plan| {
            let records = std::mem::take(&mut plan.records);
            let first = self.next_position;
            self.next_position += records.len() as u64;
            group.pending.apply(&records, first);
            for (i, record) in records.iter().enumerate() {
                let ends = match records.get(i + 1) {
                    None => Ends::Request,
                    Some(next) if next.stream != record.stream => Ends::Stream,
                    Some(_) => Ends::Nothing,
                };
                self.push_record(group, record, Position(first + i as u64), ends);
            }
            if !records.is_empty() {
                let first = Position(first);
                group.encoded.push(Encoded { records, first });
            }
            plan.into_results_from(Position(first))
        });
        group.answers.push((request.reply, result));
    }

    /// Encodes a planned record into the group, with its index entries and, where it is the
    /// last of its stream in the request, the stream's new state.
    fn push_record(
        &mut self,
        group: &mut Building,
        record: &PlannedRecord,
        position: Position,
        ends: Ends,
    ) {
        let offset_in_group = group.buf.len() as u64;
        let mark = RecordMark {
            position,
            synced_before: group.synced_before,
            created: group.created,
        };
        encode(record, mark, ends == Ends::Request, &mut group.buf);
        self.index(group, record, position, offset_in_group);
        // A batch's records share their stream: only its last state is kept.
        if ends != Ends::Nothing || restricts(record) {
            let state = StreamState {
                last_revision: Some(record.revision),
                last_event_id: Some(record.event.id),
                tombstoned: record.tombstone,
            };
            self.states.insert(record.stream.clone(), state);
        }
    }

    /// Adds a record's index entries to the group, addressed by its offset in the group
    /// (the group's place in the log is known once it is written). Building them as the
    /// group is built keeps them off the path from its last request to its sync.
    fn index(
        &mut self,
        group: &mut Building,
        record: &PlannedRecord,
        position: Position,
        offset: u64,
    ) {
        if group.failed.is_some() {
            return;
        }
        let indexed = IndexedRecord {
            stream: &record.stream,
            event_type: &record.event.event_type,
            revision: record.revision,
            position: position.0,
            address: offset,
            first_in_segment: position == self.segment.base,
        };
        if let Err(e) = entries_for(
            &self.shared.index,
            &indexed,
            &mut self.keys,
            &mut self.seqs,
            &mut group.entries,
        ) {
            group.failed = Some(e);
        }
    }

    /// Writes a built group and queues it for its answers; returns its sync, for the caller
    /// to run once it has let the next leader in.
    fn finish(&mut self, group: Building) -> Option<SyncJob> {
        let Building {
            started,
            group_start,
            created,
            buf,
            encoded,
            entries,
            failed,
            answers,
            pending,
            queued,
            planned_after_start,
            waited,
            ..
        } = group;
        let records: usize = encoded.iter().map(|e| e.records.len()).sum();
        let written = match failed {
            Some(e) => Err(e),
            None if buf.is_empty() => Ok(None),
            None => self
                .write_group(&buf, &encoded, records, entries, created)
                .map(Some),
        };
        if buf.capacity() <= GROUP_BUFFER_KEPT {
            self.buf = buf;
        }
        let log = match written {
            Ok(log) => log,
            Err(e) => {
                if !matches!(e, StorageError::Poisoned { .. }) {
                    self.shared.poison(&e);
                }
                self.next_position = group_start;
                fail(answers.into_iter().map(|(reply, _)| reply), &e);
                return None;
            }
        };
        if log.is_some() {
            self.in_flight.push_back((self.next_position, pending));
        }
        let written_at = Instant::now();
        self.previous_build = written_at
            .saturating_duration_since(started)
            .saturating_sub(waited);
        self.previous_events = records;
        let requests = answers.len() as u32;
        // Each request was being built from when it was planned until the group was written.
        let building = (written_at.saturating_duration_since(started) * requests)
            .saturating_sub(planned_after_start);
        let timing = GroupTiming {
            queued,
            building,
            written_at,
        };
        let group = Written {
            log,
            answers,
            timing,
        };
        self.hand_over(group, encoded)
    }

    /// Whether the group just written is best synced by its leader without letting the next
    /// one in: nothing else is in flight or queued, and building groups is quick next to a
    /// sync (else building the next one during this sync pays). It saves waking a committer,
    /// most of a lone appender's overhead.
    fn sync_while_leading(&self) -> bool {
        let finisher = self.finisher.lock();
        finisher.queue.len() == 1
            && self.requests.is_empty()
            && self.previous_build < finisher.last_sync / 2
    }

    /// Queues a written group for its answers; returns its sync, if it wrote anything, which
    /// also takes the group's records to free them off the leader.
    fn hand_over(&mut self, group: Written, records: Vec<Encoded>) -> Option<SyncJob> {
        self.handed += 1;
        let job = group.log.as_ref().map(|log| SyncJob {
            seq: self.handed,
            segment: Arc::clone(&log.segment),
            end_offset: log.end_offset,
            records,
        });
        let mut finisher = self.finisher.lock();
        self.linger = finisher.last_sync.min(MAX_LINGER);
        if job.is_some() && !finisher.queue.is_empty() {
            self.shared.stats.overlapped.fetch_add(1, Relaxed);
        }
        finisher.queue.push_back(Queued {
            seq: self.handed,
            group,
            synced_at: None,
        });
        if job.is_none() {
            // Nothing to sync: answered as soon as every group before it is.
            finisher.answer_synced();
        }
        job
    }

    /// Writes a group to the log (without syncing it) and prepares what publishing it takes:
    /// its index entries get their addresses.
    fn write_group(
        &mut self,
        buf: &[u8],
        encoded: &[Encoded],
        records: usize,
        mut entries: Vec<Entry>,
        created: Timestamp,
    ) -> Result<WrittenLog, StorageError> {
        let len = buf.len() as u64;
        let all = key_hash(KeyKind::All, "");
        if self.offset > SEGMENT_HEADER_LEN && self.offset + len > self.shared.config.segment_bytes
        {
            // A new segment is not the last one any more once a later group lands in it, so
            // everything in the current one must be synced first (recovery cuts torn tails
            // only in the last segment).
            let group_start = encoded.first().map_or(self.next_position, |e| e.first.0);
            self.wait_until_published(group_start)?;
            self.roll(group_start)?;
            // The group's first record is its new segment's first: always in the sparse index.
            if !entries
                .iter()
                .any(|e| e.key == all && e.position == group_start)
            {
                let first = Entry {
                    key: all,
                    seq: group_start,
                    position: group_start,
                    address: 0,
                };
                entries.insert(0, first);
            }
        }
        // After a failed sync of a group in flight, nothing more is written.
        if let Some(poisoned) = self.shared.poisoned() {
            return Err(poisoned);
        }
        self.zero_fill
            .write(&self.segment, buf, self.offset)
            .map_err(|e| {
                StorageError::io(
                    format!("writing {} at {}", self.segment.path.display(), self.offset),
                    e,
                )
            })?;
        self.zero_ahead(len);
        let mut sparse = Vec::new();
        for entry in &mut entries {
            entry.address = log::address(self.segment.number, self.offset + entry.address);
            if entry.key == all {
                sparse.push((entry.position, entry.address));
            }
        }
        self.offset += len;
        let restricting = encoded
            .iter()
            .flat_map(Encoded::positioned)
            .filter(|(record, _)| restricts(record))
            .map(|(record, position)| {
                (
                    recorded(record.clone(), position, created),
                    record.tombstone,
                )
            })
            .collect();
        Ok(WrittenLog {
            segment: Arc::clone(&self.segment),
            end_offset: self.offset,
            end_position: self.next_position,
            records: records as u64,
            bytes: len,
            entries,
            sparse,
            restricting,
        })
    }

    /// Starts the caches over when they grew too large. They cover the groups in flight,
    /// which the index may not have yet, so this first waits until they are published.
    fn trim_caches(&mut self) -> Result<(), StorageError> {
        if self.seqs.len() <= CACHE_LIMIT && self.states.len() <= CACHE_LIMIT {
            return Ok(());
        }
        self.wait_until_published(self.next_position)?;
        self.seqs.clear();
        self.states.clear();
        Ok(())
    }

    /// Waits until the committers have synced and published every position below `position`.
    fn wait_until_published(&self, position: u64) -> Result<(), StorageError> {
        loop {
            if let Some(poisoned) = self.shared.poisoned() {
                return Err(poisoned);
            }
            if self.shared.published.read().next_position >= position {
                return Ok(());
            }
            std::thread::sleep(SYNCED_POLL);
        }
    }

    /// Keeps zero-filled space ahead of the log's end while groups are small. Overwriting
    /// blocks the file already has needs no metadata in the group's fdatasync; an append that
    /// grows the file makes it write the file's metadata too (the new size and blocks; a
    /// journal commit where the file system has one; on this project's machine, ext4
    /// without a journal, ~110 µs against ~230 µs per sync). Large groups amortise that cost
    /// and would pay for the second write of their bytes, so they append; so do groups that
    /// are never synced. Groups count as small by their recent average: where most groups
    /// are large, the odd small one would otherwise zero-fill space the large ones then
    /// write again. The zero-filler thread writes the zeros, beyond the group just written.
    fn zero_ahead(&mut self, group_len: u64) {
        self.recent_group_bytes = match self.recent_group_bytes {
            0 => group_len,
            recent => (recent * 3 + group_len) / 4,
        };
        let small = self.recent_group_bytes <= ZERO_FILL_GROUP_MAX;
        if self.shared.config.sync && small {
            let end = self.offset + group_len;
            self.zero_fill
                .keep_ahead(end, self.shared.config.segment_bytes);
        }
    }

    /// Starts a new segment whose first record will be at `base`. The current one is cut to
    /// its last record first, so that a sealed segment ends where its log does.
    fn roll(&mut self, base: u64) -> Result<(), StorageError> {
        let (current, offset, shared) = (&self.segment, self.offset, &self.shared);
        let seal_and_create = |file_len: u64| {
            if file_len > offset {
                let device = &current.device;
                device
                    .set_len(offset)
                    .and_then(|()| device.sync_data())
                    .map_err(|e| {
                        StorageError::io(
                            format!("sealing {} at {offset}", current.path.display()),
                            e,
                        )
                    })?;
            }
            let segment = Arc::new(Segment::create(
                shared.config.vfs.as_ref(),
                &shared.log_dir,
                current.number + 1,
                Position(base),
            )?);
            shared.log.push(Arc::clone(&segment));
            Ok(segment)
        };
        self.segment = self
            .zero_fill
            .replace_segment(SEGMENT_HEADER_LEN, seal_and_create)?;
        self.offset = SEGMENT_HEADER_LEN;
        Ok(())
    }
}

/// A written group's sync.
struct SyncJob {
    /// The group's number in write order (from 1).
    seq: u64,
    segment: Arc<Segment>,
    /// The segment's length after the group, for error messages.
    end_offset: u64,
    /// The group's records, freed once it is answered: by then another committer usually
    /// leads, so building the next group does not wait for that work.
    records: Vec<Encoded>,
}

/// Syncs a group's writes, then answers every group that is ready, in order.
fn sync_and_answer(finisher: &Mutex<Finisher>, job: SyncJob, sync: bool) {
    let started = Instant::now();
    let result = if sync {
        job.segment.device.sync_data().map_err(|e| {
            StorageError::io(
                format!(
                    "syncing {} up to {}",
                    job.segment.path.display(),
                    job.end_offset
                ),
                e,
            )
        })
    } else {
        Ok(())
    };
    let mut finisher = finisher.lock();
    match result {
        Ok(()) => {
            if sync {
                finisher.last_sync = started.elapsed();
                finisher.shared.stats.syncs.fetch_add(1, Relaxed);
            }
            finisher.synced(job.seq);
            finisher.answer_synced();
        }
        Err(e) => {
            finisher.shared.poison(&e);
            finisher.fail_all(&e);
        }
    }
    drop(finisher);
    drop(job.records);
}

/// A group waiting for its answers.
struct Queued {
    seq: u64,
    group: Written,
    /// When its own sync returned.
    synced_at: Option<Instant>,
}

/// Publishes synced groups and answers their requests, in write order. The committers share
/// it.
struct Finisher {
    shared: Arc<Shared>,
    /// Every position below this is on stable storage (or would be, with `sync` off).
    durable_through: u64,
    /// How long the last sync took.
    last_sync: Duration,
    flush_tx: std_mpsc::Sender<()>,
    /// Groups handed over and not yet answered, in write order.
    queue: VecDeque<Queued>,
    answerer: Answerer,
}

impl Finisher {
    fn synced(&mut self, seq: u64) {
        if let Some(queued) = self.queue.iter_mut().find(|q| q.seq == seq) {
            queued.synced_at = Some(Instant::now());
        }
    }

    /// Answers the groups at the front of the queue whose own syncs have returned (or that
    /// wrote nothing).
    fn answer_synced(&mut self) {
        while let Some(queued) = self
            .queue
            .pop_front_if(|q| q.synced_at.is_some() || q.group.log.is_none())
        {
            self.finish(queued.group, queued.synced_at);
        }
    }

    /// Fails every group not yet answered (their bytes may not be durable).
    fn fail_all(&mut self, e: &StorageError) {
        for queued in self.queue.drain(..) {
            fail(queued.group.answers.into_iter().map(|(reply, _)| reply), e);
        }
    }

    /// Publishes a synced group and answers its requests.
    fn finish(&mut self, group: Written, synced_at: Option<Instant>) {
        let Written {
            log,
            answers,
            timing,
        } = group;
        if let Some(poisoned) = self.shared.poisoned() {
            fail(answers.into_iter().map(|(reply, _)| reply), &poisoned);
            return;
        }
        if let Some(log) = log {
            let end = (
                log.end_position,
                log::address(log.segment.number, log.end_offset),
            );
            self.shared.stats.groups.fetch_add(1, Relaxed);
            self.shared.stats.records.fetch_add(log.records, Relaxed);
            self.shared.stats.log_bytes.fetch_add(log.bytes, Relaxed);
            self.durable_through = log.end_position;
            self.publish(log);
            self.maybe_flush(end);
        }
        // Every answer below is for a group whose bytes are synced, or an answer that wrote
        // nothing and came after every group before it was synced.
        let requests = answers.len() as u32;
        // Nothing is acknowledged before the sync that covers it.
        debug_assert!(
            answers
                .iter()
                .filter_map(|(_, result)| result.as_ref().ok())
                .flat_map(ResultsFrom::results)
                .filter_map(|result| result.last_position())
                .all(|p| p.0 < self.durable_through),
            "acknowledging an append that is not yet durable"
        );
        // Counted before the hand-off: the appenders' task may take this CPU at once.
        self.count(&timing, requests, synced_at);
        self.answerer.answer(answers);
    }

    /// Counts a group's answered requests and where their time went.
    fn count(&self, timing: &GroupTiming, requests: u32, synced_at: Option<Instant>) {
        self.shared
            .stats
            .requests
            .fetch_add(u64::from(requests), Relaxed);
        let synced_at = synced_at.unwrap_or(timing.written_at);
        let syncing = synced_at.saturating_duration_since(timing.written_at) * requests;
        let answering = synced_at.elapsed() * requests;
        let stats = &self.shared.stats;
        let add = |counter: &std::sync::atomic::AtomicU64, time: Duration| {
            counter.fetch_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        };
        add(&stats.queued_ns, timing.queued);
        add(&stats.building_ns, timing.building);
        add(&stats.syncing_ns, syncing);
        add(&stats.answering_ns, answering);
    }

    /// Makes a synced group visible: index entries, restrictions, sparse index, head.
    fn publish(&mut self, log: WrittenLog) {
        self.shared.index.insert(log.entries);
        let mut published = self.shared.published.write();
        for (event, tombstone) in &log.restricting {
            apply_restriction(&mut published.restrictions, event, *tombstone);
        }
        published.sparse.extend(log.sparse);
        published.next_position = log.end_position;
        drop(published);
        log.segment.committed_len.store(log.end_offset, Release);
        self.shared.head.send_replace(Position(log.end_position));
    }

    /// Freezes the memtable once it is full; `end` is where the published log ends.
    fn maybe_flush(&mut self, (position, address): (u64, u64)) {
        let index = &self.shared.index;
        if index.active_len() < self.shared.config.memtable_entries {
            return;
        }
        if index.freeze(position, address) {
            self.shared.stats.index_freezes.fetch_add(1, Relaxed);
            let _ = self.flush_tx.send(());
        }
    }
}

/// Answers every request with the same storage error.
fn fail(replies: impl IntoIterator<Item = Reply>, e: &StorageError) {
    for reply in replies {
        let _ = reply.send(Err(e.clone().into()));
    }
}

/// A request's encoded size, roughly.
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

/// The event a planned record becomes once written.
fn recorded(record: PlannedRecord, position: Position, created: Timestamp) -> RecordedEvent {
    RecordedEvent {
        stream: record.stream,
        revision: record.revision,
        position,
        id: record.event.id,
        event_type: record.event.event_type,
        content_type: record.event.content_type,
        data: record.event.data,
        metadata: record.event.metadata,
        created,
    }
}

/// What the writer stamps on a planned record.
struct RecordMark {
    position: Position,
    /// The published head: every position below it is synced.
    synced_before: Position,
    created: Timestamp,
}

/// Appends a planned record to `buf`; `last` ends its transaction.
fn encode(record: &PlannedRecord, mark: RecordMark, last: bool, buf: &mut Vec<u8>) {
    let RecordMark {
        position,
        synced_before,
        created,
    } = mark;
    let event = &record.event;
    let mut flags = 0;
    if last {
        flags |= FLAG_LAST_IN_TXN;
    }
    if record.tombstone {
        flags |= FLAG_TOMBSTONE;
    }
    if event.content_type == ContentType::Json {
        flags |= FLAG_JSON;
    }
    record::encode(
        &RecordRef {
            stream: record.stream.as_str(),
            event_type: event.event_type.as_str(),
            revision: record.revision,
            position,
            synced_before,
            created,
            id: event.id,
            flags,
            data: &event.data,
            metadata: &event.metadata,
        },
        buf,
    );
}

/// What a group planned that the index does not show until it is published. (Streams'
/// new states go straight to [`Writer::states`].)
#[derive(Default)]
struct Pending {
    /// (stream, revision, id, position) of every record planned, in position order: one
    /// list, not one per stream, as only a re-send check reads them back.
    records: Vec<(StreamName, u64, Uuid, Position)>,
    metadata: HashMap<StreamName, StreamMetadata>,
}

impl Pending {
    /// Adds a request's records, the first at position `first`.
    fn apply(&mut self, records: &[PlannedRecord], first: u64) {
        for (record, position) in records.iter().zip((first..).map(Position)) {
            let stream = &record.stream;
            self.records
                .push((stream.clone(), record.revision, record.event.id, position));
            if let Some(target) = stream.metadata_target()
                && let Ok(metadata) = StreamMetadata::from_bytes(&record.event.data)
            {
                self.metadata.insert(target, metadata);
            }
        }
    }
}

struct GroupView<'a> {
    shared: &'a Shared,
    pending: &'a mut Pending,
    /// The groups being synced, oldest first: planned and written, perhaps not yet in the
    /// index.
    in_flight: &'a VecDeque<(u64, Pending)>,
    /// Includes the groups in flight and this one.
    states: &'a HashMap<StreamName, StreamState>,
}

impl StreamView for GroupView<'_> {
    async fn stream_state(&mut self, stream: &StreamName) -> Result<StreamState, StorageError> {
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
        // The newest plan wins: this group's, then the groups in flight from the last.
        let in_flight = self.in_flight.iter().rev().map(|(_, p)| p);
        let mut planned = std::iter::once(&*self.pending).chain(in_flight);
        if let Some(metadata) = planned.find_map(|p| p.metadata.get(stream)) {
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
        // Committed records first, then those of the groups in flight, then the group's own
        // (each layer only adds the revisions that follow).
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
        let in_flight = self.in_flight.iter().map(|(_, p)| p);
        for planned in in_flight.chain(std::iter::once(&*self.pending)) {
            for (_, revision, id, position) in planned.records.iter().filter(|r| r.0 == *stream) {
                if *revision == next && out.len() < count {
                    out.push((*id, *position));
                    next += 1;
                }
            }
        }
        Ok(out)
    }
}
