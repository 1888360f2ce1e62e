//! Zero-filled space ahead of the log's end, written by a thread of its own.
//!
//! Why zeros at all: a group that overwrites blocks the file already has is synced without
//! file metadata (see `Writer::zero_ahead`). Why a thread: writing 1 MiB of zeros costs the
//! kernel ~1 ms on this project's VM (256 new page-cache pages, each charged and reserved),
//! the time the leader takes to build a dozen groups; done by the leader, it held up every
//! appender (W1 at 64 writers: ~8% of the committers' samples, ~40% of building). The filler
//! writes it in [`PIECE`]s instead, while the leader writes groups below it.
//!
//! Safety rests on one rule: the filler writes only at and above the file's length, under
//! the lock, and the leader writes below the length without the lock or beyond it with the
//! lock (moving the length past its group before releasing it). So zeros never land on a
//! group's bytes, and a piece in progress delays the leader by one piece at most.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::thread::{JoinHandle, Thread};

use annals_core::StorageError;
use parking_lot::Mutex;

use crate::log::Segment;

/// The filler writes this much per call, so the leader, whose write waits for the file
/// system's lock on the file, waits ~70 µs at most.
pub(crate) const PIECE: u64 = 64 << 10;
static ZEROS: [u8; PIECE as usize] = [0; PIECE as usize];
/// Zeros are asked for this much at a time ([`ZeroFill::keep_ahead`])...
const CHUNK: u64 = 1 << 20;
/// ...when less than this is left beyond the log.
const LOW_WATER: u64 = CHUNK / 4;

/// The last segment's length and the filler's work, shared by the leader and the filler.
struct Ahead {
    /// The file's length: the end of the log or of the zeros after it, whichever is further.
    file_len: AtomicU64,
    /// What the filler zero-fills up to (raised by the leader; 0 after a new segment).
    target: AtomicU64,
    /// The segment being filled, locked for every write at or beyond `file_len`.
    segment: Mutex<Arc<Segment>>,
    /// Set once the writer is gone: the filler finishes its target and stops.
    closing: AtomicBool,
    /// Set when a write of zeros failed: no more are written in this segment.
    given_up: AtomicBool,
}

/// The writer's handle on the filler (also used by `annals bench`'s bare group-commit
/// loop, to zero-fill as the engine does); dropping it lets the filler finish its target
/// and stop.
pub struct ZeroFill {
    ahead: Arc<Ahead>,
    filler: Thread,
}

impl ZeroFill {
    /// Starts the filler for `segment`, whose file is `file_len` bytes long; returns the
    /// handle and the filler's thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        segment: Arc<Segment>,
        file_len: u64,
    ) -> Result<(Self, JoinHandle<()>), StorageError> {
        let ahead = Arc::new(Ahead {
            file_len: AtomicU64::new(file_len),
            target: AtomicU64::new(0),
            segment: Mutex::new(segment),
            closing: AtomicBool::new(false),
            given_up: AtomicBool::new(false),
        });
        let filling = Arc::clone(&ahead);
        let thread = std::thread::Builder::new()
            .name("annals-zero".to_owned())
            .spawn(move || filling.run())
            .map_err(|e| StorageError::io("starting the zero-filler", e))?;
        let filler = thread.thread().clone();
        Ok((Self { ahead, filler }, thread))
    }

    /// The file's length now (zeros being written may make it longer soon).
    fn file_len(&self) -> u64 {
        self.ahead.file_len.load(Acquire)
    }

    /// Writes a group's bytes at `offset` in `segment`, the segment being filled.
    ///
    /// # Errors
    /// The device's write error.
    pub fn write(&self, segment: &Segment, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if end <= self.ahead.file_len.load(Acquire) {
            return segment.device.write_at(buf, offset);
        }
        // Beyond the zeros: the filler must not start a piece here meanwhile.
        let _filling = self.ahead.segment.lock();
        segment.device.write_at(buf, offset)?;
        self.ahead.file_len.fetch_max(end, Release);
        Ok(())
    }

    /// Keeps zeros ahead of `end`, where the log ends after the group just written: when
    /// less than [`LOW_WATER`] is left of what was asked for, asks for the next [`CHUNK`]
    /// (never past `limit`). Asking once per chunk, not while the filler works towards it,
    /// spares the leader a wake-up call per group (~6 µs each at W1's 64 writers).
    pub fn keep_ahead(&self, end: u64, limit: u64) {
        let asked = self.ahead.target.load(Acquire).max(self.file_len());
        if end + LOW_WATER > asked {
            self.want((asked + CHUNK).min(limit));
        }
    }

    /// Asks for zeros up to `to` (the filler never shortens its target).
    fn want(&self, to: u64) {
        if self.ahead.given_up.load(Acquire) {
            return;
        }
        self.ahead.target.fetch_max(to, Release);
        self.filler.unpark();
    }

    /// Replaces the last segment: `make` seals the current one (given its file's length)
    /// and creates the next, whose file is `file_len` bytes long, while no zeros are written.
    /// If it fails, no more zeros are written at all.
    ///
    /// # Errors
    /// What `make` returned.
    pub fn replace_segment(
        &self,
        file_len: u64,
        make: impl FnOnce(u64) -> Result<Arc<Segment>, StorageError>,
    ) -> Result<Arc<Segment>, StorageError> {
        let mut current = self.ahead.segment.lock();
        // Whatever `make` leaves behind, no zeros go after the sealed log.
        self.ahead.given_up.store(true, Release);
        let segment = make(self.ahead.file_len.load(Acquire))?;
        *current = Arc::clone(&segment);
        self.ahead.target.store(0, Release);
        self.ahead.file_len.store(file_len, Release);
        self.ahead.given_up.store(false, Release);
        Ok(segment)
    }
}

impl Drop for ZeroFill {
    fn drop(&mut self) {
        self.ahead.closing.store(true, Release);
        self.filler.unpark();
    }
}

impl Ahead {
    /// Fills towards the target, piece by piece; parks when there is nothing to do. Zeros
    /// are no data: after a failed write (a full disk, say) the groups of this segment
    /// grow the file instead, and their own writes and syncs report what is wrong.
    fn run(&self) {
        loop {
            let closing = self.closing.load(Acquire);
            match self.fill_piece() {
                Ok(true) => {}
                Ok(false) if closing => return,
                Ok(false) => std::thread::park(),
                Err(e) => {
                    tracing::warn!(error = %e, "no more zero-filled space in this segment");
                    self.given_up.store(true, Release);
                    self.target.store(0, Release);
                }
            }
        }
    }

    /// Writes the next piece of zeros, if the target is ahead; whether it wrote one.
    fn fill_piece(&self) -> Result<bool, StorageError> {
        let segment = self.segment.lock();
        let from = self.file_len.load(Acquire);
        let to = self.target.load(Acquire).min(from + PIECE);
        if to <= from || self.given_up.load(Acquire) {
            return Ok(false);
        }
        let zeros = &ZEROS[..usize::try_from(to - from).unwrap_or(0)];
        segment.device.write_at(zeros, from).map_err(|e| {
            StorageError::io(
                format!("zero-filling {} at {from}", segment.path.display()),
                e,
            )
        })?;
        self.file_len.store(to, Release);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use annals_core::Position;

    use super::*;
    use crate::device::StdVfs;
    use crate::record::SEGMENT_HEADER_LEN;

    fn segment(dir: &std::path::Path, number: u64) -> Arc<Segment> {
        Arc::new(Segment::create(&StdVfs, dir, number, Position(0)).expect("a new segment"))
    }

    fn contents(segment: &Segment) -> Vec<u8> {
        std::fs::read(&segment.path).expect("the segment file")
    }

    #[test]
    fn zeros_never_land_on_a_group_written_beside_the_filler() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let segment = segment(dir.path(), 0);
        let (fill, filler) = ZeroFill::start(Arc::clone(&segment), SEGMENT_HEADER_LEN).unwrap();
        // Groups of every size around the pieces, each asking for more zeros, as the
        // leader does: some land in zeroed space, some beyond it while a piece is written.
        let mut offset = SEGMENT_HEADER_LEN;
        let mut groups = Vec::new();
        for n in 0..400u64 {
            let len = 1 + (n * 7919) % (3 * PIECE / 2);
            let byte = 1 + (n % 250) as u8;
            fill.write(&segment, &vec![byte; len as usize], offset)
                .unwrap();
            groups.push((offset, len, byte));
            offset += len;
            fill.want(offset + 4 * PIECE);
        }
        drop(fill);
        filler.join().unwrap();
        let bytes = contents(&segment);
        for (offset, len, byte) in groups {
            let group = &bytes[offset as usize..(offset + len) as usize];
            assert!(
                group.iter().all(|&b| b == byte),
                "group at {offset} damaged"
            );
        }
        // The filler finished its last target before it stopped.
        assert_eq!(bytes.len() as u64, offset + 4 * PIECE);
        assert!(bytes[offset as usize..].iter().all(|&b| b == 0));
    }

    #[test]
    fn keep_ahead_asks_for_each_chunk_once() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let segment = segment(dir.path(), 0);
        let (fill, filler) = ZeroFill::start(Arc::clone(&segment), SEGMENT_HEADER_LEN).unwrap();
        let target = || fill.ahead.target.load(Acquire);
        fill.keep_ahead(SEGMENT_HEADER_LEN + 100, u64::MAX);
        let first = target();
        assert_eq!(first, SEGMENT_HEADER_LEN + CHUNK);
        // Groups ending short of the chunk's low-water mark ask for nothing more, however far
        // the filler has got.
        for end in (SEGMENT_HEADER_LEN..=first - LOW_WATER).step_by(4096) {
            fill.keep_ahead(end, u64::MAX);
            assert_eq!(target(), first, "asked again at {end}");
        }
        fill.keep_ahead(first - LOW_WATER + 1, u64::MAX);
        assert_eq!(target(), first + CHUNK);
        // Never past the limit.
        fill.keep_ahead(first + CHUNK, first + CHUNK + 10);
        assert_eq!(target(), first + CHUNK + 10);
        drop(fill);
        filler.join().unwrap();
        assert_eq!(contents(&segment).len() as u64, first + CHUNK + 10);
    }

    #[test]
    fn no_zeros_follow_a_sealed_log_when_the_next_segment_could_not_be_made() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = segment(dir.path(), 0);
        let (fill, filler) = ZeroFill::start(Arc::clone(&first), SEGMENT_HEADER_LEN).unwrap();
        let log_end = SEGMENT_HEADER_LEN + 100;
        fill.write(&first, &[7; 100], SEGMENT_HEADER_LEN).unwrap();
        fill.want(log_end + 8 * PIECE);
        let failed = fill.replace_segment(SEGMENT_HEADER_LEN, |_| {
            first.device.set_len(log_end).unwrap();
            Err(StorageError::backend(
                "the next segment could not be created",
            ))
        });
        assert!(failed.is_err());
        fill.want(log_end + 16 * PIECE);
        drop(fill);
        filler.join().unwrap();
        assert_eq!(contents(&first).len() as u64, log_end);
    }

    #[test]
    fn a_new_segment_is_filled_from_its_header_on() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = segment(dir.path(), 0);
        let (fill, filler) = ZeroFill::start(Arc::clone(&first), SEGMENT_HEADER_LEN).unwrap();
        fill.want(SEGMENT_HEADER_LEN + 3 * PIECE);
        let second = fill
            .replace_segment(SEGMENT_HEADER_LEN, |file_len| {
                first.device.set_len(SEGMENT_HEADER_LEN).unwrap();
                assert!(file_len >= SEGMENT_HEADER_LEN);
                Ok(segment(dir.path(), 1))
            })
            .unwrap();
        assert_eq!(fill.file_len(), SEGMENT_HEADER_LEN);
        fill.want(SEGMENT_HEADER_LEN + PIECE + 10);
        drop(fill);
        filler.join().unwrap();
        assert_eq!(contents(&first).len() as u64, SEGMENT_HEADER_LEN);
        let bytes = contents(&second);
        assert_eq!(bytes.len() as u64, SEGMENT_HEADER_LEN + PIECE + 10);
        assert!(bytes[SEGMENT_HEADER_LEN as usize..].iter().all(|&b| b == 0));
    }
}
