//! Conflict resolution vocabulary (client chapter §5): what a resolver is told about a
//! structured `push_conflict`, what it may answer, and the ready-made resolvers.
//!
//! A resolver is a synchronous, side-effect-free decision. The client applies the decision
//! itself (one transaction, §5.4), so a resolver can never leave local state half-changed; an
//! answer that does not fit the conflict is refused and the local intent stays replayable
//! (`PushError::InvalidConflictResolution`).
//!
//! **Encodings (§12 B9).** Both payloads in a [`ConflictContext`] use the *wire* encoding (BLOB
//! columns as standard base64, UUID-valued BLOB columns as canonical UUID text, member names
//! lower-cased), and a [`MergeResult::KeepMerged`] payload must use it too. The reference hands
//! the local payload over in its local encoding (BLOBs as hex) and expects the merged one in
//! wire encoding, so a resolver that returned the local payload unchanged corrupted BLOBs.

use std::fmt;

use oversync_protocol::op::Op;
use oversync_protocol::wire::SyncKey;
use serde_json::value::RawValue;

/// Everything the server and the outbox say about one conflicting row.
#[derive(Debug, Clone)]
pub struct ConflictContext {
    /// The server schema of the row.
    pub schema: String,
    /// The table (lower-cased).
    pub table: String,
    /// The row's key as the server reported it (wire form).
    pub key: SyncKey,
    /// The op this client tried to push.
    pub local_op: Op,
    /// The full row this client tried to push, in wire encoding; `None` for a DELETE.
    pub local_payload: Option<Box<RawValue>>,
    /// The `base_row_version` the push carried, as reported by the server.
    pub base_row_version: i64,
    /// The server's current version of the row (0 when it has none).
    pub server_row_version: i64,
    /// Whether the server holds a tombstone for the row.
    pub server_row_deleted: bool,
    /// The server's live row in wire encoding; `None` when it is deleted or missing.
    pub server_row_payload: Option<Box<RawValue>>,
}

/// The three shapes the server reports the authoritative row in (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRow {
    /// The server has a live row (`server_row_payload` is set).
    Live,
    /// The server holds a tombstone.
    Tombstone,
    /// The server has no state for the key (`server_row_version` is 0).
    Missing,
}

impl ConflictContext {
    /// The shape of the server's row.
    pub fn server_row(&self) -> ServerRow {
        if self.server_row_payload.is_some() {
            ServerRow::Live
        } else if self.server_row_deleted {
            ServerRow::Tombstone
        } else {
            ServerRow::Missing
        }
    }
}

/// A resolver's decision for one conflict (§5.2).
#[derive(Debug, Clone)]
pub enum MergeResult {
    /// Adopt the server's state and drop the local intent for this key.
    AcceptServer,
    /// Keep the local intent and retry it against the server's version. Valid for an INSERT
    /// (any server row), an UPDATE of a live server row, and any DELETE.
    KeepLocal,
    /// Write this full row locally and retry it. It must be a JSON object with exactly the
    /// table's columns (member names compared case-insensitively), in wire encoding. Not valid
    /// for a DELETE, nor for an UPDATE whose server row is deleted or missing.
    KeepMerged(Box<RawValue>),
}

/// Decides how to recover from a structured push conflict. Called while the client's
/// operation gate is held: it must not call back into the client.
pub trait Resolver: fmt::Debug + Send + Sync {
    /// The decision for `conflict`.
    fn resolve(&self, conflict: &ConflictContext) -> MergeResult;
}

/// The server's state always wins: [`MergeResult::AcceptServer`]. The client's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerWins;

impl Resolver for ServerWins {
    fn resolve(&self, _: &ConflictContext) -> MergeResult {
        MergeResult::AcceptServer
    }
}

/// The reference's `DefaultResolver`, kept as a name: server wins.
pub type DefaultResolver = ServerWins;

/// The local intent always wins where it can: [`MergeResult::KeepLocal`]. For an UPDATE of a
/// row the server has deleted this is an invalid resolution (the intent stays queued).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientWins;

impl Resolver for ClientWins {
    fn resolve(&self, _: &ConflictContext) -> MergeResult {
        MergeResult::KeepLocal
    }
}

/// Last writer wins by a timestamp column holding RFC 3339 text (e.g. `updated_at`).
///
/// For a local INSERT or UPDATE against a live server row whose payloads both carry a
/// parseable timestamp in `column`, the local row is kept when its instant is the same or
/// later (ties go to the local writer, as in the reference's test resolver); otherwise, and
/// in every other shape, the server wins. Instants are compared exactly (any offset, any
/// number of fraction digits), not as text.
#[derive(Debug, Clone)]
pub struct LastWriterWins {
    column: String,
}

impl LastWriterWins {
    /// Compares the column `column` (matched case-insensitively, as member names are
    /// lower-cased on the wire).
    pub fn new(column: impl Into<String>) -> Self {
        LastWriterWins {
            column: column.into().to_lowercase(),
        }
    }

    /// The column compared.
    pub fn column(&self) -> &str {
        &self.column
    }

    fn instant(&self, payload: Option<&RawValue>) -> Option<(i64, u32)> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(payload?.get()).ok()?;
        let text = map
            .iter()
            .find(|(k, _)| k.to_lowercase() == self.column)?
            .1
            .as_str()?;
        parse_rfc3339(text)
    }
}

impl Default for LastWriterWins {
    /// Compares `updated_at`.
    fn default() -> Self {
        LastWriterWins::new("updated_at")
    }
}

impl Resolver for LastWriterWins {
    fn resolve(&self, conflict: &ConflictContext) -> MergeResult {
        if conflict.local_op == Op::Delete || conflict.server_row() != ServerRow::Live {
            return MergeResult::AcceptServer;
        }
        let local = self.instant(conflict.local_payload.as_deref());
        let server = self.instant(conflict.server_row_payload.as_deref());
        match (local, server) {
            (Some(local), Some(server)) if local >= server => MergeResult::KeepLocal,
            _ => MergeResult::AcceptServer,
        }
    }
}

/// Parses an RFC 3339 `date-time` (`2026-03-24T18:02:00.5+01:00`) into seconds since the Unix
/// epoch and nanoseconds, UTC. `T`/`Z` may be lower-case (RFC 3339 §5.6); fraction digits
/// beyond nine are truncated; a leap second (`:60`) is refused, as Go refuses it.
///
/// Hand-written rather than taken from the `time` crate: the grammar is a dozen fixed-width
/// fields, the result is only ever compared, and the crate would be this client's only use of
/// a date library (the protocol crate formats its timestamps by hand for the same reason).
pub(crate) fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let (h, m) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    Some((seconds, nanos))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_utc_offsets_and_fractions_to_the_same_instant() {
        let utc = parse_rfc3339("2026-03-24T18:02:00Z").unwrap();
        assert_eq!(utc, (1_774_375_320, 0));
        assert_eq!(parse_rfc3339("2026-03-24T19:02:00+01:00"), Some(utc));
        assert_eq!(parse_rfc3339("2026-03-24t13:32:00-04:30"), Some(utc));
        assert_eq!(parse_rfc3339("2026-03-24T18:02:00.000z"), Some(utc));
        assert_eq!(
            parse_rfc3339("2026-03-24T18:02:00.1234567891Z"),
            Some((1_774_375_320, 123_456_789))
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59.5Z"),
            Some((-1, 500_000_000))
        );
    }

    #[test]
    fn rfc3339_rejects_malformed_and_out_of_range_text() {
        for bad in [
            "",
            "2026-03-24",
            "2026-03-24 18:02:00Z",
            "2026-03-24T18:02:00",
            "2026-03-24T18:02:00.Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-03-24T24:00:00Z",
            "2026-03-24T18:02:60Z",
            "2026-03-24T18:02:00+0100",
            "2026-03-24T18:02:00Z ",
            "+026-03-24T18:02:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }

    fn context(local: &str, server: Option<&str>) -> ConflictContext {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        ConflictContext {
            schema: "business".to_owned(),
            table: "users".to_owned(),
            key: SyncKey::from([("id".to_owned(), "u1".to_owned())]),
            local_op: Op::Update,
            local_payload: Some(raw(local)),
            base_row_version: 1,
            server_row_version: 2,
            server_row_deleted: server.is_none(),
            server_row_payload: server.map(raw),
        }
    }

    #[test]
    fn last_writer_wins_keeps_the_later_or_equal_local_instant() {
        let lww = LastWriterWins::default();
        let newer = context(
            r#"{"id":"u1","updated_at":"2026-03-24T18:02:00Z"}"#,
            Some(r#"{"id":"u1","updated_at":"2026-03-24T18:01:00Z"}"#),
        );
        assert!(matches!(lww.resolve(&newer), MergeResult::KeepLocal));
        let tie = context(
            r#"{"id":"u1","updated_at":"2026-03-24T19:01:00+01:00"}"#,
            Some(r#"{"id":"u1","updated_at":"2026-03-24T18:01:00Z"}"#),
        );
        assert!(matches!(lww.resolve(&tie), MergeResult::KeepLocal));
    }

    #[test]
    fn last_writer_wins_lets_the_server_win_when_newer_unparseable_or_deleted() {
        let lww = LastWriterWins::default();
        let older = context(
            r#"{"id":"u1","updated_at":"2026-03-24T18:00:00Z"}"#,
            Some(r#"{"id":"u1","updated_at":"2026-03-24T18:00:00.001Z"}"#),
        );
        assert!(matches!(lww.resolve(&older), MergeResult::AcceptServer));
        let garbage = context(
            r#"{"id":"u1","updated_at":"yesterday"}"#,
            Some(r#"{"id":"u1","updated_at":"2026-03-24T18:00:00Z"}"#),
        );
        assert!(matches!(lww.resolve(&garbage), MergeResult::AcceptServer));
        let deleted = context(r#"{"id":"u1","updated_at":"2030-01-01T00:00:00Z"}"#, None);
        assert!(matches!(lww.resolve(&deleted), MergeResult::AcceptServer));
    }

    #[test]
    fn built_in_resolvers_return_their_documented_results() {
        let c = context(r#"{"id":"u1"}"#, Some(r#"{"id":"u1"}"#));
        assert!(matches!(ServerWins.resolve(&c), MergeResult::AcceptServer));
        assert!(matches!(
            DefaultResolver::default().resolve(&c),
            MergeResult::AcceptServer
        ));
        assert!(matches!(ClientWins.resolve(&c), MergeResult::KeepLocal));
    }
}
