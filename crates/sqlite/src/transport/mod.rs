//! The client's view of the server: one method per endpoint, typed with the
//! `oversync_protocol::wire` request and response types (client chapter §10).
//!
//! The engine and the client never see HTTP: they call a [`Transport`] and get either the
//! decoded `200` body or a [`TransportError`] that says whether the server answered (status +
//! decoded error envelope) or the request never completed (network, timeout, token). The
//! reqwest implementation is [`http::HttpTransport`]; it alone knows URLs and headers.

pub mod http;

use std::future::Future;
use std::pin::Pin;

use oversync_protocol::error::{ErrorBody, ErrorResponse};
use oversync_protocol::wire::{
    CapabilitiesResponse, CommittedBundleRowsResponse, ConnectRequest, ConnectResponse,
    PullResponse, PushSessionChunkRequest, PushSessionChunkResponse, PushSessionCommitResponse,
    PushSessionCreateRequest, PushSessionCreateResponse, SnapshotChunkResponse, SnapshotSession,
    SnapshotSessionCreateRequest,
};

/// The body of a non-`200` response: a protocol error envelope, or whatever else a router,
/// proxy or host middleware sent.
#[derive(Debug, Clone)]
pub enum StatusBody {
    /// One of the protocol's three error envelopes, decoded by its `error` code (client
    /// chapter §10.5). Boxed: a `push_conflict` envelope carries a whole server row.
    Envelope(Box<ErrorBody>),
    /// Not a protocol error envelope (plain text from a proxy, an empty body, JSON without a
    /// non-blank `error`); the text is kept for diagnostics, truncated to 512 characters.
    Unrecognized(String),
}

impl StatusBody {
    /// Decodes a response body. A `push_conflict` or `source_retired` body whose structured
    /// members do not decode still counts as a plain envelope with its code, so the client
    /// reacts to the code (e.g. an unstructured conflict is an ordinary HTTP error, §5.1).
    pub fn decode(body: &[u8]) -> StatusBody {
        let envelope = ErrorBody::decode(body).or_else(|| {
            serde_json::from_slice::<ErrorResponse>(body)
                .ok()
                .map(ErrorBody::Plain)
        });
        match envelope {
            Some(envelope) if !envelope.error().trim().is_empty() => {
                StatusBody::Envelope(Box::new(envelope))
            }
            _ => {
                let text = String::from_utf8_lossy(body);
                StatusBody::Unrecognized(text.chars().take(512).collect())
            }
        }
    }

    /// The envelope, when the body was one.
    pub fn envelope(&self) -> Option<&ErrorBody> {
        match self {
            StatusBody::Envelope(e) => Some(e.as_ref()),
            StatusBody::Unrecognized(_) => None,
        }
    }

    /// The `error` code string, when the body was an envelope.
    pub fn code(&self) -> Option<&str> {
        self.envelope().map(ErrorBody::error)
    }

    /// The `message` of an envelope, or the (truncated) text of any other body.
    pub fn message(&self) -> &str {
        match self {
            StatusBody::Envelope(e) => e.message(),
            StatusBody::Unrecognized(text) => text,
        }
    }
}

/// What kind of failure prevented a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkErrorKind {
    /// Connecting failed (refused, reset, DNS).
    Connect,
    /// The request or the body read timed out.
    Timeout,
    /// The connection broke while sending or reading (EOF, reset, broken pipe).
    Interrupted,
    /// Anything else the HTTP stack reported (e.g. an invalid URL).
    Other,
}

/// A failed endpoint call.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The server answered with a non-success status. Fault: depends on the code (see
    /// client chapter §10.5); 429/502/503/504 are transient.
    #[error("{endpoint}: server returned status {status}: {}{}", .body.code().unwrap_or("unrecognized body"), if .body.message().is_empty() { String::new() } else { format!(" ({})", .body.message()) })]
    Status {
        /// The endpoint called.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The decoded body.
        body: StatusBody,
    },
    /// No response was received. Fault: the network (or the server went away).
    #[error("{endpoint}: {kind:?} error: {message}")]
    Network {
        /// The endpoint called.
        endpoint: &'static str,
        /// The class of failure.
        kind: NetworkErrorKind,
        /// The HTTP stack's description.
        message: String,
    },
    /// A `200` body that does not decode as the endpoint's response type. Fault: the server.
    #[error("{endpoint}: undecodable response: {message}")]
    Decode {
        /// The endpoint called.
        endpoint: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The token provider failed; the request was not sent. Fault: the host's auth.
    #[error("token provider failed: {0}")]
    Token(String),
    /// A transient failure persisted through every attempt of the retry policy.
    #[error("{operation}: retry exhausted after {attempts} attempts: {last}")]
    RetryExhausted {
        /// The retried operation's name (e.g. `pull_request`).
        operation: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<TransportError>,
    },
}

impl TransportError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            TransportError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The protocol error code, when the server answered with an envelope.
    pub fn code(&self) -> Option<&str> {
        match self {
            TransportError::Status { body, .. } => body.code(),
            _ => None,
        }
    }

    /// The decoded body, when the server answered.
    pub fn body(&self) -> Option<&StatusBody> {
        match self {
            TransportError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The protocol error envelope, when the server answered with one.
    pub fn envelope(&self) -> Option<&ErrorBody> {
        self.body().and_then(StatusBody::envelope)
    }

    /// Whether a retry of the same request may succeed (§10.4): 429/502/503/504 and network
    /// failures. Decoding, token failures, every other status and an exhausted retry are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            TransportError::Network { kind, .. } => *kind != NetworkErrorKind::Other,
            _ => false,
        }
    }
}

/// A chunk read from a watch stream: bytes, `None` at a clean end of stream, or the failure
/// that broke it.
pub type WatchChunk<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, TransportError>> + Send + 'a>>;

/// The body of an open `GET /sync/watch` stream (`200`, `text/event-stream`), read as raw
/// bytes; [`crate::watch::WatchEvents`] parses it. Dropping it closes the stream.
pub trait WatchBody: Send + std::fmt::Debug {
    /// The next bytes of the stream, `Ok(None)` once the server ended it cleanly.
    fn next_chunk(&mut self) -> WatchChunk<'_>;
}

/// The server's endpoints as the client uses them. `source_id` is sent as
/// `Oversync-Source-ID` (omitted when empty). Implementations must be cheap to share between
/// tasks.
///
/// Every method resolves to the decoded `200` body (`204` for the deletes) or a
/// [`TransportError`]. Whether an implementation retries transient failures is its own
/// business; [`http::HttpTransport`] retries exactly the calls §10.1 marks as retried.
pub trait Transport: Send + Sync + 'static {
    /// `GET /sync/capabilities`.
    fn capabilities(
        &self,
        source_id: &str,
    ) -> impl Future<Output = Result<CapabilitiesResponse, TransportError>> + Send;

    /// `POST /sync/connect`.
    fn connect(
        &self,
        source_id: &str,
        request: &ConnectRequest,
    ) -> impl Future<Output = Result<ConnectResponse, TransportError>> + Send;

    /// `POST /sync/push-sessions`.
    fn create_push_session(
        &self,
        source_id: &str,
        request: &PushSessionCreateRequest,
    ) -> impl Future<Output = Result<PushSessionCreateResponse, TransportError>> + Send;

    /// `POST /sync/push-sessions/{push_id}/chunks`.
    fn upload_push_chunk(
        &self,
        source_id: &str,
        push_id: &str,
        request: &PushSessionChunkRequest,
    ) -> impl Future<Output = Result<PushSessionChunkResponse, TransportError>> + Send;

    /// `POST /sync/push-sessions/{push_id}/commit` (no body).
    fn commit_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> impl Future<Output = Result<PushSessionCommitResponse, TransportError>> + Send;

    /// `DELETE /sync/push-sessions/{push_id}`.
    fn delete_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// `GET /sync/committed-bundles/{bundle_seq}/rows`.
    fn committed_bundle_rows(
        &self,
        source_id: &str,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        max_rows: i64,
    ) -> impl Future<Output = Result<CommittedBundleRowsResponse, TransportError>> + Send;

    /// `GET /sync/pull`; `target_bundle_seq` is sent only when positive.
    fn pull(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
        max_bundles: i64,
        target_bundle_seq: i64,
    ) -> impl Future<Output = Result<PullResponse, TransportError>> + Send;

    /// `POST /sync/snapshot-sessions`, with a body only for a rotated rebuild.
    fn create_snapshot_session(
        &self,
        source_id: &str,
        request: Option<&SnapshotSessionCreateRequest>,
    ) -> impl Future<Output = Result<SnapshotSession, TransportError>> + Send;

    /// `GET /sync/snapshot-sessions/{snapshot_id}`.
    fn snapshot_chunk(
        &self,
        source_id: &str,
        snapshot_id: &str,
        after_row_ordinal: i64,
        max_rows: i64,
    ) -> impl Future<Output = Result<SnapshotChunkResponse, TransportError>> + Send;

    /// `DELETE /sync/snapshot-sessions/{snapshot_id}`.
    fn delete_snapshot_session(
        &self,
        source_id: &str,
        snapshot_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// `GET /sync/watch?after_bundle_seq=<after>` (wire chapter §7.4–§7.8): the open event
    /// stream, or the error the server answered before any SSE byte (e.g. `403
    /// bundle_change_watch_forbidden`, `503 bundle_change_watch_disabled`). Never retried:
    /// the background download loop reconnects with its own back-off.
    ///
    /// The default answers `501` without a request: a transport that cannot stream makes
    /// the download loop poll instead.
    fn watch(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
    ) -> impl Future<Output = Result<Box<dyn WatchBody>, TransportError>> + Send {
        let _ = (source_id, after_bundle_seq);
        std::future::ready(Err(TransportError::Status {
            endpoint: "watch",
            status: 501,
            body: StatusBody::Unrecognized("this transport does not stream".to_owned()),
        }))
    }
}

/// A shared transport is a transport (lets a host or a test keep a handle to it).
impl<T: Transport> Transport for std::sync::Arc<T> {
    fn capabilities(
        &self,
        source_id: &str,
    ) -> impl Future<Output = Result<CapabilitiesResponse, TransportError>> + Send {
        (**self).capabilities(source_id)
    }

    fn connect(
        &self,
        source_id: &str,
        request: &ConnectRequest,
    ) -> impl Future<Output = Result<ConnectResponse, TransportError>> + Send {
        (**self).connect(source_id, request)
    }

    fn create_push_session(
        &self,
        source_id: &str,
        request: &PushSessionCreateRequest,
    ) -> impl Future<Output = Result<PushSessionCreateResponse, TransportError>> + Send {
        (**self).create_push_session(source_id, request)
    }

    fn upload_push_chunk(
        &self,
        source_id: &str,
        push_id: &str,
        request: &PushSessionChunkRequest,
    ) -> impl Future<Output = Result<PushSessionChunkResponse, TransportError>> + Send {
        (**self).upload_push_chunk(source_id, push_id, request)
    }

    fn commit_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> impl Future<Output = Result<PushSessionCommitResponse, TransportError>> + Send {
        (**self).commit_push_session(source_id, push_id)
    }

    fn delete_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        (**self).delete_push_session(source_id, push_id)
    }

    fn committed_bundle_rows(
        &self,
        source_id: &str,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        max_rows: i64,
    ) -> impl Future<Output = Result<CommittedBundleRowsResponse, TransportError>> + Send {
        (**self).committed_bundle_rows(source_id, bundle_seq, after_row_ordinal, max_rows)
    }

    fn pull(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
        max_bundles: i64,
        target_bundle_seq: i64,
    ) -> impl Future<Output = Result<PullResponse, TransportError>> + Send {
        (**self).pull(source_id, after_bundle_seq, max_bundles, target_bundle_seq)
    }

    fn create_snapshot_session(
        &self,
        source_id: &str,
        request: Option<&SnapshotSessionCreateRequest>,
    ) -> impl Future<Output = Result<SnapshotSession, TransportError>> + Send {
        (**self).create_snapshot_session(source_id, request)
    }

    fn snapshot_chunk(
        &self,
        source_id: &str,
        snapshot_id: &str,
        after_row_ordinal: i64,
        max_rows: i64,
    ) -> impl Future<Output = Result<SnapshotChunkResponse, TransportError>> + Send {
        (**self).snapshot_chunk(source_id, snapshot_id, after_row_ordinal, max_rows)
    }

    fn delete_snapshot_session(
        &self,
        source_id: &str,
        snapshot_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        (**self).delete_snapshot_session(source_id, snapshot_id)
    }

    fn watch(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
    ) -> impl Future<Output = Result<Box<dyn WatchBody>, TransportError>> + Send {
        (**self).watch(source_id, after_bundle_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_conflict_without_conflict_object_has_no_structured_conflict() {
        let body = StatusBody::decode(br#"{"error":"push_conflict","message":"m"}"#);
        assert!(
            matches!(body.envelope(), Some(ErrorBody::PushConflict(c)) if c.conflict.is_none())
        );
        assert_eq!(body.code(), Some("push_conflict"));
    }

    #[test]
    fn push_conflict_with_malformed_conflict_keeps_its_code() {
        let body = StatusBody::decode(br#"{"error":"push_conflict","message":"m","conflict":7}"#);
        assert!(matches!(body.envelope(), Some(ErrorBody::Plain(_))));
        assert_eq!(body.code(), Some("push_conflict"));
    }

    #[test]
    fn blank_error_code_is_unrecognized() {
        let body = StatusBody::decode(br#"{"error":" ","message":"m"}"#);
        assert!(matches!(body, StatusBody::Unrecognized(_)));
    }

    #[test]
    fn source_retired_decodes_with_replacement() {
        let body = StatusBody::decode(
            br#"{"error":"source_retired","message":"m","source_id":"a","replaced_by_source_id":"b"}"#,
        );
        let Some(ErrorBody::SourceRetired(retired)) = body.envelope() else {
            panic!("not source_retired");
        };
        assert_eq!(retired.replaced_by_source_id, "b");
    }

    #[test]
    fn non_json_body_is_unrecognized() {
        let body = StatusBody::decode(b"Bad Gateway");
        assert!(matches!(body, StatusBody::Unrecognized(ref t) if t == "Bad Gateway"));
        assert_eq!(body.code(), None);
    }

    #[test]
    fn only_transient_statuses_and_network_failures_are_retryable() {
        let status = |status| TransportError::Status {
            endpoint: "pull",
            status,
            body: StatusBody::Unrecognized(String::new()),
        };
        for s in [429, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 404, 409, 410, 500] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(
            TransportError::Network {
                endpoint: "pull",
                kind: NetworkErrorKind::Timeout,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(!TransportError::Token("x".to_owned()).is_retryable());
    }
}
