//! Capabilities, status, lifecycle and server-originated writes (`with_sync_bundle`).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::*;
use oversync_protocol::error::ErrorCode;
use oversync_protocol::op::Op;
use oversync_protocol::wire::{ConnectRequest, Lifecycle};
use oversync_server::{ConnectError, ServiceConfig, SyncService, WithinBundleError};

#[tokio::test]
async fn capabilities_match_the_reference_wire_example() {
    let db = oversync_testkit::test_database().await.unwrap();
    let config = ServiceConfig {
        schema_version: 1,
        app_name: "my-app".into(),
        registered_tables: vec![oversync_server::RegisteredTable::new(
            "business", "users", "id",
        )],
        ..ServiceConfig::default()
    };
    let service = SyncService::new(pool(&db), config).unwrap();
    let wire = oversync_protocol::json::to_wire_string(&service.capabilities()).unwrap();
    let expected = concat!(
        r#"{"protocol_version":"v1","schema_version":1,"app_name":"my-app","#,
        r#""registered_tables":["business.users"],"#,
        r#""registered_table_specs":[{"schema":"business","table":"users","sync_key_columns":["id"]}],"#,
        r#""features":{"accepted_push_replay_visibility":true,"bundle_change_watch":false,"bundle_pull":true,"#,
        r#""bundle_push":true,"capabilities_endpoint":true,"committed_bundle_row_fetch":true,"#,
        r#""committed_bundle_visibility":true,"connect_lifecycle":true,"graceful_shutdown":true,"#,
        r#""history_pruned_errors":true,"history_pruned_visibility":true,"push_session_chunking":true,"#,
        r#""registered_write_rejection_enforced":true,"retained_floor_visibility":true,"#,
        r#""retained_window_visibility":true,"scope_initialization_leases":true,"#,
        r#""server_checkpoint_tracking":false,"snapshot_chunking":true,"status_endpoint":true,"#,
        r#""structured_sync_keys":true},"#,
        r#""bundle_limits":{"max_bundles_per_pull":5000,"default_rows_per_push_chunk":1000,"#,
        r#""max_rows_per_push_chunk":5000,"push_session_ttl_seconds":900,"#,
        r#""default_rows_per_committed_bundle_chunk":1000,"max_rows_per_committed_bundle_chunk":5000,"#,
        r#""default_rows_per_snapshot_chunk":1000,"max_rows_per_snapshot_chunk":5000,"#,
        r#""snapshot_session_ttl_seconds":900,"initialization_lease_ttl_seconds":900}}"#,
        "\n"
    );
    assert_eq!(wire, expected);
}

#[tokio::test]
async fn status_works_before_bootstrap() {
    let db = oversync_testkit::test_database().await.unwrap();
    let service = SyncService::new(pool(&db), ServiceConfig::default()).unwrap();
    let status = service.status().await.unwrap();
    assert_eq!(status.lifecycle, Lifecycle::Running);
    assert!(status.accepting_operations);
    assert_eq!(status.committed_bundle_count, 0);
    assert!(status.registered_tables.is_empty());
}

#[tokio::test]
async fn status_counts_bundles_and_windows() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    w.push(&a, 1, vec![insert("docs", "d", "{}")])
        .await
        .unwrap();
    let status = w.service.status().await.unwrap();
    assert_eq!(status.latest_bundle_seq_max, 1);
    assert_eq!(status.committed_bundle_count, 1);
    assert!(status.committed_bundle_bytes > 0);
    assert_eq!(
        (
            status.retained_bundle_window_min,
            status.retained_bundle_window_max
        ),
        (1, 1)
    );
    assert_eq!(status.registered_tables.len(), 5);
    let wire = oversync_protocol::json::to_wire_string(&status).unwrap();
    assert!(
        wire.starts_with(
            r#"{"status":"healthy","version":"v1","app_name":"","lifecycle":"running""#
        ),
        "{wire}"
    );
}

#[tokio::test]
async fn after_close_operations_are_service_unavailable_and_status_is_unhealthy() {
    let w = World::new().await;
    w.service.close(Duration::from_secs(1)).await.unwrap();
    let err = w
        .service
        .connect(&actor("alice", "d"), Some(&ConnectRequest::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Unavailable(_)));
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
    assert_eq!(err.code().http_status(), 503);
    let status = w.service.status().await.unwrap();
    assert_eq!(status.lifecycle, Lifecycle::Closed);
    assert_eq!(
        status.status,
        oversync_protocol::wire::HealthStatus::Unhealthy
    );
    assert_eq!(
        w.service
            .pull(&actor("a", "b"), Default::default())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::ServiceUnavailable
    );
    let err = w
        .service
        .create_push_session(&actor("a", "b"), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
    let err = w
        .service
        .upload_push_chunk(&actor("a", "b"), "x", &Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
    let err = w
        .service
        .commit_push_session(&actor("a", "b"), "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
    let err = w
        .service
        .delete_push_session(&actor("a", "b"), "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
    let err = w
        .service
        .committed_bundle_rows(&actor("a", "b"), 1, None, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
}

#[tokio::test]
async fn with_sync_bundle_captures_cascaded_key_changes_in_one_bundle() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    w.push(
        &a,
        1,
        vec![
            insert("users", &uuid(1), "{}"),
            insert(
                "posts",
                &uuid(10),
                &format!(r#"{{"author_id":"{}"}}"#, uuid(1)),
            ),
        ],
    )
    .await
    .unwrap();
    let (_, bundle) = w
        .service
        .with_sync_bundle(&a, "server:rename", 1, |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE business.users SET id = $1::text::uuid WHERE id = $2::text::uuid AND _sync_scope_id = 'alice'",
                    &[&uuid(2), &uuid(1)],
                )
                .await
            })
        })
        .await
        .unwrap();
    let bundle = bundle.unwrap();
    let effects: Vec<(&str, Op)> = bundle
        .rows
        .iter()
        .map(|r| (r.table.as_str(), r.op))
        .collect();
    assert_eq!(
        effects,
        vec![
            ("users", Op::Delete),
            ("users", Op::Insert),
            ("posts", Op::Update)
        ]
    );
    assert_eq!(bundle.bundle_seq, 2);
}

#[tokio::test]
async fn with_sync_bundle_rolls_back_when_the_callback_fails() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let err = w
        .service
        .with_sync_bundle(&a, "server", 1, |tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO business.docs (id) VALUES ('x')", &[])
                    .await
                    .unwrap();
                Err::<(), _>("host failure")
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, WithinBundleError::Callback("host failure")));
    assert_eq!(w.count("SELECT count(*) FROM business.docs").await, 0);
    assert_eq!(
        w.count("SELECT next_bundle_seq FROM sync.user_state").await,
        1
    );
}

#[tokio::test]
async fn with_sync_bundle_without_effects_commits_no_bundle() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let (value, bundle) = w
        .service
        .with_sync_bundle(&a, "server", 1, |_tx| Box::pin(async { Ok::<_, ()>(7) }))
        .await
        .unwrap();
    assert_eq!(value, 7);
    assert!(bundle.is_none());
    assert_eq!(w.count("SELECT count(*) FROM sync.source_state").await, 0);
}

#[tokio::test]
async fn with_sync_bundle_requires_an_initialized_scope_and_the_next_tuple() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let err = w
        .service
        .with_sync_bundle(&a, "server", 1, |_tx| Box::pin(async { Ok::<_, ()>(()) }))
        .await
        .unwrap_err();
    assert!(matches!(err, WithinBundleError::ScopeUninitialized { .. }));
    w.init(&a).await;
    let err = w
        .service
        .with_sync_bundle(&a, "server", 2, |_tx| Box::pin(async { Ok::<_, ()>(()) }))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        WithinBundleError::SourceSequenceOutOfOrder { expected: 1, .. }
    ));
    let err = w
        .service
        .with_sync_bundle(&a, " ", 1, |_tx| Box::pin(async { Ok::<_, ()>(()) }))
        .await
        .unwrap_err();
    assert!(matches!(err, WithinBundleError::Invalid(_)));
}

#[tokio::test]
async fn writes_for_another_owner_inside_a_bundle_fail_with_scope_mismatch() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let err = w
        .service
        .with_sync_bundle(&a, "server", 1, |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO business.docs (_sync_scope_id, id) VALUES ('bob', 'x')",
                    &[],
                )
                .await
            })
        })
        .await
        .unwrap_err();
    let WithinBundleError::Callback(db) = err else {
        panic!()
    };
    assert!(
        db.as_db_error()
            .unwrap()
            .message()
            .contains("scope mismatch")
    );
}
