//! Bundle-change watch (§9): the LISTEN listener, the fan-out hub, and two services sharing
//! one database (scale-out).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use oversync_protocol::wire::BundleChangeEvent;
use oversync_server::{
    Actor, ListenerState, ServiceConfig, Subscription, SyncService, WatchConfig, WatchError,
};
use oversync_testkit::TestDatabase;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

fn watch_config() -> ServiceConfig {
    ServiceConfig {
        registered_tables: business_tables(),
        watch: WatchConfig {
            enabled: true,
            max_subscribers_per_user: 3,
            ..WatchConfig::default()
        },
        ..ServiceConfig::default()
    }
}

/// A bootstrapped watch-enabled service over `db` with its listener running and connected.
async fn listening(db: &TestDatabase) -> (Arc<SyncService>, JoinHandle<()>) {
    let service = Arc::new(SyncService::new(pool(db), watch_config()).unwrap());
    service.bootstrap().await.unwrap();
    let listener = service.spawn_watch_listener(db.config(), NoTls);
    wait_until(|| service.watch_listener_state() == ListenerState::Connected).await;
    (service, listener)
}

async fn wait_until(mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_within_1s(sub: &mut Subscription) -> BundleChangeEvent {
    tokio::time::timeout(Duration::from_secs(1), sub.next())
        .await
        .expect("an event within 1 s")
        .expect("subscription open")
}

async fn write(service: &SyncService, user: &str, id: &str) -> i64 {
    let id = id.to_owned();
    service
        .exec_write(user, "server:w", move |tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO business.docs (id) VALUES ($1)", &[&id])
                    .await
            })
        })
        .await
        .unwrap()
        .bundle
        .bundle_seq
}

async fn init(service: &SyncService, a: &Actor) {
    service
        .connect(
            a,
            Some(&oversync_protocol::wire::ConnectRequest {
                has_local_pending_rows: false,
            }),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_commit_wakes_a_subscriber_of_the_same_user_and_never_another_user() {
    let db = business_db().await;
    let (service, listener) = listening(&db).await;
    let alice = actor("alice", "dev-a");
    let bob = actor("bob", "dev-b");
    init(&service, &alice).await;
    init(&service, &bob).await;
    let mut alice_sub = service.subscribe_bundle_changes(&alice, 0).await.unwrap();
    let mut bob_sub = service.subscribe_bundle_changes(&bob, 0).await.unwrap();
    let seq = write(&service, "alice", "d1").await;
    let event = next_within_1s(&mut alice_sub).await;
    assert_eq!(
        event,
        BundleChangeEvent {
            bundle_seq: seq,
            source_id: "server:w".to_owned(),
            source_bundle_id: 1
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bob_sub.next())
            .await
            .is_err(),
        "bob must not be woken by alice's commit"
    );
    service.close(Duration::from_secs(1)).await.unwrap();
    listener.await.unwrap();
}

#[tokio::test]
async fn subscribing_behind_the_latest_bundle_gets_a_catch_up_event_first() {
    let db = business_db().await;
    let service = Arc::new(SyncService::new(pool(&db), watch_config()).unwrap());
    service.bootstrap().await.unwrap();
    let a = actor("alice", "dev-a");
    init(&service, &a).await;
    write(&service, "alice", "d1").await;
    let latest = write(&service, "alice", "d2").await;
    let mut sub = service.subscribe_bundle_changes(&a, 0).await.unwrap();
    assert_eq!(
        next_within_1s(&mut sub).await,
        BundleChangeEvent::catch_up(latest)
    );
    let mut current = service.subscribe_bundle_changes(&a, latest).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), current.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_slow_subscriber_sees_only_strictly_increasing_newest_events() {
    let db = business_db().await;
    let (service, listener) = listening(&db).await;
    let a = actor("alice", "dev-a");
    init(&service, &a).await;
    let mut sub = service.subscribe_bundle_changes(&a, 0).await.unwrap();
    let mut last = 0;
    for n in 0..5 {
        last = write(&service, "alice", &format!("d{n}")).await;
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        seen.push(next_within_1s(&mut sub).await.bundle_seq);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen.len() < 5 || seen == vec![1, 2, 3, 4, 5], "{seen:?}");
    service.close(Duration::from_secs(1)).await.unwrap();
    listener.await.unwrap();
}

#[tokio::test]
async fn subscriber_count_returns_to_zero_when_the_subscription_is_dropped() {
    let db = business_db().await;
    let service = Arc::new(SyncService::new(pool(&db), watch_config()).unwrap());
    service.bootstrap().await.unwrap();
    let a = actor("alice", "dev-a");
    init(&service, &a).await;
    let first = service.subscribe_bundle_changes(&a, 0).await.unwrap();
    let second = service
        .subscribe_bundle_changes(&actor("alice", "dev-b"), 0)
        .await
        .unwrap();
    assert_eq!(service.watch_subscriber_count("alice"), 2);
    drop(first);
    drop(second);
    assert_eq!(service.watch_subscriber_count("alice"), 0);
}

#[tokio::test]
async fn subscribers_beyond_the_per_user_limit_are_refused() {
    let db = business_db().await;
    let service = Arc::new(SyncService::new(pool(&db), watch_config()).unwrap());
    service.bootstrap().await.unwrap();
    let a = actor("alice", "dev-a");
    init(&service, &a).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(service.subscribe_bundle_changes(&a, 0).await.unwrap());
    }
    let err = service.subscribe_bundle_changes(&a, 0).await.unwrap_err();
    assert!(
        matches!(err, WatchError::TooManySubscribers("user")),
        "{err:?}"
    );
}

#[tokio::test]
async fn watch_is_refused_when_disabled_or_the_scope_is_uninitialized() {
    let w = World::new().await;
    let err = w
        .service
        .subscribe_bundle_changes(&actor("alice", "d"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, WatchError::Disabled));
    let db = business_db().await;
    let service = SyncService::new(pool(&db), watch_config()).unwrap();
    service.bootstrap().await.unwrap();
    let err = service
        .subscribe_bundle_changes(&actor("nobody", "d"), 0)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        oversync_protocol::error::ErrorCode::ScopeUninitialized
    );
}

#[tokio::test]
async fn a_killed_listen_connection_is_re_established_and_no_bundle_is_missed() {
    let db = business_db().await;
    let (service, listener) = listening(&db).await;
    let a = actor("alice", "dev-a");
    init(&service, &a).await;
    let mut sub = service.subscribe_bundle_changes(&a, 0).await.unwrap();
    let first = write(&service, "alice", "d1").await;
    assert_eq!(next_within_1s(&mut sub).await.bundle_seq, first);
    let killer = db.connect().await.unwrap();
    let killed: i64 = killer
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // Commits while the listener is down are not lost: a reconnect catches subscribers up,
    // and a client reconnecting with its checkpoint gets a catch-up event.
    let missed = write(&service, "alice", "d2").await;
    wait_until(|| service.watch_listener_reconnects() >= 1).await;
    wait_until(|| service.watch_listener_state() == ListenerState::Connected).await;
    assert_eq!(next_within_1s(&mut sub).await.bundle_seq, missed);
    drop(sub);
    let mut resumed = service.subscribe_bundle_changes(&a, first).await.unwrap();
    assert_eq!(next_within_1s(&mut resumed).await.bundle_seq, missed);
    let live = write(&service, "alice", "d3").await;
    assert_eq!(next_within_1s(&mut resumed).await.bundle_seq, live);
    service.close(Duration::from_secs(1)).await.unwrap();
    listener.await.unwrap();
}

#[tokio::test]
async fn two_services_on_one_database_serialize_pushes_and_share_wake_ups() {
    let db = business_db().await;
    let (first, first_listener) = listening(&db).await;
    let (second, second_listener) = listening(&db).await;
    let a = actor("alice", "dev-a");
    init(&first, &a).await;
    let mut sub = second.subscribe_bundle_changes(&a, 0).await.unwrap();
    let seq = write(&first, "alice", "wake").await;
    assert_eq!(next_within_1s(&mut sub).await.bundle_seq, seq);

    let mut tasks = Vec::new();
    for (i, service) in [Arc::clone(&first), Arc::clone(&second)]
        .into_iter()
        .enumerate()
    {
        let a = actor("alice", &format!("dev-{i}"));
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 1..=10 {
                let push = service
                    .create_push_session(
                        &a,
                        &oversync_protocol::wire::PushSessionCreateRequest {
                            source_bundle_id: n,
                            planned_row_count: 1,
                            initialization_id: String::new(),
                        },
                    )
                    .await
                    .unwrap();
                service
                    .upload_push_chunk(
                        &a,
                        &push.push_id,
                        &oversync_protocol::wire::PushSessionChunkRequest {
                            start_row_ordinal: 0,
                            rows: vec![insert("docs", &format!("p{i}-{n}"), "{}")],
                        },
                    )
                    .await
                    .unwrap();
                let committed = service
                    .commit_push_session(&a, &push.push_id)
                    .await
                    .unwrap();
                seqs.push(committed.bundle_seq);
            }
            seqs
        }));
    }
    let mut all: Vec<i64> = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (seq + 1..=seq + 20).collect::<Vec<i64>>());
    for service in [&first, &second] {
        service.close(Duration::from_secs(1)).await.unwrap();
    }
    first_listener.await.unwrap();
    second_listener.await.unwrap();
}
