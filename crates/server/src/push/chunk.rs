//! Chunk upload (§5.2): validate every row before touching the database, then stage the
//! chunk with one `unnest` insert and advance the session, pipelined.

use oversync_protocol::wire::{PushSessionChunkRequest, PushSessionChunkResponse};
use tokio_postgres::types::ToSql;

use crate::config::micros;
use crate::db::{self, Context};
use crate::error::{Failure, PushChunkError};
use crate::push::validate::{PreparedRow, prepare_rows};
use crate::push::{load_session, parse_push_id};
use crate::scope;
use crate::{Actor, SyncService};

impl SyncService {
    /// Stages one chunk of rows into the session `push_id` (§5.2, §5.3).
    pub async fn upload_push_chunk(
        &self,
        actor: &Actor,
        push_id: &str,
        request: &PushSessionChunkRequest,
    ) -> Result<PushSessionChunkResponse, PushChunkError> {
        let watch = crate::stages::Stopwatch::start(self, "push_chunk");
        let result = self
            .upload_push_chunk_untimed(actor, push_id, request)
            .await;
        watch.total(
            result.as_ref().map_or(0, |_| request.rows.len() as i64),
            result.is_err(),
        );
        result
    }

    async fn upload_push_chunk_untimed(
        &self,
        actor: &Actor,
        push_id: &str,
        request: &PushSessionChunkRequest,
    ) -> Result<PushSessionChunkResponse, PushChunkError> {
        let _guard = self.lifecycle.begin()?;
        if request.start_row_ordinal < 0 {
            return Err(PushChunkError::Invalid(
                "start_row_ordinal must be >= 0".to_owned(),
            ));
        }
        if request.rows.is_empty() {
            return Err(PushChunkError::Invalid("rows must not be empty".to_owned()));
        }
        let count = i64::try_from(request.rows.len()).unwrap_or(i64::MAX);
        if count > self.limits.max_rows_per_push_chunk {
            return Err(PushChunkError::Invalid(format!(
                "rows length {count} exceeds max_rows_per_push_chunk {}",
                self.limits.max_rows_per_push_chunk
            )));
        }
        let catalog = self.catalog();
        let rows = prepare_rows(&catalog, &request.rows).map_err(PushChunkError::Invalid)?;
        let id = parse_push_id(push_id)?;
        let mut conn = db::connection(&self.pool).await.map_err(Failure::from)?;
        let start = request.start_row_ordinal;
        Ok(db::with_retries!(self.chunk_attempt(
            &mut conn, actor, push_id, id, start, &rows
        ))?)
    }

    async fn chunk_attempt(
        &self,
        conn: &mut deadpool_postgres::Object,
        actor: &Actor,
        push_id: &str,
        id: uuid::Uuid,
        start: i64,
        rows: &[PreparedRow],
    ) -> Result<PushSessionChunkResponse, Failure> {
        let tx = db::begin(conn, db::Mode::ReadCommitted).await?;
        db::lock_user(&tx, actor.user_id()).await?;
        db::apply_lock_timeout(&tx, self.limits.upload_lock_timeout).await?;
        let session = load_session(&tx, actor, push_id, id).await?;
        if let Some(initialization_id) = session.initialization_id {
            scope::require_active_lease(
                &tx,
                actor.user_id(),
                &session.source_id,
                &initialization_id.hyphenated().to_string(),
                micros(self.limits.initialization_lease_ttl),
            )
            .await?;
        }
        if start != session.next_expected_row_ordinal {
            return Err(Failure::ChunkOutOfOrder {
                push_id: push_id.to_owned(),
                expected: session.next_expected_row_ordinal,
                actual: start,
            });
        }
        let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let next = start.saturating_add(count);
        if next > session.planned_row_count {
            return Err(Failure::Invalid(
                "chunk exceeds planned_row_count".to_owned(),
            ));
        }

        let table_ids: Vec<i32> = rows.iter().map(|r| r.table_id).collect();
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.key_bytes.as_slice()).collect();
        let ops: Vec<i16> = rows.iter().map(|r| r.op.code()).collect();
        let bases: Vec<i64> = rows.iter().map(|r| r.base_row_version).collect();
        let payloads: Vec<Option<&str>> = rows.iter().map(|r| r.payload.as_deref()).collect();
        let (insert, advance) = futures_util::try_join!(
            tx.prepare_cached(
                "INSERT INTO sync.push_session_rows (push_id, row_ordinal, table_id, key_bytes, op_code, base_bundle_seq, payload_apply)
                 SELECT $1, $2 + r.i - 1, r.table_id, r.key_bytes, r.op_code, r.base, r.payload::json
                 FROM unnest($3::int4[], $4::bytea[], $5::int2[], $6::int8[], $7::text[])
                      WITH ORDINALITY AS r(table_id, key_bytes, op_code, base, payload, i)",
            ),
            tx.prepare_cached(
                "UPDATE sync.push_sessions
                 SET next_expected_row_ordinal = $2, expires_at = now() + $3::int8 * interval '1 microsecond'
                 WHERE push_id = $1",
            ),
        )
        .ctx("prepare chunk staging")?;
        let ttl = micros(self.limits.push_session_ttl);
        let insert_params: [&(dyn ToSql + Sync); 7] =
            [&id, &start, &table_ids, &keys, &ops, &bases, &payloads];
        let advance_params: [&(dyn ToSql + Sync); 3] = [&id, &next, &ttl];
        futures_util::try_join!(
            tx.execute(&insert, &insert_params),
            tx.execute(&advance, &advance_params),
        )
        .ctx("stage chunk rows")?;
        tx.commit().await.ctx("commit chunk")?;
        Ok(PushSessionChunkResponse {
            push_id: push_id.to_owned(),
            next_expected_row_ordinal: next,
        })
    }
}
