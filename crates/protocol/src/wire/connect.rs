//! `POST /sync/connect` (01-wire.md §4).

use serde::{Deserialize, Serialize};

use super::common::is_zero;
use crate::json::de;

/// The connect request body (lenient; `{"has_local_pending_rows":true}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectRequest {
    /// Whether this source holds local rows that could seed an uninitialized scope. Absent or
    /// `null` → `false`.
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub has_local_pending_rows: bool,
}

/// Who is authoritative for the scope, as connect answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConnectResolution {
    /// The scope is initialized; the client pulls/rebuilds from the server.
    RemoteAuthoritative,
    /// The caller holds the initialization lease and seeds the scope with its local rows.
    InitializeLocal,
    /// The scope became initialized empty.
    InitializeEmpty,
    /// Another source holds the lease; try again after `retry_after_seconds`.
    RetryLater,
}

impl ConnectResolution {
    /// The wire word (`remote_authoritative`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectResolution::RemoteAuthoritative => "remote_authoritative",
            ConnectResolution::InitializeLocal => "initialize_local",
            ConnectResolution::InitializeEmpty => "initialize_empty",
            ConnectResolution::RetryLater => "retry_later",
        }
    }
}

/// The connect response body. Fields after `resolution` are omitted when empty/zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectResponse {
    /// The outcome.
    pub resolution: ConnectResolution,
    /// Lower-case UUID of the lease; only with `initialize_local`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub initialization_id: String,
    /// RFC 3339 lease expiry (see [`super::format_rfc3339_nano`]); with `initialize_local`
    /// and `retry_later`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lease_expires_at: String,
    /// Whole seconds ≥ 1; only with `retry_later`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_after_seconds: i64,
}

impl ConnectResponse {
    /// `{"resolution":"remote_authoritative"}`.
    pub fn remote_authoritative() -> Self {
        Self::bare(ConnectResolution::RemoteAuthoritative)
    }

    /// `{"resolution":"initialize_empty"}`.
    pub fn initialize_empty() -> Self {
        Self::bare(ConnectResolution::InitializeEmpty)
    }

    /// `initialize_local` with its lease id and expiry.
    pub fn initialize_local(initialization_id: String, lease_expires_at: String) -> Self {
        ConnectResponse {
            initialization_id,
            lease_expires_at,
            ..Self::bare(ConnectResolution::InitializeLocal)
        }
    }

    /// `retry_later` with the current lease expiry and the wait in seconds.
    pub fn retry_later(lease_expires_at: String, retry_after_seconds: i64) -> Self {
        ConnectResponse {
            lease_expires_at,
            retry_after_seconds,
            ..Self::bare(ConnectResolution::RetryLater)
        }
    }

    fn bare(resolution: ConnectResolution) -> Self {
        ConnectResponse {
            resolution,
            initialization_id: String::new(),
            lease_expires_at: String::new(),
            retry_after_seconds: 0,
        }
    }
}
