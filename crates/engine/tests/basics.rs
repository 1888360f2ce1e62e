//! Engine-specific behaviour: reopen, group commit, torn tails, corruption, poisoning.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;

use annals_core::{
    EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, Position, ReadAllOptions,
    ReadStreamOptions, StorageError, StreamName,
};
use annals_engine::{Config, Engine, OpenError};

fn event(n: u32) -> NewEvent {
    NewEvent::json(EventType::new("Tested").unwrap(), format!("{{\"n\":{n}}}"))
}

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

fn small_config() -> Config {
    Config {
        segment_bytes: 64 << 10,
        memtable_entries: 1000,
        ..Config::default()
    }
}

async fn fill(engine: &Engine, streams: usize, per_stream: u32) {
    for s in 0..streams {
        for n in 0..per_stream {
            let name = stream(&format!("order-{s}"));
            engine
                .append(&name, ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap();
        }
    }
}

/// Where the records of a segment file end: after its last non-zero byte (the writer
/// zero-fills space ahead of the log).
fn log_end(segment: &[u8]) -> usize {
    segment.iter().rposition(|&b| b != 0).unwrap() + 1
}

async fn count_all(engine: &Engine) -> usize {
    engine
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap()
        .events
        .len()
}

#[tokio::test]
async fn data_survives_reopen_across_segments_and_index_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small_config()).unwrap();
    fill(&engine, 10, 120).await;
    engine.close();
    let engine = Engine::open(dir.path(), small_config()).unwrap();
    assert_eq!(count_all(&engine).await, 1200);
    let events = engine
        .read_stream(&stream("order-7"), ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(events.len(), 120);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.event.revision == i as u64)
    );
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    assert!(segments > 1, "expected several segments, got {segments}");
    let runs = std::fs::read_dir(dir.path().join("index")).unwrap().count();
    assert!(runs > 1, "expected index runs, got {runs} files");
    let category = engine
        .read_stream(&stream("$ce-order"), ReadStreamOptions::backward().limit(5))
        .await
        .unwrap();
    assert_eq!(category.len(), 5);
    assert_eq!(category[0].event.position, Position(1199));
    let report = annals_engine::verify::verify(dir.path(), |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    // The last segment's zero-filled space after its last record is not a torn tail.
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    assert_eq!(report.records, 1200);
    assert!(report.index_entries > 0);
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs_and_get_gap_free_positions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), Config::default()).unwrap());
    let mut tasks = Vec::new();
    for w in 0..32 {
        let engine = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            let name = stream(&format!("writer-{w}"));
            let mut expected = ExpectedRevision::NoStream;
            for n in 0..20 {
                let result = engine
                    .append(&name, expected, vec![event(n)])
                    .await
                    .unwrap();
                expected = result.next_expected();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = engine
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap()
        .events;
    assert_eq!(all.len(), 640);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.event.position == Position(i as u64))
    );
}

#[tokio::test]
async fn stats_count_the_bytes_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    assert_eq!(engine.stats().log_bytes, 0);
    fill(&engine, 3, 7).await;
    let stats = engine.stats();
    assert_eq!(stats.records, 21);
    // The records end with their JSON data (no metadata), so the last non-zero byte of the
    // segment is the log's end.
    let segment = std::fs::read(dir.path().join("log").join("0000000000.seg")).unwrap();
    assert_eq!(
        stats.log_bytes,
        log_end(&segment) as u64 - annals_engine::record::SEGMENT_HEADER_LEN
    );
}

/// A re-send queued beside its original is planned in the same group or while the original's
/// group syncs, unpublished: the writer must find the original among the records it planned.
#[tokio::test]
async fn resends_beside_their_original_get_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    for s in 0..40 {
        let name = stream(&format!("resent-{s}"));
        let created = vec![event(1), event(2)];
        let append = || engine.append(&name, ExpectedRevision::NoStream, created.clone());
        let (a, b, c) = tokio::join!(append(), append(), append());
        let a = a.unwrap();
        assert_eq!(b.unwrap(), a, "stream {s}");
        assert_eq!(c.unwrap(), a, "stream {s}");
        let more = vec![event(3), event(4)];
        let append = || engine.append(&name, a.next_expected(), more.clone());
        let (d, e) = tokio::join!(append(), append());
        assert_eq!(d.unwrap(), e.unwrap(), "stream {s}");
        let read = engine
            .read_stream(&name, ReadStreamOptions::forward())
            .await
            .unwrap();
        assert_eq!(read.len(), 4, "stream {s}");
    }
    assert_eq!(count_all(&engine).await, 160);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_earlier_data_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    fill(&engine, 1, 10).await;
    engine.close();
    let segment = dir.path().join("log").join("0000000000.seg");
    // Tear the last record: its last 20 bytes never reached the disk. The log ends at the
    // last non-zero byte (the writer zero-fills space ahead of it).
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = log_end(&bytes);
    assert!(end < bytes.len(), "the segment has no zero-filled space");
    bytes[end - 20..end].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    assert_eq!(count_all(&engine).await, 9);
    // Writing continues at the cut.
    fill(&engine, 1, 1).await;
    let all = engine
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap()
        .events;
    assert_eq!(all.last().unwrap().event.position, Position(9));
}

#[tokio::test]
async fn corruption_before_the_tail_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    fill(&engine, 1, 10).await;
    engine.close();
    let segment = dir.path().join("log").join("0000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[64 + 80] ^= 0x10; // inside the first record (it spans 64..156)
    std::fs::write(&segment, &bytes).unwrap();
    let error = Engine::open(dir.path(), Config::default()).unwrap_err();
    match error {
        OpenError::Storage(StorageError::Corruption { file, offset, .. }) => {
            assert_eq!(file, segment);
            assert_eq!(offset, 64);
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[tokio::test]
async fn idempotent_append_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let events = vec![event(1), event(2)];
    let name = stream("cart-1");
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    let first = engine
        .append(&name, ExpectedRevision::NoStream, events.clone())
        .await
        .unwrap();
    engine.close();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    let again = engine
        .append(&name, ExpectedRevision::NoStream, events)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(count_all(&engine).await, 2);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = Engine::open(dir.path(), Config::default()).unwrap();
    assert!(matches!(
        Engine::open(dir.path(), Config::default()),
        Err(OpenError::Locked { .. })
    ));
}

/// A file system whose log devices start failing `sync_data` once armed.
#[derive(Debug, Default)]
struct FailingSync {
    armed: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug)]
struct FailingDevice {
    inner: Arc<dyn annals_engine::device::Device>,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl annals_engine::device::Device for FailingDevice {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
}

impl annals_engine::device::Vfs for FailingSync {
    fn open(
        &self,
        path: &std::path::Path,
        create: bool,
    ) -> std::io::Result<Arc<dyn annals_engine::device::Device>> {
        let inner = annals_engine::device::StdVfs.open(path, create)?;
        Ok(Arc::new(FailingDevice {
            inner,
            armed: Arc::clone(&self.armed),
        }))
    }
    fn exists(&self, path: &std::path::Path) -> bool {
        annals_engine::device::StdVfs.exists(path)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        annals_engine::device::StdVfs.list(dir)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        annals_engine::device::StdVfs.remove(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        annals_engine::device::StdVfs.rename(from, to)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        annals_engine::device::StdVfs.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        annals_engine::device::StdVfs.create_dir_all(dir)
    }
    fn lock(&self, path: &std::path::Path) -> std::io::Result<Box<dyn Send + Sync>> {
        annals_engine::device::StdVfs.lock(path)
    }
}

#[tokio::test]
async fn a_failed_sync_poisons_the_engine_and_nothing_unsynced_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = FailingSync::default();
    let armed = Arc::clone(&vfs.armed);
    let config = Config {
        vfs: Arc::new(vfs),
        ..Config::default()
    };
    let engine = Engine::open(dir.path(), config).unwrap();
    fill(&engine, 1, 3).await;
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let name = stream("order-0");
    let failed = engine
        .append(&name, ExpectedRevision::Any, vec![event(99)])
        .await;
    assert!(
        matches!(
            failed,
            Err(annals_core::AppendError::Storage(StorageError::Io { .. }))
        ),
        "{failed:?}"
    );
    // Even with the device healthy again, the engine refuses writes until reopened.
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let refused = engine
        .append(&name, ExpectedRevision::Any, vec![event(100)])
        .await;
    assert!(
        matches!(
            refused,
            Err(annals_core::AppendError::Storage(
                StorageError::Poisoned { .. }
            ))
        ),
        "{refused:?}"
    );
    // Reads keep working and do not show the unacknowledged event.
    assert_eq!(count_all(&engine).await, 3);
    engine.close();
    // After reopen the acknowledged events are there; the failed one may or may not be
    // (its bytes were written but never confirmed durable), and writing works again.
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    let events = engine
        .read_stream(&name, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert!(
        events.len() == 3 || events.len() == 4,
        "{} events",
        events.len()
    );
    assert!(
        events
            .iter()
            .take(3)
            .enumerate()
            .all(|(i, e)| e.event.revision == i as u64)
    );
    engine
        .append(&name, ExpectedRevision::Any, vec![event(101)])
        .await
        .unwrap();
}

#[tokio::test]
async fn reopening_keeps_the_zero_filled_space_ahead_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    fill(&engine, 2, 10).await;
    engine.close();
    let segment = dir.path().join("log").join("0000000000.seg");
    let len = std::fs::metadata(&segment).unwrap().len();
    let bytes = std::fs::read(&segment).unwrap();
    let log_end = log_end(&bytes) as u64;
    assert!(
        len >= log_end + (256 << 10),
        "{len} bytes, log ends at {log_end}"
    );
    // Zeros after the last record are the end of the log, not a torn tail to cut.
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);
    assert_eq!(count_all(&engine).await, 20);
    fill(&engine, 1, 1).await;
    assert_eq!(count_all(&engine).await, 21);
    engine.close();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    assert_eq!(count_all(&engine).await, 21);
}

#[tokio::test]
async fn large_groups_append_without_zero_filling_and_small_ones_zero_fill_again() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    let segment = dir.path().join("log").join("0000000000.seg");
    let name = stream("bulk-1");
    let payload = format!("{{\"pad\":\"{}\"}}", "p".repeat(400));
    // One appender: every append is its own group, each of ~250 KB (over 128 KiB).
    for _ in 0..5 {
        let batch = (0..500)
            .map(|_| NewEvent::json(EventType::new("Bulk").unwrap(), payload.clone()))
            .collect();
        engine
            .append(&name, ExpectedRevision::Any, batch)
            .await
            .unwrap();
        let len = std::fs::metadata(&segment).unwrap().len();
        let log_end = log_end(&std::fs::read(&segment).unwrap()) as u64;
        assert_eq!(len, log_end, "a large group left zeros ahead of the log");
    }
    // One small group among large ones does not zero-fill space they would write again...
    engine
        .append(&name, ExpectedRevision::Any, vec![event(0)])
        .await
        .unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    assert_eq!(len, log_end(&std::fs::read(&segment).unwrap()) as u64);
    // ...but once the groups are small again, zero-filled space comes back (written by the
    // zero-filler thread, so it may take a moment).
    fill(&engine, 1, 40).await;
    let log_end = log_end(&std::fs::read(&segment).unwrap()) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let len = loop {
        let len = std::fs::metadata(&segment).unwrap().len();
        if len >= log_end + (256 << 10) || std::time::Instant::now() > deadline {
            break len;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert!(
        len >= log_end + (256 << 10),
        "{len} bytes, log ends at {log_end}"
    );
    assert_eq!(count_all(&engine).await, 2541);
}
