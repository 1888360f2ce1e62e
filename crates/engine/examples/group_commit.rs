//! Quick group-commit measurement: N concurrent in-process appenders of 256-byte JSON
//! events, one per append unless a batch size is given (each to its own stream, with
//! expected-revision checks), next to the machine's fdatasync rate measured in the same run.
//!
//! `cargo run --release -p annals-engine --example group_commit -- [writers] [seconds] [batch]`

#![allow(clippy::unwrap_used)] // a measurement tool: any failure should stop it loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{EventAppender, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_engine::{Config, Engine};

fn fsync_rate(dir: &std::path::Path, seconds: f64) -> std::io::Result<f64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(dir.join("fsync-probe"))?;
    let block = vec![7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        file.write_all_at(&block, n * 4096)?;
        file.sync_data()?;
        n += 1;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The runtime `annals` itself runs on ([`annals_engine::runtime_workers`]).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = annals_engine::runtime_workers() {
        runtime.worker_threads(workers);
    }
    runtime.enable_all().build()?.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let batch: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    let base = std::env::var("ANNALS_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let dir = tempfile::tempdir_in(base)?;
    let machine = fsync_rate(dir.path(), 2.0)?;
    println!("machine: {machine:.0} fdatasync/s (4 KiB writes, same file system)");
    let engine = Arc::new(Engine::open(dir.path().join("store"), Config::default())?);
    let data = format!("{{\"payload\":\"{}\"}}", "x".repeat(256 - 14));
    assert_eq!(data.len(), 256);
    let metadata = format!("{{\"correlation\":\"{}\"}}", "c".repeat(64 - 18));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let before = engine.stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (engine, stop, done) = (Arc::clone(&engine), Arc::clone(&stop), Arc::clone(&done));
        let (data, metadata) = (data.clone(), metadata.clone());
        tasks.push(tokio::spawn(async move {
            let stream = StreamName::new(format!("bench-{w}")).unwrap();
            let event_type = EventType::new("BenchEvent").unwrap();
            let mut expected = ExpectedRevision::NoStream;
            while !stop.load(Ordering::Relaxed) {
                let events = (0..batch)
                    .map(|_| {
                        NewEvent::json(event_type.clone(), data.clone())
                            .with_metadata(metadata.clone())
                    })
                    .collect();
                let result = engine.append(&stream, expected, events).await.unwrap();
                expected = result.next_expected();
                done.fetch_add(batch as u64, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    let events = done.load(Ordering::Relaxed) as f64;
    let syncs = (stats.syncs - before.syncs) as f64;
    println!(
        "annals: {writers} writers x {batch}-event appends, {:.0} events/s, {:.0} fsyncs/s, {:.1} events per group commit \
         ({:.1}x the machine's fdatasync rate)",
        events / elapsed,
        syncs / elapsed,
        events / syncs.max(1.0),
        (events / elapsed) / machine
    );
    let requests = (stats.requests - before.requests).max(1) as f64;
    let appends = events / batch as f64;
    let us = |after: u64, before: u64| (after - before) as f64 / requests / 1e3;
    let (t, b) = (stats.time, before.time);
    println!(
        "per append: queued {:.0} + building {:.0} + syncing {:.0} + answering {:.0} µs, \
         {:.0} µs in all (a writer's mean: {:.0})",
        us(t.queued_ns, b.queued_ns),
        us(t.building_ns, b.building_ns),
        us(t.syncing_ns, b.syncing_ns),
        us(t.answering_ns, b.answering_ns),
        us(
            t.queued_ns + t.building_ns + t.syncing_ns + t.answering_ns,
            b.queued_ns + b.building_ns + b.syncing_ns + b.answering_ns
        ),
        elapsed * 1e6 * writers as f64 / appends
    );
    Ok(())
}
