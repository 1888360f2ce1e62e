//! T11: fuzzing the record decoder and the recovery reader with a stable-Rust harness
//! (seeded mutations of valid inputs; no coverage guidance). No input may panic; a record
//! that decodes must re-encode to exactly the bytes it came from.
//!
//! CI runs a short pass. Long runs: `ANNALS_FUZZ_SECONDS=600 cargo test --release -p
//! annals-engine --test fuzz -- --nocapture` (each target gets that many seconds).
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{
    EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, Position, ReadAllOptions,
    ReadStreamOptions, StreamName, Timestamp,
};
use annals_engine::device::sim::{Plan, SimVfs, SplitMix};
use annals_engine::record::{self, FLAG_JSON, FLAG_LAST_IN_TXN, RecordRef};
use annals_engine::{Config, Engine};
use bytes::Bytes;
use uuid::Uuid;

/// Runs `step` for the configured time or iteration count; returns the executions.
fn budget(default_iterations: u64, mut step: impl FnMut(u64)) -> u64 {
    let seconds = std::env::var("ANNALS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let started = Instant::now();
    let mut n = 0;
    loop {
        let done = match seconds {
            Some(s) => started.elapsed() >= Duration::from_secs(s),
            None => n >= default_iterations,
        };
        if done {
            return n;
        }
        step(n);
        n += 1;
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, (stream, data)) in [
        ("a", &b""[..]),
        ("order-1", b"{\"x\":1}"),
        ("$$order-1", &[0u8; 300][..]),
    ]
    .iter()
    .enumerate()
    {
        let mut buf = Vec::new();
        record::encode(
            &RecordRef {
                stream,
                event_type: "T",
                revision: i as u64,
                position: Position(i as u64 * 7),
                synced_before: Position(i as u64),
                created: Timestamp(42),
                id: Uuid::from_u128(i as u128),
                flags: FLAG_JSON | FLAG_LAST_IN_TXN,
                data,
                metadata: b"{}",
            },
            &mut buf,
        );
        out.push(buf);
    }
    out
}

fn mutate(rng: &mut SplitMix, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len().max(1) as u64;
        match rng.below(6) {
            0 => {
                let at = rng.below(len) as usize;
                if let Some(b) = input.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                let at = rng.below(len) as usize;
                if let Some(b) = input.get_mut(at) {
                    *b = rng.next_u64() as u8;
                }
            }
            2 => input.truncate(rng.below(len) as usize),
            3 => {
                let at = rng.below(len) as usize;
                input.insert(at.min(input.len()), rng.next_u64() as u8);
            }
            4 => {
                // Interesting integers in the length fields.
                let at = rng.below(len.min(16)) as usize;
                let value = [0u32, 1, 63, 64, 65, u32::MAX, 1 << 26][rng.below(7) as usize];
                if input.len() >= at + 4 {
                    input[at..at + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            _ => {
                let at = rng.below(len) as usize;
                input.truncate(at);
                input.extend_from_slice(&other[rng.below(other.len() as u64) as usize..]);
            }
        }
    }
}

#[test]
fn t11_fuzz_record_decoder() {
    let corpus = corpus();
    let mut accepted = 0u64;
    let runs = budget(200_000, |n| {
        let mut rng = SplitMix(n);
        let mut input = corpus[rng.below(3) as usize].clone();
        let other = corpus[rng.below(3) as usize].clone();
        mutate(&mut rng, &mut input, &other);
        let bytes = Bytes::from(input.clone());
        if let Ok((rec, len)) = record::decode(&bytes) {
            accepted += 1;
            let e = &rec.event;
            let mut again = Vec::new();
            record::encode(
                &RecordRef {
                    stream: e.stream.as_str(),
                    event_type: e.event_type.as_str(),
                    revision: e.revision,
                    position: e.position,
                    synced_before: rec.synced_before,
                    created: e.created,
                    id: e.id,
                    flags: rec.flags,
                    data: &e.data,
                    metadata: &e.metadata,
                },
                &mut again,
            );
            assert_eq!(
                again,
                input[..len],
                "iteration {n}: decoded record does not round-trip"
            );
        }
    });
    println!(
        "T11 decoder: {runs} executions, {accepted} mutated inputs still decoded (round-trip checked), 0 panics"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn config(disk: &SimVfs) -> Config {
    Config {
        vfs: Arc::new(disk.clone()),
        segment_bytes: 4096,
        memtable_entries: 60,
        ..Config::default()
    }
}

#[test]
fn t11_fuzz_recovery_reader() {
    let disk = SimVfs::new(Plan::Healthy);
    let engine = Engine::open("/f", config(&disk)).unwrap();
    let rt = runtime();
    rt.block_on(async {
        for n in 0..120u32 {
            let stream = StreamName::new(format!("f-{}", n % 5)).unwrap();
            let events = (0..1 + n % 3)
                .map(|i| NewEvent::json(EventType::new("F").unwrap(), format!("[{n},{i}]")))
                .collect();
            engine
                .append(&stream, ExpectedRevision::Any, events)
                .await
                .unwrap();
        }
    });
    engine.close();
    let files: Vec<PathBuf> = disk.paths();
    let (mut opened, mut refused) = (0u64, 0u64);
    let runs = budget(300, |n| {
        let mut rng = SplitMix(n ^ 0xF022);
        let copy = disk.after_power_loss(0);
        let file = &files[rng.below(files.len() as u64) as usize];
        let mut bytes = copy.read_file(file).unwrap();
        let other = bytes.clone();
        mutate(&mut rng, &mut bytes, &other);
        copy.write_file(file, bytes);
        match Engine::open("/f", config(&copy)) {
            Ok(engine) => {
                opened += 1;
                // Reads may fail with an error, never panic.
                let _ = rt.block_on(engine.read_all(ReadAllOptions::forward()));
                let _ = rt.block_on(engine.read_all(ReadAllOptions::backward().limit(50)));
                for s in 0..5 {
                    let stream = StreamName::new(format!("f-{s}")).unwrap();
                    let _ = rt.block_on(engine.read_stream(&stream, ReadStreamOptions::backward()));
                }
                let category = StreamName::new("$ce-f").unwrap();
                let _ = rt.block_on(engine.read_stream(&category, ReadStreamOptions::forward()));
                engine.close();
            }
            Err(_) => refused += 1,
        }
    });
    println!(
        "T11 recovery: {runs} executions ({opened} opened, {refused} refused with an error), 0 panics"
    );
}
