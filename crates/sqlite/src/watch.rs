//! Parsing the `GET /sync/watch` event stream (client chapter §9.6, wire chapter §7.6–§7.8).
//!
//! A small line parser instead of a general SSE library, because the reference's rules are
//! not the HTML ones and a compatible server only promises to stay within the reference's:
//! lines end in `\n` (one `\r` before it is dropped; a bare `\r` is *not* a line end), a line
//! may hold at most 1 MiB, `:` lines are comments, `event:` and `data:` drop one optional
//! space, `data:` lines are joined with `\n` (only once data is non-empty, as Go's
//! `strings.Builder` check does), a blank line dispatches, and only events named `bundle`
//! are decoded. `id:`, `retry:` and unknown lines are ignored; a final line without `\n` is
//! still processed at the end of the stream, like Go's `bufio.Scanner`.
//!
//! Events are wake-up hints only: nothing here touches SQLite.

use std::collections::VecDeque;

use oversync_protocol::wire::{BundleChangeEvent, SSE_BUNDLE_EVENT};

use crate::transport::{TransportError, WatchBody};

/// The longest line the parser accepts, terminator included (Go's scanner buffer).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Why a watch stream ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchStreamError {
    /// The server ended the stream cleanly (routine: the example server's 120 s write
    /// timeout ends every stream). Fault: nobody.
    #[error("bundle change watch stream ended")]
    Eof,
    /// Reading the body failed (idle timeout, connection reset). Fault: the network.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A line exceeded [`MAX_LINE_BYTES`]. Fault: the server.
    #[error("bundle watch stream line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// A `bundle` event's data is not a bundle-change event. Fault: the server.
    #[error("decode bundle watch event: {0}")]
    Decode(String),
    /// A `bundle` event with `bundle_seq ≤ 0`. Fault: the server.
    #[error("bundle watch event missing bundle_seq")]
    MissingBundleSeq,
}

/// Incremental parser: feed it bytes as they arrive, collect the `bundle` events.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Consumes `bytes`, appending every dispatched `bundle` event to `out`.
    ///
    /// # Errors
    /// [`WatchStreamError::LineTooLong`], [`WatchStreamError::Decode`] or
    /// [`WatchStreamError::MissingBundleSeq`]; the stream is unusable afterwards.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        out: &mut Vec<BundleChangeEvent>,
    ) -> Result<(), WatchStreamError> {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if self.line.len() + end + 1 > MAX_LINE_BYTES {
                return Err(WatchStreamError::LineTooLong);
            }
            self.line.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
            self.line = line;
            self.line.clear();
        }
        if self.line.len() + bytes.len() >= MAX_LINE_BYTES {
            return Err(WatchStreamError::LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Ends the stream: a last line without `\n` is processed (it can only set fields, since
    /// dispatch needs a blank line after it).
    ///
    /// # Errors
    /// As [`SseParser::feed`].
    pub fn finish(&mut self, out: &mut Vec<BundleChangeEvent>) -> Result<(), WatchStreamError> {
        if self.line.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.line);
        self.line_done(&line, out)
    }

    fn line_done(
        &mut self,
        line: &[u8],
        out: &mut Vec<BundleChangeEvent>,
    ) -> Result<(), WatchStreamError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if event == SSE_BUNDLE_EVENT.as_bytes() {
                let decoded: BundleChangeEvent = serde_json::from_slice(&data)
                    .map_err(|e| WatchStreamError::Decode(e.to_string()))?;
                if decoded.bundle_seq <= 0 {
                    return Err(WatchStreamError::MissingBundleSeq);
                }
                out.push(decoded);
            }
            return Ok(());
        }
        if line.starts_with(b":") {
            return Ok(());
        }
        if let Some(value) = line.strip_prefix(b"event:") {
            self.event = value.strip_prefix(b" ").unwrap_or(value).to_vec();
        } else if let Some(value) = line.strip_prefix(b"data:") {
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data
                .extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
        Ok(())
    }
}

/// The `bundle` events of an open watch stream.
#[derive(Debug)]
pub struct WatchEvents {
    body: Box<dyn WatchBody>,
    parser: SseParser,
    ready: VecDeque<BundleChangeEvent>,
    ended: bool,
}

impl WatchEvents {
    /// Reads events from `body`.
    pub fn new(body: Box<dyn WatchBody>) -> WatchEvents {
        WatchEvents {
            body,
            parser: SseParser::new(),
            ready: VecDeque::new(),
            ended: false,
        }
    }

    /// The next `bundle` event. Cancel-safe: dropping the future loses no parsed event.
    ///
    /// # Errors
    /// Why the stream ended; [`WatchStreamError::Eof`] for a clean end.
    pub async fn next(&mut self) -> Result<BundleChangeEvent, WatchStreamError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if self.ended {
                return Err(WatchStreamError::Eof);
            }
            let mut out = Vec::new();
            match self.body.next_chunk().await? {
                Some(chunk) => self.parser.feed(&chunk, &mut out)?,
                None => {
                    self.ended = true;
                    self.parser.finish(&mut out)?;
                }
            }
            self.ready.extend(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Result<Vec<i64>, WatchStreamError> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out)?;
        }
        parser.finish(&mut out)?;
        Ok(out.iter().map(|e| e.bundle_seq).collect())
    }

    #[test]
    fn the_servers_exact_frames_yield_one_event_each_and_heartbeats_none() {
        let stream = b": heartbeat\n\nevent: bundle\ndata: {\"bundle_seq\":157,\"source_id\":\"device-a\",\"source_bundle_id\":9}\n\n: heartbeat\n\nevent: bundle\ndata: {\"bundle_seq\":158}\n\n";
        assert_eq!(parse(&[stream]).unwrap(), vec![157, 158]);
    }

    #[test]
    fn live_event_fields_are_decoded() {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        parser
            .feed(
                b"event: bundle\ndata: {\"bundle_seq\":3,\"source_id\":\"a\",\"source_bundle_id\":2}\n\n",
                &mut out,
            )
            .unwrap();
        assert_eq!(out[0].source_id, "a");
        assert_eq!(out[0].source_bundle_id, 2);
    }

    #[test]
    fn frames_split_at_every_byte_boundary_parse_the_same() {
        let stream = b"event: bundle\r\ndata: {\"bundle_seq\":7}\r\n\r\n";
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(parse(&[a, b]).unwrap(), vec![7], "cut at {cut}");
        }
    }

    #[test]
    fn crlf_line_ends_are_tolerated() {
        assert_eq!(
            parse(&[b"event: bundle\r\ndata: {\"bundle_seq\":4}\r\n\r\n"]).unwrap(),
            vec![4]
        );
    }

    #[test]
    fn a_bare_carriage_return_does_not_end_a_line() {
        // Go's line scanner splits on `\n` only, so this is one `event:` line whose value is
        // not `bundle`, and nothing dispatches.
        assert_eq!(
            parse(&[b"event: bundle\rdata: {\"bundle_seq\":4}\r\n\n"]).unwrap(),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn the_space_after_the_colon_is_optional() {
        assert_eq!(
            parse(&[b"event:bundle\ndata:{\"bundle_seq\":5}\n\n"]).unwrap(),
            vec![5]
        );
    }

    #[test]
    fn only_one_space_after_the_colon_is_dropped() {
        assert!(matches!(
            parse(&[b"event:  bundle\ndata: {\"bundle_seq\":5}\n\n"]),
            Ok(v) if v.is_empty()
        ));
    }

    #[test]
    fn multiple_data_lines_are_joined_with_newlines() {
        assert_eq!(
            parse(&[b"event: bundle\ndata: {\"bundle_seq\":\ndata: 9}\n\n"]).unwrap(),
            vec![9]
        );
    }

    #[test]
    fn events_with_another_name_or_no_name_are_ignored() {
        assert_eq!(
            parse(&[
                b"event: other\ndata: {\"bundle_seq\":1}\n\ndata: {\"bundle_seq\":2}\n\nevent: bundle\ndata: {\"bundle_seq\":3}\n\n"
            ])
            .unwrap(),
            vec![3]
        );
    }

    #[test]
    fn id_retry_and_unknown_lines_are_ignored() {
        assert_eq!(
            parse(&[b"id: 1\nretry: 10\nevent: bundle\nwhatever\ndata: {\"bundle_seq\":6}\n\n"])
                .unwrap(),
            vec![6]
        );
    }

    #[test]
    fn comments_inside_an_event_do_not_dispatch_it() {
        assert_eq!(
            parse(&[b"event: bundle\n: heartbeat\ndata: {\"bundle_seq\":8}\n\n"]).unwrap(),
            vec![8]
        );
    }

    #[test]
    fn an_event_without_the_closing_blank_line_is_not_dispatched() {
        assert_eq!(
            parse(&[b"event: bundle\ndata: {\"bundle_seq\":8}\n"]).unwrap(),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn undecodable_bundle_data_ends_the_stream() {
        assert!(matches!(
            parse(&[b"event: bundle\ndata: nope\n\n"]),
            Err(WatchStreamError::Decode(_))
        ));
    }

    #[test]
    fn a_bundle_event_without_a_positive_bundle_seq_ends_the_stream() {
        assert!(matches!(
            parse(&[b"event: bundle\ndata: {\"bundle_seq\":0}\n\n"]),
            Err(WatchStreamError::MissingBundleSeq)
        ));
    }

    #[test]
    fn a_line_of_exactly_the_limit_including_its_newline_is_accepted() {
        let mut line = b": ".to_vec();
        line.resize(MAX_LINE_BYTES - 1, b'x');
        line.push(b'\n');
        assert!(parse(&[&line]).is_ok());
    }

    #[test]
    fn a_line_longer_than_one_mebibyte_ends_the_stream() {
        let mut line = b": ".to_vec();
        line.resize(MAX_LINE_BYTES, b'x');
        line.push(b'\n');
        assert!(matches!(
            parse(&[&line]),
            Err(WatchStreamError::LineTooLong)
        ));
        // Also when it arrives in pieces and never ends.
        let half = vec![b'x'; MAX_LINE_BYTES / 2];
        assert!(matches!(
            parse(&[&half, &half]),
            Err(WatchStreamError::LineTooLong)
        ));
    }
}
