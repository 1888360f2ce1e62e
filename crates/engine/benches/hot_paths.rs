//! Micro-benchmarks of the engine's per-event hot paths, one function at a time: what an
//! append costs the caller (validation, JSON check included) and the leader (record
//! encoding with its CRC32C, key hashing), and what a read costs (record decoding, an index
//! lookup in the memtable and in a run on disk).
//!
//! `cargo bench -p annals-engine --bench hot_paths` (criterion; add `-- record` to run
//! only the names that contain "record"). The events are W1's: 256 bytes of JSON data and
//! 64 bytes of JSON metadata. For whole-pipeline figures use `annals bench` or the
//! `group_commit` and `read_all` examples; for instruction counts, callgrind on those.

#![allow(clippy::unwrap_used)] // a measurement tool: any failure should stop it loudly
#![allow(missing_docs)] // criterion's macros generate undocumented public functions

use std::hint::black_box;
use std::sync::Arc;

use annals_core::write::validate;
use annals_core::{
    EventType, ExpectedRevision, Limits, NewEvent, Position, StreamName, StreamWrite, Timestamp,
    WriteRequest,
};
use annals_engine::device::StdVfs;
use annals_engine::index::{Entry, Index, KeyKind, key_hash};
use annals_engine::record::{self, NameCache, RecordRef};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

/// Records in the decoding scan.
const SCAN_RECORDS: usize = 1_000;
/// The lookups' index: this many streams with this many entries each.
const INDEX_KEYS: u64 = 10_000;
const INDEX_SEQS: u64 = 10;

fn payload() -> (Vec<u8>, Vec<u8>) {
    let data = format!("{{\"payload\":\"{}\"}}", "x".repeat(256 - 14));
    let metadata = format!("{{\"correlation\":\"{}\"}}", "c".repeat(64 - 18));
    (data.into_bytes(), metadata.into_bytes())
}

fn record_ref<'a>(data: &'a [u8], metadata: &'a [u8], n: u64) -> RecordRef<'a> {
    RecordRef {
        stream: "bench-17",
        event_type: "BenchEvent",
        revision: n,
        position: Position(n),
        synced_before: Position(n),
        created: Timestamp(1_764_720_000_000_000),
        id: Uuid::from_u128(u128::from(n) + 1),
        flags: record::FLAG_JSON | record::FLAG_LAST_IN_TXN,
        data,
        metadata,
    }
}

/// The caller's side of an append: validating a one-event request (names, limits, the
/// JSON check of data and metadata).
fn append_validation(c: &mut Criterion) {
    let (data, metadata) = payload();
    let event = NewEvent::json(EventType::new("BenchEvent").unwrap(), data).with_metadata(metadata);
    let request = WriteRequest::Append(vec![StreamWrite {
        stream: StreamName::new("bench-17").unwrap(),
        expected: ExpectedRevision::Exact(41),
        events: vec![event],
    }]);
    let limits = Limits::default();
    c.bench_function("append/validate one JSON event", |b| {
        b.iter(|| validate(black_box(&request), &limits).unwrap());
    });
}

/// The leader's per-record work: encoding (with the CRC32C) and hashing index keys.
fn leader_work(c: &mut Criterion) {
    let (data, metadata) = payload();
    let mut buf = Vec::with_capacity(4096);
    c.bench_function("record/encode one event", |b| {
        b.iter(|| {
            buf.clear();
            record::encode(black_box(&record_ref(&data, &metadata, 41)), &mut buf)
        });
    });
    c.bench_function("index/key_hash of a stream name", |b| {
        b.iter(|| key_hash(KeyKind::Stream, black_box("bench-17")));
    });
}

/// The read path: decoding one record, and a scan of many with a shared name cache.
fn decoding(c: &mut Criterion) {
    let (data, metadata) = payload();
    let mut buf = Vec::new();
    for n in 0..SCAN_RECORDS as u64 {
        record::encode(&record_ref(&data, &metadata, n), &mut buf);
    }
    let log = Bytes::from(buf);
    let mut names = NameCache::default();
    c.bench_function("record/decode one event", |b| {
        b.iter(|| record::decode_with(black_box(&log), &mut names).unwrap());
    });
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(SCAN_RECORDS as u64));
    group.bench_function("decode a scan of 1,000 events", |b| {
        b.iter(|| {
            let mut at = 0;
            while at < log.len() {
                let (record, len) = record::decode_at(&log, at, &mut names).unwrap();
                black_box(record);
                at += len;
            }
        });
    });
    group.finish();
}

/// An index of `INDEX_KEYS` keys with `INDEX_SEQS` entries each.
fn filled_index(dir: &std::path::Path) -> Index {
    let (index, error) = Index::open(Arc::new(StdVfs), dir);
    assert!(error.is_none(), "{error:?}");
    index.insert((0..INDEX_KEYS).flat_map(|k| {
        (0..INDEX_SEQS).map(move |seq| Entry {
            key: key_hash(KeyKind::Stream, &format!("stream-{k}")),
            seq,
            position: k * INDEX_SEQS + seq,
            address: k * INDEX_SEQS + seq,
        })
    }));
    index
}

/// A key's last entry, `Index::last` (how `next_seq` finds a category's or event type's
/// next number; an append's expected-revision check on a cache miss runs the same backward
/// range for up to 4 entries, then reads the record): in the memtable, then in a run on
/// disk (warm: the same stream again, then every stream in turn).
fn index_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index = filled_index(dir.path());
    let key = key_hash(KeyKind::Stream, "stream-4242");
    c.bench_function("index/last entry of a stream, memtable", |b| {
        b.iter(|| index.last(black_box(key)).unwrap().unwrap());
    });
    let entries = INDEX_KEYS * INDEX_SEQS;
    assert!(index.freeze(entries, entries));
    index.flush_frozen().unwrap();
    assert_eq!(index.active_len(), 0);
    c.bench_function("index/last entry of a stream, run on disk", |b| {
        b.iter(|| index.last(black_box(key)).unwrap().unwrap());
    });
    // Every stream in turn (their keys' hashes scatter them over the run): the run keeps
    // 256 of its 782 pages decoded, so most probes read a page.
    let keys: Vec<u64> = (0..INDEX_KEYS)
        .map(|k| key_hash(KeyKind::Stream, &format!("stream-{k}")))
        .collect();
    let mut next = keys.iter().cycle();
    c.bench_function(
        "index/last entry of a stream, run on disk, streams in turn",
        |b| {
            b.iter(|| {
                index
                    .last(black_box(*next.next().unwrap()))
                    .unwrap()
                    .unwrap()
            });
        },
    );
}

criterion_group!(
    hot_paths,
    append_validation,
    leader_work,
    decoding,
    index_lookup
);
criterion_main!(hot_paths);
