//! How events are printed: one line per event, human-readable or JSON.

use annals_core::{ContentType, ResolvedEvent};
use serde_json::{Value, json};

/// Prints one event.
pub(crate) fn print_event(event: &ResolvedEvent, as_json: bool) {
    if as_json {
        println!("{}", to_json(event));
    } else {
        let e = &event.event;
        let link = event
            .link
            .as_ref()
            .map(|l| format!(" (#{} in {})", l.revision, l.stream));
        println!(
            "{}@{} #{} {} {} {}{}",
            e.stream,
            e.position,
            e.revision,
            e.event_type,
            e.created,
            payload_text(e.content_type, &e.data),
            link.unwrap_or_default()
        );
    }
}

fn payload_text(content_type: ContentType, data: &[u8]) -> String {
    match (content_type, std::str::from_utf8(data)) {
        (ContentType::Json, Ok(text)) => text.to_owned(),
        _ => format!("<{} bytes>", data.len()),
    }
}

fn payload_json(content_type: ContentType, data: &[u8]) -> Value {
    match content_type {
        ContentType::Json if data.is_empty() => Value::Null,
        ContentType::Json => serde_json::from_slice(data).unwrap_or(Value::Null),
        ContentType::Binary => Value::String(hex(data)),
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON form of an event.
pub(crate) fn to_json(event: &ResolvedEvent) -> Value {
    let e = &event.event;
    let mut value = json!({
        "stream": e.stream.as_str(),
        "revision": e.revision,
        "position": e.position.0,
        "id": e.id.to_string(),
        "type": e.event_type.as_str(),
        "contentType": e.content_type.mime(),
        "created": e.created.to_string(),
        "data": payload_json(e.content_type, &e.data),
        "metadata": payload_json(ContentType::Json, &e.metadata),
    });
    if let (Some(link), Some(map)) = (&event.link, value.as_object_mut()) {
        map.insert(
            "link".into(),
            json!({"stream": link.stream.as_str(), "revision": link.revision}),
        );
    }
    value
}

/// Prints one event as the server's HTTP API returns it.
pub(crate) fn print_remote_event(event: &Value, as_json: bool) {
    if as_json {
        println!("{event}");
        return;
    }
    let text = |key: &str| {
        event.get(key).map_or_else(String::new, |v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let payload = match (event.get("data"), event.get("dataBase64")) {
        (Some(data), _) if !data.is_null() => data.to_string(),
        (_, Some(Value::String(b64))) => format!("<base64 {b64}>"),
        _ => String::new(),
    };
    let link = event.get("link").map(|l| {
        format!(
            " (#{} in {})",
            l["revision"],
            l["stream"].as_str().unwrap_or("")
        )
    });
    println!(
        "{}@{} #{} {} {} {}{}",
        text("stream"),
        text("position"),
        text("revision"),
        text("type"),
        text("created"),
        payload,
        link.unwrap_or_default()
    );
}
