//! Row operations and their numeric codes (03-encoding.md §3.6).
//!
//! The wire speaks upper-case words, the `sync` schema stores SMALLINT codes; both sides of
//! the mapping live here so that neither the server nor the client spells them on its own.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A row operation inside a push or a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Op {
    /// `INSERT`, code 1.
    #[serde(rename = "INSERT")]
    Insert,
    /// `UPDATE`, code 2.
    #[serde(rename = "UPDATE")]
    Update,
    /// `DELETE`, code 3.
    #[serde(rename = "DELETE")]
    Delete,
}

/// An op string or code that is not one of the three operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// A pushed op that is not INSERT, UPDATE or DELETE after trimming and upper-casing.
    #[error("invalid op {0:?}")]
    InvalidPushOp(String),
    /// A received op that is not exactly one of the upper-case words.
    #[error("unsupported row op {0:?}")]
    UnsupportedRowOp(String),
    /// A stored code outside 1..=3.
    #[error("unsupported op_code {0}")]
    UnsupportedCode(i16),
}

impl Op {
    /// The upper-case wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
        }
    }

    /// The SMALLINT stored in `sync.*` tables.
    pub fn code(self) -> i16 {
        match self {
            Op::Insert => 1,
            Op::Update => 2,
            Op::Delete => 3,
        }
    }

    /// The operation stored as `code`.
    pub fn from_code(code: i16) -> Result<Op, OpError> {
        match code {
            1 => Ok(Op::Insert),
            2 => Ok(Op::Update),
            3 => Ok(Op::Delete),
            other => Err(OpError::UnsupportedCode(other)),
        }
    }

    /// Reads a pushed op as the server does: trimmed and upper-cased first, so `" insert "`
    /// is accepted.
    pub fn parse_push(raw: &str) -> Result<Op, OpError> {
        Op::parse_exact(&raw.trim().to_uppercase())
            .map_err(|_| OpError::InvalidPushOp(raw.to_owned()))
    }

    /// Reads a received op as the client does: only the exact upper-case words.
    pub fn parse_exact(raw: &str) -> Result<Op, OpError> {
        match raw {
            "INSERT" => Ok(Op::Insert),
            "UPDATE" => Ok(Op::Update),
            "DELETE" => Ok(Op::Delete),
            other => Err(OpError::UnsupportedRowOp(other.to_owned())),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ops_are_trimmed_and_upper_cased_but_received_ops_are_exact() {
        assert_eq!(Op::parse_push(" insert "), Ok(Op::Insert));
        assert!(Op::parse_push("upsert").is_err());
        assert!(Op::parse_exact("insert").is_err());
        assert_eq!(Op::parse_exact("DELETE"), Ok(Op::Delete));
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_fail() {
        for op in [Op::Insert, Op::Update, Op::Delete] {
            assert_eq!(Op::from_code(op.code()), Ok(op));
        }
        assert_eq!(Op::from_code(4), Err(OpError::UnsupportedCode(4)));
    }
}
