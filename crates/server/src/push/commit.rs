//! Push-session commit (§5.4, §5.5): staging checks, seed lease, source sequence, conflict
//! detection against `row_state`, apply in staged order with deferred constraints, finalize,
//! activate the source, retention, delete the session, complete a seed.
//!
//! Deferred constraint failures at COMMIT (and data/constraint errors while applying) are the
//! pushed data's fault and surface as `push_commit_invalid` naming the constraint (§13 item 6).

use std::collections::HashSet;

use oversync_protocol::gcj::Document;
use oversync_protocol::key::decode_key_bytes;
use oversync_protocol::op::Op;
use oversync_protocol::wire::{PushConflictDetails, PushSessionCommitResponse};

use crate::capture::{self, BundleContext, expected_source_bundle_id};
use crate::config::micros;
use crate::db::{self, Context};
use crate::error::{Conflict, Failure, InternalError, PushCommitError};
use crate::push::apply::{StagedRow, apply_rows, load_server_row, rejected_data};
use crate::push::{load_session, parse_push_id};
use crate::scope;
use crate::{Actor, SyncService};

impl SyncService {
    /// Commits the staged session `push_id` as one bundle (§5.4) and returns its metadata.
    pub async fn commit_push_session(
        &self,
        actor: &Actor,
        push_id: &str,
    ) -> Result<PushSessionCommitResponse, PushCommitError> {
        let watch = crate::stages::Stopwatch::start(self, "push_commit");
        let result = self.commit_push_session_untimed(actor, push_id).await;
        watch.total(result.as_ref().map_or(0, |r| r.row_count), result.is_err());
        result
    }

    async fn commit_push_session_untimed(
        &self,
        actor: &Actor,
        push_id: &str,
    ) -> Result<PushSessionCommitResponse, PushCommitError> {
        let _guard = self.lifecycle.begin()?;
        let id = parse_push_id(push_id)?;
        let mut conn = db::connection(&self.pool).await.map_err(Failure::from)?;
        Ok(db::with_retries!(
            self.commit_attempt(&mut conn, actor, push_id, id)
        )?)
    }

    async fn commit_attempt(
        &self,
        conn: &mut deadpool_postgres::Object,
        actor: &Actor,
        push_id: &str,
        id: uuid::Uuid,
    ) -> Result<PushSessionCommitResponse, Failure> {
        let user_id = actor.user_id();
        let catalog = self.catalog();
        let tx = db::begin(conn, db::Mode::ReadCommitted).await?;
        db::lock_user(&tx, user_id).await?;
        db::apply_lock_timeout(&tx, self.limits.upload_lock_timeout).await?;
        let session = load_session(&tx, actor, push_id, id).await?;

        let mut watch = crate::stages::Stopwatch::start(self, "push_commit");
        let load = tx
            .prepare_cached(
                "SELECT r.row_ordinal, r.table_id, r.key_bytes, r.op_code, r.base_bundle_seq,
                        r.payload_apply::text, rs.bundle_seq, rs.deleted
                 FROM sync.push_session_rows r
                 LEFT JOIN sync.row_state rs
                   ON rs.user_pk = $2 AND rs.table_id = r.table_id AND rs.key_bytes = r.key_bytes
                 WHERE r.push_id = $1
                 ORDER BY r.row_ordinal",
            )
            .await
            .ctx("prepare staged row load")?;
        let loaded = tx
            .query(&load, &[&session.push_id, &session.user_pk])
            .await
            .ctx("load staged rows")?;
        let staged_count = i64::try_from(loaded.len()).unwrap_or(i64::MAX);
        if session.next_expected_row_ordinal != session.planned_row_count
            || staged_count != session.planned_row_count
        {
            return Err(Failure::Invalid(format!(
                "staged row count {staged_count} does not match planned_row_count {}",
                session.planned_row_count
            )));
        }

        struct Checked<'c> {
            row: StagedRow<'c>,
            base: i64,
            state: Option<(i64, bool)>,
        }
        let mut seen = HashSet::with_capacity(loaded.len());
        let mut rows: Vec<Checked<'_>> = Vec::with_capacity(loaded.len());
        for (index, row) in loaded.iter().enumerate() {
            let ordinal: i64 = row.get(0);
            if usize::try_from(ordinal).ok() != Some(index) {
                return Err(Failure::Invalid(format!(
                    "staged rows are not contiguous at row_ordinal {index}"
                )));
            }
            let table_id: i32 = row.get(1);
            let table = catalog.by_id(table_id).ok_or_else(|| {
                InternalError::new(format!("table_id {table_id} is not configured for sync"))
            })?;
            let key_bytes: Vec<u8> = row.get(2);
            let key_text = decode_key_bytes(table.key_kind(), &key_bytes)
                .map_err(|e| InternalError::with_source("decode staged key", e))?;
            if !seen.insert((table_id, key_bytes)) {
                return Err(Failure::Invalid(format!(
                    "duplicate target row in staged push session: {} {key_text}",
                    table.key()
                )));
            }
            let op = Op::from_code(row.get(3))
                .map_err(|e| InternalError::with_source("decode staged op", e))?;
            let payload: Option<String> = row.get(5);
            let columns = match &payload {
                Some(text) => payload_columns(text)?,
                None => Vec::new(),
            };
            let state = match (row.get::<_, Option<i64>>(6), row.get::<_, Option<bool>>(7)) {
                (Some(seq), Some(deleted)) => Some((seq, deleted)),
                _ => None,
            };
            rows.push(Checked {
                row: StagedRow {
                    table,
                    key_text,
                    op,
                    payload,
                    columns,
                },
                base: row.get(4),
                state,
            });
        }

        watch.lap("load_staged_rows", staged_count);
        tx.batch_execute("SET CONSTRAINTS ALL DEFERRED")
            .await
            .ctx("defer constraints")?;
        let initialization_id = session
            .initialization_id
            .map(|id| id.hyphenated().to_string())
            .unwrap_or_default();
        if !initialization_id.is_empty() {
            scope::require_active_lease(
                &tx,
                user_id,
                &session.source_id,
                &initialization_id,
                micros(self.limits.initialization_lease_ttl),
            )
            .await?;
        }
        let (expected, _) =
            expected_source_bundle_id(&tx, user_id, session.user_pk, &session.source_id, true)
                .await?;
        if session.source_bundle_id != expected {
            return Err(Failure::SequenceChanged {
                user_id: user_id.to_owned(),
                source_id: session.source_id.clone(),
                staged: session.source_bundle_id,
                expected,
            });
        }
        capture::set_bundle_context(
            &tx,
            &BundleContext {
                user_id,
                user_pk: session.user_pk,
                source_id: &session.source_id,
                source_bundle_id: session.source_bundle_id,
                initialization_id: &initialization_id,
            },
        )
        .await?;

        for checked in &rows {
            if let Some(message) = conflict_message(&checked.row, checked.base, checked.state) {
                let server_row = match checked.state {
                    Some((_, false)) => {
                        load_server_row(&tx, user_id, checked.row.table, &checked.row.key_text)
                            .await?
                    }
                    _ => None,
                };
                let table = checked.row.table;
                return Err(Failure::Conflict(Box::new(Conflict {
                    message,
                    details: PushConflictDetails {
                        schema: table.schema().to_owned(),
                        table: table.table().to_owned(),
                        key: [(table.key_column().to_owned(), checked.row.key_text.clone())]
                            .into_iter()
                            .collect(),
                        op: checked.row.op,
                        base_row_version: checked.base,
                        server_row_version: checked.state.map_or(0, |s| s.0),
                        server_row_deleted: checked.state.is_some_and(|s| s.1),
                        server_row,
                    },
                })));
            }
        }

        watch.lap("check_conflicts", staged_count);
        let staged: Vec<StagedRow<'_>> = rows.into_iter().map(|c| c.row).collect();
        apply_rows(&tx, user_id, &staged).await?;
        watch.lap("apply_rows", staged_count);
        let bundle = capture::finalize(
            self,
            &tx,
            &catalog,
            session.user_pk,
            &session.source_id,
            session.source_bundle_id,
        )
        .await?
        .ok_or_else(|| {
            Failure::Invalid("push session produced no captured business-table effects".to_owned())
        })?;
        watch.lap("finalize_bundle", bundle.row_count);
        capture::activate_source(
            &tx,
            user_id,
            session.user_pk,
            &session.source_id,
            session.source_bundle_id,
        )
        .await?;
        capture::apply_retention(self, &tx, session.user_pk).await?;
        tx.execute(
            "DELETE FROM sync.push_sessions WHERE push_id = $1",
            &[&session.push_id],
        )
        .await
        .ctx("delete committed push session")?;
        if session.initialization_id.is_some() {
            scope::mark_initialized(&tx, session.user_pk, &session.source_id).await?;
        }
        watch.lap("bookkeeping", 1);
        let committed = tx.commit().await;
        watch.lap("commit", bundle.row_count);
        committed.map_err(|e| match rejected_data(&e, "at commit") {
            Some(message) => Failure::Invalid(message),
            None => Failure::Internal(InternalError::with_source("commit push session", e)),
        })?;
        Ok(PushSessionCommitResponse {
            bundle_seq: bundle.bundle_seq,
            source_id: bundle.source_id,
            source_bundle_id: bundle.source_bundle_id,
            row_count: bundle.row_count,
            bundle_hash: bundle.bundle_hash,
        })
    }
}

/// Member names of a staged payload, lower-cased, sorted and unique.
fn payload_columns(text: &str) -> Result<Vec<String>, Failure> {
    let doc = Document::parse(text.as_bytes())
        .map_err(|e| InternalError::with_source("parse staged payload", e))?;
    let members = doc
        .root_members()
        .ok_or_else(|| InternalError::new("staged payload is not an object"))?;
    let mut names: Vec<String> = members.iter().map(|(n, _)| n.to_lowercase()).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// §5.5: the reference's message when `row` conflicts with the server state, else `None`.
fn conflict_message(row: &StagedRow<'_>, base: i64, state: Option<(i64, bool)>) -> Option<String> {
    let target = format!("{} {}", row.table.key(), row.key_text);
    match (row.op, state) {
        (Op::Insert, None) if base != 0 => Some(format!(
            "insert conflict on {target}: expected missing row at version 0, got {base}"
        )),
        (Op::Insert, None) => None,
        (Op::Insert, Some((version, _))) if base != version => Some(format!(
            "insert conflict on {target}: expected base_row_version {version}, got {base}"
        )),
        (Op::Insert, Some((version, false))) => Some(format!(
            "insert conflict on {target}: row already exists at version {version}"
        )),
        (Op::Insert, Some((_, true))) => None,
        (op, None | Some((_, true))) => Some(format!(
            "{} conflict on {target}: row does not exist",
            op.as_str().to_lowercase()
        )),
        (op, Some((version, false))) if base != version => Some(format!(
            "{} conflict on {target}: expected version {version}, got {base}",
            op.as_str().to_lowercase()
        )),
        _ => None,
    }
}
