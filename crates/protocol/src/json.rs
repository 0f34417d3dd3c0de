//! Response bytes exactly as Go's `json.Encoder` writes them, and request decoding exactly as
//! the reference handlers decode them (01-wire.md §2.6, §2.7).
//!
//! Go peers compare more than values: the reference client checks field presence and the
//! Go encoder decides escaping (`<` as `\u003c`, …), member order and the trailing newline.
//! serde_json gets the structure right when the types are declared in Go field order, but not
//! the escaping, and it re-emits embedded raw JSON verbatim instead of compacting it. The
//! [`GoFormatter`] closes that gap, so every response goes through one encoder.
//!
//! On the way in, the reference reads only the first JSON value of a body (`json.Decoder`),
//! treats `null` members as absent, and — for snapshot-session create only — rejects unknown
//! fields and checks exactly one value after the body. serde_json's defaults differ in each of
//! those points (it demands the whole input be one value, rejects `null` for non-`Option`
//! fields, accepts a JSON array where a struct is expected and rejects `-0` for integers), so
//! the two decoding modes below find the extent of each value with a scanner that follows
//! Go's grammar and limits, and the helpers in [`de`] give fields Go's meaning of `null`.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::ser::{CharEscape, Formatter};

/// A `serde_json` formatter that writes what Go's `encoding/json` writes.
///
/// Compact output (no whitespace). Strings and member names are escaped like Go ≥ 1.22:
/// `"` and `\` escaped, `\b \f \n \r \t` short escapes, other C0 controls as `\u00xx` with
/// lower-case hex, `<` `>` `&` as `\u003c` `\u003e` `\u0026`, U+2028 and U+2029 as `\u2028`
/// `\u2029`, everything else (including `/` and U+007F) as raw UTF-8. Embedded raw JSON
/// ([`serde_json::value::RawValue`]) is re-emitted like Go's `json.Compact` with HTML
/// escaping: insignificant whitespace removed, the characters above escaped inside its strings,
/// every other byte (other escapes, member order, number spellings) kept as stored. Integers
/// are written in plain decimal, `f64` values with Go's `float64` rules
/// ([`crate::gcj::write_number`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct GoFormatter;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` (the unescaped part of a JSON string, valid UTF-8) with Go's HTML escaping
/// of `<`, `>`, `&`, U+2028 and U+2029.
fn write_html_escaped<W: ?Sized + io::Write>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            c @ (b'<' | b'>' | b'&') => {
                writer.write_all(&bytes[start..i])?;
                writer.write_all(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 0xF)],
                ])?;
                i += 1;
                start = i;
            }
            0xE2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                writer.write_all(&bytes[start..i])?;
                let last = if bytes[i + 2] == 0xA8 { b'8' } else { b'9' };
                writer.write_all(&[b'\\', b'u', b'2', b'0', b'2', last])?;
                i += 3;
                start = i;
            }
            _ => i += 1,
        }
    }
    writer.write_all(&bytes[start..])
}

/// Writes valid JSON text `raw` the way Go's encoder writes a `json.RawMessage`: compacted
/// (space, tab, CR and LF outside strings removed) and HTML-escaped inside strings.
fn write_compact_raw<W: ?Sized + io::Write>(writer: &mut W, raw: &[u8]) -> io::Result<()> {
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if in_string {
            if escaped {
                escaped = false;
                i += 1;
                continue;
            }
            match c {
                b'\\' => escaped = true,
                b'"' => in_string = false,
                b'<' | b'>' | b'&' | 0xE2 => {
                    // Find the end of this run of plain string bytes and let the string
                    // escaper handle it; it stops before any `\` or `"`.
                    let mut end = i;
                    while end < raw.len() && raw[end] != b'\\' && raw[end] != b'"' {
                        end += 1;
                    }
                    writer.write_all(&raw[start..i])?;
                    write_html_escaped(writer, &raw[i..end])?;
                    i = end;
                    start = end;
                    continue;
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b' ' | b'\t' | b'\n' | b'\r' => {
                    writer.write_all(&raw[start..i])?;
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    writer.write_all(&raw[start..])
}

/// Appends valid JSON text `raw` to `out` as Go's encoder emits an embedded `json.RawMessage`
/// (Go `json.Compact` plus HTML escaping; see [`GoFormatter`]). The input must already be
/// valid JSON, as every [`serde_json::value::RawValue`] is; invalid input is copied without
/// further checks.
pub fn append_compact_raw(raw: &[u8], out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = write_compact_raw(out, raw);
}

impl Formatter for GoFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        let mut buf = Vec::with_capacity(24);
        crate::gcj::write_number(value, &mut buf);
        writer.write_all(&buf)
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_html_escaped(writer, fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        let short = match char_escape {
            CharEscape::Quote => b'"',
            CharEscape::ReverseSolidus => b'\\',
            // serde_json never asks for `\/`; Go writes `/` raw, so do the same if asked.
            CharEscape::Solidus => return writer.write_all(b"/"),
            CharEscape::Backspace => b'b',
            CharEscape::FormFeed => b'f',
            CharEscape::LineFeed => b'n',
            CharEscape::CarriageReturn => b'r',
            CharEscape::Tab => b't',
            CharEscape::AsciiControl(byte) => {
                return writer.write_all(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xF)],
                ]);
            }
        };
        writer.write_all(&[b'\\', short])
    }

    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_compact_raw(writer, fragment.as_bytes())
    }
}

/// Serializes `value` with [`GoFormatter`] into `writer`, without a trailing newline (Go's
/// `json.Marshal`).
///
/// # Errors
/// Whatever `value`'s `Serialize` implementation or `writer` reports. The types of
/// [`crate::wire`] never fail to serialize; a `Vec<u8>` writer never fails.
pub fn write_compact<W: io::Write, T: ?Sized + Serialize>(
    writer: W,
    value: &T,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(writer, GoFormatter);
    value.serialize(&mut ser)
}

/// `value` encoded as Go's `json.Marshal` would: one compact line, no trailing newline. This
/// is the form of SSE `data:` lines and of the server-to-server `NOTIFY` payload.
///
/// # Errors
/// Only if `value`'s `Serialize` implementation fails (never for [`crate::wire`] types).
pub fn to_compact_vec<T: ?Sized + Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    write_compact(&mut out, value)?;
    Ok(out)
}

/// `value` encoded as a response body exactly as Go's `json.Encoder.Encode` writes it: one
/// compact JSON value (see [`GoFormatter`]) followed by a single `\n`.
///
/// # Errors
/// Only if `value`'s `Serialize` implementation fails (never for [`crate::wire`] types;
/// `Result` is kept because the function is generic over any `Serialize`).
pub fn to_wire_vec<T: ?Sized + Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = to_compact_vec(value)?;
    out.push(b'\n');
    Ok(out)
}

/// [`to_wire_vec`] as a `String` (the output is always valid UTF-8).
///
/// # Errors
/// As [`to_wire_vec`].
pub fn to_wire_string<T: ?Sized + Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let bytes = to_wire_vec(value)?;
    String::from_utf8(bytes).map_err(<serde_json::Error as serde::ser::Error>::custom)
}

// ---------------------------------------------------------------------------------------------
// Request decoding.

/// Why a request body was refused. Every variant maps to the endpoint's 400 code of
/// 01-wire.md §2.6 (`invalid_request` for the lenient bodies, `snapshot_session_invalid` for
/// snapshot-session create); the variants only say why, for logs and tests.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is empty or whitespace only (an error for lenient bodies only).
    #[error("request body is empty")]
    Empty,
    /// The first JSON value is not well-formed (or is truncated, or nests deeper than Go's
    /// limit of 10 000).
    #[error("request body is not valid JSON at byte {offset}: {reason}")]
    Syntax {
        /// Byte offset into the body where scanning stopped.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// The first value is well-formed but does not fit the request type: a wrong JSON type,
    /// an integer with a fraction/exponent or outside `i64`, a non-object where an object is
    /// declared, or (snapshot create) an unknown field.
    #[error("request body does not match the request type: {0}")]
    Shape(#[source] serde_json::Error),
    /// Snapshot-session create only: the value read after the body is not a complete JSON
    /// value.
    #[error("data after the request body is not valid JSON at byte {offset}: {reason}")]
    Trailing {
        /// Byte offset into the body where scanning stopped.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
}

/// Decodes a **lenient** request body (connect, push-session create, chunk upload; 01-wire.md
/// §2.6) the way the reference's `json.NewDecoder(body).Decode(&req)` does.
///
/// * empty or whitespace-only body → [`DecodeError::Empty`];
/// * only the first JSON value is decoded; nothing after it is read (`{} x` is accepted);
/// * a literal `null` body → `T::default()`; any other non-object → error;
/// * unknown fields are ignored and `null` members count as absent, provided `T` is declared
///   with the [`de`] helpers as the [`crate::wire`] request types are.
///
/// `T` must be a struct (decoded from a JSON object).
///
/// # Errors
/// [`DecodeError::Empty`], [`DecodeError::Syntax`] or [`DecodeError::Shape`].
pub fn decode_lenient<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, DecodeError> {
    let (start, end) = match value_extent(body, 0, false) {
        Ok(Some(extent)) => extent,
        Ok(None) => return Err(DecodeError::Empty),
        Err((offset, reason)) => return Err(DecodeError::Syntax { offset, reason }),
    };
    decode_object_or_null(&body[start..end])
}

/// Decodes a **strict-optional** request body (snapshot-session create; 01-wire.md §2.6).
///
/// * empty or whitespace-only body → `Ok(None)` (no request: keep-source rebuild);
/// * literal `null` → `Ok(Some(T::default()))`, the same as `{}`;
/// * unknown fields are rejected wherever `T` says `deny_unknown_fields` (the
///   [`crate::wire`] snapshot types do, also inside `source_replacement`);
/// * after the first value exactly one more value is read, as Go's decoder reads it into an
///   `any`: nothing but whitespace, or one complete JSON value (then nothing after it is read,
///   so `{} {} x` is accepted), is fine; a malformed or truncated value, a number outside the
///   `float64` range or nesting beyond 10 000 is an error (`{} x` is rejected).
///
/// # Errors
/// [`DecodeError::Syntax`], [`DecodeError::Shape`] or [`DecodeError::Trailing`].
pub fn decode_strict_optional<T: DeserializeOwned + Default>(
    body: &[u8],
) -> Result<Option<T>, DecodeError> {
    let (start, end) = match value_extent(body, 0, false) {
        Ok(Some(extent)) => extent,
        Ok(None) => return Ok(None),
        Err((offset, reason)) => return Err(DecodeError::Syntax { offset, reason }),
    };
    let value = decode_object_or_null(&body[start..end])?;
    if let Err((offset, reason)) = value_extent(body, end, true) {
        return Err(DecodeError::Trailing { offset, reason });
    }
    Ok(Some(value))
}

fn decode_object_or_null<T: DeserializeOwned + Default>(value: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice::<de::ObjectOrNull<T>>(value)
        .map(|v| v.0.unwrap_or_default())
        .map_err(DecodeError::Shape)
}

/// Go's `encoding/json` nesting limit.
const MAX_DEPTH: usize = 10_000;

type ScanError = (usize, &'static str);

/// Finds the extent of the JSON value that starts at `from` (after whitespace) with the
/// grammar of Go's scanner, as `json.Decoder` delimits values: a literal or number ends at the
/// first byte that cannot continue it, whatever that byte is. `Ok(None)` when only whitespace
/// is left. With `check_float_range`, numbers that overflow `float64` are errors (Go decoding
/// into `any`).
fn value_extent(
    b: &[u8],
    from: usize,
    check_float_range: bool,
) -> Result<Option<(usize, usize)>, ScanError> {
    let mut s = Scanner {
        b,
        i: from,
        check_float_range,
    };
    s.skip_ws();
    if s.i == b.len() {
        return Ok(None);
    }
    let start = s.i;
    s.value()?;
    Ok(Some((start, s.i)))
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    check_float_range: bool,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn err(&self, reason: &'static str) -> ScanError {
        (self.i, reason)
    }

    fn unexpected(&self) -> ScanError {
        match self.peek() {
            None => self.err("unexpected end of input"),
            Some(_) => self.err("unexpected character"),
        }
    }

    /// One complete value, iteratively (Go allows nesting far deeper than a thread's stack
    /// would for a recursive scanner).
    fn value(&mut self) -> Result<(), ScanError> {
        let mut stack: Vec<u8> = Vec::new();
        'value: loop {
            self.skip_ws();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    stack.push(open);
                    if stack.len() > MAX_DEPTH {
                        return Err(self.err("exceeded max depth"));
                    }
                    self.skip_ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        stack.pop();
                    } else {
                        if open == b'{' {
                            self.member_name()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.unexpected()),
            }
            // A value just ended; close containers or move to the next element.
            loop {
                let Some(&open) = stack.last() else {
                    return Ok(());
                };
                self.skip_ws();
                let close = if open == b'{' { b'}' } else { b']' };
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if open == b'{' {
                            self.skip_ws();
                            self.member_name()?;
                        }
                        continue 'value;
                    }
                    Some(c) if c == close => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return Err(self.unexpected()),
                }
            }
        }
    }

    /// `"name"` followed by `:` (whitespace around allowed); leaves the cursor at the value.
    fn member_name(&mut self) -> Result<(), ScanError> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected());
        }
        self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.unexpected());
        }
        self.i += 1;
        Ok(())
    }

    fn string(&mut self) -> Result<(), ScanError> {
        self.i += 1; // opening quote
        loop {
            match self.peek() {
                None => return Err(self.err("unexpected end of input in string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.i += 1;
                        }
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    Some(c) if c.is_ascii_hexdigit() => self.i += 1,
                                    None => {
                                        return Err(self.err("unexpected end of input in string"));
                                    }
                                    Some(_) => return Err(self.err("invalid \\u escape")),
                                }
                            }
                        }
                        None => return Err(self.err("unexpected end of input in string")),
                        Some(_) => return Err(self.err("invalid escape")),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), ScanError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.unexpected()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.unexpected());
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.unexpected());
            }
        }
        if self.check_float_range {
            let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("0");
            let finite = matches!(text.parse::<f64>(), Ok(x) if x.is_finite());
            if !finite {
                return Err((start, "number out of float64 range"));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        for &expected in word {
            match self.peek() {
                Some(c) if c == expected => self.i += 1,
                _ => return Err(self.unexpected()),
            }
        }
        Ok(())
    }
}

/// Field helpers that give request (and response) fields Go's decoding semantics.
///
/// Go's `encoding/json` leaves a field at its zero value when the member is `null`, rejects a
/// JSON array where a struct is declared, and parses integers with `strconv.ParseInt` on the
/// literal text. Use these with `#[serde(default, deserialize_with = "...")]`.
pub mod de {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::value::MapAccessDeserializer;
    use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Unexpected, Visitor};
    use serde_json::value::RawValue;

    /// A present `null` yields `T::default()`; any other value decodes as `T`. Pair with
    /// `#[serde(default)]` so that an absent member is `T::default()` too.
    ///
    /// # Errors
    /// Whatever decoding `T` reports.
    pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
    }

    /// An `int64` decoded as Go decodes one: `null` → 0; an integer literal in `i64` range
    /// (including `-0`) → its value; a number with a fraction or exponent (`1.0`, `1e3`), an
    /// integer outside `i64`, or any non-number → error.
    ///
    /// Works with serde_json deserializers only (it reads the literal text).
    ///
    /// # Errors
    /// As described above.
    pub fn int64<'de, D>(deserializer: D) -> Result<i64, D::Error>
    where
        D: Deserializer<'de>,
    {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        parse_go_int64::<D::Error>(raw.get())
    }

    fn parse_go_int64<E: Error>(text: &str) -> Result<i64, E> {
        let bytes = text.as_bytes();
        match bytes.first() {
            Some(b'n') => Ok(0),
            Some(b'-' | b'0'..=b'9') => {
                let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
                if !digits.iter().all(u8::is_ascii_digit) {
                    return Err(E::invalid_type(
                        Unexpected::Other("number with a fraction or exponent"),
                        &"an int64",
                    ));
                }
                text.parse::<i64>().map_err(|_| {
                    E::invalid_value(Unexpected::Other("integer out of int64 range"), &"an int64")
                })
            }
            Some(b'"') => Err(E::invalid_type(Unexpected::Other("string"), &"an int64")),
            Some(b't' | b'f') => Err(E::invalid_type(Unexpected::Other("boolean"), &"an int64")),
            Some(b'[') => Err(E::invalid_type(Unexpected::Seq, &"an int64")),
            Some(b'{') => Err(E::invalid_type(Unexpected::Map, &"an int64")),
            _ => Err(E::invalid_type(
                Unexpected::Other("non-JSON text"),
                &"an int64",
            )),
        }
    }

    /// A raw JSON member that distinguishes *absent* (`None`, via `#[serde(default)]`) from a
    /// literal `null`, which is kept as `Some` of the four bytes `null` (push-row `payload`,
    /// 01-wire.md §3.2).
    ///
    /// # Errors
    /// If the member is not valid JSON.
    pub fn raw_keep_null<'de, D>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Box::<RawValue>::deserialize(deserializer).map(Some)
    }

    /// A nested struct member: `null` → `None`, a JSON object → `Some(T)`, anything else
    /// (notably a JSON array, which serde would otherwise accept for a struct) → error.
    ///
    /// # Errors
    /// As described above, or whatever decoding `T` reports.
    pub fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        ObjectOrNull::<T>::deserialize(deserializer).map(|v| v.0)
    }

    /// An array of structs: `null` → empty; each element must be a JSON object or `null`
    /// (→ `T::default()`, as Go leaves a zero struct); a non-array → error.
    ///
    /// # Errors
    /// As described above, or whatever decoding `T` reports.
    pub fn objects_or_null<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        struct SeqVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for SeqVisitor<T> {
            type Value = Vec<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array of objects, or null")
            }

            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }

            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<ObjectOrNull<T>>()? {
                    out.push(item.0.unwrap_or_default());
                }
                Ok(out)
            }
        }

        deserializer.deserialize_any(SeqVisitor(PhantomData))
    }

    /// A struct that must arrive as a JSON object, or `null` (→ `None`).
    #[derive(Debug)]
    pub(crate) struct ObjectOrNull<T>(pub(crate) Option<T>);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOrNull<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ObjectVisitor<T>(PhantomData<T>);

            impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
                type Value = ObjectOrNull<T>;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object or null")
                }

                fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                    Ok(ObjectOrNull(None))
                }

                fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                    Ok(ObjectOrNull(None))
                }

                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                    T::deserialize(MapAccessDeserializer::new(map)).map(|v| ObjectOrNull(Some(v)))
                }
            }

            deserializer.deserialize_any(ObjectVisitor(PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::value::RawValue;

    fn wire(value: &impl Serialize) -> String {
        String::from_utf8(to_compact_vec(value).unwrap()).unwrap()
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let s = "a<b>&c \u{2028}\u{2029} \u{8}\u{c}\n\r\t \u{0}\u{b}\u{1f} \"q\" \\ / \u{7f} é😀";
        assert_eq!(
            wire(&s),
            r#""a\u003cb\u003e\u0026c \u2028\u2029 \b\f\n\r\t \u0000\u000b\u001f \"q\" \\ / "#
                .to_owned()
                + "\u{7f} é😀\""
        );
    }

    #[test]
    fn map_keys_are_escaped_and_sorted_by_bytes() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("é".to_owned(), 1);
        m.insert("<".to_owned(), 2);
        m.insert("Z".to_owned(), 3);
        assert_eq!(wire(&m), r#"{"\u003c":2,"Z":3,"é":1}"#);
    }

    #[test]
    fn wire_vec_ends_with_one_newline() {
        assert_eq!(to_wire_vec(&[1, 2]).unwrap(), b"[1,2]\n");
        assert_eq!(to_wire_string(&"x").unwrap(), "\"x\"\n");
    }

    #[test]
    fn raw_json_is_compacted_and_html_escaped_but_otherwise_kept() {
        let raw = RawValue::from_string(
            "{\"b\": 12.50, \"a\" : [1, 2.0e3, \"x <y> & z\\u003c \\\" \u{2028}\"],\n \"c\":\t\"\\/ \\n\"}"
                .to_owned(),
        )
        .unwrap();
        assert_eq!(
            wire(&raw),
            r#"{"b":12.50,"a":[1,2.0e3,"x \u003cy\u003e \u0026 z\u003c \" \u2028"],"c":"\/ \n"}"#
        );
    }

    #[test]
    fn raw_json_strings_keep_their_inner_whitespace() {
        let raw = RawValue::from_string("[\" a \\\\\", \"<\" ]".to_owned()).unwrap();
        assert_eq!(wire(&raw), r#"[" a \\","\u003c"]"#);
    }

    #[test]
    fn floats_are_written_like_go() {
        assert_eq!(
            wire(&vec![1.0, -0.0, 1e21, 1e20, 1e-7]),
            "[1,-0,1e+21,100000000000000000000,1e-7]"
        );
    }

    #[derive(Debug, Default, Deserialize)]
    struct Ints {
        #[serde(default, deserialize_with = "de::int64")]
        n: i64,
    }

    #[test]
    fn int64_fields_follow_go() {
        let ok = |s: &str| decode_lenient::<Ints>(s.as_bytes()).map(|v| v.n).ok();
        assert_eq!(ok(r#"{"n":null}"#), Some(0));
        assert_eq!(ok(r#"{}"#), Some(0));
        assert_eq!(ok(r#"{"n":-0}"#), Some(0));
        assert_eq!(ok(r#"{"n":9223372036854775807}"#), Some(i64::MAX));
        assert_eq!(ok(r#"{"n":-9223372036854775808}"#), Some(i64::MIN));
        for bad in [
            r#"{"n":9223372036854775808}"#,
            r#"{"n":-9223372036854775809}"#,
            r#"{"n":1.0}"#,
            r#"{"n":1e3}"#,
            r#"{"n":-0.0}"#,
            r#"{"n":"1"}"#,
            r#"{"n":true}"#,
            r#"{"n":[]}"#,
            r#"{"n":{}}"#,
        ] {
            assert!(ok(bad).is_none(), "{bad} must be rejected");
        }
    }

    #[test]
    fn lenient_reads_only_the_first_value_as_go_delimits_it() {
        for body in ["{} x", "{}x", "null x", "nullx", "null1", " \n{} {", "{}]"] {
            assert!(decode_lenient::<Ints>(body.as_bytes()).is_ok(), "{body:?}");
        }
        for body in ["nul", "{", "{\"n\":1", "[]", "1", "\"x\"", "true", "x"] {
            assert!(decode_lenient::<Ints>(body.as_bytes()).is_err(), "{body:?}");
        }
        assert!(matches!(
            decode_lenient::<Ints>(b" \t\r\n"),
            Err(DecodeError::Empty)
        ));
    }

    #[test]
    fn strict_optional_checks_one_trailing_value_like_go() {
        let ok = |s: &str| decode_strict_optional::<Ints>(s.as_bytes()).is_ok();
        for body in [
            "",
            "  ",
            "{}",
            "null",
            "{} {}",
            "{} {} x",
            "{} 1",
            "{} nullx",
            "{} 01x",
            "{} 1e-400",
            "{} [1,{\"a\":[]}]",
        ] {
            assert!(ok(body), "{body:?} must be accepted");
        }
        for body in [
            "{} x", "{} {", "{} nul", "{} 1e400", "{}\"", "{} [1,]", "{} -", "{} 1.",
        ] {
            assert!(!ok(body), "{body:?} must be rejected");
        }
        assert!(matches!(decode_strict_optional::<Ints>(b""), Ok(None)));
        assert!(matches!(
            decode_strict_optional::<Ints>(b"{} x"),
            Err(DecodeError::Trailing { .. })
        ));
    }

    #[test]
    fn nesting_beyond_go_limit_is_rejected() {
        let deep_ok = format!("{{}} {}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode_strict_optional::<Ints>(deep_ok.as_bytes()).is_ok());
        let too_deep = format!("{{}} {}{}", "[".repeat(10_001), "]".repeat(10_001));
        assert!(decode_strict_optional::<Ints>(too_deep.as_bytes()).is_err());
    }
}
