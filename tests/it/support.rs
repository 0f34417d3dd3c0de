//! A real example server for tests: a fresh PostgreSQL database from the testkit, the example
//! app built over it, served over HTTP on 127.0.0.1:0, and a small client that speaks the
//! protocol's headers.

use std::net::SocketAddr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use oversync_example::config::ExampleConfig;
use oversync_server::{ServiceConfig, SyncService};
use oversync_testkit::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

/// The JWT secret test servers use.
pub(crate) const SECRET: &str = "test-secret";

/// One example server on a fresh database, stopped when dropped.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) http: reqwest::Client,
    pub(crate) service: Arc<SyncService>,
    pub(crate) pool: Pool,
    task: JoinHandle<()>,
    _database: TestDatabase,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response read whole: status, headers of interest and the body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` code of a JSON error envelope.
    pub(crate) fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts an error envelope with `status` and `code`, sent as `application/json` and ending
    /// in one newline as Go's encoder writes it.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.error_code().as_str()),
            (status, code),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        assert!(
            self.body.ends_with(b"}\n"),
            "Go encoders end bodies with one newline"
        );
        assert!(self.json()["message"].is_string());
    }
}

impl TestServer {
    /// Starts a server on a fresh database.
    pub(crate) async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server on a fresh database with the example's service configuration changed
    /// by `configure` (e.g. a small retention window).
    pub(crate) async fn start_with(configure: impl FnOnce(&mut ServiceConfig)) -> TestServer {
        let database = oversync_testkit::test_database().await.unwrap();
        let manager = Manager::from_config(
            database.config(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(16).build().unwrap();
        let config = ExampleConfig {
            jwt_secret: SECRET.to_owned(),
            ..ExampleConfig::default()
        };
        let mut service_config = oversync_example::service_config(&config);
        configure(&mut service_config);
        let example = oversync_example::build_with_service_config(
            pool.clone(),
            &config,
            service_config,
            None,
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = example.router;
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestServer {
            addr,
            http: reqwest::Client::new(),
            service: example.service,
            pool,
            task,
            _database: database,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A bearer token for `user` minted by the server's own sign-in route.
    pub(crate) async fn token(&self, user: &str) -> String {
        let reply = self
            .send(
                Method::POST,
                "/dummy-signin",
                &[],
                Some(format!(r#"{{"user":"{user}","password":"x"}}"#).into_bytes()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    /// Sends a request with explicit headers and an optional raw body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.bytes().await.unwrap().to_vec();
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// A device of `user` talking to this server.
    pub(crate) async fn device(&self, user: &str, source: &str) -> Device<'_> {
        Device {
            server: self,
            token: self.token(user).await,
            source: source.to_owned(),
        }
    }
}

/// One authenticated source of one user.
pub(crate) struct Device<'a> {
    pub(crate) server: &'a TestServer,
    pub(crate) token: String,
    pub(crate) source: String,
}

impl Device<'_> {
    /// Sends an authenticated request with this device's source header.
    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let headers = [
            ("Authorization", auth.as_str()),
            ("Oversync-Source-ID", self.source.as_str()),
        ];
        self.server
            .send(method, path, &headers, body.map(|b| b.as_bytes().to_vec()))
            .await
    }

    /// Connects without pending rows (initializes an empty scope) and asserts success.
    pub(crate) async fn connect_empty(&self) {
        let reply = self
            .call(
                Method::POST,
                "/sync/connect",
                Some(r#"{"has_local_pending_rows":false}"#),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }

    /// Pushes `rows` (a JSON array text) as bundle `source_bundle_id` and returns the commit
    /// response.
    pub(crate) async fn push(&self, source_bundle_id: i64, rows: &str) -> Reply {
        let count = serde_json::from_str::<Value>(rows)
            .unwrap()
            .as_array()
            .unwrap()
            .len();
        let create = self
            .call(
                Method::POST,
                "/sync/push-sessions",
                Some(&format!(
                    r#"{{"source_bundle_id":{source_bundle_id},"planned_row_count":{count}}}"#
                )),
            )
            .await;
        assert_eq!(create.status, StatusCode::OK, "{create:?}");
        let push_id = create.json()["push_id"].as_str().unwrap().to_owned();
        let chunk = self
            .call(
                Method::POST,
                &format!("/sync/push-sessions/{push_id}/chunks"),
                Some(&format!(r#"{{"start_row_ordinal":0,"rows":{rows}}}"#)),
            )
            .await;
        assert_eq!(chunk.status, StatusCode::OK, "{chunk:?}");
        self.call(
            Method::POST,
            &format!("/sync/push-sessions/{push_id}/commit"),
            None,
        )
        .await
    }
}

/// An INSERT row for `business.users`.
pub(crate) fn user_insert(id: &str, name: &str) -> String {
    format!(
        r#"{{"schema":"business","table":"users","key":{{"id":"{id}"}},"op":"INSERT","base_row_version":0,"payload":{{"id":"{id}","name":"{name}","email":"{name}@example.com","created_at":"2026-03-24T18:42:11Z","updated_at":"2026-03-24T18:42:11Z"}}}}"#
    )
}
