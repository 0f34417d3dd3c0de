//! Snapshot-session routes (01-wire.md §8): create with the one strict-optional body, chunk
//! fetch with the 1-based cursor, delete.
//!
//! Processing order follows the reference: actor, then body or query parsing with the
//! endpoint's 400 code, then the service (admission, validation, database). Snapshot ids are
//! handed to the service as received (percent-decoded); the service answers malformed ones
//! `snapshot_session_not_found` instead of the reference's 500.

use axum::extract::{Request, State};
use axum::response::Response;
use oversync_protocol::error::ErrorCode;
use oversync_protocol::json::decode_strict_optional;
use oversync_protocol::wire::SnapshotSessionCreateRequest;

use crate::handlers::{AppState, path_param, query, raw_segment, read_body, start};
use crate::respond::{failure, no_content, ok, plain};

const CREATE_PARSE: (ErrorCode, &str) = (
    ErrorCode::SnapshotSessionInvalid,
    "Failed to parse snapshot session request",
);

/// `POST /sync/snapshot-sessions`: an empty body is a keep-source rebuild; unknown fields
/// anywhere and non-JSON data after the body are `400 snapshot_session_invalid`.
pub(crate) async fn create(State(state): State<AppState>, request: Request) -> Response {
    let (_, body, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let bytes = match read_body(&state, body, CREATE_PARSE).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let Ok(request) = decode_strict_optional::<SnapshotSessionCreateRequest>(&bytes) else {
        return plain(CREATE_PARSE.0, CREATE_PARSE.1);
    };
    match state
        .service
        .create_snapshot_session(&actor, request.as_ref())
        .await
    {
        Ok(session) => ok(&session),
        Err(error) => failure("snapshot_session_create", &error, &error.to_body()),
    }
}

/// `GET /sync/snapshot-sessions/{snapshot_id}?after_row_ordinal=&max_rows=`: query parse
/// errors are `400 snapshot_chunk_invalid` (`… must be an integer`); `after_row_ordinal`
/// defaults to 0 and `max_rows` to the configured default page.
pub(crate) async fn chunk(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let query = query(&parts);
    let after = match query.get_i64("after_row_ordinal") {
        Ok(after) => after.unwrap_or(0),
        Err(error) => return plain(ErrorCode::SnapshotChunkInvalid, error.to_string()),
    };
    let max_rows = match query.get_i64("max_rows") {
        Ok(max_rows) => max_rows.unwrap_or(state.service.limits().default_rows_per_snapshot_chunk),
        Err(error) => return plain(ErrorCode::SnapshotChunkInvalid, error.to_string()),
    };
    let snapshot_id = path_param(&mut parts)
        .await
        .unwrap_or_else(|| raw_segment(&parts, 3));
    match state
        .service
        .snapshot_chunk(&actor, &snapshot_id, after, max_rows)
        .await
    {
        Ok(chunk) => ok(&chunk),
        Err(error) => failure("snapshot_chunk", &error, &error.to_body()),
    }
}

/// `DELETE /sync/snapshot-sessions/{snapshot_id}` → 204 (expiry is not checked).
pub(crate) async fn delete(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _, actor) = match start(request) {
        Ok(started) => started,
        Err(response) => return response,
    };
    let snapshot_id = path_param(&mut parts)
        .await
        .unwrap_or_else(|| raw_segment(&parts, 3));
    match state
        .service
        .delete_snapshot_session(&actor, &snapshot_id)
        .await
    {
        Ok(()) => no_content(),
        Err(error) => failure("snapshot_session_delete", &error, &error.to_body()),
    }
}
