//! Starts `annals-server` in-process on a free port, over the embedded engine or over
//! PostgreSQL (a fresh schema of `ANNALS_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, dropped when the server is).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use annals_core::EventStore;
use annals_engine::{Config, Engine};
use annals_postgres::{PgConfig, PgStore};
use annals_server::{Server, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The store under a test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Engine,
    Postgres,
}

/// A running server; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<dyn EventStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), annals_server::ServeError>>>,
    _dir: tempfile::TempDir,
    pg_schema: Option<String>,
}

/// Default test settings: a free port on loopback.
pub fn config() -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

pub async fn start() -> TestServer {
    start_with(config()).await
}

pub async fn start_with(config: ServerConfig) -> TestServer {
    start_on_with(Backend::Engine, config).await
}

pub async fn start_on(backend: Backend) -> TestServer {
    start_on_with(backend, config()).await
}

pub async fn start_on_with(backend: Backend, config: ServerConfig) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pg_schema = None;
    let store: Arc<dyn EventStore> = match backend {
        Backend::Engine => Arc::new(
            Engine::open(
                dir.path(),
                annals_engine::Config {
                    limits: config.limits,
                    ..Config::default()
                },
            )
            .expect("engine opens"),
        ),
        Backend::Postgres => {
            let schema = format!("annals_srv_{}", uuid::Uuid::new_v4().simple());
            let mut pg = PgConfig::new(pg_url()).schema(&schema);
            pg.limits = config.limits;
            pg.max_connections = 8;
            pg_schema = Some(schema);
            Arc::new(PgStore::open(pg).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} (ANNALS_PG_URL) must be running: {e}",
                    pg_url()
                )
            }))
        }
    };
    let server = Server::bind(config, Arc::clone(&store))
        .await
        .expect("server binds");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        store,
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
        pg_schema,
    }
}

/// The database PostgreSQL-backed servers use.
pub fn pg_url() -> String {
    std::env::var("ANNALS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops a test schema from a thread of its own (the test's runtime may be stopping).
fn drop_schema(schema: String) {
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(PgStore::drop_schema(&pg_url(), &schema))
    });
    if let Ok(Err(e)) = cleanup.join() {
        eprintln!("could not drop test schema: {e}");
    }
}

impl TestServer {
    /// The official KurrentDB client, connected as users would connect it.
    pub fn client(&self) -> kurrentdb::Client {
        let settings = format!("kurrentdb://{}?tls=false", self.addr)
            .parse()
            .expect("connection string");
        kurrentdb::Client::new(settings).expect("client")
    }

    /// Base URL of the HTTP API.
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task");
            result.expect("server ran without error");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(schema) = self.pg_schema.take() {
            drop_schema(schema);
        }
    }
}

/// A stream name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
