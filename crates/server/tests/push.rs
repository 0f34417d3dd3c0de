//! Push sessions: every error code of create, chunk, commit and delete; conflicts; FK graphs;
//! staged order; isolation between users; concurrency; limits.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::*;
use oversync_protocol::error::{ErrorBody, ErrorCode};
use oversync_protocol::op::Op;
use oversync_protocol::wire::{PushSessionChunkRequest, PushSessionCreateRequest};
use oversync_server::{
    PushChunkError, PushCommitError, PushCreateError, PushDeleteError, ServiceConfig,
};

fn create_req(source_bundle_id: i64, planned: i64) -> PushSessionCreateRequest {
    PushSessionCreateRequest {
        source_bundle_id,
        planned_row_count: planned,
        initialization_id: String::new(),
    }
}

async fn initialized(w: &World) -> oversync_server::Actor {
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    a
}

fn assert_code(code: ErrorCode, expected: ErrorCode, status: u16) {
    assert_eq!(code, expected);
    assert_eq!(code.http_status(), status);
}

// ---- create ------------------------------------------------------------------------------

#[tokio::test]
async fn create_rejects_non_positive_numbers() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let err = w
        .service
        .create_push_session(&a, &create_req(0, 1))
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionInvalid, 400);
    assert_eq!(err.to_string(), "source_bundle_id must be > 0");
    let err = w
        .service
        .create_push_session(&a, &create_req(1, 0))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "planned_row_count must be > 0");
}

#[tokio::test]
async fn create_on_an_uninitialized_scope_is_scope_uninitialized() {
    let w = World::new().await;
    let err = w
        .service
        .create_push_session(&actor("alice", "dev-1"), &create_req(1, 1))
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::ScopeUninitialized, 409);
    assert_eq!(
        err.to_string(),
        "sync scope for user alice is not initialized"
    );
}

#[tokio::test]
async fn create_with_an_initialization_id_once_initialized_is_invalid() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let mut request = create_req(1, 1);
    request.initialization_id = uuid(1);
    let err = w
        .service
        .create_push_session(&a, &request)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionInvalid, 400);
}

#[tokio::test]
async fn create_without_the_lease_id_while_initializing_is_invalid() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.service
        .connect(
            &a,
            Some(&oversync_protocol::wire::ConnectRequest {
                has_local_pending_rows: true,
            }),
        )
        .await
        .unwrap();
    let err = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "initialization_id is required while the scope is initializing"
    );
}

#[tokio::test]
async fn create_skipping_ahead_is_source_sequence_out_of_order() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let err = w
        .service
        .create_push_session(&a, &create_req(2, 1))
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::SourceSequenceOutOfOrder, 409);
    assert_eq!(
        err.to_string(),
        "source dev-1 for user alice expected next source_bundle_id 1, got 2"
    );
}

#[tokio::test]
async fn create_for_a_pruned_tuple_is_history_pruned() {
    let w = World::with_config(ServiceConfig {
        retained_bundles_per_user: 1,
        ..ServiceConfig::default()
    })
    .await;
    let a = initialized(&w).await;
    w.push(&a, 1, vec![insert("docs", "d1", "{}")])
        .await
        .unwrap();
    w.push(&a, 2, vec![insert("docs", "d2", "{}")])
        .await
        .unwrap();
    let err = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::HistoryPruned, 409);
    assert!(
        err.to_string()
            .contains("max committed source_bundle_id is 2")
    );
}

async fn retire(w: &World, source: &str) {
    w.client()
        .await
        .execute(
            "INSERT INTO sync.source_state (user_pk, source_id, state, replaced_by_source_id, retirement_reason)
             SELECT user_pk, $1, 'retired', 'dev-new', 'history_pruned' FROM sync.user_state WHERE user_id = 'alice'
             ON CONFLICT (user_pk, source_id) DO UPDATE SET state = 'retired',
                 replaced_by_source_id = 'dev-new', retirement_reason = 'history_pruned'",
            &[&source],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn create_by_a_retired_source_is_source_retired_with_the_structured_body() {
    let w = World::new().await;
    let a = initialized(&w).await;
    retire(&w, "dev-1").await;
    let err = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::SourceRetired, 409);
    let ErrorBody::SourceRetired(body) = err.to_body() else {
        panic!("structured source_retired body")
    };
    assert_eq!(body.source_id, "dev-1");
    assert_eq!(body.replaced_by_source_id, "dev-new");
}

#[tokio::test]
async fn planned_rows_above_max_rows_per_bundle_are_refused() {
    let w = World::with_config(ServiceConfig {
        max_rows_per_bundle: 2,
        ..ServiceConfig::default()
    })
    .await;
    let a = initialized(&w).await;
    let err = w
        .service
        .create_push_session(&a, &create_req(1, 3))
        .await
        .unwrap_err();
    assert!(matches!(err, PushCreateError::Invalid(_)));
    assert_eq!(err.code(), ErrorCode::PushSessionInvalid);
}

#[tokio::test]
async fn a_second_create_for_the_same_tuple_replaces_the_first_session() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let first = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap();
    let _second = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap();
    let err = w
        .service
        .upload_push_chunk(
            &a,
            &first.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![insert("docs", "d", "{}")],
            },
        )
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionNotFound, 404);
}

// ---- chunk -------------------------------------------------------------------------------

async fn chunk_error(
    w: &World,
    rows: Vec<oversync_protocol::wire::PushRequestRow>,
) -> PushChunkError {
    let a = initialized(w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 10))
        .await
        .unwrap();
    w.service
        .upload_push_chunk(
            &a,
            &created.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows,
            },
        )
        .await
        .unwrap_err()
}

async fn assert_chunk_invalid(rows: Vec<oversync_protocol::wire::PushRequestRow>, message: &str) {
    let w = World::new().await;
    let err = chunk_error(&w, rows).await;
    assert_code(err.code(), ErrorCode::PushChunkInvalid, 400);
    assert!(err.to_string().contains(message), "{err} lacks {message}");
}

#[tokio::test]
async fn chunk_rows_must_target_registered_tables() {
    assert_chunk_invalid(
        vec![row_json(
            r#"{"schema":"business","table":"nope","key":{"id":"x"},"op":"INSERT","payload":{}}"#,
        )],
        "table business.nope is not registered",
    )
    .await;
}

#[tokio::test]
async fn chunk_rows_need_valid_names_and_ops() {
    assert_chunk_invalid(
        vec![row_json(
            r#"{"schema":"bu-siness","table":"docs","key":{"id":"x"},"op":"INSERT","payload":{}}"#,
        )],
        "invalid schema name",
    )
    .await;
    assert_chunk_invalid(
        vec![row_json(
            r#"{"schema":"business","table":"docs","key":{"id":"x"},"op":"UPSERT","payload":{}}"#,
        )],
        "invalid op \"UPSERT\"",
    )
    .await;
}

#[tokio::test]
async fn chunk_keys_must_be_present_strings_and_canonical_uuids() {
    assert_chunk_invalid(
        vec![row_json(
            r#"{"schema":"business","table":"docs","key":{"other":"x"},"op":"DELETE"}"#,
        )],
        "row key for business.docs must include \"id\"",
    )
    .await;
    assert_chunk_invalid(
        vec![row_json(
            r#"{"schema":"business","table":"docs","key":{"id":5},"op":"DELETE"}"#,
        )],
        "row key business.docs.id must be a string",
    )
    .await;
    assert_chunk_invalid(
        vec![delete("users", "00000000-0000-4000-8000-00000000000A", 1)],
        "must use canonical dashed lowercase UUID text",
    )
    .await;
}

#[tokio::test]
async fn chunk_rows_may_not_repeat_a_target() {
    assert_chunk_invalid(
        vec![delete("docs", "d1", 1), delete("docs", "d1", 1)],
        "duplicate target row in push request: business.docs d1",
    )
    .await;
}

#[tokio::test]
async fn chunk_payload_rules_follow_the_reference() {
    assert_chunk_invalid(
        vec![row_json(
            r#"{"schema":"business","table":"docs","key":{"id":"d"},"op":"DELETE","payload":null}"#,
        )],
        "DELETE for business.docs must not include payload",
    )
    .await;
    assert_chunk_invalid(
        vec![row_json(
            r#"{"schema":"business","table":"docs","key":{"id":"d"},"op":"INSERT"}"#,
        )],
        "INSERT for business.docs requires payload",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("docs", "d", "[1]")],
        "payload for business.docs must be a JSON object",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("docs", "d", r#"{"_sync_scope_id":"bob"}"#)],
        "must not include hidden scope column",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("docs", "d", r#"{"id":"other"}"#)],
        "payload key business.docs.id must match request key",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("docs", "d", r#"{"ti-tle":"x"}"#)],
        "contains invalid column",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("users", &uuid(1), r#"{"avatar":12}"#)],
        "payload binary field business.users.avatar must be a base64 string",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("users", &uuid(1), r#"{"avatar":"not base64!"}"#)],
        "payload binary field business.users.avatar must be valid base64",
    )
    .await;
}

#[tokio::test]
async fn chunk_payload_columns_are_checked_against_the_catalog() {
    assert_chunk_invalid(
        vec![insert("docs", "d", r#"{"Title":"x"}"#)],
        "must be lower-case",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("docs", "d", r#"{"_SYNC_SCOPE_ID":"x"}"#)],
        "hidden scope column",
    )
    .await;
    assert_chunk_invalid(
        vec![insert("docs", "d", r#"{"nope":"x"}"#)],
        "unknown column \"nope\"",
    )
    .await;
}

#[tokio::test]
async fn chunk_size_and_start_are_validated_before_the_session_is_looked_up() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let unknown = uuid(77);
    let err = w
        .service
        .upload_push_chunk(
            &a,
            &unknown,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "rows must not be empty");
    let err = w
        .service
        .upload_push_chunk(
            &a,
            &unknown,
            &PushSessionChunkRequest {
                start_row_ordinal: -1,
                rows: vec![delete("docs", "d", 1)],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "start_row_ordinal must be >= 0");
}

#[tokio::test]
async fn chunks_above_max_rows_per_push_chunk_are_invalid() {
    let w = World::with_config(ServiceConfig {
        max_rows_per_push_chunk: 1,
        ..ServiceConfig::default()
    })
    .await;
    let err = chunk_error(&w, vec![delete("docs", "a", 1), delete("docs", "b", 1)]).await;
    assert_eq!(
        err.to_string(),
        "rows length 2 exceeds max_rows_per_push_chunk 1"
    );
}

#[tokio::test]
async fn unknown_and_malformed_push_ids_are_not_found() {
    let w = World::new().await;
    let a = initialized(&w).await;
    for id in [uuid(5), "not-a-uuid".to_owned()] {
        let err = w
            .service
            .upload_push_chunk(
                &a,
                &id,
                &PushSessionChunkRequest {
                    start_row_ordinal: 0,
                    rows: vec![delete("docs", "d", 1)],
                },
            )
            .await
            .unwrap_err();
        assert_code(err.code(), ErrorCode::PushSessionNotFound, 404);
        assert_eq!(err.to_string(), format!("push session {id} was not found"));
    }
}

#[tokio::test]
async fn another_users_session_is_forbidden() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap();
    let bob = actor("bob", "dev-1");
    let err = w
        .service
        .upload_push_chunk(
            &bob,
            &created.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![delete("docs", "d", 1)],
            },
        )
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionForbidden, 403);
    let err = w
        .service
        .commit_push_session(&bob, &created.push_id)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionForbidden, 403);
    let err = w
        .service
        .delete_push_session(&bob, &created.push_id)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionForbidden, 403);
}

#[tokio::test]
async fn another_source_of_the_same_user_is_forbidden() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap();
    let other = actor("alice", "dev-2");
    let err = w
        .service
        .commit_push_session(&other, &created.push_id)
        .await
        .unwrap_err();
    assert!(matches!(err, PushCommitError::Forbidden(_)));
}

#[tokio::test]
async fn expired_sessions_answer_expired_then_disappear() {
    let w = World::with_config(ServiceConfig {
        push_session_ttl: Duration::from_millis(50),
        ..ServiceConfig::default()
    })
    .await;
    let a = initialized(&w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let err = w
        .service
        .upload_push_chunk(
            &a,
            &created.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![delete("docs", "d", 1)],
            },
        )
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionExpired, 410);
    assert_code(
        w.service
            .commit_push_session(&a, &created.push_id)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PushSessionExpired,
        410,
    );
    assert_code(
        w.service
            .delete_push_session(&a, &created.push_id)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PushSessionExpired,
        410,
    );
    // A later create sweeps expired sessions.
    w.service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap();
    let err = w
        .service
        .delete_push_session(&a, &created.push_id)
        .await
        .unwrap_err();
    assert!(matches!(err, PushDeleteError::NotFound(_)));
}

#[tokio::test]
async fn a_chunk_not_continuing_the_session_is_out_of_order() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 2))
        .await
        .unwrap();
    let chunk = PushSessionChunkRequest {
        start_row_ordinal: 0,
        rows: vec![delete("docs", "d", 1)],
    };
    w.service
        .upload_push_chunk(&a, &created.push_id, &chunk)
        .await
        .unwrap();
    let err = w
        .service
        .upload_push_chunk(&a, &created.push_id, &chunk)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushChunkOutOfOrder, 409);
    assert_eq!(
        err.to_string(),
        format!(
            "push session {} expected start_row_ordinal 1, got 0",
            created.push_id
        )
    );
}

#[tokio::test]
async fn a_chunk_beyond_the_planned_rows_is_invalid() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 1))
        .await
        .unwrap();
    let err = w
        .service
        .upload_push_chunk(
            &a,
            &created.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![delete("docs", "a", 1), delete("docs", "b", 1)],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "chunk exceeds planned_row_count");
}

// ---- commit ------------------------------------------------------------------------------

#[tokio::test]
async fn committing_twice_is_not_found_the_second_time() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let push_id = w.stage(&a, 1, vec![insert("docs", "d", "{}")]).await;
    w.service.commit_push_session(&a, &push_id).await.unwrap();
    let err = w
        .service
        .commit_push_session(&a, &push_id)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushSessionNotFound, 404);
}

#[tokio::test]
async fn committing_an_incomplete_session_is_push_commit_invalid() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 2))
        .await
        .unwrap();
    let err = w
        .service
        .commit_push_session(&a, &created.push_id)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushCommitInvalid, 400);
    assert_eq!(
        err.to_string(),
        "staged row count 0 does not match planned_row_count 2"
    );
}

#[tokio::test]
async fn a_duplicate_target_across_chunks_is_push_commit_invalid() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let created = w
        .service
        .create_push_session(&a, &create_req(1, 2))
        .await
        .unwrap();
    for start in 0..2 {
        w.service
            .upload_push_chunk(
                &a,
                &created.push_id,
                &PushSessionChunkRequest {
                    start_row_ordinal: start,
                    rows: vec![insert("docs", "d", "{}")],
                },
            )
            .await
            .unwrap();
    }
    let err = w
        .service
        .commit_push_session(&a, &created.push_id)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "duplicate target row in staged push session: business.docs d"
    );
}

#[tokio::test]
async fn a_commit_without_effects_is_push_commit_invalid() {
    let w = World::new().await;
    let a = initialized(&w).await;
    w.push(&a, 1, vec![insert("docs", "d", "{}")])
        .await
        .unwrap();
    // Drift: the business row vanishes behind the capture triggers' back.
    w.client()
        .await
        .batch_execute("SET session_replication_role = replica; DELETE FROM business.docs;")
        .await
        .unwrap();
    let err = w
        .push(&a, 2, vec![update("docs", "d", 1, r#"{"title":"x"}"#)])
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushCommitInvalid, 400);
    assert_eq!(
        err.to_string(),
        "push session produced no captured business-table effects"
    );
}

#[tokio::test]
async fn a_source_retired_after_staging_cannot_commit() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let push_id = w.stage(&a, 1, vec![insert("docs", "d", "{}")]).await;
    retire(&w, "dev-1").await;
    let err = w
        .service
        .commit_push_session(&a, &push_id)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::SourceRetired, 409);
    assert!(matches!(err.to_body(), ErrorBody::SourceRetired(_)));
}

#[tokio::test]
async fn a_sequence_moved_since_staging_is_source_sequence_changed() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let push_id = w.stage(&a, 1, vec![insert("docs", "d", "{}")]).await;
    w.service
        .with_sync_bundle(&a, "dev-1", 1, |tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO business.docs (id) VALUES ('server')", &[])
                    .await?;
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .await
        .unwrap();
    let err = w
        .service
        .commit_push_session(&a, &push_id)
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::SourceSequenceChanged, 409);
    assert_eq!(
        err.to_string(),
        "source dev-1 for user alice changed expected next source_bundle_id from staged 1 to 2 before commit"
    );
}

#[tokio::test]
async fn a_missing_parent_fails_at_commit_as_push_commit_invalid_naming_the_constraint() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let err = w
        .push(
            &a,
            1,
            vec![insert("docs", "child", r#"{"parent_id":"ghost"}"#)],
        )
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushCommitInvalid, 400);
    assert!(err.to_string().contains("docs_parent_fk"), "{err}");
    assert_eq!(w.count("SELECT count(*) FROM business.docs").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM sync.bundle_log").await, 0);
}

#[tokio::test]
async fn a_bundle_above_max_bytes_per_bundle_is_refused() {
    let w = World::with_config(ServiceConfig {
        max_bytes_per_bundle: 100,
        ..ServiceConfig::default()
    })
    .await;
    let a = initialized(&w).await;
    let long = "x".repeat(200);
    let err = w
        .push(
            &a,
            1,
            vec![insert("docs", "d", &format!(r#"{{"title":"{long}"}}"#))],
        )
        .await
        .unwrap_err();
    assert_code(err.code(), ErrorCode::PushCommitInvalid, 400);
    assert!(err.to_string().contains("max_bytes_per_bundle is 100"));
}

#[tokio::test]
async fn deleting_a_session_removes_it() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let push_id = w.stage(&a, 1, vec![insert("docs", "d", "{}")]).await;
    w.service.delete_push_session(&a, &push_id).await.unwrap();
    assert_eq!(
        w.count("SELECT count(*) FROM sync.push_session_rows").await,
        0
    );
    assert_code(
        w.service
            .delete_push_session(&a, &push_id)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PushSessionNotFound,
        404,
    );
}

// ---- conflicts ---------------------------------------------------------------------------

async fn conflict(
    w: &World,
    a: &oversync_server::Actor,
    row: oversync_protocol::wire::PushRequestRow,
) -> oversync_server::Conflict {
    match w.push(a, 2, vec![row]).await.unwrap_err() {
        PushCommitError::Conflict(c) => *c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn with_doc(w: &World) -> oversync_server::Actor {
    let a = initialized(w).await;
    w.push(&a, 1, vec![insert("docs", "d", r#"{"title":"one"}"#)])
        .await
        .unwrap();
    a
}

#[tokio::test]
async fn inserting_an_existing_row_conflicts_with_the_server_row() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    let c = conflict(&w, &a, row_json(r#"{"schema":"business","table":"docs","key":{"id":"d"},"op":"INSERT","base_row_version":1,"payload":{}}"#)).await;
    assert_eq!(
        c.message,
        "insert conflict on business.docs d: row already exists at version 1"
    );
    let d = &c.details;
    assert_eq!(
        (d.schema.as_str(), d.table.as_str(), d.op),
        ("business", "docs", Op::Insert)
    );
    assert_eq!(d.key.get("id").map(String::as_str), Some("d"));
    assert_eq!(
        (
            d.base_row_version,
            d.server_row_version,
            d.server_row_deleted
        ),
        (1, 1, false)
    );
    let row: serde_json::Value =
        serde_json::from_str(d.server_row.as_ref().unwrap().get()).unwrap();
    assert_eq!(
        row,
        serde_json::json!({"id":"d","title":"one","parent_id":null})
    );
    assert_eq!(w.count("SELECT count(*) FROM sync.bundle_log").await, 1);
}

#[tokio::test]
async fn inserting_with_a_nonzero_base_for_a_missing_row_conflicts() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    let c = conflict(&w, &a, row_json(r#"{"schema":"business","table":"docs","key":{"id":"new"},"op":"INSERT","base_row_version":3,"payload":{}}"#)).await;
    assert_eq!(
        c.message,
        "insert conflict on business.docs new: expected missing row at version 0, got 3"
    );
    assert_eq!(
        (c.details.server_row_version, c.details.server_row_deleted),
        (0, false)
    );
    assert!(c.details.server_row.is_none());
}

#[tokio::test]
async fn a_stale_update_conflicts_and_nothing_is_applied() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    let c = conflict(&w, &a, update("docs", "d", 0, r#"{"title":"two"}"#)).await;
    assert_eq!(
        c.message,
        "update conflict on business.docs d: expected version 1, got 0"
    );
    assert!(c.details.server_row.is_some());
    let title: String = w
        .client()
        .await
        .query_one("SELECT title FROM business.docs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "one");
}

#[tokio::test]
async fn a_stale_delete_conflicts() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    let c = conflict(&w, &a, delete("docs", "d", 7)).await;
    assert_eq!(
        c.message,
        "delete conflict on business.docs d: expected version 1, got 7"
    );
    assert_eq!(c.details.op, Op::Delete);
}

#[tokio::test]
async fn updating_a_deleted_row_conflicts_as_missing_with_a_tombstone() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    w.push(&a, 2, vec![delete("docs", "d", 1)]).await.unwrap();
    let c = match w
        .push(&a, 3, vec![update("docs", "d", 2, "{}")])
        .await
        .unwrap_err()
    {
        PushCommitError::Conflict(c) => *c,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        c.message,
        "update conflict on business.docs d: row does not exist"
    );
    assert_eq!(
        (c.details.server_row_version, c.details.server_row_deleted),
        (2, true)
    );
    assert!(c.details.server_row.is_none());
    let body = PushCommitError::Conflict(Box::new(c)).to_body();
    let wire = oversync_protocol::json::to_wire_string(&body).unwrap();
    assert!(wire.contains(r#""server_row":null"#), "{wire}");
}

#[tokio::test]
async fn updating_a_missing_row_conflicts() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    let c = conflict(&w, &a, update("docs", "ghost", 1, "{}")).await;
    assert_eq!(
        c.message,
        "update conflict on business.docs ghost: row does not exist"
    );
    assert_eq!(c.details.server_row_version, 0);
}

#[tokio::test]
async fn reinserting_a_tombstone_needs_its_version() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    w.push(&a, 2, vec![delete("docs", "d", 1)]).await.unwrap();
    let row = |base: i64| {
        row_json(&format!(
            r#"{{"schema":"business","table":"docs","key":{{"id":"d"}},"op":"INSERT","base_row_version":{base},"payload":{{}}}}"#
        ))
    };
    let err = w.push(&a, 3, vec![row(0)]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("expected base_row_version 2, got 0")
    );
    w.push(&a, 3, vec![row(2)]).await.unwrap();
}

#[tokio::test]
async fn the_first_conflicting_row_in_staged_order_is_reported() {
    let w = World::new().await;
    let a = with_doc(&w).await;
    let err = w
        .push(
            &a,
            2,
            vec![
                insert("docs", "ok", "{}"),
                update("docs", "x", 1, "{}"),
                delete("docs", "d", 9),
            ],
        )
        .await
        .unwrap_err();
    let PushCommitError::Conflict(c) = err else {
        panic!()
    };
    assert_eq!(c.details.key.get("id").map(String::as_str), Some("x"));
    assert_eq!(w.count("SELECT count(*) FROM business.docs").await, 1);
}

// ---- FK graphs and order -----------------------------------------------------------------

#[tokio::test]
async fn children_before_parents_self_references_and_cycles_commit_in_one_bundle() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let committed = w
        .push(
            &a,
            1,
            vec![
                insert("docs", "child", r#"{"parent_id":"root"}"#),
                insert("docs", "root", r#"{"parent_id":"root"}"#),
                insert("cycle_a", "a1", r#"{"b_id":"b1"}"#),
                insert("cycle_b", "b1", r#"{"a_id":"a1"}"#),
                insert(
                    "posts",
                    &uuid(10),
                    &format!(r#"{{"author_id":"{}"}}"#, uuid(1)),
                ),
                insert("users", &uuid(1), r#"{"name":"Ada"}"#),
            ],
        )
        .await
        .unwrap();
    assert_eq!(committed.row_count, 6);
}

#[tokio::test]
async fn deleting_a_parent_cascades_into_the_same_bundle() {
    let w = World::new().await;
    let a = initialized(&w).await;
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
    let committed = w
        .push(&a, 2, vec![delete("users", &uuid(1), 1)])
        .await
        .unwrap();
    assert_eq!(committed.row_count, 2);
    let page = w
        .service
        .committed_bundle_rows(&a, 2, None, 100)
        .await
        .unwrap();
    let tables: Vec<(&str, Op)> = page.rows.iter().map(|r| (r.table.as_str(), r.op)).collect();
    assert_eq!(tables, vec![("users", Op::Delete), ("posts", Op::Delete)]);
}

#[tokio::test]
async fn committed_rows_keep_staged_order_for_mixed_batches() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let mut rows = Vec::new();
    for i in 0..6 {
        rows.push(insert("docs", &format!("d{i}"), r#"{"title":"t"}"#));
    }
    w.push(&a, 1, rows).await.unwrap();
    let staged = vec![
        update("docs", "d3", 1, r#"{"title":"u"}"#),
        insert("docs", "n2", "{}"),
        insert("docs", "n1", "{}"),
        delete("docs", "d0", 1),
        update("docs", "d1", 1, r#"{"title":"u"}"#),
        insert("docs", "n0", r#"{"title":"x"}"#),
        delete("docs", "d5", 1),
        update("docs", "d2", 1, r#"{"title":"v"}"#),
        insert("docs", "n3", "{}"),
    ];
    let expected: Vec<String> = ["d3", "n2", "n1", "d0", "d1", "n0", "d5", "d2", "n3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    w.push(&a, 2, staged).await.unwrap();
    let page = w
        .service
        .committed_bundle_rows(&a, 2, None, 100)
        .await
        .unwrap();
    let keys: Vec<String> = page.rows.iter().map(|r| r.key["id"].clone()).collect();
    assert_eq!(keys, expected);
}

// ---- isolation and concurrency -----------------------------------------------------------

#[tokio::test]
async fn users_with_the_same_keys_never_see_or_change_each_other() {
    let w = World::new().await;
    let alice = initialized(&w).await;
    let bob = actor("bob", "dev-1");
    w.init(&bob).await;
    w.push(&alice, 1, vec![insert("docs", "d", r#"{"title":"alice"}"#)])
        .await
        .unwrap();
    // Bob's insert of the same key is his own row.
    w.push(&bob, 1, vec![insert("docs", "d", r#"{"title":"bob"}"#)])
        .await
        .unwrap();
    // Bob cannot update Alice's version of it (his own is at version 1 too, but his update
    // only ever touches his row).
    w.push(&bob, 2, vec![update("docs", "d", 1, r#"{"title":"bob2"}"#)])
        .await
        .unwrap();
    let titles: Vec<(String, String)> = w
        .client()
        .await
        .query(
            "SELECT _sync_scope_id, title FROM business.docs ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        titles,
        vec![
            ("alice".into(), "alice".into()),
            ("bob".into(), "bob2".into())
        ]
    );
    // Bob deleting a key only Alice has is a conflict for Bob.
    w.push(&alice, 2, vec![insert("docs", "only-alice", "{}")])
        .await
        .unwrap();
    let err = w
        .push(&bob, 3, vec![delete("docs", "only-alice", 2)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row does not exist"));
    let pulled = w.service.pull(&bob, Default::default()).await.unwrap();
    assert!(
        pulled
            .bundles
            .iter()
            .all(|b| b.rows.iter().all(|r| r.key["id"] != "only-alice"))
    );
    let err = w
        .service
        .committed_bundle_rows(&bob, 3, None, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CommittedBundleNotFound);
}

#[tokio::test]
async fn two_sources_pushing_at_once_serialize_without_gaps() {
    let w = World::new().await;
    let a = initialized(&w).await;
    let b = actor("alice", "dev-2");
    let run = |who: oversync_server::Actor, prefix: &'static str| {
        let w = &w;
        async move {
            for n in 1..=5 {
                w.push(&who, n, vec![insert("docs", &format!("{prefix}{n}"), "{}")])
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(run(a.clone(), "a"), run(b, "b"));
    let seqs: Vec<i64> = w
        .client()
        .await
        .query("SELECT bundle_seq FROM sync.bundle_log ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}
