//! Server-originated writes through the scope manager (§8.1): [`SyncService::exec_write`]
//! runs host code against one user scope as writer `writer_id` and commits what it wrote as
//! exactly one bundle, initializing an UNINITIALIZED scope on the way.
//!
//! Invariants:
//! * one READ COMMITTED transaction under the scope's advisory lock; the callback runs exactly
//!   once (never retried);
//! * the writer's next `source_bundle_id` is read with its `source_state` row locked, so
//!   concurrent writes of one writer get consecutive ids;
//! * a callback that captured nothing rolls everything back, including an
//!   auto-initialization and any writes to unregistered tables
//!   ([`ExecWriteError::NoCapturedChanges`]);
//! * writer ids carry the reserved prefix [`WRITER_ID_PREFIX`] (our decision for §13 item 32):
//!   reference clients name their sources with UUIDs, so a writer can never share (and
//!   advance) a client's source sequence. Hosts that must use other ids call
//!   [`SyncService::with_sync_bundle`] with exact tuples.

use oversync_protocol::error::SourceRetiredResponse;

use crate::capture::{
    BundleContext, BundleFuture, CommittedBundle, activate_source, apply_retention,
    expected_source_bundle_id, finalize, set_bundle_context,
};
use crate::db::{self, Context};
use crate::error::{Failure, InternalError, Refusal};
use crate::scope::{self, ScopeState};
use crate::{SyncService, check_identifier};

/// Every writer id passed to [`SyncService::exec_write`] starts with this prefix.
pub const WRITER_ID_PREFIX: &str = "server:";

/// What [`SyncService::exec_write`] committed.
#[derive(Debug, Clone)]
pub struct ExecWriteOutcome<T> {
    /// The callback's value.
    pub value: T,
    /// Whether this write moved an UNINITIALIZED scope to INITIALIZED (first authority: a
    /// device connecting afterwards with pending rows gets `remote_authoritative`).
    pub auto_initialized: bool,
    /// The bundle, with `source_id` = the writer id.
    pub bundle: CommittedBundle,
}

/// Failure of [`SyncService::exec_write`], a library-only API (hosts map it themselves). `E`
/// is the callback's error, returned unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ExecWriteError<E> {
    /// Server state: shutting down or closed.
    #[error("{}", match .0 { Refusal::ShuttingDown => "Sync service is shutting down", Refusal::Closed => "Sync service is closed" })]
    Unavailable(Refusal),
    /// Host fault: blank scope or writer id, an id over 255 bytes, or a writer id without
    /// [`WRITER_ID_PREFIX`].
    #[error("{0}")]
    Invalid(String),
    /// A client holds the scope's initialization lease; retry after it.
    #[error("sync scope for user {scope_id} is initializing")]
    ScopeInitializing {
        /// The scope.
        scope_id: String,
        /// RFC 3339 lease expiry.
        lease_expires_at: String,
    },
    /// The writer id was retired by a rotation.
    #[error("{}", SourceRetiredResponse::new(.scope_id, .writer_id, .replaced_by).message)]
    SourceRetired {
        /// The scope.
        scope_id: String,
        /// The writer.
        writer_id: String,
        /// Its replacement.
        replaced_by: String,
    },
    /// The callback wrote nothing to registered tables (or its writes coalesced away); the
    /// whole transaction was rolled back.
    #[error("scope write for {scope_id} by {writer_id} captured no changes")]
    NoCapturedChanges {
        /// The scope.
        scope_id: String,
        /// The writer.
        writer_id: String,
    },
    /// The bundle exceeds `max_rows_per_bundle` / `max_bytes_per_bundle`.
    #[error("{0}")]
    BundleTooLarge(String),
    /// The callback failed; everything rolled back.
    #[error("scope write callback failed")]
    Callback(#[source] E),
    /// Server fault.
    #[error("scope write failed: {0}")]
    Internal(InternalError),
}

impl<E> ExecWriteError<E> {
    fn from_failure(f: Failure, scope_id: &str, writer_id: &str) -> Self {
        match f {
            Failure::Unavailable(r) => ExecWriteError::Unavailable(r),
            Failure::Invalid(m) => ExecWriteError::BundleTooLarge(m),
            Failure::ScopeInitializing {
                lease_expires_at, ..
            } => ExecWriteError::ScopeInitializing {
                scope_id: scope_id.to_owned(),
                lease_expires_at,
            },
            Failure::SourceRetired { replaced_by, .. } => ExecWriteError::SourceRetired {
                scope_id: scope_id.to_owned(),
                writer_id: writer_id.to_owned(),
                replaced_by,
            },
            Failure::Internal(e) => ExecWriteError::Internal(e),
            other => ExecWriteError::Internal(InternalError::new(format!(
                "scope write: unexpected outcome {other:?}"
            ))),
        }
    }
}

impl SyncService {
    /// Runs `callback` in one bundle transaction of scope `scope_id` as writer `writer_id`
    /// and commits what it wrote to registered tables as one bundle with the writer's next
    /// `source_bundle_id` (§8.1). An UNINITIALIZED scope is initialized by the writer
    /// (`auto_initialized`); a scope with a live client lease is `ScopeInitializing`. Inserts
    /// may omit `_sync_scope_id`; updates and deletes must stay inside the scope (the owner
    /// guard fails the statement otherwise).
    pub async fn exec_write<T, E, F>(
        &self,
        scope_id: &str,
        writer_id: &str,
        callback: F,
    ) -> Result<ExecWriteOutcome<T>, ExecWriteError<E>>
    where
        F: for<'a> FnOnce(&'a tokio_postgres::Transaction<'a>) -> BundleFuture<'a, T, E> + Send,
        T: Send,
        E: Send,
    {
        let scope_id = scope_id.trim();
        let writer_id = writer_id.trim();
        if scope_id.is_empty() {
            return Err(ExecWriteError::Invalid("scope_id is required".to_owned()));
        }
        if writer_id.is_empty() {
            return Err(ExecWriteError::Invalid("writer_id is required".to_owned()));
        }
        check_identifier("scope_id", scope_id).map_err(ExecWriteError::Invalid)?;
        check_identifier("writer_id", writer_id).map_err(ExecWriteError::Invalid)?;
        if !writer_id.starts_with(WRITER_ID_PREFIX) {
            return Err(ExecWriteError::Invalid(format!(
                "writer_id must start with {WRITER_ID_PREFIX:?} so it cannot collide with a client source_id"
            )));
        }
        let _guard = self
            .lifecycle
            .begin()
            .map_err(|f| ExecWriteError::from_failure(f, scope_id, writer_id))?;
        let fail = |f: Failure| ExecWriteError::from_failure(f, scope_id, writer_id);
        let catalog = self.catalog();
        let mut conn = db::connection(&self.pool)
            .await
            .map_err(|e| fail(e.into()))?;
        let tx = db::begin(&mut conn, db::Mode::ReadCommitted)
            .await
            .map_err(|e| fail(e.into()))?;
        db::lock_user(&tx, scope_id)
            .await
            .map_err(|e| fail(e.into()))?;
        scope::ensure_rows(&tx, scope_id)
            .await
            .map_err(|e| fail(e.into()))?;
        let scope_row = scope::lock_scope(&tx, scope_id).await.map_err(fail)?;
        let auto_initialized = match scope_row.state {
            ScopeState::Initialized => false,
            ScopeState::Initializing => {
                return Err(ExecWriteError::ScopeInitializing {
                    scope_id: scope_id.to_owned(),
                    lease_expires_at: scope_row
                        .lease_expires_micros
                        .map(db::rfc3339_from_micros)
                        .unwrap_or_default(),
                });
            }
            ScopeState::Uninitialized => {
                scope::mark_initialized(&tx, scope_row.user_pk, writer_id)
                    .await
                    .map_err(|e| fail(e.into()))?;
                true
            }
        };
        let (source_bundle_id, _) =
            expected_source_bundle_id(&tx, scope_id, scope_row.user_pk, writer_id, true)
                .await
                .map_err(fail)?;
        tx.batch_execute("SET CONSTRAINTS ALL DEFERRED")
            .await
            .ctx("defer constraints")
            .map_err(|e| fail(e.into()))?;
        set_bundle_context(
            &tx,
            &BundleContext {
                user_id: scope_id,
                user_pk: scope_row.user_pk,
                source_id: writer_id,
                source_bundle_id,
                initialization_id: "",
            },
        )
        .await
        .map_err(|e| fail(e.into()))?;
        let value = callback(&tx).await.map_err(ExecWriteError::Callback)?;
        let bundle = finalize(
            self,
            &tx,
            &catalog,
            scope_row.user_pk,
            writer_id,
            source_bundle_id,
        )
        .await
        .map_err(fail)?;
        let Some(bundle) = bundle else {
            // Dropping the transaction rolls back the auto-initialization and every write.
            return Err(ExecWriteError::NoCapturedChanges {
                scope_id: scope_id.to_owned(),
                writer_id: writer_id.to_owned(),
            });
        };
        activate_source(
            &tx,
            scope_id,
            scope_row.user_pk,
            writer_id,
            source_bundle_id,
        )
        .await
        .map_err(fail)?;
        apply_retention(self, &tx, scope_row.user_pk)
            .await
            .map_err(|e| fail(e.into()))?;
        tx.commit()
            .await
            .ctx("commit scope write")
            .map_err(|e| fail(e.into()))?;
        Ok(ExecWriteOutcome {
            value,
            auto_initialized,
            bundle,
        })
    }
}
