//! `GET /sync/committed-bundles/{bundle_seq}/rows` (01-wire.md §6).

use serde::{Deserialize, Serialize};

use super::common::BundleRow;

/// One page of a committed bundle's rows; all fields always present.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommittedBundleRowsResponse {
    /// The bundle.
    pub bundle_seq: i64,
    /// The bundle's source.
    pub source_id: String,
    /// The bundle's source bundle id.
    pub source_bundle_id: i64,
    /// Total rows in the bundle (not in this page).
    pub row_count: i64,
    /// The bundle's hash.
    pub bundle_hash: String,
    /// This page in ordinal order; `[]` when empty, never `null`.
    pub rows: Vec<BundleRow>,
    /// Ordinal of the last returned row (0-based); for an empty page the supplied
    /// `after_row_ordinal`, or 0 when it was absent.
    pub next_row_ordinal: i64,
    /// Whether rows exist after the last returned one.
    pub has_more: bool,
}
