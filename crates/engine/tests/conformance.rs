//! The conformance suite and the model test, run against the embedded engine. Small
//! segments and memtables make the scenarios cross segment boundaries and index flushes.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;

use annals_conformance::Backend;
use annals_core::Clock;
use annals_engine::{Config, Engine};
use parking_lot::Mutex;

/// Engines in temporary directories that live as long as the backend.
#[derive(Default)]
struct EngineBackend {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

fn test_config(clock: Arc<dyn Clock>) -> Config {
    Config {
        clock,
        segment_bytes: 32 << 10,
        memtable_entries: 500,
        ..Config::default()
    }
}

impl Backend for EngineBackend {
    type Store = Engine;

    async fn create(&self, clock: Arc<dyn Clock>) -> Arc<Engine> {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), test_config(clock)).unwrap();
        self.dirs.lock().push(dir);
        Arc::new(engine)
    }

    async fn reopen(&self, store: Arc<Engine>) -> Option<Arc<Engine>> {
        let path = store.path().to_owned();
        let config = store.config().clone();
        let engine = Arc::try_unwrap(store).expect("reopen needs the last reference");
        engine.close();
        Some(Arc::new(Engine::open(path, config).unwrap()))
    }
}

annals_conformance::conformance_tests!(EngineBackend::default());

/// Random operations with random reopens behave as on the in-memory model.
#[test]
fn model_matches_memory() {
    let config = annals_conformance::model::ModelConfig::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proptest-regressions/model.txt"
    ));
    annals_conformance::model::model_test(EngineBackend::default, config);
}
