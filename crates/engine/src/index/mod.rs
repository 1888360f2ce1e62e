//! The indexes: stream, category, event type, and a sparse position index of `$all`.
//!
//! All four live in one LSM structure keyed by a 64-bit hash of (kind, name). New entries go
//! to an in-memory memtable; when it holds `memtable_entries` entries it is frozen and a
//! background thread writes it as an immutable sorted run file, then records the run and the
//! log address it covers in the manifest (the recovery checkpoint). Runs are merged four at a
//! time per level. Memory held: the memtables (bounded by the threshold) plus 20 bytes per
//! 4 KiB page of run (about 160 KiB per million entries), and up to 1 MiB of recently read
//! pages per run.
//!
//! The index is derived data: it can always be rebuilt from the log.

pub mod manifest;
pub mod memtable;
pub mod run;

use std::cmp::Ordering;

use annals_core::Direction;
use xxhash_rust::xxh3::xxh3_64;

/// An index entry: 32 bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// Hash of the key ([`key_hash`]).
    pub key: u64,
    /// Sequence number under the key (the revision, for streams).
    pub seq: u64,
    /// Global position of the record.
    pub position: u64,
    /// Log address of the record (segment << 32 | offset).
    pub address: u64,
}

/// Bytes per encoded entry.
pub const ENTRY_LEN: usize = 32;

impl Entry {
    /// Encodes into 32 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.key, self.seq, self.position, self.address] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Decodes 32 bytes.
    pub fn decode(b: &[u8]) -> Self {
        let u = |i: usize| le_u64(&b[i * 8..i * 8 + 8]);
        Self {
            key: u(0),
            seq: u(1),
            position: u(2),
            address: u(3),
        }
    }

    /// Compares the entry's (key, seq) with a probe.
    pub fn cmp_probe(&self, key: u64, seq: u64) -> Ordering {
        (self.key, self.seq).cmp(&(key, seq))
    }
}

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyKind {
    /// A stream (regular or `$$`).
    Stream = 1,
    /// A category.
    Category = 2,
    /// An event type.
    EventType = 3,
    /// The sparse position index of `$all` (one key).
    All = 4,
}

/// The hash of a key.
pub fn key_hash(kind: KeyKind, name: &str) -> u64 {
    // Names are short; the hash runs for every index entry written, so no allocation.
    const ON_STACK: usize = 127;
    let name = name.as_bytes();
    if name.len() > ON_STACK {
        let mut bytes = Vec::with_capacity(name.len() + 1);
        bytes.push(kind as u8);
        bytes.extend_from_slice(name);
        return xxh3_64(&bytes);
    }
    let mut bytes = [0u8; ON_STACK + 1];
    bytes[0] = kind as u8;
    bytes[1..=name.len()].copy_from_slice(name);
    xxh3_64(&bytes[..=name.len()])
}

/// Merges per-source results (each sorted in `direction`) and keeps the first `max`.
pub fn merge_results(mut all: Vec<Entry>, direction: Direction, max: usize) -> Vec<Entry> {
    all.sort_unstable_by_key(|e| (e.seq, e.position));
    if direction == Direction::Backward {
        all.reverse();
    }
    all.truncate(max);
    all
}

/// Reads a little-endian u64 from exactly 8 bytes.
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals_core::StorageError;
use parking_lot::RwLock;

use crate::device::Vfs;
use manifest::Manifest;
use memtable::Memtable;
use run::Run;

/// Runs per level before they are merged into one run of the next level.
const MERGE_FAN_IN: usize = 4;

/// The whole index: memtables and runs, plus the machinery to flush and merge.
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    active: Memtable,
    frozen: Option<Frozen>,
    /// The last flushed memtable, emptied with its memory kept, to become the next active
    /// one (see [`Memtable::empty_keeping_memory`]).
    spare: Option<Memtable>,
    runs: Arc<Vec<Arc<Run>>>,
    manifest: Manifest,
}

/// A memtable being written as a run, with the checkpoint it completes.
#[derive(Debug, Clone)]
struct Frozen {
    table: Arc<Memtable>,
    checkpoint_position: u64,
    checkpoint_address: u64,
}

impl Index {
    /// Opens the index in `dir`. A missing or unreadable manifest or run yields an empty
    /// index (with the reason) so the caller rebuilds it from the log.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> (Self, Option<StorageError>) {
        let (manifest, runs, problem) = match Self::load(vfs.as_ref(), dir) {
            Ok((manifest, runs)) => (manifest, runs, None),
            Err(e) => (Manifest::default(), Vec::new(), Some(e)),
        };
        let known: Vec<String> = manifest
            .runs
            .iter()
            .map(|(id, _)| run::file_name(*id))
            .collect();
        let state = State {
            runs: Arc::new(runs),
            manifest,
            ..State::default()
        };
        let index = Self {
            dir: dir.to_owned(),
            vfs,
            state: RwLock::new(state),
        };
        if problem.is_none() {
            index.remove_orphans(&known);
        }
        (index, problem)
    }

    fn load(vfs: &dyn Vfs, dir: &Path) -> Result<(Manifest, Vec<Arc<Run>>), StorageError> {
        let Some(manifest) = Manifest::load(vfs, dir)? else {
            return Ok((Manifest::default(), Vec::new()));
        };
        let runs = manifest
            .runs
            .iter()
            .map(|&(id, level)| Run::open(vfs, dir, id, level).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok((manifest, runs))
    }

    /// Removes run files the manifest does not list (left by a crash mid-flush or mid-merge).
    fn remove_orphans(&self, known: &[String]) {
        let Ok(names) = self.vfs.list(&self.dir) else {
            return;
        };
        for name in names
            .iter()
            .filter(|n| n.ends_with(".run") && !known.contains(n))
        {
            if let Err(e) = self.vfs.remove(&self.dir.join(name)) {
                tracing::warn!(file = name, error = %e, "could not remove an orphaned run");
            }
        }
    }

    /// Deletes every run and the manifest (before a rebuild).
    pub fn reset(&self) -> Result<(), StorageError> {
        let io = |e| StorageError::io("clearing the index for a rebuild", e);
        for name in self.vfs.list(&self.dir).map_err(io)? {
            if name.ends_with(".run") || name.starts_with(manifest::FILE_NAME) {
                self.vfs.remove(&self.dir.join(name)).map_err(io)?;
            }
        }
        self.vfs.sync_dir(&self.dir).map_err(io)?;
        *self.state.write() = State::default();
        Ok(())
    }

    /// Where log replay starts: (position, address) from the manifest.
    pub fn checkpoint(&self) -> Option<(u64, u64)> {
        let state = self.state.read();
        let m = &state.manifest;
        (!m.runs.is_empty()).then_some((m.checkpoint_position, m.checkpoint_address))
    }

    /// Adds entries (one group commit's worth).
    pub fn insert(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut state = self.state.write();
        for e in entries {
            state.active.insert(e);
        }
    }

    /// Entries in the active memtable.
    pub fn active_len(&self) -> usize {
        self.state.read().active.len()
    }

    /// Freezes the active memtable for flushing, if none is being flushed. `checkpoint_*`
    /// is the log position and address after the last record in it.
    pub fn freeze(&self, checkpoint_position: u64, checkpoint_address: u64) -> bool {
        let mut state = self.state.write();
        if state.frozen.is_some() || state.active.is_empty() {
            return false;
        }
        let next = state.spare.take().unwrap_or_default();
        let table = Arc::new(std::mem::replace(&mut state.active, next));
        state.frozen = Some(Frozen {
            table,
            checkpoint_position,
            checkpoint_address,
        });
        true
    }

    /// Writes the frozen memtable as a run, merges full levels, and records both in the
    /// manifest. Called from the flusher thread.
    pub fn flush_frozen(&self) -> Result<(), StorageError> {
        let (frozen, mut manifest, mut runs) = {
            let state = self.state.read();
            let Some(frozen) = state.frozen.clone() else {
                return Ok(());
            };
            (frozen, state.manifest.clone(), state.runs.as_ref().clone())
        };
        let id = manifest.next_run_id;
        let sorted = frozen.table.sorted();
        let run = run::write(self.vfs.as_ref(), &self.dir, id, 0, sorted.map(Ok))?;
        manifest.next_run_id += 1;
        runs.push(Arc::new(run));
        let mut obsolete = Vec::new();
        while let Some(level) = full_level(&runs) {
            let (merging, keep): (Vec<_>, Vec<_>) =
                runs.into_iter().partition(|r| r.level == level);
            let id = manifest.next_run_id;
            manifest.next_run_id += 1;
            let merged = run::write(
                self.vfs.as_ref(),
                &self.dir,
                id,
                level + 1,
                run::merge(&merging),
            )?;
            runs = keep;
            runs.push(Arc::new(merged));
            obsolete.extend(merging);
        }
        manifest.runs = runs.iter().map(|r| (r.id, r.level)).collect();
        manifest.checkpoint_position = frozen.checkpoint_position;
        manifest.checkpoint_address = frozen.checkpoint_address;
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("syncing the index directory", e))?;
        manifest.store(self.vfs.as_ref(), &self.dir)?;
        {
            let mut state = self.state.write();
            state.runs = Arc::new(runs);
            state.manifest = manifest;
            state.frozen = None;
        }
        // Readers may still hold the table; then its memory goes when they are done.
        if let Ok(mut table) = Arc::try_unwrap(frozen.table) {
            table.empty_keeping_memory();
            self.state.write().spare = Some(table);
        }
        for run in obsolete {
            // Readers holding the run keep their open handle; the name can go now.
            if let Err(e) = self.vfs.remove(run.path()) {
                tracing::warn!(path = %run.path().display(), error = %e, "could not remove a merged run");
            }
        }
        Ok(())
    }

    /// Up to `max` entries of a key from seq `first` (inclusive) in `direction`.
    pub fn range(
        &self,
        key: u64,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let (mut all, frozen, runs) = {
            let state = self.state.read();
            let active = state.active.range(key, first, direction, max);
            (
                active,
                state.frozen.as_ref().map(|f| Arc::clone(&f.table)),
                Arc::clone(&state.runs),
            )
        };
        if let Some(frozen) = frozen {
            all.extend(frozen.range(key, first, direction, max));
        }
        for run in runs.iter() {
            all.extend(run.range(key, first, direction, max)?);
        }
        Ok(merge_results(all, direction, max))
    }

    /// The entry with the highest seq under a key.
    pub fn last(&self, key: u64) -> Result<Option<Entry>, StorageError> {
        Ok(self
            .range(key, u64::MAX, Direction::Backward, 1)?
            .into_iter()
            .next())
    }

    /// The runs (for verification).
    pub fn runs(&self) -> Arc<Vec<Arc<Run>>> {
        Arc::clone(&self.state.read().runs)
    }

    /// Memory held by the index, in bytes (approximate).
    pub fn memory_bytes(&self) -> usize {
        let state = self.state.read();
        state.active.memory_bytes()
            + state.frozen.as_ref().map_or(0, |f| f.table.memory_bytes())
            + state.spare.as_ref().map_or(0, Memtable::memory_bytes)
            + state
                .runs
                .iter()
                .map(|r| r.pages() * 20 + r.cached_bytes())
                .sum::<usize>()
    }
}

fn full_level(runs: &[Arc<Run>]) -> Option<u8> {
    let mut counts = std::collections::BTreeMap::new();
    for r in runs {
        *counts.entry(r.level).or_insert(0usize) += 1;
    }
    counts
        .into_iter()
        .find(|(_, n)| *n >= MERGE_FAN_IN)
        .map(|(level, _)| level)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are stored in index runs: the hash of `kind ‖ name` must never change.
    #[test]
    fn key_hash_is_xxh3_of_the_kind_byte_and_the_name() {
        for name in [
            "",
            "order-42",
            &"s".repeat(127),
            &"l".repeat(128),
            &"x".repeat(512),
        ] {
            let mut bytes = vec![KeyKind::Stream as u8];
            bytes.extend_from_slice(name.as_bytes());
            assert_eq!(key_hash(KeyKind::Stream, name), xxh3_64(&bytes), "{name}");
        }
        assert_eq!(key_hash(KeyKind::Category, "order"), 0xfde8_9942_f009_7b6c);
    }

    fn entries(key: u64, seqs: std::ops::Range<u64>) -> Vec<Entry> {
        seqs.map(|seq| Entry {
            key,
            seq,
            position: seq * 10 + key,
            address: seq,
        })
        .collect()
    }

    /// A flushed memtable's memory becomes the next active one's, and reads see only what
    /// was inserted since, with the flushed entries in the run.
    #[test]
    fn a_flushed_memtable_is_reused_emptied_and_reads_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (index, problem) = Index::open(Arc::new(crate::device::StdVfs), dir.path());
        assert!(problem.is_none());
        for generation in 0..3u64 {
            let seqs = generation * 100..(generation + 1) * 100;
            index.insert(entries(1, seqs.clone()).into_iter().chain(entries(2, seqs)));
            assert_eq!(index.active_len(), 200);
            assert!(index.freeze(generation, generation));
            index.flush_frozen().unwrap();
            let spare = index
                .state
                .read()
                .spare
                .as_ref()
                .map(Memtable::memory_bytes);
            assert!(
                spare.is_some_and(|bytes| bytes >= 200 * size_of::<Entry>()),
                "generation {generation}: the flushed table is kept as the spare"
            );
        }
        index.insert(entries(1, 300..310));
        assert_eq!(index.active_len(), 10, "the reused table starts empty");
        let all = index.range(1, 0, Direction::Forward, usize::MAX).unwrap();
        assert_eq!(all, entries(1, 0..310));
        let last = index.range(2, u64::MAX, Direction::Backward, 5).unwrap();
        let mut expected = entries(2, 295..300);
        expected.reverse();
        assert_eq!(last, expected);
    }
}
