//! The HTTP/JSON API and its Server-Sent Events, driven by a real HTTP client (reqwest).

mod common;

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    let response = http.post(url).json(&body).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn get(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = http.get(url).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

fn events(n: u64, event_type: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"type": event_type, "data": {"i": i}}))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn append_then_read_pages_forward_and_backward() {
    let server = common::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/streams/order-7", server.http());

    let (status, body) = post(
        &http,
        &url,
        json!({"expectedRevision": "no-stream", "events": events(3, "Placed")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["currentRevision"], 2);
    assert_eq!(body["firstPosition"], 0);
    assert_eq!(body["lastPosition"], 2);

    // The expected revision as a header.
    let response = http
        .post(&url)
        .header("Expected-Revision", "2")
        .json(&json!({"events": events(2, "Paid")}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);

    let (status, page) = get(&http, &format!("{url}?limit=2")).await;
    assert_eq!(status, StatusCode::OK);
    let revisions: Vec<_> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["revision"].as_u64())
        .collect();
    assert_eq!(revisions, vec![Some(0), Some(1)]);
    assert_eq!(page["events"][0]["data"], json!({"i": 0}));
    assert_eq!(page["events"][0]["type"], "Placed");
    assert_eq!(page["events"][0]["contentType"], "application/json");
    assert_eq!(page["next"], 2);

    let (_, rest) = get(&http, &format!("{url}?from=2&limit=10")).await;
    assert_eq!(rest["events"].as_array().expect("events").len(), 3);
    assert_eq!(rest["next"], Value::Null);

    let (_, back) = get(&http, &format!("{url}?direction=backward&limit=2")).await;
    let revisions: Vec<_> = back["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["revision"].as_u64())
        .collect();
    assert_eq!(revisions, vec![Some(4), Some(3)]);
    assert_eq!(back["next"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn all_category_and_event_type_reads() {
    let server = common::start().await;
    let http = reqwest::Client::new();
    let base = server.http();
    post(
        &http,
        &format!("{base}/streams/order-1"),
        json!({"events": events(2, "OrderPlaced")}),
    )
    .await;
    post(
        &http,
        &format!("{base}/streams/customer-1"),
        json!({"events": events(1, "CustomerJoined")}),
    )
    .await;
    post(
        &http,
        &format!("{base}/streams/order-2"),
        json!({"events": events(1, "OrderPlaced")}),
    )
    .await;

    let (_, all) = get(&http, &format!("{base}/streams/$all?limit=100")).await;
    assert_eq!(all["events"].as_array().expect("events").len(), 4);

    let (_, filtered) = get(
        &http,
        &format!("{base}/streams/$all?streamPrefix=customer-"),
    )
    .await;
    let streams: Vec<_> = filtered["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["stream"].clone())
        .collect();
    assert_eq!(streams, vec![json!("customer-1")]);

    let (_, by_type) = get(&http, &format!("{base}/streams/$all?eventTypeRegex=^Order")).await;
    assert_eq!(by_type["events"].as_array().expect("events").len(), 3);

    let (status, category) = get(&http, &format!("{base}/streams/$ce-order")).await;
    assert_eq!(status, StatusCode::OK, "{category}");
    let category = category["events"].as_array().expect("events").clone();
    assert_eq!(category.len(), 3);
    assert_eq!(category[2]["stream"], "order-2");
    assert_eq!(
        category[2]["link"],
        json!({"stream": "$ce-order", "revision": 2})
    );

    let (_, by_type) = get(&http, &format!("{base}/streams/%24et-CustomerJoined")).await;
    assert_eq!(by_type["events"][0]["stream"], "customer-1");

    let (_, backwards) = get(
        &http,
        &format!("{base}/streams/$all?direction=backward&limit=1"),
    )
    .await;
    assert_eq!(backwards["events"][0]["stream"], "order-2");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_metadata_and_deletes_have_json_errors() {
    let server = common::start().await;
    let http = reqwest::Client::new();
    let base = server.http();
    let url = format!("{base}/streams/account-1");
    post(
        &http,
        &url,
        json!({"expectedRevision": "no-stream", "events": events(3, "Opened")}),
    )
    .await;

    let (status, body) = post(
        &http,
        &url,
        json!({"expectedRevision": 0, "events": events(1, "Late")}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "wrong_expected_revision");
    assert_eq!(body["error"]["field"], "expectedRevision");
    assert_eq!(body["error"]["expected"], "0");
    assert_eq!(body["error"]["actual"], "2");

    let (status, _) = get(&http, &format!("{url}/metadata")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = http
        .put(format!("{url}/metadata"))
        .json(&json!({"expectedRevision": "no-stream", "metadata": {"$maxCount": 1, "team": "ledger"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), StatusCode::OK);
    let (_, meta) = get(&http, &format!("{url}/metadata")).await;
    assert_eq!(
        meta,
        json!({"revision": 0, "metadata": {"$maxCount": 1, "team": "ledger"}})
    );
    let (_, visible) = get(&http, &url).await;
    assert_eq!(
        visible["events"].as_array().expect("events").len(),
        1,
        "$maxCount hides older events"
    );

    let response = http
        .put(format!("{url}/metadata"))
        .json(&json!({"metadata": {"$maxCount": "many"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["field"], "metadata");

    let response = http
        .delete(format!("{url}?expectedRevision=2"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = get(&http, &url).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "stream_not_found");

    let response = http
        .delete(format!("{url}?tombstone=true"))
        .send()
        .await
        .expect("tombstone");
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = get(&http, &url).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["error"]["code"], "stream_deleted");
    let (status, _) = post(&http, &url, json!({"events": events(1, "Zombie")})).await;
    assert_eq!(status, StatusCode::GONE);
    server.stop().await;
}

/// One SSE message: (event name, id, data).
type SseMessage = (String, Option<String>, String);

/// Reads SSE messages from a response until `want` of them arrived (keep-alives skipped).
async fn sse_messages(response: reqwest::Response, want: usize) -> Vec<SseMessage> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut out = Vec::new();
    let (mut name, mut id, mut data) = (String::new(), None, String::new());
    while out.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("SSE message within 10 s")
            .expect("stream open")
            .expect("chunk");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].to_owned();
            buffer.drain(..=end);
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                eprintln!("SSE: event={name:?} id={id:?} data={data}");
                out.push((
                    std::mem::take(&mut name),
                    id.take(),
                    std::mem::take(&mut data),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_subscription_catches_up_goes_live_and_resumes_by_last_event_id() {
    let server = common::start().await;
    let http = reqwest::Client::new();
    let base = server.http();
    let url = format!("{base}/streams/ticket-9");
    post(&http, &url, json!({"events": events(2, "Opened")})).await;

    let response = http
        .get(format!("{url}/subscribe?from=start"))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let writer = {
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            post(&http, &url, json!({"events": events(1, "Closed")})).await
        })
    };
    let messages = sse_messages(response, 4).await;
    assert_eq!(messages[0].1.as_deref(), Some("0"));
    assert_eq!(messages[1].1.as_deref(), Some("1"));
    assert_eq!(messages[2].0, "caught-up");
    assert_eq!(messages[3].1.as_deref(), Some("2"));
    let live: Value = serde_json::from_str(&messages[3].2).expect("event JSON");
    assert_eq!(live["type"], "Closed");
    assert_eq!(writer.await.expect("writer").0, StatusCode::OK);

    // A reconnecting EventSource sends Last-Event-ID and resumes right after it.
    let response = http
        .get(format!("{url}/subscribe"))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("resume");
    let messages = sse_messages(response, 2).await;
    assert_eq!(messages[0].1.as_deref(), Some("2"));
    assert_eq!(messages[1].0, "caught-up");

    // $all with a filter: ids are positions.
    let response = http
        .get(format!(
            "{base}/streams/$all/subscribe?from=start&streamPrefix=ticket-"
        ))
        .send()
        .await
        .expect("subscribe $all");
    let messages = sse_messages(response, 3).await;
    let ids: Vec<_> = messages
        .iter()
        .filter(|m| m.0.is_empty())
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(
        ids,
        vec![
            Some("0".to_owned()),
            Some("1".to_owned()),
            Some("2".to_owned())
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_and_openapi() {
    let server = common::start().await;
    let http = reqwest::Client::new();
    let base = server.http();
    post(
        &http,
        &format!("{base}/streams/m-1"),
        json!({"events": events(2, "Tick")}),
    )
    .await;

    let (status, health) = get(&http, &format!("{base}/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["head"], 2);

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let text = metrics.text().await.expect("text");
    assert!(
        text.contains("annals_append_requests_total{api=\"http\",outcome=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("annals_appended_events_total 2\n"), "{text}");
    assert!(
        text.contains("annals_append_commit_seconds_count 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE annals_subscription_lag_positions gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE annals_subscription_delivery_seconds histogram"),
        "{text}"
    );

    let (status, doc) = get(&http, &format!("{base}/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    for (path, method) in [
        ("/streams/{stream}", "post"),
        ("/streams/{stream}", "get"),
        ("/streams/{stream}", "delete"),
        ("/streams/{stream}/metadata", "get"),
        ("/streams/{stream}/metadata", "put"),
        ("/streams/{stream}/subscribe", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["AppendJson"].is_object());

    let (status, body) = get(&http, &format!("{base}/no/such/route")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    server.stop().await;
}
