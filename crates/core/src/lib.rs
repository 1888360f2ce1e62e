//! Annals core: the data model, errors and the event-store traits every backend implements,
//! the write planner they share, generic subscriptions and the in-memory reference backend.
//!
//! ```
//! use annals_core::{EventAppender, EventReader, ExpectedRevision, NewEvent, EventType,
//!     ReadStreamOptions, StreamName, memory::MemoryStore};
//!
//! # tokio_test_block(async {
//! let store = MemoryStore::new();
//! let stream = StreamName::new("order-42")?;
//! let placed = NewEvent::json(EventType::new("OrderPlaced")?, r#"{"total": 12}"#);
//! let result = store.append(&stream, ExpectedRevision::NoStream, vec![placed]).await?;
//! assert_eq!(result.current_revision.revision(), Some(0));
//! let events = store.read_stream(&stream, ReadStreamOptions::forward()).await?;
//! assert_eq!(events[0].event.event_type.as_str(), "OrderPlaced");
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

pub mod clock;
pub mod error;
pub mod event;
mod json_check;
pub mod memory;
pub mod metadata;
pub mod name;
pub mod position;
pub mod read;
pub mod readpath;
pub mod store;
pub mod subscription;
pub mod visibility;
pub mod write;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AppendError, Error, InvalidInput, ReadError, StorageError};
pub use event::{ContentType, Link, NewEvent, RecordedEvent, ResolvedEvent, Timestamp};
pub use metadata::StreamMetadata;
pub use name::{EventType, NameError, StreamKind, StreamName};
pub use position::{AppendResult, CurrentRevision, ExpectedRevision, Position};
pub use read::{
    AllFrom, AllSlice, Direction, Filter, ReadAllOptions, ReadStreamOptions, StreamFrom,
};
pub use store::{EventAppender, EventReader, EventStore};
pub use subscription::{SubscribeFrom, Subscription, SubscriptionMessage, SubscriptionSource};
pub use write::{Limits, StreamWrite, WriteRequest};
