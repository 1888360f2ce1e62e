//! Keeping the watched head current: a refresher that serves this store's writes in rounds,
//! `LISTEN` for other processes' writes, a periodic re-check for lost notifications, and
//! `NOTIFY` after our own writes.
//!
//! Appends do not `NOTIFY` inside their transaction: PostgreSQL serialises the commits of
//! notifying transactions on one lock, which would be the global lock this backend avoids.
//! A separate task sends one asynchronous-commit `NOTIFY` for any number of commits that
//! happened since its last one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::store::Inner;

/// Starts the listener and the notifier. The store aborts them when it is dropped.
pub(crate) fn spawn(inner: &Arc<Inner>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(listen(Arc::clone(inner))),
        tokio::spawn(notify(Arc::clone(inner))),
        tokio::spawn(refresh_after_writes(Arc::clone(inner))),
    ]
}

async fn listen(inner: Arc<Inner>) {
    let interval = inner.config.poll_interval;
    let mut listener: Option<PgListener> = None;
    let mut last_check = std::time::Instant::now();
    loop {
        if listener.is_none() {
            listener = connect(&inner).await;
        }
        match listener.as_mut() {
            Some(l) => match tokio::time::timeout(interval, l.recv()).await {
                Ok(Ok(first)) => {
                    // This store moves its head after its own writes; others' wake it.
                    let mut foreign = first.payload() != inner.instance;
                    while let Some(next) = l.next_buffered() {
                        foreign |= next.payload() != inner.instance;
                    }
                    // Still re-check every interval, even while only our own writes notify.
                    if !foreign && last_check.elapsed() < interval {
                        continue;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; re-checking by polling");
                    listener = None;
                }
                Err(_elapsed) => {}
            },
            None => tokio::time::sleep(interval).await,
        }
        last_check = std::time::Instant::now();
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

/// Serves [`Inner::head_after_write`] in rounds: each round covers every write that ended
/// before it started.
async fn refresh_after_writes(inner: Arc<Inner>) {
    loop {
        inner.refresh_wanted.notified().await;
        let covered = inner.writes_ended.load(Ordering::SeqCst);
        if let Err(e) = inner.refresh_head().await {
            tracing::warn!(error = %e, "computing the head after a write failed");
        }
        inner.refreshed.send_replace(covered);
    }
}

/// The shortest time between two notifications: writes in between share one.
const NOTIFY_SPACING: Duration = Duration::from_millis(1);

async fn notify(inner: Arc<Inner>) {
    // The channel is "annals_<schema>", a checked identifier; the payload a hex uuid.
    let sql = notify_sql(&inner.channel, &inner.instance);
    loop {
        inner.committed.notified().await;
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.as_str()))
            .execute(&inner.pool)
            .await
        {
            tracing::warn!(error = %e, "NOTIFY after a commit failed; listeners will poll");
        }
        tokio::time::sleep(NOTIFY_SPACING).await;
    }
}

/// One round trip: an asynchronous-commit transaction that only notifies (nothing to make
/// durable, so no reason to wait for a WAL flush while holding the notify lock).
fn notify_sql(channel: &str, instance: &str) -> String {
    format!("BEGIN; SET LOCAL synchronous_commit = off; NOTIFY {channel}, '{instance}'; COMMIT;")
}
