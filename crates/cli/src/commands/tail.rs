//! `annals tail`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use annals_core::subscription::{
    SubscribeFrom, SubscriptionMessage, SubscriptionSource, subscribe,
};
use anyhow::Context;
use clap::Parser;
use futures::StreamExt;

use super::Source;
use crate::output::print_event;

#[derive(Debug, Parser)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) dir: super::DataDir,
    /// A stream, a virtual stream ($ce-<category>, $et-<type>) or $all.
    source: Source,
    /// Start after this revision (streams) or position ($all); default: only new events.
    #[arg(long, conflicts_with = "from_start")]
    after: Option<u64>,
    /// Start with the first event.
    #[arg(long)]
    from_start: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Follow through a running `annals serve` (Server-Sent Events from its HTTP API, e.g.
    /// http://127.0.0.1:2113) instead of opening the data directory.
    #[arg(long, value_name = "URL", env = "ANNALS_SERVER")]
    server: Option<String>,
}

pub(crate) async fn run(data: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(server) = &args.server {
        let name = match &args.source {
            Source::All => annals_core::name::ALL_STREAM.to_owned(),
            Source::Stream(stream) => stream.to_string(),
        };
        let from = match (args.after, args.from_start) {
            (Some(after), _) => after.to_string(),
            (None, true) => "start".to_owned(),
            (None, false) => "end".to_owned(),
        };
        return super::remote::tail(server, &name, &from, args.count, args.json).await;
    }
    let store = Arc::new(super::open(data)?);
    let from = match (args.after, args.from_start) {
        (Some(after), _) => SubscribeFrom::After(after),
        (None, true) => SubscribeFrom::Start,
        (None, false) => SubscribeFrom::End,
    };
    let source = match args.source {
        Source::All => SubscriptionSource::All(None),
        Source::Stream(stream) => SubscriptionSource::Stream(stream),
    };
    let mut subscription = subscribe(Arc::clone(&store), source, from);
    let mut remaining = args.count.unwrap_or(u64::MAX);
    while remaining > 0 {
        let message = tokio::select! {
            message = subscription.next() => message,
            _ = tokio::signal::ctrl_c() => break,
        };
        match message.transpose().context("the subscription failed")? {
            Some(SubscriptionMessage::Event(event)) => {
                print_event(&event, args.json);
                remaining -= 1;
            }
            Some(SubscriptionMessage::CaughtUp) => {
                eprintln!("-- caught up; waiting for new events")
            }
            Some(SubscriptionMessage::Checkpoint(_)) => {}
            None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}
