//! The sans-I/O sync engine: every durable step of the client chapter (§3–§8) as a function
//! over a SQLite connection and already-decoded `oversync_protocol::wire` values.
//!
//! **Architecture Invariant:** nothing here knows HTTP (no reqwest, no URLs, no statuses) or
//! time. The async [`crate::Client`] decides which step comes next, talks to the server through
//! [`crate::transport::Transport`] and feeds the answers to these functions on the database
//! thread.
//!
//! **Architecture Invariant:** each step runs in one `BEGIN IMMEDIATE` transaction and either
//! commits completely or leaves the database as it was. In-memory session state is changed by
//! the caller only after a step committed, so a step that fails (or a process that dies) can
//! simply be run again.
//!
//! The primitives below are the authoritative-apply primitive of §2.9 (upsert with
//! `ON CONFLICT … DO UPDATE`, never `INSERT OR REPLACE`; delete by key; row-state upsert) and
//! the dirty-row requeue, shared by push replay, pull and snapshot apply.

pub(crate) mod conflict;
pub(crate) mod lifecycle;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod snapshot;
pub(crate) mod state;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::catalog::ManagedTable;
use oversync_protocol::op::Op;

use crate::error::{ProtocolViolation, SqliteContext, StoreError};
use crate::payload::{self, PayloadError};
use crate::sql::SqlBuffer;
use crate::triggers;

/// Starts a `BEGIN IMMEDIATE` transaction.
pub(crate) fn begin(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin immediate transaction")
}

/// Starts an authoritative-write transaction: immediate, FKs deferred to commit, capture off.
pub(crate) fn begin_authoritative(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    let tx = begin(conn)?;
    tx.pragma_update(None, "defer_foreign_keys", "ON")
        .ctx("defer foreign keys")?;
    state::set_apply_mode(&tx, true)?;
    Ok(tx)
}

/// Turns capture back on and commits an authoritative-write transaction.
pub(crate) fn commit_authoritative(tx: Transaction<'_>) -> Result<(), StoreError> {
    state::set_apply_mode(&tx, false)?;
    tx.commit().ctx("commit authoritative transaction")
}

/// `key_json` for a local key, produced by SQLite's own `json_object` so it is byte-identical
/// to what the triggers write (§2.4, §12 B2).
pub(crate) fn key_json(
    conn: &Connection,
    table: &ManagedTable,
    local_key: &str,
) -> Result<String, StoreError> {
    conn.prepare_cached("SELECT json_object(?1, ?2)")
        .and_then(|mut s| s.query_row(params![table.key().member, local_key], |r| r.get(0)))
        .ctx("build key_json")
}

/// Upserts a full row: `INSERT … ON CONFLICT(<key>) DO UPDATE SET` every non-key column.
pub(crate) fn upsert_row(
    conn: &Connection,
    table: &ManagedTable,
    values: &[Value],
) -> Result<(), StoreError> {
    let mut sql = SqlBuffer::new();
    sql.push("INSERT INTO ").identifier(&table.name).push(" (");
    sql.join(&table.columns, ", ", |s, c| {
        s.identifier(&c.name);
    });
    sql.push(") VALUES (");
    sql.join(1..=table.columns.len(), ", ", |s, i| {
        s.push(&format!("?{i}"));
    });
    sql.push(") ON CONFLICT (")
        .identifier(&table.key().name)
        .push(") DO ");
    let others: Vec<_> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != table.key_index)
        .map(|(_, c)| c)
        .collect();
    if others.is_empty() {
        sql.push("NOTHING");
    } else {
        sql.push("UPDATE SET ");
        sql.join(others, ", ", |s, c| {
            s.identifier(&c.name)
                .push(" = excluded.")
                .identifier(&c.name);
        });
    }
    conn.prepare_cached(sql.as_str())
        .and_then(|mut s| s.execute(rusqlite::params_from_iter(values.iter())))
        .ctx("upsert business row")?;
    Ok(())
}

/// Deletes the business row with `key`.
pub(crate) fn delete_row(
    conn: &Connection,
    table: &ManagedTable,
    key: &Value,
) -> Result<(), StoreError> {
    let mut sql = SqlBuffer::new();
    sql.push("DELETE FROM ")
        .identifier(&table.name)
        .push(" WHERE ")
        .identifier(&table.key().name)
        .push(" = ?1");
    conn.prepare_cached(sql.as_str())
        .and_then(|mut s| s.execute([key]))
        .ctx("delete business row")?;
    Ok(())
}

/// The live row with `key` serialised as a local payload, with the trigger's own expression.
pub(crate) fn live_payload(
    conn: &Connection,
    table: &ManagedTable,
    key: &Value,
) -> Result<Option<String>, StoreError> {
    let mut sql = SqlBuffer::new();
    sql.push("SELECT ");
    triggers::row_payload_expr(&mut sql, "t", table);
    sql.push(" FROM ")
        .identifier(&table.name)
        .push(" AS t WHERE t.")
        .identifier(&table.key().name)
        .push(" = ?1");
    conn.prepare_cached(sql.as_str())
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .ctx("serialise live row")
}

/// Upserts `_sync_row_state` for a key.
pub(crate) fn upsert_row_state(
    conn: &Connection,
    schema: &str,
    table: &str,
    key_json: &str,
    row_version: i64,
    deleted: bool,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
         ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET
           row_version = excluded.row_version, deleted = excluded.deleted,
           updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![schema, table, key_json, row_version, i64::from(deleted)]))
    .ctx("upsert row state")?;
    Ok(())
}

/// Deletes the row state of a key.
pub(crate) fn delete_row_state(
    conn: &Connection,
    schema: &str,
    table: &str,
    key_json: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM _sync_row_state WHERE schema_name = ?1 AND table_name = ?2 AND key_json = ?3",
    )
    .and_then(|mut s| s.execute(params![schema, table, key_json]))
    .ctx("delete row state")?;
    Ok(())
}

/// `(row_version, deleted)` of a key's row state.
pub(crate) fn row_state(
    conn: &Connection,
    schema: &str,
    table: &str,
    key_json: &str,
) -> Result<Option<(i64, bool)>, StoreError> {
    conn.prepare_cached(
        "SELECT row_version, deleted FROM _sync_row_state
         WHERE schema_name = ?1 AND table_name = ?2 AND key_json = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![schema, table, key_json], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? != 0))
        })
        .optional()
    })
    .ctx("read row state")
}

/// A dirty row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirtyRow {
    pub(crate) op: String,
    pub(crate) base_row_version: i64,
    pub(crate) payload: Option<String>,
}

/// The dirty row of a key, if any.
pub(crate) fn dirty_row(
    conn: &Connection,
    schema: &str,
    table: &str,
    key_json: &str,
) -> Result<Option<DirtyRow>, StoreError> {
    conn.prepare_cached(
        "SELECT op, base_row_version, payload FROM _sync_dirty_rows
         WHERE schema_name = ?1 AND table_name = ?2 AND key_json = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![schema, table, key_json], |r| {
            Ok(DirtyRow {
                op: r.get(0)?,
                base_row_version: r.get(1)?,
                payload: r.get(2)?,
            })
        })
        .optional()
    })
    .ctx("read dirty row")
}

/// Upserts a dirty row (requeue): sets op, base and payload; keeps an existing
/// `dirty_ordinal`, else appends with `MAX + 1`.
pub(crate) fn requeue_dirty(
    conn: &Connection,
    schema: &str,
    table: &str,
    key_json: &str,
    op: &str,
    base_row_version: i64,
    payload: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op, base_row_version, payload, dirty_ordinal, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                 (SELECT COALESCE(MAX(dirty_ordinal), 0) + 1 FROM _sync_dirty_rows),
                 strftime('%Y-%m-%dT%H:%M:%fZ','now'))
         ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET
           op = excluded.op, base_row_version = excluded.base_row_version,
           payload = excluded.payload, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![schema, table, key_json, op, base_row_version, payload]))
    .ctx("requeue dirty row")?;
    Ok(())
}

/// Sets only the `base_row_version` of a key's dirty row (keeps its op, payload and
/// ordinal): rebases a newer local intent on a version the server will accept (§12 C13).
pub(crate) fn rebase_dirty(
    conn: &Connection,
    schema: &str,
    table: &str,
    key_json: &str,
    base_row_version: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE _sync_dirty_rows SET base_row_version = ?4
         WHERE schema_name = ?1 AND table_name = ?2 AND key_json = ?3",
    )
    .and_then(|mut s| s.execute(params![schema, table, key_json, base_row_version]))
    .ctx("rebase dirty row")?;
    Ok(())
}

/// Deletes the dirty row of a key.
pub(crate) fn delete_dirty(
    conn: &Connection,
    schema: &str,
    table: &str,
    key_json: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM _sync_dirty_rows WHERE schema_name = ?1 AND table_name = ?2 AND key_json = ?3",
    )
    .and_then(|mut s| s.execute(params![schema, table, key_json]))
    .ctx("delete dirty row")?;
    Ok(())
}

/// Deletes every row of the business table `name` and its row states.
pub(crate) fn clear_table(conn: &Connection, schema: &str, name: &str) -> Result<(), StoreError> {
    let mut sql = SqlBuffer::new();
    sql.push("DELETE FROM ").identifier(name);
    conn.execute(sql.as_str(), []).ctx("clear managed table")?;
    conn.execute(
        "DELETE FROM _sync_row_state WHERE schema_name = ?1 AND table_name = ?2",
        params![schema, name],
    )
    .ctx("clear row state")?;
    Ok(())
}

/// Why an engine step that consumes server data failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// The server's data broke the protocol; nothing was committed.
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// Local failure; nothing was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Dirty rows appeared; the step refused to overwrite them.
    #[error("{0} dirty rows are pending")]
    Dirty(i64),
    /// The durable binding is not attached to a user.
    #[error("not attached")]
    AttachRequired,
}

impl From<PayloadError> for StepError {
    fn from(e: PayloadError) -> Self {
        StepError::Store(StoreError::Payload(e))
    }
}

/// Applies one authoritative row (§2.9): upsert or delete the business row, then upsert its
/// row state. Must run inside an authoritative transaction.
pub(crate) fn apply_row(
    conn: &Connection,
    schema: &str,
    table: &ManagedTable,
    key_json: &str,
    op: Op,
    row_version: i64,
    wire_payload: Option<&str>,
) -> Result<(), StepError> {
    let local = payload::key_from_key_json(table, key_json)?;
    if op == Op::Delete {
        delete_row(conn, table, &payload::key_param(table, &local)?)?;
    } else {
        let Some(wire) = wire_payload else {
            return Err(StoreError::Inconsistent(format!(
                "{op} row of {} has no payload",
                table.name
            ))
            .into());
        };
        upsert_row(conn, table, &payload::wire_values(table, wire)?)?;
    }
    upsert_row_state(
        conn,
        schema,
        &table.name,
        key_json,
        row_version,
        op == Op::Delete,
    )?;
    Ok(())
}
