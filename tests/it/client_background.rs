//! Background sync, change notifications, the status surface and source recovery of the
//! SQLite client, over real HTTP against the example server on a real PostgreSQL.
//!
//! Convergence is always awaited by polling a predicate against a deadline, never by a fixed
//! sleep. Where a test needs a server behaviour the example cannot be asked for (a watch
//! refused with `403 bundle_change_watch_forbidden`), only the watch request goes to a tiny
//! HTTP server on 127.0.0.1 that answers with those bytes; every other call reaches the
//! example server.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oversync_protocol::wire::{
    CapabilitiesResponse, CommittedBundleRowsResponse, ConnectRequest, ConnectResponse,
    PullResponse, PushSessionChunkRequest, PushSessionChunkResponse, PushSessionCommitResponse,
    PushSessionCreateRequest, PushSessionCreateResponse, SnapshotChunkResponse, SnapshotSession,
    SnapshotSessionCreateRequest,
};
use oversync_sqlite::{
    ChangeSource, Client, Config, DownloadMode, HttpOptions, HttpTransport, Progress,
    ProgressCallback, PullError, PushError, RecoveryState, RemoteOutcome, RequiredAction,
    StartError, StaticToken, SyncTable, TablesChanged, Transport, TransportError, WatchBody,
    WatchMode,
};
use rusqlite::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestServer;

/// The example server with its LISTEN listener running (as `examples/server/src/main.rs`
/// runs it), so commits reach open watch streams as live events.
struct WatchingServer {
    server: TestServer,
    listener: tokio::task::JoinHandle<()>,
    _database: oversync_testkit::TestDatabase,
}

impl Drop for WatchingServer {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl WatchingServer {
    async fn start() -> WatchingServer {
        let server = TestServer::start().await;
        // NOTIFY is delivered per database: take the cluster's connection settings from a
        // sibling test database and point them at the server's own database.
        let database = oversync_testkit::test_database().await.unwrap();
        let mut config = database.config();
        let name: String = server
            .pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap()
            .get(0);
        config.dbname(&name);
        let listener = server
            .service
            .spawn_watch_listener(config, tokio_postgres::NoTls);
        let start = tokio::time::Instant::now();
        while server.service.watch_listener_state() != oversync_server::ListenerState::Connected {
            assert!(start.elapsed() < DEADLINE, "watch listener did not connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        WatchingServer {
            server,
            listener,
            _database: database,
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE posts (
    id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL, author_id TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    FOREIGN KEY (author_id) REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED);
";

const DEADLINE: Duration = Duration::from_secs(20);

fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn insert_user(n: u32) -> String {
    format!(
        "INSERT INTO users VALUES ('{}', 'user {n}', 'u{n}@example.com', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');",
        uid(n)
    )
}

/// Every call goes to the example server, except `watch`, which goes to `watch` when set.
#[derive(Debug)]
struct Routed {
    server: HttpTransport,
    watch: Option<HttpTransport>,
}

impl Transport for Routed {
    fn capabilities(
        &self,
        source_id: &str,
    ) -> impl Future<Output = Result<CapabilitiesResponse, TransportError>> + Send {
        self.server.capabilities(source_id)
    }
    fn connect(
        &self,
        source_id: &str,
        request: &ConnectRequest,
    ) -> impl Future<Output = Result<ConnectResponse, TransportError>> + Send {
        self.server.connect(source_id, request)
    }
    fn create_push_session(
        &self,
        source_id: &str,
        request: &PushSessionCreateRequest,
    ) -> impl Future<Output = Result<PushSessionCreateResponse, TransportError>> + Send {
        self.server.create_push_session(source_id, request)
    }
    fn upload_push_chunk(
        &self,
        source_id: &str,
        push_id: &str,
        request: &PushSessionChunkRequest,
    ) -> impl Future<Output = Result<PushSessionChunkResponse, TransportError>> + Send {
        self.server.upload_push_chunk(source_id, push_id, request)
    }
    fn commit_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> impl Future<Output = Result<PushSessionCommitResponse, TransportError>> + Send {
        self.server.commit_push_session(source_id, push_id)
    }
    fn delete_push_session(
        &self,
        source_id: &str,
        push_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.server.delete_push_session(source_id, push_id)
    }
    fn committed_bundle_rows(
        &self,
        source_id: &str,
        bundle_seq: i64,
        after_row_ordinal: Option<i64>,
        max_rows: i64,
    ) -> impl Future<Output = Result<CommittedBundleRowsResponse, TransportError>> + Send {
        self.server
            .committed_bundle_rows(source_id, bundle_seq, after_row_ordinal, max_rows)
    }
    fn pull(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
        max_bundles: i64,
        target_bundle_seq: i64,
    ) -> impl Future<Output = Result<PullResponse, TransportError>> + Send {
        self.server
            .pull(source_id, after_bundle_seq, max_bundles, target_bundle_seq)
    }
    fn create_snapshot_session(
        &self,
        source_id: &str,
        request: Option<&SnapshotSessionCreateRequest>,
    ) -> impl Future<Output = Result<SnapshotSession, TransportError>> + Send {
        self.server.create_snapshot_session(source_id, request)
    }
    fn snapshot_chunk(
        &self,
        source_id: &str,
        snapshot_id: &str,
        after_row_ordinal: i64,
        max_rows: i64,
    ) -> impl Future<Output = Result<SnapshotChunkResponse, TransportError>> + Send {
        self.server
            .snapshot_chunk(source_id, snapshot_id, after_row_ordinal, max_rows)
    }
    fn delete_snapshot_session(
        &self,
        source_id: &str,
        snapshot_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.server.delete_snapshot_session(source_id, snapshot_id)
    }
    async fn watch(
        &self,
        source_id: &str,
        after_bundle_seq: i64,
    ) -> Result<Box<dyn WatchBody>, TransportError> {
        match &self.watch {
            Some(watch) => watch.watch(source_id, after_bundle_seq).await,
            None => self.server.watch(source_id, after_bundle_seq).await,
        }
    }
}

type Device = Arc<Client<Routed>>;

fn http(base: &str, token: &str) -> HttpTransport {
    HttpTransport::new(
        base,
        Arc::new(StaticToken(token.to_owned())),
        &HttpOptions::default(),
    )
    .unwrap()
}

/// A fast background configuration: `backoff_min` doubles as the polling interval.
fn config(mode: WatchMode, backoff_min: Duration) -> Config {
    let mut config = Config::new(
        "business",
        vec![SyncTable::new("users", "id"), SyncTable::new("posts", "id")],
    );
    config.bundle_change_watch_mode = mode;
    config.backoff_min = backoff_min;
    config.backoff_max = Duration::from_secs(2).max(backoff_min);
    config.watch_fallback_interval = Duration::from_secs(120);
    config.upload_debounce = Duration::from_millis(50);
    config.local_change_poll_interval = Duration::from_millis(200);
    config
}

/// A new SQLite file `name` with a client of `user`, opened and attached.
async fn device(
    server: &TestServer,
    dir: &Path,
    name: &str,
    user: &str,
    config: Config,
    watch_base: Option<&str>,
) -> Device {
    let conn = Connection::open(dir.join(format!("{name}.sqlite"))).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let token = server.token(user).await;
    let transport = Routed {
        server: http(&server.url(""), &token),
        watch: watch_base.map(|base| http(base, &token)),
    };
    let client = Client::new(conn, transport, config).await.unwrap();
    client.open().await.unwrap();
    client.attach(user).await.unwrap();
    Arc::new(client)
}

async fn exec(device: &Device, sql: String) {
    device
        .with_connection(move |c| c.execute_batch(&sql))
        .await
        .unwrap()
        .unwrap();
}

async fn user_count(device: &Device) -> i64 {
    device
        .with_connection(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)))
        .await
        .unwrap()
        .unwrap()
}

/// Polls `check` every 25 ms until it holds or [`DEADLINE`] passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A tiny HTTP server answering every request with `head` and `body`; counts requests.
async fn fixed_answer_server(head: &'static str, body: &'static str) -> (String, Arc<Mutex<u32>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(Mutex::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            *seen.lock().unwrap() += 1;
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let reply = format!(
                "HTTP/1.1 {head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (base, count)
}

// --- background loops --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_device_a_wakes_device_bs_watch_stream_and_b_converges() {
    let watching = WatchingServer::start().await;
    let server = &watching.server;
    let dir = tempfile::tempdir().unwrap();
    let a = device(
        server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    // B polls only every 60 s, so converging within the deadline needs the watch stream.
    let b = device(
        server,
        dir.path(),
        "b",
        "alice",
        config(WatchMode::Auto, Duration::from_secs(60)),
        None,
    )
    .await;
    let a_loops = a.start().unwrap();
    let b_loops = b.start().unwrap();
    eventually("B's watch stream to open", || async {
        b.status().await.unwrap().download_mode == DownloadMode::Watching
    })
    .await;

    exec(&a, insert_user(1)).await;
    eventually("B to receive A's row", || async {
        user_count(&b).await == 1
    })
    .await;
    assert_eq!(b.status().await.unwrap().last_bundle_seq_seen, 1);

    a_loops.stop().await;
    b_loops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_loop_polls_when_watch_mode_is_off() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = device(
        &server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    let b = device(
        &server,
        dir.path(),
        "b",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    let a_loops = a.start().unwrap();
    let b_loops = b.start().unwrap();

    exec(&a, insert_user(1)).await;
    eventually("B to poll A's row", || async { user_count(&b).await == 1 }).await;
    assert_eq!(
        b.status().await.unwrap().download_mode,
        DownloadMode::Polling
    );

    a_loops.stop().await;
    b_loops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_watch_switches_the_download_loop_to_polling_for_good() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (refusing, watch_requests) = fixed_answer_server(
        "403 Forbidden",
        r#"{"error":"bundle_change_watch_forbidden","message":"Bundle change watch is not enabled for this client"}"#,
    )
    .await;
    let a = device(
        &server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    let b = device(
        &server,
        dir.path(),
        "b",
        "alice",
        config(WatchMode::Auto, Duration::from_millis(100)),
        Some(&refusing),
    )
    .await;
    let a_loops = a.start().unwrap();
    let b_loops = b.start().unwrap();

    exec(&a, insert_user(1)).await;
    eventually("B to poll A's row", || async { user_count(&b).await == 1 }).await;
    exec(&a, insert_user(2)).await;
    eventually("B to poll A's second row", || async {
        user_count(&b).await == 2
    })
    .await;
    assert_eq!(
        b.status().await.unwrap().download_mode,
        DownloadMode::Polling
    );
    assert_eq!(*watch_requests.lock().unwrap(), 1, "no reconnect after 403");

    a_loops.stop().await;
    b_loops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_both_loops_and_releases_every_reference_to_the_client() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = device(
        &server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Auto, Duration::from_millis(100)),
        None,
    )
    .await;
    let loops = a.start().unwrap();
    eventually("the watch stream to open", || async {
        a.status().await.unwrap().download_mode == DownloadMode::Watching
    })
    .await;
    assert_eq!(a.start().unwrap_err(), StartError::AlreadyRunning);

    loops.stop().await;
    assert_eq!(
        Arc::strong_count(&a),
        1,
        "a loop task still holds the client"
    );
    assert_eq!(
        a.status().await.unwrap().download_mode,
        DownloadMode::Stopped
    );
    // Stopped loops can be started again.
    a.start().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_local_writes_is_pushed_as_one_bundle() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(WatchMode::Off, Duration::from_millis(100));
    cfg.upload_debounce = Duration::from_millis(300);
    let a = device(&server, dir.path(), "a", "alice", cfg, None).await;
    a.pause_downloads();
    let loops = a.start().unwrap();
    for n in 1..=5 {
        exec(&a, insert_user(n)).await;
    }
    eventually("A's writes to be pushed", || async {
        !a.status().await.unwrap().pending.has_pending_sync_data
    })
    .await;
    let status = a.status().await.unwrap();
    assert_eq!(status.last_bundle_seq_seen, 1, "five writes, one bundle");
    loops.stop().await;
}

// --- change notifications and progress ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_announces_the_tables_it_changed_and_reports_progress_per_bundle() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = device(
        &server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    let progress = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = config(WatchMode::Off, Duration::from_millis(100));
    let sink = Arc::clone(&progress);
    cfg.progress = Some(ProgressCallback(Arc::new(move |p: &Progress| {
        sink.lock().unwrap().push(*p);
    })));
    let b = device(&server, dir.path(), "b", "alice", cfg, None).await;
    let mut changes = b.subscribe_changes();

    exec(&a, insert_user(1)).await;
    a.sync().await.unwrap();
    exec(
        &a,
        format!(
            "INSERT INTO posts VALUES ('{}', 't', 'c', '{}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');",
            uid(9),
            uid(1)
        ),
    )
    .await;
    a.sync().await.unwrap();

    let report = b.pull_to_stable().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedIncremental);
    assert_eq!(
        changes.try_recv().unwrap(),
        TablesChanged {
            tables: vec!["posts".to_owned(), "users".to_owned()],
            source: ChangeSource::Pull
        }
    );
    // (B's attach hydrated from an empty snapshot first; only the pull's reports count here.)
    let progress: Vec<Progress> = progress
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|p| matches!(p, Progress::Pull { .. }))
        .collect();
    assert_eq!(progress.len(), 2, "{progress:?}");
    assert!(matches!(
        progress[1],
        Progress::Pull {
            start_bundle_seq: 0,
            bundle_seq: 2,
            target_bundle_seq: 2,
            bundles_applied: 2,
            rows_applied: 2
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_announces_every_managed_table_and_reports_the_snapshot() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let progress = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = config(WatchMode::Off, Duration::from_millis(100));
    let sink = Arc::clone(&progress);
    cfg.progress = Some(ProgressCallback(Arc::new(move |p: &Progress| {
        sink.lock().unwrap().push(*p);
    })));
    let a = device(&server, dir.path(), "a", "alice", cfg, None).await;
    exec(&a, format!("{}{}", insert_user(1), insert_user(2))).await;
    a.sync().await.unwrap();
    let mut changes = a.subscribe_changes();

    let report = a.rebuild().await.unwrap();
    assert_eq!(report.outcome, RemoteOutcome::AppliedSnapshot);
    assert_eq!(
        changes.try_recv().unwrap(),
        TablesChanged {
            tables: vec!["posts".to_owned(), "users".to_owned()],
            source: ChangeSource::Rebuild
        }
    );
    let progress = progress.lock().unwrap().clone();
    assert!(
        progress.contains(&Progress::SnapshotStaged {
            rows_staged: 2,
            rows_total: 2
        }),
        "{progress:?}"
    );
    assert_eq!(
        progress.last(),
        Some(&Progress::SnapshotApplied {
            rows_total: 2,
            bundle_seq: 1
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_replay_announces_the_pushed_tables() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = device(
        &server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    let mut changes = a.subscribe_changes();
    exec(&a, insert_user(1)).await;
    a.push_pending().await.unwrap();
    assert_eq!(
        changes.try_recv().unwrap(),
        TablesChanged {
            tables: vec!["users".to_owned()],
            source: ChangeSource::Replay
        }
    );
}

// --- status --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_pending_rows_checkpoint_and_the_last_outcomes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = device(
        &server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    exec(&a, format!("{}{}", insert_user(1), insert_user(2))).await;
    let before = a.status().await.unwrap();
    assert_eq!(before.pending.pending_row_count, 2);
    assert!(before.last_push.is_none());

    let pull = a.pull_to_stable().await.unwrap_err();
    assert!(matches!(pull, PullError::DirtyStateRejected { count: 2 }));
    let refused = a
        .status()
        .await
        .unwrap()
        .last_pull
        .unwrap()
        .result
        .unwrap_err();
    assert_eq!(refused.required_action, Some(RequiredAction::Push));
    let synced_from = std::time::SystemTime::now();
    a.sync().await.unwrap();
    let after = a.status().await.unwrap();
    assert_eq!(after.pending.pending_row_count, 0);
    assert_eq!(after.last_bundle_seq_seen, 1);
    assert_eq!(after.recovery, RecoveryState::None);
    assert!(after.last_push.unwrap().result.is_ok());
    let last_pull = after.last_pull.unwrap();
    assert!(last_pull.result.is_ok(), "{last_pull:?}");
    assert!(last_pull.finished_at >= synced_from);
}

// --- source recovery over real HTTP -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_source_sequence_is_left_by_rebuild_and_the_preserved_change_arrives() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = device(
        &server,
        dir.path(),
        "a",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    let b = device(
        &server,
        dir.path(),
        "b",
        "alice",
        config(WatchMode::Off, Duration::from_millis(100)),
        None,
    )
    .await;
    let old_source = a.status().await.unwrap().current_source_id;
    exec(&a, insert_user(1)).await;
    // As after restoring an old backup over a newer one: the counter is ahead of the server.
    exec(
        &a,
        "UPDATE _sync_source_state SET next_source_bundle_id = 5;".to_owned(),
    )
    .await;

    let err = a.push_pending().await.unwrap_err();
    assert!(
        matches!(&err, PushError::SourceRecoveryRequired { code, .. } if code == "source_sequence_out_of_order"),
        "{err:?}"
    );
    assert_eq!(err.required_action(), Some(RequiredAction::Rebuild));
    let sync = a.sync().await.unwrap_err();
    assert_eq!(sync.required_action(), Some(RequiredAction::Rebuild));

    let rebuilt = a.rebuild().await.unwrap();
    assert_eq!(rebuilt.outcome, RemoteOutcome::AppliedSnapshot);
    let status = a.status().await.unwrap();
    assert_eq!(status.recovery, RecoveryState::None);
    assert_ne!(status.current_source_id, old_source);
    assert_eq!(
        user_count(&a).await,
        1,
        "the unsynced row survived the rebuild"
    );

    a.sync().await.unwrap();
    b.pull_to_stable().await.unwrap();
    assert_eq!(user_count(&b).await, 1);
}
