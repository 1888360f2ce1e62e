//! The conformance suite and the model test against the in-memory reference store. Its
//! `reopen` keeps nothing, so the durability scenarios return early; the model test compares
//! the store with a second instance of itself, a self-check of the harness and of the
//! planner's determinism.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;

use annals_conformance::Backend;
use annals_conformance::model::{ModelConfig, model_test};
use annals_core::Clock;
use annals_core::memory::MemoryStore;

/// Fresh in-memory stores.
#[derive(Debug, Default, Clone, Copy)]
struct Memory;

impl Backend for Memory {
    type Store = MemoryStore;

    async fn create(&self, clock: Arc<dyn Clock>) -> Arc<MemoryStore> {
        Arc::new(MemoryStore::with_clock(clock))
    }

    async fn reopen(&self, _store: Arc<MemoryStore>) -> Option<Arc<MemoryStore>> {
        None
    }
}

annals_conformance::conformance_tests!(Memory);

#[test]
fn model_against_itself() {
    let config = ModelConfig::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proptest-regressions/memory_model.txt"
    ));
    model_test(|| Memory, config);
}
