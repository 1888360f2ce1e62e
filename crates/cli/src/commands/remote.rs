//! Talking to `annals serve` over its HTTP/JSON API (`--server http://HOST:PORT`).

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

/// Percent-encodes a stream name for a URL path segment.
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$@:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn url(server: &str, stream: &str, suffix: &str) -> String {
    format!(
        "{}/streams/{}{suffix}",
        server.trim_end_matches('/'),
        segment(stream)
    )
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .build()
        .context("cannot build the HTTP client")
}

/// The server's error message, or the status line.
async fn failure(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| status.to_string(), str::to_owned);
    anyhow::anyhow!("the server answered {status}: {message}")
}

/// `annals append --server`.
pub(crate) async fn append(
    server: &str,
    stream: &str,
    expected: &str,
    event: Value,
) -> anyhow::Result<ExitCode> {
    let id = event
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let body = json!({ "expectedRevision": expected, "events": [event] });
    let response = client()?
        .post(url(server, stream, ""))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !response.status().is_success() {
        return Err(failure(response)
            .await
            .context(format!("append to '{stream}' failed")));
    }
    let result: Value = response.json().await.context("malformed answer")?;
    let revision = result["currentRevision"].clone();
    match result["lastPosition"].as_u64() {
        Some(position) => {
            println!("appended {id} to {stream} at revision {revision}, position {position}")
        }
        None => println!("nothing appended; {stream} is at revision {revision}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `annals read --server`: pages through the result until `limit` events were printed.
pub(crate) async fn read(
    server: &str,
    stream: &str,
    from: Option<u64>,
    backwards: bool,
    limit: u64,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let client = client()?;
    let mut from = from.map(|f| f.to_string());
    let mut remaining = limit;
    while remaining > 0 {
        let page = remaining.min(1000).to_string();
        let mut query = vec![("limit", page)];
        if backwards {
            query.push(("direction", "backward".to_owned()));
        }
        if let Some(f) = &from {
            query.push(("from", f.clone()));
        }
        let response = client
            .get(url(server, stream, ""))
            .query(&query)
            .send()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        if !response.status().is_success() {
            return Err(failure(response)
                .await
                .context(format!("reading '{stream}' failed")));
        }
        let body: Value = response.json().await.context("malformed answer")?;
        let events = body["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            crate::output::print_remote_event(event, as_json);
        }
        remaining = remaining.saturating_sub(events.len() as u64);
        match body["next"].as_u64() {
            Some(next) if !events.is_empty() => from = Some(next.to_string()),
            _ => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `annals tail --server`: follows the SSE stream.
pub(crate) async fn tail(
    server: &str,
    stream: &str,
    from: &str,
    count: Option<u64>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let response = client()?
        .get(url(server, stream, "/subscribe"))
        .query(&[("from", from)])
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !response.status().is_success() {
        return Err(failure(response)
            .await
            .context(format!("subscribing to '{stream}' failed")));
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut remaining = count.unwrap_or(u64::MAX);
    let (mut name, mut data) = (String::new(), String::new());
    while remaining > 0 {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(
            &chunk.context("the subscription failed")?,
        ));
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].trim_end_matches('\r').to_owned();
            buffer.drain(..=end);
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            } else if line.is_empty() && !data.is_empty() {
                match name.as_str() {
                    "" => {
                        let event: Value =
                            serde_json::from_str(&data).context("malformed event")?;
                        crate::output::print_remote_event(&event, as_json);
                        remaining -= 1;
                    }
                    "caught-up" => eprintln!("-- caught up; waiting for new events"),
                    "error" => bail!("the subscription failed: {data}"),
                    _ => {}
                }
                name.clear();
                data.clear();
                if remaining == 0 {
                    break;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_percent_encoded_in_paths() {
        assert_eq!(segment("order-42"), "order-42");
        assert_eq!(segment("$ce-order"), "$ce-order");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
