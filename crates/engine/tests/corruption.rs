//! T3: the corruption matrix. Damage (bit flip, truncation, zeroed 4-KiB sector, a block
//! copied to the wrong offset) in the tail, in the middle of a sealed segment, in an index
//! run and in the manifest. Expected: a torn tail is cut; damage elsewhere in the log makes
//! open fail naming file and offset; damage to the index is either rebuilt from the log or
//! reported by the read that meets it, naming the file. Never a panic, never wrong data.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals_core::{
    EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, ReadAllOptions,
    ReadStreamOptions, StorageError, StreamName,
};
use annals_engine::device::sim::{Plan, SimVfs};
use annals_engine::record::{self, SEGMENT_HEADER_LEN};
use annals_engine::{Config, Engine, OpenError};
use bytes::Bytes;

const EVENTS: u64 = 300;

fn config(vfs: &SimVfs) -> Config {
    Config {
        vfs: Arc::new(vfs.clone()),
        segment_bytes: 8 << 10,
        memtable_entries: 200,
        ..Config::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A closed store with several segments and index runs. Each append waits until the index
/// flusher has caught up, so the layout (runs, checkpoint) is the same on every run, however
/// busy the machine is.
fn build() -> SimVfs {
    let disk = SimVfs::new(Plan::Healthy);
    let engine = Engine::open("/db", config(&disk)).unwrap();
    runtime().block_on(async {
        for n in 0..EVENTS {
            let stream = StreamName::new(format!("acct-{}", n % 7)).unwrap();
            let event = NewEvent::json(EventType::new("Moved").unwrap(), format!("{{\"n\":{n}}}"));
            engine
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .unwrap();
            while engine.stats().index_flushes < engine.stats().index_freezes {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    });
    engine.close();
    disk
}

/// A private copy of a disk (everything on it is synced).
fn copy(disk: &SimVfs) -> SimVfs {
    disk.after_power_loss(0)
}

/// Offsets where records start in a segment image.
fn record_starts(image: &[u8]) -> Vec<u64> {
    let bytes = Bytes::copy_from_slice(image);
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut starts = Vec::new();
    while let Ok((_, len)) = record::decode(&bytes.slice(at..)) {
        starts.push(at as u64);
        at += len;
    }
    starts
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    BitFlip,
    Truncate,
    ZeroSector,
    CopyBlock,
}

const DAMAGES: [Damage; 4] = [
    Damage::BitFlip,
    Damage::Truncate,
    Damage::ZeroSector,
    Damage::CopyBlock,
];

/// Applies damage at byte `at`; returns the first byte changed.
fn damage(disk: &SimVfs, path: &Path, kind: Damage, at: usize) -> usize {
    let mut image = disk.read_file(path).unwrap();
    let changed = match kind {
        Damage::BitFlip => {
            image[at] ^= 0x04;
            at
        }
        Damage::Truncate => {
            image.truncate(at);
            at
        }
        Damage::ZeroSector => {
            let start = at / 4096 * 4096;
            let end = (start + 4096).min(image.len());
            let first_nonzero = (start..end).find(|i| image[*i] != 0).unwrap_or(start);
            image[start..end].fill(0);
            first_nonzero
        }
        Damage::CopyBlock => {
            // Copy up to 512 bytes from near the start of the file over `at`.
            let from = 64.min(image.len() / 2);
            let src: Vec<u8> = image[from..(from + 512).min(image.len())].to_vec();
            let end = (at + src.len()).min(image.len());
            let first_diff = (at..end).find(|i| image[*i] != src[i - at]).unwrap_or(at);
            image[at..end].copy_from_slice(&src[..end - at]);
            first_diff
        }
    };
    assert!(disk.write_file(path, image));
    changed
}

fn segments(disk: &SimVfs) -> Vec<PathBuf> {
    disk.paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

fn read_everything(engine: &Engine) -> Result<usize, StorageError> {
    runtime().block_on(async {
        let all = engine
            .read_all(ReadAllOptions::forward())
            .await
            .map_err(storage)?
            .events;
        for s in 0..7 {
            let stream = StreamName::new(format!("acct-{s}")).unwrap();
            engine
                .read_stream(&stream, ReadStreamOptions::forward())
                .await
                .map_err(storage)?;
        }
        let category = StreamName::new("$ce-acct").unwrap();
        engine
            .read_stream(&category, ReadStreamOptions::forward())
            .await
            .map_err(storage)?;
        Ok(all.len())
    })
}

/// Where the damage was reported: by open, or (for data before the index checkpoint, which
/// open does not re-read) by the first read that meets it.
fn detect(disk: &SimVfs, what: &str) -> (PathBuf, u64) {
    match Engine::open("/db", config(disk)) {
        Err(OpenError::Storage(StorageError::Corruption { file, offset, .. })) => (file, offset),
        Err(other) => panic!("{what}: expected corruption, got {other}"),
        Ok(engine) => match read_everything(&engine) {
            Err(StorageError::Corruption { file, offset, .. }) => (file, offset),
            Err(other) => panic!("{what}: expected corruption, got {other}"),
            Ok(n) => panic!("{what}: damage went unnoticed ({n} events read)"),
        },
    }
}

fn storage(e: annals_core::ReadError) -> StorageError {
    match e {
        annals_core::ReadError::Storage(s) => s,
        other => panic!("unexpected read error {other}"),
    }
}

#[test]
fn damage_in_a_sealed_segment_is_refused_with_file_and_offset() {
    let original = build();
    let sealed = segments(&original)[1].clone();
    let starts = record_starts(&original.read_file(&sealed).unwrap());
    assert!(starts.len() > 10);
    let mut cases = 0;
    for kind in DAMAGES {
        for &target in &[
            starts[1] + 20,
            starts[starts.len() / 2] + 3,
            starts[starts.len() - 2] + 70,
        ] {
            let disk = copy(&original);
            let changed = damage(&disk, &sealed, kind, target as usize) as u64;
            let failing = starts
                .iter()
                .rev()
                .find(|s| **s <= changed)
                .copied()
                .unwrap_or(0);
            let (file, offset) = detect(&disk, &format!("{kind:?} at {target}"));
            if matches!(kind, Damage::Truncate) && file != sealed {
                // A shortened segment shows as the next one not following on.
                assert!(
                    file.to_string_lossy().ends_with(".seg"),
                    "{kind:?}: {file:?}"
                );
            } else {
                assert_eq!(
                    (file, offset),
                    (sealed.clone(), failing),
                    "{kind:?} at {target}"
                );
            }
            cases += 1;
        }
    }
    println!("T3 sealed segment: {cases} damaged copies, all refused with file and offset");
}

#[test]
fn damage_in_the_last_group_is_cut_as_a_torn_tail() {
    let original = build();
    let last = segments(&original).last().unwrap().clone();
    let image = original.read_file(&last).unwrap();
    let starts = record_starts(&image);
    let tail = *starts.last().unwrap() as usize;
    for kind in [Damage::BitFlip, Damage::Truncate] {
        let disk = copy(&original);
        damage(&disk, &last, kind, tail + 30);
        let engine = Engine::open("/db", config(&disk)).unwrap();
        assert_eq!(
            read_everything(&engine).unwrap() as u64,
            EVENTS - 1,
            "{kind:?}"
        );
        engine.close();
    }
    // Zeroing the tail (a file system that extended the file but lost the data).
    let disk = copy(&original);
    let mut zeroed = image.clone();
    zeroed.extend(std::iter::repeat_n(0, 4096));
    disk.write_file(&last, zeroed);
    let engine = Engine::open("/db", config(&disk)).unwrap();
    assert_eq!(read_everything(&engine).unwrap() as u64, EVENTS);
}

#[test]
fn damage_before_a_later_commit_in_the_last_segment_is_corruption() {
    let original = build();
    let last = segments(&original).last().unwrap().clone();
    let starts = record_starts(&original.read_file(&last).unwrap());
    assert!(starts.len() > 3, "the last segment needs several commits");
    for kind in [Damage::BitFlip, Damage::ZeroSector, Damage::CopyBlock] {
        let disk = copy(&original);
        let changed = damage(&disk, &last, kind, starts[1] as usize + 10) as u64;
        let failing = starts
            .iter()
            .rev()
            .find(|s| **s <= changed)
            .copied()
            .unwrap_or(0);
        let (file, offset) = detect(&disk, &format!("{kind:?}"));
        // Open reports the first damaged record it replays (from the index checkpoint); a
        // read reports the first one it meets. Either is a record inside the damage.
        assert_eq!(file, last, "{kind:?}");
        let damaged_end = changed + 4096;
        assert!(
            (starts.contains(&offset) || offset == 0) && (failing..damaged_end).contains(&offset),
            "{kind:?}: reported offset {offset}, damage from record {failing}"
        );
    }
}

#[test]
fn damage_to_the_index_is_rebuilt_or_reported_never_wrong() {
    let original = build();
    let index_files: Vec<PathBuf> = original
        .paths()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/index/"))
        .collect();
    assert!(index_files.len() >= 2, "{index_files:?}");
    let mut rebuilt = 0;
    let mut reported = 0;
    for file in &index_files {
        let len = original.read_file(file).unwrap().len();
        for kind in DAMAGES {
            // Spread over the file, so some damage lands in pages that recovery itself reads
            // (the sparse `$all` entries, the restrictions) and some in pages only reads use.
            let spread = (0..8).map(|k| len * k / 8 + 1);
            for at in spread.chain([len / 3, len - 10]) {
                let disk = copy(&original);
                damage(&disk, file, kind, at.max(1));
                let engine = Engine::open("/db", config(&disk))
                    .unwrap_or_else(|e| panic!("{kind:?} in {file:?}: open failed: {e}"));
                match read_everything(&engine) {
                    Ok(n) => {
                        assert_eq!(n as u64, EVENTS, "{kind:?} in {file:?}");
                        rebuilt += 1;
                    }
                    Err(StorageError::Corruption { file: named, .. }) => {
                        assert_eq!(&named, file, "{kind:?}");
                        reported += 1;
                    }
                    Err(other) => panic!("{kind:?} in {file:?}: {other}"),
                }
                engine.close();
            }
        }
    }
    println!(
        "T3 index: {rebuilt} damaged copies rebuilt or unaffected, {reported} reported by reads"
    );
}
