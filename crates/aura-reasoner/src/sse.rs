//! An incremental parser for server-sent events, the framing both HTTP providers stream
//! in.
//!
//! It follows the WHATWG event-stream rules that matter to a client: lines end in LF,
//! CR LF or CR (also when a CR LF pair is split between chunks); a line starting with
//! `:` is a comment; `field: value` loses one space after the colon; `data` lines
//! accumulate, joined by LF; a blank line dispatches the event, unless it has no data;
//! a leading byte-order mark is dropped; an event left unfinished when the stream ends
//! is discarded. `id` and `retry` are read and ignored, since a reasoner never
//! reconnects a stream: it retries the whole request.
//!
//! Bytes arrive in whatever pieces the network delivers, so the parser keeps the
//! unfinished line between calls. It refuses lines that are not UTF-8 and events above
//! a size limit, so a hostile server cannot make it hold unbounded memory.

use crate::Error;

/// The default limit on one event's size (its data and its longest line).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 << 20;

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if the event had one (the spec's default type is `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined by LF.
    pub data: String,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous chunk ended in CR, so a LF starting this one ends no line.
    skip_lf: bool,
    first_line: bool,
    event: Option<String>,
    data: String,
    max_event_bytes: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    pub fn new() -> Self {
        Parser::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_limit(max_event_bytes: usize) -> Self {
        Parser {
            line: Vec::new(),
            skip_lf: false,
            first_line: true,
            event: None,
            data: String::new(),
            max_event_bytes,
        }
    }

    /// Feeds the next bytes of the stream, appending every event they complete to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        while !input.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            match input.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.extend_line(input)?;
                    break;
                }
                Some(i) => {
                    self.extend_line(&input[..i])?;
                    self.skip_lf = input[i] == b'\r';
                    input = &input[i + 1..];
                    self.end_line(out)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the stream so far ends inside an event (data seen but not dispatched, or
    /// a line not ended): if the stream ends here, that event is lost.
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty()
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.line.len() + bytes.len() > self.max_event_bytes {
            return Err(Error::Protocol(format!(
                "an event-stream line is longer than {} bytes",
                self.max_event_bytes
            )));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<Event>) -> Result<(), Error> {
        let mut bytes = std::mem::take(&mut self.line);
        let mut line: &[u8] = &bytes;
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let result = self.process(line, out);
        // Keep the buffer's capacity for the next line.
        bytes.clear();
        self.line = bytes;
        result
    }

    fn process(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        if line.is_empty() {
            let event = self.event.take();
            if !self.data.is_empty() {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the LF after the last data line
                out.push(Event { event, data });
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| Error::Protocol("the event stream is not valid UTF-8".into()))?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(Error::Protocol(format!(
                        "an event is larger than {} bytes",
                        self.max_event_bytes
                    )));
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` only matter to a client that reconnects; unknown fields
            // are ignored, as the spec says.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(input: &str) -> Result<Vec<(Option<String>, String)>, Error> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(input.as_bytes(), &mut out)?;
        Ok(out.into_iter().map(|e| (e.event, e.data)).collect())
    }

    fn check(input: &str, expect: &[(Option<&str>, &str)]) {
        let got = parse(input).unwrap();
        let expect: Vec<_> = expect
            .iter()
            .map(|(e, d)| (e.map(str::to_owned), (*d).to_owned()))
            .collect();
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn events_as_the_spec_reads_them() {
        check("data: hello\n\n", &[(None, "hello")]);
        check("data:hello\n\n", &[(None, "hello")]);
        check("data:  two spaces\n\n", &[(None, " two spaces")]);
        check("data: a\ndata: b\n\n", &[(None, "a\nb")]);
        check("data\n\n", &[(None, "")]);
        check("data:\ndata:\n\n", &[(None, "\n")]);
        check("event: ping\ndata: {}\n\n", &[(Some("ping"), "{}")]);
        check(": keep-alive\n\ndata: x\n\n", &[(None, "x")]);
        check("data: x\r\n\r\n", &[(None, "x")]);
        check("data: x\r\rdata: y\r\r", &[(None, "x"), (None, "y")]);
        check("\u{feff}data: bom\n\n", &[(None, "bom")]);
        check("id: 7\nretry: 100\nfoo: bar\ndata: x\n\n", &[(None, "x")]);
        check("data: [DONE]\n\n", &[(None, "[DONE]")]);
        check("data: a: b\n\n", &[(None, "a: b")]);
        // The event type does not leak into the next event.
        check("event: a\n\ndata: x\n\n", &[(None, "x")]);
        // No blank line yet: nothing is dispatched.
        check("data: x\n", &[]);
        check("\n\n\n", &[]);
        // A BOM is stripped only at the very start.
        check("data: x\n\n\u{feff}data: y\n\n", &[(None, "x")]);
    }

    #[test]
    fn a_crlf_split_between_chunks_ends_one_line() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b"data: x\r", &mut out).unwrap();
        p.feed(b"\ndata: y\r", &mut out).unwrap();
        p.feed(b"\n\r", &mut out).unwrap();
        p.feed(b"\n", &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, "x\ny");
    }

    #[test]
    fn invalid_utf8_is_a_protocol_error() {
        let mut p = Parser::new();
        let err = p.feed(b"data: \xff\xfe\n\n", &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[test]
    fn oversized_lines_and_events_are_refused() {
        let mut p = Parser::with_limit(16);
        let err = p.feed(&[b'a'; 17], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("longer than 16 bytes"), "{err}");

        let mut p = Parser::with_limit(16);
        let err = p
            .feed(b"data: 01234567\ndata: 01234567\n", &mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("larger than 16 bytes"), "{err}");
    }

    #[test]
    fn partial_events_are_reported() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b"data: x\n\n", &mut out).unwrap();
        assert!(!p.has_partial_event());
        p.feed(b"data: y\n", &mut out).unwrap();
        assert!(p.has_partial_event());
        let mut p = Parser::new();
        p.feed(b"data: y", &mut out).unwrap();
        assert!(p.has_partial_event());
    }

    /// Writes events in one of the equivalent forms the spec allows.
    fn render(events: &[(Option<String>, String)], newline: &str, comments: bool) -> String {
        let mut s = String::new();
        for (event, data) in events {
            if comments {
                s.push_str(": note");
                s.push_str(newline);
            }
            if let Some(e) = event {
                s.push_str(&format!("event: {e}{newline}"));
            }
            for line in data.split('\n') {
                s.push_str(&format!("data: {line}{newline}"));
            }
            s.push_str(newline);
        }
        s
    }

    fn arb_events() -> impl Strategy<Value = Vec<(Option<String>, String)>> {
        // Data and event names without CR or LF inside a line (data may hold LFs, which
        // render as several data lines).
        let text = "[^\r\n]{0,12}";
        let data = prop::collection::vec(text, 1..4).prop_map(|lines| lines.join("\n"));
        let event = prop::option::of("[a-z_]{1,10}");
        prop::collection::vec((event, data), 0..8)
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            events in arb_events(),
            newline in prop::sample::select(vec!["\n", "\r\n", "\r"]),
            comments in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let text = render(&events, newline, comments);
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = Parser::new();
            let mut out = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                p.feed(&bytes[at..c], &mut out).unwrap();
                at = c;
            }
            let got: Vec<_> = out.into_iter().map(|e| (e.event, e.data)).collect();
            prop_assert_eq!(got, events);
            prop_assert!(!p.has_partial_event());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            let mut p = Parser::with_limit(100);
            let mut out = Vec::new();
            for c in &chunks {
                if p.feed(c, &mut out).is_err() {
                    break;
                }
            }
        }
    }
}
