//! Annals on PostgreSQL against the plain PostgreSQL baseline, same database, same run:
//! single-event appends from 32 writers and 100-event batches from 8 writers, each writer
//! on its own streams with exact expected revisions (the baseline: `shared/baselines/` run
//! by pgbench with as many clients).

use std::sync::Arc;

use annals_postgres::{PgConfig, PgStore};

use super::report::{Line, Report, percentile_ms};
use super::workloads::{Context, Run, append_run, median_run};

/// The variants: events per append, writers, baseline script.
const VARIANTS: [(usize, usize, &str); 2] = [
    (1, 32, "pg_append_single.sql"),
    (100, 8, "pg_append_batch100.sql"),
];

pub(crate) async fn run(ctx: &Context<'_>, report: &mut Report, url: &str) -> anyhow::Result<()> {
    for (batch, writers, script) in VARIANTS {
        let variant = if batch == 1 {
            format!("{writers} writers")
        } else {
            format!("{batch}-event batches, {writers} writers")
        };
        let baseline = ctx.pg_baseline(script, writers, batch as f64);
        let mut runs = Vec::new();
        for _ in 0..ctx.plan.repeats {
            runs.push(one_run(ctx, url, writers, batch).await?);
        }
        let run = median_run(runs).ok_or_else(|| anyhow::anyhow!("no runs"))?;
        report.line(Line {
            workload: "PG",
            variant: variant.clone(),
            system: "annals-postgres",
            events_per_s: Some(run.events_per_s),
            p50_ms: percentile_ms(&run.latencies_us, 0.5),
            p99_ms: percentile_ms(&run.latencies_us, 0.99),
            ratio_vs_postgres: baseline.map(|pg| run.events_per_s / pg),
            extra: Some(format!(
                "CPU of this process {:.2} cores (PostgreSQL's own not counted)",
                run.cpu_cores
            )),
            ..Line::default()
        });
        report.line(Line {
            workload: "PG",
            variant,
            system: "postgres",
            events_per_s: baseline,
            ..Line::default()
        });
    }
    Ok(())
}

/// One timed run on a fresh schema, dropped afterwards.
async fn one_run(
    ctx: &Context<'_>,
    url: &str,
    writers: usize,
    batch: usize,
) -> anyhow::Result<Run> {
    let schema = format!("annals_bench_{}", uuid::Uuid::new_v4().simple());
    let mut config = PgConfig::new(url).schema(&schema);
    config.max_connections = u32::try_from(writers + 4).unwrap_or(u32::MAX);
    let store = Arc::new(PgStore::open(config).await?);
    let run = append_run(&store, writers, batch, ctx.plan.seconds, None, None).await;
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
    if let Err(e) = PgStore::drop_schema(url, &schema).await {
        eprintln!("could not drop the benchmark schema {schema}: {e}");
    }
    // As after a baseline run: its checkpoint and write-back do not land in the next run.
    ctx.pg.settle()?;
    run
}
