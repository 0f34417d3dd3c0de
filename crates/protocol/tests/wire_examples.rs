//! The JSON examples of 01-wire.md against the wire types and the Go-compatible encoder: each
//! decodes, re-encodes to exactly the example's bytes (plus the encoder's `\n`), and keeps
//! its canonical (GCJ) form. Below them, one test per request-decoding rule of §2.6.

use oversync_protocol::error::PushConflictResponse;
use oversync_protocol::gcj;
use oversync_protocol::json::{
    DecodeError, decode_lenient, decode_strict_optional, to_compact_vec, to_wire_vec,
};
use oversync_protocol::op::Op;
use oversync_protocol::wire::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// ---------------------------------------------------------------------------------------------
// The examples, verbatim from 01-wire.md.

const CONNECT_REQUEST_TRUE: &str = r#"{"has_local_pending_rows":true}"#;
const CONNECT_REQUEST_FALSE: &str = r#"{"has_local_pending_rows":false}"#;
const CONNECT_REMOTE: &str = r#"{"resolution":"remote_authoritative"}"#;
const CONNECT_INITIALIZE_LOCAL: &str = r#"{"resolution":"initialize_local","initialization_id":"6df0d8dd-a84b-43b6-bbca-8de70432922a","lease_expires_at":"2026-03-22T12:15:00.123456789Z"}"#;
const CONNECT_RETRY_LATER: &str = r#"{"resolution":"retry_later","lease_expires_at":"2026-03-22T12:15:00.123456Z","retry_after_seconds":842}"#;
const PUSH_CREATE_STAGING: &str = r#"{"push_id":"6df0d8dd-a84b-43b6-bbca-8de70432922a","status":"staging","planned_row_count":3}"#;
const PUSH_CREATE_ALREADY_COMMITTED: &str = r#"{"status":"already_committed","bundle_seq":143,"source_id":"device-a","source_bundle_id":7,"row_count":3,"bundle_hash":"4c8d2d5f5d2c5a41d9aa6f4d2f3ac5d0d1d5d8bbf1d7a8c39f3b3a970f6af21a"}"#;
const PUSH_CHUNK_RESPONSE: &str =
    r#"{"push_id":"6df0d8dd-a84b-43b6-bbca-8de70432922a","next_expected_row_ordinal":2}"#;
/// The hash is abbreviated with `…` in the chapter; it is still a valid JSON string.
const PUSH_COMMIT_RESPONSE: &str = r#"{"bundle_seq":143,"source_id":"device-a","source_bundle_id":7,"row_count":1,"bundle_hash":"4c8d…f21a"}"#;
const PUSH_CONFLICT: &str = r#"{"error":"push_conflict","message":"update conflict on business.users 550e8400-e29b-41d4-a716-446655440000: expected version 7, got 3","conflict":{"schema":"business","table":"users","key":{"id":"550e8400-e29b-41d4-a716-446655440000"},"op":"UPDATE","base_row_version":3,"server_row_version":7,"server_row_deleted":false,"server_row":{"id":"550e8400-e29b-41d4-a716-446655440000","name":"Jane Doe","email":"jane@example.com"}}}"#;
/// The hash is abbreviated with `…` in the chapter; it is still a valid JSON string.
const PULL_RESPONSE: &str = r#"{"stable_bundle_seq":156,"bundles":[{"bundle_seq":143,"source_id":"device-b","source_bundle_id":18,"row_count":1,"bundle_hash":"9f86…0a08","rows":[{"schema":"business","table":"users","key":{"id":"550e8400-e29b-41d4-a716-446655440001"},"op":"DELETE","row_version":143}]}],"has_more":true}"#;
const WATCH_LIVE_DATA: &str = r#"{"bundle_seq":157,"source_id":"device-a","source_bundle_id":9}"#;
const WATCH_CATCH_UP_DATA: &str = r#"{"bundle_seq":157}"#;
const WATCH_NOTIFY_PAYLOAD: &str =
    r#"{"user_pk":12,"bundle_seq":157,"source_id":"device-a","source_bundle_id":9}"#;
const SNAPSHOT_CREATE_REQUEST: &str = r#"{"source_replacement":{"previous_source_id":"device-old","new_source_id":"device-new","reason":"history_pruned"}}"#;
const SNAPSHOT_SESSION: &str = r#"{"snapshot_id":"2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88","snapshot_bundle_seq":156,"row_count":124,"byte_count":18240,"expires_at":"2026-03-22T12:15:00.987654321Z"}"#;
/// The id and expiry are `…` in the chapter; still valid JSON strings.
const SNAPSHOT_SESSION_EMPTY: &str =
    r#"{"snapshot_id":"…","snapshot_bundle_seq":0,"row_count":0,"expires_at":"…"}"#;
const SNAPSHOT_CHUNK: &str = r#"{"snapshot_id":"2f2d3f7a-cd1f-42b9-8d08-c4d2b45d9f88","snapshot_bundle_seq":156,"rows":[{"schema":"business","table":"users","key":{"id":"550e8400-e29b-41d4-a716-446655440001"},"row_version":143,"payload":{"id":"550e8400-e29b-41d4-a716-446655440001","name":"Jane Doe","email":"jane@example.com"}}],"next_row_ordinal":1,"has_more":true}"#;
/// Pretty-printed in the chapter ("the wire is one compact line"); compacted by
/// [`capabilities_example`].
const CAPABILITIES_PRETTY: &str = r#"{"protocol_version":"v1","schema_version":1,"app_name":"my-app",
 "registered_tables":["business.users"],
 "registered_table_specs":[{"schema":"business","table":"users","sync_key_columns":["id"]}],
 "features":{"accepted_push_replay_visibility":true,"bundle_change_watch":false,"bundle_pull":true,
  "bundle_push":true,"capabilities_endpoint":true,"committed_bundle_row_fetch":true,
  "committed_bundle_visibility":true,"connect_lifecycle":true,"graceful_shutdown":true,
  "history_pruned_errors":true,"history_pruned_visibility":true,"push_session_chunking":true,
  "registered_write_rejection_enforced":true,"retained_floor_visibility":true,
  "retained_window_visibility":true,"scope_initialization_leases":true,
  "server_checkpoint_tracking":false,"snapshot_chunking":true,"status_endpoint":true,
  "structured_sync_keys":true},
 "bundle_limits":{"max_bundles_per_pull":5000,"default_rows_per_push_chunk":1000,
  "max_rows_per_push_chunk":5000,"push_session_ttl_seconds":900,
  "default_rows_per_committed_bundle_chunk":1000,"max_rows_per_committed_bundle_chunk":5000,
  "default_rows_per_snapshot_chunk":1000,"max_rows_per_snapshot_chunk":5000,
  "snapshot_session_ttl_seconds":900,"initialization_lease_ttl_seconds":900}}"#;
/// `"features":{…}` in the chapter; [`status_example`] fills in the service-level flags
/// (watch disabled).
const STATUS_WITH_ELIDED_FEATURES: &str = r#"{"status":"healthy","version":"v1","app_name":"my-app","lifecycle":"running","accepting_operations":true,"inflight_operations":0,"registered_tables":["business.users"],"features":{…},"user_state_retention_floor_ahead_count":0,"latest_bundle_seq_max":156,"retained_bundle_floor_min":0,"retained_bundle_floor_max":0,"retained_bundle_window_min":3,"retained_bundle_window_max":156,"history_pruned_error_count":2,"accepted_push_replay_count":0,"rejected_registered_write_count":0,"committed_bundle_count":159,"committed_bundle_bytes":48213}"#;

/// Not in the chapter (it gives no committed-rows example): constructed from §6 with one
/// INSERT row whose payload needs HTML escaping.
const COMMITTED_ROWS_CONSTRUCTED: &str = r#"{"bundle_seq":143,"source_id":"device-a","source_bundle_id":7,"row_count":2,"bundle_hash":"4c8d2d5f5d2c5a41d9aa6f4d2f3ac5d0d1d5d8bbf1d7a8c39f3b3a970f6af21a","rows":[{"schema":"business","table":"users","key":{"id":"550e8400-e29b-41d4-a716-446655440000"},"op":"INSERT","row_version":143,"payload":{"email":"a\u0026b@example.com","id":"550e8400-e29b-41d4-a716-446655440000","name":"\u003cJane\u003e"}}],"next_row_ordinal":0,"has_more":true}"#;

/// Not in the chapter (it gives no chunk example): a chunk as a client encodes it (§3.2 field
/// order, `payload` omitted for DELETE).
const PUSH_CHUNK_REQUEST_CONSTRUCTED: &str = r#"{"start_row_ordinal":0,"rows":[{"schema":"business","table":"users","key":{"id":"550e8400-e29b-41d4-a716-446655440000"},"op":"INSERT","base_row_version":0,"payload":{"email":"jane@example.com","id":"550e8400-e29b-41d4-a716-446655440000","name":"Jane Doe"}},{"schema":"business","table":"users","key":{"id":"550e8400-e29b-41d4-a716-446655440001"},"op":"DELETE","base_row_version":143}]}"#;

fn capabilities_example() -> String {
    CAPABILITIES_PRETTY.lines().map(str::trim_start).collect()
}

fn status_example() -> String {
    let features = String::from_utf8(to_compact_vec(&reference_features(false)).expect("encodes"))
        .expect("utf-8");
    STATUS_WITH_ELIDED_FEATURES.replace("{…}", &features)
}

// ---------------------------------------------------------------------------------------------
// Decode + re-encode per decoding path.

/// A response as our client reads it.
fn response<T: Serialize + DeserializeOwned>(example: &str) -> Vec<u8> {
    let value: T = serde_json::from_str(example).expect("example decodes");
    to_wire_vec(&value).expect("encodes")
}

/// A lenient request as the server reads it.
fn lenient<T: Serialize + DeserializeOwned + Default>(example: &str) -> Vec<u8> {
    let value: T = decode_lenient(example.as_bytes()).expect("example decodes");
    to_wire_vec(&value).expect("encodes")
}

/// The snapshot-create request as the server reads it.
fn strict<T: Serialize + DeserializeOwned + Default>(example: &str) -> Vec<u8> {
    let value: T = decode_strict_optional(example.as_bytes())
        .expect("example decodes")
        .expect("a body is present");
    to_wire_vec(&value).expect("encodes")
}

/// The `conflict` member of the push-conflict envelope (the envelope itself belongs to
/// `error`): returns the member's bytes and its re-encoding.
fn conflict_member(example: &str) -> (String, Vec<u8>) {
    #[derive(Deserialize)]
    struct Envelope {
        conflict: Box<RawValue>,
    }
    let envelope: Envelope = serde_json::from_str(example).expect("envelope decodes");
    let member = envelope.conflict.get().to_owned();
    (member.clone(), response::<PushConflictDetails>(&member))
}

type ReEncode = fn(&str) -> Vec<u8>;

/// Every full body example: (name, example, how it is decoded).
fn body_examples() -> Vec<(&'static str, String, ReEncode)> {
    vec![
        (
            "connect request true",
            CONNECT_REQUEST_TRUE.to_owned(),
            lenient::<ConnectRequest>,
        ),
        (
            "connect request false",
            CONNECT_REQUEST_FALSE.to_owned(),
            lenient::<ConnectRequest>,
        ),
        (
            "connect remote_authoritative",
            CONNECT_REMOTE.to_owned(),
            response::<ConnectResponse>,
        ),
        (
            "connect initialize_local",
            CONNECT_INITIALIZE_LOCAL.to_owned(),
            response::<ConnectResponse>,
        ),
        (
            "connect retry_later",
            CONNECT_RETRY_LATER.to_owned(),
            response::<ConnectResponse>,
        ),
        (
            "push create staging",
            PUSH_CREATE_STAGING.to_owned(),
            response::<PushSessionCreateResponse>,
        ),
        (
            "push create already_committed",
            PUSH_CREATE_ALREADY_COMMITTED.to_owned(),
            response::<PushSessionCreateResponse>,
        ),
        (
            "push chunk request (constructed)",
            PUSH_CHUNK_REQUEST_CONSTRUCTED.to_owned(),
            lenient::<PushSessionChunkRequest>,
        ),
        (
            "push chunk response",
            PUSH_CHUNK_RESPONSE.to_owned(),
            response::<PushSessionChunkResponse>,
        ),
        (
            "push commit response",
            PUSH_COMMIT_RESPONSE.to_owned(),
            response::<PushSessionCommitResponse>,
        ),
        (
            "committed rows (constructed)",
            COMMITTED_ROWS_CONSTRUCTED.to_owned(),
            response::<CommittedBundleRowsResponse>,
        ),
        (
            "pull response",
            PULL_RESPONSE.to_owned(),
            response::<PullResponse>,
        ),
        (
            "snapshot create request",
            SNAPSHOT_CREATE_REQUEST.to_owned(),
            strict::<SnapshotSessionCreateRequest>,
        ),
        (
            "snapshot session",
            SNAPSHOT_SESSION.to_owned(),
            response::<SnapshotSession>,
        ),
        (
            "snapshot session, empty scope",
            SNAPSHOT_SESSION_EMPTY.to_owned(),
            response::<SnapshotSession>,
        ),
        (
            "snapshot chunk",
            SNAPSHOT_CHUNK.to_owned(),
            response::<SnapshotChunkResponse>,
        ),
        (
            "capabilities default",
            capabilities_example(),
            response::<CapabilitiesResponse>,
        ),
        ("status", status_example(), response::<StatusResponse>),
    ]
}

#[test]
fn every_body_example_re_encodes_to_its_exact_bytes_plus_newline() {
    for (name, example, re_encode) in body_examples() {
        let bytes = re_encode(&example);
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            format!("{example}\n"),
            "{name}"
        );
    }
}

#[test]
fn every_body_example_keeps_its_canonical_form() {
    for (name, example, re_encode) in body_examples() {
        let bytes = re_encode(&example);
        assert_eq!(
            gcj::canonicalize(&bytes).expect("re-encoding is JSON"),
            gcj::canonicalize(example.as_bytes()).expect("example is JSON"),
            "{name}"
        );
    }
}

#[test]
fn push_conflict_member_decodes_and_re_encodes_exactly() {
    let (member, bytes) = conflict_member(PUSH_CONFLICT);
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        format!("{member}\n")
    );
    assert_eq!(
        gcj::canonicalize(&bytes).unwrap(),
        gcj::canonicalize(member.as_bytes()).unwrap()
    );
    let details: PushConflictDetails = serde_json::from_str(&member).unwrap();
    assert_eq!(details.op, Op::Update);
    assert_eq!(details.base_row_version, 3);
    assert_eq!(details.server_row_version, 7);
    assert!(!details.server_row_deleted);
    assert_eq!(
        details.key.get("id").map(String::as_str),
        Some("550e8400-e29b-41d4-a716-446655440000")
    );
    // jsonb member order is kept, not re-sorted.
    assert!(details.server_row.unwrap().get().starts_with(r#"{"id":"#));
}

#[test]
fn push_conflict_envelope_is_reproduced_around_the_details() {
    let envelope: PushConflictResponse = serde_json::from_str(PUSH_CONFLICT).unwrap();
    assert_eq!(
        envelope.conflict.as_ref().map(|c| c.server_row_version),
        Some(7)
    );
    assert_eq!(
        to_wire_vec(&envelope).unwrap(),
        format!("{PUSH_CONFLICT}\n").into_bytes()
    );
}

#[test]
fn absent_server_row_is_written_as_null() {
    let details = PushConflictDetails {
        schema: "business".to_owned(),
        table: "users".to_owned(),
        key: [("id".to_owned(), "k".to_owned())].into(),
        op: Op::Insert,
        base_row_version: 0,
        server_row_version: 9,
        server_row_deleted: false,
        server_row: None,
    };
    assert_eq!(
        to_compact_vec(&details).unwrap(),
        br#"{"schema":"business","table":"users","key":{"id":"k"},"op":"INSERT","base_row_version":0,"server_row_version":9,"server_row_deleted":false,"server_row":null}"#
    );
    let back: PushConflictDetails =
        serde_json::from_slice(&to_compact_vec(&details).unwrap()).unwrap();
    assert!(back.server_row.is_none());
}

#[test]
fn watch_data_lines_and_frames_are_exact() {
    for data in [WATCH_LIVE_DATA, WATCH_CATCH_UP_DATA] {
        let event: BundleChangeEvent = serde_json::from_str(data).unwrap();
        assert_eq!(to_compact_vec(&event).unwrap(), data.as_bytes());
        assert_eq!(
            event.to_sse_frame().unwrap(),
            format!("event: bundle\ndata: {data}\n\n").into_bytes()
        );
    }
    assert_eq!(
        to_compact_vec(&BundleChangeEvent::catch_up(157)).unwrap(),
        WATCH_CATCH_UP_DATA.as_bytes()
    );
    assert_eq!(SSE_HEARTBEAT_FRAME, b": heartbeat\n\n");
    let notification: BundleChangeNotification =
        serde_json::from_str(WATCH_NOTIFY_PAYLOAD).unwrap();
    assert_eq!(
        to_compact_vec(&notification).unwrap(),
        WATCH_NOTIFY_PAYLOAD.as_bytes()
    );
}

#[test]
fn constructors_produce_the_example_shapes() {
    let staging =
        PushSessionCreateResponse::staging("6df0d8dd-a84b-43b6-bbca-8de70432922a".to_owned(), 3);
    assert_eq!(
        to_compact_vec(&staging).unwrap(),
        PUSH_CREATE_STAGING.as_bytes()
    );
    let committed = PushSessionCreateResponse::already_committed(PushSessionCommitResponse {
        bundle_seq: 143,
        source_id: "device-a".to_owned(),
        source_bundle_id: 7,
        row_count: 3,
        bundle_hash: "4c8d2d5f5d2c5a41d9aa6f4d2f3ac5d0d1d5d8bbf1d7a8c39f3b3a970f6af21a".to_owned(),
    });
    assert_eq!(
        to_compact_vec(&committed).unwrap(),
        PUSH_CREATE_ALREADY_COMMITTED.as_bytes()
    );
    assert_eq!(
        to_compact_vec(&ConnectResponse::remote_authoritative()).unwrap(),
        CONNECT_REMOTE.as_bytes()
    );
    assert_eq!(
        to_compact_vec(&ConnectResponse::retry_later(
            format_rfc3339_nano(1_774_181_700, 123_456_000),
            842
        ))
        .unwrap(),
        CONNECT_RETRY_LATER.as_bytes()
    );
    let caps: CapabilitiesResponse = serde_json::from_str(&capabilities_example()).unwrap();
    assert_eq!(caps.features, reference_features(false));
}

#[test]
fn staging_without_next_ordinal_decodes_as_zero() {
    let staging: PushSessionCreateResponse = serde_json::from_str(PUSH_CREATE_STAGING).unwrap();
    assert_eq!(staging.status, PushSessionStatus::Staging);
    assert_eq!(staging.next_expected_row_ordinal, 0);
}

#[test]
fn bundle_limits_and_capability_lists_are_omitted_when_zero_or_empty() {
    let caps = CapabilitiesResponse {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        schema_version: 1,
        app_name: String::new(),
        registered_tables: Vec::new(),
        registered_table_specs: vec![RegisteredTableSpec {
            schema: "public".to_owned(),
            table: "t".to_owned(),
            sync_key_columns: Vec::new(),
        }],
        features: Features::new(),
        bundle_limits: BundleLimits {
            max_rows_per_snapshot_session: 7,
            ..BundleLimits::default()
        },
    };
    assert_eq!(
        to_compact_vec(&caps).unwrap(),
        br#"{"protocol_version":"v1","schema_version":1,"registered_table_specs":[{"schema":"public","table":"t"}],"features":{},"bundle_limits":{"max_rows_per_snapshot_session":7}}"#
    );
}

#[test]
fn delete_rows_have_no_payload_member() {
    let pull: PullResponse = serde_json::from_str(PULL_RESPONSE).unwrap();
    let row = &pull.bundles[0].rows[0];
    assert_eq!(row.op, Op::Delete);
    assert!(row.payload.is_none());
}

// ---------------------------------------------------------------------------------------------
// Request decoding rules (01-wire.md §2.6).

#[test]
fn lenient_bodies_ignore_unknown_fields() {
    let req: PushSessionCreateRequest = decode_lenient(
        br#"{"source_bundle_id":1,"planned_row_count":2,"source_id":"spoofed","x":{"y":[1,{}]}}"#,
    )
    .unwrap();
    assert_eq!((req.source_bundle_id, req.planned_row_count), (1, 2));
    let chunk: PushSessionChunkRequest = decode_lenient(
        br#"{"rows":[{"table":"t","key":{"id":"a"},"op":"INSERT","payload":{},"extra":1}],"more":true}"#,
    )
    .unwrap();
    assert_eq!(chunk.rows.len(), 1);
}

#[test]
fn snapshot_create_rejects_unknown_fields_at_top_level() {
    assert!(matches!(
        decode_strict_optional::<SnapshotSessionCreateRequest>(br#"{"source_id":"x"}"#),
        Err(DecodeError::Shape(_))
    ));
}

#[test]
fn snapshot_create_rejects_unknown_fields_inside_source_replacement() {
    let body = br#"{"source_replacement":{"previous_source_id":"a","new_source_id":"b","reason":"history_pruned","extra":1}}"#;
    assert!(matches!(
        decode_strict_optional::<SnapshotSessionCreateRequest>(body),
        Err(DecodeError::Shape(_))
    ));
}

#[test]
fn missing_fields_decode_as_zero_values() {
    let req: PushSessionCreateRequest = decode_lenient(b"{}").unwrap();
    assert_eq!(req, PushSessionCreateRequest::default());
    let chunk: PushSessionChunkRequest = decode_lenient(b"{}").unwrap();
    assert_eq!(chunk.start_row_ordinal, 0);
    assert!(chunk.rows.is_empty());
    let replacement =
        decode_strict_optional::<SnapshotSessionCreateRequest>(br#"{"source_replacement":{}}"#)
            .unwrap()
            .unwrap()
            .source_replacement
            .unwrap();
    assert_eq!(replacement, SnapshotSourceReplacement::default());
}

#[test]
fn null_members_count_as_absent() {
    let req: PushSessionCreateRequest = decode_lenient(
        br#"{"source_bundle_id":null,"planned_row_count":null,"initialization_id":null}"#,
    )
    .unwrap();
    assert_eq!(req, PushSessionCreateRequest::default());
    let connect: ConnectRequest = decode_lenient(br#"{"has_local_pending_rows":null}"#).unwrap();
    assert!(!connect.has_local_pending_rows);
    let chunk: PushSessionChunkRequest = decode_lenient(
        br#"{"start_row_ordinal":null,"rows":[{"schema":null,"table":null,"key":null,"op":null,"base_row_version":null}]}"#,
    )
    .unwrap();
    let row = &chunk.rows[0];
    assert!(row.schema.is_empty() && row.table.is_empty() && row.op.is_empty());
    assert!(row.key.is_empty());
    assert_eq!(row.base_row_version, 0);
    assert!(row.payload.is_none());
    let chunk: PushSessionChunkRequest = decode_lenient(br#"{"rows":null}"#).unwrap();
    assert!(chunk.rows.is_empty());
    let snapshot: SnapshotSessionCreateRequest =
        decode_strict_optional(br#"{"source_replacement":null}"#)
            .unwrap()
            .unwrap();
    assert!(snapshot.source_replacement.is_none());
}

#[test]
fn lenient_bodies_ignore_data_after_the_first_value() {
    let connect: ConnectRequest =
        decode_lenient(br#"{"has_local_pending_rows":true} trailing garbage {"#).unwrap();
    assert!(connect.has_local_pending_rows);
    let connect: ConnectRequest = decode_lenient(br#"{"has_local_pending_rows":true}{"#).unwrap();
    assert!(connect.has_local_pending_rows);
}

#[test]
fn strict_body_accepts_one_complete_trailing_value() {
    let parsed = decode_strict_optional::<SnapshotSessionCreateRequest>(b"{} {} x").unwrap();
    assert_eq!(parsed, Some(SnapshotSessionCreateRequest::default()));
}

#[test]
fn strict_body_rejects_an_invalid_trailing_value() {
    assert!(matches!(
        decode_strict_optional::<SnapshotSessionCreateRequest>(b"{} x"),
        Err(DecodeError::Trailing { .. })
    ));
    assert!(decode_strict_optional::<SnapshotSessionCreateRequest>(b"{} {").is_err());
}

#[test]
fn empty_body_is_an_error_when_lenient_and_no_request_when_strict() {
    for body in [&b""[..], b"  \r\n\t "] {
        assert!(matches!(
            decode_lenient::<ConnectRequest>(body),
            Err(DecodeError::Empty)
        ));
        assert!(matches!(
            decode_strict_optional::<SnapshotSessionCreateRequest>(body),
            Ok(None)
        ));
    }
}

#[test]
fn null_body_is_all_fields_absent() {
    let connect: ConnectRequest = decode_lenient(b"null").unwrap();
    assert_eq!(connect, ConnectRequest::default());
    let chunk: PushSessionChunkRequest = decode_lenient(b" null ").unwrap();
    assert!(chunk.rows.is_empty());
    assert_eq!(
        decode_strict_optional::<SnapshotSessionCreateRequest>(b"null").unwrap(),
        Some(SnapshotSessionCreateRequest::default())
    );
}

#[test]
fn payload_null_is_kept_and_absent_payload_is_none() {
    let chunk: PushSessionChunkRequest = decode_lenient(
        br#"{"rows":[{"table":"t","key":{"id":"a"},"op":"DELETE","payload":null},{"table":"t","key":{"id":"b"},"op":"DELETE"},{"table":"t","key":{"id":"c"},"op":"INSERT","payload": {"id" : "c"}}]}"#,
    )
    .unwrap();
    assert_eq!(
        chunk.rows[0].payload.as_deref().map(RawValue::get),
        Some("null")
    );
    assert!(chunk.rows[1].payload.is_none());
    assert_eq!(
        chunk.rows[2].payload.as_deref().map(RawValue::get),
        Some(r#"{"id" : "c"}"#)
    );
}

#[test]
fn integers_with_fraction_or_exponent_or_out_of_range_are_rejected() {
    for body in [
        r#"{"source_bundle_id":1.0,"planned_row_count":1}"#,
        r#"{"source_bundle_id":1e3,"planned_row_count":1}"#,
        r#"{"source_bundle_id":1,"planned_row_count":9223372036854775808}"#,
        r#"{"source_bundle_id":"1","planned_row_count":1}"#,
    ] {
        assert!(
            matches!(
                decode_lenient::<PushSessionCreateRequest>(body.as_bytes()),
                Err(DecodeError::Shape(_))
            ),
            "{body}"
        );
    }
    assert!(
        decode_lenient::<PushSessionChunkRequest>(br#"{"start_row_ordinal":0.5,"rows":[]}"#)
            .is_err()
    );
}

#[test]
fn non_object_key_is_rejected_but_non_string_key_values_are_kept() {
    for key in [r#""abc""#, "[]", "1", "true"] {
        let body = format!(r#"{{"rows":[{{"table":"t","key":{key},"op":"DELETE"}}]}}"#);
        assert!(
            decode_lenient::<PushSessionChunkRequest>(body.as_bytes()).is_err(),
            "key {key}"
        );
    }
    let chunk: PushSessionChunkRequest =
        decode_lenient(br#"{"rows":[{"table":"t","key":{"id":5,"other":"x"},"op":"DELETE"}]}"#)
            .unwrap();
    assert_eq!(chunk.rows[0].key["id"], serde_json::json!(5));
}

#[test]
fn arrays_are_not_accepted_where_objects_are_declared() {
    assert!(decode_lenient::<ConnectRequest>(b"[true]").is_err());
    assert!(decode_lenient::<PushSessionChunkRequest>(br#"{"rows":[["public","t"]]}"#).is_err());
    assert!(decode_lenient::<PushSessionChunkRequest>(br#"{"rows":{}}"#).is_err());
    assert!(
        decode_strict_optional::<SnapshotSessionCreateRequest>(
            br#"{"source_replacement":["a","b","history_pruned"]}"#
        )
        .is_err()
    );
}

#[test]
fn malformed_bodies_are_syntax_errors() {
    for body in [
        &b"{"[..],
        b"{\"has_local_pending_rows\":tru}",
        b"x",
        b"{'a':1}",
    ] {
        assert!(
            matches!(
                decode_lenient::<ConnectRequest>(body),
                Err(DecodeError::Syntax { .. })
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn client_push_rows_encode_in_reference_order() {
    let rows = vec![
        PushRequestRow {
            schema: "business".to_owned(),
            table: "users".to_owned(),
            key: [("id".to_owned(), serde_json::json!("k"))].into(),
            op: "UPDATE".to_owned(),
            base_row_version: 4,
            payload: Some(RawValue::from_string(r#"{"id":"k","n":"<b>"}"#.to_owned()).unwrap()),
        },
        PushRequestRow {
            schema: "business".to_owned(),
            table: "users".to_owned(),
            key: [("id".to_owned(), serde_json::json!("j"))].into(),
            op: "DELETE".to_owned(),
            base_row_version: 5,
            payload: None,
        },
    ];
    let chunk = PushSessionChunkRequest {
        start_row_ordinal: 2,
        rows,
    };
    assert_eq!(
        String::from_utf8(to_compact_vec(&chunk).unwrap()).unwrap(),
        r#"{"start_row_ordinal":2,"rows":[{"schema":"business","table":"users","key":{"id":"k"},"op":"UPDATE","base_row_version":4,"payload":{"id":"k","n":"\u003cb\u003e"}},{"schema":"business","table":"users","key":{"id":"j"},"op":"DELETE","base_row_version":5}]}"#
    );
    let create = PushSessionCreateRequest {
        source_bundle_id: 7,
        planned_row_count: 2,
        initialization_id: String::new(),
    };
    assert_eq!(
        to_compact_vec(&create).unwrap(),
        br#"{"source_bundle_id":7,"planned_row_count":2}"#
    );
    assert_eq!(
        to_compact_vec(&SnapshotSessionCreateRequest::default()).unwrap(),
        b"{}"
    );
}

#[test]
fn source_replacement_reasons_are_the_four_wire_words() {
    let words: Vec<&str> = SourceReplacementReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        words,
        [
            "history_pruned",
            "source_sequence_out_of_order",
            "source_sequence_changed",
            "source_retired"
        ]
    );
    assert_eq!(
        SourceReplacementReason::from_wire("history_pruned"),
        Some(SourceReplacementReason::HistoryPruned)
    );
    assert_eq!(SourceReplacementReason::from_wire(" history_pruned"), None);
}
