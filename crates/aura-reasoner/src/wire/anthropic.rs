//! Anthropic's Messages format.
//!
//! The differences from OpenAI's that matter here: the system prompt is a separate
//! field; a message is a list of content blocks; tool calls are `tool_use` blocks in the
//! assistant's message and their results `tool_result` blocks in the next user message;
//! roles must alternate, so consecutive messages of one role are merged; and the stream
//! is a sequence of typed events (`message_start`, `content_block_start`,
//! `content_block_delta` with `text_delta` or `input_json_delta`, `content_block_stop`,
//! `message_delta` with the stop reason and output usage, `message_stop`, `ping`,
//! `error`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Decoder, MAX_TOOL_CALLS, excerpt, parse_arguments, parse_json};
use crate::sse::Event;
use crate::{Delta, Error, Finish, Message, Request, Role, ToolCall, ToolChoice, Turn, Usage};

/// The provider name recorded in turns.
pub const PROVIDER: &str = "anthropic";

/// The JSON body of a Messages request. `max_tokens` is used when the request sets no
/// limit (Anthropic requires one). Anthropic has no sampling seed; `request.seed` is
/// not sent.
pub fn request_body(request: &Request, model: &str, max_tokens: u32, stream: bool) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("model".into(), model.into());
    body.insert(
        "max_tokens".into(),
        request.max_tokens.unwrap_or(max_tokens).into(),
    );
    // Anthropic has one system prompt, not system messages in the conversation: every
    // system message goes into it, in order.
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System && !m.content.is_empty())
        .map(|m| m.content.as_str())
        .collect();
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    body.insert("messages".into(), messages(&request.messages));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters,
                })
            })
            .collect();
        body.insert("tools".into(), tools);
        let choice = match &request.tool_choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        body.insert("tool_choice".into(), choice);
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    body.insert("stream".into(), stream.into());
    Value::Object(body)
}

/// The conversation as alternating user and assistant messages of content blocks.
fn messages(messages: &[Message]) -> Value {
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User => ("user", text_block(&m.content).into_iter().collect()),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.as_deref().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks: Vec<Value> = text_block(&m.content).into_iter().collect();
                for call in &m.tool_calls {
                    // Anthropic takes the input as an object. Arguments that are not one
                    // (a model's malformed JSON, recorded as text) were refused when the
                    // kernel validated them, so an empty input is what ran.
                    let input = if call.arguments.is_object() {
                        call.arguments.clone()
                    } else {
                        json!({})
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    out.into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// Anthropic refuses empty text blocks, so empty text is no block at all.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// Maps a `stop_reason`.
pub fn stop_reason(reason: &str) -> Finish {
    match reason {
        "end_turn" | "stop_sequence" => Finish::Stop,
        "max_tokens" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "refusal" => Finish::ContentFilter,
        other => Finish::Other(other.to_owned()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Input tokens, counting those written to and read from the prompt cache:
    /// Anthropic reports them apart, but the model read them all.
    fn input(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        if parts.iter().all(Option::is_none) {
            return None;
        }
        Some(
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b)),
        )
    }
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl WireError {
    fn into_error(self) -> Error {
        let kind = self.kind.unwrap_or_else(|| "error".into());
        let retryable = matches!(
            kind.as_str(),
            "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error"
        );
        Error::Stream {
            kind,
            message: excerpt(self.message.as_deref().unwrap_or("no message"), 300),
            retryable,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        index: u32,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    /// Blocks need no closing: each delta names its block, and the turn is assembled
    /// when the message stops.
    ContentBlockStop,
    MessageDelta {
        #[serde(default)]
        delta: Option<MessageDeltaBody>,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: WireError,
    },
    /// Event types added after this code was written are ignored, as Anthropic asks
    /// clients to do.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct MessageStart {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Option<Value>,
    },
    /// Thinking and other block types: not part of the turn's text.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug)]
enum Part {
    Text,
    Tool {
        id: String,
        name: String,
        json: String,
        input: Option<Value>,
    },
    Other,
}

/// Assembles a streamed Messages response.
#[derive(Debug)]
pub struct StreamDecoder {
    fallback_model: String,
    response_id: Option<String>,
    model: Option<String>,
    content: String,
    /// Content blocks by the index the stream gives them.
    parts: Vec<(u32, Part)>,
    tool_count: usize,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish: Option<Finish>,
    done: bool,
}

impl StreamDecoder {
    /// `model` is recorded when the server does not name the model that answered.
    pub fn new(model: &str) -> Self {
        StreamDecoder {
            fallback_model: model.to_owned(),
            response_id: None,
            model: None,
            content: String::new(),
            parts: Vec::new(),
            tool_count: 0,
            input_tokens: None,
            output_tokens: None,
            finish: None,
            done: false,
        }
    }

    fn part(&mut self, index: u32) -> Result<&mut Part, Error> {
        self.parts
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, p)| p)
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "a delta for content block {index}, which never started"
                ))
            })
    }

    fn usage(&mut self, usage: &WireUsage) {
        if let Some(input) = usage.input() {
            self.input_tokens = Some(input);
        }
        // `message_delta` carries the cumulative output count, so the latest wins.
        if let Some(output) = usage.output_tokens {
            self.output_tokens = Some(output);
        }
    }
}

impl Decoder for StreamDecoder {
    fn on_event(&mut self, event: &Event, emit: &mut dyn FnMut(Delta)) -> Result<bool, Error> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let parsed: StreamEvent = parse_json("a Messages stream event", event.data.as_bytes())?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                self.response_id = message.id.filter(|s| !s.is_empty());
                self.model = message.model.filter(|s| !s.is_empty());
                if let Some(usage) = message.usage {
                    self.usage(&usage);
                }
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                if self.parts.iter().any(|(i, _)| *i == index) {
                    return Err(Error::Protocol(format!(
                        "content block {index} started twice"
                    )));
                }
                let part = match content_block {
                    Block::Text { text } => {
                        if !text.is_empty() {
                            self.content.push_str(&text);
                            emit(Delta::Text(text));
                        }
                        Part::Text
                    }
                    Block::ToolUse { id, name, input } => {
                        self.tool_count += 1;
                        if self.tool_count > MAX_TOOL_CALLS {
                            return Err(Error::Protocol(format!(
                                "the response holds more than {MAX_TOOL_CALLS} tool calls"
                            )));
                        }
                        emit(Delta::ToolCallStarted {
                            id: id.clone(),
                            name: name.clone(),
                        });
                        Part::Tool {
                            id,
                            name,
                            json: String::new(),
                            input,
                        }
                    }
                    Block::Other => Part::Other,
                };
                self.parts.push((index, part));
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let part = self.part(index)?;
                match (part, delta) {
                    (Part::Text, BlockDelta::TextDelta { text }) => {
                        if !text.is_empty() {
                            self.content.push_str(&text);
                            emit(Delta::Text(text));
                        }
                    }
                    (Part::Tool { id, json, .. }, BlockDelta::InputJsonDelta { partial_json }) => {
                        if !partial_json.is_empty() {
                            json.push_str(&partial_json);
                            emit(Delta::ToolCallArguments {
                                id: id.clone(),
                                fragment: partial_json,
                            });
                        }
                    }
                    (Part::Other, _) | (_, BlockDelta::Other) => {}
                    (_, _) => {
                        return Err(Error::Protocol(format!(
                            "content block {index} got a delta of another block's type"
                        )));
                    }
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.and_then(|d| d.stop_reason) {
                    self.finish = Some(stop_reason(&reason));
                }
                if let Some(usage) = usage {
                    self.usage(&usage);
                }
            }
            StreamEvent::MessageStop => {
                self.done = true;
                return Ok(true);
            }
            StreamEvent::Error { error } => return Err(error.into_error()),
            StreamEvent::ContentBlockStop | StreamEvent::Ping | StreamEvent::Unknown => {}
        }
        Ok(false)
    }

    fn finish(self) -> Result<Turn, Error> {
        let finish = match self.finish {
            Some(finish) => finish,
            None if self.done => Finish::Other("unspecified".into()),
            None => return Err(Error::Truncated),
        };
        let mut tool_calls = Vec::new();
        for (_, part) in self.parts {
            if let Part::Tool {
                id,
                name,
                json,
                input,
            } = part
            {
                // The input comes in `input_json_delta` pieces; the start block's input
                // (normally `{}`) stands when there were none.
                let arguments = if json.is_empty() {
                    input.unwrap_or_else(|| parse_arguments(""))
                } else {
                    parse_arguments(&json)
                };
                tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
        }
        let usage = Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0),
            completion_tokens: self.output_tokens.unwrap_or(0),
            reported: self.input_tokens.is_some() || self.output_tokens.is_some(),
        };
        Ok(Turn {
            content: self.content,
            tool_calls,
            finish,
            usage,
            provider: PROVIDER.into(),
            model: self.model.unwrap_or(self.fallback_model),
            response_id: self.response_id,
            attempts: 1,
        })
    }

    fn decode_whole(self, body: &[u8]) -> Result<Turn, Error> {
        #[derive(Deserialize)]
        struct Whole {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            model: Option<String>,
            content: Vec<Block>,
            #[serde(default)]
            stop_reason: Option<String>,
            #[serde(default)]
            usage: Option<WireUsage>,
        }
        let whole: Whole = parse_json("a Messages response", body)?;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for block in whole.content {
            match block {
                Block::Text { text } => content.push_str(&text),
                Block::ToolUse { id, name, input } => {
                    if tool_calls.len() >= MAX_TOOL_CALLS {
                        return Err(Error::Protocol(format!(
                            "the response holds more than {MAX_TOOL_CALLS} tool calls"
                        )));
                    }
                    tool_calls.push(ToolCall {
                        id,
                        name,
                        arguments: input.unwrap_or_else(|| parse_arguments("")),
                    });
                }
                Block::Other => {}
            }
        }
        let usage = whole.usage.unwrap_or_default();
        let input = usage.input();
        Ok(Turn {
            content,
            tool_calls,
            finish: whole
                .stop_reason
                .map_or(Finish::Other("unspecified".into()), |r| stop_reason(&r)),
            usage: Usage {
                prompt_tokens: input.unwrap_or(0),
                completion_tokens: usage.output_tokens.unwrap_or(0),
                reported: input.is_some() || usage.output_tokens.is_some(),
            },
            provider: PROVIDER.into(),
            model: whole
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or(self.fallback_model),
            response_id: whole.id.filter(|s| !s.is_empty()),
            attempts: 1,
        })
    }
}

/// Extracts the provider's message from an error body
/// (`{"type":"error","error":{"type":…,"message":…}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: WireError,
    }
    serde_json::from_slice::<Body>(body).ok()?.error.message
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ToolSpec;
    use crate::sse::Parser;

    #[test]
    fn the_request_body_separates_the_system_prompt_and_merges_tool_results() {
        let calls = vec![
            ToolCall {
                id: "tu_1".into(),
                name: "a".into(),
                arguments: json!({"x": 1}),
            },
            ToolCall {
                id: "tu_2".into(),
                name: "b".into(),
                arguments: json!("{broken"),
            },
        ];
        let mut request = Request::new(vec![
            Message::system("rule one"),
            Message::system("rule two"),
            Message::user("go"),
            Message::assistant("calling", calls),
            Message::tool("tu_1", "one"),
            Message::tool("tu_2", "two"),
            Message::user("and?"),
            Message::assistant("", vec![]),
        ]);
        request.tools = vec![ToolSpec {
            name: "a".into(),
            description: "does a".into(),
            parameters: json!({"type": "object"}),
        }];
        request.tool_choice = ToolChoice::Required;
        request.seed = Some(3);
        request.stop = vec!["\n\nHuman:".into()];
        assert_eq!(
            request_body(&request, "claude", 100, true),
            json!({
                "model": "claude",
                "max_tokens": 100,
                "system": "rule one\n\nrule two",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "go"}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "tu_1", "name": "a", "input": {"x": 1}},
                        {"type": "tool_use", "id": "tu_2", "name": "b", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "tu_1", "content": "one"},
                        {"type": "tool_result", "tool_use_id": "tu_2", "content": "two"},
                        {"type": "text", "text": "and?"},
                    ]},
                ],
                "tools": [{"name": "a", "description": "does a", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any"},
                "stop_sequences": ["\n\nHuman:"],
                "stream": true,
            })
        );
    }

    fn decode(stream: &str) -> (Result<Turn, Error>, Vec<Delta>) {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        let mut deltas = Vec::new();
        let mut decoder = StreamDecoder::new("fallback");
        if let Err(e) = parser.feed(stream.as_bytes(), &mut events) {
            return (Err(e), deltas);
        }
        for e in &events {
            match decoder.on_event(e, &mut |d| deltas.push(d)) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return (Err(e), deltas),
            }
        }
        (decoder.finish(), deltas)
    }

    fn ev(data: &Value) -> String {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    }

    #[test]
    fn malformed_events_are_protocol_errors() {
        for bad in [
            ev(
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}),
            ),
            ev(
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}}),
            ),
            "data: {\"type\":\"message_start\"\n\n".to_owned(),
            "data: {\"no_type\":1}\n\n".to_owned(),
            ev(
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ) + &ev(
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev(
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ) + &ev(
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
            ),
        ] {
            let (turn, _) = decode(&bad);
            assert!(matches!(turn, Err(Error::Protocol(_))), "{bad:?}: {turn:?}");
        }
    }

    #[test]
    fn error_events_say_whether_to_retry() {
        let (turn, _) = decode(&ev(
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
        let err = turn.unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("overloaded_error"), "{err}");
        let (turn, _) = decode(&ev(
            &json!({"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}),
        ));
        assert!(!turn.unwrap_err().is_retryable());
    }

    #[test]
    fn unknown_events_and_blocks_are_ignored_and_truncation_is_caught() {
        let start = ev(
            &json!({"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 3}}}),
        );
        let thinking = ev(
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ) + &ev(
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ) + &ev(&json!({"type": "brand_new_event"}));
        let (turn, _) = decode(&(start.clone() + &thinking));
        assert!(matches!(turn, Err(Error::Truncated)), "{turn:?}");
        let end = ev(
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
        ) + &ev(&json!({"type": "message_stop"}));
        let turn = decode(&(start + &thinking + &end)).0.unwrap();
        assert_eq!(turn.content, "");
        assert_eq!(turn.finish, Finish::Stop);
        assert_eq!(
            turn.usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
                reported: true
            }
        );
    }

    #[test]
    fn a_whole_response_is_decoded_with_cache_tokens_counted() {
        let body = br#"{"id":"msg_9","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"text","text":"Let me look."},
                       {"type":"tool_use","id":"toolu_1","name":"fs_list","input":{"path":"."}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":7}}"#;
        let turn = StreamDecoder::new("m").decode_whole(body).unwrap();
        assert_eq!(turn.content, "Let me look.");
        assert_eq!(turn.finish, Finish::ToolCalls);
        assert_eq!(turn.tool_calls[0].arguments, json!({"path": "."}));
        assert_eq!(turn.usage.prompt_tokens, 100);
        assert_eq!(turn.response_id.as_deref(), Some("msg_9"));
        for bad in [
            &b"{}"[..],
            b"nope",
            b"{\"content\":[{\"type\":\"tool_use\"}]}",
        ] {
            let err = StreamDecoder::new("m").decode_whole(bad).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{err}");
        }
    }

    fn render(text: &str, calls: &[(String, String)], cuts: &[usize]) -> String {
        fn pieces(s: &str, cuts: &[usize]) -> Vec<String> {
            let chars: Vec<char> = s.chars().collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
            at.push(chars.len());
            at.sort_unstable();
            at.dedup();
            let mut out = Vec::new();
            let mut from = 0;
            for to in at {
                if to > from {
                    out.push(chars[from..to].iter().collect());
                    from = to;
                }
            }
            out
        }
        let mut s = ev(&json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [], "usage": {"input_tokens": 11, "output_tokens": 1}}}));
        s += &ev(&json!({"type": "ping"}));
        s += &ev(&json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}));
        for p in pieces(text, cuts) {
            s += &ev(&json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": p}}));
        }
        s += &ev(&json!({"type": "content_block_stop", "index": 0}));
        for (i, (name, args)) in calls.iter().enumerate() {
            let index = i + 1;
            s += &ev(&json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "tool_use", "id": format!("toolu_{i}"),
                                              "name": name, "input": {}}}));
            for p in pieces(args, cuts) {
                s += &ev(&json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": p}}));
            }
            s += &ev(&json!({"type": "content_block_stop", "index": index}));
        }
        let reason = if calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
        s += &ev(
            &json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
                        "usage": {"output_tokens": 22}}),
        );
        s += &ev(&json!({"type": "message_stop"}));
        s
    }

    proptest! {
        #[test]
        fn any_chunking_assembles_the_same_turn(
            text in "[^\u{0}]{0,40}",
            calls in prop::collection::vec(
                ("[a-z_]{1,10}", prop::collection::btree_map("[a-z]{1,5}", any::<i32>(), 0..4)
                    .prop_map(|m| json!(m).to_string())),
                0..3),
            cuts in prop::collection::vec(0usize..64, 0..6),
            byte_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let stream = render(&text, &calls, &cuts);
            let bytes = stream.as_bytes();
            let mut at: Vec<usize> = byte_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.push(bytes.len());
            at.sort_unstable();
            let mut parser = Parser::new();
            let mut decoder = StreamDecoder::new("m");
            let mut events = Vec::new();
            let mut streamed = String::new();
            let mut from = 0;
            let mut done = false;
            for to in at {
                parser.feed(&bytes[from..to], &mut events).unwrap();
                from = to;
                for e in events.drain(..) {
                    done |= decoder.on_event(&e, &mut |d| if let Delta::Text(t) = d { streamed.push_str(&t) }).unwrap();
                }
            }
            prop_assert!(done);
            let turn = decoder.finish().unwrap();
            prop_assert_eq!(&turn.content, &text);
            prop_assert_eq!(&streamed, &text);
            prop_assert_eq!(turn.model.as_str(), "claude-test");
            prop_assert_eq!(turn.usage, Usage { prompt_tokens: 11, completion_tokens: 22, reported: true });
            prop_assert_eq!(turn.tool_calls.len(), calls.len());
            for (call, (name, args)) in turn.tool_calls.iter().zip(&calls) {
                prop_assert_eq!(&call.name, name);
                let expect: Value = serde_json::from_str(args).unwrap();
                prop_assert_eq!(&call.arguments, &expect);
            }
            let expect_finish = if calls.is_empty() { Finish::Stop } else { Finish::ToolCalls };
            prop_assert_eq!(turn.finish, expect_finish);
        }

        #[test]
        fn arbitrary_events_never_panic(data in prop::collection::vec(".{0,200}", 0..6)) {
            let mut decoder = StreamDecoder::new("m");
            for d in data {
                let event = Event { event: None, data: d };
                if decoder.on_event(&event, &mut |_| {}).is_err() {
                    break;
                }
            }
            let _ = decoder.finish();
        }
    }
}
