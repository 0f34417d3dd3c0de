//! Bootstrap: the `sync` layout with the reference's identifiers, idempotence, sharing an
//! existing layout, and every unsupported table shape failing closed with a message naming
//! the table.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::*;
use oversync_server::{BootstrapError, RegisteredTable, ServiceConfig, SyncService};

async fn bootstrap_with(
    sql: &str,
    tables: Vec<RegisteredTable>,
) -> Result<SyncService, BootstrapError> {
    let db = oversync_testkit::test_database().await.unwrap();
    db.connect()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
    let config = ServiceConfig {
        registered_tables: tables,
        ..ServiceConfig::default()
    };
    let service = SyncService::new(pool(&db), config).unwrap();
    let result = service.bootstrap().await;
    // Keep the database alive until bootstrap finished.
    drop(db);
    result.map(|()| service)
}

/// Bootstrap must fail with an unsupported-schema message containing every `needle`.
async fn assert_unsupported(sql: &str, tables: Vec<RegisteredTable>, needles: &[&str]) {
    match bootstrap_with(sql, tables).await {
        Err(BootstrapError::Unsupported { message, .. }) => {
            for needle in needles {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
        }
        Err(other) => panic!("expected unsupported schema, got {other:?}"),
        Ok(_) => panic!("bootstrap accepted an unsupported shape"),
    }
}

fn t(table: &str, key: &str) -> Vec<RegisteredTable> {
    vec![RegisteredTable::new("app", table, key)]
}

const GOOD: &str = "CREATE SCHEMA app;";

#[tokio::test]
async fn bootstrap_installs_the_reference_layout() {
    let w = World::new().await;
    let c = w.client().await;
    let tables: Vec<String> = c
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'sync' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "bundle_capture_stage",
            "bundle_log",
            "bundle_rows",
            "meta",
            "push_session_rows",
            "push_sessions",
            "row_state",
            "scope_state",
            "snapshot_session_rows",
            "snapshot_sessions",
            "source_state",
            "table_catalog",
            "user_state"
        ]
    );
    let constraints: Vec<String> = c
        .query(
            "SELECT conname::text FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
             WHERE n.nspname = 'sync' AND contype IN ('c', 'u', 'f') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in [
        "table_catalog_schema_table_key",
        "table_catalog_sync_key_kind_chk",
        "user_state_bundle_seq_chk",
        "user_state_retained_floor_chk",
        "scope_state_code_chk",
        "scope_state_fields_chk",
        "source_state_state_chk",
        "source_state_max_committed_chk",
        "source_state_active_chk",
        "source_state_reserved_chk",
        "source_state_retired_chk",
        "bundle_capture_stage_op_code_chk",
        "bundle_capture_stage_payload_by_op_chk",
        "bundle_log_source_tuple_key",
        "bundle_rows_bundle_fk",
        "bundle_rows_op_code_chk",
        "bundle_rows_payload_by_op_chk",
        "push_sessions_source_tuple_key",
        "push_sessions_row_count_chk",
        "push_session_rows_op_code_chk",
        "push_session_rows_payload_by_op_chk",
        "snapshot_session_rows_logical_row_key",
    ] {
        assert!(
            constraints.iter().any(|c| c == name),
            "missing constraint {name}"
        );
    }
    let indexes: Vec<String> = c
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'sync'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in [
        "bcs_tx_user_ordinal_idx",
        "rs_user_live_snapshot_idx",
        "ps_expires_at_idx",
        "ss_expires_at_idx",
        "ssr_snapshot_table_key_idx",
    ] {
        assert!(indexes.iter().any(|i| i == name), "missing index {name}");
    }
    for legacy in ["br_user_bundle_key_idx", "rs_user_table_bundle_idx"] {
        assert!(
            !indexes.iter().any(|i| i == legacy),
            "legacy index {legacy}"
        );
    }
    let sequences: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_sequences WHERE schemaname = 'sync' AND sequencename IN
             ('accepted_push_replay_seq', 'rejected_registered_write_seq', 'history_pruned_error_seq')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sequences, 3);
    let legacy: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'sync' AND
             ((table_name = 'snapshot_sessions' AND column_name = 'last_accessed_at')
              OR (table_name = 'user_state' AND column_name = 'updated_at')
              OR (table_name = 'scope_state' AND column_name = 'state'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(legacy, 0);
    assert!(
        c.query_one("SELECT to_regclass('sync.applied_pushes') IS NULL", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    );
    let meta = c
        .query_one(
            "SELECT singleton_key, protocol_label, layout_name FROM sync.meta",
            &[],
        )
        .await
        .unwrap();
    assert!(meta.get::<_, bool>(0));
    assert_eq!(meta.get::<_, String>(1), "v1");
    assert_eq!(meta.get::<_, String>(2), "server_postgres_sync_v1");
    let catalog: Vec<(i32, String, i16)> = c
        .query("SELECT table_id, schema_name || '.' || table_name, sync_key_kind FROM sync.table_catalog ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        catalog,
        vec![
            (1, "business.cycle_a".to_owned(), 2),
            (2, "business.cycle_b".to_owned(), 2),
            (3, "business.docs".to_owned(), 2),
            (4, "business.posts".to_owned(), 1),
            (5, "business.users".to_owned(), 1),
        ]
    );
    let triggers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname IN ('oversync_bundle_owner_guard', 'oversync_bundle_capture_row')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 10);
}

#[tokio::test]
async fn bootstrap_twice_is_idempotent() {
    let w = World::new().await;
    w.service.bootstrap().await.unwrap();
    assert_eq!(w.count("SELECT count(*) FROM sync.table_catalog").await, 5);
    assert_eq!(w.count("SELECT count(*) FROM sync.meta").await, 1);
}

#[tokio::test]
async fn a_second_service_accepts_the_existing_layout() {
    let w = World::new().await;
    let config = ServiceConfig {
        registered_tables: business_tables(),
        ..ServiceConfig::default()
    };
    let second = SyncService::new(pool(&w.db), config).unwrap();
    second.bootstrap().await.unwrap();
    assert_eq!(second.catalog().tables().len(), 5);
}

#[tokio::test]
async fn direct_writes_without_bundle_context_are_rejected_and_counted() {
    let w = World::new().await;
    let c = w.client().await;
    let err = c
        .execute(
            "INSERT INTO business.docs (_sync_scope_id, id) VALUES ('u', 'x')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("requires an oversync sync bundle context")
    );
    assert_eq!(
        w.service
            .status()
            .await
            .unwrap()
            .rejected_registered_write_count,
        1
    );
}

#[tokio::test]
async fn duplicate_registrations_are_rejected() {
    let mut tables = t("items", "id");
    tables.push(RegisteredTable::new("APP", " Items ", "id"));
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text, PRIMARY KEY (_sync_scope_id, id));",
        tables,
        &["app.items", "more than once"],
    )
    .await;
}

#[tokio::test]
async fn two_sync_key_columns_are_rejected() {
    let tables = vec![RegisteredTable {
        schema: "app".into(),
        table: "items".into(),
        sync_key_columns: vec!["id".into(), "other".into()],
    }];
    assert_unsupported(
        GOOD,
        tables,
        &["app.items", "must resolve to exactly one sync key column"],
    )
    .await;
}

#[tokio::test]
async fn an_empty_sync_key_list_is_rejected() {
    let tables = vec![RegisteredTable {
        schema: "app".into(),
        table: "items".into(),
        sync_key_columns: vec![" ".into()],
    }];
    assert_unsupported(
        GOOD,
        tables,
        &["app.items", "must resolve to exactly one sync key column"],
    )
    .await;
}

#[tokio::test]
async fn the_scope_column_cannot_be_the_sync_key() {
    assert_unsupported(
        GOOD,
        t("items", "_sync_scope_id"),
        &["app.items", "cannot use hidden scope column"],
    )
    .await;
}

#[tokio::test]
async fn a_missing_table_is_reported_by_name() {
    match bootstrap_with(GOOD, t("ghost", "id")).await {
        Err(BootstrapError::TableNotFound { table }) => assert_eq!(table, "app.ghost"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_scope_column_that_is_not_text_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id varchar NOT NULL, id text, PRIMARY KEY (_sync_scope_id, id));",
        t("items", "id"),
        &["app.items", "must define _sync_scope_id TEXT"],
    )
    .await;
}

#[tokio::test]
async fn a_missing_scope_column_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (id text PRIMARY KEY);",
        t("items", "id"),
        &["app.items", "must define _sync_scope_id TEXT"],
    )
    .await;
}

#[tokio::test]
async fn a_nullable_scope_column_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text, id text, UNIQUE (_sync_scope_id, id));",
        t("items", "id"),
        &["app.items", "must define _sync_scope_id TEXT NOT NULL"],
    )
    .await;
}

#[tokio::test]
async fn an_integer_sync_key_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id int8, PRIMARY KEY (_sync_scope_id, id));",
        t("items", "id"),
        &["app.items", "allows only uuid and text"],
    )
    .await;
}

#[tokio::test]
async fn a_table_without_unique_indexes_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text);",
        t("items", "id"),
        &["app.items", "must provide unique indexes or constraints"],
    )
    .await;
}

#[tokio::test]
async fn a_partial_unique_index_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text, PRIMARY KEY (_sync_scope_id, id));
         CREATE UNIQUE INDEX items_partial ON app.items (_sync_scope_id, id) WHERE id <> '';",
        t("items", "id"),
        &["app.items", "partial or expression unique index"],
    )
    .await;
}

#[tokio::test]
async fn an_expression_unique_index_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text, PRIMARY KEY (_sync_scope_id, id));
         CREATE UNIQUE INDEX items_expr ON app.items (_sync_scope_id, lower(id));",
        t("items", "id"),
        &["app.items", "partial or expression unique index"],
    )
    .await;
}

#[tokio::test]
async fn a_unique_index_not_led_by_the_scope_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text PRIMARY KEY);",
        t("items", "id"),
        &["app.items", "does not begin with _sync_scope_id"],
    )
    .await;
}

#[tokio::test]
async fn a_table_without_owner_scoped_identity_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text, other text, PRIMARY KEY (_sync_scope_id, other));",
        t("items", "id"),
        &["app.items", "must provide unique identity (_sync_scope_id, id)"],
    )
    .await;
}

#[tokio::test]
async fn include_columns_do_not_count_as_identity() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text);
         CREATE UNIQUE INDEX items_scope ON app.items (_sync_scope_id) INCLUDE (id);",
        t("items", "id"),
        &[
            "app.items",
            "must provide unique identity (_sync_scope_id, id)",
        ],
    )
    .await;
}

#[tokio::test]
async fn an_identity_with_include_columns_is_accepted() {
    bootstrap_with(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text, note text);
         CREATE UNIQUE INDEX items_identity ON app.items (_sync_scope_id, id) INCLUDE (note);",
        t("items", "id"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn generated_columns_are_rejected() {
    assert_unsupported(
        "CREATE SCHEMA app; CREATE TABLE app.items (_sync_scope_id text NOT NULL, id text, n int,
             doubled int GENERATED ALWAYS AS (n * 2) STORED, PRIMARY KEY (_sync_scope_id, id));",
        t("items", "id"),
        &["app.items", "generated columns (doubled)"],
    )
    .await;
}

const PARENT: &str = "CREATE SCHEMA app;
    CREATE TABLE app.parent (_sync_scope_id text NOT NULL, id text, PRIMARY KEY (_sync_scope_id, id));";

fn child_and_parent() -> Vec<RegisteredTable> {
    vec![
        RegisteredTable::new("app", "parent", "id"),
        RegisteredTable::new("app", "child", "id"),
    ]
}

#[tokio::test]
async fn a_registered_child_of_an_unregistered_parent_is_rejected() {
    let sql = format!(
        "{PARENT} CREATE TABLE app.child (_sync_scope_id text NOT NULL, id text, parent_id text,
            PRIMARY KEY (_sync_scope_id, id),
            CONSTRAINT child_parent_fk FOREIGN KEY (_sync_scope_id, parent_id) REFERENCES app.parent DEFERRABLE);"
    );
    assert_unsupported(
        &sql,
        t("child", "id"),
        &["not FK-closed", "app.child -> app.parent (child_parent_fk)"],
    )
    .await;
}

#[tokio::test]
async fn match_full_foreign_keys_are_rejected() {
    let sql = format!(
        "{PARENT} CREATE TABLE app.child (_sync_scope_id text NOT NULL, id text, parent_id text,
            PRIMARY KEY (_sync_scope_id, id),
            CONSTRAINT child_parent_fk FOREIGN KEY (_sync_scope_id, parent_id) REFERENCES app.parent MATCH FULL DEFERRABLE);"
    );
    assert_unsupported(
        &sql,
        child_and_parent(),
        &["app.child", "unsupported FK MATCH option"],
    )
    .await;
}

#[tokio::test]
async fn single_column_registered_foreign_keys_are_rejected() {
    let sql = "CREATE SCHEMA app;
        CREATE TABLE app.parent (_sync_scope_id text NOT NULL, id text, PRIMARY KEY (_sync_scope_id, id), UNIQUE (id));
        CREATE TABLE app.child (_sync_scope_id text NOT NULL, id text, parent_id text,
            PRIMARY KEY (_sync_scope_id, id),
            CONSTRAINT child_parent_fk FOREIGN KEY (parent_id) REFERENCES app.parent (id) DEFERRABLE);";
    match bootstrap_with(sql, child_and_parent()).await {
        // The parent's UNIQUE (id) is caught first; either way the child is refused.
        Err(BootstrapError::Unsupported { message, .. }) => assert!(
            message.contains("does not begin with _sync_scope_id"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn foreign_keys_without_the_parent_key_are_rejected() {
    let sql = "CREATE SCHEMA app;
        CREATE TABLE app.parent (_sync_scope_id text NOT NULL, id text, code text,
            PRIMARY KEY (_sync_scope_id, id), UNIQUE (_sync_scope_id, code));
        CREATE TABLE app.child (_sync_scope_id text NOT NULL, id text, parent_code text,
            PRIMARY KEY (_sync_scope_id, id),
            CONSTRAINT child_parent_fk FOREIGN KEY (_sync_scope_id, parent_code) REFERENCES app.parent (_sync_scope_id, code) DEFERRABLE);";
    assert_unsupported(
        sql,
        child_and_parent(),
        &[
            "scope-inclusive",
            "app.child -> app.parent (child_parent_fk)",
        ],
    )
    .await;
}

#[tokio::test]
async fn reversed_scope_inclusive_foreign_keys_are_rejected() {
    let sql = "CREATE SCHEMA app;
        CREATE TABLE app.parent (_sync_scope_id text NOT NULL, id text, PRIMARY KEY (_sync_scope_id, id));
        CREATE TABLE app.child (_sync_scope_id text NOT NULL, id text, parent_id text,
            PRIMARY KEY (_sync_scope_id, id),
            CONSTRAINT child_parent_fk FOREIGN KEY (parent_id, _sync_scope_id) REFERENCES app.parent (id, _sync_scope_id) DEFERRABLE);";
    match bootstrap_with(sql, child_and_parent()).await {
        Err(BootstrapError::Unsupported { message, .. }) => {
            assert!(message.contains("scope-inclusive"), "{message}");
            assert!(
                message.contains("app.child -> app.parent (child_parent_fk)"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn non_deferrable_foreign_keys_are_rejected() {
    let sql = format!(
        "{PARENT} CREATE TABLE app.child (_sync_scope_id text NOT NULL, id text, parent_id text,
            PRIMARY KEY (_sync_scope_id, id),
            CONSTRAINT child_parent_fk FOREIGN KEY (_sync_scope_id, parent_id) REFERENCES app.parent);"
    );
    assert_unsupported(
        &sql,
        child_and_parent(),
        &[
            "non-deferrable FK constraints",
            "app.child_parent_fk",
            "make these constraints DEFERRABLE before bootstrap",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_sync_schema_without_markers_is_an_unsupported_layout() {
    assert_unsupported(
        "CREATE SCHEMA sync; CREATE TABLE sync.other (x int);",
        vec![],
        &["unsupported layout"],
    )
    .await;
}

#[tokio::test]
async fn a_sync_schema_with_one_marker_is_rejected() {
    assert_unsupported(
        "CREATE SCHEMA sync; CREATE TABLE sync.meta (singleton_key boolean);",
        vec![],
        &["missing required marker tables"],
    )
    .await;
}

#[tokio::test]
async fn a_foreign_layout_marker_is_rejected() {
    let w = World::new().await;
    w.client()
        .await
        .batch_execute("UPDATE sync.meta SET layout_name = 'other'")
        .await
        .unwrap();
    match w.service.bootstrap().await {
        Err(BootstrapError::Unsupported { message, .. }) => assert!(message.contains("sync.meta")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_changed_registration_no_longer_matches_the_catalog() {
    let w = World::new().await;
    let mut tables = business_tables();
    tables.pop();
    let config = ServiceConfig {
        registered_tables: tables,
        ..ServiceConfig::default()
    };
    let second = SyncService::new(pool(&w.db), config).unwrap();
    match second.bootstrap().await {
        Err(BootstrapError::Unsupported { message, .. }) => {
            assert!(message.contains("sync.table_catalog"))
        }
        other => panic!("{other:?}"),
    }
}
