//! `annals serve`: the KurrentDB-compatible gRPC API and the HTTP/JSON API on one port, over
//! the embedded engine or PostgreSQL.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use annals_core::{EventStore, Limits};
use annals_engine::{Config, Engine};
use annals_postgres::{PgConfig, PgStore};
use annals_server::{Server, ServerConfig, StoreStats};
use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

/// Where the events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// The embedded engine, in the data directory.
    Engine,
    /// PostgreSQL at --pg-url, in schema --pg-schema.
    Postgres,
}

#[derive(Debug, Parser)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) dir: super::DataDir,
    /// Address for gRPC (KurrentDB clients: kurrentdb://HOST:PORT?tls=false) and HTTP.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:2113",
        env = "ANNALS_LISTEN"
    )]
    listen: SocketAddr,
    /// Dev mode: no TLS and no authentication. Required until TLS and auth are implemented.
    #[arg(long)]
    insecure: bool,
    /// Storage backend.
    #[arg(long, value_enum, default_value = "engine", env = "ANNALS_BACKEND")]
    backend: Backend,
    /// PostgreSQL connection URL (with --backend postgres).
    #[arg(
        long,
        value_name = "URL",
        env = "ANNALS_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// PostgreSQL schema holding the store's tables; created on first use.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "annals",
        env = "ANNALS_PG_SCHEMA"
    )]
    pg_schema: String,
    /// Largest event accepted (data + metadata + type), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_event_bytes)]
    max_event_bytes: usize,
    /// Largest append accepted (all its events together), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_append_bytes)]
    max_append_bytes: usize,
}

pub(crate) async fn run(data: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if !args.insecure {
        bail!(
            "TLS and authentication are not implemented yet; start with --insecure \
             (dev mode: no TLS, no authentication)"
        );
    }
    if args.max_event_bytes > args.max_append_bytes {
        bail!("--max-event-bytes must not exceed --max-append-bytes");
    }
    let limits = Limits {
        max_event_bytes: args.max_event_bytes,
        max_append_bytes: args.max_append_bytes,
    };
    tracing::warn!(
        "DEV MODE (--insecure): no TLS, no authentication, no ACLs — anyone who can reach {} \
         can read and write every stream",
        args.listen
    );
    let config = ServerConfig {
        listen: args.listen,
        insecure: true,
        limits,
        ..ServerConfig::default()
    };
    match args.backend {
        Backend::Engine => serve_engine(data, limits, config).await?,
        Backend::Postgres => serve_postgres(&args, limits, config).await?,
    }
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

async fn serve_engine(data: &Path, limits: Limits, config: ServerConfig) -> anyhow::Result<()> {
    let engine = Arc::new(
        Engine::open(
            data,
            Config {
                limits,
                ..Config::default()
            },
        )
        .with_context(|| format!("cannot open the store in {}", data.display()))?,
    );
    tracing::info!(data = %data.display(), "embedded engine open");
    let store: Arc<dyn EventStore> = engine.clone();
    let stats_engine = Arc::clone(&engine);
    let stats = move || {
        let s = stats_engine.stats();
        StoreStats {
            group_commits: s.groups,
            syncs: s.syncs,
            records: s.records,
        }
    };
    let server = Server::bind(config, store)
        .await
        .context("cannot start the server")?
        .with_stats(Arc::new(stats));
    run_server(server).await?;
    // Every acknowledged append is already durable; closing only releases the files.
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close(),
        Err(_) => tracing::warn!("engine still referenced at exit; it closes when dropped"),
    }
    Ok(())
}

async fn serve_postgres(args: &Args, limits: Limits, config: ServerConfig) -> anyhow::Result<()> {
    let mut pg = PgConfig::new(&args.pg_url).schema(&args.pg_schema);
    pg.limits = limits;
    let store = Arc::new(PgStore::open(pg).await.with_context(|| {
        format!(
            "cannot open the PostgreSQL store (schema {})",
            args.pg_schema
        )
    })?);
    tracing::info!(schema = %args.pg_schema, "PostgreSQL store open");
    let shared: Arc<dyn EventStore> = store.clone();
    let server = Server::bind(config, shared)
        .await
        .context("cannot start the server")?;
    run_server(server).await?;
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
    Ok(())
}

/// Serves until Ctrl-C or SIGTERM.
async fn run_server(server: Server) -> anyhow::Result<()> {
    let addr = server.local_addr();
    tracing::info!(%addr, "listening: gRPC kurrentdb://{addr}?tls=false, HTTP http://{addr}/");
    eprintln!("annals serve: listening on {addr} (gRPC + HTTP, dev mode)");
    server
        .run(shutdown_signal())
        .await
        .context("the server failed")
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
