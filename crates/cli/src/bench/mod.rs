//! `annals bench`: the performance suite (SPEC §7), Annals side by side with the PostgreSQL
//! baseline from `shared/baselines/`, in one run on this machine.

mod grpc;
mod machine;
mod pg_backend;
mod postgres;
mod report;
pub(crate) mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// The baseline SQL files.
    #[arg(long, default_value = "../shared/baselines")]
    baselines: PathBuf,
}

/// How long and how often each measurement runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) seconds: f64,
    pub(crate) repeats: usize,
    pub(crate) read_events: u64,
    pub(crate) restart_events: u64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = if args.quick {
        Plan {
            seconds: 2.0,
            repeats: 3,
            read_events: 1_000_000,
            restart_events: 1_000_000,
        }
    } else {
        Plan {
            seconds: 5.0,
            repeats: 5,
            read_events: 3_000_000,
            restart_events: 10_000_000,
        }
    };
    let base = match &args.dir {
        Some(dir) => dir.clone(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&base)?;
    let scratch = tempfile::tempdir_in(&base)?;
    let mut report = Report::default();
    let machine = machine::measure(scratch.path())?;
    report.machine(&machine);
    let pg = postgres::Baseline::new(&args.pg_url, &args.baselines);
    let wants = |w: &str| args.workloads.iter().any(|x| x.eq_ignore_ascii_case(w));
    let ctx = workloads::Context {
        dir: scratch.path().to_owned(),
        plan,
        pg: &pg,
        pg_results: Default::default(),
    };
    if wants("W1") {
        workloads::w1(&ctx, &mut report).await?;
    }
    if wants("W2") {
        grpc::w2(&ctx, &mut report).await?;
    }
    if wants("W3") {
        workloads::w3(&ctx, &mut report).await?;
    }
    if wants("W4") {
        workloads::w4(&ctx, &mut report).await?;
    }
    if wants("W5") {
        workloads::w5(&ctx, &mut report).await?;
    }
    if wants("W8") {
        workloads::w8(&ctx, &mut report).await?;
    }
    if wants("PG") {
        pg_backend::run(&ctx, &mut report, &args.pg_url).await?;
    }
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
