//! Stage timings (§10.1) delivered to every place an operator may look: the host's
//! `StageMetrics` callback, a DEBUG log line when `log_stage_timings` is on, and the `metrics`
//! facade (`oversync_stage_duration_seconds` histogram, `oversync_operations_total` counter), so
//! a host that installs any `metrics` recorder — the example installs Prometheus — gets them
//! without wiring.
//!
//! Every public operation records a `total` stage; push commit and pull also record their inner
//! stages, which is where time goes when a push is slow.

use std::time::Instant;

use crate::SyncService;
use crate::config::StageTiming;

/// Sends one timing to the callback, the log and the `metrics` facade.
pub(crate) fn record(service: &SyncService, timing: &StageTiming) {
    if let Some(callback) = &service.config.stage_metrics {
        (callback.0)(timing);
    }
    if service.config.log_stage_timings {
        tracing::debug!(
            operation = timing.operation,
            stage = timing.stage,
            duration_us = u64::try_from(timing.duration.as_micros()).unwrap_or(u64::MAX),
            count = timing.count,
            error = timing.error,
            "oversync stage timing"
        );
    }
    let outcome = if timing.error { "error" } else { "ok" };
    metrics::histogram!(
        "oversync_stage_duration_seconds",
        "operation" => timing.operation,
        "stage" => timing.stage,
        "outcome" => outcome
    )
    .record(timing.duration.as_secs_f64());
    if timing.stage == "total" {
        metrics::counter!(
            "oversync_operations_total",
            "operation" => timing.operation,
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// Times the stages of one operation: each [`Stopwatch::lap`] records the time since the
/// previous lap (or the start).
pub(crate) struct Stopwatch<'a> {
    service: &'a SyncService,
    operation: &'static str,
    started: Instant,
    last: Instant,
}

impl<'a> Stopwatch<'a> {
    pub(crate) fn start(service: &'a SyncService, operation: &'static str) -> Self {
        let now = Instant::now();
        Stopwatch {
            service,
            operation,
            started: now,
            last: now,
        }
    }

    /// Records `stage` as the time since the last lap.
    pub(crate) fn lap(&mut self, stage: &'static str, count: i64) {
        let now = Instant::now();
        record(
            self.service,
            &StageTiming {
                operation: self.operation,
                stage,
                duration: now - self.last,
                count,
                attempt: 0,
                error: false,
            },
        );
        self.last = now;
    }

    /// Records the `total` stage since the start.
    pub(crate) fn total(&self, count: i64, error: bool) {
        record(
            self.service,
            &StageTiming {
                operation: self.operation,
                stage: "total",
                duration: self.started.elapsed(),
                count,
                attempt: 0,
                error,
            },
        );
    }
}
