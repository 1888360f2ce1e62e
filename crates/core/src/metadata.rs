//! Stream metadata (max-count, max-age, truncate-before, ACL, custom JSON) and the
//! visibility rule every read applies.
//!
//! Metadata is stored the way KurrentDB stores it: as `$metadata` events in the stream's
//! metadata stream `$$<stream>`, whose JSON uses the keys `$maxCount`, `$maxAge` (seconds),
//! `$tb`, `$cacheControl` (seconds) and `$acl`; any other key is custom and kept as is.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::event::Timestamp;

/// Event type of the events in `$$<stream>` metadata streams.
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// Event type of the tombstone written by a hard delete.
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";
/// `$tb` value that marks a soft-deleted stream (KurrentDB's `EventNumber.DeletedStream`).
pub const SOFT_DELETED_TRUNCATE_BEFORE: u64 = i64::MAX as u64;

/// Access-control lists of a stream: role or user names per operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// `$r`: who may read.
    pub read: Option<Vec<String>>,
    /// `$w`: who may write.
    pub write: Option<Vec<String>>,
    /// `$d`: who may delete.
    pub delete: Option<Vec<String>>,
    /// `$mr`: who may read metadata.
    pub meta_read: Option<Vec<String>>,
    /// `$mw`: who may write metadata.
    pub meta_write: Option<Vec<String>>,
}

/// A stream's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Only the last `max_count` events are visible.
    pub max_count: Option<u64>,
    /// Events older than this are invisible.
    pub max_age: Option<Duration>,
    /// Events with a lower revision are invisible. [`SOFT_DELETED_TRUNCATE_BEFORE`] marks a
    /// soft-deleted stream.
    pub truncate_before: Option<u64>,
    /// HTTP cache hint.
    pub cache_control: Option<Duration>,
    /// Access control.
    pub acl: Option<Acl>,
    /// Every other key, kept verbatim.
    pub custom: Map<String, Value>,
}

/// Why a metadata document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Not a JSON object.
    #[error("stream metadata must be a JSON object: {0}")]
    NotAnObject(String),
    /// A reserved key has a value of the wrong type.
    #[error("stream metadata field '{field}' {problem}")]
    BadField {
        /// The key, e.g. `$maxCount`.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl StreamMetadata {
    /// True when the stream was soft-deleted and not written since.
    pub fn is_soft_deleted(&self) -> bool {
        self.truncate_before == Some(SOFT_DELETED_TRUNCATE_BEFORE)
    }

    /// True when these settings hide nothing.
    pub fn is_unrestricted(&self) -> bool {
        self.max_count.is_none() && self.max_age.is_none() && self.truncate_before.is_none()
    }

    /// Whether an event is visible to reads.
    ///
    /// `last_revision` is the stream's current last revision (for `max_count`), `now` the
    /// reader's clock (for `max_age`).
    pub fn is_visible(
        &self,
        revision: u64,
        created: Timestamp,
        last_revision: u64,
        now: Timestamp,
    ) -> bool {
        if self.truncate_before.is_some_and(|tb| revision < tb) {
            return false;
        }
        if let Some(count) = self.max_count {
            // Visible: the last `count` revisions, i.e. revision > last - count.
            if revision.saturating_add(count) <= last_revision {
                return false;
            }
        }
        if self
            .max_age
            .is_some_and(|age| created.saturating_add(age) < now)
        {
            return false;
        }
        true
    }

    /// The first revision that can be visible, ignoring age: where a forward read may start.
    pub fn first_visible_revision(&self, last_revision: Option<u64>) -> u64 {
        let tb = self.truncate_before.unwrap_or(0);
        let by_count = match (self.max_count, last_revision) {
            (Some(count), Some(last)) => (last + 1).saturating_sub(count),
            _ => 0,
        };
        tb.max(by_count)
    }

    /// Encodes as KurrentDB-style JSON.
    pub fn to_json(&self) -> Value {
        let mut map = self.custom.clone();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), v);
            }
        };
        put("$maxCount", self.max_count.map(Value::from));
        put("$maxAge", self.max_age.map(|d| Value::from(d.as_secs())));
        put("$tb", self.truncate_before.map(Value::from));
        put(
            "$cacheControl",
            self.cache_control.map(|d| Value::from(d.as_secs())),
        );
        put("$acl", self.acl.as_ref().map(acl_to_json));
        Value::Object(map)
    }

    /// Encodes as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_json().to_string().into_bytes()
    }

    /// Decodes KurrentDB-style JSON.
    pub fn from_json(value: Value) -> Result<Self, MetadataError> {
        let Value::Object(mut map) = value else {
            return Err(MetadataError::NotAnObject(format!("got {value}")));
        };
        let max_count = take_u64(&mut map, "$maxCount")?;
        if max_count == Some(0) {
            return Err(MetadataError::BadField {
                field: "$maxCount",
                problem: "must be at least 1",
            });
        }
        Ok(Self {
            max_count,
            max_age: take_u64(&mut map, "$maxAge")?.map(Duration::from_secs),
            truncate_before: take_u64(&mut map, "$tb")?,
            cache_control: take_u64(&mut map, "$cacheControl")?.map(Duration::from_secs),
            acl: map.remove("$acl").map(acl_from_json).transpose()?,
            custom: map,
        })
    }

    /// Decodes JSON bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetadataError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| MetadataError::NotAnObject(e.to_string()))?;
        Self::from_json(value)
    }
}

fn take_u64(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, MetadataError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(MetadataError::BadField {
            field,
            problem: "must be a non-negative integer",
        }),
    }
}

const ACL_KEYS: [&str; 5] = ["$r", "$w", "$d", "$mr", "$mw"];

fn acl_to_json(acl: &Acl) -> Value {
    let fields = [
        &acl.read,
        &acl.write,
        &acl.delete,
        &acl.meta_read,
        &acl.meta_write,
    ];
    let map = ACL_KEYS
        .iter()
        .zip(fields)
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|roles| ((*k).to_owned(), Value::from(roles.clone())))
        })
        .collect();
    Value::Object(map)
}

fn acl_from_json(value: Value) -> Result<Acl, MetadataError> {
    const BAD: MetadataError = MetadataError::BadField {
        field: "$acl",
        problem: "must be an object whose $r/$w/$d/$mr/$mw are strings or arrays of strings",
    };
    let Value::Object(map) = value else {
        return Err(BAD);
    };
    let roles = |key: &str| -> Result<Option<Vec<String>>, MetadataError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or(BAD))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(BAD),
        }
    };
    Ok(Acl {
        read: roles("$r")?,
        write: roles("$w")?,
        delete: roles("$d")?,
        meta_read: roles("$mr")?,
        meta_write: roles("$mw")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_and_keeps_custom_keys() {
        let value = json!({
            "$maxCount": 10, "$maxAge": 60, "$tb": 3, "$cacheControl": 5,
            "$acl": {"$r": "$all", "$w": ["ops", "admins"]},
            "owner": "billing"
        });
        let meta = StreamMetadata::from_json(value.clone()).unwrap();
        assert_eq!(meta.max_count, Some(10));
        assert_eq!(meta.max_age, Some(Duration::from_secs(60)));
        assert_eq!(meta.custom.get("owner"), Some(&json!("billing")));
        let acl = meta.acl.clone().unwrap();
        assert_eq!(acl.read, Some(vec!["$all".to_owned()]));
        let again = StreamMetadata::from_json(meta.to_json()).unwrap();
        assert_eq!(again, meta);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = StreamMetadata::from_json(json!({"$maxCount": "ten"})).unwrap_err();
        assert!(matches!(
            err,
            MetadataError::BadField {
                field: "$maxCount",
                ..
            }
        ));
        assert!(matches!(
            StreamMetadata::from_json(json!([1])),
            Err(MetadataError::NotAnObject(_))
        ));
        assert!(matches!(
            StreamMetadata::from_json(json!({"$acl": {"$r": 5}})),
            Err(MetadataError::BadField { field: "$acl", .. })
        ));
    }

    #[test]
    fn visibility_honours_each_limit() {
        let now = Timestamp(10_000_000);
        let meta = StreamMetadata {
            max_count: Some(2),
            ..Default::default()
        };
        assert!(!meta.is_visible(7, now, 9, now));
        assert!(meta.is_visible(8, now, 9, now));
        let meta = StreamMetadata {
            truncate_before: Some(5),
            ..Default::default()
        };
        assert!(!meta.is_visible(4, now, 9, now));
        assert!(meta.is_visible(5, now, 9, now));
        let meta = StreamMetadata {
            max_age: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(!meta.is_visible(0, Timestamp(8_000_000), 0, now));
        assert!(meta.is_visible(0, Timestamp(9_500_000), 0, now));
        assert_eq!(
            StreamMetadata {
                max_count: Some(3),
                truncate_before: Some(2),
                ..Default::default()
            }
            .first_visible_revision(Some(9)),
            7
        );
    }
}
