//! The conformance suite and the model test against the real PostgreSQL, each test in its
//! own schema (`ANNALS_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
#![allow(clippy::unwrap_used)] // tests fail by panicking

mod common;

use common::PgBackend;

annals_conformance::conformance_tests!(PgBackend::default());

/// Random operations with random reopens behave as on the in-memory model.
#[test]
fn model_matches_memory() {
    let config = annals_conformance::model::ModelConfig::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proptest-regressions/model.txt"
    ));
    annals_conformance::model::model_test(PgBackend::default, config);
}
