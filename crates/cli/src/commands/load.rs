//! `annals load` (hidden): appends from many concurrent writers until killed, printing what
//! it sends and what was acknowledged. The kill -9 test (T1) drives it.
//!
//! Output, one line each, flushed per line:
//! `SEND <stream> <id>,<id>,…` before an append; `ACK <stream> <first position>
//! <last revision> <id>,<id>,…` after it succeeded.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use annals_core::{
    AppendError, EventAppender, EventReader, EventType, ExpectedRevision, NewEvent,
    ReadStreamOptions, StreamName,
};
use clap::Parser;

#[derive(Debug, Parser)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) dir: super::DataDir,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    writers: u32,
}

pub(crate) async fn run(data: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = Arc::new(super::open(data)?);
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        tasks.push(tokio::spawn(writer(Arc::clone(&store), w)));
    }
    for task in tasks {
        task.await??;
    }
    Ok(ExitCode::SUCCESS)
}

fn line(text: String) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only means nobody listens any more.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

async fn writer(store: Arc<annals_engine::Engine>, w: u32) -> anyhow::Result<()> {
    let event_type = EventType::new("Loaded")?;
    let mut n: u64 = u64::from(w);
    loop {
        // A cheap deterministic mix: own streams with exact expectations, shared ones with Any.
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let shared = n.is_multiple_of(4);
        let stream = if shared {
            StreamName::new(format!("shared-{}", (n >> 8) % 3))?
        } else {
            StreamName::new(format!("w{w}-{}", (n >> 8) % 3))?
        };
        let expected = if shared {
            ExpectedRevision::Any
        } else {
            let last = ReadStreamOptions::backward().limit(1);
            match store.read_stream(&stream, last).await {
                Ok(events) => events.first().map_or(ExpectedRevision::StreamExists, |e| {
                    ExpectedRevision::Exact(e.event.revision)
                }),
                Err(annals_core::ReadError::StreamNotFound { .. }) => ExpectedRevision::NoStream,
                Err(e) => return Err(e.into()),
            }
        };
        let count = 1 + (n >> 16) % 20;
        let events: Vec<NewEvent> = (0..count)
            .map(|i| NewEvent::json(event_type.clone(), format!("{{\"i\":{i}}}")))
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        let ids = ids.join(",");
        line(format!("SEND {stream} {ids}"));
        match store.append(&stream, expected, events).await {
            Ok(result) => {
                let first = result.positions.map_or(0, |(first, _)| first.0);
                let revision = result.current_revision.revision().unwrap_or(0);
                line(format!("ACK {stream} {first} {revision} {ids}"));
            }
            Err(AppendError::WrongExpectedRevision { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
