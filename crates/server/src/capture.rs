//! Bundle capture and finalization (§2.6, §3): the bundle context, the one-transaction →
//! at-most-one-bundle finalization, source activation (§7.2), retention (§6.4), and the
//! host-facing [`SyncService::with_sync_bundle`] (§8.2).
//!
//! Invariants:
//! * finalization reads this transaction's stage rows in one query and writes `bundle_rows`
//!   and `row_state` with one `unnest` statement each; the statements are pipelined;
//! * `bundle_seq` is reserved by updating the user's `user_state` row, so bundles of one user
//!   commit in sequence order without gaps (a rollback returns the number);
//! * stored payloads keep the exact number text (`gcj::Document::to_vec_exact`), the hash is
//!   computed over GCJ by `oversync_protocol::hash`, exactly as the Go client recomputes it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::Transaction;
use oversync_protocol::codec;
use oversync_protocol::gcj::{self, Document, Node};
use oversync_protocol::hash::{HashRow, bundle_digest};
use oversync_protocol::key::decode_key_bytes;
use oversync_protocol::op::Op;
use oversync_protocol::wire::{Bundle, BundleRow};
use serde_json::value::RawValue;
use tokio_postgres::types::ToSql;

use crate::catalog::{CatalogTable, SCOPE_COLUMN, ValidatedCatalog};
use crate::db::{self, Context};
use crate::error::{Failure, InternalError, WithinBundleError, source_tuple_pruned};
use crate::scope::{self, ScopeState};
use crate::{Actor, SyncService};

/// The boxed future a [`SyncService::with_sync_bundle`] callback returns.
pub type BundleFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// The bundle a transaction produced.
#[derive(Debug, Clone)]
pub struct CommittedBundle {
    /// Per-user sequence number.
    pub bundle_seq: i64,
    /// The bundle's source.
    pub source_id: String,
    /// The source's bundle id.
    pub source_bundle_id: i64,
    /// Number of rows.
    pub row_count: i64,
    /// 64 lower-case hex characters.
    pub bundle_hash: String,
    /// Canonical byte length of the hash pre-image (`bundle_log.byte_count`).
    pub byte_count: i64,
    /// The rows in bundle order.
    pub rows: Vec<BundleRow>,
}

impl CommittedBundle {
    /// The bundle as pull returns it.
    pub fn to_wire(&self) -> Bundle {
        Bundle {
            bundle_seq: self.bundle_seq,
            source_id: self.source_id.clone(),
            source_bundle_id: self.source_bundle_id,
            row_count: self.row_count,
            bundle_hash: self.bundle_hash.clone(),
            rows: self.rows.clone(),
        }
    }
}

/// The transaction-local settings of §2.6.
pub(crate) struct BundleContext<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) user_pk: i64,
    pub(crate) source_id: &'a str,
    pub(crate) source_bundle_id: i64,
    pub(crate) initialization_id: &'a str,
}

/// Sets the bundle context, refusing to overwrite a different non-empty value.
pub(crate) async fn set_bundle_context(
    tx: &Transaction<'_>,
    context: &BundleContext<'_>,
) -> Result<(), InternalError> {
    let names = [
        "oversync.bundle_user_id",
        "oversync.bundle_user_pk",
        "oversync.bundle_source_id",
        "oversync.bundle_source_bundle_id",
        "oversync.bundle_initialization_id",
    ];
    let values = [
        context.user_id.to_owned(),
        context.user_pk.to_string(),
        context.source_id.to_owned(),
        context.source_bundle_id.to_string(),
        context.initialization_id.to_owned(),
    ];
    let read = tx
        .prepare_cached("SELECT COALESCE(current_setting(n, true), '') FROM unnest($1::text[]) WITH ORDINALITY AS s(n, i) ORDER BY i")
        .await
        .ctx("prepare bundle context read")?;
    let existing = tx
        .query(&read, &[&names.as_slice()])
        .await
        .ctx("read bundle context")?;
    for ((row, name), value) in existing.iter().zip(names).zip(&values) {
        let current: String = row.get(0);
        if !current.is_empty() && &current != value {
            return Err(InternalError::new(format!(
                "transaction already carries conflicting sync bundle context for {name}"
            )));
        }
    }
    let write = tx
        .prepare_cached(
            "SELECT set_config(n, v, true) FROM unnest($1::text[], $2::text[]) AS s(n, v)",
        )
        .await
        .ctx("prepare bundle context write")?;
    tx.query(&write, &[&names.as_slice(), &values.as_slice()])
        .await
        .ctx("set bundle context")?;
    Ok(())
}

/// §3.5 for one payload produced by PostgreSQL: removes one `_sync_scope_id` member compared
/// case-insensitively and rewrites non-null `bytea` members (`\x…`) as standard base64.
/// Returns `None` when nothing changed (the input text is then the answer).
pub(crate) fn rewrite_wire_payload(
    table: &CatalogTable,
    doc: &mut Document,
) -> Result<bool, InternalError> {
    let Some(members) = doc.root_members() else {
        return Err(InternalError::new(format!(
            "payload for {} is not a JSON object",
            table.key()
        )));
    };
    let scope_member = members
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(SCOPE_COLUMN))
        .map(|(name, _)| name.clone());
    let mut rewrites = Vec::new();
    for (name, id) in members {
        if !table.is_bytea(&name.to_lowercase()) {
            continue;
        }
        match doc.node(*id) {
            Node::Null => {}
            Node::String(text) => {
                let wire = codec::bytea_pg_to_wire(text).map_err(|e| {
                    InternalError::with_source(
                        format!("canonicalize binary payload for {}.{name}", table.key()),
                        e,
                    )
                })?;
                if &wire != text {
                    rewrites.push((*id, wire));
                }
            }
            _ => {
                return Err(InternalError::new(format!(
                    "canonicalize binary payload for {}.{name}: expected JSON string",
                    table.key()
                )));
            }
        }
    }
    let changed = scope_member.is_some() || !rewrites.is_empty();
    if let Some(name) = scope_member {
        doc.remove_root_member(&name);
    }
    for (id, wire) in rewrites {
        doc.set_scalar(id, Node::String(wire));
    }
    Ok(changed)
}

/// A captured payload (PostgreSQL jsonb text) as stored in `bundle_rows.payload_wire`:
/// canonical layout, exact numbers, §3.5 applied.
fn captured_wire_payload(table: &CatalogTable, text: &str) -> Result<Vec<u8>, InternalError> {
    let mut doc = Document::parse(text.as_bytes()).map_err(|e| {
        InternalError::with_source(format!("parse captured payload for {}", table.key()), e)
    })?;
    rewrite_wire_payload(table, &mut doc)?;
    Ok(doc.to_vec_exact())
}

struct Coalesced {
    table_id: i32,
    key_bytes: Vec<u8>,
    first_op: i16,
    last_op: i16,
    last_payload: Option<String>,
}

/// §3.3: turns this transaction's stage rows of `user_pk` into zero or one bundle.
pub(crate) async fn finalize(
    service: &SyncService,
    tx: &Transaction<'_>,
    catalog: &ValidatedCatalog,
    user_pk: i64,
    source_id: &str,
    source_bundle_id: i64,
) -> Result<Option<CommittedBundle>, Failure> {
    let load = tx
        .prepare_cached(
            "SELECT table_id, op_code, key_bytes, payload_db::text
             FROM sync.bundle_capture_stage
             WHERE txid = txid_current() AND user_pk = $1
             ORDER BY capture_ordinal",
        )
        .await
        .ctx("prepare stage read")?;
    let stage = tx
        .query(&load, &[&user_pk])
        .await
        .ctx("read captured stage rows")?;
    if stage.is_empty() {
        return Ok(None);
    }

    // Coalesce per (table_id, key_bytes), ordered by each key's first event.
    let mut order: Vec<Coalesced> = Vec::new();
    let mut index: HashMap<(i32, Vec<u8>), usize> = HashMap::with_capacity(stage.len());
    for row in stage {
        let table_id: i32 = row.get(0);
        let op: i16 = row.get(1);
        let key_bytes: Vec<u8> = row.get(2);
        let payload: Option<String> = row.get(3);
        match index.get(&(table_id, key_bytes.clone())) {
            Some(&i) => {
                order[i].last_op = op;
                order[i].last_payload = payload;
            }
            None => {
                index.insert((table_id, key_bytes.clone()), order.len());
                order.push(Coalesced {
                    table_id,
                    key_bytes,
                    first_op: op,
                    last_op: op,
                    last_payload: payload,
                });
            }
        }
    }
    let delete_stage =
        "DELETE FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1";

    struct Built<'c> {
        table: &'c CatalogTable,
        key_bytes: Vec<u8>,
        key: BTreeMap<String, String>,
        op: Op,
        payload: Option<Vec<u8>>,
    }
    let mut built = Vec::with_capacity(order.len());
    for row in order {
        let op = match (row.first_op, row.last_op) {
            (1, 3) => continue,
            (_, 3) => Op::Delete,
            (1, _) => Op::Insert,
            _ => Op::Update,
        };
        let table = catalog.by_id(row.table_id).ok_or_else(|| {
            InternalError::new(format!(
                "table_id {} is not configured for sync",
                row.table_id
            ))
        })?;
        let key_text = decode_key_bytes(table.key_kind(), &row.key_bytes).map_err(|e| {
            InternalError::with_source(format!("decode bundle row key for {}", table.key()), e)
        })?;
        let payload = match (op, row.last_payload) {
            (Op::Delete, _) => None,
            (_, Some(text)) => Some(captured_wire_payload(table, &text)?),
            (_, None) => {
                return Err(InternalError::new(format!(
                    "captured {op} for {} has no payload",
                    table.key()
                ))
                .into());
            }
        };
        built.push(Built {
            table,
            key_bytes: row.key_bytes,
            key: BTreeMap::from([(table.key_column().to_owned(), key_text)]),
            op,
            payload,
        });
    }
    if built.is_empty() {
        tx.execute(delete_stage, &[&user_pk])
            .await
            .ctx("clear coalesced-away stage rows")?;
        return Ok(None);
    }

    let row_count = i64::try_from(built.len()).unwrap_or(i64::MAX);
    if service.limits.bundle_rows_exceeded(row_count) {
        return Err(Failure::Invalid(format!(
            "bundle has {row_count} rows; max_rows_per_bundle is {}",
            service.limits.max_rows_per_bundle
        )));
    }

    let reserve = tx
        .prepare_cached(
            "UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1
             WHERE user_pk = $1 RETURNING next_bundle_seq - 1",
        )
        .await
        .ctx("prepare bundle_seq reservation")?;
    let bundle_seq: i64 = tx
        .query_one(&reserve, &[&user_pk])
        .await
        .ctx("reserve bundle_seq")?
        .get(0);

    let digest = bundle_digest(built.iter().map(|r| HashRow {
        schema: r.table.schema(),
        table: r.table.table(),
        key: &r.key,
        op: r.op,
        row_version: bundle_seq,
        payload: r.payload.as_deref(),
    }))
    .map_err(|e| InternalError::with_source("compute bundle hash", e))?;
    if service.limits.bundle_bytes_exceeded(digest.byte_count) {
        return Err(Failure::Invalid(format!(
            "bundle has {} canonical bytes; max_bytes_per_bundle is {}",
            digest.byte_count, service.limits.max_bytes_per_bundle
        )));
    }

    let ordinals: Vec<i64> = (1..=row_count).collect();
    let table_ids: Vec<i32> = built.iter().map(|r| r.table.table_id()).collect();
    let keys: Vec<&[u8]> = built.iter().map(|r| r.key_bytes.as_slice()).collect();
    let ops: Vec<i16> = built.iter().map(|r| r.op.code()).collect();
    let deleted: Vec<bool> = built.iter().map(|r| r.op == Op::Delete).collect();
    let payloads: Vec<Option<&str>> = built
        .iter()
        .map(|r| {
            r.payload
                .as_deref()
                .map(|p| std::str::from_utf8(p).unwrap_or("null"))
        })
        .collect();
    let hash_bytes = digest.hash.0.to_vec();

    let (log, rows, state, clear) = futures_util::try_join!(
        tx.prepare_cached(
            "INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash, committed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now())",
        ),
        tx.prepare_cached(
            "INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload_wire)
             SELECT $1, $2, r.ordinal, r.table_id, r.key_bytes, r.op_code, r.payload::json
             FROM unnest($3::int8[], $4::int4[], $5::bytea[], $6::int2[], $7::text[])
                  AS r(ordinal, table_id, key_bytes, op_code, payload)",
        ),
        tx.prepare_cached(
            "INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
             SELECT $1, r.table_id, r.key_bytes, $2, r.deleted
             FROM unnest($3::int4[], $4::bytea[], $5::bool[]) AS r(table_id, key_bytes, deleted)
             ON CONFLICT (user_pk, table_id, key_bytes)
             DO UPDATE SET bundle_seq = EXCLUDED.bundle_seq, deleted = EXCLUDED.deleted",
        ),
        tx.prepare_cached(delete_stage),
    )
    .ctx("prepare bundle persistence")?;
    let notify = if service.config.watch.enabled {
        Some(notify_payload(
            user_pk,
            bundle_seq,
            source_id,
            source_bundle_id,
        ))
    } else {
        None
    };
    let notify_future = async {
        if let Some(payload) = &notify {
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&service.limits.notify_channel, payload],
            )
            .await?;
        }
        Ok::<_, tokio_postgres::Error>(0)
    };
    let log_params: [&(dyn ToSql + Sync); 7] = [
        &user_pk,
        &bundle_seq,
        &source_id,
        &source_bundle_id,
        &row_count,
        &digest.byte_count,
        &hash_bytes,
    ];
    let rows_params: [&(dyn ToSql + Sync); 7] = [
        &user_pk,
        &bundle_seq,
        &ordinals,
        &table_ids,
        &keys,
        &ops,
        &payloads,
    ];
    let state_params: [&(dyn ToSql + Sync); 5] =
        [&user_pk, &bundle_seq, &table_ids, &keys, &deleted];
    let clear_params: [&(dyn ToSql + Sync); 1] = [&user_pk];
    futures_util::try_join!(
        tx.execute(&log, &log_params),
        notify_future,
        tx.execute(&rows, &rows_params),
        tx.execute(&state, &state_params),
        tx.execute(&clear, &clear_params),
    )
    .ctx("persist bundle")?;

    let mut wire_rows = Vec::with_capacity(built.len());
    for row in built {
        let payload = match row.payload {
            Some(bytes) => Some(raw_json(bytes)?),
            None => None,
        };
        wire_rows.push(BundleRow {
            schema: row.table.schema().to_owned(),
            table: row.table.table().to_owned(),
            key: row.key,
            op: row.op,
            row_version: bundle_seq,
            payload,
        });
    }
    Ok(Some(CommittedBundle {
        bundle_seq,
        source_id: source_id.to_owned(),
        source_bundle_id,
        row_count,
        bundle_hash: digest.hash.to_hex(),
        byte_count: digest.byte_count,
        rows: wire_rows,
    }))
}

/// Stored JSON text as a `RawValue`.
pub(crate) fn raw_json(bytes: Vec<u8>) -> Result<Box<RawValue>, InternalError> {
    let text = String::from_utf8(bytes)
        .map_err(|e| InternalError::with_source("stored payload is not UTF-8", e))?;
    RawValue::from_string(text)
        .map_err(|e| InternalError::with_source("stored payload is not JSON", e))
}

/// The NOTIFY payload of §9.1: `user_pk`, `bundle_seq`, `source_id` (omitted when empty),
/// `source_bundle_id` (omitted when 0), in that order, Go-escaped.
fn notify_payload(user_pk: i64, bundle_seq: i64, source_id: &str, source_bundle_id: i64) -> String {
    let mut out = Vec::new();
    out.extend_from_slice(
        format!("{{\"user_pk\":{user_pk},\"bundle_seq\":{bundle_seq}").as_bytes(),
    );
    if !source_id.is_empty() {
        out.extend_from_slice(b",\"source_id\":");
        gcj::write_string(source_id, &mut out);
    }
    if source_bundle_id != 0 {
        out.extend_from_slice(format!(",\"source_bundle_id\":{source_bundle_id}").as_bytes());
    }
    out.push(b'}');
    String::from_utf8_lossy(&out).into_owned()
}

/// §7.2 activation after a produced bundle: the source becomes `active` with
/// `max_committed_source_bundle_id = source_bundle_id`, unless it is retired.
pub(crate) async fn activate_source(
    tx: &Transaction<'_>,
    user_id: &str,
    user_pk: i64,
    source_id: &str,
    source_bundle_id: i64,
) -> Result<(), Failure> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO sync.source_state (user_pk, source_id, state, max_committed_source_bundle_id, replaced_by_source_id, retirement_reason)
             VALUES ($1, $2, 'active', $3, '', '')
             ON CONFLICT (user_pk, source_id) DO UPDATE
             SET state = 'active', max_committed_source_bundle_id = EXCLUDED.max_committed_source_bundle_id,
                 replaced_by_source_id = '', retirement_reason = ''
             WHERE sync.source_state.state <> 'retired'
             RETURNING 1",
        )
        .await
        .ctx("prepare source activation")?;
    let activated = tx
        .query_opt(&statement, &[&user_pk, &source_id, &source_bundle_id])
        .await
        .ctx("activate source")?;
    if activated.is_some() {
        return Ok(());
    }
    let replaced_by: String = tx
        .query_one(
            "SELECT replaced_by_source_id FROM sync.source_state WHERE user_pk = $1 AND source_id = $2",
            &[&user_pk, &source_id],
        )
        .await
        .ctx("read retired source")?
        .get(0);
    Err(Failure::SourceRetired {
        user_id: user_id.to_owned(),
        source_id: source_id.to_owned(),
        replaced_by,
    })
}

/// §6.4 retention, in one statement: advance the floor by at most the batch size towards
/// `latest - window` and delete the bundles at or below it (rows cascade).
pub(crate) async fn apply_retention(
    service: &SyncService,
    tx: &Transaction<'_>,
    user_pk: i64,
) -> Result<(), InternalError> {
    let statement = tx
        .prepare_cached(
            "WITH target AS (
                 SELECT user_pk, retained_bundle_floor AS floor,
                        LEAST(GREATEST(next_bundle_seq - 1 - $2, 0), retained_bundle_floor + $3) AS floor_to
                 FROM sync.user_state WHERE user_pk = $1
             ), advanced AS (
                 UPDATE sync.user_state us SET retained_bundle_floor = t.floor_to
                 FROM target t
                 WHERE us.user_pk = t.user_pk AND t.floor_to > t.floor
                 RETURNING t.floor_to
             )
             DELETE FROM sync.bundle_log bl USING advanced a
             WHERE bl.user_pk = $1 AND bl.bundle_seq <= a.floor_to",
        )
        .await
        .ctx("prepare retention")?;
    tx.execute(
        &statement,
        &[
            &user_pk,
            &service.limits.retained_bundles_per_user,
            &service.limits.retention_prune_batch_size,
        ],
    )
    .await
    .ctx("apply retention")?;
    Ok(())
}

/// Reads the expected next `source_bundle_id` of a source, with the row locked when
/// `for_update`. Returns `(expected, max_committed)`; a retired source is `SourceRetired`.
pub(crate) async fn expected_source_bundle_id(
    tx: &Transaction<'_>,
    user_id: &str,
    user_pk: i64,
    source_id: &str,
    for_update: bool,
) -> Result<(i64, i64), Failure> {
    let sql = if for_update {
        "SELECT state, max_committed_source_bundle_id, replaced_by_source_id FROM sync.source_state
         WHERE user_pk = $1 AND source_id = $2 FOR UPDATE"
    } else {
        "SELECT state, max_committed_source_bundle_id, replaced_by_source_id FROM sync.source_state
         WHERE user_pk = $1 AND source_id = $2"
    };
    let statement = tx
        .prepare_cached(sql)
        .await
        .ctx("prepare source_state read")?;
    let row = tx
        .query_opt(&statement, &[&user_pk, &source_id])
        .await
        .ctx("read source_state")?;
    let Some(row) = row else {
        return Ok((1, 0));
    };
    let state: String = row.get(0);
    let max: i64 = row.get(1);
    if state == "retired" {
        return Err(Failure::SourceRetired {
            user_id: user_id.to_owned(),
            source_id: source_id.to_owned(),
            replaced_by: row.get(2),
        });
    }
    Ok((max + 1, max))
}

impl SyncService {
    /// Runs `callback` inside one bundle transaction for `actor.user_id` with the source tuple
    /// (`source_id`, `source_bundle_id`) and commits whatever it wrote to registered tables as
    /// exactly one bundle (§8.2). The callback runs once (never retried); its error rolls
    /// everything back and is returned as [`WithinBundleError::Callback`].
    ///
    /// Preconditions checked first: the scope is INITIALIZED (no auto-initialization), the
    /// source is not retired and `source_bundle_id` is its next id (no replay: an already
    /// committed tuple is `HistoryPruned`). If the callback wrote nothing to registered tables
    /// the transaction still commits and `Ok((value, None))` is returned.
    pub async fn with_sync_bundle<T, E, F>(
        &self,
        actor: &Actor,
        source_id: &str,
        source_bundle_id: i64,
        callback: F,
    ) -> Result<(T, Option<CommittedBundle>), WithinBundleError<E>>
    where
        F: for<'a> FnOnce(&'a tokio_postgres::Transaction<'a>) -> BundleFuture<'a, T, E> + Send,
        T: Send,
        E: Send,
    {
        let _guard = self.lifecycle.begin()?;
        let user_id = actor.user_id();
        crate::check_identifier("user_id", user_id).map_err(WithinBundleError::Invalid)?;
        if source_id.trim().is_empty() {
            return Err(WithinBundleError::Invalid(
                "bundle source_id is required".to_owned(),
            ));
        }
        crate::check_identifier("source_id", source_id).map_err(WithinBundleError::Invalid)?;
        if source_bundle_id <= 0 {
            return Err(WithinBundleError::Invalid(
                "bundle source_bundle_id must be > 0".to_owned(),
            ));
        }
        let catalog = self.catalog();
        let mut conn = db::connection(&self.pool).await.map_err(Failure::from)?;
        let tx = db::begin(&mut conn, db::Mode::ReadCommitted)
            .await
            .map_err(Failure::from)?;
        db::lock_user(&tx, user_id).await.map_err(Failure::from)?;
        scope::ensure_rows(&tx, user_id)
            .await
            .map_err(Failure::from)?;
        let scope_row = scope::lock_scope(&tx, user_id).await?;
        match scope_row.state {
            ScopeState::Initialized => {}
            ScopeState::Initializing => {
                return Err(WithinBundleError::ScopeInitializing {
                    user_id: user_id.to_owned(),
                    lease_expires_at: scope_row
                        .lease_expires_micros
                        .map(db::rfc3339_from_micros)
                        .unwrap_or_default(),
                });
            }
            ScopeState::Uninitialized => {
                return Err(WithinBundleError::ScopeUninitialized {
                    user_id: user_id.to_owned(),
                });
            }
        }
        tx.batch_execute("SET CONSTRAINTS ALL DEFERRED")
            .await
            .ctx("defer constraints")
            .map_err(Failure::from)?;
        let (expected, max) =
            expected_source_bundle_id(&tx, user_id, scope_row.user_pk, source_id, true).await?;
        if source_bundle_id < expected {
            return Err(source_tuple_pruned(user_id, source_id, source_bundle_id, max).into());
        }
        if source_bundle_id > expected {
            return Err(Failure::OutOfOrder {
                user_id: user_id.to_owned(),
                source_id: source_id.to_owned(),
                expected,
                actual: source_bundle_id,
            }
            .into());
        }
        set_bundle_context(
            &tx,
            &BundleContext {
                user_id,
                user_pk: scope_row.user_pk,
                source_id,
                source_bundle_id,
                initialization_id: "",
            },
        )
        .await
        .map_err(Failure::from)?;
        let value = callback(&tx).await.map_err(WithinBundleError::Callback)?;
        let bundle = finalize(
            self,
            &tx,
            &catalog,
            scope_row.user_pk,
            source_id,
            source_bundle_id,
        )
        .await?;
        if bundle.is_some() {
            activate_source(&tx, user_id, scope_row.user_pk, source_id, source_bundle_id).await?;
            apply_retention(self, &tx, scope_row.user_pk)
                .await
                .map_err(Failure::from)?;
        }
        tx.commit()
            .await
            .ctx("commit sync bundle")
            .map_err(Failure::from)?;
        Ok((value, bundle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_payload_omits_empty_members_in_reference_order() {
        assert_eq!(
            notify_payload(12, 157, "device-a", 9),
            r#"{"user_pk":12,"bundle_seq":157,"source_id":"device-a","source_bundle_id":9}"#
        );
        assert_eq!(
            notify_payload(1, 2, "", 0),
            r#"{"user_pk":1,"bundle_seq":2}"#
        );
        assert_eq!(
            notify_payload(1, 2, "<a>", 0),
            r#"{"user_pk":1,"bundle_seq":2,"source_id":"\u003ca\u003e"}"#
        );
    }
}
