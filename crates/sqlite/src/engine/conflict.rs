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
//!   wrote it: the newer intent is retried against the server's version, as §4.5 does for
//!   edits made during a push.
//! * a merged payload that does not decode or changes the key is an invalid resolution
//!   (replayable), not a storage error.

use oversync_protocol::op::Op;
use oversync_protocol::wire::{PushConflictDetails, SyncKey};
use rusqlite::Connection;
use rusqlite::types::Value;
use serde_json::value::RawValue;

use super::push::{OutboxRow, load_outbox_rows, table};
use super::state::OutboxBundle;
use super::{
    StepError, begin_authoritative, commit_authoritative, delete_row, delete_row_state, dirty_row,
    live_payload, rebase_dirty, requeue_dirty, upsert_row, upsert_row_state,
};
use crate::catalog::{Catalog, ManagedTable};
use crate::conflict::{ConflictContext, MergeResult, ServerRow};
use crate::error::{ProtocolViolation, StoreError};
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
/// decision, requeues the whole outbox and leaves business rows alone.
pub(crate) fn apply(
    conn: &mut Connection,
    catalog: &Catalog,
    conflict: &ConflictContext,
    result: &MergeResult,
) -> Result<Applied, StepError> {
    let tx = begin_authoritative(conn)?;
    let schema = catalog.schema.as_str();
    let outbox = load_outbox_rows(&tx, catalog)?;
    let Some(row) = find(
        catalog,
        &outbox,
        &conflict.schema,
        &conflict.table,
        &conflict.key,
    )?
    else {
        return Err(StoreError::Inconsistent(format!(
            "conflicting row {}.{} is no longer in the outbox",
            conflict.schema, conflict.table
        ))
        .into());
    };
    let managed = table(catalog, &row.table)?;
    let plan = match plan(managed, row, conflict, result)? {
        Ok(plan) => plan,
        Err(message) => {
            for r in &outbox {
                requeue_outbox_row(&tx, schema, r, r.base_row_version)?;
            }
            OutboxBundle::clear(&tx)?;
            commit_authoritative(tx)?;
            return Ok(Applied::Invalid(message));
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
        rebase_dirty(&tx, schema, &row.table, &row.key_json, base)?;
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
    commit_authoritative(tx)?;
    Ok(Applied::Resolved)
}
