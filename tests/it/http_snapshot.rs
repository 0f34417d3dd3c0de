//! Snapshot-session routes over real HTTP (01-wire.md §8): success shapes byte for byte and
//! every error code the three routes can answer, including malformed create bodies.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use oversync_server::{ServiceConfig, SyncService};
use oversync_testkit::TestDatabase;
use reqwest::{Method, StatusCode};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::support::{Device, Reply, TestServer, user_insert};

const U1: &str = "550e8400-e29b-41d4-a716-446655440001";
const U2: &str = "550e8400-e29b-41d4-a716-446655440002";
const U3: &str = "550e8400-e29b-41d4-a716-446655440003";

async fn connected<'a>(server: &'a TestServer, user: &str, source: &str) -> Device<'a> {
    let device = server.device(user, source).await;
    device.connect_empty().await;
    device
}

async fn with_three_users<'a>(server: &'a TestServer) -> Device<'a> {
    let device = connected(server, "alice", "dev-1").await;
    let rows = format!(
        "[{},{},{}]",
        user_insert(U1, "a"),
        user_insert(U2, "b"),
        user_insert(U3, "c")
    );
    assert_eq!(device.push(1, &rows).await.status, StatusCode::OK);
    device
}

async fn create(device: &Device<'_>, body: Option<&str>) -> Reply {
    device
        .call(Method::POST, "/sync/snapshot-sessions", body)
        .await
}

fn snapshot_id(reply: &Reply) -> String {
    reply.json()["snapshot_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_answers_the_session_fields_in_reference_order() {
    let server = TestServer::start().await;
    let device = with_three_users(&server).await;
    let reply = create(&device, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let text = String::from_utf8(reply.body.clone()).unwrap();
    let id = snapshot_id(&reply);
    let prefix =
        format!(r#"{{"snapshot_id":"{id}","snapshot_bundle_seq":1,"row_count":3,"byte_count":"#);
    assert!(text.starts_with(&prefix), "{text}");
    assert!(
        text.contains(r#","expires_at":""#) && text.ends_with("Z\"}\n"),
        "{text}"
    );
    assert!(reply.json()["byte_count"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn empty_scope_snapshot_omits_byte_count() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    let reply = create(&device, Some("")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["snapshot_bundle_seq"], 0);
    assert_eq!(body["row_count"], 0);
    assert!(body.get("byte_count").is_none(), "{body}");
}

#[tokio::test]
async fn chunks_page_with_a_one_based_cursor_then_delete_answers_204() {
    let server = TestServer::start().await;
    let device = with_three_users(&server).await;
    let id = snapshot_id(&create(&device, None).await);
    let path = format!("/sync/snapshot-sessions/{id}");
    let first = device
        .call(Method::GET, &format!("{path}?max_rows=2"), None)
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let text = String::from_utf8(first.body.clone()).unwrap();
    assert!(
        text.starts_with(&format!(
            r#"{{"snapshot_id":"{id}","snapshot_bundle_seq":1,"rows":[{{"schema":"business","table":"users","key":{{"id":"{U1}"}},"row_version":1,"payload":{{"#
        )),
        "{text}"
    );
    assert!(
        text.ends_with("\"next_row_ordinal\":2,\"has_more\":true}\n"),
        "{text}"
    );
    let second = device
        .call(
            Method::GET,
            &format!("{path}?after_row_ordinal=2&max_rows=2"),
            None,
        )
        .await
        .json();
    assert_eq!(second["rows"].as_array().unwrap().len(), 1);
    assert_eq!(second["rows"][0]["key"]["id"], U3);
    assert_eq!(
        (
            second["next_row_ordinal"].as_i64(),
            second["has_more"].as_bool()
        ),
        (Some(3), Some(false))
    );

    let deleted = device.call(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty() && deleted.content_type.is_none());
    device
        .call(Method::GET, &path, None)
        .await
        .assert_error(404, "snapshot_session_not_found");
}

#[tokio::test]
async fn create_accepts_null_empty_object_and_a_trailing_complete_value() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    for body in ["null", "{}", " {} {} x", r#"{"source_replacement":null}"#] {
        let reply = create(&device, Some(body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{body}: {reply:?}");
    }
}

#[tokio::test]
async fn malformed_create_bodies_are_snapshot_session_invalid() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    for body in [
        r#"{"unknown":1}"#,
        r#"{"source_replacement":{"previous_source_id":"dev-1","new_source_id":"n","reason":"history_pruned","extra":true}}"#,
        "{} x",
        "{",
        "[]",
        r#"{"source_replacement":5}"#,
        r#"{"source_replacement":{"new_source_id":7}}"#,
    ] {
        let reply = create(&device, Some(body)).await;
        reply.assert_error(400, "snapshot_session_invalid");
        assert_eq!(
            reply.json()["message"],
            "Failed to parse snapshot session request",
            "{body}"
        );
    }
}

#[tokio::test]
async fn create_before_connect_is_scope_uninitialized() {
    let server = TestServer::start().await;
    let device = server.device("alice", "dev-1").await;
    create(&device, None)
        .await
        .assert_error(409, "scope_uninitialized");
}

#[tokio::test]
async fn create_while_another_source_initializes_is_scope_initializing() {
    let server = TestServer::start().await;
    let first = server.device("alice", "dev-1").await;
    let reply = first
        .call(
            Method::POST,
            "/sync/connect",
            Some(r#"{"has_local_pending_rows":true}"#),
        )
        .await;
    assert_eq!(reply.json()["resolution"], "initialize_local");
    let second = server.device("alice", "dev-2").await;
    create(&second, None)
        .await
        .assert_error(409, "scope_initializing");
}

fn rotation(previous: &str, new: &str, reason: &str) -> String {
    format!(
        r#"{{"source_replacement":{{"previous_source_id":"{previous}","new_source_id":"{new}","reason":"{reason}"}}}}"#
    )
}

#[tokio::test]
async fn rotation_validation_failures_are_snapshot_session_invalid_with_reference_messages() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    for (body, message) in [
        (
            rotation("other", "n", "history_pruned"),
            "previous_source_id must match authenticated source_id",
        ),
        (
            rotation("dev-1", " ", "history_pruned"),
            "new_source_id is required for source replacement",
        ),
        (
            rotation("dev-1", "dev-1", "history_pruned"),
            "new_source_id must differ from previous_source_id",
        ),
        (
            rotation("dev-1", "n", "because"),
            "source replacement reason is unsupported",
        ),
    ] {
        let reply = create(&device, Some(&body)).await;
        reply.assert_error(400, "snapshot_session_invalid");
        assert_eq!(reply.json()["message"], message);
    }
}

#[tokio::test]
async fn rotated_source_gets_structured_source_retired_on_its_next_push() {
    let server = TestServer::start().await;
    let device = with_three_users(&server).await;
    let reply = create(&device, Some(&rotation("dev-1", "dev-2", "history_pruned"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let push = device
        .call(
            Method::POST,
            "/sync/push-sessions",
            Some(r#"{"source_bundle_id":2,"planned_row_count":1}"#),
        )
        .await;
    push.assert_error(409, "source_retired");
    assert_eq!(
        String::from_utf8(push.body).unwrap(),
        "{\"error\":\"source_retired\",\"message\":\"source dev-1 for user alice was retired and replaced by dev-2\",\"source_id\":\"dev-1\",\"replaced_by_source_id\":\"dev-2\"}\n"
    );
    let replacement = server.device("alice", "dev-2").await;
    let committed = replacement
        .push(
            1,
            &format!(
                "[{}]",
                user_insert("550e8400-e29b-41d4-a716-446655440009", "z")
            ),
        )
        .await;
    assert_eq!(committed.status, StatusCode::OK, "{committed:?}");
    assert_eq!(committed.json()["source_bundle_id"], 1);
}

#[tokio::test]
async fn rotating_again_to_another_replacement_is_structured_source_retired() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    let first = create(&device, Some(&rotation("dev-1", "dev-2", "source_retired"))).await;
    assert_eq!(first.status, StatusCode::OK);
    let reply = create(&device, Some(&rotation("dev-1", "dev-3", "source_retired"))).await;
    reply.assert_error(409, "source_retired");
    assert_eq!(reply.json()["replaced_by_source_id"], "dev-2");
    assert_eq!(reply.json()["source_id"], "dev-1");
}

#[tokio::test]
async fn rotating_to_a_known_source_is_source_replacement_invalid() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    let other = server.device("alice", "dev-2").await;
    let pushed = other.push(1, &format!("[{}]", user_insert(U1, "a"))).await;
    assert_eq!(pushed.status, StatusCode::OK);
    let reply = create(&device, Some(&rotation("dev-1", "dev-2", "history_pruned"))).await;
    reply.assert_error(409, "source_replacement_invalid");
    assert_eq!(
        reply.json()["message"],
        "replacement source dev-2 is already known for user alice"
    );
}

#[tokio::test]
async fn chunk_query_errors_are_snapshot_chunk_invalid_with_reference_messages() {
    let server = TestServer::start().await;
    let device = with_three_users(&server).await;
    let id = snapshot_id(&create(&device, None).await);
    for (query, message) in [
        (
            "after_row_ordinal=x",
            "after_row_ordinal must be an integer",
        ),
        ("after_row_ordinal=-1", "after_row_ordinal must be >= 0"),
        ("max_rows=1.5", "max_rows must be an integer"),
        ("max_rows=0", "max_rows must be > 0"),
        ("max_rows=%207", "max_rows must be an integer"),
    ] {
        let reply = device
            .call(
                Method::GET,
                &format!("/sync/snapshot-sessions/{id}?{query}"),
                None,
            )
            .await;
        reply.assert_error(400, "snapshot_chunk_invalid");
        assert_eq!(reply.json()["message"], message, "{query}");
    }
}

#[tokio::test]
async fn malformed_and_unknown_snapshot_ids_are_not_found() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    for id in [
        "not-a-uuid",
        "%FF%FE",
        "2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88",
    ] {
        let path = format!("/sync/snapshot-sessions/{id}");
        let reply = device.call(Method::GET, &path, None).await;
        reply.assert_error(404, "snapshot_session_not_found");
        let reply = device.call(Method::DELETE, &path, None).await;
        reply.assert_error(404, "snapshot_session_not_found");
    }
    let reply = device
        .call(Method::GET, "/sync/snapshot-sessions/not-a-uuid", None)
        .await;
    assert_eq!(
        reply.json()["message"],
        "snapshot session not-a-uuid was not found"
    );
}

#[tokio::test]
async fn another_users_snapshot_id_is_forbidden() {
    let server = TestServer::start().await;
    let alice = with_three_users(&server).await;
    let bob = connected(&server, "bob", "dev-9").await;
    let id = snapshot_id(&create(&alice, None).await);
    let path = format!("/sync/snapshot-sessions/{id}");
    bob.call(Method::GET, &path, None)
        .await
        .assert_error(403, "snapshot_session_forbidden");
    bob.call(Method::DELETE, &path, None)
        .await
        .assert_error(403, "snapshot_session_forbidden");
}

#[tokio::test]
async fn expired_snapshot_is_gone_with_410() {
    let server = TestServer::start().await;
    let device = with_three_users(&server).await;
    let id = snapshot_id(&create(&device, None).await);
    server
        .pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE sync.snapshot_sessions SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let path = format!("/sync/snapshot-sessions/{id}");
    device
        .call(Method::GET, &path, None)
        .await
        .assert_error(410, "snapshot_session_expired");
    // Delete does not check expiry.
    assert_eq!(
        device.call(Method::DELETE, &path, None).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn snapshot_routes_answer_service_unavailable_after_close() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    server.service.close(Duration::from_secs(5)).await.unwrap();
    create(&device, None)
        .await
        .assert_error(503, "service_unavailable");
    let path = "/sync/snapshot-sessions/2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88";
    device
        .call(Method::GET, path, None)
        .await
        .assert_error(503, "service_unavailable");
    device
        .call(Method::DELETE, path, None)
        .await
        .assert_error(503, "service_unavailable");
}

/// A bare adapter over a service with `config` (business schema of the example), whose test
/// auth takes the user from `X-Test-User`; requests without it reach the adapter without a
/// user.
struct BareServer {
    addr: std::net::SocketAddr,
    task: JoinHandle<()>,
    _database: TestDatabase,
}

impl Drop for BareServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn test_user(mut request: Request, next: Next) -> Response {
    if let Some(user) = request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        request
            .extensions_mut()
            .insert(oversync_axum::AuthenticatedUser(user));
    }
    next.run(request).await
}

impl BareServer {
    async fn start(mut config: ServiceConfig) -> BareServer {
        let database = oversync_testkit::test_database().await.unwrap();
        let manager = Manager::from_config(
            database.config(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool: Pool = Pool::builder(manager).max_size(8).build().unwrap();
        pool.get()
            .await
            .unwrap()
            .batch_execute(oversync_example::schema::BUSINESS_DDL)
            .await
            .unwrap();
        config.registered_tables = oversync_example::schema::registered_tables();
        let service = Arc::new(SyncService::new(pool, config).unwrap());
        service.bootstrap().await.unwrap();
        let router = oversync_axum::router(service).layer(middleware::from_fn(test_user));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        BareServer {
            addr,
            task,
            _database: database,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut request = reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.addr))
            .header("Oversync-Source-ID", "dev-1");
        if let Some(user) = user {
            request = request.header("X-Test-User", user);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        Reply {
            status,
            content_type,
            body: response.bytes().await.unwrap().to_vec(),
        }
    }
}

#[tokio::test]
async fn snapshot_over_its_row_cap_is_snapshot_session_limit_exceeded() {
    let server = BareServer::start(ServiceConfig {
        max_rows_per_snapshot_session: 2,
        ..ServiceConfig::default()
    })
    .await;
    let connect = server
        .call(
            Method::POST,
            "/sync/connect",
            Some("alice"),
            Some(r#"{"has_local_pending_rows":false}"#),
        )
        .await;
    assert_eq!(connect.status, StatusCode::OK);
    let create = server
        .call(
            Method::POST,
            "/sync/push-sessions",
            Some("alice"),
            Some(r#"{"source_bundle_id":1,"planned_row_count":3}"#),
        )
        .await;
    let push_id = create.json()["push_id"].as_str().unwrap().to_owned();
    let rows = format!(
        "[{},{},{}]",
        user_insert(U1, "a"),
        user_insert(U2, "b"),
        user_insert(U3, "c")
    );
    let chunk = server
        .call(
            Method::POST,
            &format!("/sync/push-sessions/{push_id}/chunks"),
            Some("alice"),
            Some(&format!(r#"{{"start_row_ordinal":0,"rows":{rows}}}"#)),
        )
        .await;
    assert_eq!(chunk.status, StatusCode::OK, "{chunk:?}");
    let commit = server
        .call(
            Method::POST,
            &format!("/sync/push-sessions/{push_id}/commit"),
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(commit.status, StatusCode::OK, "{commit:?}");
    let reply = server
        .call(Method::POST, "/sync/snapshot-sessions", Some("alice"), None)
        .await;
    reply.assert_error(409, "snapshot_session_limit_exceeded");
    assert_eq!(
        reply.json()["message"],
        "snapshot session row_count 3 exceeds limit 2"
    );
}

#[tokio::test]
async fn snapshot_routes_without_an_authenticated_user_are_401() {
    let server = BareServer::start(ServiceConfig::default()).await;
    for (method, path) in [
        (Method::POST, "/sync/snapshot-sessions"),
        (
            Method::GET,
            "/sync/snapshot-sessions/2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88",
        ),
        (
            Method::DELETE,
            "/sync/snapshot-sessions/2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88",
        ),
    ] {
        server
            .call(method, path, None, None)
            .await
            .assert_error(401, "authentication_failed");
    }
}
