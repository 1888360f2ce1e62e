//! Profiling aid: fills a store (fsync off) and reads `$all` from the start a few times.
//! `cargo run --release -p annals-engine --example read_all -- [events] [passes]`
#![allow(clippy::unwrap_used)] // a measurement tool: any failure should stop it loudly

use std::time::Instant;

use annals_core::{
    EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, ReadAllOptions, StreamName,
};
use annals_engine::{Config, Engine};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().unwrap());
    let passes: usize = std::env::args().nth(2).map_or(3, |a| a.parse().unwrap());
    let dir = tempfile::tempdir_in(".").unwrap();
    let engine = Engine::open(
        dir.path(),
        Config {
            sync: false,
            ..Config::default()
        },
    )
    .unwrap();
    let event_type = EventType::new("Filled").unwrap();
    let data = format!("{{\"payload\":\"{}\"}}", "x".repeat(242));
    for n in 0..events / 1000 {
        let stream = StreamName::new(format!("fill-{}", n % 1000)).unwrap();
        let batch = (0..1000)
            .map(|_| NewEvent::json(event_type.clone(), data.clone()).with_metadata("{\"c\":1}"))
            .collect();
        engine
            .append(&stream, ExpectedRevision::Any, batch)
            .await
            .unwrap();
    }
    println!(
        "index memory after {events} events in 1,000 streams: {:.1} MiB (memtables + run fences)",
        engine.index_memory_bytes() as f64 / (1 << 20) as f64
    );
    for _ in 0..passes {
        let started = Instant::now();
        let mut options = ReadAllOptions::forward().limit(10_000);
        let mut count = 0;
        loop {
            let slice = engine.read_all(options.clone()).await.unwrap();
            count += slice.events.len();
            match slice.next {
                Some(next) if !slice.end_of_log => options = options.from_position(next),
                _ => break,
            }
        }
        println!(
            "{count} events in {:.3} s: {:.0} events/s",
            started.elapsed().as_secs_f64(),
            count as f64 / started.elapsed().as_secs_f64()
        );
    }
}
