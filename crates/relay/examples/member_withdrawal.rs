//! SPEC §9 "Member withdrawal by outbox", runnable:
//!
//! 1. the member service deletes a member and, in the same transaction, enqueues
//!    `MemberWithdrawn` in its outbox;
//! 2. the relay (WAL tailing → NATS JetStream) publishes it;
//! 3. three subscribers react, each in its own database transaction with an inbox so a
//!    redelivered message has no second effect: **mail** (a goodbye mail, recorded),
//!    **purge** (crypto-shredding: the member's data key is deleted), **posts** (the
//!    member's posts are hidden).
//!
//! Then every message is published again (as after a slot loss / `republish`) and the
//! effects are shown to be unchanged.
//!
//! Run: `cargo run -p annals-relay --example member_withdrawal` (needs PostgreSQL with
//! `wal_level=logical` and NATS JetStream; addresses from `ANNALS_PG_URL`, `ANNALS_NATS_URL`).

use std::time::Duration;

use annals_relay::config::{RelayConfig, SinkKind, SourceMode};
use annals_relay::envelope::Envelope;
use annals_relay::inbox::Inbox;
use annals_relay::outbox::NewMessage;
use annals_relay::{Relay, testing};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// What the demo observed.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Members remaining.
    pub members_left: i64,
    /// Goodbye mails recorded by the mail subscriber.
    pub goodbye_mails: i64,
    /// Data keys remaining after crypto-shredding.
    pub keys_left: i64,
    /// Posts hidden.
    pub hidden_posts: i64,
    /// Posts still visible.
    pub visible_posts: i64,
    /// Messages delivered to the three subscribers.
    pub deliveries: usize,
    /// Deliveries the inboxes recognised as duplicates.
    pub skipped_duplicates: usize,
}

const SUBSCRIBERS: [&str; 3] = ["mail", "purge", "posts"];

/// Runs the whole flow in a fresh schema and cleans up. `None` when a service is missing
/// outside CI.
pub async fn run_demo() -> anyhow::Result<Option<Outcome>> {
    let Some(pool) = testing::pg_logical("member_withdrawal").await else {
        return Ok(None);
    };
    let Some(nats) = testing::nats("member_withdrawal", &testing::nats_url()).await else {
        return Ok(None);
    };
    let schema = testing::unique("members");
    let s = format!("\"{schema}\"");
    let mut cfg = RelayConfig::default();
    cfg.database.url = testing::pg_url();
    cfg.database.schema = schema.clone();
    cfg.source.mode = SourceMode::Wal;
    cfg.source.wal.slot = format!("{schema}_slot");
    cfg.source.wal.publication = format!("{schema}_pub");
    cfg.source.wal.feedback_interval_ms = 100;
    cfg.sink.kind = SinkKind::Nats;
    cfg.sink.nats.url = testing::nats_url();
    cfg.sink.nats.stream = schema.to_uppercase();
    cfg.sink.nats.subject_prefix = format!("demo.{schema}");
    cfg.housekeeping.enabled = false;

    // The member service's schema, and each subscriber's own tables (one database here for
    // brevity; each subscriber only touches its own tables).
    for sql in [
        format!("CREATE SCHEMA {s}"),
        format!("CREATE TABLE {s}.members (id text PRIMARY KEY, email text NOT NULL)"),
        format!("CREATE TABLE {s}.mail_sent (member_id text, kind text)"),
        format!("CREATE TABLE {s}.member_keys (member_id text PRIMARY KEY, key bytea)"),
        format!(
            "CREATE TABLE {s}.posts (id serial, author text, hidden bool NOT NULL DEFAULT false)"
        ),
        format!(
            "INSERT INTO {s}.members VALUES ('m-1', 'ann@example.invalid'), ('m-2', 'bob@example.invalid')"
        ),
        format!("INSERT INTO {s}.member_keys VALUES ('m-1', '\\x01'), ('m-2', '\\x02')"),
        format!("INSERT INTO {s}.posts (author) VALUES ('m-1'), ('m-1'), ('m-2')"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(&*sql))
            .execute(&pool)
            .await?;
    }
    let outbox = cfg.outbox()?;
    outbox.migrate(&pool).await?;
    let relay = Relay::new(cfg.clone())?;
    relay.setup(&pool).await?;
    let shutdown = CancellationToken::new();
    let running = {
        let s = shutdown.clone();
        tokio::spawn(async move { relay.run(s).await })
    };

    // 1. The member service: delete + outbox row, one transaction.
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "DELETE FROM {s}.members WHERE id = $1"
    )))
    .bind("m-1")
    .execute(&mut *tx)
    .await?;
    let msg = NewMessage::json(
        "member",
        "m-1",
        "MemberWithdrawn",
        &serde_json::json!({"member_id": "m-1"}),
    )?
    .with_correlation_id("withdrawal-request-77");
    outbox.enqueue(&mut tx, &msg).await?;
    tx.commit().await?;

    // 3. Subscribers: durable pull consumers, effect + inbox in one transaction, ack after.
    let inbox = Inbox::new(&schema, "inbox")?;
    inbox.migrate(&pool).await?;
    let js = jetstream::new(nats.clone());
    let mut deliveries = 0usize;
    let mut skipped = 0usize;
    let mut consume = async |want: usize| -> anyhow::Result<()> {
        let stream = loop {
            match js.get_stream(&cfg.sink.nats.stream).await {
                Ok(st) => break st,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        for name in SUBSCRIBERS {
            let consumer: jetstream::consumer::Consumer<pull::Config> = stream
                .get_or_create_consumer(
                    name,
                    pull::Config {
                        durable_name: Some(name.to_string()),
                        ..Default::default()
                    },
                )
                .await?;
            let mut got = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while got < want && tokio::time::Instant::now() < deadline {
                let mut batch = consumer
                    .fetch()
                    .max_messages(10)
                    .expires(Duration::from_millis(500))
                    .messages()
                    .await?;
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| anyhow::anyhow!(e))?;
                    let env = Envelope::decode(&m.payload)?;
                    let mut tx = pool.begin().await?;
                    if inbox.record(&mut tx, name, env.id).await? {
                        let member: serde_json::Value = env.data_json()?;
                        let id = member["member_id"].as_str().unwrap_or_default().to_string();
                        let sql = match name {
                            "mail" => format!("INSERT INTO {s}.mail_sent VALUES ($1, 'goodbye')"),
                            "purge" => format!("DELETE FROM {s}.member_keys WHERE member_id = $1"),
                            _ => format!("UPDATE {s}.posts SET hidden = true WHERE author = $1"),
                        };
                        sqlx::query(sqlx::AssertSqlSafe(&*sql))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    } else {
                        skipped += 1;
                    }
                    tx.commit().await?;
                    m.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                    deliveries += 1;
                    got += 1;
                }
            }
        }
        Ok(())
    };
    consume(1).await?;

    // A redelivery storm: everything published again.
    annals_relay::republish::republish_since(&cfg, &pool, chrono::DateTime::UNIX_EPOCH).await?;
    // JetStream drops the republished ids (same Nats-Msg-Id within its window); to show the
    // inbox at work too, the same envelope is also published under a new stream sequence.
    let again = js
        .get_stream(&cfg.sink.nats.stream)
        .await?
        .get_raw_message(1)
        .await?;
    js.publish(again.subject.clone(), again.payload.clone())
        .await?
        .await?;
    consume(1).await?;

    let one = async |sql: String| -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(&*sql))
            .fetch_one(&pool)
            .await?)
    };
    let outcome = Outcome {
        members_left: one(format!("SELECT count(*) FROM {s}.members")).await?,
        goodbye_mails: one(format!("SELECT count(*) FROM {s}.mail_sent")).await?,
        keys_left: one(format!("SELECT count(*) FROM {s}.member_keys")).await?,
        hidden_posts: one(format!("SELECT count(*) FROM {s}.posts WHERE hidden")).await?,
        visible_posts: one(format!("SELECT count(*) FROM {s}.posts WHERE NOT hidden")).await?,
        deliveries,
        skipped_duplicates: skipped,
    };

    shutdown.cancel();
    running.await??;
    let _ = js.delete_stream(&cfg.sink.nats.stream).await;
    annals_relay::source::wal::slot::drop_slot(&pool, &cfg).await?;
    sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "DROP PUBLICATION IF EXISTS \"{}\"",
        cfg.source.wal.publication
    )))
    .execute(&pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(&*format!("DROP SCHEMA {s} CASCADE")))
        .execute(&pool)
        .await?;
    Ok(Some(outcome))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match run_demo().await? {
        Some(o) => println!("{o:#?}"),
        None => println!("skipped: services unavailable"),
    }
    Ok(())
}
