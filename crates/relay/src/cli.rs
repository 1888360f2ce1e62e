//! `annals relay …` subcommands.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{RelayConfig, SourceMode};
use crate::relay::{Relay, connect_pool};
use crate::source::wal::slot;

/// The relay's subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RelayCommand {
    /// Run the relay until SIGINT / SIGTERM.
    Run {
        /// Path of the TOML configuration.
        #[arg(long, short, env = "ANNALS_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Create the outbox table, and in WAL mode the publication and replication slot.
    Setup {
        /// Path of the TOML configuration.
        #[arg(long, short, env = "ANNALS_RELAY_CONFIG")]
        config: PathBuf,
        /// Run `ALTER SYSTEM SET wal_level = logical` when needed (PostgreSQL must then be
        /// restarted).
        #[arg(long)]
        set_wal_level: bool,
        /// Drop and recreate a lost or foreign slot (prints the last acknowledged position so
        /// rows after it can be republished with `republish`).
        #[arg(long)]
        recreate_slot: bool,
    },
    /// Show backlog, slot position, lag and health.
    Status {
        /// Path of the TOML configuration.
        #[arg(long, short, env = "ANNALS_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Publish again every row created at or after `--since` (after a slot loss). Consumers
    /// dedup by message id.
    Republish {
        /// Path of the TOML configuration.
        #[arg(long, short, env = "ANNALS_RELAY_CONFIG")]
        config: PathBuf,
        /// RFC 3339 time, e.g. 2026-11-22T10:00:00Z.
        #[arg(long)]
        since: chrono::DateTime<chrono::Utc>,
    },
    /// Drop the replication slot and its bookkeeping row (frees the WAL it holds).
    DropSlot {
        /// Path of the TOML configuration.
        #[arg(long, short, env = "ANNALS_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Print a configuration file with every default.
    PrintConfig,
}

/// Runs one subcommand.
pub async fn run(cmd: RelayCommand) -> anyhow::Result<()> {
    match cmd {
        RelayCommand::PrintConfig => {
            print!("{}", RelayConfig::default_toml());
            Ok(())
        }
        RelayCommand::Run { config } => {
            let cfg = load(&config)?;
            if !cfg.metrics.listen.is_empty() {
                crate::metrics::install(&cfg.metrics.listen)?;
            }
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone())?;
            Relay::new(cfg)?.run(shutdown).await?;
            Ok(())
        }
        RelayCommand::Setup {
            config,
            set_wal_level,
            recreate_slot,
        } => {
            let cfg = load(&config)?;
            let pool = connect_pool(&cfg).await?;
            if cfg.source.mode == SourceMode::Wal && set_wal_level {
                let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
                    .fetch_one(&pool)
                    .await?;
                if level != "logical" {
                    sqlx::query("ALTER SYSTEM SET wal_level = logical")
                        .execute(&pool)
                        .await?;
                    println!(
                        "wal_level set to logical; restart PostgreSQL \
                         (e.g. pg_ctlcluster 15 main restart), then run setup again"
                    );
                    return Ok(());
                }
            }
            cfg.outbox()?.migrate(&pool).await?;
            if cfg.source.mode == SourceMode::Wal && recreate_slot {
                let old = slot::recreate(&pool, &cfg).await?;
                match old {
                    Some(rec) => println!(
                        "slot {} recreated; the old slot had acknowledged up to {} (commit time {}). \
                         Rows committed after that may be unpublished: run `republish --since <time>`",
                        cfg.source.wal.slot,
                        slot::fmt_lsn(rec.acked),
                        rec.acked_commit_time
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "unknown".into())
                    ),
                    None => println!("slot {} created", cfg.source.wal.slot),
                }
            } else {
                Relay::new(cfg.clone())?.setup(&pool).await?;
                println!("outbox {} ready", cfg.outbox()?.qualified());
            }
            Ok(())
        }
        RelayCommand::Status { config } => {
            let cfg = load(&config)?;
            let pool = connect_pool(&cfg).await?;
            let t = cfg.outbox()?.qualified();
            let rows: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(&*format!("SELECT count(*) FROM {t}")))
                    .fetch_one(&pool)
                    .await?;
            println!("outbox {t}: {rows} rows");
            match cfg.source.mode {
                SourceMode::Polling => {
                    let backlog: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(&*format!(
                        "SELECT count(*) FROM {t} WHERE published_at IS NULL"
                    )))
                    .fetch_one(&pool)
                    .await?;
                    println!("mode polling: {backlog} unpublished rows");
                }
                SourceMode::Wal => {
                    let info = slot::slot_info(&pool, &cfg.source.wal.slot).await?;
                    let rec = slot::slot_record(&pool, &cfg).await.ok().flatten();
                    match info {
                        None => println!("slot {}: MISSING", cfg.source.wal.slot),
                        Some(i) => println!(
                            "slot {}: confirmed {} wal_status {} active {} retained {} bytes",
                            cfg.source.wal.slot,
                            slot::fmt_lsn(i.confirmed),
                            i.wal_status,
                            i.active_pid.is_some(),
                            i.lag_bytes
                        ),
                    }
                    if let Some(r) = rec {
                        println!(
                            "relay record: created {} acknowledged {} (commit time {})",
                            slot::fmt_lsn(r.created),
                            slot::fmt_lsn(r.acked),
                            r.acked_commit_time
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_else(|| "-".into())
                        );
                    }
                }
            }
            Ok(())
        }
        RelayCommand::Republish { config, since } => {
            let cfg = load(&config)?;
            let pool = connect_pool(&cfg).await?;
            let n = crate::republish::republish_since(&cfg, &pool, since).await?;
            println!("republished {n} rows created at or after {since}");
            Ok(())
        }
        RelayCommand::DropSlot { config } => {
            let cfg = load(&config)?;
            let pool = connect_pool(&cfg).await?;
            slot::drop_slot(&pool, &cfg).await?;
            println!("slot {} dropped", cfg.source.wal.slot);
            Ok(())
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<RelayConfig> {
    RelayConfig::from_file(path).with_context(|| format!("loading {}", path.display()))
}

fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    Ok(())
}
