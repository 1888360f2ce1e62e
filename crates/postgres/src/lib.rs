//! The Annals event store on PostgreSQL: the same [`EventStore`](annals_core::EventStore)
//! traits as the embedded engine, for teams that keep their events in the PostgreSQL they
//! already run, back up and replicate.
//!
//! - **Global order without a global lock.** An event's position is its transaction id
//!   shifted left by 20 bits, plus its index in the transaction. Appends to different streams
//!   run concurrently; readers of `$all` and of virtual streams only read the *visible
//!   prefix*, below the oldest appender still running ([`PgStore`] explains the scheme), so a
//!   transaction that commits late never has its events skipped.
//! - **Optimistic concurrency** from the database: a compare-and-set of the stream's version
//!   row and the unique `(stream, revision)` constraint, recognised by SQLSTATE `23505`; the
//!   shared planner then decides again on the fresh state.
//! - **Live subscriptions** wake on `LISTEN`/`NOTIFY`, with a periodic re-check so a lost
//!   notification only delays.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use annals_core::{EventAppender, EventType, ExpectedRevision, NewEvent, StreamName};
//! use annals_postgres::{PgConfig, PgStore};
//!
//! let store = PgStore::open(PgConfig::new("postgres://postgres@127.0.0.1:5432/test")).await?;
//! let stream = StreamName::new("order-42")?;
//! let placed = NewEvent::json(EventType::new("OrderPlaced")?, r#"{"total": 12}"#);
//! store.append(&stream, ExpectedRevision::NoStream, vec![placed]).await?;
//! # Ok(()) }
//! ```

mod append;
mod config;
mod error;
mod live;
mod migrations;
mod read;
mod rows;
mod store;

pub use config::{BeforeCommit, PgConfig};
pub use error::PgError;
pub use migrations::SCHEMA_VERSION;
pub use store::PgStore;
