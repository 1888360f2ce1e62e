//! `annals read`.

use std::path::Path;
use std::process::ExitCode;

use annals_core::{
    AllFrom, Direction, EventReader, Position, ReadAllOptions, ReadStreamOptions, StreamFrom,
};
use anyhow::Context;
use clap::Parser;

use super::Source;
use crate::output::print_event;

#[derive(Debug, Parser)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) dir: super::DataDir,
    /// A stream, a virtual stream ($ce-<category>, $et-<type>) or $all.
    source: Source,
    /// Start here (inclusive): a revision for streams, a position for $all.
    #[arg(long)]
    from: Option<u64>,
    /// Read from the end towards the start.
    #[arg(long)]
    backwards: bool,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Read from a running `annals serve` (its HTTP API, e.g. http://127.0.0.1:2113) instead
    /// of opening the data directory.
    #[arg(long, value_name = "URL", env = "ANNALS_SERVER")]
    server: Option<String>,
}

pub(crate) async fn run(data: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(server) = &args.server {
        let name = match &args.source {
            Source::All => annals_core::name::ALL_STREAM.to_owned(),
            Source::Stream(stream) => stream.to_string(),
        };
        let limit = args.limit.unwrap_or(u64::MAX);
        return super::remote::read(server, &name, args.from, args.backwards, limit, args.json)
            .await;
    }
    let store = super::open(data)?;
    let direction = if args.backwards {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let limit = args.limit.unwrap_or(u64::MAX);
    let events = match &args.source {
        Source::All => {
            let from = match (args.from, direction) {
                (Some(p), _) => AllFrom::Position(Position(p)),
                (None, Direction::Forward) => AllFrom::Start,
                (None, Direction::Backward) => AllFrom::End,
            };
            let options = ReadAllOptions {
                direction,
                from,
                limit,
                ..ReadAllOptions::default()
            };
            store
                .read_all(options)
                .await
                .context("reading $all failed")?
                .events
        }
        Source::Stream(stream) => {
            let from = match (args.from, direction) {
                (Some(r), _) => StreamFrom::Revision(r),
                (None, Direction::Forward) => StreamFrom::Start,
                (None, Direction::Backward) => StreamFrom::End,
            };
            let options = ReadStreamOptions {
                direction,
                from,
                limit,
            };
            store
                .read_stream(stream, options)
                .await
                .with_context(|| format!("reading '{stream}' failed"))?
        }
    };
    for event in &events {
        print_event(event, args.json);
    }
    store.close();
    Ok(ExitCode::SUCCESS)
}
