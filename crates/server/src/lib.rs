//! The oversync sync runtime over PostgreSQL, without an HTTP framework.
//!
//! A host builds a [`SyncService`] over a `deadpool_postgres::Pool`, calls
//! [`SyncService::bootstrap`] once, and then serves requests by calling one method per
//! protocol operation with the caller's [`Actor`] and the `oversync-protocol` request type.
//! Each method returns the protocol response type or an error enum named after the operation
//! (`ConnectError`, `PushCreateError`, …) whose `code()` is the protocol error code (the HTTP
//! status comes from `ErrorCode::http_status`) and whose `to_body()` is the wire envelope.
//!
//! Modules follow the protocol chapters: [`config`] (§1.2), [`catalog`] and [`bootstrap`]
//! (§1.3–§1.5, §2), [`capture`] (§3, §8.2), `connect` (§4), `push` (§5), `committed` and
//! `pull` (§6.1, §6.2), `snapshot` (§6.3, §7.3), `status` (§10), `lifecycle` (§1.6), [`db`]
//! (locking, retries, §11).
//!
//! **Architecture Invariant:** this crate imports no HTTP framework; SQL identifiers come only
//! from the [`catalog::ValidatedCatalog`] and every value is a bind parameter.
//!
//! # Quick start
//!
//! ```no_run
//! use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
//! use oversync_server::{Actor, RegisteredTable, ServiceConfig, SyncService};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pg: tokio_postgres::Config = "postgres://postgres@127.0.0.1/app".parse()?;
//! let manager = Manager::from_config(
//!     pg,
//!     tokio_postgres::NoTls,
//!     ManagerConfig { recycling_method: RecyclingMethod::Fast },
//! );
//! let pool = Pool::builder(manager).max_size(16).build()?;
//! // Registered tables carry `_sync_scope_id TEXT NOT NULL` and a unique
//! // `(_sync_scope_id, id)`; bootstrap checks the whole envelope and says what is wrong.
//! let config = ServiceConfig {
//!     app_name: "my-app".to_owned(),
//!     registered_tables: vec![RegisteredTable::new("business", "users", "id")],
//!     ..ServiceConfig::default()
//! };
//! let service = SyncService::new(pool, config)?;
//! service.bootstrap().await?;
//! // A backend job writes business rows; clients receive them as an ordinary bundle.
//! let outcome = service
//!     .exec_write("alice", "server:billing", |tx| {
//!         Box::pin(async move {
//!             tx.execute(
//!                 "UPDATE business.users SET name = 'Ada L.' WHERE _sync_scope_id = 'alice'",
//!                 &[],
//!             )
//!             .await
//!         })
//!     })
//!     .await;
//! # let _ = (outcome, Actor::new("alice", "device-1"));
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use oversync_protocol::error::{ErrorBody, ErrorCode};

pub mod bootstrap;
pub mod capture;
pub mod catalog;
mod committed;
pub mod config;
mod connect;
pub mod db;
pub mod error;
mod lifecycle;
mod pull;
mod push;
mod scope;
mod scope_write;
mod snapshot;
mod stages;
mod status;
mod sweeper;
mod watch;

pub use bootstrap::BootstrapError;
pub use capture::{BundleFuture, CommittedBundle};
pub use catalog::ValidatedCatalog;
pub use config::{
    ConfigError, Limits, RegisteredTable, ServiceConfig, StageMetrics, StageTiming, WatchConfig,
};
pub use error::{
    CommittedRowsError, Conflict, ConnectError, InternalError, PullError, PushChunkError,
    PushCommitError, PushCreateError, PushDeleteError, Refusal, SnapshotChunkError,
    SnapshotCreateError, SnapshotDeleteError, StatusError, WithinBundleError,
};
pub use lifecycle::CloseTimeout;
pub use pull::PullRequest;
pub use scope_write::{ExecWriteError, ExecWriteOutcome, WRITER_ID_PREFIX};
pub use sweeper::SweepReport;
pub use watch::{ListenerState, Subscription, WatchError};

use crate::catalog::ValidatedCatalog as Catalog;
use crate::config::MAX_IDENTIFIER_BYTES;
use crate::lifecycle::Lifecycle;

/// The authenticated caller: the user whose scope is touched and the source (device or
/// writer) acting in it. Both are non-empty and at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    user_id: String,
    source_id: String,
}

/// Why an [`Actor`] could not be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// Host fault: no authenticated user (`authentication_failed`).
    #[error("actor user_id is required")]
    MissingUser,
    /// Caller fault: no source id (`authentication_failed`, as the reference handlers answer).
    #[error("actor source_id is required")]
    MissingSource,
    /// Caller fault: an identifier longer than 255 bytes (`invalid_request`).
    #[error("{0}")]
    TooLong(String),
}

impl ActorError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ActorError::MissingUser | ActorError::MissingSource => ErrorCode::AuthenticationFailed,
            ActorError::TooLong(_) => ErrorCode::InvalidRequest,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::plain(self.code(), self.to_string())
    }
}

impl Actor {
    /// An actor for `user_id` acting through `source_id` (both used as given; the HTTP
    /// adapter trims them).
    pub fn new(
        user_id: impl Into<String>,
        source_id: impl Into<String>,
    ) -> Result<Actor, ActorError> {
        let (user_id, source_id) = (user_id.into(), source_id.into());
        if user_id.is_empty() {
            return Err(ActorError::MissingUser);
        }
        if source_id.is_empty() {
            return Err(ActorError::MissingSource);
        }
        check_identifier("user_id", &user_id).map_err(ActorError::TooLong)?;
        check_identifier("source_id", &source_id).map_err(ActorError::TooLong)?;
        Ok(Actor { user_id, source_id })
    }

    /// The user.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The source.
    pub fn source_id(&self) -> &str {
        &self.source_id
    }
}

/// PROTOCOL.md decision 5: identifiers are at most 255 bytes.
pub(crate) fn check_identifier(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "{field} must be at most {MAX_IDENTIFIER_BYTES} bytes, got {}",
            value.len()
        ));
    }
    Ok(())
}

/// The sync runtime. Construct with [`SyncService::new`] (no database access), then call
/// [`SyncService::bootstrap`] before serving operations. Shareable across tasks (`Arc`).
#[derive(Debug)]
pub struct SyncService {
    pool: Pool,
    config: ServiceConfig,
    limits: Limits,
    catalog: RwLock<Arc<Catalog>>,
    lifecycle: Lifecycle,
    watch: Arc<watch::WatchHub>,
}

impl SyncService {
    /// Builds the service. Touches no database; validates only the watch configuration.
    pub fn new(pool: Pool, config: ServiceConfig) -> Result<SyncService, ConfigError> {
        let limits = Limits::from_config(&config)?;
        Ok(SyncService {
            pool,
            config,
            limits,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            lifecycle: Lifecycle::new(),
            watch: Arc::new(watch::WatchHub::default()),
        })
    }

    /// Validates the registered tables, installs or verifies the `sync` schema and the
    /// capture triggers (§1.4). Idempotent; safe to run from several processes at once.
    pub async fn bootstrap(&self) -> Result<(), BootstrapError> {
        let catalog = bootstrap::bootstrap(&self.pool, &self.config.registered_tables).await?;
        *self.catalog.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(catalog);
        Ok(())
    }

    /// The configuration as given.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The effective limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The pool the service runs on.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The validated catalog (empty before bootstrap).
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stops admitting operations, waits up to `deadline` for in-flight ones, then closes
    /// (§1.6). Idempotent. Does not close the pool. Afterwards every operation answers
    /// `service_unavailable`.
    /// Open watch subscriptions end at once (their streams finish normally) and the watch
    /// listener and sweeper stop.
    pub async fn close(&self, deadline: Duration) -> Result<(), CloseTimeout> {
        let closing = self.lifecycle.close(deadline);
        self.watch.close_all();
        let result = closing.await;
        self.watch.close_all();
        result
    }
}
