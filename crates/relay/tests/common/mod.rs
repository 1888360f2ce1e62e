//! Shared harness of the relay's integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use annals_relay::config::{RelayConfig, SinkKind, SourceMode};
use annals_relay::envelope::Envelope;
use annals_relay::outbox::{NewMessage, Outbox};
use annals_relay::testing;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use sqlx::PgPool;
use uuid::Uuid;

/// Names owned by one test.
pub struct Names {
    pub schema: String,
    pub slot: String,
    pub stream: String,
    pub prefix: String,
    pub exchange: String,
    pub queue: String,
}

impl Names {
    pub fn new(test: &str) -> Self {
        let base = testing::unique(test);
        Self {
            schema: base.clone(),
            slot: format!("{base}_slot"),
            stream: base.to_uppercase(),
            prefix: format!("t.{base}"),
            exchange: format!("{base}.ex"),
            queue: format!("{base}.q"),
        }
    }
}

pub fn config(n: &Names, mode: SourceMode, sink: SinkKind) -> RelayConfig {
    let mut c = RelayConfig::default();
    c.database.url = testing::pg_url();
    c.database.schema = n.schema.clone();
    c.source.mode = mode;
    c.source.polling.poll_interval_ms = 10;
    c.source.wal.slot = n.slot.clone();
    c.source.wal.publication = format!("{}_pub", n.schema);
    c.source.wal.feedback_interval_ms = 100;
    c.source.wal.heartbeat_interval_ms = 500;
    c.source.wal.slot_check_interval_ms = 500;
    c.sink.kind = sink;
    c.sink.nats.url = testing::nats_url();
    c.sink.nats.stream = n.stream.clone();
    c.sink.nats.subject_prefix = n.prefix.clone();
    c.sink.rabbitmq.url = testing::amqp_url();
    c.sink.rabbitmq.exchange = n.exchange.clone();
    c.housekeeping.enabled = false;
    c.retry.initial_backoff_ms = 50;
    c.retry.max_backoff_ms = 500;
    c
}

/// One committed row: key and per-key counter.
#[derive(Debug, Clone)]
pub struct Written {
    pub id: Uuid,
    pub key: String,
    pub n: u64,
}

/// Writes rows for `keys` keys in transactions of the given sizes (cycled) until `total`.
pub async fn write_rows(
    pool: &PgPool,
    outbox: &Outbox,
    keys: usize,
    total: usize,
    tx_sizes: &[usize],
) -> Vec<Written> {
    let mut counters = vec![0u64; keys];
    let mut out = Vec::with_capacity(total);
    let mut i = 0usize;
    let mut round = 0usize;
    while out.len() < total {
        let size = tx_sizes[round % tx_sizes.len()].min(total - out.len());
        round += 1;
        let mut msgs = Vec::with_capacity(size);
        let mut written = Vec::with_capacity(size);
        for _ in 0..size {
            let k = i % keys;
            i += 1;
            counters[k] += 1;
            let key = format!("k{k}");
            let m = NewMessage::json(
                "item",
                &key,
                "Counted",
                &serde_json::json!({"k": key, "n": counters[k]}),
            )
            .expect("json");
            written.push(Written {
                id: m.id,
                key: key.clone(),
                n: counters[k],
            });
            msgs.push(m);
        }
        let mut tx = pool.begin().await.expect("begin");
        outbox.enqueue_all(&mut tx, &msgs).await.expect("enqueue");
        tx.commit().await.expect("commit");
        out.extend(written);
    }
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
}

/// Checks deliveries (in delivery order) against what was committed.
pub fn check(written: &[Written], delivered: &[Envelope]) -> Counts {
    let mut seen = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut c = Counts {
        delivered: delivered.len(),
        ..Default::default()
    };
    for env in delivered {
        if !seen.insert(env.id) {
            c.duplicates += 1;
            continue;
        }
        let v: serde_json::Value = env.data_json().expect("payload");
        let n = v["n"].as_u64().expect("n");
        let l = last.entry(env.subject.clone()).or_insert(0);
        if n != *l + 1 {
            c.out_of_order += 1;
        }
        *l = (*l).max(n);
    }
    c.lost = written.iter().filter(|w| !seen.contains(&w.id)).count();
    c
}

/// Reads the JetStream stream from sequence 1 until `expected` distinct ids arrived.
pub async fn collect_nats(
    client: &async_nats::Client,
    stream: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Envelope> {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let mut next = 1u64;
    while ids.len() < expected && Instant::now() < deadline {
        let Ok(mut s) = js.get_stream(stream).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let last = s.info().await.map(|i| i.state.last_sequence).unwrap_or(0);
        while next <= last {
            match s.get_raw_message(next).await {
                Ok(m) => {
                    let env = Envelope::decode(&m.payload).expect("envelope");
                    ids.insert(env.id);
                    out.push(env);
                    next += 1;
                }
                Err(_) => break,
            }
        }
        if ids.len() < expected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out
}

pub async fn delete_stream(client: &async_nats::Client, stream: &str) {
    let js = async_nats::jetstream::new(client.clone());
    let _ = js.delete_stream(stream).await;
}

/// Declares a queue bound to the exchange (declaring the exchange too).
pub async fn amqp_queue(conn: &lapin::Connection, exchange: &str, queue: &str) -> lapin::Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        ShortString::from(exchange),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    ch.queue_declare(
        ShortString::from(queue),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        ShortString::from(queue),
        ShortString::from(exchange),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    ch
}

pub async fn collect_amqp(
    ch: &lapin::Channel,
    queue: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Envelope> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    while ids.len() < expected && Instant::now() < deadline {
        match ch
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(m) => {
                let env = Envelope::decode(&m.delivery.data).expect("envelope");
                ids.insert(env.id);
                out.push(env);
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    out
}

pub async fn cleanup_amqp(conn: &lapin::Connection, exchange: &str, queue: &str) {
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(ShortString::from(queue), Default::default())
            .await;
        let _ = ch
            .exchange_delete(ShortString::from(exchange), Default::default())
            .await;
    }
}

/// Drops the slot, publication and schema of a test.
pub async fn cleanup_pg(pool: &PgPool, cfg: &RelayConfig) {
    annals_relay::source::wal::slot::drop_slot(pool, cfg)
        .await
        .expect("drop the test's slot");
    let _ = sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "DROP PUBLICATION IF EXISTS \"{}\"",
        cfg.source.wal.publication
    )))
    .execute(pool)
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        cfg.database.schema
    )))
    .execute(pool)
    .await;
}
