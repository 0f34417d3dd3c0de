//! Query strings and integer parameters (01-wire.md §2.4, §2.5).
//!
//! The reference reads parameters with Go's `url.ParseQuery` and `Values.Get`, then
//! `strconv.ParseInt`. Their corner cases are observable (a pair containing `;` or a bad
//! percent escape silently disappears, so the default applies instead of a 400), so the
//! parsing lives here, once, and HTTP adapters pass the raw query string through untouched.

/// Parses a query or path integer with the reference's grammar (Go
/// `strconv.ParseInt(s, 10, 64)`): an optional single leading `+` or `-`, then one or more
/// ASCII digits (leading zeros allowed), nothing else — no whitespace, underscores, `0x`,
/// decimal point or exponent — and within `i64`. `None` for anything else.
///
/// Rust's `i64::from_str` has exactly this grammar (pinned by this module's tests).
pub fn parse_i64_param(text: &str) -> Option<i64> {
    text.parse::<i64>().ok()
}

/// A query parameter that is present and non-empty but not an integer. Its message is the
/// reference's (`"{name} must be an integer"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be an integer")]
pub struct NotAnInteger {
    /// The parameter's name.
    pub name: String,
}

/// A decoded query string: its `key=value` pairs in order, as Go's `url.ParseQuery` keeps
/// them (see [`parse_query`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// The first value of `name`, as decoded (possibly empty); `None` when absent. Later
    /// duplicates are never consulted.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of `name`, with an empty first value treated as absent (Go
    /// `Values.Get(name) != ""`). A non-empty later duplicate does not revive an empty first
    /// value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.first(name).filter(|value| !value.is_empty())
    }

    /// The integer parameter `name` by the §2.4 rules: `Ok(None)` when absent or empty (the
    /// default applies), `Ok(Some(n))` when it parses with [`parse_i64_param`].
    ///
    /// # Errors
    /// [`NotAnInteger`] when present and non-empty but not an `i64`.
    pub fn get_i64(&self, name: &str) -> Result<Option<i64>, NotAnInteger> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => parse_i64_param(text).map(Some).ok_or_else(|| NotAnInteger {
                name: name.to_owned(),
            }),
        }
    }

    /// All decoded pairs in query order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Decodes a raw query string (the part after `?`, without the `#` fragment) like Go's
/// `url.ParseQuery`: split on `&`; drop empty pieces and any piece containing a literal `;`;
/// split each piece at the first `=` (no `=` → empty value); percent-decode key and value
/// with `+` as space, dropping the pair when either holds an invalid escape (`%zz`, a `%`
/// without two hex digits). Decoded bytes that are not UTF-8 are replaced by U+FFFD, which
/// cannot turn a non-matching key into a matching one nor a non-integer into an integer.
pub fn parse_query(raw: &str) -> QueryParams {
    let pairs = raw
        .split('&')
        .filter(|piece| !piece.is_empty() && !piece.contains(';'))
        .filter_map(|piece| {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            Some((query_unescape(key)?, query_unescape(value)?))
        })
        .collect();
    QueryParams { pairs }
}

/// Go's `url.QueryUnescape`: `%XX` (either hex case) decoded, `+` → space, `None` for a
/// malformed escape.
fn query_unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Some(match String::from_utf8(out) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    })
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_rows(query: &str) -> Result<Option<i64>, NotAnInteger> {
        parse_query(query).get_i64("max_rows")
    }

    #[test]
    fn integer_grammar_is_go_parse_int() {
        for (text, value) in [
            ("0", 0),
            ("5", 5),
            ("+5", 5),
            ("-5", -5),
            ("007", 7),
            ("-0", 0),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(parse_i64_param(text), Some(value), "{text:?}");
        }
        for text in [
            "",
            "+",
            "-",
            "+-5",
            "--5",
            "++5",
            " 5",
            "5 ",
            "1_000",
            "0x10",
            "1.0",
            "1e3",
            "５",
            "9223372036854775808",
            "-9223372036854775809",
            "\u{0}5",
        ] {
            assert_eq!(parse_i64_param(text), None, "{text:?}");
        }
    }

    #[test]
    fn first_value_wins_and_empty_means_absent() {
        assert_eq!(max_rows("max_rows=5&max_rows=7"), Ok(Some(5)));
        assert_eq!(max_rows("max_rows=&max_rows=7"), Ok(None));
        assert_eq!(max_rows("max_rows"), Ok(None));
        assert_eq!(max_rows(""), Ok(None));
        assert_eq!(max_rows("other=1"), Ok(None));
        assert_eq!(
            max_rows("max_rows=x&max_rows=7").unwrap_err().to_string(),
            "max_rows must be an integer"
        );
    }

    #[test]
    fn form_decoding_applies() {
        assert_eq!(max_rows("max_rows=%2B5"), Ok(Some(5)));
        assert_eq!(max_rows("max_rows=%35"), Ok(Some(5)));
        assert_eq!(max_rows("max%5Frows=6"), Ok(Some(6)));
        assert!(max_rows("max_rows=+5").is_err(), "a literal + is a space");
        assert!(max_rows("max_rows=%207").is_err(), "no trimming");
        assert!(max_rows("max_rows=5%20").is_err(), "no trimming");
        assert!(max_rows("max_rows=%ff").is_err());
    }

    #[test]
    fn pairs_with_semicolons_or_bad_escapes_are_dropped() {
        assert_eq!(max_rows("max_rows=%zz"), Ok(None));
        assert_eq!(max_rows("max_rows=%"), Ok(None));
        assert_eq!(max_rows("max_rows=%4"), Ok(None));
        assert_eq!(max_rows("max_rows=5;x=1"), Ok(None));
        assert_eq!(max_rows("max_rows=5;x=1&max_rows=6"), Ok(Some(6)));
        assert_eq!(max_rows("max_rows=%zz&max_rows=6"), Ok(Some(6)));
        assert_eq!(max_rows("x=%zz&max_rows=6"), Ok(Some(6)));
        assert_eq!(max_rows("x=1;y=2&max_rows=6"), Ok(Some(6)));
        assert_eq!(max_rows("&&max_rows=6&"), Ok(Some(6)));
    }

    #[test]
    fn values_keep_everything_after_the_first_equals_sign() {
        let q = parse_query("a=b=c&d=&e");
        assert_eq!(q.first("a"), Some("b=c"));
        assert_eq!(q.first("d"), Some(""));
        assert_eq!(q.first("e"), Some(""));
        assert_eq!(q.get("d"), None);
        assert_eq!(q.pairs().len(), 3);
    }
}
