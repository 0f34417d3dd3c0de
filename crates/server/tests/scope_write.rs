//! Server-originated writes through `exec_write` (§8.1).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::*;
use oversync_protocol::wire::{ConnectRequest, ConnectResolution};
use oversync_server::{ExecWriteError, ExecWriteOutcome, PullRequest};

async fn write_doc(
    w: &World,
    scope: &str,
    writer: &str,
    id: &str,
) -> Result<ExecWriteOutcome<u64>, ExecWriteError<tokio_postgres::Error>> {
    let id = id.to_owned();
    w.service
        .exec_write(scope, writer, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO business.docs (id, title) VALUES ($1, 'server')",
                    &[&id],
                )
                .await
            })
        })
        .await
}

fn everything() -> PullRequest {
    PullRequest {
        after_bundle_seq: 0,
        max_bundles: 100,
        target_bundle_seq: 0,
    }
}

#[tokio::test]
async fn exec_write_appears_in_pull_with_the_writer_id_as_source() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let outcome = write_doc(&w, "alice", "server:billing", "d1")
        .await
        .unwrap();
    assert!(!outcome.auto_initialized);
    assert_eq!(
        (
            outcome.bundle.source_id.as_str(),
            outcome.bundle.source_bundle_id
        ),
        ("server:billing", 1)
    );
    let pulled = w.service.pull(&a, everything()).await.unwrap();
    assert_eq!(pulled.bundles.len(), 1);
    assert_eq!(pulled.bundles[0].source_id, "server:billing");
    assert_eq!(pulled.bundles[0].rows[0].key["id"], "d1");
}

#[tokio::test]
async fn exec_write_reaches_only_its_own_scope() {
    let w = World::new().await;
    let alice = actor("alice", "dev-1");
    let bob = actor("bob", "dev-2");
    w.init(&alice).await;
    w.init(&bob).await;
    w.push(&bob, 1, vec![insert("docs", "bob-doc", "{}")])
        .await
        .unwrap();
    write_doc(&w, "alice", "server:w", "d1").await.unwrap();
    let err = w
        .service
        .exec_write("alice", "server:w", |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE business.docs SET title = 'x' WHERE id = 'bob-doc'",
                    &[],
                )
                .await
            })
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecWriteError::Callback(ref e) if e.as_db_error().unwrap().message().contains("scope mismatch")),
        "{err:?}"
    );
    let bob_pull = w.service.pull(&bob, everything()).await.unwrap();
    assert_eq!(bob_pull.bundles.len(), 1);
    assert_eq!(bob_pull.bundles[0].source_id, "dev-2");
    assert_eq!(
        w.count("SELECT count(*) FROM business.docs WHERE _sync_scope_id = 'alice'")
            .await,
        1
    );
}

#[tokio::test]
async fn exec_write_initializes_an_uninitialized_scope_first_authority() {
    let w = World::new().await;
    let outcome = write_doc(&w, "carol", "server:import", "d1").await.unwrap();
    assert!(outcome.auto_initialized);
    let reply = w
        .service
        .connect(
            &actor("carol", "dev-1"),
            Some(&ConnectRequest {
                has_local_pending_rows: true,
            }),
        )
        .await
        .unwrap();
    assert_eq!(reply.resolution, ConnectResolution::RemoteAuthoritative);
}

#[tokio::test]
async fn exec_write_without_captured_changes_rolls_back_everything() {
    let w = World::new().await;
    w.client()
        .await
        .batch_execute("CREATE TABLE public.audit (note TEXT)")
        .await
        .unwrap();
    let err = w
        .service
        .exec_write("dave", "server:w", |tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO public.audit VALUES ('x')", &[])
                    .await?;
                tx.execute("INSERT INTO business.docs (id) VALUES ('tmp')", &[])
                    .await?;
                tx.execute("DELETE FROM business.docs WHERE id = 'tmp'", &[])
                    .await
            })
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecWriteError::NoCapturedChanges { .. }),
        "{err:?}"
    );
    assert_eq!(w.count("SELECT count(*) FROM public.audit").await, 0);
    assert_eq!(
        w.count("SELECT count(*) FROM sync.scope_state WHERE state_code = 2")
            .await,
        0
    );
}

#[tokio::test]
async fn exec_write_gives_one_writer_consecutive_source_bundle_ids() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    w.init(&a).await;
    let first = write_doc(&w, "alice", "server:w", "d1").await.unwrap();
    let second = write_doc(&w, "alice", "server:w", "d2").await.unwrap();
    assert_eq!(
        (
            first.bundle.source_bundle_id,
            second.bundle.source_bundle_id
        ),
        (1, 2)
    );
    assert_eq!(second.bundle.bundle_seq, first.bundle.bundle_seq + 1);
}

#[tokio::test]
async fn exec_write_refuses_writer_ids_without_the_reserved_prefix() {
    let w = World::new().await;
    for (scope, writer, message) in [
        (" ", "server:w", "scope_id is required"),
        ("alice", "  ", "writer_id is required"),
        (
            "alice",
            "dev-1",
            "writer_id must start with \"server:\" so it cannot collide with a client source_id",
        ),
    ] {
        let err = write_doc(&w, scope, writer, "d1").await.unwrap_err();
        assert!(
            matches!(err, ExecWriteError::Invalid(ref m) if m == message),
            "{err:?}"
        );
    }
    let long = format!("server:{}", "x".repeat(300));
    assert!(matches!(
        write_doc(&w, "alice", &long, "d1").await.unwrap_err(),
        ExecWriteError::Invalid(_)
    ));
}

#[tokio::test]
async fn exec_write_during_a_client_initialization_lease_is_scope_initializing() {
    let w = World::new().await;
    w.service
        .connect(
            &actor("erin", "dev-1"),
            Some(&ConnectRequest {
                has_local_pending_rows: true,
            }),
        )
        .await
        .unwrap();
    let err = write_doc(&w, "erin", "server:w", "d1").await.unwrap_err();
    assert!(
        matches!(err, ExecWriteError::ScopeInitializing { .. }),
        "{err:?}"
    );
}
