//! Push sessions (§5): create, chunk upload, commit and delete.
//!
//! Create, chunk and commit run under the per-user advisory lock (taken at the start of every
//! attempt), in READ COMMITTED transactions with the optional `lock_timeout`, retried up to
//! three times on 40001/40P01/55P03 with 25 ms × attempt back-off. Delete takes no lock.

mod apply;
mod chunk;
mod commit;
mod create;
mod delete;
mod validate;

use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::Actor;
use crate::db::Context;
use crate::error::Failure;

/// A push session row, locked.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) push_id: Uuid,
    pub(crate) user_pk: i64,
    pub(crate) source_id: String,
    pub(crate) source_bundle_id: i64,
    pub(crate) planned_row_count: i64,
    pub(crate) next_expected_row_ordinal: i64,
    pub(crate) initialization_id: Option<Uuid>,
}

/// Parses a push id as received. Anything that is not a UUID is simply an unknown session.
pub(crate) fn parse_push_id(push_id: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(push_id).map_err(|_| Failure::SessionNotFound(push_id.to_owned()))
}

/// Loads the session `FOR UPDATE` and checks ownership and expiry (§5.2 step 3; the source
/// check is §13 item 28). Expiry uses the database clock.
pub(crate) async fn load_session(
    tx: &Transaction<'_>,
    actor: &Actor,
    push_id: &str,
    id: Uuid,
) -> Result<Session, Failure> {
    let statement = tx
        .prepare_cached(
            "SELECT ps.user_pk, us.user_id, ps.source_id, ps.source_bundle_id, ps.planned_row_count,
                    ps.next_expected_row_ordinal, ps.initialization_id, ps.expires_at < now()
             FROM sync.push_sessions ps JOIN sync.user_state us ON us.user_pk = ps.user_pk
             WHERE ps.push_id = $1
             FOR UPDATE",
        )
        .await
        .ctx("prepare push session lookup")?;
    let Some(row) = tx
        .query_opt(&statement, &[&id])
        .await
        .ctx("load push session")?
    else {
        return Err(Failure::SessionNotFound(push_id.to_owned()));
    };
    let user_id: String = row.get(1);
    let source_id: String = row.get(2);
    if user_id != actor.user_id() || source_id != actor.source_id() {
        return Err(Failure::SessionForbidden(push_id.to_owned()));
    }
    if row.get::<_, bool>(7) {
        return Err(Failure::SessionExpired(push_id.to_owned()));
    }
    Ok(Session {
        push_id: id,
        user_pk: row.get(0),
        source_id,
        source_bundle_id: row.get(3),
        planned_row_count: row.get(4),
        next_expected_row_ordinal: row.get(5),
        initialization_id: row.get(6),
    })
}
