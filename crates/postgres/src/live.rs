//! Keeping the watched head current: `LISTEN` for other processes' commits, a periodic
//! re-check for lost notifications and for commits that ended a wait, and `NOTIFY` after
//! our own commits.
//!
//! Appends do not `NOTIFY` inside their transaction: PostgreSQL serialises the commits of
//! notifying transactions on one lock, which would be the global lock this backend avoids.
//! A separate task sends one asynchronous-commit `NOTIFY` for any number of commits that
//! happened since its last one.

use std::sync::Arc;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::store::Inner;

/// Starts the listener and the notifier. The store aborts them when it is dropped.
pub(crate) fn spawn(inner: &Arc<Inner>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(listen(Arc::clone(inner))),
        tokio::spawn(notify(Arc::clone(inner))),
    ]
}

async fn listen(inner: Arc<Inner>) {
    let interval = inner.config.poll_interval;
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            listener = connect(&inner).await;
        }
        match listener.as_mut() {
            Some(l) => match tokio::time::timeout(interval, l.recv()).await {
                Ok(Ok(_)) => while l.next_buffered().is_some() {},
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; re-checking by polling");
                    listener = None;
                }
                Err(_elapsed) => {}
            },
            None => tokio::time::sleep(interval).await,
        }
        if let Err(e) = inner.refresh_head().await {
            tracing::warn!(error = %e, "re-checking the head failed");
        }
    }
}

async fn connect(inner: &Inner) -> Option<PgListener> {
    let result = async {
        let mut listener = PgListener::connect_with(&inner.pool).await?;
        listener.listen(&inner.channel).await?;
        Ok::<_, sqlx::Error>(listener)
    }
    .await;
    result
        .inspect_err(|e| tracing::warn!(error = %e, "cannot LISTEN; re-checking by polling"))
        .ok()
}

async fn notify(inner: Arc<Inner>) {
    // The channel is "annals_<schema>", a checked identifier.
    let sql = notify_sql(&inner.channel);
    loop {
        inner.committed.notified().await;
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.as_str()))
            .execute(&inner.pool)
            .await
        {
            tracing::warn!(error = %e, "NOTIFY after a commit failed; listeners will poll");
        }
    }
}

/// One round trip: an asynchronous-commit transaction that only notifies (nothing to make
/// durable, so no reason to wait for a WAL flush while holding the notify lock).
fn notify_sql(channel: &str) -> String {
    format!("BEGIN; SET LOCAL synchronous_commit = off; NOTIFY {channel}; COMMIT;")
}
