//! Which stored events reads return, decided once for every backend.
//!
//! - A tombstoned stream hides all its events; its tombstone record shows only in `$all`.
//! - Otherwise the stream's metadata (`$tb`, `$maxCount`, `$maxAge`, soft delete) decides, in
//!   stream reads, virtual streams and `$all` alike.
//! - Metadata streams (`$$<stream>`) are never restricted.

use crate::event::{RecordedEvent, Timestamp};
use crate::metadata::StreamMetadata;
use crate::read::{Direction, StreamFrom};

/// What restricts a stream's visibility: its metadata and whether it is tombstoned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restriction {
    /// The stream's latest metadata.
    pub metadata: Option<StreamMetadata>,
    /// The revision of the stream's last record (for `$maxCount`).
    pub last_revision: Option<u64>,
    /// The revision of the tombstone, if the stream was hard-deleted.
    pub tombstone_revision: Option<u64>,
}

/// Where an event is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadContext {
    /// Its own stream, or a virtual stream.
    Stream,
    /// The global log.
    All,
}

impl Restriction {
    /// True when nothing is hidden.
    pub fn is_unrestricted(&self) -> bool {
        self.tombstone_revision.is_none()
            && self
                .metadata
                .as_ref()
                .is_none_or(StreamMetadata::is_unrestricted)
    }

    /// Whether a read in `context` returns the event.
    pub fn shows(&self, event: &RecordedEvent, context: ReadContext, now: Timestamp) -> bool {
        if let Some(tombstone) = self.tombstone_revision {
            return context == ReadContext::All && event.revision == tombstone;
        }
        match (&self.metadata, self.last_revision) {
            (Some(meta), Some(last)) => meta.is_visible(event.revision, event.created, last, now),
            _ => true,
        }
    }

    /// The first revision a read of the stream itself can return (ignoring age).
    pub fn first_visible_revision(&self) -> u64 {
        self.metadata
            .as_ref()
            .map_or(0, |m| m.first_visible_revision(self.last_revision))
    }
}

/// The revisions (or virtual-stream sequence numbers) a stream read covers, in read order:
/// `(first, count_available)` walking in `direction`, for a sequence `0..=last` of which
/// `first_visible..` can be visible. `None` when the read returns nothing.
pub fn stream_range(
    from: StreamFrom,
    direction: Direction,
    last: u64,
    first_visible: u64,
) -> Option<(u64, u64)> {
    match direction {
        Direction::Forward => {
            let start = match from {
                StreamFrom::Start => 0,
                StreamFrom::End => last.saturating_add(1),
                StreamFrom::Revision(r) => r,
            }
            .max(first_visible);
            (start <= last).then(|| (start, last - start + 1))
        }
        Direction::Backward => {
            let start = match from {
                StreamFrom::Start => 0,
                StreamFrom::End => last,
                StreamFrom::Revision(r) => r.min(last),
            };
            (start >= first_visible).then(|| (start, start - first_visible + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_clip_to_what_exists() {
        use Direction::*;
        assert_eq!(
            stream_range(StreamFrom::Start, Forward, 9, 0),
            Some((0, 10))
        );
        assert_eq!(
            stream_range(StreamFrom::Revision(4), Forward, 9, 6),
            Some((6, 4))
        );
        assert_eq!(stream_range(StreamFrom::Revision(10), Forward, 9, 0), None);
        assert_eq!(stream_range(StreamFrom::End, Forward, 9, 0), None);
        assert_eq!(stream_range(StreamFrom::End, Backward, 9, 0), Some((9, 10)));
        assert_eq!(
            stream_range(StreamFrom::Revision(50), Backward, 9, 2),
            Some((9, 8))
        );
        assert_eq!(stream_range(StreamFrom::Revision(1), Backward, 9, 2), None);
        assert_eq!(
            stream_range(StreamFrom::Start, Backward, 9, 0),
            Some((0, 1))
        );
    }
}
