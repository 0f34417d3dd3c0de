//! Snapshot sessions (§6.3) and rotated rebuilds (§7.3): create, chunk fetch, delete.
//!
//! Invariants:
//! * a snapshot is one REPEATABLE READ view: its first statement (the session insert, before
//!   the sweep of expired sessions) fixes the transaction snapshot, so `snapshot_bundle_seq`, `sync.row_state` and
//!   every business table are read at the same instant whatever commits meanwhile;
//! * rows are materialized by one set-based `INSERT … SELECT` inside PostgreSQL (never a
//!   statement per row, never the snapshot in this process's memory): the business rows of
//!   every registered table are full-joined to the user's live row states, so a row without a
//!   live state or a live state without a row fails the create closed (internal error), as the
//!   reference does; ordinals follow the reference order (`table_id`, then key bytes);
//! * payloads are PostgreSQL's `to_jsonb(row) - '_sync_scope_id'` text with §3.5 applied in
//!   the same statement (`bytea` members replaced by their standard base64), so no row
//!   passes through this process (re-encoding `bytea` rows in Rust and writing them back
//!   took 60% of a 100k-row create); `byte_count` is the sum of the stored payload texts;
//! * a create that trips a cap, fails a check or fails a rotation stores nothing (one
//!   transaction), and serialization failures are retried like push operations (§13 item 13);
//! * chunk reads never modify the session; expiry is compared on the database clock.

use oversync_protocol::key::decode_key_bytes;
use oversync_protocol::wire::{
    SnapshotChunkResponse, SnapshotRow, SnapshotSession, SnapshotSessionCreateRequest,
    SnapshotSourceReplacement, SourceReplacementReason,
};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::capture::raw_json;
use crate::catalog::{CatalogTable, SCOPE_COLUMN, ValidatedCatalog};
use crate::config::micros;
use crate::db::{self, Context, epoch_micros_sql, rfc3339_from_micros};
use crate::error::{
    Failure, InternalError, SnapshotChunkError, SnapshotCreateError, SnapshotDeleteError,
};
use crate::scope;
use crate::{Actor, SyncService};

/// The user's live row states, as the materialization reads them. The `deleted = FALSE`
/// literal lets the planner use the partial index `rs_user_live_snapshot_idx`.
pub(crate) const LIVE_ROW_STATE_SQL: &str = "SELECT table_id, key_bytes, bundle_seq FROM sync.row_state WHERE user_pk = $3 AND deleted = FALSE";

/// The one statement that materializes a snapshot: `$1` snapshot id, `$2` user id (the scope
/// value), `$3` user pk. Returns the inserted row count, their payload bytes, and the number
/// of business rows without a live row state and of live row states without a business row.
fn materialize_sql(catalog: &ValidatedCatalog) -> String {
    let business: Vec<String> = catalog
        .tables()
        .iter()
        .map(|table| {
            let key = match table.key_kind() {
                oversync_protocol::key::SyncKeyKind::Uuid => {
                    format!("uuid_send(src.{}::uuid)", table.key_ident())
                }
                oversync_protocol::key::SyncKeyKind::Text => {
                    format!("convert_to(src.{}::text, 'UTF8')", table.key_ident())
                }
            };
            // §3.5 in SQL: `bytea` values become standard base64 (PostgreSQL's encoder wraps
            // lines at 76 characters; the newlines are removed with `replace`, which is
            // byte-wise: `translate` walks characters and took twice as long on 1 KiB
            // values), NULL stays JSON null.
            let binary: Vec<String> = table
                .columns()
                .iter()
                .filter(|(_, info)| info.udt_name == "bytea")
                .map(|(name, _)| {
                    format!(
                        "{}, replace(encode(src.{}, 'base64'), E'\\n', '')",
                        postgres_protocol::escape::escape_literal(name),
                        postgres_protocol::escape::escape_identifier(name),
                    )
                })
                .collect();
            let payload = if binary.is_empty() {
                format!("to_jsonb(src) - '{SCOPE_COLUMN}'")
            } else {
                format!(
                    "(to_jsonb(src) - '{SCOPE_COLUMN}') || jsonb_build_object({})",
                    binary.join(", ")
                )
            };
            format!(
                "SELECT {id}::int4 AS table_id, {key} AS key_bytes, ({payload})::text AS payload
                 FROM {qualified} AS src WHERE src.{scope} = $2",
                id = table.table_id(),
                qualified = table.qualified(),
                scope = postgres_protocol::escape::escape_identifier(SCOPE_COLUMN),
            )
        })
        .collect();
    let business = if business.is_empty() {
        "SELECT NULL::int4 AS table_id, NULL::bytea AS key_bytes, NULL::text AS payload WHERE FALSE"
            .to_owned()
    } else {
        business.join("\n UNION ALL\n ")
    };
    format!(
        "WITH business AS ({business}),
         live AS ({LIVE_ROW_STATE_SQL}),
         joined AS (
             SELECT b.table_id AS business_table, l.table_id AS live_table,
                    COALESCE(b.table_id, l.table_id) AS table_id,
                    COALESCE(b.key_bytes, l.key_bytes) AS key_bytes,
                    l.bundle_seq, b.payload
             FROM business b FULL JOIN live l
               ON l.table_id = b.table_id AND l.key_bytes = b.key_bytes
         ),
         inserted AS (
             INSERT INTO sync.snapshot_session_rows
                 (snapshot_id, row_ordinal, table_id, key_bytes, bundle_seq, payload_wire)
             SELECT $1, row_number() OVER (ORDER BY table_id, key_bytes), table_id, key_bytes,
                    bundle_seq, payload::json
             FROM joined
             WHERE business_table IS NOT NULL AND live_table IS NOT NULL
             RETURNING octet_length(payload_wire::text) AS bytes
         )
         SELECT (SELECT count(*) FROM inserted),
                (SELECT COALESCE(sum(bytes), 0)::int8 FROM inserted),
                count(*) FILTER (WHERE live_table IS NULL),
                min(table_id) FILTER (WHERE live_table IS NULL),
                count(*) FILTER (WHERE business_table IS NULL),
                min(table_id) FILTER (WHERE business_table IS NULL)
         FROM joined
         WHERE business_table IS NULL OR live_table IS NULL"
    )
}

/// §7.3 validation of a rotation request, on the trimmed values.
fn validate_replacement(
    actor: &Actor,
    replacement: &SnapshotSourceReplacement,
) -> Result<(String, String, SourceReplacementReason), Failure> {
    let previous = replacement.previous_source_id.trim();
    let new = replacement.new_source_id.trim();
    let reason = replacement.reason.trim();
    if previous != actor.source_id() {
        return Err(Failure::Invalid(
            "previous_source_id must match authenticated source_id".to_owned(),
        ));
    }
    if new.is_empty() {
        return Err(Failure::Invalid(
            "new_source_id is required for source replacement".to_owned(),
        ));
    }
    if new == previous {
        return Err(Failure::Invalid(
            "new_source_id must differ from previous_source_id".to_owned(),
        ));
    }
    let Some(reason) = SourceReplacementReason::from_wire(reason) else {
        return Err(Failure::Invalid(
            "source replacement reason is unsupported".to_owned(),
        ));
    };
    crate::check_identifier("new_source_id", new).map_err(Failure::Invalid)?;
    Ok((previous.to_owned(), new.to_owned(), reason))
}

/// A `source_state` row as rotation reads it (locked).
struct SourceRow {
    state: String,
    replaced_by: String,
}

async fn lock_source(
    tx: &deadpool_postgres::Transaction<'_>,
    user_pk: i64,
    source_id: &str,
) -> Result<Option<SourceRow>, InternalError> {
    let statement = tx
        .prepare_cached(
            "SELECT state, replaced_by_source_id FROM sync.source_state
             WHERE user_pk = $1 AND source_id = $2 FOR UPDATE",
        )
        .await
        .ctx("prepare source_state lock")?;
    Ok(tx
        .query_opt(&statement, &[&user_pk, &source_id])
        .await
        .ctx("lock source_state row")?
        .map(|row| SourceRow {
            state: row.get(0),
            replaced_by: row.get(1),
        }))
}

async fn reserve_source(
    tx: &deadpool_postgres::Transaction<'_>,
    user_pk: i64,
    source_id: &str,
) -> Result<(), InternalError> {
    tx.execute(
        "INSERT INTO sync.source_state (user_pk, source_id, state, max_committed_source_bundle_id, replaced_by_source_id, retirement_reason)
         VALUES ($1, $2, 'reserved', 0, '', '')",
        &[&user_pk, &source_id],
    )
    .await
    .ctx("reserve replacement source")?;
    Ok(())
}

/// §7.3: retires `previous` in favour of `new` (reserved), or accepts an idempotent retry.
async fn apply_replacement(
    tx: &deadpool_postgres::Transaction<'_>,
    actor: &Actor,
    user_pk: i64,
    replacement: &SnapshotSourceReplacement,
) -> Result<(), Failure> {
    let (previous, new, reason) = validate_replacement(actor, replacement)?;
    let previous_row = lock_source(tx, user_pk, &previous).await?;
    let new_row = lock_source(tx, user_pk, &new).await?;
    match previous_row {
        Some(row) if row.state == "retired" => {
            if row.replaced_by != new {
                return Err(Failure::SourceRetired {
                    user_id: actor.user_id().to_owned(),
                    source_id: previous,
                    replaced_by: row.replaced_by,
                });
            }
            match new_row {
                None => reserve_source(tx, user_pk, &new).await?,
                Some(row) if row.state == "reserved" || row.state == "active" => {}
                Some(_) => {
                    return Err(Failure::ReplacementInvalid(format!(
                        "replacement source {new} is not available for rotated rebuild"
                    )));
                }
            }
        }
        _ => {
            if new_row.is_some() {
                return Err(Failure::ReplacementInvalid(format!(
                    "replacement source {new} is already known for user {}",
                    actor.user_id()
                )));
            }
            reserve_source(tx, user_pk, &new).await?;
            tx.execute(
                "INSERT INTO sync.source_state (user_pk, source_id, state, max_committed_source_bundle_id, replaced_by_source_id, retirement_reason)
                 VALUES ($1, $2, 'retired', 0, $3, $4)
                 ON CONFLICT (user_pk, source_id) DO UPDATE
                 SET state = EXCLUDED.state, replaced_by_source_id = EXCLUDED.replaced_by_source_id,
                     retirement_reason = EXCLUDED.retirement_reason",
                &[&user_pk, &previous, &new, &reason.as_str()],
            )
            .await
            .ctx("retire previous source")?;
        }
    }
    Ok(())
}

fn parse_snapshot_id(snapshot_id: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(snapshot_id).map_err(|_| Failure::SessionNotFound(snapshot_id.to_owned()))
}

impl SyncService {
    /// Freezes the actor's live rows at the latest committed `bundle_seq` into a new snapshot
    /// session (§6.3). With `source_replacement`, the actor's source is retired in favour of a
    /// reserved new source in the same transaction (§7.3): if anything fails, the rotation is
    /// rolled back too. A keep-source request (`None`, or no `source_replacement`) performs no
    /// source checks. Expired snapshot sessions of all users are deleted first.
    pub async fn create_snapshot_session(
        &self,
        actor: &Actor,
        request: Option<&SnapshotSessionCreateRequest>,
    ) -> Result<SnapshotSession, SnapshotCreateError> {
        let watch = crate::stages::Stopwatch::start(self, "snapshot_create");
        let result = self.create_snapshot_session_untimed(actor, request).await;
        watch.total(result.as_ref().map_or(0, |r| r.row_count), result.is_err());
        result
    }

    async fn create_snapshot_session_untimed(
        &self,
        actor: &Actor,
        request: Option<&SnapshotSessionCreateRequest>,
    ) -> Result<SnapshotSession, SnapshotCreateError> {
        let _guard = self.lifecycle.begin()?;
        let replacement = request.and_then(|r| r.source_replacement.as_ref());
        let mut conn = db::connection(&self.pool).await.map_err(Failure::from)?;
        Ok(db::with_retries!(self.create_snapshot_attempt(
            &mut conn,
            actor,
            replacement
        ))?)
    }

    async fn create_snapshot_attempt(
        &self,
        conn: &mut deadpool_postgres::Object,
        actor: &Actor,
        replacement: Option<&SnapshotSourceReplacement>,
    ) -> Result<SnapshotSession, Failure> {
        let catalog = self.catalog();
        let tx = db::begin(conn, db::Mode::RepeatableRead).await?;
        // The first statement fixes the transaction snapshot and, through the foreign key of
        // `snapshot_sessions`, takes `FOR KEY SHARE` on the user's `user_state` row right
        // away; bundle commits (non-key updates of that row) proceed meanwhile without
        // invalidating the lock. A commit between the snapshot and the lock is a
        // serialization failure, which the caller retries.
        let snapshot_id = Uuid::new_v4();
        let ttl = micros(self.limits.snapshot_session_ttl);
        let session_sql = format!(
            "INSERT INTO sync.snapshot_sessions
                 (snapshot_id, user_pk, snapshot_bundle_seq, row_count, byte_count, expires_at)
             SELECT $1, user_pk, next_bundle_seq - 1, 0, 0,
                    now() + $3::int8 * interval '1 microsecond'
             FROM sync.user_state WHERE user_id = $2
             RETURNING {}",
            epoch_micros_sql("expires_at")
        );
        let inserted = tx
            .query_opt(&session_sql, &[&snapshot_id, &actor.user_id(), &ttl])
            .await
            .ctx("insert snapshot session")?;
        tx.execute(
            "DELETE FROM sync.snapshot_sessions WHERE expires_at <= now()",
            &[],
        )
        .await
        .ctx("delete expired snapshot sessions")?;
        let history = scope::read_gate(&tx, actor.user_id()).await?;
        let (Some(history), Some(inserted)) = (history, inserted) else {
            return Err(InternalError::new(format!(
                "missing retained history state for {:?}",
                actor.user_id()
            ))
            .into());
        };
        let expires: i64 = inserted.get(0);
        if let Some(replacement) = replacement {
            apply_replacement(&tx, actor, history.user_pk, replacement).await?;
        }
        let snapshot_bundle_seq = history.next_bundle_seq - 1;

        let materialize = tx
            .prepare_cached(&materialize_sql(&catalog))
            .await
            .ctx("prepare snapshot materialization")?;
        let params: [&(dyn ToSql + Sync); 3] = [&snapshot_id, &actor.user_id(), &history.user_pk];
        let outcome = tx
            .query_one(&materialize, &params)
            .await
            .ctx("materialize snapshot rows")?;
        let row_count: i64 = outcome.get(0);
        let byte_count: i64 = outcome.get(1);
        let missing_state: i64 = outcome.get(2);
        let missing_row: i64 = outcome.get(4);
        let table_name = |id: Option<i32>| {
            id.and_then(|id| catalog.by_id(id))
                .map(CatalogTable::key)
                .unwrap_or_default()
        };
        if missing_state > 0 {
            return Err(InternalError::new(format!(
                "{missing_state} live row(s) of {} are missing non-deleted sync.row_state",
                table_name(outcome.get(3))
            ))
            .into());
        }
        if missing_row > 0 {
            return Err(InternalError::new(format!(
                "{missing_row} sync.row_state row(s) of {} are missing a live business-table row",
                table_name(outcome.get(5))
            ))
            .into());
        }
        let row_limit = self.limits.max_rows_per_snapshot_session;
        if row_limit > 0 && row_count > row_limit {
            return Err(Failure::SnapshotLimit {
                dimension: "row_count",
                actual: row_count,
                limit: row_limit,
            });
        }
        let byte_limit = self.limits.max_bytes_per_snapshot_session;
        if byte_limit > 0 && byte_count > byte_limit {
            return Err(Failure::SnapshotLimit {
                dimension: "byte_count",
                actual: byte_count,
                limit: byte_limit,
            });
        }
        tx.execute(
            "UPDATE sync.snapshot_sessions SET row_count = $2, byte_count = $3 WHERE snapshot_id = $1",
            &[&snapshot_id, &row_count, &byte_count],
        )
        .await
        .ctx("record snapshot counts")?;
        tx.commit().await.ctx("commit snapshot session")?;
        Ok(SnapshotSession {
            snapshot_id: snapshot_id.hyphenated().to_string(),
            snapshot_bundle_seq,
            row_count,
            byte_count,
            expires_at: rfc3339_from_micros(expires),
        })
    }

    /// Returns up to `max_rows` (clamped to `max_rows_per_snapshot_chunk`) rows of a snapshot
    /// after the 1-based `after_row_ordinal` (0 = from the start). Hosts pass
    /// `limits().default_rows_per_snapshot_chunk` when the client gives no `max_rows`. Never
    /// modifies the session.
    pub async fn snapshot_chunk(
        &self,
        actor: &Actor,
        snapshot_id: &str,
        after_row_ordinal: i64,
        max_rows: i64,
    ) -> Result<SnapshotChunkResponse, SnapshotChunkError> {
        let _guard = self.lifecycle.begin()?;
        if snapshot_id.is_empty() {
            return Err(SnapshotChunkError::Invalid(
                "snapshot_id must be provided".to_owned(),
            ));
        }
        if after_row_ordinal < 0 {
            return Err(SnapshotChunkError::Invalid(
                "after_row_ordinal must be >= 0".to_owned(),
            ));
        }
        if max_rows <= 0 {
            return Err(SnapshotChunkError::Invalid(
                "max_rows must be > 0".to_owned(),
            ));
        }
        let page = max_rows.min(self.limits.max_rows_per_snapshot_chunk);
        Ok(self
            .snapshot_chunk_tx(actor, snapshot_id, after_row_ordinal, page)
            .await?)
    }

    async fn snapshot_chunk_tx(
        &self,
        actor: &Actor,
        snapshot_id: &str,
        after_row_ordinal: i64,
        page: i64,
    ) -> Result<SnapshotChunkResponse, Failure> {
        let id = parse_snapshot_id(snapshot_id)?;
        let catalog = self.catalog();
        let mut conn = db::connection(&self.pool).await?;
        let tx = db::begin(&mut conn, db::Mode::RepeatableRead).await?;
        let (session, rows) = futures_util::try_join!(
            tx.prepare_cached(
                "SELECT us.user_id, ss.snapshot_bundle_seq, now() > ss.expires_at
                 FROM sync.snapshot_sessions ss JOIN sync.user_state us ON us.user_pk = ss.user_pk
                 WHERE ss.snapshot_id = $1",
            ),
            tx.prepare_cached(
                "SELECT table_id, key_bytes, bundle_seq, payload_wire::text
                 FROM sync.snapshot_session_rows
                 WHERE snapshot_id = $1 AND row_ordinal > $2
                 ORDER BY row_ordinal
                 LIMIT $3",
            ),
        )
        .ctx("prepare snapshot chunk")?;
        let Some(session) = tx
            .query_opt(&session, &[&id])
            .await
            .ctx("load snapshot session")?
        else {
            return Err(Failure::SessionNotFound(snapshot_id.to_owned()));
        };
        if session.get::<_, String>(0) != actor.user_id() {
            return Err(Failure::SessionForbidden(snapshot_id.to_owned()));
        }
        if session.get::<_, bool>(2) {
            return Err(Failure::SessionExpired(snapshot_id.to_owned()));
        }
        let found = tx
            .query(&rows, &[&id, &after_row_ordinal, &(page + 1)])
            .await
            .ctx("load snapshot chunk rows")?;
        tx.commit().await.ctx("end snapshot chunk")?;
        let has_more = i64::try_from(found.len()).unwrap_or(i64::MAX) > page;
        let mut out = Vec::with_capacity(found.len());
        for row in found
            .into_iter()
            .take(usize::try_from(page).unwrap_or(usize::MAX))
        {
            out.push(snapshot_row(&catalog, &row)?);
        }
        let next_row_ordinal = after_row_ordinal + i64::try_from(out.len()).unwrap_or(i64::MAX);
        Ok(SnapshotChunkResponse {
            snapshot_id: snapshot_id.to_owned(),
            snapshot_bundle_seq: session.get(1),
            rows: out,
            next_row_ordinal,
            has_more,
        })
    }

    /// Deletes a snapshot session of the actor's user (its rows cascade). Expiry is not
    /// checked; later chunk reads answer `snapshot_session_not_found`.
    pub async fn delete_snapshot_session(
        &self,
        actor: &Actor,
        snapshot_id: &str,
    ) -> Result<(), SnapshotDeleteError> {
        let _guard = self.lifecycle.begin()?;
        if snapshot_id.is_empty() {
            return Err(SnapshotDeleteError::Invalid(
                "snapshot_id must be provided".to_owned(),
            ));
        }
        Ok(self.delete_snapshot_tx(actor, snapshot_id).await?)
    }

    async fn delete_snapshot_tx(&self, actor: &Actor, snapshot_id: &str) -> Result<(), Failure> {
        let id = parse_snapshot_id(snapshot_id)?;
        let mut conn = db::connection(&self.pool).await?;
        let tx = db::begin(&mut conn, db::Mode::ReadCommitted).await?;
        let Some(owner) = tx
            .query_opt(
                "SELECT us.user_id FROM sync.snapshot_sessions ss
                 JOIN sync.user_state us ON us.user_pk = ss.user_pk
                 WHERE ss.snapshot_id = $1",
                &[&id],
            )
            .await
            .ctx("load snapshot session for delete")?
        else {
            return Err(Failure::SessionNotFound(snapshot_id.to_owned()));
        };
        if owner.get::<_, String>(0) != actor.user_id() {
            return Err(Failure::SessionForbidden(snapshot_id.to_owned()));
        }
        tx.execute(
            "DELETE FROM sync.snapshot_sessions WHERE snapshot_id = $1",
            &[&id],
        )
        .await
        .ctx("delete snapshot session")?;
        tx.commit().await.ctx("commit snapshot session delete")?;
        Ok(())
    }
}

/// One stored snapshot row (`table_id, key_bytes, bundle_seq, payload_wire::text`) as the
/// wire row.
fn snapshot_row(
    catalog: &ValidatedCatalog,
    row: &tokio_postgres::Row,
) -> Result<SnapshotRow, InternalError> {
    let table_id: i32 = row.get(0);
    let table = catalog.by_id(table_id).ok_or_else(|| {
        InternalError::new(format!("table_id {table_id} is not configured for sync"))
    })?;
    let key_bytes: Vec<u8> = row.get(1);
    let key = decode_key_bytes(table.key_kind(), &key_bytes)
        .map_err(|e| InternalError::with_source("decode snapshot chunk row key", e))?;
    let payload: String = row.get(3);
    Ok(SnapshotRow {
        schema: table.schema().to_owned(),
        table: table.table().to_owned(),
        key: [(table.key_column().to_owned(), key)].into_iter().collect(),
        row_version: row.get(2),
        payload: raw_json(payload.into_bytes())?,
    })
}
