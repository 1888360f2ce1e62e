//! `annals`: the command-line entry point.

mod bench;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Annals: an event store and event-driven data platform.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Data directory of the embedded store (default ./data). Subcommands accept it too,
    /// as `--data DIR` (or `--data-dir DIR` for `append`, whose `--data` is the event).
    #[arg(long = "data", id = "store_dir", value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the KurrentDB-compatible gRPC API and the HTTP/JSON API (SSE, metrics, OpenAPI)
    /// on one port.
    Serve(commands::serve::Args),
    /// Append one event to a stream.
    Append(commands::append::Args),
    /// Read a stream, a virtual stream ($ce-…, $et-…) or the global log ($all).
    Read(commands::read::Args),
    /// Follow a stream or $all: catch up, then print new events as they are committed.
    Tail(commands::tail::Args),
    /// Check every record and index entry of a data directory (offline).
    Verify(commands::DataDir),
    /// Write a small order flow into the data directory and read it back three ways.
    Demo(commands::DataDir),
    /// Outbox relay (polling / WAL tailing → NATS JetStream / RabbitMQ).
    #[command(subcommand)]
    Relay(annals_relay::RelayCommand),
    /// Run the performance suite, side by side with the PostgreSQL baseline.
    Bench(bench::Args),
    /// Fill a store and wait to be killed (for `bench` W8).
    #[command(hide = true)]
    BenchFill(bench::workloads::FillArgs),
    /// Append from many writers until killed (for the kill -9 test).
    #[command(hide = true)]
    Load(commands::load::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life cycle; the one-shot commands only warnings. The bench's W2
    // server stops with the client's BatchAppend call still open (the kurrentdb client keeps
    // it for the connection's life): the server would warn that it closes it after every
    // run, and the client, left behind, that its node went away.
    init_logging(match cli.command {
        Command::Serve(_) => "info",
        Command::Bench(_) => "warn,annals_server=error,kurrentdb=off",
        _ => "warn",
    });
    // A CPU is left to the engine's committer threads.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = annals_engine::runtime_workers() {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let top = cli.data;
        match cli.command {
            Command::Serve(args) => {
                let dir = args.dir.resolve(top);
                commands::serve::run(&dir, args).await
            }
            Command::Append(args) => {
                let dir = args.dir.resolve(top);
                commands::append::run(&dir, args).await
            }
            Command::Read(args) => commands::read::run(&args.dir.resolve(top.clone()), args).await,
            Command::Tail(args) => commands::tail::run(&args.dir.resolve(top.clone()), args).await,
            Command::Verify(dir) => commands::verify::run(&dir.resolve(top)),
            Command::Demo(dir) => commands::demo::run(&dir.resolve(top)).await,
            Command::Relay(cmd) => annals_relay::run(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Bench(args) => bench::run(args).await,
            Command::BenchFill(args) => {
                let dir = args.dir.resolve(top.clone());
                bench::workloads::fill_command(&dir, args).await
            }
            Command::Load(args) => commands::load::run(&args.dir.resolve(top.clone()), args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANNALS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
