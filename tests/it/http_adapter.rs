//! The HTTP surface over real HTTP: every route's success shape and the error codes it can
//! return (01-wire.md §15), auth and actor handling of the example host, and a bad-input
//! matrix that must never produce a 5xx or a non-JSON body from the adapter.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Device, TestServer, user_insert};

const USER_A: &str = "550e8400-e29b-41d4-a716-446655440000";
const USER_B: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

async fn connected<'a>(server: &'a TestServer, user: &str, source: &str) -> Device<'a> {
    let device = server.device(user, source).await;
    device.connect_empty().await;
    device
}

#[tokio::test]
async fn health_and_status_report_the_example_app_unauthenticated() {
    let server = TestServer::start().await;
    for path in ["/syncx/health", "/syncx/status"] {
        let reply = server.send(Method::GET, path, &[], None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        assert!(reply.body.ends_with(b"}\n"));
        let body = reply.json();
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["app_name"], "nethttp-server-example");
        assert_eq!(body["lifecycle"], "running");
        assert_eq!(body["registered_tables"].as_array().unwrap().len(), 8);
    }
}

#[tokio::test]
async fn sync_routes_without_bearer_get_plain_text_401_and_without_source_json_400() {
    let server = TestServer::start().await;
    let reply = server.send(Method::GET, "/sync/pull", &[], None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body, b"Authorization header required\n");
    let reply = server
        .send(
            Method::GET,
            "/sync/pull",
            &[("Authorization", "Token abc")],
            None,
        )
        .await;
    assert_eq!(reply.body, b"Invalid authorization header format\n");
    let reply = server
        .send(
            Method::GET,
            "/sync/pull",
            &[("Authorization", "Bearer nope")],
            None,
        )
        .await;
    assert_eq!(reply.body, b"Invalid token\n");
    let token = server.token("alice").await;
    let auth = format!("Bearer {token}");
    let reply = server
        .send(
            Method::GET,
            "/sync/pull",
            &[("Authorization", auth.as_str())],
            None,
        )
        .await;
    reply.assert_error(400, "invalid_request");
    assert_eq!(
        reply.json()["message"],
        "Oversync-Source-ID header is required"
    );
    let reply = server
        .send(
            Method::GET,
            "/sync/capabilities",
            &[
                ("Authorization", auth.as_str()),
                ("Oversync-Source-ID", "   "),
            ],
            None,
        )
        .await;
    reply.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn non_ascii_source_ids_are_accepted_and_over_long_ones_refused() {
    let server = TestServer::start().await;
    let device = server.device("alice", "gerät-ü").await;
    device.connect_empty().await;
    let long = server.device("alice", &"s".repeat(256)).await;
    let reply = long.call(Method::POST, "/sync/connect", Some("{}")).await;
    reply.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn options_on_any_path_is_204_and_unknown_paths_are_plain_404() {
    let server = TestServer::start().await;
    let reply = server
        .send(Method::OPTIONS, "/anything/at/all", &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());
    let reply = server.send(Method::GET, "/nope", &[], None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body, b"404 page not found\n");
}

#[tokio::test]
async fn capabilities_advertise_the_example_tables_and_limits() {
    let server = TestServer::start().await;
    let device = server.device("alice", "dev-1").await;
    let reply = device.call(Method::GET, "/sync/capabilities", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["protocol_version"], "v1");
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["app_name"], "nethttp-server-example");
    assert_eq!(body["features"]["connect_lifecycle"], true);
    assert_eq!(body["features"]["server_checkpoint_tracking"], false);
    assert_eq!(body["bundle_limits"]["max_rows_per_push_chunk"], 5000);
    assert!(body["bundle_limits"].get("max_rows_per_bundle").is_none());
    let specs = body["registered_table_specs"].as_array().unwrap();
    assert_eq!(specs[0]["table"], "categories");
    assert_eq!(specs[0]["sync_key_columns"], serde_json::json!(["id"]));
}

#[tokio::test]
async fn connect_answers_resolutions_and_rejects_malformed_bodies() {
    let server = TestServer::start().await;
    let device = server.device("alice", "dev-1").await;
    for body in ["", "   ", "{", "[]", r#"{"has_local_pending_rows":"yes"}"#] {
        let reply = device.call(Method::POST, "/sync/connect", Some(body)).await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.json()["message"], "Failed to parse connect request");
    }
    let reply = device
        .call(
            Method::POST,
            "/sync/connect",
            Some(r#"{"has_local_pending_rows":true} trailing"#),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["resolution"], "initialize_local");
    let other = server.device("alice", "dev-2").await;
    let reply = other
        .call(
            Method::POST,
            "/sync/connect",
            Some(r#"{"has_local_pending_rows":true}"#),
        )
        .await;
    assert_eq!(reply.json()["resolution"], "retry_later");
    assert!(reply.json()["retry_after_seconds"].as_i64().unwrap() >= 1);
    let reply = device
        .call(Method::POST, "/sync/connect", Some("null"))
        .await;
    assert_eq!(reply.json()["resolution"], "initialize_empty");
    let reply = other.call(Method::POST, "/sync/connect", Some("{}")).await;
    assert_eq!(
        reply.json(),
        serde_json::json!({"resolution":"remote_authoritative"})
    );
}

#[tokio::test]
async fn push_round_trip_serves_the_committed_rows_with_a_matching_hash() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    let commit = device
        .push(
            1,
            &format!(
                "[{},{}]",
                user_insert(USER_A, "ada"),
                user_insert(USER_B, "bob")
            ),
        )
        .await;
    assert_eq!(commit.status, StatusCode::OK, "{commit:?}");
    let meta = commit.json();
    assert_eq!(meta["bundle_seq"], 1);
    assert_eq!(meta["row_count"], 2);
    // First page of one row, then the rest.
    let first = device
        .call(
            Method::GET,
            "/sync/committed-bundles/1/rows?max_rows=1",
            None,
        )
        .await
        .json();
    assert_eq!(first["next_row_ordinal"], 0);
    assert_eq!(first["has_more"], true);
    let second = device
        .call(
            Method::GET,
            "/sync/committed-bundles/1/rows?after_row_ordinal=0",
            None,
        )
        .await
        .json();
    assert_eq!(second["next_row_ordinal"], 1);
    assert_eq!(second["has_more"], false);
    assert_eq!(second["bundle_hash"], meta["bundle_hash"]);
    // Recompute the hash from what the client received.
    let rows: Vec<Value> = [&first, &second]
        .iter()
        .flat_map(|page| page["rows"].as_array().unwrap().clone())
        .collect();
    let keys: Vec<std::collections::BTreeMap<String, String>> = rows
        .iter()
        .map(|r| serde_json::from_value(r["key"].clone()).unwrap())
        .collect();
    let payloads: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| serde_json::to_vec(&r["payload"]).unwrap())
        .collect();
    let digest = oversync_protocol::hash::bundle_digest(rows.iter().enumerate().map(|(i, r)| {
        oversync_protocol::hash::HashRow {
            schema: r["schema"].as_str().unwrap(),
            table: r["table"].as_str().unwrap(),
            key: &keys[i],
            op: oversync_protocol::op::Op::parse_exact(r["op"].as_str().unwrap()).unwrap(),
            row_version: r["row_version"].as_i64().unwrap(),
            payload: Some(&payloads[i]),
        }
    }))
    .unwrap();
    assert_eq!(digest.hash.to_hex(), meta["bundle_hash"].as_str().unwrap());
    // Pull sees the same bundle.
    let pull = device
        .call(Method::GET, "/sync/pull?after_bundle_seq=0", None)
        .await
        .json();
    assert_eq!(pull["stable_bundle_seq"], 1);
    assert_eq!(pull["bundles"][0]["bundle_hash"], meta["bundle_hash"]);
}

#[tokio::test]
async fn push_session_errors_carry_their_codes_over_http() {
    let server = TestServer::start().await;
    let fresh = server.device("carol", "dev-1").await;
    let reply = fresh
        .call(
            Method::POST,
            "/sync/push-sessions",
            Some(r#"{"source_bundle_id":1,"planned_row_count":1}"#),
        )
        .await;
    reply.assert_error(409, "scope_uninitialized");
    let device = connected(&server, "alice", "dev-1").await;
    for (body, code) in [
        (
            r#"{"source_bundle_id":0,"planned_row_count":1}"#,
            "push_session_invalid",
        ),
        (
            r#"{"source_bundle_id":1,"planned_row_count":0}"#,
            "push_session_invalid",
        ),
        (
            r#"{"source_bundle_id":"1","planned_row_count":1}"#,
            "invalid_request",
        ),
        (
            r#"{"source_bundle_id":1.0,"planned_row_count":1}"#,
            "invalid_request",
        ),
        (
            r#"{"source_bundle_id":5,"planned_row_count":1}"#,
            "source_sequence_out_of_order",
        ),
    ] {
        let reply = device
            .call(Method::POST, "/sync/push-sessions", Some(body))
            .await;
        let status = if code == "source_sequence_out_of_order" {
            409
        } else {
            400
        };
        reply.assert_error(status, code);
    }
    // Unknown and malformed push ids.
    for id in ["6df0d8dd-a84b-43b6-bbca-8de70432922a", "not-a-uuid", "%FF"] {
        let reply = device
            .call(
                Method::POST,
                &format!("/sync/push-sessions/{id}/commit"),
                None,
            )
            .await;
        reply.assert_error(404, "push_session_not_found");
        let reply = device
            .call(Method::DELETE, &format!("/sync/push-sessions/{id}"), None)
            .await;
        reply.assert_error(404, "push_session_not_found");
    }
    // Chunk validation happens before the session lookup.
    let reply = device
        .call(
            Method::POST,
            "/sync/push-sessions/6df0d8dd-a84b-43b6-bbca-8de70432922a/chunks",
            Some(r#"{"start_row_ordinal":0,"rows":[]}"#),
        )
        .await;
    reply.assert_error(400, "push_chunk_invalid");
    let reply = device
        .call(
            Method::POST,
            "/sync/push-sessions/6df0d8dd-a84b-43b6-bbca-8de70432922a/chunks",
            Some(r#"{"start_row_ordinal":0,"rows":"x"}"#),
        )
        .await;
    reply.assert_error(400, "invalid_request");
    // A real session: out-of-order chunk, then delete, then 404.
    let create = device
        .call(
            Method::POST,
            "/sync/push-sessions",
            Some(r#"{"source_bundle_id":1,"planned_row_count":2}"#),
        )
        .await
        .json();
    assert!(create.get("next_expected_row_ordinal").is_none());
    let push_id = create["push_id"].as_str().unwrap();
    let reply = device
        .call(
            Method::POST,
            &format!("/sync/push-sessions/{push_id}/chunks"),
            Some(&format!(
                r#"{{"start_row_ordinal":1,"rows":[{}]}}"#,
                user_insert(USER_A, "a")
            )),
        )
        .await;
    reply.assert_error(409, "push_chunk_out_of_order");
    let reply = device
        .call(
            Method::POST,
            &format!("/sync/push-sessions/{push_id}/commit"),
            None,
        )
        .await;
    reply.assert_error(400, "push_commit_invalid");
    // Another user's session is forbidden.
    let mallory = connected(&server, "mallory", "dev-9").await;
    let reply = mallory
        .call(
            Method::DELETE,
            &format!("/sync/push-sessions/{push_id}"),
            None,
        )
        .await;
    reply.assert_error(403, "push_session_forbidden");
    let reply = device
        .call(
            Method::DELETE,
            &format!("/sync/push-sessions/{push_id}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());
    assert_eq!(reply.content_type, None);
    let reply = device
        .call(
            Method::DELETE,
            &format!("/sync/push-sessions/{push_id}"),
            None,
        )
        .await;
    reply.assert_error(404, "push_session_not_found");
}

#[tokio::test]
async fn stale_update_answers_a_structured_push_conflict() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    let commit = device
        .push(1, &format!("[{}]", user_insert(USER_A, "ada")))
        .await;
    assert_eq!(commit.status, StatusCode::OK);
    let stale = format!(
        r#"[{{"schema":"business","table":"users","key":{{"id":"{USER_A}"}},"op":"UPDATE","base_row_version":0,"payload":{{"id":"{USER_A}","name":"x","email":"x@example.com","created_at":null,"updated_at":null}}}}]"#
    );
    let reply = device.push(2, &stale).await;
    reply.assert_error(409, "push_conflict");
    let conflict = &reply.json()["conflict"];
    assert_eq!(conflict["op"], "UPDATE");
    assert_eq!(conflict["base_row_version"], 0);
    assert_eq!(conflict["server_row_version"], 1);
    assert_eq!(conflict["server_row_deleted"], false);
    assert_eq!(conflict["server_row"]["name"], "ada");
    assert_eq!(conflict["key"]["id"], USER_A);
}

#[tokio::test]
async fn committed_rows_and_pull_validate_their_parameters() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    for (path, code, message) in [
        (
            "/sync/committed-bundles/abc/rows",
            "committed_bundle_chunk_invalid",
            "bundle_seq must be an integer",
        ),
        (
            "/sync/committed-bundles/0/rows",
            "committed_bundle_chunk_invalid",
            "bundle_seq must be > 0",
        ),
        (
            "/sync/committed-bundles/1/rows?after_row_ordinal=x",
            "committed_bundle_chunk_invalid",
            "after_row_ordinal must be an integer",
        ),
        (
            "/sync/committed-bundles/1/rows?after_row_ordinal=-1",
            "committed_bundle_chunk_invalid",
            "after_row_ordinal must be >= 0",
        ),
        (
            "/sync/committed-bundles/1/rows?max_rows=0",
            "committed_bundle_chunk_invalid",
            "max_rows must be > 0",
        ),
        (
            "/sync/pull?after_bundle_seq=1.5",
            "invalid_request",
            "after_bundle_seq must be an integer",
        ),
        (
            "/sync/pull?after_bundle_seq=-1",
            "invalid_request",
            "after_bundle_seq must be >= 0",
        ),
        (
            "/sync/pull?max_bundles=5001",
            "invalid_request",
            "max_bundles must be between 1 and 5000",
        ),
        (
            "/sync/pull?max_bundles=abc",
            "invalid_request",
            "max_bundles must be an integer",
        ),
        (
            "/sync/pull?target_bundle_seq=-3",
            "invalid_request",
            "target_bundle_seq must be >= 0",
        ),
        (
            "/sync/pull?after_bundle_seq=%207",
            "invalid_request",
            "after_bundle_seq must be an integer",
        ),
    ] {
        let reply = device.call(Method::GET, path, None).await;
        reply.assert_error(400, code);
        assert_eq!(reply.json()["message"], message, "{path}");
    }
    let reply = device
        .call(Method::GET, "/sync/committed-bundles/7/rows", None)
        .await;
    reply.assert_error(404, "committed_bundle_not_found");
    // Go's query rules: first value wins, empty is absent, `;` pairs are dropped.
    let reply = device
        .call(
            Method::GET,
            "/sync/pull?max_bundles=&after_bundle_seq=0&after_bundle_seq=x",
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = device
        .call(Method::GET, "/sync/pull?max_bundles=0;x=1", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let uninitialized = server.device("dave", "dev-1").await;
    let reply = uninitialized.call(Method::GET, "/sync/pull", None).await;
    reply.assert_error(409, "scope_uninitialized");
}

#[tokio::test]
async fn users_never_see_each_others_rows_over_http() {
    let server = TestServer::start().await;
    let alice = connected(&server, "alice", "dev-1").await;
    let bob = connected(&server, "bob", "dev-1").await;
    assert_eq!(
        alice
            .push(1, &format!("[{}]", user_insert(USER_A, "ada")))
            .await
            .status,
        StatusCode::OK
    );
    // Bob uses the same key: an independent row in his own scope.
    assert_eq!(
        bob.push(1, &format!("[{}]", user_insert(USER_A, "bobby")))
            .await
            .status,
        StatusCode::OK
    );
    let alice_pull = alice.call(Method::GET, "/sync/pull", None).await.json();
    let bob_pull = bob.call(Method::GET, "/sync/pull", None).await.json();
    assert_eq!(alice_pull["bundles"].as_array().unwrap().len(), 1);
    assert_eq!(
        alice_pull["bundles"][0]["rows"][0]["payload"]["name"],
        "ada"
    );
    assert_eq!(
        bob_pull["bundles"][0]["rows"][0]["payload"]["name"],
        "bobby"
    );
    let rows = bob
        .call(Method::GET, "/sync/committed-bundles/1/rows", None)
        .await
        .json();
    assert_eq!(rows["rows"][0]["payload"]["name"], "bobby");
}

/// Bodies that are malformed in every way the decoder distinguishes.
const BAD_BODIES: [&str; 10] = [
    "",
    "{",
    "nul",
    "[1,2]",
    "\"text\"",
    r#"{"rows": {}}"#,
    r#"{"start_row_ordinal": 99999999999999999999}"#,
    r#"{"start_row_ordinal": -1, "rows": [{"key": "x"}]}"#,
    r#"{"source_bundle_id": 1e3}"#,
    "\u{feff}{}",
];

#[tokio::test]
async fn malformed_requests_never_get_a_5xx_or_a_non_json_body() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    let session = "6df0d8dd-a84b-43b6-bbca-8de70432922a";
    let posts = [
        "/sync/connect".to_owned(),
        "/sync/push-sessions".to_owned(),
        format!("/sync/push-sessions/{session}/chunks"),
        format!("/sync/push-sessions/{session}/commit"),
    ];
    for path in &posts {
        for body in BAD_BODIES {
            let reply = device.call(Method::POST, path, Some(body)).await;
            assert!(
                !reply.status.is_server_error(),
                "{path} {body:?} -> {reply:?}"
            );
            assert_eq!(
                reply.content_type.as_deref(),
                Some("application/json"),
                "{path} {body:?}"
            );
            if !reply.status.is_success() {
                assert!(!reply.error_code().is_empty(), "{path} {body:?}");
            }
        }
    }
    for path in [
        "/sync/pull?after_bundle_seq=99999999999999999999",
        "/sync/pull?target_bundle_seq=%zz",
        "/sync/committed-bundles/99999999999999999999/rows",
        "/sync/committed-bundles/-5/rows?max_rows=-1",
        "/sync/committed-bundles/%E2%82/rows",
    ] {
        let reply = device.call(Method::GET, path, None).await;
        assert!(
            reply.status.is_client_error() || reply.status.is_success(),
            "{path} -> {reply:?}"
        );
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/json"),
            "{path}"
        );
    }
    // Nothing above changed state: the first real push is still bundle 1.
    let commit = device
        .push(1, &format!("[{}]", user_insert(USER_A, "ada")))
        .await;
    assert_eq!(commit.json()["bundle_seq"], 1);
}

#[tokio::test]
async fn committed_pushes_land_in_the_business_tables_of_their_owner() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    assert_eq!(
        device
            .push(1, &format!("[{}]", user_insert(USER_A, "ada")))
            .await
            .status,
        StatusCode::OK
    );
    let conn = server.pool.get().await.unwrap();
    let row = conn
        .query_one(
            "SELECT _sync_scope_id, name FROM business.users WHERE id = $1::text::uuid",
            &[&USER_A],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
    assert_eq!(row.get::<_, String>(1), "ada");
}

#[tokio::test]
async fn a_closed_service_answers_service_unavailable_but_still_reports_status() {
    let server = TestServer::start().await;
    let device = connected(&server, "alice", "dev-1").await;
    server
        .service
        .close(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let reply = device.call(Method::GET, "/sync/pull", None).await;
    reply.assert_error(503, "service_unavailable");
    let reply = server.send(Method::GET, "/syncx/health", &[], None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["lifecycle"], "closed");
    let reply = server.send(Method::GET, "/syncx/status", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
}
