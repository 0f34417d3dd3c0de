//! Payload and key codecs between SQLite values, local payloads and wire payloads (client
//! chapter §2.4, §2.5; encoding chapter §3.4.6, §3.5.2–§3.5.6).
//!
//! * local → wire (`upload_payload`): BLOB columns from lower-case hex to canonical UUID text
//!   (key and FK columns) or standard base64, then re-encoded with Go's encoder rules (sorted
//!   members, Go escaping, Go float formatting) — but integer literals stay exact (§12 B3).
//! * wire → SQLite (`wire_values`): exactly the table's columns; BLOBs decoded strictly; JSON
//!   integers bound as `i64` (§12 B3), other numbers as `f64`, booleans as 1/0.
//! * local → SQLite (`local_values`): the same shape for local payloads, BLOBs decoded from
//!   hex — used wherever the reference wrongly fed local payloads to the wire decoder (§12 B1).
//! * keys: local key string ↔ wire key string ↔ SQL parameter, through
//!   `oversync_protocol::key`.

use oversync_protocol::codec;
use oversync_protocol::key::{self, LocalKeyKind};
use rusqlite::types::Value;
use serde_json::Value as Json;

use crate::catalog::ManagedTable;

/// A payload or key that does not fit the table it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not a JSON object.
    #[error("payload for {table} must be a JSON object")]
    NotAnObject {
        /// The table.
        table: String,
    },
    /// Not valid JSON at all.
    #[error("payload for {table} is not valid JSON: {message}")]
    InvalidJson {
        /// The table.
        table: String,
        /// The parser's message.
        message: String,
    },
    /// Member count differs from the column count.
    #[error("payload for {table} must contain every table column")]
    ColumnCount {
        /// The table.
        table: String,
    },
    /// A column's member is absent.
    #[error("payload for {table} is missing column {column}")]
    MissingColumn {
        /// The table.
        table: String,
        /// The lower-cased column.
        column: String,
    },
    /// A BLOB column value is not a string.
    #[error("payload for {table} column {column} must be string-encoded blob data")]
    BlobNotString {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A BLOB value that does not decode.
    #[error("payload for {table} column {column}: cannot decode {value:?} as {expected}")]
    BlobEncoding {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The value.
        value: String,
        /// The encoding that was required.
        expected: &'static str,
    },
    /// An object or array value, which SQLite cannot bind.
    #[error("payload for {table} column {column} holds a JSON object or array")]
    Unbindable {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A key that cannot be converted between its forms.
    #[error("key for {table}: {message}")]
    Key {
        /// The table.
        table: String,
        /// What was wrong.
        message: String,
    },
}

fn parse_object(
    table: &ManagedTable,
    text: &str,
) -> Result<serde_json::Map<String, Json>, PayloadError> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(PayloadError::NotAnObject {
            table: table.name.clone(),
        }),
        Err(e) => Err(PayloadError::InvalidJson {
            table: table.name.clone(),
            message: e.to_string(),
        }),
    }
}

fn blob_error(
    table: &ManagedTable,
    column: &str,
    value: &str,
    expected: &'static str,
) -> PayloadError {
    PayloadError::BlobEncoding {
        table: table.name.clone(),
        column: column.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

/// Converts a local payload (BLOBs as hex) into the wire payload sent in a push row (§2.5.3).
/// Members keep their names; the result is Go-encoded with sorted members.
pub(crate) fn upload_payload(table: &ManagedTable, local: &str) -> Result<String, PayloadError> {
    let mut map = parse_object(table, local)?;
    for column in table.columns.iter().filter(|c| c.is_blob) {
        let Some(Json::String(text)) = map.get(&column.member) else {
            continue;
        };
        if text.is_empty() {
            continue;
        }
        let wire = if column.is_uuid_blob {
            key::decode_local_uuid_lenient(text)
                .map(|b| key::render_uuid(&b))
                .ok_or_else(|| blob_error(table, &column.member, text, "a UUID"))?
        } else {
            codec::blob_hex_to_wire(text)
                .map_err(|_| blob_error(table, &column.member, text, "hex"))?
        };
        map.insert(column.member.clone(), Json::String(wire));
    }
    go_encode(&Json::Object(map))
}

/// Go's `encoding/json` output for a parsed value, integers exact.
pub(crate) fn go_encode(value: &Json) -> Result<String, PayloadError> {
    let bytes =
        oversync_protocol::json::to_compact_vec(value).map_err(|e| PayloadError::InvalidJson {
            table: String::new(),
            message: e.to_string(),
        })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Which encoding a payload's BLOB values use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobForm {
    /// Canonical UUID text / canonical base64 (received from the server).
    Wire,
    /// Lower-case hex (captured locally).
    Local,
}

/// Decodes a wire payload into one SQL value per column, in column order (§2.5.4).
pub(crate) fn wire_values(table: &ManagedTable, wire: &str) -> Result<Vec<Value>, PayloadError> {
    values(table, wire, BlobForm::Wire)
}

/// Decodes a local payload (BLOBs as hex) into one SQL value per column, in column order.
pub(crate) fn local_values(table: &ManagedTable, local: &str) -> Result<Vec<Value>, PayloadError> {
    values(table, local, BlobForm::Local)
}

fn values(table: &ManagedTable, text: &str, form: BlobForm) -> Result<Vec<Value>, PayloadError> {
    let map = parse_object(table, text)?;
    if map.len() != table.columns.len() {
        return Err(PayloadError::ColumnCount {
            table: table.name.clone(),
        });
    }
    let mut out = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        let Some(value) = map.get(&column.member) else {
            return Err(PayloadError::MissingColumn {
                table: table.name.clone(),
                column: column.member.clone(),
            });
        };
        if column.is_blob && !value.is_null() {
            let Json::String(text) = value else {
                return Err(PayloadError::BlobNotString {
                    table: table.name.clone(),
                    column: column.member.clone(),
                });
            };
            let bytes = match form {
                BlobForm::Wire if column.is_uuid_blob => key::decode_wire_uuid_strict(text)
                    .map(|b| b.to_vec())
                    .ok_or_else(|| {
                        blob_error(table, &column.member, text, "canonical wire UUID")
                    })?,
                BlobForm::Wire if text.is_empty() => Vec::new(),
                BlobForm::Wire => codec::base64_decode_exact(text)
                    .map_err(|_| blob_error(table, &column.member, text, "canonical base64"))?,
                BlobForm::Local => codec::hex_decode(text)
                    .map_err(|_| blob_error(table, &column.member, text, "hex"))?,
            };
            out.push(Value::Blob(bytes));
            continue;
        }
        out.push(match value {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Integer(i64::from(*b)),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Text(s.clone()),
            Json::Array(_) | Json::Object(_) => {
                return Err(PayloadError::Unbindable {
                    table: table.name.clone(),
                    column: column.member.clone(),
                });
            }
        });
    }
    Ok(out)
}

/// The wire key string of a local key (lenient UUID decoding for BLOB keys).
pub(crate) fn wire_key(table: &ManagedTable, local_key: &str) -> Result<String, PayloadError> {
    key::wire_key_from_local(table.key_kind, local_key).map_err(|e| PayloadError::Key {
        table: table.name.clone(),
        message: e.to_string(),
    })
}

/// The local key string of a received wire key (strict UUID decoding for BLOB keys).
pub(crate) fn local_key(table: &ManagedTable, wire_key: &str) -> Result<String, PayloadError> {
    key::local_key_from_wire(table.key_kind, wire_key).map_err(|e| PayloadError::Key {
        table: table.name.clone(),
        message: e.to_string(),
    })
}

/// The SQL value a local key binds as: text, or the BLOB's bytes (local blob decoder: `""`,
/// any UUID spelling, exact base64, even-length hex).
pub(crate) fn key_param(table: &ManagedTable, local_key: &str) -> Result<Value, PayloadError> {
    match table.key_kind {
        LocalKeyKind::Text => Ok(Value::Text(local_key.to_owned())),
        LocalKeyKind::UuidBlob => {
            if local_key.is_empty() {
                return Ok(Value::Blob(Vec::new()));
            }
            if let Some(bytes) = key::decode_local_uuid_lenient(local_key) {
                return Ok(Value::Blob(bytes.to_vec()));
            }
            if let Ok(bytes) = codec::base64_decode_exact(local_key) {
                return Ok(Value::Blob(bytes));
            }
            codec::hex_decode(local_key)
                .map(Value::Blob)
                .map_err(|_| PayloadError::Key {
                    table: table.name.clone(),
                    message: format!("cannot decode local blob key {local_key:?}"),
                })
        }
    }
}

/// Reads the key string out of a `key_json` object (`{"<member>": "<local key>"}`).
pub(crate) fn key_from_key_json(
    table: &ManagedTable,
    key_json: &str,
) -> Result<String, PayloadError> {
    let map = parse_object(table, key_json)?;
    match map.get(&table.key().member) {
        Some(Json::String(s)) => Ok(s.clone()),
        _ => Err(PayloadError::Key {
            table: table.name.clone(),
            message: format!(
                "key_json {key_json} lacks string member {}",
                table.key().member
            ),
        }),
    }
}

/// Takes the table's key out of a received key object: the lower-cased key column's member,
/// else the configured spelling; it must be a string.
pub(crate) fn key_from_wire_object(
    table: &ManagedTable,
    key: &std::collections::BTreeMap<String, String>,
) -> Result<String, PayloadError> {
    key.get(&table.key().member)
        .or_else(|| key.get(&table.key().name))
        .cloned()
        .ok_or_else(|| PayloadError::Key {
            table: table.name.clone(),
            message: format!("bundle row key is missing {}", table.key().member),
        })
}

/// The GCJ re-encoding used to compare payloads (parse, re-encode with sorted members).
pub(crate) fn normalized(text: &str) -> Option<Vec<u8>> {
    oversync_protocol::gcj::canonicalize(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::config::{Config, SyncTable};

    fn catalog(ddl: &str, tables: &[(&str, &str)]) -> Catalog {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(ddl).unwrap();
        let config = Config::new(
            "business",
            tables.iter().map(|(t, k)| SyncTable::new(*t, *k)).collect(),
        );
        Catalog::load(&conn, &config).unwrap()
    }

    fn typed() -> Catalog {
        catalog(
            "CREATE TABLE typed (id TEXT PRIMARY KEY, name TEXT, note TEXT, count_value INTEGER, enabled_flag INTEGER, rating REAL, data BLOB, created_at TEXT);",
            &[("typed", "id")],
        )
    }

    fn files() -> Catalog {
        catalog(
            "CREATE TABLE files (id BLOB PRIMARY KEY, data BLOB);
             CREATE TABLE refs (id BLOB PRIMARY KEY, file_id BLOB REFERENCES files(id), raw BLOB);",
            &[("files", "id"), ("refs", "id")],
        )
    }

    #[test]
    fn upload_base64_encodes_blobs_and_keeps_nulls() {
        let cat = typed();
        let local = r#"{"id":"typed-blob","name":"Blob Row","note":null,"count_value":null,"enabled_flag":0,"rating":1.25,"data":"001122ff","created_at":"2026-03-24T18:42:11Z"}"#;
        assert_eq!(
            upload_payload(cat.table("typed").unwrap(), local).unwrap(),
            r#"{"count_value":null,"created_at":"2026-03-24T18:42:11Z","data":"ABEi/w==","enabled_flag":0,"id":"typed-blob","name":"Blob Row","note":null,"rating":1.25}"#
        );
    }

    #[test]
    fn upload_writes_uuid_text_for_blob_key_and_reference_columns() {
        let cat = files();
        let local = r#"{"id":"550e8400e29b41d4a716446655440000","file_id":"550e8400e29b41d4a716446655440001","raw":"68656c6c6f"}"#;
        assert_eq!(
            upload_payload(cat.table("refs").unwrap(), local).unwrap(),
            r#"{"file_id":"550e8400-e29b-41d4-a716-446655440001","id":"550e8400-e29b-41d4-a716-446655440000","raw":"aGVsbG8="}"#
        );
    }

    #[test]
    fn upload_keeps_large_integers_exact_and_renders_reals_like_go() {
        let cat = typed();
        let local = r#"{"id":"x","name":"<&>","note":null,"count_value":9007199254740993,"enabled_flag":1,"rating":42.0,"data":null,"created_at":null}"#;
        let wire = upload_payload(cat.table("typed").unwrap(), local).unwrap();
        assert!(wire.contains(r#""count_value":9007199254740993"#), "{wire}");
        assert!(wire.contains(r#""rating":42}"#), "{wire}");
        assert!(wire.contains(r#""name":"\u003c\u0026\u003e""#), "{wire}");
    }

    #[test]
    fn upload_rejects_invalid_hex_blob() {
        let cat = typed();
        let local = r#"{"id":"x","name":null,"note":null,"count_value":null,"enabled_flag":null,"rating":null,"data":"zz","created_at":null}"#;
        assert!(matches!(
            upload_payload(cat.table("typed").unwrap(), local),
            Err(PayloadError::BlobEncoding { .. })
        ));
    }

    #[test]
    fn wire_values_decode_uuid_and_base64_blobs() {
        let cat = files();
        let values = wire_values(
            cat.table("refs").unwrap(),
            r#"{"id":"550E8400-E29B-41D4-A716-446655440000","file_id":null,"raw":"ABEi/w=="}"#,
        )
        .unwrap();
        assert_eq!(
            values,
            vec![
                Value::Blob(codec::hex_decode("550e8400e29b41d4a716446655440000").unwrap()),
                Value::Null,
                Value::Blob(vec![0x00, 0x11, 0x22, 0xff]),
            ]
        );
    }

    #[test]
    fn wire_values_reject_hex_where_base64_is_required() {
        let cat = files();
        let err = wire_values(
            cat.table("files").unwrap(),
            r#"{"id":"550e8400-e29b-41d4-a716-446655440000","data":"68656c6c6f"}"#,
        )
        .unwrap_err();
        assert!(matches!(err, PayloadError::BlobEncoding { .. }), "{err}");
    }

    #[test]
    fn wire_values_reject_non_canonical_uuid_key() {
        let cat = files();
        let err = wire_values(
            cat.table("files").unwrap(),
            r#"{"id":"550e8400e29b41d4a716446655440000","data":null}"#,
        )
        .unwrap_err();
        assert!(matches!(err, PayloadError::BlobEncoding { .. }));
    }

    #[test]
    fn wire_values_require_every_column_exactly() {
        let cat = files();
        let table = cat.table("files").unwrap();
        assert!(matches!(
            wire_values(table, r#"{"id":"550e8400-e29b-41d4-a716-446655440000"}"#),
            Err(PayloadError::ColumnCount { .. })
        ));
        assert!(matches!(
            wire_values(
                table,
                r#"{"id":"550e8400-e29b-41d4-a716-446655440000","other":null}"#
            ),
            Err(PayloadError::MissingColumn { .. })
        ));
    }

    #[test]
    fn wire_values_bind_integers_exactly_and_booleans_as_integers() {
        let cat = typed();
        let values = wire_values(
            cat.table("typed").unwrap(),
            r#"{"id":"x","name":"n","note":null,"count_value":9007199254740993,"enabled_flag":true,"rating":1.5,"data":"","created_at":"t"}"#,
        )
        .unwrap();
        assert_eq!(values[3], Value::Integer(9_007_199_254_740_993));
        assert_eq!(values[4], Value::Integer(1));
        assert_eq!(values[5], Value::Real(1.5));
        assert_eq!(values[6], Value::Blob(Vec::new()));
    }

    #[test]
    fn local_values_decode_hex_blobs_even_when_they_look_like_base64() {
        // "00112233" is valid base64 too; the local decoder must read it as hex (§12 B1).
        let cat = files();
        let values = local_values(
            cat.table("files").unwrap(),
            r#"{"id":"550e8400e29b41d4a716446655440000","data":"00112233"}"#,
        )
        .unwrap();
        assert_eq!(values[1], Value::Blob(vec![0x00, 0x11, 0x22, 0x33]));
    }

    #[test]
    fn blob_keys_convert_between_local_and_wire_forms() {
        let cat = files();
        let table = cat.table("files").unwrap();
        let wire = wire_key(table, "550e8400e29b41d4a716446655440000").unwrap();
        assert_eq!(wire, "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(
            local_key(table, &wire).unwrap(),
            "550e8400e29b41d4a716446655440000"
        );
        assert!(local_key(table, "550e8400e29b41d4a716446655440000").is_err());
        assert_eq!(
            key_param(table, "550e8400e29b41d4a716446655440000").unwrap(),
            Value::Blob(codec::hex_decode("550e8400e29b41d4a716446655440000").unwrap())
        );
    }

    #[test]
    fn local_uuid_spellings_from_the_protocol_vectors_all_reach_the_same_wire_key() {
        let cat = files();
        let table = cat.table("files").unwrap();
        for spelling in [
            "550e8400-e29b-41d4-a716-446655440000",
            "550E8400-E29B-41D4-A716-446655440000",
            "550e8400e29b41d4a716446655440000",
            "{550e8400-e29b-41d4-a716-446655440000}",
            "urn:uuid:550e8400-e29b-41d4-a716-446655440000",
            "VQ6EAOKbQdSnFkRmVUQAAA==",
        ] {
            assert_eq!(
                wire_key(table, spelling).unwrap(),
                "550e8400-e29b-41d4-a716-446655440000",
                "{spelling}"
            );
        }
        assert!(wire_key(table, " 550e8400-e29b-41d4-a716-446655440000").is_err());
    }

    #[test]
    fn text_keys_pass_through_unchanged() {
        let cat = typed();
        let table = cat.table("typed").unwrap();
        assert_eq!(wire_key(table, "doc-42").unwrap(), "doc-42");
        assert_eq!(local_key(table, "doc-42").unwrap(), "doc-42");
        assert_eq!(
            key_param(table, "doc-42").unwrap(),
            Value::Text("doc-42".to_owned())
        );
    }
}
