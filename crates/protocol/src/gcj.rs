//! Go-compatible canonical JSON ("GCJ", 03-encoding.md §3.1).
//!
//! The reference hashes bundles over Go's `encoding/json` re-encoding of a generic value, and
//! its client verifies those hashes. serde_json's `Value` round trip is not that encoding
//! (integers stay exact, `-0` becomes `-0.0`, no HTML escaping, different lone-surrogate and
//! invalid-UTF-8 handling, depth limit 128), so this module carries its own small parser and
//! writer that follow Go bit for bit.
//!
//! A parsed document is kept as a flat arena of nodes rather than a recursive tree: Go accepts
//! nesting up to 10 000 levels, and recursive parsing, writing or dropping at that depth would
//! overflow a thread's stack. Every walk here is iterative.

use std::fmt;

/// Maximum nesting of arrays and objects that Go's decoder accepts.
pub const MAX_DEPTH: usize = 10_000;

/// Why an input is not JSON that Go's `json.Unmarshal` would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct GcjError {
    /// Byte offset into the input where parsing stopped.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

/// Index of a node inside a [`Document`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(usize);

/// One JSON value in Go's generic model: numbers are always binary64.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number, converted with correct rounding to binary64 (integers included).
    Number(f64),
    /// A string, already unescaped; invalid input was replaced by U+FFFD the way Go does.
    String(String),
    /// Elements in input order.
    Array(Vec<NodeId>),
    /// Members sorted by the UTF-8 bytes of their names, duplicates resolved (last wins).
    Object(Vec<(String, NodeId)>),
}

/// A parsed JSON document: a flat arena of [`Node`]s and its root.
///
/// Guarantees: objects are already in canonical member order with unique names, so writing
/// the document is a straight walk; dropping it never recurses.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    nodes: Vec<Node>,
    root: NodeId,
    /// Input text of the numbers whose decimal value binary64 cannot hold exactly (more than
    /// 15 significant digits that do not survive the conversion), sorted by node. GCJ ignores
    /// it; [`Document::write_exact_to`] writes it back.
    exact_numbers: Vec<(NodeId, Box<str>)>,
}

impl Document {
    /// Parses `input` exactly as Go's `json.Unmarshal` into an empty interface would.
    pub fn parse(input: &[u8]) -> Result<Document, GcjError> {
        Parser::new(input).parse_document()
    }

    /// Builds a document from a serde_json value. Integers are converted to binary64 with
    /// round-to-nearest-even, which is what Go's parser does with the same decimal text.
    pub fn from_serde(value: &serde_json::Value) -> Document {
        let mut doc = Document {
            nodes: Vec::new(),
            root: NodeId(0),
            exact_numbers: Vec::new(),
        };
        doc.root = push_serde(&mut doc, value);
        doc
    }

    /// The root node.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The node behind `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The member `name` of the root object, if the root is an object that has it.
    pub fn root_member(&self, name: &str) -> Option<NodeId> {
        match self.node(self.root) {
            Node::Object(members) => members
                .binary_search_by(|(k, _)| k.as_str().cmp(name))
                .ok()
                .map(|i| members[i].1),
            _ => None,
        }
    }

    /// The members of the root object in canonical order, or `None` if the root is not an
    /// object.
    pub fn root_members(&self) -> Option<&[(String, NodeId)]> {
        match self.node(self.root) {
            Node::Object(members) => Some(members),
            _ => None,
        }
    }

    /// Replaces the node behind `id` with a scalar (`Null`, `Bool`, `Number` or `String`).
    /// A container given here is written as an empty container of its kind.
    pub fn set_scalar(&mut self, id: NodeId, node: Node) {
        if let Ok(i) = self.exact_numbers.binary_search_by_key(&id.0, |(n, _)| n.0) {
            self.exact_numbers.remove(i);
        }
        self.nodes[id.0] = node;
    }

    /// Removes the member `name` from the root object. Returns whether it was present.
    pub fn remove_root_member(&mut self, name: &str) -> bool {
        let root = self.root.0;
        if let Node::Object(members) = &mut self.nodes[root]
            && let Ok(i) = members.binary_search_by(|(k, _)| k.as_str().cmp(name))
        {
            members.remove(i);
            return true;
        }
        false
    }

    /// Adds (or replaces) the string member `name` of the root object. Does nothing if the
    /// root is not an object.
    pub fn set_root_string_member(&mut self, name: &str, value: &str) {
        let root = self.root.0;
        if !matches!(self.nodes[root], Node::Object(_)) {
            return;
        }
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node::String(value.to_owned()));
        if let Node::Object(members) = &mut self.nodes[root] {
            match members.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
                Ok(i) => members[i].1 = id,
                Err(i) => members.insert(i, (name.to_owned(), id)),
            }
        }
    }

    /// Appends the GCJ encoding of the whole document to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_node_to(self.root, out);
    }

    /// Appends the GCJ encoding of the subtree at `id` to `out`.
    pub fn write_node_to(&self, id: NodeId, out: &mut Vec<u8>) {
        self.write_walk(id, false, out);
    }

    /// Appends the document like GCJ — members sorted, Go string escaping, no whitespace —
    /// except that numbers binary64 cannot represent exactly keep their input text.
    ///
    /// This is what the server stores (PROTOCOL.md decision 1: no float64 round trip for the
    /// client's numbers), while hashes still use GCJ: re-canonicalizing this output gives
    /// exactly the GCJ bytes.
    pub fn write_exact_to(&self, out: &mut Vec<u8>) {
        self.write_walk(self.root, true, out);
    }

    /// [`Document::write_exact_to`] into a fresh vector.
    pub fn to_vec_exact(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_exact_to(&mut out);
        out
    }

    fn write_walk(&self, id: NodeId, exact: bool, out: &mut Vec<u8>) {
        enum Step {
            Value(NodeId),
            Name(NodeId, usize),
            Raw(&'static [u8]),
        }
        let mut stack = vec![Step::Value(id)];
        while let Some(step) = stack.pop() {
            let id = match step {
                Step::Raw(bytes) => {
                    out.extend_from_slice(bytes);
                    continue;
                }
                Step::Name(object, index) => {
                    if let Node::Object(members) = &self.nodes[object.0] {
                        write_string(&members[index].0, out);
                    }
                    continue;
                }
                Step::Value(id) => id,
            };
            match &self.nodes[id.0] {
                Node::Null => out.extend_from_slice(b"null"),
                Node::Bool(true) => out.extend_from_slice(b"true"),
                Node::Bool(false) => out.extend_from_slice(b"false"),
                Node::Number(x) => match self.exact_text(id, exact) {
                    Some(text) => out.extend_from_slice(text.as_bytes()),
                    None => write_number(*x, out),
                },
                Node::String(s) => write_string(s, out),
                Node::Array(items) => {
                    out.push(b'[');
                    stack.push(Step::Raw(b"]"));
                    for (i, item) in items.iter().enumerate().rev() {
                        stack.push(Step::Value(*item));
                        if i > 0 {
                            stack.push(Step::Raw(b","));
                        }
                    }
                }
                Node::Object(members) => {
                    out.push(b'{');
                    stack.push(Step::Raw(b"}"));
                    for (i, (_, value)) in members.iter().enumerate().rev() {
                        stack.push(Step::Value(*value));
                        stack.push(Step::Raw(b":"));
                        stack.push(Step::Name(id, i));
                        if i > 0 {
                            stack.push(Step::Raw(b","));
                        }
                    }
                }
            }
        }
    }

    fn exact_text(&self, id: NodeId, exact: bool) -> Option<&str> {
        if !exact {
            return None;
        }
        self.exact_numbers
            .binary_search_by_key(&id.0, |(n, _)| n.0)
            .ok()
            .map(|i| &*self.exact_numbers[i].1)
    }

    /// The GCJ encoding of the whole document.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_vec()))
    }
}

/// Parses `input` and returns its GCJ encoding: the one canonical form both the Go server and
/// the Go client produce for it.
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, GcjError> {
    Ok(Document::parse(input)?.to_vec())
}

/// Appends a binary64 number the way Go's `encoding/json` writes a `float64`.
///
/// Shortest round-trip digits (ties to the even digit, as `ryu`), fixed notation for
/// `1e-6 <= |x| < 1e21`, exponent notation otherwise with the exponent written without
/// leading zeros and with an explicit sign; `-0` stays `-0`. Non-finite values cannot come
/// out of parsing; they are written as `null` so that the output stays JSON.
pub fn write_number(x: f64, out: &mut Vec<u8>) {
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if x == 0.0 {
        if x.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            out.push(b'0');
        }
        return;
    }
    if x < 0.0 {
        out.push(b'-');
    }
    let abs = x.abs();
    let mut buf = ryu::Buffer::new();
    let (digits, exp) = shortest_digits(buf.format_finite(abs));
    let n = digits.len() as i32;
    if (1e-6..1e21).contains(&abs) {
        if exp >= n - 1 {
            out.extend_from_slice(&digits);
            out.extend(std::iter::repeat_n(b'0', (exp - n + 1) as usize));
        } else if exp >= 0 {
            let split = (exp + 1) as usize;
            out.extend_from_slice(&digits[..split]);
            out.push(b'.');
            out.extend_from_slice(&digits[split..]);
        } else {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
            out.extend_from_slice(&digits);
        }
    } else {
        out.push(digits[0]);
        if n > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp >= 0 { b'+' } else { b'-' });
        out.extend_from_slice(exp.unsigned_abs().to_string().as_bytes());
    }
}

/// Splits ryu's rendering of a positive finite number into its significant digits (no leading
/// or trailing zeros) and the decimal exponent `E` of `d1.d2…dn × 10^E`.
fn shortest_digits(rendered: &str) -> (Vec<u8>, i32) {
    let (mantissa, exp) = match rendered.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (rendered, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    // value = digits × 10^(exp − len(frac)).
    let mut scale = exp - frac_part.len() as i32;
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
        scale += 1;
    }
    let leading = digits.iter().take_while(|d| **d == b'0').count();
    digits.drain(..leading.min(digits.len().saturating_sub(1)));
    let e = scale + digits.len() as i32 - 1;
    (digits, e)
}

/// Appends `s` as a JSON string escaped exactly like Go's `encoding/json` (Go ≥ 1.22):
/// `"` and `\` escaped, `\b \f \n \r \t` short escapes, other C0 controls as `\u00xx`
/// (lower-case hex), `<` `>` `&` U+2028 U+2029 as `\uXXXX`, everything else raw.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Runs of ordinary bytes are skipped with one table lookup each and copied at once.
        if !NEEDS_ATTENTION[usize::from(bytes[i])] {
            i += 1;
            continue;
        }
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            b'<' => Some(b"\\u003c"),
            b'>' => Some(b"\\u003e"),
            b'&' => Some(b"\\u0026"),
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                Some(if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                })
            }
            _ => None,
        };
        if let Some(escape) = escape {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escape);
            i += if b == 0xe2 { 3 } else { 1 };
            start = i;
        } else if b < 0x20 {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
            i += 1;
            start = i;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The bytes [`write_string`] must inspect: controls, `"`, `\`, `<`, `>`, `&`, and 0xE2 (the
/// lead byte of U+2028 and U+2029). Every other byte is copied as it is.
const NEEDS_ATTENTION: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[b'&' as usize] = true;
    table[0xe2] = true;
    table
};

fn push_serde(doc: &mut Document, value: &serde_json::Value) -> NodeId {
    // serde_json stops at depth 128, so recursion is bounded here.
    use serde_json::Value as V;
    let node = match value {
        V::Null => Node::Null,
        V::Bool(b) => Node::Bool(*b),
        V::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let text = n.to_string();
            if !is_exact_in_binary64(&text, x) {
                let id = NodeId(doc.nodes.len());
                doc.exact_numbers.push((id, text.into_boxed_str()));
            }
            Node::Number(x)
        }
        V::String(s) => Node::String(s.clone()),
        V::Array(items) => {
            let ids = items.iter().map(|v| push_serde(doc, v)).collect();
            Node::Array(ids)
        }
        V::Object(map) => {
            let mut members: Vec<(String, NodeId)> = map
                .iter()
                .map(|(k, v)| (k.clone(), push_serde(doc, v)))
                .collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            Node::Object(members)
        }
    };
    // Numbers are leaves, so an exact entry recorded above belongs to this id.
    let id = NodeId(doc.nodes.len());
    doc.nodes.push(node);
    id
}

/// Whether the decimal `text` (JSON number grammar) denotes exactly the value GCJ writes for
/// `x`, its binary64 conversion. Fifteen significant digits or fewer always survive.
fn is_exact_in_binary64(text: &str, x: f64) -> bool {
    let significant = text
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|d| *d == b'0')
        .count();
    if significant <= 15 {
        return true;
    }
    let mut rendered = Vec::new();
    write_number(x, &mut rendered);
    decimal_parts(text) == decimal_parts(std::str::from_utf8(&rendered).unwrap_or(""))
}

/// `(negative, significant digits, exponent)` of a JSON number text, so that two spellings of
/// one decimal value compare equal (`12.50` and `12.5`, `1e2` and `100`). Zero has no digits.
fn decimal_parts(text: &str) -> (bool, Vec<u8>, i64) {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let mut scale = exp - frac_part.len() as i64;
    while digits.last() == Some(&b'0') {
        digits.pop();
        scale += 1;
    }
    let leading = digits.iter().take_while(|d| **d == b'0').count();
    digits.drain(..leading);
    if digits.is_empty() {
        return (negative, digits, 0);
    }
    (negative, digits, scale)
}

enum Frame {
    Array(Vec<NodeId>),
    Object(Vec<(String, NodeId)>, String),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    exact_numbers: Vec<(NodeId, Box<str>)>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Self {
        Parser {
            input,
            pos: 0,
            nodes: Vec::new(),
            exact_numbers: Vec::new(),
        }
    }

    fn err<T>(&self, reason: &'static str) -> Result<T, GcjError> {
        Err(GcjError {
            offset: self.pos,
            reason,
        })
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn push(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(node);
        id
    }

    fn expect_name(&mut self) -> Result<String, GcjError> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return self.err("expected object member name");
        }
        let name = self.parse_string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return self.err("expected ':' after object member name");
        }
        self.pos += 1;
        Ok(name)
    }

    fn parse_document(mut self) -> Result<Document, GcjError> {
        let mut stack: Vec<Frame> = Vec::new();
        let root = 'outer: loop {
            // Parse one value (opening containers as needed).
            self.skip_ws();
            let mut value = match self.peek() {
                None => return self.err("unexpected end of input"),
                Some(b'{') | Some(b'[') => {
                    if stack.len() >= MAX_DEPTH {
                        return self.err("exceeded max depth");
                    }
                    let open = self.input[self.pos];
                    self.pos += 1;
                    self.skip_ws();
                    if open == b'{' {
                        if self.peek() == Some(b'}') {
                            self.pos += 1;
                            self.push(Node::Object(Vec::new()))
                        } else {
                            let name = self.expect_name()?;
                            stack.push(Frame::Object(Vec::new(), name));
                            continue;
                        }
                    } else if self.peek() == Some(b']') {
                        self.pos += 1;
                        self.push(Node::Array(Vec::new()))
                    } else {
                        stack.push(Frame::Array(Vec::new()));
                        continue;
                    }
                }
                Some(b'"') => {
                    let s = self.parse_string()?;
                    self.push(Node::String(s))
                }
                Some(b't') => self.parse_literal(b"true", Node::Bool(true))?,
                Some(b'f') => self.parse_literal(b"false", Node::Bool(false))?,
                Some(b'n') => self.parse_literal(b"null", Node::Null)?,
                Some(b'-' | b'0'..=b'9') => {
                    let start = self.pos;
                    let x = self.parse_number()?;
                    let id = self.push(Node::Number(x));
                    let text = std::str::from_utf8(&self.input[start..self.pos]).unwrap_or("");
                    if !is_exact_in_binary64(text, x) {
                        self.exact_numbers.push((id, text.into()));
                    }
                    id
                }
                Some(_) => return self.err("invalid character looking for beginning of value"),
            };
            // Attach the finished value to its container; close containers as they end.
            loop {
                let Some(frame) = stack.last_mut() else {
                    break 'outer value;
                };
                self.skip_ws();
                let sep = self.peek();
                match frame {
                    Frame::Array(items) => {
                        items.push(value);
                        match sep {
                            Some(b',') => {
                                self.pos += 1;
                                continue 'outer;
                            }
                            Some(b']') => {
                                self.pos += 1;
                                let Some(Frame::Array(items)) = stack.pop() else {
                                    unreachable!("top frame is an array")
                                };
                                value = self.push(Node::Array(items));
                            }
                            _ => return self.err("expected ',' or ']' after array element"),
                        }
                    }
                    Frame::Object(members, name) => {
                        members.push((std::mem::take(name), value));
                        match sep {
                            Some(b',') => {
                                self.pos += 1;
                                let next = self.expect_name()?;
                                if let Some(Frame::Object(_, name)) = stack.last_mut() {
                                    *name = next;
                                }
                                continue 'outer;
                            }
                            Some(b'}') => {
                                self.pos += 1;
                                let Some(Frame::Object(members, _)) = stack.pop() else {
                                    unreachable!("top frame is an object")
                                };
                                value = self.push(Node::Object(canonical_members(members)));
                            }
                            _ => return self.err("expected ',' or '}' after object member"),
                        }
                    }
                }
            }
        };
        self.skip_ws();
        if self.pos != self.input.len() {
            return self.err("invalid character after top-level value");
        }
        Ok(Document {
            nodes: self.nodes,
            root,
            exact_numbers: self.exact_numbers,
        })
    }

    fn parse_literal(&mut self, word: &'static [u8], node: Node) -> Result<NodeId, GcjError> {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(self.push(node))
        } else {
            self.err("invalid literal")
        }
    }

    fn parse_number(&mut self) -> Result<f64, GcjError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while let Some(b'0'..=b'9') = p.peek() {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return self.err("invalid number: no digits after decimal point");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return self.err("invalid number: no digits in exponent");
            }
        }
        // The grammar was checked above, so the text is ASCII and Rust's correctly rounded
        // parser sees exactly what Go's would.
        let text = std::str::from_utf8(&self.input[start..self.pos]).unwrap_or("x");
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            Ok(_) => self.err("number out of range"),
            Err(_) => self.err("invalid number"),
        }
    }

    fn parse_string(&mut self) -> Result<String, GcjError> {
        // Caller checked the opening quote.
        self.pos += 1;
        let mut out = String::new();
        let input = self.input;
        loop {
            // Copy a run of plain ASCII in one go.
            let run_start = self.pos;
            while let Some(&b) = input.get(self.pos) {
                if b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b) {
                    break;
                }
                self.pos += 1;
            }
            if self.pos > run_start {
                // Plain ASCII is valid UTF-8.
                out.push_str(std::str::from_utf8(&input[run_start..self.pos]).unwrap_or(""));
            }
            let Some(&b) = input.get(self.pos) else {
                return self.err("unexpected end of input in string");
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => self.parse_escape(&mut out)?,
                0..=0x1f => return self.err("invalid control character in string"),
                _ => {
                    let (c, len) = decode_utf8(&input[self.pos..]);
                    out.push(c);
                    self.pos += len;
                }
            }
        }
    }

    fn parse_escape(&mut self, out: &mut String) -> Result<(), GcjError> {
        let Some(&c) = self.input.get(self.pos + 1) else {
            return self.err("unexpected end of input in escape");
        };
        let simple = match c {
            b'"' => Some('"'),
            b'\\' => Some('\\'),
            b'/' => Some('/'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'u' => None,
            _ => return self.err("invalid escape in string"),
        };
        if let Some(ch) = simple {
            out.push(ch);
            self.pos += 2;
            return Ok(());
        }
        let Some(first) = hex4(&self.input[self.pos..]) else {
            return self.err("invalid \\u escape in string");
        };
        self.pos += 6;
        if (0xd800..0xe000).contains(&first) {
            // A high surrogate immediately followed by a low one is a pair; any other
            // surrogate becomes U+FFFD and the next escape is examined on its own.
            if (0xd800..0xdc00).contains(&first)
                && let Some(second) = hex4(&self.input[self.pos..])
                && (0xdc00..0xe000).contains(&second)
            {
                let cp = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                self.pos += 6;
                return Ok(());
            }
            out.push('\u{fffd}');
        } else {
            out.push(char::from_u32(first).unwrap_or('\u{fffd}'));
        }
        Ok(())
    }
}

/// Reads `\uXXXX` at the start of `s`, hex digits in either case.
fn hex4(s: &[u8]) -> Option<u32> {
    if s.len() < 6 || s[0] != b'\\' || s[1] != b'u' {
        return None;
    }
    let mut v = 0u32;
    for &b in &s[2..6] {
        v = v * 16 + (b as char).to_digit(16)?;
    }
    Some(v)
}

/// Decodes one UTF-8 sequence at the start of `s` the way Go's `utf8.DecodeRune` does: a
/// complete valid sequence yields its character; anything else yields U+FFFD and consumes
/// exactly one byte.
fn decode_utf8(s: &[u8]) -> (char, usize) {
    let len = match s[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return ('\u{fffd}', 1),
    };
    match s.get(..len).map(std::str::from_utf8) {
        Some(Ok(text)) => (text.chars().next().unwrap_or('\u{fffd}'), len),
        _ => ('\u{fffd}', 1),
    }
}

/// Sorts members by name bytes and keeps the last of each repeated name (Go replaces the
/// earlier value entirely).
fn canonical_members(mut members: Vec<(String, NodeId)>) -> Vec<(String, NodeId)> {
    // Stable sort keeps input order among equal names, so the last of a run is the winner.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(String, NodeId)> = Vec::with_capacity(members.len());
    for member in members {
        match out.last_mut() {
            Some(last) if last.0 == member.0 => *last = member,
            _ => out.push(member),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcj(input: &str) -> String {
        String::from_utf8(canonicalize(input.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn numbers_follow_go_layout() {
        assert_eq!(gcj("1.5e-7"), "1.5e-7");
        assert_eq!(gcj("1e-100"), "1e-100");
        assert_eq!(gcj("123e-20"), "1.23e-18");
        assert_eq!(gcj("0.00012"), "0.00012");
        assert_eq!(gcj("1e15"), "1000000000000000");
        assert_eq!(gcj("-12345.678"), "-12345.678");
    }

    #[test]
    fn nesting_at_go_limit_is_accepted_and_beyond_is_rejected() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(canonicalize(ok.as_bytes()).unwrap(), ok.as_bytes());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(canonicalize(deep.as_bytes()).is_err());
        let objects = "{\"a\":".repeat(MAX_DEPTH) + "1" + &"}".repeat(MAX_DEPTH);
        assert_eq!(
            canonicalize(objects.as_bytes()).unwrap(),
            objects.as_bytes()
        );
    }

    #[test]
    fn document_member_edits_keep_canonical_order() {
        let mut doc = Document::parse(br#"{"b":1,"d":2}"#).unwrap();
        doc.set_root_string_member("c", "x");
        doc.set_root_string_member("a", "<");
        assert!(doc.remove_root_member("d"));
        assert!(!doc.remove_root_member("zz"));
        assert_eq!(doc.to_vec(), br#"{"a":"\u003c","b":1,"c":"x"}"#);
        let b = doc.root_member("b").unwrap();
        assert_eq!(doc.node(b), &Node::Number(1.0));
    }

    #[test]
    fn exact_writer_keeps_numbers_binary64_cannot_hold() {
        let text = br#"{"b":9007199254740993,"a":[12.50,123456789.123456789,42.0,-0,1e400000000000000000000]}"#;
        // 1e400… overflows: not JSON for Go. Use a representable variant for the rest.
        assert!(Document::parse(text).is_err());
        let text = br#"{"b":9007199254740993,"a":[12.50,123456789.123456789,42.0,-0,100000000000000000001e-2]}"#;
        let doc = Document::parse(text).unwrap();
        assert_eq!(
            String::from_utf8(doc.to_vec_exact()).unwrap(),
            r#"{"a":[12.5,123456789.123456789,42,-0,100000000000000000001e-2],"b":9007199254740993}"#
        );
        assert_eq!(
            String::from_utf8(doc.to_vec()).unwrap(),
            r#"{"a":[12.5,123456789.12345679,42,-0,1000000000000000000],"b":9007199254740992}"#
        );
        // Re-canonicalizing the exact form gives the GCJ form: hashes are unaffected.
        assert_eq!(canonicalize(&doc.to_vec_exact()).unwrap(), doc.to_vec());
        // Replacing a value drops its exact text.
        let mut doc = doc;
        let b = doc.root_member("b").unwrap();
        doc.set_scalar(b, Node::Number(1.0));
        assert!(doc.to_vec_exact().ends_with(br#""b":1}"#));
    }

    #[test]
    fn from_serde_matches_parsing_the_same_text() {
        let text = r#"{"z":[1,2.5,-0.0,9007199254740993],"a":{"y":null,"x":true},"s":"<&>"}"#;
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            Document::from_serde(&value).to_vec(),
            canonicalize(text.as_bytes()).unwrap()
        );
    }
}
