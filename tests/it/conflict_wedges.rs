//! End-to-end versions of the foreign-key wedge scenarios of `crates/sqlite/tests/conflicts.rs`
//! (fixed by commit 819d557, see `crates/sqlite/src/engine/conflict.rs`): two SQLite devices
//! of one user over real HTTP against the example server on PostgreSQL, both resolving push
//! conflicts with `ServerWins`.
//!
//! A server-wins resolution that would break a local foreign key used to fail at COMMIT the
//! same way on every push. Each test checks that the device holding the conflict makes
//! progress (its next `sync`, or `ConflictRequiresRebuild` then `rebuild`), and that in the
//! end both devices hold exactly the server's rows, with every acknowledged write intact.

use std::sync::Arc;

use oversync_sqlite::{
    AttachOutcome, PushError, PushOutcome, RemoteOutcome, RequiredAction, ServerWins, SyncError,
    SyncReport,
};

use crate::client_e2e::{Device, Dump, Pages, T0, dump_server, uid};
use crate::support::TestServer;

const PAGES: Pages = Pages {
    upload: 1000,
    download: 1000,
    snapshot: 1000,
};

const USER: &str = "alice";

/// Two attached devices of [`USER`]: `a` seeded with `seed_sql` and synced, `b` hydrated from
/// the server.
async fn two_devices(
    server: &TestServer,
    dir: &std::path::Path,
    seed_sql: &str,
) -> (Device, Device) {
    let a = Device::with_resolver(server, dir, "a", USER, PAGES, Arc::new(ServerWins)).await;
    assert_eq!(a.attach().await, AttachOutcome::StartedEmpty);
    a.exec(seed_sql).await;
    sync_ok(&a).await;
    let b = Device::with_resolver(server, dir, "b", USER, PAGES, Arc::new(ServerWins)).await;
    assert_eq!(b.attach().await, AttachOutcome::UsedRemoteState);
    converged(server, &[&a, &b]).await;
    (a, b)
}

async fn sync_ok(device: &Device) -> SyncReport {
    match device.client().sync().await {
        Ok(report) => report,
        Err(e) => panic!(
            "{}: sync failed: {e} ({})",
            device.name,
            device.diagnostics().await
        ),
    }
}

/// Asserts every device holds exactly the server's rows of [`USER`], and returns them.
async fn converged(server: &TestServer, devices: &[&Device]) -> Dump {
    let expected = dump_server(server, USER).await;
    for device in devices {
        let local = device.dump().await;
        assert!(
            local == expected,
            "{} differs from PostgreSQL ({})\nlocal:  {local:#?}\nserver: {expected:#?}",
            device.name,
            device.diagnostics().await
        );
    }
    expected
}

/// Rows of `table` in a dump whose rendering mentions `needle`.
fn rows_with<'a>(dump: &'a Dump, table: &str, needle: &str) -> Vec<&'a String> {
    dump[table].iter().filter(|r| r.contains(needle)).collect()
}

/// The sync of `device` answered `ConflictRequiresRebuild`.
fn assert_conflict_requires_rebuild(device: &Device, result: Result<SyncReport, SyncError>) {
    match result {
        Err(e @ SyncError::Push(PushError::ConflictRequiresRebuild { .. })) => {
            assert_eq!(e.required_action(), Some(RequiredAction::Rebuild));
        }
        other => panic!(
            "{}: expected ConflictRequiresRebuild, got {other:?}",
            device.name
        ),
    }
}

/// Device A deletes a category, and SQLite cascades the delete to its child; concurrently
/// device B renames the child and pushes first. A's push conflicts on the child; accepting
/// the server's child would restore it under the parent A deleted, which used to fail at
/// COMMIT on the foreign key on every push. Now A drops its unacknowledged DELETEs, keeps its
/// rows consistent, asks for a rebuild, and the rebuild brings back both rows with B's
/// acknowledged rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wins_for_a_child_of_a_locally_cascaded_delete_does_not_wedge_the_push() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2) = (uid(21), uid(22));
    let (a, b) = two_devices(
        &server,
        dir.path(),
        &format!(
            "INSERT INTO categories VALUES ('{c1}', 'root', NULL);
             INSERT INTO categories VALUES ('{c2}', 'child', '{c1}');"
        ),
    )
    .await;

    a.exec(&format!("DELETE FROM categories WHERE id = '{c1}';"))
        .await;
    assert!(
        a.dump().await["categories"].is_empty(),
        "the delete cascaded"
    );
    b.exec(&format!(
        "UPDATE categories SET name = 'renamed by b' WHERE id = '{c2}';"
    ))
    .await;
    sync_ok(&b).await;

    let first = a.client().sync().await;
    assert_conflict_requires_rebuild(&a, first);
    assert!(
        a.dump().await["categories"].is_empty(),
        "rows stay as A left them until the rebuild"
    );
    // Not wedged: the next push has nothing left to retry, and the rebuild restores the
    // server's rows.
    let report = a.client().push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    let rebuilt = a.client().rebuild().await.unwrap();
    assert_eq!(rebuilt.outcome, RemoteOutcome::AppliedSnapshot);
    sync_ok(&a).await;
    sync_ok(&b).await;

    let synced = converged(&server, &[&a, &b]).await;
    assert_eq!(synced["categories"].len(), 2, "{synced:#?}");
    assert_eq!(
        rows_with(&synced, "categories", "renamed by b").len(),
        1,
        "B's acknowledged rename survived: {synced:#?}"
    );
}

/// Device A deletes a team, and SQLite cascades the delete to both members, one of them the
/// captain; concurrently device B renames the team and pushes first. Accepting the server's
/// team would name a captain A deleted, and the server would refuse the captain's DELETE
/// while the team references it: before the fix every push repeated the conflict. Now A
/// drops the team's and the captain's intent, still pushes the other member's DELETE, and
/// asks for a rebuild, which restores the renamed team and its captain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wins_for_a_team_whose_captain_this_device_deleted_requires_a_rebuild_instead_of_wedging()
 {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (t1, m1, m2) = (uid(31), uid(41), uid(42));
    let (a, b) = two_devices(
        &server,
        dir.path(),
        &format!(
            "BEGIN;
             INSERT INTO teams VALUES ('{t1}', 'red', '{m1}');
             INSERT INTO team_members VALUES ('{m1}', 'Cap', '{t1}');
             INSERT INTO team_members VALUES ('{m2}', 'Other', '{t1}');
             COMMIT;"
        ),
    )
    .await;

    a.exec(&format!("DELETE FROM teams WHERE id = '{t1}';"))
        .await;
    let offline = a.dump().await;
    assert!(offline["teams"].is_empty() && offline["team_members"].is_empty());
    b.exec(&format!(
        "UPDATE teams SET name = 'renamed by b' WHERE id = '{t1}';"
    ))
    .await;
    sync_ok(&b).await;

    let first = a.client().sync().await;
    assert_conflict_requires_rebuild(&a, first);
    // Not wedged: the next push sends what is left (the other member's DELETE) ...
    let report = a.client().push_pending().await.unwrap();
    assert_eq!(
        report.outcome,
        PushOutcome::Committed,
        "{}",
        a.diagnostics().await
    );
    // ... and the rebuild restores the server's rows.
    let rebuilt = a.client().rebuild().await.unwrap();
    assert_eq!(rebuilt.outcome, RemoteOutcome::AppliedSnapshot);
    sync_ok(&a).await;
    sync_ok(&b).await;

    let synced = converged(&server, &[&a, &b]).await;
    assert_eq!(synced["teams"].len(), 1, "{synced:#?}");
    assert_eq!(rows_with(&synced, "teams", "renamed by b").len(), 1);
    assert_eq!(
        synced["team_members"].len(),
        1,
        "only the captain is back; A's acknowledged DELETE of the other member stands: \
         {synced:#?}"
    );
    assert_eq!(rows_with(&synced, "team_members", &m1).len(), 1);
}

/// Device A (the owner) deletes a user together with its posts and pushes; device B, offline,
/// renames the user. B's push conflicts with the server's tombstone; accepting it would
/// delete the user while its posts are still on B, which used to fail at COMMIT on the
/// foreign key on every push. Now B drops its stale intent, keeps its rows, and the same
/// sync's pull applies A's bundle, deleting user and posts together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wins_tombstone_for_a_user_whose_posts_are_still_local_does_not_wedge_and_the_pull_deletes_both()
 {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (u1, u2, p1, p2) = (uid(1), uid(2), uid(11), uid(12));
    let (a, b) = two_devices(
        &server,
        dir.path(),
        &format!(
            "INSERT INTO users VALUES ('{u1}', 'Ada', 'ada@example.com', '{T0}', '{T0}');
             INSERT INTO users VALUES ('{u2}', 'Bob', 'bob@example.com', '{T0}', '{T0}');
             INSERT INTO posts VALUES ('{p1}', 'Hello', 'by Ada', '{u1}', '{T0}', '{T0}');
             INSERT INTO posts VALUES ('{p2}', 'Hi', 'by Bob', '{u2}', '{T0}', '{T0}');"
        ),
    )
    .await;

    a.exec(&format!(
        "BEGIN;
         DELETE FROM posts WHERE author_id = '{u1}';
         DELETE FROM users WHERE id = '{u1}';
         COMMIT;"
    ))
    .await;
    sync_ok(&a).await;
    b.exec(&format!(
        "UPDATE users SET name = 'Ada from b' WHERE id = '{u1}';"
    ))
    .await;

    // Not wedged: one sync settles the conflict and pulls A's deletes.
    let report = sync_ok(&b).await;
    assert_eq!(report.push_outcome, PushOutcome::NoChange);
    assert!(
        !report.status.pending.has_pending_sync_data,
        "{}",
        b.diagnostics().await
    );
    let again = sync_ok(&b).await;
    assert_eq!(again.push_outcome, PushOutcome::NoChange);
    sync_ok(&a).await;

    let synced = converged(&server, &[&a, &b]).await;
    assert!(
        rows_with(&synced, "users", &u1).is_empty() && rows_with(&synced, "posts", &p1).is_empty(),
        "A's acknowledged delete stands: {synced:#?}"
    );
    assert_eq!(synced["users"].len(), 1);
    assert_eq!(synced["posts"].len(), 1);
}
