//! Connect (§4): the resolution table, leases on the database clock, lazy expiry, and a seed
//! push completing initialization.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::*;
use oversync_protocol::error::ErrorCode;
use oversync_protocol::wire::{
    ConnectRequest, ConnectResolution, PushSessionChunkRequest, PushSessionCreateRequest,
};
use oversync_server::{
    Actor, ActorError, ConnectError, PushChunkError, PushCreateError, ServiceConfig,
};

fn pending(yes: bool) -> ConnectRequest {
    ConnectRequest {
        has_local_pending_rows: yes,
    }
}

#[tokio::test]
async fn a_fresh_scope_without_pending_rows_initializes_empty_then_is_remote_authoritative() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let first = w.service.connect(&a, Some(&pending(false))).await.unwrap();
    assert_eq!(first.resolution, ConnectResolution::InitializeEmpty);
    let again = w
        .service
        .connect(&actor("alice", "dev-2"), Some(&pending(true)))
        .await
        .unwrap();
    assert_eq!(again.resolution, ConnectResolution::RemoteAuthoritative);
}

#[tokio::test]
async fn pending_rows_win_a_lease_and_other_sources_retry_later() {
    let w = World::new().await;
    let local = w
        .service
        .connect(&actor("alice", "dev-1"), Some(&pending(true)))
        .await
        .unwrap();
    assert_eq!(local.resolution, ConnectResolution::InitializeLocal);
    assert_eq!(local.initialization_id.len(), 36);
    assert!(local.lease_expires_at.ends_with('Z'));
    let other = w
        .service
        .connect(&actor("alice", "dev-2"), Some(&pending(false)))
        .await
        .unwrap();
    assert_eq!(other.resolution, ConnectResolution::RetryLater);
    assert!(other.retry_after_seconds >= 1 && other.retry_after_seconds <= 900);
    assert_eq!(other.lease_expires_at, local.lease_expires_at);
}

#[tokio::test]
async fn the_lease_holder_reconnecting_keeps_its_id_or_ends_initialization_empty() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let first = w.service.connect(&a, Some(&pending(true))).await.unwrap();
    let refreshed = w.service.connect(&a, Some(&pending(true))).await.unwrap();
    assert_eq!(refreshed.resolution, ConnectResolution::InitializeLocal);
    assert_eq!(refreshed.initialization_id, first.initialization_id);
    let empty = w.service.connect(&a, Some(&pending(false))).await.unwrap();
    assert_eq!(empty.resolution, ConnectResolution::InitializeEmpty);
}

#[tokio::test]
async fn concurrent_first_connects_give_one_lease_and_one_retry_later() {
    let w = World::new().await;
    let (a, b) = (actor("alice", "dev-1"), actor("alice", "dev-2"));
    let request = pending(true);
    let (ra, rb) = tokio::join!(
        w.service.connect(&a, Some(&request)),
        w.service.connect(&b, Some(&request))
    );
    let mut resolutions = vec![ra.unwrap().resolution, rb.unwrap().resolution];
    resolutions.sort_by_key(|r| r.as_str());
    assert_eq!(
        resolutions,
        vec![
            ConnectResolution::InitializeLocal,
            ConnectResolution::RetryLater
        ]
    );
}

#[tokio::test]
async fn an_expired_lease_goes_to_the_next_source_with_a_new_id() {
    let w = World::with_config(ServiceConfig {
        initialization_lease_ttl: Duration::from_millis(50),
        ..ServiceConfig::default()
    })
    .await;
    let first = w
        .service
        .connect(&actor("alice", "dev-1"), Some(&pending(true)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = w
        .service
        .connect(&actor("alice", "dev-2"), Some(&pending(true)))
        .await
        .unwrap();
    assert_eq!(second.resolution, ConnectResolution::InitializeLocal);
    assert_ne!(second.initialization_id, first.initialization_id);
}

#[tokio::test]
async fn a_seed_push_completes_initialization() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let lease = w.service.connect(&a, Some(&pending(true))).await.unwrap();
    let created = w
        .service
        .create_push_session(
            &a,
            &PushSessionCreateRequest {
                source_bundle_id: 1,
                planned_row_count: 1,
                initialization_id: lease.initialization_id.clone(),
            },
        )
        .await
        .unwrap();
    w.service
        .upload_push_chunk(
            &a,
            &created.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![insert("docs", "d1", r#"{"title":"seed"}"#)],
            },
        )
        .await
        .unwrap();
    let committed = w
        .service
        .commit_push_session(&a, &created.push_id)
        .await
        .unwrap();
    assert_eq!(committed.bundle_seq, 1);
    let state: i16 = w
        .client()
        .await
        .query_one("SELECT state_code FROM sync.scope_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, 2);
    let other = w
        .service
        .connect(&actor("alice", "dev-2"), Some(&pending(true)))
        .await
        .unwrap();
    assert_eq!(other.resolution, ConnectResolution::RemoteAuthoritative);
}

#[tokio::test]
async fn replaying_a_seed_after_initialization_answers_already_committed() {
    let w = World::new().await;
    let a = actor("alice", "dev-1");
    let lease = w.service.connect(&a, Some(&pending(true))).await.unwrap();
    let request = PushSessionCreateRequest {
        source_bundle_id: 1,
        planned_row_count: 1,
        initialization_id: lease.initialization_id.clone(),
    };
    let created = w.service.create_push_session(&a, &request).await.unwrap();
    w.service
        .upload_push_chunk(
            &a,
            &created.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![insert("docs", "d1", r#"{"title":"seed"}"#)],
            },
        )
        .await
        .unwrap();
    let committed = w
        .service
        .commit_push_session(&a, &created.push_id)
        .await
        .unwrap();
    // §13 item 29: the lost-response retry still carries the initialization id.
    let replay = w.service.create_push_session(&a, &request).await.unwrap();
    assert_eq!(replay.bundle_hash, committed.bundle_hash);
}

#[tokio::test]
async fn a_seed_chunk_after_the_lease_expired_is_initialization_stale() {
    let w = World::with_config(ServiceConfig {
        initialization_lease_ttl: Duration::from_millis(80),
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    let lease = w.service.connect(&a, Some(&pending(true))).await.unwrap();
    let created = w
        .service
        .create_push_session(
            &a,
            &PushSessionCreateRequest {
                source_bundle_id: 1,
                planned_row_count: 1,
                initialization_id: lease.initialization_id,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let err = w
        .service
        .upload_push_chunk(
            &a,
            &created.push_id,
            &PushSessionChunkRequest {
                start_row_ordinal: 0,
                rows: vec![insert("docs", "d1", r#"{"title":"seed"}"#)],
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PushChunkError::InitializationStale(_)),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::InitializationStale);
    assert_eq!(err.code().http_status(), 409);
}

#[tokio::test]
async fn create_with_an_id_after_the_lease_expired_is_initialization_expired() {
    let w = World::with_config(ServiceConfig {
        initialization_lease_ttl: Duration::from_millis(50),
        ..ServiceConfig::default()
    })
    .await;
    let a = actor("alice", "dev-1");
    let lease = w.service.connect(&a, Some(&pending(true))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let err = w
        .service
        .create_push_session(
            &a,
            &PushSessionCreateRequest {
                source_bundle_id: 1,
                planned_row_count: 1,
                initialization_id: lease.initialization_id,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PushCreateError::InitializationExpired(_)),
        "{err:?}"
    );
    assert_eq!(err.code().http_status(), 410);
}

#[tokio::test]
async fn another_source_creating_with_the_lease_id_is_initialization_stale() {
    let w = World::new().await;
    let lease = w
        .service
        .connect(&actor("alice", "dev-1"), Some(&pending(true)))
        .await
        .unwrap();
    let err = w
        .service
        .create_push_session(
            &actor("alice", "dev-2"),
            &PushSessionCreateRequest {
                source_bundle_id: 1,
                planned_row_count: 1,
                initialization_id: lease.initialization_id,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InitializationStale);
    assert!(
        err.to_string()
            .contains("source does not own the active initialization lease")
    );
}

#[tokio::test]
async fn a_missing_connect_request_is_connect_invalid() {
    let w = World::new().await;
    let err = w
        .service
        .connect(&actor("alice", "dev-1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Invalid(_)));
    assert_eq!(err.code(), ErrorCode::ConnectInvalid);
    assert_eq!(err.code().http_status(), 400);
}

#[test]
fn actors_need_a_user_and_a_source_of_at_most_255_bytes() {
    assert_eq!(
        Actor::new("", "s").unwrap_err().code(),
        ErrorCode::AuthenticationFailed
    );
    assert_eq!(Actor::new("u", "").unwrap_err(), ActorError::MissingSource);
    let long = "x".repeat(256);
    let err = Actor::new("u", long.as_str()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert_eq!(err.code().http_status(), 400);
    assert_eq!(err.to_body().error(), "invalid_request");
    assert!(Actor::new("x".repeat(255), "s").is_ok());
}
