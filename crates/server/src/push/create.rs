//! Push-session create (§5.1), with the replay lookup moved before the initialization-id
//! gate (§13 item 29) and `planned_row_count` bounded by `max_rows_per_bundle` when set.

use oversync_protocol::wire::{
    PushSessionCommitResponse, PushSessionCreateRequest, PushSessionCreateResponse,
};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::capture::expected_source_bundle_id;
use crate::config::micros;
use crate::db::{self, Context};
use crate::error::{Failure, PushCreateError, source_tuple_pruned};
use crate::scope::{self, ScopeState};
use crate::{Actor, SyncService};

impl SyncService {
    /// Opens a staging session for the actor's next source bundle, or answers
    /// `already_committed` with the committed bundle's metadata when the tuple was committed
    /// and is still retained (§5.1).
    pub async fn create_push_session(
        &self,
        actor: &Actor,
        request: &PushSessionCreateRequest,
    ) -> Result<PushSessionCreateResponse, PushCreateError> {
        let watch = crate::stages::Stopwatch::start(self, "push_create");
        let result = self.create_push_session_untimed(actor, request).await;
        watch.total(
            result.as_ref().map_or(0, |r| r.planned_row_count),
            result.is_err(),
        );
        result
    }

    async fn create_push_session_untimed(
        &self,
        actor: &Actor,
        request: &PushSessionCreateRequest,
    ) -> Result<PushSessionCreateResponse, PushCreateError> {
        let _guard = self.lifecycle.begin()?;
        if request.source_bundle_id <= 0 {
            return Err(PushCreateError::Invalid(
                "source_bundle_id must be > 0".to_owned(),
            ));
        }
        if request.planned_row_count <= 0 {
            return Err(PushCreateError::Invalid(
                "planned_row_count must be > 0".to_owned(),
            ));
        }
        if self.limits.bundle_rows_exceeded(request.planned_row_count) {
            return Err(PushCreateError::Invalid(format!(
                "planned_row_count {} exceeds max_rows_per_bundle {}",
                request.planned_row_count, self.limits.max_rows_per_bundle
            )));
        }
        let initialization_id = request.initialization_id.trim();
        let mut conn = db::connection(&self.pool).await.map_err(Failure::from)?;
        Ok(db::with_retries!(self.create_attempt(
            &mut conn,
            actor,
            request,
            initialization_id
        ))?)
    }

    async fn create_attempt(
        &self,
        conn: &mut deadpool_postgres::Object,
        actor: &Actor,
        request: &PushSessionCreateRequest,
        initialization_id: &str,
    ) -> Result<PushSessionCreateResponse, Failure> {
        let user_id = actor.user_id();
        let source_id = actor.source_id();
        let tx = db::begin(conn, db::Mode::ReadCommitted).await?;
        db::lock_user(&tx, user_id).await?;
        db::apply_lock_timeout(&tx, self.limits.upload_lock_timeout).await?;
        tx.execute(
            "DELETE FROM sync.push_sessions WHERE expires_at <= now()",
            &[],
        )
        .await
        .ctx("delete expired push sessions")?;
        scope::ensure_rows(&tx, user_id).await?;
        let scope_row = scope::lock_scope(&tx, user_id).await?;

        // Replay first: a committed, retained tuple is answered whatever the scope gate says.
        let replay = tx
            .prepare_cached(
                "SELECT bl.bundle_seq, bl.row_count, bl.bundle_hash
                 FROM sync.bundle_log bl JOIN sync.user_state us ON us.user_pk = bl.user_pk
                 WHERE bl.user_pk = $1 AND bl.source_id = $2 AND bl.source_bundle_id = $3
                   AND bl.bundle_seq > us.retained_bundle_floor",
            )
            .await
            .ctx("prepare replay lookup")?;
        if let Some(row) = tx
            .query_opt(
                &replay,
                &[&scope_row.user_pk, &source_id, &request.source_bundle_id],
            )
            .await
            .ctx("look up committed source tuple")?
        {
            tx.execute("SELECT nextval('sync.accepted_push_replay_seq')", &[])
                .await
                .ctx("count accepted push replay")?;
            tx.commit().await.ctx("commit push replay")?;
            let hash: Vec<u8> = row.get(2);
            return Ok(PushSessionCreateResponse::already_committed(
                PushSessionCommitResponse {
                    bundle_seq: row.get(0),
                    source_id: source_id.to_owned(),
                    source_bundle_id: request.source_bundle_id,
                    row_count: row.get(1),
                    bundle_hash: oversync_protocol::codec::hex_encode(&hash),
                },
            ));
        }

        let mut session_initialization: Option<Uuid> = None;
        match scope_row.state {
            ScopeState::Uninitialized => {
                if !initialization_id.is_empty() {
                    return Err(Failure::InitializationExpired(
                        "initialization lease is no longer active",
                    ));
                }
                return Err(Failure::ScopeUninitialized {
                    user_id: user_id.to_owned(),
                });
            }
            ScopeState::Initializing => {
                if initialization_id.is_empty() {
                    return Err(Failure::Invalid(
                        "initialization_id is required while the scope is initializing".to_owned(),
                    ));
                }
                let leased = scope::require_active_lease(
                    &tx,
                    user_id,
                    source_id,
                    initialization_id,
                    micros(self.limits.initialization_lease_ttl),
                )
                .await?;
                session_initialization = leased.initialization_id;
            }
            ScopeState::Initialized => {
                if !initialization_id.is_empty() {
                    return Err(Failure::Invalid(
                        "initialization_id must be absent once the scope is initialized".to_owned(),
                    ));
                }
            }
        }

        let (expected, max) =
            expected_source_bundle_id(&tx, user_id, scope_row.user_pk, source_id, false).await?;
        if request.source_bundle_id < expected {
            return Err(source_tuple_pruned(
                user_id,
                source_id,
                request.source_bundle_id,
                max,
            ));
        }
        if request.source_bundle_id > expected {
            return Err(Failure::OutOfOrder {
                user_id: user_id.to_owned(),
                source_id: source_id.to_owned(),
                expected,
                actual: request.source_bundle_id,
            });
        }

        let push_id = Uuid::new_v4();
        let replace = tx
            .prepare_cached(
                "DELETE FROM sync.push_sessions
                 WHERE user_pk = $1 AND source_id = $2 AND source_bundle_id = $3",
            )
            .await
            .ctx("prepare hard replace")?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO sync.push_sessions (push_id, user_pk, source_id, source_bundle_id,
                     planned_row_count, next_expected_row_ordinal, initialization_id, expires_at)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, now() + $7::int8 * interval '1 microsecond')",
            )
            .await
            .ctx("prepare push session insert")?;
        let ttl = micros(self.limits.push_session_ttl);
        let replace_params: [&(dyn ToSql + Sync); 3] =
            [&scope_row.user_pk, &source_id, &request.source_bundle_id];
        let insert_params: [&(dyn ToSql + Sync); 7] = [
            &push_id,
            &scope_row.user_pk,
            &source_id,
            &request.source_bundle_id,
            &request.planned_row_count,
            &session_initialization,
            &ttl,
        ];
        futures_util::try_join!(
            tx.execute(&replace, &replace_params),
            tx.execute(&insert, &insert_params),
        )
        .ctx("replace and insert push session")?;
        tx.commit().await.ctx("commit push session create")?;
        Ok(PushSessionCreateResponse::staging(
            push_id.hyphenated().to_string(),
            request.planned_row_count,
        ))
    }
}
