//! Positions in the global log, revisions in a stream, and the optimistic-concurrency check.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An event's place in the global log: strictly increasing in commit order.
/// In the embedded engine positions are also gap-free (0, 1, 2, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The first position of the log.
    pub const START: Position = Position(0);

    /// The raw value.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a writer believes about the stream before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must not exist (or must be soft-deleted).
    NoStream,
    /// The stream must exist (have at least one event and not be deleted).
    StreamExists,
    /// The stream's last revision must be exactly this.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no-stream"),
            ExpectedRevision::StreamExists => f.write_str("exists"),
            ExpectedRevision::Exact(n) => n.fmt(f),
        }
    }
}

impl std::str::FromStr for ExpectedRevision {
    type Err = String;
    /// Parses `any`, `no-stream`, `exists` or a revision number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Self::Any),
            "no-stream" => Ok(Self::NoStream),
            "exists" | "stream-exists" => Ok(Self::StreamExists),
            n => n.parse().map(Self::Exact).map_err(|_| {
                format!("expected revision '{s}' is not one of any, no-stream, exists or a number")
            }),
        }
    }
}

/// The state of a stream as seen by a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CurrentRevision {
    /// The stream has no events, or was soft-deleted.
    NoStream,
    /// The revision of the stream's last event.
    Current(u64),
}

impl CurrentRevision {
    /// The last revision, if any.
    pub fn revision(self) -> Option<u64> {
        match self {
            CurrentRevision::NoStream => None,
            CurrentRevision::Current(r) => Some(r),
        }
    }
}

impl fmt::Display for CurrentRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentRevision::NoStream => f.write_str("no-stream"),
            CurrentRevision::Current(n) => n.fmt(f),
        }
    }
}

impl ExpectedRevision {
    /// True when a stream in state `current` satisfies this expectation.
    pub fn is_satisfied_by(self, current: CurrentRevision) -> bool {
        match (self, current) {
            (ExpectedRevision::Any, _) => true,
            (ExpectedRevision::NoStream, CurrentRevision::NoStream) => true,
            (ExpectedRevision::StreamExists, CurrentRevision::Current(_)) => true,
            (ExpectedRevision::Exact(e), CurrentRevision::Current(c)) => e == c,
            _ => false,
        }
    }
}

/// The outcome of a successful append to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream's last revision after the append; use it as `Exact` for the next append.
    pub current_revision: CurrentRevision,
    /// Position of the first and last event written (or originally written, for an
    /// idempotent re-send); `None` when the append carried no events.
    pub positions: Option<(Position, Position)>,
}

impl AppendResult {
    /// The expected revision the next append should send.
    pub fn next_expected(&self) -> ExpectedRevision {
        match self.current_revision {
            CurrentRevision::NoStream => ExpectedRevision::NoStream,
            CurrentRevision::Current(r) => ExpectedRevision::Exact(r),
        }
    }

    /// The position of the last event written, if any.
    pub fn last_position(&self) -> Option<Position> {
        self.positions.map(|(_, last)| last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CurrentRevision::*;
    use ExpectedRevision::*;

    #[test]
    fn expectations_match_the_spec_table() {
        let cases = [
            (Any, CurrentRevision::NoStream, true),
            (Any, Current(3), true),
            (ExpectedRevision::NoStream, CurrentRevision::NoStream, true),
            (ExpectedRevision::NoStream, Current(0), false),
            (StreamExists, CurrentRevision::NoStream, false),
            (StreamExists, Current(0), true),
            (Exact(0), CurrentRevision::NoStream, false),
            (Exact(3), Current(3), true),
            (Exact(2), Current(3), false),
        ];
        for (expected, current, ok) in cases {
            assert_eq!(
                expected.is_satisfied_by(current),
                ok,
                "{expected:?} vs {current:?}"
            );
        }
    }

    #[test]
    fn expected_revision_parses_from_cli_words() {
        assert_eq!("any".parse(), Ok(Any));
        assert_eq!("no-stream".parse(), Ok(ExpectedRevision::NoStream));
        assert_eq!("exists".parse(), Ok(StreamExists));
        assert_eq!("17".parse(), Ok(Exact(17)));
        assert!("-1".parse::<ExpectedRevision>().is_err());
    }
}
