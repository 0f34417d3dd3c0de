//! PostgreSQL plumbing shared by every operation: opening transactions with the session
//! settings the protocol needs, the per-user advisory lock, SQLSTATE classification and retry
//! back-off.
//!
//! Invariants kept here:
//! * every transaction this crate opens runs with `TimeZone = 'UTC'` and
//!   `bytea_output = 'hex'` (transaction-local, so a host sharing the pool is unaffected), which
//!   makes captured `timestamptz` and `bytea` renderings deterministic;
//! * the per-user lock is `pg_advisory_xact_lock(hashtextextended(user_id, 0))`, taken at the
//!   start of every attempt and released by COMMIT/ROLLBACK (no session lock can leak into the
//!   pool). It conflicts with the reference's session-level lock on the same key, so a Go
//!   server and ours serialize against each other.

use std::time::Duration;

use deadpool_postgres::{Object, Pool, Transaction};
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;

use crate::error::InternalError;

/// The settings pinned in every transaction.
const SESSION_PINS: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL bytea_output = 'hex'";

/// Attempts per push transaction (§11.4).
pub(crate) const PUSH_ATTEMPTS: u32 = 3;
/// Back-off unit for push retries.
pub(crate) const PUSH_BACKOFF: Duration = Duration::from_millis(25);

/// Whether a SQLSTATE is one of the three the protocol retries: 40001, 40P01, 55P03.
pub fn is_retryable_sqlstate(state: &SqlState) -> bool {
    *state == SqlState::T_R_SERIALIZATION_FAILURE
        || *state == SqlState::T_R_DEADLOCK_DETECTED
        || *state == SqlState::LOCK_NOT_AVAILABLE
}

/// Attaches what was being attempted to a database error.
pub(crate) trait Context<T> {
    /// Maps the error into an [`InternalError`] described by `what`.
    fn ctx(self, what: &str) -> Result<T, InternalError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, what: &str) -> Result<T, InternalError> {
        self.map_err(|e| InternalError::with_source(what, e))
    }
}

/// Takes a connection from the pool.
pub(crate) async fn connection(pool: &Pool) -> Result<Object, InternalError> {
    pool.get()
        .await
        .map_err(|e| InternalError::with_source("acquire a database connection", e))
}

/// How a transaction is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// READ COMMITTED, read-write: every writing operation.
    ReadCommitted,
    /// REPEATABLE READ, read-write.
    RepeatableRead,
    /// REPEATABLE READ, READ ONLY: pull.
    RepeatableReadOnly,
}

/// Begins a transaction in `mode` with the session pins applied.
pub(crate) async fn begin(conn: &mut Object, mode: Mode) -> Result<Transaction<'_>, InternalError> {
    let builder = conn.build_transaction();
    let builder = match mode {
        Mode::ReadCommitted => builder.isolation_level(IsolationLevel::ReadCommitted),
        Mode::RepeatableRead => builder.isolation_level(IsolationLevel::RepeatableRead),
        Mode::RepeatableReadOnly => builder
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true),
    };
    let tx = builder.start().await.ctx("begin transaction")?;
    tx.batch_execute(SESSION_PINS)
        .await
        .ctx("pin TimeZone and bytea_output")?;
    Ok(tx)
}

/// Serializes this transaction with every other writer of `user_id` (released at commit).
pub(crate) async fn lock_user(tx: &Transaction<'_>, user_id: &str) -> Result<(), InternalError> {
    let statement = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .await
        .ctx("prepare the user advisory lock")?;
    tx.execute(&statement, &[&user_id])
        .await
        .ctx("take the user advisory lock")?;
    Ok(())
}

/// Applies `SET LOCAL lock_timeout` for upload transactions when configured: whole
/// milliseconds, truncated, at least 1.
pub(crate) async fn apply_lock_timeout(
    tx: &Transaction<'_>,
    timeout: Option<Duration>,
) -> Result<(), InternalError> {
    let Some(timeout) = timeout else {
        return Ok(());
    };
    let millis = timeout.as_millis().max(1);
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{millis}ms'"))
        .await
        .ctx("set lock_timeout")
}

/// Sleeps before attempt `attempt + 1` (linear back-off).
pub(crate) async fn backoff(base: Duration, attempt: u32) {
    tokio::time::sleep(base * attempt).await;
}

/// Evaluates the transaction future `$attempt` up to [`PUSH_ATTEMPTS`] times while it fails
/// with a retryable SQLSTATE (40001, 40P01, 55P03), waiting [`PUSH_BACKOFF`] × the attempt
/// number between tries (§11.4); any other outcome, and the last attempt's error, is the value.
/// A macro rather than a function taking an async closure: each attempt re-borrows the
/// connection, and an async closure's future cannot yet be proven `Send` for every lifetime,
/// which axum handlers require.
macro_rules! with_retries {
    ($attempt:expr) => {{
        let mut n = 1;
        loop {
            match $attempt.await {
                Err(f) if f.is_retryable() && n < $crate::db::PUSH_ATTEMPTS => {
                    $crate::db::backoff($crate::db::PUSH_BACKOFF, n).await;
                    n += 1;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use with_retries;

/// Renders a `timestamptz` carried as microseconds since the Unix epoch the way the wire
/// wants it (Go `RFC3339Nano`, UTC).
pub(crate) fn rfc3339_from_micros(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0);
    oversync_protocol::wire::format_rfc3339_nano(seconds, nanos)
}

/// SQL expression: a `timestamptz` column as whole microseconds since the epoch.
pub(crate) fn epoch_micros_sql(column: &str) -> String {
    format!("(floor(extract(epoch FROM {column}) * 1000000))::bigint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_protocol_states_are_retryable() {
        assert!(is_retryable_sqlstate(&SqlState::T_R_SERIALIZATION_FAILURE));
        assert!(is_retryable_sqlstate(&SqlState::T_R_DEADLOCK_DETECTED));
        assert!(is_retryable_sqlstate(&SqlState::LOCK_NOT_AVAILABLE));
        assert!(!is_retryable_sqlstate(&SqlState::UNIQUE_VIOLATION));
    }

    #[test]
    fn timestamps_render_with_microsecond_fractions() {
        assert_eq!(
            rfc3339_from_micros(1_774_181_700_123_456),
            "2026-03-22T12:15:00.123456Z"
        );
        assert_eq!(
            rfc3339_from_micros(1_774_181_700_000_000),
            "2026-03-22T12:15:00Z"
        );
    }
}
