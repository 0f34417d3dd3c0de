//! The wire error taxonomy (01-wire.md §2.9, §15): every error code, its HTTP status, and the
//! three JSON envelopes that carry them.
//!
//! Codes and statuses are part of the public contract: reference clients dispatch on
//! `(status, error)`. They are declared once, in the table below, from which the enum, the wire
//! strings and the status mapping are all generated, so no adapter ever picks a status on its
//! own.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::wire::PushConflictDetails;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, $status:literal; )*) => {
        /// Every error code the protocol defines, plus the few this implementation adds where
        /// the reference answers a bare 500 (marked below).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The snake_case string sent in the `error` field.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $wire, )*
                }
            }

            /// The HTTP status this code is always sent with.
            pub fn http_status(self) -> u16 {
                match self {
                    $( ErrorCode::$variant => $status, )*
                }
            }

            /// The code spelled `wire`, if it is one of ours. Clients must treat unknown codes
            /// as plain failures of the request.
            pub fn from_wire(wire: &str) -> Option<ErrorCode> {
                match wire {
                    $( $wire => Some(ErrorCode::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// Malformed request body, query or `Oversync-Source-ID` header.
    InvalidRequest = "invalid_request", 400;
    /// No authenticated actor (user id or source id missing).
    AuthenticationFailed = "authentication_failed", 401;
    /// A handler reached with the wrong method.
    MethodNotAllowed = "method_not_allowed", 405;
    /// The service is draining for shutdown (or, in this implementation, closed).
    ServiceUnavailable = "service_unavailable", 503;
    /// Connect request invalid (unreachable over HTTP in the reference).
    ConnectInvalid = "connect_invalid", 400;
    /// Connect failed for an internal reason.
    ConnectFailed = "connect_failed", 500;
    /// Push-session create parameters invalid.
    PushSessionInvalid = "push_session_invalid", 400;
    /// Push-session create failed for an internal reason.
    PushSessionCreateFailed = "push_session_create_failed", 500;
    /// The user's scope has not been initialized through connect.
    ScopeUninitialized = "scope_uninitialized", 409;
    /// Another source holds the scope's initialization lease.
    ScopeInitializing = "scope_initializing", 409;
    /// The caller's initialization lease is no longer the active one.
    InitializationStale = "initialization_stale", 409;
    /// The caller's initialization lease expired.
    InitializationExpired = "initialization_expired", 410;
    /// The requested history lies below the retained floor.
    HistoryPruned = "history_pruned", 409;
    /// A push skipped ahead of the source's next `source_bundle_id`.
    SourceSequenceOutOfOrder = "source_sequence_out_of_order", 409;
    /// The source's next `source_bundle_id` moved between staging and commit.
    SourceSequenceChanged = "source_sequence_changed", 409;
    /// The source was retired by a rotated rebuild (structured envelope).
    SourceRetired = "source_retired", 409;
    /// A chunk or one of its rows is invalid.
    PushChunkInvalid = "push_chunk_invalid", 400;
    /// A chunk does not start at the session's next expected ordinal.
    PushChunkOutOfOrder = "push_chunk_out_of_order", 409;
    /// Unknown push session id.
    PushSessionNotFound = "push_session_not_found", 404;
    /// Push session of another user.
    PushSessionForbidden = "push_session_forbidden", 403;
    /// Push session past its expiry.
    PushSessionExpired = "push_session_expired", 410;
    /// Chunk upload failed for an internal reason.
    PushChunkFailed = "push_chunk_failed", 500;
    /// The staged session cannot be committed as it is.
    PushCommitInvalid = "push_commit_invalid", 400;
    /// A row's `base_row_version` does not match the server (structured envelope).
    PushConflict = "push_conflict", 409;
    /// Commit failed for an internal reason.
    PushSessionCommitFailed = "push_session_commit_failed", 500;
    /// Push-session delete failed for an internal reason.
    PushSessionDeleteFailed = "push_session_delete_failed", 500;
    /// Committed-bundle row request parameters invalid.
    CommittedBundleChunkInvalid = "committed_bundle_chunk_invalid", 400;
    /// No committed bundle with that `bundle_seq` for this user.
    CommittedBundleNotFound = "committed_bundle_not_found", 404;
    /// Committed-bundle row fetch failed for an internal reason.
    CommittedBundleRowsFailed = "committed_bundle_rows_failed", 500;
    /// Pull failed for an internal reason.
    PullFailed = "pull_failed", 500;
    /// The host's watch policy refuses this actor.
    BundleChangeWatchForbidden = "bundle_change_watch_forbidden", 403;
    /// Watch is disabled on this server.
    BundleChangeWatchDisabled = "bundle_change_watch_disabled", 503;
    /// Watch setup failed for an internal reason.
    BundleChangeWatchFailed = "bundle_change_watch_failed", 500;
    /// Snapshot-session create body invalid.
    SnapshotSessionInvalid = "snapshot_session_invalid", 400;
    /// The replacement source of a rotated rebuild cannot be used.
    SourceReplacementInvalid = "source_replacement_invalid", 409;
    /// Snapshot-session create failed for an internal reason.
    SnapshotSessionCreateFailed = "snapshot_session_create_failed", 500;
    /// Snapshot chunk parameters invalid.
    SnapshotChunkInvalid = "snapshot_chunk_invalid", 400;
    /// Unknown (or, in this implementation, malformed) snapshot session id.
    SnapshotSessionNotFound = "snapshot_session_not_found", 404;
    /// Snapshot session of another user.
    SnapshotSessionForbidden = "snapshot_session_forbidden", 403;
    /// Snapshot session past its expiry.
    SnapshotSessionExpired = "snapshot_session_expired", 410;
    /// Snapshot chunk fetch failed for an internal reason.
    SnapshotChunkFailed = "snapshot_chunk_failed", 500;
    /// Snapshot-session delete failed for an internal reason.
    SnapshotSessionDeleteFailed = "snapshot_session_delete_failed", 500;
    /// Status query failed.
    StatusFailed = "status_failed", 500;
    /// Health query failed.
    HealthFailed = "health_failed", 500;
    /// Added here (the reference answers 500): a snapshot exceeds the configured row or byte
    /// cap of one snapshot session.
    SnapshotSessionLimitExceeded = "snapshot_session_limit_exceeded", 409;
    /// Added here (the reference has no body limit): a request body exceeds a limit the host
    /// opted into.
    RequestBodyTooLarge = "request_body_too_large", 413;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plain error envelope: `{"error":"<code>","message":"<text>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    /// The snake_case error code (see [`ErrorCode`]; clients must tolerate unknown codes).
    pub error: String,
    /// Human-readable detail; never branch on it.
    #[serde(default)]
    pub message: String,
}

impl ErrorResponse {
    /// An envelope for `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// The code, when it is one this crate knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_wire(&self.error)
    }
}

/// The `source_retired` envelope: the plain fields plus the retired source and its
/// replacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceRetiredResponse {
    /// Always `source_retired`.
    pub error: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// The retired source.
    #[serde(default)]
    pub source_id: String,
    /// The source that replaced it (omitted when empty; always set in practice).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replaced_by_source_id: String,
}

impl SourceRetiredResponse {
    /// The envelope for `source_id` of `user_id` retired in favour of `replaced_by`, with the
    /// reference's message.
    pub fn new(user_id: &str, source_id: &str, replaced_by: &str) -> Self {
        SourceRetiredResponse {
            error: ErrorCode::SourceRetired.as_str().to_owned(),
            message: format!(
                "source {source_id} for user {user_id} was retired and replaced by {replaced_by}"
            ),
            source_id: source_id.to_owned(),
            replaced_by_source_id: replaced_by.to_owned(),
        }
    }
}

/// The `push_conflict` envelope: the plain fields plus the first conflicting row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushConflictResponse {
    /// Always `push_conflict`.
    pub error: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// The first conflicting row in upload order (omitted only if absent; always present from
    /// a correct server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<PushConflictDetails>,
}

impl PushConflictResponse {
    /// The envelope for `conflict` with `message`.
    pub fn new(message: impl Into<String>, conflict: PushConflictDetails) -> Self {
        PushConflictResponse {
            error: ErrorCode::PushConflict.as_str().to_owned(),
            message: message.into(),
            conflict: Some(conflict),
        }
    }
}

/// Any of the three error envelopes, as one value: what a server sends and what a client
/// decodes from a 4xx/5xx JSON body.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ErrorBody {
    /// `{"error","message"}`.
    Plain(ErrorResponse),
    /// `push_conflict` with its `conflict` object.
    PushConflict(PushConflictResponse),
    /// `source_retired` with `source_id` and `replaced_by_source_id`.
    SourceRetired(SourceRetiredResponse),
}

impl ErrorBody {
    /// A plain envelope for `code`.
    pub fn plain(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody::Plain(ErrorResponse::new(code, message))
    }

    /// The `error` string as sent.
    pub fn error(&self) -> &str {
        match self {
            ErrorBody::Plain(e) => &e.error,
            ErrorBody::PushConflict(e) => &e.error,
            ErrorBody::SourceRetired(e) => &e.error,
        }
    }

    /// The `message` as sent.
    pub fn message(&self) -> &str {
        match self {
            ErrorBody::Plain(e) => &e.message,
            ErrorBody::PushConflict(e) => &e.message,
            ErrorBody::SourceRetired(e) => &e.message,
        }
    }

    /// The code, when it is one this crate knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_wire(self.error())
    }

    /// The HTTP status to send this body with (500 for a code this crate does not know).
    pub fn http_status(&self) -> u16 {
        self.code().map_or(500, ErrorCode::http_status)
    }

    /// Decodes an error response body by its `error` field: the structured envelopes for
    /// `push_conflict` and `source_retired`, the plain one otherwise. `None` when the body is
    /// not a JSON error envelope (routers, proxies and host auth send such bodies too).
    pub fn decode(body: &[u8]) -> Option<ErrorBody> {
        let plain: ErrorResponse = serde_json::from_slice(body).ok()?;
        match plain.code() {
            Some(ErrorCode::PushConflict) => serde_json::from_slice(body)
                .ok()
                .map(ErrorBody::PushConflict),
            Some(ErrorCode::SourceRetired) => serde_json::from_slice(body)
                .ok()
                .map(ErrorBody::SourceRetired),
            _ => Some(ErrorBody::Plain(plain)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::from_wire("no_such_code"), None);
    }

    #[test]
    fn code_to_status_table_is_pinned() {
        let table: String = ErrorCode::ALL
            .iter()
            .map(|c| format!("{} {}\n", c.as_str(), c.http_status()))
            .collect();
        insta::assert_snapshot!(table);
    }

    #[test]
    fn error_bodies_decode_by_their_code() {
        let retired = br#"{"error":"source_retired","message":"m","source_id":"a","replaced_by_source_id":"b"}"#;
        let Some(ErrorBody::SourceRetired(body)) = ErrorBody::decode(retired) else {
            panic!("structured source_retired")
        };
        assert_eq!(body.replaced_by_source_id, "b");
        let plain = ErrorBody::decode(br#"{"error":"pull_failed","message":"x"}"#).unwrap();
        assert_eq!(plain.code(), Some(ErrorCode::PullFailed));
        assert_eq!(plain.http_status(), 500);
        let unknown = ErrorBody::decode(br#"{"error":"teapot","message":""}"#).unwrap();
        assert_eq!(unknown.code(), None);
        assert!(ErrorBody::decode(b"404 page not found").is_none());
    }

    #[test]
    fn envelopes_are_encoded_in_reference_field_order() {
        let plain = ErrorResponse::new(
            ErrorCode::PushSessionNotFound,
            "push session x was not found",
        );
        assert_eq!(
            crate::json::to_wire_string(&plain).unwrap(),
            "{\"error\":\"push_session_not_found\",\"message\":\"push session x was not found\"}\n"
        );
        let retired = SourceRetiredResponse::new("user-123", "device-old", "device-new");
        assert_eq!(
            crate::json::to_wire_string(&retired).unwrap(),
            "{\"error\":\"source_retired\",\"message\":\"source device-old for user user-123 was retired and replaced by device-new\",\"source_id\":\"device-old\",\"replaced_by_source_id\":\"device-new\"}\n"
        );
    }
}
