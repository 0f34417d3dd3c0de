//! The reqwest implementation of [`Transport`] (client chapter §10, wire chapter §11).
//!
//! This is the only module of the crate that knows HTTP. It builds URLs from a base URL that
//! is normalised once (trailing `/` removed, §12 C8), percent-escapes path ids, sends
//! `Authorization: Bearer <token>` (the provider is asked once per request),
//! `Oversync-Source-ID` when a source is known, and `Content-Type: application/json` exactly
//! when a JSON body is sent. Bodies are encoded with the protocol crate's Go-compatible
//! encoder. Capabilities, connect, pull, snapshot create and snapshot chunk are retried under
//! the [`RetryPolicy`] (§10.4); push-session calls and committed-bundle fetches are not (the
//! client retries a whole push attempt instead).
//!
//! The watch stream (`GET /sync/watch`) uses a second reqwest client without the overall
//! timeout, which would cut every stream after `timeout` (§12 C5); it has an idle (read)
//! timeout instead, above the server's 25 s heartbeat.
//!
//! Known deviation: reqwest adds `Accept: */*` to every request and offers no way to remove
//! it; the reference sends no `Accept`, and servers ignore the header (wire chapter §2.3).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use oversync_protocol::wire::{
    CapabilitiesResponse, CommittedBundleRowsResponse, ConnectRequest, ConnectResponse,
    PullResponse, PushSessionChunkRequest, PushSessionChunkResponse, PushSessionCommitResponse,
    PushSessionCreateRequest, PushSessionCreateResponse, SOURCE_ID_HEADER, SnapshotChunkResponse,
    SnapshotSession, SnapshotSessionCreateRequest,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::{NetworkErrorKind, StatusBody, Transport, TransportError, WatchBody, WatchChunk};
use crate::config::RetryPolicy;
use crate::retry;

/// An error from a token provider.
pub type TokenError = Box<dyn std::error::Error + Send + Sync>;

/// Supplies the bearer token; asked once per request (the host refreshes tokens, the client
/// never does).
pub trait TokenProvider: Send + Sync + 'static {
    /// The current token.
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + '_>>;
}

/// A fixed token, for tests and simple hosts.
#[derive(Debug, Clone)]
pub struct StaticToken(pub String);

impl TokenProvider for StaticToken {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + '_>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// Options of [`HttpTransport`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Overall per-request timeout, body included (reference: 120 s).
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Retry of the idempotent calls.
    pub retry_policy: RetryPolicy,
    /// How long an open watch stream may stay silent before it counts as broken (the server
    /// sends a heartbeat every 25 s). The watch stream has no overall timeout.
    pub watch_idle_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(30),
            retry_policy: RetryPolicy::default(),
            watch_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// [`Transport`] over HTTP with reqwest.
#[derive(Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    stream: reqwest::Client,
    base: String,
    token: Arc<dyn TokenProvider>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why an [`HttpTransport`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build HTTP client: {0}")]
pub struct HttpBuildError(String);

impl HttpTransport {
    /// A transport for the server at `base_url` (e.g. `http://localhost:8080`).
    ///
    /// # Errors
    /// When reqwest cannot build a client (TLS backend initialisation).
    pub fn new(
        base_url: &str,
        token: Arc<dyn TokenProvider>,
        options: &HttpOptions,
    ) -> Result<HttpTransport, HttpBuildError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| HttpBuildError(e.to_string()))?;
        let stream = reqwest::Client::builder()
            .read_timeout(options.watch_idle_timeout)
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| HttpBuildError(e.to_string()))?;
        Ok(HttpTransport {
            http,
            stream,
            base: base_url.trim().trim_end_matches('/').to_owned(),
            token,
            retry: options.retry_policy.normalized(),
        })
    }

    /// Sends one request with the protocol's headers and returns the response unread.
    async fn request(
        &self,
        client: &reqwest::Client,
        endpoint: &'static str,
        method: Method,
        path: &str,
        source_id: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, TransportError> {
        let token = self
            .token
            .token()
            .await
            .map_err(|e| TransportError::Token(e.to_string()))?;
        let mut request = client
            .request(method, format!("{}{}", self.base, path))
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
        let source_id = source_id.trim();
        if !source_id.is_empty() {
            request = request.header(SOURCE_ID_HEADER, source_id);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        request
            .send()
            .await
            .map_err(|e| network_error(endpoint, &e))
    }

    async fn send(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        source_id: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), TransportError> {
        let response = self
            .request(&self.http, endpoint, method, path, source_id, body)
            .await?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| network_error(endpoint, &e))?;
        Ok((status, bytes.to_vec()))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        source_id: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, TransportError> {
        let (status, bytes) = self.send(endpoint, method, path, source_id, body).await?;
        if status != StatusCode::OK {
            return Err(TransportError::Status {
                endpoint,
                status: status.as_u16(),
                body: StatusBody::decode(&bytes),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| TransportError::Decode {
            endpoint,
            message: e.to_string(),
        })
    }

    async fn call_no_content(
        &self,
        endpoint: &'static str,
        path: &str,
        source_id: &str,
    ) -> Result<(), TransportError> {
        let (status, bytes) = self
            .send(endpoint, Method::DELETE, path, source_id, None)
            .await?;
        if status.is_success() {
            return Ok(());
        }
        Err(TransportError::Status {
            endpoint,
            status: status.as_u16(),
            body: StatusBody::decode(&bytes),
        })
    }
}

fn network_error(endpoint: &'static str, e: &reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        NetworkErrorKind::Timeout
    } else if e.is_connect() {
        NetworkErrorKind::Connect
    } else if e.is_request() || e.is_body() || e.is_decode() {
        NetworkErrorKind::Interrupted
    } else {
        NetworkErrorKind::Other
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    TransportError::Network {
        endpoint,
        kind,
        message,
    }
}

fn json_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, TransportError> {
    oversync_protocol::json::to_compact_vec(value).map_err(|e| TransportError::Decode {
        endpoint: "encode request",
        message: e.to_string(),
    })
}

/// Percent-escapes one path segment exactly as Go's `url.PathEscape` does (the reference
/// client's escaping): RFC 3986 unreserved characters and `$&+:=@` stay, everything else
/// (including `/`, `;`, `,`, `?`) becomes `%XX` with upper-case hex.
pub(crate) fn escape_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~$&+:=@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Transport for HttpTransport {
    async fn capabilities(&self, source_id: &str) -> Result<CapabilitiesResponse, TransportError> {
        retry::run(&self.retry, "connect_capabilities", || {
            self.call(
                "capabilities",
                Method::GET,
                "/sync/capabilities",
                source_id,
                None,
            )
        })
        .await
    }

    async fn connect(
        &self,
        source_id: &str,
        request: &ConnectRequest,
    ) -> Result<ConnectResponse, TransportError> {
        let body = json_body(request)?;
        retry::run(&self.retry, "connect_request", || {
            self.call(
                "connect",
                Method::POST,
                "/sync/connect",
                source_id,
                Some(body.clone()),
            )
        })
        .await
    }

    async fn create_push_session(
        &self,
        source_id: &str,
        request: &PushSessionCreateRequest,
    ) -> Result<PushSessionCreateResponse, TransportError> {
        let body = json_body(request)?;
        self.call(
            "push-session create",
            Method::POST,
            "/sync/push-sessions",
            source_id,
            Some(body),
        )
        .await
    }

    async fn upload_push_chunk(
        &self,
        source_id: &str,
        push_id: &str,
        request: &PushSessionChunkRequest,
    ) -> Result<PushSessionChunkResponse, TransportError> {
        let body = json_body(request)?;
        let path = format!("/sync/push-sessions/{}/chunks", escape_segment(push_id));
        self.call("push chunk", Method::POST, &path, source_id, Some(body))
            .await
    }

    async fn commit_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> Result<PushSessionCommitResponse, TransportError> {
        let path = format!("/sync/push-sessions/{}/commit", escape_segment(push_id));
        self.call("push commit", Method::POST, &path, source_id, None)
            .await
    }

    async fn delete_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> Result<(), TransportError> {
        let path = format!("/sync/push-sessions/{}", escape_segment(push_id));
        self.call_no_content("push-session delete", &path, source_id)
            .await
    }

    async fn committed_bundle_rows(
        &self,
        source_id: &str,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        max_rows: i64,
    ) -> Result<CommittedBundleRowsResponse, TransportError> {
        // The reference always writes the `?`, then Go's sorted `url.Values` encoding.
        let mut query = Vec::new();
        if let Some(after) = after_row_ordinal {
            query.push(format!("after_row_ordinal={after}"));
        }
        if max_rows > 0 {
            query.push(format!("max_rows={max_rows}"));
        }
        let path = format!(
            "/sync/committed-bundles/{bundle_seq}/rows?{}",
            query.join("&")
        );
        self.call("committed-bundle rows", Method::GET, &path, source_id, None)
            .await
    }

    async fn pull(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
        max_bundles: i64,
        target_bundle_seq: i64,
    ) -> Result<PullResponse, TransportError> {
        let mut path =
            format!("/sync/pull?after_bundle_seq={after_bundle_seq}&max_bundles={max_bundles}");
        if target_bundle_seq > 0 {
            path.push_str(&format!("&target_bundle_seq={target_bundle_seq}"));
        }
        retry::run(&self.retry, "pull_request", || {
            self.call("pull", Method::GET, &path, source_id, None)
        })
        .await
    }

    async fn create_snapshot_session(
        &self,
        source_id: &str,
        request: Option<&SnapshotSessionCreateRequest>,
    ) -> Result<SnapshotSession, TransportError> {
        let body = request.map(json_body).transpose()?;
        retry::run(&self.retry, "snapshot_session_create", || {
            self.call(
                "snapshot-session create",
                Method::POST,
                "/sync/snapshot-sessions",
                source_id,
                body.clone(),
            )
        })
        .await
    }

    async fn snapshot_chunk(
        &self,
        source_id: &str,
        snapshot_id: &str,
        after_row_ordinal: i64,
        max_rows: i64,
    ) -> Result<SnapshotChunkResponse, TransportError> {
        let mut path = format!(
            "/sync/snapshot-sessions/{}?after_row_ordinal={after_row_ordinal}",
            escape_segment(snapshot_id)
        );
        if max_rows > 0 {
            path.push_str(&format!("&max_rows={max_rows}"));
        }
        retry::run(&self.retry, "snapshot_chunk_fetch", || {
            self.call("snapshot chunk", Method::GET, &path, source_id, None)
        })
        .await
    }

    async fn delete_snapshot_session(
        &self,
        source_id: &str,
        snapshot_id: &str,
    ) -> Result<(), TransportError> {
        let path = format!("/sync/snapshot-sessions/{}", escape_segment(snapshot_id));
        self.call_no_content("snapshot-session delete", &path, source_id)
            .await
    }

    async fn watch(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
    ) -> Result<Box<dyn WatchBody>, TransportError> {
        let path = format!("/sync/watch?after_bundle_seq={after_bundle_seq}");
        let response = self
            .request(&self.stream, "watch", Method::GET, &path, source_id, None)
            .await?;
        let status = response.status();
        if status != StatusCode::OK {
            let bytes = response
                .bytes()
                .await
                .map_err(|e| network_error("watch", &e))?;
            return Err(TransportError::Status {
                endpoint: "watch",
                status: status.as_u16(),
                body: StatusBody::decode(&bytes),
            });
        }
        Ok(Box::new(HttpWatchBody(response)))
    }
}

/// An open watch response, read chunk by chunk.
#[derive(Debug)]
struct HttpWatchBody(reqwest::Response);

impl WatchBody for HttpWatchBody {
    fn next_chunk(&mut self) -> WatchChunk<'_> {
        Box::pin(async move {
            match self.0.chunk().await {
                Ok(chunk) => Ok(chunk.map(|b| b.to_vec())),
                Err(e) => Err(network_error("watch", &e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped_like_go_url_path_escape() {
        assert_eq!(escape_segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(escape_segment("a;b,c!é"), "a%3Bb%2Cc%21%C3%A9");
        assert_eq!(escape_segment("$&+:=@"), "$&+:=@");
        assert_eq!(
            escape_segment("2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88"),
            "2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88"
        );
    }
}
