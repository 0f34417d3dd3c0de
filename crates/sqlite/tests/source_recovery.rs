//! Source recovery (client chapter §8): every entry code lands in the durable gate, the gate
//! fails push, pull and sync closed without network and tells the host to rebuild, and the
//! rotated rebuild adopts the reserved replacement. Engine-state tests over the scripted
//! transport; the real-HTTP round trip lives in `tests/it/client_background.rs`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use oversync_sqlite::{
    PullError, PushError, RecoveryState, RemoteOutcome, RequiredAction, SyncError,
};
use support::*;

async fn one(f: &Fixture, sql: &'static str) -> String {
    query::<String>(&f.client, sql).await.join(",")
}

/// An attached client with one frozen `users` row whose push was refused with `code`.
async fn refused_at_create(code: &str) -> (Fixture, PushError) {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    f.transport
        .push(Reply::Create(Err(status_error("create", 409, code))));
    let err = f.client.push_pending().await.unwrap_err();
    (f, err)
}

fn recovery_code(err: &PushError) -> Option<&str> {
    match err {
        PushError::SourceRecoveryRequired { code, .. } => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn history_pruned_on_create_of_a_prepared_outbox_enters_source_recovery() {
    let (f, err) = refused_at_create("history_pruned").await;
    assert_eq!(recovery_code(&err), Some("history_pruned"), "{err:?}");
    let info = f.client.source_info().await.unwrap();
    assert!(info.source_recovery_required && info.rebuild_required);
    assert_eq!(info.source_recovery_reason, "history_pruned");
    assert_eq!(
        one(&f, "SELECT state FROM _sync_outbox_bundle").await,
        "prepared"
    );
}

#[tokio::test]
async fn source_sequence_changed_on_commit_enters_source_recovery() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    f.transport.push(Reply::Staging);
    f.transport.push(Reply::ChunkOk);
    f.transport.push(Reply::Commit(Err(status_error(
        "commit",
        409,
        "source_sequence_changed",
    ))));
    let err = f.client.push_pending().await.unwrap_err();
    assert_eq!(
        recovery_code(&err),
        Some("source_sequence_changed"),
        "{err:?}"
    );
    assert_eq!(
        f.client.source_info().await.unwrap().source_recovery_reason,
        "source_sequence_changed"
    );
}

fn retired(replacement: &str) -> oversync_sqlite::TransportError {
    oversync_sqlite::TransportError::Status {
        endpoint: "create",
        status: 409,
        body: oversync_sqlite::StatusBody::decode(
            format!(
                r#"{{"error":"source_retired","message":"retired","source_id":"old","replaced_by_source_id":"{replacement}"}}"#
            )
            .as_bytes(),
        ),
    }
}

#[tokio::test]
async fn source_retired_reserves_the_servers_replacement_and_rebuild_rotates_to_it() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    f.transport
        .push(Reply::Create(Err(retired("server-chosen"))));
    let err = f.client.push_pending().await.unwrap_err();
    assert_eq!(recovery_code(&err), Some("source_retired"), "{err:?}");
    assert_eq!(
        one(
            &f,
            "SELECT replacement_source_id FROM _sync_operation_state"
        )
        .await,
        "server-chosen"
    );

    let (session, chunk) = empty_snapshot(2);
    f.transport.push(Reply::Snapshot(Ok(session)));
    f.transport.push(Reply::SnapshotChunk(Ok(chunk)));
    let report = f.client.rebuild().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedSnapshot);
    let info = f.client.source_info().await.unwrap();
    assert_eq!(info.current_source_id, "server-chosen");
    assert!(!info.source_recovery_required && !info.rebuild_required);
    // The frozen intent survives, renumbered for the new source.
    assert_eq!(
        one(
            &f,
            "SELECT source_id || ' ' || source_bundle_id || ' ' || state FROM _sync_outbox_bundle"
        )
        .await,
        "server-chosen 1 prepared"
    );
}

#[tokio::test]
async fn source_retired_offering_another_replacement_than_the_reserved_one_fails_closed() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    exec(
        &f.client,
        "UPDATE _sync_operation_state SET replacement_source_id = 'reserved-here';",
    )
    .await;
    f.transport
        .push(Reply::Create(Err(retired("server-chosen"))));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(&err, PushError::SourceReplacementDiverged { local, remote }
            if local == "reserved-here" && remote == "server-chosen"),
        "{err:?}"
    );
    // Nothing was recorded.
    assert!(
        !f.client
            .source_info()
            .await
            .unwrap()
            .source_recovery_required
    );
}

#[tokio::test]
async fn push_pull_and_sync_fail_closed_without_network_while_recovery_is_pending() {
    let (f, _) = refused_at_create("source_sequence_out_of_order").await;
    let calls = f.transport.calls().len();
    let push = f.client.push_pending().await.unwrap_err();
    let pull = f.client.pull_to_stable().await.unwrap_err();
    let sync = f.client.sync().await.unwrap_err();
    assert!(recovery_code(&push).is_some(), "{push:?}");
    assert!(
        matches!(pull, PullError::SourceRecoveryRequired { .. }),
        "{pull:?}"
    );
    assert!(
        matches!(
            sync,
            SyncError::Push(PushError::SourceRecoveryRequired { .. })
        ),
        "{sync:?}"
    );
    assert_eq!(f.transport.calls().len(), calls);
}

#[tokio::test]
async fn recovery_errors_tell_the_host_to_rebuild() {
    let (f, err) = refused_at_create("source_sequence_out_of_order").await;
    assert_eq!(err.required_action(), Some(RequiredAction::Rebuild));
    assert!(err.to_string().contains("call rebuild()"), "{err}");
    let pull = f.client.pull_to_stable().await.unwrap_err();
    assert_eq!(pull.required_action(), Some(RequiredAction::Rebuild));
    let sync = f.client.sync().await.unwrap_err();
    assert_eq!(sync.required_action(), Some(RequiredAction::Rebuild));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn status_reports_the_pending_source_recovery_and_its_reason() {
    let (f, _) = refused_at_create("source_sequence_out_of_order").await;
    let status = f.client.status().await.unwrap();
    assert_eq!(
        status.recovery,
        RecoveryState::SourceRecovery {
            reason: "source_sequence_out_of_order".to_owned()
        }
    );
    assert_eq!(status.pending.pending_row_count, 1);
    let last = status.last_push.unwrap().result.unwrap_err();
    assert_eq!(last.required_action, Some(RequiredAction::Rebuild));
    assert!(!last.retryable);
}

#[tokio::test]
async fn recovery_gate_survives_restart_and_still_fails_closed() {
    let (f, _) = refused_at_create("history_pruned").await;
    let path = f.dir.path().join("app.db");
    let Fixture { dir, client, .. } = f;
    client.close().await;
    drop(client);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let transport = std::sync::Arc::new(Scripted::default());
    let client = oversync_sqlite::Client::new(conn, std::sync::Arc::clone(&transport), config())
        .await
        .unwrap();
    client.open().await.unwrap();
    client.attach("user-1").await.unwrap();
    let err = client.push_pending().await.unwrap_err();
    assert_eq!(recovery_code(&err), Some("history_pruned"), "{err:?}");
    assert!(transport.calls().is_empty());
    drop(dir);
}
