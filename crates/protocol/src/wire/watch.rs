//! `GET /sync/watch` Server-Sent Events and the PostgreSQL `NOTIFY` payload behind them
//! (01-wire.md §7.4–§7.9).
//!
//! The frames are fixed byte strings so that the server writes them byte for byte instead of
//! relying on an SSE helper whose keep-alive comments and framing differ from the reference.

use serde::{Deserialize, Serialize};

use super::common::is_zero;

/// The only SSE event name the server sends.
pub const SSE_BUNDLE_EVENT: &str = "bundle";

/// The heartbeat frame, exactly: a comment line and a blank line.
pub const SSE_HEARTBEAT_FRAME: &[u8] = b": heartbeat\n\n";

/// The default PostgreSQL channel for bundle-change notifications, shared with Go servers on
/// the same database.
pub const DEFAULT_NOTIFY_CHANNEL: &str = "oversync_bundle_change_v1";

/// The `data:` of a `bundle` event: "the scope has a committed bundle at or below
/// `bundle_seq` that may be new". Live events carry all three fields; catch-up events only
/// `bundle_seq` (the others are omitted when empty/zero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleChangeEvent {
    /// The newest committed bundle, ≥ 1.
    pub bundle_seq: i64,
    /// The committing source; *omit-if-empty*.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_id: String,
    /// The committing source's bundle id; *omit-if-zero*.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_bundle_id: i64,
}

impl BundleChangeEvent {
    /// A catch-up event: `{"bundle_seq":…}` only.
    pub fn catch_up(bundle_seq: i64) -> Self {
        BundleChangeEvent {
            bundle_seq,
            source_id: String::new(),
            source_bundle_id: 0,
        }
    }

    /// The complete SSE frame for this event: `event: bundle\ndata: <compact JSON>\n\n`, the
    /// JSON Go-escaped as in every response (no newline inside).
    ///
    /// # Errors
    /// Never in practice (serializing this type cannot fail); kept as `Result` because the
    /// encoder is generic.
    pub fn to_sse_frame(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut frame = Vec::with_capacity(96);
        frame.extend_from_slice(b"event: bundle\ndata: ");
        crate::json::write_compact(&mut frame, self)?;
        frame.extend_from_slice(b"\n\n");
        Ok(frame)
    }
}

/// The `NOTIFY` payload a committing server sends on [`DEFAULT_NOTIFY_CHANNEL`] (Go
/// `json.Marshal`, i.e. [`crate::json::to_compact_vec`]): `user_pk` is the server's internal
/// per-user key and never leaves the database. Listeners ignore payloads that do not decode
/// or carry a non-positive `user_pk` or `bundle_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleChangeNotification {
    /// Internal per-user key.
    pub user_pk: i64,
    /// The committed bundle.
    pub bundle_seq: i64,
    /// The committing source; *omit-if-empty*.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_id: String,
    /// The committing source's bundle id; *omit-if-zero*.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_bundle_id: i64,
}
