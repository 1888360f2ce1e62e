//! T4 on a real file system: a small tmpfs filled until ENOSPC. The engine must stop
//! accepting writes, keep serving reads, and reopen with every acknowledged append once
//! space is freed. Needs permission to mount tmpfs (root); required when `CI=true`.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::{Path, PathBuf};
use std::process::Command;

use annals_core::{
    AppendError, EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, ReadAllOptions,
    StorageError, StreamName,
};
use annals_engine::{Config, Engine};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(dir.to_owned()))
}

#[tokio::test]
async fn t4_a_full_disk_stops_writes_and_the_store_reopens_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(dir.path(), "3m") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but tmpfs cannot be mounted here"
        );
        eprintln!("skipped: cannot mount tmpfs (needs root)");
        return;
    };
    // Ballast to free later.
    let ballast = dir.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 << 10]).unwrap();
    let store = dir.path().join("store");
    let config = || Config {
        segment_bytes: 512 << 10,
        memtable_entries: 2000,
        ..Config::default()
    };
    let engine = Engine::open(&store, config()).unwrap();
    let stream = StreamName::new("fill-1").unwrap();
    let event_type = EventType::new("Filler").unwrap();
    let mut acked = 0u64;
    let error = loop {
        let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
        match engine
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![NewEvent::json(event_type.clone(), data)],
            )
            .await
        {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 100_000, "the disk never filled");
    };
    assert!(
        matches!(error, AppendError::Storage(StorageError::Io { .. })),
        "{error}"
    );
    let again = engine
        .append(
            &stream,
            ExpectedRevision::Any,
            vec![NewEvent::json(event_type.clone(), "{}")],
        )
        .await;
    assert!(
        matches!(
            again,
            Err(AppendError::Storage(StorageError::Poisoned { .. }))
        ),
        "{again:?}"
    );
    let read = engine.read_all(ReadAllOptions::forward()).await.unwrap();
    assert_eq!(
        read.events.len() as u64,
        acked,
        "reads must keep working on a full disk"
    );
    engine.close();

    std::fs::remove_file(&ballast).unwrap();
    let engine = Engine::open(&store, config()).unwrap();
    let read = engine.read_all(ReadAllOptions::forward()).await.unwrap();
    assert!(
        read.events.len() as u64 >= acked,
        "lost acknowledged events after ENOSPC"
    );
    engine
        .append(
            &stream,
            ExpectedRevision::Any,
            vec![NewEvent::json(event_type, "{}")],
        )
        .await
        .unwrap();
    println!(
        "T4 tmpfs: {acked} events acknowledged before ENOSPC ({error}); reopened with all of them"
    );
}
