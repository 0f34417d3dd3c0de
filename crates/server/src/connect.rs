//! Connect (§4.3): decides who is authoritative for a user's scope on first contact.
//!
//! Runs under the per-user advisory lock in one READ COMMITTED transaction, retried on
//! 40001/40P01/55P03 like pushes (§13 item 13). The resolution table is exactly §4.3; lease
//! times are the database clock.

use oversync_protocol::wire::{ConnectRequest, ConnectResponse};

use crate::config::micros;
use crate::db::{self, Context};
use crate::error::{ConnectError, Failure};
use crate::scope::{self, ScopeState};
use crate::{Actor, SyncService};

impl SyncService {
    /// Resolves the connect lifecycle for `actor` (§4.3). `None` as the request is
    /// `connect_invalid` (unreachable over HTTP, where a missing body is `invalid_request`).
    pub async fn connect(
        &self,
        actor: &Actor,
        request: Option<&ConnectRequest>,
    ) -> Result<ConnectResponse, ConnectError> {
        let watch = crate::stages::Stopwatch::start(self, "connect");
        let result = self.connect_untimed(actor, request).await;
        watch.total(result.as_ref().map_or(0, |_| 1), result.is_err());
        result
    }

    async fn connect_untimed(
        &self,
        actor: &Actor,
        request: Option<&ConnectRequest>,
    ) -> Result<ConnectResponse, ConnectError> {
        let _guard = self.lifecycle.begin()?;
        let Some(request) = request else {
            return Err(ConnectError::Invalid(
                "connect request is required".to_owned(),
            ));
        };
        // §13 item 13: connect is retried like pushes (each attempt is a whole transaction).
        let pending = request.has_local_pending_rows;
        Ok(db::with_retries!(self.connect_tx(actor, pending))?)
    }

    async fn connect_tx(&self, actor: &Actor, pending: bool) -> Result<ConnectResponse, Failure> {
        let ttl = micros(self.limits.initialization_lease_ttl);
        let mut conn = db::connection(&self.pool).await?;
        let tx = db::begin(&mut conn, db::Mode::ReadCommitted).await?;
        db::lock_user(&tx, actor.user_id()).await?;
        scope::ensure_rows(&tx, actor.user_id()).await?;
        let row = scope::lock_scope(&tx, actor.user_id()).await?;
        let response = match row.state {
            ScopeState::Initialized => ConnectResponse::remote_authoritative(),
            ScopeState::Uninitialized if pending => {
                let (id, expires) =
                    scope::start_initializing(&tx, row.user_pk, actor.source_id(), ttl).await?;
                ConnectResponse::initialize_local(id.hyphenated().to_string(), expires)
            }
            ScopeState::Uninitialized => {
                scope::mark_initialized(&tx, row.user_pk, actor.source_id()).await?;
                ConnectResponse::initialize_empty()
            }
            ScopeState::Initializing if row.initializer.as_deref() == Some(actor.source_id()) => {
                if pending {
                    let expires = scope::refresh_lease(&tx, row.user_pk, ttl).await?;
                    let id = row
                        .initialization_id
                        .map(|id| id.hyphenated().to_string())
                        .unwrap_or_default();
                    ConnectResponse::initialize_local(id, expires)
                } else {
                    scope::mark_initialized(&tx, row.user_pk, actor.source_id()).await?;
                    ConnectResponse::initialize_empty()
                }
            }
            ScopeState::Initializing => {
                let wait: i64 = tx
                    .query_one(
                        "SELECT GREATEST(1, floor(extract(epoch FROM lease_expires_at - now())))::int8
                         FROM sync.scope_state WHERE user_pk = $1",
                        &[&row.user_pk],
                    )
                    .await
                    .ctx("compute retry_after_seconds")?
                    .get(0);
                let expires = row
                    .lease_expires_micros
                    .map(db::rfc3339_from_micros)
                    .unwrap_or_default();
                ConnectResponse::retry_later(expires, wait)
            }
        };
        tx.commit().await.ctx("commit connect")?;
        Ok(response)
    }
}
