//! The engine: configuration, opening (with recovery), reads, and the core traits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use annals_core::readpath::{self, IndexEntry, IndexKey, LogAccess};
use annals_core::store;
use annals_core::visibility::Restriction;
use annals_core::write::{self, Limits, ResultsFrom};
use annals_core::{
    AllSlice, AppendError, AppendResult, Clock, Direction, EventAppender, EventReader, EventType,
    ExpectedRevision, NewEvent, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, ResolvedEvent, StorageError, StreamKind, StreamMetadata, StreamName,
    SystemClock, WriteRequest,
};
use async_trait::async_trait;
use foldhash::HashMap;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

use crate::device::{StdVfs, Vfs};
use crate::index::{Entry, Index, KeyKind, key_hash};
use crate::log::{self, Log};
use crate::record::Record;
use crate::{recovery, writer};

/// Every this many positions, the sparse `$all` index records an address.
pub const SPARSE_EVERY: u64 = 256;

/// Engine settings. `Config::default()` is durable and suits production.
#[derive(Debug, Clone)]
pub struct Config {
    /// fdatasync every group commit before acknowledging it (the default). Turning it off
    /// trades durability for speed: acknowledged appends can be lost on power failure.
    pub sync: bool,
    /// A new segment starts when the current one would grow past this (default 256 MiB).
    pub segment_bytes: u64,
    /// Index entries kept in memory before they are written as a run (default 1 Mi).
    pub memtable_entries: usize,
    /// Write requests that may wait for the writer (default 1024).
    pub queue_depth: usize,
    /// A group commit stops taking requests once it holds this many bytes (default 8 MiB).
    pub group_max_bytes: usize,
    /// Event and append size limits.
    pub limits: Limits,
    /// Commit timestamps and `max_age`.
    pub clock: Arc<dyn Clock>,
    /// File access.
    pub vfs: Arc<dyn Vfs>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sync: true,
            segment_bytes: 256 << 20,
            memtable_entries: 1 << 20,
            queue_depth: 1024,
            group_max_bytes: 8 << 20,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            vfs: Arc::new(StdVfs),
        }
    }
}

/// The tokio workers for a runtime whose tasks append to the engine: one fewer than the
/// CPUs, at least one, or `None` when `TOKIO_WORKER_THREADS` is set (tokio then reads it).
///
/// The engine's committer threads run beside the runtime. With a worker on every CPU, the
/// appenders one group's answers wake take every CPU just as a committer needs one, and
/// workers woken from outside the runtime compete for the same burst of tasks. One worker
/// on 2 cores, `annals bench --quick` back to back: W1 at 64 writers 232,287 against 185,162
/// events/s, at 16 writers 89,859 against 56,295; W2 at 64 writers 24,610 against 21,019.
#[must_use]
pub fn runtime_workers() -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(cpus.saturating_sub(1).max(1))
}

/// Why the engine could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory is in use by another process.
    #[error("data directory {dir} is in use: {source}")]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The lock failure.
        source: std::io::Error,
    },
    /// Storage failed or is corrupt.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What restricts a stream, as the engine tracks it (streams with metadata or tombstones).
#[derive(Debug, Clone, Default)]
pub(crate) struct Restricted {
    pub(crate) metadata: Option<StreamMetadata>,
    pub(crate) tombstone_revision: Option<u64>,
}

/// Holds the data directory's lock file open.
struct DirLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirLock")
    }
}

/// State that changes with each commit, read by readers.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// The next position to be written.
    pub(crate) next_position: u64,
    pub(crate) restrictions: HashMap<StreamName, Restricted>,
    /// (position, address), ascending: every `SPARSE_EVERY`th record and each segment's first.
    pub(crate) sparse: Vec<(u64, u64)>,
}

/// Everything the writer, the flusher and readers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) log_dir: PathBuf,
    pub(crate) log: Log,
    pub(crate) index: Index,
    pub(crate) published: RwLock<Published>,
    pub(crate) head: watch::Sender<Position>,
    pub(crate) stats: Counters,
    /// The first storage failure; set once.
    poison: OnceLock<Arc<str>>,
    _lock: DirLock,
}

/// Running totals kept by the writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) groups: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) log_bytes: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) overlapped: AtomicU64,
    pub(crate) index_freezes: AtomicU64,
    pub(crate) index_flushes: AtomicU64,
    pub(crate) queued_ns: AtomicU64,
    pub(crate) building_ns: AtomicU64,
    pub(crate) syncing_ns: AtomicU64,
    pub(crate) answering_ns: AtomicU64,
}

/// Totals since the engine was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Group commits written.
    pub groups: u64,
    /// `sync_data` calls on the log.
    pub syncs: u64,
    /// Records written.
    pub records: u64,
    /// Bytes of those records, as framed in the log (not counting the zeros written ahead
    /// of the log's end to keep its syncs free of file metadata).
    pub log_bytes: u64,
    /// Write requests answered.
    pub requests: u64,
    /// Groups written while an earlier group was still being synced or answered.
    pub overlapped: u64,
    /// Memtables frozen to be written as index runs.
    pub index_freezes: u64,
    /// Frozen memtables written as index runs (equal to `index_freezes` once the background
    /// flusher has caught up).
    pub index_flushes: u64,
    /// Where the answered requests spent their time inside the engine, in nanoseconds
    /// summed over requests (divide by `requests` for a mean).
    pub time: RequestTime,
}

/// Time write requests spent in the engine's stages, summed over requests, in nanoseconds.
/// Together they are the time from queueing a request to answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestTime {
    /// In the queue, until a leader took the request into its group.
    pub queued_ns: u64,
    /// From then until the group was written: planning and encoding it and the requests
    /// after it in the group (and waiting for them), and the group's write.
    pub building_ns: u64,
    /// From written until the group's own sync returned.
    pub syncing_ns: u64,
    /// From then until its answer was sent, or handed to the task that sends it: earlier
    /// groups' syncs, publishing.
    pub answering_ns: u64,
}

impl Shared {
    /// Stops all writes until the engine is reopened.
    pub(crate) fn poison(&self, cause: &StorageError) {
        tracing::error!(error = %cause, "storage failure: the engine stops accepting writes");
        self.poison.get_or_init(|| Arc::from(cause.to_string()));
    }

    /// The poisoning error, if the engine is poisoned.
    pub(crate) fn poisoned(&self) -> Option<StorageError> {
        // Checked by every append: a lock-free read.
        self.poison.get().map(|cause| StorageError::Poisoned {
            cause: Arc::clone(cause),
        })
    }

    /// The committed state of a stream's last record: (revision, id, tombstone).
    pub(crate) fn last_record(&self, stream: &StreamName) -> Result<Option<Record>, StorageError> {
        let key = key_hash(KeyKind::Stream, stream.as_str());
        // A few entries so that a hash collision does not hide the stream's own last record.
        for entry in self.index.range(key, u64::MAX, Direction::Backward, 4)? {
            let record = self.record(&entry)?;
            if record.event.stream == *stream {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// The record an index entry points to, checked against the entry.
    pub(crate) fn record(&self, entry: &Entry) -> Result<Record, StorageError> {
        let record = self.log.record(entry.address)?;
        if record.event.position.0 != entry.position {
            let (segment, offset) = crate::log::split(entry.address);
            return Err(StorageError::corruption(
                self.log_dir.join(crate::log::file_name(segment)),
                offset,
                format!(
                    "index entry says position {}, the record there is at {}",
                    entry.position, record.event.position
                ),
            ));
        }
        Ok(record)
    }
}

/// The next sequence number under a category or event-type key; `overlay` holds the numbers
/// handed out since the index last saw them.
fn next_seq(index: &Index, key: u64, overlay: &mut HashMap<u64, u64>) -> Result<u64, StorageError> {
    use std::collections::hash_map::Entry as Slot;
    let next = match overlay.entry(key) {
        Slot::Occupied(mut slot) => {
            let seq = slot.get_mut();
            *seq += 1;
            *seq - 1
        }
        Slot::Vacant(slot) => {
            let next = index.last(key)?.map_or(0, |e| e.seq + 1);
            slot.insert(next + 1);
            next
        }
    };
    Ok(next)
}

/// What indexing a record needs to know of it.
pub(crate) struct IndexedRecord<'a> {
    pub(crate) stream: &'a StreamName,
    pub(crate) event_type: &'a EventType,
    pub(crate) revision: u64,
    pub(crate) position: u64,
    pub(crate) address: u64,
    /// The first record of its segment (always in the sparse `$all` index).
    pub(crate) first_in_segment: bool,
}

/// The keys of the last stream, category and event type indexed. Consecutive records mostly
/// share them (a batch's stream, a workload's few categories and types), and comparing a
/// name is cheaper than hashing it.
#[derive(Debug, Default)]
pub(crate) struct KeyHashes {
    stream: Option<(StreamName, u64)>,
    category: (String, u64),
    event_type: Option<(EventType, u64)>,
}

impl KeyHashes {
    fn stream(&mut self, stream: &StreamName) -> u64 {
        remembered(&mut self.stream, stream, || {
            key_hash(KeyKind::Stream, stream.as_str())
        })
    }

    fn category(&mut self, category: &str) -> u64 {
        let (last, key) = &mut self.category;
        if *key == 0 || last != category {
            // A real hash of 0 is only recomputed each time.
            *key = key_hash(KeyKind::Category, category);
            last.clear();
            last.push_str(category);
        }
        *key
    }

    fn event_type(&mut self, event_type: &EventType) -> u64 {
        remembered(&mut self.event_type, event_type, || {
            key_hash(KeyKind::EventType, event_type.as_str())
        })
    }
}

/// `last`'s key if it was remembered for `name`, else `hash()`, remembered for next time.
fn remembered<N: PartialEq + Clone>(
    last: &mut Option<(N, u64)>,
    name: &N,
    hash: impl FnOnce() -> u64,
) -> u64 {
    match last {
        Some((known, key)) if known == name => *key,
        _ => {
            let key = hash();
            *last = Some((name.clone(), key));
            key
        }
    }
}

/// Appends the index entries of a record to `out`: its stream, category and event type, and
/// (every `SPARSE_EVERY` positions and at each segment start) the sparse `$all` index.
pub(crate) fn entries_for(
    index: &Index,
    record: &IndexedRecord<'_>,
    keys: &mut KeyHashes,
    overlay: &mut HashMap<u64, u64>,
    out: &mut Vec<Entry>,
) -> Result<(), StorageError> {
    let position = record.position;
    let entry = |key, seq| Entry {
        key,
        seq,
        position,
        address: record.address,
    };
    out.push(entry(keys.stream(record.stream), record.revision));
    if let Some(category) = record.stream.category() {
        let key = keys.category(category);
        out.push(entry(key, next_seq(index, key, overlay)?));
    }
    let key = keys.event_type(record.event_type);
    out.push(entry(key, next_seq(index, key, overlay)?));
    if record.first_in_segment || position.is_multiple_of(SPARSE_EVERY) {
        out.push(entry(key_hash(KeyKind::All, ""), position));
    }
    Ok(())
}

/// Records what a metadata or tombstone record changes in the restrictions.
pub(crate) fn apply_restriction(
    restrictions: &mut HashMap<StreamName, Restricted>,
    event: &RecordedEvent,
    tombstone: bool,
) {
    if tombstone {
        restrictions
            .entry(event.stream.clone())
            .or_default()
            .tombstone_revision = Some(event.revision);
    } else if let Some(target) = event.stream.metadata_target() {
        match StreamMetadata::from_bytes(&event.data) {
            Ok(metadata) => restrictions.entry(target).or_default().metadata = Some(metadata),
            Err(e) => {
                tracing::warn!(stream = %event.stream, error = %e, "unreadable stream metadata")
            }
        }
    }
}

/// The embedded event store. Cheap to share behind an `Arc`; close it with
/// [`Engine::close`] (dropping it also shuts down cleanly).
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    path: PathBuf,
    queue: Option<mpsc::Sender<writer::Request>>,
    threads: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Opens (or creates) the store in `dir`, recovering from any crash first.
    ///
    /// Opened on a multi-threaded tokio runtime, the engine answers appends from a task of
    /// that runtime (it wakes the appenders' tasks more cheaply from there), so a worker of
    /// that runtime must not block waiting for an append. After that runtime shuts down, or
    /// when opened elsewhere, the committer threads answer.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self, OpenError> {
        let dir = dir.as_ref().to_owned();
        let vfs = Arc::clone(&config.vfs);
        let io = |what: &str| {
            let what = what.to_owned();
            move |e| StorageError::io(what, e)
        };
        let log_dir = dir.join("log");
        let index_dir = dir.join("index");
        vfs.create_dir_all(&log_dir)
            .map_err(io("creating the log directory"))?;
        vfs.create_dir_all(&index_dir)
            .map_err(io("creating the index directory"))?;
        let lock = vfs
            .lock(&dir.join("LOCK"))
            .map_err(|source| OpenError::Locked {
                dir: dir.clone(),
                source,
            })?;
        let (index, problem) = Index::open(Arc::clone(&vfs), &index_dir);
        if let Some(problem) = problem {
            tracing::warn!(error = %problem, "index unreadable; rebuilding it from the log");
            index.reset()?;
        }
        let recovered = match recovery::recover(vfs.as_ref(), &log_dir, &index) {
            // Recovery reads the sparse index and the restrictions from the runs; a damaged
            // run costs a rebuild from the log, never the open.
            Err(StorageError::Corruption { file, offset, .. }) if file.starts_with(&index_dir) => {
                tracing::warn!(
                    file = %file.display(),
                    offset,
                    "index run damaged; rebuilding the index from the log"
                );
                index.reset()?;
                recovery::recover(vfs.as_ref(), &log_dir, &index)?
            }
            recovered => recovered?,
        };
        let shared = Arc::new(Shared {
            head: watch::Sender::new(Position(recovered.published.next_position)),
            published: RwLock::new(recovered.published),
            log: recovered.log,
            index,
            log_dir,
            config: config.clone(),
            stats: Counters::default(),
            poison: OnceLock::new(),
            _lock: DirLock(lock),
        });
        let (queue, requests) = mpsc::channel(config.queue_depth.max(1));
        let threads = writer::start(Arc::clone(&shared), requests, recovered.tail)?;
        Ok(Self {
            shared,
            path: dir,
            queue: Some(queue),
            threads,
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Totals since open: group commits, syncs, records and their bytes, requests, overlapped
    /// groups, index freezes and flushes.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        Stats {
            groups: c.groups.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            log_bytes: c.log_bytes.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            overlapped: c.overlapped.load(Ordering::Relaxed),
            index_freezes: c.index_freezes.load(Ordering::Relaxed),
            index_flushes: c.index_flushes.load(Ordering::Relaxed),
            time: RequestTime {
                queued_ns: c.queued_ns.load(Ordering::Relaxed),
                building_ns: c.building_ns.load(Ordering::Relaxed),
                syncing_ns: c.syncing_ns.load(Ordering::Relaxed),
                answering_ns: c.answering_ns.load(Ordering::Relaxed),
            },
        }
    }

    /// Bytes of memory the index holds (approximate).
    pub fn index_memory_bytes(&self) -> usize {
        self.shared.index.memory_bytes()
    }

    /// Stops the writer after the queued requests and waits for it. Every acknowledged
    /// append is already durable; this only releases the files.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.queue.take();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an engine thread panicked");
            }
        }
    }

    fn snapshot(&self) -> Snapshot<'_> {
        let next = self.shared.published.read().next_position;
        Snapshot {
            shared: &self.shared,
            head: next,
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Engine {
    /// Validates a request and queues it for the writer; resolves once it is durable.
    /// Both [`EventAppender`] methods below call it directly: the trait's own `append`
    /// would await `write` as a second boxed future, an allocation per append.
    async fn submit(&self, request: WriteRequest) -> Result<ResultsFrom, AppendError> {
        write::validate(&request, &self.shared.config.limits)?;
        if let Some(poisoned) = self.shared.poisoned() {
            return Err(poisoned.into());
        }
        let queue = self.queue.as_ref().ok_or(StorageError::Closed)?;
        let (reply, response) = oneshot::channel();
        queue
            .send(writer::Request {
                write: request,
                reply,
                queued: Instant::now(),
            })
            .await
            .map_err(|_| StorageError::Closed)?;
        response.await.map_err(|_| StorageError::Closed)?
    }
}

#[async_trait]
impl EventAppender for Engine {
    async fn write(&self, request: WriteRequest) -> Result<Vec<AppendResult>, AppendError> {
        Ok(self.submit(request).await?.into_results())
    }

    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        let request = WriteRequest::append_one(stream, expected, events);
        store::single(self.submit(request).await?.results())
    }
}

#[async_trait]
impl EventReader for Engine {
    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<ResolvedEvent>, ReadError> {
        let now = self.shared.config.clock.now();
        let mut access = self.snapshot();
        let read = readpath::read_stream(&mut access, stream, options, now);
        write::poll_ready(read).ok_or_else(|| StorageError::backend(READ_WOULD_WAIT))?
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllSlice, ReadError> {
        let now = self.shared.config.clock.now();
        let mut access = self.snapshot();
        let read = readpath::read_all(&mut access, &options, now);
        write::poll_ready(read).ok_or_else(|| StorageError::backend(READ_WOULD_WAIT))?
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.shared.head.subscribe()
    }
}

/// Engine reads are synchronous preads behind the shared async read path.
const READ_WOULD_WAIT: &str = "engine read would have waited";

/// A reader's view: everything below `head` is committed.
struct Snapshot<'a> {
    shared: &'a Shared,
    head: u64,
}

/// Most events a forward scan reserves room for up front.
const SCAN_RESERVE: usize = 1024;

impl Snapshot<'_> {
    /// Where a scan of positions `from..=last` starts (the sparse entry at or before `from`)
    /// and how many bytes it will read: up to the next sparse entry after `last` when that is
    /// in the same segment, otherwise a full chunk.
    fn span(&self, from: u64, last: u64) -> Option<(u64, usize)> {
        let published = self.shared.published.read();
        let sparse = &published.sparse;
        let start = sparse.partition_point(|(p, _)| *p <= from).checked_sub(1)?;
        let (_, address) = sparse[start];
        let end = sparse.partition_point(|(p, _)| *p <= last);
        let (segment, offset) = log::split(address);
        let expected = match sparse.get(end).map(|(_, a)| log::split(*a)) {
            Some((s, end_offset)) if s == segment => end_offset
                .checked_sub(offset)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(log::SCAN_CHUNK),
            _ => log::SCAN_CHUNK,
        };
        Some((address, expected))
    }

    /// The sparse entry at or before `position`.
    fn floor(&self, position: u64) -> Option<(u64, u64)> {
        let published = self.shared.published.read();
        let i = published.sparse.partition_point(|(p, _)| *p <= position);
        i.checked_sub(1).map(|i| published.sparse[i])
    }

    /// Appends records `from..=to` (positions) to `out`, ascending, at most `max`; returns
    /// how many.
    fn forward(
        &self,
        from: u64,
        to: u64,
        max: usize,
        out: &mut Vec<ResolvedEvent>,
    ) -> Result<usize, StorageError> {
        out.reserve(max.min(SCAN_RESERVE));
        let last = to.min(from.saturating_add(max as u64).saturating_sub(1));
        let Some((address, expected)) = self.span(from, last) else {
            return Ok(0);
        };
        let before = out.len();
        self.shared.log.scan(address, expected, |record, _| {
            let position = record.event.position.0;
            if position > to || position >= self.head {
                return false;
            }
            if position >= from {
                out.push(ResolvedEvent::from(record.event));
            }
            out.len() - before < max
        })?;
        Ok(out.len() - before)
    }
}

fn key_of(key: IndexKey<'_>) -> u64 {
    match key {
        IndexKey::Stream(name) => key_hash(KeyKind::Stream, name),
        IndexKey::Category(name) => key_hash(KeyKind::Category, name),
        IndexKey::EventType(name) => key_hash(KeyKind::EventType, name),
    }
}

impl LogAccess for Snapshot<'_> {
    fn head(&self) -> Position {
        Position(self.head)
    }

    fn scan(
        &mut self,
        from: Position,
        direction: Direction,
        max: usize,
        out: &mut Vec<ResolvedEvent>,
    ) -> Result<usize, StorageError> {
        match direction {
            Direction::Forward => self.forward(from.0, u64::MAX, max, out),
            Direction::Backward => {
                // Forward from the sparse entry before `upto`, then reversed: the log is
                // only read forwards.
                let before = out.len();
                let mut upto = from.0.min(self.head.saturating_sub(1));
                while out.len() - before < max && self.head > 0 {
                    let Some((start, _)) = self.floor(upto) else {
                        break;
                    };
                    let chunk = out.len();
                    self.forward(start, upto, usize::MAX, out)?;
                    out[chunk..].reverse();
                    out.truncate(before.saturating_add(max));
                    let Some(next) = start.checked_sub(1) else {
                        break;
                    };
                    upto = next;
                }
                Ok(out.len() - before)
            }
        }
    }

    fn last_seq(&mut self, key: IndexKey<'_>) -> Result<Option<u64>, StorageError> {
        // The writer adds index entries just before it moves the head, so the newest
        // entries may not be visible to this snapshot yet: skip them.
        let key = key_of(key);
        let mut upto = u64::MAX;
        loop {
            let entries = self
                .shared
                .index
                .range(key, upto, Direction::Backward, 64)?;
            if let Some(visible) = entries.iter().find(|e| e.position < self.head) {
                return Ok(Some(visible.seq));
            }
            match entries.last() {
                Some(oldest) if oldest.seq > 0 && entries.len() == 64 => upto = oldest.seq - 1,
                _ => return Ok(None),
            }
        }
    }

    fn entries(
        &mut self,
        key: IndexKey<'_>,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<IndexEntry>, StorageError> {
        let entries = self
            .shared
            .index
            .range(key_of(key), first, direction, max)?;
        Ok(entries
            .into_iter()
            .map(|e| IndexEntry {
                seq: e.seq,
                position: Position(e.position),
                address: e.address,
            })
            .collect())
    }

    fn record(&mut self, entry: &IndexEntry) -> Result<RecordedEvent, StorageError> {
        let entry = Entry {
            key: 0,
            seq: entry.seq,
            position: entry.position.0,
            address: entry.address,
        };
        self.shared.record(&entry).map(|r| r.event)
    }

    fn records(&mut self, entries: &[IndexEntry]) -> Result<Vec<RecordedEvent>, StorageError> {
        let addresses: Vec<(u64, u64)> =
            entries.iter().map(|e| (e.address, e.position.0)).collect();
        self.shared.log.records(&addresses)
    }

    fn restriction(&mut self, stream: &StreamName) -> Result<Restriction, StorageError> {
        if stream.kind() != StreamKind::Regular {
            return Ok(Restriction::default());
        }
        let restricted = self
            .shared
            .published
            .read()
            .restrictions
            .get(stream)
            .cloned();
        let Some(restricted) = restricted else {
            return Ok(Restriction::default());
        };
        let needs_last = restricted.metadata.is_some();
        let last_revision = if needs_last {
            self.shared.last_record(stream)?.map(|r| r.event.revision)
        } else {
            None
        };
        Ok(Restriction {
            metadata: restricted.metadata,
            last_revision,
            tombstone_revision: restricted.tombstone_revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_key_hashes_equal_fresh_ones_whatever_the_order_of_names() {
        let mut keys = KeyHashes::default();
        let names = [
            "order-1", "order-1", "order-2", "cart-9", "order-1", "x", "cart-9",
        ];
        for name in names {
            let stream = StreamName::new(name).expect("a valid name");
            assert_eq!(keys.stream(&stream), key_hash(KeyKind::Stream, name));
            let category = name.split_once('-').map_or(name, |(c, _)| c);
            assert_eq!(
                keys.category(category),
                key_hash(KeyKind::Category, category)
            );
            let event_type = EventType::new(format!("{category}Placed")).expect("a valid type");
            assert_eq!(
                keys.event_type(&event_type),
                key_hash(KeyKind::EventType, event_type.as_str())
            );
        }
    }
}
