//! The client's own `_sync_*` metadata tables (client chapter §2.2, §2.3, §2.8, §3.12).
//!
//! The eleven tables are declared exactly as the reference declares them (names, columns,
//! types, defaults, constraints, declaration order), so that a database written by the Go
//! client and one written by this crate are interchangeable. One addition: the singleton
//! `_sync_layout_version` records the layout this build wrote. A database without it but with
//! the reference tables is layout 1 (the reference's); a database that records a newer layout
//! is refused with [`StoreError::LayoutTooNew`] instead of being modified. The reference
//! leaves unknown `_sync_`-prefixed tables alone, so the marker is invisible to it.

use rusqlite::{Connection, OptionalExtension};

use crate::catalog::Catalog;
use crate::error::{ConfigError, SqliteContext, StoreError};
use crate::sql::SqlBuffer;
use crate::triggers;

/// The metadata layout this build writes and understands.
pub const LAYOUT_VERSION: i64 = 1;

/// The table that records [`LAYOUT_VERSION`].
pub(crate) const LAYOUT_TABLE: &str = "_sync_layout_version";

/// The reference's eleven metadata tables, in its drop order (`syncMetadataTableNames`).
pub const METADATA_TABLES: [&str; 11] = [
    "_sync_source_state",
    "_sync_attachment_state",
    "_sync_operation_state",
    "_sync_apply_state",
    "_sync_row_state",
    "_sync_dirty_rows",
    "_sync_snapshot_stage",
    "_sync_outbox_bundle",
    "_sync_outbox_rows",
    "_sync_push_stage",
    "_sync_managed_tables",
];

const NOW: &str = "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))";

fn ddl() -> Vec<String> {
    let ts = |name: &str| format!("{name} TEXT NOT NULL DEFAULT {NOW}");
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS _sync_source_state (
  source_id TEXT NOT NULL PRIMARY KEY,
  next_source_bundle_id INTEGER NOT NULL DEFAULT 1,
  replaced_by_source_id TEXT NOT NULL DEFAULT '',
  {}
)",
            ts("created_at")
        ),
        "CREATE TABLE IF NOT EXISTS _sync_attachment_state (
  singleton_key INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  current_source_id TEXT NOT NULL DEFAULT '',
  binding_state TEXT NOT NULL DEFAULT 'anonymous' CHECK (binding_state IN ('anonymous', 'attached')),
  attached_user_id TEXT NOT NULL DEFAULT '',
  schema_name TEXT NOT NULL DEFAULT '',
  last_bundle_seq_seen INTEGER NOT NULL DEFAULT 0,
  rebuild_required INTEGER NOT NULL DEFAULT 0,
  pending_initialization_id TEXT NOT NULL DEFAULT ''
)"
        .to_owned(),
        "CREATE TABLE IF NOT EXISTS _sync_operation_state (
  singleton_key INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  kind TEXT NOT NULL DEFAULT 'none' CHECK (kind IN ('none', 'remote_replace', 'source_recovery')),
  target_user_id TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  replacement_source_id TEXT NOT NULL DEFAULT '',
  staged_snapshot_id TEXT NOT NULL DEFAULT '',
  snapshot_bundle_seq INTEGER NOT NULL DEFAULT 0,
  snapshot_row_count INTEGER NOT NULL DEFAULT 0
)"
        .to_owned(),
        "CREATE TABLE IF NOT EXISTS _sync_apply_state (
  singleton_key INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  apply_mode INTEGER NOT NULL DEFAULT 0
)"
        .to_owned(),
        format!(
            "CREATE TABLE IF NOT EXISTS _sync_row_state (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  row_version INTEGER NOT NULL DEFAULT 0,
  deleted INTEGER NOT NULL DEFAULT 0,
  {},
  PRIMARY KEY (schema_name, table_name, key_json)
)",
            ts("updated_at")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS _sync_dirty_rows (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  op TEXT NOT NULL CHECK (op IN ('INSERT','UPDATE','DELETE')),
  base_row_version INTEGER NOT NULL DEFAULT 0,
  payload TEXT,
  dirty_ordinal INTEGER NOT NULL DEFAULT 0,
  {},
  PRIMARY KEY (schema_name, table_name, key_json)
)",
            ts("updated_at")
        ),
        "CREATE TABLE IF NOT EXISTS _sync_snapshot_stage (
  snapshot_id TEXT NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  row_version INTEGER NOT NULL,
  payload TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, row_ordinal)
)"
        .to_owned(),
        "CREATE TABLE IF NOT EXISTS _sync_outbox_bundle (
  singleton_key INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
  state TEXT NOT NULL DEFAULT 'none' CHECK (state IN ('none', 'prepared', 'committed_remote')),
  source_id TEXT NOT NULL DEFAULT '',
  source_bundle_id INTEGER NOT NULL DEFAULT 0,
  canonical_request_hash TEXT NOT NULL DEFAULT '',
  row_count INTEGER NOT NULL DEFAULT 0,
  initialization_id TEXT NOT NULL DEFAULT '',
  remote_bundle_hash TEXT NOT NULL DEFAULT '',
  remote_bundle_seq INTEGER NOT NULL DEFAULT 0
)"
        .to_owned(),
        "CREATE TABLE IF NOT EXISTS _sync_outbox_rows (
  source_bundle_id INTEGER NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  wire_key_json TEXT NOT NULL,
  op TEXT NOT NULL CHECK (op IN ('INSERT','UPDATE','DELETE')),
  base_row_version INTEGER NOT NULL DEFAULT 0,
  local_payload TEXT,
  wire_payload TEXT,
  PRIMARY KEY (source_bundle_id, row_ordinal)
)"
        .to_owned(),
        "CREATE TABLE IF NOT EXISTS _sync_push_stage (
  bundle_seq INTEGER NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  op TEXT NOT NULL CHECK (op IN ('INSERT','UPDATE','DELETE')),
  row_version INTEGER NOT NULL,
  payload TEXT,
  PRIMARY KEY (bundle_seq, row_ordinal)
)"
        .to_owned(),
        "CREATE TABLE IF NOT EXISTS _sync_managed_tables (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  PRIMARY KEY (schema_name, table_name)
)"
        .to_owned(),
    ]
}

/// Creates (if absent) the metadata tables and their singleton rows, records the layout
/// version and forces `apply_mode` to 0, in one `BEGIN IMMEDIATE` transaction. Connection
/// settings (§2.1) are applied first, outside it.
///
/// Idempotent. Refuses a database whose recorded layout is newer than [`LAYOUT_VERSION`].
pub(crate) fn install(conn: &mut Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")
        .ctx("set journal_mode=WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .ctx("set foreign_keys=ON")?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx("begin metadata install")?;
    let recorded: Option<i64> = if table_exists(&tx, LAYOUT_TABLE)? {
        tx.query_row(
            "SELECT version FROM _sync_layout_version WHERE singleton_key = 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .ctx("read layout version")?
    } else {
        None
    };
    if let Some(found) = recorded
        && found > LAYOUT_VERSION
    {
        return Err(StoreError::LayoutTooNew {
            found,
            supported: LAYOUT_VERSION,
        });
    }
    for statement in ddl() {
        tx.execute(&statement, []).ctx("create metadata table")?;
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS _sync_dirty_rows_ordinal_idx ON _sync_dirty_rows (dirty_ordinal);
         CREATE TABLE IF NOT EXISTS _sync_layout_version (
           singleton_key INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1),
           version INTEGER NOT NULL
         );
         INSERT INTO _sync_attachment_state (singleton_key) VALUES (1) ON CONFLICT(singleton_key) DO NOTHING;
         INSERT INTO _sync_operation_state (singleton_key) VALUES (1) ON CONFLICT(singleton_key) DO NOTHING;
         INSERT INTO _sync_apply_state (singleton_key) VALUES (1) ON CONFLICT(singleton_key) DO NOTHING;
         INSERT INTO _sync_outbox_bundle (singleton_key) VALUES (1) ON CONFLICT(singleton_key) DO NOTHING;
         UPDATE _sync_apply_state SET apply_mode = 0 WHERE singleton_key = 1 AND apply_mode != 0;",
    )
    .ctx("initialise metadata rows")?;
    tx.execute(
        "INSERT INTO _sync_layout_version (singleton_key, version) VALUES (1, ?1)
         ON CONFLICT(singleton_key) DO UPDATE SET version = excluded.version",
        [LAYOUT_VERSION],
    )
    .ctx("record layout version")?;
    tx.commit().ctx("commit metadata install")
}

/// Whether a table named `name` exists in `main`.
pub(crate) fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE)",
        [name],
        |r| r.get(0),
    )
    .ctx("look up table")
}

/// §2.8: existing sync state must belong to the configured schema.
pub(crate) fn check_schema_scope(conn: &Connection, schema: &str) -> Result<(), CheckError> {
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT schema_name FROM (
               SELECT schema_name FROM _sync_attachment_state
               UNION ALL SELECT schema_name FROM _sync_row_state
               UNION ALL SELECT schema_name FROM _sync_dirty_rows
               UNION ALL SELECT schema_name FROM _sync_snapshot_stage
               UNION ALL SELECT schema_name FROM _sync_outbox_rows
               UNION ALL SELECT schema_name FROM _sync_push_stage
             ) WHERE trim(schema_name) <> '' ORDER BY schema_name",
        )
        .ctx("check schema scope")?;
    let seen: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .ctx("check schema scope")?
        .collect::<Result<_, _>>()
        .ctx("check schema scope")?;
    if seen.is_empty() || (seen.len() == 1 && seen[0] == schema) {
        return Ok(());
    }
    Err(CheckError::Config(ConfigError::SchemaScopeMismatch {
        existing: seen.join(", "),
        configured: schema.to_owned(),
    }))
}

/// A failure of a construction check: configuration or storage.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// The configuration is unsupported.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records every configured table in `_sync_managed_tables` (insert-if-absent).
pub(crate) fn register_managed_tables(
    conn: &Connection,
    catalog: &Catalog,
) -> Result<(), StoreError> {
    for table in &catalog.tables {
        conn.execute(
            "INSERT INTO _sync_managed_tables (schema_name, table_name) VALUES (?1, ?2)
             ON CONFLICT(schema_name, table_name) DO NOTHING",
            [&catalog.schema, &table.name],
        )
        .ctx("register managed table")?;
    }
    Ok(())
}

/// Every table the client ever managed that still exists: the registry (by name) then
/// configured tables not in it.
pub(crate) fn known_tables(
    conn: &Connection,
    catalog: &Catalog,
) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = Vec::new();
    if table_exists(conn, "_sync_managed_tables")? {
        let mut stmt = conn
            .prepare("SELECT DISTINCT table_name FROM _sync_managed_tables ORDER BY table_name")
            .ctx("read managed table registry")?;
        names = stmt
            .query_map([], |r| r.get(0))
            .ctx("read managed table registry")?
            .collect::<Result<_, _>>()
            .ctx("read managed table registry")?;
    }
    for table in &catalog.tables {
        if !names.contains(&table.name) {
            names.push(table.name.clone());
        }
    }
    let mut existing = Vec::with_capacity(names.len());
    for name in names {
        if table_exists(conn, &name)? {
            existing.push(name);
        }
    }
    Ok(existing)
}

/// Drops every trigger the client installed and every metadata table (§3.12), in one
/// transaction. Business tables and rows are untouched.
pub(crate) fn uninstall(conn: &mut Connection, catalog: &Catalog) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx("begin uninstall")?;
    for table in known_tables(&tx, catalog)? {
        triggers::drop_all(&tx, &table)?;
    }
    for name in METADATA_TABLES.iter().chain([&LAYOUT_TABLE]) {
        let mut sql = SqlBuffer::new();
        sql.push("DROP TABLE IF EXISTS ").identifier(name);
        tx.execute(sql.as_str(), []).ctx("drop metadata table")?;
    }
    tx.commit().ctx("commit uninstall")
}
