//! Starts `annals-server` in-process over the embedded engine on a free port.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use annals_core::EventStore;
use annals_engine::{Config, Engine};
use annals_server::{Server, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), annals_server::ServeError>>>,
    _dir: tempfile::TempDir,
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
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(
        Engine::open(
            dir.path(),
            annals_engine::Config {
                limits: config.limits,
                ..Config::default()
            },
        )
        .expect("engine opens"),
    );
    let store: Arc<dyn EventStore> = engine.clone();
    let server = Server::bind(config, store).await.expect("server binds");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        engine,
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
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
    }
}

/// A stream name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
