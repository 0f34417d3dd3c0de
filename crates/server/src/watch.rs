//! Bundle-change watch (§9): the process-local fan-out hub, subscriptions, and the one
//! dedicated `LISTEN` connection per process that feeds it.
//!
//! Invariants:
//! * a subscriber sees strictly increasing `bundle_seq` values, each greater than its
//!   `after_bundle_seq`; its mailbox holds one event and a newer one replaces an unread one,
//!   so publishing never blocks and a slow subscriber only sees the newest;
//! * events of a user reach only that user's subscribers (the hub is keyed by `user_pk`);
//! * a subscriber is registered before the latest `bundle_seq` is read, so a bundle committed
//!   around subscription time is never missed (catch-up or live event);
//! * the listener owns a non-pooled connection (`tokio_postgres::connect`, its `Connection`
//!   polled for notifications), reconnects with back-off (100 ms doubling to 2 s, reset after a
//!   healthy minute) and publishes a catch-up to every subscribed user after each (re)connect;
//! * dropping a [`Subscription`] removes it from the hub; closing the service ends every
//!   subscription and the listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use oversync_protocol::error::{ErrorBody, ErrorCode};
use oversync_protocol::wire::{BundleChangeEvent, BundleChangeNotification};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::db::{self, Context};
use crate::error::{Failure, InternalError, Refusal};
use crate::scope;
use crate::{Actor, SyncService};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// State of the process's `LISTEN` connection, as status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// No listener was started (watch streams then get catch-up events and heartbeats only).
    NotStarted,
    /// Listening.
    Connected,
    /// The connection is down; the listener is backing off or reconnecting.
    Reconnecting,
    /// The listener ended (the service closed).
    Stopped,
}

impl ListenerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => ListenerState::Connected,
            2 => ListenerState::Reconnecting,
            3 => ListenerState::Stopped,
            _ => ListenerState::NotStarted,
        }
    }
}

#[derive(Debug, Default)]
struct Mailbox {
    last_seq: i64,
    pending: Option<BundleChangeEvent>,
    closed: bool,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    mailbox: Mutex<Mailbox>,
    ready: Notify,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` unless it is not newer than what this subscriber already got.
    fn offer(&self, event: &BundleChangeEvent) {
        let mut mailbox = self.lock();
        if mailbox.closed || event.bundle_seq <= mailbox.last_seq {
            return;
        }
        mailbox.last_seq = event.bundle_seq;
        mailbox.pending = Some(event.clone());
        drop(mailbox);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

#[derive(Debug, Default)]
struct UserSubscribers {
    user_id: String,
    slots: Vec<Arc<Slot>>,
}

/// The process-local fan-out hub plus the listener's health, shared by the service, its
/// subscriptions and its listener task.
#[derive(Debug, Default)]
pub(crate) struct WatchHub {
    users: Mutex<HashMap<i64, UserSubscribers>>,
    next_id: AtomicU64,
    listener: AtomicU8,
    reconnects: AtomicU64,
}

impl WatchHub {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, UserSubscribers>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, user_pk: i64, event: &BundleChangeEvent) {
        let users = self.lock();
        if let Some(entry) = users.get(&user_pk) {
            for slot in &entry.slots {
                slot.offer(event);
            }
        }
    }

    fn remove(&self, user_pk: i64, id: u64) {
        let mut users = self.lock();
        if let Some(entry) = users.get_mut(&user_pk) {
            entry.slots.retain(|s| s.id != id);
            if entry.slots.is_empty() {
                users.remove(&user_pk);
            }
        }
    }

    fn subscribed_users(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }

    /// Ends every subscription (service close).
    pub(crate) fn close_all(&self) {
        for entry in self.lock().values() {
            for slot in &entry.slots {
                slot.close();
            }
        }
    }

    fn set_listener(&self, state: ListenerState) {
        let v = match state {
            ListenerState::NotStarted => 0,
            ListenerState::Connected => 1,
            ListenerState::Reconnecting => 2,
            ListenerState::Stopped => 3,
        };
        self.listener.store(v, Ordering::Relaxed);
    }

    pub(crate) fn listener_state(&self) -> ListenerState {
        ListenerState::from_u8(self.listener.load(Ordering::Relaxed))
    }
}

/// One open watch: yields bundle-change events for one user. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<WatchHub>,
    slot: Arc<Slot>,
    user_pk: i64,
}

impl Subscription {
    /// Waits for the next event; `None` once the service is closing (the stream should then
    /// end normally).
    pub async fn next(&mut self) -> Option<BundleChangeEvent> {
        loop {
            let notified = self.slot.ready.notified();
            {
                let mut mailbox = self.slot.lock();
                if mailbox.closed {
                    return None;
                }
                if let Some(event) = mailbox.pending.take() {
                    return Some(event);
                }
            }
            notified.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.user_pk, self.slot.id);
    }
}

/// Failure of [`SyncService::subscribe_bundle_changes`].
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Server state: shutting down or closed (`service_unavailable`).
    #[error("{}", match .0 { Refusal::ShuttingDown => "Sync service is shutting down", Refusal::Closed => "Sync service is closed" })]
    Unavailable(Refusal),
    /// Server configuration: watch is off (`bundle_change_watch_disabled`).
    #[error("Bundle change watch is disabled")]
    Disabled,
    /// Caller fault: negative `after_bundle_seq` (`invalid_request`).
    #[error("{0}")]
    Invalid(String),
    /// Caller state: the scope was never initialized (`scope_uninitialized`).
    #[error("sync scope for user {user_id} is not initialized")]
    ScopeUninitialized {
        /// The actor's user.
        user_id: String,
    },
    /// Caller state: another source holds a live initialization lease (`scope_initializing`).
    #[error("sync scope for user {user_id} is initializing")]
    ScopeInitializing {
        /// The actor's user.
        user_id: String,
    },
    /// Server limit: too many open watch streams for this user or this process
    /// (`service_unavailable`; clients back off and retry, falling back to polling).
    #[error("too many bundle change watch subscribers ({0})")]
    TooManySubscribers(&'static str),
    /// Server fault (`bundle_change_watch_failed`).
    #[error("bundle change watch failed: {0}")]
    Internal(#[from] InternalError),
}

impl WatchError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            WatchError::Unavailable(_) | WatchError::TooManySubscribers(_) => {
                ErrorCode::ServiceUnavailable
            }
            WatchError::Disabled => ErrorCode::BundleChangeWatchDisabled,
            WatchError::Invalid(_) => ErrorCode::InvalidRequest,
            WatchError::ScopeUninitialized { .. } => ErrorCode::ScopeUninitialized,
            WatchError::ScopeInitializing { .. } => ErrorCode::ScopeInitializing,
            WatchError::Internal(_) => ErrorCode::BundleChangeWatchFailed,
        }
    }

    /// The wire envelope.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            WatchError::Internal(_) => {
                ErrorBody::plain(self.code(), "Failed to subscribe bundle change watch")
            }
            _ => ErrorBody::plain(self.code(), self.to_string()),
        }
    }
}

impl From<Failure> for WatchError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(r) => WatchError::Unavailable(r),
            Failure::ScopeUninitialized { user_id } => WatchError::ScopeUninitialized { user_id },
            Failure::ScopeInitializing { user_id, .. } => WatchError::ScopeInitializing { user_id },
            Failure::Internal(e) => WatchError::Internal(e),
            other => WatchError::Internal(InternalError::new(format!(
                "watch: unexpected outcome {other:?}"
            ))),
        }
    }
}

impl SyncService {
    /// Opens a watch for the actor's user (§9.3): every later event has `bundle_seq >
    /// after_bundle_seq`; if the user's latest bundle is already beyond it, a catch-up event
    /// `{bundle_seq: latest}` is queued at once.
    pub async fn subscribe_bundle_changes(
        &self,
        actor: &Actor,
        after_bundle_seq: i64,
    ) -> Result<Subscription, WatchError> {
        if !self.config.watch.enabled {
            return Err(WatchError::Disabled);
        }
        if after_bundle_seq < 0 {
            return Err(WatchError::Invalid(
                "after_bundle_seq must be >= 0".to_owned(),
            ));
        }
        let _guard = self.lifecycle.begin()?;
        let mut conn = db::connection(&self.pool).await.map_err(Failure::from)?;
        let user_pk = {
            let tx = db::begin(&mut conn, db::Mode::RepeatableReadOnly).await?;
            let history = scope::read_gate(&tx, actor.user_id()).await?;
            tx.commit().await.ctx("end watch scope check")?;
            match history {
                Some(history) => history.user_pk,
                None => {
                    return Err(WatchError::ScopeUninitialized {
                        user_id: actor.user_id().to_owned(),
                    });
                }
            }
        };
        let subscription = self.register(actor.user_id(), user_pk, after_bundle_seq)?;
        let latest: i64 = conn
            .query_one(
                "SELECT next_bundle_seq - 1 FROM sync.user_state WHERE user_pk = $1",
                &[&user_pk],
            )
            .await
            .ctx("read latest bundle_seq")?
            .get(0);
        if latest > after_bundle_seq {
            subscription
                .slot
                .offer(&BundleChangeEvent::catch_up(latest));
        }
        Ok(subscription)
    }

    fn register(
        &self,
        user_id: &str,
        user_pk: i64,
        after_bundle_seq: i64,
    ) -> Result<Subscription, WatchError> {
        let limits = &self.config.watch;
        let mut users = self.watch.lock();
        if limits.max_subscribers > 0 {
            let total: usize = users.values().map(|u| u.slots.len()).sum();
            if total >= limits.max_subscribers {
                return Err(WatchError::TooManySubscribers("process"));
            }
        }
        let entry = users.entry(user_pk).or_insert_with(|| UserSubscribers {
            user_id: user_id.to_owned(),
            slots: Vec::new(),
        });
        if limits.max_subscribers_per_user > 0
            && entry.slots.len() >= limits.max_subscribers_per_user
        {
            return Err(WatchError::TooManySubscribers("user"));
        }
        let slot = Arc::new(Slot {
            id: self.watch.next_id.fetch_add(1, Ordering::Relaxed),
            mailbox: Mutex::new(Mailbox {
                last_seq: after_bundle_seq,
                ..Mailbox::default()
            }),
            ready: Notify::new(),
        });
        entry.slots.push(Arc::clone(&slot));
        Ok(Subscription {
            hub: Arc::clone(&self.watch),
            slot,
            user_pk,
        })
    }

    /// Open watch subscriptions of `user_id` in this process (all sources).
    pub fn watch_subscriber_count(&self, user_id: &str) -> usize {
        self.watch
            .lock()
            .values()
            .filter(|u| u.user_id == user_id)
            .map(|u| u.slots.len())
            .sum()
    }

    /// The state of this process's `LISTEN` connection.
    pub fn watch_listener_state(&self) -> ListenerState {
        self.watch.listener_state()
    }

    /// How many times the listener had to reconnect after losing its connection.
    pub fn watch_listener_reconnects(&self) -> u64 {
        self.watch.reconnects.load(Ordering::Relaxed)
    }

    /// Starts the one `LISTEN` task of this process (§9.2) over a dedicated connection opened
    /// with `pg` and `tls` (not from the pool). It publishes every notification on the
    /// configured channel to the subscribers of its user, reconnects after connection loss
    /// (back-off 100 ms doubling to 2 s, reset after a healthy minute), publishes a catch-up to
    /// every subscribed user after each (re)connect, and ends when the service closes.
    /// With watch disabled the task ends at once.
    pub fn spawn_watch_listener<T>(
        self: &Arc<Self>,
        pg: tokio_postgres::Config,
        tls: T,
    ) -> JoinHandle<()>
    where
        T: MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<tokio_postgres::Socket>>::Future: Send,
    {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            if !service.config.watch.enabled {
                tracing::warn!("bundle change watch is disabled; not listening");
                return;
            }
            service.watch.set_listener(ListenerState::Reconnecting);
            let mut backoff = BACKOFF_START;
            loop {
                let started = tokio::time::Instant::now();
                tokio::select! {
                    () = service.lifecycle.stopped() => break,
                    result = service.listen_once(&pg, tls.clone()) => {
                        if let Err(error) = result {
                            tracing::warn!(%error, "bundle change listener lost its connection");
                        }
                    }
                }
                service.watch.set_listener(ListenerState::Reconnecting);
                service.watch.reconnects.fetch_add(1, Ordering::Relaxed);
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff = BACKOFF_START;
                }
                tokio::select! {
                    () = service.lifecycle.stopped() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            service.watch.set_listener(ListenerState::Stopped);
            service.watch.close_all();
        })
    }

    /// One listening session: connect, `LISTEN`, catch up, then publish until the connection
    /// ends. Returns only with the reason it ended.
    async fn listen_once<T>(&self, pg: &tokio_postgres::Config, tls: T) -> Result<(), InternalError>
    where
        T: MakeTlsConnect<tokio_postgres::Socket> + Send + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<tokio_postgres::Socket>>::Future: Send,
    {
        let (client, mut connection) = pg.connect(tls).await.ctx("connect the listener")?;
        let (sender, mut notifications) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if sender.send(n).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "bundle change listener connection failed");
                        return;
                    }
                }
            }
        });
        let _abort_driver = AbortOnDrop(driver);
        let channel = &self.limits.notify_channel;
        client
            .batch_execute(&format!(
                "LISTEN {}",
                postgres_protocol::escape::escape_identifier(channel)
            ))
            .await
            .ctx("LISTEN")?;
        self.watch.set_listener(ListenerState::Connected);
        self.catch_up_all().await?;
        while let Some(notification) = notifications.recv().await {
            if notification.channel() != channel {
                continue;
            }
            match serde_json::from_str::<BundleChangeNotification>(notification.payload()) {
                Ok(n) if n.user_pk > 0 && n.bundle_seq > 0 => self.watch.publish(
                    n.user_pk,
                    &BundleChangeEvent {
                        bundle_seq: n.bundle_seq,
                        source_id: n.source_id,
                        source_bundle_id: n.source_bundle_id,
                    },
                ),
                _ => tracing::warn!(
                    payload = notification.payload(),
                    "ignoring an invalid bundle change notification"
                ),
            }
        }
        Err(InternalError::new("listener connection closed"))
    }

    /// Publishes `{bundle_seq: latest}` to every user with subscribers.
    async fn catch_up_all(&self) -> Result<(), InternalError> {
        let users = self.watch.subscribed_users();
        if users.is_empty() {
            return Ok(());
        }
        let conn = db::connection(&self.pool).await?;
        let rows = conn
            .query(
                "SELECT user_pk, next_bundle_seq - 1 FROM sync.user_state
                 WHERE user_pk = ANY($1) AND next_bundle_seq > 1",
                &[&users],
            )
            .await
            .ctx("read latest bundle_seq for catch-up")?;
        for row in rows {
            self.watch
                .publish(row.get(0), &BundleChangeEvent::catch_up(row.get(1)));
        }
        Ok(())
    }
}

/// Aborts the connection driver when a listening session ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
