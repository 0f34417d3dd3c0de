//! Expired-session sweeping (§13 item 16): push and snapshot sessions past `expires_at` are
//! deleted by a periodic background task a host starts, in addition to the opportunistic
//! sweeps inside push-session and snapshot creates (kept, as in the reference).
//!
//! The sweep compares on the database clock and runs as two short autocommit statements
//! (rows cascade), so it never holds locks across the interval; a sweep racing a create's own
//! sweep at worst makes that create retry a serialization failure.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::SyncService;
use crate::db::{self, Context};
use crate::error::InternalError;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired push sessions deleted (with their staged rows).
    pub push_sessions: u64,
    /// Expired snapshot sessions deleted (with their rows).
    pub snapshot_sessions: u64,
}

impl SyncService {
    /// Deletes every expired push and snapshot session of every user now.
    pub async fn sweep_expired_sessions(&self) -> Result<SweepReport, InternalError> {
        let conn = db::connection(&self.pool).await?;
        let push_sessions = conn
            .execute(
                "DELETE FROM sync.push_sessions WHERE expires_at <= now()",
                &[],
            )
            .await
            .ctx("sweep expired push sessions")?;
        let snapshot_sessions = conn
            .execute(
                "DELETE FROM sync.snapshot_sessions WHERE expires_at <= now()",
                &[],
            )
            .await
            .ctx("sweep expired snapshot sessions")?;
        Ok(SweepReport {
            push_sessions,
            snapshot_sessions,
        })
    }

    /// Starts the background sweeper: every `interval` (the first sweep runs after one
    /// interval) it calls [`SyncService::sweep_expired_sessions`], logging failures and
    /// carrying on. The task ends when [`SyncService::close`] is called; abort the handle to
    /// stop it earlier.
    pub fn spawn_sweeper(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = service.lifecycle.stopped() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                match service.sweep_expired_sessions().await {
                    Ok(report) if report != SweepReport::default() => {
                        tracing::debug!(?report, "swept expired sessions");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "sweeping expired sessions failed"),
                }
            }
        })
    }
}
