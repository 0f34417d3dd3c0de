//! `GET /sync/watch` (01-wire.md §7.4–§7.8): a Server-Sent Events stream of bundle-change
//! wake-ups for the caller's user.
//!
//! Checks run in the reference's order (actor, the host's policy hook when watch is enabled,
//! `after_bundle_seq`, watch disabled, lifecycle, scope), all answered as JSON before any SSE
//! byte. The stream is written byte for byte: `event: bundle\ndata: {json}\n\n` per event and
//! `: heartbeat\n\n` on a fixed timer that starts with the headers; hyper sends each frame as
//! its own chunk as soon as it is produced. When the client goes away hyper drops the body,
//! which drops the [`oversync_server::Subscription`] and unregisters it; when the service
//! closes the stream ends cleanly.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oversync_protocol::error::ErrorCode;
use oversync_protocol::wire::SSE_HEARTBEAT_FRAME;
use oversync_server::Actor;

use crate::handlers::{AppState, query, start};
use crate::respond::{failure, plain};

/// The host's per-actor watch policy: `false` answers `403 bundle_change_watch_forbidden` and
/// reports `bundle_change_watch: false` in that actor's capabilities.
#[derive(Clone)]
pub struct WatchPolicy(pub Arc<dyn Fn(&Actor) -> bool + Send + Sync>);

impl WatchPolicy {
    /// A policy from a predicate.
    pub fn new(allow: impl Fn(&Actor) -> bool + Send + Sync + 'static) -> Self {
        WatchPolicy(Arc::new(allow))
    }

    /// Whether `actor` may watch.
    pub fn allows(&self, actor: &Actor) -> bool {
        (self.0)(actor)
    }
}

impl fmt::Debug for WatchPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatchPolicy(..)")
    }
}

/// `GET /sync/watch?after_bundle_seq=`.
pub(crate) async fn watch(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let service = &state.service;
    if service.config().watch.enabled && !state.watch_allowed(&actor) {
        return plain(
            ErrorCode::BundleChangeWatchForbidden,
            "Bundle change watch is not enabled for this client",
        );
    }
    let after = match query(&parts).get_i64("after_bundle_seq") {
        Ok(after) => after.unwrap_or(0),
        Err(error) => return plain(ErrorCode::InvalidRequest, error.to_string()),
    };
    if after < 0 {
        return plain(ErrorCode::InvalidRequest, "after_bundle_seq must be >= 0");
    }
    let subscription = match service.subscribe_bundle_changes(&actor, after).await {
        Ok(subscription) => subscription,
        Err(error) => return failure("watch", &error, &error.to_body()),
    };
    let period = service.limits().heartbeat_interval;
    let heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let frames = futures_util::stream::unfold(
        (subscription, heartbeat),
        |(mut subscription, mut heartbeat)| async move {
            let frame = tokio::select! {
                event = subscription.next() => match event?.to_sse_frame() {
                    Ok(frame) => Bytes::from(frame),
                    Err(error) => {
                        tracing::error!(%error, "encoding a watch event failed");
                        return None;
                    }
                },
                _ = heartbeat.tick() => Bytes::from_static(SSE_HEARTBEAT_FRAME),
            };
            Some((Ok::<_, Infallible>(frame), (subscription, heartbeat)))
        },
    );
    let mut response = (StatusCode::OK, Body::from_stream(frames)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
