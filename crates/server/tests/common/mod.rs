//! Shared fixtures of the server integration tests: a `business` schema covering the shapes
//! the protocol must handle (uuid and text keys, a bytea column, a self-reference, a two-table
//! FK cycle, ON DELETE/UPDATE CASCADE), a pool over a fresh test database, and small builders
//! for push rows.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset of the shared fixtures"
)]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use oversync_protocol::wire::{
    ConnectRequest, ConnectResolution, PushRequestRow, PushSessionChunkRequest,
    PushSessionCommitResponse, PushSessionCreateRequest, PushSessionStatus,
};
use oversync_server::{Actor, PushCommitError, RegisteredTable, ServiceConfig, SyncService};
use oversync_testkit::TestDatabase;
use tokio_postgres::NoTls;

/// The business schema; every FK between registered tables is scope-inclusive and deferrable.
pub const BUSINESS_SQL: &str = r#"
CREATE SCHEMA business;
CREATE TABLE business.users (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    name TEXT,
    email TEXT,
    avatar BYTEA,
    score NUMERIC,
    PRIMARY KEY (_sync_scope_id, id)
);
CREATE TABLE business.posts (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    author_id UUID,
    body TEXT,
    PRIMARY KEY (_sync_scope_id, id),
    CONSTRAINT posts_author_fk FOREIGN KEY (_sync_scope_id, author_id)
        REFERENCES business.users (_sync_scope_id, id)
        ON DELETE CASCADE ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE business.docs (
    _sync_scope_id TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT,
    parent_id TEXT,
    PRIMARY KEY (_sync_scope_id, id),
    CONSTRAINT docs_parent_fk FOREIGN KEY (_sync_scope_id, parent_id)
        REFERENCES business.docs (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE business.cycle_a (
    _sync_scope_id TEXT NOT NULL,
    id TEXT NOT NULL,
    b_id TEXT,
    PRIMARY KEY (_sync_scope_id, id)
);
CREATE TABLE business.cycle_b (
    _sync_scope_id TEXT NOT NULL,
    id TEXT NOT NULL,
    a_id TEXT,
    PRIMARY KEY (_sync_scope_id, id),
    CONSTRAINT cycle_b_a_fk FOREIGN KEY (_sync_scope_id, a_id)
        REFERENCES business.cycle_a (_sync_scope_id, id) DEFERRABLE
);
ALTER TABLE business.cycle_a ADD CONSTRAINT cycle_a_b_fk FOREIGN KEY (_sync_scope_id, b_id)
    REFERENCES business.cycle_b (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED;
"#;

/// The registrations of [`BUSINESS_SQL`].
pub fn business_tables() -> Vec<RegisteredTable> {
    vec![
        RegisteredTable::new("business", "users", "id"),
        RegisteredTable::new("business", "posts", "id"),
        RegisteredTable::new("business", "docs", "id"),
        RegisteredTable::new("business", "cycle_a", "id"),
        RegisteredTable::new("business", "cycle_b", "id"),
    ]
}

/// A pool over `db`.
pub fn pool(db: &TestDatabase) -> Pool {
    let manager = Manager::from_config(
        db.config(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(8).build().unwrap()
}

/// A fresh database with the business schema.
pub async fn business_db() -> TestDatabase {
    let db = oversync_testkit::test_database().await.unwrap();
    db.connect()
        .await
        .unwrap()
        .batch_execute(BUSINESS_SQL)
        .await
        .unwrap();
    db
}

/// One test's world: its database and a bootstrapped service over it.
pub struct World {
    pub db: TestDatabase,
    pub service: SyncService,
}

impl World {
    /// Business schema, default config.
    pub async fn new() -> World {
        World::with_config(ServiceConfig::default()).await
    }

    /// Business schema, `config` with the business tables registered.
    pub async fn with_config(mut config: ServiceConfig) -> World {
        let db = business_db().await;
        config.registered_tables = business_tables();
        let service = SyncService::new(pool(&db), config).unwrap();
        service.bootstrap().await.unwrap();
        World { db, service }
    }

    /// A raw client for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.db.connect().await.unwrap()
    }

    /// Connects `actor` without pending rows (initializing an empty scope if needed).
    pub async fn init(&self, actor: &Actor) {
        let r = self
            .service
            .connect(
                actor,
                Some(&ConnectRequest {
                    has_local_pending_rows: false,
                }),
            )
            .await
            .unwrap();
        assert!(matches!(
            r.resolution,
            ConnectResolution::InitializeEmpty | ConnectResolution::RemoteAuthoritative
        ));
    }

    /// Create → one chunk → commit.
    pub async fn push(
        &self,
        actor: &Actor,
        source_bundle_id: i64,
        rows: Vec<PushRequestRow>,
    ) -> Result<PushSessionCommitResponse, PushCommitError> {
        let push_id = self.stage(actor, source_bundle_id, rows).await;
        self.service.commit_push_session(actor, &push_id).await
    }

    /// Create → one chunk; returns the push id.
    pub async fn stage(
        &self,
        actor: &Actor,
        source_bundle_id: i64,
        rows: Vec<PushRequestRow>,
    ) -> String {
        let created = self
            .service
            .create_push_session(
                actor,
                &PushSessionCreateRequest {
                    source_bundle_id,
                    planned_row_count: rows.len() as i64,
                    initialization_id: String::new(),
                },
            )
            .await
            .unwrap();
        assert_eq!(created.status, PushSessionStatus::Staging);
        self.service
            .upload_push_chunk(
                actor,
                &created.push_id,
                &PushSessionChunkRequest {
                    start_row_ordinal: 0,
                    rows,
                },
            )
            .await
            .unwrap();
        created.push_id
    }

    /// Counts rows of `table` visible to SQL (all owners).
    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// An actor.
pub fn actor(user: &str, source: &str) -> Actor {
    Actor::new(user, source).unwrap()
}

/// A push row from JSON text (so `payload` keeps its raw form).
pub fn row_json(json: &str) -> PushRequestRow {
    serde_json::from_str(json).unwrap()
}

/// An INSERT (`base` 0) into `business.<table>` keyed by `id`.
pub fn insert(table: &str, id: &str, payload: &str) -> PushRequestRow {
    row_json(&format!(
        r#"{{"schema":"business","table":"{table}","key":{{"id":"{id}"}},"op":"INSERT","base_row_version":0,"payload":{payload}}}"#
    ))
}

/// An UPDATE at `base`.
pub fn update(table: &str, id: &str, base: i64, payload: &str) -> PushRequestRow {
    row_json(&format!(
        r#"{{"schema":"business","table":"{table}","key":{{"id":"{id}"}},"op":"UPDATE","base_row_version":{base},"payload":{payload}}}"#
    ))
}

/// A DELETE at `base`.
pub fn delete(table: &str, id: &str, base: i64) -> PushRequestRow {
    row_json(&format!(
        r#"{{"schema":"business","table":"{table}","key":{{"id":"{id}"}},"op":"DELETE","base_row_version":{base}}}"#
    ))
}

/// Deterministic uuid text number `n`.
pub fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}
