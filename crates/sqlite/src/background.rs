//! Background sync (client chapter §9): an upload loop and a download loop that call the
//! public operations, so they obey the gate and every precondition exactly like the host's
//! own calls.
//!
//! Invariants the loops keep, each a fix of §12 C4 / C5 or an idea of §11.9:
//! - One pair per client: a second [`Client::start`] is refused while the first runs.
//! - Every wait is cancellable: [`BackgroundSync::stop`] ends sleeps, debounces and open
//!   watch streams at once; an operation already running (a push, a pull, a rebuild) is
//!   finished first, because dropping it half-way could lose the in-memory session update
//!   that follows a committed durable step. `stop` returns only after both tasks ended.
//!   Dropping the handle signals the same stop without waiting; `close` ends the loops too
//!   (their next operation fails with `ClientClosed`).
//! - Uploads are driven by the local dirty state, not a timer: a write through
//!   [`Client::with_connection`] wakes the loop at once, writes through any other connection
//!   are seen by polling a cheap fingerprint (pending count, highest dirty ordinal). A burst
//!   of writes is debounced into one push. The loop does not claim the connection's single
//!   `update_hook` slot, which belongs to the host.
//! - "Needs the host" errors (source recovery, rebuild gate, no session) are not retried
//!   with growing back-off against the server: they are re-checked locally, and
//!   [`Client::status`] reports them.
//! - Pull refusals because local changes are pending (`DirtyStateRejected`,
//!   `PendingPushReplay`) and gate contention are benign: retried soon, no back-off growth.
//! - The watch decision is re-made at every (re)connect, so a client attached after `start`
//!   can still use watch; `403 bundle_change_watch_forbidden` switches to polling for the
//!   rest of the run; the back-off resets after a healthy stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use oversync_protocol::error::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, LocalFingerprint};
use crate::config::WatchMode;
use crate::error::{GateError, PullError, PushError, RequiredAction, StartError, StoreError};
use crate::transport::{Transport, TransportError};
use crate::types::{DownloadMode, PushOutcome};
use crate::watch::{WatchEvents, WatchStreamError};

/// A running pair of background loops. Stop it with [`BackgroundSync::stop`]; dropping it
/// signals the loops to stop without waiting for them.
#[derive(Debug)]
pub struct BackgroundSync {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl BackgroundSync {
    /// Stops both loops and waits until their tasks have ended (an operation in flight is
    /// finished first).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            // A loop that panicked has ended too; there is nothing left to stop.
            let _ = task.await;
        }
    }

    /// Whether both loops have ended (after `stop`, `close`, or a panic).
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Clears the client's "running" flag when the last loop task ends.
struct Running<T: Transport>(Arc<Client<T>>);

impl<T: Transport> Drop for Running<T> {
    fn drop(&mut self) {
        self.0.set_download_mode(DownloadMode::Stopped);
        self.0.background_running.store(false, Ordering::SeqCst);
    }
}

/// Why opening a watch stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchOpenError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stop signal as seen by a loop.
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when stop is requested (or the handle is gone).
    async fn wait(&mut self) {
        // `Err` means the sender was dropped, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Sleeps `d`; true when stop was requested meanwhile.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            () = self.wait() => true,
            () = tokio::time::sleep(d) => self.requested(),
        }
    }
}

impl<T: Transport> Client<T> {
    /// Starts background sync (§9): an upload loop that pushes soon after local writes, and a
    /// download loop that pulls on a timer or, with [`WatchMode::Auto`] and a server that
    /// advertises `bundle_change_watch`, whenever the watch stream announces a new bundle.
    /// Returns at once; must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`StartError::AlreadyRunning`] while a previous [`BackgroundSync`] of this client is
    /// still running, [`StartError::ClientClosed`] after `close`, [`StartError::NoRuntime`]
    /// outside a tokio runtime.
    pub fn start(self: &Arc<Self>) -> Result<BackgroundSync, StartError> {
        if self.is_closed() {
            return Err(StartError::ClientClosed);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        if self
            .background_running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(StartError::AlreadyRunning);
        }
        let (stop, receiver) = watch::channel(false);
        let running = Arc::new(Running(Arc::clone(self)));
        let upload = {
            let (client, stop, running) = (
                Arc::clone(self),
                Stop(receiver.clone()),
                Arc::clone(&running),
            );
            runtime.spawn(async move {
                upload_loop(&client, stop).await;
                drop(running);
            })
        };
        let download = {
            let (client, stop) = (Arc::clone(self), Stop(receiver));
            runtime.spawn(async move {
                download_loop(&client, stop).await;
                drop(running);
            })
        };
        Ok(BackgroundSync {
            stop,
            tasks: vec![upload, download],
        })
    }
}

/// What a loop does after a failed operation.
enum Next {
    /// The client was closed: end the loop.
    Exit,
    /// Retry soon, without growing the back-off (contention, pending local changes).
    Soon,
    /// The host must act; re-check locally after a while, no server traffic meanwhile.
    WaitForHost,
    /// A real failure: back off.
    BackOff,
}

fn after_push_error(e: &PushError) -> Next {
    match e {
        PushError::Gate(GateError::ClientClosed) => Next::Exit,
        PushError::Gate(GateError::SyncOperationInProgress) => Next::Soon,
        e if e.required_action().is_some() => Next::WaitForHost,
        _ => Next::BackOff,
    }
}

fn after_pull_error(e: &PullError) -> Next {
    match e {
        PullError::Gate(GateError::ClientClosed) => Next::Exit,
        PullError::Gate(GateError::SyncOperationInProgress) => Next::Soon,
        e if e.required_action() == Some(RequiredAction::Push) => Next::Soon,
        e if e.required_action().is_some() => Next::WaitForHost,
        _ => Next::BackOff,
    }
}

fn doubled(current: Duration, min: Duration, max: Duration) -> Duration {
    (current * 2).clamp(min, max)
}

/// §9.2, event-driven: wait for pending local work, debounce, push, repeat.
async fn upload_loop<T: Transport>(client: &Client<T>, mut stop: Stop) {
    let config = client.config();
    let (min, max) = (config.backoff_min(), config.backoff_max());
    let poll = config.local_change_poll_interval();
    let debounce = config.upload_debounce;
    let mut backoff = min;
    // The fingerprint after a push that left work behind which pushing again cannot clear
    // (paused, no-op rows, host action needed): wait for it to change, or for `max`.
    let mut settled: Option<(LocalFingerprint, Instant)> = None;
    loop {
        if stop.requested() || client.is_closed() {
            return;
        }
        let fingerprint = match client.local_fingerprint().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "upload loop cannot read local state");
                if stop.sleep(backoff).await {
                    return;
                }
                backoff = doubled(backoff, min, max);
                continue;
            }
        };
        let unchanged = matches!(settled, Some((f, at)) if f == fingerprint && at.elapsed() < max);
        if fingerprint.pending == 0 || unchanged || client.uploads_paused() {
            tokio::select! {
                () = stop.wait() => return,
                () = client.local_write() => {}
                () = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        if !debounce.is_zero() && !debounced(client, &mut stop, fingerprint, debounce).await {
            return;
        }
        let result = client.push_pending().await;
        let after = client.local_fingerprint().await.ok();
        match result {
            Ok(report) => {
                backoff = min;
                settled = match report.outcome {
                    // More may be pending (writes made during the push): look again now.
                    PushOutcome::Committed => None,
                    PushOutcome::NoChange | PushOutcome::SkippedPaused => {
                        after.map(|f| (f, Instant::now()))
                    }
                };
            }
            Err(e) => match after_push_error(&e) {
                Next::Exit => return,
                Next::Soon => {
                    if stop.sleep(min.min(poll)).await {
                        return;
                    }
                }
                Next::WaitForHost => {
                    tracing::warn!(error = %e, "upload loop waits for the host");
                    settled = after.map(|f| (f, Instant::now()));
                }
                Next::BackOff => {
                    tracing::warn!(error = %e, "background push failed");
                    if stop.sleep(backoff).await {
                        return;
                    }
                    backoff = doubled(backoff, min, max);
                }
            },
        }
    }
}

/// Waits until the local fingerprint has been stable for `debounce` (at most `8 ×
/// debounce`); false when stop was requested.
async fn debounced<T: Transport>(
    client: &Client<T>,
    stop: &mut Stop,
    mut last: LocalFingerprint,
    debounce: Duration,
) -> bool {
    let deadline = Instant::now() + debounce * 8;
    loop {
        if stop.sleep(debounce).await {
            return false;
        }
        let Ok(now) = client.local_fingerprint().await else {
            return true;
        };
        if now == last || Instant::now() >= deadline {
            return true;
        }
        last = now;
    }
}

/// §9.3–§9.5 with the fixes listed in the module docs.
async fn download_loop<T: Transport>(client: &Client<T>, mut stop: Stop) {
    let config = client.config();
    let (min, max) = (config.backoff_min(), config.backoff_max());
    let mut backoff = min;
    let mut watch_allowed = config.bundle_change_watch_mode == WatchMode::Auto;
    // While polling in auto mode, capabilities are asked again at most every `max`.
    let mut next_watch_check = Instant::now();
    loop {
        if stop.requested() || client.is_closed() {
            return;
        }
        if client.downloads_paused() {
            if stop.sleep(min).await {
                return;
            }
            continue;
        }
        let checkpoint = match client.last_bundle_seq_seen().await {
            Ok(seq) => seq,
            Err(e) => {
                if matches!(e, crate::StatusError::Gate(GateError::ClientClosed)) {
                    return;
                }
                // Not attached yet (or contention): wait without growing the back-off.
                if stop.sleep(min).await {
                    return;
                }
                continue;
            }
        };
        if watch_allowed && Instant::now() >= next_watch_check {
            if client.server_offers_watch().await {
                match watch_once(client, &mut stop, checkpoint).await {
                    WatchEnd::Stopped => return,
                    WatchEnd::Forbidden => {
                        tracing::warn!("bundle change watch forbidden; polling instead");
                        watch_allowed = false;
                        continue;
                    }
                    WatchEnd::Ended {
                        error,
                        healthy,
                        pulled,
                    } => {
                        tracing::info!(%error, "bundle change watch stream stopped");
                        let mut next = if healthy { Next::Soon } else { Next::BackOff };
                        if !pulled {
                            // One fallback pull after a stream that did not end in a pull.
                            match client.pull_to_stable().await {
                                Ok(_) => {}
                                Err(e) => match after_pull_error(&e) {
                                    Next::Exit => return,
                                    Next::WaitForHost => next = Next::WaitForHost,
                                    Next::Soon | Next::BackOff => {}
                                },
                            }
                        }
                        match next {
                            Next::Soon => backoff = min,
                            Next::WaitForHost | Next::BackOff | Next::Exit => {}
                        }
                        if stop.sleep(backoff).await {
                            return;
                        }
                        if !healthy {
                            backoff = doubled(backoff, min, max);
                        }
                        continue;
                    }
                }
            }
            next_watch_check = Instant::now() + max;
        }
        client.set_download_mode(DownloadMode::Polling);
        match client.pull_to_stable().await {
            Ok(report) => {
                backoff = min;
                let advanced = report.status.last_bundle_seq_seen != checkpoint;
                // §9.4: more may be waiting when the pull advanced; loop at once.
                if !advanced && stop.sleep(min).await {
                    return;
                }
            }
            Err(e) => {
                let wait = match after_pull_error(&e) {
                    Next::Exit => return,
                    Next::Soon => min,
                    Next::WaitForHost => max,
                    Next::BackOff => {
                        tracing::warn!(error = %e, "background pull failed");
                        let wait = backoff;
                        backoff = doubled(backoff, min, max);
                        wait
                    }
                };
                if stop.sleep(wait).await {
                    return;
                }
            }
        }
    }
}

/// How one watch stream ended.
enum WatchEnd {
    Stopped,
    Forbidden,
    Ended {
        error: String,
        /// The stream was open and delivered, or lasted long enough to trust it.
        healthy: bool,
        /// It ended because a pull failed (no fallback pull needed).
        pulled: bool,
    },
}

fn is_forbidden(e: &TransportError) -> bool {
    e.status() == Some(403) && e.code() == Some(ErrorCode::BundleChangeWatchForbidden.as_str())
}

/// `watch_once` (§9.5): open the stream after `checkpoint`, pull on every event and on the
/// fallback timer, until the stream ends, a pull fails, or stop is requested.
async fn watch_once<T: Transport>(
    client: &Client<T>,
    stop: &mut Stop,
    checkpoint: i64,
) -> WatchEnd {
    let config = client.config();
    let min = config.backoff_min();
    let fallback = config.watch_fallback_interval();
    let body = tokio::select! {
        () = stop.wait() => return WatchEnd::Stopped,
        opened = client.open_watch(checkpoint) => opened,
    };
    let body = match body {
        Ok(body) => body,
        Err(WatchOpenError::Transport(e)) if is_forbidden(&e) => return WatchEnd::Forbidden,
        Err(e) => {
            return WatchEnd::Ended {
                error: e.to_string(),
                healthy: false,
                pulled: false,
            };
        }
    };
    client.set_download_mode(DownloadMode::Watching);
    let opened = Instant::now();
    let mut events = WatchEvents::new(body);
    let mut delivered = false;
    let mut fallback_at = Instant::now() + fallback;
    let mut retry_at: Option<Instant> = None;
    loop {
        let wake = retry_at.map_or(fallback_at, |r| r.min(fallback_at));
        let reason = tokio::select! {
            () = stop.wait() => return WatchEnd::Stopped,
            event = events.next() => match event {
                Ok(_) => "event",
                Err(e) => {
                    let healthy = delivered || opened.elapsed() >= fallback.min(Duration::from_secs(30));
                    let error = match e {
                        WatchStreamError::Eof => "EOF".to_owned(),
                        other => other.to_string(),
                    };
                    return WatchEnd::Ended { error, healthy, pulled: false };
                }
            },
            () = tokio::time::sleep_until(wake) => "timer",
        };
        tracing::trace!(reason, "watch-triggered pull");
        if Instant::now() >= fallback_at {
            fallback_at = Instant::now() + fallback;
        }
        match client.pull_to_stable().await {
            Ok(_) => {
                delivered = true;
                retry_at = None;
            }
            Err(e) => match after_pull_error(&e) {
                Next::Exit => return WatchEnd::Stopped,
                // Local changes are pending or the gate is busy: the stream stays open and
                // the pull is retried shortly (the reference ended the stream and backed off).
                Next::Soon => retry_at = Some(Instant::now() + min),
                Next::WaitForHost | Next::BackOff => {
                    return WatchEnd::Ended {
                        error: e.to_string(),
                        healthy: delivered,
                        pulled: true,
                    };
                }
            },
        }
    }
}
