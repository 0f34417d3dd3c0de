//! Who is calling: the host's authenticated user plus the `Oversync-Source-ID` header.
//!
//! The reference splits this between an actor middleware (401 for a missing user, 400 for a
//! missing source header) and the handlers; here both checks run at the start of every
//! `/sync/*` handler, in the same order, so the answers are identical without a middleware.

use axum::http::request::Parts;
use oversync_protocol::error::{ErrorBody, ErrorCode};
use oversync_protocol::wire::SOURCE_ID_HEADER;
use oversync_server::Actor;

/// The user id the host's authentication established for a request.
///
/// The host's auth middleware inserts it as a request extension; the adapter never reads
/// credentials itself. Surrounding whitespace is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser(pub String);

/// The actor of a request, or the error envelope the reference answers instead.
pub(crate) fn actor(parts: &Parts) -> Result<Actor, ErrorBody> {
    let user = parts
        .extensions
        .get::<AuthenticatedUser>()
        .map(|u| u.0.trim())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            ErrorBody::plain(
                ErrorCode::AuthenticationFailed,
                "authenticated user_id not found in request context",
            )
        })?;
    let missing_source = || {
        ErrorBody::plain(
            ErrorCode::InvalidRequest,
            "Oversync-Source-ID header is required",
        )
    };
    // The first value wins when the header repeats; raw bytes are decoded as UTF-8 so that
    // non-ASCII source ids work (an ASCII-only accessor would reject them). Non-UTF-8 bytes are
    // answered like a missing header (documented deviation: the reference fails later with 500).
    let source = match parts.headers.get(SOURCE_ID_HEADER) {
        Some(value) => std::str::from_utf8(value.as_bytes())
            .map_err(|_| missing_source())?
            .trim(),
        None => "",
    };
    if source.is_empty() {
        return Err(missing_source());
    }
    Actor::new(user, source).map_err(|e| e.to_body())
}
