//! Fixes of the client chapter's §12 notes that are not about conflicts (those live in
//! `conflicts.rs`): wedges (A1, A4), unverified server data (C11) and the server's advertised
//! limits (C8). Each test is named for the bug it prevents. The server is a scripted
//! transport returning constructed protocol responses: these pin the engine's state
//! transitions, they are not end-to-end tests.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::collections::BTreeMap;

use oversync_protocol::op::Op;
use oversync_protocol::wire::*;
use oversync_sqlite::{Client, PullError, PushError, PushOutcome, RemoteOutcome};
use serde_json::value::RawValue;
use support::*;

fn user_row(schema: &str, id: &str, name: &str, version: i64) -> BundleRow {
    BundleRow {
        schema: schema.to_owned(),
        table: "users".to_owned(),
        key: BTreeMap::from([("id".to_owned(), id.to_owned())]),
        op: Op::Insert,
        row_version: version,
        payload: Some(
            RawValue::from_string(format!(r#"{{"id":"{id}","name":"{name}"}}"#)).unwrap(),
        ),
    }
}

fn pull_of(bundles: Vec<Bundle>) -> Reply {
    Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: bundles.last().map_or(0, |b| b.bundle_seq),
        bundles,
        has_more: false,
    }))
}

async fn one(f: &Fixture, sql: &'static str) -> String {
    let rows: Vec<String> = query(&f.client, sql).await;
    rows.join(";")
}

async fn users(f: &Fixture) -> String {
    one(
        f,
        "SELECT COALESCE(group_concat(id || '=' || name, ','), '') FROM (SELECT * FROM users ORDER BY id)",
    )
    .await
}

// --- C11: verify what the server sends -------------------------------------------------

#[tokio::test]
async fn pulled_bundle_whose_hash_does_not_match_its_rows_is_rejected_before_anything_is_applied() {
    let f = attached().await;
    let good = bundle(1, vec![user_row("business", "u1", "one", 1)]);
    let mut forged = bundle(2, vec![user_row("business", "u2", "two", 2)]);
    forged.rows[0] = user_row("business", "u2", "forged", 2);
    f.transport.push(pull_of(vec![good, forged]));
    let err = f.client.pull_to_stable().await.unwrap_err();
    assert!(
        matches!(&err, PullError::Protocol(p) if p.message.contains("hash mismatch")),
        "{err:?}"
    );
    assert_eq!(users(&f).await, "");
    assert_eq!(f.client.last_bundle_seq_seen().await.unwrap(), 0);
}

#[tokio::test]
async fn pulled_bundle_whose_row_count_does_not_match_its_rows_is_rejected() {
    let f = attached().await;
    let mut short = bundle(1, vec![user_row("business", "u1", "one", 1)]);
    short.row_count = 2;
    f.transport.push(pull_of(vec![short]));
    let err = f.client.pull_to_stable().await.unwrap_err();
    assert!(
        matches!(&err, PullError::Protocol(p) if p.message.contains("row_count")),
        "{err:?}"
    );
    assert_eq!(users(&f).await, "");
}

#[tokio::test]
async fn pulled_bundle_without_row_count_and_hash_is_still_applied() {
    // Both members are omit-if-empty on the wire; their absence is not an error.
    let f = attached().await;
    let mut bare = bundle(1, vec![user_row("business", "u1", "one", 1)]);
    bare.row_count = 0;
    bare.bundle_hash.clear();
    f.transport.push(pull_of(vec![bare]));
    let report = f.client.pull_to_stable().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedIncremental);
    assert_eq!(users(&f).await, "u1=one");
}

#[tokio::test]
async fn pulled_row_of_another_schema_is_rejected_not_applied_to_the_configured_one() {
    let f = attached().await;
    f.transport.push(pull_of(vec![bundle(
        1,
        vec![user_row("elsewhere", "u1", "one", 1)],
    )]));
    let err = f.client.pull_to_stable().await.unwrap_err();
    assert!(
        matches!(&err, PullError::Protocol(p) if p.message.contains("schema")),
        "{err:?}"
    );
    assert_eq!(users(&f).await, "");
    assert_eq!(f.client.last_bundle_seq_seen().await.unwrap(), 0);
}

#[tokio::test]
async fn commit_response_for_another_source_bundle_id_is_rejected_and_keeps_the_outbox() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    let source = f.client.source_info().await.unwrap().current_source_id;
    f.transport.push(Reply::Staging);
    f.transport.push(Reply::ChunkOk);
    f.transport
        .push(Reply::Commit(Ok(PushSessionCommitResponse {
            bundle_seq: 1,
            source_id: source,
            source_bundle_id: 2,
            row_count: 1,
            bundle_hash: "ab".repeat(32),
        })));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(matches!(err, PushError::Protocol(_)), "{err:?}");
    assert_eq!(
        one(&f, "SELECT state FROM _sync_outbox_bundle").await,
        "prepared"
    );
}

// --- A1: an interrupted rebuild plus new writes must not wedge the client ----------------

#[tokio::test]
async fn interrupted_rebuild_followed_by_local_writes_is_not_a_dead_end() {
    let f = attached().await;
    f.transport.push(Reply::Pull(Err(status_error(
        "pull",
        409,
        "history_pruned",
    ))));
    f.transport
        .push(Reply::Snapshot(Err(network_error("snapshot"))));
    assert!(matches!(
        f.client.pull_to_stable().await,
        Err(PullError::Snapshot(_))
    ));
    assert!(f.client.source_info().await.unwrap().rebuild_required);
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;

    // The reference refused this push (RebuildRequired) and the rebuild (dirty rows).
    f.transport.push_ok(1);
    let pushed = f.client.push_pending().await.unwrap();
    assert_eq!(pushed.outcome, PushOutcome::Committed);
    let (session, chunk) = empty_snapshot(1);
    f.transport.push(Reply::Snapshot(Ok(session)));
    f.transport.push(Reply::SnapshotChunk(Ok(chunk)));
    let rebuilt = f.client.rebuild().await.unwrap();
    assert_eq!(rebuilt.outcome, RemoteOutcome::AppliedSnapshot);
    assert!(!f.client.source_info().await.unwrap().rebuild_required);
}

// --- A4: source recovery with writes made during the push --------------------------------

/// Freezes `users` changes, lets the application write `after_freeze`, then has the server
/// answer the push with `source_sequence_out_of_order`.
async fn recovering_with(f: &Fixture, after_freeze: &'static str) {
    f.transport
        .push(Reply::Create(Err(network_error("create"))));
    assert!(f.client.push_pending().await.is_err());
    exec(&f.client, after_freeze).await;
    f.transport.push(Reply::Create(Err(status_error(
        "create",
        409,
        "source_sequence_out_of_order",
    ))));
    assert!(matches!(
        f.client.push_pending().await,
        Err(PushError::SourceRecoveryRequired { .. })
    ));
}

async fn rotated_rebuild(f: &Fixture) {
    let (session, chunk) = empty_snapshot(3);
    f.transport.push(Reply::Snapshot(Ok(session)));
    f.transport.push(Reply::SnapshotChunk(Ok(chunk)));
    let report = f.client.rebuild().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedSnapshot);
}

#[tokio::test]
async fn source_recovery_entered_with_writes_made_during_the_push_can_be_left_by_rebuild() {
    let f = attached().await;
    let old_source = f.client.source_info().await.unwrap().current_source_id;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    recovering_with(&f, "INSERT INTO users VALUES ('u2', 'Two');").await;

    // The reference refused this rebuild (DirtyStateRejected) while guards blocked writes.
    rotated_rebuild(&f).await;
    let info = f.client.source_info().await.unwrap();
    assert!(!info.source_recovery_required && !info.rebuild_required);
    assert_ne!(info.current_source_id, old_source);
    assert_eq!(users(&f).await, "u1=Ada,u2=Two");
    assert_eq!(
        one(
            &f,
            "SELECT key_json || ' ' || op || ' ' || source_bundle_id FROM _sync_outbox_rows"
        )
        .await,
        r#"{"id":"u1"} INSERT 1"#
    );
    assert_eq!(
        one(
            &f,
            "SELECT key_json || ' ' || op || ' ' || base_row_version || ' ' || payload FROM _sync_dirty_rows"
        )
        .await,
        r#"{"id":"u2"} INSERT 0 {"id":"u2","name":"Two"}"#
    );
}

#[tokio::test]
async fn rotated_rebuild_keeps_a_newer_write_over_the_preserved_outbox_row_of_the_same_key() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    recovering_with(&f, "UPDATE users SET name = 'Newer' WHERE id = 'u1';").await;
    rotated_rebuild(&f).await;
    assert_eq!(users(&f).await, "u1=Newer");
    assert_eq!(
        one(&f, "SELECT payload FROM _sync_dirty_rows").await,
        r#"{"id":"u1","name":"Newer"}"#
    );
}

// --- C8: the server's advertised limits ----------------------------------------------------

/// Opens and attaches against a server advertising `limits`.
async fn attached_to(limits: BundleLimits) -> Fixture {
    let f = fixture().await;
    f.client.open().await.unwrap();
    let mut capabilities = capabilities();
    capabilities.bundle_limits = limits;
    f.transport.push(Reply::Capabilities(Ok(capabilities)));
    f.transport
        .push(Reply::Connect(Ok(ConnectResponse::initialize_empty())));
    f.client.attach("user-1").await.unwrap();
    f
}

#[tokio::test]
async fn push_chunks_never_exceed_the_servers_advertised_chunk_limit() {
    let f = attached_to(BundleLimits {
        max_rows_per_push_chunk: 2,
        ..BundleLimits::default()
    })
    .await;
    exec(
        &f.client,
        "INSERT INTO users VALUES ('u1', 'a'), ('u2', 'b'), ('u3', 'c');",
    )
    .await;
    f.transport.push(Reply::Staging);
    f.transport.push(Reply::ChunkOk);
    f.transport.push(Reply::ChunkOk);
    f.transport.push(Reply::CommitOk(1));
    f.client.push_pending().await.unwrap();
    let sizes: Vec<usize> = f
        .transport
        .chunks
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.rows.len())
        .collect();
    assert_eq!(sizes, [2, 1]);
    assert_eq!(*f.transport.page_sizes.lock().unwrap(), [1000]);
}

#[tokio::test]
async fn pull_max_bundles_never_exceeds_the_servers_advertised_limit() {
    let f = attached_to(BundleLimits {
        max_bundles_per_pull: 5,
        ..BundleLimits::default()
    })
    .await;
    f.transport.push(pull_of(Vec::new()));
    f.client.pull_to_stable().await.unwrap();
    assert_eq!(*f.transport.pulls.lock().unwrap(), [(0, 5, 0)]);
}

#[tokio::test]
async fn committed_and_snapshot_pages_are_clamped_to_the_servers_advertised_limits() {
    let f = attached_to(BundleLimits {
        max_rows_per_committed_bundle_chunk: 7,
        max_rows_per_snapshot_chunk: 9,
        ..BundleLimits::default()
    })
    .await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'a');").await;
    f.transport.push_ok(1);
    f.client.push_pending().await.unwrap();
    let (session, chunk) = empty_snapshot(1);
    f.transport.push(Reply::Snapshot(Ok(session)));
    f.transport.push(Reply::SnapshotChunk(Ok(chunk)));
    f.client.rebuild().await.unwrap();
    assert_eq!(*f.transport.page_sizes.lock().unwrap(), [7, 9]);
}

#[tokio::test]
async fn resumed_session_reads_the_servers_limits_before_its_first_transfer() {
    // A resumed attach makes no request, so without this the configured sizes would be
    // sent to a server that rejects them (max_bundles above its limit → 400 on every pull).
    let f = attached().await;
    let path = f.dir.path().join("app.db");
    f.client.close().await;
    drop(f.client);
    let client = Client::new(
        rusqlite::Connection::open(&path).unwrap(),
        std::sync::Arc::clone(&f.transport),
        config(),
    )
    .await
    .unwrap();
    client.open().await.unwrap();
    client.attach("user-1").await.unwrap();
    let mut advertised = capabilities();
    advertised.bundle_limits.max_bundles_per_pull = 3;
    f.transport.push(Reply::Capabilities(Ok(advertised)));
    f.transport.push(pull_of(Vec::new()));
    f.transport.push(pull_of(Vec::new()));
    client.pull_to_stable().await.unwrap();
    client.pull_to_stable().await.unwrap();
    assert_eq!(*f.transport.pulls.lock().unwrap(), [(0, 3, 0), (0, 3, 0)]);
    let calls = f.transport.calls();
    assert_eq!(calls[calls.len() - 3..], ["capabilities", "pull", "pull"]);
}
