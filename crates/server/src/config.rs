//! Service configuration (02-server.md §1.2): every field of the reference's `ServiceConfig`
//! and the rules that turn a configured value into the value the runtime uses.
//!
//! Fields hold what the host configured; [`Limits`] holds the effective values (a value ≤ 0 or
//! a zero duration means "the reference default"), computed once at construction so that no
//! code path re-derives a default on its own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The channel bundle-change notifications use unless configured otherwise.
pub const DEFAULT_NOTIFY_CHANNEL: &str = "oversync_bundle_change_v1";
/// Fixed: the largest `max_bundles` one pull page may return.
pub const MAX_BUNDLES_PER_PULL: i64 = 5000;
/// Fixed: the pull page size when the caller gives none.
pub const DEFAULT_BUNDLES_PER_PULL: i64 = 1000;
/// Our bound on `user_id`, `source_id` and writer ids (PROTOCOL.md decision 5).
pub const MAX_IDENTIFIER_BYTES: usize = 255;

const DEFAULT_ROWS_PER_CHUNK: i64 = 1000;
const DEFAULT_MAX_ROWS_PER_CHUNK: i64 = 5000;
const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
const DEFAULT_RETAINED_BUNDLES: i64 = 10_000;
const DEFAULT_PRUNE_BATCH: i64 = 1000;
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(25);

/// One table that participates in sync, as the host registers it. Normalized at bootstrap:
/// names trimmed and lower-cased, an empty schema is `public`, empty and repeated key columns
/// dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisteredTable {
    /// Schema name (`""` means `public`).
    pub schema: String,
    /// Table name.
    pub table: String,
    /// The visible sync key column; exactly one is supported.
    pub sync_key_columns: Vec<String>,
}

impl RegisteredTable {
    /// A registration of `schema.table` keyed by `key_column`.
    pub fn new(schema: &str, table: &str, key_column: &str) -> Self {
        RegisteredTable {
            schema: schema.to_owned(),
            table: table.to_owned(),
            sync_key_columns: vec![key_column.to_owned()],
        }
    }
}

/// Bundle-change watch settings (§9): emission, the SSE heartbeat the HTTP adapter uses, and
/// subscriber limits. The channel name is validated at construction either way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchConfig {
    /// Emit `pg_notify` for every committed bundle and advertise `bundle_change_watch`.
    pub enabled: bool,
    /// Notification channel; `""` means [`DEFAULT_NOTIFY_CHANNEL`]. At most 63 bytes, no NUL.
    pub notify_channel: String,
    /// SSE heartbeat period; zero means 25 s.
    pub heartbeat_interval: Duration,
    /// Open watch streams allowed per user in this process; 0 = unlimited (the reference has
    /// no limit, §13 item 27).
    pub max_subscribers_per_user: usize,
    /// Open watch streams allowed in this process; 0 = unlimited.
    pub max_subscribers: usize,
}

/// One stage timing, delivered synchronously to [`StageMetrics`] (§10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageTiming {
    /// The operation, e.g. `pull`.
    pub operation: &'static str,
    /// The stage, e.g. `load_bundles`.
    pub stage: &'static str,
    /// How long the stage took.
    pub duration: Duration,
    /// A stage-specific count (see §10.1).
    pub count: i64,
    /// Always 0 for pull (retries are not instrumented).
    pub attempt: u32,
    /// Whether the stage failed for a reason other than shutdown.
    pub error: bool,
}

/// A host callback receiving [`StageTiming`]s; it runs on the request's task, so keep it cheap.
#[derive(Clone)]
pub struct StageMetrics(pub Arc<dyn Fn(&StageTiming) + Send + Sync>);

impl fmt::Debug for StageMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StageMetrics(..)")
    }
}

/// The service configuration, field for field the reference's `ServiceConfig` (§1.2).
/// `ServiceConfig::default()` is the reference's zero value; [`ServiceConfig::unconfigured`]
/// is what the reference uses when no configuration is passed at all.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// Reported as `schema_version` in capabilities; no other effect.
    pub schema_version: i64,
    /// Reported in capabilities and status.
    pub app_name: String,
    /// The tables that participate in sync; may be empty.
    pub registered_tables: Vec<RegisteredTable>,
    /// Rows per committed bundle; 0 = unlimited. Advertised, and enforced here (PROTOCOL.md
    /// decision 5).
    pub max_rows_per_bundle: i64,
    /// Canonical bytes per committed bundle (`byte_count`); 0 = unlimited. Advertised and
    /// enforced.
    pub max_bytes_per_bundle: i64,
    /// Advisory chunk size for clients; ≤ 0 → 1000.
    pub default_rows_per_push_chunk: i64,
    /// Enforced per chunk; ≤ 0 → 5000.
    pub max_rows_per_push_chunk: i64,
    /// Push-session lifetime, refreshed by every accepted chunk; zero → 15 min.
    pub push_session_ttl: Duration,
    /// Initialization lease length; zero → 15 min.
    pub initialization_lease_ttl: Duration,
    /// Committed-bundle page size when the caller gives none; ≤ 0 → 1000.
    pub default_rows_per_committed_bundle_chunk: i64,
    /// Committed-bundle page clamp; ≤ 0 → 5000.
    pub max_rows_per_committed_bundle_chunk: i64,
    /// Snapshot page size when the caller gives none; ≤ 0 → 1000.
    pub default_rows_per_snapshot_chunk: i64,
    /// Snapshot page clamp; ≤ 0 → 5000.
    pub max_rows_per_snapshot_chunk: i64,
    /// Snapshot-session lifetime; zero → 15 min.
    pub snapshot_session_ttl: Duration,
    /// Row cap per snapshot session; ≤ 0 = unlimited.
    pub max_rows_per_snapshot_session: i64,
    /// Byte cap per snapshot session; ≤ 0 = unlimited.
    pub max_bytes_per_snapshot_session: i64,
    /// Retention window in bundles per user; ≤ 0 → 10000 (retention cannot be disabled).
    pub retained_bundles_per_user: i64,
    /// Largest floor advance per committing transaction; ≤ 0 → 1000.
    pub retention_prune_batch_size: i64,
    /// `lock_timeout` for push create/chunk/commit transactions; zero = none.
    pub upload_lock_timeout: Duration,
    /// Extra child → parents ordering edges (`"schema.table"` or `"table"`). Informational:
    /// rows are applied in upload order and FKs are deferred (§13 item 5).
    pub dependency_overrides: BTreeMap<String, Vec<String>>,
    /// Stage timing hook (§10.1).
    pub stage_metrics: Option<StageMetrics>,
    /// Also log stage timings at DEBUG.
    pub log_stage_timings: bool,
    /// Bundle-change watch.
    pub watch: WatchConfig,
}

impl ServiceConfig {
    /// The reference's configuration when none is given: schema version 1, app name
    /// `go-oversync-app`, everything else at its zero value.
    pub fn unconfigured() -> Self {
        ServiceConfig {
            schema_version: 1,
            app_name: "go-oversync-app".to_owned(),
            ..ServiceConfig::default()
        }
    }
}

/// Why a configuration was refused at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Host fault: the notify channel (after defaulting) is longer than 63 bytes or has a NUL.
    #[error(
        "invalid bundle change watch notify channel {0:?}: must be at most 63 bytes without NUL"
    )]
    NotifyChannel(String),
}

/// The effective values of every limit, computed once from a [`ServiceConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Raw configured value (0 = unlimited; negative values are echoed in capabilities).
    pub max_rows_per_bundle: i64,
    /// Raw configured value (0 = unlimited).
    pub max_bytes_per_bundle: i64,
    /// Effective advisory chunk size.
    pub default_rows_per_push_chunk: i64,
    /// Effective chunk cap.
    pub max_rows_per_push_chunk: i64,
    /// Effective push-session TTL.
    pub push_session_ttl: Duration,
    /// Effective lease TTL.
    pub initialization_lease_ttl: Duration,
    /// Effective committed-bundle default page.
    pub default_rows_per_committed_bundle_chunk: i64,
    /// Effective committed-bundle clamp.
    pub max_rows_per_committed_bundle_chunk: i64,
    /// Effective snapshot default page.
    pub default_rows_per_snapshot_chunk: i64,
    /// Effective snapshot clamp.
    pub max_rows_per_snapshot_chunk: i64,
    /// Effective snapshot TTL.
    pub snapshot_session_ttl: Duration,
    /// 0 = unlimited.
    pub max_rows_per_snapshot_session: i64,
    /// 0 = unlimited.
    pub max_bytes_per_snapshot_session: i64,
    /// Effective retention window (≥ 1).
    pub retained_bundles_per_user: i64,
    /// Effective prune batch (≥ 1).
    pub retention_prune_batch_size: i64,
    /// `None` = no lock timeout.
    pub upload_lock_timeout: Option<Duration>,
    /// Effective notify channel.
    pub notify_channel: String,
    /// Effective heartbeat interval.
    pub heartbeat_interval: Duration,
}

fn positive_or(value: i64, default: i64) -> i64 {
    if value > 0 { value } else { default }
}

fn nonzero_or(value: Duration, default: Duration) -> Duration {
    if value.is_zero() { default } else { value }
}

impl Limits {
    /// Applies the effective-value rules of §1.2 and validates the watch channel.
    pub fn from_config(config: &ServiceConfig) -> Result<Limits, ConfigError> {
        let notify_channel = if config.watch.notify_channel.is_empty() {
            DEFAULT_NOTIFY_CHANNEL.to_owned()
        } else {
            config.watch.notify_channel.clone()
        };
        if notify_channel.len() > 63 || notify_channel.contains('\0') {
            return Err(ConfigError::NotifyChannel(notify_channel));
        }
        Ok(Limits {
            max_rows_per_bundle: config.max_rows_per_bundle,
            max_bytes_per_bundle: config.max_bytes_per_bundle,
            default_rows_per_push_chunk: positive_or(
                config.default_rows_per_push_chunk,
                DEFAULT_ROWS_PER_CHUNK,
            ),
            max_rows_per_push_chunk: positive_or(
                config.max_rows_per_push_chunk,
                DEFAULT_MAX_ROWS_PER_CHUNK,
            ),
            push_session_ttl: nonzero_or(config.push_session_ttl, DEFAULT_TTL),
            initialization_lease_ttl: nonzero_or(config.initialization_lease_ttl, DEFAULT_TTL),
            default_rows_per_committed_bundle_chunk: positive_or(
                config.default_rows_per_committed_bundle_chunk,
                DEFAULT_ROWS_PER_CHUNK,
            ),
            max_rows_per_committed_bundle_chunk: positive_or(
                config.max_rows_per_committed_bundle_chunk,
                DEFAULT_MAX_ROWS_PER_CHUNK,
            ),
            default_rows_per_snapshot_chunk: positive_or(
                config.default_rows_per_snapshot_chunk,
                DEFAULT_ROWS_PER_CHUNK,
            ),
            max_rows_per_snapshot_chunk: positive_or(
                config.max_rows_per_snapshot_chunk,
                DEFAULT_MAX_ROWS_PER_CHUNK,
            ),
            snapshot_session_ttl: nonzero_or(config.snapshot_session_ttl, DEFAULT_TTL),
            max_rows_per_snapshot_session: config.max_rows_per_snapshot_session.max(0),
            max_bytes_per_snapshot_session: config.max_bytes_per_snapshot_session.max(0),
            retained_bundles_per_user: positive_or(
                config.retained_bundles_per_user,
                DEFAULT_RETAINED_BUNDLES,
            ),
            retention_prune_batch_size: positive_or(
                config.retention_prune_batch_size,
                DEFAULT_PRUNE_BATCH,
            ),
            upload_lock_timeout: (!config.upload_lock_timeout.is_zero())
                .then_some(config.upload_lock_timeout),
            notify_channel,
            heartbeat_interval: nonzero_or(config.watch.heartbeat_interval, DEFAULT_HEARTBEAT),
        })
    }

    /// Whether bundles are bounded in rows and the bound is exceeded by `rows`.
    pub(crate) fn bundle_rows_exceeded(&self, rows: i64) -> bool {
        self.max_rows_per_bundle > 0 && rows > self.max_rows_per_bundle
    }

    /// Whether bundles are bounded in bytes and the bound is exceeded by `bytes`.
    pub(crate) fn bundle_bytes_exceeded(&self, bytes: i64) -> bool {
        self.max_bytes_per_bundle > 0 && bytes > self.max_bytes_per_bundle
    }
}

/// Whole microseconds of `d`, saturating; what the SQL side receives for intervals.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_config_takes_every_reference_default() {
        let limits = Limits::from_config(&ServiceConfig::default()).unwrap();
        assert_eq!(limits.default_rows_per_push_chunk, 1000);
        assert_eq!(limits.max_rows_per_push_chunk, 5000);
        assert_eq!(limits.push_session_ttl, Duration::from_secs(900));
        assert_eq!(limits.initialization_lease_ttl, Duration::from_secs(900));
        assert_eq!(limits.default_rows_per_committed_bundle_chunk, 1000);
        assert_eq!(limits.max_rows_per_committed_bundle_chunk, 5000);
        assert_eq!(limits.default_rows_per_snapshot_chunk, 1000);
        assert_eq!(limits.max_rows_per_snapshot_chunk, 5000);
        assert_eq!(limits.snapshot_session_ttl, Duration::from_secs(900));
        assert_eq!(limits.max_rows_per_snapshot_session, 0);
        assert_eq!(limits.max_bytes_per_snapshot_session, 0);
        assert_eq!(limits.retained_bundles_per_user, 10_000);
        assert_eq!(limits.retention_prune_batch_size, 1000);
        assert_eq!(limits.upload_lock_timeout, None);
        assert_eq!(limits.notify_channel, DEFAULT_NOTIFY_CHANNEL);
        assert_eq!(limits.heartbeat_interval, Duration::from_secs(25));
        assert_eq!(limits.max_rows_per_bundle, 0);
    }

    #[test]
    fn negative_values_fall_back_but_bundle_limits_echo_raw() {
        let config = ServiceConfig {
            max_rows_per_push_chunk: -3,
            retained_bundles_per_user: -1,
            max_rows_per_bundle: -7,
            max_rows_per_snapshot_session: -9,
            ..ServiceConfig::default()
        };
        let limits = Limits::from_config(&config).unwrap();
        assert_eq!(limits.max_rows_per_push_chunk, 5000);
        assert_eq!(limits.retained_bundles_per_user, 10_000);
        assert_eq!(limits.max_rows_per_bundle, -7);
        assert_eq!(limits.max_rows_per_snapshot_session, 0);
    }

    #[test]
    fn unconfigured_matches_the_reference_absent_config() {
        let config = ServiceConfig::unconfigured();
        assert_eq!(config.schema_version, 1);
        assert_eq!(config.app_name, "go-oversync-app");
    }

    #[test]
    fn notify_channel_longer_than_63_bytes_is_refused_even_when_watch_is_off() {
        let config = ServiceConfig {
            watch: WatchConfig {
                notify_channel: "x".repeat(64),
                ..WatchConfig::default()
            },
            ..ServiceConfig::default()
        };
        assert!(matches!(
            Limits::from_config(&config),
            Err(ConfigError::NotifyChannel(_))
        ));
        let nul = ServiceConfig {
            watch: WatchConfig {
                notify_channel: "a\0b".to_owned(),
                ..WatchConfig::default()
            },
            ..ServiceConfig::default()
        };
        assert!(Limits::from_config(&nul).is_err());
    }
}
