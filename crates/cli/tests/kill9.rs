//! T1: `annals load` runs 16 concurrent writers (batches of 1–20 events, unique ids, mixed
//! expected revisions) and is SIGKILLed at random moments, round after round on one data
//! directory. After the last round the store must hold every acknowledged batch at the
//! position it was acknowledged with, nothing that was never sent, no duplicate ids, no
//! partial batches, no revision gaps and strictly increasing positions.
//! Rounds: `ANNALS_KILL_ROUNDS` (default 20).
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use annals_core::{EventReader, ReadAllOptions, ReadStreamOptions, StreamName};
use annals_engine::{Config, Engine};

#[derive(Debug, Default)]
struct Log {
    /// Batches sent: ids, by stream.
    sent: Vec<(String, Vec<String>)>,
    /// Acknowledged batches: (stream, first position, last revision, ids).
    acked: Vec<(String, u64, u64, Vec<String>)>,
}

fn ids(text: &str) -> Vec<String> {
    text.split(',').map(str::to_owned).collect()
}

fn run_round(dir: &std::path::Path, log: &mut Log, kill_after: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["load", "--data"])
        .arg(dir)
        .args(["--writers", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    });
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    for line in reader.join().unwrap() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["SEND", stream, list] => log.sent.push(((*stream).to_owned(), ids(list))),
            ["ACK", stream, first, revision, list] => log.acked.push((
                (*stream).to_owned(),
                first.parse().unwrap(),
                revision.parse().unwrap(),
                ids(list),
            )),
            _ => {} // a line cut by the kill
        }
    }
}

#[test]
fn t1_kill_minus_nine_during_concurrent_appends_loses_nothing() {
    let rounds: u64 = std::env::var("ANNALS_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    let mut seed = 0x9E37_79B9_u64;
    for _ in 0..rounds {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let kill_after = Duration::from_millis(150 + (seed >> 33) % 400);
        run_round(dir.path(), &mut log, kill_after);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    let all = rt
        .block_on(engine.read_all(ReadAllOptions::forward()))
        .unwrap()
        .events;

    let sent_ids: HashMap<&str, usize> = log
        .sent
        .iter()
        .enumerate()
        .flat_map(|(b, (_, ids))| ids.iter().map(move |id| (id.as_str(), b)))
        .collect();
    let mut found: HashMap<String, (u64, String, u64)> = HashMap::new();
    let (mut unexpected, mut duplicates, mut non_monotonic) = (0, 0, 0);
    let mut last_position = None;
    for e in &all {
        let id = e.event.id.to_string();
        if !sent_ids.contains_key(id.as_str()) {
            unexpected += 1;
        }
        let entry = (
            e.event.position.0,
            e.event.stream.to_string(),
            e.event.revision,
        );
        if found.insert(id, entry).is_some() {
            duplicates += 1;
        }
        if last_position.is_some_and(|p| e.event.position.0 != p + 1) {
            non_monotonic += 1;
        }
        last_position = Some(e.event.position.0);
    }
    let mut lost = 0;
    for (stream, first, last_revision, ids) in &log.acked {
        let first_revision = last_revision + 1 - ids.len() as u64;
        for (i, id) in ids.iter().enumerate() {
            let want = (first + i as u64, stream.clone(), first_revision + i as u64);
            if found.get(id) != Some(&want) {
                lost += 1;
            }
        }
    }
    let batches_present: HashSet<usize> = found
        .keys()
        .filter_map(|id| sent_ids.get(id.as_str()).copied())
        .collect();
    let partial = batches_present
        .iter()
        .filter(|b| !log.sent[**b].1.iter().all(|id| found.contains_key(id)))
        .count();
    let streams: HashSet<&String> = log.sent.iter().map(|(s, _)| s).collect();
    let mut gaps = 0;
    for stream in streams {
        let name = StreamName::new(stream).unwrap();
        if let Ok(events) = rt.block_on(engine.read_stream(&name, ReadStreamOptions::forward())) {
            gaps += events
                .iter()
                .enumerate()
                .filter(|(i, e)| e.event.revision != *i as u64)
                .count();
        }
    }
    let acked_events: usize = log.acked.iter().map(|a| a.3.len()).sum();
    println!(
        "T1: {rounds} kill -9 rounds, {} events in the log, {acked_events} acknowledged; lost {lost}, \
         unexpected {unexpected}, duplicates {duplicates}, partial batches {partial}, \
         revision gaps {gaps}, non-monotonic positions {non_monotonic}",
        all.len()
    );
    assert!(acked_events > 0, "the load generator acknowledged nothing");
    assert_eq!(
        (lost, unexpected, duplicates, partial, gaps, non_monotonic),
        (0, 0, 0, 0, 0, 0)
    );
}
