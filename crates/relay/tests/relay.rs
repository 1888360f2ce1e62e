//! End-to-end tests of the relay against the real PostgreSQL, NATS and RabbitMQ.

mod common;

use std::time::Duration;

use annals_relay::config::{HousekeepingMode, SinkKind, SourceMode};
use annals_relay::error::{RelayError, SinkError, SourceError};
use annals_relay::inbox::Inbox;
use annals_relay::testing;
use annals_relay::{Relay, RelayConfig};
use common::*;
use tokio_util::sync::CancellationToken;

struct Running {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), RelayError>>,
}

fn start(cfg: &RelayConfig) -> Running {
    let shutdown = CancellationToken::new();
    let relay = Relay::new(cfg.clone()).expect("valid config");
    let s = shutdown.clone();
    let handle = tokio::spawn(async move { relay.run(s).await });
    Running { shutdown, handle }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let res = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("relay stops")
            .expect("join");
        res.expect("relay ran without a fatal error");
    }
}

/// Every written row arrived once, each key in order, and nothing else.
fn assert_each_delivered_once_in_order(
    written: &[Written],
    delivered: &[annals_relay::envelope::Envelope],
) {
    assert_eq!(
        check(written, delivered),
        Counts {
            delivered: written.len(),
            ..Counts::default()
        }
    );
}

/// Creates the outbox table and whatever the relay's mode needs beside it.
async fn set_up_outbox(pool: &sqlx::PgPool, cfg: &RelayConfig) -> annals_relay::outbox::Outbox {
    let outbox = cfg.outbox().expect("outbox");
    outbox.migrate(pool).await.expect("migrate");
    Relay::new(cfg.clone())
        .expect("cfg")
        .setup(pool)
        .await
        .expect("setup");
    outbox
}

/// Ordering per key, many rows in one transaction, nothing lost, nothing duplicated.
async fn order_test(test: &str, mode: SourceMode, sink: SinkKind, instances: usize) {
    let pool = if mode == SourceMode::Wal {
        testing::pg_logical(test).await
    } else {
        testing::pg(test).await
    };
    let Some(pool) = pool else { return };
    // Slots left by an earlier, crashed run of this same test (names are `<test>_<random>`).
    testing::drop_stale_slots(&pool, &format!("{test}_")).await;
    let names = Names::new(test);
    let cfg = config(&names, mode, sink);
    // Consumer side first, so RabbitMQ has a queue bound before anything is published.
    let (nats, amqp) = match sink {
        SinkKind::Nats => {
            let Some(c) = testing::nats(test, &cfg.sink.nats.url).await else {
                return;
            };
            (Some(c), None)
        }
        SinkKind::RabbitMq => {
            let Some(conn) = testing::amqp(test).await else {
                return;
            };
            let ch = amqp_queue(&conn, &names.exchange, &names.queue).await;
            (None, Some((conn, ch)))
        }
    };
    let outbox = set_up_outbox(&pool, &cfg).await;

    // Rows committed before the relay starts, then while it runs; one 600-row transaction.
    let mut written = write_rows(&pool, &outbox, 8, 200, &[1, 7, 30]).await;
    let relays: Vec<_> = (0..instances).map(|_| start(&cfg)).collect();
    written.extend(write_rows(&pool, &outbox, 8, 1400, &[600, 3, 1, 50]).await);
    // Keep the per-key counters continuous across the two batches: recompute from ids.
    let total = written.len();

    let delivered = match (&nats, &amqp) {
        (Some(c), _) => collect_nats(c, &names.stream, total, Duration::from_secs(60)).await,
        (_, Some((_, ch))) => collect_amqp(ch, &names.queue, total, Duration::from_secs(60)).await,
        _ => unreachable!(),
    };
    for r in relays {
        r.stop().await;
    }
    let c = check_continuing(&written, &delivered);
    println!("{test}: {c:?}");
    assert_eq!(c.lost, 0, "lost rows");
    assert_eq!(c.out_of_order, 0, "per-key order");
    assert_eq!(
        c.duplicates, 0,
        "no failures were injected, so no duplicates"
    );

    if let Some(c) = &nats {
        delete_stream(c, &names.stream).await;
    }
    if let Some((conn, _)) = &amqp {
        cleanup_amqp(conn, &names.exchange, &names.queue).await;
    }
    cleanup_pg(&pool, &cfg).await;
}

/// `write_rows` restarts counters per call; this rebases the second call's counters.
fn check_continuing(written: &[Written], delivered: &[annals_relay::envelope::Envelope]) -> Counts {
    // Each write_rows call numbers keys from 1: the check counts order per (key, batch)
    // by mapping ids to their batch-relative n. Simpler: order by write position.
    let pos: std::collections::HashMap<_, _> = written
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id, (w.key.clone(), i)))
        .collect();
    let mut last: std::collections::HashMap<String, usize> = Default::default();
    let mut seen = std::collections::HashSet::new();
    let mut c = Counts {
        delivered: delivered.len(),
        ..Default::default()
    };
    for env in delivered {
        if !seen.insert(env.id) {
            c.duplicates += 1;
            continue;
        }
        let Some((key, i)) = pos.get(&env.id) else {
            continue;
        };
        if let Some(prev) = last.get(key)
            && *prev > *i
        {
            c.out_of_order += 1;
        }
        last.insert(key.clone(), *i);
    }
    c.lost = written.iter().filter(|w| !seen.contains(&w.id)).count();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_to_nats_keeps_order_and_big_transactions() {
    order_test("wal_nats", SourceMode::Wal, SinkKind::Nats, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_to_nats_keeps_order_with_two_instances() {
    order_test("poll_nats", SourceMode::Polling, SinkKind::Nats, 2).await;
}

/// A row of a key that the claim cannot take (here locked by another transaction; in the
/// wild also a key whose advisory lock came free half-way through the claim's scan) leaves a
/// gap in the middle of the key's rows: the rows after it must wait, not go out first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_waits_for_a_row_missing_from_the_middle_of_a_key() {
    let Some(setup) = nats_relay("poll_gap", SourceMode::Polling).await else {
        return;
    };
    let NatsRelay {
        pool,
        nats,
        names,
        cfg,
        outbox,
    } = &setup;
    let written = write_rows(pool, outbox, 1, 3, &[3]).await;
    let t = outbox.qualified();
    let seqs: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT seq FROM {t} ORDER BY seq"
    )))
    .fetch_all(pool)
    .await
    .expect("seqs");
    assert_eq!(seqs.len(), 3);
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT seq FROM {t} WHERE seq = $1 FOR UPDATE"
    )))
    .bind(seqs[1])
    .execute(&mut *blocker)
    .await
    .expect("lock the middle row");

    let relay = start(cfg);
    let published = |seq: i64| {
        let pool = pool.clone();
        let sql = format!("SELECT published_at IS NOT NULL FROM {t} WHERE seq = $1");
        async move {
            sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql))
                .bind(seq)
                .fetch_one(&pool)
                .await
                .expect("published?")
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !published(seqs[0]).await {
        assert!(
            std::time::Instant::now() < deadline,
            "first row not published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ten poll intervals with the middle row still locked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !published(seqs[2]).await,
        "the row after the locked one went out before it"
    );
    blocker.commit().await.expect("release");
    let delivered = collect_nats(nats, &names.stream, 3, Duration::from_secs(20)).await;
    relay.stop().await;
    assert_each_delivered_once_in_order(&written, &delivered);
    setup.clean_up().await;
}

/// A backlog of more keys than PostgreSQL's lock table holds, on statistics taken while the
/// table was empty (so the planner sorts the whole backlog): a pass must not try a key lock
/// per row of the backlog ("out of shared memory").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_claims_a_backlog_of_many_keys() {
    let Some(setup) = nats_relay("poll_keys", SourceMode::Polling).await else {
        return;
    };
    let NatsRelay {
        pool,
        nats,
        names,
        cfg,
        outbox,
    } = &setup;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ANALYZE {}",
        outbox.qualified()
    )))
    .execute(pool)
    .await
    .expect("analyze the empty table");
    let keys = 20_000;
    let written = write_rows(pool, outbox, keys, keys, &[keys]).await;
    let relay = start(cfg);
    let delivered = collect_nats(nats, &names.stream, keys, Duration::from_secs(30)).await;
    relay.stop().await;
    assert_each_delivered_once_in_order(&written, &delivered);
    setup.clean_up().await;
}

/// A row the broker will never accept (over NATS's `max_payload`) stops the relay with an
/// error naming it; the row stays unpublished, not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_stops_on_a_row_too_large_for_the_broker() {
    let Some(setup) = nats_relay("poll_big", SourceMode::Polling).await else {
        return;
    };
    let NatsRelay {
        pool,
        nats,
        cfg,
        outbox,
        ..
    } = &setup;
    let blob = "x".repeat(nats.server_info().max_payload);
    let big = annals_relay::outbox::NewMessage::json(
        "item",
        "k-big",
        "Huge",
        &serde_json::json!({ "blob": blob }),
    )
    .expect("json");
    let mut tx = pool.begin().await.expect("begin");
    outbox
        .enqueue_all(&mut tx, std::slice::from_ref(&big))
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    let relay = Relay::new(cfg.clone()).expect("cfg");
    let err = tokio::time::timeout(Duration::from_secs(30), relay.run(CancellationToken::new()))
        .await
        .expect("the relay stops by itself")
        .expect_err("a fatal error");
    assert!(err.is_fatal(), "{err}");
    match &err {
        RelayError::Sink(SinkError::TooLarge { id, .. }) => assert_eq!(*id, big.id),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let unpublished: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE published_at IS NULL",
        outbox.qualified()
    )))
    .fetch_one(pool)
    .await
    .expect("count");
    assert_eq!(unpublished, 1, "the row stays for the operator");
    setup.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_to_rabbitmq_keeps_order() {
    order_test("wal_amqp", SourceMode::Wal, SinkKind::RabbitMq, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_to_rabbitmq_keeps_order_with_two_instances() {
    order_test("poll_amqp", SourceMode::Polling, SinkKind::RabbitMq, 2).await;
}

/// A relay to NATS in `mode` with its outbox set up (WAL: on a fresh slot): `None` (skip)
/// without the services.
struct NatsRelay {
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    names: Names,
    cfg: RelayConfig,
    outbox: annals_relay::outbox::Outbox,
}

impl NatsRelay {
    /// Deletes the test's stream, then its schema and slot.
    async fn clean_up(&self) {
        delete_stream(&self.nats, &self.names.stream).await;
        cleanup_pg(&self.pool, &self.cfg).await;
    }
}

async fn nats_relay(test: &str, mode: SourceMode) -> Option<NatsRelay> {
    let pool = if mode == SourceMode::Wal {
        let pool = testing::pg_logical(test).await?;
        // Slots left by an earlier, crashed run of this same test.
        testing::drop_stale_slots(&pool, &format!("{test}_")).await;
        pool
    } else {
        testing::pg(test).await?
    };
    let nats = testing::nats(test, &testing::nats_url()).await?;
    let names = Names::new(test);
    let cfg = config(&names, mode, SinkKind::Nats);
    let outbox = set_up_outbox(&pool, &cfg).await;
    Some(NatsRelay {
        pool,
        nats,
        names,
        cfg,
        outbox,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_or_recreated_slot_is_detected_and_reported() {
    let Some(setup) = nats_relay("slot_loss", SourceMode::Wal).await else {
        return;
    };
    let NatsRelay {
        pool, names, cfg, ..
    } = &setup;
    let relay = Relay::new(cfg.clone()).expect("cfg");

    // Lost: the slot is dropped behind the relay's back.
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&names.slot)
        .execute(pool)
        .await
        .expect("drop");
    let err = relay
        .run(CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, RelayError::Source(SourceError::SlotLost { .. })),
        "{err}"
    );
    assert!(err.is_fatal());

    // Recreated: a new slot with the same name starts after what the relay acknowledged.
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("CREATE TABLE IF NOT EXISTS public.annals_wal_bump (x int)")
        .execute(&mut *tx)
        .await
        .expect("bump");
    tx.commit().await.expect("commit");
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&names.slot)
        .execute(pool)
        .await
        .expect("create");
    let err = relay
        .run(CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, RelayError::Source(SourceError::SlotRecreated { .. })),
        "{err}"
    );

    // The operator's way out: recreate explicitly, after which the relay runs.
    annals_relay::source::wal::slot::recreate(pool, cfg)
        .await
        .expect("recreate");
    let r = start(cfg);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!r.handle.is_finished(), "relay runs on the recreated slot");
    r.stop().await;
    setup.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_outbox_does_not_pin_wal() {
    let Some(setup) = nats_relay("idle_slot", SourceMode::Wal).await else {
        return;
    };
    let NatsRelay {
        pool, names, cfg, ..
    } = &setup;
    let r = start(cfg);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // WAL written by other tables only; the outbox stays empty.
    sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "CREATE TABLE \"{}\".noise (x int)",
        names.schema
    )))
    .execute(pool)
    .await
    .expect("noise");
    sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "INSERT INTO \"{}\".noise SELECT generate_series(1, 1000)",
        names.schema
    )))
    .execute(pool)
    .await
    .expect("noise");
    let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await
        .expect("lsn");
    let mut advanced = false;
    for _ in 0..100 {
        let ok: Option<bool> = sqlx::query_scalar(
            "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&names.slot)
        .bind(&target)
        .fetch_optional(pool)
        .await
        .expect("slot")
        .flatten();
        if ok == Some(true) {
            advanced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.stop().await;
    assert!(
        advanced,
        "the slot's confirmed position must pass {target} while the outbox is idle"
    );
    setup.clean_up().await;
}

/// `active_pid` of the test's slot, polled until a walsender holds it (or 10 s pass).
async fn wait_slot_held(pool: &sqlx::PgPool, slot: &str) -> Option<i32> {
    for _ in 0..100 {
        let info = annals_relay::source::wal::slot::slot_info(pool, slot)
            .await
            .expect("slot");
        if let Some(pid) = info.and_then(|i| i.active_pid) {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Whether the slot and the relay's bookkeeping row for it exist.
async fn slot_and_row(pool: &sqlx::PgPool, cfg: &RelayConfig) -> (bool, bool) {
    use annals_relay::source::wal::slot;
    let info = slot::slot_info(pool, &cfg.source.wal.slot)
        .await
        .expect("info");
    let record = slot::slot_record(pool, cfg).await.expect("record");
    (info.is_some(), record.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_held_slot_waits_for_release_and_names_the_holder() {
    use annals_relay::source::wal::slot;
    let Some(setup) = nats_relay("held_slot", SourceMode::Wal).await else {
        return;
    };
    let NatsRelay {
        pool, names, cfg, ..
    } = &setup;
    let r = start(cfg);
    let holder = wait_slot_held(pool, &names.slot).await;
    assert!(holder.is_some(), "the relay attaches to its slot");

    // Held for longer than the wait: a typed error naming the walsender, nothing dropped.
    let err = slot::drop_slot_within(pool, cfg, Duration::from_millis(300))
        .await
        .expect_err("the slot is held");
    match &err {
        RelayError::Source(SourceError::SlotInUse { slot, pid, .. }) => {
            assert_eq!(slot, &names.slot);
            assert_eq!(*pid, holder, "{err}");
        }
        other => panic!("expected SlotInUse, got {other}"),
    }
    assert_eq!(
        slot_and_row(pool, cfg).await,
        (true, true),
        "nothing dropped"
    );

    // Released while the drop waits: the relay stops 300 ms into it, and the drop succeeds.
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        r.stop().await;
    });
    slot::drop_slot(pool, cfg)
        .await
        .expect("dropped once released");
    stopper.await.expect("relay stopped");
    assert_eq!(
        slot_and_row(pool, cfg).await,
        (false, false),
        "both dropped"
    );
    setup.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_records_each_id_once() {
    let Some(pool) = testing::pg("inbox").await else {
        return;
    };
    let schema = testing::unique("inbox");
    let inbox = Inbox::new(&schema, "inbox").expect("inbox");
    inbox.migrate(&pool).await.expect("migrate");
    let id = uuid::Uuid::new_v4();
    let mut tx = pool.begin().await.expect("begin");
    assert!(inbox.record(&mut tx, "mailer", id).await.expect("first"));
    tx.commit().await.expect("commit");
    let mut tx = pool.begin().await.expect("begin");
    assert!(!inbox.record(&mut tx, "mailer", id).await.expect("second"));
    // Another consumer has its own record.
    assert!(
        inbox
            .record(&mut tx, "purger", id)
            .await
            .expect("other consumer")
    );
    tx.rollback().await.expect("rollback");
    // A rolled-back first delivery leaves no trace.
    let mut tx = pool.begin().await.expect("begin");
    assert!(
        inbox
            .record(&mut tx, "purger", id)
            .await
            .expect("after rollback")
    );
    tx.commit().await.expect("commit");
    assert!(Inbox::new(&schema, "bad-name").is_err());
    sqlx::query(sqlx::AssertSqlSafe(&*format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_deletes_or_archives_published_rows() {
    let test = "housekeeping";
    let Some(pool) = testing::pg(test).await else {
        return;
    };
    let Some(nats) = testing::nats(test, &testing::nats_url()).await else {
        return;
    };
    for mode in [HousekeepingMode::Delete, HousekeepingMode::Archive] {
        let names = Names::new(test);
        let mut cfg = config(&names, SourceMode::Polling, SinkKind::Nats);
        cfg.housekeeping.retention_secs = 0;
        cfg.housekeeping.mode = mode;
        let outbox = cfg.outbox().expect("outbox");
        outbox.migrate(&pool).await.expect("migrate");
        let written = write_rows(&pool, &outbox, 2, 20, &[5]).await;
        // Nothing is published yet: nothing may be removed.
        assert_eq!(
            annals_relay::housekeeping::run_once(&cfg, &pool)
                .await
                .expect("hk"),
            0
        );
        let r = start(&cfg);
        let got = collect_nats(&nats, &names.stream, written.len(), Duration::from_secs(30)).await;
        assert_eq!(check(&written, &got).lost, 0);
        r.stop().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            annals_relay::housekeeping::run_once(&cfg, &pool)
                .await
                .expect("hk"),
            20
        );
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(&*format!(
            "SELECT count(*) FROM {}",
            outbox.qualified()
        )))
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(left, 0);
        if mode == HousekeepingMode::Archive {
            let archived: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(&*format!(
                "SELECT count(*) FROM \"{}\".outbox_archive",
                names.schema
            )))
            .fetch_one(&pool)
            .await
            .expect("count");
            assert_eq!(archived, 20);
        }
        delete_stream(&nats, &names.stream).await;
        cleanup_pg(&pool, &cfg).await;
    }
}

#[test]
fn print_config_output_is_a_valid_config_and_bad_files_are_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_annals-relay"))
        .arg("print-config")
        .output()
        .expect("run binary");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let cfg = RelayConfig::from_toml(&text).expect("printed config parses");
    assert_eq!(cfg.source.wal.slot, "annals_relay");

    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[sink]\nkind = \"kafka\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_annals-relay"))
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .expect("run binary");
    assert!(
        !out.status.success(),
        "an invalid config must fail, not panic or run"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid config"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
