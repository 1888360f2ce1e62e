//! Against the real NATS server (`ANNALS_NATS_URL`).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;

use super::{NatsConfig, NatsSink};
use crate::envelope::{Envelope, OutboxRecord};
use crate::error::{RelayError, SinkError};
use crate::sink::{Sink, publish_all};
use crate::testing;

fn rec(seq: i64, key: &str) -> OutboxRecord {
    OutboxRecord {
        seq,
        id: Uuid::new_v4(),
        aggregate_type: "member".into(),
        aggregate_id: key.into(),
        event_type: "MemberWithdrawn".into(),
        payload: Bytes::from(format!("{{\"n\":{seq}}}")),
        content_type: "application/json".into(),
        headers: BTreeMap::new(),
        correlation_id: None,
        causation_id: None,
        created_at: Utc::now(),
    }
}

/// A client and a sink publishing to a fresh stream (named by the returned name).
async fn stream_sink() -> Option<(async_nats::Client, String, Sink)> {
    let url = testing::nats_url();
    let client = testing::nats("nats sink", &url).await?;
    let name = testing::unique("T").to_uppercase();
    let cfg = NatsConfig {
        url,
        stream: name.clone(),
        subject_prefix: format!("t.{}", name.to_lowercase()),
        ..Default::default()
    };
    let sink = Sink::Nats(NatsSink::connect(&cfg, 64, "test").await.expect("connect"));
    Some((client, name, sink))
}

#[tokio::test]
async fn publishes_with_ack_and_dedups_by_message_id() {
    let Some((client, name, sink)) = stream_sink().await else {
        return;
    };
    let records: Vec<_> = (1..=3).map(|i| rec(i, "m-1")).collect();
    assert_eq!(publish_all(&sink, &records).await.expect("publish"), 3);
    // Publishing the same ids again is acknowledged but stored once.
    assert_eq!(publish_all(&sink, &records).await.expect("republish"), 3);

    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&name).await.expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(
        info.state.messages, 3,
        "duplicates must be dropped by Nats-Msg-Id"
    );
    for (i, r) in records.iter().enumerate() {
        let msg = stream.get_raw_message(i as u64 + 1).await.expect("get");
        assert_eq!(
            msg.subject.as_str(),
            format!("t.{}.member.MemberWithdrawn", name.to_lowercase())
        );
        let env = Envelope::decode(&msg.payload).expect("envelope");
        assert_eq!(env.id, r.id);
        assert_eq!(env.subject, "m-1");
    }
    js.delete_stream(&name).await.expect("delete stream");
}

/// A message over the server's `max_payload` can never be accepted: a typed error that
/// stops the relay, naming the row, instead of a retry forever.
#[tokio::test]
async fn a_message_over_max_payload_is_a_fatal_too_large_error() {
    let Some((client, name, sink)) = stream_sink().await else {
        return;
    };
    let limit = client.server_info().max_payload;
    let mut big = rec(7, "m-2");
    big.payload = Bytes::from(format!("{{\"blob\":\"{}\"}}", "x".repeat(limit)));
    let err = publish_all(&sink, &[rec(6, "m-2"), big.clone()])
        .await
        .expect_err("over max_payload");
    match &err {
        SinkError::TooLarge { id, seq, .. } => assert_eq!((*id, *seq), (big.id, 7)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("max_payload"), "{err}");
    assert!(RelayError::from(err).is_fatal());
    async_nats::jetstream::new(client)
        .delete_stream(&name)
        .await
        .expect("delete stream");
}

#[tokio::test]
async fn unreachable_server_is_a_typed_connect_error() {
    let cfg = NatsConfig {
        url: "nats://127.0.0.1:1".into(),
        ..Default::default()
    };
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        NatsSink::connect(&cfg, 8, "test"),
    )
    .await
    .expect("connect gives up");
    assert!(matches!(
        res,
        Err(crate::error::SinkError::Connect { sink: "nats", .. })
    ));
}
