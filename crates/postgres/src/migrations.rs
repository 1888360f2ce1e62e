//! Versioned schema migrations, embedded in the binary and applied on first use. Each runs
//! once, in order, inside one transaction that holds an advisory lock, so concurrent
//! first uses do not race and a failed migration leaves nothing behind.

use sqlx::{AssertSqlSafe, PgPool};

use crate::error::PgError;
use crate::store::MIGRATION_LOCK_CLASS;

/// One migration.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "events, streams and the visible-prefix function",
    sql: include_str!("migrations/0001_events.sql"),
}];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;

/// Creates the schema if needed and applies the migrations it lacks.
pub(crate) async fn migrate(pool: &PgPool, schema: &str, key: i32) -> Result<(), PgError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(PgError::db("starting migrations"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(MIGRATION_LOCK_CLASS)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(PgError::db("locking the schema for migrations"))?;
    // The schema name was checked to be a plain identifier (PgConfig::validate).
    let ddl = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version integer PRIMARY KEY,
             description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         SET LOCAL search_path = {schema};"
    );
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .map_err(PgError::db("creating the schema"))?;
    let applied: Vec<i32> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::db("reading applied migrations"))?;
    if let Some(&found) = applied.iter().max().filter(|v| **v > SCHEMA_VERSION) {
        return Err(PgError::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(schema, version = migration.version, "applying migration");
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(PgError::db("applying a migration"))?;
        sqlx::query("INSERT INTO schema_migrations (version, description) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *tx)
            .await
            .map_err(PgError::db("recording a migration"))?;
    }
    tx.commit()
        .await
        .map_err(PgError::db("committing migrations"))
}
