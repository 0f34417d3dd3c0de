//! Pull and committed-bundle fetch: paging, frozen ceilings, retained floor and
//! `history_pruned`, and the bundle hash recomputed from served rows.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::collections::BTreeMap;

use common::*;
use oversync_protocol::error::ErrorCode;
use oversync_protocol::hash::{HashRow, bundle_digest};
use oversync_protocol::wire::{BundleRow, ConnectRequest};
use oversync_server::{PullRequest, ServiceConfig};

fn digest(rows: &[BundleRow], seq: i64) -> String {
    let keys: Vec<BTreeMap<String, String>> = rows.iter().map(|r| r.key.clone()).collect();
    bundle_digest(rows.iter().zip(&keys).map(|(r, key)| HashRow {
        schema: &r.schema,
        table: &r.table,
        key,
        op: r.op,
        row_version: seq,
        payload: r.payload.as_ref().map(|p| p.get().as_bytes()),
    }))
    .unwrap()
    .hash
    .to_hex()
}

fn after(after_bundle_seq: i64, max_bundles: i64, target_bundle_seq: i64) -> PullRequest {
    PullRequest {
        after_bundle_seq,
        max_bundles,
        target_bundle_seq,
    }
}

#[tokio::test]
async fn the_served_rows_hash_to_the_committed_bundle_hash() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let committed = w
        .push(
            &a,
            1,
            vec![
                insert(
                    "users",
                    &uuid(1),
                    r#"{"name":"Ada <admin>","avatar":"ABEi/w==","score":12.50,"email":null}"#,
                ),
                insert("docs", "d", r#"{"title":"big 123456789012345678901"}"#),
            ],
        )
        .await
        .unwrap();
    w.push(&a, 2, vec![delete("docs", "d", 1)]).await.unwrap();
    let page = w
        .service
        .committed_bundle_rows(&a, 1, None, 100)
        .await
        .unwrap();
    assert_eq!(digest(&page.rows, 1), committed.bundle_hash);
    assert_eq!(page.bundle_hash, committed.bundle_hash);
    let pulled = w.service.pull(&a, after(0, 0, 0)).await.unwrap();
    assert_eq!(pulled.bundles.len(), 2);
    for bundle in &pulled.bundles {
        assert_eq!(digest(&bundle.rows, bundle.bundle_seq), bundle.bundle_hash);
    }
    // Payload wire form: bytea as base64, scope column absent, keys sorted.
    let user = page.rows.iter().find(|r| r.table == "users").unwrap();
    assert_eq!(
        user.payload.as_ref().unwrap().get(),
        format!(
            r#"{{"avatar":"ABEi/w==","email":null,"id":"{}","name":"Ada \u003cadmin\u003e","score":12.5}}"#,
            uuid(1)
        )
    );
    let avatar: Vec<u8> = w
        .client()
        .await
        .query_one("SELECT avatar FROM business.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(avatar, vec![0x00, 0x11, 0x22, 0xff]);
}

#[tokio::test]
async fn exact_numbers_are_stored_while_the_hash_uses_binary64() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let committed = w
        .push(
            &a,
            1,
            vec![insert(
                "users",
                &uuid(1),
                r#"{"score":123456789012345678901234567890}"#,
            )],
        )
        .await
        .unwrap();
    let stored: String = w
        .client()
        .await
        .query_one("SELECT score::text FROM business.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "123456789012345678901234567890");
    let page = w
        .service
        .committed_bundle_rows(&a, 1, None, 10)
        .await
        .unwrap();
    assert!(
        page.rows[0]
            .payload
            .as_ref()
            .unwrap()
            .get()
            .contains("123456789012345678901234567890")
    );
    assert_eq!(digest(&page.rows, 1), committed.bundle_hash);
}

#[tokio::test]
async fn committed_rows_page_with_zero_based_cursors() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let rows = (0..5)
        .map(|i| insert("docs", &format!("d{i}"), "{}"))
        .collect();
    w.push(&a, 1, rows).await.unwrap();
    let first = w
        .service
        .committed_bundle_rows(&a, 1, None, 2)
        .await
        .unwrap();
    assert_eq!(
        (first.rows.len(), first.next_row_ordinal, first.has_more),
        (2, 1, true)
    );
    let second = w
        .service
        .committed_bundle_rows(&a, 1, Some(1), 2)
        .await
        .unwrap();
    assert_eq!(
        (
            second.rows[0].key["id"].as_str(),
            second.next_row_ordinal,
            second.has_more
        ),
        ("d2", 3, true)
    );
    let last = w
        .service
        .committed_bundle_rows(&a, 1, Some(3), 2)
        .await
        .unwrap();
    assert_eq!(
        (last.rows.len(), last.next_row_ordinal, last.has_more),
        (1, 4, false)
    );
    let beyond = w
        .service
        .committed_bundle_rows(&a, 1, Some(9), 2)
        .await
        .unwrap();
    assert_eq!(
        (beyond.rows.len(), beyond.next_row_ordinal, beyond.has_more),
        (0, 9, false)
    );
    assert_eq!(beyond.row_count, 5);
}

#[tokio::test]
async fn committed_fetch_validates_its_parameters() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    for (seq, after_ordinal, max, message) in [
        (0, None, 1, "bundle_seq must be > 0"),
        (1, Some(-1), 1, "after_row_ordinal must be >= 0"),
        (1, None, 0, "max_rows must be > 0"),
    ] {
        let err = w
            .service
            .committed_bundle_rows(&a, seq, after_ordinal, max)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::CommittedBundleChunkInvalid);
        assert_eq!(err.code().http_status(), 400);
        assert_eq!(err.to_string(), message);
    }
}

#[tokio::test]
async fn committed_fetch_of_an_unknown_user_or_bundle_is_not_found() {
    let w = World::new().await;
    let err = w
        .service
        .committed_bundle_rows(&actor("nobody", "d"), 1, None, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CommittedBundleNotFound);
    assert_eq!(err.code().http_status(), 404);
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let err = w
        .service
        .committed_bundle_rows(&a, 3, None, 10)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "committed bundle 3 was not found");
}

#[tokio::test]
async fn retention_prunes_old_bundles_but_keeps_row_state() {
    let w = World::with_config(ServiceConfig {
        retained_bundles_per_user: 1,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    for n in 1..=3 {
        w.push(&a, n, vec![insert("docs", &format!("d{n}"), "{}")])
            .await
            .unwrap();
    }
    assert_eq!(
        w.count("SELECT retained_bundle_floor FROM sync.user_state")
            .await,
        2
    );
    assert_eq!(w.count("SELECT count(*) FROM sync.bundle_log").await, 1);
    assert_eq!(w.count("SELECT count(*) FROM sync.bundle_rows").await, 1);
    assert_eq!(
        w.count("SELECT count(*) FROM sync.row_state WHERE NOT deleted")
            .await,
        3
    );
    let err = w
        .service
        .committed_bundle_rows(&a, 2, None, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::HistoryPruned);
    assert_eq!(
        err.to_string(),
        "requested checkpoint 2 is older than retained history floor 2 for user alice"
    );
    let err = w.service.pull(&a, after(1, 0, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::HistoryPruned);
    assert_eq!(err.code().http_status(), 409);
    // Only pull counts history_pruned.
    assert_eq!(
        w.service.status().await.unwrap().history_pruned_error_count,
        1
    );
    // A checkpoint equal to the floor is refused too (§13 item 11, kept for compatibility).
    assert!(w.service.pull(&a, after(2, 0, 0)).await.is_err());
}

#[tokio::test]
async fn pull_from_checkpoint_zero_below_a_pruned_floor_answers_history_pruned_instead_of_skipping_bundles()
 {
    // §13 item 10, found by the convergence suite: a device that attached to an empty scope
    // and stayed offline while history was pruned pulled from 0, got only the retained
    // bundles and never learned about the pruned ones.
    let w = World::with_config(ServiceConfig {
        retained_bundles_per_user: 1,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let empty = w.service.pull(&a, after(0, 0, 0)).await.unwrap();
    assert_eq!((empty.stable_bundle_seq, empty.bundles.len()), (0, 0));
    for n in 1..=3 {
        w.push(&a, n, vec![insert("docs", &format!("d{n}"), "{}")])
            .await
            .unwrap();
    }
    let err = w.service.pull(&a, after(0, 0, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::HistoryPruned);
    assert_eq!(
        err.to_string(),
        "requested checkpoint 0 is older than retained history floor 2 for user alice"
    );
    // A retained checkpoint still pulls.
    let pulled = w.service.pull(&a, after(3, 0, 0)).await.unwrap();
    assert_eq!((pulled.stable_bundle_seq, pulled.bundles.len()), (3, 0));
}

#[tokio::test]
async fn pull_freezes_the_ceiling_across_pages() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    for n in 1..=3 {
        w.push(&a, n, vec![insert("docs", &format!("d{n}"), "{}")])
            .await
            .unwrap();
    }
    let first = w.service.pull(&a, after(0, 2, 0)).await.unwrap();
    assert_eq!(
        (first.stable_bundle_seq, first.bundles.len(), first.has_more),
        (3, 2, true)
    );
    w.push(&a, 4, vec![insert("docs", "d4", "{}")])
        .await
        .unwrap();
    let next = w.service.pull(&a, after(2, 2, 3)).await.unwrap();
    assert_eq!(
        (next.stable_bundle_seq, next.bundles.len(), next.has_more),
        (3, 1, false)
    );
    let done = w.service.pull(&a, after(3, 2, 3)).await.unwrap();
    assert!(done.bundles.is_empty());
}

#[tokio::test]
async fn pull_gates_on_the_scope_state() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let err = w.service.pull(&a, after(0, 0, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ScopeUninitialized);
    w.service
        .connect(
            &actor("alice", "dev-2"),
            Some(&ConnectRequest {
                has_local_pending_rows: true,
            }),
        )
        .await
        .unwrap();
    let err = w.service.pull(&a, after(0, 0, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ScopeInitializing);
    assert_eq!(err.code().http_status(), 409);
    assert!(
        err.to_string()
            .starts_with("sync scope for user alice is initializing until ")
    );
}

#[tokio::test]
async fn pull_rejects_negative_parameters() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let err = w.service.pull(&a, after(-1, 0, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert_eq!(err.code().http_status(), 400);
}

#[tokio::test]
async fn pull_reports_its_stages() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let w = World::with_config(ServiceConfig {
        // Every operation reports stages now; this test pins pull's (§10.1).
        stage_metrics: Some(oversync_server::StageMetrics(Arc::new(move |t| {
            if t.operation == "pull" {
                sink.lock().unwrap().push(t.stage);
            }
        }))),
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    w.push(&a, 1, vec![insert("docs", "d", "{}")])
        .await
        .unwrap();
    w.service.pull(&a, after(0, 0, 0)).await.unwrap();
    let mut stages = seen.lock().unwrap().clone();
    stages.sort_unstable();
    assert_eq!(
        stages,
        [
            "list_bundle_seqs",
            "load_bundles",
            "resolve_stable_bundle_seq",
            "retained_floor_check",
            "total",
            "transaction"
        ]
    );
}
