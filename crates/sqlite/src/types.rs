//! Result types of the public operations (client chapter §1.4). Normal branches — retry-later
//! attach, blocked detach, paused push/pull, already-at-target pull — are results, not errors.

use std::time::Duration;

/// Whether `attach` connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachStatus {
    /// The session is connected.
    Connected,
    /// Another device is initialising the scope; try again after `retry_after`.
    RetryLater,
}

/// How a connected `attach` got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// The database was already attached to this user; no network.
    ResumedAttachedState,
    /// Local data was replaced by the server's snapshot.
    UsedRemoteState,
    /// This device seeds the new scope with its local rows (next push carries the lease).
    SeededFromLocal,
    /// The scope started empty.
    StartedEmpty,
}

/// What a snapshot restore brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The snapshot's `snapshot_bundle_seq`.
    pub bundle_seq: i64,
    /// Rows in the snapshot.
    pub row_count: i64,
}

/// The result of `attach`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachResult {
    /// Connected or retry later.
    pub status: AttachStatus,
    /// Set when connected.
    pub outcome: Option<AttachOutcome>,
    /// Set for `RetryLater`.
    pub retry_after: Option<Duration>,
    /// Set when connected.
    pub sync_status: Option<SyncStatus>,
    /// Set for `UsedRemoteState`.
    pub restore: Option<RestoreSummary>,
}

/// Whether `detach` ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachOutcome {
    /// Local data was cleared; the database is anonymous under a fresh source.
    Detached,
    /// Attached data is pending; nothing changed.
    BlockedUnsyncedData,
}

/// The result of `detach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetachResult {
    /// Detached or blocked.
    pub outcome: DetachOutcome,
    /// Pending rows (0 when detached).
    pub pending_row_count: i64,
}

/// Pending local sync data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingSyncStatus {
    /// `pending_row_count > 0`.
    pub has_pending_sync_data: bool,
    /// Dirty rows + outbox rows + 1 if a seed lease is held.
    pub pending_row_count: i64,
    /// Attached and something pending.
    pub blocks_detach: bool,
}

/// Who holds the authoritative data locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// A seed lease is held: local rows will initialise the scope.
    PendingLocalSeed,
    /// No live replicated row.
    AuthoritativeEmpty,
    /// Live replicated rows exist.
    AuthoritativeMaterialized,
}

/// Sync status of the connected scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStatus {
    /// Authority state.
    pub authority: Authority,
    /// Pending data.
    pub pending: PendingSyncStatus,
    /// The durable checkpoint.
    pub last_bundle_seq_seen: i64,
}

/// What `push_pending` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Nothing to push.
    NoChange,
    /// One bundle was committed and replayed.
    Committed,
    /// Uploads are paused.
    SkippedPaused,
}

/// The result of `push_pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushReport {
    /// What happened.
    pub outcome: PushOutcome,
    /// Status afterwards.
    pub status: SyncStatus,
}

/// What a pull or rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// Nothing new.
    AlreadyAtTarget,
    /// Bundles were applied.
    AppliedIncremental,
    /// A snapshot replaced local state.
    AppliedSnapshot,
    /// Downloads are paused.
    SkippedPaused,
}

/// The result of `pull_to_stable` and `rebuild`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteSyncReport {
    /// What happened.
    pub outcome: RemoteOutcome,
    /// Status afterwards.
    pub status: SyncStatus,
    /// Set for `AppliedSnapshot`.
    pub restore: Option<RestoreSummary>,
}

/// The result of `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// The push leg.
    pub push_outcome: PushOutcome,
    /// The pull leg.
    pub remote_outcome: RemoteOutcome,
    /// Status afterwards.
    pub status: SyncStatus,
    /// From the pull leg.
    pub restore: Option<RestoreSummary>,
}

/// The result of `sync_then_detach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncThenDetachResult {
    /// The last sync.
    pub last_sync: Option<SyncReport>,
    /// The detach.
    pub detach: DetachResult,
    /// Rounds run.
    pub sync_rounds: u32,
    /// Pending rows left.
    pub remaining_pending_row_count: i64,
}

impl SyncThenDetachResult {
    /// Whether the database was detached.
    pub fn is_success(&self) -> bool {
        self.detach.outcome == DetachOutcome::Detached
    }
}

/// Debug view of the source identity and recovery gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The current source (opaque).
    pub current_source_id: String,
    /// The rebuild gate.
    pub rebuild_required: bool,
    /// A source recovery is pending.
    pub source_recovery_required: bool,
    /// Its reason code (empty when none).
    pub source_recovery_reason: String,
}

/// Where a change to business tables came from (see [`TablesChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeSource {
    /// `pull_to_stable` applied bundles committed by other devices or the server.
    Pull,
    /// A snapshot replaced local state: `rebuild`, the `history_pruned` fallback of a pull,
    /// a replay-pruned push recovery, or `attach` hydrating from the server.
    Rebuild,
    /// A push replayed the server's committed version of this device's own bundle (server
    /// triggers or defaults may have changed the rows).
    Replay,
    /// A push conflict was resolved by writing the resolver's choice locally.
    ConflictResolution,
    /// `detach` cleared every managed table.
    Detach,
}

/// Business tables whose rows may have changed through the sync client (not through the
/// host's own writes). Sent on [`crate::Client::subscribe_changes`] after the durable step
/// that changed them has committed, so a UI that re-queries sees the new rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablesChanged {
    /// Lower-cased managed table names, sorted, without duplicates; never empty.
    pub tables: Vec<String>,
    /// What changed them.
    pub source: ChangeSource,
}

/// Progress of a long download, reported to [`crate::config::Config::progress`] from the
/// operation's own task (keep the callback short; it must not call back into the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// One more pulled bundle was applied and is durable (bundles are committed a few at a
    /// time, so several events can arrive together). Bundle sequence numbers are dense per
    /// user, so `(bundle_seq - start_bundle_seq) / (target_bundle_seq - start_bundle_seq)` is
    /// the fraction done; the total row count of a pull is not known in advance.
    Pull {
        /// The checkpoint the pull started from.
        start_bundle_seq: i64,
        /// The bundle just applied (the new checkpoint).
        bundle_seq: i64,
        /// The server-frozen ceiling this pull runs to.
        target_bundle_seq: i64,
        /// Bundles applied so far in this pull.
        bundles_applied: i64,
        /// Rows applied so far in this pull.
        rows_applied: i64,
    },
    /// One more snapshot chunk was downloaded and staged (nothing visible changed yet).
    SnapshotStaged {
        /// Rows staged so far.
        rows_staged: i64,
        /// Rows in the snapshot (from its session).
        rows_total: i64,
    },
    /// The staged snapshot replaced local state in one transaction.
    SnapshotApplied {
        /// Rows in the snapshot.
        rows_total: i64,
        /// The snapshot's bundle sequence (the new checkpoint).
        bundle_seq: i64,
    },
}

/// What blocks normal syncing until the host acts, as stored durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryState {
    /// Nothing: push and pull run normally.
    None,
    /// A source-sequencing failure was recorded (client chapter §8); push, pull and sync
    /// refuse until the host calls `rebuild`, which rotates to a fresh source and keeps
    /// every unsynced local change.
    SourceRecovery {
        /// One of `history_pruned`, `source_sequence_out_of_order`,
        /// `source_sequence_changed`, `source_retired`.
        reason: String,
    },
    /// A remote replace is pending; `attach` finishes it.
    RemoteReplacePending {
        /// The user being attached.
        target_user: String,
    },
    /// The rebuild gate is set (an interrupted rebuild); pull refuses until `rebuild`
    /// succeeds, push still runs (§12 A1).
    RebuildRequired,
}

/// A successful push, pull, rebuild or sync leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A push leg.
    Push(PushOutcome),
    /// A pull or rebuild leg.
    Remote(RemoteOutcome),
}

/// A failed push, pull, rebuild or sync leg, as recorded for [`ClientStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeFailure {
    /// The error's message.
    pub message: String,
    /// Whether the same call may succeed later without anyone acting.
    pub retryable: bool,
    /// What the host must do first, when something must be done.
    pub required_action: Option<crate::error::RequiredAction>,
}

/// When an operation finished and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// Wall-clock time the operation finished.
    pub finished_at: std::time::SystemTime,
    /// Its outcome or failure.
    pub result: Result<SyncOutcome, OutcomeFailure>,
}

/// How the background download loop currently learns about remote changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadMode {
    /// No background loops are running.
    Stopped,
    /// Pulling on a timer.
    Polling,
    /// A `GET /sync/watch` stream is open (pulls on every event and on the fallback timer).
    Watching,
}

/// Everything a host shows about sync, read without the operation gate (so it answers while
/// a sync runs, §12 C3) from one consistent read of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStatus {
    /// Pending local data.
    pub pending: PendingSyncStatus,
    /// The durable checkpoint.
    pub last_bundle_seq_seen: i64,
    /// The current source id (empty before the first `open`).
    pub current_source_id: String,
    /// What blocks syncing until the host acts.
    pub recovery: RecoveryState,
    /// The last push (or sync push leg) that ran, in this process.
    pub last_push: Option<OutcomeRecord>,
    /// The last pull, rebuild or sync pull leg that ran, in this process.
    pub last_pull: Option<OutcomeRecord>,
    /// The background download loop's mode.
    pub download_mode: DownloadMode,
}
