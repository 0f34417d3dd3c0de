//! Service lifecycle (§1.6): `running → shutting_down → closed`, in-flight counting and
//! graceful close.
//!
//! Invariants: an operation is admitted only while `running`; every admitted operation holds
//! an [`OperationGuard`] until it returns (dropping the guard is the only way to leave, so a
//! cancelled request also deregisters); the service becomes `closed` exactly when it is
//! shutting down and the count reaches zero, or when `close` times out waiting and is called
//! again after the count reached zero.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use oversync_protocol::wire::Lifecycle as Phase;
use tokio::sync::Notify;

use crate::error::{Failure, Refusal};

#[derive(Debug)]
struct State {
    phase: Phase,
    in_flight: i64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    drained: Notify,
    stopping: Notify,
}

/// The lifecycle of one service; cheap to clone (shared).
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    shared: Arc<Shared>,
}

/// Why `close` returned before the service was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{in_flight} operation(s) still in flight when the close deadline passed")]
pub struct CloseTimeout {
    /// Operations still running at the deadline.
    pub in_flight: i64,
}

/// Registration of one admitted operation; deregisters on drop.
#[derive(Debug)]
pub(crate) struct OperationGuard {
    shared: Arc<Shared>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    phase: Phase::Running,
                    in_flight: 0,
                }),
                drained: Notify::new(),
                stopping: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields; a panic while holding the lock cannot corrupt it.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits an operation, or refuses it with `service_unavailable`.
    pub(crate) fn begin(&self) -> Result<OperationGuard, Failure> {
        let mut state = self.lock();
        match state.phase {
            Phase::Running => {
                state.in_flight += 1;
                Ok(OperationGuard {
                    shared: Arc::clone(&self.shared),
                })
            }
            Phase::ShuttingDown => Err(Failure::Unavailable(Refusal::ShuttingDown)),
            Phase::Closed => Err(Failure::Unavailable(Refusal::Closed)),
        }
    }

    /// The current phase and in-flight count.
    pub(crate) fn snapshot(&self) -> (Phase, i64) {
        let state = self.lock();
        (state.phase, state.in_flight)
    }

    /// Resolves once the service has left `running` (close was called). Background tasks
    /// select on it to stop.
    pub(crate) async fn stopped(&self) {
        loop {
            let notified = self.shared.stopping.notified();
            if self.lock().phase != Phase::Running {
                return;
            }
            notified.await;
        }
    }

    /// Stops admitting operations, waits up to `deadline` for in-flight ones, then closes.
    /// Idempotent; calling it again after a timeout keeps waiting.
    pub(crate) async fn close(&self, deadline: Duration) -> Result<(), CloseTimeout> {
        let wait = async {
            loop {
                let notified = self.shared.drained.notified();
                {
                    let mut state = self.lock();
                    if state.phase == Phase::Running {
                        state.phase = Phase::ShuttingDown;
                        self.shared.stopping.notify_waiters();
                    }
                    if state.in_flight == 0 {
                        state.phase = Phase::Closed;
                        return;
                    }
                }
                notified.await;
            }
        };
        match tokio::time::timeout(deadline, wait).await {
            Ok(()) => Ok(()),
            Err(_) => Err(CloseTimeout {
                in_flight: self.snapshot().1,
            }),
        }
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.in_flight -= 1;
        if state.in_flight == 0 && state.phase == Phase::ShuttingDown {
            state.phase = Phase::Closed;
            drop(state);
            self.shared.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_waits_for_in_flight_operations_then_refuses() {
        let lifecycle = Lifecycle::new();
        let guard = lifecycle.begin().unwrap();
        assert_eq!(lifecycle.snapshot(), (Phase::Running, 1));
        let closing = {
            let lifecycle = lifecycle.clone();
            tokio::spawn(async move { lifecycle.close(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        while lifecycle.snapshot().0 == Phase::Running {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            lifecycle.begin(),
            Err(Failure::Unavailable(Refusal::ShuttingDown))
        ));
        drop(guard);
        closing.await.unwrap().unwrap();
        assert_eq!(lifecycle.snapshot(), (Phase::Closed, 0));
        assert!(matches!(
            lifecycle.begin(),
            Err(Failure::Unavailable(Refusal::Closed))
        ));
        lifecycle.close(Duration::from_millis(1)).await.unwrap();
    }

    #[tokio::test]
    async fn close_times_out_while_work_is_in_flight() {
        let lifecycle = Lifecycle::new();
        let _guard = lifecycle.begin().unwrap();
        let err = lifecycle
            .close(Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(err.in_flight, 1);
        assert_eq!(lifecycle.snapshot().0, Phase::ShuttingDown);
    }
}
