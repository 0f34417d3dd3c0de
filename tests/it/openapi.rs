//! Our responses against the reference's OpenAPI schemas, and our own OpenAPI document.
//!
//! The reference file (`../shared/reference/two_way_sync.openapi.yaml`) is data: it is loaded
//! at test time, never copied into the project. Where 01-wire.md §12 says the Go code differs
//! from it, the Go code wins and the schema is adjusted here, one named exception at a time.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, user_insert};

const USER_A: &str = "550e8400-e29b-41d4-a716-446655440000";

/// `$OVERSYNC_SHARED_DIR/reference/…`, by default the `shared/` folder beside the checkout
/// (where developers and CI have it).
fn reference_path() -> PathBuf {
    let shared = std::env::var_os("OVERSYNC_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    shared.join("reference/two_way_sync.openapi.yaml")
}

/// OpenAPI 3.0 `nullable: true` becomes a JSON Schema type union, recursively.
fn to_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".to_owned(), json!([t, "null"]));
                } else if map.contains_key("$ref") || map.contains_key("allOf") {
                    let inner = Value::Object(std::mem::take(map));
                    map.insert("anyOf".to_owned(), json!([inner, {"type": "null"}]));
                }
            }
            for child in map.values_mut() {
                to_json_schema(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

/// Reference component schemas with the documented Go-code exceptions applied.
fn reference_components() -> Value {
    let path = reference_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the reference OpenAPI file {} ({e}); put shared/ beside the checkout or set OVERSYNC_SHARED_DIR",
            path.display()
        )
    });
    let mut doc: Value = serde_norway::from_str(&text).expect("reference OpenAPI is YAML");
    let schemas = &mut doc["components"]["schemas"];
    to_json_schema(schemas);
    // 01-wire.md §12 #3: the Go encoder omits next_expected_row_ordinal when it is 0.
    for name in [
        "PushSessionCreateStagingResponse",
        "PushSessionCreateResponse",
    ] {
        if let Some(required) = schemas
            .get_mut(name)
            .and_then(|s| s.get_mut("required"))
            .and_then(Value::as_array_mut)
        {
            required.retain(|r| r != "next_expected_row_ordinal");
        }
    }
    json!({ "components": { "schemas": schemas.clone() } })
}

fn assert_matches(components: &Value, schema_name: &str, instance: &Value) {
    let mut schema = components.clone();
    schema["$ref"] = json!(format!("#/components/schemas/{schema_name}"));
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("schema {schema_name} compiles: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{schema_name} rejects {instance}:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_reference_schemas_reject_what_the_protocol_forbids() {
    // Guards the validation above against passing vacuously.
    let components = reference_components();
    let mut schema = components.clone();
    schema["$ref"] = json!("#/components/schemas/ConnectResponse");
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(!validator.is_valid(&json!({})));
    assert!(!validator.is_valid(&json!({"resolution": 7})));
    assert!(validator.is_valid(&json!({"resolution": "remote_authoritative"})));
}

#[tokio::test]
async fn responses_validate_against_the_reference_schemas() {
    let components = reference_components();
    let server = TestServer::start().await;
    let device = server.device("alice", "dev-1").await;
    let connect = device
        .call(
            Method::POST,
            "/sync/connect",
            Some(r#"{"has_local_pending_rows":false}"#),
        )
        .await;
    assert_matches(&components, "ConnectResponse", &connect.json());
    let capabilities = device.call(Method::GET, "/sync/capabilities", None).await;
    assert_matches(&components, "CapabilitiesResponse", &capabilities.json());
    let status = server.send(Method::GET, "/syncx/status", &[], None).await;
    assert_matches(&components, "StatusResponse", &status.json());

    let create = device
        .call(
            Method::POST,
            "/sync/push-sessions",
            Some(r#"{"source_bundle_id":1,"planned_row_count":1}"#),
        )
        .await
        .json();
    assert_matches(&components, "PushSessionCreateResponse", &create);
    let push_id = create["push_id"].as_str().unwrap().to_owned();
    let chunk = device
        .call(
            Method::POST,
            &format!("/sync/push-sessions/{push_id}/chunks"),
            Some(&format!(
                r#"{{"start_row_ordinal":0,"rows":[{}]}}"#,
                user_insert(USER_A, "ada")
            )),
        )
        .await
        .json();
    assert_matches(&components, "PushSessionChunkResponse", &chunk);
    let commit = device
        .call(
            Method::POST,
            &format!("/sync/push-sessions/{push_id}/commit"),
            None,
        )
        .await
        .json();
    assert_matches(&components, "PushSessionCommitResponse", &commit);
    let replay = device
        .call(
            Method::POST,
            "/sync/push-sessions",
            Some(r#"{"source_bundle_id":1,"planned_row_count":1}"#),
        )
        .await
        .json();
    assert_eq!(replay["status"], "already_committed");
    assert_matches(&components, "PushSessionCreateResponse", &replay);
    let rows = device
        .call(Method::GET, "/sync/committed-bundles/1/rows", None)
        .await
        .json();
    assert_matches(&components, "CommittedBundleRowsResponse", &rows);
    let pull = device.call(Method::GET, "/sync/pull", None).await.json();
    assert_matches(&components, "PullResponse", &pull);

    let stale = format!(
        r#"[{{"schema":"business","table":"users","key":{{"id":"{USER_A}"}},"op":"DELETE","base_row_version":0}}]"#
    );
    let conflict = device.push(2, &stale).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_matches(&components, "PushConflictResponse", &conflict.json());
    let error = device
        .call(Method::GET, "/sync/committed-bundles/9/rows", None)
        .await;
    assert_matches(&components, "ErrorResponse", &error.json());

    let snapshot = device
        .call(Method::POST, "/sync/snapshot-sessions", None)
        .await
        .json();
    assert_matches(&components, "SnapshotSession", &snapshot);
    let snapshot_id = snapshot["snapshot_id"].as_str().unwrap();
    let chunk = device
        .call(
            Method::GET,
            &format!("/sync/snapshot-sessions/{snapshot_id}"),
            None,
        )
        .await
        .json();
    assert_eq!(chunk["rows"].as_array().unwrap().len(), 1);
    assert_matches(&components, "SnapshotChunkResponse", &chunk);
}

#[tokio::test]
async fn the_served_openapi_document_lists_every_route() {
    let server = TestServer::start().await;
    let reply = server.send(Method::GET, "/openapi.json", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/sync/connect",
        "/sync/push-sessions",
        "/sync/push-sessions/{push_id}/chunks",
        "/sync/push-sessions/{push_id}/commit",
        "/sync/push-sessions/{push_id}",
        "/sync/committed-bundles/{bundle_seq}/rows",
        "/sync/pull",
        "/sync/watch",
        "/sync/snapshot-sessions",
        "/sync/snapshot-sessions/{snapshot_id}",
        "/sync/capabilities",
        "/syncx/health",
        "/syncx/status",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "PushRequestRow",
        "BundleRow",
        "PushConflictDetails",
        "SnapshotRow",
        "StatusResponse",
    ] {
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
}
