//! `GET /sync/pull` (01-wire.md §3.4, §7.1–§7.3).

use serde::{Deserialize, Serialize};

use super::common::{BundleRow, is_zero};

/// One complete committed bundle in a pull response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bundle {
    /// Per-user sequence number, ≥ 1.
    pub bundle_seq: i64,
    /// The source that committed it.
    pub source_id: String,
    /// That source's bundle id, ≥ 1.
    pub source_bundle_id: i64,
    /// Rows in the bundle; *omit-if-zero* (always ≥ 1 in pull responses).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub row_count: i64,
    /// 64 lower-case hex characters; *omit-if-empty* (always set in pull responses).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bundle_hash: String,
    /// The rows in committed order; never `null`.
    pub rows: Vec<BundleRow>,
}

/// The pull response; all fields always present.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullResponse {
    /// The frozen ceiling of this pull session.
    pub stable_bundle_seq: i64,
    /// Bundles in ascending order; `[]` when none, never `null`.
    pub bundles: Vec<Bundle>,
    /// Whether more bundles up to `stable_bundle_seq` exist.
    pub has_more: bool,
}
