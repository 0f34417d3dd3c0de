//! The example host: go-oversync's example server rebuilt on axum, so that the reference's
//! clients and harnesses run against it unchanged (05-example-server.md).
//!
//! [`build`] assembles everything a test or the binary needs — business schema, sync service,
//! routes, auth, CORS — over a pool; `main.rs` adds the process concerns (environment,
//! throwaway PostgreSQL, listening, signals).

pub mod auth;
pub mod config;
pub mod process;
pub mod routes;
pub mod schema;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use deadpool_postgres::Pool;
use oversync_server::{ServiceConfig, SyncService};

use crate::auth::JwtKeys;
use crate::config::ExampleConfig;
use crate::routes::ExampleState;

/// The app name reference harnesses check in `/syncx/status`.
pub const APP_NAME: &str = "nethttp-server-example";

/// A built example: the routes to serve and the service behind them (for server-originated
/// writes in tests, and for closing on shutdown).
#[derive(Debug)]
pub struct Example {
    /// All routes, with auth, CORS and the 404 fallback.
    pub router: Router,
    /// The sync service.
    pub service: Arc<SyncService>,
}

/// Why the example could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The business schema could not be created.
    #[error("create business schema: {0}")]
    Schema(String),
    /// The service configuration is invalid.
    #[error("sync service configuration: {0}")]
    Config(#[from] oversync_server::ConfigError),
    /// Bootstrap refused the schema or failed.
    #[error("sync bootstrap: {0}")]
    Bootstrap(#[from] oversync_server::BootstrapError),
}

/// The service configuration of the example (05-example-server.md §1.3).
pub fn service_config(config: &ExampleConfig) -> ServiceConfig {
    ServiceConfig {
        app_name: APP_NAME.to_owned(),
        schema_version: 1,
        registered_tables: schema::registered_tables(),
        log_stage_timings: config.log_stage_timings,
        // 05-example-server.md §1.3: watch on, default channel and 25 s heartbeat.
        watch: oversync_server::WatchConfig {
            enabled: true,
            ..oversync_server::WatchConfig::default()
        },
        ..ServiceConfig::default()
    }
}

/// Creates the business schema (idempotently), bootstraps the sync service and assembles the
/// routes. `metrics` renders `/metrics` when given.
pub async fn build(
    pool: Pool,
    config: &ExampleConfig,
    metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
) -> Result<Example, BuildError> {
    build_with_service_config(pool, config, service_config(config), metrics).await
}

/// [`build`] with an explicit service configuration (e.g. a test's small retention window);
/// it should start from [`service_config`] so that the registered tables and watch settings
/// stay the example's.
pub async fn build_with_service_config(
    pool: Pool,
    config: &ExampleConfig,
    service: ServiceConfig,
    metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
) -> Result<Example, BuildError> {
    {
        let conn = pool
            .get()
            .await
            .map_err(|e| BuildError::Schema(e.to_string()))?;
        conn.batch_execute(&format!("BEGIN; {}; COMMIT;", schema::BUSINESS_DDL))
            .await
            .map_err(|e| BuildError::Schema(e.to_string()))?;
    }
    let service = Arc::new(SyncService::new(pool.clone(), service)?);
    service.bootstrap().await?;
    let keys = JwtKeys::new(&config.jwt_secret);
    let state = ExampleState {
        pool,
        service: Arc::clone(&service),
        keys: keys.clone(),
    };
    let mut example_routes = Router::new()
        .route("/dummy-signin", post(routes::dummy_signin))
        .route("/test/reset", post(routes::test_reset))
        .route("/test/retention-floor", post(routes::test_retention_floor))
        .route(
            "/test/watch-subscribers",
            get(routes::test_watch_subscribers),
        )
        .with_state(state);
    let openapi = oversync_axum::openapi()
        .to_json()
        .unwrap_or_else(|e| format!(r#"{{"error":"openapi_failed","message":"{e}"}}"#));
    example_routes = example_routes.route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], openapi) }),
    );
    if let Some(render) = metrics {
        example_routes = example_routes.route("/metrics", get(move || async move { render() }));
    }
    let router = oversync_axum::router(Arc::clone(&service))
        .merge(example_routes)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(keys, auth::require_bearer))
        .layer(middleware::from_fn(count_requests))
        .layer(middleware::from_fn(cors));
    Ok(Example { router, service })
}

/// Go's mux answer for an unknown path.
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// CORS on every response; every `OPTIONS` request, on any path, is `204` without auth.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        (StatusCode::NO_CONTENT, Body::empty()).into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Oversync-Source-ID"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Counts requests by method and status for `/metrics`.
async fn count_requests(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    metrics::counter!(
        "oversync_http_requests_total",
        "method" => method,
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    response
}
