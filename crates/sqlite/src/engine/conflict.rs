//! Conflict steps (client chapter §5): find the outbox row a structured `push_conflict` is
//! about, then apply the resolver's decision in one authoritative transaction.
//!
//! Every outcome ends with an empty outbox and every surviving intent in `_sync_dirty_rows`,
//! so the next freeze (under the same `source_bundle_id`, which only replay advances) retries
//! it. Fixes over the reference, each pinned by a test in `tests/conflicts.rs`:
//!
//! * §12 B1: a kept local payload is written with the local decoder (BLOBs from hex), never
//!   fed to the wire decoder, so BLOB values cannot be reinterpreted as base64.
//! * §12 A10: keeping a local INSERT against a server row that is missing retries the INSERT
//!   with base 0 instead of failing with the outbox kept (which repeated the conflict on
//!   every push).
//! * §12 C13: a dirty row written after the freeze (a newer local intent) is never
//!   overwritten by a requeued outbox row; only its base version is rebased. For the
//!   conflicting key itself that also means its business row is left as the application
//!   wrote it. The newer intent is rebased on the server's version only when the resolver
//!   kept the local row as it was (keep-local); after accept-server or keep-merged the newer
//!   intent keeps the base the application wrote it on, so the server raises its own
//!   conflict and the resolver decides about it (a merge was computed from the frozen row,
//!   not from the newer intent). Rebasing it there too (as this client once did) made it overwrite the server's
//!   row without a conflict: a server-wins device's offline edit silently replaced another
//!   device's acknowledged write that edit had never seen.
//! * a merged payload that does not decode or changes the key is an invalid resolution
//!   (replayable), not a storage error.
//! * **a resolution that would break a local foreign key never wedges the outbox.** The
//!   reference applies the server's row on its own; when that row references a row this
//!   device deleted in the same cascade, or is deleted while local rows still reference it,
//!   the transaction fails at COMMIT and every later push repeats the conflict and the
//!   failure. Here the first attempt's COMMIT failing on a foreign key leads to
//!   [`defer_accepted`] (server wins) or to an invalid resolution (keep-merged), see there.

use oversync_protocol::op::Op;
use oversync_protocol::wire::{PushConflictDetails, SyncKey};
use std::collections::BTreeSet;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;

use super::push::{OutboxRow, load_outbox_rows, table};
use super::state::{self, Attachment, OutboxBundle};
use super::{
    StepError, begin_authoritative, commit_authoritative, delete_dirty, delete_row,
    delete_row_state, dirty_row, live_payload, rebase_dirty, requeue_dirty, upsert_row,
    upsert_row_state,
};
use crate::catalog::{Catalog, ManagedTable};
use crate::conflict::{ConflictContext, MergeResult, ServerRow};
use crate::error::{ProtocolViolation, SqliteContext, StoreError};
use crate::payload;

const E: &str = "push conflict";

/// How a resolution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The decision was applied; surviving intents are dirty rows.
    Resolved,
    /// The decision does not fit the conflict; every outbox row was requeued unchanged and
    /// business rows were not touched. The message says why.
    Invalid(String),
    /// The server's state could not be applied without breaking a local foreign key, so the
    /// local intent for the key was dropped with business rows left as they were (see
    /// [`defer_accepted`]). With `rebuild`, local intent the server's row contradicts was
    /// dropped too and the rebuild gate is set: only a snapshot brings the rows back.
    Deferred {
        /// A keep-source rebuild is required.
        rebuild: bool,
        /// What was deferred, for the host.
        message: String,
    },
}

fn find<'a>(
    catalog: &Catalog,
    outbox: &'a [OutboxRow],
    schema: &str,
    table_name: &str,
    key: &SyncKey,
) -> Result<Option<&'a OutboxRow>, StoreError> {
    if schema != catalog.schema {
        return Ok(None);
    }
    for row in outbox.iter().filter(|r| r.table == table_name) {
        let managed = table(catalog, &row.table)?;
        let wire_key = SyncKey::from([(managed.key().member.clone(), row.wire_key.clone())]);
        if &wire_key == key {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// §5.1–§5.2: the resolver's input for `details`, or `None` when the conflicting key is not
/// part of the outbox (the push then fails with the conflict and the outbox is kept).
pub(crate) fn context(
    conn: &Connection,
    catalog: &Catalog,
    details: &PushConflictDetails,
) -> Result<Option<ConflictContext>, StoreError> {
    let outbox = load_outbox_rows(conn, catalog)?;
    let Some(row) = find(
        catalog,
        &outbox,
        &details.schema,
        &details.table,
        &details.key,
    )?
    else {
        return Ok(None);
    };
    let local_payload = match (&row.wire_payload, row.op) {
        (Some(text), Op::Insert | Op::Update) => Some(
            RawValue::from_string(text.clone())
                .map_err(|e| StoreError::Inconsistent(format!("outbox wire payload: {e}")))?,
        ),
        _ => None,
    };
    Ok(Some(ConflictContext {
        schema: details.schema.clone(),
        table: details.table.clone(),
        key: details.key.clone(),
        local_op: row.op,
        local_payload,
        base_row_version: details.base_row_version,
        server_row_version: details.server_row_version,
        server_row_deleted: details.server_row_deleted,
        server_row_payload: details
            .server_row
            .as_ref()
            .filter(|p| p.get().trim() != "null")
            .cloned(),
    }))
}

enum LocalAction {
    Upsert(Vec<Value>),
    Delete,
}

#[derive(Clone, Copy)]
enum RowStateAction {
    Upsert { version: i64, deleted: bool },
    Delete,
}

struct Plan {
    local: LocalAction,
    row_state: RowStateAction,
    requeue: Option<Op>,
}

/// The §5.3 matrix (with the A10 fix): the plan, or why the decision is invalid.
fn plan(
    managed: &ManagedTable,
    row: &OutboxRow,
    conflict: &ConflictContext,
    result: &MergeResult,
) -> Result<Result<Plan, String>, StepError> {
    let sv = conflict.server_row_version;
    let shape = conflict.server_row();
    let what = format!("{}.{}", conflict.schema, conflict.table);
    let live = RowStateAction::Upsert {
        version: sv,
        deleted: false,
    };
    let tombstone = RowStateAction::Upsert {
        version: sv,
        deleted: true,
    };
    let plan = |local, row_state, requeue| {
        Ok(Ok(Plan {
            local,
            row_state,
            requeue,
        }))
    };
    // Upsert of a kept or merged row: live → requeue UPDATE; tombstone → INSERT; missing →
    // INSERT with no row state, i.e. base 0 (§12 A10).
    let upsert_plan = |values: Vec<Value>| match shape {
        ServerRow::Live => plan(LocalAction::Upsert(values), live, Some(Op::Update)),
        ServerRow::Tombstone => plan(LocalAction::Upsert(values), tombstone, Some(Op::Insert)),
        ServerRow::Missing => plan(
            LocalAction::Upsert(values),
            RowStateAction::Delete,
            Some(Op::Insert),
        ),
    };
    match result {
        MergeResult::AcceptServer => match (shape, &conflict.server_row_payload) {
            (ServerRow::Live, Some(server)) => {
                let values = payload::wire_values(managed, server.get()).map_err(|e| {
                    ProtocolViolation::new(E, format!("server row for {what}: {e}"))
                })?;
                plan(LocalAction::Upsert(values), live, None)
            }
            (ServerRow::Tombstone, _) => plan(LocalAction::Delete, tombstone, None),
            _ => plan(LocalAction::Delete, RowStateAction::Delete, None),
        },
        MergeResult::KeepLocal => match row.op {
            Op::Delete => match shape {
                ServerRow::Live => plan(LocalAction::Delete, live, Some(Op::Delete)),
                ServerRow::Tombstone => plan(LocalAction::Delete, tombstone, None),
                ServerRow::Missing => plan(LocalAction::Delete, RowStateAction::Delete, None),
            },
            Op::Update if shape != ServerRow::Live => Ok(Err(format!(
                "KeepLocal is invalid for stale UPDATE on {what}; authoritative row is deleted or missing"
            ))),
            Op::Insert | Op::Update => {
                let Some(local) = &row.local_payload else {
                    return Err(StoreError::Inconsistent(format!(
                        "local {} conflict is missing payload for {what}",
                        row.op
                    ))
                    .into());
                };
                // §12 B1: the local payload holds BLOBs as hex; decode it as such.
                upsert_plan(payload::local_values(managed, local)?)
            }
        },
        MergeResult::KeepMerged(merged) => {
            if row.op == Op::Delete {
                return Ok(Err(format!(
                    "KeepMerged is invalid for DELETE conflict on {what}"
                )));
            }
            if row.op == Op::Update && shape != ServerRow::Live {
                return Ok(Err(format!(
                    "KeepMerged is invalid for stale UPDATE on {what}; authoritative row is deleted or missing"
                )));
            }
            match merged_values(managed, row, merged, &what) {
                Ok(values) => upsert_plan(values),
                Err(message) => Ok(Err(message)),
            }
        }
    }
}

/// Validates a merged payload (an object with exactly the table's columns, compared
/// case-insensitively, keeping the row's key) and decodes it from wire encoding.
fn merged_values(
    managed: &ManagedTable,
    row: &OutboxRow,
    merged: &RawValue,
    what: &str,
) -> Result<Vec<Value>, String> {
    let not_object = || format!("KeepMerged for {what} must provide a JSON object payload");
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(merged.get()).map_err(|_| not_object())?;
    let mut lowered = serde_json::Map::new();
    for (member, value) in map {
        lowered.insert(member.to_lowercase(), value);
    }
    let exact = lowered.len() == managed.columns.len()
        && managed
            .columns
            .iter()
            .all(|c| lowered.contains_key(&c.member));
    if !exact {
        return Err(format!(
            "KeepMerged for {what} must include exactly every table column"
        ));
    }
    let text = serde_json::to_string(&lowered).map_err(|e| e.to_string())?;
    let values =
        payload::wire_values(managed, &text).map_err(|e| format!("KeepMerged for {what}: {e}"))?;
    let local_key = payload::key_from_key_json(managed, &row.key_json)
        .map_err(|e| format!("KeepMerged for {what}: {e}"))?;
    let key = payload::key_param(managed, &local_key)
        .map_err(|e| format!("KeepMerged for {what}: {e}"))?;
    if values[managed.key_index] != key {
        return Err(format!("KeepMerged for {what} must keep the row's key"));
    }
    Ok(values)
}

/// Requeues an outbox row as a dirty row, unless a newer dirty row exists for its key: that
/// one keeps its op and payload and is only rebased on `base` (§12 C13).
fn requeue_outbox_row(
    conn: &Connection,
    schema: &str,
    row: &OutboxRow,
    base: i64,
) -> Result<(), StoreError> {
    if dirty_row(conn, schema, &row.table, &row.key_json)?.is_some() {
        return rebase_dirty(conn, schema, &row.table, &row.key_json, base);
    }
    requeue_dirty(
        conn,
        schema,
        &row.table,
        &row.key_json,
        row.op.as_str(),
        base,
        row.local_payload.as_deref(),
    )
}

/// §5.4: applies `result` for `conflict` in one authoritative transaction, or, for an invalid
/// decision, requeues the whole outbox and leaves business rows alone. When the resolution's
/// COMMIT fails on a foreign key, falls back to [`defer_accepted`] (accept-server) or to an
/// invalid resolution (any other decision) instead of leaving the outbox in place.
pub(crate) fn apply(
    conn: &mut Connection,
    catalog: &Catalog,
    conflict: &ConflictContext,
    result: &MergeResult,
) -> Result<Applied, StepError> {
    match apply_once(conn, catalog, conflict, result)? {
        Some(applied) => Ok(applied),
        None if matches!(result, MergeResult::AcceptServer) => {
            defer_accepted(conn, catalog, conflict)
        }
        None => invalid(
            conn,
            catalog,
            format!(
                "{result:?} for {}.{} would break a local foreign key",
                conflict.schema, conflict.table
            ),
        ),
    }
}

/// Requeues every outbox row and clears the outbox; business rows are untouched.
fn invalid(
    conn: &mut Connection,
    catalog: &Catalog,
    message: String,
) -> Result<Applied, StepError> {
    let tx = begin_authoritative(conn)?;
    for r in &load_outbox_rows(&tx, catalog)? {
        requeue_outbox_row(&tx, &catalog.schema, r, r.base_row_version)?;
    }
    OutboxBundle::clear(&tx)?;
    commit_authoritative(tx)?;
    Ok(Applied::Invalid(message))
}

fn is_foreign_key_failure(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// The §5.4 transaction. `None` when its COMMIT failed on a deferred foreign key (nothing
/// was committed).
fn apply_once(
    conn: &mut Connection,
    catalog: &Catalog,
    conflict: &ConflictContext,
    result: &MergeResult,
) -> Result<Option<Applied>, StepError> {
    let tx = begin_authoritative(conn)?;
    let schema = catalog.schema.as_str();
    let outbox = load_outbox_rows(&tx, catalog)?;
    let row = conflicting(catalog, &outbox, conflict)?;
    let managed = table(catalog, &row.table)?;
    let plan = match plan(managed, row, conflict, result)? {
        Ok(plan) => plan,
        Err(message) => {
            drop(tx);
            return invalid(conn, catalog, message).map(Some);
        }
    };
    let newer = dirty_row(&tx, schema, &row.table, &row.key_json)?.is_some();
    let local_key = payload::key_from_key_json(managed, &row.key_json)?;
    let key = payload::key_param(managed, &local_key)?;
    if !newer {
        match &plan.local {
            LocalAction::Upsert(values) => upsert_row(&tx, managed, values)?,
            LocalAction::Delete => delete_row(&tx, managed, &key)?,
        }
    }
    let base = match plan.row_state {
        RowStateAction::Upsert { version, deleted } => {
            upsert_row_state(&tx, schema, &row.table, &row.key_json, version, deleted)?;
            version
        }
        RowStateAction::Delete => {
            delete_row_state(&tx, schema, &row.table, &row.key_json)?;
            0
        }
    };
    for sibling in outbox.iter().filter(|r| r.row_ordinal != row.row_ordinal) {
        requeue_outbox_row(&tx, schema, sibling, sibling.base_row_version)?;
    }
    if newer {
        // The newer intent was written on the frozen row's base, never on `sv`: it may only
        // claim `sv` as its base when the resolver kept the local row as it was against `sv`
        // (the newer intent descends from that row). A merge was computed from the frozen row,
        // not from the newer intent, so after a merge the newer intent keeps its own base and
        // meets its own conflict: the resolver merges it too instead of it silently
        // overwriting the server fields the merge kept.
        if plan.requeue.is_some() && matches!(result, MergeResult::KeepLocal) {
            rebase_dirty(&tx, schema, &row.table, &row.key_json, base)?;
        }
    } else if let Some(op) = plan.requeue {
        let payload = if op == Op::Delete {
            None
        } else {
            let Some(live) = live_payload(&tx, managed, &key)? else {
                return Err(StoreError::Inconsistent(format!(
                    "resolved row of {}.{} must exist before requeue",
                    conflict.schema, conflict.table
                ))
                .into());
            };
            Some(live)
        };
        requeue_dirty(
            &tx,
            schema,
            &row.table,
            &row.key_json,
            op.as_str(),
            base,
            payload.as_deref(),
        )?;
    }
    OutboxBundle::clear(&tx)?;
    state::set_apply_mode(&tx, false)?;
    match tx.commit() {
        Ok(()) => Ok(Some(Applied::Resolved)),
        // A failed COMMIT leaves the transaction open; dropping it rolled it back.
        Err(e) if is_foreign_key_failure(&e) => Ok(None),
        Err(source) => Err(StoreError::Sqlite {
            context: "commit conflict resolution",
            source,
        }
        .into()),
    }
}

fn conflicting<'a>(
    catalog: &Catalog,
    outbox: &'a [OutboxRow],
    conflict: &ConflictContext,
) -> Result<&'a OutboxRow, StoreError> {
    find(
        catalog,
        outbox,
        &conflict.schema,
        &conflict.table,
        &conflict.key,
    )?
    .ok_or_else(|| {
        StoreError::Inconsistent(format!(
            "conflicting row {}.{} is no longer in the outbox",
            conflict.schema, conflict.table
        ))
    })
}

/// A foreign-key violation as `PRAGMA foreign_key_check` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    child: String,
    rowid: Option<i64>,
    parent: String,
    fkid: i64,
}

fn violations(conn: &Connection, tables: &[String]) -> Result<BTreeSet<Violation>, StoreError> {
    let mut out = BTreeSet::new();
    for name in tables {
        let mut stmt = conn
            .prepare_cached(
                "SELECT \"table\", rowid, parent, fkid FROM pragma_foreign_key_check(?1)",
            )
            .ctx("check foreign keys")?;
        let rows = stmt
            .query_map([name], |r| {
                Ok(Violation {
                    child: r.get(0)?,
                    rowid: r.get(1)?,
                    parent: r.get(2)?,
                    fkid: r.get(3)?,
                })
            })
            .ctx("check foreign keys")?;
        for v in rows {
            out.insert(v.ctx("check foreign keys")?);
        }
    }
    Ok(out)
}

/// One foreign key of a table: `(from column, to column or None for the primary key,
/// on_delete)` per column, as `PRAGMA foreign_key_list` reports it.
fn foreign_key(
    conn: &Connection,
    child: &str,
    fkid: i64,
) -> Result<Vec<(String, Option<String>, String)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?1)
             WHERE id = ?2 ORDER BY seq",
        )
        .ctx("read foreign key")?;
    let rows = stmt
        .query_map(params![child, fkid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .ctx("read foreign key")?;
    rows.collect::<Result<_, _>>().ctx("read foreign key")
}

/// `table` and every managed table with a foreign key to it.
fn related_tables(
    conn: &Connection,
    catalog: &Catalog,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = vec![table.to_owned()];
    for t in &catalog.tables {
        let refers: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pragma_foreign_key_list(?1) WHERE lower(\"table\") = lower(?2))",
            )
            .and_then(|mut s| s.query_row(params![t.name, table], |r| r.get(0)))
            .ctx("read foreign keys")?;
        if refers && t.name != table {
            out.push(t.name.clone());
        }
    }
    Ok(out)
}

/// A parent row the server's row references but this device deleted.
struct MissingParent {
    table: String,
    key: Value,
}

/// Accept-server whose local application would break a foreign key (the fix of the wedge
/// described in the module doc). Business rows stay exactly as the application left them
/// (they satisfy every foreign key), and so does the conflicting key's row state, so the
/// server's version of the row stays *newer* than what this device holds:
///
/// * the conflicting key's local intent is dropped (the server won) and every sibling is
///   requeued as usual;
/// * the server deleted the row while local rows still reference it (a stale update of a
///   user whose owner deleted it with its posts): the deletion reached the server in a
///   bundle this device has not pulled, together with whatever happened to the referencing
///   rows, so the next pull applies both consistently;
/// * the server's row references a row this device deleted (a cascade deleting a team or a
///   category while another device updated it or a child): keeping the server's row keeps
///   what it references, so the queued DELETE of that parent is dropped as well (pushing it
///   would either be refused by the server's foreign key or, with a cascade, destroy the
///   concurrent write the resolver chose to keep — an acknowledged write of another device)
///   and the rebuild gate is set: only a snapshot restores the parent's content.
///   [`Applied::Deferred`] then says `rebuild`, which the client reports as
///   [`crate::PushError::ConflictRequiresRebuild`] (the host pushes what is queued and calls
///   `rebuild`).
///
/// A deletion whose server shape is *missing* (no bundle will ever carry it) also sets the
/// gate. No acknowledged write is touched: only queued, unacknowledged intent is dropped.
fn defer_accepted(
    conn: &mut Connection,
    catalog: &Catalog,
    conflict: &ConflictContext,
) -> Result<Applied, StepError> {
    let tx = begin_authoritative(conn)?;
    let schema = catalog.schema.as_str();
    let outbox = load_outbox_rows(&tx, catalog)?;
    let row = conflicting(catalog, &outbox, conflict)?;
    let managed = table(catalog, &row.table)?;
    let Ok(plan) = plan(managed, row, conflict, &MergeResult::AcceptServer)? else {
        return Err(StoreError::Inconsistent("accept-server plan must be valid".to_owned()).into());
    };
    let key = payload::key_param(
        managed,
        &payload::key_from_key_json(managed, &row.key_json)?,
    )?;
    let what = format!("{}.{} {}", conflict.schema, conflict.table, row.key_json);

    // Probe: apply the server's row in a savepoint, list the violations it adds, undo it.
    let tables = related_tables(&tx, catalog, &managed.name)?;
    let before = violations(&tx, &tables)?;
    tx.execute_batch("SAVEPOINT oversync_fk_probe")
        .ctx("fk probe")?;
    match &plan.local {
        LocalAction::Upsert(values) => upsert_row(&tx, managed, values)?,
        LocalAction::Delete => delete_row(&tx, managed, &key)?,
    }
    let rowid: Option<i64> = {
        let mut sql = crate::sql::SqlBuffer::new();
        sql.push("SELECT rowid FROM ")
            .identifier(&managed.name)
            .push(" WHERE ")
            .identifier(&managed.key().name)
            .push(" = ?1");
        tx.query_row(sql.as_str(), [&key], |r| r.get(0))
            .optional()
            .ctx("fk probe")?
    };
    let added: Vec<Violation> = violations(&tx, &tables)?
        .into_iter()
        .filter(|v| !before.contains(v))
        .collect();
    let mut missing = Vec::new();
    let mut rebuild = false;
    for v in &added {
        let outgoing = v.child == managed.name && rowid.is_some() && v.rowid == rowid;
        if !outgoing {
            // A local row references the deleted row: the pull brings the server's
            // consistent state, unless the server has no row state to send.
            rebuild |= conflict.server_row() == ServerRow::Missing;
            continue;
        }
        let fk = foreign_key(&tx, &v.child, v.fkid)?;
        let parent = catalog
            .table(&v.parent.to_lowercase())
            .or_else(|| catalog.table(&v.parent));
        match (fk.as_slice(), parent) {
            ([(from, to, _)], Some(parent))
                if to
                    .as_deref()
                    .is_none_or(|t| t.eq_ignore_ascii_case(&parent.key().name)) =>
            {
                let mut sql = crate::sql::SqlBuffer::new();
                sql.push("SELECT ")
                    .identifier(from)
                    .push(" FROM ")
                    .identifier(&managed.name)
                    .push(" WHERE rowid = ?1");
                let value: Value = tx
                    .query_row(sql.as_str(), [v.rowid], |r| r.get(0))
                    .ctx("fk probe")?;
                missing.push(MissingParent {
                    table: parent.name.clone(),
                    key: value,
                });
            }
            // Composite or non-key references, or an unmanaged parent: only a snapshot
            // can restore a consistent state.
            _ => rebuild = true,
        }
    }
    tx.execute_batch("ROLLBACK TO oversync_fk_probe; RELEASE oversync_fk_probe")
        .ctx("fk probe")?;

    // The queued DELETEs of the missing parents are dropped.
    let mut dropped_ordinals = BTreeSet::new();
    let mut dropped = Vec::new();
    for parent in &missing {
        let parent_table = table(catalog, &parent.table)?;
        let same = |kj: &str| -> Result<bool, StoreError> {
            Ok(
                payload::key_param(parent_table, &payload::key_from_key_json(parent_table, kj)?)?
                    == parent.key,
            )
        };
        rebuild = true;
        for r in outbox.iter().filter(|r| r.table == parent.table) {
            if r.op == Op::Delete && same(&r.key_json)? {
                dropped_ordinals.insert(r.row_ordinal);
                dropped.push(format!(
                    "{}.{} {}",
                    conflict.schema, parent.table, r.key_json
                ));
            }
        }
        let dirty: Vec<String> = tx
            .prepare_cached(
                "SELECT key_json FROM _sync_dirty_rows
                 WHERE schema_name = ?1 AND table_name = ?2 AND payload IS NULL",
            )
            .and_then(|mut s| {
                s.query_map(params![schema, parent.table], |r| r.get(0))?
                    .collect()
            })
            .ctx("read dirty rows")?;
        for kj in dirty {
            if same(&kj)? {
                delete_dirty(&tx, schema, &parent.table, &kj)?;
                dropped.push(format!("{}.{} {kj}", conflict.schema, parent.table));
            }
        }
    }

    for sibling in outbox
        .iter()
        .filter(|r| r.row_ordinal != row.row_ordinal && !dropped_ordinals.contains(&r.row_ordinal))
    {
        requeue_outbox_row(&tx, schema, sibling, sibling.base_row_version)?;
    }
    if rebuild {
        let mut attachment = Attachment::load(&tx)?;
        attachment.rebuild_required = true;
        attachment.store(&tx)?;
    }
    OutboxBundle::clear(&tx)?;
    commit_authoritative(tx)?;
    let mut message = format!(
        "the server's state of {what} would break a local foreign key; the local intent was dropped and business rows were left as they were"
    );
    if !dropped.is_empty() {
        message.push_str(&format!(
            "; the server's row still references {}, whose queued DELETE was dropped",
            dropped.join(", ")
        ));
    }
    if rebuild {
        message.push_str("; rebuild() restores the server's rows");
    } else {
        message.push_str("; the next pull brings the server's rows");
    }
    Ok(Applied::Deferred { rebuild, message })
}
