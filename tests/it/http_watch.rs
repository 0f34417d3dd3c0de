//! `GET /sync/watch` over real HTTP (01-wire.md §7.4–§7.8): SSE headers and byte-exact frames,
//! wake-ups per user, heartbeats, disconnect cleanup, the host policy hook and setup errors.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use oversync_server::{ServiceConfig, SyncService, WatchConfig};
use oversync_testkit::TestDatabase;
use reqwest::{Method, StatusCode};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

/// A server over a fresh database with the example schema; the user comes from `X-Test-User`.
struct WatchServer {
    addr: std::net::SocketAddr,
    service: Arc<SyncService>,
    tasks: Vec<JoinHandle<()>>,
    _database: TestDatabase,
}

impl Drop for WatchServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn test_user(mut request: Request, next: Next) -> Response {
    if let Some(user) = request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        request
            .extensions_mut()
            .insert(oversync_axum::AuthenticatedUser(user));
    }
    next.run(request).await
}

fn pool(database: &TestDatabase) -> Pool {
    let manager = Manager::from_config(
        database.config(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(8).build().unwrap()
}

impl WatchServer {
    /// The example's service configuration with `watch`, our adapter with `options`.
    async fn start(watch: WatchConfig, options: oversync_axum::Options) -> WatchServer {
        let database = oversync_testkit::test_database().await.unwrap();
        let pool = pool(&database);
        pool.get()
            .await
            .unwrap()
            .batch_execute(oversync_example::schema::BUSINESS_DDL)
            .await
            .unwrap();
        let config = ServiceConfig {
            watch,
            ..oversync_example::service_config(&oversync_example::config::ExampleConfig::default())
        };
        let service = Arc::new(SyncService::new(pool, config).unwrap());
        service.bootstrap().await.unwrap();
        let listener_task = service.spawn_watch_listener(database.config(), NoTls);
        let router = oversync_axum::router_with(Arc::clone(&service), options)
            .layer(middleware::from_fn(test_user));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        if service.config().watch.enabled {
            wait_until(|| {
                service.watch_listener_state() == oversync_server::ListenerState::Connected
            })
            .await;
        }
        WatchServer {
            addr,
            service,
            tasks: vec![listener_task, server],
            _database: database,
        }
    }

    async fn enabled() -> WatchServer {
        WatchServer::start(
            WatchConfig {
                enabled: true,
                heartbeat_interval: Duration::from_millis(100),
                ..WatchConfig::default()
            },
            oversync_axum::Options::default(),
        )
        .await
    }

    async fn get(&self, user: &str, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .header("X-Test-User", user)
            .header("Oversync-Source-ID", "dev-1")
            .send()
            .await
            .unwrap()
    }

    async fn connect(&self, user: &str) {
        let reply = reqwest::Client::new()
            .request(Method::POST, format!("http://{}/sync/connect", self.addr))
            .header("X-Test-User", user)
            .header("Oversync-Source-ID", "dev-1")
            .body(r#"{"has_local_pending_rows":false}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
    }

    /// A commit in `user`'s scope by writer `server:a`; returns its bundle_seq.
    async fn commit(&self, user: &str, id: &str) -> i64 {
        let id = id.to_owned();
        self.service
            .exec_write(user, "server:a", move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO business.users (id, name, email) VALUES ($1::text::uuid, 'n', 'e')",
                        &[&id],
                    )
                    .await
                })
            })
            .await
            .unwrap()
            .bundle
            .bundle_seq
    }
}

async fn wait_until(mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the stream until `expected` appears in it, within `within`.
async fn read_until(
    response: &mut reqwest::Response,
    expected: &[u8],
    within: Duration,
) -> Vec<u8> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(within, async {
        while !seen.windows(expected.len()).any(|w| w == expected) {
            let chunk = response.chunk().await.unwrap().expect("stream open");
            seen.extend_from_slice(&chunk);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{:?} not in {:?}",
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(&seen)
    );
    seen
}

const U1: &str = "550e8400-e29b-41d4-a716-446655440001";
const U2: &str = "550e8400-e29b-41d4-a716-446655440002";

#[tokio::test]
async fn watch_answers_sse_headers_and_a_byte_exact_bundle_frame_within_1s() {
    let server = WatchServer::enabled().await;
    server.connect("alice").await;
    let mut stream = server.get("alice", "/sync/watch?after_bundle_seq=0").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let headers = stream.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-length").is_none());
    let seq = server.commit("alice", U1).await;
    let frame = format!(
        "event: bundle\ndata: {{\"bundle_seq\":{seq},\"source_id\":\"server:a\",\"source_bundle_id\":1}}\n\n"
    );
    let seen = read_until(&mut stream, frame.as_bytes(), Duration::from_secs(1)).await;
    let text = String::from_utf8(seen).unwrap();
    assert!(
        text.split_inclusive("\n\n")
            .all(|f| f == ": heartbeat\n\n" || f.starts_with("event: bundle\ndata: {")),
        "{text:?}"
    );
}

#[tokio::test]
async fn heartbeats_arrive_on_the_configured_interval() {
    let server = WatchServer::enabled().await;
    server.connect("alice").await;
    let mut stream = server.get("alice", "/sync/watch").await;
    let seen = read_until(
        &mut stream,
        b": heartbeat\n\n: heartbeat\n\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(seen.starts_with(b": heartbeat\n\n"), "{seen:?}");
}

#[tokio::test]
async fn reconnecting_with_a_checkpoint_gets_a_catch_up_event_first() {
    let server = WatchServer::enabled().await;
    server.connect("alice").await;
    server.commit("alice", U1).await;
    let latest = server.commit("alice", U2).await;
    let mut stream = server.get("alice", "/sync/watch?after_bundle_seq=1").await;
    let frame = format!("event: bundle\ndata: {{\"bundle_seq\":{latest}}}\n\n");
    let seen = read_until(&mut stream, frame.as_bytes(), Duration::from_secs(1)).await;
    assert!(seen.starts_with(frame.as_bytes()));
}

#[tokio::test]
async fn a_commit_of_another_user_never_reaches_the_stream() {
    let server = WatchServer::start(
        WatchConfig {
            enabled: true,
            ..WatchConfig::default()
        },
        oversync_axum::Options::default(),
    )
    .await;
    server.connect("alice").await;
    server.connect("bob").await;
    let mut bob = server.get("bob", "/sync/watch").await;
    server.commit("alice", U1).await;
    let chunk = tokio::time::timeout(Duration::from_millis(400), bob.chunk()).await;
    assert!(chunk.is_err(), "bob received {chunk:?}");
}

#[tokio::test]
async fn subscriber_count_returns_to_zero_after_the_client_disconnects() {
    let server = WatchServer::enabled().await;
    server.connect("alice").await;
    let stream = server.get("alice", "/sync/watch").await;
    assert_eq!(stream.status(), StatusCode::OK);
    wait_until(|| server.service.watch_subscriber_count("alice") == 1).await;
    drop(stream);
    wait_until(|| server.service.watch_subscriber_count("alice") == 0).await;
}

#[tokio::test]
async fn example_watch_subscribers_route_reports_open_streams() {
    let server = crate::support::TestServer::start().await;
    let device = server.device("alice", "dev-1").await;
    device.connect_empty().await;
    let count = || async {
        server
            .send(
                Method::GET,
                "/test/watch-subscribers?user_id=%20alice%20",
                &[],
                None,
            )
            .await
            .json()
    };
    assert_eq!(
        count().await,
        serde_json::json!({"user_id":"alice","subscriber_count":0,"process_local_only":true})
    );
    let auth = format!("Bearer {}", device.token);
    let stream = server
        .http
        .get(server.url("/sync/watch"))
        .header("Authorization", auth)
        .header("Oversync-Source-ID", "dev-1")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(count().await["subscriber_count"], 1);
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count().await["subscriber_count"] != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing = server
        .send(Method::GET, "/test/watch-subscribers", &[], None)
        .await;
    missing.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_denying_policy_answers_403_and_hides_the_capability() {
    let server = WatchServer::start(
        WatchConfig {
            enabled: true,
            ..WatchConfig::default()
        },
        oversync_axum::Options {
            watch_policy: Some(oversync_axum::WatchPolicy::new(|actor| {
                actor.user_id() != "mallory"
            })),
            ..oversync_axum::Options::default()
        },
    )
    .await;
    // The policy runs before parameter parsing.
    let reply = server
        .get("mallory", "/sync/watch?after_bundle_seq=x")
        .await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "bundle_change_watch_forbidden");
    assert_eq!(
        body["message"],
        "Bundle change watch is not enabled for this client"
    );
    let caps: serde_json::Value = server
        .get("mallory", "/sync/capabilities")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(caps["features"]["bundle_change_watch"], false);
    let caps: serde_json::Value = server
        .get("alice", "/sync/capabilities")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(caps["features"]["bundle_change_watch"], true);
}

#[tokio::test]
async fn setup_errors_follow_the_reference_order() {
    let disabled =
        WatchServer::start(WatchConfig::default(), oversync_axum::Options::default()).await;
    for (query, status, code) in [
        ("?after_bundle_seq=x", 400, "invalid_request"),
        ("?after_bundle_seq=-1", 400, "invalid_request"),
        ("", 503, "bundle_change_watch_disabled"),
    ] {
        let reply = disabled.get("alice", &format!("/sync/watch{query}")).await;
        assert_eq!(reply.status().as_u16(), status, "{query}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["error"], code, "{query}");
    }
    let enabled = WatchServer::enabled().await;
    let reply = enabled.get("nobody", "/sync/watch").await;
    assert_eq!(reply.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "scope_uninitialized");
}

#[tokio::test]
async fn closing_the_service_ends_open_streams_cleanly() {
    let server = WatchServer::enabled().await;
    server.connect("alice").await;
    let mut stream = server.get("alice", "/sync/watch").await;
    wait_until(|| server.service.watch_subscriber_count("alice") == 1).await;
    server.service.close(Duration::from_secs(1)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok());
}
