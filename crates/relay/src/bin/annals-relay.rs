//! Stand-alone relay binary: the same entry point as `annals relay …`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "annals-relay", about = "Annals outbox relay", version)]
struct Args {
    #[command(subcommand)]
    cmd: annals_relay::RelayCommand,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    annals_relay::run(Args::parse().cmd).await
}
