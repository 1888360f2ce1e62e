//! Stopping the server releases the store: connections still open when the grace period
//! ends are closed, so an embedding application can close its engine afterwards.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_server::{Server, ServerConfig};
use kurrentdb::{BatchAppendOptions, EventData, StreamState};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_after_the_grace_period_are_closed_and_release_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = annals_engine::Engine::open(dir.path(), annals_engine::Config::default())
        .expect("engine opens");
    let store: Arc<dyn annals_core::EventStore> = Arc::new(engine);
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..common::config()
    };
    let server = Server::bind(config, Arc::clone(&store))
        .await
        .expect("server binds");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    // A client that keeps a BatchAppend call open (the official client closes it only
    // when the server does), and a raw connection that never says anything.
    let client: kurrentdb::Client = format!("kurrentdb://{addr}?tls=false")
        .parse()
        .map(|settings| kurrentdb::Client::new(settings).expect("client"))
        .expect("connection string");
    let batch = client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("BatchAppend opens");
    let event = EventData::json("Opened", &serde_json::json!({ "n": 1 })).expect("json");
    batch
        .append_to_stream("held-open", StreamState::NoStream, vec![event])
        .await
        .expect("append through BatchAppend");
    let mut silent = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");

    let stopping = Instant::now();
    stop.send(()).expect("server running");
    let result = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops within the grace period and a bound after it");
    result.expect("server task").expect("server stops cleanly");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "once the server has stopped, nothing of it holds the store"
    );
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // the server's own frames before it closed
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the silent connection was closed by the server"
    );
    drop(batch);
}
