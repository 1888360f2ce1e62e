//! Against the real RabbitMQ (`ANNALS_AMQP_URL`).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::Utc;
use lapin::options::{
    BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use uuid::Uuid;

use super::{RabbitMqConfig, RabbitMqSink};
use crate::envelope::{Envelope, OutboxRecord};
use crate::sink::{Sink, publish_all};
use crate::testing;

fn rec(seq: i64) -> OutboxRecord {
    OutboxRecord {
        seq,
        id: Uuid::new_v4(),
        aggregate_type: "member".into(),
        aggregate_id: "m-1".into(),
        event_type: "MemberWithdrawn".into(),
        payload: Bytes::from_static(b"\x01\x02"),
        content_type: "application/octet-stream".into(),
        headers: BTreeMap::new(),
        correlation_id: Some("c-1".into()),
        causation_id: None,
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn publishes_persistent_messages_with_confirms() {
    let Some(conn) = testing::amqp("rabbitmq sink").await else {
        return;
    };
    let exchange = testing::unique("t.ex");
    let queue = testing::unique("t.q");
    let cfg = RabbitMqConfig {
        url: testing::amqp_url(),
        exchange: exchange.clone(),
        mandatory: true,
        ..Default::default()
    };
    let sink = Sink::RabbitMq(RabbitMqSink::connect(&cfg, "test").await.expect("connect"));
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        ShortString::from(queue.as_str()),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(exchange.as_str()),
        ShortString::from("member.#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let records: Vec<_> = (1..=5).map(rec).collect();
    assert_eq!(publish_all(&sink, &records).await.expect("publish"), 5);
    for r in &records {
        let got = ch
            .basic_get(
                ShortString::from(queue.as_str()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("get")
            .expect("a message");
        let props = &got.delivery.properties;
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(
            props.message_id().as_ref().map(|s| s.as_str().to_string()),
            Some(r.id.to_string())
        );
        assert_eq!(got.delivery.routing_key.as_str(), "member.MemberWithdrawn");
        let env = Envelope::decode(&got.delivery.data).expect("envelope");
        assert_eq!(env.id, r.id);
        assert_eq!(env.data_bytes().expect("bytes"), b"\x01\x02");
    }

    // With `mandatory`, an unroutable message is a failed publish, not a silent drop.
    let mut lost = rec(9);
    lost.aggregate_type = "nobody".into();
    let ack = sink.publish(&lost).await.expect("send");
    assert!(matches!(
        ack.await,
        Err(crate::error::SinkError::Publish { .. })
    ));

    ch.queue_delete(
        ShortString::from(queue.as_str()),
        QueueDeleteOptions::default(),
    )
    .await
    .expect("delete queue");
    ch.exchange_delete(
        ShortString::from(exchange.as_str()),
        ExchangeDeleteOptions::default(),
    )
    .await
    .expect("delete exchange");
}
