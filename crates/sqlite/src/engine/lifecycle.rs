//! Lifecycle steps (client chapter §3): open, the local half of attach, connect resolutions,
//! detach, seed-lease failure, source-recovery entry, status reads.

use rusqlite::Connection;

use super::state::{self, Attachment, Operation, OperationKind, OutboxBundle};
use super::{begin, clear_table, key_json, live_payload, requeue_dirty};
use crate::catalog::Catalog;
use crate::error::{SqliteContext, StoreError};
use crate::payload;
use crate::schema;
use crate::sql::SqlBuffer;

/// What `open` restored, for the in-memory session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) source_id: String,
    /// The attached user, or empty.
    pub(crate) user_id: String,
    pub(crate) lease: String,
}

/// Mints a source id that is non-blank, differs from `current` and is unknown locally (§3.10).
pub(crate) fn mint_source(
    conn: &Connection,
    current: &str,
    generate: &mut dyn FnMut() -> String,
) -> Result<String, StoreError> {
    for _ in 0..100 {
        let candidate = generate();
        if candidate.trim().is_empty() || candidate == current {
            continue;
        }
        if state::source_row(conn, &candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    Err(StoreError::Inconsistent(
        "could not mint a fresh source id in 100 attempts".to_owned(),
    ))
}

/// `open` (§3.4): restores the durable state, mints and persists a source on first use and
/// bootstrap-captures pre-existing rows exactly once. One transaction.
pub(crate) fn open(
    conn: &mut Connection,
    catalog: &Catalog,
    generate: &mut dyn FnMut() -> String,
) -> Result<Opened, StoreError> {
    let tx = begin(conn)?;
    let mut attachment = Attachment::load(&tx)?;
    if attachment.current_source_id.trim().is_empty() {
        attachment.current_source_id = mint_source(&tx, "", generate)?;
        if !attachment.attached {
            bootstrap_capture(&tx, catalog)?;
        }
    }
    if attachment.schema_name.trim().is_empty() {
        attachment.schema_name = catalog.schema.clone();
    }
    state::ensure_source(&tx, &attachment.current_source_id)?;
    attachment.store(&tx)?;
    state::set_apply_mode(&tx, false)?;
    tx.commit().ctx("commit open")?;
    let user_id = if attachment.attached && !attachment.attached_user_id.trim().is_empty() {
        attachment.attached_user_id.clone()
    } else {
        String::new()
    };
    Ok(Opened {
        source_id: attachment.current_source_id,
        user_id,
        lease: attachment.pending_initialization_id,
    })
}

/// Upserts an `INSERT` dirty row (base 0) for every existing row of every configured table.
fn bootstrap_capture(conn: &Connection, catalog: &Catalog) -> Result<(), StoreError> {
    for table in &catalog.tables {
        let key = table.key();
        let mut sql = SqlBuffer::new();
        sql.push("SELECT ");
        if key.is_blob {
            sql.push("lower(hex(").identifier(&key.name).push("))");
        } else {
            sql.identifier(&key.name);
        }
        sql.push(" AS k FROM ")
            .identifier(&table.name)
            .push(" WHERE ")
            .identifier(&key.name)
            .push(" IS NOT NULL ORDER BY k");
        let keys: Vec<String> = conn
            .prepare(sql.as_str())
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .ctx("read rows for bootstrap capture")?;
        for local in keys {
            let param = payload::key_param(table, &local)?;
            let Some(payload) = live_payload(conn, table, &param)? else {
                continue;
            };
            let kj = key_json(conn, table, &local)?;
            requeue_dirty(
                conn,
                &catalog.schema,
                &table.name,
                &kj,
                "INSERT",
                0,
                Some(&payload),
            )?;
        }
    }
    Ok(())
}

/// What attach can decide without the network (§3.5 steps 3–5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalAttach {
    /// A pending remote replace for this user: finish it (stage + apply), no connect.
    FinishRemoteReplace,
    /// Already attached to this user with this source: resume, no network.
    Resume { lease: String },
    /// Attached to another user.
    BindingConflict { attached_user: String },
    /// A pending remote replace for another user.
    LocalStateConflict { reason: String },
    /// Ask the server (capabilities, then connect).
    Connect { has_local_pending_rows: bool },
}

/// Decides how `attach(user)` proceeds from durable state.
pub(crate) fn decide_attach(
    conn: &Connection,
    source_id: &str,
    user: &str,
) -> Result<LocalAttach, StoreError> {
    let attachment = Attachment::load(conn)?;
    let operation = Operation::load(conn)?;
    if operation.kind == OperationKind::RemoteReplace {
        if operation.target_user_id != user {
            return Ok(LocalAttach::LocalStateConflict {
                reason: format!(
                    "pending remote_replace belongs to scope {} on source {}",
                    operation.target_user_id, attachment.current_source_id
                ),
            });
        }
        return Ok(LocalAttach::FinishRemoteReplace);
    }
    if attachment.is_attached_to(user) && attachment.current_source_id == source_id {
        return Ok(LocalAttach::Resume {
            lease: attachment.pending_initialization_id,
        });
    }
    if attachment.attached && !attachment.attached_user_id.trim().is_empty() {
        return Ok(LocalAttach::BindingConflict {
            attached_user: attachment.attached_user_id,
        });
    }
    // §12 A7: a frozen outbox is local data too.
    let pending = state::dirty_count(conn)? + state::outbox_count(conn)?;
    Ok(LocalAttach::Connect {
        has_local_pending_rows: pending > 0,
    })
}

/// Why persisting a connected state was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundElsewhere(pub(crate) String);

/// "Persist connected state" (§3.6), in one transaction (§12 C7): binding `attached(user)`,
/// source, lease, schema; operation cleared. Refused when the row is bound to another user or
/// another source.
pub(crate) fn persist_connected(
    conn: &mut Connection,
    catalog: &Catalog,
    source_id: &str,
    user: &str,
    lease: &str,
) -> Result<Result<(), BoundElsewhere>, StoreError> {
    let tx = begin(conn)?;
    let mut attachment = Attachment::load(&tx)?;
    if attachment.attached
        && !attachment.attached_user_id.is_empty()
        && attachment.attached_user_id != user
    {
        return Ok(Err(BoundElsewhere(format!(
            "attachment is bound to user {}",
            attachment.attached_user_id
        ))));
    }
    if !attachment.current_source_id.is_empty() && attachment.current_source_id != source_id {
        return Ok(Err(BoundElsewhere(format!(
            "attachment is bound to source {}",
            attachment.current_source_id
        ))));
    }
    attachment.current_source_id = source_id.to_owned();
    attachment.attached = true;
    attachment.attached_user_id = user.to_owned();
    attachment.pending_initialization_id = lease.to_owned();
    if attachment.schema_name.trim().is_empty() {
        attachment.schema_name = catalog.schema.clone();
    }
    state::ensure_source(&tx, source_id)?;
    attachment.store(&tx)?;
    Operation::default().store(&tx)?;
    tx.commit().ctx("commit connected state")?;
    Ok(Ok(()))
}

/// Remote replace step A (§3.7): binding anonymous, operation `remote_replace(user)`.
pub(crate) fn begin_remote_replace(conn: &mut Connection, user: &str) -> Result<(), StoreError> {
    let tx = begin(conn)?;
    let mut attachment = Attachment::load(&tx)?;
    attachment.attached = false;
    attachment.attached_user_id.clear();
    attachment.pending_initialization_id.clear();
    attachment.store(&tx)?;
    Operation {
        kind: OperationKind::RemoteReplace,
        target_user_id: user.to_owned(),
        ..Operation::default()
    }
    .store(&tx)?;
    tx.commit().ctx("commit begin remote replace")
}

/// Remote replace step C (§3.7): binding `attached(user)` with checkpoint 0 and gate 0. Unlike
/// the reference, the staged snapshot fields are kept until the apply (§12 C9).
pub(crate) fn prepare_remote_replace(
    conn: &mut Connection,
    catalog: &Catalog,
    source_id: &str,
    user: &str,
) -> Result<(), StoreError> {
    let tx = begin(conn)?;
    state::ensure_source(&tx, source_id)?;
    let attachment = Attachment {
        current_source_id: source_id.to_owned(),
        attached: true,
        attached_user_id: user.to_owned(),
        schema_name: catalog.schema.clone(),
        last_bundle_seq_seen: 0,
        rebuild_required: false,
        pending_initialization_id: String::new(),
    };
    attachment.store(&tx)?;
    tx.commit().ctx("commit prepare remote replace")
}

/// `PendingSyncStatus` inputs: (dirty rows, outbox rows, lease held, attached).
pub(crate) fn pending(conn: &Connection) -> Result<(i64, i64, bool, bool), StoreError> {
    let attachment = Attachment::load(conn)?;
    Ok((
        state::dirty_count(conn)?,
        state::outbox_count(conn)?,
        !attachment.pending_initialization_id.is_empty(),
        attachment.attached,
    ))
}

/// What detach did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detached {
    /// Nothing changed: attached data is pending.
    Blocked { pending_row_count: i64 },
    /// Data cleared; the database is anonymous under `new_source`.
    Done { new_source: String },
}

/// `detach` (§3.8) with fixes A5 (fresh source, reset attachment row) and A9 (children
/// first, foreign keys deferred). One transaction.
pub(crate) fn detach(
    conn: &mut Connection,
    catalog: &Catalog,
    generate: &mut dyn FnMut() -> String,
) -> Result<Detached, StoreError> {
    let tx = begin(conn)?;
    let (dirty, outbox, lease, attached) = pending(&tx)?;
    let total = dirty + outbox + i64::from(lease);
    if attached && total > 0 {
        return Ok(Detached::Blocked {
            pending_row_count: total,
        });
    }
    tx.pragma_update(None, "defer_foreign_keys", "ON")
        .ctx("defer foreign keys")?;
    state::set_apply_mode(&tx, true)?;
    let mut tables = schema::known_tables(&tx, catalog)?;
    // Children first: configured tables by descending FK rank, unconfigured ones last.
    tables.sort_by_key(|name| std::cmp::Reverse(catalog.table(name).map_or(0, |t| t.rank + 1)));
    for name in &tables {
        clear_table(&tx, &catalog.schema, name)?;
    }
    tx.execute_batch(
        "DELETE FROM _sync_dirty_rows; DELETE FROM _sync_push_stage; DELETE FROM _sync_snapshot_stage;",
    )
    .ctx("clear sync metadata")?;
    OutboxBundle::clear(&tx)?;
    state::set_apply_mode(&tx, false)?;
    let old = Attachment::load(&tx)?;
    let new_source = mint_source(&tx, &old.current_source_id, generate)?;
    state::ensure_source(&tx, &new_source)?;
    if !old.current_source_id.is_empty() {
        tx.execute(
            "UPDATE _sync_source_state SET replaced_by_source_id = ?2 WHERE source_id = ?1",
            [&old.current_source_id, &new_source],
        )
        .ctx("mark source replaced")?;
    }
    Attachment {
        current_source_id: new_source.clone(),
        schema_name: catalog.schema.clone(),
        ..Attachment::default()
    }
    .store(&tx)?;
    Operation::default().store(&tx)?;
    tx.commit().ctx("commit detach")?;
    Ok(Detached::Done { new_source })
}

/// §3.9: the seed lease is no longer valid. Drops the binding, keeps the outbox.
pub(crate) fn drop_binding_after_lease_failure(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = begin(conn)?;
    let mut attachment = Attachment::load(&tx)?;
    attachment.attached = false;
    attachment.attached_user_id.clear();
    attachment.pending_initialization_id.clear();
    attachment.store(&tx)?;
    Operation::default().store(&tx)?;
    tx.commit().ctx("commit lease failure")
}

/// Entering source recovery failed because the reserved and offered replacements differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplacementDiverged {
    pub(crate) stored: String,
    pub(crate) offered: String,
}

/// §8.2: sets the rebuild gate and records `source_recovery(reason)` with a reserved
/// replacement source, in one transaction. Nothing is recorded on divergence.
pub(crate) fn enter_source_recovery(
    conn: &mut Connection,
    reason: &str,
    offered: &str,
    generate: &mut dyn FnMut() -> String,
) -> Result<Result<(), ReplacementDiverged>, StoreError> {
    let tx = begin(conn)?;
    let mut attachment = Attachment::load(&tx)?;
    let operation = Operation::load(&tx)?;
    let stored = operation.replacement_source_id.trim().to_owned();
    let offered = offered.trim().to_owned();
    if !stored.is_empty() && !offered.is_empty() && stored != offered {
        return Ok(Err(ReplacementDiverged { stored, offered }));
    }
    let replacement = if !stored.is_empty() {
        stored
    } else if !offered.is_empty() {
        offered
    } else {
        mint_source(&tx, &attachment.current_source_id, generate)?
    };
    state::ensure_source(&tx, &replacement)?;
    attachment.rebuild_required = true;
    attachment.store(&tx)?;
    Operation {
        kind: OperationKind::SourceRecovery,
        reason: reason.to_owned(),
        replacement_source_id: replacement,
        ..Operation::default()
    }
    .store(&tx)?;
    tx.commit().ctx("commit source recovery")?;
    Ok(Ok(()))
}

/// Clears the seed lease in the attachment row (after a push response proved the commit).
pub(crate) fn clear_lease(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE _sync_attachment_state SET pending_initialization_id = '' WHERE singleton_key = 1",
        [],
    )
    .ctx("clear seed lease")?;
    Ok(())
}

/// Whether any `_sync_row_state` row is live.
pub(crate) fn has_live_rows(conn: &Connection) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM _sync_row_state WHERE deleted = 0)",
        [],
        |r| r.get(0),
    )
    .ctx("read authority state")
}
