//! The example's bearer-JWT authentication (05-example-server.md §3), standing in for a real
//! host's auth: the library never reads credentials, it only receives the user id.
//!
//! Validation follows the reference exactly, which differs from `jsonwebtoken`'s defaults:
//! any HMAC algorithm, no leeway, `nbf` checked, `exp` checked only when present, no
//! `iss`/`aud` checks, trimmed non-empty `sub`. Failures are plain-text 401s as in the
//! reference.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use oversync_axum::AuthenticatedUser;
use serde::Serialize;

/// Lifetime of tokens minted by `/dummy-signin`, in seconds.
pub const TOKEN_LIFETIME_SECONDS: u64 = 300;
/// The `iss` claim of minted tokens.
pub const ISSUER: &str = "go-oversync-examples";

/// The shared HMAC secret, used as the raw bytes of the string.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

impl JwtKeys {
    /// Keys for `secret`.
    pub fn new(secret: &str) -> Self {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// Mints an HS256 token for `user` (trimmed) valid for `lifetime_seconds`.
    pub fn mint(
        &self,
        user: &str,
        lifetime_seconds: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER,
            sub: user.trim(),
            iat: now,
            nbf: now,
            exp: now + lifetime_seconds,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The trimmed, non-empty `sub` of a valid token.
    pub fn validate(&self, token: &str) -> Option<String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &validation).ok()?;
        let sub = data.claims.get("sub")?.as_str()?.trim();
        (!sub.is_empty()).then(|| sub.to_owned())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        (StatusCode::UNAUTHORIZED, Body::from(format!("{message}\n"))).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Middleware for `/sync/*`: validates `Authorization: Bearer <jwt>` and hands the user to the
/// adapter as an [`AuthenticatedUser`]. Other paths pass untouched.
pub async fn require_bearer(
    State(keys): State<JwtKeys>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/sync/") {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(str::trim)
        .unwrap_or("");
    if header.is_empty() {
        return unauthorized("Authorization header required");
    }
    let parts: Vec<&str> = header.split(' ').collect();
    if parts.len() != 2 || parts[0] != "Bearer" {
        return unauthorized("Invalid authorization header format");
    }
    let Some(user) = keys.validate(parts[1]) else {
        return unauthorized("Invalid token");
    };
    request.extensions_mut().insert(AuthenticatedUser(user));
    next.run(request).await
}
