//! Helpers for tests against the real services (used by this crate's tests and examples).
//! Service addresses come from `ANNALS_PG_URL`, `ANNALS_NATS_URL`, `ANNALS_AMQP_URL`; when
//! `CI=true` a missing service fails the test, otherwise the test is skipped with a message.

#![allow(clippy::panic)]

use std::time::Duration;

/// PostgreSQL URL for tests.
pub fn pg_url() -> String {
    std::env::var("ANNALS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// NATS URL for tests.
pub fn nats_url() -> String {
    std::env::var("ANNALS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// AMQP URL for tests.
pub fn amqp_url() -> String {
    std::env::var("ANNALS_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Whether we run in CI (missing services are failures).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports an unavailable service: panics in CI, prints and returns `None` otherwise.
pub fn unavailable<T>(test: &str, what: &str, err: impl std::fmt::Display) -> Option<T> {
    if ci() {
        panic!("{test}: {what} is required in CI but unavailable: {err}");
    }
    eprintln!("SKIPPED {test}: {what} unavailable: {err}");
    None
}

/// A pool on the test database, or `None` (skip).
pub async fn pg(test: &str) -> Option<sqlx::PgPool> {
    let url = pg_url();
    let fut = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url);
    match fut.await {
        Ok(p) => Some(p),
        Err(e) => unavailable(test, "PostgreSQL", e),
    }
}

/// A pool on the test database with `wal_level = logical`, or `None` (skip).
pub async fn pg_logical(test: &str) -> Option<sqlx::PgPool> {
    let pool = pg(test).await?;
    let level: Result<String, _> = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&pool)
        .await;
    match level {
        Ok(l) if l == "logical" => Some(pool),
        Ok(l) => unavailable(
            test,
            "PostgreSQL with wal_level=logical",
            format!("wal_level={l}"),
        ),
        Err(e) => unavailable(test, "PostgreSQL", e),
    }
}

/// A NATS client, or `None` (skip).
pub async fn nats(test: &str, url: &str) -> Option<async_nats::Client> {
    let fut = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(url);
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => unavailable(test, "NATS", e),
        Err(e) => unavailable(test, "NATS", e),
    }
}

/// A RabbitMQ connection, or `None` (skip).
pub async fn amqp(test: &str) -> Option<lapin::Connection> {
    let url = amqp_url();
    let fut = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => unavailable(test, "RabbitMQ", e),
        Err(e) => unavailable(test, "RabbitMQ", e),
    }
}

/// A unique lowercase name `prefix_xxxxxxxx` for schemas, slots, streams, queues.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..10])
}

/// Drops inactive replication slots whose names start with `prefix` (leftovers of an earlier
/// crashed run of the same test).
pub async fn drop_stale_slots(pool: &sqlx::PgPool, prefix: &str) {
    let _ = sqlx::query(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name LIKE $1 || '%' AND NOT active",
    )
    .bind(prefix)
    .execute(pool)
    .await;
}
