//! Pull (§6.2): complete bundles after a checkpoint, up to a frozen ceiling, from one
//! REPEATABLE READ, READ ONLY snapshot.
//!
//! A page costs a constant number of queries whatever its size (§13 item 40): the scope gate
//! with the user's history row, the page's `bundle_log` rows, and all their `bundle_rows` in
//! one ordered scan. `history_pruned` answers bump `sync.history_pruned_error_seq` (best
//! effort, outside the transaction). Stage timings are reported as §10.1 lists them.

use std::time::{Duration, Instant};

use oversync_protocol::wire::{Bundle, PullResponse};

use crate::committed::bundle_row;
use crate::config::{DEFAULT_BUNDLES_PER_PULL, MAX_BUNDLES_PER_PULL, StageTiming};
use crate::db::{self, Context};
use crate::error::{Failure, PullError, checkpoint_pruned};
use crate::scope;
use crate::{Actor, SyncService};

/// The pull parameters (01-wire.md §7.1), already parsed by the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullRequest {
    /// The client's checkpoint (≥ 0).
    pub after_bundle_seq: i64,
    /// Page size; ≤ 0 means 1000, values above 5000 are clamped.
    pub max_bundles: i64,
    /// The frozen ceiling from the first page; 0 = none.
    pub target_bundle_seq: i64,
}

struct Stages<'a> {
    service: &'a SyncService,
}

impl Stages<'_> {
    fn record(&self, stage: &'static str, started: Instant, count: i64, error: bool) {
        crate::stages::record(
            self.service,
            &StageTiming {
                operation: "pull",
                stage,
                duration: started.elapsed(),
                count,
                attempt: 0,
                error,
            },
        );
    }
}

impl SyncService {
    /// Returns the bundles after `after_bundle_seq` up to the stable ceiling (§6.2).
    pub async fn pull(
        &self,
        actor: &Actor,
        request: PullRequest,
    ) -> Result<PullResponse, PullError> {
        let _guard = self.lifecycle.begin()?;
        if request.after_bundle_seq < 0 {
            return Err(PullError::InvalidRequest(
                "after_bundle_seq must be >= 0".to_owned(),
            ));
        }
        if request.target_bundle_seq < 0 {
            return Err(PullError::InvalidRequest(
                "target_bundle_seq must be >= 0".to_owned(),
            ));
        }
        let max_bundles = if request.max_bundles <= 0 {
            DEFAULT_BUNDLES_PER_PULL
        } else {
            request.max_bundles.min(MAX_BUNDLES_PER_PULL)
        };
        let stages = Stages { service: self };
        let started = Instant::now();
        let result = self.pull_tx(actor, request, max_bundles, &stages).await;
        stages.record(
            "total",
            started,
            max_bundles,
            matches!(result, Err(Failure::Internal(_))),
        );
        if matches!(result, Err(Failure::HistoryPruned(_))) {
            self.count_history_pruned().await;
        }
        Ok(result?)
    }

    async fn count_history_pruned(&self) {
        let counted = async {
            let conn = db::connection(&self.pool).await?;
            conn.execute("SELECT nextval('sync.history_pruned_error_seq')", &[])
                .await
                .ctx("count history_pruned")
        };
        match tokio::time::timeout(Duration::from_secs(5), counted).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not count history_pruned"),
            Err(_) => tracing::warn!("counting history_pruned timed out"),
        }
    }

    async fn pull_tx(
        &self,
        actor: &Actor,
        request: PullRequest,
        max_bundles: i64,
        stages: &Stages<'_>,
    ) -> Result<PullResponse, Failure> {
        let catalog = self.catalog();
        let tx_started = Instant::now();
        let mut conn = db::connection(&self.pool).await?;
        let tx = db::begin(&mut conn, db::Mode::RepeatableReadOnly).await?;
        let Some(history) = scope::read_gate(&tx, actor.user_id()).await? else {
            return Ok(PullResponse {
                stable_bundle_seq: 0,
                bundles: Vec::new(),
                has_more: false,
            });
        };

        let started = Instant::now();
        let user_id = actor.user_id();
        // §13 item 10: a checkpoint of 0 is below any positive floor too. The reference skips
        // it, so a device that attached to an empty scope and stayed offline while history
        // was pruned silently missed the pruned bundles and diverged for good; it must
        // rebuild instead.
        let floor_check = if request.after_bundle_seq == 0 && history.floor > 0 {
            Some(0)
        } else {
            [request.after_bundle_seq, request.target_bundle_seq]
                .into_iter()
                .find(|&seq| seq > 0 && seq <= history.floor)
        };
        stages.record("retained_floor_check", started, 1, floor_check.is_some());
        if let Some(seq) = floor_check {
            return Err(checkpoint_pruned(user_id, seq, history.floor));
        }

        let started = Instant::now();
        let stable = if request.target_bundle_seq > 0 {
            request.target_bundle_seq
        } else {
            history.next_bundle_seq - 1
        };
        let stable_pruned = stable > 0 && stable <= history.floor;
        stages.record("resolve_stable_bundle_seq", started, 1, stable_pruned);
        if stable_pruned {
            return Err(checkpoint_pruned(user_id, stable, history.floor));
        }
        if request.after_bundle_seq >= stable {
            return Ok(PullResponse {
                stable_bundle_seq: stable,
                bundles: Vec::new(),
                has_more: false,
            });
        }

        let started = Instant::now();
        let list = tx
            .prepare_cached(
                "SELECT bundle_seq, source_id, source_bundle_id, row_count, bundle_hash
                 FROM sync.bundle_log
                 WHERE user_pk = $1 AND bundle_seq > $2 AND bundle_seq > $3 AND bundle_seq <= $4
                 ORDER BY bundle_seq
                 LIMIT $5",
            )
            .await
            .ctx("prepare bundle list")?;
        let mut metas = tx
            .query(
                &list,
                &[
                    &history.user_pk,
                    &request.after_bundle_seq,
                    &history.floor,
                    &stable,
                    &(max_bundles + 1),
                ],
            )
            .await
            .ctx("list bundles")?;
        stages.record(
            "list_bundle_seqs",
            started,
            i64::try_from(metas.len()).unwrap_or(i64::MAX),
            false,
        );
        let has_more = i64::try_from(metas.len()).unwrap_or(i64::MAX) > max_bundles;
        metas.truncate(usize::try_from(max_bundles).unwrap_or(usize::MAX));

        let started = Instant::now();
        let mut bundles: Vec<Bundle> = Vec::with_capacity(metas.len());
        if let (Some(first), Some(last)) = (metas.first(), metas.last()) {
            let (first_seq, last_seq): (i64, i64) = (first.get(0), last.get(0));
            let rows_query = tx
                .prepare_cached(
                    "SELECT table_id, key_bytes, op_code, payload_wire::text, bundle_seq
                     FROM sync.bundle_rows
                     WHERE user_pk = $1 AND bundle_seq >= $2 AND bundle_seq <= $3
                     ORDER BY bundle_seq, row_ordinal",
                )
                .await
                .ctx("prepare bundle rows")?;
            let rows = tx
                .query(&rows_query, &[&history.user_pk, &first_seq, &last_seq])
                .await
                .ctx("load bundle rows")?;
            for meta in &metas {
                let hash: Vec<u8> = meta.get(4);
                bundles.push(Bundle {
                    bundle_seq: meta.get(0),
                    source_id: meta.get(1),
                    source_bundle_id: meta.get(2),
                    row_count: meta.get(3),
                    bundle_hash: oversync_protocol::codec::hex_encode(&hash),
                    rows: Vec::new(),
                });
            }
            let mut index = 0;
            for row in &rows {
                let seq: i64 = row.get(4);
                while index < bundles.len() && bundles[index].bundle_seq < seq {
                    index += 1;
                }
                if let Some(bundle) = bundles.get_mut(index)
                    && bundle.bundle_seq == seq
                {
                    bundle.rows.push(bundle_row(&catalog, seq, row)?);
                }
            }
        }
        stages.record(
            "load_bundles",
            started,
            i64::try_from(bundles.len()).unwrap_or(i64::MAX),
            false,
        );
        tx.commit().await.ctx("end pull")?;
        stages.record("transaction", tx_started, max_bundles, false);
        Ok(PullResponse {
            stable_bundle_seq: stable,
            bundles,
            has_more,
        })
    }
}
