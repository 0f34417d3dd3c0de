//! Retention and pruning (§6.4) end to end, recovery by snapshot rebuild, and the background
//! sweeper of expired sessions (§13 item 16).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use oversync_protocol::error::ErrorCode;
use oversync_protocol::wire::PushSessionCreateRequest;
use oversync_server::{PullRequest, ServiceConfig, SyncService};

fn after(seq: i64) -> PullRequest {
    PullRequest {
        after_bundle_seq: seq,
        max_bundles: 1000,
        target_bundle_seq: 0,
    }
}

#[tokio::test]
async fn floor_advances_at_most_one_batch_per_commit_after_the_window_shrinks() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    for n in 1..=6 {
        w.push(&a, n, vec![insert("docs", &format!("d{n}"), "{}")])
            .await
            .unwrap();
    }
    let narrow = SyncService::new(
        pool(&w.db),
        ServiceConfig {
            registered_tables: business_tables(),
            retained_bundles_per_user: 1,
            retention_prune_batch_size: 2,
            ..ServiceConfig::default()
        },
    )
    .unwrap();
    narrow.bootstrap().await.unwrap();
    let floor = || w.count("SELECT retained_bundle_floor FROM sync.user_state");
    let mut floors = Vec::new();
    for n in 7..=9 {
        narrow
            .with_sync_bundle(&a, "dev-1", n, move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO business.docs (id) VALUES ($1)",
                        &[&format!("d{n}")],
                    )
                    .await
                })
            })
            .await
            .unwrap();
        floors.push(floor().await);
    }
    assert_eq!(floors, vec![2, 4, 6]);
    assert_eq!(
        w.count("SELECT min(bundle_seq) FROM sync.bundle_log").await,
        7
    );
}

#[tokio::test]
async fn below_the_floor_pull_fetch_and_push_create_answer_history_pruned() {
    let w = World::with_config(ServiceConfig {
        retained_bundles_per_user: 2,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    for n in 1..=5 {
        w.push(&a, n, vec![insert("docs", &format!("d{n}"), "{}")])
            .await
            .unwrap();
    }
    let pull = w.service.pull(&a, after(1)).await.unwrap_err();
    assert_eq!(pull.code(), ErrorCode::HistoryPruned);
    let fetch = w
        .service
        .committed_bundle_rows(&a, 3, None, 10)
        .await
        .unwrap_err();
    assert_eq!(fetch.code(), ErrorCode::HistoryPruned);
    let create = w
        .service
        .create_push_session(
            &a,
            &PushSessionCreateRequest {
                source_bundle_id: 2,
                planned_row_count: 1,
                initialization_id: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(create.code(), ErrorCode::HistoryPruned);
}

#[tokio::test]
async fn rebuilding_from_a_snapshot_then_pulling_yields_everything_after_it() {
    let w = World::with_config(ServiceConfig {
        retained_bundles_per_user: 3,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    let other = actor("alice", "dev-2");
    w.init(&a).await;
    for n in 1..=5 {
        w.push(&a, n, vec![insert("docs", &format!("d{n}"), "{}")])
            .await
            .unwrap();
    }
    assert!(w.service.pull(&a, after(1)).await.is_err());
    let snapshot = w.service.create_snapshot_session(&a, None).await.unwrap();
    assert_eq!(snapshot.snapshot_bundle_seq, 5);
    let rows = w
        .service
        .snapshot_chunk(&a, &snapshot.snapshot_id, 0, 100)
        .await
        .unwrap();
    let mut ids: Vec<String> = rows.rows.iter().map(|r| r.key["id"].clone()).collect();
    for n in 1..=2 {
        w.push(&other, n, vec![insert("docs", &format!("e{n}"), "{}")])
            .await
            .unwrap();
    }
    let pulled = w
        .service
        .pull(&a, after(snapshot.snapshot_bundle_seq))
        .await
        .unwrap();
    let seqs: Vec<i64> = pulled.bundles.iter().map(|b| b.bundle_seq).collect();
    assert_eq!(seqs, vec![6, 7]);
    ids.extend(
        pulled
            .bundles
            .iter()
            .flat_map(|b| b.rows.iter().map(|r| r.key["id"].clone())),
    );
    ids.sort();
    let expected: Vec<String> = ["d1", "d2", "d3", "d4", "d5", "e1", "e2"]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_snapshot_stays_readable_after_history_is_pruned_past_it() {
    let w = World::with_config(ServiceConfig {
        retained_bundles_per_user: 1,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    w.push(&a, 1, vec![insert("docs", "d1", "{}")])
        .await
        .unwrap();
    let snapshot = w.service.create_snapshot_session(&a, None).await.unwrap();
    for n in 2..=4 {
        w.push(&a, n, vec![insert("docs", &format!("d{n}"), "{}")])
            .await
            .unwrap();
    }
    let chunk = w
        .service
        .snapshot_chunk(&a, &snapshot.snapshot_id, 0, 10)
        .await
        .unwrap();
    assert_eq!(chunk.rows.len(), 1);
}

#[tokio::test]
async fn background_sweeper_deletes_expired_sessions_and_stops_on_close() {
    let w = World::with_config(ServiceConfig {
        push_session_ttl: Duration::from_millis(1),
        snapshot_session_ttl: Duration::from_millis(1),
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    w.service
        .create_push_session(
            &a,
            &PushSessionCreateRequest {
                source_bundle_id: 1,
                planned_row_count: 1,
                initialization_id: String::new(),
            },
        )
        .await
        .unwrap();
    w.service.create_snapshot_session(&a, None).await.unwrap();
    let World { db, service } = w;
    let service = Arc::new(service);
    let sweeper = service.spawn_sweeper(Duration::from_millis(20));
    let client = db.connect().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM sync.push_sessions) + (SELECT count(*) FROM sync.snapshot_sessions)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} sessions left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.close(Duration::from_secs(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), sweeper)
        .await
        .unwrap()
        .unwrap();
}
