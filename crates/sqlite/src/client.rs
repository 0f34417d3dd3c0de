//! The async public client (client chapter §1–§8): sequences engine steps on the database
//! thread and requests through the [`Transport`].
//!
//! Every operation first takes the per-client gate without waiting (§1.2); the gate guards the
//! in-memory session (source, user, seed lease, connected flag), which changes only after the
//! durable step it mirrors has committed.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use oversync_protocol::error::{ErrorBody, ErrorCode};
use oversync_protocol::wire::{
    BundleLimits, ConnectRequest, ConnectResolution, PushSessionChunkRequest,
    PushSessionCommitResponse, PushSessionCreateRequest, PushSessionStatus, SnapshotSession,
    SnapshotSessionCreateRequest, SnapshotSourceReplacement, feature,
};
use rusqlite::Connection;
use tokio::sync::MutexGuard;

use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::db::Db;
use crate::engine::lifecycle::{self, Detached, LocalAttach};
use crate::engine::push::{self, Outbox};
use crate::engine::state::{self, Attachment, Operation, OperationKind, OutboxBundle, OutboxState};
use crate::engine::{self, StepError, pull, snapshot};
use crate::error::{
    AttachError, ConfigError, GateError, LocalError, NewError, ProtocolViolation, PullError,
    PushError, SnapshotError, SqliteContext, StatusError, StoreError, SyncError,
};
use crate::retry::{self, RetryClass};
use crate::schema;
use crate::transport::WatchBody;
use crate::transport::{Transport, TransportError};
use crate::types::*;

/// Automatic push retries after resolved conflicts (the reference's
/// `maxPushConflictAutoRetries`).
const MAX_CONFLICT_RETRIES: u32 = 2;

/// The request sizes in effect: the configured ones, clamped to the server's advertised
/// `bundle_limits` once those are known (§12 C8; the pinned server rejects `max_bundles` and
/// push chunks above its limits, and clamps the other two silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    upload_rows: i64,
    pull_bundles: i64,
    committed_rows: i64,
    snapshot_rows: i64,
}

impl Limits {
    fn new(config: &Config, server: Option<&BundleLimits>) -> Limits {
        let clamp = |configured: i64, advertised: Option<i64>| match advertised {
            Some(max) if max > 0 => configured.min(max),
            _ => configured,
        };
        Limits {
            upload_rows: clamp(
                config.upload_limit(),
                server.map(|s| s.max_rows_per_push_chunk),
            ),
            pull_bundles: clamp(
                config.download_limit(),
                server.map(|s| s.max_bundles_per_pull),
            ),
            committed_rows: clamp(
                config.download_limit(),
                server.map(|s| s.max_rows_per_committed_bundle_chunk),
            ),
            snapshot_rows: clamp(
                config.snapshot_chunk_rows(),
                server.map(|s| s.max_rows_per_snapshot_chunk),
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Session {
    /// Effective request sizes; `None` until the server's capabilities were read in this
    /// process (at a network attach, or lazily before the first transfer of a resumed one).
    limits: Option<Limits>,
    opened: bool,
    source_id: String,
    user_id: String,
    lease: String,
    connected: bool,
}

/// In-memory observations for [`ClientStatus`].
#[derive(Debug)]
struct Observed {
    last_push: Option<OutcomeRecord>,
    last_pull: Option<OutcomeRecord>,
    download_mode: DownloadMode,
}

/// The cheap local state the background upload loop watches (see `background`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalFingerprint {
    /// Dirty rows + outbox rows + 1 for a held seed lease.
    pub(crate) pending: i64,
    /// Highest dirty ordinal (new keys raise it).
    pub(crate) max_dirty_ordinal: i64,
    /// Host writes through `with_connection` so far (rewrites of an already dirty key change
    /// neither number above).
    pub(crate) host_writes: u64,
}

/// The SQLite sync client. See the crate docs.
pub struct Client<T: Transport> {
    db: Db,
    transport: T,
    config: Config,
    catalog: Arc<Catalog>,
    session: tokio::sync::Mutex<Session>,
    closed: AtomicBool,
    uploads_paused: AtomicBool,
    downloads_paused: AtomicBool,
    ownership: Mutex<Option<String>>,
    changes: tokio::sync::broadcast::Sender<TablesChanged>,
    host_writes: AtomicU64,
    local_writes: tokio::sync::Notify,
    observed: Mutex<Observed>,
    pub(crate) background_running: AtomicBool,
}

/// Collects the tables a step changed and announces them when dropped, so every exit path of
/// an operation (including `?`) reports what was already committed.
struct ChangeBatch<'a> {
    sender: &'a tokio::sync::broadcast::Sender<TablesChanged>,
    source: ChangeSource,
    tables: BTreeSet<String>,
}

impl<'a> ChangeBatch<'a> {
    fn new(
        sender: &'a tokio::sync::broadcast::Sender<TablesChanged>,
        source: ChangeSource,
    ) -> Self {
        ChangeBatch {
            sender,
            source,
            tables: BTreeSet::new(),
        }
    }
}

impl Drop for ChangeBatch<'_> {
    fn drop(&mut self) {
        if self.tables.is_empty() {
            return;
        }
        // No receiver is not an error: nobody is listening.
        let _ = self.sender.send(TablesChanged {
            tables: std::mem::take(&mut self.tables).into_iter().collect(),
            source: self.source,
        });
    }
}

/// Capacity of the change channel; a receiver that falls further behind gets
/// `RecvError::Lagged` and should refresh everything.
const CHANGE_CHANNEL_CAPACITY: usize = 256;

fn failure<E: std::fmt::Display>(
    error: &E,
    retryable: bool,
    required_action: Option<crate::error::RequiredAction>,
) -> OutcomeFailure {
    OutcomeFailure {
        message: error.to_string(),
        retryable,
        required_action,
    }
}

impl<T: Transport> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("schema", &self.catalog.schema)
            .finish_non_exhaustive()
    }
}

fn owners() -> &'static Mutex<HashSet<String>> {
    static OWNERS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    OWNERS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The ownership key of a connection's main database (§1.2).
fn database_identity(conn: &Connection) -> Result<(String, String), StoreError> {
    static HANDLES: AtomicU64 = AtomicU64::new(0);
    let file: String = conn
        .query_row(
            "SELECT file FROM pragma_database_list WHERE name = 'main'",
            [],
            |r| r.get(0),
        )
        .ctx("read database identity")?;
    let file = file.trim().to_owned();
    if file.is_empty() {
        let label = format!("in-memory:{}", HANDLES.fetch_add(1, Ordering::Relaxed));
        return Ok((label.clone(), label));
    }
    let resolved = if file.starts_with("file:") {
        file
    } else {
        std::fs::canonicalize(&file)
            .map(|p| p.display().to_string())
            .unwrap_or(file)
    };
    Ok((format!("sqlite:{resolved}"), resolved))
}

fn fresh_source_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

fn lifecycle_unsupported(e: &TransportError, what: &str) -> Option<AttachError> {
    match e.status() {
        Some(404 | 405 | 501) => Some(AttachError::LifecycleUnsupported {
            reason: format!("missing {what} endpoint"),
        }),
        _ => None,
    }
}

fn code_of(e: &TransportError) -> Option<ErrorCode> {
    e.code().and_then(ErrorCode::from_wire)
}

impl RetryClass for PushError {
    fn transient(&self) -> bool {
        matches!(self, PushError::Transport(e) if e.is_retryable())
    }

    fn exhausted(self, operation: &'static str, attempts: u32) -> Self {
        match self {
            PushError::Transport(e) => PushError::Transport(e.exhausted(operation, attempts)),
            other => other,
        }
    }
}

fn step_to_push(e: StepError) -> PushError {
    match e {
        StepError::Protocol(p) => PushError::Protocol(p),
        StepError::Store(s) => PushError::Store(s),
        StepError::Dirty(_) | StepError::AttachRequired => PushError::AttachRequired,
    }
}

fn step_to_snapshot(e: StepError, operation: &'static str) -> SnapshotError {
    match e {
        StepError::Protocol(p) => SnapshotError::Protocol(p),
        StepError::Store(s) => SnapshotError::Store(s),
        StepError::Dirty(_) | StepError::AttachRequired => {
            SnapshotError::AttachRequired { operation }
        }
    }
}

/// The outcome of one push attempt that did not fail.
enum Attempt {
    Committed {
        committed: PushSessionCommitResponse,
        already: bool,
    },
    /// The server no longer holds our committed bundle (§4.8).
    ReplayPruned,
}

/// How a keep-source rebuild is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RebuildKind {
    KeepSource,
    ReplayPruned { floor: i64 },
}

impl<T: Transport> Client<T> {
    /// Builds a client over `conn` (§1.1): claims process-wide ownership of the database file,
    /// installs the metadata tables (refusing a newer layout), validates the schema scope and
    /// the managed tables, installs their triggers and registers them. No network I/O; the
    /// client is "constructed but not opened".
    ///
    /// # Errors
    /// [`NewError`]: configuration, ownership, or storage failures.
    pub async fn new(
        conn: Connection,
        transport: T,
        config: Config,
    ) -> Result<Client<T>, NewError> {
        if config.schema.trim().is_empty() {
            return Err(ConfigError::EmptySchema.into());
        }
        let (key, label) = database_identity(&conn)?;
        {
            let mut owners = owners().lock().unwrap_or_else(|p| p.into_inner());
            if !owners.insert(key.clone()) {
                return Err(NewError::DatabaseAlreadyOwned { database: label });
            }
        }
        let release = |key: &str| {
            owners()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        };
        let db = match Db::spawn(conn) {
            Ok(db) => db,
            Err(e) => {
                release(&key);
                return Err(e.into());
            }
        };
        let setup_config = config.clone();
        let setup = db
            .call(move |conn| -> Result<Catalog, NewError> {
                schema::install(conn)?;
                let schema_name = setup_config.schema.trim().to_owned();
                schema::check_schema_scope(conn, &schema_name).map_err(|e| match e {
                    schema::CheckError::Config(c) => NewError::Config(c),
                    schema::CheckError::Store(s) => NewError::Store(s),
                })?;
                let catalog = Catalog::load(conn, &setup_config).map_err(|e| match e {
                    CatalogError::Config(c) => NewError::Config(c),
                    CatalogError::Store(s) => NewError::Store(s),
                })?;
                let tx = crate::engine::begin(conn)?;
                for table in &catalog.tables {
                    crate::triggers::install(&tx, &catalog.schema, table)?;
                }
                schema::register_managed_tables(&tx, &catalog)?;
                tx.commit().ctx("commit trigger install")?;
                Ok(catalog)
            })
            .await;
        let catalog = match setup {
            Ok(Ok(catalog)) => catalog,
            Ok(Err(e)) => {
                release(&key);
                return Err(e);
            }
            Err(e) => {
                release(&key);
                return Err(e.into());
            }
        };
        Ok(Client {
            db,
            transport,
            config,
            catalog: Arc::new(catalog),
            session: tokio::sync::Mutex::new(Session::default()),
            closed: AtomicBool::new(false),
            uploads_paused: AtomicBool::new(false),
            downloads_paused: AtomicBool::new(false),
            ownership: Mutex::new(Some(key)),
            changes: tokio::sync::broadcast::channel(CHANGE_CHANNEL_CAPACITY).0,
            host_writes: AtomicU64::new(0),
            local_writes: tokio::sync::Notify::new(),
            observed: Mutex::new(Observed {
                last_push: None,
                last_pull: None,
                download_mode: DownloadMode::Stopped,
            }),
            background_running: AtomicBool::new(false),
        })
    }

    /// A receiver of [`TablesChanged`] notifications: after every pull, rebuild, push replay,
    /// conflict resolution or detach that changed business rows, the set of managed tables
    /// it touched. Only changes committed after this call are received. A receiver that
    /// falls more than 256 notifications behind gets `RecvError::Lagged` and should refresh
    /// every table.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<TablesChanged> {
        self.changes.subscribe()
    }

    fn announce_all_tables(&self, source: ChangeSource) {
        let mut batch = ChangeBatch::new(&self.changes, source);
        batch
            .tables
            .extend(self.catalog.tables.iter().map(|t| t.name.clone()));
    }

    /// Reports a committed snapshot apply: progress, and every managed table as changed.
    fn snapshot_applied(&self, snap: &SnapshotSession) {
        self.config.report_progress(Progress::SnapshotApplied {
            rows_total: snap.row_count,
            bundle_seq: snap.snapshot_bundle_seq,
        });
        self.announce_all_tables(ChangeSource::Rebuild);
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_push(&self, result: Result<PushOutcome, OutcomeFailure>) {
        self.observed().last_push = Some(OutcomeRecord {
            finished_at: std::time::SystemTime::now(),
            result: result.map(SyncOutcome::Push),
        });
    }

    fn record_pull(&self, result: Result<RemoteOutcome, OutcomeFailure>) {
        self.observed().last_pull = Some(OutcomeRecord {
            finished_at: std::time::SystemTime::now(),
            result: result.map(SyncOutcome::Remote),
        });
    }

    fn record_push_result(&self, result: &Result<PushReport, PushError>) {
        match result {
            Ok(report) => self.record_push(Ok(report.outcome)),
            Err(PushError::Gate(_)) => {}
            Err(e) => self.record_push(Err(failure(e, e.is_retryable(), e.required_action()))),
        }
    }

    fn record_pull_result(&self, result: &Result<RemoteSyncReport, PullError>) {
        match result {
            Ok(report) => self.record_pull(Ok(report.outcome)),
            Err(PullError::Gate(_)) => {}
            Err(e) => self.record_pull(Err(failure(e, e.is_retryable(), e.required_action()))),
        }
    }

    pub(crate) fn set_download_mode(&self, mode: DownloadMode) {
        self.observed().download_mode = mode;
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn uploads_paused(&self) -> bool {
        self.uploads_paused.load(Ordering::SeqCst)
    }

    pub(crate) fn downloads_paused(&self) -> bool {
        self.downloads_paused.load(Ordering::SeqCst)
    }

    /// Resolves when the host may have written through [`Client::with_connection`] since
    /// the last wake-up.
    pub(crate) async fn local_write(&self) {
        self.local_writes.notified().await;
    }

    /// One cheap read of the local pending state (no gate).
    pub(crate) async fn local_fingerprint(&self) -> Result<LocalFingerprint, StoreError> {
        let host_writes = self.host_writes.load(Ordering::SeqCst);
        let (pending, max_dirty_ordinal) = self
            .db(|conn, _| -> Result<(i64, i64), StoreError> {
                let (dirty, outbox, lease, _) = lifecycle::pending(conn)?;
                let max: i64 = conn
                    .query_row(
                        "SELECT COALESCE(MAX(dirty_ordinal), 0) FROM _sync_dirty_rows",
                        [],
                        |r| r.get(0),
                    )
                    .ctx("read dirty ordinal")?;
                Ok((dirty + outbox + i64::from(lease), max))
            })
            .await??;
        Ok(LocalFingerprint {
            pending,
            max_dirty_ordinal,
            host_writes,
        })
    }

    /// The source a watch stream must announce: the durable attachment row's, so that a
    /// reconnect after a rotation uses the new source (§9.5 step 1). Read without the gate.
    pub(crate) async fn current_source(&self) -> Result<String, StoreError> {
        Ok(self
            .db(|conn, _| Attachment::load(conn))
            .await??
            .current_source_id)
    }

    /// Opens a watch stream after `after_bundle_seq` for the current source.
    pub(crate) async fn open_watch(
        &self,
        after_bundle_seq: i64,
    ) -> Result<Box<dyn WatchBody>, crate::background::WatchOpenError> {
        let source = self.current_source().await?;
        Ok(self.transport.watch(&source, after_bundle_seq).await?)
    }

    /// Whether the server advertises `bundle_change_watch` to this client.
    pub(crate) async fn server_offers_watch(&self) -> bool {
        let Ok(source) = self.current_source().await else {
            return false;
        };
        match self.transport.capabilities(&source).await {
            Ok(c) => c.features.get(feature::BUNDLE_CHANGE_WATCH) == Some(&true),
            Err(_) => false,
        }
    }

    /// Pending counts, checkpoint, recovery state, the last push and pull outcomes and the
    /// background download mode, read without taking the operation gate (it answers while a
    /// sync runs). No open/attach precondition.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn status(&self) -> Result<ClientStatus, StoreError> {
        let (dirty, outbox, lease, attached, attachment, operation) = self
            .db(|conn, _| -> Result<_, StoreError> {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)
                    .ctx("begin status read")?;
                let (dirty, outbox, lease, attached) = lifecycle::pending(&tx)?;
                let attachment = Attachment::load(&tx)?;
                let operation = Operation::load(&tx)?;
                tx.commit().ctx("end status read")?;
                Ok((dirty, outbox, lease, attached, attachment, operation))
            })
            .await??;
        let total = dirty + outbox + i64::from(lease);
        let recovery = match &operation.kind {
            OperationKind::SourceRecovery => RecoveryState::SourceRecovery {
                reason: operation.recovery_code(),
            },
            OperationKind::RemoteReplace => RecoveryState::RemoteReplacePending {
                target_user: operation.target_user_id.clone(),
            },
            OperationKind::None | OperationKind::Unknown(_) if attachment.rebuild_required => {
                RecoveryState::RebuildRequired
            }
            OperationKind::None | OperationKind::Unknown(_) => RecoveryState::None,
        };
        let observed = self.observed();
        Ok(ClientStatus {
            pending: PendingSyncStatus {
                has_pending_sync_data: total > 0,
                pending_row_count: total,
                blocks_detach: attached && total > 0,
            },
            last_bundle_seq_seen: attachment.last_bundle_seq_seen,
            current_source_id: attachment.current_source_id,
            recovery,
            last_push: observed.last_push.clone(),
            last_pull: observed.last_pull.clone(),
            download_mode: observed.download_mode,
        })
    }

    fn gate(&self) -> Result<MutexGuard<'_, Session>, GateError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(GateError::ClientClosed);
        }
        let guard = self
            .session
            .try_lock()
            .map_err(|_| GateError::SyncOperationInProgress)?;
        if self.closed.load(Ordering::SeqCst) {
            return Err(GateError::ClientClosed);
        }
        Ok(guard)
    }

    async fn db<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection, &Catalog) -> R + Send + 'static,
        R: Send + 'static,
    {
        let catalog = Arc::clone(&self.catalog);
        self.db.call(move |conn| f(conn, &catalog)).await
    }

    /// Runs `f` on the client's connection, on the database thread: how the host reads and
    /// writes its own tables through the one connection (writes are captured by the triggers).
    ///
    /// # Errors
    /// [`StoreError::DatabaseThreadGone`] if the database thread has stopped.
    pub async fn with_connection<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let result = self.db.call(f).await;
        // The closure may have written managed tables: wake the background upload loop.
        self.host_writes.fetch_add(1, Ordering::SeqCst);
        self.local_writes.notify_one();
        result
    }

    /// Suspends `push_pending` (it returns `SkippedPaused` after its precondition checks).
    pub fn pause_uploads(&self) {
        self.uploads_paused.store(true, Ordering::SeqCst);
    }

    /// Resumes uploads.
    pub fn resume_uploads(&self) {
        self.uploads_paused.store(false, Ordering::SeqCst);
    }

    /// Suspends `pull_to_stable` and `rebuild`.
    pub fn pause_downloads(&self) {
        self.downloads_paused.store(true, Ordering::SeqCst);
    }

    /// Resumes downloads.
    pub fn resume_downloads(&self) {
        self.downloads_paused.store(false, Ordering::SeqCst);
    }

    /// `open` (§3.4): restores lifecycle state, mints and persists a source identity on first
    /// use and captures pre-existing rows once. No network. Idempotent.
    ///
    /// # Errors
    /// Gate or storage failures.
    pub async fn open(&self) -> Result<(), LocalError> {
        let mut session = self.gate()?;
        self.open_locked(&mut session).await?;
        Ok(())
    }

    async fn open_locked(&self, session: &mut Session) -> Result<(), StoreError> {
        let opened = self
            .db(|conn, catalog| lifecycle::open(conn, catalog, &mut fresh_source_id))
            .await??;
        session.opened = true;
        session.source_id = opened.source_id;
        session.lease = opened.lease;
        session.connected = false;
        if session.user_id.is_empty() {
            session.user_id = opened.user_id;
        }
        Ok(())
    }

    /// `attach(user_id)` (§3.5, §3.6): resumes a local binding without network, or asks the
    /// server who is authoritative and acts on it.
    ///
    /// # Errors
    /// See [`AttachError`]; `retry_later` is a result, not an error.
    pub async fn attach(&self, user_id: &str) -> Result<AttachResult, AttachError> {
        let user = user_id.trim().to_owned();
        if user.is_empty() {
            return Err(AttachError::EmptyUserId);
        }
        let mut session = self.gate()?;
        if !session.opened {
            return Err(AttachError::OpenRequired);
        }
        self.open_locked(&mut session).await?;
        let source = session.source_id.clone();
        let decision = {
            let user = user.clone();
            self.db(move |conn, _| lifecycle::decide_attach(conn, &source, &user))
                .await??
        };
        match decision {
            LocalAttach::LocalStateConflict { reason } => {
                Err(AttachError::LocalStateConflict { reason })
            }
            LocalAttach::BindingConflict { attached_user } => Err(AttachError::BindingConflict {
                attached_user,
                requested_user: user,
            }),
            LocalAttach::Resume { lease } => {
                session.user_id = user;
                session.lease = lease;
                session.connected = true;
                self.connected_result(AttachOutcome::ResumedAttachedState, None)
                    .await
            }
            LocalAttach::FinishRemoteReplace => {
                let restore = self.finish_remote_replace(&mut session, &user).await?;
                self.connected_result(AttachOutcome::UsedRemoteState, Some(restore))
                    .await
            }
            LocalAttach::Connect {
                has_local_pending_rows,
            } => {
                self.connect_remote(&mut session, &user, has_local_pending_rows)
                    .await
            }
        }
    }

    async fn connect_remote(
        &self,
        session: &mut Session,
        user: &str,
        has_local_pending_rows: bool,
    ) -> Result<AttachResult, AttachError> {
        let source = session.source_id.clone();
        let capabilities = match self.transport.capabilities(&source).await {
            Ok(c) => c,
            Err(e) => {
                if let Some(unsupported) = lifecycle_unsupported(&e, "/sync/capabilities") {
                    return Err(unsupported);
                }
                if matches!(e, TransportError::Decode { .. }) {
                    return Err(AttachError::LifecycleUnsupported {
                        reason: "invalid capabilities response".to_owned(),
                    });
                }
                return Err(e.into());
            }
        };
        session.limits = Some(Limits::new(&self.config, Some(&capabilities.bundle_limits)));
        if capabilities.features.get(feature::CONNECT_LIFECYCLE) != Some(&true) {
            return Err(AttachError::LifecycleUnsupported {
                reason: "connect_lifecycle capability is absent".to_owned(),
            });
        }
        let response = match self
            .transport
            .connect(
                &source,
                &ConnectRequest {
                    has_local_pending_rows,
                },
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Err(lifecycle_unsupported(&e, "/sync/connect").unwrap_or(e.into()));
            }
        };
        match response.resolution {
            ConnectResolution::RetryLater => {
                session.connected = false;
                Ok(AttachResult {
                    status: AttachStatus::RetryLater,
                    outcome: None,
                    retry_after: Some(Duration::from_secs(
                        response.retry_after_seconds.max(0).unsigned_abs(),
                    )),
                    sync_status: None,
                    restore: None,
                })
            }
            ConnectResolution::InitializeEmpty | ConnectResolution::InitializeLocal => {
                let lease = if response.resolution == ConnectResolution::InitializeLocal {
                    response.initialization_id.clone()
                } else {
                    String::new()
                };
                let (user_owned, lease_owned, source_owned) =
                    (user.to_owned(), lease.clone(), source.clone());
                let persisted = self
                    .db(move |conn, catalog| {
                        lifecycle::persist_connected(
                            conn,
                            catalog,
                            &source_owned,
                            &user_owned,
                            &lease_owned,
                        )
                    })
                    .await??;
                if let Err(conflict) = persisted {
                    return Err(AttachError::LocalStateConflict { reason: conflict.0 });
                }
                session.user_id = user.to_owned();
                session.lease = lease;
                session.connected = true;
                let outcome = if response.resolution == ConnectResolution::InitializeLocal {
                    AttachOutcome::SeededFromLocal
                } else {
                    AttachOutcome::StartedEmpty
                };
                self.connected_result(outcome, None).await
            }
            ConnectResolution::RemoteAuthoritative => {
                let target = user.to_owned();
                self.db(move |conn, _| lifecycle::begin_remote_replace(conn, &target))
                    .await??;
                session.user_id.clear();
                session.lease.clear();
                session.connected = false;
                let restore = self.finish_remote_replace(session, user).await?;
                self.connected_result(AttachOutcome::UsedRemoteState, Some(restore))
                    .await
            }
        }
    }

    /// The effective request sizes, reading the server's capabilities first if this process
    /// has not seen them (a resumed attach makes no request). If they cannot be read the
    /// configured sizes are used, and not asked again until the next network attach.
    async fn limits(&self, session: &mut Session) -> Limits {
        if let Some(limits) = session.limits {
            return limits;
        }
        let advertised = match self.transport.capabilities(&session.source_id).await {
            Ok(c) => Some(c.bundle_limits),
            Err(e) => {
                tracing::debug!(error = %e, "capabilities unavailable; using configured limits");
                None
            }
        };
        let limits = Limits::new(&self.config, advertised.as_ref());
        session.limits = Some(limits);
        limits
    }

    async fn connected_result(
        &self,
        outcome: AttachOutcome,
        restore: Option<RestoreSummary>,
    ) -> Result<AttachResult, AttachError> {
        Ok(AttachResult {
            status: AttachStatus::Connected,
            outcome: Some(outcome),
            retry_after: None,
            sync_status: Some(self.status_now().await?),
            restore,
        })
    }

    /// Remote replace steps B–E (§3.7).
    async fn finish_remote_replace(
        &self,
        session: &mut Session,
        user: &str,
    ) -> Result<RestoreSummary, SnapshotError> {
        let staged = self
            .db(|conn, _| snapshot::complete_staged_replace(conn))
            .await??;
        let snap = match staged {
            Some(s) => s,
            None => {
                self.db(|conn, _| snapshot::record_staged_replace(conn, None))
                    .await??;
                let source = session.source_id.clone();
                let rows = self.limits(session).await.snapshot_rows;
                self.download_snapshot(&source, None, true, rows).await?
            }
        };
        let (source, target) = (session.source_id.clone(), user.to_owned());
        self.db(move |conn, catalog| {
            lifecycle::prepare_remote_replace(conn, catalog, &source, &target)
        })
        .await??;
        let apply_snap = snap.clone();
        self.db(move |conn, catalog| {
            snapshot::apply(
                conn,
                catalog,
                &apply_snap,
                &snapshot::ApplyOptions {
                    clear_operation: true,
                    ..snapshot::ApplyOptions::default()
                },
            )
        })
        .await?
        .map_err(|e| step_to_snapshot(e, "attach"))?;
        self.snapshot_applied(&snap);
        session.user_id = user.to_owned();
        session.lease.clear();
        session.connected = true;
        Ok(RestoreSummary {
            bundle_seq: snap.snapshot_bundle_seq,
            row_count: snap.row_count,
        })
    }

    /// Creates a snapshot session, stages every chunk and deletes the session (best effort).
    /// With `record_replace` the session is recorded in the operation row before staging.
    async fn download_snapshot(
        &self,
        source: &str,
        request: Option<&SnapshotSessionCreateRequest>,
        record_replace: bool,
        rows_per_chunk: i64,
    ) -> Result<SnapshotSession, SnapshotError> {
        let snap = match self
            .transport
            .create_snapshot_session(source, request)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                if let (Some(req), Some(ErrorBody::SourceRetired(retired))) =
                    (request, e.envelope())
                    && let Some(replacement) = &req.source_replacement
                {
                    return Err(SnapshotError::SourceReplacementDiverged {
                        local: replacement.new_source_id.clone(),
                        remote: retired.replaced_by_source_id.clone(),
                    });
                }
                return Err(e.into());
            }
        };
        snapshot::validate_session(&snap)?;
        let result = self
            .stage_snapshot(source, &snap, record_replace, rows_per_chunk)
            .await;
        let _ = self
            .transport
            .delete_snapshot_session(source, &snap.snapshot_id)
            .await;
        result.map(|()| snap)
    }

    async fn stage_snapshot(
        &self,
        source: &str,
        snap: &SnapshotSession,
        record_replace: bool,
        rows_per_chunk: i64,
    ) -> Result<(), SnapshotError> {
        if record_replace {
            let s = snap.clone();
            self.db(move |conn, _| snapshot::record_staged_replace(conn, Some(&s)))
                .await??;
        }
        let mut after = 0;
        let mut rows_staged = 0_i64;
        // The next chunk is fetched while this one is staged, so the server's page read and
        // the transfer overlap the local write; a fetch failure surfaces only after the
        // chunk before it was staged, as it would one at a time.
        let mut prefetched = None;
        loop {
            let chunk = match prefetched.take() {
                Some(fetched) => fetched,
                None => {
                    self.transport
                        .snapshot_chunk(source, &snap.snapshot_id, after, rows_per_chunk)
                        .await
                }
            }?;
            snapshot::validate_chunk(&chunk, snap, after)?;
            let has_more = chunk.has_more;
            let next = chunk.next_row_ordinal;
            let chunk_rows = chunk.rows.len() as i64;
            let stage =
                self.db(move |conn, catalog| snapshot::stage_chunk(conn, catalog, &chunk, after));
            let staged = if has_more {
                let (staged, fetched) = tokio::join!(
                    stage,
                    self.transport
                        .snapshot_chunk(source, &snap.snapshot_id, next, rows_per_chunk)
                );
                prefetched = Some(fetched);
                staged
            } else {
                stage.await
            };
            staged?.map_err(|e| step_to_snapshot(e, "rebuild"))?;
            rows_staged += chunk_rows;
            self.config.report_progress(Progress::SnapshotStaged {
                rows_staged,
                rows_total: snap.row_count,
            });
            if !has_more {
                return Ok(());
            }
            after = next;
        }
    }

    /// `detach` (§3.8) with fixes A5 and A9: refuses while attached data is pending;
    /// otherwise clears managed tables (children first, FKs deferred) and sync metadata and
    /// re-binds the database, anonymous, to a fresh source with a reset checkpoint.
    ///
    /// # Errors
    /// `OpenRequired` before `open`; gate or storage failures.
    pub async fn detach(&self) -> Result<DetachResult, StatusError> {
        let mut session = self.gate()?;
        self.detach_locked(&mut session).await
    }

    async fn detach_locked(&self, session: &mut Session) -> Result<DetachResult, StatusError> {
        if !session.opened {
            return Err(StatusError::OpenRequired {
                operation: "detach",
            });
        }
        let result = self
            .db(|conn, catalog| lifecycle::detach(conn, catalog, &mut fresh_source_id))
            .await??;
        Ok(match result {
            Detached::Blocked { pending_row_count } => DetachResult {
                outcome: DetachOutcome::BlockedUnsyncedData,
                pending_row_count,
            },
            Detached::Done { new_source } => {
                self.announce_all_tables(ChangeSource::Detach);
                session.source_id = new_source;
                session.user_id.clear();
                session.lease.clear();
                session.connected = false;
                DetachResult {
                    outcome: DetachOutcome::Detached,
                    pending_row_count: 0,
                }
            }
        })
    }

    /// Pending local sync data. No open/attach precondition.
    ///
    /// # Errors
    /// Gate or storage failures.
    pub async fn pending_sync_status(&self) -> Result<PendingSyncStatus, LocalError> {
        let _session = self.gate()?;
        Ok(self.pending_now().await?)
    }

    async fn pending_now(&self) -> Result<PendingSyncStatus, StoreError> {
        let (dirty, outbox, lease, attached) =
            self.db(|conn, _| lifecycle::pending(conn)).await??;
        let total = dirty + outbox + i64::from(lease);
        Ok(PendingSyncStatus {
            has_pending_sync_data: total > 0,
            pending_row_count: total,
            blocks_detach: attached && total > 0,
        })
    }

    async fn status_now(&self) -> Result<SyncStatus, StoreError> {
        let pending = self.pending_now().await?;
        let (attachment, live) = self
            .db(|conn, _| -> Result<_, StoreError> {
                Ok((Attachment::load(conn)?, lifecycle::has_live_rows(conn)?))
            })
            .await??;
        Ok(SyncStatus {
            authority: if !attachment.pending_initialization_id.is_empty() {
                Authority::PendingLocalSeed
            } else if live {
                Authority::AuthoritativeMaterialized
            } else {
                Authority::AuthoritativeEmpty
            },
            pending,
            last_bundle_seq_seen: attachment.last_bundle_seq_seen,
        })
    }

    /// Whether the session is connected and the durable binding still matches it.
    async fn connected_check(&self, session: &Session) -> Result<Result<(), bool>, StoreError> {
        if !session.opened {
            return Ok(Err(false));
        }
        if !session.connected {
            return Ok(Err(true));
        }
        let attachment = self.db(|conn, _| Attachment::load(conn)).await??;
        if attachment.is_attached_to(&session.user_id)
            && attachment.current_source_id == session.source_id
        {
            Ok(Ok(()))
        } else {
            Ok(Err(true))
        }
    }

    async fn require_connected(
        &self,
        session: &Session,
        operation: &'static str,
    ) -> Result<(), StatusError> {
        match self.connected_check(session).await? {
            Ok(()) => Ok(()),
            Err(false) => Err(StatusError::OpenRequired { operation }),
            Err(true) => Err(StatusError::AttachRequired { operation }),
        }
    }

    /// Authority, pending state and checkpoint of the connected scope.
    ///
    /// # Errors
    /// `OpenRequired`, `AttachRequired`, gate or storage failures.
    pub async fn sync_status(&self) -> Result<SyncStatus, StatusError> {
        let session = self.gate()?;
        self.require_connected(&session, "sync_status").await?;
        Ok(self.status_now().await?)
    }

    /// The durable checkpoint.
    ///
    /// # Errors
    /// `OpenRequired`, `AttachRequired`, gate or storage failures.
    pub async fn last_bundle_seq_seen(&self) -> Result<i64, StatusError> {
        let session = self.gate()?;
        self.require_connected(&session, "last_bundle_seq_seen")
            .await?;
        Ok(self
            .db(|conn, _| Attachment::load(conn))
            .await??
            .last_bundle_seq_seen)
    }

    /// Debug view of the source identity and recovery gates. Requires `open` only.
    ///
    /// # Errors
    /// `OpenRequired`, gate or storage failures.
    pub async fn source_info(&self) -> Result<SourceInfo, StatusError> {
        let session = self.gate()?;
        if !session.opened {
            return Err(StatusError::OpenRequired {
                operation: "source_info",
            });
        }
        let (attachment, operation) = self
            .db(|conn, _| -> Result<_, StoreError> {
                Ok((Attachment::load(conn)?, Operation::load(conn)?))
            })
            .await??;
        let recovering = operation.kind == OperationKind::SourceRecovery;
        Ok(SourceInfo {
            current_source_id: attachment.current_source_id,
            rebuild_required: attachment.rebuild_required,
            source_recovery_required: recovering,
            source_recovery_reason: if recovering {
                operation.recovery_code()
            } else {
                String::new()
            },
        })
    }

    /// `push_pending` (§4): uploads exactly one outbox bundle and replays the server's
    /// committed version locally.
    ///
    /// # Errors
    /// See [`PushError`]; the outbox survives every failure and the next call resumes it.
    pub async fn push_pending(&self) -> Result<PushReport, PushError> {
        let mut session = self.gate()?;
        let result = self.push_locked(&mut session).await;
        self.record_push_result(&result);
        result
    }

    /// §4 with the conflict loop of §5.5: a structured conflict is resolved and the whole push
    /// (entry checks included) runs again from a fresh outbox under the same
    /// `source_bundle_id`, at most [`MAX_CONFLICT_RETRIES`] times.
    async fn push_locked(&self, session: &mut Session) -> Result<PushReport, PushError> {
        let mut retries = 0;
        loop {
            let error = match self.push_once(session).await {
                Ok(report) => return Ok(report),
                Err(error) => error,
            };
            let PushError::PushConflict { conflict, .. } = &error else {
                return Err(error);
            };
            let details = (**conflict).clone();
            let Some(context) = self
                .db(move |conn, catalog| engine::conflict::context(conn, catalog, &details))
                .await??
            else {
                return Err(error);
            };
            let result = self.config.resolver.resolve(&context);
            let (c, r) = (context.clone(), result.clone());
            let applied = self
                .db(move |conn, catalog| engine::conflict::apply(conn, catalog, &c, &r))
                .await?
                .map_err(step_to_push)?;
            match applied {
                engine::conflict::Applied::Resolved
                | engine::conflict::Applied::Deferred { rebuild: false, .. } => {}
                engine::conflict::Applied::Invalid(message) => {
                    return Err(PushError::InvalidConflictResolution {
                        conflict: Box::new(context),
                        result: Box::new(result),
                        message,
                    });
                }
                engine::conflict::Applied::Deferred {
                    rebuild: true,
                    message,
                } => {
                    ChangeBatch::new(&self.changes, ChangeSource::ConflictResolution)
                        .tables
                        .insert(context.table.clone());
                    return Err(PushError::ConflictRequiresRebuild {
                        conflict: Box::new(context),
                        message,
                    });
                }
            }
            ChangeBatch::new(&self.changes, ChangeSource::ConflictResolution)
                .tables
                .insert(context.table.clone());
            let remaining = self.db(|conn, _| state::dirty_count(conn)).await??;
            if remaining == 0 {
                return Ok(PushReport {
                    outcome: PushOutcome::NoChange,
                    status: self.status_now().await?,
                });
            }
            if retries >= MAX_CONFLICT_RETRIES {
                return Err(PushError::PushConflictRetryExhausted {
                    retry_count: MAX_CONFLICT_RETRIES,
                    remaining_dirty_count: remaining,
                });
            }
            retries += 1;
        }
    }

    /// One push (§4.1–§4.8); a structured conflict comes back as [`PushError::PushConflict`].
    async fn push_once(&self, session: &mut Session) -> Result<PushReport, PushError> {
        match self.connected_check(session).await? {
            Ok(()) => {}
            Err(false) => return Err(PushError::OpenRequired),
            Err(true) => return Err(PushError::AttachRequired),
        }
        let (attachment, operation, bundle) = self
            .db(|conn, _| -> Result<_, StoreError> {
                Ok((
                    Attachment::load(conn)?,
                    Operation::load(conn)?,
                    OutboxBundle::load(conn)?,
                ))
            })
            .await??;
        match &operation.kind {
            OperationKind::SourceRecovery => {
                return Err(PushError::SourceRecoveryRequired {
                    code: operation.recovery_code(),
                    message: String::new(),
                });
            }
            OperationKind::Unknown(kind) => {
                return Err(PushError::DestructiveTransitionInProgress { kind: kind.clone() });
            }
            OperationKind::None | OperationKind::RemoteReplace => {}
        }
        if attachment.rebuild_required {
            // §12 A2: an interrupted replay-pruned recovery is the only way to hold a
            // committed_remote outbox behind the gate; resume it instead of wedging.
            if bundle.state == OutboxState::CommittedRemote {
                self.replay_pruned_recovery(session, bundle.source_bundle_id)
                    .await?;
                return Ok(PushReport {
                    outcome: PushOutcome::Committed,
                    status: self.status_now().await?,
                });
            }
            // §12 A1: the gate left by an interrupted keep-source rebuild does not block
            // pushing. Local data is consistent (the final apply is atomic), and refusing
            // would wedge the client as soon as the application writes: pull refuses on the
            // gate and rebuild on the dirty rows. Push first, then `rebuild` clears the gate.
            if operation.kind != OperationKind::None {
                return Err(PushError::RebuildRequired);
            }
        }
        if self.uploads_paused.load(Ordering::SeqCst) {
            return Ok(PushReport {
                outcome: PushOutcome::SkippedPaused,
                status: self.status_now().await?,
            });
        }
        let (source, lease) = (session.source_id.clone(), session.lease.clone());
        let outbox = self
            .db(move |conn, catalog| push::prepare_outbox(conn, catalog, &source, &lease))
            .await??;
        let Some(outbox) = outbox else {
            if !session.lease.is_empty() {
                self.release_unused_lease(session).await?;
            }
            return Ok(PushReport {
                outcome: PushOutcome::NoChange,
                status: self.status_now().await?,
            });
        };
        self.limits(session).await;
        self.db(|conn, _| push::clear_push_stage(conn)).await??;
        let policy = self.config.retry_policy.clone();
        let session_cell = tokio::sync::Mutex::new(&mut *session);
        let attempt = retry::run(&policy, "push_pending", || async {
            let mut s = session_cell.lock().await;
            self.push_attempt(&mut s, &outbox).await
        })
        .await;
        match attempt? {
            Attempt::Committed { committed, already } => {
                let tables = self
                    .db(move |conn, catalog| -> Result<Vec<String>, StepError> {
                        let tables = staged_tables(conn, committed.bundle_seq)?;
                        push::replay(conn, catalog, &committed, already)?;
                        Ok(tables)
                    })
                    .await?
                    .map_err(step_to_push)?;
                ChangeBatch::new(&self.changes, ChangeSource::Replay)
                    .tables
                    .extend(tables);
            }
            Attempt::ReplayPruned => {
                self.replay_pruned_recovery(session, outbox.bundle.source_bundle_id)
                    .await?;
            }
        }
        Ok(PushReport {
            outcome: PushOutcome::Committed,
            status: self.status_now().await?,
        })
    }

    /// §12 A7: a seed lease is held but there is nothing to push (the rows that earned it
    /// were deleted again, or were no-ops from the start). Without a seed push the lease is
    /// never cleared, the scope stays `initializing` (pulls fail with `scope_initializing`)
    /// and `detach` stays blocked. Reconnect without pending rows: the server answers
    /// `initialize_empty` to the lease holder and initialises the scope, and the lease is
    /// dropped. Any other answer (the lease lapsed and the scope went elsewhere) takes the
    /// §3.9 lease-failure path: binding dropped, the caller attaches again.
    async fn release_unused_lease(&self, session: &mut Session) -> Result<(), PushError> {
        let source = session.source_id.clone();
        let response = self
            .transport
            .connect(
                &source,
                &ConnectRequest {
                    has_local_pending_rows: false,
                },
            )
            .await?;
        if response.resolution != ConnectResolution::InitializeEmpty {
            return Err(self
                .lease_failure(
                    session,
                    "initialization_stale",
                    format!(
                        "unused seed lease; reconnect answered {:?}",
                        response.resolution
                    ),
                )
                .await);
        }
        let (user, source_owned) = (session.user_id.clone(), source);
        let persisted = self
            .db(move |conn, catalog| {
                lifecycle::persist_connected(conn, catalog, &source_owned, &user, "")
            })
            .await??;
        if let Err(conflict) = persisted {
            return Err(PushError::Store(StoreError::Inconsistent(conflict.0)));
        }
        session.lease.clear();
        Ok(())
    }

    /// One attempt of §4.3 + §4.4.
    async fn push_attempt(
        &self,
        session: &mut Session,
        outbox: &Outbox,
    ) -> Result<Attempt, PushError> {
        let bundle = self.db(|conn, _| OutboxBundle::load(conn)).await??;
        let source = session.source_id.clone();
        let planned = outbox.rows.len() as i64;
        let request = PushSessionCreateRequest {
            source_bundle_id: outbox.bundle.source_bundle_id,
            planned_row_count: planned,
            initialization_id: session.lease.clone(),
        };
        let created = match self.transport.create_push_session(&source, &request).await {
            Ok(c) => c,
            Err(e) => {
                // §12 A11: a stale lease on an initialised scope; probe without it.
                if code_of(&e) == Some(ErrorCode::PushSessionInvalid)
                    && !request.initialization_id.is_empty()
                {
                    let probe = PushSessionCreateRequest {
                        initialization_id: String::new(),
                        ..request.clone()
                    };
                    match self.transport.create_push_session(&source, &probe).await {
                        Ok(c) if c.status == PushSessionStatus::AlreadyCommitted => c,
                        Ok(c) => {
                            let _ = self
                                .transport
                                .delete_push_session(&source, &c.push_id)
                                .await;
                            return Err(self
                                .lease_failure(
                                    session,
                                    "initialization_stale",
                                    e.body().map(|b| b.message().to_owned()).unwrap_or_default(),
                                )
                                .await);
                        }
                        Err(_) => return Err(e.into()),
                    }
                } else if code_of(&e) == Some(ErrorCode::HistoryPruned)
                    && bundle.state == OutboxState::CommittedRemote
                {
                    return Ok(Attempt::ReplayPruned);
                } else {
                    return Err(self.push_failure(session, e, bundle.state).await);
                }
            }
        };
        let committed = match created.status {
            PushSessionStatus::AlreadyCommitted => {
                let committed = PushSessionCommitResponse {
                    bundle_seq: created.bundle_seq,
                    source_id: created.source_id,
                    source_bundle_id: created.source_bundle_id,
                    row_count: created.row_count,
                    bundle_hash: created.bundle_hash,
                };
                if committed.source_bundle_id != request.source_bundle_id
                    || committed.source_id != source
                    || !valid_commit(&committed)
                {
                    return Err(ProtocolViolation::new(
                        "push-session create",
                        "already_committed metadata does not match the request",
                    )
                    .into());
                }
                let c = committed.clone();
                self.db(move |conn, _| push::persist_committed(conn, &c))
                    .await??;
                session.lease.clear();
                return self.fetch_committed(session, committed, true).await;
            }
            PushSessionStatus::Staging => {
                if created.push_id.trim().is_empty()
                    || created.planned_row_count != planned
                    || created.next_expected_row_ordinal != 0
                {
                    return Err(ProtocolViolation::new(
                        "push-session create",
                        "invalid staging response",
                    )
                    .into());
                }
                let push_id = created.push_id;
                let uploaded = self.upload_and_commit(session, outbox, &push_id).await;
                match uploaded {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = self.transport.delete_push_session(&source, &push_id).await;
                        return Err(e);
                    }
                }
            }
        };
        let c = committed.clone();
        self.db(move |conn, _| push::persist_committed(conn, &c))
            .await??;
        session.lease.clear();
        self.fetch_committed(session, committed, false).await
    }

    async fn upload_and_commit(
        &self,
        session: &mut Session,
        outbox: &Outbox,
        push_id: &str,
    ) -> Result<PushSessionCommitResponse, PushError> {
        let source = session.source_id.clone();
        let rows = push::push_rows(&self.catalog, outbox)?;
        let limit = self.limits(session).await.upload_rows as usize;
        let total = rows.len();
        let mut start = 0;
        while start < total {
            let end = (start + limit).min(total);
            let request = PushSessionChunkRequest {
                start_row_ordinal: start as i64,
                rows: rows[start..end].to_vec(),
            };
            match self
                .transport
                .upload_push_chunk(&source, push_id, &request)
                .await
            {
                Ok(r) => {
                    if r.push_id != push_id || r.next_expected_row_ordinal != end as i64 {
                        return Err(
                            ProtocolViolation::new("push chunk", "invalid chunk response").into(),
                        );
                    }
                }
                Err(e) => return Err(self.push_failure(session, e, OutboxState::Prepared).await),
            }
            start = end;
        }
        match self.transport.commit_push_session(&source, push_id).await {
            Ok(c) => {
                if !valid_commit(&c)
                    || c.source_id != source
                    || c.source_bundle_id != outbox.bundle.source_bundle_id
                {
                    return Err(
                        ProtocolViolation::new("push commit", "invalid commit response").into(),
                    );
                }
                Ok(c)
            }
            Err(e) => Err(self.push_failure(session, e, OutboxState::Prepared).await),
        }
    }

    async fn fetch_committed(
        &self,
        session: &Session,
        committed: PushSessionCommitResponse,
        already: bool,
    ) -> Result<Attempt, PushError> {
        let source = session.source_id.clone();
        let committed_rows = session
            .limits
            .unwrap_or_else(|| Limits::new(&self.config, None))
            .committed_rows;
        self.db(|conn, _| push::clear_push_stage(conn)).await??;
        let mut after: Option<i64> = None;
        // As for snapshots: the next page is fetched while this one is staged.
        let mut prefetched = None;
        loop {
            let fetched = match prefetched.take() {
                Some(fetched) => fetched,
                None => {
                    self.transport
                        .committed_bundle_rows(&source, committed.bundle_seq, after, committed_rows)
                        .await
                }
            };
            let page = match fetched {
                Ok(p) => p,
                Err(e) if code_of(&e) == Some(ErrorCode::HistoryPruned) => {
                    return Ok(Attempt::ReplayPruned);
                }
                Err(e) => return Err(e.into()),
            };
            push::validate_committed_page(&page, &committed, after)?;
            let has_more = page.has_more;
            let next = page.next_row_ordinal;
            let page_after = after;
            let stage = self.db(move |conn, catalog| {
                push::stage_committed_page(conn, catalog, &page, page_after)
            });
            let staged = if has_more {
                let (staged, fetched) = tokio::join!(
                    stage,
                    self.transport.committed_bundle_rows(
                        &source,
                        committed.bundle_seq,
                        Some(next),
                        committed_rows
                    )
                );
                prefetched = Some(fetched);
                staged
            } else {
                stage.await
            };
            staged?.map_err(step_to_push)?;
            if !has_more {
                break;
            }
            after = Some(next);
        }
        let c = committed.clone();
        self.db(move |conn, catalog| push::verify_stage(conn, catalog, &c))
            .await?
            .map_err(step_to_push)?;
        Ok(Attempt::Committed { committed, already })
    }

    /// Maps a failed push-session call (§4.3 step 3, §10.5), doing the durable work the
    /// failure requires.
    async fn push_failure(
        &self,
        session: &mut Session,
        e: TransportError,
        outbox_state: OutboxState,
    ) -> PushError {
        let message = e.body().map(|b| b.message().to_owned()).unwrap_or_default();
        match code_of(&e) {
            Some(ErrorCode::InitializationExpired) => {
                self.lease_failure(session, "initialization_expired", message)
                    .await
            }
            Some(ErrorCode::InitializationStale) => {
                self.lease_failure(session, "initialization_stale", message)
                    .await
            }
            Some(ErrorCode::HistoryPruned) if outbox_state == OutboxState::CommittedRemote => {
                // Surfaced as a transport error but handled by the caller's replay-pruned
                // path: the stored commit metadata is what counts.
                e.into()
            }
            Some(
                code @ (ErrorCode::HistoryPruned
                | ErrorCode::SourceSequenceOutOfOrder
                | ErrorCode::SourceSequenceChanged
                | ErrorCode::SourceRetired),
            ) if e.status() == Some(409) => {
                let offered = match e.envelope() {
                    Some(ErrorBody::SourceRetired(r)) => r.replaced_by_source_id.clone(),
                    _ => String::new(),
                };
                let reason = code.as_str();
                let entered = self
                    .db(move |conn, _| {
                        lifecycle::enter_source_recovery(
                            conn,
                            reason,
                            &offered,
                            &mut fresh_source_id,
                        )
                    })
                    .await;
                match entered {
                    Ok(Ok(Ok(()))) => PushError::SourceRecoveryRequired {
                        code: reason.to_owned(),
                        message,
                    },
                    Ok(Ok(Err(d))) => PushError::SourceReplacementDiverged {
                        local: d.stored,
                        remote: d.offered,
                    },
                    Ok(Err(s)) | Err(s) => PushError::Store(s),
                }
            }
            Some(ErrorCode::PushConflict) => match e.envelope() {
                Some(ErrorBody::PushConflict(c)) => match &c.conflict {
                    Some(conflict) => PushError::PushConflict {
                        status: e.status().unwrap_or(409),
                        table: conflict.table.clone(),
                        key: serde_json::to_string(&conflict.key).unwrap_or_default(),
                        message: c.message.clone(),
                        conflict: Box::new(conflict.clone()),
                    },
                    None => e.into(),
                },
                _ => e.into(),
            },
            _ => e.into(),
        }
    }

    async fn lease_failure(&self, session: &mut Session, code: &str, message: String) -> PushError {
        if let Err(e) = self
            .db(|conn, _| lifecycle::drop_binding_after_lease_failure(conn))
            .await
            .and_then(|r| r)
        {
            return PushError::Store(e);
        }
        session.user_id.clear();
        session.lease.clear();
        session.connected = false;
        PushError::InitializationLeaseInvalid {
            code: code.to_owned(),
            message,
        }
    }

    /// §4.8 with fixes A2 (resumable) and A3 (dirty rows written during the push survive).
    async fn replay_pruned_recovery(
        &self,
        session: &mut Session,
        source_bundle_id: i64,
    ) -> Result<(), PushError> {
        self.rebuild_from_snapshot(
            session,
            RebuildKind::ReplayPruned {
                floor: source_bundle_id + 1,
            },
        )
        .await?;
        Ok(())
    }

    async fn rebuild_from_snapshot(
        &self,
        session: &mut Session,
        kind: RebuildKind,
    ) -> Result<RestoreSummary, SnapshotError> {
        let user = session.user_id.clone();
        self.db(move |conn, _| snapshot::begin_gated_rebuild(conn, &user))
            .await?
            .map_err(|e| step_to_snapshot(e, "rebuild"))?;
        let source = session.source_id.clone();
        let rows = self.limits(session).await.snapshot_rows;
        let snap = self.download_snapshot(&source, None, false, rows).await?;
        let options = snapshot::ApplyOptions {
            advance_floor: match kind {
                RebuildKind::ReplayPruned { floor } => Some(floor),
                RebuildKind::KeepSource => None,
            },
            preserve_dirty: matches!(kind, RebuildKind::ReplayPruned { .. }),
            ..snapshot::ApplyOptions::default()
        };
        let s = snap.clone();
        self.db(move |conn, catalog| snapshot::apply(conn, catalog, &s, &options))
            .await?
            .map_err(|e| step_to_snapshot(e, "rebuild"))?;
        self.snapshot_applied(&snap);
        Ok(RestoreSummary {
            bundle_seq: snap.snapshot_bundle_seq,
            row_count: snap.row_count,
        })
    }

    async fn pull_checks(
        &self,
        session: &Session,
        operation: &'static str,
    ) -> Result<(Attachment, Operation), PullError> {
        match self.connected_check(session).await? {
            Ok(()) => {}
            Err(false) => return Err(PullError::OpenRequired { operation }),
            Err(true) => return Err(PullError::AttachRequired { operation }),
        }
        let (attachment, op) = self
            .db(|conn, _| -> Result<_, StoreError> {
                Ok((Attachment::load(conn)?, Operation::load(conn)?))
            })
            .await??;
        Ok((attachment, op))
    }

    /// `pull_to_stable` (§6): applies complete committed bundles up to a server-frozen
    /// ceiling; on `history_pruned` falls back to a keep-source rebuild.
    ///
    /// # Errors
    /// See [`PullError`]; no response that fails validation is applied.
    pub async fn pull_to_stable(&self) -> Result<RemoteSyncReport, PullError> {
        let mut session = self.gate()?;
        let result = self.pull_locked(&mut session).await;
        self.record_pull_result(&result);
        result
    }

    async fn pull_locked(&self, session: &mut Session) -> Result<RemoteSyncReport, PullError> {
        let (attachment, operation) = self.pull_checks(session, "pull_to_stable").await?;
        match operation.kind {
            OperationKind::SourceRecovery => {
                return Err(PullError::SourceRecoveryRequired {
                    code: operation.recovery_code(),
                });
            }
            OperationKind::Unknown(kind) => {
                return Err(PullError::DestructiveTransitionInProgress { kind });
            }
            OperationKind::None | OperationKind::RemoteReplace => {}
        }
        if attachment.rebuild_required {
            return Err(PullError::RebuildRequired);
        }
        let (dirty, outbox, _, _) = self.db(|conn, _| lifecycle::pending(conn)).await??;
        if outbox > 0 {
            return Err(PullError::PendingPushReplay { count: outbox });
        }
        if dirty > 0 {
            return Err(PullError::DirtyStateRejected { count: dirty });
        }
        if self.downloads_paused.load(Ordering::SeqCst) {
            return self.remote_report(RemoteOutcome::SkippedPaused, None).await;
        }
        let limits = self.limits(session).await;
        let source = session.source_id.clone();
        let start = attachment.last_bundle_seq_seen;
        let mut after = start;
        let mut target = 0;
        let mut applied_any = false;
        let mut changed = ChangeBatch::new(&self.changes, ChangeSource::Pull);
        let (mut bundles_applied, mut rows_applied) = (0_i64, 0_i64);
        // The next page is requested while this one is applied (its `after` is this page's
        // last bundle); a failed or pruned next page surfaces only after this page applied,
        // as it would one page at a time.
        let mut prefetched = None;
        loop {
            let fetched = match prefetched.take() {
                Some(fetched) => fetched,
                None => {
                    self.transport
                        .pull(&source, after, limits.pull_bundles, target)
                        .await
                }
            };
            let resp = match fetched {
                Ok(r) => r,
                Err(e) if code_of(&e) == Some(ErrorCode::HistoryPruned) => {
                    return self.keep_source_rebuild(session).await;
                }
                Err(e) => return Err(e.into()),
            };
            pull::validate(&resp, after)?;
            if target == 0 {
                target = resp.stable_bundle_seq;
            } else if resp.stable_bundle_seq != target {
                return Err(ProtocolViolation::new("pull", "stable bundle seq changed").into());
            }
            let stable = resp.stable_bundle_seq;
            let has_more = resp.has_more;
            let empty = resp.bundles.is_empty();
            let page_end = resp.bundles.last().map_or(after, |b| b.bundle_seq);
            let apply = async {
                let summaries: Vec<(i64, i64, BTreeSet<String>)> = resp
                    .bundles
                    .iter()
                    .map(|b| {
                        let tables = b.rows.iter().map(|r| r.table.clone()).collect();
                        (b.bundle_seq, b.rows.len() as i64, tables)
                    })
                    .collect();
                let bundles = resp.bundles;
                let (applied, result) = self
                    .db(move |conn, catalog| pull::apply_bundles(conn, catalog, &bundles))
                    .await?;
                for (seq, rows, tables) in summaries.into_iter().take(applied) {
                    applied_any = true;
                    after = seq;
                    changed.tables.extend(tables);
                    bundles_applied += 1;
                    rows_applied += rows;
                    self.config.report_progress(Progress::Pull {
                        start_bundle_seq: start,
                        bundle_seq: seq,
                        target_bundle_seq: target,
                        bundles_applied,
                        rows_applied,
                    });
                }
                match result {
                    Ok(()) => Ok(()),
                    Err(StepError::Dirty(count)) => Err(PullError::DirtyStateRejected { count }),
                    Err(StepError::Protocol(p)) => Err(p.into()),
                    Err(StepError::Store(s)) => Err(s.into()),
                    Err(StepError::AttachRequired) => Err(PullError::AttachRequired {
                        operation: "pull_to_stable",
                    }),
                }
            };
            if has_more && page_end < stable {
                let (applied, fetched) = tokio::join!(
                    apply,
                    self.transport
                        .pull(&source, page_end, limits.pull_bundles, target)
                );
                applied?;
                prefetched = Some(fetched);
            } else {
                apply.await?;
            }
            if after >= stable {
                let outcome = if applied_any {
                    RemoteOutcome::AppliedIncremental
                } else {
                    RemoteOutcome::AlreadyAtTarget
                };
                return self.remote_report(outcome, None).await;
            }
            if !has_more && empty {
                return Err(
                    ProtocolViolation::new("pull", "pull ended before reaching stable").into(),
                );
            }
            if !has_more {
                return Err(ProtocolViolation::new("pull", "pull ended early").into());
            }
        }
    }

    async fn remote_report(
        &self,
        outcome: RemoteOutcome,
        restore: Option<RestoreSummary>,
    ) -> Result<RemoteSyncReport, PullError> {
        Ok(RemoteSyncReport {
            outcome,
            status: self.status_now().await?,
            restore,
        })
    }

    /// Keep-source rebuild (§7.1) with its own preconditions.
    async fn keep_source_rebuild(
        &self,
        session: &mut Session,
    ) -> Result<RemoteSyncReport, PullError> {
        let (_, operation) = self.pull_checks(session, "rebuild").await?;
        let (dirty, outbox, _, _) = self.db(|conn, _| lifecycle::pending(conn)).await??;
        if dirty > 0 {
            return Err(PullError::DirtyStateRejected { count: dirty });
        }
        if outbox > 0 {
            return Err(PullError::PendingPushReplay { count: outbox });
        }
        match operation.kind {
            OperationKind::Unknown(kind) => {
                return Err(PullError::DestructiveTransitionInProgress { kind });
            }
            OperationKind::RemoteReplace => {
                return Err(PullError::RemoteReplacePending {
                    target_user: operation.target_user_id,
                });
            }
            OperationKind::None | OperationKind::SourceRecovery => {}
        }
        if self.downloads_paused.load(Ordering::SeqCst) {
            return self.remote_report(RemoteOutcome::SkippedPaused, None).await;
        }
        let restore = self
            .rebuild_from_snapshot(session, RebuildKind::KeepSource)
            .await?;
        self.remote_report(RemoteOutcome::AppliedSnapshot, Some(restore))
            .await
    }

    /// `rebuild` (§7, §8.4): the rotated-source rebuild when source recovery is pending,
    /// otherwise a keep-source rebuild.
    ///
    /// # Errors
    /// See [`PullError`]; business rows, checkpoint and source are unchanged on failure.
    pub async fn rebuild(&self) -> Result<RemoteSyncReport, PullError> {
        let mut session = self.gate()?;
        let result = self.rebuild_locked(&mut session).await;
        self.record_pull_result(&result);
        result
    }

    async fn rebuild_locked(&self, session: &mut Session) -> Result<RemoteSyncReport, PullError> {
        let (_, operation) = self.pull_checks(session, "rebuild").await?;
        if operation.kind != OperationKind::SourceRecovery {
            return self.keep_source_rebuild(session).await;
        }
        // §12 A4: dirty rows written between the freeze and the response that entered
        // recovery are not refused (guards block every later write, so nothing else could
        // ever clear them); the final apply re-applies and keeps them (`preserve_dirty`).
        if self.downloads_paused.load(Ordering::SeqCst) {
            return self.remote_report(RemoteOutcome::SkippedPaused, None).await;
        }
        let replacement = if operation.replacement_source_id.trim().is_empty() {
            fresh_source_id()
        } else {
            operation.replacement_source_id.clone()
        };
        let user = session.user_id.clone();
        self.db(move |conn, _| snapshot::begin_gated_rebuild(conn, &user))
            .await?
            .map_err(|e| step_to_snapshot(e, "rebuild"))?;
        let request = SnapshotSessionCreateRequest {
            source_replacement: Some(SnapshotSourceReplacement {
                previous_source_id: session.source_id.clone(),
                new_source_id: replacement.clone(),
                reason: operation.recovery_code(),
            }),
        };
        let source = session.source_id.clone();
        let rows = self.limits(session).await.snapshot_rows;
        let snap = self
            .download_snapshot(&source, Some(&request), false, rows)
            .await?;
        let options = snapshot::ApplyOptions {
            preserve_outbox: true,
            preserve_dirty: true,
            rotate_to: Some(replacement),
            clear_operation: true,
            ..snapshot::ApplyOptions::default()
        };
        let s = snap.clone();
        let target = self
            .db(move |conn, catalog| snapshot::apply(conn, catalog, &s, &options))
            .await?
            .map_err(|e| step_to_snapshot(e, "rebuild"))?;
        session.source_id = target;
        self.snapshot_applied(&snap);
        self.remote_report(
            RemoteOutcome::AppliedSnapshot,
            Some(RestoreSummary {
                bundle_seq: snap.snapshot_bundle_seq,
                row_count: snap.row_count,
            }),
        )
        .await
    }

    /// `sync`: push (unless uploads are paused), then pull (unless downloads are paused),
    /// then status. The first error aborts.
    ///
    /// # Errors
    /// See [`SyncError`].
    pub async fn sync(&self) -> Result<SyncReport, SyncError> {
        let mut session = self.gate().map_err(PushError::from)?;
        match self
            .connected_check(&session)
            .await
            .map_err(PushError::from)?
        {
            Ok(()) => {}
            Err(false) => return Err(PushError::OpenRequired.into()),
            Err(true) => return Err(PushError::AttachRequired.into()),
        }
        let push_outcome = if self.uploads_paused.load(Ordering::SeqCst) {
            PushOutcome::SkippedPaused
        } else {
            let result = self.push_locked(&mut session).await;
            self.record_push_result(&result);
            result?.outcome
        };
        let (remote_outcome, restore) = if self.downloads_paused.load(Ordering::SeqCst) {
            (RemoteOutcome::SkippedPaused, None)
        } else {
            let result = self.pull_locked(&mut session).await;
            self.record_pull_result(&result);
            let report = result?;
            (report.outcome, report.restore)
        };
        Ok(SyncReport {
            push_outcome,
            remote_outcome,
            status: self.status_now().await.map_err(PushError::from)?,
            restore,
        })
    }

    /// Up to three rounds of `sync` then `detach`, stopping when detach succeeds or the
    /// pending count stops decreasing (§3.8).
    ///
    /// # Errors
    /// Any error of `sync` or `detach`.
    pub async fn sync_then_detach(&self) -> Result<SyncThenDetachResult, SyncError> {
        let mut previous = i64::MAX;
        let mut last_sync = None;
        for round in 1..=3 {
            last_sync = Some(self.sync().await?);
            let detach = self.detach().await?;
            if detach.outcome == DetachOutcome::Detached {
                return Ok(SyncThenDetachResult {
                    last_sync,
                    detach,
                    sync_rounds: round,
                    remaining_pending_row_count: 0,
                });
            }
            let pending = self.pending_sync_status().await?.pending_row_count;
            if pending >= previous || round == 3 {
                return Ok(SyncThenDetachResult {
                    last_sync,
                    detach: DetachResult {
                        outcome: DetachOutcome::BlockedUnsyncedData,
                        pending_row_count: pending,
                    },
                    sync_rounds: round,
                    remaining_pending_row_count: pending,
                });
            }
            previous = pending;
        }
        let pending = self.pending_sync_status().await?.pending_row_count;
        Ok(SyncThenDetachResult {
            last_sync,
            detach: DetachResult {
                outcome: DetachOutcome::BlockedUnsyncedData,
                pending_row_count: pending,
            },
            sync_rounds: 3,
            remaining_pending_row_count: pending,
        })
    }

    /// Drops every trigger the client installed and all metadata tables in one transaction
    /// (business rows stay), then closes the client.
    ///
    /// # Errors
    /// Gate or storage failures.
    pub async fn uninstall_sync(&self) -> Result<(), LocalError> {
        let mut session = self.gate()?;
        self.db(schema::uninstall).await??;
        *session = Session::default();
        self.closed.store(true, Ordering::SeqCst);
        self.release_ownership();
        Ok(())
    }

    /// Waits for the running operation, marks the client closed and releases the database
    /// ownership claim. Idempotent; does not close the connection.
    pub async fn close(&self) {
        let _session = self.session.lock().await;
        self.closed.store(true, Ordering::SeqCst);
        self.release_ownership();
    }

    fn release_ownership(&self) {
        let key = self
            .ownership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(key) = key {
            owners()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}

impl<T: Transport> Drop for Client<T> {
    fn drop(&mut self) {
        self.release_ownership();
    }
}

/// The tables of the committed bundle staged for replay.
fn staged_tables(conn: &Connection, bundle_seq: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT table_name FROM _sync_push_stage WHERE bundle_seq = ?1 ORDER BY 1",
        )
        .ctx("read staged tables")?;
    let tables = stmt
        .query_map([bundle_seq], |r| r.get::<_, String>(0))
        .ctx("read staged tables")?
        .collect::<Result<Vec<_>, _>>()
        .ctx("read staged tables")?;
    Ok(tables)
}

fn valid_commit(c: &PushSessionCommitResponse) -> bool {
    c.bundle_seq > 0
        && !c.source_id.trim().is_empty()
        && c.source_bundle_id > 0
        && c.row_count > 0
        && !c.bundle_hash.trim().is_empty()
}
