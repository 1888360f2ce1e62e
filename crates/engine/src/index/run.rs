//! Immutable sorted run files.
//!
//! Layout: pages of 128 entries (4 KiB; the last page may be short), then a footer: one
//! CRC32C per page, one fence (key, seq of the page's first entry) per page, and a 40-byte
//! trailer `[magic 8][version 1][pad 7][entries u64][pages u64][crc u32 of footer][pad 4]`.
//! Readers keep the fences and CRCs in memory and read one page per probe; the pages probed
//! last stay decoded in memory ([`CACHED_PAGES`] per run).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals_core::{Direction, StorageError};
use foldhash::HashMap;
use parking_lot::Mutex;

use super::{ENTRY_LEN, Entry};
use crate::device::{Device, Vfs};

/// Entries per page.
pub const PAGE_ENTRIES: usize = 128;
const PAGE_LEN: usize = PAGE_ENTRIES * ENTRY_LEN;
const MAGIC: &[u8; 8] = b"ANNALSIX";
const VERSION: u8 = 1;
const TRAILER_LEN: usize = 40;

/// Decoded pages a run keeps (4 KiB of entries each; a run is immutable, so they never go
/// stale). A lookup of a stream probed recently then skips the page's read, its CRC check
/// and decoding its 128 entries. Runs per level stay under the merge fan-in, so a store
/// keeps a few dozen runs at most.
pub const CACHED_PAGES: usize = 256;

/// Recently read pages, the oldest dropped first.
#[derive(Debug, Default)]
struct PageCache {
    pages: HashMap<usize, Arc<[Entry]>>,
    order: VecDeque<usize>,
}

/// An open run.
#[derive(Debug)]
pub struct Run {
    /// Run id (its file name).
    pub id: u64,
    /// Compaction level.
    pub level: u8,
    /// Number of entries.
    pub entries: u64,
    path: PathBuf,
    device: Arc<dyn Device>,
    fences: Vec<(u64, u64)>,
    crcs: Vec<u32>,
    cache: Mutex<PageCache>,
}

/// The file name of a run.
pub fn file_name(id: u64) -> String {
    format!("{id:010}.run")
}

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> StorageError {
    StorageError::corruption(path, offset, detail)
}

/// Writes sorted entries as a run file and makes it durable.
pub fn write(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    level: u8,
    entries: impl Iterator<Item = Result<Entry, StorageError>>,
) -> Result<Run, StorageError> {
    let path = dir.join(file_name(id));
    let device = vfs
        .open(&path, true)
        .map_err(|e| StorageError::io("creating a run", e))?;
    device
        .set_len(0)
        .map_err(|e| StorageError::io("truncating a run", e))?;
    let mut fences = Vec::new();
    let mut crcs = Vec::new();
    let mut buf = Vec::with_capacity(PAGE_LEN * 64);
    let mut offset = 0u64;
    let mut count = 0u64;
    let mut page = Vec::with_capacity(PAGE_LEN);
    let io = |e| StorageError::io(format!("writing {}", path.display()), e);
    let mut finish_page = |page: &mut Vec<u8>, buf: &mut Vec<u8>, fences: &mut Vec<_>| {
        let first = Entry::decode(&page[..ENTRY_LEN]);
        fences.push((first.key, first.seq));
        crcs.push(crc32c::crc32c(page));
        buf.extend_from_slice(page);
        page.clear();
    };
    for entry in entries {
        entry?.encode(&mut page);
        count += 1;
        if page.len() == PAGE_LEN {
            finish_page(&mut page, &mut buf, &mut fences);
            if buf.len() >= PAGE_LEN * 64 {
                device.write_at(&buf, offset).map_err(io)?;
                offset += buf.len() as u64;
                buf.clear();
            }
        }
    }
    if !page.is_empty() {
        finish_page(&mut page, &mut buf, &mut fences);
    }
    let footer_start = buf.len();
    for crc in &crcs {
        buf.extend_from_slice(&crc.to_le_bytes());
    }
    for (key, seq) in &fences {
        buf.extend_from_slice(&key.to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
    }
    let footer_crc = crc32c::crc32c(&buf[footer_start..]);
    buf.extend_from_slice(MAGIC);
    buf.push(VERSION);
    buf.extend_from_slice(&[0; 7]);
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(&(fences.len() as u64).to_le_bytes());
    buf.extend_from_slice(&footer_crc.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    device.write_at(&buf, offset).map_err(io)?;
    device.sync_data().map_err(io)?;
    Ok(Run {
        id,
        level,
        entries: count,
        path,
        device,
        fences,
        crcs,
        cache: Mutex::default(),
    })
}

impl Run {
    /// Opens a run and checks its footer.
    pub fn open(vfs: &dyn Vfs, dir: &Path, id: u64, level: u8) -> Result<Self, StorageError> {
        let path = dir.join(file_name(id));
        let device = vfs
            .open(&path, false)
            .map_err(|e| StorageError::io("opening a run", e))?;
        let len = device
            .len()
            .map_err(|e| StorageError::io("sizing a run", e))?;
        if len < TRAILER_LEN as u64 {
            return Err(corrupt(&path, 0, "run file is shorter than its trailer"));
        }
        let mut trailer = [0; TRAILER_LEN];
        let trailer_at = len - TRAILER_LEN as u64;
        device
            .read_at(&mut trailer, trailer_at)
            .map_err(|e| StorageError::io("reading a run trailer", e))?;
        let u64_at = |i: usize| super::le_u64(&trailer[i..i + 8]);
        if &trailer[..8] != MAGIC || trailer[8] != VERSION {
            return Err(corrupt(
                &path,
                trailer_at,
                "bad run trailer (magic or version)",
            ));
        }
        let entries = u64_at(16);
        let pages = u64_at(24);
        let footer_crc = u32::from_le_bytes(trailer[32..36].try_into().unwrap_or([0; 4]));
        let expected_pages = entries.div_ceil(PAGE_ENTRIES as u64);
        let footer_len = pages.saturating_mul(20);
        if pages != expected_pages || footer_len > trailer_at {
            return Err(corrupt(
                &path,
                trailer_at,
                "run trailer counts are inconsistent",
            ));
        }
        let footer_at = trailer_at - footer_len;
        if footer_at != entries * ENTRY_LEN as u64 {
            return Err(corrupt(
                &path,
                footer_at,
                "run length does not match its entry count",
            ));
        }
        let mut footer = vec![0; footer_len as usize];
        device
            .read_at(&mut footer, footer_at)
            .map_err(|e| StorageError::io("reading a run footer", e))?;
        if crc32c::crc32c(&footer) != footer_crc {
            return Err(corrupt(&path, footer_at, "run footer checksum mismatch"));
        }
        let pages = pages as usize;
        let crcs = footer[..pages * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let fences = footer[pages * 4..]
            .chunks_exact(16)
            .map(|c| (super::le_u64(&c[..8]), super::le_u64(&c[8..])))
            .collect();
        Ok(Self {
            id,
            level,
            entries,
            path,
            device,
            fences,
            crcs,
            cache: Mutex::default(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.fences.len()
    }

    /// Bytes of decoded pages the run keeps.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().order.len() * PAGE_LEN
    }

    /// One page, from the cache or read, checked and kept.
    pub fn page(&self, index: usize) -> Result<Arc<[Entry]>, StorageError> {
        if let Some(page) = self.cache.lock().pages.get(&index) {
            return Ok(Arc::clone(page));
        }
        let page = self.read_page(index)?;
        let mut cache = self.cache.lock();
        // Another reader may have kept it meanwhile.
        if cache.pages.insert(index, Arc::clone(&page)).is_none() {
            cache.order.push_back(index);
            if cache.order.len() > CACHED_PAGES
                && let Some(oldest) = cache.order.pop_front()
            {
                cache.pages.remove(&oldest);
            }
        }
        Ok(page)
    }

    /// Reads and checks one page (merges and verification read every page once, so they
    /// bypass the cache).
    pub fn read_page(&self, index: usize) -> Result<Arc<[Entry]>, StorageError> {
        let first = index * PAGE_ENTRIES;
        let count = (self.entries as usize)
            .saturating_sub(first)
            .min(PAGE_ENTRIES);
        let offset = (first * ENTRY_LEN) as u64;
        let mut page = [0; PAGE_LEN];
        let buf = &mut page[..count * ENTRY_LEN];
        self.device
            .read_at(buf, offset)
            .map_err(|e| StorageError::io(format!("reading {}", self.path.display()), e))?;
        if self.crcs.get(index).copied() != Some(crc32c::crc32c(buf)) {
            return Err(corrupt(&self.path, offset, "index page checksum mismatch"));
        }
        Ok(buf.chunks_exact(ENTRY_LEN).map(Entry::decode).collect())
    }

    /// Up to `max` entries of `key` from seq `first` (inclusive) in `direction`.
    pub fn range(
        &self,
        key: u64,
        first: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        // The last page whose first entry is <= the probe holds it, if any page does.
        let start = self.fences.partition_point(|f| *f <= (key, first));
        let Some(mut index) = start.checked_sub(1) else {
            if direction == Direction::Backward || self.fences.is_empty() {
                return Ok(out);
            }
            return self.forward_from(0, key, first, max);
        };
        if direction == Direction::Forward {
            return self.forward_from(index, key, first, max);
        }
        loop {
            let page = self.page(index)?;
            for e in page.iter().rev() {
                if e.key < key {
                    return Ok(out);
                }
                if e.key == key && e.seq <= first {
                    out.push(*e);
                    if out.len() == max {
                        return Ok(out);
                    }
                }
            }
            let Some(prev) = index.checked_sub(1) else {
                return Ok(out);
            };
            index = prev;
        }
    }

    fn forward_from(
        &self,
        mut index: usize,
        key: u64,
        first: u64,
        max: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        while index < self.pages() && out.len() < max {
            for &e in self.page(index)?.iter() {
                if e.key > key {
                    return Ok(out);
                }
                if e.key == key && e.seq >= first {
                    out.push(e);
                    if out.len() == max {
                        return Ok(out);
                    }
                }
            }
            index += 1;
        }
        Ok(out)
    }

    /// Every entry, in order (for merges and verification).
    pub fn iter(self: &Arc<Self>) -> impl Iterator<Item = Result<Entry, StorageError>> + use<> {
        let run = Arc::clone(self);
        (0..run.pages()).flat_map(move |i| match run.read_page(i) {
            Ok(page) => page.iter().copied().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    }
}

/// Merges sorted runs into one sorted stream of entries.
pub fn merge(runs: &[Arc<Run>]) -> impl Iterator<Item = Result<Entry, StorageError>> + use<> {
    let mut iters: Vec<_> = runs.iter().map(|r| r.iter().peekable()).collect();
    std::iter::from_fn(move || {
        let mut best: Option<(usize, Entry)> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            match it.peek() {
                Some(Err(_)) => return it.next(),
                Some(Ok(e)) if best.is_none_or(|(_, b)| *e < b) => best = Some((i, *e)),
                _ => {}
            }
        }
        let (i, _) = best?;
        iters[i].next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::StdVfs;

    fn entry(i: u64) -> Entry {
        Entry {
            key: i / 3,
            seq: i % 3,
            position: i,
            address: i * 100,
        }
    }

    #[test]
    fn probed_pages_are_kept_decoded_and_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let count = (CACHED_PAGES as u64 + 10) * PAGE_ENTRIES as u64;
        let run = write(&StdVfs, dir.path(), 1, 0, (0..count).map(|i| Ok(entry(i)))).expect("run");
        let first = run.page(3).expect("page");
        assert_eq!(&first[..], &run.read_page(3).expect("read")[..]);
        assert!(Arc::ptr_eq(&first, &run.page(3).expect("again")), "kept");
        assert_eq!(run.cached_bytes(), PAGE_LEN);
        // Lookups go through the cache and still find every entry.
        let found = run.range(100, 0, Direction::Forward, 3).expect("range");
        assert_eq!(found, vec![entry(300), entry(301), entry(302)]);
        for index in 0..run.pages() {
            run.page(index).expect("page");
        }
        assert_eq!(run.cached_bytes(), CACHED_PAGES * PAGE_LEN);
        // The oldest went first.
        assert!(!run.cache.lock().pages.contains_key(&3));
        assert!(run.cache.lock().pages.contains_key(&(run.pages() - 1)));
        // Merges read past the cache.
        let all: Vec<Entry> = Arc::new(run).iter().map(|e| e.expect("entry")).collect();
        assert_eq!(all.len() as u64, count);
    }
}
