//! The example-only routes (05-example-server.md §4): sign-in for demo clients and the test
//! hooks that cross-language harnesses call between runs. All unauthenticated, as in the
//! reference; they exist for development, not production.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use oversync_server::SyncService;
use serde::{Deserialize, Serialize};

use crate::auth::{JwtKeys, TOKEN_LIFETIME_SECONDS};
use crate::schema::{BUSINESS_DDL, BUSINESS_SCHEMA};

/// What the example routes share.
#[derive(Debug, Clone)]
pub struct ExampleState {
    /// The pool the service runs on (the example's own SQL: schema setup and test hooks).
    pub pool: Pool,
    /// The sync service.
    pub service: Arc<SyncService>,
    /// JWT keys for `/dummy-signin`.
    pub keys: JwtKeys,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match oversync_protocol::json::to_wire_vec(value) {
        Ok(bytes) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        message: String,
    }
    json(
        status,
        &Body {
            error: code,
            message: message.into(),
        },
    )
}

/// Reads the first JSON value of `body` into `T` (unknown fields ignored, trailing data
/// never read), as the reference's handlers do.
fn first_json_value<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Option<T> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .next()?
        .ok()
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    user: Option<String>,
}

#[derive(Serialize)]
struct SignedIn<'a> {
    token: String,
    expires_in: u64,
    user: &'a str,
}

/// `POST /dummy-signin`: any password; a 5-minute HS256 token whose `sub` is the user.
pub async fn dummy_signin(State(state): State<ExampleState>, body: Bytes) -> Response {
    let Some(request) = first_json_value::<SignIn>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "invalid JSON");
    };
    let user = request.user.unwrap_or_default();
    // A whitespace-only user would get a token every /sync route rejects: refuse it here.
    if user.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "user required");
    }
    match state.keys.mint(&user, TOKEN_LIFETIME_SECONDS) {
        Ok(token) => json(
            StatusCode::OK,
            &SignedIn {
                token,
                expires_in: TOKEN_LIFETIME_SECONDS,
                user: &user,
            },
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "token_error",
            e.to_string(),
        ),
    }
}

/// Drops the sync and business schemas, recreates the business tables and bootstraps again.
pub async fn reset(state: &ExampleState) -> Result<(), String> {
    let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
    let tx = conn.transaction().await.map_err(|e| e.to_string())?;
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS sync CASCADE; DROP SCHEMA IF EXISTS {BUSINESS_SCHEMA} CASCADE; {BUSINESS_DDL}"
    ))
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    drop(conn);
    state.service.bootstrap().await.map_err(|e| e.to_string())
}

/// `POST /test/reset`: everything starts from scratch (no users, bundles or sessions).
pub async fn test_reset(State(state): State<ExampleState>) -> Response {
    #[derive(Serialize)]
    struct Reset {
        status: &'static str,
        schema: &'static str,
    }
    match reset(&state).await {
        Ok(()) => json(
            StatusCode::OK,
            &Reset {
                status: "ok",
                schema: BUSINESS_SCHEMA,
            },
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "reset_failed", e),
    }
}

#[derive(Deserialize)]
struct FloorRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    retained_bundle_floor: Option<i64>,
}

/// `POST /test/retention-floor`: moves a user's retained floor (history at or below it then
/// counts as pruned) without deleting anything.
pub async fn test_retention_floor(State(state): State<ExampleState>, body: Bytes) -> Response {
    #[derive(Serialize)]
    struct Floor<'a> {
        status: &'static str,
        user_id: &'a str,
        retained_bundle_floor: i64,
    }
    let Some(request) = first_json_value::<FloorRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "invalid JSON");
    };
    let user_id = request.user_id.unwrap_or_default();
    if user_id.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "user_id required",
        );
    }
    let floor = request.retained_bundle_floor.unwrap_or(0);
    if floor < 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "retained_bundle_floor must be non-negative",
        );
    }
    let failed = |e: &dyn std::fmt::Display| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "retention_floor_update_failed",
            e.to_string(),
        )
    };
    let conn = match state.pool.get().await {
        Ok(conn) => conn,
        Err(e) => return failed(&e),
    };
    let latest = match conn
        .query_opt(
            "SELECT next_bundle_seq - 1 FROM sync.user_state WHERE user_id = $1",
            &[&user_id],
        )
        .await
    {
        Ok(Some(row)) => row.get::<_, i64>(0),
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "user_state_not_found",
                "no sync user_state row exists for user_id",
            );
        }
        Err(e) => return failed(&e),
    };
    if floor > latest {
        // The reference lets the CHECK constraint fail (500); a 4xx says what is wrong.
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("retained_bundle_floor {floor} exceeds the latest bundle_seq {latest}"),
        );
    }
    match conn
        .execute(
            "UPDATE sync.user_state SET retained_bundle_floor = $2 WHERE user_id = $1",
            &[&user_id, &floor],
        )
        .await
    {
        Ok(_) => json(
            StatusCode::OK,
            &Floor {
                status: "ok",
                user_id: &user_id,
                retained_bundle_floor: floor,
            },
        ),
        Err(e) => failed(&e),
    }
}

/// `GET /test/watch-subscribers?user_id=`: open `/sync/watch` streams of that user in this
/// process (05-example-server.md §4.4).
pub async fn test_watch_subscribers(
    State(state): State<ExampleState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    #[derive(Serialize)]
    struct Subscribers {
        user_id: String,
        subscriber_count: usize,
        process_local_only: bool,
    }
    let query = oversync_protocol::wire::parse_query(query.as_deref().unwrap_or(""));
    let user_id = query.get("user_id").unwrap_or("").trim().to_owned();
    if user_id.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "user_id required",
        );
    }
    let subscriber_count = state.service.watch_subscriber_count(&user_id);
    json(
        StatusCode::OK,
        &Subscribers {
            user_id,
            subscriber_count,
            process_local_only: true,
        },
    )
}
