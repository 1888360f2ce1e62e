//! Requests that are malformed are refused with a typed error and change nothing.

use annals_core::ExpectedRevision::{Any, NoStream};
use annals_core::{
    AppendError, EventAppender, InvalidInput, NewEvent, StreamMetadata, StreamWrite,
};

use crate::Backend;
use crate::support::*;

/// Users cannot write to `$`-streams; virtual streams are read-only; a metadata stream is
/// written only through `set_stream_metadata`.
pub async fn reserved_and_virtual_streams_are_not_writable<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    for name in ["$system", "$$order-1", "$all"] {
        let result = store
            .append(&stream(name), Any, events("Placed", 0, 1))
            .await;
        match result {
            Err(AppendError::Invalid(InvalidInput::ReservedStream { stream })) => {
                assert_eq!(stream.as_str(), name);
            }
            other => panic!("append to {name}: expected ReservedStream, got {other:?}"),
        }
    }
    for name in ["$ce-order", "$et-Placed"] {
        let result = store
            .append(&stream(name), Any, events("Placed", 0, 1))
            .await;
        match result {
            Err(AppendError::Invalid(InvalidInput::ReadOnlyStream { stream })) => {
                assert_eq!(stream.as_str(), name);
            }
            other => panic!("append to {name}: expected ReadOnlyStream, got {other:?}"),
        }
        let result = store.delete_stream(&stream(name), Any).await;
        assert!(
            matches!(
                result,
                Err(AppendError::Invalid(InvalidInput::ReadOnlyStream { .. }))
            ),
            "delete of {name}: {result:?}"
        );
        let result = store
            .set_stream_metadata(&stream(name), Any, StreamMetadata::default())
            .await;
        assert!(
            matches!(
                result,
                Err(AppendError::Invalid(InvalidInput::ReadOnlyStream { .. }))
            ),
            "metadata of {name}: {result:?}"
        );
    }
    let result = store.tombstone_stream(&stream("$system"), Any).await;
    assert!(
        matches!(
            result,
            Err(AppendError::Invalid(InvalidInput::ReservedStream { .. }))
        ),
        "{result:?}"
    );
    assert_eq!(head(&*store).0, 0, "nothing written");
    assert_eq!(read_all(&*store).await.len(), 0);
}

/// Malformed JSON, a repeated event id: refused, nothing written.
pub async fn malformed_events_are_refused<B: Backend>(backend: &B) {
    let (_, store) = open(backend).await;
    let good = event("Placed", 0);
    let bad = NewEvent::json(ty("Placed"), r#"{"total": }"#);
    let bad_id = bad.id;
    let result = store
        .append(&stream("order-1"), NoStream, vec![good.clone(), bad])
        .await;
    match result {
        Err(AppendError::Invalid(InvalidInput::InvalidJson { event_id, detail })) => {
            assert_eq!(event_id, bad_id);
            assert!(!detail.is_empty());
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    // JSON is UTF-8: a string holding other bytes is refused, and the detail says so.
    let latin1 = NewEvent::json(ty("Placed"), &b"{\"city\": \"Z\xfcrich\"}"[..]);
    let result = store
        .append(&stream("order-1"), NoStream, vec![latin1])
        .await;
    match result {
        Err(AppendError::Invalid(InvalidInput::InvalidJson { detail, .. })) => {
            assert!(detail.contains("UTF-8"), "{detail}");
        }
        other => panic!("expected InvalidJson for a non-UTF-8 string, got {other:?}"),
    }
    // The same bytes declared binary are fine, and so is empty JSON data.
    let binary = NewEvent::binary(ty("Blob"), r#"{"total": }"#);
    let empty = NewEvent::json(ty("Empty"), "");
    let repeated = vec![good.clone(), good.clone()];
    let result = store.append(&stream("order-1"), NoStream, repeated).await;
    match result {
        Err(AppendError::Invalid(InvalidInput::DuplicateEventId { id })) => {
            assert_eq!(id, good.id);
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    let result = store
        .append_multi(vec![
            StreamWrite {
                stream: stream("order-1"),
                expected: NoStream,
                events: vec![good.clone()],
            },
            StreamWrite {
                stream: stream("order-2"),
                expected: NoStream,
                events: vec![good.clone()],
            },
        ])
        .await;
    assert!(
        matches!(
            result,
            Err(AppendError::Invalid(InvalidInput::DuplicateEventId { .. }))
        ),
        "an id repeated across streams: {result:?}"
    );
    assert_eq!(head(&*store).0, 0, "nothing written");
    assert_not_found(&*store, "order-1").await;
    let result = append_ok(&*store, "order-1", NoStream, vec![good, binary, empty]).await;
    assert_eq!(result.current_revision.revision(), Some(2));
}
