//! Typed access to the singleton metadata rows and the small queries every step needs.
//!
//! Each struct mirrors one singleton table; `load` reads it inside the caller's transaction
//! and `store` writes every column back, so a step changes durable state only by building the
//! new record and storing it in the same transaction as the data it describes.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{SqliteContext, StoreError};

/// `_sync_attachment_state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attachment {
    pub(crate) current_source_id: String,
    /// `true` when `binding_state = 'attached'`.
    pub(crate) attached: bool,
    pub(crate) attached_user_id: String,
    pub(crate) schema_name: String,
    pub(crate) last_bundle_seq_seen: i64,
    pub(crate) rebuild_required: bool,
    pub(crate) pending_initialization_id: String,
}

impl Attachment {
    pub(crate) fn load(conn: &Connection) -> Result<Attachment, StoreError> {
        conn.query_row(
            "SELECT current_source_id, binding_state, attached_user_id, schema_name,
                    last_bundle_seq_seen, rebuild_required, pending_initialization_id
             FROM _sync_attachment_state WHERE singleton_key = 1",
            [],
            |r| {
                Ok(Attachment {
                    current_source_id: r.get(0)?,
                    attached: r.get::<_, String>(1)? == "attached",
                    attached_user_id: r.get(2)?,
                    schema_name: r.get(3)?,
                    last_bundle_seq_seen: r.get(4)?,
                    rebuild_required: r.get::<_, i64>(5)? != 0,
                    pending_initialization_id: r.get(6)?,
                })
            },
        )
        .optional()
        .ctx("read attachment state")
        .map(Option::unwrap_or_default)
    }

    pub(crate) fn store(&self, conn: &Connection) -> Result<(), StoreError> {
        conn.execute(
            "INSERT INTO _sync_attachment_state (singleton_key, current_source_id, binding_state,
                attached_user_id, schema_name, last_bundle_seq_seen, rebuild_required,
                pending_initialization_id)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(singleton_key) DO UPDATE SET
                current_source_id = excluded.current_source_id,
                binding_state = excluded.binding_state,
                attached_user_id = excluded.attached_user_id,
                schema_name = excluded.schema_name,
                last_bundle_seq_seen = excluded.last_bundle_seq_seen,
                rebuild_required = excluded.rebuild_required,
                pending_initialization_id = excluded.pending_initialization_id",
            params![
                self.current_source_id,
                if self.attached {
                    "attached"
                } else {
                    "anonymous"
                },
                self.attached_user_id,
                self.schema_name,
                self.last_bundle_seq_seen,
                i64::from(self.rebuild_required),
                self.pending_initialization_id,
            ],
        )
        .ctx("write attachment state")?;
        Ok(())
    }

    /// Attached to exactly `user`.
    pub(crate) fn is_attached_to(&self, user: &str) -> bool {
        self.attached && !user.is_empty() && self.attached_user_id == user
    }
}

/// The kinds of durable operation (`_sync_operation_state.kind`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum OperationKind {
    #[default]
    None,
    RemoteReplace,
    SourceRecovery,
    /// A value this build does not know (forward compatibility).
    Unknown(String),
}

/// `_sync_operation_state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Operation {
    pub(crate) kind: OperationKind,
    pub(crate) target_user_id: String,
    pub(crate) reason: String,
    pub(crate) replacement_source_id: String,
    pub(crate) staged_snapshot_id: String,
    pub(crate) snapshot_bundle_seq: i64,
    pub(crate) snapshot_row_count: i64,
}

impl Operation {
    pub(crate) fn load(conn: &Connection) -> Result<Operation, StoreError> {
        conn.query_row(
            "SELECT kind, target_user_id, reason, replacement_source_id, staged_snapshot_id,
                    snapshot_bundle_seq, snapshot_row_count
             FROM _sync_operation_state WHERE singleton_key = 1",
            [],
            |r| {
                let kind: String = r.get(0)?;
                Ok(Operation {
                    kind: match kind.as_str() {
                        "none" => OperationKind::None,
                        "remote_replace" => OperationKind::RemoteReplace,
                        "source_recovery" => OperationKind::SourceRecovery,
                        _ => OperationKind::Unknown(kind),
                    },
                    target_user_id: r.get(1)?,
                    reason: r.get(2)?,
                    replacement_source_id: r.get(3)?,
                    staged_snapshot_id: r.get(4)?,
                    snapshot_bundle_seq: r.get(5)?,
                    snapshot_row_count: r.get(6)?,
                })
            },
        )
        .optional()
        .ctx("read operation state")
        .map(Option::unwrap_or_default)
    }

    pub(crate) fn store(&self, conn: &Connection) -> Result<(), StoreError> {
        let kind = match &self.kind {
            OperationKind::None => "none",
            OperationKind::RemoteReplace => "remote_replace",
            OperationKind::SourceRecovery => "source_recovery",
            OperationKind::Unknown(k) => k.as_str(),
        };
        conn.execute(
            "INSERT INTO _sync_operation_state (singleton_key, kind, target_user_id, reason,
                replacement_source_id, staged_snapshot_id, snapshot_bundle_seq, snapshot_row_count)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(singleton_key) DO UPDATE SET
                kind = excluded.kind, target_user_id = excluded.target_user_id,
                reason = excluded.reason, replacement_source_id = excluded.replacement_source_id,
                staged_snapshot_id = excluded.staged_snapshot_id,
                snapshot_bundle_seq = excluded.snapshot_bundle_seq,
                snapshot_row_count = excluded.snapshot_row_count",
            params![
                kind,
                self.target_user_id,
                self.reason,
                self.replacement_source_id,
                self.staged_snapshot_id,
                self.snapshot_bundle_seq,
                self.snapshot_row_count,
            ],
        )
        .ctx("write operation state")?;
        Ok(())
    }

    /// The recovery reason as callers see it: an unknown stored reason reads as
    /// `history_pruned`.
    pub(crate) fn recovery_code(&self) -> String {
        match self.reason.as_str() {
            "history_pruned"
            | "source_sequence_out_of_order"
            | "source_sequence_changed"
            | "source_retired" => self.reason.clone(),
            _ => "history_pruned".to_owned(),
        }
    }
}

/// `_sync_outbox_bundle.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum OutboxState {
    #[default]
    None,
    Prepared,
    CommittedRemote,
}

/// `_sync_outbox_bundle`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OutboxBundle {
    pub(crate) state: OutboxState,
    pub(crate) source_id: String,
    pub(crate) source_bundle_id: i64,
    pub(crate) canonical_request_hash: String,
    pub(crate) row_count: i64,
    pub(crate) initialization_id: String,
    pub(crate) remote_bundle_hash: String,
    pub(crate) remote_bundle_seq: i64,
}

impl OutboxBundle {
    pub(crate) fn load(conn: &Connection) -> Result<OutboxBundle, StoreError> {
        conn.query_row(
            "SELECT state, source_id, source_bundle_id, canonical_request_hash, row_count,
                    initialization_id, remote_bundle_hash, remote_bundle_seq
             FROM _sync_outbox_bundle WHERE singleton_key = 1",
            [],
            |r| {
                let state: String = r.get(0)?;
                Ok(OutboxBundle {
                    state: match state.as_str() {
                        "prepared" => OutboxState::Prepared,
                        "committed_remote" => OutboxState::CommittedRemote,
                        _ => OutboxState::None,
                    },
                    source_id: r.get(1)?,
                    source_bundle_id: r.get(2)?,
                    canonical_request_hash: r.get(3)?,
                    row_count: r.get(4)?,
                    initialization_id: r.get(5)?,
                    remote_bundle_hash: r.get(6)?,
                    remote_bundle_seq: r.get(7)?,
                })
            },
        )
        .optional()
        .ctx("read outbox bundle")
        .map(Option::unwrap_or_default)
    }

    pub(crate) fn store(&self, conn: &Connection) -> Result<(), StoreError> {
        let state = match self.state {
            OutboxState::None => "none",
            OutboxState::Prepared => "prepared",
            OutboxState::CommittedRemote => "committed_remote",
        };
        conn.execute(
            "INSERT INTO _sync_outbox_bundle (singleton_key, state, source_id, source_bundle_id,
                canonical_request_hash, row_count, initialization_id, remote_bundle_hash,
                remote_bundle_seq)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(singleton_key) DO UPDATE SET
                state = excluded.state, source_id = excluded.source_id,
                source_bundle_id = excluded.source_bundle_id,
                canonical_request_hash = excluded.canonical_request_hash,
                row_count = excluded.row_count, initialization_id = excluded.initialization_id,
                remote_bundle_hash = excluded.remote_bundle_hash,
                remote_bundle_seq = excluded.remote_bundle_seq",
            params![
                state,
                self.source_id,
                self.source_bundle_id,
                self.canonical_request_hash,
                self.row_count,
                self.initialization_id,
                self.remote_bundle_hash,
                self.remote_bundle_seq,
            ],
        )
        .ctx("write outbox bundle")?;
        Ok(())
    }

    /// Writes the all-defaults record and deletes every outbox row.
    pub(crate) fn clear(conn: &Connection) -> Result<(), StoreError> {
        conn.execute("DELETE FROM _sync_outbox_rows", [])
            .ctx("clear outbox rows")?;
        OutboxBundle::default().store(conn)
    }
}

/// Inserts a `_sync_source_state` row for `source_id` if absent (counter 1).
pub(crate) fn ensure_source(conn: &Connection, source_id: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _sync_source_state (source_id, next_source_bundle_id, replaced_by_source_id)
         VALUES (?1, 1, '') ON CONFLICT(source_id) DO NOTHING",
        [source_id],
    )
    .ctx("ensure source state")?;
    Ok(())
}

/// `(next_source_bundle_id, replaced_by_source_id)` of `source_id`, if known.
pub(crate) fn source_row(
    conn: &Connection,
    source_id: &str,
) -> Result<Option<(i64, String)>, StoreError> {
    conn.query_row(
        "SELECT next_source_bundle_id, replaced_by_source_id FROM _sync_source_state WHERE source_id = ?1",
        [source_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .ctx("read source state")
}

/// Raises `next_source_bundle_id` of `source_id` to at least `floor`.
pub(crate) fn raise_source_floor(
    conn: &Connection,
    source_id: &str,
    floor: i64,
) -> Result<(), StoreError> {
    ensure_source(conn, source_id)?;
    conn.execute(
        "UPDATE _sync_source_state SET next_source_bundle_id = max(next_source_bundle_id, ?2)
         WHERE source_id = ?1",
        params![source_id, floor],
    )
    .ctx("advance source bundle id")?;
    Ok(())
}

/// Rows in `_sync_dirty_rows`.
pub(crate) fn dirty_count(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT count(*) FROM _sync_dirty_rows", [], |r| r.get(0))
        .ctx("count dirty rows")
}

/// Rows in `_sync_outbox_rows`.
pub(crate) fn outbox_count(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT count(*) FROM _sync_outbox_rows", [], |r| r.get(0))
        .ctx("count outbox rows")
}

/// Sets the persisted apply-mode flag that silences capture triggers.
pub(crate) fn set_apply_mode(conn: &Connection, on: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE _sync_apply_state SET apply_mode = ?1 WHERE singleton_key = 1",
        [i64::from(on)],
    )
    .ctx("set apply mode")?;
    Ok(())
}
