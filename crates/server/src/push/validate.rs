//! Row validation and normalization at chunk upload (§5.3, plus §13 items 2 and 3).
//!
//! Everything a commit could only discover late is rejected here as `push_chunk_invalid`:
//! member names are checked against the catalog's column map (unknown, generated, non-lower-
//! case and any-case `_sync_scope_id` members are refused), so a staged row can always be
//! applied by name. Input order is preserved.

use std::collections::HashSet;

use oversync_protocol::codec;
use oversync_protocol::gcj::{Document, Node};
use oversync_protocol::key::{SyncKeyKind, encode_key_bytes};
use oversync_protocol::op::Op;
use oversync_protocol::wire::PushRequestRow;

use crate::catalog::{CatalogTable, SCOPE_COLUMN, ValidatedCatalog};

/// A validated row, ready to stage.
#[derive(Debug)]
pub(crate) struct PreparedRow {
    pub(crate) table_id: i32,
    pub(crate) key_bytes: Vec<u8>,
    pub(crate) op: Op,
    pub(crate) base_row_version: i64,
    /// `payload_apply`: canonical layout, exact numbers, `bytea` as `\x…`; `None` for DELETE.
    pub(crate) payload: Option<String>,
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Validates `rows` in order; the first failure is the `push_chunk_invalid` message.
pub(crate) fn prepare_rows(
    catalog: &ValidatedCatalog,
    rows: &[PushRequestRow],
) -> Result<Vec<PreparedRow>, String> {
    let mut seen: HashSet<(i32, Vec<u8>)> = HashSet::with_capacity(rows.len());
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let schema = row.schema.trim().to_lowercase();
        let schema = if schema.is_empty() {
            "public".to_owned()
        } else {
            schema
        };
        let table_name = row.table.trim().to_lowercase();
        if !is_identifier(&schema) {
            return Err(format!("invalid schema name {:?}", row.schema));
        }
        if !is_identifier(&table_name) {
            return Err(format!("invalid table name {:?}", row.table));
        }
        let Some(table) = catalog.by_name(&schema, &table_name) else {
            return Err(format!("table {schema}.{table_name} is not registered"));
        };
        let op = Op::parse_push(&row.op).map_err(|_| format!("invalid op {:?}", row.op))?;
        let prefix = table.key();
        let column = table.key_column();
        let Some(key_value) = row.key.get(column) else {
            return Err(format!("row key for {prefix} must include {column:?}"));
        };
        let Some(key_text) = key_value.as_str() else {
            return Err(format!("row key {prefix}.{column} must be a string"));
        };
        let Ok(key_bytes) = encode_key_bytes(table.key_kind(), key_text) else {
            return Err(format!(
                "row key {prefix}.{column} must use canonical dashed lowercase UUID text"
            ));
        };
        if !seen.insert((table.table_id(), key_bytes.clone())) {
            return Err(format!(
                "duplicate target row in push request: {prefix} {key_text}"
            ));
        }
        let payload = match op {
            Op::Delete => {
                if row.payload.is_some() {
                    return Err(format!("DELETE for {prefix} must not include payload"));
                }
                None
            }
            Op::Insert | Op::Update => {
                let Some(raw) = &row.payload else {
                    return Err(format!("{op} for {prefix} requires payload"));
                };
                Some(normalize_payload(table, raw.get().as_bytes(), key_text)?)
            }
        };
        out.push(PreparedRow {
            table_id: table.table_id(),
            key_bytes,
            op,
            base_row_version: row.base_row_version,
            payload,
        });
    }
    Ok(out)
}

fn normalize_payload(table: &CatalogTable, raw: &[u8], key_text: &str) -> Result<String, String> {
    let prefix = table.key();
    let not_object = || format!("payload for {prefix} must be a JSON object");
    let mut doc = Document::parse(raw).map_err(|_| not_object())?;
    let Some(members) = doc.root_members() else {
        return Err(not_object());
    };
    if doc.root_member(SCOPE_COLUMN).is_some() {
        return Err(format!(
            "payload for {prefix} must not include hidden scope column {SCOPE_COLUMN:?}"
        ));
    }
    let column = table.key_column();
    let mut rewrites = Vec::new();
    let mut key_present = false;
    for (name, id) in members {
        let lower = name.to_lowercase();
        if !is_identifier(&lower) {
            return Err(format!(
                "payload for {prefix} contains invalid column {name:?}"
            ));
        }
        if lower == SCOPE_COLUMN {
            return Err(format!(
                "payload for {prefix} must not include hidden scope column {SCOPE_COLUMN:?}"
            ));
        }
        if &lower != name {
            return Err(format!(
                "payload for {prefix} contains column {name:?}; column names must be lower-case"
            ));
        }
        let Some(info) = table.columns().get(name) else {
            return Err(format!(
                "payload for {prefix} contains unknown column {name:?}"
            ));
        };
        if info.generated {
            return Err(format!(
                "payload for {prefix} writes generated column {name:?}"
            ));
        }
        if name == column {
            key_present = true;
            match doc.node(*id) {
                Node::String(value) if value == key_text => {}
                _ => {
                    return Err(format!(
                        "payload key {prefix}.{column} must match request key"
                    ));
                }
            }
        }
        if info.udt_name == "bytea" {
            match doc.node(*id) {
                Node::Null => {}
                Node::String(text) => {
                    let pg = codec::bytea_wire_to_pg(text).map_err(|_| {
                        format!("payload binary field {prefix}.{name} must be valid base64")
                    })?;
                    rewrites.push((*id, pg));
                }
                _ => {
                    return Err(format!(
                        "payload binary field {prefix}.{name} must be a base64 string"
                    ));
                }
            }
        }
    }
    for (id, pg) in rewrites {
        doc.set_scalar(id, Node::String(pg));
    }
    if !key_present {
        doc.set_root_string_member(column, key_text);
    }
    String::from_utf8(doc.to_vec_exact()).map_err(|_| not_object())
}

/// The SQL literal cast for binding a key as text.
pub(crate) fn key_cast(kind: SyncKeyKind) -> &'static str {
    match kind {
        SyncKeyKind::Uuid => "::text::uuid",
        SyncKeyKind::Text => "::text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_lower_case_ascii_words() {
        assert!(is_identifier("users_2"));
        assert!(!is_identifier("Users"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a-b"));
    }
}
