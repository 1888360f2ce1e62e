//! `annals bench`: the performance suite (SPEC §7), Annals side by side with the PostgreSQL
//! baseline from `shared/baselines/`, in one run on this machine.

mod ceiling;
mod grpc;
mod machine;
mod pg_backend;
mod postgres;
mod report;
mod sched;
pub(crate) mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use report::Report;

#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// Workloads to run, comma-separated: W1,W2,W3,W4,W5,W8, and PG (Annals on PostgreSQL
    /// against the plain baseline; not in the default set).
    #[arg(long, value_delimiter = ',', default_value = "W1,W2,W3,W4,W5,W8")]
    workloads: Vec<String>,
    /// Short runs (under 3 minutes in all).
    #[arg(long)]
    quick: bool,
    /// Also write every measured line as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the fresh data directories go (default: a temporary directory in ./).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// PostgreSQL for the baseline.
    #[arg(
        long,
        env = "ANNALS_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// The baseline SQL files (default: the first `shared/baselines` found in a directory
    /// above the working directory or above this binary, e.g. beside its checkout).
    #[arg(long, env = "ANNALS_BASELINES")]
    baselines: Option<PathBuf>,
    /// Seconds per measured run (default 5; 2 with `--quick`).
    #[arg(long)]
    seconds: Option<f64>,
    /// Runs per measurement, of which the median is reported (default 5; 3 with `--quick`).
    #[arg(long)]
    repeats: Option<usize>,
    /// Also run W1's bare growing-log ceiling with 2 µs of CPU per event on the leader, on
    /// the appenders, or half on each: what the engine's work costs the bare loop, by side.
    #[arg(long)]
    ceiling_variants: bool,
    /// Events in the W4 read and the W8 restart stores (default 3 M and 10 M; 1 M each with
    /// `--quick`).
    #[arg(long)]
    events: Option<u64>,
}

/// Where the baseline SQL files are: `--baselines`, else the first `shared/baselines` found
/// in a directory above the working directory or above the binary (a binary in a
/// checkout's `target/` finds the one beside the checkout).
fn baselines_dir(given: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = given {
        return dir;
    }
    let beside = |dir: &std::path::Path| {
        dir.ancestors()
            .map(|a| a.join("shared").join("baselines"))
            .find(|b| b.join("pg_event_store_schema.sql").is_file())
    };
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    cwd.iter()
        .chain(exe.iter())
        .find_map(|start| beside(start))
        .unwrap_or_else(|| PathBuf::from("../shared/baselines"))
}

/// How long and how often each measurement runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) seconds: f64,
    pub(crate) repeats: usize,
    pub(crate) read_events: u64,
    pub(crate) restart_events: u64,
    /// `--ceiling-variants`.
    pub(crate) ceiling_variants: bool,
}

/// The workloads `--workloads` accepts.
const WORKLOADS: [&str; 7] = ["W1", "W2", "W3", "W4", "W5", "W8", "PG"];

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(unknown) = args
        .workloads
        .iter()
        .find(|w| !WORKLOADS.iter().any(|k| k.eq_ignore_ascii_case(w)))
    {
        anyhow::bail!(
            "unknown workload {unknown:?} in --workloads: choose from {}",
            WORKLOADS.join(",")
        );
    }
    let mut plan = if args.quick {
        Plan {
            seconds: 2.0,
            repeats: 3,
            read_events: 1_000_000,
            restart_events: 1_000_000,
            ceiling_variants: args.ceiling_variants,
        }
    } else {
        Plan {
            seconds: 5.0,
            repeats: 5,
            read_events: 3_000_000,
            restart_events: 10_000_000,
            ceiling_variants: args.ceiling_variants,
        }
    };
    if let Some(seconds) = args.seconds {
        anyhow::ensure!(seconds > 0.0, "--seconds must be positive");
        plan.seconds = seconds;
    }
    if let Some(repeats) = args.repeats {
        anyhow::ensure!(repeats > 0, "--repeats must be at least 1");
        plan.repeats = repeats;
    }
    if let Some(events) = args.events {
        anyhow::ensure!(events >= 4_000, "--events must be at least 4000");
        plan.read_events = events;
        plan.restart_events = events;
    }
    let base = match &args.dir {
        Some(dir) => dir.clone(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&base)?;
    let scratch = tempfile::tempdir_in(&base)?;
    let mut report = Report::default();
    let bench_started = Instant::now();
    let machine = machine::measure(scratch.path())?;
    let machine_took = bench_started.elapsed().as_secs_f64();
    report.machine(&machine);
    let baselines = baselines_dir(args.baselines);
    let pg = postgres::Baseline::new(&args.pg_url, &baselines);
    if !pg.has_scripts() {
        eprintln!(
            "no PostgreSQL baseline files in {} (pass --baselines DIR): lines show Annals \
             without the ratio",
            baselines.display()
        );
    }
    let wants = |w: &str| args.workloads.iter().any(|x| x.eq_ignore_ascii_case(w));
    let ctx = workloads::Context {
        dir: scratch.path().to_owned(),
        plan,
        pg: &pg,
        seq_overwrite_mib_s: machine.seq_overwrite_mib_s,
        pg_results: Default::default(),
    };
    let mut took = vec![("machine", machine_took)];
    for workload in WORKLOADS.into_iter().filter(|w| wants(w)) {
        let started = Instant::now();
        match workload {
            "W1" => workloads::w1(&ctx, &mut report).await.map(drop)?,
            "W2" => grpc::w2(&ctx, &mut report).await?,
            "W3" => workloads::w3(&ctx, &mut report).await.map(drop)?,
            "W4" => workloads::w4(&ctx, &mut report).await?,
            "W5" => workloads::w5(&ctx, &mut report).await?,
            "W8" => workloads::w8(&ctx, &mut report).await?,
            "PG" => pg_backend::run(&ctx, &mut report, &args.pg_url).await?,
            other => anyhow::bail!("workload {other} has no runner"),
        }
        let seconds = started.elapsed().as_secs_f64();
        println!("{workload}  done in {}", report::duration(seconds));
        took.push((workload, seconds));
    }
    report.run_time(bench_started.elapsed().as_secs_f64(), &took);
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
