//! W2: W1 over gRPC. `annals-server` runs in this process on the embedded engine; the writers
//! are the official `kurrentdb` Rust client, one shared client (one HTTP/2 connection, as
//! applications use it), each writer appending single events to its own stream with exact
//! expected revisions: one `Streams.Append` call per append, and for the most writers also
//! through the client's `batch_append` (every writer's appends on one `Streams.BatchAppend`
//! call, as the Node.js client does by default where the server offers it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annals_core::EventStore;
use annals_engine::{Config, Engine};
use annals_server::{Server, ServerConfig};
use anyhow::Context as _;
use kurrentdb::{AppendToStreamOptions, BatchAppendOptions, EventData, StreamState};
use tokio::sync::oneshot;

use super::report::{Line, Report, percentile_ms};
use super::workloads::{Context, Run, RunClock, bench_event, engine_counter, median_run};

const WRITERS: [usize; 3] = [1, 16, 64];

/// How the writers' appends reach the server.
#[derive(Clone, Copy, PartialEq)]
enum Calls {
    /// One `Streams.Append` call per append.
    PerAppend,
    /// All writers' appends on one `Streams.BatchAppend` call.
    Batched,
}

pub(crate) async fn w2(ctx: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let most = WRITERS[WRITERS.len() - 1];
    let runs = WRITERS
        .iter()
        .map(|&w| (w, Calls::PerAppend))
        .chain([(most, Calls::Batched)]);
    for (writers, calls) in runs {
        let baseline = ctx.pg_baseline("pg_append_single.sql", writers, 1.0);
        let mut runs = Vec::new();
        for _ in 0..ctx.plan.repeats {
            runs.push(one_run(ctx, writers, calls).await?);
        }
        let run = median_run(runs).context("no runs")?;
        let rate = run.events_per_s;
        let variant = match calls {
            Calls::PerAppend => format!("{writers} gRPC writers"),
            Calls::Batched => format!("{writers} gRPC writers, one BatchAppend call"),
        };
        report.line(Line {
            workload: "W2",
            variant: variant.clone(),
            system: "annals",
            events_per_s: Some(rate),
            p50_ms: percentile_ms(&run.latencies_us, 0.5),
            p99_ms: percentile_ms(&run.latencies_us, 0.99),
            ratio_vs_postgres: baseline.map(|pg| rate / pg),
            extra: Some(format!(
                "official kurrentdb client, server in this process; {}",
                run.describe()
            )),
            stages: run.stages,
            ..Line::default()
        });
        report.line(Line {
            workload: "W2",
            variant,
            system: "postgres",
            events_per_s: baseline,
            ..Line::default()
        });
    }
    Ok(())
}

/// One timed run on a fresh engine and server. Its CPU is the whole process's: the
/// client's, the server's and the engine's.
async fn one_run(ctx: &Context<'_>, writers: usize, calls: Calls) -> anyhow::Result<Run> {
    super::machine::settle_disk()?;
    let dir = ctx
        .dir
        .join(format!("grpc-{}", uuid::Uuid::new_v4().simple()));
    let engine = Arc::new(Engine::open(&dir, Config::default())?);
    let store: Arc<dyn EventStore> = engine.clone();
    let config = ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        insecure: true,
        // The client's BatchAppend call stays open until the server closes it.
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let server = Server::bind(config, store).await?;
    let addr = server.local_addr();
    let (stop_server, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let settings = format!("kurrentdb://{addr}?tls=false").parse()?;
    let client = kurrentdb::Client::new(settings)
        .map_err(|e| anyhow::anyhow!("cannot create the kurrentdb client: {e}"))?;
    let counter = engine_counter(&engine);
    let clock = RunClock::start(Some(&counter));
    let measured = drive(&client, writers, calls, ctx.plan.seconds)
        .await
        .map(|latencies| clock.finish(latencies.len() as u64, latencies));
    drop(counter);
    drop(client);
    let _ = stop_server.send(());
    serving.await??;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.close();
    }
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

async fn drive(
    client: &kurrentdb::Client,
    writers: usize,
    calls: Calls,
    seconds: f64,
) -> anyhow::Result<Vec<u64>> {
    let batch = match calls {
        Calls::PerAppend => None,
        Calls::Batched => Some(Arc::new(
            client
                .batch_append(&BatchAppendOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("cannot open a BatchAppend call: {e}"))?,
        )),
    };
    let event = bench_event(&annals_core::EventType::new("BenchEvent")?);
    let data: serde_json::Value = serde_json::from_slice(&event.data)?;
    let metadata: serde_json::Value = serde_json::from_slice(&event.metadata)?;
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, batch, stop) = (client.clone(), batch.clone(), Arc::clone(&stop));
        let (data, metadata) = (data.clone(), metadata.clone());
        let stream = format!("grpc-{w}-{}", &run_id[..8]);
        tasks.push(tokio::spawn(async move {
            let mut state = StreamState::NoStream;
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let event = EventData::json("BenchEvent", &data)?
                    .metadata_as_json(&metadata)?
                    .id(uuid::Uuid::new_v4());
                let sent = Instant::now();
                let revision = match &batch {
                    None => {
                        let options = AppendToStreamOptions::default().stream_state(state);
                        let result = client
                            .append_to_stream(stream.as_str(), &options, event)
                            .await?;
                        result.next_expected_version
                    }
                    Some(batch) => batch
                        .append_to_stream(stream.as_str(), state, vec![event])
                        .await?
                        .current_revision()
                        .context("a BatchAppend result without the stream's revision")?,
                };
                latencies.push(sent.elapsed().as_micros() as u64);
                state = StreamState::StreamRevision(revision);
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}
