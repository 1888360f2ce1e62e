//! The read path every backend shares: a backend provides [`LogAccess`] (synchronous: the
//! in-memory store and the embedded engine) or [`AsyncLogAccess`] (PostgreSQL), this module
//! turns stream and `$all` reads into index lookups, record fetches and visibility checks.
//! Positions need not be gap-free: scans continue after the last position they returned.

use std::collections::HashMap;
use std::future::{Future, ready};

use crate::error::{ReadError, StorageError};
use crate::event::{Link, RecordedEvent, ResolvedEvent, Timestamp};
use crate::name::{StreamKind, StreamName};
use crate::position::Position;
use crate::read::{AllFrom, AllSlice, Direction, ReadAllOptions, ReadStreamOptions};
use crate::visibility::{ReadContext, Restriction, stream_range};

/// What an index is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKey<'a> {
    /// A stream (regular or `$$`): sequence numbers are revisions.
    Stream(&'a str),
    /// A category (`$ce-<category>`): sequence numbers count the category's events.
    Category(&'a str),
    /// An event type (`$et-<type>`).
    EventType(&'a str),
}

impl IndexKey<'_> {
    /// True when the record belongs under this key. Backends that key indexes by hash may
    /// return entries of a colliding key; this check drops them.
    pub fn owns(&self, event: &RecordedEvent) -> bool {
        match *self {
            IndexKey::Stream(name) => event.stream.as_str() == name,
            IndexKey::Category(category) => event.stream.category() == Some(category),
            IndexKey::EventType(event_type) => event.event_type.as_str() == event_type,
        }
    }
}

/// One index entry: a sequence number under its key and the record's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The record's number under the key (its revision, for stream keys).
    pub seq: u64,
    /// Where the record is in the log.
    pub position: Position,
    /// Where the backend finds the record (backend-specific, e.g. a file offset).
    pub address: u64,
}

/// A backend's log and indexes, as the shared read path needs them.
pub trait LogAccess {
    /// The position after the last committed record.
    fn head(&self) -> Position;

    /// Appends to `out` up to `max` consecutive committed records starting at `from`
    /// (inclusive) in `direction`, and returns how many. Scanning into the caller's vector
    /// spares moving every (~170-byte) event once more on the way to the reader.
    fn scan(
        &mut self,
        from: Position,
        direction: Direction,
        max: usize,
        out: &mut Vec<ResolvedEvent>,
    ) -> Result<usize, StorageError>;

    /// The highest sequence number under a key, `None` if the key has no entries.
    fn last_seq(&mut self, key: IndexKey<'_>) -> Result<Option<u64>, StorageError>;

    /// Up to `max` entries under a key starting at `first` (inclusive) in `direction`.
    fn entries(
        &mut self,
        key: IndexKey<'_>,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<IndexEntry>, StorageError>;

    /// The record an index entry points to.
    fn record(&mut self, entry: &IndexEntry) -> Result<RecordedEvent, StorageError>;

    /// The records several index entries point to, in the same order. Backends override it
    /// to coalesce reads of neighbouring records.
    fn records(&mut self, entries: &[IndexEntry]) -> Result<Vec<RecordedEvent>, StorageError> {
        entries.iter().map(|e| self.record(e)).collect()
    }

    /// What restricts a regular stream's visibility.
    fn restriction(&mut self, stream: &StreamName) -> Result<Restriction, StorageError>;
}

/// [`LogAccess`] for backends that wait on I/O (a database). Every [`LogAccess`] is one.
pub trait AsyncLogAccess: Send {
    /// See [`LogAccess::head`].
    fn head(&self) -> Position;

    /// See [`LogAccess::scan`].
    fn scan(
        &mut self,
        from: Position,
        direction: Direction,
        max: usize,
        out: &mut Vec<ResolvedEvent>,
    ) -> impl Future<Output = Result<usize, StorageError>> + Send;

    /// See [`LogAccess::last_seq`].
    fn last_seq(
        &mut self,
        key: IndexKey<'_>,
    ) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send;

    /// See [`LogAccess::entries`].
    fn entries(
        &mut self,
        key: IndexKey<'_>,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StorageError>> + Send;

    /// See [`LogAccess::records`].
    fn records(
        &mut self,
        entries: &[IndexEntry],
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StorageError>> + Send;

    /// See [`LogAccess::restriction`].
    fn restriction(
        &mut self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<Restriction, StorageError>> + Send;
}

impl<T: LogAccess + Send> AsyncLogAccess for T {
    fn head(&self) -> Position {
        LogAccess::head(self)
    }

    fn scan(
        &mut self,
        from: Position,
        direction: Direction,
        max: usize,
        out: &mut Vec<ResolvedEvent>,
    ) -> impl Future<Output = Result<usize, StorageError>> + Send {
        ready(LogAccess::scan(self, from, direction, max, out))
    }

    fn last_seq(
        &mut self,
        key: IndexKey<'_>,
    ) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send {
        ready(LogAccess::last_seq(self, key))
    }

    fn entries(
        &mut self,
        key: IndexKey<'_>,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StorageError>> + Send {
        ready(LogAccess::entries(self, key, first, direction, max))
    }

    fn records(
        &mut self,
        entries: &[IndexEntry],
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StorageError>> + Send {
        ready(LogAccess::records(self, entries))
    }

    fn restriction(
        &mut self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<Restriction, StorageError>> + Send {
        ready(LogAccess::restriction(self, stream))
    }
}

/// Index entries fetched per lookup.
const ENTRY_BATCH: usize = 256;
/// Records fetched per scan of the log.
const SCAN_BATCH: usize = 1024;

/// The most events a `$all` read reserves room for before it has them.
const RESERVED_EVENTS_MAX: usize = 1 << 14;

/// Caches restrictions for the duration of one read. Consecutive events usually share
/// their stream, and a scan's events share one name allocation per stream, so the last
/// stream looked up is compared first (by pointer, before its bytes), which spares
/// hashing its name for every event.
#[derive(Default)]
struct Restrictions {
    streams: Vec<(StreamName, Restriction)>,
    by_name: HashMap<StreamName, usize>,
    last: usize,
}

impl Restrictions {
    async fn shows<A: AsyncLogAccess>(
        &mut self,
        access: &mut A,
        event: &RecordedEvent,
        context: ReadContext,
        now: Timestamp,
    ) -> Result<bool, StorageError> {
        if event.stream.kind() != StreamKind::Regular {
            return Ok(true);
        }
        let known = match self.streams.get(self.last) {
            Some((stream, _)) if *stream == event.stream => Some(self.last),
            _ => self.by_name.get(&event.stream).copied(),
        };
        let at = match known {
            Some(at) => at,
            None => {
                let restriction = access.restriction(&event.stream).await?;
                self.by_name
                    .insert(event.stream.clone(), self.streams.len());
                self.streams.push((event.stream.clone(), restriction));
                self.streams.len() - 1
            }
        };
        self.last = at;
        Ok(self.streams[at].1.shows(event, context, now))
    }
}

/// Reads a stream through the indexes.
pub async fn read_stream<A: AsyncLogAccess>(
    access: &mut A,
    stream: &StreamName,
    options: ReadStreamOptions,
    now: Timestamp,
) -> Result<Vec<ResolvedEvent>, ReadError> {
    let (key, is_virtual) = match stream.kind() {
        StreamKind::Category { category } => (IndexKey::Category(category), true),
        StreamKind::EventType { event_type } => (IndexKey::EventType(event_type), true),
        _ => (IndexKey::Stream(stream.as_str()), false),
    };
    let not_found = || ReadError::StreamNotFound {
        stream: stream.clone(),
    };
    let last = access.last_seq(key).await?.ok_or_else(not_found)?;
    let own = if stream.kind() == StreamKind::Regular {
        let restriction = access.restriction(stream).await?;
        if restriction.tombstone_revision.is_some() {
            return Err(ReadError::StreamDeleted {
                stream: stream.clone(),
            });
        }
        if restriction
            .metadata
            .as_ref()
            .is_some_and(|m| m.is_soft_deleted())
        {
            return Err(not_found());
        }
        restriction
    } else {
        Restriction::default()
    };
    let first_visible = own.first_visible_revision();
    let Some((start, _)) = stream_range(options.from, options.direction, last, first_visible)
    else {
        return Ok(Vec::new());
    };
    let in_range = |seq: u64| match options.direction {
        Direction::Forward => seq <= last,
        Direction::Backward => seq >= first_visible,
    };
    let limit = usize::try_from(options.limit).unwrap_or(usize::MAX);
    let mut restrictions = Restrictions::default();
    let mut out = Vec::new();
    let mut next = Some(start);
    while let Some(from) = next.filter(|_| out.len() < limit) {
        let entries = access
            .entries(key, from, options.direction, ENTRY_BATCH)
            .await?;
        let Some(last_entry) = entries.last() else {
            break;
        };
        next = match options.direction {
            Direction::Forward => Some(last_entry.seq + 1),
            Direction::Backward => last_entry.seq.checked_sub(1),
        };
        let in_range_count = entries.iter().take_while(|e| in_range(e.seq)).count();
        if in_range_count < entries.len() {
            next = None;
        }
        let wanted = &entries[..in_range_count];
        for (entry, event) in wanted.iter().zip(access.records(wanted).await?) {
            if !key.owns(&event) {
                continue;
            }
            let shows = if is_virtual {
                restrictions
                    .shows(access, &event, ReadContext::Stream, now)
                    .await?
            } else {
                own.shows(&event, ReadContext::Stream, now)
            };
            if shows {
                let link = is_virtual.then(|| Link {
                    stream: stream.clone(),
                    revision: entry.seq,
                });
                out.push(ResolvedEvent { event, link });
                if out.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// `next` if a record lies at or before it in the log, else `None`; leaves `events` as it was.
async fn earlier_record<A: AsyncLogAccess>(
    access: &mut A,
    next: Option<u64>,
    events: &mut Vec<ResolvedEvent>,
) -> Result<Option<u64>, ReadError> {
    let Some(from) = next else {
        return Ok(None);
    };
    let len = events.len();
    let found = access
        .scan(Position(from), Direction::Backward, 1, events)
        .await?;
    events.truncate(len);
    Ok((found > 0).then_some(from))
}

/// Reads the global log.
pub async fn read_all<A: AsyncLogAccess>(
    access: &mut A,
    options: &ReadAllOptions,
    now: Timestamp,
) -> Result<AllSlice, ReadError> {
    let head = access.head().0;
    let limit = usize::try_from(options.limit).unwrap_or(usize::MAX);
    let mut budget = options.max_scan.unwrap_or(u64::MAX).max(1);
    let mut restrictions = Restrictions::default();
    // `next` is the first position not yet examined; backward, `None` past position 0.
    let mut next = match (options.direction, options.from) {
        (Direction::Forward, AllFrom::Start) => Some(0),
        (Direction::Forward, AllFrom::End) => Some(head),
        (Direction::Forward, AllFrom::Position(p)) => Some(p.0),
        (Direction::Backward, AllFrom::Start) => (head > 0).then_some(0),
        (Direction::Backward, AllFrom::End) => head.checked_sub(1),
        (Direction::Backward, AllFrom::Position(p)) => head.checked_sub(1).map(|l| p.0.min(l)),
    };
    // Sized for what the read can return, so a long read does not grow it batch by batch
    // (copying every event so far each time): at most `limit` plus the one record past it
    // a scan may read into it, what is left in that direction (a filtered read cannot
    // tell), and a bound on memory reserved up front.
    let available = match (options.direction, next) {
        _ if options.filter.is_some() => SCAN_BATCH as u64,
        (_, None) => 0,
        (Direction::Forward, Some(p)) => head.saturating_sub(p),
        (Direction::Backward, Some(p)) => p.saturating_add(1),
    };
    let capacity = usize::try_from(available)
        .unwrap_or(usize::MAX)
        .min(limit.saturating_add(1))
        .min(RESERVED_EVENTS_MAX);
    let mut events = Vec::with_capacity(capacity);
    while events.len() < limit && budget > 0 {
        let Some(from) = next.filter(|p| *p < head) else {
            break;
        };
        let mut batch = usize::try_from(budget)
            .unwrap_or(usize::MAX)
            .min(SCAN_BATCH);
        if options.filter.is_none() {
            // Most of an unfiltered batch is returned: scan no more than fits the limit, and
            // one record past it, which tells a backward read whether the log ends there.
            batch = batch.min((limit - events.len()).saturating_add(1));
        }
        let start = events.len();
        let scanned = access
            .scan(Position(from), options.direction, batch, &mut events)
            .await?;
        // Fewer records than asked for: the scan reached the end of the log. Backward, with
        // gaps in positions, that is the only sign of having passed the first record.
        let reached_end = scanned < batch;
        if reached_end && options.direction == Direction::Backward && scanned == 0 {
            next = None;
        }
        if scanned == 0 {
            break;
        }
        // Filter in place: each event shown moves down over those hidden (none moves when
        // all are shown); what was hidden or not examined is cut off at the end.
        let mut kept = start;
        let mut examined = 0;
        for at in start..start + scanned {
            examined += 1;
            budget -= 1;
            let event = &events[at].event;
            let position = event.position.0;
            next = match options.direction {
                Direction::Forward => Some(position + 1),
                Direction::Backward => position.checked_sub(1),
            };
            let passes = options
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(event.stream.as_str(), event.event_type.as_str()));
            if passes
                && restrictions
                    .shows(access, event, ReadContext::All, now)
                    .await?
            {
                if kept != at {
                    events.swap(kept, at);
                }
                kept += 1;
            }
            if kept == limit || budget == 0 {
                break;
            }
        }
        events.truncate(kept);
        if examined == scanned && options.direction == Direction::Backward {
            if reached_end {
                next = None;
            } else if kept == limit {
                // The limit filled on the batch's last record, so the record past it (taken
                // by one hidden) was not read: look for it, or a read that ends at the first
                // record would not know, positions having gaps.
                next = earlier_record(access, next, &mut events).await?;
            }
        }
    }
    let end_of_log = match options.direction {
        Direction::Forward => next.is_none_or(|p| p >= head),
        Direction::Backward => next.is_none(),
    };
    Ok(AllSlice {
        events,
        next: next.map(Position),
        end_of_log,
    })
}
