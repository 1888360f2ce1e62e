//! Read requests and results: one stream, or the global log `$all` with filters.

use std::fmt;

use crate::event::ResolvedEvent;
use crate::position::Position;

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Ascending revisions / positions.
    #[default]
    Forward,
    /// Descending revisions / positions.
    Backward,
}

/// Where a stream read starts (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamFrom {
    /// The first revision.
    #[default]
    Start,
    /// The last revision (a forward read from here returns nothing new).
    End,
    /// This revision.
    Revision(u64),
}

/// A read of one stream (a regular stream, `$$<stream>`, `$ce-<category>` or `$et-<type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStreamOptions {
    /// Which way.
    pub direction: Direction,
    /// Where to start, inclusive.
    pub from: StreamFrom,
    /// At most this many events.
    pub limit: u64,
}

impl Default for ReadStreamOptions {
    fn default() -> Self {
        Self {
            direction: Direction::Forward,
            from: StreamFrom::Start,
            limit: u64::MAX,
        }
    }
}

impl ReadStreamOptions {
    /// Forward from the start, without limit.
    pub fn forward() -> Self {
        Self::default()
    }

    /// Backward from the end, without limit.
    pub fn backward() -> Self {
        Self {
            direction: Direction::Backward,
            from: StreamFrom::End,
            limit: u64::MAX,
        }
    }

    /// Starts at a revision (inclusive).
    pub fn from_revision(mut self, revision: u64) -> Self {
        self.from = StreamFrom::Revision(revision);
        self
    }

    /// Limits the number of events.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }
}

/// Where a read of `$all` starts (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllFrom {
    /// The first position.
    #[default]
    Start,
    /// The end of the log.
    End,
    /// This position.
    Position(Position),
}

/// What a filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterTarget {
    /// The event's stream name.
    StreamName,
    /// The event's type.
    EventType,
}

/// How a filter matches.
#[derive(Clone)]
pub enum Matcher {
    /// Any of these prefixes.
    Prefixes(Vec<String>),
    /// This regular expression (unanchored, like KurrentDB's).
    Regex(regex::Regex),
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Prefixes(p) => f.debug_tuple("Prefixes").field(p).finish(),
            Matcher::Regex(r) => f.debug_tuple("Regex").field(&r.as_str()).finish(),
        }
    }
}

/// A server-side filter for reads and subscriptions of `$all`.
#[derive(Debug, Clone)]
pub struct Filter {
    /// What is matched.
    pub target: FilterTarget,
    /// How.
    pub matcher: Matcher,
}

impl Filter {
    /// Events whose stream name starts with one of the prefixes.
    pub fn stream_prefixes<I: IntoIterator<Item = S>, S: Into<String>>(prefixes: I) -> Self {
        let prefixes = prefixes.into_iter().map(Into::into).collect();
        Self {
            target: FilterTarget::StreamName,
            matcher: Matcher::Prefixes(prefixes),
        }
    }

    /// Events whose type starts with one of the prefixes.
    pub fn event_type_prefixes<I: IntoIterator<Item = S>, S: Into<String>>(prefixes: I) -> Self {
        let prefixes = prefixes.into_iter().map(Into::into).collect();
        Self {
            target: FilterTarget::EventType,
            matcher: Matcher::Prefixes(prefixes),
        }
    }

    /// Events whose `target` matches a regular expression.
    pub fn regex(target: FilterTarget, pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            target,
            matcher: Matcher::Regex(regex::Regex::new(pattern)?),
        })
    }

    /// Everything except system events (types starting with `$`).
    pub fn exclude_system_events() -> Self {
        Self {
            target: FilterTarget::EventType,
            // A literal pattern that always compiles; `regex::Regex::new` cannot fail here.
            matcher: Matcher::Regex(
                regex::Regex::new(r"^[^\$]").unwrap_or_else(|_| unreachable!("valid regex")),
            ),
        }
    }

    /// True when an event with this stream name and type passes.
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        let subject = match self.target {
            FilterTarget::StreamName => stream,
            FilterTarget::EventType => event_type,
        };
        match &self.matcher {
            Matcher::Prefixes(prefixes) => prefixes.iter().any(|p| subject.starts_with(p.as_str())),
            Matcher::Regex(re) => re.is_match(subject),
        }
    }
}

/// A read of the global log.
#[derive(Debug, Clone)]
pub struct ReadAllOptions {
    /// Which way.
    pub direction: Direction,
    /// Where to start, inclusive.
    pub from: AllFrom,
    /// At most this many matching events.
    pub limit: u64,
    /// Only events that pass.
    pub filter: Option<Filter>,
    /// Stop after examining this many positions even if fewer than `limit` matched
    /// (subscriptions use it to emit checkpoints while a sparse filter scans).
    pub max_scan: Option<u64>,
}

impl Default for ReadAllOptions {
    fn default() -> Self {
        Self {
            direction: Direction::Forward,
            from: AllFrom::Start,
            limit: u64::MAX,
            filter: None,
            max_scan: None,
        }
    }
}

impl ReadAllOptions {
    /// Forward from the start, without limit or filter.
    pub fn forward() -> Self {
        Self::default()
    }

    /// Backward from the end, without limit or filter.
    pub fn backward() -> Self {
        Self {
            direction: Direction::Backward,
            from: AllFrom::End,
            ..Self::default()
        }
    }

    /// Starts at a position (inclusive).
    pub fn from_position(mut self, position: Position) -> Self {
        self.from = AllFrom::Position(position);
        self
    }

    /// Limits the number of events.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Sets a filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
}

/// The result of a read of `$all`.
#[derive(Debug, Clone)]
pub struct AllSlice {
    /// The matching, visible events, in the read's direction.
    pub events: Vec<ResolvedEvent>,
    /// Where a following read in the same direction continues: the first position not yet
    /// examined. Forward at the end of the log, this is the next position to be written.
    /// Backward, `None` once position 0 was examined.
    pub next: Option<Position>,
    /// True when the read examined everything to the end of the log in its direction.
    pub end_of_log: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_prefixes_and_regexes() {
        let f = Filter::stream_prefixes(["order-", "cart-"]);
        assert!(f.matches("order-1", "X"));
        assert!(!f.matches("customer-1", "X"));
        let f = Filter::event_type_prefixes(["Order"]);
        assert!(f.matches("a", "OrderPlaced"));
        let f = Filter::regex(FilterTarget::StreamName, "^(order|cart)-[0-9]+$").unwrap();
        assert!(f.matches("cart-12", "X"));
        assert!(!f.matches("cart-x", "X"));
        let f = Filter::exclude_system_events();
        assert!(f.matches("$$order-1", "Placed"));
        assert!(!f.matches("order-1", "$metadata"));
    }
}
