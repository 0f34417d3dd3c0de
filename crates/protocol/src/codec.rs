//! Binary payload values on the wire (03-encoding.md §3.5.3–§3.5.7).
//!
//! The same bytes appear in four spellings: lower-case hex in SQLite payloads, standard padded
//! base64 on the wire, `\x`-hex as PostgreSQL `bytea` input, and PostgreSQL's `\x`-hex output.
//! The reference decodes each with a different strictness (the server's push decoder is Go's
//! lenient standard decoder, the client's apply decoder accepts only canonical base64); both
//! strictness levels are here so that each side picks the one the protocol prescribes.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's `base64.StdEncoding` decoder: padding required, unused low bits of the last group may
/// be non-zero. (CR and LF are skipped separately, as Go does, before decoding.)
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// A value that is not in the encoding its position requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not standard padded base64 (after the decoder's permitted leniencies).
    #[error("invalid base64")]
    Base64,
    /// Not an even-length string of hex digits.
    #[error("invalid hex")]
    Hex,
}

/// Encodes bytes as standard base64 with padding: the only form either side ever writes.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64 the way the reference server decodes pushed `bytea` values (Go's standard
/// decoder): CR and LF anywhere are skipped, `=` padding is required, non-zero unused bits are
/// tolerated; spaces, the URL-safe alphabet, wrong padding and data after padding are errors.
pub fn base64_decode_lenient(text: &str) -> Result<Vec<u8>, CodecError> {
    let decode = |s: &[u8]| GO_STD.decode(s).map_err(|_| CodecError::Base64);
    if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        let stripped: Vec<u8> = text
            .bytes()
            .filter(|b| *b != b'\r' && *b != b'\n')
            .collect();
        decode(&stripped)
    } else {
        decode(text.as_bytes())
    }
}

/// Decodes base64 the way the reference client applies received BLOB values: only strings
/// that re-encode to themselves (exact padding, zero unused bits, no line breaks).
pub fn base64_decode_exact(text: &str) -> Result<Vec<u8>, CodecError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| CodecError::Base64)?;
    if base64_encode(&bytes) == text {
        Ok(bytes)
    } else {
        Err(CodecError::Base64)
    }
}

/// Lower-case hex, the spelling of BLOBs inside SQLite payloads and local key JSON.
pub fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Decodes hex digits of either case; the length must be even.
pub fn hex_decode(text: &str) -> Result<Vec<u8>, CodecError> {
    hex::decode(text).map_err(|_| CodecError::Hex)
}

/// Turns a local hex BLOB into its wire form (standard padded base64). `""` stays `""`.
pub fn blob_hex_to_wire(local_hex: &str) -> Result<String, CodecError> {
    Ok(base64_encode(&hex_decode(local_hex)?))
}

/// Turns a pushed base64 `bytea` value into PostgreSQL's `bytea` input text `\x<hex>`,
/// decoding with the server's lenient decoder.
pub fn bytea_wire_to_pg(wire_base64: &str) -> Result<String, CodecError> {
    let bytes = base64_decode_lenient(wire_base64)?;
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    out.push_str(&hex::encode(bytes));
    Ok(out)
}

/// Turns a `bytea` value as `to_jsonb` renders it (`\x` or `\X` followed by hex of either
/// case) into its wire form. Text without the prefix is taken as base64 and re-encoded
/// canonically, as the reference does (PostgreSQL never produces it).
pub fn bytea_pg_to_wire(pg_text: &str) -> Result<String, CodecError> {
    let bytes = match pg_text
        .strip_prefix("\\x")
        .or_else(|| pg_text.strip_prefix("\\X"))
    {
        Some(hex_digits) => hex_decode(hex_digits)?,
        None => base64_decode_lenient(pg_text)?,
    };
    Ok(base64_encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_write_canonical_padded_base64() {
        assert_eq!(base64_encode(&[0x00, 0x11, 0x22, 0xff]), "ABEi/w==");
        assert_eq!(base64_encode(b""), "");
    }

    #[test]
    fn lenient_decoder_skips_line_breaks_but_exact_decoder_refuses_them() {
        assert_eq!(base64_decode_lenient("aGVs\r\nbG8=").unwrap(), b"hello");
        assert!(base64_decode_exact("aGVs\r\nbG8=").is_err());
    }
}
