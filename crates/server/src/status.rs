//! Capabilities and status (§10.3, §10.4). Neither registers as an operation: both answer
//! during shutdown and after close.

use oversync_protocol::wire::{
    BundleLimits, CapabilitiesResponse, HealthStatus, Lifecycle, PROTOCOL_VERSION,
    RegisteredTableSpec, StatusResponse, reference_features,
};

use crate::SyncService;
use crate::catalog::NormalizedTable;
use crate::config::MAX_BUNDLES_PER_PULL;
use crate::db::{self, Context};
use crate::error::StatusError;

fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl SyncService {
    /// Sorted `schema.table` keys of the configured registrations (normalized, unique).
    fn registered_specs(&self) -> Vec<RegisteredTableSpec> {
        let mut specs: Vec<RegisteredTableSpec> = self
            .config
            .registered_tables
            .iter()
            .map(|reg| {
                let n = NormalizedTable::from_registration(reg);
                RegisteredTableSpec {
                    schema: n.schema,
                    table: n.table,
                    sync_key_columns: n.key_columns,
                }
            })
            .collect();
        specs.sort_by(|a, b| {
            format!("{}.{}", a.schema, a.table)
                .as_bytes()
                .cmp(format!("{}.{}", b.schema, b.table).as_bytes())
        });
        specs.dedup_by(|a, b| a.schema == b.schema && a.table == b.table);
        specs
    }

    fn registered_keys(&self) -> Vec<String> {
        self.registered_specs()
            .into_iter()
            .map(|s| format!("{}.{}", s.schema, s.table))
            .collect()
    }

    /// The capabilities document (§10.4) with service-level features; the HTTP adapter may
    /// switch `bundle_change_watch` off per actor.
    pub fn capabilities(&self) -> CapabilitiesResponse {
        let l = &self.limits;
        CapabilitiesResponse {
            protocol_version: PROTOCOL_VERSION.to_owned(),
            schema_version: self.config.schema_version,
            app_name: self.config.app_name.clone(),
            registered_tables: self.registered_keys(),
            registered_table_specs: self.registered_specs(),
            features: reference_features(self.config.watch.enabled),
            bundle_limits: BundleLimits {
                max_rows_per_bundle: l.max_rows_per_bundle,
                max_bytes_per_bundle: l.max_bytes_per_bundle,
                max_bundles_per_pull: MAX_BUNDLES_PER_PULL,
                default_rows_per_push_chunk: l.default_rows_per_push_chunk,
                max_rows_per_push_chunk: l.max_rows_per_push_chunk,
                push_session_ttl_seconds: seconds(l.push_session_ttl),
                default_rows_per_committed_bundle_chunk: l.default_rows_per_committed_bundle_chunk,
                max_rows_per_committed_bundle_chunk: l.max_rows_per_committed_bundle_chunk,
                default_rows_per_snapshot_chunk: l.default_rows_per_snapshot_chunk,
                max_rows_per_snapshot_chunk: l.max_rows_per_snapshot_chunk,
                snapshot_session_ttl_seconds: seconds(l.snapshot_session_ttl),
                max_rows_per_snapshot_session: l.max_rows_per_snapshot_session,
                max_bytes_per_snapshot_session: l.max_bytes_per_snapshot_session,
                initialization_lease_ttl_seconds: seconds(l.initialization_lease_ttl),
            },
        }
    }

    /// The status snapshot (§10.3). Works before bootstrap (every database number is then 0).
    pub async fn status(&self) -> Result<StatusResponse, StatusError> {
        let (lifecycle, in_flight) = self.lifecycle.snapshot();
        let conn = db::connection(&self.pool).await?;
        let present = conn
            .query_one(
                "SELECT to_regclass('sync.user_state') IS NOT NULL,
                        to_regclass('sync.bundle_log') IS NOT NULL,
                        to_regclass('sync.history_pruned_error_seq') IS NOT NULL,
                        to_regclass('sync.accepted_push_replay_seq') IS NOT NULL,
                        to_regclass('sync.rejected_registered_write_seq') IS NOT NULL",
                &[],
            )
            .await
            .ctx("inspect sync objects")?;
        let mut numbers = [0_i64; 11];
        if present.get::<_, bool>(0) {
            let row = conn
                .query_one(
                    "SELECT count(*) FILTER (WHERE retained_bundle_floor > next_bundle_seq - 1),
                            COALESCE(max(GREATEST(next_bundle_seq - 1, 0)), 0)::int8,
                            COALESCE(min(retained_bundle_floor), 0)::int8,
                            COALESCE(max(retained_bundle_floor), 0)::int8,
                            COALESCE(min(GREATEST(next_bundle_seq - 1 - retained_bundle_floor, 0)), 0)::int8,
                            COALESCE(max(GREATEST(next_bundle_seq - 1 - retained_bundle_floor, 0)), 0)::int8
                     FROM sync.user_state",
                    &[],
                )
                .await
                .ctx("aggregate user_state")?;
            for (i, slot) in numbers.iter_mut().take(6).enumerate() {
                *slot = row.get(i);
            }
        }
        for (flag, slot, sequence) in [
            (2, 6, "sync.history_pruned_error_seq"),
            (3, 7, "sync.accepted_push_replay_seq"),
            (4, 8, "sync.rejected_registered_write_seq"),
        ] {
            if present.get::<_, bool>(flag) {
                numbers[slot] = conn
                    .query_one(
                        &format!(
                            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END::int8 FROM {sequence}"
                        ),
                        &[],
                    )
                    .await
                    .ctx("read status counter")?
                    .get(0);
            }
        }
        if present.get::<_, bool>(1) {
            let row = conn
                .query_one(
                    "SELECT count(*), COALESCE(sum(byte_count), 0)::int8 FROM sync.bundle_log",
                    &[],
                )
                .await
                .ctx("aggregate bundle_log")?;
            numbers[9] = row.get(0);
            numbers[10] = row.get(1);
        }
        // Real health (§13 item 39): a started watch listener that lost its connection makes
        // the process unhealthy until it reconnects.
        let listener_down = self.watch_listener_state() == crate::ListenerState::Reconnecting;
        let healthy = lifecycle == Lifecycle::Running && numbers[0] == 0 && !listener_down;
        Ok(StatusResponse {
            status: if healthy {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            },
            version: PROTOCOL_VERSION.to_owned(),
            app_name: self.config.app_name.clone(),
            lifecycle,
            accepting_operations: lifecycle == Lifecycle::Running,
            inflight_operations: in_flight,
            registered_tables: self.registered_keys(),
            features: reference_features(self.config.watch.enabled),
            user_state_retention_floor_ahead_count: numbers[0],
            latest_bundle_seq_max: numbers[1],
            retained_bundle_floor_min: numbers[2],
            retained_bundle_floor_max: numbers[3],
            retained_bundle_window_min: numbers[4],
            retained_bundle_window_max: numbers[5],
            history_pruned_error_count: numbers[6],
            accepted_push_replay_count: numbers[7],
            rejected_registered_write_count: numbers[8],
            committed_bundle_count: numbers[9],
            committed_bundle_bytes: numbers[10],
        })
    }
}
