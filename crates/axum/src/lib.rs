//! The HTTP face of `oversync-server` for axum hosts.
//!
//! [`router`] mounts every `/sync/*` and `/syncx/*` route of the protocol (01-wire.md §1) over
//! a shared [`SyncService`]. The host keeps its own authentication: its middleware inserts an
//! [`AuthenticatedUser`] extension into each request, and this crate pairs it with the
//! `Oversync-Source-ID` header into the service's `Actor`.
//!
//! No axum extractor with a default rejection is used anywhere: bodies, paths and queries are
//! read raw and parsed by `oversync-protocol`, so every malformed request is answered with the
//! protocol's JSON error envelope and code, never with a framework's plain-text 400/415/422.
//! Responses go through the protocol crate's Go-compatible encoder (field order, omission
//! rules, HTML escaping, trailing newline).
//!
//! **Architecture Invariant:** this crate holds no SQL; every decision about sync state is the
//! service's.
//!
//! # Mounting
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::extract::Request;
//! use axum::middleware::{self, Next};
//! use axum::response::{IntoResponse, Response};
//! use oversync_axum::AuthenticatedUser;
//! use oversync_server::SyncService;
//!
//! /// Your authentication: whatever proves who the caller is (here a header, for brevity).
//! async fn authenticate(mut request: Request, next: Next) -> Response {
//!     let user = request
//!         .headers()
//!         .get("x-user")
//!         .and_then(|v| v.to_str().ok())
//!         .map(str::to_owned);
//!     match user {
//!         Some(user) => {
//!             request.extensions_mut().insert(AuthenticatedUser(user));
//!             next.run(request).await
//!         }
//!         None if request.uri().path().starts_with("/syncx/") => next.run(request).await,
//!         None => axum::http::StatusCode::UNAUTHORIZED.into_response(),
//!     }
//! }
//!
//! # async fn demo(service: Arc<SyncService>) -> std::io::Result<()> {
//! let app = oversync_axum::router(service).layer(middleware::from_fn(authenticate));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

#![allow(
    clippy::result_large_err,
    reason = "the error side is the HTTP response itself, built once per failed request"
)]

mod actor;
mod handlers;
mod openapi;
mod respond;
mod snapshot;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};
use oversync_server::SyncService;

pub use actor::AuthenticatedUser;
pub use openapi::openapi;
pub use watch::WatchPolicy;

/// Adapter settings a host may change. The defaults are the reference's behaviour.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Largest request body accepted, in bytes; `None` (the default, as in the reference) means
    /// no limit. Larger bodies are answered `413 request_body_too_large`.
    pub max_body_bytes: Option<usize>,
    /// Per-actor watch policy; `None` (the default) lets every actor watch when watch is
    /// enabled on the service.
    pub watch_policy: Option<WatchPolicy>,
}

/// The routes of the protocol over `service`, with default [`Options`].
///
/// Mount it into the host's router behind the host's authentication middleware, which must
/// insert an [`AuthenticatedUser`] into every `/sync/*` request it lets through. `/syncx/*`
/// needs no user.
pub fn router(service: Arc<SyncService>) -> Router {
    router_with(service, Options::default())
}

/// [`router`] with explicit [`Options`].
pub fn router_with(service: Arc<SyncService>, options: Options) -> Router {
    let state = handlers::AppState::new(service, options);
    Router::new()
        .route("/sync/connect", post(handlers::connect))
        .route("/sync/push-sessions", post(handlers::create_push_session))
        .route(
            "/sync/push-sessions/{push_id}/chunks",
            post(handlers::upload_push_chunk),
        )
        .route(
            "/sync/push-sessions/{push_id}/commit",
            post(handlers::commit_push_session),
        )
        .route(
            "/sync/push-sessions/{push_id}",
            delete(handlers::delete_push_session),
        )
        .route(
            "/sync/committed-bundles/{bundle_seq}/rows",
            get(handlers::committed_bundle_rows),
        )
        .route("/sync/pull", get(handlers::pull))
        .route("/sync/watch", get(watch::watch))
        .route("/sync/snapshot-sessions", post(snapshot::create))
        .route(
            "/sync/snapshot-sessions/{snapshot_id}",
            get(snapshot::chunk).delete(snapshot::delete),
        )
        .route("/sync/capabilities", get(handlers::capabilities))
        .route("/syncx/health", get(handlers::health))
        .route("/syncx/status", get(handlers::status))
        .with_state(state)
}
