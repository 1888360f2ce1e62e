//! Opening the log after a clean shutdown or a crash.
//!
//! Replay starts at the index checkpoint (everything before it is in index runs), verifies
//! every record's checksum and position, and feeds the index. The end of the log is handled
//! by one rule: a record that fails to decode in the last segment is a torn tail if no record
//! whose synced-before mark lies beyond it follows (such a record would prove the failing
//! bytes were synced before). A torn tail is cut back to the start of its incomplete transaction and
//! logged; anything else is corruption, reported with file and offset, and opening fails.
//! Zero bytes from the failing record to the end of the file are not a failure: they are
//! the space the writer zero-fills ahead of the log, and the log ends where they start.

use std::path::Path;
use std::sync::Arc;

use annals_core::metadata::{METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};
use annals_core::{Direction, EventType, StorageError};
use foldhash::HashMap;

use crate::device::Vfs;
use crate::engine::{
    IndexedRecord, KeyHashes, Published, Restricted, apply_restriction, entries_for,
};
use crate::index::{Entry, Index, KeyKind, key_hash};
use crate::log::{self, Log, Segment, read_records};
use crate::record::{self, DecodeError, FRAME_LEN, Record, SEGMENT_HEADER_LEN};

/// What recovery hands to the engine.
pub(crate) struct Recovered {
    pub(crate) log: Log,
    pub(crate) published: Published,
    /// Where the writer continues: (segment number, offset).
    pub(crate) tail: (u64, u64),
}

/// Opens the segments, replays the log into the index from its checkpoint, cuts a torn tail.
pub(crate) fn recover(vfs: &dyn Vfs, dir: &Path, index: &Index) -> Result<Recovered, StorageError> {
    let mut numbers = log::list(vfs, dir)?;
    if let Some(&last) = numbers.last()
        && remove_unborn_segment(vfs, dir, last)?
    {
        numbers.pop();
    }
    let segments: Vec<Arc<Segment>> = if numbers.is_empty() {
        vec![Arc::new(Segment::create(
            vfs,
            dir,
            0,
            annals_core::Position(0),
        )?)]
    } else {
        open_segments(vfs, dir, &numbers)?
    };
    let first = &segments[0];
    let (start_position, start_address) = index
        .checkpoint()
        .unwrap_or((first.base.0, log::address(first.number, SEGMENT_HEADER_LEN)));
    let log = Log::new(segments);
    let mut replay = Replay::new(index, start_position);
    replay.run(&log, start_address, dir)?;
    let tail = replay.finish(&log)?;
    let published = Published {
        next_position: replay.expected,
        restrictions: load_restrictions(index, &log)?,
        sparse: load_sparse(index)?,
    };
    Ok(Recovered {
        log,
        published,
        tail,
    })
}

/// A crash while a segment was being created can leave it shorter than its header (it was
/// never written to: records follow only after the header and the directory are synced).
/// Such a last segment is removed; a damaged header on a longer file is corruption.
fn remove_unborn_segment(vfs: &dyn Vfs, dir: &Path, number: u64) -> Result<bool, StorageError> {
    let path = dir.join(log::file_name(number));
    let io = |e| StorageError::io(format!("checking {}", path.display()), e);
    let device = vfs.open(&path, false).map_err(io)?;
    let len = device.len().map_err(io)?;
    if len > SEGMENT_HEADER_LEN {
        return Ok(false);
    }
    let mut header = vec![0; usize::try_from(len).unwrap_or(0)];
    device.read_at(&mut header, 0).map_err(io)?;
    if crate::record::SegmentHeader::decode(&header).is_ok() {
        return Ok(false);
    }
    tracing::warn!(file = %path.display(), len, "removing a segment whose creation was cut short");
    drop(device);
    vfs.remove(&path).map_err(io)?;
    vfs.sync_dir(dir).map_err(io)?;
    Ok(true)
}

fn open_segments(
    vfs: &dyn Vfs,
    dir: &Path,
    numbers: &[u64],
) -> Result<Vec<Arc<Segment>>, StorageError> {
    let mut segments = Vec::with_capacity(numbers.len());
    for (i, &number) in numbers.iter().enumerate() {
        if i > 0 && number != numbers[i - 1] + 1 {
            let missing = dir.join(log::file_name(numbers[i - 1] + 1));
            return Err(StorageError::corruption(
                missing,
                0,
                "segment file is missing",
            ));
        }
        segments.push(Arc::new(Segment::open(vfs, dir, number)?));
    }
    Ok(segments)
}

struct Replay<'a> {
    index: &'a Index,
    /// The position the next record must have.
    expected: u64,
    /// Records of the transaction being read, with their addresses.
    txn: Vec<(Record, u64)>,
    /// Where the incomplete transaction started: (segment, offset).
    txn_start: Option<(u64, u64)>,
    /// The torn tail to cut: (segment, offset).
    cut: Option<(u64, u64)>,
    /// Where the records of the last segment end when zero-filled space follows them (the
    /// file is longer than the log).
    end: Option<u64>,
    overlay: HashMap<u64, u64>,
    keys: KeyHashes,
    replayed: u64,
}

impl<'a> Replay<'a> {
    fn new(index: &'a Index, expected: u64) -> Self {
        Self {
            index,
            expected,
            txn: Vec::new(),
            txn_start: None,
            cut: None,
            end: None,
            overlay: HashMap::default(),
            keys: KeyHashes::default(),
            replayed: 0,
        }
    }

    fn run(&mut self, log: &Log, start: u64, dir: &Path) -> Result<(), StorageError> {
        let (first_number, mut offset) = log::split(start);
        let segments = log.all();
        let Some(first) = segments.iter().position(|s| s.number == first_number) else {
            let path = dir
                .join("..")
                .join("index")
                .join(crate::index::manifest::FILE_NAME);
            let detail =
                format!("index checkpoint points to segment {first_number}, which is missing");
            return Err(StorageError::corruption(path, 0, detail));
        };
        let last_number = segments.last().map_or(0, |s| s.number);
        for segment in &segments[first..] {
            let len = segment
                .device
                .len()
                .map_err(|e| StorageError::io("sizing a segment", e))?;
            if offset > len {
                let detail = format!("index checkpoint offset {offset} is past the end ({len})");
                return Err(StorageError::corruption(&segment.path, len, detail));
            }
            if segment.number != first_number && segment.base.0 != self.expected {
                let detail = format!(
                    "segment starts at position {}, but the log so far ends at {}",
                    segment.base, self.expected
                );
                return Err(StorageError::corruption(&segment.path, 24, detail));
            }
            let mut failure = None;
            let mut step = Ok(());
            read_records(segment, offset, len, log::SCAN_CHUNK, |item| {
                let checked = item.and_then(|(record, at, _)| self.check_position(record, at));
                match checked {
                    Ok((record, at)) => {
                        step = self.accept(record, log::address(segment.number, at), segment);
                        step.is_ok()
                    }
                    Err(failed) => {
                        failure = Some(failed);
                        false
                    }
                }
            })?;
            step?;
            if let Some((at, reason)) = failure {
                if segment.number != last_number {
                    return Err(segment.corrupt(at, reason));
                }
                if !log::zeros_from(segment, at, len)? {
                    self.torn_or_corrupt(segment, at, len, reason)?;
                    return Ok(());
                }
                // The log ends where the zero-filled space ahead of it starts.
                self.end = Some(at);
                break;
            }
            offset = SEGMENT_HEADER_LEN;
        }
        if !self.txn.is_empty() {
            tracing::warn!(
                records = self.txn.len(),
                "log ends inside a transaction; cutting it"
            );
            self.drop_incomplete_txn(None);
        }
        Ok(())
    }

    /// Forgets the transaction being read and marks where the log must be cut.
    fn drop_incomplete_txn(&mut self, fallback: Option<(u64, u64)>) {
        self.expected -= self.txn.len() as u64;
        self.txn.clear();
        self.cut = self.txn_start.take().or(fallback);
    }

    fn check_position(&self, record: Record, at: u64) -> Result<(Record, u64), (u64, DecodeError)> {
        let position = record.event.position.0;
        if position == self.expected {
            Ok((record, at))
        } else {
            let detail = format!("record has position {position}, expected {}", self.expected);
            Err((at, DecodeError::Invalid(detail)))
        }
    }

    fn accept(
        &mut self,
        record: Record,
        address: u64,
        segment: &Segment,
    ) -> Result<(), StorageError> {
        if self.txn.is_empty() {
            self.txn_start = Some(log::split(address));
        }
        self.expected += 1;
        let ends = record.ends_txn();
        self.txn.push((record, address));
        if ends {
            let mut entries = Vec::new();
            for (record, address) in std::mem::take(&mut self.txn) {
                let event = &record.event;
                let indexed = IndexedRecord {
                    stream: &event.stream,
                    event_type: &event.event_type,
                    revision: event.revision,
                    position: event.position.0,
                    address,
                    first_in_segment: event.position == segment.base,
                };
                entries_for(
                    self.index,
                    &indexed,
                    &mut self.keys,
                    &mut self.overlay,
                    &mut entries,
                )?;
                self.replayed += 1;
            }
            self.index.insert(entries);
            self.txn_start = None;
        }
        Ok(())
    }

    /// Decides whether a failure at `at` in the last segment is a torn tail.
    fn torn_or_corrupt(
        &mut self,
        segment: &Segment,
        at: u64,
        len: u64,
        reason: DecodeError,
    ) -> Result<(), StorageError> {
        if let Some(later) = later_group_after(segment, at + 1, len, self.expected)? {
            let detail = format!(
                "{reason}; a later commit (position {later}) follows, so this is not a torn tail"
            );
            return Err(StorageError::corruption(&segment.path, at, detail));
        }
        self.drop_incomplete_txn(Some((segment.number, at)));
        let cut_at = self.cut.map_or(at, |c| c.1);
        tracing::warn!(
            file = %segment.path.display(),
            offset = at,
            cut_at,
            dropped_bytes = len - cut_at,
            %reason,
            "torn tail: cutting the unacknowledged end of the log"
        );
        Ok(())
    }

    /// Applies the cut, if any; returns where the writer continues.
    fn finish(&mut self, log: &Log) -> Result<(u64, u64), StorageError> {
        let last = log
            .last()
            .ok_or_else(|| StorageError::backend("log has no segment"))?;
        let io = |e| {
            StorageError::io(
                format!("cutting the torn tail of {}", last.path.display()),
                e,
            )
        };
        if let Some((number, offset)) = self.cut {
            let segment = log
                .segment(number)
                .ok_or_else(|| StorageError::backend("cut segment"))?;
            segment.device.set_len(offset).map_err(io)?;
            segment.device.sync_data().map_err(io)?;
        }
        let len = match (self.cut, self.end) {
            (None, Some(end)) => end,
            _ => last.device.len().map_err(io)?,
        };
        last.committed_len
            .store(len, std::sync::atomic::Ordering::Release);
        tracing::info!(
            replayed = self.replayed,
            next_position = self.expected,
            "log recovered"
        );
        Ok((last.number, len))
    }
}

/// Looks for a valid record written after `expected` was synced (synced-before mark >
/// `expected`) in `from..end`. Cheap checks first, so garbage is skipped quickly.
fn later_group_after(
    segment: &Segment,
    from: u64,
    end: u64,
    expected: u64,
) -> Result<Option<u64>, StorageError> {
    if from >= end {
        return Ok(None);
    }
    let bytes = segment.read(from, usize::try_from(end - from).unwrap_or(0))?;
    let mut at = 0usize;
    while at + FRAME_LEN + 24 <= bytes.len() {
        let b = &bytes[at..];
        let plausible = record::frame_len(b).is_ok_and(|len| at + len <= bytes.len())
            && b[FRAME_LEN] == 1
            && crate::index::le_u64(&b[FRAME_LEN + 16..FRAME_LEN + 24]) > expected;
        if let Some(Ok((record, _))) = plausible.then(|| record::decode(&bytes.slice(at..))) {
            return Ok(Some(record.event.position.0));
        }
        at += 1;
    }
    Ok(None)
}

fn all_entries(index: &Index, key: u64) -> Result<Vec<Entry>, StorageError> {
    index.range(key, 0, Direction::Forward, usize::MAX)
}

fn load_sparse(index: &Index) -> Result<Vec<(u64, u64)>, StorageError> {
    let entries = all_entries(index, key_hash(KeyKind::All, ""))?;
    Ok(entries
        .into_iter()
        .map(|e| (e.position, e.address))
        .collect())
}

fn load_restrictions(
    index: &Index,
    log: &Log,
) -> Result<HashMap<annals_core::StreamName, Restricted>, StorageError> {
    let mut restrictions = HashMap::default();
    let mut records = Vec::new();
    for event_type in [METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE] {
        let name = EventType::new(event_type).map_err(|e| StorageError::backend(e.to_string()))?;
        for entry in all_entries(index, key_hash(KeyKind::EventType, name.as_str()))? {
            let record = log.record(entry.address)?;
            if record.event.event_type == name {
                records.push(record);
            }
        }
    }
    records.sort_by_key(|r| r.event.position);
    for record in records {
        apply_restriction(&mut restrictions, &record.event, record.is_tombstone());
    }
    Ok(restrictions)
}
