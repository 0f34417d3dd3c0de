//! Shared fixtures: SQLite files in temp dirs and a scripted [`Transport`].
//!
//! The scripted transport returns **constructed protocol responses**; it exists only to unit
//! test the engine's state transitions between durable steps (crash recovery, lease and
//! recovery paths). It is not a substitute for end-to-end tests against a real server over
//! HTTP, which arrive with the server crate.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use oversync_protocol::hash::{self, HashRow};
use oversync_protocol::op::Op;
use oversync_protocol::wire::*;
use oversync_sqlite::{
    Client, Config, NetworkErrorKind, RetryPolicy, StatusBody, SyncTable, Transport, TransportError,
};

/// One scripted answer.
pub(crate) enum Reply {
    Capabilities(Result<CapabilitiesResponse, TransportError>),
    Connect(Result<ConnectResponse, TransportError>),
    Create(Result<PushSessionCreateResponse, TransportError>),
    Chunk(Result<PushSessionChunkResponse, TransportError>),
    Commit(Result<PushSessionCommitResponse, TransportError>),
    Rows(Result<CommittedBundleRowsResponse, TransportError>),
    Pull(Result<PullResponse, TransportError>),
    Snapshot(Result<SnapshotSession, TransportError>),
    SnapshotChunk(Result<SnapshotChunkResponse, TransportError>),
    /// `staging` for whatever row count the create asked for.
    Staging,
    /// Acknowledges whatever chunk was uploaded.
    ChunkOk,
    /// Commits the rows uploaded since the last create as `bundle_seq`, the way a correct
    /// server does, and queues the committed-rows page for the fetch that follows.
    CommitOk(i64),
}

/// A transport that answers from a script and records what it was asked.
#[derive(Default)]
pub(crate) struct Scripted {
    pub(crate) replies: Mutex<VecDeque<Reply>>,
    pub(crate) calls: Mutex<Vec<String>>,
    pub(crate) chunks: Mutex<Vec<PushSessionChunkRequest>>,
    pub(crate) creates: Mutex<Vec<PushSessionCreateRequest>>,
    /// Rows uploaded since the last create.
    pub(crate) session_chunks: Mutex<Vec<PushRequestRow>>,
    /// `(after_bundle_seq, max_bundles, target_bundle_seq)` of every pull.
    pub(crate) pulls: Mutex<Vec<(i64, i64, i64)>>,
    /// `max_rows` of every committed-bundle and snapshot-chunk request.
    pub(crate) page_sizes: Mutex<Vec<i64>>,
}

impl Scripted {
    pub(crate) fn push(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    fn next(&self, call: &str) -> Reply {
        self.calls.lock().unwrap().push(call.to_owned());
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("no scripted reply for {call}"))
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Scripts one push that a correct server accepts as `bundle_seq`.
    pub(crate) fn push_ok(&self, bundle_seq: i64) {
        self.push(Reply::Staging);
        self.push(Reply::ChunkOk);
        self.push(Reply::CommitOk(bundle_seq));
    }

    /// Scripts one push whose commit is refused with a structured conflict.
    pub(crate) fn push_conflicting(&self, conflict: PushConflictDetails) {
        self.push(Reply::Staging);
        self.push(Reply::ChunkOk);
        self.push(Reply::Commit(Err(conflict_error("commit", conflict))));
    }
}

/// A `409 push_conflict` with its `conflict` object, decoded the way the HTTP transport does.
pub(crate) fn conflict_error(
    endpoint: &'static str,
    conflict: PushConflictDetails,
) -> TransportError {
    let body = oversync_protocol::error::PushConflictResponse::new("bundle conflict", conflict);
    TransportError::Status {
        endpoint,
        status: 409,
        body: StatusBody::decode(&serde_json::to_vec(&body).unwrap()),
    }
}

pub(crate) fn network_error(endpoint: &'static str) -> TransportError {
    TransportError::Network {
        endpoint,
        kind: NetworkErrorKind::Interrupted,
        message: "connection reset".to_owned(),
    }
}

pub(crate) fn status_error(endpoint: &'static str, status: u16, code: &str) -> TransportError {
    TransportError::Status {
        endpoint,
        status,
        body: StatusBody::decode(
            format!(r#"{{"error":"{code}","message":"scripted"}}"#).as_bytes(),
        ),
    }
}

macro_rules! expect {
    ($self:ident, $variant:ident, $call:literal) => {
        match $self.next($call) {
            Reply::$variant(r) => r,
            _ => panic!("unexpected call {}", $call),
        }
    };
}

impl Transport for Scripted {
    async fn capabilities(&self, _: &str) -> Result<CapabilitiesResponse, TransportError> {
        expect!(self, Capabilities, "capabilities")
    }
    async fn connect(
        &self,
        _: &str,
        _: &ConnectRequest,
    ) -> Result<ConnectResponse, TransportError> {
        expect!(self, Connect, "connect")
    }
    async fn create_push_session(
        &self,
        _: &str,
        request: &PushSessionCreateRequest,
    ) -> Result<PushSessionCreateResponse, TransportError> {
        self.creates.lock().unwrap().push(request.clone());
        self.session_chunks.lock().unwrap().clear();
        match self.next("create") {
            Reply::Create(r) => r,
            Reply::Staging => Ok(PushSessionCreateResponse::staging(
                "push-1".to_owned(),
                request.planned_row_count,
            )),
            _ => panic!("unexpected call create"),
        }
    }
    async fn upload_push_chunk(
        &self,
        _: &str,
        _: &str,
        request: &PushSessionChunkRequest,
    ) -> Result<PushSessionChunkResponse, TransportError> {
        self.chunks.lock().unwrap().push(request.clone());
        self.session_chunks
            .lock()
            .unwrap()
            .extend(request.rows.iter().cloned());
        match self.next("chunk") {
            Reply::Chunk(r) => r,
            Reply::ChunkOk => Ok(PushSessionChunkResponse {
                push_id: "push-1".to_owned(),
                next_expected_row_ordinal: request.start_row_ordinal + request.rows.len() as i64,
            }),
            _ => panic!("unexpected call chunk"),
        }
    }
    async fn commit_push_session(
        &self,
        source_id: &str,
        _: &str,
    ) -> Result<PushSessionCommitResponse, TransportError> {
        match self.next("commit") {
            Reply::Commit(r) => r,
            Reply::CommitOk(bundle_seq) => {
                let rows = self.session_chunks.lock().unwrap().clone();
                let source_bundle_id = self
                    .creates
                    .lock()
                    .unwrap()
                    .last()
                    .unwrap()
                    .source_bundle_id;
                let (commit, page) = committed_for(&rows, bundle_seq, source_id, source_bundle_id);
                self.replies
                    .lock()
                    .unwrap()
                    .push_front(Reply::Rows(Ok(page)));
                Ok(commit)
            }
            _ => panic!("unexpected call commit"),
        }
    }
    async fn delete_push_session(&self, _: &str, _: &str) -> Result<(), TransportError> {
        self.calls.lock().unwrap().push("delete_push".to_owned());
        Ok(())
    }
    async fn committed_bundle_rows(
        &self,
        _: &str,
        _: i64,
        _: Option<i64>,
        max_rows: i64,
    ) -> Result<CommittedBundleRowsResponse, TransportError> {
        self.page_sizes.lock().unwrap().push(max_rows);
        expect!(self, Rows, "rows")
    }
    async fn pull(
        &self,
        _: &str,
        after: i64,
        max_bundles: i64,
        target: i64,
    ) -> Result<PullResponse, TransportError> {
        self.pulls
            .lock()
            .unwrap()
            .push((after, max_bundles, target));
        expect!(self, Pull, "pull")
    }
    async fn create_snapshot_session(
        &self,
        _: &str,
        _: Option<&SnapshotSessionCreateRequest>,
    ) -> Result<SnapshotSession, TransportError> {
        expect!(self, Snapshot, "snapshot")
    }
    async fn snapshot_chunk(
        &self,
        _: &str,
        _: &str,
        _: i64,
        max_rows: i64,
    ) -> Result<SnapshotChunkResponse, TransportError> {
        self.page_sizes.lock().unwrap().push(max_rows);
        expect!(self, SnapshotChunk, "snapshot_chunk")
    }
    async fn delete_snapshot_session(&self, _: &str, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
}

pub(crate) const SCHEMA_SQL: &str = "
CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE posts (id TEXT PRIMARY KEY, author TEXT REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED, title TEXT);
";

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) client: Client<std::sync::Arc<Scripted>>,
    pub(crate) transport: std::sync::Arc<Scripted>,
}

pub(crate) fn config() -> Config {
    let mut config = Config::new(
        "business",
        vec![SyncTable::new("posts", "id"), SyncTable::new("users", "id")],
    );
    config.retry_policy = RetryPolicy {
        enabled: false,
        ..RetryPolicy::default()
    };
    config
}

pub(crate) async fn fixture_with(ddl: &str, config: Config) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
    conn.execute_batch(ddl).unwrap();
    let transport = std::sync::Arc::new(Scripted::default());
    let client = Client::new(conn, std::sync::Arc::clone(&transport), config)
        .await
        .unwrap();
    Fixture {
        dir,
        client,
        transport,
    }
}

pub(crate) async fn fixture() -> Fixture {
    fixture_with(SCHEMA_SQL, config()).await
}

/// Opens and attaches through `initialize_empty`.
pub(crate) async fn attached() -> Fixture {
    attached_with(SCHEMA_SQL, config()).await
}

/// [`attached`] over `ddl` with `config`.
pub(crate) async fn attached_with(ddl: &str, config: Config) -> Fixture {
    let f = fixture_with(ddl, config).await;
    f.client.open().await.unwrap();
    f.transport.push(Reply::Capabilities(Ok(capabilities())));
    f.transport
        .push(Reply::Connect(Ok(ConnectResponse::initialize_empty())));
    f.client.attach("user-1").await.unwrap();
    f
}

pub(crate) fn capabilities() -> CapabilitiesResponse {
    CapabilitiesResponse {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        schema_version: 1,
        app_name: String::new(),
        registered_tables: Vec::new(),
        registered_table_specs: Vec::new(),
        features: reference_features(false),
        bundle_limits: BundleLimits::default(),
    }
}

pub(crate) async fn exec(client: &Client<std::sync::Arc<Scripted>>, sql: &'static str) {
    client
        .with_connection(move |c| c.execute_batch(sql))
        .await
        .unwrap()
        .unwrap();
}

/// Runs `sql` (built at run time) on the client's connection.
pub(crate) async fn exec_owned(client: &Client<std::sync::Arc<Scripted>>, sql: String) {
    client
        .with_connection(move |c| c.execute_batch(&sql))
        .await
        .unwrap()
        .unwrap();
}

pub(crate) async fn query<T: rusqlite::types::FromSql + Send + 'static>(
    client: &Client<std::sync::Arc<Scripted>>,
    sql: &'static str,
) -> Vec<T> {
    client
        .with_connection(move |c| {
            let mut stmt = c.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<Vec<T>, _>>()
                .unwrap()
        })
        .await
        .unwrap()
}

/// The committed bundle a correct server returns for `chunks` (one row per uploaded row).
pub(crate) fn committed_for(
    rows: &[PushRequestRow],
    bundle_seq: i64,
    source_id: &str,
    source_bundle_id: i64,
) -> (PushSessionCommitResponse, CommittedBundleRowsResponse) {
    let bundle_rows: Vec<BundleRow> = rows
        .iter()
        .map(|r| BundleRow {
            schema: r.schema.clone(),
            table: r.table.clone(),
            key: r
                .key
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
            op: Op::parse_exact(&r.op).unwrap(),
            row_version: bundle_seq,
            payload: r.payload.clone(),
        })
        .collect();
    let keys: Vec<BTreeMap<String, String>> = bundle_rows.iter().map(|r| r.key.clone()).collect();
    let digest = hash::bundle_digest(bundle_rows.iter().zip(&keys).map(|(r, key)| HashRow {
        schema: &r.schema,
        table: &r.table,
        key,
        op: r.op,
        row_version: r.row_version,
        payload: r.payload.as_ref().map(|p| p.get().as_bytes()),
    }))
    .unwrap();
    let commit = PushSessionCommitResponse {
        bundle_seq,
        source_id: source_id.to_owned(),
        source_bundle_id,
        row_count: rows.len() as i64,
        bundle_hash: digest.hash.to_hex(),
    };
    let page = CommittedBundleRowsResponse {
        bundle_seq,
        source_id: source_id.to_owned(),
        source_bundle_id,
        row_count: rows.len() as i64,
        bundle_hash: digest.hash.to_hex(),
        next_row_ordinal: rows.len() as i64 - 1,
        has_more: false,
        rows: bundle_rows,
    };
    (commit, page)
}

/// `bundle` with the `row_count` and `bundle_hash` a correct server sends for its rows.
/// A sealed bundle of `rows` from another device, `source_bundle_id` = `bundle_seq` = `seq`.
pub(crate) fn bundle(seq: i64, rows: Vec<BundleRow>) -> Bundle {
    sealed(Bundle {
        bundle_seq: seq,
        source_id: "other-device".to_owned(),
        source_bundle_id: seq,
        row_count: 0,
        bundle_hash: String::new(),
        rows,
    })
}

/// A [`bundle`] with one `business` row of `table`, keyed `id`, at version `seq`.
pub(crate) fn one_row_bundle(seq: i64, table: &str, id: &str, op: Op, payload: &str) -> Bundle {
    bundle(
        seq,
        vec![BundleRow {
            schema: "business".to_owned(),
            table: table.to_owned(),
            key: BTreeMap::from([("id".to_owned(), id.to_owned())]),
            op,
            row_version: seq,
            payload: Some(serde_json::value::RawValue::from_string(payload.to_owned()).unwrap()),
        }],
    )
}

pub(crate) fn sealed(mut bundle: Bundle) -> Bundle {
    let digest = hash::bundle_digest(bundle.rows.iter().map(|r| HashRow {
        schema: &r.schema,
        table: &r.table,
        key: &r.key,
        op: r.op,
        row_version: r.row_version,
        payload: r.payload.as_ref().map(|p| p.get().as_bytes()),
    }))
    .unwrap();
    bundle.row_count = bundle.rows.len() as i64;
    bundle.bundle_hash = digest.hash.to_hex();
    bundle
}

/// An empty snapshot at `bundle_seq`, as session and its only chunk.
pub(crate) fn empty_snapshot(bundle_seq: i64) -> (SnapshotSession, SnapshotChunkResponse) {
    (
        SnapshotSession {
            snapshot_id: "snap-1".to_owned(),
            snapshot_bundle_seq: bundle_seq,
            row_count: 0,
            byte_count: 0,
            expires_at: "2026-03-24T18:00:00Z".to_owned(),
        },
        SnapshotChunkResponse {
            snapshot_id: "snap-1".to_owned(),
            snapshot_bundle_seq: bundle_seq,
            rows: Vec::new(),
            next_row_ordinal: 0,
            has_more: false,
        },
    )
}
