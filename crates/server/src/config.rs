//! Server settings.

use std::net::SocketAddr;
use std::time::Duration;

use annals_core::Limits;

/// How the server runs. `ServerConfig::default()` listens on `127.0.0.1:2113` in dev mode.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on for gRPC and HTTP (one port; default `127.0.0.1:2113`).
    pub listen: SocketAddr,
    /// Dev mode: no TLS, no authentication. Until the security issue lands this is the only
    /// mode, and the server refuses to start without it.
    pub insecure: bool,
    /// Event and append size limits enforced before anything reaches the store (defaults: 8 MiB
    /// per event, 32 MiB per append — [`Limits::default`]). Backends enforce their own too.
    pub limits: Limits,
    /// Largest page an HTTP read returns (default 4096 events).
    pub max_http_page: u64,
    /// Events a gRPC read or HTTP page fetches from the store at a time (default 512).
    pub read_batch: u64,
    /// Messages buffered per gRPC read or subscription before back-pressure (default 256).
    pub stream_buffer: usize,
    /// Appends in flight at once on one BatchAppend call (default 256).
    pub batch_append_inflight: usize,
    /// After a shutdown signal, how long open connections get to finish (default 10 s).
    pub shutdown_grace: Duration,
    /// Server version reported to KurrentDB clients by ServerFeatures (default `24.10.0`,
    /// a version whose v1 protocol the official clients speak).
    pub reported_version: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2113)),
            insecure: true,
            limits: Limits::default(),
            max_http_page: 4096,
            read_batch: 512,
            stream_buffer: 256,
            batch_append_inflight: 256,
            shutdown_grace: Duration::from_secs(10),
            reported_version: "24.10.0".to_owned(),
        }
    }
}
