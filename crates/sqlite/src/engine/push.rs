//! Push steps (client chapter §4): freeze the dirty set into the outbox, build the upload,
//! record the commit, stage and verify the committed bundle, replay it locally.
//!
//! Durable checkpoints, each one transaction: outbox `prepared` (freeze), outbox
//! `committed_remote` (commit seen), push stage (one transaction per fetched page), replay
//! (outbox cleared, counter advanced). A crash between any two leaves a state from which the
//! next push resumes (§4.7).

use std::collections::{BTreeMap, HashMap};

use oversync_protocol::hash::{self, HashRow, RequestHashRow};
use oversync_protocol::op::Op;
use oversync_protocol::wire::{
    BundleRow, CommittedBundleRowsResponse, PushRequestRow, PushSessionCommitResponse,
};
use rusqlite::{Connection, params};
use serde_json::value::RawValue;

use super::lifecycle::clear_lease;
use super::state::{self, Attachment, OutboxBundle, OutboxState};
use super::{
    StepError, apply_row, begin, begin_authoritative, commit_authoritative, delete_dirty,
    dirty_row, key_json, live_payload, requeue_dirty, upsert_row_state,
};
use crate::catalog::{Catalog, ManagedTable};
use crate::error::{ProtocolViolation, SqliteContext, StoreError};
use crate::payload;

/// A raw `_sync_outbox_rows` row.
type RawOutboxRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
);

/// A dirty row joined with its row state's `deleted` flag.
type RawDirtyRow = (String, String, i64, Option<String>, Option<bool>);

/// One frozen outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRow {
    pub(crate) row_ordinal: i64,
    pub(crate) table: String,
    pub(crate) key_json: String,
    pub(crate) wire_key: String,
    pub(crate) wire_key_json: String,
    pub(crate) op: Op,
    pub(crate) base_row_version: i64,
    pub(crate) local_payload: Option<String>,
    pub(crate) wire_payload: Option<String>,
}

/// The frozen outbox: its record and rows in upload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outbox {
    pub(crate) bundle: OutboxBundle,
    pub(crate) rows: Vec<OutboxRow>,
}

pub(crate) fn table<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a ManagedTable, StoreError> {
    catalog
        .table(name)
        .ok_or_else(|| StoreError::Inconsistent(format!("table {name} is not configured for sync")))
}

pub(crate) fn load_outbox_rows(
    conn: &Connection,
    catalog: &Catalog,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT source_bundle_id, row_ordinal, table_name, key_json, wire_key_json, op,
                    base_row_version, local_payload, wire_payload
             FROM _sync_outbox_rows ORDER BY row_ordinal",
        )
        .ctx("read outbox rows")?;
    let raw: Vec<RawOutboxRow> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .ctx("read outbox rows")?
        .collect::<Result<_, _>>()
        .ctx("read outbox rows")?;
    let mut bundle_ids = raw.iter().map(|r| r.0).collect::<Vec<_>>();
    bundle_ids.dedup();
    if bundle_ids.len() > 1 {
        return Err(StoreError::Inconsistent(
            "outbox rows carry more than one source_bundle_id".to_owned(),
        ));
    }
    raw.into_iter()
        .map(
            |(_, ordinal, table_name, key_json, wire_key_json, op, base, local, wire)| {
                let managed = table(catalog, &table_name)?;
                let local_key = payload::key_from_key_json(managed, &key_json)?;
                Ok(OutboxRow {
                    row_ordinal: ordinal,
                    wire_key: payload::wire_key(managed, &local_key)?,
                    table: table_name,
                    key_json,
                    wire_key_json,
                    op: Op::parse_exact(&op)
                        .map_err(|e| StoreError::Inconsistent(format!("outbox row op: {e}")))?,
                    base_row_version: base,
                    local_payload: local,
                    wire_payload: wire,
                })
            },
        )
        .collect()
}

/// §4.2: the existing outbox if one is frozen, else a freshly frozen one; `None` when there is
/// nothing to push. No-op dirty rows (a row inserted and deleted before any sync) are deleted
/// and that deletion is committed even when nothing remains (§12 A6).
pub(crate) fn prepare_outbox(
    conn: &mut Connection,
    catalog: &Catalog,
    source_id: &str,
    lease: &str,
) -> Result<Option<Outbox>, StoreError> {
    let tx = begin(conn)?;
    let bundle = OutboxBundle::load(&tx)?;
    if bundle.state != OutboxState::None && state::outbox_count(&tx)? > 0 {
        let rows = load_outbox_rows(&tx, catalog)?;
        tx.commit().ctx("commit outbox read")?;
        return Ok(Some(Outbox { bundle, rows }));
    }
    let attachment = Attachment::load(&tx)?;
    let Some((next_bundle_id, _)) = state::source_row(&tx, &attachment.current_source_id)? else {
        return Err(StoreError::Inconsistent(format!(
            "source {} has no source state row",
            attachment.current_source_id
        )));
    };
    struct Candidate {
        rank: usize,
        table: String,
        key_json: String,
        op: Op,
        base: i64,
        payload: Option<String>,
    }
    let dirty: Vec<RawDirtyRow> = tx
        .prepare(
            "SELECT d.table_name, d.key_json, d.base_row_version, d.payload, rs.deleted
             FROM _sync_dirty_rows AS d
             LEFT JOIN _sync_row_state AS rs ON rs.schema_name = d.schema_name
               AND rs.table_name = d.table_name AND rs.key_json = d.key_json
             WHERE d.schema_name = ?1
             ORDER BY d.dirty_ordinal, d.table_name, d.key_json",
        )
        .and_then(|mut s| {
            s.query_map([&catalog.schema], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, Option<i64>>(4)?.map(|d| d != 0),
                ))
            })?
            .collect()
        })
        .ctx("read dirty rows")?;
    let mut candidates = Vec::new();
    for (table_name, kj, base, payload, deleted) in dirty {
        let managed = table(catalog, &table_name)?;
        payload::key_from_key_json(managed, &kj)?;
        let live_state = deleted == Some(false);
        let op = match (&payload, live_state) {
            (Some(_), true) => Op::Update,
            (Some(_), false) => Op::Insert,
            (None, true) => Op::Delete,
            // A no-op (inserted and deleted again before any push): dropped with the rest.
            (None, false) => continue,
        };
        candidates.push(Candidate {
            rank: managed.rank,
            table: table_name,
            key_json: kj,
            op,
            base,
            payload,
        });
    }
    candidates.sort_by_key(|c| {
        if c.op == Op::Delete {
            (1, usize::MAX - c.rank)
        } else {
            (0, c.rank)
        }
    });
    // Every dirty row of the schema was read above and is now either frozen below or a
    // no-op: one statement clears them all (one DELETE per row was 16% of the freeze).
    tx.execute(
        "DELETE FROM _sync_dirty_rows WHERE schema_name = ?1",
        [&catalog.schema],
    )
    .ctx("clear frozen dirty rows")?;
    if candidates.is_empty() {
        tx.commit().ctx("commit no-op dirty cleanup")?;
        return Ok(None);
    }
    tx.execute("DELETE FROM _sync_outbox_rows", [])
        .ctx("clear stray outbox rows")?;
    let mut rows = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.into_iter().enumerate() {
        let managed = table(catalog, &c.table)?;
        let local_key = payload::key_from_key_json(managed, &c.key_json)?;
        let wire_key = payload::wire_key(managed, &local_key)?;
        let wire_key_json =
            oversync_protocol::key::local_key_json(&managed.key().member, &wire_key);
        let wire_payload = match (&c.payload, c.op) {
            (Some(local), Op::Insert | Op::Update) => {
                Some(payload::upload_payload(managed, local)?)
            }
            _ => None,
        };
        rows.push(OutboxRow {
            row_ordinal: i as i64,
            table: c.table,
            key_json: c.key_json,
            wire_key,
            wire_key_json,
            op: c.op,
            base_row_version: c.base,
            local_payload: if c.op == Op::Delete { None } else { c.payload },
            wire_payload,
        });
    }
    let keys: Vec<BTreeMap<String, String>> = rows
        .iter()
        .map(|r| {
            let managed = table(catalog, &r.table)?;
            Ok(BTreeMap::from([(
                managed.key().member.clone(),
                r.wire_key.clone(),
            )]))
        })
        .collect::<Result<_, StoreError>>()?;
    let request_hash =
        hash::canonical_request_hash(rows.iter().zip(&keys).map(|(r, key)| RequestHashRow {
            schema: &catalog.schema,
            table: &r.table,
            key,
            op: r.op,
            base_row_version: r.base_row_version,
            payload: r.wire_payload.as_deref().map(str::as_bytes),
        }))
        .map_err(|e| StoreError::Inconsistent(format!("canonical request hash: {e}")))?;
    let bundle = OutboxBundle {
        state: OutboxState::Prepared,
        source_id: source_id.to_owned(),
        source_bundle_id: next_bundle_id,
        canonical_request_hash: request_hash,
        row_count: rows.len() as i64,
        initialization_id: lease.to_owned(),
        remote_bundle_hash: String::new(),
        remote_bundle_seq: 0,
    };
    bundle.store(&tx)?;
    for r in &rows {
        tx.prepare_cached(
            "INSERT INTO _sync_outbox_rows (source_bundle_id, row_ordinal, schema_name, table_name,
                key_json, wire_key_json, op, base_row_version, local_payload, wire_payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .and_then(|mut s| {
            s.execute(params![
                next_bundle_id,
                r.row_ordinal,
                catalog.schema,
                r.table,
                r.key_json,
                r.wire_key_json,
                r.op.as_str(),
                r.base_row_version,
                r.local_payload,
                r.wire_payload,
            ])
        })
        .ctx("write outbox row")?;
    }
    tx.commit().ctx("commit freeze")?;
    Ok(Some(Outbox { bundle, rows }))
}

/// The rows of the upload, in order (`payload` omitted for DELETE).
pub(crate) fn push_rows(
    catalog: &Catalog,
    outbox: &Outbox,
) -> Result<Vec<PushRequestRow>, StoreError> {
    outbox
        .rows
        .iter()
        .map(|r| {
            let managed = table(catalog, &r.table)?;
            let payload = match &r.wire_payload {
                Some(text) if r.op != Op::Delete => {
                    Some(RawValue::from_string(text.clone()).map_err(|e| {
                        StoreError::Inconsistent(format!("outbox wire payload: {e}"))
                    })?)
                }
                _ => None,
            };
            Ok(PushRequestRow {
                schema: catalog.schema.clone(),
                table: r.table.clone(),
                key: BTreeMap::from([(
                    managed.key().member.clone(),
                    serde_json::Value::String(r.wire_key.clone()),
                )]),
                op: r.op.as_str().to_owned(),
                base_row_version: r.base_row_version,
                payload,
            })
        })
        .collect()
}

/// §4.3 step 8 / already-committed: records `committed_remote` with the commit metadata and
/// clears the seed lease, in one transaction (§12 C7).
pub(crate) fn persist_committed(
    conn: &mut Connection,
    committed: &PushSessionCommitResponse,
) -> Result<(), StoreError> {
    let tx = begin(conn)?;
    let mut bundle = OutboxBundle::load(&tx)?;
    bundle.state = OutboxState::CommittedRemote;
    bundle.remote_bundle_seq = committed.bundle_seq;
    bundle.remote_bundle_hash = committed.bundle_hash.clone();
    bundle.row_count = committed.row_count;
    bundle.store(&tx)?;
    clear_lease(&tx)?;
    tx.commit().ctx("commit committed_remote")
}

/// Deletes every push-stage row.
pub(crate) fn clear_push_stage(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM _sync_push_stage", [])
        .ctx("clear push stage")?;
    Ok(())
}

pub(crate) fn validate_row(
    endpoint: &'static str,
    row: &BundleRow,
) -> Result<(), ProtocolViolation> {
    if row.schema.trim().is_empty() || row.table.trim().is_empty() {
        return Err(ProtocolViolation::new(
            endpoint,
            "bundle row schema and table must be non-empty",
        ));
    }
    if row.key.is_empty() {
        return Err(ProtocolViolation::new(
            endpoint,
            "bundle row key must be non-empty",
        ));
    }
    if row.row_version <= 0 {
        return Err(ProtocolViolation::new(
            endpoint,
            "bundle row row_version must be > 0",
        ));
    }
    if row.op != Op::Delete && row.payload.is_none() {
        return Err(ProtocolViolation::new(
            endpoint,
            format!("{} bundle row requires payload", row.op),
        ));
    }
    Ok(())
}

/// Validates one committed-bundle page against the commit metadata (§4.4 step 3).
pub(crate) fn validate_committed_page(
    page: &CommittedBundleRowsResponse,
    committed: &PushSessionCommitResponse,
    after: Option<i64>,
) -> Result<(), ProtocolViolation> {
    const E: &str = "committed-bundle rows";
    if page.bundle_seq != committed.bundle_seq
        || page.source_id != committed.source_id
        || page.source_bundle_id != committed.source_bundle_id
        || page.row_count != committed.row_count
        || page.bundle_hash != committed.bundle_hash
    {
        return Err(ProtocolViolation::new(
            E,
            "page metadata does not match the commit",
        ));
    }
    if page.next_row_ordinal != after.unwrap_or(-1) + page.rows.len() as i64 {
        return Err(ProtocolViolation::new(E, "unexpected next_row_ordinal"));
    }
    if page.has_more && page.rows.is_empty() {
        return Err(ProtocolViolation::new(E, "has_more with no rows"));
    }
    page.rows.iter().try_for_each(|r| validate_row(E, r))
}

/// Converts a received bundle row's key to `(table, local key, key_json)`; the schema must be
/// the configured one.
pub(crate) fn received_key<'a>(
    conn: &Connection,
    catalog: &'a Catalog,
    endpoint: &'static str,
    schema: &str,
    table_name: &str,
    key: &BTreeMap<String, String>,
) -> Result<(&'a ManagedTable, String, String), StepError> {
    if schema != catalog.schema {
        return Err(ProtocolViolation::new(
            endpoint,
            format!(
                "row schema {schema} is not the configured schema {}",
                catalog.schema
            ),
        )
        .into());
    }
    let managed = catalog.table(table_name).ok_or_else(|| {
        ProtocolViolation::new(
            endpoint,
            format!("table {table_name} is not configured for sync"),
        )
    })?;
    let wire = payload::key_from_wire_object(managed, key)
        .map_err(|e| ProtocolViolation::new(endpoint, e.to_string()))?;
    let local = payload::local_key(managed, &wire)
        .map_err(|e| ProtocolViolation::new(endpoint, e.to_string()))?;
    let kj = key_json(conn, managed, &local)?;
    Ok((managed, local, kj))
}

/// Stages one validated page in its own transaction (§4.4 step 4).
pub(crate) fn stage_committed_page(
    conn: &mut Connection,
    catalog: &Catalog,
    page: &CommittedBundleRowsResponse,
    after: Option<i64>,
) -> Result<(), StepError> {
    let tx = begin(conn)?;
    let first = after.map_or(0, |a| a + 1);
    for (i, row) in page.rows.iter().enumerate() {
        let (managed, _, kj) = received_key(
            &tx,
            catalog,
            "committed-bundle rows",
            &row.schema,
            &row.table,
            &row.key,
        )?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO _sync_push_stage (bundle_seq, row_ordinal, schema_name, table_name,
                key_json, op, row_version, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                page.bundle_seq,
                first + i as i64,
                catalog.schema,
                managed.name,
                kj,
                row.op.as_str(),
                row.row_version,
                if row.op == Op::Delete {
                    None
                } else {
                    row.payload.as_ref().map(|p| p.get().to_owned())
                },
            ])
        })
        .ctx("stage committed row")?;
    }
    tx.commit().ctx("commit push stage page")?;
    Ok(())
}

/// A staged committed row.
#[derive(Debug, Clone)]
struct StagedRow {
    table: String,
    key_json: String,
    op: Op,
    row_version: i64,
    payload: Option<String>,
}

fn load_stage(conn: &Connection, bundle_seq: i64) -> Result<Vec<StagedRow>, StoreError> {
    conn.prepare(
        "SELECT table_name, key_json, op, row_version, payload FROM _sync_push_stage
         WHERE bundle_seq = ?1 ORDER BY row_ordinal",
    )
    .and_then(|mut s| {
        s.query_map([bundle_seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()
    })
    .ctx("read push stage")?
    .into_iter()
    .map(|(table, key_json, op, row_version, payload)| {
        Ok(StagedRow {
            table,
            key_json,
            op: Op::parse_exact(&op).map_err(|e| StoreError::Inconsistent(e.to_string()))?,
            row_version,
            payload,
        })
    })
    .collect()
}

/// §4.4 step 6: the stage holds `row_count` rows whose recomputed hash is `bundle_hash`.
pub(crate) fn verify_stage(
    conn: &Connection,
    catalog: &Catalog,
    committed: &PushSessionCommitResponse,
) -> Result<(), StepError> {
    const E: &str = "committed-bundle rows";
    let staged = load_stage(conn, committed.bundle_seq)?;
    if staged.len() as i64 != committed.row_count {
        return Err(ProtocolViolation::new(
            E,
            format!(
                "staged {} rows, commit says {}",
                staged.len(),
                committed.row_count
            ),
        )
        .into());
    }
    let mut keys = Vec::with_capacity(staged.len());
    for row in &staged {
        let managed = table(catalog, &row.table)?;
        let local = payload::key_from_key_json(managed, &row.key_json)?;
        keys.push(BTreeMap::from([(
            managed.key().member.clone(),
            payload::wire_key(managed, &local)?,
        )]));
    }
    let digest = hash::bundle_digest(staged.iter().zip(&keys).map(|(row, key)| HashRow {
        schema: &catalog.schema,
        table: &row.table,
        key,
        op: row.op,
        row_version: row.row_version,
        payload: row.payload.as_deref().map(str::as_bytes),
    }))
    .map_err(|e| ProtocolViolation::new(E, e.to_string()))?;
    let expected = hash::BundleHash::from_hex(&committed.bundle_hash);
    if expected != Some(digest.hash) {
        return Err(ProtocolViolation::new(
            E,
            format!(
                "bundle hash mismatch: server {}, recomputed {}",
                committed.bundle_hash, digest.hash
            ),
        )
        .into());
    }
    Ok(())
}

enum Decision {
    Apply,
    Requeue { op: Op, payload: Option<String> },
}

fn same_json(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        // Both usually come from the same trigger expression, byte for byte; comparing the
        // text first skips two parses per replayed row.
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) => payload::normalized(a) == payload::normalized(b),
        _ => false,
    }
}

/// §4.5: replays the staged committed bundle in one authoritative transaction, keeping rows
/// that changed locally after the freeze dirty (rebased on the committed version).
///
/// For an `already_committed` bundle the reference proves the server's rows are this outbox
/// and fails forever on a mismatch (§12 B7); here a mismatch is logged and the server's
/// bundle, which is authoritative and committed, is replayed with the same reconciliation.
pub(crate) fn replay(
    conn: &mut Connection,
    catalog: &Catalog,
    committed: &PushSessionCommitResponse,
    already_committed: bool,
) -> Result<(), StepError> {
    let tx = begin_authoritative(conn)?;
    let staged = load_stage(&tx, committed.bundle_seq)?;
    if staged.len() as i64 != committed.row_count {
        return Err(StoreError::Inconsistent(format!(
            "push stage holds {} rows, commit says {}",
            staged.len(),
            committed.row_count
        ))
        .into());
    }
    let outbox = load_outbox_rows(&tx, catalog)?;
    let mut decisions: HashMap<(String, String), Decision> = HashMap::new();
    for row in &outbox {
        let managed = table(catalog, &row.table)?;
        let local = payload::key_from_key_json(managed, &row.key_json)?;
        let key = payload::key_param(managed, &local)?;
        let dirty = dirty_row(&tx, &catalog.schema, &row.table, &row.key_json)?;
        let live = live_payload(&tx, managed, &key)?;
        let decision = match row.op {
            Op::Delete => match live {
                Some(live) => Decision::Requeue {
                    op: Op::Insert,
                    payload: Some(live),
                },
                None => Decision::Apply,
            },
            Op::Insert | Op::Update => match live {
                None => Decision::Requeue {
                    op: Op::Delete,
                    payload: None,
                },
                Some(live) => {
                    let dirty_matches = dirty.as_ref().is_none_or(|d| {
                        d.op == row.op.as_str()
                            && same_json(d.payload.as_deref(), row.local_payload.as_deref())
                    });
                    if !dirty_matches || !same_json(Some(&live), row.local_payload.as_deref()) {
                        Decision::Requeue {
                            op: Op::Update,
                            payload: Some(live),
                        }
                    } else {
                        Decision::Apply
                    }
                }
            },
        };
        decisions.insert((row.table.clone(), row.key_json.clone()), decision);
    }
    if already_committed && !outbox_matches_stage(catalog, &outbox, &staged) {
        tracing::warn!(
            bundle_seq = committed.bundle_seq,
            "committed bundle differs from the frozen outbox; replaying the server's version"
        );
    }
    for row in &staged {
        let managed = table(catalog, &row.table)?;
        let id = (row.table.clone(), row.key_json.clone());
        match decisions.get(&id) {
            Some(Decision::Requeue { op, payload }) => {
                upsert_row_state(
                    &tx,
                    &catalog.schema,
                    &row.table,
                    &row.key_json,
                    row.row_version,
                    row.op == Op::Delete,
                )?;
                requeue_dirty(
                    &tx,
                    &catalog.schema,
                    &row.table,
                    &row.key_json,
                    op.as_str(),
                    row.row_version,
                    payload.as_deref(),
                )?;
            }
            decision @ (Some(Decision::Apply) | None) => {
                apply_row(
                    &tx,
                    &catalog.schema,
                    managed,
                    &row.key_json,
                    row.op,
                    row.row_version,
                    row.payload.as_deref(),
                )?;
                // Only a row of the outbox clears its key's dirty row.
                if decision.is_some() {
                    delete_dirty(&tx, &catalog.schema, &row.table, &row.key_json)?;
                }
            }
        }
    }
    let mut attachment = Attachment::load(&tx)?;
    if committed.bundle_seq == attachment.last_bundle_seq_seen + 1 {
        attachment.last_bundle_seq_seen = committed.bundle_seq;
        attachment.store(&tx)?;
    }
    state::raise_source_floor(&tx, &committed.source_id, committed.source_bundle_id + 1)?;
    OutboxBundle::clear(&tx)?;
    tx.execute(
        "DELETE FROM _sync_push_stage WHERE bundle_seq = ?1",
        [committed.bundle_seq],
    )
    .ctx("clear replayed push stage")?;
    commit_authoritative(tx)?;
    Ok(())
}

/// The already-committed comparison of §4.5 (tuples sorted, payloads compared canonically).
fn outbox_matches_stage(catalog: &Catalog, outbox: &[OutboxRow], staged: &[StagedRow]) -> bool {
    if outbox.len() != staged.len() {
        return false;
    }
    let mut left: Vec<(String, &str, String, Option<Vec<u8>>)> = outbox
        .iter()
        .map(|r| {
            (
                r.table.clone(),
                r.op.as_str(),
                r.wire_key.clone(),
                r.wire_payload.as_deref().and_then(payload::normalized),
            )
        })
        .collect();
    let mut right = Vec::with_capacity(staged.len());
    for r in staged {
        let Some(managed) = catalog.table(&r.table) else {
            return false;
        };
        let Ok(local) = payload::key_from_key_json(managed, &r.key_json) else {
            return false;
        };
        let Ok(wire) = payload::wire_key(managed, &local) else {
            return false;
        };
        right.push((
            r.table.clone(),
            r.op.as_str(),
            wire,
            r.payload.as_deref().and_then(payload::normalized),
        ));
    }
    left.sort();
    right.sort();
    left == right
}
