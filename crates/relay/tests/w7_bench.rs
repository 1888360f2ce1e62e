//! W7: end-to-end latency, commit in PostgreSQL → NATS JetStream ack, at offered rates, for
//! both source modes. Run by hand:
//!
//! ```text
//! cargo test --release -p annals-relay --test w7_bench -- --ignored --nocapture
//! ```
//!
//! `ANNALS_W7_RATES` (default `1000,5000,10000,20000,40000` rows/s), `ANNALS_W7_SECS`
//! (default 10), `ANNALS_W7_MODES` (default `wal,polling`). The writer commits a batch every
//! 5 ms; a row's latency is from the moment its commit returned to the moment the relay saw
//! the broker's ack (the relay's ack observer). A rate counts as sustained when the backlog
//! (committed, not yet acknowledged) at the end of the offered period is below one second's
//! worth of rows and drains within 5 s.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_relay::config::{SinkKind, SourceMode};
use annals_relay::outbox::NewMessage;
use annals_relay::{Relay, testing};
use common::*;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

struct Sample {
    rate: u64,
    mode: SourceMode,
    rows: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    backlog_at_end: usize,
    drained: bool,
}

async fn run_rate(mode: SourceMode, rate: u64, secs: u64) -> Option<Sample> {
    let pool = testing::pg_logical("w7").await?;
    let nats = testing::nats("w7", &testing::nats_url()).await?;
    let names = Names::new("w7");
    let mut cfg = config(&names, mode, SinkKind::Nats);
    cfg.source.polling.poll_interval_ms = 5;
    cfg.source.polling.batch_size = 1000;
    cfg.source.wal.feedback_interval_ms = 200;
    cfg.source.wal.heartbeat_interval_ms = 1000;
    cfg.sink.max_in_flight = 4096;
    let outbox = cfg.outbox().expect("outbox");
    outbox.migrate(&pool).await.expect("migrate");
    let acks: Arc<Mutex<HashMap<uuid::Uuid, Instant>>> = Arc::default();
    let relay = {
        let acks = Arc::clone(&acks);
        Relay::new(cfg.clone())
            .expect("cfg")
            .with_ack_observer(Arc::new(move |id| {
                acks.lock().insert(id, Instant::now());
            }))
    };
    relay.setup(&pool).await.expect("setup");
    let shutdown = CancellationToken::new();
    // The relay gets its own runtime on its own threads, as it would as its own process, so the
    // bench's writer and the relay do not share worker threads.
    let running = {
        let s = shutdown.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map(|rt| rt.block_on(relay.run(s)))
        })
    };
    // Measure the steady state: start offering load once a first row went all the way through
    // (slot creation and the first replication round can take a second on a busy machine).
    let warm_up =
        NewMessage::json("bench", "warm-up", "WarmUp", &serde_json::json!({})).expect("json");
    let mut tx = pool.begin().await.expect("begin");
    outbox.enqueue(&mut tx, &warm_up).await.expect("enqueue");
    tx.commit().await.expect("commit");
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !acks.lock().contains_key(&warm_up.id) {
        assert!(
            Instant::now() < ready_by,
            "the relay did not publish a first row within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acks.lock().remove(&warm_up.id);

    let per_tick = (rate as f64 * 0.005).round().max(1.0) as usize;
    let ticks = secs * 200;
    let mut commits: Vec<(uuid::Uuid, Instant)> = Vec::with_capacity(per_tick * ticks as usize);
    let payload = serde_json::json!({"pad": "x".repeat(200)});
    let start = Instant::now();
    for t in 0..ticks {
        let due = start + Duration::from_micros(t * 5000);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let msgs: Vec<_> = (0..per_tick)
            .map(|i| {
                NewMessage::json("bench", format!("k{}", i % 64), "Tick", &payload).expect("json")
            })
            .collect();
        let mut tx = pool.begin().await.expect("begin");
        outbox.enqueue_all(&mut tx, &msgs).await.expect("enqueue");
        tx.commit().await.expect("commit");
        let at = Instant::now();
        commits.extend(msgs.iter().map(|m| (m.id, at)));
    }
    let offered_for = start.elapsed();
    let backlog_at_end = commits.len() - acks.lock().len();
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while acks.lock().len() < commits.len() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = acks.lock().len() >= commits.len();
    shutdown.cancel();
    let _ = tokio::task::spawn_blocking(move || running.join()).await;
    let mut lat: Vec<f64> = {
        let acks = acks.lock();
        commits
            .iter()
            .filter_map(|(id, c)| {
                acks.get(id)
                    .map(|a| a.saturating_duration_since(*c).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    print_slowest_windows(&commits, &acks.lock(), start);
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let achieved = commits.len() as f64 / offered_for.as_secs_f64();
    println!(
        "W7 mode={mode:?} offered={rate}/s achieved_write={achieved:.0}/s rows={} p50={:.2}ms p99={:.2}ms max={:.2}ms backlog_at_end={backlog_at_end} drained={drained}",
        commits.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    let sample = Sample {
        rate,
        mode,
        rows: commits.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        backlog_at_end,
        drained: drained && (achieved >= rate as f64 * 0.95),
    };
    delete_stream(&nats, &names.stream).await;
    cleanup_pg(&pool, &cfg).await;
    Some(sample)
}

/// Prints the 100-ms windows of commit time whose slowest row took longest, so a p99 can be
/// traced to stalls (when they happen, how long) rather than to a uniformly slow path.
fn print_slowest_windows(
    commits: &[(uuid::Uuid, Instant)],
    acks: &HashMap<uuid::Uuid, Instant>,
    start: Instant,
) {
    let mut windows: HashMap<u64, f64> = HashMap::new();
    for (id, c) in commits {
        if let Some(a) = acks.get(id) {
            let ms = a.saturating_duration_since(*c).as_secs_f64() * 1000.0;
            let w = c.saturating_duration_since(start).as_millis() as u64 / 100;
            let slot = windows.entry(w).or_default();
            *slot = slot.max(ms);
        }
    }
    let mut worst: Vec<_> = windows.into_iter().collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    let line: Vec<String> = worst
        .iter()
        .take(6)
        .map(|(w, ms)| format!("{:.1}s:{ms:.0}ms", *w as f64 / 10.0))
        .collect();
    println!(
        "  slowest 100-ms windows (commit time since start: max latency): {}",
        line.join(" ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
async fn w7_latency_commit_to_jetstream_ack() {
    let rates: Vec<u64> = std::env::var("ANNALS_W7_RATES")
        .unwrap_or_else(|_| "1000,5000,10000,20000,40000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let secs: u64 = std::env::var("ANNALS_W7_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let modes: Vec<SourceMode> = std::env::var("ANNALS_W7_MODES")
        .unwrap_or_else(|_| "wal,polling".into())
        .split(',')
        .filter_map(|m| match m.trim() {
            "wal" => Some(SourceMode::Wal),
            "polling" => Some(SourceMode::Polling),
            _ => None,
        })
        .collect();
    let mut all = Vec::new();
    for mode in modes {
        for &rate in &rates {
            let Some(s) = run_rate(mode, rate, secs).await else {
                return;
            };
            all.push(s);
        }
    }
    println!(
        "\n| mode | offered rows/s | rows | p50 ms | p99 ms | max ms | backlog at end | sustained |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for s in &all {
        println!(
            "| {:?} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            s.mode, s.rate, s.rows, s.p50_ms, s.p99_ms, s.max_ms, s.backlog_at_end, s.drained
        );
    }
    for mode in [SourceMode::Wal, SourceMode::Polling] {
        let best = all
            .iter()
            .filter(|s| s.mode == mode && s.drained && s.backlog_at_end < s.rate as usize)
            .map(|s| s.rate)
            .max();
        println!("highest sustained rate with bounded backlog, {mode:?}: {best:?} rows/s");
    }
    assert!(all.iter().all(|s| s.rows > 0), "every run wrote rows");
}
