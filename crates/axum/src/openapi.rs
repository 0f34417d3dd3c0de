//! The OpenAPI description of the routes, generated from the protocol crate's wire types.
//!
//! The reference ships a hand-written OpenAPI file that disagrees with its own code in places
//! (01-wire.md §12); ours is derived from the types the server actually encodes, so it cannot
//! drift from them. The functions below are documentation anchors for `utoipa::path` — one per
//! route, listing every status the route can answer — and are never called; the handlers live
//! in `handlers.rs`.

#![allow(
    dead_code,
    reason = "utoipa::path needs a function to hang each route's documentation on"
)]

use oversync_protocol::error::{ErrorResponse, PushConflictResponse, SourceRetiredResponse};
use oversync_protocol::wire::{
    BundleChangeEvent, CapabilitiesResponse, CommittedBundleRowsResponse, ConnectRequest,
    ConnectResponse, PullResponse, PushSessionChunkRequest, PushSessionChunkResponse,
    PushSessionCommitResponse, PushSessionCreateRequest, PushSessionCreateResponse,
    SnapshotChunkResponse, SnapshotSession, SnapshotSessionCreateRequest, StatusResponse,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The OpenAPI 3.1 document of every `/sync/*` and `/syncx/*` route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "oversync",
        description = "Two-way sync between SQLite clients and PostgreSQL (go-oversync protocol v1). \
            `/sync/*` routes need the host's authentication and an `Oversync-Source-ID` header.",
    ),
    paths(
        connect, create_push_session, upload_push_chunk, commit_push_session,
        delete_push_session, committed_bundle_rows, pull, watch, create_snapshot_session,
        snapshot_chunk, delete_snapshot_session, capabilities, health, status
    ),
    components(schemas(ErrorResponse, PushConflictResponse, SourceRetiredResponse)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(post, path = "/sync/connect", tag = "lifecycle",
    params(("Oversync-Source-ID" = String, Header, description = "the calling device/source")),
    request_body = ConnectRequest,
    responses(
        (status = 200, body = ConnectResponse),
        (status = 400, description = "invalid_request", body = ErrorResponse),
        (status = 401, description = "authentication_failed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse),
        (status = 500, description = "connect_failed", body = ErrorResponse),
    ))]
fn connect() {}

#[utoipa::path(post, path = "/sync/push-sessions", tag = "push",
    params(("Oversync-Source-ID" = String, Header)),
    request_body = PushSessionCreateRequest,
    responses(
        (status = 200, description = "staging or already_committed", body = PushSessionCreateResponse),
        (status = 400, description = "invalid_request, push_session_invalid", body = ErrorResponse),
        (status = 409, description = "scope_uninitialized, initialization_stale, history_pruned, source_sequence_out_of_order, source_retired (structured)", body = SourceRetiredResponse),
        (status = 410, description = "initialization_expired", body = ErrorResponse),
        (status = 500, description = "push_session_create_failed", body = ErrorResponse),
    ))]
fn create_push_session() {}

#[utoipa::path(post, path = "/sync/push-sessions/{push_id}/chunks", tag = "push",
    params(("push_id" = String, Path), ("Oversync-Source-ID" = String, Header)),
    request_body = PushSessionChunkRequest,
    responses(
        (status = 200, body = PushSessionChunkResponse),
        (status = 400, description = "invalid_request, push_chunk_invalid", body = ErrorResponse),
        (status = 403, description = "push_session_forbidden", body = ErrorResponse),
        (status = 404, description = "push_session_not_found", body = ErrorResponse),
        (status = 409, description = "push_chunk_out_of_order, initialization_stale", body = ErrorResponse),
        (status = 410, description = "push_session_expired, initialization_expired", body = ErrorResponse),
        (status = 500, description = "push_chunk_failed", body = ErrorResponse),
    ))]
fn upload_push_chunk() {}

#[utoipa::path(post, path = "/sync/push-sessions/{push_id}/commit", tag = "push",
    params(("push_id" = String, Path), ("Oversync-Source-ID" = String, Header)),
    responses(
        (status = 200, body = PushSessionCommitResponse),
        (status = 400, description = "push_commit_invalid", body = ErrorResponse),
        (status = 403, description = "push_session_forbidden", body = ErrorResponse),
        (status = 404, description = "push_session_not_found", body = ErrorResponse),
        (status = 409, description = "push_conflict (structured), source_retired (structured), source_sequence_changed, initialization_stale", body = PushConflictResponse),
        (status = 410, description = "push_session_expired, initialization_expired", body = ErrorResponse),
        (status = 500, description = "push_session_commit_failed", body = ErrorResponse),
    ))]
fn commit_push_session() {}

#[utoipa::path(delete, path = "/sync/push-sessions/{push_id}", tag = "push",
    params(("push_id" = String, Path), ("Oversync-Source-ID" = String, Header)),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "push_session_forbidden", body = ErrorResponse),
        (status = 404, description = "push_session_not_found", body = ErrorResponse),
        (status = 410, description = "push_session_expired", body = ErrorResponse),
        (status = 500, description = "push_session_delete_failed", body = ErrorResponse),
    ))]
fn delete_push_session() {}

#[utoipa::path(get, path = "/sync/committed-bundles/{bundle_seq}/rows", tag = "push",
    params(
        ("bundle_seq" = i64, Path),
        ("after_row_ordinal" = Option<i64>, Query, description = "0-based; omit on the first page"),
        ("max_rows" = Option<i64>, Query),
        ("Oversync-Source-ID" = String, Header),
    ),
    responses(
        (status = 200, body = CommittedBundleRowsResponse),
        (status = 400, description = "committed_bundle_chunk_invalid", body = ErrorResponse),
        (status = 404, description = "committed_bundle_not_found", body = ErrorResponse),
        (status = 409, description = "history_pruned", body = ErrorResponse),
        (status = 500, description = "committed_bundle_rows_failed", body = ErrorResponse),
    ))]
fn committed_bundle_rows() {}

#[utoipa::path(get, path = "/sync/pull", tag = "pull",
    params(
        ("after_bundle_seq" = Option<i64>, Query),
        ("max_bundles" = Option<i64>, Query, description = "1..=5000, default 1000"),
        ("target_bundle_seq" = Option<i64>, Query, description = "the frozen ceiling of the first page"),
        ("Oversync-Source-ID" = String, Header),
    ),
    responses(
        (status = 200, body = PullResponse),
        (status = 400, description = "invalid_request", body = ErrorResponse),
        (status = 409, description = "history_pruned, scope_uninitialized, scope_initializing", body = ErrorResponse),
        (status = 500, description = "pull_failed", body = ErrorResponse),
    ))]
fn pull() {}

#[utoipa::path(get, path = "/sync/watch", tag = "pull",
    params(("after_bundle_seq" = Option<i64>, Query), ("Oversync-Source-ID" = String, Header)),
    responses(
        (status = 200, description = "text/event-stream of `event: bundle` frames and `: heartbeat` comments", body = BundleChangeEvent, content_type = "text/event-stream"),
        (status = 400, description = "invalid_request", body = ErrorResponse),
        (status = 403, description = "bundle_change_watch_forbidden", body = ErrorResponse),
        (status = 409, description = "scope_uninitialized, scope_initializing", body = ErrorResponse),
        (status = 503, description = "bundle_change_watch_disabled, service_unavailable", body = ErrorResponse),
        (status = 500, description = "bundle_change_watch_failed", body = ErrorResponse),
    ))]
fn watch() {}

#[utoipa::path(post, path = "/sync/snapshot-sessions", tag = "snapshot",
    params(("Oversync-Source-ID" = String, Header)),
    request_body(content = Option<SnapshotSessionCreateRequest>, description = "optional; absent = keep-source rebuild"),
    responses(
        (status = 200, body = SnapshotSession),
        (status = 400, description = "snapshot_session_invalid", body = ErrorResponse),
        (status = 409, description = "scope_uninitialized, scope_initializing, source_replacement_invalid, source_retired (structured), snapshot_session_limit_exceeded", body = SourceRetiredResponse),
        (status = 500, description = "snapshot_session_create_failed", body = ErrorResponse),
    ))]
fn create_snapshot_session() {}

#[utoipa::path(get, path = "/sync/snapshot-sessions/{snapshot_id}", tag = "snapshot",
    params(
        ("snapshot_id" = String, Path),
        ("after_row_ordinal" = Option<i64>, Query, description = "1-based cursor; 0 or absent starts at the beginning"),
        ("max_rows" = Option<i64>, Query),
        ("Oversync-Source-ID" = String, Header),
    ),
    responses(
        (status = 200, body = SnapshotChunkResponse),
        (status = 400, description = "snapshot_chunk_invalid", body = ErrorResponse),
        (status = 403, description = "snapshot_session_forbidden", body = ErrorResponse),
        (status = 404, description = "snapshot_session_not_found", body = ErrorResponse),
        (status = 410, description = "snapshot_session_expired", body = ErrorResponse),
        (status = 500, description = "snapshot_chunk_failed", body = ErrorResponse),
    ))]
fn snapshot_chunk() {}

#[utoipa::path(delete, path = "/sync/snapshot-sessions/{snapshot_id}", tag = "snapshot",
    params(("snapshot_id" = String, Path), ("Oversync-Source-ID" = String, Header)),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "snapshot_session_forbidden", body = ErrorResponse),
        (status = 404, description = "snapshot_session_not_found", body = ErrorResponse),
        (status = 500, description = "snapshot_session_delete_failed", body = ErrorResponse),
    ))]
fn delete_snapshot_session() {}

#[utoipa::path(get, path = "/sync/capabilities", tag = "lifecycle",
    params(("Oversync-Source-ID" = String, Header)),
    responses((status = 200, body = CapabilitiesResponse)))]
fn capabilities() {}

#[utoipa::path(get, path = "/syncx/health", tag = "operations", security(()),
    responses(
        (status = 200, description = "healthy", body = StatusResponse),
        (status = 503, description = "unhealthy", body = StatusResponse),
        (status = 500, description = "health_failed", body = ErrorResponse),
    ))]
fn health() {}

#[utoipa::path(get, path = "/syncx/status", tag = "operations", security(()),
    responses(
        (status = 200, body = StatusResponse),
        (status = 500, description = "status_failed", body = ErrorResponse),
    ))]
fn status() {}
