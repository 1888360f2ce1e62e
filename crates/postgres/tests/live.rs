//! Live subscriptions on PostgreSQL wake on `LISTEN`/`NOTIFY` from another store instance
//! (another process, in production), and a lost notification only delays delivery until the
//! next periodic re-check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::subscription::{
    SubscribeFrom, SubscriptionMessage, SubscriptionSource, subscribe,
};
use annals_core::{EventAppender, EventType, ExpectedRevision, NewEvent, StreamName};
use futures::StreamExt;
use parking_lot::Mutex;

/// Waits for the next event of a subscription; returns how long it took.
async fn next_event(subscription: &mut annals_core::Subscription, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let message = tokio::time::timeout(limit, subscription.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {limit:?}"))
            .expect("the subscription runs")
            .expect("no error");
        if let SubscriptionMessage::Event(_) = message {
            return started.elapsed();
        }
    }
}

async fn append(store: &annals_postgres::PgStore, stream: &str) {
    let event = NewEvent::json(EventType::new("Pinged").unwrap(), "{}");
    store
        .append(
            &StreamName::new(stream).unwrap(),
            ExpectedRevision::Any,
            vec![event],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_elsewhere_wakes_a_subscription_through_notify() {
    let schemas = Mutex::new(Vec::new());
    let config = common::fresh_config(&schemas);
    let writer = common::open(config.clone()).await;
    // Polling so rare that only a notification can explain a prompt delivery.
    let mut quiet = config;
    quiet.poll_interval = Duration::from_secs(600);
    let reader = Arc::new(common::open(quiet).await);
    let mut subscription = subscribe(
        Arc::clone(&reader),
        SubscriptionSource::All(None),
        SubscribeFrom::End,
    );
    // Let the listener start before the first commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..5 {
        append(&writer, &format!("ping-{i}")).await;
        let waited = next_event(&mut subscription, Duration::from_secs(10)).await;
        assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
    }
    drop((writer, reader, subscription));
    common::drop_schemas(std::mem::take(&mut *schemas.lock()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_only_delays_until_the_next_check() {
    let schemas = Mutex::new(Vec::new());
    let mut config = common::fresh_config(&schemas);
    config.poll_interval = Duration::from_millis(300);
    let writer = common::open(config.clone()).await;
    let reader = Arc::new(common::open(config.clone()).await);
    let mut subscription = subscribe(
        Arc::clone(&reader),
        SubscriptionSource::All(None),
        SubscribeFrom::End,
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Cut every listening connection of this schema's channel: notifications sent while it
    // reconnects are lost.
    let channel = format!("annals_{}", config.schema);
    let kill = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query = 'LISTEN \"{channel}\"' OR query LIKE 'LISTEN%{channel}%'"
    );
    let pool = sqlx::PgPool::connect(&common::url()).await.unwrap();
    let killed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(kill))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        killed >= 1,
        "found the listening connections to cut ({killed})"
    );
    append(&writer, "ping-lost").await;
    let waited = next_event(&mut subscription, Duration::from_secs(10)).await;
    assert!(
        waited < Duration::from_secs(5),
        "delivered after {waited:?}"
    );
    drop((writer, reader, subscription));
    pool.close().await;
    common::drop_schemas(std::mem::take(&mut *schemas.lock()));
}
