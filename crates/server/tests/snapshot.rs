//! Snapshot sessions (§6.3) and rotated rebuilds (§7.3) against real PostgreSQL.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use oversync_protocol::error::ErrorCode;
use oversync_protocol::op::Op;
use oversync_protocol::wire::{
    PushSessionCreateRequest, SnapshotRow, SnapshotSession, SnapshotSessionCreateRequest,
    SnapshotSourceReplacement, SourceReplacementReason,
};
use oversync_server::{
    Actor, PullRequest, PushCreateError, ServiceConfig, SnapshotChunkError, SnapshotCreateError,
    SnapshotDeleteError, SyncService,
};
use serde_json::Value;

async fn create(w: &World, a: &Actor) -> SnapshotSession {
    w.service.create_snapshot_session(a, None).await.unwrap()
}

/// Every row of a snapshot, paged with `page` rows per chunk.
async fn read_all(
    service: &SyncService,
    a: &Actor,
    s: &SnapshotSession,
    page: i64,
) -> Vec<SnapshotRow> {
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let chunk = service
            .snapshot_chunk(a, &s.snapshot_id, after, page)
            .await
            .unwrap();
        assert_eq!(chunk.next_row_ordinal, after + chunk.rows.len() as i64);
        after = chunk.next_row_ordinal;
        rows.extend(chunk.rows);
        if !chunk.has_more {
            return rows;
        }
    }
}

fn replacement(previous: &str, new: &str, reason: &str) -> SnapshotSessionCreateRequest {
    SnapshotSessionCreateRequest {
        source_replacement: Some(SnapshotSourceReplacement {
            previous_source_id: previous.to_owned(),
            new_source_id: new.to_owned(),
            reason: reason.to_owned(),
        }),
    }
}

async fn seed_users(w: &World, a: &Actor, n: u32) {
    let rows = (1..=n)
        .map(|i| insert("users", &uuid(i), &format!(r#"{{"name":"user {i}"}}"#)))
        .collect();
    w.push(a, 1, rows).await.unwrap();
}

#[tokio::test]
async fn snapshot_of_an_empty_scope_has_no_rows_and_seq_zero() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let s = create(&w, &a).await;
    assert_eq!(
        (s.snapshot_bundle_seq, s.row_count, s.byte_count),
        (0, 0, 0)
    );
    assert!(read_all(&w.service, &a, &s, 10).await.is_empty());
}

#[tokio::test]
async fn snapshot_rows_follow_table_id_then_key_bytes_with_row_versions() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    w.push(
        &a,
        1,
        vec![
            insert("users", &uuid(2), r#"{"name":"b"}"#),
            insert("users", &uuid(1), r#"{"name":"a"}"#),
            insert("docs", "zeta", r#"{"title":"z"}"#),
            insert("docs", "alpha", r#"{"title":"a"}"#),
        ],
    )
    .await
    .unwrap();
    w.push(
        &a,
        2,
        vec![update("users", &uuid(2), 1, r#"{"name":"b2"}"#)],
    )
    .await
    .unwrap();
    let s = create(&w, &a).await;
    assert_eq!((s.snapshot_bundle_seq, s.row_count), (2, 4));
    let rows = read_all(&w.service, &a, &s, 100).await;
    let order: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.table.clone(), r.key["id"].clone(), r.row_version))
        .collect();
    // table_id order is the sorted "schema.table" keys: docs < users.
    assert_eq!(
        order,
        vec![
            ("docs".to_owned(), "alpha".to_owned(), 1),
            ("docs".to_owned(), "zeta".to_owned(), 1),
            ("users".to_owned(), uuid(1), 1),
            ("users".to_owned(), uuid(2), 2),
        ]
    );
}

#[tokio::test]
async fn snapshot_payloads_are_jsonb_text_and_byte_count_sums_them() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    w.service
        .with_sync_bundle(&a, "server:seed", 1, |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO business.users (id, name, email, score) VALUES ($1::text::uuid, 'Jane', 'j@x', 12.50)",
                    &[&uuid(1)],
                )
                .await
            })
        })
        .await
        .unwrap();
    let s = create(&w, &a).await;
    let stored: String = w
        .client()
        .await
        .query_one(
            "SELECT payload_wire::text FROM sync.snapshot_session_rows WHERE row_ordinal = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // PostgreSQL jsonb text: shorter names first, ": " and ", " separators, numbers as stored.
    assert_eq!(
        stored,
        format!(
            r#"{{"id": "{}", "name": "Jane", "email": "j@x", "score": 12.50, "avatar": null}}"#,
            uuid(1)
        )
    );
    assert_eq!(s.byte_count, stored.len() as i64);
}

#[tokio::test]
async fn snapshot_payloads_carry_bytea_values_as_unwrapped_standard_base64() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    // 200 bytes: PostgreSQL's base64 encoder wraps its output at 76 characters.
    let long: Vec<u8> = (0..200_u32).map(|i| (i * 7 % 256) as u8).collect();
    let long_b64 = oversync_protocol::codec::base64_encode(&long);
    w.push(
        &a,
        1,
        vec![
            insert("users", &uuid(1), r#"{"name":"Jane","avatar":"ABEi/w=="}"#),
            insert("users", &uuid(2), r#"{"name":"Joe"}"#),
            insert(
                "users",
                &uuid(3),
                &format!(r#"{{"name":"Long","avatar":"{long_b64}"}}"#),
            ),
            insert("users", &uuid(4), r#"{"name":"Empty","avatar":""}"#),
        ],
    )
    .await
    .unwrap();
    let s = create(&w, &a).await;
    let rows = read_all(&w.service, &a, &s, 10).await;
    // PostgreSQL jsonb text with the bytea member replaced by its standard base64.
    assert_eq!(
        rows[0].payload.get(),
        format!(
            r#"{{"id": "{}", "name": "Jane", "email": null, "score": null, "avatar": "ABEi/w=="}}"#,
            uuid(1)
        )
    );
    assert!(rows[1].payload.get().contains(r#""avatar": null"#));
    let avatar = |i: usize| -> Value {
        serde_json::from_str::<Value>(rows[i].payload.get()).unwrap()["avatar"].clone()
    };
    assert_eq!(avatar(2), Value::String(long_b64.clone()));
    assert_eq!(
        oversync_protocol::codec::base64_decode_exact(avatar(2).as_str().unwrap()).unwrap(),
        long
    );
    assert_eq!(avatar(3), Value::String(String::new()));
    let total: i64 = w
        .client()
        .await
        .query_one(
            "SELECT sum(octet_length(payload_wire::text))::int8 FROM sync.snapshot_session_rows",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(s.byte_count, total);
}

#[tokio::test]
async fn snapshot_never_contains_deleted_rows() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 2).await;
    w.push(&a, 2, vec![delete("users", &uuid(1), 1)])
        .await
        .unwrap();
    let s = create(&w, &a).await;
    let rows = read_all(&w.service, &a, &s, 10).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key["id"], uuid(2));
}

#[tokio::test]
async fn chunk_paging_returns_every_row_exactly_once() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 23).await;
    let s = create(&w, &a).await;
    let rows = read_all(&w.service, &a, &s, 5).await;
    let keys: Vec<String> = rows.iter().map(|r| r.key["id"].clone()).collect();
    let expected: Vec<String> = (1..=23).map(uuid).collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn chunk_page_size_is_clamped_to_the_configured_maximum() {
    let w = World::with_config(ServiceConfig {
        max_rows_per_snapshot_chunk: 3,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 5).await;
    let s = create(&w, &a).await;
    let chunk = w
        .service
        .snapshot_chunk(&a, &s.snapshot_id, 0, 1000)
        .await
        .unwrap();
    assert_eq!(
        (chunk.rows.len(), chunk.next_row_ordinal, chunk.has_more),
        (3, 3, true)
    );
    let last = w
        .service
        .snapshot_chunk(&a, &s.snapshot_id, 3, 1000)
        .await
        .unwrap();
    assert_eq!(
        (last.rows.len(), last.next_row_ordinal, last.has_more),
        (2, 5, false)
    );
    let past = w
        .service
        .snapshot_chunk(&a, &s.snapshot_id, 9, 1000)
        .await
        .unwrap();
    assert_eq!(
        (past.rows.len(), past.next_row_ordinal, past.has_more),
        (0, 9, false)
    );
}

#[tokio::test]
async fn chunk_parameters_are_validated_with_reference_messages() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    for (id, after, max, message) in [
        ("", 0, 1, "snapshot_id must be provided"),
        ("x", -1, 1, "after_row_ordinal must be >= 0"),
        ("x", 0, 0, "max_rows must be > 0"),
    ] {
        let err = w
            .service
            .snapshot_chunk(&a, id, after, max)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::SnapshotChunkInvalid);
        assert_eq!(err.to_string(), message);
    }
}

#[tokio::test]
async fn malformed_snapshot_ids_are_not_found() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let err = w
        .service
        .snapshot_chunk(&a, "not-a-uuid", 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotChunkError::NotFound(ref id) if id == "not-a-uuid"));
    let err = w
        .service
        .delete_snapshot_session(&a, "nope")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SnapshotSessionNotFound);
}

#[tokio::test]
async fn another_users_snapshot_is_forbidden_for_chunks_and_delete() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let b = actor("bob", "dev-9");
    w.init(&a).await;
    let s = create(&w, &a).await;
    let err = w
        .service
        .snapshot_chunk(&b, &s.snapshot_id, 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotChunkError::Forbidden(_)));
    let err = w
        .service
        .delete_snapshot_session(&b, &s.snapshot_id)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotDeleteError::Forbidden(_)));
}

#[tokio::test]
async fn deleted_snapshot_is_not_found_afterwards() {
    let w = World::new().await;
    let a = actor("alice", "dev-2");
    w.init(&a).await;
    let s = create(&w, &a).await;
    w.service
        .delete_snapshot_session(&a, &s.snapshot_id)
        .await
        .unwrap();
    let err = w
        .service
        .snapshot_chunk(&a, &s.snapshot_id, 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotChunkError::NotFound(_)));
}

#[tokio::test]
async fn expired_snapshot_answers_expired_until_a_create_sweeps_it() {
    let w = World::with_config(ServiceConfig {
        snapshot_session_ttl: Duration::from_millis(1),
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let s = create(&w, &a).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let err = w
        .service
        .snapshot_chunk(&a, &s.snapshot_id, 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotChunkError::Expired(_)));
    create(&w, &a).await;
    let err = w
        .service
        .snapshot_chunk(&a, &s.snapshot_id, 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotChunkError::NotFound(_)));
}

#[tokio::test]
async fn chunk_reads_never_update_the_session() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 3).await;
    let s = create(&w, &a).await;
    w.client()
        .await
        .batch_execute(
            "CREATE FUNCTION public.no_update() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'snapshot session updated'; END $$;
             CREATE TRIGGER no_update BEFORE UPDATE ON sync.snapshot_sessions
             FOR EACH ROW EXECUTE FUNCTION public.no_update();",
        )
        .await
        .unwrap();
    assert_eq!(read_all(&w.service, &a, &s, 2).await.len(), 3);
}

#[tokio::test]
async fn row_cap_answers_limit_exceeded_and_stores_nothing() {
    let w = World::with_config(ServiceConfig {
        max_rows_per_snapshot_session: 2,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 3).await;
    let err = w
        .service
        .create_snapshot_session(&a, None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SnapshotCreateError::LimitExceeded {
            dimension: "row_count",
            actual: 3,
            limit: 2
        }
    ));
    assert_eq!(err.code(), ErrorCode::SnapshotSessionLimitExceeded);
    assert_eq!(
        err.to_body().message(),
        "snapshot session row_count 3 exceeds limit 2"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM sync.snapshot_sessions").await,
        0
    );
    assert_eq!(
        w.count("SELECT count(*) FROM sync.snapshot_session_rows")
            .await,
        0
    );
}

#[tokio::test]
async fn byte_cap_answers_limit_exceeded() {
    let w = World::with_config(ServiceConfig {
        max_bytes_per_snapshot_session: 50,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 1).await;
    let err = w
        .service
        .create_snapshot_session(&a, None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SnapshotCreateError::LimitExceeded {
            dimension: "byte_count",
            limit: 50,
            ..
        }
    ));
}

#[tokio::test]
async fn snapshot_fails_closed_when_row_state_disagrees_with_business_rows() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 2).await;
    w.client()
        .await
        .execute("DELETE FROM sync.row_state WHERE bundle_seq = 1 AND key_bytes = uuid_send($1::text::uuid)", &[&uuid(1)])
        .await
        .unwrap();
    let err = w
        .service
        .create_snapshot_session(&a, None)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotCreateError::Internal(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("missing non-deleted sync.row_state")
    );
    assert_eq!(err.to_body().message(), "Failed to create snapshot session");
}

#[tokio::test]
async fn snapshot_fails_closed_when_a_live_row_state_has_no_business_row() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 2).await;
    w.client()
        .await
        .batch_execute(
            "ALTER TABLE business.users DISABLE TRIGGER USER;
             DELETE FROM business.users WHERE name = 'user 2';
             ALTER TABLE business.users ENABLE TRIGGER USER;",
        )
        .await
        .unwrap();
    let err = w
        .service
        .create_snapshot_session(&a, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("missing a live business-table row"),
        "{err}"
    );
}

#[tokio::test]
async fn snapshot_of_an_uninitialized_scope_is_refused() {
    let w = World::new().await;
    let err = w
        .service
        .create_snapshot_session(&actor("nobody", "d"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ScopeUninitialized);
}

#[tokio::test]
async fn live_row_state_scan_can_use_the_partial_index() {
    let w = World::new().await;
    let client = w.client().await;
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT table_id, key_bytes, bundle_seq FROM sync.row_state WHERE user_pk = 1 AND deleted = FALSE",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.join("\n").contains("rs_user_live_snapshot_idx"),
        "{plan:?}"
    );
}

/// The scope's live rows at `seq`, rebuilt from pulled bundles: key → (row_version, payload).
async fn state_at(
    service: &SyncService,
    a: &Actor,
    seq: i64,
) -> BTreeMap<(String, String), (i64, Value)> {
    let mut state = BTreeMap::new();
    if seq == 0 {
        return state;
    }
    let page = service
        .pull(
            a,
            PullRequest {
                after_bundle_seq: 0,
                max_bundles: 5000,
                target_bundle_seq: seq,
            },
        )
        .await
        .unwrap();
    assert!(!page.has_more);
    for bundle in page.bundles {
        for row in bundle.rows {
            let key = (row.table.clone(), row.key["id"].clone());
            match row.op {
                Op::Delete => {
                    state.remove(&key);
                }
                _ => {
                    let payload: Value = serde_json::from_str(row.payload.unwrap().get()).unwrap();
                    state.insert(key, (bundle.bundle_seq, payload));
                }
            }
        }
    }
    state
}

#[tokio::test]
async fn snapshot_equals_business_state_at_its_bundle_seq_while_commits_continue() {
    let w = Arc::new(World::new().await);
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    seed_users(&w, &a, 200).await;
    let writer = {
        let w = Arc::clone(&w);
        let a = a.clone();
        tokio::spawn(async move {
            for n in 1..=40_i64 {
                w.service
                    .with_sync_bundle(&a, "server:writer", n, move |tx| {
                        Box::pin(async move {
                            let target = uuid(u32::try_from(n * 5).unwrap());
                            tx.execute(
                                "UPDATE business.users SET name = 'edit ' || $2 WHERE id = $1::text::uuid",
                                &[&target, &n.to_string()],
                            )
                            .await?;
                            tx.execute(
                                "INSERT INTO business.users (id, name) VALUES ($1::text::uuid, 'new')",
                                &[&uuid(1000 + u32::try_from(n).unwrap())],
                            )
                            .await?;
                            tx.execute(
                                "DELETE FROM business.users WHERE id = $1::text::uuid",
                                &[&uuid(u32::try_from(n * 5 - 1).unwrap())],
                            )
                            .await
                        })
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut snapshots = Vec::new();
    while !writer.is_finished() {
        snapshots.push(create(&w, &a).await);
    }
    writer.await.unwrap();
    snapshots.push(create(&w, &a).await);
    let distinct: std::collections::BTreeSet<i64> =
        snapshots.iter().map(|s| s.snapshot_bundle_seq).collect();
    assert!(distinct.len() >= 2, "{distinct:?}");
    for s in &snapshots {
        let rows = read_all(&w.service, &a, s, 97).await;
        assert_eq!(rows.len() as i64, s.row_count);
        let got: BTreeMap<(String, String), (i64, Value)> = rows
            .into_iter()
            .map(|r| {
                let payload: Value = serde_json::from_str(r.payload.get()).unwrap();
                ((r.table, r.key["id"].clone()), (r.row_version, payload))
            })
            .collect();
        assert_eq!(
            got,
            state_at(&w.service, &a, s.snapshot_bundle_seq).await,
            "at {}",
            s.snapshot_bundle_seq
        );
    }
}

// ---- rotated rebuild (§7.3) -----------------------------------------------------------------

#[tokio::test]
async fn rotation_retires_the_old_source_and_the_new_one_starts_at_one() {
    let w = World::new().await;
    let old = actor("alice", "dev-old");
    let new = actor("alice", "dev-new");
    w.init(&old).await;
    seed_users(&w, &old, 1).await;
    w.service
        .create_snapshot_session(
            &old,
            Some(&replacement("dev-old", "dev-new", "history_pruned")),
        )
        .await
        .unwrap();
    let err = w
        .service
        .create_push_session(
            &old,
            &PushSessionCreateRequest {
                source_bundle_id: 2,
                planned_row_count: 1,
                initialization_id: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PushCreateError::SourceRetired { ref replaced_by, .. } if replaced_by == "dev-new")
    );
    let body = oversync_protocol::json::to_compact_vec(&err.to_body()).unwrap();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"error":"source_retired","message":"source dev-old for user alice was retired and replaced by dev-new","source_id":"dev-old","replaced_by_source_id":"dev-new"}"#
    );
    let committed = w
        .push(&new, 1, vec![insert("users", &uuid(2), "{}")])
        .await
        .unwrap();
    assert_eq!(
        (committed.source_id.as_str(), committed.source_bundle_id),
        ("dev-new", 1)
    );
}

#[tokio::test]
async fn rotation_accepts_every_supported_reason() {
    for (i, reason) in SourceReplacementReason::ALL.iter().enumerate() {
        let w = World::new().await;
        let a = actor("alice", &format!("old-{i}"));
        w.init(&a).await;
        w.service
            .create_snapshot_session(
                &a,
                Some(&replacement(a.source_id(), "new", reason.as_str())),
            )
            .await
            .unwrap();
        let retired: String = w
            .client()
            .await
            .query_one(
                "SELECT retirement_reason FROM sync.source_state WHERE source_id = $1",
                &[&a.source_id()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(retired, reason.as_str());
    }
}

#[tokio::test]
async fn rotation_validation_answers_snapshot_session_invalid() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    for (request, message) in [
        (
            replacement("other", "new", "history_pruned"),
            "previous_source_id must match authenticated source_id",
        ),
        (
            replacement(" dev-1 ", "  ", "history_pruned"),
            "new_source_id is required for source replacement",
        ),
        (
            replacement("dev-1", " dev-1", "history_pruned"),
            "new_source_id must differ from previous_source_id",
        ),
        (
            replacement("dev-1", "new", "bored"),
            "source replacement reason is unsupported",
        ),
    ] {
        let err = w
            .service
            .create_snapshot_session(&a, Some(&request))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::SnapshotSessionInvalid);
        assert_eq!(err.to_string(), message);
    }
}

#[tokio::test]
async fn rotation_retry_with_the_same_replacement_is_idempotent() {
    let w = World::new().await;
    let a = actor("alice", "dev-old");
    w.init(&a).await;
    let request = replacement("dev-old", "dev-new", "source_retired");
    w.service
        .create_snapshot_session(&a, Some(&request))
        .await
        .unwrap();
    w.service
        .create_snapshot_session(&a, Some(&request))
        .await
        .unwrap();
    assert_eq!(
        w.count("SELECT count(*) FROM sync.source_state WHERE source_id = 'dev-new' AND state = 'reserved'").await,
        1
    );
}

#[tokio::test]
async fn rotation_to_a_different_replacement_after_retirement_is_source_retired() {
    let w = World::new().await;
    let a = actor("alice", "dev-old");
    w.init(&a).await;
    w.service
        .create_snapshot_session(
            &a,
            Some(&replacement("dev-old", "dev-new", "history_pruned")),
        )
        .await
        .unwrap();
    let err = w
        .service
        .create_snapshot_session(
            &a,
            Some(&replacement("dev-old", "dev-other", "history_pruned")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SnapshotCreateError::SourceRetired { ref replaced_by, .. } if replaced_by == "dev-new")
    );
}

#[tokio::test]
async fn rotation_to_an_already_known_source_is_replacement_invalid() {
    let w = World::new().await;
    let a = actor("alice", "dev-old");
    let known = actor("alice", "dev-known");
    w.init(&a).await;
    w.push(&known, 1, vec![insert("users", &uuid(1), "{}")])
        .await
        .unwrap();
    let err = w
        .service
        .create_snapshot_session(
            &a,
            Some(&replacement("dev-old", "dev-known", "history_pruned")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SourceReplacementInvalid);
    assert_eq!(
        err.to_string(),
        "replacement source dev-known is already known for user alice"
    );
}

#[tokio::test]
async fn rotation_retry_whose_replacement_was_itself_retired_is_replacement_invalid() {
    let w = World::new().await;
    let a = actor("alice", "a");
    let b = actor("alice", "b");
    w.init(&a).await;
    w.service
        .create_snapshot_session(&a, Some(&replacement("a", "b", "history_pruned")))
        .await
        .unwrap();
    w.service
        .create_snapshot_session(&b, Some(&replacement("b", "c", "history_pruned")))
        .await
        .unwrap();
    let err = w
        .service
        .create_snapshot_session(&a, Some(&replacement("a", "b", "history_pruned")))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "replacement source b is not available for rotated rebuild"
    );
}

#[tokio::test]
async fn rotation_is_rolled_back_when_the_snapshot_trips_a_cap() {
    let w = World::with_config(ServiceConfig {
        max_rows_per_snapshot_session: 1,
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-old");
    w.init(&a).await;
    seed_users(&w, &a, 2).await;
    let err = w
        .service
        .create_snapshot_session(
            &a,
            Some(&replacement("dev-old", "dev-new", "history_pruned")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SnapshotSessionLimitExceeded);
    assert_eq!(
        w.count("SELECT count(*) FROM sync.source_state WHERE state <> 'active'")
            .await,
        0
    );
}

#[tokio::test]
async fn keep_source_snapshot_is_allowed_for_a_retired_source() {
    let w = World::new().await;
    let a = actor("alice", "dev-old");
    w.init(&a).await;
    w.service
        .create_snapshot_session(
            &a,
            Some(&replacement("dev-old", "dev-new", "history_pruned")),
        )
        .await
        .unwrap();
    w.service
        .create_snapshot_session(&a, Some(&SnapshotSessionCreateRequest::default()))
        .await
        .unwrap();
}
