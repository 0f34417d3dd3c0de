//! Committed-bundle row fetch (§6.1): pages through one retained bundle of the caller's user
//! in one REPEATABLE READ transaction (two queries).

use oversync_protocol::key::decode_key_bytes;
use oversync_protocol::op::Op;
use oversync_protocol::wire::{BundleRow, CommittedBundleRowsResponse};

use crate::capture::raw_json;
use crate::db::{self, Context};
use crate::error::{CommittedRowsError, Failure, InternalError, checkpoint_pruned};
use crate::{Actor, SyncService};

impl SyncService {
    /// Returns up to `max_rows` (clamped to `max_rows_per_committed_bundle_chunk`) rows of
    /// bundle `bundle_seq` after the 0-based `after_row_ordinal` (`None`: from the first row).
    /// Hosts pass `limits().default_rows_per_committed_bundle_chunk` when the client gives no
    /// `max_rows`.
    pub async fn committed_bundle_rows(
        &self,
        actor: &Actor,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        max_rows: i64,
    ) -> Result<CommittedBundleRowsResponse, CommittedRowsError> {
        let watch = crate::stages::Stopwatch::start(self, "committed_bundle_rows");
        let result = self
            .committed_bundle_rows_untimed(actor, bundle_seq, after_row_ordinal, max_rows)
            .await;
        watch.total(
            result.as_ref().map_or(0, |r| r.rows.len() as i64),
            result.is_err(),
        );
        result
    }

    async fn committed_bundle_rows_untimed(
        &self,
        actor: &Actor,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        max_rows: i64,
    ) -> Result<CommittedBundleRowsResponse, CommittedRowsError> {
        let _guard = self.lifecycle.begin()?;
        if bundle_seq <= 0 {
            return Err(CommittedRowsError::Invalid(
                "bundle_seq must be > 0".to_owned(),
            ));
        }
        if after_row_ordinal.is_some_and(|a| a < 0) {
            return Err(CommittedRowsError::Invalid(
                "after_row_ordinal must be >= 0".to_owned(),
            ));
        }
        if max_rows <= 0 {
            return Err(CommittedRowsError::Invalid(
                "max_rows must be > 0".to_owned(),
            ));
        }
        let page = max_rows.min(self.limits.max_rows_per_committed_bundle_chunk);
        Ok(self
            .committed_tx(actor, bundle_seq, after_row_ordinal, page)
            .await?)
    }

    async fn committed_tx(
        &self,
        actor: &Actor,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        page: i64,
    ) -> Result<CommittedBundleRowsResponse, Failure> {
        let catalog = self.catalog();
        let mut conn = db::connection(&self.pool).await?;
        let tx = db::begin(&mut conn, db::Mode::RepeatableRead).await?;
        let meta = tx
            .prepare_cached(
                "SELECT us.user_pk, us.retained_bundle_floor, bl.source_id, bl.source_bundle_id,
                        bl.row_count, bl.bundle_hash
                 FROM sync.user_state us
                 LEFT JOIN sync.bundle_log bl ON bl.user_pk = us.user_pk AND bl.bundle_seq = $2
                 WHERE us.user_id = $1",
            )
            .await
            .ctx("prepare committed bundle lookup")?;
        let Some(meta) = tx
            .query_opt(&meta, &[&actor.user_id(), &bundle_seq])
            .await
            .ctx("load committed bundle")?
        else {
            // §13 item 42: a user the server has never seen has no bundles.
            return Err(Failure::BundleNotFound(bundle_seq));
        };
        let user_pk: i64 = meta.get(0);
        let floor: i64 = meta.get(1);
        if bundle_seq <= floor {
            return Err(checkpoint_pruned(actor.user_id(), bundle_seq, floor));
        }
        let Some(source_id) = meta.get::<_, Option<String>>(2) else {
            return Err(Failure::BundleNotFound(bundle_seq));
        };
        let after = after_row_ordinal.unwrap_or(-1);
        let rows_query = tx
            .prepare_cached(
                "SELECT table_id, key_bytes, op_code, payload_wire::text
                 FROM sync.bundle_rows
                 WHERE user_pk = $1 AND bundle_seq = $2 AND row_ordinal > $3
                 ORDER BY row_ordinal
                 LIMIT $4",
            )
            .await
            .ctx("prepare committed rows")?;
        let found = tx
            .query(
                &rows_query,
                &[&user_pk, &bundle_seq, &(after + 1), &(page + 1)],
            )
            .await
            .ctx("load committed rows")?;
        let has_more = i64::try_from(found.len()).unwrap_or(i64::MAX) > page;
        let mut rows = Vec::with_capacity(found.len());
        for row in found
            .iter()
            .take(usize::try_from(page).unwrap_or(usize::MAX))
        {
            rows.push(bundle_row(&catalog, bundle_seq, row)?);
        }
        tx.commit().await.ctx("end committed fetch")?;
        let returned = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let next_row_ordinal = if returned == 0 {
            after_row_ordinal.unwrap_or(0)
        } else {
            after + returned
        };
        let hash: Vec<u8> = meta.get(5);
        Ok(CommittedBundleRowsResponse {
            bundle_seq,
            source_id,
            source_bundle_id: meta.get(3),
            row_count: meta.get(4),
            bundle_hash: oversync_protocol::codec::hex_encode(&hash),
            rows,
            next_row_ordinal,
            has_more,
        })
    }
}

/// One stored `bundle_rows` row (`table_id, key_bytes, op_code, payload_wire::text`) as the
/// wire row of bundle `bundle_seq`.
pub(crate) fn bundle_row(
    catalog: &crate::catalog::ValidatedCatalog,
    bundle_seq: i64,
    row: &tokio_postgres::Row,
) -> Result<BundleRow, InternalError> {
    let table_id: i32 = row.get(0);
    let table = catalog.by_id(table_id).ok_or_else(|| {
        InternalError::new(format!("table_id {table_id} is not configured for sync"))
    })?;
    let key_bytes: Vec<u8> = row.get(1);
    let key = decode_key_bytes(table.key_kind(), &key_bytes)
        .map_err(|e| InternalError::with_source("decode committed bundle row key", e))?;
    let op = Op::from_code(row.get(2)).map_err(|e| InternalError::with_source("decode op", e))?;
    let payload = match row.get::<_, Option<String>>(3) {
        Some(text) if op != Op::Delete => Some(raw_json(text.into_bytes())?),
        _ => None,
    };
    Ok(BundleRow {
        schema: table.schema().to_owned(),
        table: table.table().to_owned(),
        key: [(table.key_column().to_owned(), key)].into_iter().collect(),
        op,
        row_version: bundle_seq,
        payload,
    })
}
