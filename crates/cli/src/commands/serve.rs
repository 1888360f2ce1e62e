//! `annals serve`: the KurrentDB-compatible gRPC API and the HTTP/JSON API on one port, over
//! the embedded engine.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use annals_core::{EventStore, Limits};
use annals_engine::{Config, Engine};
use annals_server::{Server, ServerConfig, StoreStats};
use anyhow::{Context, bail};
use clap::Parser;

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
    let config = ServerConfig {
        listen: args.listen,
        insecure: true,
        limits,
        ..ServerConfig::default()
    };
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
    let addr = server.local_addr();
    tracing::info!(%addr, "listening: gRPC kurrentdb://{addr}?tls=false, HTTP http://{addr}/");
    eprintln!("annals serve: listening on {addr} (gRPC + HTTP, dev mode)");
    server
        .run(shutdown_signal())
        .await
        .context("the server failed")?;
    // Every acknowledged append is already durable; closing only releases the files.
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close(),
        Err(_) => tracing::warn!("engine still referenced at exit; it closes when dropped"),
    }
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
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
