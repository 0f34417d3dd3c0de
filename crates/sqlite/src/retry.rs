//! Bounded retry with exponential backoff and jitter (client chapter §10.4).
//!
//! Used by the HTTP transport for the idempotent calls and by the client for whole push
//! attempts. Only failures that [`TransportError::is_retryable`] accepts are retried; when the
//! budget is spent the last failure is wrapped in [`TransportError::RetryExhausted`].

use std::future::Future;
use std::time::Duration;

use crate::config::RetryPolicy;
use crate::transport::TransportError;

/// What a retried operation reports besides a transport failure.
pub(crate) trait RetryClass {
    /// The transport failure inside, if this error is one that the policy may retry.
    fn transient(&self) -> bool;
    /// Wraps an exhausted budget.
    fn exhausted(self, operation: &'static str, attempts: u32) -> Self;
}

impl RetryClass for TransportError {
    fn transient(&self) -> bool {
        self.is_retryable()
    }

    fn exhausted(self, operation: &'static str, attempts: u32) -> Self {
        TransportError::RetryExhausted {
            operation,
            attempts,
            last: Box::new(self),
        }
    }
}

/// Runs `op` until it succeeds, fails with a non-transient error, or `policy` is spent.
pub(crate) async fn run<T, E, F, Fut>(
    policy: &RetryPolicy,
    operation: &'static str,
    mut op: F,
) -> Result<T, E>
where
    E: RetryClass,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let policy = policy.normalized();
    let mut delay = policy.initial_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !error.transient() {
            return Err(error);
        }
        if attempt >= policy.max_attempts {
            return Err(error.exhausted(operation, attempt));
        }
        tokio::time::sleep(jittered(delay, policy.jitter_fraction)).await;
        delay = (delay * 2).min(policy.max_backoff);
    }
}

/// `delay × (1 + u × jitter)` with `u` uniform in [−1, 1], floored at zero. The randomness
/// comes from a v4 UUID (the crate already depends on it for source ids).
fn jittered(delay: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return delay;
    }
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let u = (random as f64 / u64::MAX as f64) * 2.0 - 1.0;
    delay.mul_f64((1.0 + u * jitter).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{NetworkErrorKind, StatusBody};

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            enabled: true,
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            jitter_fraction: 0.2,
        }
    }

    fn status(status: u16) -> TransportError {
        TransportError::Status {
            endpoint: "pull",
            status,
            body: StatusBody::Unrecognized(String::new()),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let mut calls = 0;
        let result: Result<u32, TransportError> = run(&fast(3), "pull_request", || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(status(503)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test]
    async fn exhausted_budget_reports_operation_attempts_and_last_error() {
        let result: Result<(), TransportError> = run(&fast(2), "pull_request", || async {
            Err(TransportError::Network {
                endpoint: "pull",
                kind: NetworkErrorKind::Connect,
                message: "refused".to_owned(),
            })
        })
        .await;
        match result {
            Err(TransportError::RetryExhausted {
                operation,
                attempts,
                last,
            }) => {
                assert_eq!(operation, "pull_request");
                assert_eq!(attempts, 2);
                assert!(matches!(*last, TransportError::Network { .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn unauthorized_is_returned_without_retry() {
        let mut calls = 0;
        let result: Result<(), TransportError> = run(&fast(3), "pull_request", || {
            calls += 1;
            async { Err(status(401)) }
        })
        .await;
        assert_eq!(result.unwrap_err().status(), Some(401));
        assert_eq!(calls, 1);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(100), 0.2);
            assert!(d >= Duration::from_millis(80) && d <= Duration::from_millis(120));
        }
    }
}
