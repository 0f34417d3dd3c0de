//! The example host's own routes (05-example-server.md §4): sign-in, reset and the retention
//! floor hook that cross-language harnesses call between runs.

use reqwest::{Method, StatusCode};

use crate::support::{TestServer, user_insert};

const USER_A: &str = "550e8400-e29b-41d4-a716-446655440000";

#[tokio::test]
async fn dummy_signin_mints_a_token_for_the_trimmed_user_and_refuses_bad_bodies() {
    let server = TestServer::start().await;
    let reply = server
        .send(
            Method::POST,
            "/dummy-signin",
            &[],
            Some(br#"{"user":"alice","password":"x","device":"ignored"}"#.to_vec()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["user"], "alice");
    for (bad, message) in [
        (&b"not json"[..], "invalid JSON"),
        (br#"{"user":""}"#, "user required"),
        (br#"{"user":"   "}"#, "user required"),
    ] {
        let reply = server
            .send(Method::POST, "/dummy-signin", &[], Some(bad.to_vec()))
            .await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.json()["message"], message);
    }
}

#[tokio::test]
async fn reset_empties_everything_and_capture_works_again_from_bundle_one() {
    let server = TestServer::start().await;
    let device = server.device("alice", "dev-1").await;
    device.connect_empty().await;
    let commit = device
        .push(1, &format!("[{}]", user_insert(USER_A, "ada")))
        .await;
    assert_eq!(commit.status, StatusCode::OK);
    let reply = server
        .send(Method::POST, "/test/reset", &[], Some(b"{}".to_vec()))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        serde_json::json!({"status":"ok","schema":"business"})
    );
    let conn = server.pool.get().await.unwrap();
    for table in ["business.users", "sync.user_state", "sync.bundle_log"] {
        let count: i64 = conn
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0, "{table}");
    }
    let triggers: i64 = conn
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'oversync_bundle_capture_row'
               AND tgrelid = 'business.users'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 1);
    // Pooled connections cached statements against the dropped tables; they must still work.
    device.connect_empty().await;
    let commit = device
        .push(1, &format!("[{}]", user_insert(USER_A, "ada")))
        .await;
    assert_eq!(commit.status, StatusCode::OK, "{commit:?}");
    assert_eq!(commit.json()["bundle_seq"], 1);
}

#[tokio::test]
async fn retention_floor_makes_older_checkpoints_pruned_and_validates_its_input() {
    let server = TestServer::start().await;
    let device = server.device("alice", "dev-1").await;
    device.connect_empty().await;
    for (n, id) in [(1, USER_A), (2, "6ba7b810-9dad-11d1-80b4-00c04fd430c8")] {
        let commit = device.push(n, &format!("[{}]", user_insert(id, "x"))).await;
        assert_eq!(commit.status, StatusCode::OK);
    }
    let floor = |body: &str| {
        server.send(
            Method::POST,
            "/test/retention-floor",
            &[],
            Some(body.as_bytes().to_vec()),
        )
    };
    let reply = floor(r#"{"user_id":"alice","retained_bundle_floor":1}"#).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["retained_bundle_floor"], 1);
    let reply = device
        .call(Method::GET, "/sync/pull?after_bundle_seq=1", None)
        .await;
    reply.assert_error(409, "history_pruned");
    let reply = device
        .call(Method::GET, "/sync/committed-bundles/1/rows", None)
        .await;
    reply.assert_error(409, "history_pruned");
    floor("nope").await.assert_error(400, "invalid_request");
    floor(r#"{"retained_bundle_floor":1}"#)
        .await
        .assert_error(400, "invalid_request");
    floor(r#"{"user_id":"alice","retained_bundle_floor":-1}"#)
        .await
        .assert_error(400, "invalid_request");
    floor(r#"{"user_id":"alice","retained_bundle_floor":3}"#)
        .await
        .assert_error(400, "invalid_request");
    floor(r#"{"user_id":"nobody","retained_bundle_floor":0}"#)
        .await
        .assert_error(404, "user_state_not_found");
}
