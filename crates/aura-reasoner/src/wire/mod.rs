//! The providers' wire formats, without the network: how a [`Request`](crate::Request)
//! becomes a request body, and how response bodies and event streams become a
//! [`Turn`] and its [`Delta`]s.
//!
//! Everything here is pure, so it is tested (and fuzzed) on bytes alone; the HTTP
//! providers only move those bytes.

pub mod anthropic;
pub mod openai;

use crate::sse::Event;
use crate::{Delta, Error, Turn};

/// Turns one provider's response into a [`Turn`].
pub trait Decoder {
    /// Handles one server-sent event, emitting deltas as they are known. Returns `true`
    /// once the stream has said the turn is complete; later events are not read.
    fn on_event(&mut self, event: &Event, emit: &mut dyn FnMut(Delta)) -> Result<bool, Error>;

    /// The turn, once the event stream has ended (whether or not `on_event` said it
    /// was complete). A stream cut off before the provider said why it stopped is
    /// [`Error::Truncated`].
    fn finish(self) -> Result<Turn, Error>;

    /// Decodes a response that was not streamed (one JSON document).
    fn decode_whole(self, body: &[u8]) -> Result<Turn, Error>;
}

/// The most tool calls one turn may hold; a stream claiming more is refused rather
/// than allowed to grow without bound.
pub const MAX_TOOL_CALLS: usize = 256;

/// Emits the deltas a watcher would have seen had `turn` been streamed: used for
/// responses that were not streamed, and by the scripted provider.
pub fn emit_turn(turn: &Turn, emit: &mut dyn FnMut(Delta)) {
    if !turn.content.is_empty() {
        emit(Delta::Text(turn.content.clone()));
    }
    for call in &turn.tool_calls {
        emit(Delta::ToolCallStarted {
            id: call.id.clone(),
            name: call.name.clone(),
        });
        emit(Delta::ToolCallArguments {
            id: call.id.clone(),
            fragment: arguments_text(&call.arguments),
        });
    }
}

/// Parses a tool call's arguments as the model wrote them. No text means no
/// arguments (`{}`); text that is not JSON is kept as a JSON string (see
/// [`ToolCall::arguments`](crate::ToolCall::arguments)).
pub fn parse_arguments(text: &str) -> serde_json::Value {
    if text.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// The inverse of [`parse_arguments`]: the text to send back to a provider.
pub fn arguments_text(arguments: &serde_json::Value) -> String {
    match arguments {
        serde_json::Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// Parses a JSON document from a provider, naming what it was when it is malformed.
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(
    what: &str,
    text: &'a [u8],
) -> Result<T, Error> {
    serde_json::from_slice(text).map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

/// The first `max` characters of `s`, on one line, for error messages.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    let one_line: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_print_back() {
        assert_eq!(parse_arguments(""), serde_json::json!({}));
        assert_eq!(parse_arguments("  "), serde_json::json!({}));
        assert_eq!(parse_arguments(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(parse_arguments(r#"{"a":"#), serde_json::json!(r#"{"a":"#));
        assert_eq!(arguments_text(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(arguments_text(&serde_json::json!(r#"{"a":"#)), r#"{"a":"#);
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt("a\n  b\tc", 10), "a b c");
        assert_eq!(excerpt("héllo wörld", 5), "héllo…");
        assert_eq!(excerpt("x\u{7}y", 5), "xy");
    }
}
