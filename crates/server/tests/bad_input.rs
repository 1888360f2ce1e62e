//! SPEC §5 bad input: garbage and truncated protobuf, oversized events and batches, invalid
//! UUIDs, invalid stream names, malformed JSON declared as JSON. Each gets a clear, typed error
//! and changes nothing (the log head does not move); the server keeps serving.

mod common;

use std::collections::HashMap;

use annals_server::proto::event_store::client as shared;
use annals_server::proto::event_store::client::streams as pb;
use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Frames one gRPC message (uncompressed).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A raw gRPC call over HTTP/2: (grpc-status, grpc-message, response body).
async fn grpc(
    addr: std::net::SocketAddr,
    method: &str,
    body: Vec<u8>,
) -> (Option<String>, String, Bytes) {
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = http
        .post(format!(
            "http://{addr}/event_store.client.streams.Streams/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send()
        .await
        .expect("HTTP/2 call");
    // The status is in the headers for a trailers-only answer, else in the trailers.
    let response: http::Response<reqwest::Body> = response.into();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        parts
            .headers
            .get(name)
            .or_else(|| trailers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = field("grpc-status");
    let message = field("grpc-message").unwrap_or_default();
    (status, message, collected.to_bytes())
}

fn head(server: &common::TestServer) -> u64 {
    server.store.watch_head().borrow().0
}

fn options(stream: &[u8]) -> pb::AppendReq {
    pb::AppendReq {
        content: Some(pb::append_req::Content::Options(pb::append_req::Options {
            stream_identifier: Some(shared::StreamIdentifier {
                stream_name: Bytes::copy_from_slice(stream),
            }),
            expected_stream_revision: Some(pb::append_req::options::ExpectedStreamRevision::Any(
                shared::Empty {},
            )),
        })),
    }
}

fn proposed(id: &str, data: &[u8]) -> pb::AppendReq {
    pb::AppendReq {
        content: Some(pb::append_req::Content::ProposedMessage(
            pb::append_req::ProposedMessage {
                id: Some(shared::Uuid {
                    value: Some(shared::uuid::Value::String(id.to_owned())),
                }),
                metadata: HashMap::from([
                    ("type".to_owned(), "Tested".to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]),
                custom_metadata: Bytes::new(),
                data: Bytes::copy_from_slice(data),
            },
        )),
    }
}

fn append_body(messages: &[pb::AppendReq]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| frame(&m.encode_to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_well_formed_raw_append_works() {
    // Proves the raw helper speaks the protocol, so the failures below are about the input.
    let server = common::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let (status, message, body) = grpc(
        server.addr,
        "Append",
        append_body(&[options(b"raw-1"), proposed(&id, b"{}")]),
    )
    .await;
    assert_eq!(status.as_deref(), Some("0"), "{message}");
    let response = pb::AppendResp::decode(&body[5..]).expect("AppendResp");
    assert!(
        matches!(response.result, Some(pb::append_resp::Result::Success(_))),
        "{response:?}"
    );
    assert_eq!(head(&server), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_truncated_protobuf_are_invalid_arguments() {
    let server = common::start().await;
    let garbage = frame(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]);
    for method in ["Append", "Read", "Delete", "Tombstone", "BatchAppend"] {
        let (status, message, body) = grpc(server.addr, method, garbage.clone()).await;
        assert_eq!(
            status.as_deref(),
            Some("3"),
            "{method}: garbage gave {status:?} {message} {body:?}"
        );
    }
    // A frame that announces 100 bytes and carries 10.
    let mut truncated = vec![0u8, 0, 0, 0, 100];
    truncated.extend_from_slice(&[8u8; 10]);
    for method in ["Append", "Delete"] {
        let (status, message, _) = grpc(server.addr, method, truncated.clone()).await;
        assert!(
            matches!(status.as_deref(), Some("3") | Some("13")),
            "{method}: truncated gave {status:?} {message}"
        );
        assert_ne!(status.as_deref(), Some("0"));
    }
    assert_eq!(head(&server), 0, "nothing was written");
    // Still serving.
    let id = uuid::Uuid::new_v4().to_string();
    let (_, _, body) = grpc(
        server.addr,
        "Append",
        append_body(&[options(b"after-1"), proposed(&id, b"{}")]),
    )
    .await;
    assert!(pb::AppendResp::decode(&body[5..]).is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_uuids_stream_names_and_json_name_the_field() {
    let server = common::start().await;
    let good = uuid::Uuid::new_v4().to_string();
    let cases: Vec<(Vec<pb::AppendReq>, &str)> = vec![
        (
            vec![options(b"uuid-1"), proposed("not-a-uuid", b"{}")],
            "proposed_message[0].id",
        ),
        (vec![options(b""), proposed(&good, b"{}")], "stream"),
        (
            vec![options(b"bad\x01name"), proposed(&good, b"{}")],
            "control character",
        ),
        (
            vec![options(&[0xff, 0xfe]), proposed(&good, b"{}")],
            "UTF-8",
        ),
        (
            vec![options(b"json-1"), proposed(&good, b"{not json")],
            "JSON",
        ),
        (vec![proposed(&good, b"{}")], "options"),
    ];
    for (messages, expect) in cases {
        let (status, message, _) = grpc(server.addr, "Append", append_body(&messages)).await;
        let message = percent_decode(&message);
        assert_eq!(status.as_deref(), Some("3"), "{message}");
        assert!(
            message.contains(expect),
            "'{message}' should mention {expect}"
        );
    }
    assert_eq!(head(&server), 0, "nothing was written");
    server.stop().await;
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_batch_append_is_refused_with_the_limit() {
    let mut config = common::config();
    config.limits.max_event_bytes = 1024;
    config.limits.max_append_bytes = 4096;
    let server = common::start_with(config).await;
    let correlation = shared::Uuid {
        value: Some(shared::uuid::Value::String(
            uuid::Uuid::new_v4().to_string(),
        )),
    };
    let proposed: Vec<_> = (0..8)
        .map(|_| pb::batch_append_req::ProposedMessage {
            id: Some(shared::Uuid {
                value: Some(shared::uuid::Value::String(
                    uuid::Uuid::new_v4().to_string(),
                )),
            }),
            metadata: HashMap::from([("type".to_owned(), "Big".to_owned())]),
            custom_metadata: Bytes::new(),
            data: Bytes::from(vec![0u8; 900]),
        })
        .collect();
    let request = pb::BatchAppendReq {
        correlation_id: Some(correlation.clone()),
        options: Some(pb::batch_append_req::Options {
            stream_identifier: Some(shared::StreamIdentifier {
                stream_name: Bytes::from_static(b"batch-big"),
            }),
            expected_stream_position: Some(
                pb::batch_append_req::options::ExpectedStreamPosition::Any(()),
            ),
            deadline_option: None,
        }),
        proposed_messages: proposed,
        is_final: true,
    };
    let (status, message, body) =
        grpc(server.addr, "BatchAppend", frame(&request.encode_to_vec())).await;
    assert_eq!(status.as_deref(), Some("0"), "{message}");
    let response = pb::BatchAppendResp::decode(&body[5..]).expect("one response");
    assert_eq!(response.correlation_id, Some(correlation));
    let Some(pb::batch_append_resp::Result::Error(error)) = response.result else {
        panic!("expected an error result: {response:?}");
    };
    assert_eq!(error.code, 3);
    let details = error.details.expect("details");
    assert_eq!(
        details.type_url,
        "type.googleapis.com/event_store.client.MaximumAppendSizeExceeded"
    );
    let detail =
        shared::MaximumAppendSizeExceeded::decode(details.value.as_slice()).expect("detail");
    assert_eq!(detail.max_append_size, 4096);
    assert_eq!(head(&server), 0, "nothing was written");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unimplemented_grpc_methods_say_so() {
    let server = common::start().await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = http
        .post(format!(
            "http://{}/event_store.client.persistent_subscriptions.PersistentSubscriptions/Create",
            server.addr
        ))
        .header("content-type", "application/grpc")
        .body(frame(&[]))
        .send()
        .await
        .expect("call");
    assert_eq!(response.headers()["grpc-status"], "12");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_bad_input_gets_a_json_error_naming_the_field() {
    let mut config = common::config();
    config.limits.max_event_bytes = 1024;
    config.limits.max_append_bytes = 4096;
    let server = common::start_with(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}/streams/input-1", server.http());

    let send = |body: String, content_type: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let response = http
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body: Value = response.json().await.expect("a JSON error body");
            (status, body)
        }
    };
    let cases = [
        (
            "{\"events\": [",
            "application/json",
            StatusCode::BAD_REQUEST,
            "events",
        ),
        (
            "{\"events\": [{\"type\": 5}]}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "events[0].type",
        ),
        (
            "{\"events\": [{\"type\": \"A\", \"colour\": 1}]}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "events[0]",
        ),
        (
            "{\"events\": [{\"id\": \"nope\", \"type\": \"A\"}]}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "events[0].id",
        ),
        (
            "{\"events\": [{\"type\": \"A\", \"dataBase64\": \"***\"}]}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "events[0].dataBase64",
        ),
        (
            "{\"expectedRevision\": -3, \"events\": []}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "expectedRevision",
        ),
        (
            "{\"events\": [{\"type\": \"A\"}]}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
    ];
    for (body, content_type, status, field) in cases {
        let (got, error) = send(body.to_owned(), content_type).await;
        assert_eq!(got, status, "{body}: {error}");
        let named = error["error"]["field"].as_str().unwrap_or("");
        assert!(
            named.starts_with(field),
            "{body}: field '{named}' should be {field}: {error}"
        );
        assert!(!error["error"]["message"].as_str().unwrap_or("").is_empty());
    }

    let big = json!({"events": [{"type": "Big", "data": "x".repeat(2000)}]}).to_string();
    let (status, error) = send(big, "application/json").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["error"]["code"], "too_large");

    let response = http
        .post(format!("{}/streams/bad%01name", server.http()))
        .json(&json!({"events": [{"type": "A"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["field"], "stream");

    let response = http
        .post(format!("{}/streams/$ce-input", server.http()))
        .json(&json!({"events": [{"type": "A"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = http
        .get(format!("{url}?limit=0"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["field"], "limit");

    let response = http
        .get(format!("{url}?from=yesterday"))
        .send()
        .await
        .expect("request");
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["field"], "from");

    assert_eq!(head(&server), 0, "nothing was written");
    server.stop().await;
}
