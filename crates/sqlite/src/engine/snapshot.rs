//! Snapshot steps (client chapter §7, §3.7): validate, stage chunk by chunk, and replace
//! local state in one final transaction.
//!
//! Every row is staged before anything is applied, and the stage is keyed by snapshot id, so a
//! partial download never leaks into the business tables. Until the final commit, business
//! rows, checkpoint and source are unchanged (§7.5).

use oversync_protocol::op::Op;
use oversync_protocol::wire::{SnapshotChunkResponse, SnapshotSession};
use rusqlite::{Connection, params};

use super::push::received_key;
use super::state::{self, Attachment, Operation, OperationKind, OutboxBundle, OutboxState};
use super::{
    StepError, apply_row, begin, begin_authoritative, clear_table, commit_authoritative,
    delete_row, upsert_row,
};
use crate::catalog::Catalog;
use crate::error::{ProtocolViolation, SqliteContext, StoreError};
use crate::payload;
use crate::schema;

const E: &str = "snapshot";

/// §7.2 validation of a snapshot-session create response.
pub(crate) fn validate_session(s: &SnapshotSession) -> Result<(), ProtocolViolation> {
    if s.snapshot_id.trim().is_empty() || s.expires_at.trim().is_empty() {
        return Err(ProtocolViolation::new(
            E,
            "snapshot_id and expires_at must be set",
        ));
    }
    if s.snapshot_bundle_seq < 0 || s.row_count < 0 || s.byte_count < 0 {
        return Err(ProtocolViolation::new(E, "negative snapshot counters"));
    }
    if s.row_count > 0 && s.snapshot_bundle_seq <= 0 {
        return Err(ProtocolViolation::new(
            E,
            "rows without a snapshot_bundle_seq",
        ));
    }
    Ok(())
}

/// §7.2 validation of one chunk fetched after `after`.
pub(crate) fn validate_chunk(
    chunk: &SnapshotChunkResponse,
    session: &SnapshotSession,
    after: i64,
) -> Result<(), ProtocolViolation> {
    if chunk.snapshot_id != session.snapshot_id
        || chunk.snapshot_bundle_seq != session.snapshot_bundle_seq
    {
        return Err(ProtocolViolation::new(
            E,
            "chunk does not belong to the session",
        ));
    }
    if !chunk.rows.is_empty() && chunk.snapshot_bundle_seq <= 0 {
        return Err(ProtocolViolation::new(
            E,
            "rows without a snapshot_bundle_seq",
        ));
    }
    if chunk.next_row_ordinal != after + chunk.rows.len() as i64 {
        return Err(ProtocolViolation::new(E, "unexpected next_row_ordinal"));
    }
    if chunk.has_more && chunk.rows.is_empty() {
        return Err(ProtocolViolation::new(E, "has_more with no rows"));
    }
    for row in &chunk.rows {
        if row.schema.trim().is_empty() || row.table.trim().is_empty() || row.key.is_empty() {
            return Err(ProtocolViolation::new(
                E,
                "snapshot row identity must be set",
            ));
        }
        if row.row_version <= 0 {
            return Err(ProtocolViolation::new(
                E,
                "snapshot row row_version must be > 0",
            ));
        }
        if row.payload.get().trim().is_empty() {
            return Err(ProtocolViolation::new(
                E,
                "snapshot row payload must be set",
            ));
        }
    }
    Ok(())
}

/// Starts a gated rebuild (§7.1): requires the binding attached to `user`, sets
/// `rebuild_required` and clears the whole stage, in one transaction.
pub(crate) fn begin_gated_rebuild(conn: &mut Connection, user: &str) -> Result<(), StepError> {
    let tx = begin(conn)?;
    let mut attachment = Attachment::load(&tx)?;
    if !attachment.is_attached_to(user) {
        return Err(StepError::AttachRequired);
    }
    attachment.rebuild_required = true;
    attachment.store(&tx)?;
    tx.execute("DELETE FROM _sync_snapshot_stage", [])
        .ctx("clear snapshot stage")?;
    tx.commit().ctx("commit rebuild gate")?;
    Ok(())
}

/// Remote replace step B (§3.7): whether the operation row names a completely staged
/// snapshot, returning its session data.
pub(crate) fn complete_staged_replace(
    conn: &Connection,
) -> Result<Option<SnapshotSession>, StoreError> {
    let operation = Operation::load(conn)?;
    if operation.staged_snapshot_id.is_empty() {
        return Ok(None);
    }
    let staged: i64 = conn
        .query_row(
            "SELECT count(*) FROM _sync_snapshot_stage WHERE snapshot_id = ?1",
            [&operation.staged_snapshot_id],
            |r| r.get(0),
        )
        .ctx("count staged snapshot rows")?;
    if staged != operation.snapshot_row_count {
        return Ok(None);
    }
    Ok(Some(SnapshotSession {
        snapshot_id: operation.staged_snapshot_id,
        snapshot_bundle_seq: operation.snapshot_bundle_seq,
        row_count: operation.snapshot_row_count,
        byte_count: 0,
        expires_at: String::new(),
    }))
}

/// Clears the stage and records (or blanks, with `None`) the staged session in the operation
/// row, in one transaction.
pub(crate) fn record_staged_replace(
    conn: &mut Connection,
    session: Option<&SnapshotSession>,
) -> Result<(), StoreError> {
    let tx = begin(conn)?;
    tx.execute("DELETE FROM _sync_snapshot_stage", [])
        .ctx("clear snapshot stage")?;
    let mut operation = Operation::load(&tx)?;
    operation.staged_snapshot_id = session.map(|s| s.snapshot_id.clone()).unwrap_or_default();
    operation.snapshot_bundle_seq = session.map_or(0, |s| s.snapshot_bundle_seq);
    operation.snapshot_row_count = session.map_or(0, |s| s.row_count);
    operation.store(&tx)?;
    tx.commit().ctx("commit staged snapshot record")
}

/// Stages one validated chunk in its own transaction (ordinals `after + i + 1`).
pub(crate) fn stage_chunk(
    conn: &mut Connection,
    catalog: &Catalog,
    chunk: &SnapshotChunkResponse,
    after: i64,
) -> Result<(), StepError> {
    let tx = begin(conn)?;
    for (i, row) in chunk.rows.iter().enumerate() {
        let (table, _, kj) = received_key(&tx, catalog, E, &row.schema, &row.table, &row.key)?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO _sync_snapshot_stage (snapshot_id, row_ordinal, schema_name,
                table_name, key_json, row_version, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                chunk.snapshot_id,
                after + i as i64 + 1,
                catalog.schema,
                table.name,
                kj,
                row.row_version,
                row.payload.get(),
            ])
        })
        .ctx("stage snapshot row")?;
    }
    tx.commit().ctx("commit snapshot chunk")?;
    Ok(())
}

/// Options of the final apply (§7.3).
#[derive(Debug, Clone, Default)]
pub(crate) struct ApplyOptions {
    /// Re-apply the outbox's local intent on top and keep it (rotated rebuild).
    pub(crate) preserve_outbox: bool,
    /// Adopt this source (rotated rebuild); it must be fresh.
    pub(crate) rotate_to: Option<String>,
    /// Raise `next_source_bundle_id` of the target source to at least this (replay-pruned).
    pub(crate) advance_floor: Option<i64>,
    /// Clear a pending operation (source recovery, remote replace).
    pub(crate) clear_operation: bool,
    /// Keep dirty rows: re-apply their local intent on top of the snapshot (and of a preserved
    /// outbox, being newer) and keep them queued, rebased on the snapshot's row versions
    /// (§12 A3 replay-pruned recovery, §12 A4 rotated rebuild).
    pub(crate) preserve_dirty: bool,
}

/// The final snapshot apply (§7.3), one transaction. Returns the source now in use.
pub(crate) fn apply(
    conn: &mut Connection,
    catalog: &Catalog,
    session: &SnapshotSession,
    options: &ApplyOptions,
) -> Result<String, StepError> {
    let tx = begin_authoritative(conn)?;
    let mut attachment = Attachment::load(&tx)?;
    if !attachment.attached || attachment.attached_user_id.trim().is_empty() {
        return Err(StepError::AttachRequired);
    }
    let kept_dirty: Vec<(String, String, String, Option<String>)> = if options.preserve_dirty {
        tx.prepare(
            "SELECT table_name, key_json, op, payload FROM _sync_dirty_rows ORDER BY dirty_ordinal",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .ctx("read dirty rows to preserve")?
    } else {
        Vec::new()
    };
    for name in schema::known_tables(&tx, catalog)? {
        clear_table(&tx, &catalog.schema, &name)?;
    }
    if !options.preserve_dirty {
        tx.execute("DELETE FROM _sync_dirty_rows", [])
            .ctx("clear dirty rows")?;
    }
    if !options.preserve_outbox {
        OutboxBundle::clear(&tx)?;
    }
    tx.execute("DELETE FROM _sync_push_stage", [])
        .ctx("clear push stage")?;

    // Streamed row by row (the statement reads only the stage; the writes go to business
    // tables and row state), so memory stays flat however large the snapshot is.
    //
    // Table by table in the catalog's FK order (parents first), each in snapshot order. The
    // snapshot is ordered by server table id and key, so a child table can come before its
    // parent; SQLite then counts a pending deferred-FK violation per child row, and while
    // that count is non-zero every parent insert rescans the child table (no index on its
    // FK column): quadratic, ~3 min for 100k rows. Parents first, no violation is pending.
    // Rows of an unconfigured table are never read here and fail the count check below.
    let mut applied: i64 = 0;
    {
        let mut ordered: Vec<&crate::catalog::ManagedTable> = catalog.tables.iter().collect();
        ordered.sort_by_key(|t| t.rank);
        let mut stmt = tx
            .prepare(
                "SELECT key_json, row_version, payload FROM _sync_snapshot_stage
                 WHERE snapshot_id = ?1 AND table_name = ?2 ORDER BY row_ordinal",
            )
            .ctx("read snapshot stage")?;
        for table in ordered {
            let mut rows = stmt
                .query(params![session.snapshot_id, table.name])
                .ctx("read snapshot stage")?;
            while let Some(row) = rows.next().ctx("read snapshot stage")? {
                let kj: String = row.get(0).ctx("read snapshot stage")?;
                let version: i64 = row.get(1).ctx("read snapshot stage")?;
                let payload: String = row.get(2).ctx("read snapshot stage")?;
                apply_row(
                    &tx,
                    &catalog.schema,
                    table,
                    &kj,
                    Op::Insert,
                    version,
                    Some(&payload),
                )?;
                applied += 1;
            }
        }
    }
    if applied != session.row_count {
        return Err(ProtocolViolation::new(
            E,
            format!("staged {applied} rows, session says {}", session.row_count),
        )
        .into());
    }

    if options.preserve_outbox {
        let rows: Vec<(String, String, String, Option<String>)> = tx
            .prepare(
                "SELECT table_name, key_json, op, local_payload FROM _sync_outbox_rows ORDER BY row_ordinal",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .ctx("read outbox for re-apply")?;
        for (table_name, kj, op, local) in rows {
            let table = catalog.table(&table_name).ok_or_else(|| {
                StoreError::Inconsistent(format!("outbox table {table_name} is not configured"))
            })?;
            let key = payload::key_param(table, &payload::key_from_key_json(table, &kj)?)?;
            if op == "DELETE" {
                delete_row(&tx, table, &key)?;
            } else {
                let Some(local) = local else {
                    return Err(StoreError::Inconsistent(
                        "outbox upsert without payload".to_owned(),
                    )
                    .into());
                };
                // Local payloads carry BLOBs as hex: decode them as such (§12 B1).
                upsert_row(&tx, table, &payload::local_values(table, &local)?)?;
            }
        }
    }

    // Newer intent last: dirty rows were written after the outbox was frozen (§12 A4).
    for (table_name, kj, op, local) in &kept_dirty {
        let Some(table) = catalog.table(table_name) else {
            continue;
        };
        let key = payload::key_param(table, &payload::key_from_key_json(table, kj)?)?;
        match local {
            Some(local) => upsert_row(&tx, table, &payload::local_values(table, local)?)?,
            None => delete_row(&tx, table, &key)?,
        }
        let base = super::row_state(&tx, &catalog.schema, table_name, kj)?.map_or(0, |(v, _)| v);
        super::requeue_dirty(
            &tx,
            &catalog.schema,
            table_name,
            kj,
            op,
            base,
            local.as_deref(),
        )?;
    }

    let target = match &options.rotate_to {
        Some(replacement) => {
            if let Some((next, replaced_by)) = state::source_row(&tx, replacement)?
                && (next != 1 || !replaced_by.is_empty())
            {
                return Err(StoreError::Inconsistent(
                    "rotated rebuild requires a fresh source id".to_owned(),
                )
                .into());
            }
            state::ensure_source(&tx, replacement)?;
            if *replacement != attachment.current_source_id {
                tx.execute(
                    "UPDATE _sync_source_state SET replaced_by_source_id = ?2 WHERE source_id = ?1",
                    [&attachment.current_source_id, replacement],
                )
                .ctx("mark source replaced")?;
            }
            replacement.clone()
        }
        None => attachment.current_source_id.clone(),
    };
    attachment.current_source_id = target.clone();
    attachment.last_bundle_seq_seen = session.snapshot_bundle_seq;
    attachment.rebuild_required = false;
    attachment.store(&tx)?;
    if options.preserve_outbox {
        let mut bundle = OutboxBundle::load(&tx)?;
        if state::outbox_count(&tx)? > 0 {
            if bundle.state != OutboxState::Prepared {
                return Err(StoreError::Inconsistent(
                    "preserved outbox must be prepared".to_owned(),
                )
                .into());
            }
            tx.execute("UPDATE _sync_outbox_rows SET source_bundle_id = 1", [])
                .ctx("renumber outbox")?;
            bundle.source_id = target.clone();
            bundle.source_bundle_id = 1;
            bundle.remote_bundle_hash.clear();
            bundle.remote_bundle_seq = 0;
            bundle.store(&tx)?;
        }
    }
    if let Some(floor) = options.advance_floor {
        state::raise_source_floor(&tx, &target, floor)?;
    }
    if options.clear_operation {
        let operation = Operation::load(&tx)?;
        if operation.kind != OperationKind::None {
            Operation::default().store(&tx)?;
        }
    }
    tx.execute(
        "DELETE FROM _sync_snapshot_stage WHERE snapshot_id = ?1",
        [&session.snapshot_id],
    )
    .ctx("clear applied snapshot stage")?;
    commit_authoritative(tx)?;
    Ok(target)
}
