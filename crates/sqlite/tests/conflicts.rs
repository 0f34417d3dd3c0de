//! Structured push conflicts (client chapter §5): the resolver's input, the three outcomes
//! applied locally, invalid resolutions, the bounded automatic retry, and the §12 fixes (B1,
//! A10, C13). The server side is a scripted transport returning constructed protocol
//! responses: these pin the engine's state transitions, they are not end-to-end tests.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::{Arc, Mutex};

use oversync_protocol::op::Op;
use oversync_protocol::wire::*;
use oversync_sqlite::{
    ClientWins, Config, ConflictContext, LastWriterWins, MergeResult, PushError, PushOutcome,
    Resolver,
};
use serde_json::value::RawValue;
use support::*;

/// Records every conflict it is asked about and answers `result`.
#[derive(Debug)]
struct Capture {
    result: MergeResult,
    seen: Mutex<Vec<ConflictContext>>,
}

impl Resolver for Capture {
    fn resolve(&self, conflict: &ConflictContext) -> MergeResult {
        self.seen.lock().unwrap().push(conflict.clone());
        self.result.clone()
    }
}

fn capture(result: MergeResult) -> Arc<Capture> {
    Arc::new(Capture {
        result,
        seen: Mutex::new(Vec::new()),
    })
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

fn with_resolver(resolver: Arc<dyn Resolver>) -> Config {
    let mut config = config();
    config.resolver = resolver;
    config
}

/// A conflict on `users` key `id` for a row this client pushed with `op` and `base`.
fn conflict(
    id: &str,
    op: Op,
    base: i64,
    server_version: i64,
    server_deleted: bool,
    server_row: Option<&str>,
) -> PushConflictDetails {
    conflict_on(
        "users",
        id,
        op,
        base,
        server_version,
        server_deleted,
        server_row,
    )
}

fn conflict_on(
    table: &str,
    id: &str,
    op: Op,
    base: i64,
    server_version: i64,
    server_deleted: bool,
    server_row: Option<&str>,
) -> PushConflictDetails {
    PushConflictDetails {
        schema: "business".to_owned(),
        table: table.to_owned(),
        key: SyncKey::from([("id".to_owned(), id.to_owned())]),
        op,
        base_row_version: base,
        server_row_version: server_version,
        server_row_deleted: server_deleted,
        server_row: server_row.map(raw),
    }
}

/// Writes `rows` into `table` as already synced at `version` (no dirty rows).
async fn synced(f: &Fixture, table: &str, values: &str, keys: &[&str], version: i64) {
    let states: Vec<String> = keys
        .iter()
        .map(|k| format!("('business', '{table}', '{{\"id\":\"{k}\"}}', {version}, 0)"))
        .collect();
    exec_owned(
        &f.client,
        format!(
            "UPDATE _sync_apply_state SET apply_mode = 1;
             INSERT INTO {table} VALUES {values};
             UPDATE _sync_apply_state SET apply_mode = 0;
             INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted)
             VALUES {};",
            states.join(", ")
        ),
    )
    .await;
}

/// `users` row `u1` synced at version 1 as "Ada", then renamed locally to "Local".
async fn locally_renamed(config: Config) -> Fixture {
    let f = attached_with(SCHEMA_SQL, config).await;
    synced(&f, "users", "('u1', 'Ada')", &["u1"], 1).await;
    exec(
        &f.client,
        "UPDATE users SET name = 'Local' WHERE id = 'u1';",
    )
    .await;
    f
}

/// Freezes the outbox without reaching the server (the create fails once).
async fn freeze(f: &Fixture) {
    f.transport
        .push(Reply::Create(Err(network_error("create"))));
    assert!(matches!(
        f.client.push_pending().await,
        Err(PushError::Transport(_))
    ));
}

async fn one(f: &Fixture, sql: &'static str) -> String {
    let rows: Vec<String> = query(&f.client, sql).await;
    rows.join(";")
}

async fn counts(f: &Fixture) -> String {
    one(
        f,
        "SELECT '' || (SELECT count(*) FROM _sync_dirty_rows) || ' dirty, ' ||
                (SELECT count(*) FROM _sync_outbox_rows) || ' outbox, ' ||
                (SELECT state FROM _sync_outbox_bundle)",
    )
    .await
}

async fn dirty(f: &Fixture) -> String {
    one(
        f,
        "SELECT table_name || ' ' || key_json || ' ' || op || ' ' || base_row_version || ' ' || COALESCE(payload, 'NULL')
         FROM _sync_dirty_rows ORDER BY dirty_ordinal",
    )
    .await
}

/// The re-frozen outbox of the retry: what it would upload, from the local payloads.
async fn outbox(f: &Fixture) -> String {
    one(
        f,
        "SELECT table_name || ' ' || key_json || ' ' || op || ' ' || base_row_version || ' ' || COALESCE(local_payload, 'NULL') || ' ' || COALESCE(wire_payload, 'NULL')
         FROM _sync_outbox_rows ORDER BY row_ordinal",
    )
    .await
}

async fn row_states(f: &Fixture) -> String {
    one(
        f,
        "SELECT table_name || ' ' || key_json || ' ' || row_version || ' ' || deleted
         FROM _sync_row_state ORDER BY table_name, key_json",
    )
    .await
}

fn uploaded(f: &Fixture, chunk: usize) -> Vec<String> {
    f.transport.chunks.lock().unwrap()[chunk]
        .rows
        .iter()
        .map(|r| {
            format!(
                "{} {} base {} {}",
                r.table,
                r.op,
                r.base_row_version,
                r.payload.as_ref().map_or("NULL", |p| p.get())
            )
        })
        .collect()
}

#[tokio::test]
async fn structured_conflict_passes_typed_context_to_the_resolver() {
    let resolver = capture(MergeResult::AcceptServer);
    let f = locally_renamed(with_resolver(resolver.clone())).await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    f.client.push_pending().await.unwrap();
    let seen = resolver.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let c = &seen[0];
    assert_eq!((c.schema.as_str(), c.table.as_str()), ("business", "users"));
    assert_eq!(c.key, SyncKey::from([("id".to_owned(), "u1".to_owned())]));
    assert_eq!(c.local_op, Op::Update);
    assert_eq!(
        c.local_payload.as_ref().unwrap().get(),
        r#"{"id":"u1","name":"Local"}"#
    );
    assert_eq!((c.base_row_version, c.server_row_version), (1, 2));
    assert!(!c.server_row_deleted);
    assert_eq!(
        c.server_row_payload.as_ref().unwrap().get(),
        r#"{"id":"u1","name":"Server"}"#
    );
}

#[tokio::test]
async fn server_wins_by_default_adopts_the_live_server_row_and_drops_the_local_intent() {
    let f = locally_renamed(config()).await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_eq!(one(&f, "SELECT name FROM users").await, "Server");
    assert_eq!(row_states(&f).await, r#"users {"id":"u1"} 2 0"#);
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
    assert_eq!(
        f.transport.calls()[2..],
        ["create", "chunk", "commit", "delete_push"]
    );
}

#[tokio::test]
async fn server_wins_deletes_the_local_row_when_the_server_holds_a_tombstone() {
    let f = locally_renamed(config()).await;
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 2, true, None));
    f.client.push_pending().await.unwrap();
    assert_eq!(one(&f, "SELECT '' || count(*) FROM users").await, "0");
    assert_eq!(row_states(&f).await, r#"users {"id":"u1"} 2 1"#);
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

#[tokio::test]
async fn server_wins_forgets_the_row_when_the_server_has_no_state_for_it() {
    let f = locally_renamed(config()).await;
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 0, false, None));
    f.client.push_pending().await.unwrap();
    assert_eq!(one(&f, "SELECT '' || count(*) FROM users").await, "0");
    assert_eq!(row_states(&f).await, "");
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

#[tokio::test]
async fn client_wins_retries_the_local_update_on_the_server_version_under_the_same_source_bundle_id()
 {
    let f = locally_renamed(with_resolver(Arc::new(ClientWins))).await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    f.transport.push_ok(3);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    let creates = f.transport.creates.lock().unwrap().clone();
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[0].source_bundle_id, creates[1].source_bundle_id);
    assert_eq!(
        uploaded(&f, 1),
        [r#"users UPDATE base 2 {"id":"u1","name":"Local"}"#]
    );
    assert_eq!(one(&f, "SELECT name FROM users").await, "Local");
    assert_eq!(row_states(&f).await, r#"users {"id":"u1"} 3 0"#);
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

const FILES_SQL: &str = "CREATE TABLE files (id TEXT PRIMARY KEY, data BLOB);";

#[tokio::test]
async fn keep_local_does_not_corrupt_blob_columns_that_look_like_base64() {
    // §12 B1: the local payload holds BLOBs as hex; "00112233" is also valid base64, which the
    // reference decoded through its wire decoder into six unrelated bytes.
    let mut config = with_resolver(Arc::new(ClientWins));
    config.tables = vec![oversync_sqlite::SyncTable::new("files", "id")];
    let f = attached_with(FILES_SQL, config).await;
    synced(&f, "files", "('f1', x'00')", &["f1"], 1).await;
    exec(
        &f.client,
        "UPDATE files SET data = x'00112233' WHERE id = 'f1';",
    )
    .await;
    f.transport.push_conflicting(conflict_on(
        "files",
        "f1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"f1","data":"AA=="}"#),
    ));
    f.transport
        .push(Reply::Create(Err(network_error("create"))));
    assert!(matches!(
        f.client.push_pending().await,
        Err(PushError::Transport(_))
    ));
    assert_eq!(one(&f, "SELECT hex(data) FROM files").await, "00112233");
    assert_eq!(
        outbox(&f).await,
        r#"files {"id":"f1"} UPDATE 2 {"id":"f1","data":"00112233"} {"data":"ABEiMw==","id":"f1"}"#
    );
    assert_eq!(row_states(&f).await, r#"files {"id":"f1"} 2 0"#);
}

#[tokio::test]
async fn keep_merged_writes_the_merged_row_and_retries_it() {
    let merged = MergeResult::KeepMerged(raw(r#"{"ID":"u1","Name":"Merged"}"#));
    let f = locally_renamed(with_resolver(capture(merged))).await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    f.transport.push_ok(3);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(
        uploaded(&f, 1),
        [r#"users UPDATE base 2 {"id":"u1","name":"Merged"}"#]
    );
    assert_eq!(one(&f, "SELECT name FROM users").await, "Merged");
    assert_eq!(row_states(&f).await, r#"users {"id":"u1"} 3 0"#);
}

#[tokio::test]
async fn keep_merged_for_a_delete_is_invalid_and_restores_the_outbox_as_dirty_rows() {
    let merged = MergeResult::KeepMerged(raw(r#"{"id":"u1","name":"Merged"}"#));
    let f = attached_with(SCHEMA_SQL, with_resolver(capture(merged))).await;
    synced(&f, "users", "('u1', 'Ada')", &["u1"], 1).await;
    exec(&f.client, "DELETE FROM users WHERE id = 'u1';").await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Delete,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(&err, PushError::InvalidConflictResolution { conflict, result, .. }
            if conflict.local_op == Op::Delete && matches!(**result, MergeResult::KeepMerged(_))),
        "{err:?}"
    );
    assert_eq!(counts(&f).await, "1 dirty, 0 outbox, none");
    assert_eq!(dirty(&f).await, r#"users {"id":"u1"} DELETE 1 NULL"#);
    assert_eq!(one(&f, "SELECT '' || count(*) FROM users").await, "0");
    assert_eq!(row_states(&f).await, r#"users {"id":"u1"} 1 0"#);
}

#[tokio::test]
async fn keep_local_for_an_update_of_a_deleted_server_row_is_invalid_and_keeps_the_intent() {
    let f = locally_renamed(with_resolver(Arc::new(ClientWins))).await;
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 2, true, None));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(err, PushError::InvalidConflictResolution { .. }),
        "{err:?}"
    );
    assert_eq!(
        dirty(&f).await,
        r#"users {"id":"u1"} UPDATE 1 {"id":"u1","name":"Local"}"#
    );
    assert_eq!(one(&f, "SELECT name FROM users").await, "Local");
    assert_eq!(counts(&f).await, "1 dirty, 0 outbox, none");
}

#[tokio::test]
async fn keep_merged_without_every_column_is_invalid() {
    let merged = MergeResult::KeepMerged(raw(r#"{"id":"u1"}"#));
    let f = locally_renamed(with_resolver(capture(merged))).await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(&err, PushError::InvalidConflictResolution { message, .. } if message.contains("exactly every table column")),
        "{err:?}"
    );
    assert_eq!(one(&f, "SELECT name FROM users").await, "Local");
    assert_eq!(counts(&f).await, "1 dirty, 0 outbox, none");
}

#[tokio::test]
async fn keep_merged_that_changes_the_key_is_invalid() {
    let merged = MergeResult::KeepMerged(raw(r#"{"id":"u2","name":"Elsewhere"}"#));
    let f = locally_renamed(with_resolver(capture(merged))).await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(&err, PushError::InvalidConflictResolution { message, .. } if message.contains("key")),
        "{err:?}"
    );
    assert_eq!(one(&f, "SELECT group_concat(id) FROM users").await, "u1");
    assert_eq!(counts(&f).await, "1 dirty, 0 outbox, none");
}

#[tokio::test]
async fn conflicts_that_persist_through_two_retries_fail_with_retry_exhausted_and_stay_replayable()
{
    let resolver = capture(MergeResult::KeepLocal);
    let f = locally_renamed(with_resolver(resolver.clone())).await;
    for server_version in [2, 3, 4] {
        f.transport.push_conflicting(conflict(
            "u1",
            Op::Update,
            server_version - 1,
            server_version,
            false,
            Some(r#"{"id":"u1","name":"Server"}"#),
        ));
    }
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(
            err,
            PushError::PushConflictRetryExhausted {
                retry_count: 2,
                remaining_dirty_count: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(resolver.seen.lock().unwrap().len(), 3);
    assert_eq!(counts(&f).await, "1 dirty, 0 outbox, none");
    assert_eq!(
        dirty(&f).await,
        r#"users {"id":"u1"} UPDATE 4 {"id":"u1","name":"Local"}"#
    );
}

#[tokio::test]
async fn sibling_rows_of_a_rejected_bundle_are_requeued_and_pushed_in_the_retry() {
    let f = locally_renamed(config()).await;
    exec(&f.client, "INSERT INTO users VALUES ('u2', 'Two');").await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    f.transport.push_ok(3);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(
        uploaded(&f, 1),
        [r#"users INSERT base 0 {"id":"u2","name":"Two"}"#]
    );
    assert_eq!(
        one(
            &f,
            "SELECT group_concat(name, ',') FROM (SELECT name FROM users ORDER BY id)"
        )
        .await,
        "Server,Two"
    );
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

#[tokio::test]
async fn conflict_on_a_key_outside_the_outbox_fails_and_keeps_the_outbox() {
    let resolver = capture(MergeResult::AcceptServer);
    let f = locally_renamed(with_resolver(resolver.clone())).await;
    f.transport
        .push_conflicting(conflict("u9", Op::Update, 1, 2, true, None));
    let err = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(&err, PushError::PushConflict { status: 409, table, .. } if table == "users"),
        "{err:?}"
    );
    assert!(resolver.seen.lock().unwrap().is_empty());
    assert_eq!(counts(&f).await, "0 dirty, 1 outbox, prepared");
}

#[tokio::test]
async fn structured_conflict_on_chunk_upload_is_resolved_like_one_on_commit() {
    let f = locally_renamed(config()).await;
    f.transport.push(Reply::Staging);
    f.transport.push(Reply::Chunk(Err(conflict_error(
        "push chunk",
        conflict(
            "u1",
            Op::Update,
            1,
            2,
            false,
            Some(r#"{"id":"u1","name":"Server"}"#),
        ),
    ))));
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_eq!(one(&f, "SELECT name FROM users").await, "Server");
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

#[tokio::test]
async fn keep_local_insert_against_a_missing_server_row_retries_with_base_zero_instead_of_repeating_the_conflict()
 {
    // §12 A10: a local tombstone whose server history is gone; the re-insert carries base 5
    // and the server reports the row missing. The reference failed with the outbox kept, so
    // every later push hit the same conflict.
    let f = attached_with(SCHEMA_SQL, with_resolver(Arc::new(ClientWins))).await;
    exec(
        &f.client,
        "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted)
         VALUES ('business', 'users', '{\"id\":\"u1\"}', 5, 1);
         INSERT INTO users VALUES ('u1', 'Again');",
    )
    .await;
    f.transport
        .push_conflicting(conflict("u1", Op::Insert, 5, 0, false, None));
    f.transport.push_ok(6);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(
        uploaded(&f, 0),
        [r#"users INSERT base 5 {"id":"u1","name":"Again"}"#]
    );
    assert_eq!(
        uploaded(&f, 1),
        [r#"users INSERT base 0 {"id":"u1","name":"Again"}"#]
    );
    assert_eq!(row_states(&f).await, r#"users {"id":"u1"} 6 0"#);
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

#[tokio::test]
async fn requeue_after_a_conflict_keeps_a_newer_local_write_to_a_sibling_key() {
    // §12 C13: the reference overwrote the newer dirty row with the stale outbox row.
    let f = locally_renamed(config()).await;
    exec(&f.client, "INSERT INTO users VALUES ('u2', 'Two');").await;
    freeze(&f).await;
    exec(
        &f.client,
        "UPDATE users SET name = 'Two v2' WHERE id = 'u2';",
    )
    .await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    f.transport
        .push(Reply::Create(Err(network_error("create"))));
    assert!(f.client.push_pending().await.is_err());
    assert_eq!(
        outbox(&f).await,
        r#"users {"id":"u2"} INSERT 0 {"id":"u2","name":"Two v2"} {"id":"u2","name":"Two v2"}"#
    );
}

#[tokio::test]
async fn server_wins_does_not_rebase_a_newer_local_write_to_the_conflicting_key_onto_the_server_version()
 {
    // Convergence seed 1592590364 at a27911c: a server-wins device froze an INSERT, crashed,
    // edited the row offline, and at its next push the resolver accepted the server's row for
    // the frozen INSERT. The newer edit was rebased on the server's version and uploaded
    // without a conflict, replacing another device's acknowledged write it had never seen.
    // It must keep its own base, meet its own conflict, and lose it to the server.
    let resolver = capture(MergeResult::AcceptServer);
    let f = locally_renamed(with_resolver(resolver.clone())).await;
    freeze(&f).await;
    exec(
        &f.client,
        "UPDATE users SET name = 'Newer' WHERE id = 'u1';",
    )
    .await;
    let server = Some(r#"{"id":"u1","name":"Server"}"#);
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 2, false, server));
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 2, false, server));
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_eq!(
        uploaded(&f, 1),
        [r#"users UPDATE base 1 {"id":"u1","name":"Newer"}"#]
    );
    let seen = resolver.seen.lock().unwrap().clone();
    let locals: Vec<_> = seen
        .iter()
        .map(|c| c.local_payload.as_ref().map(|p| p.get().to_owned()))
        .collect();
    assert_eq!(
        locals,
        [
            Some(r#"{"id":"u1","name":"Local"}"#.to_owned()),
            Some(r#"{"id":"u1","name":"Newer"}"#.to_owned())
        ]
    );
    assert_eq!(one(&f, "SELECT name FROM users").await, "Server");
    assert_eq!(row_states(&f).await, r#"users {"id":"u1"} 2 0"#);
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

#[tokio::test]
async fn keep_merged_does_not_let_a_newer_local_write_overwrite_the_merged_server_fields() {
    // The merge was computed from the frozen row. A newer local edit descends from the
    // frozen row, not from the merge: rebased on the server's version it would silently undo
    // the server fields the merge kept. It must meet its own conflict so the resolver merges
    // it too.
    let resolver = capture(MergeResult::KeepMerged(raw(
        r#"{"id":"u1","name":"Merged"}"#,
    )));
    let f = locally_renamed(with_resolver(resolver.clone())).await;
    freeze(&f).await;
    exec(
        &f.client,
        "UPDATE users SET name = 'Newer' WHERE id = 'u1';",
    )
    .await;
    let server = Some(r#"{"id":"u1","name":"Server"}"#);
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 2, false, server));
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 2, false, server));
    f.transport.push_ok(3);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(
        uploaded(&f, 1),
        [r#"users UPDATE base 1 {"id":"u1","name":"Newer"}"#],
        "the newer edit keeps the base it was written on"
    );
    assert_eq!(
        uploaded(&f, 2),
        [r#"users UPDATE base 2 {"id":"u1","name":"Merged"}"#]
    );
    let locals: Vec<_> = resolver
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.local_payload.as_ref().map(|p| p.get().to_owned()))
        .collect();
    assert_eq!(
        locals,
        [
            Some(r#"{"id":"u1","name":"Local"}"#.to_owned()),
            Some(r#"{"id":"u1","name":"Newer"}"#.to_owned())
        ]
    );
    assert_eq!(one(&f, "SELECT name FROM users").await, "Merged");
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

#[tokio::test]
async fn client_wins_rebases_a_newer_local_write_to_the_conflicting_key_on_the_server_version() {
    let f = locally_renamed(with_resolver(Arc::new(ClientWins))).await;
    freeze(&f).await;
    exec(
        &f.client,
        "UPDATE users SET name = 'Newer' WHERE id = 'u1';",
    )
    .await;
    f.transport.push_conflicting(conflict(
        "u1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"u1","name":"Server"}"#),
    ));
    f.transport.push_ok(3);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(
        uploaded(&f, 1),
        [r#"users UPDATE base 2 {"id":"u1","name":"Newer"}"#]
    );
    assert_eq!(one(&f, "SELECT name FROM users").await, "Newer");
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

const STAMPED_SQL: &str = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, updated_at TEXT);";

#[tokio::test]
async fn last_writer_wins_pushes_the_local_row_when_its_updated_at_is_later() {
    let mut config = with_resolver(Arc::new(LastWriterWins::default()));
    config.tables = vec![oversync_sqlite::SyncTable::new("notes", "id")];
    let f = attached_with(STAMPED_SQL, config).await;
    synced(
        &f,
        "notes",
        "('n1', 'base', '2026-03-24T18:00:00Z')",
        &["n1"],
        1,
    )
    .await;
    exec(
        &f.client,
        "UPDATE notes SET body = 'local', updated_at = '2026-03-24T19:02:00+01:00' WHERE id = 'n1';",
    )
    .await;
    f.transport.push_conflicting(conflict_on(
        "notes",
        "n1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"n1","body":"server","updated_at":"2026-03-24T18:01:59.999Z"}"#),
    ));
    f.transport.push_ok(3);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(
        uploaded(&f, 1),
        [
            r#"notes UPDATE base 2 {"body":"local","id":"n1","updated_at":"2026-03-24T19:02:00+01:00"}"#
        ]
    );
    assert_eq!(one(&f, "SELECT body FROM notes").await, "local");
}

#[tokio::test]
async fn last_writer_wins_adopts_the_server_row_when_its_updated_at_is_later() {
    let mut config = with_resolver(Arc::new(LastWriterWins::default()));
    config.tables = vec![oversync_sqlite::SyncTable::new("notes", "id")];
    let f = attached_with(STAMPED_SQL, config).await;
    synced(
        &f,
        "notes",
        "('n1', 'base', '2026-03-24T18:00:00Z')",
        &["n1"],
        1,
    )
    .await;
    exec(
        &f.client,
        "UPDATE notes SET body = 'local', updated_at = '2026-03-24T18:01:00Z' WHERE id = 'n1';",
    )
    .await;
    f.transport.push_conflicting(conflict_on(
        "notes",
        "n1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"n1","body":"server","updated_at":"2026-03-24T18:01:00.5Z"}"#),
    ));
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_eq!(one(&f, "SELECT body FROM notes").await, "server");
}

// --- resolutions that would break a local foreign key (never a wedge) ----------------------

const CATEGORIES_SQL: &str = "
CREATE TABLE categories (id TEXT PRIMARY KEY, name TEXT,
    parent_id TEXT REFERENCES categories(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
";

const TEAMS_SQL: &str = "
CREATE TABLE teams (id TEXT PRIMARY KEY, name TEXT,
    captain TEXT REFERENCES members(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE members (id TEXT PRIMARY KEY, name TEXT,
    team_id TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
";

fn tables(names: &[&str]) -> Config {
    let mut c = config();
    c.tables = names
        .iter()
        .map(|n| oversync_sqlite::SyncTable::new(*n, "id"))
        .collect();
    c
}

async fn gate(f: &Fixture) -> String {
    one(
        f,
        "SELECT '' || rebuild_required FROM _sync_attachment_state",
    )
    .await
}

/// Case 1 of the wedge, with a cascading foreign key: this device deleted a category with
/// its child; another device updated the child. Accepting the server's child restores it
/// under a parent deleted here. Before the fix the resolution failed at COMMIT on the
/// foreign key and every later push repeated the conflict. Now the child's intent and the
/// parent's DELETE are dropped (pushing the DELETE would cascade away the concurrent update
/// the resolver kept), business rows stay consistent, and the host is told to rebuild.
#[tokio::test]
async fn server_wins_for_a_child_of_a_locally_cascaded_delete_does_not_wedge_and_keeps_the_parent()
{
    let f = attached_with(CATEGORIES_SQL, tables(&["categories"])).await;
    synced(
        &f,
        "categories",
        "('c1', 'Root', NULL), ('c2', 'Child', 'c1')",
        &["c1", "c2"],
        1,
    )
    .await;
    exec(&f.client, "DELETE FROM categories WHERE id = 'c1';").await;
    assert_eq!(counts(&f).await, "2 dirty, 0 outbox, none");
    f.transport.push_conflicting(conflict_on(
        "categories",
        "c2",
        Op::Delete,
        1,
        3,
        false,
        Some(r#"{"id":"c2","name":"Remote","parent_id":"c1"}"#),
    ));
    let error = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(error, PushError::ConflictRequiresRebuild { .. }),
        "{error:?}"
    );
    assert_eq!(one(&f, "SELECT '' || count(*) FROM categories").await, "0");
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
    assert_eq!(gate(&f).await, "1");
    // Nothing is stuck: the next push has nothing to do, the pull asks for the rebuild.
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_eq!(
        f.client
            .pull_to_stable()
            .await
            .unwrap_err()
            .required_action(),
        Some(oversync_sqlite::RequiredAction::Rebuild)
    );
}

/// Case 1 of the wedge, without a cascade: this device deleted a team (its members go by
/// cascade) while another device renamed the team. The server's team names its captain,
/// deleted here, and the server would refuse that member's DELETE while the team references
/// it. The team's and the captain's intent are dropped (neither was acknowledged), the
/// other member's DELETE stays queued, and the host is told to rebuild, which restores the
/// server's rows.
#[tokio::test]
async fn server_wins_for_a_team_whose_captain_this_device_deleted_requires_a_rebuild_instead_of_wedging()
 {
    let f = attached_with(TEAMS_SQL, tables(&["teams", "members"])).await;
    synced(&f, "teams", "('t1', 'Team', NULL)", &["t1"], 1).await;
    synced(
        &f,
        "members",
        "('m1', 'Cap', 't1'), ('m2', 'Other', 't1')",
        &["m1", "m2"],
        1,
    )
    .await;
    exec_owned(
        &f.client,
        "UPDATE _sync_apply_state SET apply_mode = 1;
         UPDATE teams SET captain = 'm1' WHERE id = 't1';
         UPDATE _sync_apply_state SET apply_mode = 0;"
            .to_owned(),
    )
    .await;
    exec(&f.client, "DELETE FROM teams WHERE id = 't1';").await;
    assert_eq!(counts(&f).await, "3 dirty, 0 outbox, none");
    f.transport.push_conflicting(conflict_on(
        "teams",
        "t1",
        Op::Delete,
        1,
        3,
        false,
        Some(r#"{"id":"t1","name":"Renamed","captain":"m1"}"#),
    ));
    let error = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(error, PushError::ConflictRequiresRebuild { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.required_action(),
        Some(oversync_sqlite::RequiredAction::Rebuild)
    );
    assert_eq!(counts(&f).await, "1 dirty, 0 outbox, none");
    assert_eq!(dirty(&f).await, r#"members {"id":"m2"} DELETE 1 NULL"#);
    assert_eq!(gate(&f).await, "1");
    assert_eq!(
        one(
            &f,
            "SELECT '' || (SELECT count(*) FROM teams) || (SELECT count(*) FROM members)"
        )
        .await,
        "00"
    );
    // The queued DELETE still goes out behind the gate (§12 A1), then the rebuild restores
    // the server's team and captain.
    f.transport.push_ok(4);
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert_eq!(uploaded(&f, 1), ["members DELETE base 1 NULL"]);
    let row = |table: &str, id: &str, payload: &str| SnapshotRow {
        schema: "business".to_owned(),
        table: table.to_owned(),
        key: SyncKey::from([("id".to_owned(), id.to_owned())]),
        row_version: 3,
        payload: raw(payload),
    };
    let (mut session, mut chunk) = empty_snapshot(4);
    chunk.rows = vec![
        row(
            "teams",
            "t1",
            r#"{"id":"t1","name":"Renamed","captain":"m1"}"#,
        ),
        row(
            "members",
            "m1",
            r#"{"id":"m1","name":"Cap","team_id":"t1"}"#,
        ),
    ];
    session.row_count = 2;
    chunk.next_row_ordinal = 2;
    f.transport.push(Reply::Snapshot(Ok(session)));
    f.transport.push(Reply::SnapshotChunk(Ok(chunk)));
    f.client.rebuild().await.unwrap();
    assert_eq!(
        one(
            &f,
            "SELECT (SELECT name || ' ' || captain FROM teams) || ', ' || (SELECT group_concat(id) FROM members)"
        )
        .await,
        "Renamed m1, m1"
    );
    assert_eq!(gate(&f).await, "0");
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
}

/// Case 2 of the wedge: a stale update of a user whose owner deleted it together with its
/// posts. Accepting the server's tombstone would delete the user here while its posts are
/// still here. The user's intent is dropped and business rows stay as they are; the pull
/// brings the owner's bundle, which deletes posts and user together.
#[tokio::test]
async fn server_wins_tombstone_for_a_user_whose_posts_are_still_local_does_not_wedge_and_the_pull_deletes_both()
 {
    let f = locally_renamed(config()).await;
    synced(&f, "posts", "('p1', 'u1', 'Post')", &["p1"], 1).await;
    f.transport
        .push_conflicting(conflict("u1", Op::Update, 1, 3, true, None));
    let report = f.client.push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_eq!(one(&f, "SELECT name FROM users").await, "Local");
    assert_eq!(counts(&f).await, "0 dirty, 0 outbox, none");
    assert_eq!(gate(&f).await, "0");
    assert_eq!(
        row_states(&f).await,
        r#"posts {"id":"p1"} 1 0;users {"id":"u1"} 1 0"#
    );
    let delete = |table: &str, id: &str| BundleRow {
        schema: "business".to_owned(),
        table: table.to_owned(),
        key: std::collections::BTreeMap::from([("id".to_owned(), id.to_owned())]),
        op: Op::Delete,
        row_version: 3,
        payload: None,
    };
    f.transport.push(Reply::Pull(Ok(PullResponse {
        stable_bundle_seq: 3,
        bundles: vec![sealed(Bundle {
            bundle_seq: 3,
            source_id: "owner".to_owned(),
            source_bundle_id: 1,
            row_count: 0,
            bundle_hash: String::new(),
            rows: vec![delete("posts", "p1"), delete("users", "u1")],
        })],
        has_more: false,
    })));
    f.client.pull_to_stable().await.unwrap();
    assert_eq!(
        one(
            &f,
            "SELECT '' || (SELECT count(*) FROM users) || (SELECT count(*) FROM posts)"
        )
        .await,
        "00"
    );
}

/// A merged row that would break a local foreign key is an invalid resolution: everything
/// stays queued and replayable, nothing is wedged.
#[tokio::test]
async fn keep_merged_that_would_break_a_local_foreign_key_is_invalid_and_keeps_the_intent() {
    let merged = r#"{"id":"p1","author":"nobody","title":"Merged"}"#;
    let f = attached_with(
        SCHEMA_SQL,
        with_resolver(capture(MergeResult::KeepMerged(raw(merged)))),
    )
    .await;
    synced(&f, "posts", "('p1', NULL, 'Post')", &["p1"], 1).await;
    exec(
        &f.client,
        "UPDATE posts SET title = 'Local' WHERE id = 'p1';",
    )
    .await;
    f.transport.push_conflicting(conflict_on(
        "posts",
        "p1",
        Op::Update,
        1,
        2,
        false,
        Some(r#"{"id":"p1","author":null,"title":"Server"}"#),
    ));
    let error = f.client.push_pending().await.unwrap_err();
    assert!(
        matches!(error, PushError::InvalidConflictResolution { .. }),
        "{error:?}"
    );
    assert_eq!(one(&f, "SELECT title FROM posts").await, "Local");
    assert_eq!(
        dirty(&f).await,
        r#"posts {"id":"p1"} UPDATE 1 {"id":"p1","author":null,"title":"Local"}"#
    );
    assert_eq!(counts(&f).await, "1 dirty, 0 outbox, none");
}
