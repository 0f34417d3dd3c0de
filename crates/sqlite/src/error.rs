//! Typed errors, one enum per public operation (client chapter §1.5).
//!
//! Leaf errors that several operations share — local storage, the transport, a server response
//! that breaks the protocol, a failed snapshot rebuild — are their own types and convert into
//! every operation's enum, so an operation's signature lists exactly what can go wrong in it.
//! Each variant's doc says whose fault it is. `is_retryable()` answers "may the same call
//! succeed later without anyone changing anything": transient transport failures, SQLite
//! BUSY/LOCKED, and contention on the operation gate.

use crate::transport::TransportError;

/// The local SQLite database failed or holds state this client cannot use. Fault: the local
/// environment (disk, another process holding a lock) or the database's history.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A SQLite statement failed while doing `context`.
    #[error("{context}: {source}")]
    Sqlite {
        /// What the client was doing.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The sync metadata was written by a newer client whose layout this build does not
    /// know; opening it could corrupt it. Fault: a downgrade of the host application.
    #[error("sync metadata layout version {found} is newer than the supported version {supported}")]
    LayoutTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// Local sync metadata violates an invariant the client relies on (e.g. two outbox
    /// bundle ids, an unconfigured table in the dirty set). Fault: local state.
    #[error("inconsistent local sync state: {0}")]
    Inconsistent(String),
    /// A stored payload or key could not be converted. Fault: local data.
    #[error("local payload: {0}")]
    Payload(#[from] crate::payload::PayloadError),
    /// The database thread has stopped (the client was dropped or panicked).
    #[error("the database thread has stopped")]
    DatabaseThreadGone,
}

impl StoreError {
    /// True for SQLite BUSY/LOCKED, which a later attempt may not hit.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

/// Attaches what the client was doing to a SQLite error.
pub(crate) trait SqliteContext<T> {
    /// Wraps the error as [`StoreError::Sqlite`] with `context`.
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> SqliteContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { context, source })
    }
}

/// A `200` response that breaks the protocol's rules (client chapter §10.6). Nothing durable
/// was changed because of it. Fault: the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol violation in {endpoint} response: {message}")]
pub struct ProtocolViolation {
    /// The endpoint that answered.
    pub endpoint: &'static str,
    /// What was wrong.
    pub message: String,
}

impl ProtocolViolation {
    pub(crate) fn new(endpoint: &'static str, message: impl Into<String>) -> Self {
        ProtocolViolation {
            endpoint,
            message: message.into(),
        }
    }
}

/// The operation could not start. Fault: the caller (concurrent use or use after close).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// `close` or `uninstall_sync` has run.
    #[error("the sync client has been closed")]
    ClientClosed,
    /// Another operation holds the client's gate; nothing was done.
    #[error("another sync operation is in progress")]
    SyncOperationInProgress,
}

/// What the host must do before a refused operation can succeed: the answer a UI or a
/// background loop needs instead of retrying blindly (client chapter §12.4: recovery states
/// are "needs host action", not transient failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequiredAction {
    /// Call `open` (first use in this process).
    Open,
    /// Call `attach(user)`: no connected session, the binding was dropped after a seed-lease
    /// failure, or a pending remote replace must finish.
    Attach,
    /// Call `rebuild`: source recovery is pending or the rebuild gate is set. Unsynced local
    /// changes are kept.
    Rebuild,
    /// Push first (`push_pending` or `sync`): local changes must reach the server before a
    /// pull may apply remote ones.
    Push,
}

/// A rebuild from a server snapshot failed (used by attach, pull, push recovery and rebuild).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Transport or HTTP failure. Fault: network or server.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The snapshot responses broke the protocol. Fault: the server.
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// Local failure. Fault: local environment.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The durable binding no longer says "attached to the session user". Fault: a concurrent
    /// `detach` or external change.
    #[error("{operation} requires an attached session")]
    AttachRequired {
        /// The operation that needed it.
        operation: &'static str,
    },
    /// The server retired the old source in favour of another replacement than the one this
    /// client reserved. Fault: two devices sharing one source identity, or a restored backup.
    #[error("source replacement diverged: local {local}, remote {remote}")]
    SourceReplacementDiverged {
        /// The replacement this client reserved.
        local: String,
        /// The replacement the server recorded.
        remote: String,
    },
}

impl SnapshotError {
    /// Whether retrying the same rebuild later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SnapshotError::Transport(e) => e.is_retryable(),
            SnapshotError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Errors of [`crate::Client::new`].
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The configuration or the application's tables are not supported. Fault: the host.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another live client in this process owns the same database file. Fault: the host.
    #[error("another oversync client is already active for SQLite database {database}")]
    DatabaseAlreadyOwned {
        /// The database's label (its resolved path).
        database: String,
    },
    /// Local failure, including a metadata layout newer than this build.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A configuration or application schema the client cannot manage (§2.7, §2.8). Fault: the
/// host application. Every variant names the table it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `schema` is blank.
    #[error("config schema must be provided")]
    EmptySchema,
    /// A table entry has a blank name.
    #[error("sync table name must be provided")]
    EmptyTableName,
    /// A table name contains `.`.
    #[error("table {table} must not include a schema qualifier")]
    SchemaQualifiedTable {
        /// The configured name.
        table: String,
    },
    /// The same table is listed twice (case-insensitively).
    #[error("duplicate sync table registration for {table}")]
    DuplicateTable {
        /// The lower-cased name.
        table: String,
    },
    /// Not exactly one key column after normalisation.
    #[error("table {table} must declare exactly one sync key column, got {count}")]
    KeyColumnCount {
        /// The table.
        table: String,
        /// How many remained.
        count: usize,
    },
    /// The table does not exist in the local database.
    #[error("table {table} does not exist in the local database")]
    MissingTable {
        /// The table.
        table: String,
    },
    /// The key column is not a column of the table.
    #[error("table {table} has no sync key column {column}")]
    KeyColumnNotFound {
        /// The table.
        table: String,
        /// The configured key column.
        column: String,
    },
    /// The key column is not the table's primary key, or the primary key has more columns
    /// (§12 B8).
    #[error(
        "table {table}: sync key column {column} must be the table's single-column primary key"
    )]
    KeyNotPrimaryKey {
        /// The table.
        table: String,
        /// The key column.
        column: String,
    },
    /// The key column's declared type is neither TEXT nor BLOB.
    #[error(
        "table {table} uses unsupported local sync key column {column} type {declared_type:?}; only TEXT keys and UUID-backed BLOB keys are supported"
    )]
    UnsupportedKeyType {
        /// The table.
        table: String,
        /// The key column.
        column: String,
        /// Its declared type.
        declared_type: String,
    },
    /// A foreign key of the table spans several columns.
    #[error("table {table} has unsupported composite foreign keys: {offenders}")]
    CompositeForeignKey {
        /// The table.
        table: String,
        /// `table.col -> ref.col`, sorted, comma-separated.
        offenders: String,
    },
    /// A foreign key of the table points at a table that is not managed.
    #[error("managed tables are not FK-closed: {offenders}")]
    NotForeignKeyClosed {
        /// The table.
        table: String,
        /// `table.col -> ref.col`, sorted, comma-separated.
        offenders: String,
    },
    /// Existing sync state belongs to another schema (§2.8).
    #[error(
        "exactly one configured schema per local database; existing sync state uses {existing} while config schema is {configured}"
    )]
    SchemaScopeMismatch {
        /// The schemas found, comma-separated.
        existing: String,
        /// The configured schema.
        configured: String,
    },
}

macro_rules! retryable_via {
    ($ty:ident { $($variant:ident),* }) => {
        impl $ty {
            /// Whether the same call may succeed later without anyone changing anything.
            pub fn is_retryable(&self) -> bool {
                match self {
                    $( $ty::$variant(e) => e.is_retryable(), )*
                    #[allow(unreachable_patterns, reason = "not every enum has a gate variant")]
                    $ty::Gate(GateError::SyncOperationInProgress) => true,
                    _ => false,
                }
            }
        }
    };
}

/// Errors of `open`, `detach`, `pending_sync_status` and `uninstall_sync`.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The gate refused the call.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// Local failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}
retryable_via!(LocalError { Store });

/// Errors of the read operations that need a connected session (`sync_status`,
/// `last_bundle_seq_seen`, `source_info`).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The gate refused the call.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// `open` has not run in this process. Fault: the caller.
    #[error("{operation} requires open")]
    OpenRequired {
        /// The operation.
        operation: &'static str,
    },
    /// No connected session, or the durable binding no longer matches it. Fault: the caller.
    #[error("{operation} requires an attached session")]
    AttachRequired {
        /// The operation.
        operation: &'static str,
    },
    /// Local failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}
retryable_via!(StatusError { Store });

/// Errors of `attach`.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The gate refused the call.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// `user_id` is blank. Fault: the caller.
    #[error("attach requires a non-empty user id")]
    EmptyUserId,
    /// `open` has not run in this process. Fault: the caller.
    #[error("attach requires open")]
    OpenRequired,
    /// The database is durably attached to another user; `detach` first. Fault: the caller.
    #[error("database is attached to user {attached_user}; cannot attach {requested_user}")]
    BindingConflict {
        /// The bound user.
        attached_user: String,
        /// The requested user.
        requested_user: String,
    },
    /// Pending local lifecycle state belongs to another user or source. Fault: the caller
    /// (switching users in the middle of a transition).
    #[error("attach conflicts with local state: {reason}")]
    LocalStateConflict {
        /// What conflicts.
        reason: String,
    },
    /// The server does not offer the connect lifecycle. Fault: server deployment.
    #[error("server does not support the attach lifecycle: {reason}")]
    LifecycleUnsupported {
        /// Why.
        reason: String,
    },
    /// Transport or HTTP failure. Fault: network or server; nothing durable changed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server's response broke the protocol. Fault: the server.
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// Hydrating from the server's snapshot failed; the remote replace stays pending and the
    /// next `attach` resumes it.
    #[error("remote replace: {0}")]
    Snapshot(#[from] SnapshotError),
    /// Local failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}
retryable_via!(AttachError {
    Transport,
    Snapshot,
    Store
});

/// Errors of `push_pending`.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The gate refused the call.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// `open` has not run in this process. Fault: the caller.
    #[error("push_pending requires open")]
    OpenRequired,
    /// No connected session. Fault: the caller.
    #[error("push_pending requires an attached session")]
    AttachRequired,
    /// A source-sequencing failure was recorded; `rebuild` must run first. Fault: device
    /// history (restored backup, retired source).
    #[error("source recovery required ({code}): {message}; call rebuild() to rotate the source")]
    SourceRecoveryRequired {
        /// One of the four recovery codes.
        code: String,
        /// The server's message when it was just entered; empty after a restart.
        message: String,
    },
    /// An unknown durable operation is pending (forward compatibility).
    #[error("destructive transition in progress: {kind}")]
    DestructiveTransitionInProgress {
        /// The stored operation kind.
        kind: String,
    },
    /// The rebuild gate is set while a remote replace is pending; `attach` must finish it
    /// first. (The gate left by an interrupted keep-source rebuild does not block pushing,
    /// §12 A1.)
    #[error("rebuild required before push")]
    RebuildRequired,
    /// The seed lease expired or was taken over; the binding was dropped (the outbox is
    /// kept) and the caller must `attach` again. Fault: timing.
    #[error("initialization lease invalid ({code}): {message}; reconnect required")]
    InitializationLeaseInvalid {
        /// `initialization_expired` or `initialization_stale`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A structured push conflict the resolver path could not consume: the conflicting key is
    /// not part of the outbox. The outbox was kept unchanged. Fault: the server.
    #[error("push conflict on {table} {key} (status {status}): {message}")]
    PushConflict {
        /// The HTTP status (409).
        status: u16,
        /// The conflicting table.
        table: String,
        /// The conflicting key, as JSON.
        key: String,
        /// The server's message.
        message: String,
        /// The decoded conflict.
        conflict: Box<oversync_protocol::wire::PushConflictDetails>,
    },
    /// The resolver's decision does not fit the conflict (§5.3). Every outbox row, the
    /// conflicting one included, is back in the dirty set and business rows are untouched, so
    /// a later push (perhaps with another resolver) replays it. Fault: the resolver.
    #[error("invalid conflict resolution: {message}")]
    InvalidConflictResolution {
        /// What the resolver was asked.
        conflict: Box<crate::conflict::ConflictContext>,
        /// What it answered.
        result: Box<crate::conflict::MergeResult>,
        /// Why the answer cannot be applied.
        message: String,
    },
    /// The resolver accepted the server's state of a row, but that state contradicts other
    /// local intent: the server's row references a row this device deleted without a cascade
    /// (e.g. the captain of a team whose deletion lost the conflict). Business rows were left
    /// as they were, the conflicting key's intent and the contradicted DELETEs were dropped
    /// (neither was ever acknowledged), every other intent is queued, and the rebuild gate is
    /// set: `rebuild` (after a push of the queued intent) restores the server's rows. Pulls
    /// answer `RebuildRequired` until then. Fault: concurrent writers.
    #[error("conflict resolution requires a rebuild: {message}")]
    ConflictRequiresRebuild {
        /// What the resolver was asked.
        conflict: Box<crate::conflict::ConflictContext>,
        /// What was dropped and why.
        message: String,
    },
    /// Conflicts persisted through the automatic retries (§5.5). The outbox is empty and every
    /// surviving intent is a dirty row, so a later push continues. Fault: concurrent writers.
    #[error(
        "push conflict auto-retry exhausted after {retry_count} retries; {remaining_dirty_count} dirty rows remain replayable"
    )]
    PushConflictRetryExhausted {
        /// The automatic retries made (2).
        retry_count: u32,
        /// Dirty rows still queued.
        remaining_dirty_count: i64,
    },
    /// The locally reserved replacement source disagrees with the server's.
    #[error("source replacement diverged: local {local}, remote {remote}")]
    SourceReplacementDiverged {
        /// Reserved locally.
        local: String,
        /// Offered by the server.
        remote: String,
    },
    /// Transport or HTTP failure; the outbox is kept and the next push resumes it.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A server response broke the protocol; the outbox is kept.
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// The replay-pruned recovery rebuild failed (§4.8).
    #[error("replay-pruned recovery: {0}")]
    Snapshot(#[from] SnapshotError),
    /// Local failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}
retryable_via!(PushError {
    Transport,
    Snapshot,
    Store
});

impl PushError {
    /// What the host must do before pushing can succeed; `None` when waiting (or fixing the
    /// network, server or resolver) is the only remedy.
    pub fn required_action(&self) -> Option<RequiredAction> {
        match self {
            PushError::OpenRequired => Some(RequiredAction::Open),
            PushError::AttachRequired
            | PushError::RebuildRequired
            | PushError::InitializationLeaseInvalid { .. } => Some(RequiredAction::Attach),
            PushError::SourceRecoveryRequired { .. }
            | PushError::ConflictRequiresRebuild { .. } => Some(RequiredAction::Rebuild),
            PushError::Snapshot(SnapshotError::AttachRequired { .. }) => {
                Some(RequiredAction::Attach)
            }
            _ => None,
        }
    }
}

/// Errors of `pull_to_stable` and `rebuild`.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The gate refused the call.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// `open` has not run in this process. Fault: the caller.
    #[error("{operation} requires open")]
    OpenRequired {
        /// The operation.
        operation: &'static str,
    },
    /// No connected session. Fault: the caller.
    #[error("{operation} requires an attached session")]
    AttachRequired {
        /// The operation.
        operation: &'static str,
    },
    /// A source-sequencing failure was recorded; `rebuild` must run first.
    #[error("source recovery required ({code}); call rebuild() to rotate the source")]
    SourceRecoveryRequired {
        /// One of the four recovery codes.
        code: String,
    },
    /// An unknown durable operation is pending (forward compatibility).
    #[error("destructive transition in progress: {kind}")]
    DestructiveTransitionInProgress {
        /// The stored operation kind.
        kind: String,
    },
    /// A remote replace is pending; `attach` finishes it.
    #[error("a remote replace for user {target_user} is pending")]
    RemoteReplacePending {
        /// The user being attached.
        target_user: String,
    },
    /// The rebuild gate is set; `rebuild` must run first.
    #[error("rebuild required")]
    RebuildRequired,
    /// A frozen outbox awaits push/replay; push first. Fault: the caller's ordering.
    #[error("{count} outbox rows await push replay")]
    PendingPushReplay {
        /// Outbox rows.
        count: i64,
    },
    /// Local changes are pending; push first. Fault: the caller's ordering.
    #[error("{count} dirty rows are pending")]
    DirtyStateRejected {
        /// Dirty rows.
        count: i64,
    },
    /// Transport or HTTP failure; nothing from the failed response was applied.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A server response broke the protocol; nothing from it was applied.
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// The snapshot rebuild failed; business rows, checkpoint and source are unchanged.
    #[error("rebuild: {0}")]
    Snapshot(#[from] SnapshotError),
    /// Local failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}
retryable_via!(PullError {
    Transport,
    Snapshot,
    Store
});

impl PullError {
    /// What the host must do before pulling (or rebuilding) can succeed; `None` when waiting
    /// is the only remedy.
    pub fn required_action(&self) -> Option<RequiredAction> {
        match self {
            PullError::OpenRequired { .. } => Some(RequiredAction::Open),
            PullError::AttachRequired { .. }
            | PullError::RemoteReplacePending { .. }
            | PullError::Snapshot(SnapshotError::AttachRequired { .. }) => {
                Some(RequiredAction::Attach)
            }
            PullError::SourceRecoveryRequired { .. } | PullError::RebuildRequired => {
                Some(RequiredAction::Rebuild)
            }
            PullError::PendingPushReplay { .. } | PullError::DirtyStateRejected { .. } => {
                Some(RequiredAction::Push)
            }
            _ => None,
        }
    }
}

/// Errors of `sync` and `sync_then_detach`.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The push leg failed.
    #[error("push: {0}")]
    Push(#[from] PushError),
    /// The pull leg failed.
    #[error("pull: {0}")]
    Pull(#[from] PullError),
    /// The status or detach step failed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The detach step failed.
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl SyncError {
    /// What the host must do before `sync` can succeed; `None` when waiting is the only
    /// remedy.
    pub fn required_action(&self) -> Option<RequiredAction> {
        match self {
            SyncError::Push(e) => e.required_action(),
            SyncError::Pull(e) => e.required_action(),
            SyncError::Status(StatusError::OpenRequired { .. }) => Some(RequiredAction::Open),
            SyncError::Status(StatusError::AttachRequired { .. }) => Some(RequiredAction::Attach),
            SyncError::Status(_) | SyncError::Local(_) => None,
        }
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Push(e) => e.is_retryable(),
            SyncError::Pull(e) => e.is_retryable(),
            SyncError::Status(e) => e.is_retryable(),
            SyncError::Local(e) => e.is_retryable(),
        }
    }
}

/// Why background sync could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Background loops of this client are already running (the reference starts a second
    /// pair, §12 C4). Fault: the caller.
    #[error("background sync is already running for this client")]
    AlreadyRunning,
    /// `close` or `uninstall_sync` has run. Fault: the caller.
    #[error("the sync client has been closed")]
    ClientClosed,
    /// `start` was called outside a tokio runtime. Fault: the caller.
    #[error("background sync needs a tokio runtime")]
    NoRuntime,
}
