//! `annals serve`: the Annals server.
//!
//! One port serves two APIs over any [`EventStore`] backend:
//!
//! - **gRPC, KurrentDB-compatible** ([`grpc`], tonic): the official KurrentDB clients connect
//!   with `kurrentdb://HOST:PORT?tls=false` and use Streams (Read with subscriptions, Append,
//!   BatchAppend, Delete, Tombstone), ServerFeatures and Gossip. The `.proto` files in
//!   `proto/kurrent/` are Annals' own, written from the protocol's facts.
//! - **HTTP/JSON** ([`http`], axum): append, read, metadata, delete, subscriptions as
//!   Server-Sent Events, `/health`, `/metrics` (Prometheus), `/openapi.json`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use annals_server::{ServerConfig, Server};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(annals_core::memory::MemoryStore::new());
//! let server = Server::bind(ServerConfig::default(), store).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! A request goes: transport (hyper, HTTP/1.1 or HTTP/2) → axum router (gRPC paths to tonic,
//! the rest to the JSON handlers) → decoding and validation into core types, naming the field
//! at fault → [`state`]'s shared path (limits, the durable write, paged reads, subscriptions) →
//! the store. Responses and errors are encoded back per API ([`error::ApiError`]).

pub mod config;
pub mod error;
pub(crate) mod grpc;
pub mod http;
pub mod metrics;
mod prompt;
pub mod proto;
pub(crate) mod state;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use annals_core::EventStore;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

pub use config::ServerConfig;
pub use error::ApiError;
pub use metrics::{Metrics, StatsSource, StoreStats};

use crate::grpc::gossip::GossipService;
use crate::grpc::server_features::ServerFeaturesService;
use crate::grpc::streams::StreamsService;
use crate::proto::event_store::client::gossip::gossip_server::GossipServer;
use crate::proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::event_store::client::streams::streams_server::StreamsServer;
use crate::state::AppState;

/// How long a stopping server waits for the connections it closed to be gone.
const CLOSE_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS and authentication are not implemented yet; only dev mode can run.
    #[error(
        "TLS and authentication are not available yet: start the server with --insecure (dev mode)"
    )]
    SecureModeUnavailable,
    /// Serving failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: ServerConfig,
    store: Arc<dyn EventStore>,
    stats: Option<Arc<dyn StatsSource>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Binds and runs a server until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    store: Arc<dyn EventStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::bind(config, store).await?.run(shutdown).await
}

impl Server {
    /// Binds the listen address (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(
        config: ServerConfig,
        store: Arc<dyn EventStore>,
    ) -> Result<Self, ServeError> {
        if !config.insecure {
            return Err(ServeError::SecureModeUnavailable);
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            config,
            store,
            stats: None,
        })
    }

    /// Adds the backend's own totals to `/metrics`.
    pub fn with_stats(mut self, stats: Arc<dyn StatsSource>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, ends open subscriptions and
    /// gives in-flight requests `shutdown_grace` to finish. Every append acknowledged before
    /// that was already durable (the store acknowledges only after fsync).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (listener, connections) = prompt::PromptListener::new(self.listener);
        let state = AppState {
            store: self.store,
            config: Arc::new(self.config.clone()),
            metrics: Arc::new(Metrics::new(self.stats)),
            shutdown: stop_rx,
            instance_id: uuid::Uuid::new_v4(),
            in_use: listener.in_use(),
        };
        let app = router(state, self.local_addr);
        let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown requested: no new connections; ending subscriptions");
            let _ = stop_tx.send(true);
            let _ = stopping_tx.send(());
        };
        tracing::info!(addr = %self.local_addr, "serving gRPC (KurrentDB protocol) and HTTP");
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .into_future();
        let grace = self.config.shutdown_grace;
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result?,
            () = deadline => {
                tracing::warn!(?grace, "connections still open after the grace period; closing them");
            }
        }
        // The HTTP stack serves each connection on a task of its own, which outlives the
        // server's future: close what is left, so that nothing holds the store afterwards.
        if !connections.close_all(CLOSE_BOUND).await {
            tracing::warn!(bound = ?CLOSE_BOUND, "connections did not close after the server stopped");
        }
        tracing::info!("server stopped");
        Ok(())
    }
}

/// The gRPC services and the HTTP routes on one router.
fn router(state: AppState, advertised: SocketAddr) -> axum::Router {
    let limits = state.config.limits;
    let max_message = limits.max_append_bytes.max(limits.max_event_bytes) + (1 << 20);
    let streams = StreamsServer::new(StreamsService {
        state: state.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    let features = ServerFeaturesServer::new(ServerFeaturesService {
        version: state.config.reported_version.clone(),
    });
    let gossip = GossipServer::new(GossipService {
        instance_id: state.instance_id,
        advertised,
    });
    let grpc = tonic::service::Routes::new(streams)
        .add_service(features)
        .add_service(gossip)
        .into_axum_router()
        .layer(axum::middleware::map_response(|r: Response| async move {
            grpc::decode_errors_are_invalid_arguments(r)
        }));
    grpc.merge(http::router(state))
        .fallback(http::routes::fallback)
}
