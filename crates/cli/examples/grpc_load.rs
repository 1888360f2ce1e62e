//! Drives a running `annals serve` (or any KurrentDB-compatible server) from another
//! process: N writers, each appending one 256-byte JSON event per call to its own stream with
//! exact expected revisions, through the official `kurrentdb` client. Unlike `annals bench`'s
//! W2, the server keeps its own process and runtime, as deployed.
//!
//! `cargo run --release -p annals --example grpc_load -- [address] [writers] [seconds]`
//! (default `127.0.0.1:2113 64 5`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kurrentdb::{AppendToStreamOptions, Client, EventData, StreamState};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:2113".into());
    let writers: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let seconds: f64 = args.next().map_or(Ok(5.0), |a| a.parse())?;
    let client = Client::new(format!("kurrentdb://{address}?tls=false").parse()?)?;
    let data = serde_json::json!({ "payload": "x".repeat(256 - 14) });
    let metadata = serde_json::json!({ "correlation": "c".repeat(64 - 18) });
    let run = uuid::Uuid::new_v4().simple().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        let (data, metadata) = (data.clone(), metadata.clone());
        let stream = format!("load-{w}-{}", &run[..8]);
        tasks.push(tokio::spawn(async move {
            let mut state = StreamState::NoStream;
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let event = EventData::json("LoadEvent", &data)?.metadata_as_json(&metadata)?;
                let options = AppendToStreamOptions::default().stream_state(state);
                let sent = Instant::now();
                let result = client
                    .append_to_stream(stream.as_str(), &options, event)
                    .await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                state = StreamState::StreamRevision(result.next_expected_version);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |p: f64| {
        let i = ((latencies.len().saturating_sub(1)) as f64 * p).round() as usize;
        latencies.get(i).map_or(0.0, |&us| us as f64 / 1000.0)
    };
    println!(
        "{writers} writers: {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len() as f64 / elapsed,
        at(0.5),
        at(0.99)
    );
    Ok(())
}
