//! Push engine state transitions, driven by a scripted transport that returns constructed
//! protocol responses. These pin what is durable between steps (freeze, commit, replay) and
//! how a crash or lost response is recovered; they are not end-to-end tests.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::collections::BTreeMap;

use oversync_protocol::hash::{self, RequestHashRow};
use oversync_protocol::op::Op;
use oversync_protocol::wire::*;
use oversync_sqlite::{Authority, PushError, PushOutcome};
use support::*;

async fn source(f: &Fixture) -> String {
    f.client.source_info().await.unwrap().current_source_id
}

#[tokio::test]
async fn freeze_orders_parents_first_deletes_children_first_and_records_request_hash() {
    let f = attached().await;
    exec(
        &f.client,
        "UPDATE _sync_apply_state SET apply_mode = 1;
         INSERT INTO users VALUES ('old', 'o'); INSERT INTO posts VALUES ('oldp', 'old', 't');
         UPDATE _sync_apply_state SET apply_mode = 0;
         INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version) VALUES
           ('business', 'users', '{\"id\":\"old\"}', 3), ('business', 'posts', '{\"id\":\"oldp\"}', 3);
         BEGIN;
         DELETE FROM posts WHERE id = 'oldp';
         INSERT INTO posts VALUES ('p1', 'u1', 'hello');
         INSERT INTO users VALUES ('u1', 'Ada');
         DELETE FROM users WHERE id = 'old';
         COMMIT;",
    )
    .await;
    f.transport
        .push(Reply::Create(Err(network_error("create"))));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(matches!(err, PushError::Transport(_)), "{err:?}");
    let rows: Vec<String> = query(
        &f.client,
        "SELECT row_ordinal || ' ' || table_name || ' ' || op || ' ' || wire_key_json FROM _sync_outbox_rows ORDER BY row_ordinal",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            r#"0 users INSERT {"id":"u1"}"#,
            r#"1 posts INSERT {"id":"p1"}"#,
            r#"2 posts DELETE {"id":"oldp"}"#,
            r#"3 users DELETE {"id":"old"}"#,
        ]
    );
    let dirty: Vec<i64> = query(&f.client, "SELECT count(*) FROM _sync_dirty_rows").await;
    assert_eq!(dirty, vec![0]);

    let stored: Vec<String> = query(
        &f.client,
        "SELECT state || '|' || source_bundle_id || '|' || canonical_request_hash FROM _sync_outbox_bundle",
    )
    .await;
    let key = |id: &str| BTreeMap::from([("id".to_owned(), id.to_owned())]);
    let (ku1, kp1, koldp, kold) = (key("u1"), key("p1"), key("oldp"), key("old"));
    let expected = hash::canonical_request_hash([
        RequestHashRow {
            schema: "business",
            table: "users",
            key: &ku1,
            op: Op::Insert,
            base_row_version: 0,
            payload: Some(br#"{"id":"u1","name":"Ada"}"#),
        },
        RequestHashRow {
            schema: "business",
            table: "posts",
            key: &kp1,
            op: Op::Insert,
            base_row_version: 0,
            payload: Some(br#"{"author":"u1","id":"p1","title":"hello"}"#),
        },
        RequestHashRow {
            schema: "business",
            table: "posts",
            key: &koldp,
            op: Op::Delete,
            base_row_version: 3,
            payload: None,
        },
        RequestHashRow {
            schema: "business",
            table: "users",
            key: &kold,
            op: Op::Delete,
            base_row_version: 3,
            payload: None,
        },
    ])
    .unwrap();
    assert_eq!(stored, vec![format!("prepared|1|{expected}")]);
}

#[tokio::test]
async fn insert_then_delete_of_unsynced_row_is_dropped_at_freeze_and_stays_dropped() {
    let f = attached().await;
    exec(
        &f.client,
        "INSERT INTO users VALUES ('gone', 'x'); DELETE FROM users WHERE id = 'gone';",
    )
    .await;
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    let dirty: Vec<i64> = query(&f.client, "SELECT count(*) FROM _sync_dirty_rows").await;
    assert_eq!(dirty, vec![0]);
    assert!(f.transport.calls().iter().all(|c| c != "create"));
}

async fn script_successful_push(f: &Fixture, bundle_seq: i64) -> PushSessionCommitResponse {
    // The committed rows are computed from what the client uploads, so run the chunk first.
    let src = source(f).await;
    f.transport
        .push(Reply::Create(Ok(PushSessionCreateResponse::staging(
            "push-1".to_owned(),
            1,
        ))));
    f.transport.push(Reply::Chunk(Ok(PushSessionChunkResponse {
        push_id: "push-1".to_owned(),
        next_expected_row_ordinal: 1,
    })));
    let rows = vec![PushRequestRow {
        schema: "business".to_owned(),
        table: "users".to_owned(),
        key: BTreeMap::from([("id".to_owned(), serde_json::Value::String("u1".to_owned()))]),
        op: "INSERT".to_owned(),
        base_row_version: 0,
        payload: Some(
            serde_json::value::RawValue::from_string(r#"{"id":"u1","name":"Ada"}"#.to_owned())
                .unwrap(),
        ),
    }];
    let (commit, page) = committed_for(&rows, bundle_seq, &src, 1);
    f.transport.push(Reply::Commit(Ok(commit.clone())));
    f.transport.push(Reply::Rows(Ok(page)));
    commit
}

#[tokio::test]
async fn committed_push_is_replayed_and_advances_checkpoint_and_source_counter() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    script_successful_push(&f, 1).await;
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(report.status.last_bundle_seq_seen, 1);
    let state: Vec<String> = query(
        &f.client,
        "SELECT (SELECT count(*) FROM _sync_outbox_rows) || '|' || (SELECT state FROM _sync_outbox_bundle) || '|' ||
                (SELECT row_version || ':' || deleted FROM _sync_row_state) || '|' ||
                (SELECT next_source_bundle_id FROM _sync_source_state s JOIN _sync_attachment_state a ON a.current_source_id = s.source_id) || '|' ||
                (SELECT count(*) FROM _sync_dirty_rows)",
    )
    .await;
    assert_eq!(state, vec!["0|none|1:0|2|0"]);
}

#[tokio::test]
async fn lost_commit_response_is_recovered_through_already_committed_without_reupload() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    let src = source(&f).await;
    // First attempt: the commit lands on the server but its response is lost.
    let commit = script_successful_push(&f, 1).await;
    let popped = f.transport.replies.lock().unwrap().pop_back();
    let Some(Reply::Rows(Ok(page))) = popped else {
        panic!("script changed")
    };
    f.transport.replies.lock().unwrap().pop_back();
    f.transport
        .push(Reply::Commit(Err(network_error("commit"))));
    assert!(f.client.push_pending().await.is_err());
    let outbox: Vec<String> = query(&f.client, "SELECT state FROM _sync_outbox_bundle").await;
    assert_eq!(outbox, vec!["prepared"]);
    assert!(f.transport.calls().contains(&"delete_push".to_owned()));

    // Second push: the server answers already_committed; nothing is uploaded again.
    let chunks_before = f.transport.chunks.lock().unwrap().len();
    f.transport.push(Reply::Create(Ok(
        PushSessionCreateResponse::already_committed(commit.clone()),
    )));
    f.transport.push(Reply::Rows(Ok(page)));
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(f.transport.chunks.lock().unwrap().len(), chunks_before);
    assert_eq!(commit.source_id, src);
    let rs: Vec<i64> = query(&f.client, "SELECT row_version FROM _sync_row_state").await;
    assert_eq!(rs, vec![1]);
}

#[tokio::test]
async fn crash_after_committed_remote_refetches_and_replays() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    let commit = script_successful_push(&f, 1).await;
    // The committed-rows fetch fails: the outbox must stay committed_remote.
    let popped = f.transport.replies.lock().unwrap().pop_back();
    let Some(Reply::Rows(Ok(page))) = popped else {
        panic!("script changed")
    };
    f.transport.push(Reply::Rows(Err(network_error("rows"))));
    assert!(f.client.push_pending().await.is_err());
    let outbox: Vec<String> = query(
        &f.client,
        "SELECT state || '|' || remote_bundle_seq FROM _sync_outbox_bundle",
    )
    .await;
    assert_eq!(outbox, vec!["committed_remote|1"]);

    f.transport.push(Reply::Create(Ok(
        PushSessionCreateResponse::already_committed(commit),
    )));
    f.transport.push(Reply::Rows(Ok(page)));
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    let outbox: Vec<String> = query(&f.client, "SELECT state FROM _sync_outbox_bundle").await;
    assert_eq!(outbox, vec!["none"]);
}

#[tokio::test]
async fn bundle_hash_mismatch_fails_closed_and_keeps_committed_remote() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    script_successful_push(&f, 1).await;
    let popped = f.transport.replies.lock().unwrap().pop_back();
    let Some(Reply::Rows(Ok(mut page))) = popped else {
        panic!("script changed")
    };
    page.rows[0].payload = Some(
        serde_json::value::RawValue::from_string(r#"{"id":"u1","name":"Eve"}"#.to_owned()).unwrap(),
    );
    f.transport.push(Reply::Rows(Ok(page)));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(matches!(err, PushError::Protocol(_)), "{err:?}");
    let state: Vec<String> = query(
        &f.client,
        "SELECT state || '|' || (SELECT name FROM users) FROM _sync_outbox_bundle",
    )
    .await;
    assert_eq!(state, vec!["committed_remote|Ada"]);
}

#[tokio::test]
async fn local_edit_during_upload_stays_dirty_rebased_on_the_committed_version() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    script_successful_push(&f, 1).await;
    // Simulate the application writing between freeze and replay: freeze first, by failing
    // the create once, then edit, then push again.
    let script: Vec<Reply> = f.transport.replies.lock().unwrap().drain(..).collect();
    f.transport
        .push(Reply::Create(Err(network_error("create"))));
    assert!(f.client.push_pending().await.is_err());
    exec(
        &f.client,
        "UPDATE users SET name = 'Second' WHERE id = 'u1';",
    )
    .await;
    f.transport.replies.lock().unwrap().extend(script);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    let rows: Vec<String> = query(
        &f.client,
        "SELECT (SELECT name FROM users) || '|' || (SELECT row_version FROM _sync_row_state) || '|' ||
                (SELECT op || ':' || base_row_version || ':' || payload FROM _sync_dirty_rows)",
    )
    .await;
    assert_eq!(
        rows,
        vec![r#"Second|1|UPDATE:1:{"id":"u1","name":"Second"}"#]
    );
}

#[tokio::test]
async fn initialization_expired_drops_the_binding_and_keeps_the_outbox() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    f.transport.push(Reply::Create(Err(status_error(
        "create",
        410,
        "initialization_expired",
    ))));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(err, PushError::InitializationLeaseInvalid { .. }),
        "{err:?}"
    );
    let state: Vec<String> = query(
        &f.client,
        "SELECT binding_state || '|' || (SELECT count(*) FROM _sync_outbox_rows) FROM _sync_attachment_state",
    )
    .await;
    assert_eq!(state, vec!["anonymous|1"]);
    assert!(matches!(
        f.client.push_pending().await,
        Err(PushError::AttachRequired)
    ));
}

#[tokio::test]
async fn source_sequence_out_of_order_enters_source_recovery_that_survives_restart() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    f.transport.push(Reply::Create(Err(status_error(
        "create",
        409,
        "source_sequence_out_of_order",
    ))));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(&err, PushError::SourceRecoveryRequired { code, .. } if code == "source_sequence_out_of_order"),
        "{err:?}"
    );
    let info = f.client.source_info().await.unwrap();
    assert!(info.source_recovery_required && info.rebuild_required);
    // Writes are now rejected by the guard triggers, and push refuses without network.
    let write = f
        .client
        .with_connection(|c| c.execute("INSERT INTO users VALUES ('u2', 'x')", []))
        .await
        .unwrap();
    assert!(write.is_err());
    let calls = f.transport.calls().len();
    assert!(matches!(
        f.client.push_pending().await,
        Err(PushError::SourceRecoveryRequired { .. })
    ));
    assert_eq!(f.transport.calls().len(), calls);
}

#[tokio::test]
async fn unstructured_push_conflict_is_a_transport_error_and_keeps_the_outbox() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    f.transport
        .push(Reply::Create(Ok(PushSessionCreateResponse::staging(
            "push-1".to_owned(),
            1,
        ))));
    f.transport.push(Reply::Chunk(Ok(PushSessionChunkResponse {
        push_id: "push-1".to_owned(),
        next_expected_row_ordinal: 1,
    })));
    f.transport.push(Reply::Commit(Err(status_error(
        "commit",
        409,
        "push_conflict",
    ))));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(matches!(err, PushError::Transport(_)), "{err:?}");
    let rows: Vec<i64> = query(&f.client, "SELECT count(*) FROM _sync_outbox_rows").await;
    assert_eq!(rows, vec![1]);
}

#[tokio::test]
async fn pull_applies_bundles_and_skips_rows_already_at_their_version() {
    let f = attached().await;
    let bundle = |seq: i64, name: &str| {
        one_row_bundle(
            seq,
            "users",
            "u9",
            Op::Insert,
            &format!(r#"{{"id":"u9","name":"{name}"}}"#),
        )
    };
    f.transport.push(Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: 2,
        bundles: vec![bundle(1, "one"), bundle(2, "two")],
        has_more: false,
    })));
    let report = f.client.pull_to_stable().await.unwrap();
    assert_eq!(
        report.outcome,
        oversync_sqlite::RemoteOutcome::AppliedIncremental
    );
    assert_eq!(report.status.last_bundle_seq_seen, 2);
    let rows: Vec<String> = query(
        &f.client,
        "SELECT name || '|' || (SELECT count(*) FROM _sync_dirty_rows) FROM users",
    )
    .await;
    assert_eq!(rows, vec!["two|0"]);
}

#[tokio::test]
async fn a_failed_next_pull_page_surfaces_only_after_the_page_before_it_was_applied() {
    // The next page is requested while the current one is applied; its failure must leave
    // the client exactly where a one-page-at-a-time pull would: page one applied, checkpoint
    // on its last bundle, the error returned.
    let f = attached().await;
    let bundle = |seq: i64| {
        one_row_bundle(
            seq,
            "users",
            &format!("u{seq}"),
            Op::Insert,
            &format!(r#"{{"id":"u{seq}","name":"n{seq}"}}"#),
        )
    };
    f.transport.push(Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: 3,
        bundles: vec![bundle(1)],
        has_more: true,
    })));
    f.transport.push(Reply::Pull(Err(network_error("pull"))));
    let err = f.client.pull_to_stable().await.unwrap_err();
    assert!(
        matches!(err, oversync_sqlite::PullError::Transport(_)),
        "{err:?}"
    );
    assert_eq!(f.client.last_bundle_seq_seen().await.unwrap(), 1);
    let names: Vec<String> = query(&f.client, "SELECT name FROM users ORDER BY id").await;
    assert_eq!(names, vec!["n1"]);
    let afters: Vec<(i64, i64)> = f
        .transport
        .pulls
        .lock()
        .unwrap()
        .iter()
        .map(|&(after, _, target)| (after, target))
        .collect();
    assert_eq!(afters, vec![(0, 0), (1, 3)]);

    // The next pull resumes from the checkpoint and finishes.
    f.transport.push(Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: 3,
        bundles: vec![bundle(2), bundle(3)],
        has_more: false,
    })));
    let report = f.client.pull_to_stable().await.unwrap();
    assert_eq!(report.status.last_bundle_seq_seen, 3);
    let names: Vec<String> = query(&f.client, "SELECT name FROM users ORDER BY id").await;
    assert_eq!(names, vec!["n1", "n2", "n3"]);
}

#[tokio::test]
async fn a_bundle_failing_at_commit_leaves_the_bundles_before_it_applied_and_the_checkpoint_on_them()
 {
    // §6.3: bundles are applied atomically and the checkpoint moves with them. The client
    // groups consecutive bundles into one transaction; a group that fails (here bundle 2's
    // deferred FK violation, detected only at COMMIT) must fall back to one bundle at a time.
    let f = attached().await;
    let row = |seq: i64, table: &str, payload: &str| {
        one_row_bundle(seq, table, &format!("k{seq}"), Op::Insert, payload)
    };
    f.transport.push(Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: 3,
        bundles: vec![
            row(1, "users", r#"{"id":"k1","name":"one"}"#),
            row(
                2,
                "posts",
                r#"{"id":"k2","author":"nobody","title":"orphan"}"#,
            ),
            row(3, "users", r#"{"id":"k3","name":"three"}"#),
        ],
        has_more: false,
    })));
    let err = f.client.pull_to_stable().await.unwrap_err();
    assert!(
        matches!(err, oversync_sqlite::PullError::Store(_)),
        "{err:?}"
    );
    assert_eq!(f.client.last_bundle_seq_seen().await.unwrap(), 1);
    let users: Vec<String> = query(&f.client, "SELECT id FROM users ORDER BY id").await;
    assert_eq!(users, vec!["k1"]);
    let posts: Vec<i64> = query(&f.client, "SELECT count(*) FROM posts").await;
    assert_eq!(posts, vec![0]);
}

#[tokio::test]
async fn many_small_bundles_are_all_applied_with_the_checkpoint_on_the_last() {
    let f = attached().await;
    let bundles: Vec<Bundle> = (1..=50)
        .map(|seq: i64| {
            one_row_bundle(
                seq,
                "users",
                "u1",
                if seq == 1 { Op::Insert } else { Op::Update },
                &format!(r#"{{"id":"u1","name":"v{seq}"}}"#),
            )
        })
        .collect();
    f.transport.push(Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: 50,
        bundles,
        has_more: false,
    })));
    let report = f.client.pull_to_stable().await.unwrap();
    assert_eq!(report.status.last_bundle_seq_seen, 50);
    let rows: Vec<String> = query(
        &f.client,
        "SELECT name || '|' || (SELECT row_version FROM _sync_row_state) FROM users",
    )
    .await;
    assert_eq!(rows, vec!["v50|50"]);
}

#[tokio::test]
async fn malformed_pull_response_applies_nothing() {
    let f = attached().await;
    f.transport.push(Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: 5,
        bundles: Vec::new(),
        has_more: true,
    })));
    let err = f.client.pull_to_stable().await.unwrap_err();
    assert!(
        matches!(err, oversync_sqlite::PullError::Protocol(_)),
        "{err:?}"
    );
    assert_eq!(f.client.last_bundle_seq_seen().await.unwrap(), 0);
}

#[tokio::test]
async fn unused_seed_lease_is_released_by_reconnecting_when_there_is_nothing_to_push() {
    // §12 A7: a row inserted and deleted before attach earns an `initialize_local` lease that
    // no push ever uses; the scope then stayed `initializing` and detach stayed blocked.
    let f = fixture().await;
    f.client.open().await.unwrap();
    exec(
        &f.client,
        "INSERT INTO users VALUES ('u1', 'Ada'); DELETE FROM users WHERE id = 'u1';",
    )
    .await;
    f.transport.push(Reply::Capabilities(Ok(capabilities())));
    f.transport
        .push(Reply::Connect(Ok(ConnectResponse::initialize_local(
            "lease-1".to_owned(),
            "2026-03-24T18:42:11Z".to_owned(),
        ))));
    f.client.attach("user-1").await.unwrap();
    f.transport
        .push(Reply::Connect(Ok(ConnectResponse::initialize_empty())));

    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_ne!(report.status.authority, Authority::PendingLocalSeed);
    assert!(!report.status.pending.has_pending_sync_data);
    assert_eq!(
        f.transport.calls().last().map(String::as_str),
        Some("connect")
    );
    let lease: Vec<String> = query(
        &f.client,
        "SELECT pending_initialization_id FROM _sync_attachment_state",
    )
    .await;
    assert_eq!(lease, vec![String::new()]);
}
