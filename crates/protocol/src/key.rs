//! Sync keys: kinds, UUID spellings, `key_bytes` and the client's local key form
//! (03-encoding.md §3.4).
//!
//! A row is identified on the wire by `{<key column>: <text>}`, on the server by
//! `(user, table_id, key_bytes)` and in the client's metadata by a local key string. The
//! conversions between those forms decide row identity everywhere, so each lives here exactly
//! once, with the strictness the reference applies at that point: the server accepts only
//! canonical lower-case UUID text, the client's wire decoder also upper case, and the client's
//! local decoder every spelling Go's `uuid.Parse` knows plus base64 and bare hex.

use crate::codec;

/// The type of a table's sync key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncKeyKind {
    /// PostgreSQL `uuid`; code 1.
    Uuid,
    /// PostgreSQL `text`; code 2.
    Text,
}

impl SyncKeyKind {
    /// The code stored in `sync.table_catalog.sync_key_kind` and passed to capture triggers.
    pub fn code(self) -> i16 {
        match self {
            SyncKeyKind::Uuid => 1,
            SyncKeyKind::Text => 2,
        }
    }

    /// The kind stored as `code`.
    pub fn from_code(code: i16) -> Option<SyncKeyKind> {
        match code {
            1 => Some(SyncKeyKind::Uuid),
            2 => Some(SyncKeyKind::Text),
            _ => None,
        }
    }

    /// The kind for a PostgreSQL `udt_name` (lower-cased); `None` for unsupported types.
    pub fn from_udt_name(udt_name: &str) -> Option<SyncKeyKind> {
        match udt_name.to_ascii_lowercase().as_str() {
            "uuid" => Some(SyncKeyKind::Uuid),
            "text" => Some(SyncKeyKind::Text),
            _ => None,
        }
    }

    /// The name used in vectors and messages: `uuid` or `text`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKeyKind::Uuid => "uuid",
            SyncKeyKind::Text => "text",
        }
    }
}

/// A key that cannot be converted between its forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A uuid key that is not canonical dashed lower-case text (server push check).
    #[error("uuid key must use canonical dashed lowercase UUID text")]
    NonCanonicalUuid,
    /// Stored `key_bytes` of a uuid key that are not 16 bytes.
    #[error("uuid key_bytes length must be 16, got {0}")]
    UuidBytesLength(usize),
    /// Stored `key_bytes` of a text key that are not UTF-8 (cannot happen in a UTF-8 database).
    #[error("text key_bytes are not valid UTF-8")]
    TextNotUtf8,
    /// A received UUID that the client's strict wire decoder refuses.
    #[error("invalid canonical wire UUID {0:?}")]
    InvalidWireUuid(String),
    /// A local value that no UUID spelling matches.
    #[error("invalid blob UUID pk {0:?}")]
    InvalidLocalUuid(String),
}

/// Renders 16 bytes as canonical UUID text (lower-case, dashed).
pub fn render_uuid(bytes: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*bytes).hyphenated().to_string()
}

/// The server's key check: only the canonical 36-character lower-case form is accepted.
pub fn parse_canonical_uuid(text: &str) -> Option<[u8; 16]> {
    let bytes = decode_wire_uuid_strict(text)?;
    (render_uuid(&bytes) == text).then_some(bytes)
}

/// The client's strict decoder for received UUIDs: exactly 36 characters, hyphens at 8, 13,
/// 18 and 23, hex digits of either case, nothing around it.
pub fn decode_wire_uuid_strict(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    hex_16(&digits)
}

/// The client's lenient decoder for local values: every spelling of Go's `uuid.Parse`
/// (dashed, `{…}` — outer characters unchecked —, `urn:uuid:`, 32 hex digits), then exact
/// standard base64 of 16 bytes, then whitespace-trimmed even-length hex of 16 bytes.
pub fn decode_local_uuid_lenient(text: &str) -> Option<[u8; 16]> {
    if let Some(bytes) = go_uuid_parse(text) {
        return Some(bytes);
    }
    if let Ok(bytes) = codec::base64_decode_exact(text)
        && let Ok(bytes) = <[u8; 16]>::try_from(bytes.as_slice())
    {
        return Some(bytes);
    }
    let trimmed = text.trim();
    if trimmed.len().is_multiple_of(2)
        && let Ok(bytes) = codec::hex_decode(trimmed)
    {
        return <[u8; 16]>::try_from(bytes.as_slice()).ok();
    }
    None
}

fn go_uuid_parse(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    match b.len() {
        36 => decode_wire_uuid_strict(text),
        45 if b[..9].eq_ignore_ascii_case(b"urn:uuid:") => {
            decode_wire_uuid_strict(std::str::from_utf8(&b[9..]).ok()?)
        }
        // Go skips the first and last characters without looking at them.
        38 => decode_wire_uuid_strict(std::str::from_utf8(&b[1..37]).ok()?),
        32 => hex_16(text),
        _ => None,
    }
}

fn hex_16(digits: &str) -> Option<[u8; 16]> {
    if digits.len() != 32 {
        return None;
    }
    let bytes = codec::hex_decode(digits).ok()?;
    <[u8; 16]>::try_from(bytes.as_slice()).ok()
}

/// The server's storage form of a pushed key: the 16 UUID bytes for uuid keys (only
/// canonical text accepted), the UTF-8 bytes for text keys (the empty string included).
pub fn encode_key_bytes(kind: SyncKeyKind, key: &str) -> Result<Vec<u8>, KeyError> {
    match kind {
        SyncKeyKind::Uuid => parse_canonical_uuid(key)
            .map(|b| b.to_vec())
            .ok_or(KeyError::NonCanonicalUuid),
        SyncKeyKind::Text => Ok(key.as_bytes().to_vec()),
    }
}

/// The wire text of stored `key_bytes`.
pub fn decode_key_bytes(kind: SyncKeyKind, bytes: &[u8]) -> Result<String, KeyError> {
    match kind {
        SyncKeyKind::Uuid => {
            let array =
                <[u8; 16]>::try_from(bytes).map_err(|_| KeyError::UuidBytesLength(bytes.len()))?;
            Ok(render_uuid(&array))
        }
        SyncKeyKind::Text => String::from_utf8(bytes.to_vec()).map_err(|_| KeyError::TextNotUtf8),
    }
}

/// How a client table stores its sync key locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalKeyKind {
    /// A 16-byte BLOB holding a UUID; the local key string is 32 lower-case hex digits.
    UuidBlob,
    /// A TEXT column; the local key string is the text itself.
    Text,
}

/// Converts a received wire key into the client's local key string (strict for UUID BLOBs).
pub fn local_key_from_wire(kind: LocalKeyKind, wire: &str) -> Result<String, KeyError> {
    match kind {
        LocalKeyKind::Text => Ok(wire.to_owned()),
        LocalKeyKind::UuidBlob => decode_wire_uuid_strict(wire)
            .map(|b| codec::hex_encode(&b))
            .ok_or_else(|| KeyError::InvalidWireUuid(wire.to_owned())),
    }
}

/// Converts a local key string into the wire key the client sends (lenient for UUID BLOBs).
pub fn wire_key_from_local(kind: LocalKeyKind, local: &str) -> Result<String, KeyError> {
    match kind {
        LocalKeyKind::Text => Ok(local.to_owned()),
        LocalKeyKind::UuidBlob => decode_local_uuid_lenient(local)
            .map(|b| render_uuid(&b))
            .ok_or_else(|| KeyError::InvalidLocalUuid(local.to_owned())),
    }
}

/// The client's `key_json` as its engine code writes it: `{"<column>":"<local key>"}` with
/// GCJ escaping.
pub fn local_key_json(key_column: &str, local_key: &str) -> String {
    let mut out = Vec::with_capacity(key_column.len() + local_key.len() + 8);
    out.push(b'{');
    crate::gcj::write_string(key_column, &mut out);
    out.push(b':');
    crate::gcj::write_string(local_key, &mut out);
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_kind_codes_round_trip() {
        for kind in [SyncKeyKind::Uuid, SyncKeyKind::Text] {
            assert_eq!(SyncKeyKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(SyncKeyKind::from_udt_name("varchar"), None);
        assert_eq!(SyncKeyKind::from_udt_name("UUID"), Some(SyncKeyKind::Uuid));
    }

    #[test]
    fn uuid_key_bytes_of_wrong_length_are_rejected() {
        assert_eq!(
            decode_key_bytes(SyncKeyKind::Uuid, &[1, 2, 3]),
            Err(KeyError::UuidBytesLength(3))
        );
    }
}
