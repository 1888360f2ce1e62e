//! The segmented append-only log: files `log/<number>.seg`, each a header and records.
//! Addresses are `segment number << 32 | byte offset`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annals_core::{Position, RecordedEvent, StorageError};
use bytes::Bytes;
use parking_lot::RwLock;

use crate::device::{Device, Vfs};
use crate::record::{self, DecodeError, FRAME_LEN, Record, SEGMENT_HEADER_LEN, SegmentHeader};

/// Bytes read per chunk when scanning.
pub const SCAN_CHUNK: usize = 1 << 20;

/// Reads at least this large (scans' chunks) take their buffer from [`CHUNKS`].
const POOLED_READ_MIN: usize = 64 << 10;

/// Scans' chunk buffers, kept for later reads once every event read from them is dropped
/// (events share their chunk's bytes). A fresh buffer cost the kernel a page fault and a
/// zeroed page per 4 KiB as the read filled it, and glibc gave a large one back to the
/// kernel when it was freed. Process-wide; at most [`IDLE_MAX`] bytes wait idle.
static CHUNKS: ChunkPool = ChunkPool::new();
const IDLE_MAX: usize = 16 << 20;

struct ChunkPool {
    idle: parking_lot::Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    const fn new() -> Self {
        Self {
            idle: parking_lot::const_mutex(Vec::new()),
        }
    }

    /// A buffer for a read of `len` bytes: the smallest idle one that holds it, else a new
    /// one (a read's size depends on where it starts and stops, so sizes vary).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut idle = self.idle.lock();
        let fitting = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = fitting {
            return idle.swap_remove(i);
        }
        drop(idle);
        Vec::with_capacity(len.next_multiple_of(POOLED_READ_MIN))
    }

    /// `buf`'s bytes; `buf` comes back to the pool once the last of them is dropped.
    fn share(&'static self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buf, pool: self })
    }

    fn give_back(&self, buf: Vec<u8>) {
        // A single record larger than a chunk was read whole: not worth keeping.
        if buf.capacity() > SCAN_CHUNK {
            return;
        }
        let mut idle = self.idle.lock();
        if idle_bytes(&idle) + buf.capacity() <= IDLE_MAX {
            idle.push(buf);
        }
    }
}

/// The capacities' sum.
fn idle_bytes(idle: &[Vec<u8>]) -> usize {
    idle.iter().map(Vec::capacity).sum()
}

/// A chunk's buffer while events share it.
struct Pooled {
    buf: Vec<u8>,
    pool: &'static ChunkPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Builds an address.
pub fn address(segment: u64, offset: u64) -> u64 {
    segment << 32 | offset
}

/// Splits an address.
pub fn split(address: u64) -> (u64, u64) {
    (address >> 32, address & 0xFFFF_FFFF)
}

/// One segment file.
#[derive(Debug)]
pub struct Segment {
    /// Its number.
    pub number: u64,
    /// Position of its first record.
    pub base: Position,
    /// The file.
    pub device: Arc<dyn Device>,
    /// Its path.
    pub path: PathBuf,
    /// Bytes that hold committed records (readers never look past this).
    pub committed_len: AtomicU64,
}

impl Segment {
    /// Creates a segment file with its header, durably.
    pub fn create(
        vfs: &dyn Vfs,
        dir: &Path,
        number: u64,
        base: Position,
    ) -> Result<Self, StorageError> {
        let path = dir.join(file_name(number));
        let io = |e| StorageError::io(format!("creating segment {}", path.display()), e);
        let device = vfs.open(&path, true).map_err(io)?;
        device.set_len(0).map_err(io)?;
        device
            .write_at(
                &SegmentHeader {
                    number,
                    base_position: base,
                }
                .encode(),
                0,
            )
            .map_err(io)?;
        device.sync_data().map_err(io)?;
        vfs.sync_dir(dir).map_err(io)?;
        Ok(Self {
            number,
            base,
            device,
            path,
            committed_len: AtomicU64::new(SEGMENT_HEADER_LEN),
        })
    }

    /// Opens a segment and checks its header.
    pub fn open(vfs: &dyn Vfs, dir: &Path, number: u64) -> Result<Self, StorageError> {
        let path = dir.join(file_name(number));
        let io = |e| StorageError::io(format!("opening segment {}", path.display()), e);
        let device = vfs.open(&path, false).map_err(io)?;
        let len = device.len().map_err(io)?;
        let mut header = [0; SEGMENT_HEADER_LEN as usize];
        if len < SEGMENT_HEADER_LEN {
            return Err(StorageError::corruption(
                &path,
                0,
                "segment is shorter than its header",
            ));
        }
        device.read_at(&mut header, 0).map_err(io)?;
        let header =
            SegmentHeader::decode(&header).map_err(|d| StorageError::corruption(&path, 0, d))?;
        if header.number != number {
            let detail = format!(
                "header says segment {}, file name says {number}",
                header.number
            );
            return Err(StorageError::corruption(&path, 16, detail));
        }
        Ok(Self {
            number,
            base: header.base_position,
            device,
            path,
            committed_len: AtomicU64::new(len),
        })
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: usize) -> Result<Bytes, StorageError> {
        let pooled = len >= POOLED_READ_MIN;
        let mut buf = if pooled { CHUNKS.take(len) } else { Vec::new() };
        self.device.read_into(offset, len, &mut buf).map_err(|e| {
            StorageError::io(format!("reading {} at {offset}", self.path.display()), e)
        })?;
        Ok(if pooled {
            CHUNKS.share(buf)
        } else {
            Bytes::from(buf)
        })
    }

    /// The committed length in bytes.
    pub fn committed(&self) -> u64 {
        self.committed_len.load(Ordering::Acquire)
    }

    /// Reads and decodes the record at `offset`.
    pub fn record_at(&self, offset: u64) -> Result<Record, StorageError> {
        let head = self.read(offset, FRAME_LEN)?;
        let total = record::frame_len(&head).map_err(|e| self.corrupt(offset, e))?;
        let bytes = self.read(offset, total)?;
        record::decode(&bytes)
            .map(|(r, _)| r)
            .map_err(|e| self.corrupt(offset, e))
    }

    /// A corruption error at `offset` in this segment.
    pub fn corrupt(&self, offset: u64, e: DecodeError) -> StorageError {
        StorageError::corruption(&self.path, offset, e.to_string())
    }
}

/// The file name of segment `number`.
pub fn file_name(number: u64) -> String {
    format!("{number:010}.seg")
}

/// The segment numbers present in `dir`, sorted.
pub fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<u64>, StorageError> {
    let names = vfs
        .list(dir)
        .map_err(|e| StorageError::io("listing segments", e))?;
    let mut numbers: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".seg"))
        .filter_map(|n| n.parse().ok())
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// The open segments.
#[derive(Debug, Default)]
pub struct Log {
    segments: RwLock<Vec<Arc<Segment>>>,
}

impl Log {
    /// A log of these segments (contiguous numbers, ascending).
    pub fn new(segments: Vec<Arc<Segment>>) -> Self {
        Self {
            segments: RwLock::new(segments),
        }
    }

    /// Adds a new last segment.
    pub fn push(&self, segment: Arc<Segment>) {
        self.segments.write().push(segment);
    }

    /// The segment with this number.
    pub fn segment(&self, number: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let first = segments.first()?.number;
        let index = usize::try_from(number.checked_sub(first)?).ok()?;
        segments.get(index).cloned()
    }

    /// The last segment.
    pub fn last(&self) -> Option<Arc<Segment>> {
        self.segments.read().last().cloned()
    }

    /// All segments.
    pub fn all(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// Reads the record at an address.
    pub fn record(&self, address: u64) -> Result<Record, StorageError> {
        let (number, offset) = split(address);
        let segment = self.segment(number).ok_or_else(|| {
            StorageError::backend(format!("index points to missing segment {number}"))
        })?;
        segment.record_at(offset)
    }

    /// Reads the records at several (address, expected position) pairs, in order. Records
    /// close to each other in one segment are fetched with a single read.
    pub fn records(&self, wanted: &[(u64, u64)]) -> Result<Vec<RecordedEvent>, StorageError> {
        /// Records this close together are read as one span.
        const SPAN: u64 = 64 << 10;
        let mut out = Vec::with_capacity(wanted.len());
        let mut names = record::NameCache::default();
        let mut i = 0;
        while i < wanted.len() {
            let (number, start) = split(wanted[i].0);
            let segment = self.segment(number).ok_or_else(|| {
                StorageError::backend(format!("index points to missing segment {number}"))
            })?;
            // Extend the span while the next record is in the same segment, ahead and near.
            let mut j = i + 1;
            while j < wanted.len() {
                let (n, offset) = split(wanted[j].0);
                if n != number || offset < start || offset - start > SPAN {
                    break;
                }
                j += 1;
            }
            let end_hint = split(wanted[j - 1].0).1;
            let len = usize::try_from((end_hint - start) + 1024)
                .unwrap_or(usize::MAX)
                .min(usize::try_from(segment.committed().saturating_sub(start)).unwrap_or(0));
            let span = segment.read(start, len.max(FRAME_LEN))?;
            for &(address, position) in &wanted[i..j] {
                let at = usize::try_from(split(address).1 - start).unwrap_or(usize::MAX);
                let decoded = span
                    .get(at..)
                    .map(|_| record::decode_at(&span, at, &mut names));
                let record = match decoded {
                    Some(Ok((record, _))) => record,
                    // Past the span (a large record): read it alone.
                    _ => segment.record_at(split(address).1)?,
                };
                if record.event.position.0 != position {
                    let detail = format!(
                        "index entry says position {position}, the record there is at {}",
                        record.event.position
                    );
                    return Err(StorageError::corruption(
                        &segment.path,
                        split(address).1,
                        detail,
                    ));
                }
                out.push(record.event);
            }
            i = j;
        }
        Ok(out)
    }

    /// Reads consecutive committed records starting at `address`, calling `visit` for each
    /// until it returns false or committed data ends. Crosses segment boundaries. `expected`
    /// is how many bytes the caller expects to want (it sizes the first read).
    pub fn scan(
        &self,
        address: u64,
        expected: usize,
        mut visit: impl FnMut(Record, u64) -> bool,
    ) -> Result<(), StorageError> {
        let (mut number, mut offset) = split(address);
        let mut first_chunk = expected;
        while let Some(segment) = self.segment(number) {
            let mut stop = false;
            let mut failure = None;
            let chunk = std::mem::replace(&mut first_chunk, SCAN_CHUNK);
            read_records(
                &segment,
                offset,
                segment.committed(),
                chunk,
                |item| match item {
                    Ok((record, at, _)) => {
                        stop = !visit(record, self::address(number, at));
                        !stop
                    }
                    Err((at, e)) => {
                        failure = Some(segment.corrupt(at, e));
                        false
                    }
                },
            )?;
            if let Some(e) = failure {
                return Err(e);
            }
            if stop {
                return Ok(());
            }
            number += 1;
            offset = SEGMENT_HEADER_LEN;
        }
        Ok(())
    }
}

/// True when `segment` holds only zero bytes in `from..end`: the zero-filled space the writer
/// keeps ahead of the log's end in the last segment, not a torn or damaged record.
pub fn zeros_from(segment: &Segment, mut from: u64, end: u64) -> Result<bool, StorageError> {
    while from < end {
        let want = usize::try_from(end - from)
            .unwrap_or(usize::MAX)
            .min(SCAN_CHUNK);
        if segment.read(from, want)?.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        from += want as u64;
    }
    Ok(true)
}

/// A record read from a segment, or the offset and reason where decoding failed.
pub type ReadItem = Result<(Record, u64, usize), (u64, DecodeError)>;

/// Decodes the records of `segment` in `offset..end`, in chunks, calling `visit` for each
/// (and once for the first failure, after which it stops). `visit` returns false to stop.
/// The first chunk is `first_chunk` bytes (when the caller knows how much it wants: reading
/// and zeroing a whole [`SCAN_CHUNK`] for a few records costs more than decoding them), the
/// rest [`SCAN_CHUNK`].
pub fn read_records(
    segment: &Segment,
    mut offset: u64,
    end: u64,
    first_chunk: usize,
    mut visit: impl FnMut(ReadItem) -> bool,
) -> Result<(), StorageError> {
    let mut names = record::NameCache::default();
    let mut chunk_len = first_chunk.clamp(4096, SCAN_CHUNK);
    while offset < end {
        let remaining = end - offset;
        let mut want = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(chunk_len);
        chunk_len = SCAN_CHUNK;
        let mut chunk = segment.read(offset, want)?;
        let mut consumed = 0usize;
        while consumed < chunk.len() {
            match record::decode_at(&chunk, consumed, &mut names) {
                Ok((record, len)) => {
                    if !visit(Ok((record, offset + consumed as u64, len))) {
                        return Ok(());
                    }
                    consumed += len;
                }
                Err(DecodeError::Truncated { need, .. })
                    if consumed > 0 || (need > want && need as u64 <= remaining) =>
                {
                    if consumed > 0 {
                        break;
                    }
                    // One record larger than the chunk: read it whole.
                    want = need;
                    chunk = segment.read(offset, want)?;
                }
                Err(e) => {
                    visit(Err((offset + consumed as u64, e)));
                    return Ok(());
                }
            }
        }
        offset += consumed as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static ChunkPool {
        Box::leak(Box::new(ChunkPool::new()))
    }

    #[test]
    fn a_chunk_buffer_is_reused_once_the_last_slice_of_it_is_dropped() {
        let pool = pool();
        let mut buf = pool.take(100_000);
        buf.extend((0..100_000u32).map(|i| i as u8));
        let at = buf.as_ptr();
        let bytes = pool.share(buf);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert!(pool.idle.lock().is_empty(), "a slice still reads it");
        assert_eq!(&slice[..], &(10..20).collect::<Vec<u8>>()[..]);
        drop(slice);
        let again = pool.take(90_000);
        assert_eq!(again.as_ptr(), at, "the same buffer comes back");
        assert!(pool.idle.lock().is_empty());
        // A read it cannot hold gets a new one.
        drop(pool.share(again));
        let larger = pool.take(200_000);
        assert_ne!(larger.as_ptr(), at);
    }

    #[test]
    fn the_pool_hands_out_the_smallest_fitting_buffer_and_keeps_a_bounded_amount() {
        let pool = pool();
        let small = pool.take(POOLED_READ_MIN);
        let large = pool.take(SCAN_CHUNK / 2);
        let (small_at, large_at) = (small.as_ptr(), large.as_ptr());
        drop((pool.share(large), pool.share(small)));
        let (fits_small, needs_large) = (
            pool.take(POOLED_READ_MIN - 1),
            pool.take(POOLED_READ_MIN + 1),
        );
        assert_eq!(fits_small.as_ptr(), small_at);
        assert_eq!(needs_large.as_ptr(), large_at);
        let huge = pool.take(SCAN_CHUNK + 1);
        drop(pool.share(huge));
        assert!(pool.idle.lock().is_empty(), "a buffer for one huge record");
        let shared: Vec<Bytes> = (0..IDLE_MAX / SCAN_CHUNK + 3)
            .map(|_| pool.share(pool.take(SCAN_CHUNK)))
            .collect();
        drop(shared);
        let idle = pool.idle.lock();
        assert_eq!(idle.len(), IDLE_MAX / SCAN_CHUNK);
        assert_eq!(idle_bytes(&idle), IDLE_MAX);
    }
}
