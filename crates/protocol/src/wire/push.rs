//! Push sessions: create, chunk upload, commit and the conflict details of a rejected commit
//! (01-wire.md §3.2, §3.6, §5).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::common::{PushRowKey, SyncKey, is_zero};
use crate::json::de;
use crate::op::Op;

/// `POST /sync/push-sessions` request body (lenient). Any other member (e.g. a `source_id`)
/// is ignored: the source is always the header's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushSessionCreateRequest {
    /// The client's bundle number for this source; the server requires > 0.
    #[serde(default, deserialize_with = "de::int64")]
    pub source_bundle_id: i64,
    /// How many rows the session will upload; the server requires > 0.
    #[serde(default, deserialize_with = "de::int64")]
    pub planned_row_count: i64,
    /// The lease id while seeding an initializing scope; omitted when empty. The server trims
    /// it.
    #[serde(
        default,
        deserialize_with = "de::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub initialization_id: String,
}

/// Which of the two shapes a push-session create response has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PushSessionStatus {
    /// A new session is open: `push_id` and `planned_row_count` are set.
    Staging,
    /// The tuple was committed before: the bundle metadata is set instead.
    AlreadyCommitted,
}

impl PushSessionStatus {
    /// The wire word (`staging`, `already_committed`).
    pub fn as_str(self) -> &'static str {
        match self {
            PushSessionStatus::Staging => "staging",
            PushSessionStatus::AlreadyCommitted => "already_committed",
        }
    }
}

/// `POST /sync/push-sessions` response body. Every field except `status` is omitted when
/// zero/empty, which gives the two shapes of 01-wire.md §5.1; `next_expected_row_ordinal` is
/// therefore never on the wire for a new session (absent means 0). Build it with
/// [`PushSessionCreateResponse::staging`] or [`PushSessionCreateResponse::already_committed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushSessionCreateResponse {
    /// The new session's lower-case UUID (`staging` only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub push_id: String,
    /// Which shape this is.
    pub status: PushSessionStatus,
    /// Echo of the request (`staging` only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub planned_row_count: i64,
    /// Always 0 for a new session, hence omitted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_expected_row_ordinal: i64,
    /// The committed bundle (`already_committed` only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bundle_seq: i64,
    /// The source that committed it (`already_committed` only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_id: String,
    /// The tuple's bundle id (`already_committed` only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_bundle_id: i64,
    /// Rows in the committed bundle (`already_committed` only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub row_count: i64,
    /// The committed bundle's hash (`already_committed` only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bundle_hash: String,
}

impl PushSessionCreateResponse {
    /// `{"push_id":…,"status":"staging","planned_row_count":…}`.
    pub fn staging(push_id: String, planned_row_count: i64) -> Self {
        PushSessionCreateResponse {
            push_id,
            status: PushSessionStatus::Staging,
            planned_row_count,
            next_expected_row_ordinal: 0,
            bundle_seq: 0,
            source_id: String::new(),
            source_bundle_id: 0,
            row_count: 0,
            bundle_hash: String::new(),
        }
    }

    /// `{"status":"already_committed",…}` with the committed bundle's metadata.
    pub fn already_committed(bundle: PushSessionCommitResponse) -> Self {
        PushSessionCreateResponse {
            push_id: String::new(),
            status: PushSessionStatus::AlreadyCommitted,
            planned_row_count: 0,
            next_expected_row_ordinal: 0,
            bundle_seq: bundle.bundle_seq,
            source_id: bundle.source_id,
            source_bundle_id: bundle.source_bundle_id,
            row_count: bundle.row_count,
            bundle_hash: bundle.bundle_hash,
        }
    }
}

/// One row of a pushed chunk (01-wire.md §3.2). Decoded leniently; the server normalizes and
/// validates every field itself (trim/lower-case `schema` and `table`, trim/upper-case `op`,
/// key entry present and a string, payload rules), so all of them are kept as sent.
///
/// Encoded (by a client) in the order `schema, table, key, op, base_row_version, payload`
/// with `payload` omitted when `None`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushRequestRow {
    /// Schema as sent; empty means `public`.
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub schema: String,
    /// Table as sent.
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub table: String,
    /// Key as sent (any JSON values; must be an object or `null`).
    #[serde(default, deserialize_with = "de::null_as_default")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub key: PushRowKey,
    /// Op as sent (`INSERT`, `UPDATE`, `DELETE` after trim/upper-case).
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub op: String,
    /// The server version the client edited; 0 = "row did not exist".
    #[serde(default, deserialize_with = "de::int64")]
    pub base_row_version: i64,
    /// The raw after-image. `None` when the member is absent; a literal `null` is
    /// `Some("null")` (and then rejected by the server for every op).
    #[serde(
        default,
        deserialize_with = "de::raw_keep_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Option<Box<RawValue>>,
}

/// `POST /sync/push-sessions/{push_id}/chunks` request body (lenient).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushSessionChunkRequest {
    /// 0-based ordinal of the first row; must equal the session's next expected ordinal.
    #[serde(default, deserialize_with = "de::int64")]
    pub start_row_ordinal: i64,
    /// The rows; `null` decodes as empty, elements must be objects (a `null` element is an
    /// all-empty row, as in Go).
    #[serde(default, deserialize_with = "de::objects_or_null")]
    pub rows: Vec<PushRequestRow>,
}

/// Chunk upload response: both fields always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushSessionChunkResponse {
    /// The path value, echoed as received (untrimmed).
    pub push_id: String,
    /// `start_row_ordinal + rows.len()`.
    pub next_expected_row_ordinal: i64,
}

/// Commit response (also the metadata of an `already_committed` create): all fields always
/// present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushSessionCommitResponse {
    /// The new bundle's per-user sequence number.
    pub bundle_seq: i64,
    /// The session's (creating) source.
    pub source_id: String,
    /// The session's source bundle id.
    pub source_bundle_id: i64,
    /// Rows in the bundle.
    pub row_count: i64,
    /// 64 lower-case hex characters.
    pub bundle_hash: String,
}

/// The `conflict` member of a `409 push_conflict` (01-wire.md §3.6): every field always
/// present; `server_row` is `null` when there is no live server row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushConflictDetails {
    /// Normalized lower-case schema.
    pub schema: String,
    /// Normalized lower-case table.
    pub table: String,
    /// The row key (single entry, canonical string).
    pub key: SyncKey,
    /// The rejected row's normalized op.
    pub op: Op,
    /// As sent by the client.
    pub base_row_version: i64,
    /// The server's current version for the key, 0 when it has none.
    pub server_row_version: i64,
    /// Whether the server state is a tombstone.
    pub server_row_deleted: bool,
    /// The live server row (PostgreSQL jsonb member order), or `None`, written as `null`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub server_row: Option<Box<RawValue>>,
}
