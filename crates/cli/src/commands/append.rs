//! `annals append`.

use std::path::Path;
use std::process::ExitCode;

use annals_core::{
    EventAppender, EventType, ExpectedRevision, Limits, NewEvent, StreamName, StreamWrite,
    WriteRequest,
};
use anyhow::Context;
use clap::Parser;
use uuid::Uuid;

#[derive(Debug, Parser)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) dir: super::AppendDataDir,
    /// The stream, e.g. order-42.
    stream: StreamName,
    /// The event type.
    #[arg(long = "type")]
    event_type: EventType,
    /// The event data, as JSON.
    #[arg(long)]
    data: String,
    /// Event metadata, as JSON.
    #[arg(long)]
    metadata: Option<String>,
    /// The event id (default: a new random UUID). Re-sending the same id is idempotent.
    #[arg(long)]
    id: Option<Uuid>,
    /// any | no-stream | exists | N (the revision the stream must be at).
    #[arg(long, default_value = "any")]
    expected_revision: ExpectedRevision,
    /// Append through a running `annals serve` (its HTTP API, e.g. http://127.0.0.1:2113)
    /// instead of opening the data directory.
    #[arg(long, value_name = "URL", env = "ANNALS_SERVER")]
    server: Option<String>,
}

pub(crate) async fn run(data: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let metadata = args.metadata.unwrap_or_default();
    if !metadata.is_empty() {
        serde_json::from_str::<serde_json::Value>(&metadata)
            .context("--metadata is not valid JSON")?;
    }
    let mut event = NewEvent::json(args.event_type, args.data).with_metadata(metadata);
    if let Some(id) = args.id {
        event = event.with_id(id);
    }
    let id = event.id;
    if let Some(server) = &args.server {
        let data: serde_json::Value =
            serde_json::from_slice(&event.data).context("--data is not valid JSON")?;
        let mut body = serde_json::json!({
            "id": id.to_string(),
            "type": event.event_type.as_str(),
            "data": data,
        });
        if !event.metadata.is_empty() {
            body["metadata"] =
                serde_json::from_slice(&event.metadata).context("--metadata is not valid JSON")?;
        }
        let expected = args.expected_revision.to_string();
        return super::remote::append(server, args.stream.as_str(), &expected, body).await;
    }
    let write = StreamWrite {
        stream: args.stream.clone(),
        expected: args.expected_revision,
        events: vec![event],
    };
    // Refuse bad input before touching the data directory.
    let request = WriteRequest::Append(vec![write.clone()]);
    annals_core::write::validate(&request, &Limits::default())
        .with_context(|| format!("append to '{}' refused", args.stream))?;
    let store = super::open(data)?;
    let result = store
        .append(&write.stream, write.expected, write.events)
        .await;
    store.close();
    let result = result.with_context(|| format!("append to '{}' failed", args.stream))?;
    let revision = result.current_revision;
    match result.last_position() {
        Some(position) => println!(
            "appended {id} to {} at revision {revision}, position {position}",
            args.stream
        ),
        None => println!(
            "nothing appended; {} is at revision {revision}",
            args.stream
        ),
    }
    Ok(ExitCode::SUCCESS)
}
