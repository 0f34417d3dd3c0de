//! `HttpTransport` against real HTTP: a minimal HTTP/1.1 server on `127.0.0.1:0` records every
//! request (method, path and query, headers, body) and answers with canned protocol JSON. Pins
//! the reference client's wire conventions (wire chapter §11, client chapter §10.2, §10.4):
//! headers, exact URLs and query strings, percent-escaped ids, which calls are retried, and
//! that bodies which are not protocol JSON are tolerated.
//!
//! The server is hand-written (a few dozen lines over tokio's `TcpListener`) so that the
//! client crate needs no HTTP server dependency; it answers one request per connection and
//! closes it, which also keeps every request separately observable.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oversync_protocol::error::ErrorBody;
use oversync_protocol::wire::*;
use oversync_sqlite::{
    HttpOptions, HttpTransport, RetryPolicy, StaticToken, StatusBody, Transport, TransportError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    /// Header names lower-cased, in arrival order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "header {name} sent twice");
        value
    }

    fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// What the server answers next.
enum Canned {
    Reply {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Hangup,
}

struct Server {
    base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    replies: Arc<Mutex<VecDeque<Canned>>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let (r, q) = (Arc::clone(&requests), Arc::clone(&replies));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                serve(stream, &r, &q).await;
            }
        });
        Server {
            base,
            requests,
            replies,
            task,
        }
    }

    fn json(&self, status: u16, body: &impl serde::Serialize) {
        self.replies.lock().unwrap().push_back(Canned::Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(body).unwrap(),
        });
    }

    fn text(&self, status: u16, content_type: &'static str, body: &str) {
        self.replies.lock().unwrap().push_back(Canned::Reply {
            status,
            content_type,
            body: body.as_bytes().to_vec(),
        });
    }

    fn error(&self, status: u16, code: &str) {
        self.text(
            status,
            "application/json",
            &format!(r#"{{"error":"{code}","message":"canned"}}"#),
        );
    }

    fn hangup(&self) {
        self.replies.lock().unwrap().push_back(Canned::Hangup);
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::line).collect()
    }

    fn transport(&self) -> HttpTransport {
        self.transport_at(&self.base)
    }

    fn transport_at(&self, base: &str) -> HttpTransport {
        let options = HttpOptions {
            retry_policy: RetryPolicy {
                enabled: true,
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                jitter_fraction: 0.0,
            },
            ..HttpOptions::default()
        };
        HttpTransport::new(base, Arc::new(StaticToken("tok-1".to_owned())), &options).unwrap()
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve(
    mut stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    replies: &Mutex<VecDeque<Canned>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap().split(' ');
    let (method, target) = (start.next().unwrap(), start.next().unwrap());
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_lowercase(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    requests.lock().unwrap().push(Recorded {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
    });
    let reply = replies.lock().unwrap().pop_front();
    let (status, content_type, body) = match reply {
        Some(Canned::Reply {
            status,
            content_type,
            body,
        }) => (status, content_type, body),
        Some(Canned::Hangup) => return,
        None => (500, "text/plain", b"no canned reply".to_vec()),
    };
    let mut response = format!("HTTP/1.1 {status} Canned\r\nconnection: close\r\n");
    if status != 204 {
        response.push_str(&format!(
            "content-type: {content_type}\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    response.push_str("\r\n");
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(&body);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

const SOURCE: &str = "src-1";
const PUSH_ID: &str = "p 1/?";
const SNAPSHOT_ID: &str = "s/1";

fn commit() -> PushSessionCommitResponse {
    PushSessionCommitResponse {
        bundle_seq: 7,
        source_id: SOURCE.to_owned(),
        source_bundle_id: 1,
        row_count: 1,
        bundle_hash: "ab".repeat(32),
    }
}

fn rows_page(next: i64) -> CommittedBundleRowsResponse {
    CommittedBundleRowsResponse {
        bundle_seq: 7,
        source_id: SOURCE.to_owned(),
        source_bundle_id: 1,
        row_count: 1,
        bundle_hash: "ab".repeat(32),
        next_row_ordinal: next,
        has_more: false,
        rows: Vec::new(),
    }
}

fn pulled() -> PullResponse {
    PullResponse {
        stable_bundle_seq: 9,
        bundles: Vec::new(),
        has_more: false,
    }
}

fn snapshot() -> SnapshotSession {
    SnapshotSession {
        snapshot_id: SNAPSHOT_ID.to_owned(),
        snapshot_bundle_seq: 9,
        row_count: 0,
        byte_count: 0,
        expires_at: "2026-03-24T18:00:00Z".to_owned(),
    }
}

fn snapshot_chunk() -> SnapshotChunkResponse {
    SnapshotChunkResponse {
        snapshot_id: SNAPSHOT_ID.to_owned(),
        snapshot_bundle_seq: 9,
        rows: Vec::new(),
        next_row_ordinal: 0,
        has_more: false,
    }
}

fn create_request() -> PushSessionCreateRequest {
    PushSessionCreateRequest {
        source_bundle_id: 1,
        planned_row_count: 1,
        initialization_id: "lease-1".to_owned(),
    }
}

fn chunk_request() -> PushSessionChunkRequest {
    PushSessionChunkRequest {
        start_row_ordinal: 0,
        rows: vec![PushRequestRow {
            schema: "business".to_owned(),
            table: "users".to_owned(),
            key: std::collections::BTreeMap::from([(
                "id".to_owned(),
                serde_json::Value::String("u1".to_owned()),
            )]),
            op: "INSERT".to_owned(),
            base_row_version: 0,
            payload: Some(
                serde_json::value::RawValue::from_string(
                    r#"{"id":"u1","name":"<Ada>"}"#.to_owned(),
                )
                .unwrap(),
            ),
        }],
    }
}

fn replacement() -> SnapshotSessionCreateRequest {
    SnapshotSessionCreateRequest {
        source_replacement: Some(SnapshotSourceReplacement {
            previous_source_id: SOURCE.to_owned(),
            new_source_id: "src-2".to_owned(),
            reason: "history_pruned".to_owned(),
        }),
    }
}

/// Calls every endpoint once (twice where the query varies) with answers a correct server
/// gives, and returns the server's record.
async fn call_every_endpoint(server: &Server) -> Vec<Recorded> {
    server.json(200, &support::capabilities());
    server.json(200, &ConnectResponse::initialize_empty());
    server.json(
        200,
        &PushSessionCreateResponse::staging(PUSH_ID.to_owned(), 1),
    );
    server.json(
        200,
        &PushSessionChunkResponse {
            push_id: PUSH_ID.to_owned(),
            next_expected_row_ordinal: 1,
        },
    );
    server.json(200, &commit());
    server.text(204, "", "");
    server.json(200, &rows_page(0));
    server.json(200, &rows_page(3));
    server.json(200, &pulled());
    server.json(200, &pulled());
    server.json(200, &snapshot());
    server.json(200, &snapshot());
    server.json(200, &snapshot_chunk());
    server.text(200, "application/json", "");
    let t = server.transport();
    t.capabilities(SOURCE).await.unwrap();
    t.connect(
        SOURCE,
        &ConnectRequest {
            has_local_pending_rows: true,
        },
    )
    .await
    .unwrap();
    t.create_push_session(SOURCE, &create_request())
        .await
        .unwrap();
    t.upload_push_chunk(SOURCE, PUSH_ID, &chunk_request())
        .await
        .unwrap();
    t.commit_push_session(SOURCE, PUSH_ID).await.unwrap();
    t.delete_push_session(SOURCE, PUSH_ID).await.unwrap();
    t.committed_bundle_rows(SOURCE, 7, None, 50).await.unwrap();
    t.committed_bundle_rows(SOURCE, 7, Some(3), 50)
        .await
        .unwrap();
    t.pull(SOURCE, 4, 100, 0).await.unwrap();
    t.pull(SOURCE, 4, 100, 9).await.unwrap();
    t.create_snapshot_session(SOURCE, None).await.unwrap();
    t.create_snapshot_session(SOURCE, Some(&replacement()))
        .await
        .unwrap();
    t.snapshot_chunk(SOURCE, SNAPSHOT_ID, 0, 25).await.unwrap();
    t.delete_snapshot_session(SOURCE, SNAPSHOT_ID)
        .await
        .unwrap();
    server.requests()
}

fn protocol_json<T: serde::Serialize>(value: &T) -> String {
    String::from_utf8(oversync_protocol::json::to_compact_vec(value).unwrap()).unwrap()
}

#[tokio::test]
async fn every_endpoint_uses_the_reference_method_path_and_query() {
    let server = Server::start().await;
    let lines: Vec<String> = call_every_endpoint(&server)
        .await
        .iter()
        .map(Recorded::line)
        .collect();
    assert_eq!(
        lines,
        [
            "GET /sync/capabilities",
            "POST /sync/connect",
            "POST /sync/push-sessions",
            "POST /sync/push-sessions/p%201%2F%3F/chunks",
            "POST /sync/push-sessions/p%201%2F%3F/commit",
            "DELETE /sync/push-sessions/p%201%2F%3F",
            "GET /sync/committed-bundles/7/rows?max_rows=50",
            "GET /sync/committed-bundles/7/rows?after_row_ordinal=3&max_rows=50",
            "GET /sync/pull?after_bundle_seq=4&max_bundles=100",
            "GET /sync/pull?after_bundle_seq=4&max_bundles=100&target_bundle_seq=9",
            "POST /sync/snapshot-sessions",
            "POST /sync/snapshot-sessions",
            "GET /sync/snapshot-sessions/s%2F1?after_row_ordinal=0&max_rows=25",
            "DELETE /sync/snapshot-sessions/s%2F1",
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn every_request_carries_the_bearer_token_and_the_source_id() {
    let server = Server::start().await;
    for request in call_every_endpoint(&server).await {
        assert_eq!(
            request.header("authorization"),
            Some("Bearer tok-1"),
            "{}",
            request.line()
        );
        assert_eq!(
            request.header("oversync-source-id"),
            Some(SOURCE),
            "{}",
            request.line()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn content_type_is_sent_exactly_with_a_json_body_encoded_by_the_protocol_crate() {
    let server = Server::start().await;
    let seen: Vec<(String, Option<String>, String)> = call_every_endpoint(&server)
        .await
        .iter()
        .map(|r| {
            (
                r.line(),
                r.header("content-type").map(str::to_owned),
                String::from_utf8(r.body.clone()).unwrap(),
            )
        })
        .filter(|(_, ct, body)| ct.is_some() || !body.is_empty())
        .collect();
    let json = Some("application/json".to_owned());
    assert_eq!(
        seen,
        [
            (
                "POST /sync/connect".to_owned(),
                json.clone(),
                r#"{"has_local_pending_rows":true}"#.to_owned()
            ),
            (
                "POST /sync/push-sessions".to_owned(),
                json.clone(),
                protocol_json(&create_request())
            ),
            (
                "POST /sync/push-sessions/p%201%2F%3F/chunks".to_owned(),
                json.clone(),
                protocol_json(&chunk_request())
            ),
            (
                "POST /sync/snapshot-sessions".to_owned(),
                json,
                protocol_json(&replacement())
            ),
        ]
    );
    // The chunk's payload reaches the wire with Go's HTML-safe escaping.
    assert!(seen[2].2.contains(r#"\u003cAda\u003e"#), "{}", seen[2].2);
    server.stop().await;
}

#[tokio::test]
async fn no_header_beyond_the_reference_set_is_sent_except_reqwests_accept() {
    let server = Server::start().await;
    let allowed = [
        "host",
        "authorization",
        "oversync-source-id",
        "content-type",
        "content-length",
        "accept",
    ];
    for request in call_every_endpoint(&server).await {
        for (name, value) in &request.headers {
            assert!(
                allowed.contains(&name.as_str()),
                "{} sent {name}: {value}",
                request.line()
            );
            if name == "accept" {
                assert_eq!(value, "*/*");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn committed_rows_url_keeps_the_question_mark_without_parameters() {
    let server = Server::start().await;
    server.json(200, &rows_page(0));
    let t = server.transport();
    t.committed_bundle_rows(SOURCE, 7, None, 0).await.unwrap();
    assert_eq!(server.lines(), ["GET /sync/committed-bundles/7/rows?"]);
    server.stop().await;
}

#[tokio::test]
async fn source_id_header_is_trimmed_and_omitted_when_no_source_is_known() {
    let server = Server::start().await;
    server.json(200, &support::capabilities());
    server.json(200, &support::capabilities());
    let t = server.transport();
    t.capabilities("  ").await.unwrap();
    t.capabilities(" src-9 ").await.unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].header("oversync-source-id"), None);
    assert_eq!(requests[1].header("oversync-source-id"), Some("src-9"));
    server.stop().await;
}

#[tokio::test]
async fn base_url_with_a_trailing_slash_is_normalised_once() {
    let server = Server::start().await;
    server.json(200, &pulled());
    let t = server.transport_at(&format!("{}/", server.base));
    t.pull(SOURCE, 0, 10, 0).await.unwrap();
    assert_eq!(
        server.lines(),
        ["GET /sync/pull?after_bundle_seq=0&max_bundles=10"]
    );
    server.stop().await;
}

/// Runs the idempotent call `which` once against whatever the server has queued.
async fn idempotent_call(t: &HttpTransport, which: usize) -> Result<(), TransportError> {
    match which {
        0 => t.capabilities(SOURCE).await.map(drop),
        1 => t
            .connect(
                SOURCE,
                &ConnectRequest {
                    has_local_pending_rows: false,
                },
            )
            .await
            .map(drop),
        2 => t.pull(SOURCE, 0, 10, 0).await.map(drop),
        3 => t.create_snapshot_session(SOURCE, None).await.map(drop),
        _ => t.snapshot_chunk(SOURCE, SNAPSHOT_ID, 0, 10).await.map(drop),
    }
}

fn queue_success(server: &Server, which: usize) {
    match which {
        0 => server.json(200, &support::capabilities()),
        1 => server.json(200, &ConnectResponse::initialize_empty()),
        2 => server.json(200, &pulled()),
        3 => server.json(200, &snapshot()),
        _ => server.json(200, &snapshot_chunk()),
    }
}

#[tokio::test]
async fn idempotent_calls_are_retried_on_429_502_503_and_504() {
    let server = Server::start().await;
    let t = server.transport();
    for which in 0..5 {
        for status in [429, 502, 503, 504] {
            let before = server.requests().len();
            server.text(status, "text/plain", "busy");
            queue_success(&server, which);
            idempotent_call(&t, which).await.unwrap();
            let made = &server.requests()[before..];
            assert_eq!(made.len(), 2, "call {which} status {status}");
            assert_eq!(made[0].line(), made[1].line());
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn idempotent_calls_are_retried_after_the_connection_drops_without_a_response() {
    let server = Server::start().await;
    server.hangup();
    server.json(200, &pulled());
    server.transport().pull(SOURCE, 0, 10, 0).await.unwrap();
    assert_eq!(server.requests().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn idempotent_calls_are_not_retried_on_other_statuses() {
    let server = Server::start().await;
    let t = server.transport();
    for status in [400, 401, 404, 409, 410, 500] {
        server.error(status, "invalid_request");
        let err = t.pull(SOURCE, 0, 10, 0).await.unwrap_err();
        assert_eq!(err.status(), Some(status));
    }
    assert_eq!(server.requests().len(), 6);
    server.stop().await;
}

#[tokio::test]
async fn exhausted_retries_report_the_operation_attempts_and_last_status() {
    let server = Server::start().await;
    for _ in 0..3 {
        server.error(503, "service_unavailable");
    }
    let err = server.transport().pull(SOURCE, 0, 10, 0).await.unwrap_err();
    match err {
        TransportError::RetryExhausted {
            operation,
            attempts,
            last,
        } => {
            assert_eq!((operation, attempts), ("pull_request", 3));
            assert_eq!(last.status(), Some(503));
            assert_eq!(last.code(), Some("service_unavailable"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.requests().len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn push_session_calls_and_committed_fetches_are_never_retried_at_the_http_layer() {
    let server = Server::start().await;
    let t = server.transport();
    for _ in 0..4 {
        server.error(503, "service_unavailable");
    }
    let results = [
        t.create_push_session(SOURCE, &create_request())
            .await
            .map(drop),
        t.upload_push_chunk(SOURCE, PUSH_ID, &chunk_request())
            .await
            .map(drop),
        t.commit_push_session(SOURCE, PUSH_ID).await.map(drop),
        t.committed_bundle_rows(SOURCE, 7, None, 10).await.map(drop),
    ];
    for result in results {
        let err = result.unwrap_err();
        assert!(
            matches!(err, TransportError::Status { status: 503, .. }),
            "{err:?}"
        );
    }
    assert_eq!(server.requests().len(), 4);
    server.stop().await;
}

#[tokio::test]
async fn non_json_error_bodies_are_kept_as_unrecognized_text() {
    let server = Server::start().await;
    server.text(502, "text/html", "<html>Bad Gateway</html>");
    server.text(404, "text/plain", "404 page not found");
    let t = server.transport();
    let commit = t.commit_push_session(SOURCE, PUSH_ID).await.unwrap_err();
    let delete = t.delete_push_session(SOURCE, PUSH_ID).await.unwrap_err();
    for (err, status, text) in [
        (commit, 502, "<html>Bad Gateway</html>"),
        (delete, 404, "404 page not found"),
    ] {
        match err {
            TransportError::Status {
                status: s,
                body: StatusBody::Unrecognized(body),
                ..
            } => assert_eq!((s, body.as_str()), (status, text)),
            other => panic!("unexpected {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn structured_error_envelopes_are_decoded_by_their_code() {
    let server = Server::start().await;
    server.text(
        409,
        "application/json",
        r#"{"error":"source_retired","message":"m","source_id":"src-1","replaced_by_source_id":"src-2"}"#,
    );
    let err = server
        .transport()
        .create_push_session(SOURCE, &create_request())
        .await
        .unwrap_err();
    assert!(
        matches!(err.envelope(), Some(ErrorBody::SourceRetired(r)) if r.replaced_by_source_id == "src-2"),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_undecodable_200_body_is_a_decode_error() {
    let server = Server::start().await;
    server.text(200, "text/plain", "ok");
    let err = server
        .transport()
        .commit_push_session(SOURCE, PUSH_ID)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Decode { .. }), "{err:?}");
    server.stop().await;
}
