//! Scope states and initialization leases (§4.1, §4.2, §4.5) as used inside transactions.
//!
//! All times are the database clock (`now()`, the transaction's start), never the app clock
//! (§13 item 15): leases and their expiry are written and compared in SQL.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::db::{Context, epoch_micros_sql, rfc3339_from_micros};
use crate::error::{Failure, InternalError};

/// `sync.scope_state.state_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeState {
    Uninitialized,
    Initializing,
    Initialized,
}

impl ScopeState {
    fn from_code(code: i16) -> Result<Self, InternalError> {
        match code {
            0 => Ok(ScopeState::Uninitialized),
            1 => Ok(ScopeState::Initializing),
            2 => Ok(ScopeState::Initialized),
            other => Err(InternalError::new(format!(
                "unexpected scope state code {other}"
            ))),
        }
    }
}

/// The locked scope row of one user.
#[derive(Debug, Clone)]
pub(crate) struct ScopeRow {
    pub(crate) user_pk: i64,
    pub(crate) state: ScopeState,
    pub(crate) initializer: Option<String>,
    pub(crate) initialization_id: Option<Uuid>,
    pub(crate) lease_expires_micros: Option<i64>,
}

/// Creates the `user_state` and `scope_state` rows of `user_id` if missing (one round trip).
pub(crate) async fn ensure_rows(tx: &Transaction<'_>, user_id: &str) -> Result<(), InternalError> {
    let user = tx
        .prepare_cached(
            "INSERT INTO sync.user_state (user_id, next_bundle_seq, retained_bundle_floor)
             VALUES ($1, 1, 0) ON CONFLICT (user_id) DO NOTHING",
        )
        .await
        .ctx("prepare user_state upsert")?;
    let scope = tx
        .prepare_cached(
            "INSERT INTO sync.scope_state (user_pk, state_code)
             SELECT user_pk, 0 FROM sync.user_state WHERE user_id = $1
             ON CONFLICT (user_pk) DO NOTHING",
        )
        .await
        .ctx("prepare scope_state upsert")?;
    let params: [&(dyn ToSql + Sync); 1] = [&user_id];
    futures_util::try_join!(tx.execute(&user, &params), tx.execute(&scope, &params))
        .ctx("ensure user_state and scope_state rows")?;
    Ok(())
}

/// Locks the scope row and resets an elapsed lease to UNINITIALIZED ("expire if needed").
///
/// Only `scope_state` is locked (`FOR UPDATE OF ss`, which §11.2 allows): the reference also
/// locks the joined `user_state` row, which would make every writer of the user wait for a
/// snapshot create holding that row's `FOR KEY SHARE` (its foreign-key check) during the whole
/// materialization. Writers of one user are serialized by the advisory lock and by the
/// `next_bundle_seq` update either way.
pub(crate) async fn lock_scope(tx: &Transaction<'_>, user_id: &str) -> Result<ScopeRow, Failure> {
    let sql = format!(
        "SELECT us.user_pk, ss.state_code, ss.initializer_source_id, ss.initialization_id,
                {}, ss.lease_expires_at <= now()
         FROM sync.scope_state ss JOIN sync.user_state us ON us.user_pk = ss.user_pk
         WHERE us.user_id = $1
         FOR UPDATE OF ss",
        epoch_micros_sql("ss.lease_expires_at")
    );
    let statement = tx.prepare_cached(&sql).await.ctx("prepare scope lock")?;
    let Some(row) = tx
        .query_opt(&statement, &[&user_id])
        .await
        .ctx("lock scope_state row")?
    else {
        return Err(Failure::ScopeUninitialized {
            user_id: user_id.to_owned(),
        });
    };
    let mut scope = ScopeRow {
        user_pk: row.get(0),
        state: ScopeState::from_code(row.get(1))?,
        initializer: row.get(2),
        initialization_id: row.get(3),
        lease_expires_micros: row.get(4),
    };
    let elapsed: Option<bool> = row.get(5);
    if scope.state == ScopeState::Initializing && elapsed == Some(true) {
        tx.execute(
            "UPDATE sync.scope_state
             SET state_code = 0, initializer_source_id = NULL, initialization_id = NULL,
                 lease_expires_at = NULL
             WHERE user_pk = $1",
            &[&scope.user_pk],
        )
        .await
        .ctx("expire initialization lease")?;
        scope.state = ScopeState::Uninitialized;
        scope.initializer = None;
        scope.initialization_id = None;
        scope.lease_expires_micros = None;
    }
    Ok(scope)
}

/// §4.5: lock, expire if needed, require the lease of (`source_id`, `initialization_id`), and
/// refresh it to `now() + ttl`.
pub(crate) async fn require_active_lease(
    tx: &Transaction<'_>,
    user_id: &str,
    source_id: &str,
    initialization_id: &str,
    ttl_micros: i64,
) -> Result<ScopeRow, Failure> {
    let mut scope = lock_scope(tx, user_id).await?;
    if scope.state != ScopeState::Initializing {
        return Err(Failure::InitializationStale(
            "scope is no longer initializing",
        ));
    }
    if source_id.trim().is_empty() || scope.initializer.as_deref() != Some(source_id) {
        return Err(Failure::InitializationStale(
            "source does not own the active initialization lease",
        ));
    }
    let current = scope
        .initialization_id
        .map(|id| id.hyphenated().to_string());
    if initialization_id.trim().is_empty() || current.as_deref() != Some(initialization_id) {
        return Err(Failure::InitializationStale(
            "initialization_id does not match the active initialization lease",
        ));
    }
    let sql = format!(
        "UPDATE sync.scope_state SET lease_expires_at = now() + $2::int8 * interval '1 microsecond'
         WHERE user_pk = $1 AND lease_expires_at > now()
         RETURNING {}",
        epoch_micros_sql("lease_expires_at")
    );
    let refreshed = tx
        .query_opt(&sql, &[&scope.user_pk, &ttl_micros])
        .await
        .ctx("refresh initialization lease")?;
    let Some(refreshed) = refreshed else {
        return Err(Failure::InitializationExpired(
            "initialization lease has expired",
        ));
    };
    scope.lease_expires_micros = refreshed.get(0);
    Ok(scope)
}

/// Moves the scope to INITIALIZED by `source_id` (DB clock).
pub(crate) async fn mark_initialized(
    tx: &Transaction<'_>,
    user_pk: i64,
    source_id: &str,
) -> Result<(), InternalError> {
    tx.execute(
        "UPDATE sync.scope_state
         SET state_code = 2, initializer_source_id = NULL, initialization_id = NULL,
             lease_expires_at = NULL, initialized_at = now(), initialized_by_source_id = $2
         WHERE user_pk = $1",
        &[&user_pk, &source_id],
    )
    .await
    .ctx("transition scope to INITIALIZED")?;
    Ok(())
}

/// Moves the scope to INITIALIZING with a fresh lease for `source_id`; returns the lease id
/// and expiry (RFC 3339).
pub(crate) async fn start_initializing(
    tx: &Transaction<'_>,
    user_pk: i64,
    source_id: &str,
    ttl_micros: i64,
) -> Result<(Uuid, String), InternalError> {
    let id = Uuid::new_v4();
    let sql = format!(
        "UPDATE sync.scope_state
         SET state_code = 1, initializer_source_id = $2, initialization_id = $3,
             lease_expires_at = now() + $4::int8 * interval '1 microsecond',
             initialized_at = NULL, initialized_by_source_id = NULL
         WHERE user_pk = $1
         RETURNING {}",
        epoch_micros_sql("lease_expires_at")
    );
    let row = tx
        .query_one(&sql, &[&user_pk, &source_id, &id, &ttl_micros])
        .await
        .ctx("transition scope to INITIALIZING")?;
    Ok((id, rfc3339_from_micros(row.get(0))))
}

/// Extends the current lease to `now() + ttl`; returns the new expiry (RFC 3339).
pub(crate) async fn refresh_lease(
    tx: &Transaction<'_>,
    user_pk: i64,
    ttl_micros: i64,
) -> Result<String, InternalError> {
    let sql = format!(
        "UPDATE sync.scope_state SET lease_expires_at = now() + $2::int8 * interval '1 microsecond'
         WHERE user_pk = $1 RETURNING {}",
        epoch_micros_sql("lease_expires_at")
    );
    let row = tx
        .query_one(&sql, &[&user_pk, &ttl_micros])
        .await
        .ctx("refresh initialization lease")?;
    Ok(rfc3339_from_micros(row.get(0)))
}

/// The user's history bookkeeping as read-only paths see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserHistory {
    pub(crate) user_pk: i64,
    pub(crate) next_bundle_seq: i64,
    pub(crate) floor: i64,
}

/// §4.2 read-path classification without locking, plus the user's history row.
pub(crate) async fn read_gate(
    tx: &Transaction<'_>,
    user_id: &str,
) -> Result<Option<UserHistory>, Failure> {
    let sql = format!(
        "SELECT us.user_pk, us.next_bundle_seq, us.retained_bundle_floor, ss.state_code,
                {}, ss.lease_expires_at < now()
         FROM sync.user_state us LEFT JOIN sync.scope_state ss ON ss.user_pk = us.user_pk
         WHERE us.user_id = $1",
        epoch_micros_sql("ss.lease_expires_at")
    );
    let statement = tx.prepare_cached(&sql).await.ctx("prepare scope gate")?;
    let row = tx
        .query_opt(&statement, &[&user_id])
        .await
        .ctx("read scope state")?;
    let uninitialized = || Failure::ScopeUninitialized {
        user_id: user_id.to_owned(),
    };
    let Some(row) = row else {
        return Err(uninitialized());
    };
    let code: Option<i16> = row.get(3);
    match code.map(ScopeState::from_code).transpose()? {
        None | Some(ScopeState::Uninitialized) => Err(uninitialized()),
        Some(ScopeState::Initializing) => {
            if row.get::<_, Option<bool>>(5) == Some(true) {
                return Err(uninitialized());
            }
            let lease: Option<i64> = row.get(4);
            Err(Failure::ScopeInitializing {
                user_id: user_id.to_owned(),
                lease_expires_at: lease.map(rfc3339_from_micros).unwrap_or_default(),
            })
        }
        Some(ScopeState::Initialized) => Ok(Some(UserHistory {
            user_pk: row.get(0),
            next_bundle_seq: row.get(1),
            floor: row.get(2),
        })),
    }
}
