//! The in-memory part of the index.

use std::borrow::Cow;

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

    /// Removes every entry but keeps the memory of the keys that had some, for the next
    /// memtable: a fresh one's growth touches new pages, and each first touch is a page
    /// fault on the path from a group's sync to its answers (W1 at 64 writers: ~5,000 a
    /// second, ~1.3 per group). Keys that had none since the last emptying are dropped, and
    /// each key keeps room for at most twice what it had, so what is kept stays within
    /// twice what the last table held, whatever keys come and go.
    pub fn empty_keeping_memory(&mut self) {
        self.by_key.retain(|_, entries| !entries.is_empty());
        for entries in self.by_key.values_mut() {
            entries.shrink_to(entries.len().saturating_mul(2));
            entries.clear();
        }
        self.len = 0;
    }

    /// Memory held, in bytes (roughly: the map's slots and the entries' capacity).
    pub fn memory_bytes(&self) -> usize {
        let slot = size_of::<(u64, Vec<Entry>)>();
        self.by_key.capacity() * slot
            + self
                .by_key
                .values()
                .map(|entries| entries.capacity() * size_of::<Entry>())
                .sum::<usize>()
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

    /// All entries, sorted, without first copying them into one list (a flushed table's
    /// worth, 32 MiB by default, which a fresh allocation pays for in page faults). Each
    /// key's entries are already in seq order, so only the keys are sorted (far fewer than
    /// the entries: sorting every entry was most of a flush).
    pub fn sorted(&self) -> impl Iterator<Item = Entry> + '_ {
        let mut keys: Vec<(u64, Cow<'_, [Entry]>)> = self
            .by_key
            .iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(key, entries)| (*key, in_seq_order(entries)))
            .collect();
        keys.sort_unstable_by_key(|(key, _)| *key);
        keys.into_iter()
            .flat_map(|(_, entries)| (0..entries.len()).map(move |i| entries[i]))
    }
}

/// A key's entries in seq order: as they are, since inserts keep that order, or sorted, for
/// a table built otherwise.
fn in_seq_order(entries: &[Entry]) -> Cow<'_, [Entry]> {
    if entries.is_sorted() {
        return Cow::Borrowed(entries);
    }
    let mut sorted = entries.to_vec();
    sorted.sort_unstable();
    Cow::Owned(sorted)
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
        let sorted: Vec<Entry> = table.sorted().collect();
        assert_eq!(sorted.len(), 253);
        assert_eq!(sorted, expected);
        assert_eq!(sorted.first(), Some(&entry(0, 0)));
        assert_eq!(sorted.last(), Some(&entry(u64::MAX, 49)));
    }

    #[test]
    fn an_emptied_table_keeps_the_memory_of_the_keys_it_used_and_acts_empty() {
        let mut table = Memtable::default();
        for seq in 0..1000 {
            table.insert(entry(1, seq));
        }
        table.insert(entry(2, 0));
        table.empty_keeping_memory();
        assert!(table.is_empty());
        assert_eq!(table.len(), 0);
        assert_eq!(table.sorted().count(), 0);
        assert!(table.range(1, 0, Direction::Forward, 10).is_empty());
        assert!(
            table.by_key[&1].capacity() >= 1000,
            "key 1's memory is kept"
        );
        // Used again, it holds only what was inserted since.
        table.insert(entry(1, 5));
        table.insert(entry(3, 7));
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.sorted().collect::<Vec<_>>(),
            vec![entry(1, 5), entry(3, 7)]
        );
        assert_eq!(
            table.range(1, 0, Direction::Backward, 10),
            Vec::<Entry>::new(),
            "backward from seq 0 finds nothing below 5"
        );
        assert_eq!(table.range(1, 0, Direction::Forward, 10), vec![entry(1, 5)]);
        // Key 2 had nothing since the last emptying: the next one drops it; key 1 had one
        // entry this time, so it keeps room for two, not its old thousand.
        table.empty_keeping_memory();
        assert!(table.by_key.contains_key(&1) && table.by_key.contains_key(&3));
        assert!(!table.by_key.contains_key(&2));
        assert!(
            table.by_key[&1].capacity() < 1000,
            "key 1's unused room is freed"
        );
        assert!(table.memory_bytes() < 1000 * size_of::<Entry>());
    }
}
