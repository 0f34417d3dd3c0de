//! Client configuration (client chapter §1.1, §10.4).
//!
//! Values are normalised where the reference normalises them (a limit ≤ 0 means the default),
//! so that the rest of the crate reads already-valid numbers.

use std::sync::Arc;
use std::time::Duration;

use crate::conflict::{Resolver, ServerWins};
use crate::types::Progress;

/// One managed table: the application table the client installs triggers on and replicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTable {
    /// The local (and server) table name; compared case-insensitively, stored lower-cased.
    pub table_name: String,
    /// The sync key columns; the runtime requires exactly one, which must be the table's
    /// single-column primary key of declared type TEXT or BLOB (UUID).
    pub sync_key_columns: Vec<String>,
}

impl SyncTable {
    /// A table keyed by one column.
    pub fn new(table_name: impl Into<String>, sync_key_column: impl Into<String>) -> Self {
        SyncTable {
            table_name: table_name.into(),
            sync_key_columns: vec![sync_key_column.into()],
        }
    }

    /// The key columns after the reference's normalisation: trimmed, blanks dropped,
    /// case-insensitive duplicates dropped.
    pub(crate) fn normalized_key_columns(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for column in &self.sync_key_columns {
            let column = column.trim();
            if column.is_empty() || out.iter().any(|c| c.eq_ignore_ascii_case(column)) {
                continue;
            }
            out.push(column.to_owned());
        }
        out
    }
}

/// Bounded retry of transient HTTP failures (§10.4).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// When false every request is tried once.
    pub enabled: bool,
    /// Total attempts (≤ 0 → 3).
    pub max_attempts: u32,
    /// Wait before the second attempt (zero → 100 ms).
    pub initial_backoff: Duration,
    /// Cap on the doubling wait (zero → 1 s; below `initial_backoff` → `initial_backoff`).
    pub max_backoff: Duration,
    /// Relative jitter, clamped to [0, 1].
    pub jitter_fraction: f64,
}

impl Default for RetryPolicy {
    /// The reference's built-in policy: 3 attempts, 100 ms doubling to 1 s, 20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            enabled: true,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter_fraction: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The policy with the reference's normalisation applied.
    pub fn normalized(&self) -> RetryPolicy {
        if !self.enabled {
            return RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            };
        }
        let initial = if self.initial_backoff.is_zero() {
            Duration::from_millis(100)
        } else {
            self.initial_backoff
        };
        let mut max = if self.max_backoff.is_zero() {
            Duration::from_secs(1)
        } else {
            self.max_backoff
        };
        if max < initial {
            max = initial;
        }
        RetryPolicy {
            enabled: true,
            max_attempts: if self.max_attempts == 0 {
                3
            } else {
                self.max_attempts
            },
            initial_backoff: initial,
            max_backoff: max,
            jitter_fraction: if self.jitter_fraction.is_nan() {
                0.0
            } else {
                self.jitter_fraction.clamp(0.0, 1.0)
            },
        }
    }
}

/// Whether the background download loop may use `GET /sync/watch` (§1.1, §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// Poll only (the reference's default).
    #[default]
    Off,
    /// Open a watch stream whenever the server's capabilities advertise
    /// `bundle_change_watch: true`; poll otherwise.
    Auto,
}

/// Receives [`Progress`] reports of long pulls and rebuilds.
#[derive(Clone)]
pub struct ProgressCallback(pub Arc<dyn Fn(&Progress) + Send + Sync>);

impl std::fmt::Debug for ProgressCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressCallback")
    }
}

/// The client configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server schema all managed tables belong to (e.g. `business`); must not be blank.
    pub schema: String,
    /// Managed tables, in the caller's preferred order (ties in FK order follow it).
    pub tables: Vec<SyncTable>,
    /// Rows per push chunk (0 → 1000).
    pub upload_limit: u32,
    /// `max_bundles` per pull request and `max_rows` per committed-bundle page (0 → 1000).
    pub download_limit: u32,
    /// `max_rows` per snapshot chunk (0 → 1000).
    pub snapshot_chunk_rows: u32,
    /// Retry of transient HTTP failures.
    pub retry_policy: RetryPolicy,
    /// Decides structured push conflicts (§5); default [`ServerWins`].
    pub resolver: Arc<dyn Resolver>,
    /// Background loops: the shortest wait between attempts, and the polling interval of the
    /// download loop (default 1 s; zero → 1 s, the reference busy-loops, §12 C4).
    pub backoff_min: Duration,
    /// Background loops: the longest back-off after repeated failures (default 60 s; below
    /// `backoff_min` → `backoff_min`).
    pub backoff_max: Duration,
    /// Whether background downloads may use the watch stream (default [`WatchMode::Off`]).
    pub bundle_change_watch_mode: WatchMode,
    /// Periodic pull while a watch stream is open (zero → `backoff_max`).
    pub watch_fallback_interval: Duration,
    /// Background uploads wait until local writes have been quiet this long before pushing,
    /// so a burst of writes becomes one push (default 200 ms; a continuous stream of writes
    /// is pushed at least every `8 × upload_debounce`).
    pub upload_debounce: Duration,
    /// Background uploads notice writes made through [`crate::Client::with_connection`] at
    /// once, and writes through any other connection to the file by polling the dirty-row
    /// state this often (default 1 s).
    pub local_change_poll_interval: Duration,
    /// Called with [`Progress`] reports during pulls and snapshot downloads.
    pub progress: Option<ProgressCallback>,
}

impl Config {
    /// The reference's `DefaultConfig`: limits 1000, the built-in retry policy, server-wins
    /// conflict resolution.
    pub fn new(schema: impl Into<String>, tables: Vec<SyncTable>) -> Self {
        Config {
            schema: schema.into(),
            tables,
            upload_limit: 1000,
            download_limit: 1000,
            snapshot_chunk_rows: 1000,
            retry_policy: RetryPolicy::default(),
            resolver: Arc::new(ServerWins),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            bundle_change_watch_mode: WatchMode::Off,
            watch_fallback_interval: Duration::ZERO,
            upload_debounce: Duration::from_millis(200),
            local_change_poll_interval: Duration::from_secs(1),
            progress: None,
        }
    }

    /// `backoff_min` with zero replaced by 1 s.
    pub(crate) fn backoff_min(&self) -> Duration {
        if self.backoff_min.is_zero() {
            Duration::from_secs(1)
        } else {
            self.backoff_min
        }
    }

    /// `backoff_max`, never below [`Config::backoff_min`].
    pub(crate) fn backoff_max(&self) -> Duration {
        self.backoff_max.max(self.backoff_min())
    }

    /// The watch fallback interval (§1.1: zero → `backoff_max`).
    pub(crate) fn watch_fallback_interval(&self) -> Duration {
        if self.watch_fallback_interval.is_zero() {
            self.backoff_max()
        } else {
            self.watch_fallback_interval
        }
    }

    /// The local-change poll interval, never zero.
    pub(crate) fn local_change_poll_interval(&self) -> Duration {
        if self.local_change_poll_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            self.local_change_poll_interval
        }
    }

    pub(crate) fn report_progress(&self, progress: Progress) {
        if let Some(callback) = &self.progress {
            (callback.0)(&progress);
        }
    }

    pub(crate) fn upload_limit(&self) -> i64 {
        non_zero_or_default(self.upload_limit)
    }

    pub(crate) fn download_limit(&self) -> i64 {
        non_zero_or_default(self.download_limit)
    }

    pub(crate) fn snapshot_chunk_rows(&self) -> i64 {
        non_zero_or_default(self.snapshot_chunk_rows)
    }
}

fn non_zero_or_default(value: u32) -> i64 {
    if value == 0 { 1000 } else { i64::from(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_columns_are_trimmed_and_deduplicated_case_insensitively() {
        let table = SyncTable {
            table_name: "t".to_owned(),
            sync_key_columns: vec![" id ".to_owned(), String::new(), "ID".to_owned()],
        };
        assert_eq!(table.normalized_key_columns(), vec!["id".to_owned()]);
    }

    #[test]
    fn disabled_retry_policy_normalises_to_one_attempt() {
        let policy = RetryPolicy {
            enabled: false,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.normalized().max_attempts, 1);
    }

    #[test]
    fn retry_policy_max_backoff_never_below_initial() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.normalized().max_backoff, Duration::from_secs(2));
    }
}
