//! One module per subcommand.

pub(crate) mod append;
pub(crate) mod demo;
pub(crate) mod load;
pub(crate) mod read;
pub(crate) mod remote;
pub(crate) mod serve;
pub(crate) mod tail;
pub(crate) mod verify;

use std::path::Path;

use annals_engine::{Config, Engine};
use anyhow::Context;

/// Where the embedded store lives (`--data DIR`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DataDir {
    /// Data directory of the embedded store [default: ./data].
    #[arg(long = "data", value_name = "DIR", env = "ANNALS_DATA")]
    data: Option<std::path::PathBuf>,
}

impl DataDir {
    /// This option, else the top-level one, else `./data`.
    pub(crate) fn resolve(&self, top: Option<std::path::PathBuf>) -> std::path::PathBuf {
        self.data.clone().or(top).unwrap_or_else(|| "./data".into())
    }
}

/// `append`'s spelling: `--data` is the event there.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AppendDataDir {
    /// Data directory of the embedded store [default: ./data].
    #[arg(long = "data-dir", value_name = "DIR", env = "ANNALS_DATA")]
    data_dir: Option<std::path::PathBuf>,
}

impl AppendDataDir {
    /// This option, else the top-level one, else `./data`.
    pub(crate) fn resolve(&self, top: Option<std::path::PathBuf>) -> std::path::PathBuf {
        self.data_dir
            .clone()
            .or(top)
            .unwrap_or_else(|| "./data".into())
    }
}

/// Opens the embedded store, saying which directory failed.
pub(crate) fn open(data: &Path) -> anyhow::Result<Engine> {
    Engine::open(data, Config::default())
        .with_context(|| format!("cannot open the store in {}", data.display()))
}

/// Either a stream name or `$all`.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    All,
    Stream(annals_core::StreamName),
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == annals_core::name::ALL_STREAM {
            return Ok(Source::All);
        }
        annals_core::StreamName::new(s)
            .map(Source::Stream)
            .map_err(|e| e.to_string())
    }
}
