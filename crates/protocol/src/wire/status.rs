//! `GET /syncx/status` and `GET /syncx/health` (01-wire.md §9.2).

use serde::{Deserialize, Serialize};

use super::capabilities::Features;

/// Overall health: `unhealthy` while shutting down or closed, or when an invariant count is
/// non-zero. Health answers 503 for `unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HealthStatus {
    /// `healthy`.
    Healthy,
    /// `unhealthy`.
    Unhealthy,
}

/// The service lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Lifecycle {
    /// Admitting operations.
    Running,
    /// Draining in-flight work; new operations get 503.
    ShuttingDown,
    /// Closed; new operations get the endpoint's generic 500.
    Closed,
}

/// The body of both status and health; every field always present, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    /// Overall health.
    pub status: HealthStatus,
    /// Protocol version, `v1`.
    pub version: String,
    /// Configured application name (may be empty; never omitted).
    pub app_name: String,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// True only while `running`.
    pub accepting_operations: bool,
    /// Admitted operations in progress in this process.
    pub inflight_operations: i64,
    /// As in capabilities; `[]` when none, never omitted.
    pub registered_tables: Vec<String>,
    /// Service-level capability flags (no per-actor adjustment).
    pub features: Features,
    /// Users whose retained floor is above their latest bundle.
    pub user_state_retention_floor_ahead_count: i64,
    /// Highest latest `bundle_seq` over all users.
    pub latest_bundle_seq_max: i64,
    /// Lowest retained floor over all users.
    pub retained_bundle_floor_min: i64,
    /// Highest retained floor over all users.
    pub retained_bundle_floor_max: i64,
    /// Lowest `max(latest - floor, 0)`.
    pub retained_bundle_window_min: i64,
    /// Highest `max(latest - floor, 0)`.
    pub retained_bundle_window_max: i64,
    /// Pull requests answered `history_pruned`, database-wide.
    pub history_pruned_error_count: i64,
    /// Always 0 in the reference.
    pub accepted_push_replay_count: i64,
    /// Writes to registered tables rejected for lacking bundle context.
    pub rejected_registered_write_count: i64,
    /// Retained bundles, all users.
    pub committed_bundle_count: i64,
    /// Sum of retained bundles' canonical byte counts.
    pub committed_bundle_bytes: i64,
}
