//! Local state against real SQLite files: metadata install, trigger capture and coalescing,
//! quoting, lifecycle steps that need no server.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use oversync_sqlite::schema::{LAYOUT_VERSION, METADATA_TABLES};
use oversync_sqlite::{Client, Config, NewError, StoreError, SyncTable};
use support::*;

async fn tables(client: &Client<std::sync::Arc<Scripted>>) -> Vec<String> {
    query(
        client,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_sync\\_%' ESCAPE '\\' ORDER BY name",
    )
    .await
}

#[tokio::test]
async fn fresh_install_creates_exactly_the_reference_tables_plus_the_layout_marker() {
    let f = fixture().await;
    let mut expected: Vec<String> = METADATA_TABLES.iter().map(|t| (*t).to_owned()).collect();
    expected.push("_sync_layout_version".to_owned());
    expected.sort();
    assert_eq!(tables(&f.client).await, expected);
}

#[tokio::test]
async fn metadata_columns_match_the_reference_declarations() {
    let f = fixture().await;
    let columns: Vec<String> = query(
        &f.client,
        "SELECT name || ' ' || type || ' ' || \"notnull\" || ' ' || coalesce(dflt_value, '-') || ' ' || pk FROM pragma_table_info('_sync_outbox_rows')",
    )
    .await;
    assert_eq!(
        columns,
        vec![
            "source_bundle_id INTEGER 1 - 1",
            "row_ordinal INTEGER 1 - 2",
            "schema_name TEXT 1 - 0",
            "table_name TEXT 1 - 0",
            "key_json TEXT 1 - 0",
            "wire_key_json TEXT 1 - 0",
            "op TEXT 1 - 0",
            "base_row_version INTEGER 1 0 0",
            "local_payload TEXT 0 - 0",
            "wire_payload TEXT 0 - 0",
        ]
    );
}

#[tokio::test]
async fn reopening_an_installed_database_is_idempotent() {
    let f = fixture().await;
    exec(&f.client, "INSERT INTO users VALUES ('u1', 'Ada');").await;
    let before: Vec<String> = query(
        &f.client,
        "SELECT coalesce(sql, name) FROM sqlite_master ORDER BY name",
    )
    .await;
    let path = f.dir.path().join("app.db");
    f.client.close().await;
    drop(f.client);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let client = Client::new(conn, f.transport, config()).await.unwrap();
    let after: Vec<String> = query(
        &client,
        "SELECT coalesce(sql, name) FROM sqlite_master ORDER BY name",
    )
    .await;
    assert_eq!(before, after);
    let dirty: Vec<i64> = query(&client, "SELECT count(*) FROM _sync_dirty_rows").await;
    assert_eq!(dirty, vec![1]);
}

#[tokio::test]
async fn database_with_newer_layout_is_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
    conn.execute_batch(SCHEMA_SQL).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE _sync_layout_version (singleton_key INTEGER NOT NULL PRIMARY KEY CHECK (singleton_key = 1), version INTEGER NOT NULL);
         INSERT INTO _sync_layout_version VALUES (1, {});",
        LAYOUT_VERSION + 1
    ))
    .unwrap();
    let err = Client::new(conn, std::sync::Arc::new(Scripted::default()), config())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NewError::Store(StoreError::LayoutTooNew { found, supported }) if found == LAYOUT_VERSION + 1 && supported == LAYOUT_VERSION),
        "{err:?}"
    );
}

#[tokio::test]
async fn second_client_on_the_same_file_is_refused() {
    let f = fixture().await;
    let conn = rusqlite::Connection::open(f.dir.path().join("app.db")).unwrap();
    let err = Client::new(conn, std::sync::Arc::new(Scripted::default()), config())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NewError::DatabaseAlreadyOwned { .. }),
        "{err:?}"
    );
}

/// (name, setup SQL run before, writes, expected `op|base|payload` or `none`).
const COALESCING: &[(&str, &str, &str, &str)] = &[
    (
        "unsynced_insert",
        "",
        "INSERT INTO users VALUES ('k', 'a');",
        r#"INSERT|0|{"id":"k","name":"a"}"#,
    ),
    (
        "unsynced_insert_then_updates",
        "",
        "INSERT INTO users VALUES ('k', 'a'); UPDATE users SET name = 'b'; UPDATE users SET name = 'c';",
        r#"INSERT|0|{"id":"k","name":"c"}"#,
    ),
    (
        "unsynced_insert_then_delete",
        "",
        "INSERT INTO users VALUES ('k', 'a'); DELETE FROM users;",
        "DELETE|0|null",
    ),
    (
        "synced_updates",
        "SYNCED",
        "UPDATE users SET name = 'b'; UPDATE users SET name = 'c';",
        r#"UPDATE|7|{"id":"k","name":"c"}"#,
    ),
    (
        "synced_delete",
        "SYNCED",
        "DELETE FROM users;",
        "DELETE|7|null",
    ),
    (
        "synced_delete_then_insert",
        "SYNCED",
        "DELETE FROM users; INSERT INTO users VALUES ('k', 'z');",
        r#"UPDATE|7|{"id":"k","name":"z"}"#,
    ),
    (
        "tombstoned_insert",
        "TOMBSTONE",
        "INSERT INTO users VALUES ('k', 'n');",
        r#"INSERT|7|{"id":"k","name":"n"}"#,
    ),
    (
        "noop_update_still_records_upsert",
        "SYNCED",
        "UPDATE users SET name = name;",
        r#"UPDATE|7|{"id":"k","name":"a"}"#,
    ),
];

#[tokio::test]
async fn trigger_capture_coalesces_each_history_like_the_reference() {
    for (name, setup, writes, expected) in COALESCING {
        let f = fixture().await;
        match *setup {
            "SYNCED" => {
                // A synced row: written with capture off, row state live at version 7.
                exec(
                    &f.client,
                    "UPDATE _sync_apply_state SET apply_mode = 1;
                     INSERT INTO users VALUES ('k', 'a');
                     UPDATE _sync_apply_state SET apply_mode = 0;
                     INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted)
                       VALUES ('business', 'users', '{\"id\":\"k\"}', 7, 0);",
                )
                .await;
            }
            "TOMBSTONE" => {
                exec(
                    &f.client,
                    "INSERT INTO _sync_row_state (schema_name, table_name, key_json, row_version, deleted)
                       VALUES ('business', 'users', '{\"id\":\"k\"}', 7, 1);",
                )
                .await;
            }
            _ => {}
        }
        let sql: &'static str = writes;
        exec(&f.client, sql).await;
        let rows: Vec<String> = query(
            &f.client,
            "SELECT op || '|' || base_row_version || '|' || coalesce(payload, 'null') FROM _sync_dirty_rows WHERE key_json = '{\"id\":\"k\"}'",
        )
        .await;
        assert_eq!(rows, vec![(*expected).to_owned()], "case {name}");
    }
}

#[tokio::test]
async fn key_change_records_delete_of_old_key_and_upsert_of_new_key() {
    let f = fixture().await;
    exec(
        &f.client,
        "INSERT INTO users VALUES ('a', 'x'); UPDATE users SET id = 'b' WHERE id = 'a';",
    )
    .await;
    let rows: Vec<String> = query(
        &f.client,
        "SELECT key_json || '|' || op FROM _sync_dirty_rows ORDER BY dirty_ordinal",
    )
    .await;
    assert_eq!(rows, vec![r#"{"id":"a"}|DELETE"#, r#"{"id":"b"}|INSERT"#]);
}

#[tokio::test]
async fn dirty_ordinal_is_kept_by_later_writes_to_the_same_key() {
    let f = fixture().await;
    exec(
        &f.client,
        "INSERT INTO users VALUES ('a', 'x'); INSERT INTO users VALUES ('b', 'y'); UPDATE users SET name = 'z' WHERE id = 'a';",
    )
    .await;
    let rows: Vec<String> = query(
        &f.client,
        "SELECT key_json || '|' || dirty_ordinal FROM _sync_dirty_rows ORDER BY dirty_ordinal",
    )
    .await;
    assert_eq!(rows, vec![r#"{"id":"a"}|1"#, r#"{"id":"b"}|2"#]);
}

#[tokio::test]
async fn writes_with_apply_mode_on_are_not_captured() {
    let f = fixture().await;
    exec(
        &f.client,
        "UPDATE _sync_apply_state SET apply_mode = 1; INSERT INTO users VALUES ('a', 'x'); UPDATE _sync_apply_state SET apply_mode = 0;",
    )
    .await;
    let dirty: Vec<i64> = query(&f.client, "SELECT count(*) FROM _sync_dirty_rows").await;
    assert_eq!(dirty, vec![0]);
}

#[tokio::test]
async fn guard_triggers_reject_application_writes_while_an_operation_is_pending() {
    let f = fixture().await;
    exec(
        &f.client,
        "UPDATE _sync_operation_state SET kind = 'remote_replace', target_user_id = 'u';",
    )
    .await;
    let err = f
        .client
        .with_connection(|c| c.execute("INSERT INTO users VALUES ('a', 'x')", []))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(oversync_sqlite::TRANSITION_PENDING),
        "{err}"
    );
}

#[tokio::test]
async fn table_and_column_names_that_need_quoting_work_through_the_triggers() {
    let ddl = r#"CREATE TABLE "Odd ""Table'" ("my id" TEXT PRIMARY KEY, "select" TEXT, "blob col" BLOB);"#;
    let config = Config::new(
        "we'ird \"schema\"",
        vec![SyncTable::new("odd \"table'", "MY ID")],
    );
    let f = fixture_with(ddl, config).await;
    exec(
        &f.client,
        r#"INSERT INTO "Odd ""Table'" VALUES ('k''1', 'v', x'00ff');
           UPDATE "Odd ""Table'" SET "select" = 'w';"#,
    )
    .await;
    let rows: Vec<String> = query(
        &f.client,
        "SELECT schema_name || '|' || table_name || '|' || key_json || '|' || op || '|' || payload FROM _sync_dirty_rows",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            r#"we'ird "schema"|odd "table'|{"my id":"k'1"}|INSERT|{"my id":"k'1","select":"w","blob col":"00ff"}"#
        ]
    );
}

#[tokio::test]
async fn blob_uuid_keys_are_captured_as_lowercase_hex() {
    let ddl = "CREATE TABLE files (id BLOB PRIMARY KEY, data BLOB);";
    let config = Config::new("business", vec![SyncTable::new("files", "id")]);
    let f = fixture_with(ddl, config).await;
    exec(
        &f.client,
        "INSERT INTO files VALUES (x'550E8400E29B41D4A716446655440000', x'0011');",
    )
    .await;
    let rows: Vec<String> = query(
        &f.client,
        "SELECT key_json || '|' || payload FROM _sync_dirty_rows",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            r#"{"id":"550e8400e29b41d4a716446655440000"}|{"id":"550e8400e29b41d4a716446655440000","data":"0011"}"#
        ]
    );
}

#[tokio::test]
async fn open_mints_a_uuid_source_and_captures_preexisting_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
    conn.execute_batch(SCHEMA_SQL).unwrap();
    conn.execute_batch("INSERT INTO users VALUES ('pre', 'existing');")
        .unwrap();
    let client = Client::new(conn, std::sync::Arc::new(Scripted::default()), config())
        .await
        .unwrap();
    client.open().await.unwrap();
    client.open().await.unwrap();
    let info = client.source_info().await.unwrap();
    assert!(uuid::Uuid::parse_str(&info.current_source_id).is_ok());
    let rows: Vec<String> =
        query(&client, "SELECT op || '|' || payload FROM _sync_dirty_rows").await;
    assert_eq!(rows, vec![r#"INSERT|{"id":"pre","name":"existing"}"#]);
}

#[tokio::test]
async fn uninstall_drops_triggers_and_metadata_but_keeps_business_rows() {
    let f = fixture().await;
    exec(&f.client, "INSERT INTO users VALUES ('a', 'x');").await;
    f.client.uninstall_sync().await.unwrap();
    let leftovers: Vec<String> = query(
        &f.client,
        "SELECT name FROM sqlite_master WHERE name LIKE '%sync%' OR type = 'trigger'",
    )
    .await;
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let users: Vec<i64> = query(&f.client, "SELECT count(*) FROM users").await;
    assert_eq!(users, vec![1]);
    assert!(matches!(
        f.client.open().await,
        Err(oversync_sqlite::LocalError::Gate(
            oversync_sqlite::GateError::ClientClosed
        ))
    ));
}

#[tokio::test]
async fn detach_rotates_the_source_and_resets_the_checkpoint() {
    let f = attached().await;
    let before = f.client.source_info().await.unwrap().current_source_id;
    exec(
        &f.client,
        "UPDATE _sync_attachment_state SET last_bundle_seq_seen = 9;",
    )
    .await;
    let result = f.client.detach().await.unwrap();
    assert_eq!(result.outcome, oversync_sqlite::DetachOutcome::Detached);
    let after = f.client.source_info().await.unwrap().current_source_id;
    assert_ne!(before, after);
    let state: Vec<String> = query(
        &f.client,
        "SELECT binding_state || '|' || last_bundle_seq_seen || '|' || rebuild_required FROM _sync_attachment_state",
    )
    .await;
    assert_eq!(state, vec!["anonymous|0|0"]);
    let replaced: Vec<String> = query(
        &f.client,
        "SELECT replaced_by_source_id FROM _sync_source_state WHERE replaced_by_source_id <> ''",
    )
    .await;
    assert_eq!(replaced, vec![after]);
}

#[tokio::test]
async fn detach_is_blocked_while_attached_changes_are_pending() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('a', 'x');").await;
    let result = f.client.detach().await.unwrap();
    assert_eq!(
        result.outcome,
        oversync_sqlite::DetachOutcome::BlockedUnsyncedData
    );
    assert_eq!(result.pending_row_count, 1);
    let users: Vec<i64> = query(&f.client, "SELECT count(*) FROM users").await;
    assert_eq!(users, vec![1]);
}

#[tokio::test]
async fn detach_clears_children_before_parents_with_immediate_foreign_keys() {
    let ddl = "CREATE TABLE a_parent (id TEXT PRIMARY KEY);
               CREATE TABLE b_child (id TEXT PRIMARY KEY, parent TEXT REFERENCES a_parent(id));";
    let config = Config::new(
        "business",
        vec![
            SyncTable::new("a_parent", "id"),
            SyncTable::new("b_child", "id"),
        ],
    );
    let f = fixture_with(ddl, config).await;
    f.client.open().await.unwrap();
    exec(
        &f.client,
        "INSERT INTO a_parent VALUES ('p'); INSERT INTO b_child VALUES ('c', 'p');",
    )
    .await;
    let result = f.client.detach().await.unwrap();
    assert_eq!(result.outcome, oversync_sqlite::DetachOutcome::Detached);
    let rows: Vec<i64> = query(
        &f.client,
        "SELECT (SELECT count(*) FROM a_parent) + (SELECT count(*) FROM b_child)",
    )
    .await;
    assert_eq!(rows, vec![0]);
}

#[tokio::test]
async fn pull_refuses_while_dirty_rows_exist() {
    let f = attached().await;
    exec(&f.client, "INSERT INTO users VALUES ('a', 'x');").await;
    let err = f.client.pull_to_stable().await.unwrap_err();
    assert!(
        matches!(
            err,
            oversync_sqlite::PullError::DirtyStateRejected { count: 1 }
        ),
        "{err:?}"
    );
    assert!(f.transport.calls().iter().all(|c| c != "pull"));
}

#[tokio::test]
async fn attach_resumes_an_existing_binding_without_network() {
    let f = attached().await;
    let path = f.dir.path().join("app.db");
    let calls_before = f.transport.calls().len();
    f.client.close().await;
    drop(f.client);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let client = Client::new(conn, std::sync::Arc::clone(&f.transport), config())
        .await
        .unwrap();
    client.open().await.unwrap();
    let result = client.attach("user-1").await.unwrap();
    assert_eq!(
        result.outcome,
        Some(oversync_sqlite::AttachOutcome::ResumedAttachedState)
    );
    assert_eq!(f.transport.calls().len(), calls_before);
}

#[tokio::test]
async fn attach_to_another_user_while_attached_is_a_binding_conflict() {
    let f = attached().await;
    let err = f.client.attach("user-2").await.unwrap_err();
    assert!(
        matches!(err, oversync_sqlite::AttachError::BindingConflict { .. }),
        "{err:?}"
    );
}
