//! The PostgreSQL baseline: the schema and statements of `shared/baselines/`, run with
//! pgbench against the local server in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

pub(crate) struct Baseline {
    url: String,
    dir: PathBuf,
}

impl Baseline {
    pub(crate) fn new(url: &str, dir: &Path) -> Self {
        Self {
            url: url.to_owned(),
            dir: dir.to_owned(),
        }
    }

    /// Whether the baseline's SQL files are there; without them nothing is measured.
    pub(crate) fn has_scripts(&self) -> bool {
        self.dir.join("pg_event_store_schema.sql").is_file()
    }

    /// Recreates the baseline's table.
    pub(crate) fn reset(&self) -> anyhow::Result<()> {
        let schema = self.dir.join("pg_event_store_schema.sql");
        self.psql(&["-q", "-f", &schema.to_string_lossy()])
    }

    /// Runs one baseline script with `clients` connections; returns transactions per second.
    pub(crate) fn pgbench(
        &self,
        script: &str,
        clients: usize,
        seconds: f64,
    ) -> anyhow::Result<f64> {
        let file = self.dir.join(script);
        let out = Command::new("pgbench")
            .args(["-n", "-f"])
            .arg(&file)
            .args([
                "-c",
                &clients.to_string(),
                "-j",
                &clients.min(2).to_string(),
            ])
            .args(["-T", &(seconds.ceil() as u64).to_string()])
            .arg(&self.url)
            .output()
            .context("running pgbench")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tps = text
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok());
        match tps {
            Some(tps) => Ok(tps),
            None => bail!(
                "pgbench {script} printed no tps: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Ends a measurement: a checkpoint writes PostgreSQL's dirty buffers now and the disk
    /// is settled, so neither they nor the write-back of its WAL lands in the next
    /// measurement (of either system).
    pub(crate) fn settle(&self) -> anyhow::Result<()> {
        self.psql(&["-qc", "CHECKPOINT"])
            .context("checkpointing PostgreSQL after a baseline run")?;
        super::machine::settle_disk()
    }

    /// Recreates the baseline's table holding `events` events shaped like the bench's own
    /// (256-byte JSON data, 64-byte JSON metadata, 1,000 events per stream), so W4 reads the
    /// same number of events from both systems.
    pub(crate) fn fill(&self, events: u64) -> anyhow::Result<()> {
        self.reset()?;
        let (data, metadata) = super::workloads::bench_payload();
        let sql = format!(
            "INSERT INTO events(stream, version, type, data, metadata) \
             SELECT 'fill-' || (g / 1000), g % 1000, 'Filled', '{data}'::jsonb, '{metadata}'::jsonb \
             FROM generate_series(0, {last}) g",
            last = events.saturating_sub(1)
        );
        self.psql(&["-qc", &sql])
            .context("filling the baseline table")
    }

    /// Reads the whole table in position order; returns (rows, seconds).
    pub(crate) fn read_all(&self) -> anyhow::Result<(u64, f64)> {
        let count = Command::new("psql")
            .args(["-Atc", "select count(*) from events"])
            .arg(&self.url)
            .output()?;
        let rows: u64 = String::from_utf8_lossy(&count.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let started = Instant::now();
        self.psql(&[
            "-qc",
            "\\copy (select * from events order by global_position) to '/dev/null'",
        ])?;
        Ok((rows, started.elapsed().as_secs_f64()))
    }

    /// Runs psql with `args`, stopping at the first error.
    fn psql(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new("psql")
            .args(["-v", "ON_ERROR_STOP=1"])
            .args(args)
            .arg(&self.url)
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .status()
            .context("running psql")?;
        if !status.success() {
            bail!("psql {} failed", args.join(" "));
        }
        Ok(())
    }
}
