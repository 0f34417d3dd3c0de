//! Errors of every operation, each naming the protocol error code it maps to.
//!
//! Every public operation has its own enum (`ConnectError`, `PushCreateError`, …) whose
//! variants are exactly the outcomes that operation can produce, with the reference's message
//! templates (01-wire.md). Each has `code()` (the [`ErrorCode`], whose HTTP status lives in
//! `oversync-protocol`), `to_body()` (the wire envelope) and `is_retryable()`. An `Internal`
//! variant always maps to the operation's generic 500 code and keeps the source error for
//! logging; its detail never reaches the wire.
//!
//! Inside the crate, helpers shared by several operations return `Failure`, the union of all
//! domain outcomes; each public enum is built from it, mapping anything its operation cannot
//! produce to `Internal` (a broken invariant, not a client-visible case).

use std::error::Error as StdError;
use std::fmt;

use oversync_protocol::error::{
    ErrorBody, ErrorCode, ErrorResponse, PushConflictResponse, SourceRetiredResponse,
};
use oversync_protocol::wire::PushConflictDetails;
use tokio_postgres::error::SqlState;

/// An unexpected failure: a database error or a broken invariant, with what was being
/// attempted. Server's fault (or the database's); maps to the operation's generic 500 code.
#[derive(Debug)]
pub struct InternalError {
    context: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl InternalError {
    /// A failure described by `context` alone.
    pub(crate) fn new(context: impl Into<String>) -> Self {
        InternalError {
            context: context.into(),
            source: None,
        }
    }

    /// A failure while doing `context`, caused by `source`.
    pub(crate) fn with_source(
        context: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        InternalError {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What was being attempted.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The SQLSTATE of the underlying database error, if there is one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        self.db_error().map(tokio_postgres::error::DbError::code)
    }

    /// The underlying database error, if there is one.
    pub fn db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        let source = self.source.as_deref()?;
        let pg = source.downcast_ref::<tokio_postgres::Error>()?;
        pg.as_db_error()
    }

    /// Whether retrying the whole transaction may succeed: serialization failure (40001),
    /// deadlock (40P01) or lock not available (55P03, including `lock_timeout`).
    pub fn is_retryable(&self) -> bool {
        self.sqlstate()
            .is_some_and(crate::db::is_retryable_sqlstate)
    }
}

impl fmt::Display for InternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        let mut source = self
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static));
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl StdError for InternalError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Why the service refused to admit an operation (§1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `close` was called and in-flight operations are draining.
    ShuttingDown,
    /// The service is closed.
    Closed,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::ShuttingDown => "Sync service is shutting down",
            Refusal::Closed => "Sync service is closed",
        }
    }
}

/// Details of a `push_conflict`: the reference message and the structured first conflict.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// Human-readable text (clients use the structured fields).
    pub message: String,
    /// The first conflicting row.
    pub details: PushConflictDetails,
}

/// The union of domain outcomes shared by several operations (crate-internal).
#[derive(Debug)]
pub(crate) enum Failure {
    Unavailable(Refusal),
    Invalid(String),
    ScopeUninitialized {
        user_id: String,
    },
    ScopeInitializing {
        user_id: String,
        lease_expires_at: String,
    },
    InitializationStale(&'static str),
    InitializationExpired(&'static str),
    HistoryPruned(String),
    OutOfOrder {
        user_id: String,
        source_id: String,
        expected: i64,
        actual: i64,
    },
    SequenceChanged {
        user_id: String,
        source_id: String,
        staged: i64,
        expected: i64,
    },
    SourceRetired {
        user_id: String,
        source_id: String,
        replaced_by: String,
    },
    SessionNotFound(String),
    SessionForbidden(String),
    SessionExpired(String),
    ChunkOutOfOrder {
        push_id: String,
        expected: i64,
        actual: i64,
    },
    Conflict(Box<Conflict>),
    BundleNotFound(i64),
    ReplacementInvalid(String),
    SnapshotLimit {
        dimension: &'static str,
        actual: i64,
        limit: i64,
    },
    Internal(InternalError),
}

impl Failure {
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Failure::Internal(e) if e.is_retryable())
    }

    fn unexpected(self, operation: &str) -> InternalError {
        InternalError::new(format!("{operation}: unexpected outcome {self:?}"))
    }
}

impl From<InternalError> for Failure {
    fn from(e: InternalError) -> Self {
        Failure::Internal(e)
    }
}

/// The reference's `history_pruned` message for a checkpoint or bundle below the floor.
pub(crate) fn checkpoint_pruned(user_id: &str, provided: i64, floor: i64) -> Failure {
    Failure::HistoryPruned(format!(
        "requested checkpoint {provided} is older than retained history floor {floor} for user {user_id}"
    ))
}

/// The reference's `history_pruned` message for a source tuple below the source's sequence.
pub(crate) fn source_tuple_pruned(
    user_id: &str,
    source_id: &str,
    source_bundle_id: i64,
    max_committed: i64,
) -> Failure {
    Failure::HistoryPruned(format!(
        "source tuple ({source_id}, {source_bundle_id}) for user {user_id} is older than retained duplicate history; max committed source_bundle_id is {max_committed}"
    ))
}

fn plain(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::Plain(ErrorResponse::new(code, message))
}

fn out_of_order_message(user_id: &str, source_id: &str, expected: i64, actual: i64) -> String {
    format!(
        "source {source_id} for user {user_id} expected next source_bundle_id {expected}, got {actual}"
    )
}

fn scope_uninitialized_message(user_id: &str) -> String {
    format!("sync scope for user {user_id} is not initialized")
}

fn scope_initializing_message(user_id: &str, lease_expires_at: &str) -> String {
    if lease_expires_at.is_empty() {
        format!("sync scope for user {user_id} is initializing")
    } else {
        format!("sync scope for user {user_id} is initializing until {lease_expires_at}")
    }
}

fn retired_message(user_id: &str, source_id: &str, replaced_by: &str) -> String {
    SourceRetiredResponse::new(user_id, source_id, replaced_by).message
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::connect`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: no request (`connect_invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Server fault (`connect_failed`).
    #[error("connect failed: {0}")]
    Internal(#[from] InternalError),
}

impl ConnectError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ConnectError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            ConnectError::Invalid(_) => ErrorCode::ConnectInvalid,
            ConnectError::Internal(_) => ErrorCode::ConnectFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            ConnectError::Internal(_) => plain(self.code(), "Failed to resolve connect lifecycle"),
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for ConnectError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => ConnectError::Unavailable(r),
            Failure::Invalid(m) => ConnectError::Invalid(m),
            Failure::Internal(e) => ConnectError::Internal(e),
            other => ConnectError::Internal(other.unexpected("connect")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::create_push_session`].
#[derive(Debug, thiserror::Error)]
pub enum PushCreateError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: bad `source_bundle_id`, `planned_row_count` or `initialization_id`
    /// (`push_session_invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Caller state: the scope was never initialized through connect (`scope_uninitialized`).
    #[error("{}", scope_uninitialized_message(.user_id))]
    ScopeUninitialized {
        /// The actor's user.
        user_id: String,
    },
    /// Caller state: the lease is not this caller's (`initialization_stale`).
    #[error("{0}")]
    InitializationStale(&'static str),
    /// Caller state: the caller's lease expired (`initialization_expired`).
    #[error("{0}")]
    InitializationExpired(&'static str),
    /// Caller state: the tuple was committed but is below retained history (`history_pruned`).
    #[error("{0}")]
    HistoryPruned(String),
    /// Caller fault: the source skipped ahead (`source_sequence_out_of_order`).
    #[error("{}", out_of_order_message(.user_id, .source_id, *.expected, *.actual))]
    SourceSequenceOutOfOrder {
        /// The actor's user.
        user_id: String,
        /// The actor's source.
        source_id: String,
        /// The next `source_bundle_id` the server accepts.
        expected: i64,
        /// What the request carried.
        actual: i64,
    },
    /// Caller state: the source was rotated away (`source_retired`).
    #[error("{}", retired_message(.user_id, .source_id, .replaced_by))]
    SourceRetired {
        /// The actor's user.
        user_id: String,
        /// The retired source.
        source_id: String,
        /// Its replacement.
        replaced_by: String,
    },
    /// Server fault (`push_session_create_failed`).
    #[error("push session create failed: {0}")]
    Internal(#[from] InternalError),
}

impl PushCreateError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PushCreateError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            PushCreateError::Invalid(_) => ErrorCode::PushSessionInvalid,
            PushCreateError::ScopeUninitialized { .. } => ErrorCode::ScopeUninitialized,
            PushCreateError::InitializationStale(_) => ErrorCode::InitializationStale,
            PushCreateError::InitializationExpired(_) => ErrorCode::InitializationExpired,
            PushCreateError::HistoryPruned(_) => ErrorCode::HistoryPruned,
            PushCreateError::SourceSequenceOutOfOrder { .. } => ErrorCode::SourceSequenceOutOfOrder,
            PushCreateError::SourceRetired { .. } => ErrorCode::SourceRetired,
            PushCreateError::Internal(_) => ErrorCode::PushSessionCreateFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            PushCreateError::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            } => ErrorBody::SourceRetired(SourceRetiredResponse::new(
                user_id,
                source_id,
                replaced_by,
            )),
            PushCreateError::Internal(_) => plain(self.code(), "Failed to create push session"),
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PushCreateError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for PushCreateError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => PushCreateError::Unavailable(r),
            Failure::Invalid(m) => PushCreateError::Invalid(m),
            Failure::ScopeUninitialized { user_id } => {
                PushCreateError::ScopeUninitialized { user_id }
            }
            Failure::InitializationStale(m) => PushCreateError::InitializationStale(m),
            Failure::InitializationExpired(m) => PushCreateError::InitializationExpired(m),
            Failure::HistoryPruned(m) => PushCreateError::HistoryPruned(m),
            Failure::OutOfOrder {
                user_id,
                source_id,
                expected,
                actual,
            } => PushCreateError::SourceSequenceOutOfOrder {
                user_id,
                source_id,
                expected,
                actual,
            },
            Failure::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            } => PushCreateError::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            },
            Failure::Internal(e) => PushCreateError::Internal(e),
            other => PushCreateError::Internal(other.unexpected("push session create")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::upload_push_chunk`].
#[derive(Debug, thiserror::Error)]
pub enum PushChunkError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: the chunk or one of its rows is invalid (`push_chunk_invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Caller fault: unknown or malformed push id (`push_session_not_found`).
    #[error("push session {0} was not found")]
    NotFound(String),
    /// Caller fault: the session belongs to another user or source (`push_session_forbidden`).
    #[error("push session {0} does not belong to the authenticated user")]
    Forbidden(String),
    /// Caller state: the session expired (`push_session_expired`).
    #[error("push session {0} has expired; start a new push session")]
    Expired(String),
    /// Caller state: the seed lease is no longer this session's (`initialization_stale`).
    #[error("{0}")]
    InitializationStale(&'static str),
    /// Caller state: the seed lease expired (`initialization_expired`).
    #[error("{0}")]
    InitializationExpired(&'static str),
    /// Caller fault: the chunk does not continue the session (`push_chunk_out_of_order`).
    #[error("push session {push_id} expected start_row_ordinal {expected}, got {actual}")]
    OutOfOrder {
        /// The session.
        push_id: String,
        /// The session's next expected ordinal.
        expected: i64,
        /// What the chunk carried.
        actual: i64,
    },
    /// Server fault (`push_chunk_failed`).
    #[error("push chunk upload failed: {0}")]
    Internal(#[from] InternalError),
}

impl PushChunkError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PushChunkError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            PushChunkError::Invalid(_) => ErrorCode::PushChunkInvalid,
            PushChunkError::NotFound(_) => ErrorCode::PushSessionNotFound,
            PushChunkError::Forbidden(_) => ErrorCode::PushSessionForbidden,
            PushChunkError::Expired(_) => ErrorCode::PushSessionExpired,
            PushChunkError::InitializationStale(_) => ErrorCode::InitializationStale,
            PushChunkError::InitializationExpired(_) => ErrorCode::InitializationExpired,
            PushChunkError::OutOfOrder { .. } => ErrorCode::PushChunkOutOfOrder,
            PushChunkError::Internal(_) => ErrorCode::PushChunkFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            PushChunkError::Internal(_) => plain(self.code(), "Failed to upload push chunk"),
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PushChunkError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for PushChunkError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => PushChunkError::Unavailable(r),
            Failure::Invalid(m) => PushChunkError::Invalid(m),
            Failure::SessionNotFound(id) => PushChunkError::NotFound(id),
            Failure::SessionForbidden(id) => PushChunkError::Forbidden(id),
            Failure::SessionExpired(id) => PushChunkError::Expired(id),
            Failure::InitializationStale(m) => PushChunkError::InitializationStale(m),
            Failure::InitializationExpired(m) => PushChunkError::InitializationExpired(m),
            Failure::ChunkOutOfOrder {
                push_id,
                expected,
                actual,
            } => PushChunkError::OutOfOrder {
                push_id,
                expected,
                actual,
            },
            Failure::Internal(e) => PushChunkError::Internal(e),
            other => PushChunkError::Internal(other.unexpected("push chunk upload")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::commit_push_session`].
#[derive(Debug, thiserror::Error)]
pub enum PushCommitError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: unknown or malformed push id (`push_session_not_found`).
    #[error("push session {0} was not found")]
    NotFound(String),
    /// Caller fault: the session belongs to another user or source (`push_session_forbidden`).
    #[error("push session {0} does not belong to the authenticated user")]
    Forbidden(String),
    /// Caller state: the session expired (`push_session_expired`).
    #[error("push session {0} has expired; start a new push session")]
    Expired(String),
    /// Caller fault: incomplete or duplicate staging, no effects, a bundle over the configured
    /// limits, or rows the database rejects (constraint or data errors, named in the message)
    /// (`push_commit_invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Caller state: the seed lease is no longer this session's (`initialization_stale`).
    #[error("{0}")]
    InitializationStale(&'static str),
    /// Caller state: the seed lease expired (`initialization_expired`).
    #[error("{0}")]
    InitializationExpired(&'static str),
    /// Caller state: the session's source was rotated away (`source_retired`).
    #[error("{}", retired_message(.user_id, .source_id, .replaced_by))]
    SourceRetired {
        /// The actor's user.
        user_id: String,
        /// The retired source.
        source_id: String,
        /// Its replacement.
        replaced_by: String,
    },
    /// Caller state: the source's sequence moved since the session was created
    /// (`source_sequence_changed`).
    #[error(
        "source {source_id} for user {user_id} changed expected next source_bundle_id from staged {staged} to {expected} before commit"
    )]
    SourceSequenceChanged {
        /// The actor's user.
        user_id: String,
        /// The session's source.
        source_id: String,
        /// The session's `source_bundle_id`.
        staged: i64,
        /// What the server expects now.
        expected: i64,
    },
    /// Caller state: a row's `base_row_version` does not match the server (`push_conflict`).
    #[error("{}", .0.message)]
    Conflict(Box<Conflict>),
    /// Server fault (`push_session_commit_failed`).
    #[error("push session commit failed: {0}")]
    Internal(#[from] InternalError),
}

impl PushCommitError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PushCommitError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            PushCommitError::NotFound(_) => ErrorCode::PushSessionNotFound,
            PushCommitError::Forbidden(_) => ErrorCode::PushSessionForbidden,
            PushCommitError::Expired(_) => ErrorCode::PushSessionExpired,
            PushCommitError::Invalid(_) => ErrorCode::PushCommitInvalid,
            PushCommitError::InitializationStale(_) => ErrorCode::InitializationStale,
            PushCommitError::InitializationExpired(_) => ErrorCode::InitializationExpired,
            PushCommitError::SourceRetired { .. } => ErrorCode::SourceRetired,
            PushCommitError::SourceSequenceChanged { .. } => ErrorCode::SourceSequenceChanged,
            PushCommitError::Conflict(_) => ErrorCode::PushConflict,
            PushCommitError::Internal(_) => ErrorCode::PushSessionCommitFailed,
        }
    }

    /// The wire envelope (structured for `push_conflict` and `source_retired`).
    pub fn to_body(&self) -> ErrorBody {
        match self {
            PushCommitError::Conflict(conflict) => ErrorBody::PushConflict(
                PushConflictResponse::new(conflict.message.clone(), conflict.details.clone()),
            ),
            PushCommitError::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            } => ErrorBody::SourceRetired(SourceRetiredResponse::new(
                user_id,
                source_id,
                replaced_by,
            )),
            PushCommitError::Internal(_) => plain(self.code(), "Failed to commit push session"),
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PushCommitError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for PushCommitError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => PushCommitError::Unavailable(r),
            Failure::Invalid(m) => PushCommitError::Invalid(m),
            Failure::SessionNotFound(id) => PushCommitError::NotFound(id),
            Failure::SessionForbidden(id) => PushCommitError::Forbidden(id),
            Failure::SessionExpired(id) => PushCommitError::Expired(id),
            Failure::InitializationStale(m) => PushCommitError::InitializationStale(m),
            Failure::InitializationExpired(m) => PushCommitError::InitializationExpired(m),
            Failure::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            } => PushCommitError::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            },
            Failure::SequenceChanged {
                user_id,
                source_id,
                staged,
                expected,
            } => PushCommitError::SourceSequenceChanged {
                user_id,
                source_id,
                staged,
                expected,
            },
            Failure::Conflict(c) => PushCommitError::Conflict(c),
            Failure::Internal(e) => PushCommitError::Internal(e),
            other => PushCommitError::Internal(other.unexpected("push session commit")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::delete_push_session`].
#[derive(Debug, thiserror::Error)]
pub enum PushDeleteError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: unknown or malformed push id (`push_session_not_found`).
    #[error("push session {0} was not found")]
    NotFound(String),
    /// Caller fault: the session belongs to another user or source (`push_session_forbidden`).
    #[error("push session {0} does not belong to the authenticated user")]
    Forbidden(String),
    /// Caller state: the session expired (`push_session_expired`).
    #[error("push session {0} has expired; start a new push session")]
    Expired(String),
    /// Server fault (`push_session_delete_failed`).
    #[error("push session delete failed: {0}")]
    Internal(#[from] InternalError),
}

impl PushDeleteError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PushDeleteError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            PushDeleteError::NotFound(_) => ErrorCode::PushSessionNotFound,
            PushDeleteError::Forbidden(_) => ErrorCode::PushSessionForbidden,
            PushDeleteError::Expired(_) => ErrorCode::PushSessionExpired,
            PushDeleteError::Internal(_) => ErrorCode::PushSessionDeleteFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            PushDeleteError::Internal(_) => plain(self.code(), "Failed to delete push session"),
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PushDeleteError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for PushDeleteError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => PushDeleteError::Unavailable(r),
            Failure::SessionNotFound(id) => PushDeleteError::NotFound(id),
            Failure::SessionForbidden(id) => PushDeleteError::Forbidden(id),
            Failure::SessionExpired(id) => PushDeleteError::Expired(id),
            Failure::Internal(e) => PushDeleteError::Internal(e),
            other => PushDeleteError::Internal(other.unexpected("push session delete")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::committed_bundle_rows`].
#[derive(Debug, thiserror::Error)]
pub enum CommittedRowsError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: bad `bundle_seq`, `after_row_ordinal` or `max_rows`
    /// (`committed_bundle_chunk_invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Caller state: the bundle is at or below the retained floor (`history_pruned`).
    #[error("{0}")]
    HistoryPruned(String),
    /// Caller fault: no such bundle for this user (`committed_bundle_not_found`).
    #[error("committed bundle {0} was not found")]
    NotFound(i64),
    /// Server fault (`committed_bundle_rows_failed`).
    #[error("committed bundle fetch failed: {0}")]
    Internal(#[from] InternalError),
}

impl CommittedRowsError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommittedRowsError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            CommittedRowsError::Invalid(_) => ErrorCode::CommittedBundleChunkInvalid,
            CommittedRowsError::HistoryPruned(_) => ErrorCode::HistoryPruned,
            CommittedRowsError::NotFound(_) => ErrorCode::CommittedBundleNotFound,
            CommittedRowsError::Internal(_) => ErrorCode::CommittedBundleRowsFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            CommittedRowsError::Internal(_) => {
                plain(self.code(), "Failed to fetch committed bundle rows")
            }
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CommittedRowsError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for CommittedRowsError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => CommittedRowsError::Unavailable(r),
            Failure::Invalid(m) => CommittedRowsError::Invalid(m),
            Failure::HistoryPruned(m) => CommittedRowsError::HistoryPruned(m),
            Failure::BundleNotFound(seq) => CommittedRowsError::NotFound(seq),
            Failure::Internal(e) => CommittedRowsError::Internal(e),
            other => CommittedRowsError::Internal(other.unexpected("committed bundle fetch")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::pull`].
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: a negative checkpoint or target, or a bad identifier (`invalid_request`).
    #[error("{0}")]
    InvalidRequest(String),
    /// Caller state: the scope was never initialized (`scope_uninitialized`).
    #[error("{}", scope_uninitialized_message(.user_id))]
    ScopeUninitialized {
        /// The actor's user.
        user_id: String,
    },
    /// Caller state: another source holds a live initialization lease (`scope_initializing`).
    #[error("{}", scope_initializing_message(.user_id, .lease_expires_at))]
    ScopeInitializing {
        /// The actor's user.
        user_id: String,
        /// RFC 3339 lease expiry.
        lease_expires_at: String,
    },
    /// Caller state: the checkpoint or target is at or below the retained floor
    /// (`history_pruned`).
    #[error("{0}")]
    HistoryPruned(String),
    /// Server fault (`pull_failed`).
    #[error("pull failed: {0}")]
    Internal(#[from] InternalError),
}

impl PullError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PullError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            PullError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            PullError::ScopeUninitialized { .. } => ErrorCode::ScopeUninitialized,
            PullError::ScopeInitializing { .. } => ErrorCode::ScopeInitializing,
            PullError::HistoryPruned(_) => ErrorCode::HistoryPruned,
            PullError::Internal(_) => ErrorCode::PullFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            PullError::Internal(_) => plain(self.code(), "Failed to process pull"),
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PullError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for PullError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => PullError::Unavailable(r),
            Failure::ScopeUninitialized { user_id } => PullError::ScopeUninitialized { user_id },
            Failure::ScopeInitializing {
                user_id,
                lease_expires_at,
            } => PullError::ScopeInitializing {
                user_id,
                lease_expires_at,
            },
            Failure::HistoryPruned(m) => PullError::HistoryPruned(m),
            Failure::Internal(e) => PullError::Internal(e),
            other => PullError::Internal(other.unexpected("pull")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::create_snapshot_session`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotCreateError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: the `source_replacement` does not validate (`snapshot_session_invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Caller state: the scope was never initialized (`scope_uninitialized`).
    #[error("{}", scope_uninitialized_message(.user_id))]
    ScopeUninitialized {
        /// The actor's user.
        user_id: String,
    },
    /// Caller state: another source holds a live initialization lease (`scope_initializing`).
    #[error("{}", scope_initializing_message(.user_id, .lease_expires_at))]
    ScopeInitializing {
        /// The actor's user.
        user_id: String,
        /// RFC 3339 lease expiry.
        lease_expires_at: String,
    },
    /// Caller state: the previous source was already retired in favour of another replacement
    /// (`source_retired`, structured envelope).
    #[error("{}", retired_message(.user_id, .source_id, .replaced_by))]
    SourceRetired {
        /// The actor's user.
        user_id: String,
        /// The retired (previous) source.
        source_id: String,
        /// The replacement recorded for it.
        replaced_by: String,
    },
    /// Caller fault: the replacement source is already known or retired
    /// (`source_replacement_invalid`).
    #[error("{0}")]
    ReplacementInvalid(String),
    /// Caller state: the snapshot exceeds `max_rows_per_snapshot_session` or
    /// `max_bytes_per_snapshot_session` (`snapshot_session_limit_exceeded`; the reference
    /// answers 500). Nothing was stored and a requested rotation was rolled back.
    #[error("snapshot session {dimension} {actual} exceeds limit {limit}")]
    LimitExceeded {
        /// `row_count` or `byte_count`.
        dimension: &'static str,
        /// The snapshot's value.
        actual: i64,
        /// The configured cap.
        limit: i64,
    },
    /// Server fault, including business rows that disagree with `sync.row_state`
    /// (`snapshot_session_create_failed`).
    #[error("snapshot session create failed: {0}")]
    Internal(#[from] InternalError),
}

impl SnapshotCreateError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            SnapshotCreateError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            SnapshotCreateError::Invalid(_) => ErrorCode::SnapshotSessionInvalid,
            SnapshotCreateError::ScopeUninitialized { .. } => ErrorCode::ScopeUninitialized,
            SnapshotCreateError::ScopeInitializing { .. } => ErrorCode::ScopeInitializing,
            SnapshotCreateError::SourceRetired { .. } => ErrorCode::SourceRetired,
            SnapshotCreateError::ReplacementInvalid(_) => ErrorCode::SourceReplacementInvalid,
            SnapshotCreateError::LimitExceeded { .. } => ErrorCode::SnapshotSessionLimitExceeded,
            SnapshotCreateError::Internal(_) => ErrorCode::SnapshotSessionCreateFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            SnapshotCreateError::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            } => ErrorBody::SourceRetired(SourceRetiredResponse::new(
                user_id,
                source_id,
                replaced_by,
            )),
            SnapshotCreateError::Internal(_) => {
                plain(self.code(), "Failed to create snapshot session")
            }
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SnapshotCreateError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for SnapshotCreateError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => SnapshotCreateError::Unavailable(r),
            Failure::Invalid(m) => SnapshotCreateError::Invalid(m),
            Failure::ScopeUninitialized { user_id } => {
                SnapshotCreateError::ScopeUninitialized { user_id }
            }
            Failure::ScopeInitializing {
                user_id,
                lease_expires_at,
            } => SnapshotCreateError::ScopeInitializing {
                user_id,
                lease_expires_at,
            },
            Failure::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            } => SnapshotCreateError::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            },
            Failure::ReplacementInvalid(m) => SnapshotCreateError::ReplacementInvalid(m),
            Failure::SnapshotLimit {
                dimension,
                actual,
                limit,
            } => SnapshotCreateError::LimitExceeded {
                dimension,
                actual,
                limit,
            },
            Failure::Internal(e) => SnapshotCreateError::Internal(e),
            other => SnapshotCreateError::Internal(other.unexpected("snapshot session create")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::snapshot_chunk`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotChunkError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: empty id, negative `after_row_ordinal` or `max_rows <= 0`
    /// (`snapshot_chunk_invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Caller fault: unknown, already deleted or collected, or malformed snapshot id
    /// (`snapshot_session_not_found`).
    #[error("snapshot session {0} was not found")]
    NotFound(String),
    /// Caller fault: the session belongs to another user (`snapshot_session_forbidden`).
    #[error("snapshot session {0} does not belong to the authenticated user")]
    Forbidden(String),
    /// Caller state: the session's TTL elapsed (`snapshot_session_expired`).
    #[error("snapshot session {0} has expired; start a new snapshot session")]
    Expired(String),
    /// Server fault (`snapshot_chunk_failed`).
    #[error("snapshot chunk failed: {0}")]
    Internal(#[from] InternalError),
}

impl SnapshotChunkError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            SnapshotChunkError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            SnapshotChunkError::Invalid(_) => ErrorCode::SnapshotChunkInvalid,
            SnapshotChunkError::NotFound(_) => ErrorCode::SnapshotSessionNotFound,
            SnapshotChunkError::Forbidden(_) => ErrorCode::SnapshotSessionForbidden,
            SnapshotChunkError::Expired(_) => ErrorCode::SnapshotSessionExpired,
            SnapshotChunkError::Internal(_) => ErrorCode::SnapshotChunkFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            SnapshotChunkError::Internal(_) => plain(self.code(), "Failed to get snapshot chunk"),
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SnapshotChunkError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for SnapshotChunkError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => SnapshotChunkError::Unavailable(r),
            Failure::Invalid(m) => SnapshotChunkError::Invalid(m),
            Failure::SessionNotFound(id) => SnapshotChunkError::NotFound(id),
            Failure::SessionForbidden(id) => SnapshotChunkError::Forbidden(id),
            Failure::SessionExpired(id) => SnapshotChunkError::Expired(id),
            Failure::Internal(e) => SnapshotChunkError::Internal(e),
            other => SnapshotChunkError::Internal(other.unexpected("snapshot chunk")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::delete_snapshot_session`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDeleteError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Caller fault: empty id (`snapshot_chunk_invalid`, as in the reference).
    #[error("{0}")]
    Invalid(String),
    /// Caller fault: unknown or malformed snapshot id (`snapshot_session_not_found`).
    #[error("snapshot session {0} was not found")]
    NotFound(String),
    /// Caller fault: the session belongs to another user (`snapshot_session_forbidden`).
    #[error("snapshot session {0} does not belong to the authenticated user")]
    Forbidden(String),
    /// Server fault (`snapshot_session_delete_failed`).
    #[error("snapshot session delete failed: {0}")]
    Internal(#[from] InternalError),
}

impl SnapshotDeleteError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            SnapshotDeleteError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            SnapshotDeleteError::Invalid(_) => ErrorCode::SnapshotChunkInvalid,
            SnapshotDeleteError::NotFound(_) => ErrorCode::SnapshotSessionNotFound,
            SnapshotDeleteError::Forbidden(_) => ErrorCode::SnapshotSessionForbidden,
            SnapshotDeleteError::Internal(_) => ErrorCode::SnapshotSessionDeleteFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            SnapshotDeleteError::Internal(_) => {
                plain(self.code(), "Failed to delete snapshot session")
            }
            _ => plain(self.code(), self.to_string()),
        }
    }

    /// Whether the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SnapshotDeleteError::Internal(e) if e.is_retryable())
    }
}

impl From<Failure> for SnapshotDeleteError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => SnapshotDeleteError::Unavailable(r),
            Failure::Invalid(m) => SnapshotDeleteError::Invalid(m),
            Failure::SessionNotFound(id) => SnapshotDeleteError::NotFound(id),
            Failure::SessionForbidden(id) => SnapshotDeleteError::Forbidden(id),
            Failure::Internal(e) => SnapshotDeleteError::Internal(e),
            other => SnapshotDeleteError::Internal(other.unexpected("snapshot session delete")),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::status`].
#[derive(Debug, thiserror::Error)]
#[error("status query failed: {0}")]
pub struct StatusError(#[from] pub InternalError);

impl StatusError {
    /// `status_failed` (the health endpoint answers `health_failed` instead).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::StatusFailed
    }

    /// The wire envelope for the status endpoint.
    pub fn to_body(&self) -> ErrorBody {
        plain(ErrorCode::StatusFailed, "Failed to get service status")
    }

    /// The wire envelope for the health endpoint (`health_failed`).
    pub fn to_health_body(&self) -> ErrorBody {
        plain(ErrorCode::HealthFailed, "Failed to get health status")
    }
}

// ---------------------------------------------------------------------------------------------

/// Failure of [`crate::SyncService::with_sync_bundle`], a library-only API (no wire code of its
/// own; hosts map it themselves). `E` is the callback's error, returned unchanged.
#[derive(Debug, thiserror::Error)]
pub enum WithinBundleError<E> {
    /// Server state: shutting down or closed.
    #[error("{}", .0.message())]
    Unavailable(Refusal),
    /// Host fault: missing user, blank source, `source_bundle_id <= 0` or an identifier over
    /// 255 bytes.
    #[error("{0}")]
    Invalid(String),
    /// The scope was never initialized (no auto-initialization on this path).
    #[error("{}", scope_uninitialized_message(.user_id))]
    ScopeUninitialized {
        /// The actor's user.
        user_id: String,
    },
    /// A client holds the scope's initialization lease.
    #[error("{}", scope_initializing_message(.user_id, .lease_expires_at))]
    ScopeInitializing {
        /// The actor's user.
        user_id: String,
        /// RFC 3339 lease expiry.
        lease_expires_at: String,
    },
    /// The source was rotated away.
    #[error("{}", retired_message(.user_id, .source_id, .replaced_by))]
    SourceRetired {
        /// The actor's user.
        user_id: String,
        /// The retired source.
        source_id: String,
        /// Its replacement.
        replaced_by: String,
    },
    /// The tuple is below the source's sequence (already committed; no replay on this path).
    #[error("{0}")]
    HistoryPruned(String),
    /// The tuple skips ahead of the source's sequence.
    #[error("{}", out_of_order_message(.user_id, .source_id, *.expected, *.actual))]
    SourceSequenceOutOfOrder {
        /// The actor's user.
        user_id: String,
        /// The source.
        source_id: String,
        /// The next id the server accepts.
        expected: i64,
        /// What was given.
        actual: i64,
    },
    /// The bundle exceeds `max_rows_per_bundle` / `max_bytes_per_bundle`.
    #[error("{0}")]
    BundleTooLarge(String),
    /// The callback failed; everything rolled back.
    #[error("sync bundle callback failed")]
    Callback(#[source] E),
    /// Server fault.
    #[error("sync bundle failed: {0}")]
    Internal(InternalError),
}

impl<E> From<Failure> for WithinBundleError<E> {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => WithinBundleError::Unavailable(r),
            Failure::Invalid(m) => WithinBundleError::BundleTooLarge(m),
            Failure::ScopeUninitialized { user_id } => {
                WithinBundleError::ScopeUninitialized { user_id }
            }
            Failure::ScopeInitializing {
                user_id,
                lease_expires_at,
            } => WithinBundleError::ScopeInitializing {
                user_id,
                lease_expires_at,
            },
            Failure::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            } => WithinBundleError::SourceRetired {
                user_id,
                source_id,
                replaced_by,
            },
            Failure::HistoryPruned(m) => WithinBundleError::HistoryPruned(m),
            Failure::OutOfOrder {
                user_id,
                source_id,
                expected,
                actual,
            } => WithinBundleError::SourceSequenceOutOfOrder {
                user_id,
                source_id,
                expected,
                actual,
            },
            Failure::Internal(e) => WithinBundleError::Internal(e),
            other => WithinBundleError::Internal(other.unexpected("sync bundle")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_detail_on_the_wire() {
        let err = PushCommitError::Internal(InternalError::new("secret table detail"));
        let body = err.to_body();
        assert_eq!(body.error(), "push_session_commit_failed");
        assert_eq!(body.message(), "Failed to commit push session");
        assert_eq!(body.http_status(), 500);
        assert!(err.to_string().contains("secret table detail"));
    }

    #[test]
    fn unexpected_failures_become_the_generic_code() {
        let err = PullError::from(Failure::SessionNotFound("x".to_owned()));
        assert_eq!(err.code(), ErrorCode::PullFailed);
    }

    #[test]
    fn shutting_down_is_service_unavailable_with_the_reference_message() {
        let err = ConnectError::Unavailable(Refusal::ShuttingDown);
        assert_eq!(err.code().http_status(), 503);
        assert_eq!(err.to_body().message(), "Sync service is shutting down");
    }
}
