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
