//! `GET /sync/capabilities` (01-wire.md §9.1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::is_zero;

/// The protocol version string of capabilities (`protocol_version`) and status (`version`).
pub const PROTOCOL_VERSION: &str = "v1";

/// Capability flags by name; encoded with keys in byte order.
pub type Features = BTreeMap<String, bool>;

/// The capability flag names of the reference at HEAD (01-wire.md §9.1), in byte order.
pub mod feature {
    /// `accepted_push_replay_visibility`.
    pub const ACCEPTED_PUSH_REPLAY_VISIBILITY: &str = "accepted_push_replay_visibility";
    /// `bundle_change_watch`: watch enabled (per actor on capabilities).
    pub const BUNDLE_CHANGE_WATCH: &str = "bundle_change_watch";
    /// `bundle_pull`.
    pub const BUNDLE_PULL: &str = "bundle_pull";
    /// `bundle_push`.
    pub const BUNDLE_PUSH: &str = "bundle_push";
    /// `capabilities_endpoint`.
    pub const CAPABILITIES_ENDPOINT: &str = "capabilities_endpoint";
    /// `committed_bundle_row_fetch`.
    pub const COMMITTED_BUNDLE_ROW_FETCH: &str = "committed_bundle_row_fetch";
    /// `committed_bundle_visibility`.
    pub const COMMITTED_BUNDLE_VISIBILITY: &str = "committed_bundle_visibility";
    /// `connect_lifecycle`: reference clients require it before attaching.
    pub const CONNECT_LIFECYCLE: &str = "connect_lifecycle";
    /// `graceful_shutdown`.
    pub const GRACEFUL_SHUTDOWN: &str = "graceful_shutdown";
    /// `history_pruned_errors`.
    pub const HISTORY_PRUNED_ERRORS: &str = "history_pruned_errors";
    /// `history_pruned_visibility`.
    pub const HISTORY_PRUNED_VISIBILITY: &str = "history_pruned_visibility";
    /// `push_session_chunking`.
    pub const PUSH_SESSION_CHUNKING: &str = "push_session_chunking";
    /// `registered_write_rejection_enforced`.
    pub const REGISTERED_WRITE_REJECTION_ENFORCED: &str = "registered_write_rejection_enforced";
    /// `retained_floor_visibility`.
    pub const RETAINED_FLOOR_VISIBILITY: &str = "retained_floor_visibility";
    /// `retained_window_visibility`.
    pub const RETAINED_WINDOW_VISIBILITY: &str = "retained_window_visibility";
    /// `scope_initialization_leases`.
    pub const SCOPE_INITIALIZATION_LEASES: &str = "scope_initialization_leases";
    /// `server_checkpoint_tracking` (always `false` in the reference).
    pub const SERVER_CHECKPOINT_TRACKING: &str = "server_checkpoint_tracking";
    /// `snapshot_chunking`.
    pub const SNAPSHOT_CHUNKING: &str = "snapshot_chunking";
    /// `status_endpoint`.
    pub const STATUS_ENDPOINT: &str = "status_endpoint";
    /// `structured_sync_keys`.
    pub const STRUCTURED_SYNC_KEYS: &str = "structured_sync_keys";
}

/// The 20 flags exactly as the reference reports them, with `bundle_change_watch` set to
/// `watch_enabled` and `server_checkpoint_tracking` `false`, every other flag `true`.
pub fn reference_features(watch_enabled: bool) -> Features {
    use feature::*;
    [
        (ACCEPTED_PUSH_REPLAY_VISIBILITY, true),
        (BUNDLE_CHANGE_WATCH, watch_enabled),
        (BUNDLE_PULL, true),
        (BUNDLE_PUSH, true),
        (CAPABILITIES_ENDPOINT, true),
        (COMMITTED_BUNDLE_ROW_FETCH, true),
        (COMMITTED_BUNDLE_VISIBILITY, true),
        (CONNECT_LIFECYCLE, true),
        (GRACEFUL_SHUTDOWN, true),
        (HISTORY_PRUNED_ERRORS, true),
        (HISTORY_PRUNED_VISIBILITY, true),
        (PUSH_SESSION_CHUNKING, true),
        (REGISTERED_WRITE_REJECTION_ENFORCED, true),
        (RETAINED_FLOOR_VISIBILITY, true),
        (RETAINED_WINDOW_VISIBILITY, true),
        (SCOPE_INITIALIZATION_LEASES, true),
        (SERVER_CHECKPOINT_TRACKING, false),
        (SNAPSHOT_CHUNKING, true),
        (STATUS_ENDPOINT, true),
        (STRUCTURED_SYNC_KEYS, true),
    ]
    .into_iter()
    .map(|(name, on)| (name.to_owned(), on))
    .collect()
}

/// The capabilities response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapabilitiesResponse {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: String,
    /// The server's maximum supported schema version.
    pub schema_version: i64,
    /// The configured application name; *omit-if-empty*.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_name: String,
    /// `schema.table`, lower-case, sorted; *omit-if-empty*.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered_tables: Vec<String>,
    /// One spec per registered table, sorted by `schema.table`; *omit-if-empty*.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered_table_specs: Vec<RegisteredTableSpec>,
    /// Capability flags (see [`reference_features`]).
    pub features: Features,
    /// Limits; always sent by the server (tolerated absent when decoding, as the reference
    /// declares it `omitempty`).
    #[serde(default)]
    pub bundle_limits: BundleLimits,
}

/// One registered table in capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisteredTableSpec {
    /// Lower-case schema.
    pub schema: String,
    /// Lower-case table.
    pub table: String,
    /// The sync key column(s); *omit-if-empty* (exactly one after bootstrap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_key_columns: Vec<String>,
}

/// The advertised limits, in the reference's field order; every field is *omit-if-zero*.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleLimits {
    /// Advertised only (0 → omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_rows_per_bundle: i64,
    /// Advertised only (0 → omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_bytes_per_bundle: i64,
    /// Cap on `max_bundles` of pull (5000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_bundles_per_pull: i64,
    /// Advisory chunk size for clients (1000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub default_rows_per_push_chunk: i64,
    /// Enforced on chunk upload (5000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_rows_per_push_chunk: i64,
    /// Push-session TTL in whole seconds (900).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub push_session_ttl_seconds: i64,
    /// Default committed-bundle page size (1000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub default_rows_per_committed_bundle_chunk: i64,
    /// Committed-bundle page clamp (5000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_rows_per_committed_bundle_chunk: i64,
    /// Default snapshot chunk size (1000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub default_rows_per_snapshot_chunk: i64,
    /// Snapshot chunk clamp (5000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_rows_per_snapshot_chunk: i64,
    /// Snapshot-session TTL in seconds (900).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snapshot_session_ttl_seconds: i64,
    /// Row cap per snapshot session (0 → unlimited, omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_rows_per_snapshot_session: i64,
    /// Byte cap per snapshot session (0 → unlimited, omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_bytes_per_snapshot_session: i64,
    /// Initialization lease TTL in seconds (900).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub initialization_lease_ttl_seconds: i64,
}
