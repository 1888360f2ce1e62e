//! T8: the relay is killed with SIGKILL mid-publish many times and the broker is stopped and
//! restarted; afterwards every committed row reached the broker at least once, per-key order
//! held, and a consumer with the inbox applied each row exactly once.
//!
//! Rounds: `ANNALS_T8_ROUNDS` (default 20). The NATS broker restarted here is a private
//! `nats-server` on a free port with its own store directory, so the shared server used by
//! parallel tests is never disturbed.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annals_relay::config::{SinkKind, SourceMode};
use annals_relay::envelope::Envelope;
use annals_relay::inbox::Inbox;
use annals_relay::outbox::NewMessage;
use annals_relay::testing;
use common::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn nats_server_bin() -> Option<String> {
    if let Ok(p) = std::env::var("ANNALS_NATS_SERVER_BIN") {
        return Some(p);
    }
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_string)
}

struct PrivateNats {
    bin: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    fn start(bin: String) -> std::io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut n = Self {
            bin,
            port,
            dir: tempfile::tempdir()?,
            child: None,
        };
        n.spawn()?;
        Ok(n)
    }
    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other("nats-server did not start"))
    }
    /// Stops the broker (SIGTERM, as an operator restart would) and starts it again.
    fn restart(&mut self, down_for: Duration) -> std::io::Result<()> {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let _ = c.wait();
        }
        std::thread::sleep(down_for);
        self.spawn()
    }
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_relay(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_annals-relay"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn relay")
}

async fn t8(test: &str, mode: SourceMode, sink: SinkKind) {
    let Some(pool) = (if mode == SourceMode::Wal {
        testing::pg_logical(test).await
    } else {
        testing::pg(test).await
    }) else {
        return;
    };
    let names = Names::new(test);
    let mut cfg = config(&names, mode, sink);
    // NATS: a private broker that this test restarts. RabbitMQ: the shared broker, with this
    // test's own exchange and queue; it is not restarted (that would disturb parallel tests).
    let mut broker = None;
    let mut client = None;
    let mut amqp = None;
    match sink {
        SinkKind::Nats => {
            let Some(bin) = nats_server_bin() else {
                testing::unavailable::<()>(test, "nats-server binary", "not found");
                return;
            };
            let b = PrivateNats::start(bin).expect("private nats-server");
            let Some(c) = testing::nats(test, &b.url()).await else {
                return;
            };
            cfg.sink.nats.url = b.url();
            cfg.sink.nats.ack_timeout_ms = 2000;
            broker = Some(b);
            client = Some(c);
        }
        SinkKind::RabbitMq => {
            let Some(conn) = testing::amqp(test).await else {
                return;
            };
            let ch = amqp_queue(&conn, &names.exchange, &names.queue).await;
            amqp = Some((conn, ch));
        }
    }
    let rounds: usize = std::env::var("ANNALS_T8_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    println!("{test}: seed {seed}, {rounds} SIGKILL rounds");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().expect("tmp");
    let cfg_path = dir.path().join("relay.toml");
    let log_path = dir.path().join("relay.log");
    std::fs::write(&cfg_path, toml::to_string(&cfg).expect("toml")).expect("write config");
    let st = Command::new(env!("CARGO_BIN_EXE_annals-relay"))
        .args(["setup", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .status()
        .expect("setup");
    assert!(st.success(), "setup failed");
    let outbox = cfg.outbox().expect("outbox");

    // Writer: 16 keys, transactions of 1..20 rows, now and then one of 300 rows.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pool, outbox, stop) = (pool.clone(), outbox.clone(), Arc::clone(&stop));
        let mut wr = Rng(seed.rotate_left(17) | 1);
        tokio::spawn(async move {
            let mut counters = [0u64; 16];
            let mut committed = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let size = if wr.range(0, 25) == 0 {
                    300
                } else {
                    wr.range(1, 20) as usize
                };
                let mut msgs = Vec::with_capacity(size);
                let mut next = counters;
                for _ in 0..size {
                    let k = wr.range(0, 16) as usize;
                    next[k] += 1;
                    let key = format!("k{k}");
                    msgs.push(
                        NewMessage::json(
                            "item",
                            &key,
                            "Counted",
                            &serde_json::json!({"k": key, "n": next[k]}),
                        )
                        .expect("json"),
                    );
                }
                let mut tx = pool.begin().await.expect("begin");
                outbox.enqueue_all(&mut tx, &msgs).await.expect("enqueue");
                tx.commit().await.expect("commit");
                counters = next;
                committed += size;
                tokio::time::sleep(Duration::from_millis(wr.range(1, 8))).await;
            }
            committed
        })
    };

    let broker_restart_round = rounds / 2;
    let started = Instant::now();
    for round in 0..rounds {
        let mut relay = spawn_relay(&cfg_path, &log_path);
        tokio::time::sleep(Duration::from_millis(rng.range(150, 700))).await;
        relay.kill().expect("SIGKILL"); // std's kill() sends SIGKILL on Unix
        let _ = relay.wait();
        if round == broker_restart_round
            && let Some(broker) = broker.as_mut()
        {
            // Broker down while the relay runs and publishes, then back.
            let mut relay = spawn_relay(&cfg_path, &log_path);
            tokio::time::sleep(Duration::from_millis(300)).await;
            broker
                .restart(Duration::from_millis(800))
                .expect("broker restart");
            tokio::time::sleep(Duration::from_millis(rng.range(300, 900))).await;
            relay.kill().expect("SIGKILL");
            let _ = relay.wait();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let committed = writer.await.expect("writer");
    println!(
        "{test}: {committed} rows committed during {rounds} kill rounds in {:?}",
        started.elapsed()
    );

    // Final run to drain, then stop it gracefully.
    let mut relay = spawn_relay(&cfg_path, &log_path);
    let delivered = match (&client, &amqp) {
        (Some(c), _) => collect_nats(c, &names.stream, committed, Duration::from_secs(90)).await,
        (_, Some((_, ch))) => {
            collect_amqp(ch, &names.queue, committed, Duration::from_secs(90)).await
        }
        _ => unreachable!(),
    };
    let _ = Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status();
    let _ = relay.wait();

    // The truth: the rows in the outbox table, in per-key order (seq order within a key).
    let rows: Vec<(uuid::Uuid, String, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(&*format!(
        "SELECT id, aggregate_id, payload FROM {} ORDER BY seq",
        outbox.qualified()
    )))
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(rows.len(), committed);

    // Consumer with the inbox: apply each delivery in its own transaction.
    let inbox = Inbox::new(&names.schema, "inbox").expect("inbox");
    inbox.migrate(&pool).await.expect("inbox migrate");
    sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "CREATE TABLE \"{}\".applied (key text PRIMARY KEY, last_n bigint NOT NULL, applied bigint NOT NULL)",
        names.schema
    )))
    .execute(&pool)
    .await
    .expect("effect table");
    let mut dup_deliveries = 0usize;
    let mut out_of_order = 0usize;
    for env in &delivered {
        let mut tx = pool.begin().await.expect("begin");
        if inbox.record(&mut tx, "t8", env.id).await.expect("inbox") {
            let v: serde_json::Value = env.data_json().expect("payload");
            let n = v["n"].as_i64().expect("n");
            let last: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(&*format!(
                "SELECT last_n FROM \"{}\".applied WHERE key = $1",
                names.schema
            )))
            .bind(&env.subject)
            .fetch_optional(&mut *tx)
            .await
            .expect("read");
            if n != last.unwrap_or(0) + 1 {
                out_of_order += 1;
            }
            sqlx::query(sqlx::AssertSqlSafe(&*format!(
                "INSERT INTO \"{}\".applied VALUES ($1, $2, 1) ON CONFLICT (key) DO UPDATE \
                 SET last_n = greatest(applied.last_n, EXCLUDED.last_n), applied = applied.applied + 1",
                names.schema
            )))
            .bind(&env.subject)
            .bind(n)
            .execute(&mut *tx)
            .await
            .expect("apply");
        } else {
            dup_deliveries += 1;
        }
        tx.commit().await.expect("commit");
    }
    let seen: std::collections::HashSet<_> = delivered.iter().map(|e: &Envelope| e.id).collect();
    let lost = rows.iter().filter(|(id, _, _)| !seen.contains(id)).count();
    let applied: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(&*format!(
        "SELECT sum(applied)::bigint FROM \"{}\".applied",
        names.schema
    )))
    .fetch_one(&pool)
    .await
    .expect("sum");
    let mut per_key: HashMap<String, i64> = HashMap::new();
    for (_, k, _) in &rows {
        *per_key.entry(k.clone()).or_default() += 1;
    }
    println!(
        "T8 {test}: committed={committed} delivered={} lost={lost} duplicate_deliveries={dup_deliveries} \
         (absorbed by the inbox) out_of_order={out_of_order} applied={} (expected {committed}) \
         sigkill_rounds={rounds} broker_restarts={}",
        delivered.len(),
        applied.unwrap_or(0),
        usize::from(broker.is_some())
    );
    if lost > 0 || out_of_order > 0 {
        eprintln!(
            "relay log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    assert_eq!(lost, 0, "lost rows");
    assert_eq!(out_of_order, 0, "out-of-order first deliveries");
    assert_eq!(
        applied.unwrap_or(0) as usize,
        committed,
        "each row applied exactly once"
    );

    if let Some(c) = &client {
        delete_stream(c, &names.stream).await;
    }
    if let Some((conn, _)) = &amqp {
        cleanup_amqp(conn, &names.exchange, &names.queue).await;
    }
    cleanup_pg(&pool, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t8_wal_sigkill_and_broker_restart() {
    t8("t8_wal", SourceMode::Wal, SinkKind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t8_polling_sigkill_and_broker_restart() {
    t8("t8_poll", SourceMode::Polling, SinkKind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t8_wal_rabbitmq_sigkill() {
    t8("t8_wal_amqp", SourceMode::Wal, SinkKind::RabbitMq).await;
}
