//! The in-memory part of the index.

use annals_core::Direction;
use foldhash::HashMap;

use super::Entry;

/// Entries not yet in a run, grouped by key, each group in insertion (= seq) order.
#[derive(Debug, Default)]
pub struct Memtable {
    by_key: HashMap<u64, Vec<Entry>>,
    len: usize,
}

impl Memtable {
    /// Adds an entry; entries of one key must arrive in increasing seq order.
    pub fn insert(&mut self, entry: Entry) {
        self.by_key.entry(entry.key).or_default().push(entry);
        self.len += 1;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` entries of `key` from seq `first` (inclusive) in `direction`.
    pub fn range(&self, key: u64, first: u64, direction: Direction, max: usize) -> Vec<Entry> {
        let Some(entries) = self.by_key.get(&key) else {
            return Vec::new();
        };
        match direction {
            Direction::Forward => {
                let start = entries.partition_point(|e| e.seq < first);
                entries[start..].iter().take(max).copied().collect()
            }
            Direction::Backward => {
                let end = entries.partition_point(|e| e.seq <= first);
                entries[..end].iter().rev().take(max).copied().collect()
            }
        }
    }

    /// All entries, sorted.
    pub fn sorted(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.by_key.values().flatten().copied().collect();
        all.sort_unstable();
        all
    }
}
