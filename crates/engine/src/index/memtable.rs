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

    /// All entries, sorted. Each key's entries are already in seq order, so only the keys
    /// are sorted (far fewer than the entries: sorting every entry was most of a flush).
    pub fn sorted(&self) -> Vec<Entry> {
        let mut keys: Vec<(&u64, &Vec<Entry>)> = self.by_key.iter().collect();
        keys.sort_unstable_by_key(|(key, _)| **key);
        let mut all = Vec::with_capacity(self.len);
        for (_, entries) in keys {
            let start = all.len();
            all.extend_from_slice(entries);
            // Inserts keep seq order; a table built otherwise is still returned sorted.
            if !all[start..].is_sorted() {
                all[start..].sort_unstable();
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: u64, seq: u64) -> Entry {
        Entry {
            key,
            seq,
            position: key ^ seq,
            address: seq,
        }
    }

    #[test]
    fn sorted_returns_every_entry_in_key_then_seq_order() {
        let mut table = Memtable::default();
        // Keys interleaved as a group's entries are (stream, category, type per record),
        // one key inserted out of seq order.
        for seq in 0..50 {
            for key in [9, 3, u64::MAX, 0, 7] {
                table.insert(entry(key, seq));
            }
        }
        for seq in [5, 1, 3] {
            table.insert(entry(4, seq));
        }
        let mut expected: Vec<Entry> = table.by_key.values().flatten().copied().collect();
        expected.sort_unstable();
        let sorted = table.sorted();
        assert_eq!(sorted.len(), 253);
        assert_eq!(sorted, expected);
        assert_eq!(sorted.first(), Some(&entry(0, 0)));
        assert_eq!(sorted.last(), Some(&entry(u64::MAX, 49)));
    }
}
