//! Test support: stores in throw-away schemas of the real PostgreSQL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use std::sync::Arc;

use annals_conformance::Backend;
use annals_core::Clock;
use annals_postgres::{PgConfig, PgStore};
use parking_lot::Mutex;

/// The database the tests use: `ANNALS_PG_URL`, or the machine's default.
pub(crate) fn url() -> String {
    std::env::var("ANNALS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A configuration for a fresh schema, recorded for removal.
pub(crate) fn fresh_config(schemas: &Mutex<Vec<String>>) -> PgConfig {
    let schema = format!("annals_t_{}", uuid::Uuid::new_v4().simple());
    schemas.lock().push(schema.clone());
    let mut config = PgConfig::new(url()).schema(schema);
    config.max_connections = 8;
    config
}

/// Opens a store; there is no skipping: without PostgreSQL the test fails.
pub(crate) async fn open(config: PgConfig) -> PgStore {
    let url = config.url.clone();
    PgStore::open(config)
        .await
        .unwrap_or_else(|e| panic!("cannot open a PostgreSQL store at {url} (ANNALS_PG_URL): {e}"))
}

/// Drops the schemas a test created, from a thread of its own (the test's runtime may be
/// shutting down when this runs).
pub(crate) fn drop_schemas(schemas: Vec<String>) {
    if schemas.is_empty() {
        return;
    }
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            for schema in schemas {
                PgStore::drop_schema(&url(), &schema).await?;
            }
            Ok::<_, annals_postgres::PgError>(())
        })
    });
    if let Ok(Err(e)) = cleanup.join() {
        eprintln!("could not drop test schemas: {e}");
    }
}

/// Stores in fresh schemas, dropped with the backend.
#[derive(Default)]
pub(crate) struct PgBackend {
    schemas: Mutex<Vec<String>>,
}

impl Backend for PgBackend {
    type Store = PgStore;
    const GAP_FREE_POSITIONS: bool = false;

    async fn create(&self, clock: Arc<dyn Clock>) -> Arc<PgStore> {
        Arc::new(open(fresh_config(&self.schemas).clock(clock)).await)
    }

    async fn reopen(&self, store: Arc<PgStore>) -> Option<Arc<PgStore>> {
        let config = store.config().clone();
        let store = Arc::try_unwrap(store).expect("reopen needs the last reference");
        store.close().await;
        Some(Arc::new(open(config).await))
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        drop_schemas(std::mem::take(&mut *self.schemas.lock()));
    }
}
