//! Stopping the server releases the store: connections still open when the grace period
//! ends are closed, so an embedding application can close its engine afterwards.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_server::ServerConfig;
use kurrentdb::{BatchAppendOptions, EventData, StreamState};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_after_the_grace_period_are_closed_and_release_the_store() {
    let server = common::start_with(ServerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..common::config()
    })
    .await;
    let (addr, store) = (server.addr, Arc::clone(&server.store));

    // A client that keeps a BatchAppend call open (the official client closes it only
    // when the server does), and a raw connection that never says anything.
    let client = server.client();
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
    // Waits (up to 10 s) for `run` to return without error.
    server.stop().await;
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
