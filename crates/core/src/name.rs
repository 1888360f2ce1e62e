//! Validated names: streams, categories and event types.
//!
//! A name is checked once, when it is built; everything downstream can rely on it being
//! well-formed. Cloning is cheap (`Arc<str>`), because names travel with every event.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest stream name accepted, in bytes of UTF-8.
pub const MAX_STREAM_NAME_BYTES: usize = 512;
/// Longest event type accepted, in bytes of UTF-8.
pub const MAX_EVENT_TYPE_BYTES: usize = 256;

/// Prefix of the metadata stream of a stream (`$$order-1` holds the metadata of `order-1`).
pub const METADATA_STREAM_PREFIX: &str = "$$";
/// Prefix of the virtual per-category stream (`$ce-order`).
pub const CATEGORY_STREAM_PREFIX: &str = "$ce-";
/// Prefix of the virtual per-event-type stream (`$et-OrderPlaced`).
pub const EVENT_TYPE_STREAM_PREFIX: &str = "$et-";
/// Name of the global log when used where a stream name is expected (CLI, HTTP paths).
pub const ALL_STREAM: &str = "$all";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which kind of name ("stream name", "event type").
        what: &'static str,
    },
    /// The name is longer than the limit.
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name contains a control character (including NUL).
    #[error("{what} contains the control character U+{code:04X} at byte {at}")]
    ControlCharacter {
        /// Which kind of name.
        what: &'static str,
        /// The offending code point.
        code: u32,
        /// Its byte offset in the name.
        at: usize,
    },
}

fn check(what: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            len: name.len(),
            max,
        });
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(NameError::ControlCharacter {
            what,
            code: c as u32,
            at,
        });
    }
    Ok(())
}

/// The name of a stream, e.g. `order-42`.
///
/// Names starting with `$` belong to the system: `$$<stream>` holds a stream's metadata,
/// `$ce-<category>` and `$et-<type>` are virtual streams served from secondary indexes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(Arc<str>);

/// What kind of stream a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind<'a> {
    /// A stream written by users.
    Regular,
    /// `$$<target>`: the metadata stream of `target`.
    Metadata {
        /// The stream whose metadata this is.
        target: &'a str,
    },
    /// `$ce-<category>`: every event of streams in the category, in commit order.
    Category {
        /// The category.
        category: &'a str,
    },
    /// `$et-<type>`: every event of the type, in commit order.
    EventType {
        /// The event type.
        event_type: &'a str,
    },
    /// Any other name starting with `$`.
    System,
}

impl StreamName {
    /// Validates and builds a stream name.
    pub fn new(name: impl AsRef<str>) -> Result<Self, NameError> {
        let name = name.as_ref();
        check("stream name", name, MAX_STREAM_NAME_BYTES)?;
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for names reserved to the system (starting with `$`).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// Classifies the name.
    pub fn kind(&self) -> StreamKind<'_> {
        let name = self.as_str();
        if let Some(target) = name
            .strip_prefix(METADATA_STREAM_PREFIX)
            .filter(|s| !s.is_empty())
        {
            return StreamKind::Metadata { target };
        }
        if let Some(category) = name
            .strip_prefix(CATEGORY_STREAM_PREFIX)
            .filter(|s| !s.is_empty())
        {
            return StreamKind::Category { category };
        }
        if let Some(event_type) = name
            .strip_prefix(EVENT_TYPE_STREAM_PREFIX)
            .filter(|s| !s.is_empty())
        {
            return StreamKind::EventType { event_type };
        }
        if self.is_system() {
            StreamKind::System
        } else {
            StreamKind::Regular
        }
    }

    /// The category: the part before the first `-`, for regular streams that have one.
    pub fn category(&self) -> Option<&str> {
        if self.is_system() {
            return None;
        }
        match self.0.split_once('-') {
            Some((category, _)) if !category.is_empty() => Some(category),
            _ => None,
        }
    }

    /// The metadata stream of this stream (`$$<name>`).
    pub fn metadata_stream(&self) -> StreamName {
        Self(Arc::from(format!("{METADATA_STREAM_PREFIX}{}", self.0)))
    }

    /// The stream whose metadata this stream holds, if this is a `$$` stream.
    pub fn metadata_target(&self) -> Option<StreamName> {
        match self.kind() {
            StreamKind::Metadata { target } => Some(Self(Arc::from(target))),
            _ => None,
        }
    }

    /// The virtual category stream `$ce-<category>`.
    pub fn for_category(category: &str) -> Result<StreamName, NameError> {
        Self::new(format!("{CATEGORY_STREAM_PREFIX}{category}"))
    }

    /// The virtual event-type stream `$et-<type>`.
    pub fn for_event_type(event_type: &EventType) -> Result<StreamName, NameError> {
        Self::new(format!("{EVENT_TYPE_STREAM_PREFIX}{}", event_type.as_str()))
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StreamName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The type of an event, e.g. `OrderPlaced`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Validates and builds an event type.
    pub fn new(name: impl AsRef<str>) -> Result<Self, NameError> {
        let name = name.as_ref();
        check("event type", name, MAX_EVENT_TYPE_BYTES)?;
        Ok(Self(Arc::from(name)))
    }

    /// The type as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for types reserved to the system (starting with `$`).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for EventType {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$ty>::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(StreamName);
string_serde!(EventType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_the_part_before_the_first_dash() {
        let name = |s: &str| StreamName::new(s).unwrap();
        assert_eq!(name("order-42").category(), Some("order"));
        assert_eq!(name("order-42-b").category(), Some("order"));
        assert_eq!(name("order").category(), None);
        assert_eq!(name("-x").category(), None);
        assert_eq!(name("$$order-1").category(), None);
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert_eq!(
            StreamName::new(""),
            Err(NameError::Empty {
                what: "stream name"
            })
        );
        assert!(matches!(
            StreamName::new("a\u{0}b"),
            Err(NameError::ControlCharacter { code: 0, at: 1, .. })
        ));
        assert!(matches!(
            StreamName::new("x".repeat(MAX_STREAM_NAME_BYTES + 1)),
            Err(NameError::TooLong { .. })
        ));
        assert!(matches!(
            EventType::new("\n"),
            Err(NameError::ControlCharacter { .. })
        ));
    }

    #[test]
    fn kinds_are_recognised() {
        let name = |s: &str| StreamName::new(s).unwrap();
        assert_eq!(name("order-1").kind(), StreamKind::Regular);
        assert_eq!(
            name("$$order-1").kind(),
            StreamKind::Metadata { target: "order-1" }
        );
        assert_eq!(
            name("$ce-order").kind(),
            StreamKind::Category { category: "order" }
        );
        assert_eq!(
            name("$et-Placed").kind(),
            StreamKind::EventType {
                event_type: "Placed"
            }
        );
        assert_eq!(name("$users").kind(), StreamKind::System);
        assert_eq!(
            name("order-1").metadata_stream().metadata_target(),
            Some(name("order-1"))
        );
    }
}
