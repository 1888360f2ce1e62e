//! The embedded storage engine, Annals' default backend.
//!
//! - [`device`]: the byte-level I/O trait every file access goes through.
//! - [`record`]: the on-disk record and segment formats.
//! - [`log`]: the segmented append-only log.
//! - [`index`]: stream, category, event-type and sparse `$all` indexes (an LSM of sorted runs).
//! - [`writer`]: pipelined group commit (leader/follower committer threads).
//! - `answer`: sends a synced group's answers from a task of the appenders' runtime.
//! - [`zero_fill`]: the thread that keeps zero-filled space ahead of the log.
//! - [`engine`]: opening (recovery), reads, and the core traits.
//! - [`verify`]: the offline checker behind `annals verify`.

mod answer;
pub mod device;
pub mod engine;
pub mod index;
pub mod log;
pub mod record;
mod recovery;
pub mod verify;
mod writer;
pub mod zero_fill;

pub use engine::{Config, Engine, OpenError, RequestTime, Stats, runtime_workers};
