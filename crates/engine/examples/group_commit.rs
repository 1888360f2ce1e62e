//! Quick group-commit measurement: N concurrent in-process appenders of 256-byte JSON
//! events, one per append unless a batch size is given (each to its own stream, with
//! expected-revision checks), next to the machine's fdatasync rate measured in the same run.
//!
//! `cargo run --release -p annals-engine --example group_commit -- [writers] [seconds] [batch]`
//!
//! `ANNALS_GROUP_MAX_BYTES=N` caps a group's requests at about N bytes (`Config::group_max_bytes`),
//! `ANNALS_MEMTABLE_ENTRIES=N` sets `Config::memtable_entries`.
//! With `ANNALS_FAKE_SYNC_US=N` every fdatasync is replaced by an N µs sleep (which takes
//! longer: the sleeper's wake-up is added, as to a real sync's). Nothing is durable then, but
//! the disk's minute-to-minute variance is gone, so a change to the engine's pipeline (the
//! work around each sync) shows in a few alternating runs instead of dozens.

#![allow(clippy::unwrap_used)] // a measurement tool: any failure should stop it loudly

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_core::{EventAppender, EventType, ExpectedRevision, NewEvent, StreamName};
use annals_engine::device::{Device, StdVfs, Vfs};
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

/// A number from the environment; `None` when unset or not a number.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
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
    let fake_sync = env_number("ANNALS_FAKE_SYNC_US");
    let mut config = Config::default();
    if let Some(bytes) = env_number("ANNALS_GROUP_MAX_BYTES") {
        config.group_max_bytes = bytes;
        println!("groups capped at {bytes} bytes");
    }
    if let Some(entries) = env_number("ANNALS_MEMTABLE_ENTRIES") {
        config.memtable_entries = entries;
        println!("memtable frozen at {entries} entries");
    }
    let machine = match fake_sync {
        Some(us) => {
            config.vfs = Arc::new(FakeSyncVfs(Duration::from_micros(us)));
            println!("machine: every fdatasync replaced by a {us} µs sleep");
            1e6 / us as f64
        }
        None => fsync_rate(dir.path(), 2.0)?,
    };
    println!("machine: {machine:.0} fdatasync/s (4 KiB writes, same file system)");
    let engine = Arc::new(Engine::open(dir.path().join("store"), config)?);
    // Built once and shared, as `annals bench` does: a run measures the store, not the
    // appenders copying their payloads.
    let data: &'static str = format!("{{\"payload\":\"{}\"}}", "x".repeat(256 - 14)).leak();
    assert_eq!(data.len(), 256);
    let metadata: &'static str = format!("{{\"correlation\":\"{}\"}}", "c".repeat(64 - 18)).leak();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let before = engine.stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (engine, stop, done) = (Arc::clone(&engine), Arc::clone(&stop), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let stream = StreamName::new(format!("bench-{w}")).unwrap();
            let event_type = EventType::new("BenchEvent").unwrap();
            let mut expected = ExpectedRevision::NoStream;
            while !stop.load(Ordering::Relaxed) {
                let events = (0..batch)
                    .map(|_| {
                        NewEvent::json(event_type.clone(), data.as_bytes())
                            .with_metadata(metadata.as_bytes())
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
         ({:.1}x the machine's fdatasync rate; {:.0}% of groups written while another was syncing)",
        events / elapsed,
        syncs / elapsed,
        events / syncs.max(1.0),
        (events / elapsed) / machine,
        100.0 * (stats.overlapped - before.overlapped) as f64
            / (stats.groups - before.groups).max(1) as f64
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

/// The real file system, but every sync is a fixed sleep instead of an fdatasync.
#[derive(Debug)]
struct FakeSyncVfs(Duration);

#[derive(Debug)]
struct FakeSyncDevice(Arc<dyn Device>, Duration);

impl Device for FakeSyncDevice {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        self.0.read_into(offset, len, buf)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(self.1);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Vfs for FakeSyncVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn Device>> {
        Ok(Arc::new(FakeSyncDevice(StdVfs.open(path, create)?, self.0)))
    }
    fn exists(&self, path: &Path) -> bool {
        StdVfs.exists(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdVfs.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdVfs.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdVfs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdVfs.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdVfs.create_dir_all(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        StdVfs.lock(path)
    }
}
