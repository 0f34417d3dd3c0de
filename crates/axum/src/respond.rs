//! Writing responses exactly as the reference's Go encoder does.
//!
//! One place builds every body: JSON through `oversync_protocol::json::to_wire_vec` with
//! `Content-Type: application/json` (no charset), errors from `ErrorBody` with the status of
//! the protocol's code table, and 204s with neither body nor content type.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oversync_protocol::error::{ErrorBody, ErrorCode};
use serde::Serialize;

/// A 200 with `value` encoded the Go way.
pub(crate) fn ok<T: Serialize>(value: &T) -> Response {
    json(StatusCode::OK, value)
}

/// `value` with `status`, encoded the Go way; an encoding failure (impossible for protocol
/// types) becomes a logged 500 with `fallback`'s code.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match oversync_protocol::json::to_wire_vec(value) {
        Ok(bytes) => with_json_type(status, bytes),
        Err(error) => {
            tracing::error!(%error, "encoding a response failed");
            let body = br#"{"error":"internal_error","message":"Failed to encode response"}"#;
            let mut bytes = body.to_vec();
            bytes.push(b'\n');
            with_json_type(StatusCode::INTERNAL_SERVER_ERROR, bytes)
        }
    }
}

fn with_json_type(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, Body::from(bytes)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error envelope with the status its code always carries.
pub(crate) fn error(body: &ErrorBody) -> Response {
    let status =
        StatusCode::from_u16(body.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, body)
}

/// A plain error envelope for `code`.
pub(crate) fn plain(code: ErrorCode, message: impl Into<String>) -> Response {
    error(&ErrorBody::plain(code, message))
}

/// The outcome of a service call that failed: server faults (5xx) are logged with their full
/// detail, which never reaches the client; the client gets the envelope.
pub(crate) fn failure(
    operation: &'static str,
    detail: &dyn std::fmt::Display,
    body: &ErrorBody,
) -> Response {
    if body.http_status() >= 500 {
        tracing::error!(operation, error = %detail, code = body.error(), "sync operation failed");
    } else {
        tracing::debug!(operation, error = %detail, code = body.error(), "sync request refused");
    }
    error(body)
}

/// `204 No Content`: no body, no content type.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
