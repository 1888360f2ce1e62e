//! The offline checker behind `annals verify`: reads every record and every index entry
//! without changing anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals_core::StorageError;

use crate::device::{StdVfs, Vfs};
use crate::index::manifest::Manifest;
use crate::index::run::Run;
use crate::index::{KeyKind, key_hash};
use crate::log::{self, Segment, read_records};
use crate::record::{Record, SEGMENT_HEADER_LEN};

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Segment files read.
    pub segments: u64,
    /// Records whose checksum and position were verified.
    pub records: u64,
    /// Bytes of records.
    pub record_bytes: u64,
    /// Index runs read.
    pub runs: u64,
    /// Index entries checked against the log.
    pub index_entries: u64,
    /// The next position (number of records, since positions are gap-free).
    pub next_position: u64,
    /// A torn tail that opening would cut: (file, offset, reason).
    pub torn_tail: Option<(PathBuf, u64, String)>,
    /// Problems: each names a file and offset.
    pub problems: Vec<String>,
}

impl Report {
    /// True when nothing is wrong (a torn tail is not a problem: opening repairs it).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store in `dir` (which must not be open in another process for writing).
pub fn verify(dir: &Path, mut progress: impl FnMut(&str)) -> Result<Report, StorageError> {
    let vfs = StdVfs;
    let mut report = Report::default();
    let log_dir = dir.join("log");
    let numbers = log::list(&vfs, &log_dir)?;
    let mut segments = HashMap::new();
    let mut expected = None;
    let last = numbers.last().copied();
    for number in numbers {
        let segment = match Segment::open(&vfs, &log_dir, number) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        report.segments += 1;
        progress(&format!("checking {}", segment.path.display()));
        let next = expected.unwrap_or(segment.base.0);
        if segment.base.0 != next {
            report.problems.push(format!(
                "{}: starts at position {}, previous segment ended at {next}",
                segment.path.display(),
                segment.base
            ));
        }
        expected = Some(check_segment(
            &segment,
            segment.base.0,
            last == Some(number),
            &mut report,
        )?);
        segments.insert(number, segment);
    }
    report.next_position = expected.unwrap_or(0);
    check_index(
        &vfs,
        &dir.join("index"),
        &segments,
        &mut report,
        &mut progress,
    )?;
    Ok(report)
}

fn check_segment(
    segment: &Segment,
    mut expected: u64,
    is_last: bool,
    report: &mut Report,
) -> Result<u64, StorageError> {
    let len = segment
        .device
        .len()
        .map_err(|e| StorageError::io("sizing a segment", e))?;
    let mut failure = None;
    let mut open_txn = None;
    read_records(
        segment,
        SEGMENT_HEADER_LEN,
        len,
        log::SCAN_CHUNK,
        |item| match item {
            Ok((record, at, size)) if record.event.position.0 == expected => {
                expected += 1;
                report.records += 1;
                report.record_bytes += size as u64;
                open_txn = if record.ends_txn() {
                    None
                } else {
                    open_txn.or(Some(at))
                };
                true
            }
            Ok((record, at, _)) => {
                let p = record.event.position;
                failure = Some((at, format!("record has position {p}, expected {expected}")));
                false
            }
            Err((at, e)) => {
                failure = Some((at, e.to_string()));
                false
            }
        },
    )?;
    let path = segment.path.clone();
    if is_last
        && let Some((at, _)) = failure
        && log::zeros_from(segment, at, len)?
    {
        // Zero-filled space ahead of the log's end, not a torn record.
        failure = None;
    }
    match (failure, is_last) {
        (Some((at, reason)), true) => report.torn_tail = Some((path, at, reason)),
        (Some((at, reason)), false) => {
            report
                .problems
                .push(format!("{} at offset {at}: {reason}", path.display()));
        }
        (None, true) if open_txn.is_some() => {
            let at = open_txn.unwrap_or(0);
            report.torn_tail = Some((path, at, "the log ends inside a transaction".into()));
        }
        (None, _) => {}
    }
    Ok(expected)
}

fn check_index(
    vfs: &dyn Vfs,
    dir: &Path,
    segments: &HashMap<u64, Arc<Segment>>,
    report: &mut Report,
    progress: &mut impl FnMut(&str),
) -> Result<(), StorageError> {
    let manifest = match Manifest::load(vfs, dir) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(e) => {
            report
                .problems
                .push(format!("{e} (the index would be rebuilt from the log)"));
            return Ok(());
        }
    };
    for &(id, level) in &manifest.runs {
        let run = match Run::open(vfs, dir, id, level) {
            Ok(run) => Arc::new(run),
            Err(e) => {
                report
                    .problems
                    .push(format!("{e} (the index would be rebuilt from the log)"));
                continue;
            }
        };
        report.runs += 1;
        progress(&format!(
            "checking {} ({} entries)",
            run.path().display(),
            run.entries
        ));
        for entry in run.iter() {
            match entry.and_then(|e| check_entry(&e, segments).map(|problem| (e, problem))) {
                Ok((_, None)) => report.index_entries += 1,
                Ok((e, Some(problem))) => report.problems.push(format!(
                    "{}: entry for position {}: {problem}",
                    run.path().display(),
                    e.position
                )),
                Err(e) => {
                    report.problems.push(e.to_string());
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Checks that an entry points to a record at its position whose key matches.
fn check_entry(
    entry: &crate::index::Entry,
    segments: &HashMap<u64, Arc<Segment>>,
) -> Result<Option<String>, StorageError> {
    let (number, offset) = log::split(entry.address);
    let Some(segment) = segments.get(&number) else {
        return Ok(Some(format!("points to missing segment {number}")));
    };
    let record: Record = match segment.record_at(offset) {
        Ok(r) => r,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let event = &record.event;
    if event.position.0 != entry.position {
        return Ok(Some(format!(
            "the record at its address has position {}",
            event.position
        )));
    }
    let keys = [
        key_hash(KeyKind::Stream, event.stream.as_str()),
        event
            .stream
            .category()
            .map_or(0, |c| key_hash(KeyKind::Category, c)),
        key_hash(KeyKind::EventType, event.event_type.as_str()),
        key_hash(KeyKind::All, ""),
    ];
    if !keys.contains(&entry.key) {
        return Ok(Some(
            "its key matches neither the record's stream, category nor type".into(),
        ));
    }
    if entry.key == keys[0] && entry.seq != event.revision {
        return Ok(Some(format!(
            "says revision {}, the record has {}",
            entry.seq, event.revision
        )));
    }
    Ok(None)
}
