//! WAL tailing: a logical replication slot (`pgoutput`) on a publication of the outbox table.
//!
//! Two tasks: the **reader** owns the replication stream and turns committed transactions into
//! a bounded queue of rows followed by a commit marker; the **publisher** sends rows to the
//! sink in that order (pipelined, at most `max_in_flight` unacknowledged) and, when every row
//! before a commit marker is acknowledged, advances the acknowledged LSN to that commit's end.
//! Only that LSN — first written to the bookkeeping table, then reported to PostgreSQL as
//! flushed — ever moves the slot. Every `feedback_interval_ms` the reader records and reports
//! progress; when nothing is in flight it also reports the server's sent position, so an idle
//! outbox never pins WAL. Heartbeat messages (`pg_logical_emit_message`) keep WAL moving
//! through the slot and measure lag.

mod decode;
pub mod slot;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use parking_lot::Mutex;
use pg_walstream::{
    EventType, LogicalReplicationStream, ReplicationError, ReplicationStreamConfig, StreamingMode,
};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::RelayConfig;
use crate::envelope::OutboxRecord;
use crate::error::{RelayError, SinkError, SourceError};
use crate::metrics as m;
use crate::relay::AckObserver;
use crate::sink::Sink;

/// Prefix of heartbeat messages; the slot name follows.
pub const HEARTBEAT_PREFIX: &str = "annals-relay-heartbeat:";

/// Rows are handed over per transaction (in chunks of at most [`CHUNK`]), so the publisher
/// sends them back to back and the broker client can coalesce its writes.
enum Item {
    Rows(Vec<OutboxRecord>, DateTime<Utc>),
    Commit(u64, DateTime<Utc>),
}

/// Largest hand-over chunk of one transaction's rows.
const CHUNK: usize = 256;

enum Done {
    Row(uuid::Uuid, DateTime<Utc>),
    Commit(u64, DateTime<Utc>),
}

/// Progress shared between publisher and reader.
#[derive(Default)]
struct Acked {
    lsn: AtomicU64,
    commit_time: Mutex<Option<DateTime<Utc>>>,
    in_flight: AtomicU64,
}

/// Adds `replication=database` to a PostgreSQL URL.
pub(crate) fn replication_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}replication=database")
}

/// Runs WAL tailing until `shutdown` or an error.
pub async fn run(
    cfg: &RelayConfig,
    pool: &PgPool,
    sink: Sink,
    shutdown: &CancellationToken,
    observer: Option<AckObserver>,
) -> Result<(), RelayError> {
    let w = &cfg.source.wal;
    let outbox = cfg.outbox()?;
    let start_acked = slot::prepare(pool, cfg).await?;

    let rcfg = ReplicationStreamConfig::builder(w.slot.clone(), w.publication.clone())
        .with_protocol_version(1)
        .with_streaming_mode(StreamingMode::Off)
        .with_messages(true)
        .with_feedback_interval(Duration::from_millis(w.feedback_interval_ms))
        .with_connection_timeout(Duration::from_secs(10));
    let mut stream = LogicalReplicationStream::new(&replication_url(&cfg.database.url), rcfg)
        .await
        .map_err(SourceError::from)?;
    stream.start(None).await.map_err(SourceError::from)?;
    // `start` creates a slot that does not exist: make sure it did not just do that.
    match (
        slot::slot_info(pool, &w.slot).await?,
        slot::slot_record(pool, cfg).await?,
    ) {
        (Some(info), Some(rec)) => slot::verify_not_recreated(cfg, &info, &rec)?,
        _ => {
            return Err(SourceError::SlotLost {
                slot: w.slot.clone(),
                detail: "disappeared while starting replication".into(),
                acked_lsn: slot::fmt_lsn(start_acked),
            }
            .into());
        }
    }
    info!(slot = %w.slot, acked = %slot::fmt_lsn(start_acked), "WAL tailing started");

    let acked = Arc::new(Acked::default());
    acked.lsn.store(start_acked, Ordering::SeqCst);
    // Items are chunks of up to CHUNK rows: this bounds the queue to about `queue_capacity` rows.
    let (tx, rx) = mpsc::channel::<Item>((w.queue_capacity / CHUNK).max(8));
    let publisher = tokio::spawn(publish_loop(
        sink,
        rx,
        Arc::clone(&acked),
        cfg.sink.max_in_flight,
        observer,
    ));

    // The ticker interrupts the (cancellation-safe) read so the reader can report progress.
    let tick = Arc::new(Mutex::new(CancellationToken::new()));
    let stop_aux = CancellationToken::new();
    let ticker = {
        let tick = Arc::clone(&tick);
        let stop = stop_aux.clone();
        let shutdown = shutdown.clone();
        let every = Duration::from_millis(w.feedback_interval_ms);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = shutdown.cancelled() => { tick.lock().cancel(); return; }
                    _ = tokio::time::sleep(every) => tick.lock().cancel(),
                }
            }
        })
    };
    let heartbeat = (w.heartbeat_interval_ms > 0).then(|| {
        let pool = pool.clone();
        let stop = stop_aux.clone();
        let prefix = format!("{HEARTBEAT_PREFIX}{}", w.slot);
        let every = Duration::from_millis(w.heartbeat_interval_ms);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let now = Utc::now().timestamp_micros().to_string();
                if let Err(e) = sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)")
                    .bind(&prefix)
                    .bind(now)
                    .execute(&pool)
                    .await
                {
                    warn!(error = %e, "heartbeat failed");
                }
            }
        })
    });

    let mut reader = Reader {
        cfg,
        pool,
        schema: outbox.schema().to_string(),
        table: outbox.table().to_string(),
        heartbeat_prefix: format!("{HEARTBEAT_PREFIX}{}", w.slot),
        acked: Arc::clone(&acked),
        pending: Vec::new(),
        persisted: start_acked,
        last_dispatched: start_acked,
        in_tx: false,
        commit_time: Utc::now(),
        last_slot_check: Instant::now(),
    };
    let result = reader
        .read_loop(&mut stream, &tick, &tx, shutdown, &publisher)
        .await;
    stop_aux.cancel();
    ticker.abort();
    if let Some(h) = heartbeat {
        h.abort();
    }
    drop(tx);
    match result {
        Ok(()) => {
            // Clean shutdown: let the publisher drain what was read, then record it.
            match tokio::time::timeout(Duration::from_secs(10), publisher).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(join)) => warn!(error = %join, "publisher task failed"),
                Err(_) => warn!("publisher did not drain within 10 s"),
            }
            reader.report(&mut stream).await?;
            Ok(())
        }
        Err(e) => {
            publisher.abort();
            Err(e)
        }
    }
}

struct Reader<'a> {
    cfg: &'a RelayConfig,
    pool: &'a PgPool,
    schema: String,
    table: String,
    heartbeat_prefix: String,
    acked: Arc<Acked>,
    pending: Vec<OutboxRecord>,
    persisted: u64,
    last_dispatched: u64,
    in_tx: bool,
    commit_time: DateTime<Utc>,
    last_slot_check: Instant,
}

impl Reader<'_> {
    async fn read_loop(
        &mut self,
        stream: &mut LogicalReplicationStream,
        tick: &Mutex<CancellationToken>,
        tx: &mpsc::Sender<Item>,
        shutdown: &CancellationToken,
        publisher: &tokio::task::JoinHandle<Result<(), RelayError>>,
    ) -> Result<(), RelayError> {
        loop {
            let token = {
                let mut g = tick.lock();
                if g.is_cancelled() {
                    *g = CancellationToken::new();
                    None
                } else {
                    Some(g.clone())
                }
            };
            let Some(token) = token else {
                // A tick: record and report progress, check health.
                self.report(stream).await?;
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                if publisher.is_finished() {
                    return Err(publisher_gone());
                }
                self.check_slot().await?;
                continue;
            };
            let ev = match stream.next_event(&token).await {
                Ok(ev) => ev,
                Err(ReplicationError::Cancelled(_)) => continue,
                Err(e) => return Err(SourceError::from(e).into()),
            };
            let lsn = ev.lsn.value();
            match ev.event_type {
                EventType::Begin {
                    commit_timestamp, ..
                } => {
                    self.in_tx = true;
                    self.commit_time = commit_timestamp;
                }
                EventType::Insert {
                    schema,
                    table,
                    data,
                    ..
                } if *schema == *self.schema && *table == *self.table => {
                    let rec = decode::record(&data, lsn, self.commit_time)?;
                    self.acked.in_flight.fetch_add(1, Ordering::Relaxed);
                    self.pending.push(rec);
                    if self.pending.len() >= CHUNK {
                        self.hand_over(tx).await?;
                    }
                }
                EventType::Message {
                    prefix, content, ..
                } if *prefix == *self.heartbeat_prefix => {
                    if let Some(sent) = std::str::from_utf8(&content)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .and_then(DateTime::<Utc>::from_timestamp_micros)
                    {
                        metrics::gauge!(m::HEARTBEAT_LAG).set(m::seconds_since(sent, Utc::now()));
                    }
                }
                EventType::Commit {
                    end_lsn,
                    commit_timestamp,
                    ..
                } => {
                    self.in_tx = false;
                    self.hand_over(tx).await?;
                    self.last_dispatched = end_lsn.value();
                    if tx
                        .send(Item::Commit(end_lsn.value(), commit_timestamp))
                        .await
                        .is_err()
                    {
                        return Err(publisher_gone());
                    }
                }
                EventType::Truncate { .. } => {
                    warn!("TRUNCATE of a published table seen in the WAL; ignored");
                }
                _ => {}
            }
        }
    }

    /// Sends the rows read so far of the current transaction to the publisher.
    async fn hand_over(&mut self, tx: &mpsc::Sender<Item>) -> Result<(), RelayError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        tx.send(Item::Rows(rows, self.commit_time))
            .await
            .map_err(|_| publisher_gone())
    }

    /// Records the acknowledged LSN, then reports it to PostgreSQL.
    async fn report(&mut self, stream: &mut LogicalReplicationStream) -> Result<(), RelayError> {
        let acked = self.acked.lsn.load(Ordering::SeqCst);
        let mut target = acked;
        if !self.in_tx && acked >= self.last_dispatched {
            // Nothing read is unacknowledged: everything up to what the server has sent
            // (keepalives carry its sent position) is done.
            target = target.max(stream.current_lsn());
        }
        if target > self.persisted {
            let commit_time = *self.acked.commit_time.lock();
            slot::persist_acked(self.pool, self.cfg, target, commit_time).await?;
            self.persisted = target;
            stream.shared_lsn_feedback.update_flushed_lsn(target);
            stream.shared_lsn_feedback.update_applied_lsn(target);
            debug!(lsn = %slot::fmt_lsn(target), "confirmed");
        }
        stream.send_feedback().await.map_err(SourceError::from)?;
        metrics::gauge!(m::BACKLOG).set(self.acked.in_flight.load(Ordering::Relaxed) as f64);
        if let Some(t) = *self.acked.commit_time.lock() {
            metrics::gauge!(m::LAG).set(m::seconds_since(t, Utc::now()));
        }
        Ok(())
    }

    async fn check_slot(&mut self) -> Result<(), RelayError> {
        let every = Duration::from_millis(self.cfg.source.wal.slot_check_interval_ms);
        if self.last_slot_check.elapsed() < every {
            return Ok(());
        }
        self.last_slot_check = Instant::now();
        let slot = &self.cfg.source.wal.slot;
        match slot::slot_info(self.pool, slot).await? {
            Some(info) if info.wal_status != "lost" => {
                metrics::gauge!(m::SLOT_LAG_BYTES).set(info.lag_bytes as f64);
                Ok(())
            }
            other => {
                metrics::gauge!(m::SLOT_LOST).set(1.0);
                Err(SourceError::SlotLost {
                    slot: slot.clone(),
                    detail: match other {
                        Some(_) => "wal_status = lost".into(),
                        None => "it no longer exists".into(),
                    },
                    acked_lsn: slot::fmt_lsn(self.persisted),
                }
                .into())
            }
        }
    }
}

fn publisher_gone() -> RelayError {
    SinkError::Connect {
        sink: "publisher",
        reason: "publisher task stopped".into(),
    }
    .into()
}

async fn publish_loop(
    sink: Sink,
    mut rx: mpsc::Receiver<Item>,
    acked: Arc<Acked>,
    max_in_flight: usize,
    observer: Option<AckObserver>,
) -> Result<(), RelayError> {
    let name = sink.name();
    let mut inflight: FuturesOrdered<BoxFuture<'static, Result<Done, SinkError>>> =
        FuturesOrdered::new();
    let mut open = true;
    let latency = metrics::histogram!(m::PUBLISH_LATENCY);
    let published = metrics::counter!(m::PUBLISHED, "sink" => name);
    loop {
        if !open && inflight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            Some(done) = inflight.next(), if !inflight.is_empty() => match done? {
                Done::Row(id, commit_time) => {
                    acked.in_flight.fetch_sub(1, Ordering::Relaxed);
                    published.increment(1);
                    latency.record(m::seconds_since(commit_time, Utc::now()));
                    if let Some(o) = &observer {
                        o(id);
                    }
                }
                Done::Commit(lsn, commit_time) => {
                    *acked.commit_time.lock() = Some(commit_time);
                    acked.lsn.fetch_max(lsn, Ordering::SeqCst);
                }
            },
            item = rx.recv(), if open && inflight.len() < max_in_flight => match item {
                None => open = false,
                Some(Item::Rows(rows, commit_time)) => {
                    for rec in &rows {
                        let ack = sink.publish(rec).await?;
                        let id = rec.id;
                        inflight.push_back(Box::pin(async move {
                            ack.await?;
                            Ok(Done::Row(id, commit_time))
                        }));
                    }
                }
                Some(Item::Commit(lsn, t)) => {
                    inflight.push_back(Box::pin(async move { Ok(Done::Commit(lsn, t)) }));
                }
            },
        }
    }
}
