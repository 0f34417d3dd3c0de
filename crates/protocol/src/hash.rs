//! `bundle_hash`, `byte_count` and `canonical_request_hash` (03-encoding.md §3.2, §3.3.1).
//!
//! The server computes a bundle's hash at commit and the Go client recomputes it from the rows
//! it fetched before replaying its own push; one differing byte and the client fails closed.
//! So the pre-image is built here, once, from the logical rows, and both our server and our
//! client call the same function.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::gcj::{self, Document, GcjError};
use crate::op::Op;

/// A SHA-256 bundle digest; rendered on the wire as 64 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BundleHash(pub [u8; 32]);

impl BundleHash {
    /// The wire rendering: lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads a rendered hash (hex of either case; exactly 64 digits).
    pub fn from_hex(text: &str) -> Option<BundleHash> {
        let bytes = hex::decode(text).ok()?;
        <[u8; 32]>::try_from(bytes.as_slice()).ok().map(BundleHash)
    }
}

impl fmt::Debug for BundleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleHash({})", self.to_hex())
    }
}

impl fmt::Display for BundleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The result of hashing a bundle's logical rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleDigest {
    /// SHA-256 of the canonical pre-image.
    pub hash: BundleHash,
    /// Length in bytes of the canonical pre-image (stored as `sync.bundle_log.byte_count`).
    pub byte_count: i64,
}

/// One row of a committed bundle as it enters the hash, in bundle order.
#[derive(Debug, Clone, Copy)]
pub struct HashRow<'a> {
    /// Published schema name (lower-case).
    pub schema: &'a str,
    /// Published table name (lower-case).
    pub table: &'a str,
    /// The wire sync key object (normally one member).
    pub key: &'a BTreeMap<String, String>,
    /// The row operation.
    pub op: Op,
    /// The row's `row_version` (for committed bundles, the `bundle_seq`).
    pub row_version: i64,
    /// The wire payload text for INSERT/UPDATE; ignored (hashed as `null`) for DELETE.
    pub payload: Option<&'a [u8]>,
}

/// Why a bundle could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// A payload is not valid JSON.
    #[error("bundle row {ordinal} payload: {source}")]
    Payload {
        /// 0-based position of the row.
        ordinal: usize,
        /// The parse failure.
        source: GcjError,
    },
    /// An INSERT or UPDATE row carries no payload.
    #[error("bundle row {ordinal} ({op}) has no payload")]
    MissingPayload {
        /// 0-based position of the row.
        ordinal: usize,
        /// The row's operation.
        op: Op,
    },
}

/// Writes the canonical pre-image of a bundle: the GCJ array of logical rows with 0-based
/// `row_ordinal`, DELETE payloads as `null`.
pub fn write_bundle_preimage<'a>(
    rows: impl IntoIterator<Item = HashRow<'a>>,
    out: &mut Vec<u8>,
) -> Result<(), HashError> {
    out.push(b'[');
    for (ordinal, row) in rows.into_iter().enumerate() {
        if ordinal > 0 {
            out.push(b',');
        }
        // Members in GCJ (byte-sorted) order: key, op, payload, row_ordinal, row_version,
        // schema, table.
        out.extend_from_slice(b"{\"key\":");
        write_key(row.key, out);
        out.extend_from_slice(b",\"op\":");
        gcj::write_string(row.op.as_str(), out);
        out.extend_from_slice(b",\"payload\":");
        if row.op == Op::Delete {
            out.extend_from_slice(b"null");
        } else {
            let payload = row.payload.ok_or(HashError::MissingPayload {
                ordinal,
                op: row.op,
            })?;
            let doc = Document::parse(payload)
                .map_err(|source| HashError::Payload { ordinal, source })?;
            doc.write_to(out);
        }
        out.extend_from_slice(b",\"row_ordinal\":");
        gcj::write_number(ordinal as f64, out);
        out.extend_from_slice(b",\"row_version\":");
        gcj::write_number(row.row_version as f64, out);
        out.extend_from_slice(b",\"schema\":");
        gcj::write_string(row.schema, out);
        out.extend_from_slice(b",\"table\":");
        gcj::write_string(row.table, out);
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// Computes `bundle_hash` and `byte_count` of a bundle's rows, in bundle order.
pub fn bundle_digest<'a>(
    rows: impl IntoIterator<Item = HashRow<'a>>,
) -> Result<BundleDigest, HashError> {
    let mut preimage = Vec::new();
    write_bundle_preimage(rows, &mut preimage)?;
    Ok(BundleDigest {
        hash: BundleHash(Sha256::digest(&preimage).into()),
        byte_count: preimage.len() as i64,
    })
}

/// One outgoing push row as it enters the client's `canonical_request_hash`.
#[derive(Debug, Clone, Copy)]
pub struct RequestHashRow<'a> {
    /// Schema as sent.
    pub schema: &'a str,
    /// Table as sent.
    pub table: &'a str,
    /// Wire key as sent.
    pub key: &'a BTreeMap<String, String>,
    /// Operation as sent.
    pub op: Op,
    /// `base_row_version` as sent.
    pub base_row_version: i64,
    /// Upload payload for INSERT/UPDATE; a DELETE row has no `payload` member at all.
    pub payload: Option<&'a [u8]>,
}

/// The client-local `canonical_request_hash`: lower-case hex SHA-256 of the GCJ array of the
/// push rows (DELETE rows without a `payload` member).
pub fn canonical_request_hash<'a>(
    rows: impl IntoIterator<Item = RequestHashRow<'a>>,
) -> Result<String, HashError> {
    let mut out = vec![b'['];
    for (ordinal, row) in rows.into_iter().enumerate() {
        if ordinal > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"base_row_version\":");
        gcj::write_number(row.base_row_version as f64, &mut out);
        out.extend_from_slice(b",\"key\":");
        write_key(row.key, &mut out);
        out.extend_from_slice(b",\"op\":");
        gcj::write_string(row.op.as_str(), &mut out);
        if row.op != Op::Delete {
            let payload = row.payload.ok_or(HashError::MissingPayload {
                ordinal,
                op: row.op,
            })?;
            let doc = Document::parse(payload)
                .map_err(|source| HashError::Payload { ordinal, source })?;
            out.extend_from_slice(b",\"payload\":");
            doc.write_to(&mut out);
        }
        out.extend_from_slice(b",\"schema\":");
        gcj::write_string(row.schema, &mut out);
        out.extend_from_slice(b",\"table\":");
        gcj::write_string(row.table, &mut out);
        out.push(b'}');
    }
    out.push(b']');
    Ok(hex::encode(Sha256::digest(&out)))
}

fn write_key(key: &BTreeMap<String, String>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (name, value)) in key.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        gcj::write_string(name, out);
        out.push(b':');
        gcj::write_string(value, out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_hash_renders_lowercase_and_parses_back() {
        let hash = BundleHash([0xab; 32]);
        assert_eq!(hash.to_hex(), "ab".repeat(32));
        assert_eq!(BundleHash::from_hex(&"AB".repeat(32)), Some(hash));
        assert_eq!(BundleHash::from_hex("abc"), None);
    }

    #[test]
    fn insert_without_payload_cannot_be_hashed() {
        let key = BTreeMap::from([("id".to_owned(), "x".to_owned())]);
        let row = HashRow {
            schema: "s",
            table: "t",
            key: &key,
            op: Op::Insert,
            row_version: 1,
            payload: None,
        };
        assert!(matches!(
            bundle_digest([row]),
            Err(HashError::MissingPayload { ordinal: 0, .. })
        ));
    }
}
