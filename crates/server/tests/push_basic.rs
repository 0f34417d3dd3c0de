//! Push sessions end to end: create, chunk, commit, replay, and the committed bundle's
//! shape, hash and storage.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::*;
use oversync_protocol::wire::{PushSessionCreateRequest, PushSessionStatus};

#[tokio::test]
async fn committing_a_push_produces_bundle_one_with_every_row() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let committed = w
        .push(
            &a,
            1,
            vec![
                insert("users", &uuid(1), r#"{"name":"Ada","email":"a@x.io"}"#),
                insert("docs", "d1", r#"{"title":"T"}"#),
            ],
        )
        .await
        .unwrap();
    assert_eq!(committed.bundle_seq, 1);
    assert_eq!(committed.row_count, 2);
    assert_eq!(committed.source_id, "dev-1");
    assert_eq!(committed.bundle_hash.len(), 64);
    assert_eq!(
        w.count("SELECT count(*) FROM business.users WHERE _sync_scope_id = 'alice'")
            .await,
        1
    );
    assert_eq!(
        w.count("SELECT count(*) FROM sync.bundle_capture_stage")
            .await,
        0
    );
    assert_eq!(w.count("SELECT count(*) FROM sync.push_sessions").await, 0);
}

#[tokio::test]
async fn replaying_a_committed_tuple_answers_the_identical_bundle() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let committed = w
        .push(&a, 1, vec![insert("docs", "d1", r#"{"title":"T"}"#)])
        .await
        .unwrap();
    let replay = w
        .service
        .create_push_session(
            &a,
            &PushSessionCreateRequest {
                source_bundle_id: 1,
                planned_row_count: 99,
                initialization_id: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(replay.status, PushSessionStatus::AlreadyCommitted);
    assert_eq!(replay.bundle_seq, committed.bundle_seq);
    assert_eq!(replay.bundle_hash, committed.bundle_hash);
    assert_eq!(replay.row_count, committed.row_count);
    assert_eq!(replay.source_bundle_id, 1);
    assert!(replay.push_id.is_empty());
    let status = w.service.status().await.unwrap();
    assert_eq!(status.accepted_push_replay_count, 1);
}

#[tokio::test]
async fn capture_stage_foreign_keys_are_deferred_on_a_fresh_layout() {
    let w = World::new().await;
    let rows = w
        .client()
        .await
        .query(
            "SELECT conname::text, condeferrable, condeferred FROM pg_constraint
             WHERE conrelid = 'sync.bundle_capture_stage'::regclass AND contype = 'f'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("bundle_capture_stage_table_id_fkey".to_owned(), true, true),
            ("bundle_capture_stage_user_pk_fkey".to_owned(), true, true),
        ]
    );
}

#[tokio::test]
async fn a_layout_whose_capture_stage_foreign_keys_are_immediate_still_commits() {
    // The reference creates these two constraints immediate; a database it bootstrapped
    // keeps them, and every write must behave the same.
    let w = World::new().await;
    w.client()
        .await
        .batch_execute(
            "ALTER TABLE sync.bundle_capture_stage
                 ALTER CONSTRAINT bundle_capture_stage_user_pk_fkey NOT DEFERRABLE;
             ALTER TABLE sync.bundle_capture_stage
                 ALTER CONSTRAINT bundle_capture_stage_table_id_fkey NOT DEFERRABLE;",
        )
        .await
        .unwrap();
    let a = actor("bob", "dev-2");
    w.init(&a).await;
    let rows = vec![insert("docs", "d9", r#"{"title":"immediate"}"#)];
    assert_eq!(w.push(&a, 1, rows).await.unwrap().row_count, 1);
    assert_eq!(
        w.count("SELECT count(*) FROM sync.bundle_capture_stage")
            .await,
        0
    );
}
