//! The workloads of SPEC §7 that run in-process, each on a fresh data directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use annals_core::subscription::{
    SubscribeFrom, SubscriptionMessage, SubscriptionSource, subscribe,
};
use annals_core::{
    EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, ReadAllOptions,
    ReadStreamOptions, StreamName, Timestamp,
};
use annals_engine::{Config, Engine, Stats};
use futures::StreamExt;

use super::Plan;
use super::ceiling::{BareLog, Measured, Variant};
use super::postgres::Baseline;
use super::report::{Line, Report, median, percentile_ms};
use super::sched::{Cpus, Share, Threads, describe_cpus_busy};

pub(crate) struct Context<'a> {
    pub(crate) dir: PathBuf,
    pub(crate) plan: Plan,
    pub(crate) pg: &'a Baseline,
    /// The disk's sequential write bandwidth (overwriting, from the machine line), which W3's
    /// log rate is compared with.
    pub(crate) seq_overwrite_mib_s: f64,
    /// Baseline results by (script, clients), measured once per run.
    pub(crate) pg_results:
        std::sync::Mutex<std::collections::HashMap<(String, usize), Option<f64>>>,
}

impl Context<'_> {
    /// The baseline's median events/s for a script and client count (`per_tx` events per
    /// transaction), measured the first time a workload asks for it.
    pub(crate) fn pg_baseline(&self, script: &str, clients: usize, per_tx: f64) -> Option<f64> {
        let key = (script.to_owned(), clients);
        if let Some(known) = self.pg_results.lock().ok()?.get(&key) {
            return *known;
        }
        let measured = pg_median(self, script, clients, per_tx);
        self.pg_results.lock().ok()?.insert(key, measured);
        measured
    }
}

/// The benchmark payload: 256 bytes of JSON data, 64 bytes of JSON metadata. Built once, so
/// a run measures the store rather than the client's formatting.
pub(crate) fn bench_payload() -> (&'static str, &'static str) {
    static PAYLOAD: LazyLock<(&'static str, &'static str)> = LazyLock::new(|| {
        let data = format!("{{\"payload\":\"{}\"}}", "x".repeat(256 - 14));
        let metadata = format!("{{\"correlation\":\"{}\"}}", "c".repeat(64 - 18));
        (data.leak(), metadata.leak())
    });
    *PAYLOAD
}

/// The benchmark event: a fresh id with [`bench_payload`].
pub(crate) fn bench_event(event_type: &EventType) -> NewEvent {
    let (data, metadata) = bench_payload();
    NewEvent::json(event_type.clone(), data.as_bytes()).with_metadata(metadata.as_bytes())
}

fn fresh(ctx: &Context<'_>, name: &str) -> anyhow::Result<(Arc<Engine>, PathBuf)> {
    // Whatever ran before (a baseline, the last repeat) writes back now, not during the run.
    super::machine::settle_disk()?;
    let dir = ctx
        .dir
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    Ok((Arc::new(Engine::open(&dir, Config::default())?), dir))
}

fn discard(engine: Arc<Engine>, dir: PathBuf) {
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.close();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// What a timed append run measured.
pub(crate) struct Run {
    pub(crate) events_per_s: f64,
    pub(crate) latencies_us: Vec<u64>,
    fsyncs_per_s: f64,
    group_size: f64,
    /// The log's records written per second, in MiB, where the store counts them.
    pub(crate) log_mib_per_s: Option<f64>,
    /// Mean time per append in the engine's stages, when the store reports them.
    pub(crate) stages: Option<Stages>,
    /// CPU time of this process over wall time, in cores (2.0 = both cores busy).
    pub(crate) cpu_cores: f64,
    /// How the embedded engine's committer threads spent the run.
    committers: Option<Share>,
    /// How the runtime's threads (appenders; for W2 also the client and server) spent it.
    runtime: Option<Share>,
    /// Each CPU's busy share, machine-wide.
    cpus_busy: Option<Vec<f64>>,
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The store's counters so far, for stores that keep them (the embedded engine).
pub(crate) type StatsSource<'a> = Option<&'a (dyn Fn() -> Stats + Sync)>;

/// The embedded engine's counters.
pub(crate) fn engine_counter(engine: &Engine) -> impl Fn() -> Stats + Sync + '_ {
    move || engine.stats()
}

/// Where an append's time went, in microseconds per append (means over a run): inside the
/// engine (see `annals_engine::RequestTime`) and in the caller (the rest of the measured
/// latency: waking the appending task, building the request, validating it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stages {
    pub(crate) queued_us: f64,
    pub(crate) building_us: f64,
    pub(crate) syncing_us: f64,
    pub(crate) answering_us: f64,
    pub(crate) caller_us: f64,
}

impl Stages {
    fn between(before: &Stats, after: &Stats, mean_latency_us: f64) -> Option<Self> {
        let requests = after
            .requests
            .checked_sub(before.requests)
            .filter(|&n| n > 0)? as f64;
        let per_request = |a: u64, b: u64| a.saturating_sub(b) as f64 / requests / 1000.0;
        let (a, b) = (&after.time, &before.time);
        let queued_us = per_request(a.queued_ns, b.queued_ns);
        let building_us = per_request(a.building_ns, b.building_ns);
        let syncing_us = per_request(a.syncing_ns, b.syncing_ns);
        let answering_us = per_request(a.answering_ns, b.answering_ns);
        Some(Self::from_means(
            [queued_us, building_us, syncing_us, answering_us],
            mean_latency_us,
        ))
    }

    /// From the mean time per request in each of the engine's stages (queued, building,
    /// syncing, answering) and the appenders' mean latency.
    pub(crate) fn from_means(engine: [f64; 4], mean_latency_us: f64) -> Self {
        let [queued_us, building_us, syncing_us, answering_us] = engine;
        Self {
            queued_us,
            building_us,
            syncing_us,
            answering_us,
            caller_us: (mean_latency_us - engine.iter().sum::<f64>()).max(0.0),
        }
    }

    /// `queued 40 + building 45 + syncing 150 + answering 20 + caller 50 µs`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "per append: queued {:.0} + building {:.0} + syncing {:.0} + answering {:.0} + \
             caller {:.0} µs",
            self.queued_us, self.building_us, self.syncing_us, self.answering_us, self.caller_us
        )
    }
}

/// `writers` tasks append `batch`-event batches to their own streams with exact expected
/// revisions for `seconds`, optionally paced to `rate` events/s in all.
pub(crate) async fn append_run<S: EventAppender + ?Sized + 'static>(
    engine: &Arc<S>,
    writers: usize,
    batch: usize,
    seconds: f64,
    rate: Option<f64>,
    counter: StatsSource<'_>,
) -> anyhow::Result<Run> {
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let clock = RunClock::start(counter);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (engine, stop) = (Arc::clone(engine), Arc::clone(&stop));
        let stream = format!("bench-{w}-{}", &run_id[..8]);
        let pace = rate.map(|r| Duration::from_secs_f64(writers as f64 * batch as f64 / r));
        tasks.push(tokio::spawn(async move {
            let stream = StreamName::new(stream)?;
            let event_type = EventType::new("BenchEvent")?;
            let mut expected = ExpectedRevision::NoStream;
            let mut latencies = Vec::new();
            let mut events = 0u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(pace) = pace {
                    next += pace;
                    tokio::time::sleep_until(next.into()).await;
                }
                let batch: Vec<NewEvent> = (0..batch).map(|_| bench_event(&event_type)).collect();
                let size = batch.len() as u64;
                let sent = Instant::now();
                let result = engine.append(&stream, expected, batch).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                expected = result.next_expected();
                events += size;
            }
            anyhow::Ok((events, latencies))
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut events = 0;
    let mut latencies_us = Vec::new();
    for task in tasks {
        let (n, l) = task.await??;
        events += n;
        latencies_us.extend(l);
    }
    Ok(clock.finish(events, latencies_us))
}

/// What a timed run is measured against: the process's CPU, the store's counters, its
/// threads' times and the CPUs' busy time when it started.
pub(crate) struct RunClock<'a> {
    counter: StatsSource<'a>,
    cpu_before: f64,
    before: Option<Stats>,
    threads_before: Threads,
    cpus_before: Cpus,
    started: Instant,
}

impl<'a> RunClock<'a> {
    pub(crate) fn start(counter: StatsSource<'a>) -> Self {
        Self {
            counter,
            cpu_before: process_cpu_seconds(),
            before: counter.map(|c| c()),
            threads_before: Threads::now(),
            cpus_before: Cpus::now(),
            started: Instant::now(),
        }
    }

    /// The run, once its appenders have stopped: `events` appended, each append's latency.
    pub(crate) fn finish(self, events: u64, mut latencies_us: Vec<u64>) -> Run {
        let elapsed = self.started.elapsed().as_secs_f64();
        let threads = Threads::now();
        let committers = threads.committers_since(&self.threads_before, elapsed);
        let runtime = threads.runtime_since(&self.threads_before, elapsed);
        let cpus_busy = Cpus::now().busy_since(&self.cpus_before);
        let after = self.counter.map(|c| c());
        latencies_us.sort_unstable();
        let mean_latency_us =
            latencies_us.iter().sum::<u64>() as f64 / latencies_us.len().max(1) as f64;
        let (syncs, records, log_bytes, stages) = match (&self.before, &after) {
            (Some(b), Some(a)) => (
                a.syncs.saturating_sub(b.syncs) as f64,
                a.records.saturating_sub(b.records) as f64,
                Some(a.log_bytes.saturating_sub(b.log_bytes) as f64),
                Stages::between(b, a, mean_latency_us),
            ),
            _ => (0.0, 0.0, None, None),
        };
        Run {
            events_per_s: events as f64 / elapsed,
            latencies_us,
            fsyncs_per_s: syncs / elapsed,
            group_size: records / syncs.max(1.0),
            log_mib_per_s: log_bytes.map(|bytes| bytes / elapsed / (1 << 20) as f64),
            stages,
            cpu_cores: (process_cpu_seconds() - self.cpu_before) / elapsed,
            committers,
            runtime,
            cpus_busy,
        }
    }
}

impl Run {
    /// `1,234 fsyncs/s, 20.1 events per group commit, CPU 1.52 of 2 cores (…)`, then each
    /// CPU's busy share, the committers' and the runtime threads' shares and the stages
    /// where they were measured.
    pub(crate) fn describe(&self) -> String {
        let cpu_us_per_event = if self.events_per_s > 0.0 {
            format!(
                ", {:.1} µs per event",
                1e6 * self.cpu_cores / self.events_per_s
            )
        } else {
            String::new()
        };
        format!(
            "{:.0} fsyncs/s, {:.1} events per group commit, CPU {:.2} of {} cores{}{}{}{}{}",
            self.fsyncs_per_s,
            self.group_size,
            self.cpu_cores,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_us_per_event,
            self.cpus_busy
                .as_deref()
                .map_or(String::new(), |b| format!("; {}", describe_cpus_busy(b))),
            self.committers
                .map_or(String::new(), |c| format!("; {}", c.describe_committers())),
            self.runtime
                .map_or(String::new(), |r| format!("; {}", r.describe_runtime())),
            self.stages
                .map_or(String::new(), |s| format!("; {}", s.describe())),
        )
    }
}

/// The bare group-commit loop's rates beside an append run (medians over the repeats).
pub(crate) struct Ceilings {
    /// Overwriting blocks written before the run: the machine's best case.
    overwrite: Measured,
    /// Writing new space zero-filled ahead by the engine's filler, as a log that grows must
    /// (each byte then reaches the disk twice: as zeros, then as the log), in the
    /// configuration that did best overwriting.
    growing: Measured,
}

/// Repeats a fresh-directory append run; returns the median run, and with `bare` the
/// medians of the bare group-commit ceilings measured after each run (so they see the
/// disk in the same state).
async fn repeated_append(
    ctx: &Context<'_>,
    writers: usize,
    batch: usize,
    bare: Option<&BareLog>,
) -> anyhow::Result<(Run, Option<Ceilings>)> {
    let mut runs = Vec::new();
    let (mut overwrite, mut growing) = (Vec::new(), Vec::new());
    let growing_log = Variant {
        zero_fill: true,
        ..Variant::default()
    };
    for _ in 0..ctx.plan.repeats {
        let (engine, dir) = fresh(ctx, "append")?;
        let counter = engine_counter(&engine);
        let run = append_run(
            &engine,
            writers,
            batch,
            ctx.plan.seconds,
            None,
            Some(&counter),
        )
        .await?;
        drop(counter);
        runs.push(run);
        discard(engine, dir);
        if let Some(bare) = bare {
            let seconds = ctx.plan.seconds;
            let best = bare.ceiling(writers, seconds, Variant::default()).await?;
            growing.push(bare.rerun(writers, seconds, growing_log, &best).await?);
            overwrite.push(best);
        }
    }
    let run =
        middle_by_rate(runs, |r: &Run| r.events_per_s).ok_or_else(|| anyhow::anyhow!("no runs"))?;
    let rate = |m: &Measured| m.events_per_s;
    let ceilings = middle_by_rate(overwrite, rate)
        .zip(middle_by_rate(growing, rate))
        .map(|(overwrite, growing)| Ceilings { overwrite, growing });
    Ok((run, ceilings))
}

/// The run whose rate is nearest the median of the runs' rates (of two equally near, the
/// first).
pub(crate) fn median_run(runs: Vec<Run>) -> Option<Run> {
    let middle = median(runs.iter().map(|r| r.events_per_s).collect());
    let off = |r: &Run| (r.events_per_s - middle).abs();
    runs.into_iter().min_by(|a, b| off(a).total_cmp(&off(b)))
}

/// The middle of the runs by rate (of an even number, the upper of the middle two).
fn middle_by_rate<T>(mut runs: Vec<T>, rate: impl Fn(&T) -> f64) -> Option<T> {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    (!runs.is_empty()).then(|| runs.swap_remove(runs.len() / 2))
}

fn pg_median(ctx: &Context<'_>, script: &str, clients: usize, per_tx: f64) -> Option<f64> {
    // Said once, at the start of the run.
    if !ctx.pg.has_scripts() {
        return None;
    }
    let mut values = Vec::new();
    for _ in 0..ctx.plan.repeats {
        let measured = ctx
            .pg
            .reset()
            .and_then(|()| ctx.pg.pgbench(script, clients, ctx.plan.seconds))
            .and_then(|tps| ctx.pg.settle().map(|()| tps));
        match measured {
            Ok(tps) => values.push(tps * per_tx),
            Err(e) => {
                eprintln!("PostgreSQL baseline {script} with {clients} clients failed: {e:#}");
                return None;
            }
        }
    }
    Some(median(values))
}

async fn append_workload(
    ctx: &Context<'_>,
    report: &mut Report,
    workload: &'static str,
    batch: usize,
    writer_counts: &[usize],
    script: &str,
) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    let most = writer_counts.iter().copied().max();
    for &writers in writer_counts {
        let variant = if batch == 1 {
            format!("{writers} writers")
        } else {
            format!("{batch}-event batches, {writers} writers")
        };
        let pg = ctx.pg_baseline(script, writers, batch as f64);
        // The machine's own limit for the target line: single events, the most writers.
        let bare = if batch == 1 && Some(writers) == most {
            Some(BareLog::create(&ctx.dir)?)
        } else {
            None
        };
        let (run, ceilings) = repeated_append(ctx, writers, batch, bare.as_ref()).await?;
        best = best.max(run.events_per_s);
        report.line(Line {
            workload,
            variant: variant.clone(),
            system: "annals",
            events_per_s: Some(run.events_per_s),
            p50_ms: percentile_ms(&run.latencies_us, 0.5),
            p99_ms: percentile_ms(&run.latencies_us, 0.99),
            ratio_vs_postgres: pg.map(|pg| run.events_per_s / pg),
            mib_per_s: run.log_mib_per_s,
            extra: Some(format!(
                "{}{}{}",
                run.log_mib_per_s.map_or(String::new(), |m| format!(
                    "MiB/s of log records, {:.0}% of the disk's sequential write bandwidth \
                     (overwriting); ",
                    100.0 * m / ctx.seq_overwrite_mib_s
                )),
                run.describe(),
                ceilings.as_ref().map_or(String::new(), |c| format!(
                    "; {:.0}% of the bare group-commit ceiling, {:.0}% of a growing log's",
                    100.0 * run.events_per_s / c.overwrite.events_per_s,
                    100.0 * run.events_per_s / c.growing.events_per_s,
                )),
            )),
            stages: run.stages,
            ..Line::default()
        });
        if let (Some(bare), Some(ceilings)) = (bare, ceilings) {
            ceiling_lines(ctx, report, &bare, ceilings, workload, &variant, writers).await?;
        }
        report.line(Line {
            workload,
            variant,
            system: "postgres",
            events_per_s: pg,
            ..Line::default()
        });
    }
    Ok(best)
}

/// The bare ceilings' lines; with `--ceiling-variants`, the growing log's ceiling again with
/// 2 µs of CPU per event on the leader, on the appenders, or half on each (medians of
/// `repeats`).
async fn ceiling_lines(
    ctx: &Context<'_>,
    report: &mut Report,
    bare: &BareLog,
    ceilings: Ceilings,
    workload: &'static str,
    variant: &str,
    writers: usize,
) -> anyhow::Result<()> {
    let Ceilings { overwrite, growing } = ceilings;
    report.line(ceiling_line(
        workload,
        format!("{variant}, bare group commit"),
        &overwrite,
        "the machine's ceiling: the same queue, committer threads, record bytes, fdatasync \
         per group and answers, without the engine's planning, encoding, index or \
         publishing, overwriting blocks written before the run",
        "best with",
    ));
    report.line(ceiling_line(
        workload,
        format!("{variant}, bare group commit, zero-filling new space"),
        &growing,
        "a growing log's ceiling: the same loop writing new space that the engine's filler \
         zero-fills ahead, so that each group's fdatasync carries no file metadata, as the \
         engine's log does",
        "run as the overwriting ceiling's best, with",
    ));
    if !ctx.plan.ceiling_variants {
        return Ok(());
    }
    // The same CPU per event, all on the leader, split, or all on the appenders: which
    // side of the queue the engine's work is on, and what that costs the loop.
    let (whole, half) = (Duration::from_micros(2), Duration::from_micros(1));
    let growing = |leader_work, appender_work| Variant {
        zero_fill: true,
        leader_work,
        appender_work,
    };
    let variants = [
        growing(whole, Duration::ZERO),
        growing(half, half),
        growing(Duration::ZERO, whole),
    ];
    // Alternating, so that a disk slowing down during the runs weighs on each alike.
    let mut rates = vec![Vec::new(); variants.len()];
    for _ in 0..ctx.plan.repeats {
        for (v, rates) in variants.iter().zip(&mut rates) {
            let run = bare.ceiling(writers, ctx.plan.seconds, *v).await?;
            rates.push(run.events_per_s);
        }
    }
    for (v, rates) in variants.iter().zip(rates) {
        let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        report.line(Line {
            workload,
            variant: format!("{variant}, bare group commit, {}", v.describe()),
            system: "machine",
            events_per_s: Some(median(rates)),
            extra: Some(format!("runs in order: {}", runs.join(" / "))),
            ..Line::default()
        });
    }
    Ok(())
}

/// A bare ceiling's line: its rate, what it is, the configuration it ran with (`chosen`
/// says why) and its stages.
fn ceiling_line(
    workload: &'static str,
    variant: String,
    ceiling: &Measured,
    what: &str,
    chosen: &str,
) -> Line {
    let how = match ceiling.committers {
        1 => format!(
            "1 committer in lock-step, lingering up to {:?}",
            ceiling.linger
        ),
        n => format!("{n} committers, lingering up to {:?}", ceiling.linger),
    };
    Line {
        workload,
        variant,
        system: "machine",
        events_per_s: Some(ceiling.events_per_s),
        extra: Some(format!(
            "{what}; {chosen} {how}{}",
            ceiling
                .stages
                .map_or(String::new(), |s| format!("; {}", s.describe())),
        )),
        stages: ceiling.stages,
        ..Line::default()
    }
}

pub(crate) async fn w1(ctx: &Context<'_>, report: &mut Report) -> anyhow::Result<f64> {
    append_workload(ctx, report, "W1", 1, &[1, 16, 64], "pg_append_single.sql").await
}

pub(crate) async fn w3(ctx: &Context<'_>, report: &mut Report) -> anyhow::Result<f64> {
    append_workload(ctx, report, "W3", 100, &[1, 8], "pg_append_batch100.sql").await
}

/// Appends `events` in 1,000-event batches from 4 writers.
pub(crate) async fn fill(engine: &Arc<Engine>, events: u64) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let per_writer = events / 4 + u64::from(w < events % 4);
        let engine = Arc::clone(engine);
        tasks.push(tokio::spawn(async move {
            let event_type = EventType::new("Filled")?;
            let mut written = 0;
            let mut n = 0u64;
            while written < per_writer {
                let stream = StreamName::new(format!("fill{w}-{}", n % 1000))?;
                n += 1;
                let count = (per_writer - written).min(1000);
                let batch = (0..count).map(|_| bench_event(&event_type)).collect();
                engine.append(&stream, ExpectedRevision::Any, batch).await?;
                written += count;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

pub(crate) async fn w4(ctx: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let (engine, dir) = fresh(ctx, "read")?;
    let events = ctx.plan.read_events;
    fill(&engine, events).await?;
    let mut rates = Vec::new();
    let mut mib = Vec::new();
    // One pass warms the cache, then `repeats` passes are measured.
    for _ in 0..=ctx.plan.repeats {
        let started = Instant::now();
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut options = ReadAllOptions::forward().limit(10_000);
        loop {
            let slice = engine.read_all(options.clone()).await?;
            count += slice.events.len() as u64;
            bytes += slice
                .events
                .iter()
                .map(|e| (e.event.data.len() + e.event.metadata.len()) as u64)
                .sum::<u64>();
            match slice.next {
                Some(next) if !slice.end_of_log => options = options.from_position(next),
                _ => break,
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::ensure!(count == events, "read {count} of {events} events");
        rates.push(count as f64 / elapsed);
        mib.push(bytes as f64 / elapsed / (1 << 20) as f64);
    }
    rates.remove(0);
    mib.remove(0);
    let pg = pg_read_all(ctx, events);
    let annals = median(rates);
    report.line(Line {
        workload: "W4",
        variant: format!("$all from start, {events} events"),
        system: "annals",
        events_per_s: Some(annals),
        mib_per_s: Some(median(mib)),
        ratio_vs_postgres: pg.map(|pg| annals / pg),
        extra: Some("payload MiB/s (data + metadata)".into()),
        ..Line::default()
    });
    report.line(Line {
        workload: "W4",
        variant: "whole table in position order".into(),
        system: "postgres",
        events_per_s: pg,
        extra: Some(format!("{events} rows of the same shape, psql \\copy")),
        ..Line::default()
    });
    // One 1,000-event stream.
    let stream = StreamName::new("aggregate-1")?;
    let event_type = EventType::new("Changed")?;
    for _ in 0..10 {
        let batch = (0..100).map(|_| bench_event(&event_type)).collect();
        engine.append(&stream, ExpectedRevision::Any, batch).await?;
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let read = engine
            .read_stream(&stream, ReadStreamOptions::forward())
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(read.len() == 1000, "read {} of 1000", read.len());
    }
    report.line(Line {
        workload: "W4",
        variant: "one 1,000-event stream".into(),
        system: "annals",
        p50_ms: Some(median(times)),
        extra: Some("median of 20 reads".into()),
        ..Line::default()
    });
    discard(engine, dir);
    Ok(())
}

/// The baseline's warm read of `events` rows in position order (rows per second): one pass
/// warms the cache, the median (mean) of the next two counts. None (with the reason on stderr) when
/// PostgreSQL is unavailable.
fn pg_read_all(ctx: &Context<'_>, events: u64) -> Option<f64> {
    if !ctx.pg.has_scripts() {
        return None;
    }
    let measure = || -> anyhow::Result<f64> {
        eprintln!("W4  filling the PostgreSQL baseline table with {events} rows");
        ctx.pg.fill(events)?;
        ctx.pg.settle()?;
        let mut rates = Vec::new();
        for _ in 0..3 {
            let (rows, seconds) = ctx.pg.read_all()?;
            anyhow::ensure!(
                rows == events,
                "the baseline table holds {rows} of {events} rows"
            );
            rates.push(rows as f64 / seconds);
        }
        rates.remove(0);
        // Leave an empty table behind, not millions of rows.
        ctx.pg.reset()?;
        Ok(median(rates))
    };
    measure()
        .inspect_err(|e| eprintln!("W4  PostgreSQL baseline skipped: {e:#}"))
        .ok()
}

pub(crate) async fn w5(ctx: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let (engine, dir) = fresh(ctx, "lag")?;
    let best = append_run(
        &engine,
        64,
        1,
        ctx.plan.seconds,
        None,
        Some(&engine_counter(&engine)),
    )
    .await?
    .events_per_s;
    let rate = best / 2.0;
    let lags = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut subscription = subscribe(
        Arc::clone(&engine),
        SubscriptionSource::All(None),
        SubscribeFrom::End,
    );
    let sink = Arc::clone(&lags);
    let collector = tokio::spawn(async move {
        while let Some(Ok(message)) = subscription.next().await {
            if let SubscriptionMessage::Event(e) = message {
                // Commit time is stamped when the writer plans the group, before its fsync,
                // so this lag includes the fsync.
                let lag = Timestamp::now()
                    .as_micros()
                    .saturating_sub(e.event.created.as_micros());
                if let Ok(mut lags) = sink.lock() {
                    lags.push(lag);
                }
            }
        }
    });
    let run = append_run(
        &engine,
        64,
        1,
        ctx.plan.seconds * 2.0,
        Some(rate),
        Some(&engine_counter(&engine)),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    collector.abort();
    let mut lags = lags.lock().map(|l| l.clone()).unwrap_or_default();
    lags.sort_unstable();
    report.line(Line {
        workload: "W5",
        variant: format!("$all subscription, {:.0} ev/s offered", rate),
        system: "annals",
        events_per_s: Some(run.events_per_s),
        p50_ms: percentile_ms(&lags, 0.5),
        p99_ms: percentile_ms(&lags, 0.99),
        p999_ms: percentile_ms(&lags, 0.999),
        extra: Some(format!(
            "commit -> delivery over {} events; half the {best:.0} ev/s that 64 W1 writers \
             did on this engine just before",
            lags.len()
        )),
        ..Line::default()
    });
    discard(engine, dir);
    Ok(())
}

pub(crate) async fn w8(ctx: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let events = ctx.plan.restart_events;
    let dir = ctx
        .dir
        .join(format!("restart-{}", uuid::Uuid::new_v4().simple()));
    let fill_started = Instant::now();
    // Fill in a child process and kill -9 it once it reports the events are durable.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-fill", "--data"])
        .arg(&dir)
        .args(["--events", &events.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout from bench-fill"))?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    anyhow::ensure!(line.starts_with("FILLED"), "bench-fill failed: {line}");
    child.kill()?;
    child.wait()?;
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let engine = Engine::open(&dir, Config::default())?;
    let first = engine.read_all(ReadAllOptions::backward().limit(1)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let last = first.events.first().map_or(0, |e| e.event.position.0 + 1);
    anyhow::ensure!(
        last == events,
        "after restart the log ends at {last}, expected {events}"
    );
    report.line(Line {
        workload: "W8",
        variant: format!("restart after kill -9, {events} events"),
        system: "annals",
        seconds: Some(seconds),
        extra: Some(format!("open + first read; filled in {fill_seconds:.1} s")),
        ..Line::default()
    });
    engine.close();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// `annals bench-fill` (hidden): fills a store, prints `FILLED`, then waits to be killed.
#[derive(Debug, clap::Parser)]
pub(crate) struct FillArgs {
    #[command(flatten)]
    pub(crate) dir: crate::commands::DataDir,
    /// Events to append.
    #[arg(long)]
    events: u64,
}

pub(crate) async fn fill_command(
    data: &std::path::Path,
    args: FillArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let engine = Arc::new(Engine::open(data, Config::default())?);
    fill(&engine, args.events).await?;
    println!("FILLED {}", args.events);
    std::future::pending::<()>().await;
    Ok(std::process::ExitCode::SUCCESS)
}
