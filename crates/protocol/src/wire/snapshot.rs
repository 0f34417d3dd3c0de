//! Snapshot sessions: create (the one strict request body), chunks (01-wire.md §3.5, §8).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::common::{SyncKey, is_zero};
use crate::json::de;

/// `POST /sync/snapshot-sessions` request body, decoded with
/// [`crate::json::decode_strict_optional`]: unknown members are rejected here and inside
/// `source_replacement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotSessionCreateRequest {
    /// Present for a rotated rebuild; absent or `null` for a keep-source rebuild. Omitted
    /// when `None`.
    #[serde(
        default,
        deserialize_with = "de::object_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_replacement: Option<SnapshotSourceReplacement>,
}

/// The rotated-rebuild request: retire `previous_source_id` in favour of `new_source_id`.
/// All three values are kept as sent; the server trims and validates them (and answers
/// `snapshot_session_invalid` itself, e.g. `source replacement reason is unsupported`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotSourceReplacement {
    /// Must equal the header source after trimming.
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub previous_source_id: String,
    /// The replacement source; non-empty and different after trimming.
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub new_source_id: String,
    /// One of [`SourceReplacementReason`]'s words after trimming.
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub reason: String,
}

/// The reasons a client may give for a rotated rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SourceReplacementReason {
    /// `history_pruned`.
    HistoryPruned,
    /// `source_sequence_out_of_order`.
    SourceSequenceOutOfOrder,
    /// `source_sequence_changed`.
    SourceSequenceChanged,
    /// `source_retired`.
    SourceRetired,
}

impl SourceReplacementReason {
    /// Every supported reason.
    pub const ALL: [SourceReplacementReason; 4] = [
        SourceReplacementReason::HistoryPruned,
        SourceReplacementReason::SourceSequenceOutOfOrder,
        SourceReplacementReason::SourceSequenceChanged,
        SourceReplacementReason::SourceRetired,
    ];

    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceReplacementReason::HistoryPruned => "history_pruned",
            SourceReplacementReason::SourceSequenceOutOfOrder => "source_sequence_out_of_order",
            SourceReplacementReason::SourceSequenceChanged => "source_sequence_changed",
            SourceReplacementReason::SourceRetired => "source_retired",
        }
    }

    /// The reason spelled exactly `word` (the server trims before asking), if supported.
    pub fn from_wire(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == word)
    }
}

/// `POST /sync/snapshot-sessions` response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotSession {
    /// Lower-case UUID.
    pub snapshot_id: String,
    /// The frozen `bundle_seq` (0 for a scope without bundles).
    pub snapshot_bundle_seq: i64,
    /// Rows in the snapshot.
    pub row_count: i64,
    /// Sum of the stored payload texts' byte lengths; *omit-if-zero*.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub byte_count: i64,
    /// RFC 3339 expiry (never refreshed).
    pub expires_at: String,
}

/// One live row of a snapshot (no `op`); all fields always present.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotRow {
    /// Lower-case schema.
    pub schema: String,
    /// Lower-case table.
    pub table: String,
    /// The row key.
    pub key: SyncKey,
    /// The `bundle_seq` that last wrote the row.
    pub row_version: i64,
    /// PostgreSQL's after-image (jsonb member order unless re-encoded); re-emitted compacted
    /// and HTML-escaped, otherwise byte for byte.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Box<RawValue>,
}

/// `GET /sync/snapshot-sessions/{snapshot_id}` response body; all fields always present.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotChunkResponse {
    /// The path value echoed as received.
    pub snapshot_id: String,
    /// As at creation.
    pub snapshot_bundle_seq: i64,
    /// This chunk; `[]` when empty, never `null`.
    pub rows: Vec<SnapshotRow>,
    /// `after_row_ordinal + rows.len()` (1-based ordinals).
    pub next_row_ordinal: i64,
    /// Whether rows exist after this chunk.
    pub has_more: bool,
}
