//! One handler per route, each following the reference's processing order (01-wire.md §2.10):
//! actor (401, then 400 for the source header), then path, query and body parsing with the
//! endpoint's own error code, then the service call.
//!
//! Handlers take the whole request and read it themselves instead of using axum's `Json`,
//! `Query` or `Path` extractors, whose rejections are plain-text bodies with statuses the
//! protocol does not use.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use oversync_protocol::error::{ErrorBody, ErrorCode};
use oversync_protocol::json::decode_lenient;
use oversync_protocol::wire::{
    ConnectRequest, HealthStatus, PushSessionChunkRequest, PushSessionCreateRequest, QueryParams,
    parse_i64_param, parse_query,
};
use oversync_server::{Actor, PullRequest, SyncService};

use crate::Options;
use crate::actor::actor;
use crate::respond::{self, failure, no_content, ok, plain};

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) service: Arc<SyncService>,
    max_body_bytes: usize,
    watch_policy: Option<crate::WatchPolicy>,
}

impl AppState {
    pub(crate) fn new(service: Arc<SyncService>, options: Options) -> Self {
        AppState {
            service,
            max_body_bytes: options.max_body_bytes.unwrap_or(usize::MAX),
            watch_policy: options.watch_policy,
        }
    }

    /// Whether the host's watch policy lets `actor` watch (no policy: everyone).
    pub(crate) fn watch_allowed(&self, actor: &Actor) -> bool {
        self.watch_policy.as_ref().is_none_or(|p| p.allows(actor))
    }
}

/// Splits a request into its parts and its actor, or the error response for a missing actor.
pub(crate) fn start(request: Request) -> Result<(Parts, Body, Actor), Response> {
    let (parts, body) = request.into_parts();
    match actor(&parts) {
        Ok(actor) => Ok((parts, body, actor)),
        Err(body) => Err(respond::error(&body)),
    }
}

/// Reads the whole body, answering `413 request_body_too_large` past the host's limit and the
/// endpoint's parse error when the body cannot be read at all.
pub(crate) async fn read_body(
    state: &AppState,
    body: Body,
    parse_error: (ErrorCode, &'static str),
) -> Result<axum::body::Bytes, Response> {
    match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => Ok(bytes),
        Err(error) => {
            let cause = error.into_inner();
            if cause.is::<http_body_util::LengthLimitError>() {
                Err(plain(
                    ErrorCode::RequestBodyTooLarge,
                    format!(
                        "request body exceeds the configured limit of {} bytes",
                        state.max_body_bytes
                    ),
                ))
            } else {
                Err(plain(parse_error.0, parse_error.1))
            }
        }
    }
}

/// The percent-decoded single path parameter, or `None` when it is not valid UTF-8.
pub(crate) async fn path_param(parts: &mut Parts) -> Option<String> {
    Path::<String>::from_request_parts(parts, &())
        .await
        .ok()
        .map(|Path(value)| value)
}

pub(crate) fn query(parts: &Parts) -> QueryParams {
    parse_query(parts.uri.query().unwrap_or(""))
}

/// `POST /sync/connect`.
pub(crate) async fn connect(State(state): State<AppState>, request: Request) -> Response {
    const PARSE: (ErrorCode, &str) = (ErrorCode::InvalidRequest, "Failed to parse connect request");
    let (_, body, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let bytes = match read_body(&state, body, PARSE).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let Ok(request) = decode_lenient::<ConnectRequest>(&bytes) else {
        return plain(PARSE.0, PARSE.1);
    };
    match state.service.connect(&actor, Some(&request)).await {
        Ok(response) => ok(&response),
        Err(error) => failure("connect", &error, &error.to_body()),
    }
}

/// `POST /sync/push-sessions`.
pub(crate) async fn create_push_session(
    State(state): State<AppState>,
    request: Request,
) -> Response {
    const PARSE: (ErrorCode, &str) = (
        ErrorCode::InvalidRequest,
        "Failed to parse push session request",
    );
    let (_, body, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let bytes = match read_body(&state, body, PARSE).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let Ok(request) = decode_lenient::<PushSessionCreateRequest>(&bytes) else {
        return plain(PARSE.0, PARSE.1);
    };
    match state.service.create_push_session(&actor, &request).await {
        Ok(response) => ok(&response),
        Err(error) => failure("push_session_create", &error, &error.to_body()),
    }
}

fn push_session_not_found(raw_path: &str) -> Response {
    plain(
        ErrorCode::PushSessionNotFound,
        format!("push session {raw_path} was not found"),
    )
}

/// The raw (still percent-encoded) path segment at `index`, for messages about ids that could
/// not be decoded.
pub(crate) fn raw_segment(parts: &Parts, index: usize) -> String {
    parts
        .uri
        .path()
        .split('/')
        .nth(index)
        .unwrap_or("")
        .to_owned()
}

/// `POST /sync/push-sessions/{push_id}/chunks`.
pub(crate) async fn upload_push_chunk(State(state): State<AppState>, request: Request) -> Response {
    const PARSE: (ErrorCode, &str) = (
        ErrorCode::InvalidRequest,
        "Failed to parse push chunk request",
    );
    let (mut parts, body, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let bytes = match read_body(&state, body, PARSE).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let Ok(request) = decode_lenient::<PushSessionChunkRequest>(&bytes) else {
        return plain(PARSE.0, PARSE.1);
    };
    let Some(push_id) = path_param(&mut parts).await else {
        return push_session_not_found(&raw_segment(&parts, 3));
    };
    match state
        .service
        .upload_push_chunk(&actor, &push_id, &request)
        .await
    {
        Ok(response) => ok(&response),
        Err(error) => failure("push_session_chunk", &error, &error.to_body()),
    }
}

/// `POST /sync/push-sessions/{push_id}/commit` (no body is read).
pub(crate) async fn commit_push_session(
    State(state): State<AppState>,
    request: Request,
) -> Response {
    let (mut parts, _, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let Some(push_id) = path_param(&mut parts).await else {
        return push_session_not_found(&raw_segment(&parts, 3));
    };
    match state.service.commit_push_session(&actor, &push_id).await {
        Ok(response) => ok(&response),
        Err(error) => failure("push_session_commit", &error, &error.to_body()),
    }
}

/// `DELETE /sync/push-sessions/{push_id}` → 204.
pub(crate) async fn delete_push_session(
    State(state): State<AppState>,
    request: Request,
) -> Response {
    let (mut parts, _, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let Some(push_id) = path_param(&mut parts).await else {
        return push_session_not_found(&raw_segment(&parts, 3));
    };
    match state.service.delete_push_session(&actor, &push_id).await {
        Ok(()) => no_content(),
        Err(error) => failure("push_session_delete", &error, &error.to_body()),
    }
}

/// `GET /sync/committed-bundles/{bundle_seq}/rows`.
pub(crate) async fn committed_bundle_rows(
    State(state): State<AppState>,
    request: Request,
) -> Response {
    let invalid = |message: &str| plain(ErrorCode::CommittedBundleChunkInvalid, message);
    let (mut parts, _, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let Some(bundle_seq) = path_param(&mut parts)
        .await
        .and_then(|raw| parse_i64_param(&raw))
    else {
        return invalid("bundle_seq must be an integer");
    };
    let query = query(&parts);
    let after = match query.get_i64("after_row_ordinal") {
        Ok(after) => after,
        Err(error) => return invalid(&error.to_string()),
    };
    let max_rows = match query.get_i64("max_rows") {
        Ok(max_rows) => max_rows.unwrap_or(
            state
                .service
                .limits()
                .default_rows_per_committed_bundle_chunk,
        ),
        Err(error) => return invalid(&error.to_string()),
    };
    match state
        .service
        .committed_bundle_rows(&actor, bundle_seq, after, max_rows)
        .await
    {
        Ok(response) => ok(&response),
        Err(error) => failure("committed_bundle_rows", &error, &error.to_body()),
    }
}

/// The fixed page-size bounds of pull (not configurable in the reference).
const DEFAULT_BUNDLES_PER_PULL: i64 = 1000;
const MAX_BUNDLES_PER_PULL: i64 = 5000;

/// `GET /sync/pull`: parameters are parsed and range-checked one after the other, in the
/// reference's order, all failures `400 invalid_request`.
pub(crate) async fn pull(State(state): State<AppState>, request: Request) -> Response {
    let invalid = |message: String| plain(ErrorCode::InvalidRequest, message);
    let (parts, _, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let query = query(&parts);
    let non_negative = |name: &'static str| -> Result<i64, Response> {
        match query.get_i64(name) {
            Ok(None) => Ok(0),
            Ok(Some(value)) if value >= 0 => Ok(value),
            Ok(Some(_)) => Err(invalid(format!("{name} must be >= 0"))),
            Err(error) => Err(invalid(error.to_string())),
        }
    };
    let after_bundle_seq = match non_negative("after_bundle_seq") {
        Ok(value) => value,
        Err(response) => return response,
    };
    let max_bundles = match query.get_i64("max_bundles") {
        Ok(None) => DEFAULT_BUNDLES_PER_PULL,
        Ok(Some(value)) if (1..=MAX_BUNDLES_PER_PULL).contains(&value) => value,
        Ok(Some(_)) => {
            return invalid(format!(
                "max_bundles must be between 1 and {MAX_BUNDLES_PER_PULL}"
            ));
        }
        Err(error) => return invalid(error.to_string()),
    };
    let target_bundle_seq = match non_negative("target_bundle_seq") {
        Ok(value) => value,
        Err(response) => return response,
    };
    let request = PullRequest {
        after_bundle_seq,
        max_bundles,
        target_bundle_seq,
    };
    match state.service.pull(&actor, request).await {
        Ok(response) => ok(&response),
        Err(error) => failure("pull", &error, &error.to_body()),
    }
}

/// `GET /sync/capabilities`: behind the actor checks like every `/sync/*` route, never fails
/// otherwise.
pub(crate) async fn capabilities(State(state): State<AppState>, request: Request) -> Response {
    let actor = match start(request) {
        Ok((_, _, actor)) => actor,
        Err(response) => return response,
    };
    let mut capabilities = state.service.capabilities();
    if !state.watch_allowed(&actor) {
        capabilities.features.insert(
            oversync_protocol::wire::feature::BUNDLE_CHANGE_WATCH.into(),
            false,
        );
    }
    ok(&capabilities)
}

/// `GET /syncx/health`: 200 when healthy, 503 with the same body when not, 500 when the
/// status cannot be computed.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    match state.service.status().await {
        Ok(status) => {
            let code = if status.status == HealthStatus::Healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond::json(code, &status)
        }
        Err(error) => failure(
            "health",
            &error,
            &ErrorBody::plain(ErrorCode::HealthFailed, "Failed to get health status"),
        ),
    }
}

/// `GET /syncx/status`: 200 whenever the status can be computed.
pub(crate) async fn status(State(state): State<AppState>) -> Response {
    match state.service.status().await {
        Ok(status) => ok(&status),
        Err(error) => failure(
            "status",
            &error,
            &ErrorBody::plain(ErrorCode::StatusFailed, "Failed to get service status"),
        ),
    }
}
