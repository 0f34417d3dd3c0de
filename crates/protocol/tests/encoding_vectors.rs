//! Reproduces every vector of 03-encoding.md Appendix A byte for byte.
//!
//! The vectors were derived by running the reference's own functions; the file
//! `vectors/encoding.jsonl` is the appendix verbatim, so a failure here means our encoding
//! differs from what a Go peer computes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeMap;

use oversync_protocol::codec;
use oversync_protocol::gcj::{self, Document, Node};
use oversync_protocol::hash::{self, BundleHash, HashRow, RequestHashRow};
use oversync_protocol::key::{self, LocalKeyKind, SyncKeyKind};
use oversync_protocol::op::Op;
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/encoding.jsonl");

fn vectors() -> Vec<Value> {
    VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("vector line is JSON"))
        .collect()
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} in {v}"))
}

fn bytes_of(v: &Value, text: &str, hex_field: &str) -> Vec<u8> {
    match v.get(text).and_then(Value::as_str) {
        Some(t) => t.as_bytes().to_vec(),
        None => hex::decode(s(v, hex_field)).unwrap(),
    }
}

/// Owned parts of one bundle row read from a vector's `rows_json`.
struct OwnedRow {
    schema: String,
    table: String,
    key: BTreeMap<String, String>,
    op: Op,
    version: i64,
    payload: Option<Vec<u8>>,
}

fn rows_of(rows_json: &str, version_field: &str) -> Vec<OwnedRow> {
    let doc = Document::parse(rows_json.as_bytes()).unwrap();
    let Node::Array(items) = doc.node(doc.root()) else {
        panic!("rows_json is an array")
    };
    items
        .iter()
        .map(|item| {
            let Node::Object(members) = doc.node(*item) else {
                panic!("row is an object")
            };
            let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, id)| *id);
            let text = |name: &str| match doc.node(get(name).unwrap()) {
                Node::String(s) => s.clone(),
                other => panic!("{name} is {other:?}"),
            };
            let Node::Object(key_members) = doc.node(get("key").unwrap()) else {
                panic!("key is an object")
            };
            let key = key_members
                .iter()
                .map(|(k, id)| match doc.node(*id) {
                    Node::String(s) => (k.clone(), s.clone()),
                    other => panic!("key value {other:?}"),
                })
                .collect();
            let Node::Number(version) = doc.node(get(version_field).unwrap()) else {
                panic!("{version_field} is a number")
            };
            let payload = get("payload").map(|id| {
                let mut out = Vec::new();
                doc.write_node_to(id, &mut out);
                out
            });
            OwnedRow {
                schema: text("schema"),
                table: text("table"),
                key,
                op: Op::parse_exact(&text("op")).unwrap(),
                version: *version as i64,
                payload,
            }
        })
        .collect()
}

fn check(v: &Value) {
    match s(v, "kind") {
        "canonical_json" => {
            let input = bytes_of(v, "input", "input_hex");
            let result = gcj::canonicalize(&input);
            if v.get("error").and_then(Value::as_bool) == Some(true) {
                assert!(result.is_err(), "expected an error, got {result:?}");
            } else {
                let expected = bytes_of(v, "output", "output_hex");
                assert_eq!(
                    String::from_utf8_lossy(&result.unwrap()),
                    String::from_utf8_lossy(&expected)
                );
            }
        }
        "bundle_hash" => {
            let rows = rows_of(s(v, "rows_json"), "row_version");
            let hash_rows = rows.iter().map(|r| HashRow {
                schema: &r.schema,
                table: &r.table,
                key: &r.key,
                op: r.op,
                row_version: r.version,
                payload: r.payload.as_deref(),
            });
            let mut preimage = Vec::new();
            hash::write_bundle_preimage(hash_rows.clone(), &mut preimage).unwrap();
            assert_eq!(String::from_utf8(preimage).unwrap(), s(v, "canonical"));
            let digest = hash::bundle_digest(hash_rows).unwrap();
            assert_eq!(digest.hash.to_hex(), s(v, "bundle_hash"));
            assert_eq!(digest.byte_count, v["byte_count"].as_i64().unwrap());
        }
        "push_request_hash" => {
            let rows = rows_of(s(v, "rows_json"), "base_row_version");
            let hash_rows = rows.iter().map(|r| RequestHashRow {
                schema: &r.schema,
                table: &r.table,
                key: &r.key,
                op: r.op,
                base_row_version: r.version,
                payload: r.payload.as_deref(),
            });
            assert_eq!(
                hash::canonical_request_hash(hash_rows).unwrap(),
                s(v, "sha256")
            );
        }
        "render_bundle_hash" => {
            let hash = BundleHash::from_hex(s(v, "raw_hex")).unwrap();
            assert_eq!(hash.to_hex(), s(v, "rendered"));
        }
        "key_bytes" => {
            let kind = match s(v, "key_type") {
                "uuid" => SyncKeyKind::Uuid,
                _ => SyncKeyKind::Text,
            };
            let result = key::encode_key_bytes(kind, s(v, "key"));
            if v.get("error").and_then(Value::as_bool) == Some(true) {
                assert!(result.is_err(), "expected rejection, got {result:?}");
            } else {
                let bytes = result.unwrap();
                assert_eq!(hex::encode(&bytes), s(v, "key_bytes_hex"));
                assert_eq!(key::decode_key_bytes(kind, &bytes).unwrap(), s(v, "key"));
            }
        }
        "client_uuid_decode" => {
            let input = s(v, "input");
            let strict = key::decode_wire_uuid_strict(input).map(hex::encode);
            let lenient = key::decode_local_uuid_lenient(input).map(hex::encode);
            assert_eq!(strict.as_deref(), v["wire_strict_hex"].as_str(), "strict");
            assert_eq!(
                lenient.as_deref(),
                v["local_lenient_hex"].as_str(),
                "lenient"
            );
        }
        "base64_decode" => {
            let input = s(v, "input");
            let std = codec::base64_decode_lenient(input).ok().map(hex::encode);
            assert_eq!(std.as_deref(), v["std_bytes_hex"].as_str(), "std decoder");
            let exact = codec::base64_decode_exact(input).is_ok();
            assert_eq!(exact, v["exact_ok"].as_bool().unwrap(), "exact decoder");
        }
        "blob_hex_to_wire" => {
            assert_eq!(
                codec::blob_hex_to_wire(s(v, "local_hex")).unwrap(),
                s(v, "wire_base64")
            );
        }
        "bytea_wire" => {
            assert_eq!(
                codec::bytea_wire_to_pg(s(v, "wire_base64")).unwrap(),
                s(v, "pg_text")
            );
        }
        "bytea_emit" => {
            let result = codec::bytea_pg_to_wire(s(v, "pg_text"));
            if v.get("error").and_then(Value::as_bool) == Some(true) {
                assert!(result.is_err());
            } else {
                assert_eq!(result.unwrap(), s(v, "wire_base64"));
            }
        }
        "local_key_json" => {
            let kind = match s(v, "local_kind") {
                "uuid-blob" => LocalKeyKind::UuidBlob,
                _ => LocalKeyKind::Text,
            };
            let local = key::local_key_from_wire(kind, s(v, "wire_key")).unwrap();
            assert_eq!(local, s(v, "local_pk"));
            assert_eq!(
                key::wire_key_from_local(kind, &local).unwrap(),
                s(v, "wire_key")
            );
            assert_eq!(
                key::local_key_json(s(v, "key_column"), &local),
                s(v, "key_json")
            );
        }
        "op_code" => {
            let op = Op::parse_exact(s(v, "op")).unwrap();
            assert_eq!(i64::from(op.code()), v["code"].as_i64().unwrap());
        }
        "sync_key_kind" => {
            let kind = SyncKeyKind::from_udt_name(s(v, "key_type")).unwrap();
            assert_eq!(i64::from(kind.code()), v["code"].as_i64().unwrap());
        }
        other => panic!("unknown vector kind {other}"),
    }
}

#[test]
fn every_appendix_a_vector_is_reproduced() {
    let all = vectors();
    assert_eq!(all.len(), 134, "the appendix has 134 vectors");
    let mut failures = Vec::new();
    for (i, v) in all.iter().enumerate() {
        if let Err(panic) = std::panic::catch_unwind(|| check(v)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("vector {} ({}): {msg}", i + 1, v["note"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn worked_bundle_hash_examples_of_section_3_2_7() {
    // Example 1: one INSERT into public.users.
    let key = BTreeMap::from([("id".to_owned(), "row-1".to_owned())]);
    for payload in [
        &br#"{"name":"Alice","email":"alice@example.com"}"#[..],
        br#"{"email":"alice@example.com","name":"Alice"}"#,
    ] {
        let digest = hash::bundle_digest([HashRow {
            schema: "public",
            table: "users",
            key: &key,
            op: Op::Insert,
            row_version: 3,
            payload: Some(payload),
        }])
        .unwrap();
        assert_eq!(
            digest.hash.to_hex(),
            "677c5687bb91a8c2d34bc9e2e4f8c1d47981957bd876ba090c39b5e263d26b78"
        );
        assert_eq!(digest.byte_count, 159);
    }

    // Example 2: a users INSERT whose payload comes from PostgreSQL's to_jsonb text (bytea
    // converted to base64 first), then a posts DELETE.
    let pg_text = br#"{"id": "550e8400-e29b-41d4-a716-446655440000", "name": "Ada <admin>", "note": null, "score": 12.50, "avatar": "\\x001122ff", "created_at": "2026-03-24T18:42:11+00:00"}"#;
    let mut doc = Document::parse(pg_text).unwrap();
    let avatar = doc.root_member("avatar").unwrap();
    let Node::String(pg_bytea) = doc.node(avatar).clone() else {
        panic!("avatar is a string")
    };
    doc.set_scalar(
        avatar,
        Node::String(codec::bytea_pg_to_wire(&pg_bytea).unwrap()),
    );
    let wire_payload = doc.to_vec();
    assert_eq!(
        String::from_utf8(wire_payload.clone()).unwrap(),
        r#"{"avatar":"ABEi/w==","created_at":"2026-03-24T18:42:11+00:00","id":"550e8400-e29b-41d4-a716-446655440000","name":"Ada \u003cadmin\u003e","note":null,"score":12.5}"#
    );
    let users_key = BTreeMap::from([(
        "id".to_owned(),
        "550e8400-e29b-41d4-a716-446655440000".to_owned(),
    )]);
    let posts_key = BTreeMap::from([("id".to_owned(), "doc-42".to_owned())]);
    let digest = hash::bundle_digest([
        HashRow {
            schema: "business",
            table: "users",
            key: &users_key,
            op: Op::Insert,
            row_version: 7,
            payload: Some(&wire_payload),
        },
        HashRow {
            schema: "business",
            table: "posts",
            key: &posts_key,
            op: Op::Delete,
            row_version: 7,
            payload: None,
        },
    ])
    .unwrap();
    assert_eq!(
        digest.hash.to_hex(),
        "f628e6afafd0e6c181468d616cd3d19aa92d99346101178dd60e75987d8bc0a5"
    );
    assert_eq!(digest.byte_count, 431);

    // A client storing the users key as a 16-byte BLOB re-derives the same wire key.
    let local = key::local_key_from_wire(LocalKeyKind::UuidBlob, &users_key["id"]).unwrap();
    assert_eq!(local, "550e8400e29b41d4a716446655440000");
    assert_eq!(
        key::wire_key_from_local(LocalKeyKind::UuidBlob, &local).unwrap(),
        users_key["id"]
    );
}
