//! Types shared by several endpoints (01-wire.md §3) and the one request header the protocol
//! defines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::op::Op;

/// The header that names the writer/device inside the user's scope (01-wire.md §2.3). Matched
/// case-insensitively; the first value wins; trimmed; required on every `/sync/*` route.
pub const SOURCE_ID_HEADER: &str = "Oversync-Source-ID";

/// A row key as the server emits it (01-wire.md §3.1): in practice exactly one entry, the
/// table's lower-case sync key column mapped to its string value. Encoded with keys in byte
/// order (a `BTreeMap`).
pub type SyncKey = BTreeMap<String, String>;

/// A row key as a client sends it in a push row: any JSON values, so that the server can
/// answer its own `push_chunk_invalid` ("row key … must be a string") rather than a parse
/// error. A non-object `key` still fails decoding; `null` decodes as empty.
pub type PushRowKey = BTreeMap<String, serde_json::Value>;

/// One row effect of a committed bundle (01-wire.md §3.3), as pull and committed-bundle rows
/// return it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleRow {
    /// Lower-case schema name.
    pub schema: String,
    /// Lower-case table name.
    pub table: String,
    /// The row's key.
    pub key: SyncKey,
    /// The operation.
    pub op: Op,
    /// Equals the enclosing bundle's `bundle_seq`.
    pub row_version: i64,
    /// The canonical after-image; present for INSERT/UPDATE, **omitted** (never `null`) for
    /// DELETE. Re-emitted compacted and HTML-escaped, otherwise byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Option<Box<RawValue>>,
}

/// `skip_serializing_if` for Go `omitempty` integers.
pub(crate) fn is_zero(value: &i64) -> bool {
    *value == 0
}
