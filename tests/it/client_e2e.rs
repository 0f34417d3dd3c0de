//! End-to-end tests of the SQLite client (`oversync-sqlite`) against the example server: real
//! HTTP, a real PostgreSQL database, real SQLite files in a temporary directory, and the
//! client-side schema of the example (05-example-server.md §8, all eight tables).
//!
//! Agreement is checked by content, never by counts: every table of every device is dumped to
//! a canonical form (UUIDs as dashed text, BLOBs as hex, timestamps as the server renders
//! them, reals through binary64) and compared with the same dump of PostgreSQL's `business.*`
//! rows of the user's scope. Crashes are simulated by dropping the `Client` (and with it its
//! connection) at a step, then reopening the same file: a step is interrupted either by the
//! transport wrapper [`Faulty`] (a request never sent, or sent with its response lost, after
//! which the "dead" process sends nothing more) or by a TEMP trigger on the client's own
//! connection that aborts one of its local transactions. The device harness (dumps, [`Faulty`],
//! [`Device`]) is shared with the randomized `convergence` suite.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oversync_example::schema::CLIENT_SCHEMA;
use oversync_protocol::wire::{
    CapabilitiesResponse, CommittedBundleRowsResponse, ConnectRequest, ConnectResponse,
    PullResponse, PushSessionChunkRequest, PushSessionChunkResponse, PushSessionCommitResponse,
    PushSessionCreateRequest, PushSessionCreateResponse, SnapshotChunkResponse, SnapshotSession,
    SnapshotSessionCreateRequest,
};
use oversync_sqlite::{
    AttachOutcome, AttachStatus, Client, Config, DetachOutcome, HttpOptions, HttpTransport,
    NetworkErrorKind, PushOutcome, RemoteOutcome, Resolver, ServerWins, StaticToken, SyncTable,
    Transport, TransportError,
};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::support::TestServer;

// --- schema --------------------------------------------------------------------------------

/// How a column is rendered in a dump, chosen so that equal data on both sides renders equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// TEXT locally, text on the server.
    Text,
    /// TEXT (dashed UUID) locally, `uuid` on the server.
    Uuid,
    /// BLOB (16 bytes) locally, `uuid` on the server.
    UuidBlob,
    /// INTEGER locally, `bigint` on the server.
    Int,
    /// REAL locally, `double precision` on the server.
    Real,
    /// BLOB locally, `bytea` on the server.
    Bytes,
    /// TEXT locally, `timestamptz` on the server (rendered with `to_jsonb`, as the server does).
    Time,
}

use Kind::{Bytes, Int, Real, Text, Time, Uuid, UuidBlob};

/// The eight managed tables in configuration order, with their columns.
pub(crate) const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "users",
        &[
            ("id", Uuid),
            ("name", Text),
            ("email", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    (
        "posts",
        &[
            ("id", Uuid),
            ("title", Text),
            ("content", Text),
            ("author_id", Uuid),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    (
        "categories",
        &[("id", Uuid), ("name", Text), ("parent_id", Uuid)],
    ),
    (
        "teams",
        &[("id", Uuid), ("name", Text), ("captain_member_id", Uuid)],
    ),
    (
        "team_members",
        &[("id", Uuid), ("name", Text), ("team_id", Uuid)],
    ),
    (
        "files",
        &[("id", UuidBlob), ("name", Text), ("data", Bytes)],
    ),
    (
        "file_reviews",
        &[("id", UuidBlob), ("review", Text), ("file_id", UuidBlob)],
    ),
    (
        "typed_rows",
        &[
            ("id", Uuid),
            ("name", Text),
            ("note", Text),
            ("count_value", Int),
            ("enabled_flag", Int),
            ("rating", Real),
            ("data", Bytes),
            ("created_at", Time),
        ],
    ),
];

/// A deterministic UUID, `n` in its last group (scopes are per user, so ids may repeat across
/// tests).
pub(crate) fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The same UUID as an SQLite BLOB literal.
fn blob_uid(n: u32) -> String {
    format!("X'000000000000400080{n:014x}'")
}

/// A timestamp in exactly the form the server renders `timestamptz` (UTC session), so that a
/// locally written value equals its synced value.
pub(crate) const T0: &str = "2026-03-24T18:42:11+00:00";

// --- dumps ---------------------------------------------------------------------------------

/// Table name → its rows, each row rendered canonically, sorted.
pub(crate) type Dump = BTreeMap<&'static str, Vec<String>>;

fn render_local(kind: Kind, value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(i) if kind == Real => format!("{:?}", i as f64),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) if kind == UuidBlob => match uuid::Uuid::from_slice(b) {
            Ok(u) => format!("{:?}", u.hyphenated().to_string()),
            Err(_) => format!("bad uuid blob {b:?}"),
        },
        ValueRef::Blob(b) => format!("{:?}", hex(b)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dump_local(conn: &Connection) -> Dump {
    let mut dump = Dump::new();
    for (table, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let mut stmt = conn
            .prepare(&format!("SELECT {} FROM {table}", names.join(", ")))
            .unwrap();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| render_local(*kind, r.get_ref(i).unwrap()))
                    .collect();
                Ok(cells.join(" | "))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        dump.insert(table, rows);
    }
    dump
}

/// The `business.*` rows of `user`'s scope, rendered like [`dump_local`].
pub(crate) async fn dump_server(server: &TestServer, user: &str) -> Dump {
    let pg = server.pool.get().await.unwrap();
    let mut dump = Dump::new();
    for (table, columns) in TABLES {
        let exprs: Vec<String> = columns
            .iter()
            .map(|(c, kind)| match kind {
                Uuid | UuidBlob | Int => format!("{c}::text"),
                Text => (*c).to_owned(),
                Real => format!("{c}::float8"),
                Bytes => format!("encode({c}, 'hex')"),
                Time => format!("to_jsonb({c}) #>> '{{}}'"),
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM business.{table} WHERE _sync_scope_id = $1",
            exprs.join(", ")
        );
        let mut rows: Vec<String> = pg
            .query(&sql, &[&user])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let cells: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| match kind {
                        Real => r
                            .get::<_, Option<f64>>(i)
                            .map_or_else(|| "NULL".to_owned(), |f| format!("{f:?}")),
                        Int => r
                            .get::<_, Option<String>>(i)
                            .unwrap_or_else(|| "NULL".to_owned()),
                        _ => r
                            .get::<_, Option<String>>(i)
                            .map_or_else(|| "NULL".to_owned(), |s| format!("{s:?}")),
                    })
                    .collect();
                cells.join(" | ")
            })
            .collect();
        rows.sort();
        dump.insert(table, rows);
    }
    dump
}

fn row_total(dump: &Dump) -> usize {
    dump.values().map(Vec::len).sum()
}

/// `(source_id, source_bundle_id)` of every retained bundle of `user`, in `bundle_seq` order.
async fn bundle_log(server: &TestServer, user: &str) -> Vec<(String, i64)> {
    let pg = server.pool.get().await.unwrap();
    pg.query(
        "SELECT bl.source_id, bl.source_bundle_id
         FROM sync.bundle_log bl JOIN sync.user_state us ON us.user_pk = bl.user_pk
         WHERE us.user_id = $1 ORDER BY bl.bundle_seq",
        &[&user],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

// --- fault injection -----------------------------------------------------------------------

/// How the request chosen to "crash" behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The process dies before the request leaves.
    BeforeSend,
    /// The request reaches the server; the process dies before it reads the response.
    ResponseLost,
}

/// Something the test does at a chosen moment of an operation (e.g. the server prunes
/// history while a push is in flight).
type Hook = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Default)]
struct Plan {
    calls: u32,
    crash_at: Option<(u32, Cut)>,
    /// Crash at the first request to this endpoint.
    crash_on: Option<(&'static str, Cut)>,
    /// Runs once, just before the first request to this endpoint.
    before: Option<(&'static str, Hook)>,
    dead: bool,
    log: Vec<&'static str>,
}

/// A [`Transport`] over the real [`HttpTransport`] that can stop at its n-th request (or its
/// first request to one endpoint): after that request it behaves like a dead process (every
/// later call fails without being sent).
#[derive(Clone)]
pub(crate) struct Faulty {
    inner: HttpTransport,
    plan: Arc<Mutex<Plan>>,
}

impl Faulty {
    async fn call<R>(
        &self,
        endpoint: &'static str,
        request: impl Future<Output = Result<R, TransportError>>,
    ) -> Result<R, TransportError> {
        let hook = {
            let mut plan = self.plan.lock().unwrap();
            match &plan.before {
                Some((e, _)) if *e == endpoint && !plan.dead => plan.before.take().map(|h| h.1),
                _ => None,
            }
        };
        if let Some(hook) = hook {
            hook.await;
        }
        let cut = {
            let mut plan = self.plan.lock().unwrap();
            if plan.dead {
                None
            } else {
                plan.calls += 1;
                plan.log.push(endpoint);
                let by_endpoint = match plan.crash_on {
                    Some((e, cut)) if e == endpoint => Some(cut),
                    _ => None,
                };
                match (plan.crash_at, by_endpoint) {
                    (Some((n, cut)), _) if n == plan.calls => {
                        plan.dead = true;
                        Some(Some(cut))
                    }
                    (_, Some(cut)) => {
                        plan.dead = true;
                        Some(Some(cut))
                    }
                    _ => Some(None),
                }
            }
        };
        let crashed = || TransportError::Network {
            endpoint,
            kind: NetworkErrorKind::Other,
            message: "injected crash".to_owned(),
        };
        match cut {
            None => Err(crashed()),
            Some(None) => request.await,
            Some(Some(Cut::BeforeSend)) => Err(crashed()),
            Some(Some(Cut::ResponseLost)) => {
                let _ = request.await;
                Err(crashed())
            }
        }
    }
}

impl Transport for Faulty {
    async fn capabilities(&self, source_id: &str) -> Result<CapabilitiesResponse, TransportError> {
        self.call("capabilities", self.inner.capabilities(source_id))
            .await
    }

    async fn connect(
        &self,
        source_id: &str,
        request: &ConnectRequest,
    ) -> Result<ConnectResponse, TransportError> {
        self.call("connect", self.inner.connect(source_id, request))
            .await
    }

    async fn create_push_session(
        &self,
        source_id: &str,
        request: &PushSessionCreateRequest,
    ) -> Result<PushSessionCreateResponse, TransportError> {
        self.call(
            "push create",
            self.inner.create_push_session(source_id, request),
        )
        .await
    }

    async fn upload_push_chunk(
        &self,
        source_id: &str,
        push_id: &str,
        request: &PushSessionChunkRequest,
    ) -> Result<PushSessionChunkResponse, TransportError> {
        self.call(
            "push chunk",
            self.inner.upload_push_chunk(source_id, push_id, request),
        )
        .await
    }

    async fn commit_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> Result<PushSessionCommitResponse, TransportError> {
        self.call(
            "push commit",
            self.inner.commit_push_session(source_id, push_id),
        )
        .await
    }

    async fn delete_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> Result<(), TransportError> {
        self.call(
            "push delete",
            self.inner.delete_push_session(source_id, push_id),
        )
        .await
    }

    async fn committed_bundle_rows(
        &self,
        source_id: &str,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        max_rows: i64,
    ) -> Result<CommittedBundleRowsResponse, TransportError> {
        self.call(
            "committed rows",
            self.inner
                .committed_bundle_rows(source_id, bundle_seq, after_row_ordinal, max_rows),
        )
        .await
    }

    async fn pull(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
        max_bundles: i64,
        target_bundle_seq: i64,
    ) -> Result<PullResponse, TransportError> {
        self.call(
            "pull",
            self.inner
                .pull(source_id, after_bundle_seq, max_bundles, target_bundle_seq),
        )
        .await
    }

    async fn create_snapshot_session(
        &self,
        source_id: &str,
        request: Option<&SnapshotSessionCreateRequest>,
    ) -> Result<SnapshotSession, TransportError> {
        self.call(
            "snapshot create",
            self.inner.create_snapshot_session(source_id, request),
        )
        .await
    }

    async fn snapshot_chunk(
        &self,
        source_id: &str,
        snapshot_id: &str,
        after_row_ordinal: i64,
        max_rows: i64,
    ) -> Result<SnapshotChunkResponse, TransportError> {
        self.call(
            "snapshot chunk",
            self.inner
                .snapshot_chunk(source_id, snapshot_id, after_row_ordinal, max_rows),
        )
        .await
    }

    async fn delete_snapshot_session(
        &self,
        source_id: &str,
        snapshot_id: &str,
    ) -> Result<(), TransportError> {
        self.call(
            "snapshot delete",
            self.inner.delete_snapshot_session(source_id, snapshot_id),
        )
        .await
    }
}

// --- devices -------------------------------------------------------------------------------

/// Page sizes of a device: small ones multiply the steps a crash can interrupt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pages {
    pub(crate) upload: u32,
    pub(crate) download: u32,
    pub(crate) snapshot: u32,
}

const DEFAULT_PAGES: Pages = Pages {
    upload: 1000,
    download: 1000,
    snapshot: 1000,
};

/// One SQLite file with a client of one user over real HTTP.
pub(crate) struct Device {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) user: String,
    base_url: String,
    token: String,
    pages: Pages,
    resolver: Arc<dyn Resolver>,
    plan: Arc<Mutex<Plan>>,
    client: Option<Client<Faulty>>,
}

impl Device {
    /// A new database file `name`.sqlite in `dir` with the example schema and an opened (not
    /// attached) client.
    async fn new(server: &TestServer, dir: &Path, name: &str, user: &str, pages: Pages) -> Device {
        Device::with_resolver(server, dir, name, user, pages, Arc::new(ServerWins)).await
    }

    /// [`Device::new`] with `resolver` deciding push conflicts (kept across restarts).
    pub(crate) async fn with_resolver(
        server: &TestServer,
        dir: &Path,
        name: &str,
        user: &str,
        pages: Pages,
        resolver: Arc<dyn Resolver>,
    ) -> Device {
        let mut device = Device {
            name: name.to_owned(),
            path: dir.join(format!("{name}.sqlite")),
            user: user.to_owned(),
            base_url: server.url(""),
            token: server.token(user).await,
            pages,
            resolver,
            plan: Arc::default(),
            client: None,
        };
        device.start().await;
        device
    }

    /// (Re)opens the file with a fresh connection and client, and runs `open`.
    pub(crate) async fn start(&mut self) {
        let conn = Connection::open(&self.path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute_batch(CLIENT_SCHEMA).unwrap();
        self.plan = Arc::default();
        let transport = Faulty {
            inner: HttpTransport::new(
                &self.base_url,
                Arc::new(StaticToken(self.token.clone())),
                &HttpOptions::default(),
            )
            .unwrap(),
            plan: Arc::clone(&self.plan),
        };
        let mut config = Config::new(
            "business",
            TABLES
                .iter()
                .map(|(t, _)| SyncTable::new(*t, "id"))
                .collect(),
        );
        config.upload_limit = self.pages.upload;
        config.download_limit = self.pages.download;
        config.snapshot_chunk_rows = self.pages.snapshot;
        config.resolver = Arc::clone(&self.resolver);
        let client = Client::new(conn, transport, config).await.unwrap();
        client.open().await.unwrap();
        self.client = Some(client);
    }

    pub(crate) fn client(&self) -> &Client<Faulty> {
        self.client.as_ref().unwrap()
    }

    /// The client, unless the device was killed and not restarted.
    pub(crate) fn client_if_running(&self) -> Option<&Client<Faulty>> {
        self.client.as_ref()
    }

    /// Attaches to the device's user and asserts it connected.
    pub(crate) async fn attach(&self) -> AttachOutcome {
        let result = self.client().attach(&self.user).await.unwrap();
        assert_eq!(result.status, AttachStatus::Connected, "{}", self.name);
        result.outcome.unwrap()
    }

    /// Makes the `n`-th request from now the crash point.
    pub(crate) fn crash_at_request(&self, n: u32, cut: Cut) {
        let mut plan = self.plan.lock().unwrap();
        let n = plan.calls + n;
        plan.crash_at = Some((n, cut));
    }

    /// Crashes at the first request to `endpoint` from now on.
    fn crash_on(&self, endpoint: &'static str, cut: Cut) {
        self.plan.lock().unwrap().crash_on = Some((endpoint, cut));
    }

    /// Runs `hook` once, just before the first request to `endpoint`.
    fn before(&self, endpoint: &'static str, hook: impl Future<Output = ()> + Send + 'static) {
        self.plan.lock().unwrap().before = Some((endpoint, Box::pin(hook)));
    }

    /// Requests sent (or attempted) since the client was started, by endpoint.
    pub(crate) fn requests(&self) -> Vec<&'static str> {
        self.plan.lock().unwrap().log.clone()
    }

    /// Whether the planned request crash happened.
    pub(crate) fn crashed(&self) -> bool {
        self.plan.lock().unwrap().dead
    }

    /// The process dies: the client and its connection are dropped, nothing is closed cleanly.
    pub(crate) fn kill(&mut self) {
        self.client = None;
    }

    /// Kills and restarts the client on the same file, then resumes the binding (no network).
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.start().await;
        assert_eq!(self.attach().await, AttachOutcome::ResumedAttachedState);
    }

    /// Kills and restarts the client on the same file without attaching.
    async fn restart_unattached(&mut self) {
        self.kill();
        self.start().await;
    }

    /// Runs `sql` through the client's connection (captured by its triggers).
    pub(crate) async fn exec(&self, sql: &str) {
        let sql = sql.to_owned();
        self.client()
            .with_connection(move |c| c.execute_batch(&sql))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Scalar query through the client's connection.
    async fn query_i64(&self, sql: &str) -> i64 {
        let sql = sql.to_owned();
        self.client()
            .with_connection(move |c| c.query_row(&sql, [], |r| r.get(0)))
            .await
            .unwrap()
            .unwrap()
    }

    pub(crate) async fn dump(&self) -> Dump {
        self.client()
            .with_connection(|c| dump_local(c))
            .await
            .unwrap()
    }

    async fn source_id(&self) -> String {
        self.client().source_info().await.unwrap().current_source_id
    }

    /// Sync state for failure messages (STYLE.md §11: print diagnostics before failing).
    pub(crate) async fn diagnostics(&self) -> String {
        self.client()
            .with_connection(|c| {
                c.query_row(
                    "SELECT (SELECT count(*) FROM _sync_dirty_rows),
                            (SELECT count(*) FROM _sync_outbox_rows),
                            (SELECT state FROM _sync_outbox_bundle),
                            (SELECT last_bundle_seq_seen FROM _sync_attachment_state),
                            (SELECT rebuild_required FROM _sync_attachment_state),
                            (SELECT kind FROM _sync_operation_state)",
                    [],
                    |r| {
                        Ok(format!(
                            "dirty={} outbox_rows={} outbox={} checkpoint={} rebuild_required={} operation={}",
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, String>(5)?
                        ))
                    },
                )
                .unwrap()
            })
            .await
            .unwrap()
    }
}

/// Asserts every device holds exactly the server's rows of `user`, and returns that dump.
async fn assert_converged(server: &TestServer, user: &str, devices: &[&Device]) -> Dump {
    let expected = dump_server(server, user).await;
    for device in devices {
        let local = device.dump().await;
        if local != expected {
            panic!(
                "{} differs from PostgreSQL ({})\nlocal:  {local:#?}\nserver: {expected:#?}",
                device.name,
                device.diagnostics().await
            );
        }
    }
    expected
}

async fn sync_ok(device: &Device) {
    if let Err(e) = device.client().sync().await {
        panic!(
            "{}: sync failed: {e} ({})",
            device.name,
            device.diagnostics().await
        );
    }
}

// --- scenarios -----------------------------------------------------------------------------

/// Inserts across all eight tables (FK parents and children, BLOB keys, every typed column).
fn seed_rows_sql() -> String {
    format!(
        "INSERT INTO users VALUES ('{u1}', 'Ada', 'ada@example.com', '{T0}', '{T0}');
         INSERT INTO users VALUES ('{u2}', 'Bob', 'bob@example.com', '{T0}', '{T0}');
         INSERT INTO posts VALUES ('{p1}', 'Hello', 'first post', '{u1}', '{T0}', '{T0}');
         INSERT INTO posts VALUES ('{p2}', 'Orphan', 'no author', NULL, '{T0}', '{T0}');
         INSERT INTO categories VALUES ('{c1}', 'root', NULL);
         INSERT INTO categories VALUES ('{c2}', 'child', '{c1}');
         INSERT INTO teams VALUES ('{t1}', 'red', NULL);
         INSERT INTO team_members VALUES ('{m1}', 'Cy', '{t1}');
         UPDATE teams SET captain_member_id = '{m1}' WHERE id = '{t1}';
         INSERT INTO files VALUES ({f1}, 'a.bin', X'00112233445566778899aabbccddeeff');
         INSERT INTO files VALUES ({f2}, 'empty.bin', X'');
         INSERT INTO file_reviews VALUES ({r1}, 'looks fine', {f1});
         INSERT INTO typed_rows VALUES ('{y1}', 'typed', 'a note', 42, 1, 4.5, X'cafe', '{T0}');
         INSERT INTO typed_rows VALUES ('{y2}', 'nulls', NULL, NULL, 0, NULL, NULL, NULL);",
        u1 = uid(1),
        u2 = uid(2),
        p1 = uid(11),
        p2 = uid(12),
        c1 = uid(21),
        c2 = uid(22),
        t1 = uid(31),
        m1 = uid(41),
        f1 = blob_uid(51),
        f2 = blob_uid(52),
        r1 = blob_uid(61),
        y1 = uid(71),
        y2 = uid(72),
    )
}

/// Updates, deletes (one cascading) and inserts across tables, on top of [`seed_rows_sql`].
fn edit_rows_sql() -> String {
    format!(
        "UPDATE users SET name = 'Ada L.', updated_at = '2026-03-25T08:00:00.5+00:00' WHERE id = '{u1}';
         DELETE FROM posts WHERE id = '{p2}';
         INSERT INTO posts VALUES ('{p3}', 'Second', 'by Bob', '{u2}', '{T0}', '{T0}');
         DELETE FROM categories WHERE id = '{c1}';
         UPDATE files SET data = X'ffff' WHERE id = {f1};
         INSERT INTO file_reviews VALUES ({r2}, 'second look', {f2});
         UPDATE typed_rows SET count_value = -7, rating = 0.1, enabled_flag = 0 WHERE id = '{y1}';",
        u1 = uid(1),
        u2 = uid(2),
        p2 = uid(12),
        p3 = uid(13),
        c1 = uid(21),
        f1 = blob_uid(51),
        f2 = blob_uid(52),
        r2 = blob_uid(62),
        y1 = uid(71),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_round_trips_every_table_and_type_into_postgresql() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    assert_eq!(a.attach().await, AttachOutcome::StartedEmpty);
    a.exec(&seed_rows_sql()).await;
    let intended = a.dump().await;
    sync_ok(&a).await;
    a.exec(&edit_rows_sql()).await;
    let intended_after_edits = a.dump().await;
    sync_ok(&a).await;

    let synced = assert_converged(&server, "alice", &[&a]).await;
    assert_ne!(intended, intended_after_edits);
    assert_eq!(
        synced, intended_after_edits,
        "local writes reached PostgreSQL unchanged"
    );
    assert_eq!(
        synced["categories"].len(),
        0,
        "deleting the root cascaded to its child"
    );
    assert_eq!(synced["files"].len(), 2);
    let source = a.source_id().await;
    assert_eq!(
        bundle_log(&server, "alice").await,
        vec![(source.clone(), 1), (source, 2)]
    );
}

// --- FK graphs -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_referencing_categories_inserted_child_first_converge() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.attach().await;
    let b = Device::new(&server, dir.path(), "b", "alice", DEFAULT_PAGES).await;
    assert_eq!(b.attach().await, AttachOutcome::UsedRemoteState);
    // Leaves before their parents, in one local transaction (FKs are deferred).
    a.exec(&format!(
        "BEGIN;
         INSERT INTO categories VALUES ('{c3}', 'leaf', '{c2}');
         INSERT INTO categories VALUES ('{c2}', 'middle', '{c1}');
         INSERT INTO categories VALUES ('{c1}', 'root', NULL);
         INSERT INTO categories VALUES ('{c4}', 'self loop', '{c4}');
         COMMIT;",
        c1 = uid(1),
        c2 = uid(2),
        c3 = uid(3),
        c4 = uid(4),
    ))
    .await;
    let intended = a.dump().await;
    sync_ok(&a).await;
    sync_ok(&b).await;
    let synced = assert_converged(&server, "alice", &[&a, &b]).await;
    assert_eq!(synced, intended);
    assert_eq!(synced["categories"].len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_cycle_inserted_child_first_and_parent_first_converges() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.attach().await;
    let b = Device::new(&server, dir.path(), "b", "alice", DEFAULT_PAGES).await;
    assert_eq!(b.attach().await, AttachOutcome::UsedRemoteState);
    a.exec(&format!(
        "BEGIN;
         -- child first: the member names a team that does not exist yet
         INSERT INTO team_members VALUES ('{m1}', 'Cy', '{t1}');
         INSERT INTO teams VALUES ('{t1}', 'red', '{m1}');
         -- parent first: the team names a captain that does not exist yet
         INSERT INTO teams VALUES ('{t2}', 'blue', '{m2}');
         INSERT INTO team_members VALUES ('{m2}', 'Di', '{t2}');
         INSERT INTO team_members VALUES ('{m3}', 'Ed', '{t2}');
         COMMIT;",
        t1 = uid(1),
        t2 = uid(2),
        m1 = uid(11),
        m2 = uid(12),
        m3 = uid(13),
    ))
    .await;
    let intended = a.dump().await;
    sync_ok(&a).await;
    sync_ok(&b).await;
    let synced = assert_converged(&server, "alice", &[&a, &b]).await;
    assert_eq!(synced, intended);
    assert_eq!(
        (synced["teams"].len(), synced["team_members"].len()),
        (2, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascading_deletes_travel_in_one_bundle_and_converge() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    a.exec(&format!(
        "INSERT INTO categories VALUES ('{c3}', 'grandchild', '{c2}');
         INSERT INTO team_members VALUES ('{m2}', 'Di', '{t1}');",
        c2 = uid(22),
        c3 = uid(23),
        t1 = uid(31),
        m2 = uid(42),
    ))
    .await;
    sync_ok(&a).await;
    let source = a.source_id().await;
    assert_eq!(bundle_log(&server, "alice").await.len(), 1);
    let b = Device::new(&server, dir.path(), "b", "alice", DEFAULT_PAGES).await;
    assert_eq!(b.attach().await, AttachOutcome::UsedRemoteState);

    // One statement per root; SQLite cascades to every child (captured by the triggers).
    a.exec(&format!(
        "DELETE FROM categories WHERE id = '{c1}';
         DELETE FROM teams WHERE id = '{t1}';
         DELETE FROM files WHERE id = {f1};",
        c1 = uid(21),
        t1 = uid(31),
        f1 = blob_uid(51),
    ))
    .await;
    let intended = a.dump().await;
    assert!(intended["categories"].is_empty() && intended["team_members"].is_empty());
    assert!(intended["file_reviews"].is_empty());
    sync_ok(&a).await;
    sync_ok(&b).await;
    let synced = assert_converged(&server, "alice", &[&a, &b]).await;
    assert_eq!(synced, intended);
    assert_eq!(
        bundle_log(&server, "alice").await,
        vec![(source.clone(), 1), (source, 2)],
        "all cascaded deletes went up as one bundle"
    );
}

// --- insert then delete (§12 A6) -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_then_delete_of_an_unsynced_row_leaves_nothing_locally_or_on_the_server() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    let before = bundle_log(&server, "alice").await;

    a.exec(&format!(
        "INSERT INTO users VALUES ('{u9}', 'Tmp', 'tmp@example.com', '{T0}', '{T0}');
         INSERT INTO files VALUES ({f9}, 'tmp.bin', X'01');
         DELETE FROM users WHERE id = '{u9}';
         DELETE FROM files WHERE id = {f9};",
        u9 = uid(9),
        f9 = blob_uid(9),
    ))
    .await;
    let report = a.client().push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::NoChange);
    assert_eq!(
        a.query_i64("SELECT count(*) FROM _sync_dirty_rows").await,
        0
    );
    assert_eq!(
        a.query_i64("SELECT count(*) FROM _sync_row_state WHERE key_json LIKE '%00000009%'")
            .await,
        0
    );
    assert!(!report.status.pending.has_pending_sync_data);
    assert_eq!(
        bundle_log(&server, "alice").await,
        before,
        "nothing was pushed"
    );
    assert_converged(&server, "alice", &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_op_dirty_row_does_not_block_the_next_pull() {
    // §12 A6: the reference rolled back the deletion of no-op dirty rows when nothing else was
    // pushed, so the row refused every pull (`DirtyStateRejected`) until some real change.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.attach().await;
    a.exec(&format!(
        "INSERT INTO users VALUES ('{u9}', 'Tmp', 'tmp@example.com', '{T0}', '{T0}');
         DELETE FROM users WHERE id = '{u9}';",
        u9 = uid(9),
    ))
    .await;
    let report = a.client().sync().await.unwrap();
    assert_eq!(report.push_outcome, PushOutcome::NoChange);
    assert_eq!(report.remote_outcome, RemoteOutcome::AlreadyAtTarget);
    let pulled = a.client().pull_to_stable().await.unwrap();
    assert_eq!(pulled.outcome, RemoteOutcome::AlreadyAtTarget);
    let detached = a.client().detach().await.unwrap();
    assert_eq!(detached.outcome, DetachOutcome::Detached);
}

// --- crash safety --------------------------------------------------------------------------

/// Where a simulated crash interrupts the client.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Crash {
    /// At the n-th request of the operation.
    Request(u32, Cut),
    /// Inside one of the client's local transactions: a TEMP trigger on the client's
    /// connection (gone with the connection) aborts the statement, the transaction rolls back.
    Local(&'static str, &'static str),
}

/// The client's local transactions of a push, each aborted by a trigger
/// (name, `ON … [WHEN …]` clause).
pub(crate) const PUSH_LOCAL_STEPS: &[(&str, &str)] = &[
    ("freeze", "BEFORE INSERT ON _sync_outbox_rows"),
    (
        "persist committed_remote",
        "BEFORE UPDATE ON _sync_outbox_bundle WHEN NEW.state = 'committed_remote'",
    ),
    (
        "stage the first committed page",
        "BEFORE INSERT ON _sync_push_stage WHEN NEW.row_ordinal = 0",
    ),
    (
        "stage the second committed page",
        "BEFORE INSERT ON _sync_push_stage WHEN NEW.row_ordinal = 3",
    ),
    (
        "replay",
        "BEFORE UPDATE ON _sync_outbox_bundle \
         WHEN OLD.state = 'committed_remote' AND NEW.state = 'none'",
    ),
];

/// Page sizes that split a bundle of the scenarios into several chunks and pages.
pub(crate) const SMALL_PAGES: Pages = Pages {
    upload: 3,
    download: 3,
    snapshot: 3,
};

impl Device {
    /// Arms `crash` for the next operation.
    pub(crate) async fn arm(&self, crash: Crash) {
        match crash {
            Crash::Request(n, cut) => self.crash_at_request(n, cut),
            Crash::Local(name, on) => {
                self.exec(&format!(
                    "CREATE TEMP TRIGGER injected_crash {on} \
                     BEGIN SELECT RAISE(ABORT, 'injected crash: {name}'); END;"
                ))
                .await;
            }
        }
    }

    /// Whether an armed local crash fired (its trigger aborted a statement).
    pub(crate) fn crash_reached(&self, crash: Crash, error: Option<&str>) -> bool {
        match crash {
            Crash::Request(..) => self.crashed(),
            Crash::Local(..) => error.is_some_and(|e| e.contains("injected crash")),
        }
    }
}

/// One push interrupted by `crash`, then a restart from the same file and a sync. Asserts
/// that nothing was lost (device and PostgreSQL hold exactly the rows written) and nothing was
/// committed twice (the bundle log holds each of the source's bundles once). Returns whether
/// the crash point was reached (false once `n` is past the push's last request).
async fn push_crash_round(
    server: &TestServer,
    dir: &Path,
    round: usize,
    crash: Crash,
    seed: bool,
) -> bool {
    let user = format!("push-crash-{round}");
    let mut a = Device::new(server, dir, &user, &user, SMALL_PAGES).await;
    let expected_bundles;
    if seed {
        // Rows written before the first attach make this push the scope's seed bundle.
        a.exec(&seed_rows_sql()).await;
        assert_eq!(a.attach().await, AttachOutcome::SeededFromLocal);
        expected_bundles = 1;
    } else {
        a.attach().await;
        a.exec(&seed_rows_sql()).await;
        sync_ok(&a).await;
        a.exec(&edit_rows_sql()).await;
        expected_bundles = 2;
    }
    let intended = a.dump().await;
    a.arm(crash).await;
    let pushed = a.client().push_pending().await;
    let error = pushed.as_ref().err().map(ToString::to_string);
    let reached = a.crash_reached(crash, error.as_deref());
    assert_eq!(
        reached,
        pushed.is_err(),
        "{crash:?}: a push fails exactly when the crash point is reached: {pushed:?}; requests {:?}",
        a.requests()
    );
    let source = a.source_id().await;

    a.restart().await;
    sync_ok(&a).await;
    let status = a.client().sync_status().await.unwrap();
    assert!(
        !status.pending.has_pending_sync_data,
        "{crash:?}: still pending after restart and sync: {status:?} ({})",
        a.diagnostics().await
    );
    let synced = assert_converged(server, &user, &[&a]).await;
    assert_eq!(synced, intended, "{crash:?}: a write was lost");
    assert_eq!(
        bundle_log(server, &user).await,
        (1..=expected_bundles)
            .map(|n| (source.clone(), n))
            .collect::<Vec<_>>(),
        "{crash:?}: each bundle committed exactly once"
    );
    reached
}

/// Every request of the push (not sent / response lost) and every local transaction.
async fn push_crash_everywhere(seed: bool) {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut round = 0;
    for cut in [Cut::BeforeSend, Cut::ResponseLost] {
        for n in 1.. {
            round += 1;
            if !push_crash_round(&server, dir.path(), round, Crash::Request(n, cut), seed).await {
                assert!(n > 4, "a push makes at least create, chunks, commit, fetch");
                break;
            }
        }
    }
    for (name, on) in PUSH_LOCAL_STEPS {
        round += 1;
        let reached =
            push_crash_round(&server, dir.path(), round, Crash::Local(name, on), seed).await;
        assert!(reached, "the push never ran the {name} transaction");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_interrupted_at_any_step_resumes_without_loss_or_duplicate_bundle() {
    push_crash_everywhere(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_push_interrupted_at_any_step_resumes_without_loss_or_duplicate_bundle() {
    push_crash_everywhere(true).await;
}

/// A row of a hand-made push (the writer of the pull tests is a plain HTTP device).
fn user_row(op: &str, n: u32, name: &str, base: i64) -> String {
    let id = uid(n);
    let payload = if op == "DELETE" {
        String::new()
    } else {
        format!(
            r#","payload":{{"id":"{id}","name":"{name}","email":"{name}@example.com","created_at":"{T0}","updated_at":"{T0}"}}"#
        )
    };
    format!(
        r#"{{"schema":"business","table":"users","key":{{"id":"{id}"}},"op":"{op}","base_row_version":{base}{payload}}}"#
    )
}

/// Four bundles by another source of `user`: inserts, an update, a delete.
async fn write_four_bundles(server: &TestServer, user: &str) {
    let writer = server.device(user, "writer-source").await;
    let bundles = [
        format!(
            "[{},{}]",
            user_row("INSERT", 1, "u1", 0),
            user_row("INSERT", 2, "u2", 0)
        ),
        format!(
            "[{},{}]",
            user_row("UPDATE", 1, "u1b", 1),
            user_row("INSERT", 3, "u3", 0)
        ),
        format!("[{}]", user_row("DELETE", 2, "", 1)),
        format!(
            "[{},{}]",
            user_row("INSERT", 4, "u4", 0),
            user_row("UPDATE", 3, "u3b", 2)
        ),
    ];
    for (i, rows) in bundles.iter().enumerate() {
        let reply = writer.push(i as i64 + 1, rows).await;
        assert_eq!(reply.status, reqwest::StatusCode::OK, "{reply:?}");
    }
}

/// One pull (one bundle per request) interrupted by `crash`, then a restart and a sync.
async fn pull_crash_round(server: &TestServer, dir: &Path, round: usize, crash: Crash) -> bool {
    let user = format!("pull-crash-{round}");
    let mut r = Device::new(
        server,
        dir,
        &user,
        &user,
        Pages {
            download: 1,
            ..SMALL_PAGES
        },
    )
    .await;
    r.attach().await;
    write_four_bundles(server, &user).await;
    r.arm(crash).await;
    let pulled = r.client().pull_to_stable().await;
    let error = pulled.as_ref().err().map(ToString::to_string);
    let reached = r.crash_reached(crash, error.as_deref());
    assert_eq!(reached, pulled.is_err(), "{crash:?}: {pulled:?}");

    r.restart().await;
    sync_ok(&r).await;
    let synced = assert_converged(server, &user, &[&r]).await;
    assert_eq!(synced["users"].len(), 3, "{synced:#?}");
    assert_eq!(r.client().last_bundle_seq_seen().await.unwrap(), 4);
    reached
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_interrupted_at_any_step_resumes_to_the_servers_content() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut round = 0;
    for cut in [Cut::BeforeSend, Cut::ResponseLost] {
        for n in 1.. {
            round += 1;
            if !pull_crash_round(&server, dir.path(), round, Crash::Request(n, cut)).await {
                assert!(n > 4, "one request per bundle");
                break;
            }
        }
    }
    for seq in 1..=4 {
        round += 1;
        let on: &'static str = match seq {
            1 => "BEFORE UPDATE ON _sync_attachment_state WHEN NEW.last_bundle_seq_seen = 1",
            2 => "BEFORE UPDATE ON _sync_attachment_state WHEN NEW.last_bundle_seq_seen = 2",
            3 => "BEFORE UPDATE ON _sync_attachment_state WHEN NEW.last_bundle_seq_seen = 3",
            _ => "BEFORE UPDATE ON _sync_attachment_state WHEN NEW.last_bundle_seq_seen = 4",
        };
        assert!(
            pull_crash_round(&server, dir.path(), round, Crash::Local("apply bundle", on)).await
        );
    }
}

// --- client chapter §12 fixes that need a server ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_seed_commit_response_does_not_wedge_the_client() {
    // §12 A11 (a): the seed commit lands but its response is lost. The reference keeps the
    // seed lease, every later create carries `initialization_id`, the now initialised scope
    // refuses it with `push_session_invalid`, and the client never pushes again.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Device::new(&server, dir.path(), "a", "alice", SMALL_PAGES).await;
    a.exec(&seed_rows_sql()).await;
    assert_eq!(a.attach().await, AttachOutcome::SeededFromLocal);
    let intended = a.dump().await;
    let commit = {
        // Find the commit's position in this push by counting its requests once: create,
        // ceil(rows / upload) chunks, then commit.
        let rows = a.query_i64("SELECT count(*) FROM _sync_dirty_rows").await;
        u32::try_from(2 + (rows + 2) / 3).unwrap()
    };
    a.crash_at_request(commit, Cut::ResponseLost);
    a.client().push_pending().await.unwrap_err();
    assert_eq!(a.requests().last(), Some(&"push commit"));
    let source = a.source_id().await;
    assert_eq!(
        bundle_log(&server, "alice").await,
        vec![(source.clone(), 1)],
        "the seed commit landed"
    );

    a.restart().await;
    sync_ok(&a).await;
    let status = a.client().sync_status().await.unwrap();
    assert_ne!(
        status.authority,
        oversync_sqlite::Authority::PendingLocalSeed
    );
    assert!(!status.pending.has_pending_sync_data, "{status:?}");
    assert_eq!(assert_converged(&server, "alice", &[&a]).await, intended);
    assert_eq!(bundle_log(&server, "alice").await, vec![(source, 1)]);
    // Not wedged: the next change pushes normally.
    a.exec(&edit_rows_sql()).await;
    sync_ok(&a).await;
    assert_eq!(bundle_log(&server, "alice").await.len(), 2);
    assert_converged(&server, "alice", &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_switch_after_detach_pushes_under_a_fresh_source_from_bundle_one() {
    // §12 A5: the reference keeps the source, its bundle counter and the checkpoint across
    // `detach`, so the next user's first push is out of order (`source_sequence_out_of_order`)
    // and its pulls start from the previous user's checkpoint.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    a.exec(&edit_rows_sql()).await;
    let alice_rows = a.dump().await;
    let alice_source = a.source_id().await;
    let done = a.client().sync_then_detach().await.unwrap();
    assert!(done.is_success(), "{done:?}");
    assert_eq!(
        row_total(&a.dump().await),
        0,
        "detach empties the managed tables"
    );

    a.user = "bob".to_owned();
    a.token = server.token("bob").await;
    a.restart_unattached().await;
    assert_eq!(a.attach().await, AttachOutcome::StartedEmpty);
    a.exec(&format!(
        "INSERT INTO users VALUES ('{u5}', 'Eve', 'eve@example.com', '{T0}', '{T0}');",
        u5 = uid(5)
    ))
    .await;
    let bob_rows = a.dump().await;
    sync_ok(&a).await;

    let bob_source = a.source_id().await;
    assert_ne!(bob_source, alice_source);
    assert_eq!(bundle_log(&server, "bob").await, vec![(bob_source, 1)]);
    assert_eq!(a.client().last_bundle_seq_seen().await.unwrap(), 1);
    assert_eq!(assert_converged(&server, "bob", &[&a]).await, bob_rows);
    assert_eq!(dump_server(&server, "alice").await, alice_rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_inserted_and_deleted_before_attach_does_not_leave_an_unusable_seed_lease() {
    // §12 A7: a no-op dirty row made the reference report pending rows at connect, earn an
    // `initialize_local` lease, and then push nothing: the lease was never cleared, detach
    // stayed blocked and pulls failed while the scope stayed uninitialised.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.exec(&format!(
        "INSERT INTO users VALUES ('{u9}', 'Tmp', 'tmp@example.com', '{T0}', '{T0}');
         DELETE FROM users WHERE id = '{u9}';",
        u9 = uid(9),
    ))
    .await;
    a.attach().await;
    let report = a.client().sync().await.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        report.status.authority,
        oversync_sqlite::Authority::PendingLocalSeed
    );
    assert!(!report.status.pending.has_pending_sync_data, "{report:?}");
    // The scope is usable by another writer right away.
    let other = server.device("alice", "other-source").await;
    let reply = other
        .push(1, &format!("[{}]", user_row("INSERT", 1, "u1", 0)))
        .await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{reply:?}");
    sync_ok(&a).await;
    assert_eq!(
        assert_converged(&server, "alice", &[&a]).await["users"].len(),
        1
    );
    assert_eq!(
        a.client().detach().await.unwrap().outcome,
        DetachOutcome::Detached
    );
}

// --- two devices, hydrate and rebuild ------------------------------------------------------

/// Offline edits of a second device of the same user (disjoint from [`edit_rows_sql`] except
/// for one row both update, which the server-wins resolver settles).
fn other_edits_sql() -> String {
    format!(
        "BEGIN;
         UPDATE users SET email = 'bob@other.example', name = 'Bob B.' WHERE id = '{u2}';
         UPDATE users SET name = 'Ada from B' WHERE id = '{u1}';
         INSERT INTO users VALUES ('{u3}', 'Cy', 'cy@example.com', '{T0}', '{T0}');
         DELETE FROM posts WHERE id = '{p1}';
         INSERT INTO categories VALUES ('{c5}', 'new root', NULL);
         INSERT INTO categories VALUES ('{c6}', 'new child', '{c5}');
         INSERT INTO team_members VALUES ('{m2}', 'Di', '{t2}');
         INSERT INTO teams VALUES ('{t2}', 'blue', '{m2}');
         DELETE FROM files WHERE id = {f2};
         INSERT INTO files VALUES ({f3}, 'b.bin', X'0001020304');
         UPDATE typed_rows SET note = 'from B', rating = -2.25, data = X'00' WHERE id = '{y2}';
         COMMIT;",
        u1 = uid(1),
        u2 = uid(2),
        u3 = uid(3),
        p1 = uid(11),
        c5 = uid(25),
        c6 = uid(26),
        t2 = uid(32),
        m2 = uid(42),
        f2 = blob_uid(52),
        f3 = blob_uid(53),
        y2 = uid(72),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_converge_after_offline_edits() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", SMALL_PAGES).await;
    assert_eq!(a.attach().await, AttachOutcome::StartedEmpty);
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    let b = Device::new(&server, dir.path(), "b", "alice", SMALL_PAGES).await;
    assert_eq!(b.attach().await, AttachOutcome::UsedRemoteState);
    assert_converged(&server, "alice", &[&a, &b]).await;

    // Both offline: edits pile up locally on each.
    a.exec(&edit_rows_sql()).await;
    b.exec(&other_edits_sql()).await;
    let a_offline = a.dump().await;
    let b_offline = b.dump().await;

    sync_ok(&a).await;
    sync_ok(&b).await;
    sync_ok(&a).await;
    let converged = assert_converged(&server, "alice", &[&a, &b]).await;
    assert_ne!(converged, a_offline, "A received B's edits");
    assert_ne!(converged, b_offline, "B received A's edits");
    let users = converged["users"].join("\n");
    assert!(
        users.contains("Ada L."),
        "A's update won (it committed first): {users}"
    );
    assert!(users.contains("Cy") && users.contains("bob@other.example"));
    assert_eq!(
        converged["categories"].len(),
        2,
        "A's cascade and B's new tree"
    );
    assert_eq!(converged["files"].len(), 2);
    let (a_source, b_source) = (a.source_id().await, b.source_id().await);
    let log = bundle_log(&server, "alice").await;
    assert_eq!(
        log,
        vec![(a_source.clone(), 1), (a_source, 2), (b_source, 1)],
        "one bundle per push, none repeated"
    );
}

/// Raises `user`'s retained bundle floor to its latest bundle through the example's test
/// route: every pull and committed-bundle fetch at or below it then answers `history_pruned`.
fn prune_history(server: &TestServer, user: &str) -> impl Future<Output = ()> + Send + 'static {
    let (pool, http, url, user) = (
        server.pool.clone(),
        server.http.clone(),
        server.url("/test/retention-floor"),
        user.to_owned(),
    );
    async move {
        let latest: i64 = pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT next_bundle_seq - 1 FROM sync.user_state WHERE user_id = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        let reply = http
            .post(url)
            .json(&serde_json::json!({"user_id": user, "retained_bundle_floor": latest}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), reqwest::StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_below_the_retained_floor_falls_back_to_a_keep_source_rebuild_that_converges() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", SMALL_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    let b = Device::new(&server, dir.path(), "b", "alice", SMALL_PAGES).await;
    assert_eq!(b.attach().await, AttachOutcome::UsedRemoteState);
    let b_source = b.source_id().await;
    a.exec(&edit_rows_sql()).await;
    sync_ok(&a).await;
    prune_history(&server, "alice").await;

    let report = b.client().pull_to_stable().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedSnapshot);
    assert_eq!(report.restore.unwrap().bundle_seq, 2);
    assert_eq!(
        b.source_id().await,
        b_source,
        "keep-source rebuild keeps the source"
    );
    assert!(!b.client().source_info().await.unwrap().rebuild_required);
    assert_converged(&server, "alice", &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_keep_source_rebuild_restores_the_servers_content() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", SMALL_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    a.exec(&edit_rows_sql()).await;
    sync_ok(&a).await;
    let source = a.source_id().await;
    let report = a.client().rebuild().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedSnapshot);
    assert_eq!(a.source_id().await, source);
    assert_eq!(a.client().last_bundle_seq_seen().await.unwrap(), 2);
    assert_converged(&server, "alice", &[&a]).await;
    // Still a working device: the next edit pushes as the source's third bundle.
    a.exec(&format!(
        "UPDATE users SET name = 'later' WHERE id = '{}';",
        uid(2)
    ))
    .await;
    sync_ok(&a).await;
    assert_eq!(
        bundle_log(&server, "alice").await.last(),
        Some(&(source, 3))
    );
    assert_converged(&server, "alice", &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_recovery_rebuild_rotates_the_source_and_pushes_the_kept_outbox() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", SMALL_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    let b = Device::new(&server, dir.path(), "b", "alice", SMALL_PAGES).await;
    b.attach().await;
    let old_source = b.source_id().await;
    b.exec(&other_edits_sql()).await;
    let intended = b.dump().await;
    // The device's bundle counter jumped ahead of what the server expects (e.g. a restored
    // copy of another install): the server refuses the push as out of order.
    b.exec("UPDATE _sync_source_state SET next_source_bundle_id = 5")
        .await;
    let err = b.client().push_pending().await.unwrap_err();
    assert!(
        err.to_string().contains("source_sequence_out_of_order"),
        "{err}"
    );
    assert!(
        b.client()
            .source_info()
            .await
            .unwrap()
            .source_recovery_required
    );

    let report = b.client().rebuild().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedSnapshot);
    let new_source = b.source_id().await;
    assert_ne!(new_source, old_source);
    assert_eq!(
        b.dump().await,
        intended,
        "the kept outbox is re-applied on the snapshot"
    );
    sync_ok(&b).await;
    sync_ok(&a).await;
    let converged = assert_converged(&server, "alice", &[&a, &b]).await;
    assert_eq!(converged, intended);
    assert_eq!(
        bundle_log(&server, "alice").await,
        vec![(a.source_id().await, 1), (new_source, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_replay_pruned_recovery_resumes_on_the_next_push() {
    // §12 A2: the server prunes the bundle a push just committed before the client fetched
    // it; the recovery rebuild is interrupted. The reference then refused push (gate) and
    // rebuild (pending outbox) forever.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Device::new(&server, dir.path(), "a", "alice", SMALL_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    a.exec(&edit_rows_sql()).await;
    let intended = a.dump().await;
    a.before("committed rows", prune_history(&server, "alice"));
    a.crash_on("snapshot chunk", Cut::ResponseLost);
    let err = a.client().push_pending().await.unwrap_err();
    assert!(a.crashed(), "{err}; requests {:?}", a.requests());
    assert!(
        a.requests().contains(&"snapshot create"),
        "{:?}",
        a.requests()
    );

    a.restart().await;
    let report = a.client().push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert!(!report.status.pending.has_pending_sync_data, "{report:?}");
    assert_eq!(assert_converged(&server, "alice", &[&a]).await, intended);
    let source = a.source_id().await;
    // No duplicate: the next push is numbered 3, so 2 was recorded as committed once.
    a.exec(&format!(
        "UPDATE users SET name = 'later' WHERE id = '{}';",
        uid(2)
    ))
    .await;
    sync_ok(&a).await;
    assert_eq!(
        bundle_log(&server, "alice").await.last(),
        Some(&(source, 3))
    );
    assert_converged(&server, "alice", &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_edit_made_during_a_push_survives_replay_pruned_recovery() {
    // §12 A3: the recovery's snapshot apply deleted every dirty row, losing edits made while
    // the push was in flight.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", SMALL_PAGES).await;
    a.attach().await;
    a.exec(&seed_rows_sql()).await;
    sync_ok(&a).await;
    a.exec(&edit_rows_sql()).await;
    let path = a.path.clone();
    let prune = prune_history(&server, "alice");
    a.before("committed rows", async move {
        // The application writes through its own connection while the push is in flight.
        let app = Connection::open(&path).unwrap();
        app.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        app.execute_batch(&format!(
            "UPDATE users SET name = 'written during the push' WHERE id = '{}';
             INSERT INTO users VALUES ('{}', 'New', 'new@example.com', '{T0}', '{T0}');",
            uid(2),
            uid(8)
        ))
        .unwrap();
        drop(app);
        prune.await;
    });
    let report = a.client().push_pending().await.unwrap();
    assert_eq!(report.outcome, PushOutcome::Committed);
    assert!(
        a.requests().contains(&"snapshot create"),
        "recovered through a snapshot: {:?}",
        a.requests()
    );
    let users = a.dump().await["users"].join("\n");
    assert!(
        users.contains("written during the push") && users.contains("New"),
        "{users}"
    );
    assert_eq!(
        a.query_i64("SELECT count(*) FROM _sync_dirty_rows").await,
        2
    );
    sync_ok(&a).await;
    let synced = assert_converged(&server, "alice", &[&a]).await;
    assert!(
        synced["users"]
            .join("\n")
            .contains("written during the push")
    );
}

// --- memory --------------------------------------------------------------------------------

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Rows of the rebuild memory test (`OVERSYNC_E2E_REBUILD_ROWS` overrides 100k, which takes
/// about 25 s in a debug build on 2 cores).
fn rebuild_rows() -> u32 {
    std::env::var("OVERSYNC_E2E_REBUILD_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

const RSS_CHILD: &str = "OVERSYNC_E2E_RSS_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_of_many_rows_keeps_client_memory_flat() {
    // The test binary runs tests in parallel threads of one process, so the measurement runs
    // alone in a child process: this same test, selected exactly, with the marker variable.
    if std::env::var_os(RSS_CHILD).is_none() {
        let output = tokio::task::spawn_blocking(|| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "client_e2e::rebuild_of_many_rows_keeps_client_memory_flat",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(RSS_CHILD, "1")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{text}");
        assert!(output.status.success(), "child failed:\n{text}");
        assert!(
            text.contains("rebuild of"),
            "the child did not measure:\n{text}"
        );
        return;
    }
    let rows = rebuild_rows();
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Device::new(&server, dir.path(), "a", "alice", DEFAULT_PAGES).await;
    a.attach().await;
    let filler = server.device("alice", "filler-source").await;
    let padding = "x".repeat(120);
    let mut n = 0;
    let mut bundle = 0;
    while n < rows {
        let batch: Vec<String> = (n..rows.min(n + 5000))
            .map(|i| user_row("INSERT", 1_000_000 + i, &format!("u{i}-{padding}"), 0))
            .collect();
        n += batch.len() as u32;
        bundle += 1;
        let reply = filler.push(bundle, &format!("[{}]", batch.join(","))).await;
        assert_eq!(reply.status, reqwest::StatusCode::OK, "{reply:?}");
    }

    // Reset the peak to the current RSS so the high-water mark measures the rebuild alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (rss_before, hwm_before) = rss_kib();
    let started = std::time::Instant::now();
    let report = a.client().rebuild().await.unwrap();
    let elapsed = started.elapsed();
    let (rss_after, hwm_after) = rss_kib();
    assert_eq!(report.outcome, RemoteOutcome::AppliedSnapshot);
    assert_eq!(report.restore.unwrap().row_count, i64::from(rows));
    assert_eq!(
        a.query_i64("SELECT count(*) FROM users").await,
        i64::from(rows)
    );
    let peak_growth_mib = hwm_after.saturating_sub(rss_before) / 1024;
    println!(
        "rebuild of {rows} rows in {elapsed:?}: VmRSS {rss_before} -> {rss_after} KiB, \
         VmHWM {hwm_before} -> {hwm_after} KiB, peak growth {peak_growth_mib} MiB"
    );
    assert!(
        // Generous (streamed apply: ~2 MiB at 100k rows) but below the 60 MiB that loading
        // the whole stage into memory cost.
        peak_growth_mib < 50,
        "peak RSS grew by {peak_growth_mib} MiB during the rebuild"
    );
}
