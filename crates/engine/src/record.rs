//! The on-disk record and segment-header formats (see `docs/design/storage-format.md`).
//!
//! A record is `[len u32][crc32c u32][body]`, `len` counting the body, the CRC covering it.
//! The body starts with a fixed 64-byte header followed by the stream name, event type, data
//! and metadata.

use annals_core::{ContentType, EventType, Position, RecordedEvent, StreamName, Timestamp};
use bytes::Bytes;
use uuid::Uuid;

/// The version of the on-disk format written by this build.
pub const FORMAT_VERSION: u8 = 1;
/// Segment file magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"ANNALSEG";
/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Bytes before the body: length and CRC.
pub const FRAME_LEN: usize = 8;
/// Bytes of the fixed part of the body.
pub const BODY_HEADER_LEN: usize = 64;
/// The largest body this build accepts when decoding (guards against garbage lengths).
pub const MAX_BODY_LEN: usize = 64 << 20;

const KIND_EVENT: u8 = 1;
/// The record is the last of its transaction (one write request).
pub const FLAG_LAST_IN_TXN: u8 = 1;
/// The record is a tombstone.
pub const FLAG_TOMBSTONE: u8 = 2;
/// The data is JSON.
pub const FLAG_JSON: u8 = 4;

/// A decoded record: the event plus the framing facts recovery needs.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event.
    pub event: RecordedEvent,
    /// Flags (`FLAG_*`).
    pub flags: u8,
    /// Every position below this was on stable storage when the record was written: the
    /// first position of its group commit, or of the group still being synced then.
    /// Recovery's proof that damage before it is not a torn tail.
    pub synced_before: Position,
}

impl Record {
    /// True for the last record of a transaction.
    pub fn ends_txn(&self) -> bool {
        self.flags & FLAG_LAST_IN_TXN != 0
    }

    /// True for a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }
}

/// The fields of a record to encode.
#[derive(Debug)]
pub struct RecordRef<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Revision in the stream.
    pub revision: u64,
    /// Global position.
    pub position: Position,
    /// Every position below this is synced (see [`Record::synced_before`]).
    pub synced_before: Position,
    /// Commit time.
    pub created: Timestamp,
    /// Event id.
    pub id: Uuid,
    /// Flags.
    pub flags: u8,
    /// Payload.
    pub data: &'a [u8],
    /// Metadata.
    pub metadata: &'a [u8],
}

/// Appends an encoded record to `buf`; returns its length in bytes.
pub fn encode(record: &RecordRef<'_>, buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    let body_len = BODY_HEADER_LEN
        + record.stream.len()
        + record.event_type.len()
        + record.data.len()
        + record.metadata.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(KIND_EVENT);
    buf.push(record.flags);
    buf.extend_from_slice(&[0; 2]);
    buf.extend_from_slice(&(record.stream.len() as u16).to_le_bytes());
    buf.extend_from_slice(&(record.event_type.len() as u16).to_le_bytes());
    buf.extend_from_slice(&record.position.0.to_le_bytes());
    buf.extend_from_slice(&record.synced_before.0.to_le_bytes());
    buf.extend_from_slice(&record.revision.to_le_bytes());
    buf.extend_from_slice(&record.created.as_micros().to_le_bytes());
    buf.extend_from_slice(record.id.as_bytes());
    buf.extend_from_slice(&(record.data.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(record.metadata.len() as u32).to_le_bytes());
    buf.extend_from_slice(record.stream.as_bytes());
    buf.extend_from_slice(record.event_type.as_bytes());
    buf.extend_from_slice(record.data);
    buf.extend_from_slice(record.metadata);
    let crc = crc32c::crc32c(&buf[start + FRAME_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

/// Why bytes do not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the frame announces (a short read or a torn write).
    #[error("truncated record: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The length field is impossible.
    #[error("invalid record length {0}")]
    BadLength(u32),
    /// The checksum does not match.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// The checksum matches but a field is invalid.
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// Reads the frame at the start of `buf`: the total record length, if the length is sane.
pub fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    let Some(len) = buf.get(..4) else {
        return Err(DecodeError::Truncated {
            need: FRAME_LEN,
            have: buf.len(),
        });
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
    if (len as usize) < BODY_HEADER_LEN || len as usize > MAX_BODY_LEN {
        return Err(DecodeError::BadLength(len));
    }
    Ok(FRAME_LEN + len as usize)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Remembers decoded stream names and event types, so scans over many records of the same
/// streams share one allocation per name instead of one per record.
#[derive(Debug, Default)]
pub struct NameCache {
    streams: Names<StreamName>,
    types: Names<EventType>,
}

/// Names kept before a cache starts over (bounds its memory).
const NAME_CACHE_LIMIT: usize = 4096;

/// One kind of name: the last one decoded (consecutive records usually share it, and a
/// comparison is cheaper than hashing), then a map.
#[derive(Debug)]
struct Names<N> {
    last: Option<N>,
    map: std::collections::HashMap<Box<[u8]>, N>,
}

impl<N> Default for Names<N> {
    fn default() -> Self {
        Self {
            last: None,
            map: std::collections::HashMap::new(),
        }
    }
}

impl<N: Clone + AsRef<str>> Names<N> {
    fn get(
        &mut self,
        bytes: &[u8],
        make: impl FnOnce(&[u8]) -> Result<N, DecodeError>,
    ) -> Result<N, DecodeError> {
        if let Some(name) = &self.last
            && name.as_ref().as_bytes() == bytes
        {
            return Ok(name.clone());
        }
        let name = match self.map.get(bytes) {
            Some(name) => name.clone(),
            None => {
                let name = make(bytes)?;
                if self.map.len() >= NAME_CACHE_LIMIT {
                    self.map.clear();
                }
                self.map.insert(bytes.into(), name.clone());
                name
            }
        };
        self.last = Some(name.clone());
        Ok(name)
    }
}

impl NameCache {
    fn stream(&mut self, bytes: &[u8]) -> Result<StreamName, DecodeError> {
        self.streams.get(bytes, |b| {
            StreamName::new(text(b, "stream name")?)
                .map_err(|e| DecodeError::Invalid(e.to_string()))
        })
    }

    fn event_type(&mut self, bytes: &[u8]) -> Result<EventType, DecodeError> {
        self.types.get(bytes, |b| {
            EventType::new(text(b, "event type")?).map_err(|e| DecodeError::Invalid(e.to_string()))
        })
    }
}

fn text<'b>(b: &'b [u8], what: &str) -> Result<&'b str, DecodeError> {
    std::str::from_utf8(b).map_err(|_| DecodeError::Invalid(format!("{what} is not UTF-8")))
}

/// Decodes the record at the start of `buf` (a shared buffer, so payloads are zero-copy
/// slices). Returns the record and its total length.
pub fn decode(buf: &Bytes) -> Result<(Record, usize), DecodeError> {
    decode_with(buf, &mut NameCache::default())
}

/// [`decode`] with a name cache shared across calls.
pub fn decode_with(buf: &Bytes, names: &mut NameCache) -> Result<(Record, usize), DecodeError> {
    decode_at(buf, 0, names)
}

/// Decodes the record that starts at `start` in `buf`; returns it and its length. Payloads
/// are slices of `buf`; names come from `names`, so a scan allocates nothing per record for
/// them.
pub fn decode_at(
    buf: &Bytes,
    start: usize,
    names: &mut NameCache,
) -> Result<(Record, usize), DecodeError> {
    let frame = buf.get(start..).unwrap_or_default();
    let total = frame_len(frame)?;
    if frame.len() < total {
        return Err(DecodeError::Truncated {
            need: total,
            have: frame.len(),
        });
    }
    let body = &frame[FRAME_LEN..total];
    let stored = u32_at(frame, 4);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    if body[0] != KIND_EVENT {
        return Err(DecodeError::Invalid(format!(
            "unknown record kind {}",
            body[0]
        )));
    }
    let flags = body[1];
    let stream_len = usize::from(u16_at(body, 4));
    let type_len = usize::from(u16_at(body, 6));
    let data_len = u32_at(body, 56) as usize;
    let meta_len = u32_at(body, 60) as usize;
    if BODY_HEADER_LEN + stream_len + type_len + data_len + meta_len != body.len() {
        return Err(DecodeError::Invalid(
            "field lengths do not add up to the body".into(),
        ));
    }
    let names_at = BODY_HEADER_LEN;
    let stream = names.stream(&body[names_at..names_at + stream_len])?;
    let type_at = names_at + stream_len;
    let event_type = names.event_type(&body[type_at..type_at + type_len])?;
    let data_at = start + FRAME_LEN + type_at + type_len;
    let data = buf.slice(data_at..data_at + data_len);
    let metadata = buf.slice(data_at + data_len..data_at + data_len + meta_len);
    let mut id = [0; 16];
    id.copy_from_slice(&body[40..56]);
    let event = RecordedEvent {
        stream,
        revision: u64_at(body, 24),
        position: Position(u64_at(body, 8)),
        id: Uuid::from_bytes(id),
        event_type,
        content_type: if flags & FLAG_JSON != 0 {
            ContentType::Json
        } else {
            ContentType::Binary
        },
        data,
        metadata,
        created: Timestamp(u64_at(body, 32)),
    };
    let record = Record {
        event,
        flags,
        synced_before: Position(u64_at(body, 16)),
    };
    Ok((record, total))
}

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number (its file name).
    pub number: u64,
    /// Position of the first record the segment holds.
    pub base_position: Position,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0; SEGMENT_HEADER_LEN as usize];
        b[..8].copy_from_slice(SEGMENT_MAGIC);
        b[8] = FORMAT_VERSION;
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_position.0.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < SEGMENT_HEADER_LEN as usize {
            return Err("segment header is truncated".into());
        }
        if &b[..8] != SEGMENT_MAGIC {
            return Err("not an Annals segment (bad magic)".into());
        }
        let crc = crc32c::crc32c(&b[..60]);
        if crc != u32_at(b, 60) {
            return Err("segment header checksum mismatch".into());
        }
        if b[8] != FORMAT_VERSION {
            return Err(format!(
                "segment format version {} is not supported (this build reads {FORMAT_VERSION})",
                b[8]
            ));
        }
        Ok(Self {
            number: u64_at(b, 16),
            base_position: Position(u64_at(b, 24)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(flags: u8) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(
            &RecordRef {
                stream: "order-1",
                event_type: "Placed",
                revision: 3,
                position: Position(42),
                synced_before: Position(40),
                created: Timestamp(7),
                id: Uuid::from_u128(9),
                flags,
                data: b"{\"a\":1}",
                metadata: b"m",
            },
            &mut buf,
        );
        buf
    }

    #[test]
    fn records_round_trip() {
        let buf = Bytes::from(sample(FLAG_JSON | FLAG_LAST_IN_TXN));
        let (record, len) = decode(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(record.event.stream.as_str(), "order-1");
        assert_eq!(record.event.position, Position(42));
        assert_eq!(record.synced_before, Position(40));
        assert_eq!(record.event.revision, 3);
        assert_eq!(record.event.id, Uuid::from_u128(9));
        assert_eq!(&record.event.data[..], b"{\"a\":1}");
        assert_eq!(&record.event.metadata[..], b"m");
        assert_eq!(record.event.content_type, ContentType::Json);
        assert!(record.ends_txn());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let clean = sample(FLAG_JSON);
        for bit in 0..clean.len() * 8 {
            let mut buf = clean.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&Bytes::from(buf)).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let clean = sample(0);
        for len in 0..clean.len() {
            assert!(decode(&Bytes::copy_from_slice(&clean[..len])).is_err());
        }
    }

    #[test]
    fn records_decode_in_place_with_a_shared_name_cache() {
        // Consecutive records with repeated and alternating names, decoded where they lie in
        // one buffer: each must get its own names and payload slices.
        let names = [
            ("a-1", "X"),
            ("a-1", "X"),
            ("b-2", "Y"),
            ("a-1", "Y"),
            ("c-3", "X"),
        ];
        let mut buf = Vec::new();
        for (i, (stream, event_type)) in names.iter().enumerate() {
            let data = format!("{{\"i\":{i}}}");
            encode(
                &RecordRef {
                    stream,
                    event_type,
                    revision: i as u64,
                    position: Position(i as u64),
                    synced_before: Position(0),
                    created: Timestamp(1),
                    id: Uuid::from_u128(i as u128),
                    flags: FLAG_JSON,
                    data: data.as_bytes(),
                    metadata: stream.as_bytes(),
                },
                &mut buf,
            );
        }
        let buf = Bytes::from(buf);
        let mut cache = NameCache::default();
        let mut at = 0;
        for (i, (stream, event_type)) in names.iter().enumerate() {
            let (record, len) = decode_at(&buf, at, &mut cache).unwrap();
            at += len;
            assert_eq!(record.event.stream.as_str(), *stream);
            assert_eq!(record.event.event_type.as_str(), *event_type);
            assert_eq!(record.event.data, format!("{{\"i\":{i}}}").as_bytes());
            assert_eq!(record.event.metadata, stream.as_bytes());
        }
        assert_eq!(at, buf.len());
        assert!(
            decode_at(&buf, at, &mut cache).is_err(),
            "nothing past the end"
        );
    }

    #[test]
    fn segment_headers_round_trip_and_check() {
        let h = SegmentHeader {
            number: 5,
            base_position: Position(1000),
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[20] ^= 1;
        assert!(SegmentHeader::decode(&b).is_err());
    }
}
