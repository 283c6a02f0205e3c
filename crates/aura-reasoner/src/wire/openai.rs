//! OpenAI's chat completions format, as OpenAI, vLLM, llama.cpp's server, Ollama and
//! Aura's own endpoint speak it.
//!
//! Streamed tool calls arrive in fragments keyed by an `index`: the first fragment of a
//! call carries its id and name, later ones pieces of the arguments' JSON text. The
//! decoder assembles them whatever the chunking, tolerating what real servers do: ids
//! or indices left out, `null` where a field is absent, the usage in a final chunk
//! without choices, an `error` object in place of a chunk.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Decoder, MAX_TOOL_CALLS, excerpt, parse_arguments, parse_json};
use crate::config::MaxTokensField;
use crate::sse::Event;
use crate::{Delta, Error, Finish, Message, Request, Role, ToolCall, ToolChoice, Turn, Usage};

/// The provider name recorded in turns.
pub const PROVIDER: &str = "openai";

/// How to shape the request body.
#[derive(Debug, Clone)]
pub struct BodyOptions<'a> {
    pub model: &'a str,
    pub stream: bool,
    pub max_tokens_field: MaxTokensField,
    /// Used when the request sets no limit.
    pub default_max_tokens: Option<u32>,
}

/// The JSON body of a chat completions request.
pub fn request_body(request: &Request, options: &BodyOptions<'_>) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("model".into(), options.model.into());
    body.insert(
        "messages".into(),
        request.messages.iter().map(message).collect(),
    );
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }
                })
            })
            .collect();
        body.insert("tools".into(), tools);
        let choice = match &request.tool_choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
    }
    if let Some(n) = request.max_tokens.or(options.default_max_tokens) {
        let field = match options.max_tokens_field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        };
        body.insert(field.into(), n.into());
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(seed) = request.seed {
        // OpenAI's seed is a signed 64-bit integer: send the seed's bits as one, so a seed
        // above i64::MAX is not refused (Aura's own API reads the bits back as they were).
        body.insert("seed".into(), (seed as i64).into());
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    body.insert("stream".into(), options.stream.into());
    if options.stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

fn message(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = serde_json::Map::new();
    out.insert("role".into(), role.into());
    // Content is always a string, empty when an assistant message only calls tools:
    // OpenAI writes `null` there, but accepts "", and some compatible servers
    // (llama-cpp-python's among them) refuse `null`.
    out.insert("content".into(), m.content.as_str().into());
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": super::arguments_text(&c.arguments)},
                })
            })
            .collect();
        out.insert("tool_calls".into(), calls);
    }
    if let Some(id) = &m.tool_call_id {
        out.insert("tool_call_id".into(), id.as_str().into());
    }
    if let Some(name) = &m.name {
        out.insert("name".into(), name.as_str().into());
    }
    Value::Object(out)
}

/// Maps a `finish_reason`.
pub fn finish_reason(reason: &str) -> Finish {
    match reason {
        "stop" => Finish::Stop,
        "length" => Finish::Length,
        // `function_call` is the legacy name.
        "tool_calls" | "function_call" => Finish::ToolCalls,
        "content_filter" => Finish::ContentFilter,
        other => Finish::Other(other.to_owned()),
    }
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
            reported: true,
        }
    }
}

/// An error object, as servers put it in a body or in place of a stream chunk.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireError {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        code: Option<Value>,
    },
    Text(String),
}

impl WireError {
    fn into_error(self) -> Error {
        match self {
            WireError::Text(message) => Error::Stream {
                kind: "error".into(),
                message: excerpt(&message, 300),
                retryable: false,
            },
            WireError::Object {
                message,
                kind,
                code,
            } => {
                let kind = kind.unwrap_or_else(|| "error".into());
                let status = code.as_ref().and_then(Value::as_u64);
                // Servers put either a status-like code or a descriptive type here; both
                // say whether the failure was the server's.
                let retryable = status.is_some_and(|s| s == 429 || s >= 500)
                    || ["server_error", "overloaded", "rate_limit", "timeout"]
                        .iter()
                        .any(|k| kind.contains(k));
                Error::Stream {
                    kind,
                    message: excerpt(message.as_deref().unwrap_or("no message"), 300),
                    retryable,
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ChunkToolCall>>,
}

#[derive(Debug, Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChunkFunction>,
}

#[derive(Debug, Deserialize)]
struct ChunkFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// A tool call being assembled from fragments.
#[derive(Debug)]
struct PartialCall {
    /// The `index` the server keys fragments by (absent on some servers).
    index: Option<u32>,
    id: Option<String>,
    name: String,
    arguments: String,
    /// Whether `ToolCallStarted` was emitted. It waits for the name; fragments that
    /// arrive before it are emitted right after it.
    started: bool,
}

/// Assembles a streamed chat completion.
#[derive(Debug)]
pub struct StreamDecoder {
    fallback_model: String,
    response_id: Option<String>,
    model: Option<String>,
    content: String,
    calls: Vec<PartialCall>,
    finish: Option<Finish>,
    usage: Option<Usage>,
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
            calls: Vec::new(),
            finish: None,
            usage: None,
            done: false,
        }
    }

    fn on_chunk(&mut self, chunk: Chunk, emit: &mut dyn FnMut(Delta)) -> Result<(), Error> {
        if let Some(error) = chunk.error {
            return Err(error.into_error());
        }
        if self.response_id.is_none() {
            self.response_id = chunk.id.filter(|s| !s.is_empty());
        }
        if self.model.is_none() {
            self.model = chunk.model.filter(|s| !s.is_empty());
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.usage());
        }
        // Only the first choice matters: Aura never asks for more than one.
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    self.content.push_str(&text);
                    emit(Delta::Text(text));
                }
                for fragment in delta.tool_calls.unwrap_or_default() {
                    self.on_tool_fragment(fragment, emit)?;
                }
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish = Some(finish_reason(&reason));
            }
        }
        Ok(())
    }

    fn on_tool_fragment(
        &mut self,
        fragment: ChunkToolCall,
        emit: &mut dyn FnMut(Delta),
    ) -> Result<(), Error> {
        let id = fragment.id.filter(|s| !s.is_empty());
        // Find the call this fragment continues: by index where the server gives one,
        // else by id, else the latest call.
        let slot = match (fragment.index, &id) {
            (Some(index), _) => self.calls.iter().position(|c| c.index == Some(index)),
            (None, Some(id)) => self
                .calls
                .iter()
                .position(|c| c.id.as_deref() == Some(id.as_str())),
            (None, None) => self.calls.len().checked_sub(1),
        };
        let slot = match slot {
            Some(slot) => slot,
            None => {
                if self.calls.len() >= MAX_TOOL_CALLS {
                    return Err(Error::Protocol(format!(
                        "the response holds more than {MAX_TOOL_CALLS} tool calls"
                    )));
                }
                self.calls.push(PartialCall {
                    index: fragment.index,
                    id: None,
                    name: String::new(),
                    arguments: String::new(),
                    started: false,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[slot];
        if call.id.is_none() && !call.started {
            call.id = id;
        }
        let function = fragment.function;
        let (name, arguments) = match function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        if call.name.is_empty()
            && let Some(name) = name
        {
            call.name = name;
        }
        let arguments = arguments.unwrap_or_default();
        call.arguments.push_str(&arguments);
        if !call.started && !call.name.is_empty() {
            call.started = true;
            let id = call
                .id
                .get_or_insert_with(|| format!("call_{slot}"))
                .clone();
            emit(Delta::ToolCallStarted {
                id: id.clone(),
                name: call.name.clone(),
            });
            if !call.arguments.is_empty() {
                emit(Delta::ToolCallArguments {
                    id,
                    fragment: call.arguments.clone(),
                });
            }
        } else if call.started && !arguments.is_empty() {
            emit(Delta::ToolCallArguments {
                id: call.id.clone().unwrap_or_default(),
                fragment: arguments,
            });
        }
        Ok(())
    }
}

impl Decoder for StreamDecoder {
    fn on_event(&mut self, event: &Event, emit: &mut dyn FnMut(Delta)) -> Result<bool, Error> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: Chunk = parse_json("a chat completion chunk", data.as_bytes())?;
        self.on_chunk(chunk, emit)?;
        Ok(false)
    }

    fn finish(self) -> Result<Turn, Error> {
        let finish = match self.finish {
            Some(finish) => finish,
            None if self.done => Finish::Other("unspecified".into()),
            None => return Err(Error::Truncated),
        };
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (i, call) in self.calls.into_iter().enumerate() {
            if call.name.is_empty() {
                return Err(Error::Protocol(format!("tool call {i} has no name")));
            }
            tool_calls.push(ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: call.name,
                arguments: parse_arguments(&call.arguments),
            });
        }
        Ok(turn(
            self.content,
            tool_calls,
            finish,
            self.usage.unwrap_or_default(),
            self.model.unwrap_or(self.fallback_model),
            self.response_id,
        ))
    }

    fn decode_whole(self, body: &[u8]) -> Result<Turn, Error> {
        let response: Response = parse_json("a chat completion", body)?;
        if let Some(error) = response.error {
            return Err(error.into_error());
        }
        let choice = response
            .choices
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0)
            .ok_or_else(|| Error::Protocol("a chat completion without choices".into()))?;
        let message = choice.message.unwrap_or_default();
        let mut tool_calls = Vec::new();
        for (i, call) in message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if i >= MAX_TOOL_CALLS {
                return Err(Error::Protocol(format!(
                    "the response holds more than {MAX_TOOL_CALLS} tool calls"
                )));
            }
            let function = call
                .function
                .ok_or_else(|| Error::Protocol(format!("tool call {i} has no function")))?;
            let name = function
                .name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| Error::Protocol(format!("tool call {i} has no name")))?;
            // Compatible servers send the arguments as JSON text, as OpenAI does; a few
            // send the object itself.
            let arguments = match function.arguments {
                None | Some(Value::Null) => parse_arguments(""),
                Some(Value::String(text)) => parse_arguments(&text),
                Some(other) => other,
            };
            tool_calls.push(ToolCall {
                id: call
                    .id
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| format!("call_{i}")),
                name,
                arguments,
            });
        }
        let finish = choice
            .finish_reason
            .filter(|r| !r.is_empty())
            .map_or(Finish::Other("unspecified".into()), |r| finish_reason(&r));
        Ok(turn(
            message.content.unwrap_or_default(),
            tool_calls,
            finish,
            response.usage.map(|u| u.usage()).unwrap_or_default(),
            response
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or(self.fallback_model),
            response.id.filter(|s| !s.is_empty()),
        ))
    }
}

fn turn(
    content: String,
    tool_calls: Vec<ToolCall>,
    finish: Finish,
    usage: Usage,
    model: String,
    response_id: Option<String>,
) -> Turn {
    // Some servers (Ollama among them) report `stop` for a turn that ends in tool calls;
    // the kernel acts on the calls either way, but the record should say what happened.
    let finish = if finish == Finish::Stop && !tool_calls.is_empty() {
        Finish::ToolCalls
    } else {
        finish
    };
    Turn {
        content,
        tool_calls,
        finish,
        usage,
        provider: PROVIDER.into(),
        model,
        response_id,
        attempts: 1,
    }
}

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    message: Option<ResponseMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ResponseToolCall>>,
}

#[derive(Debug, Deserialize)]
struct ResponseToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ResponseFunction>,
}

#[derive(Debug, Deserialize)]
struct ResponseFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

/// Extracts the provider's message from an error body, where it has the usual shape.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: WireError,
    }
    match serde_json::from_slice::<Body>(body).ok()?.error {
        WireError::Text(message) => Some(message),
        WireError::Object { message, .. } => message,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ToolSpec;
    use crate::sse::Parser;

    fn options(stream: bool) -> BodyOptions<'static> {
        BodyOptions {
            model: "m",
            stream,
            max_tokens_field: MaxTokensField::MaxTokens,
            default_max_tokens: None,
        }
    }

    #[test]
    fn the_request_body_carries_everything() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "fs_read".into(),
            arguments: json!({"path": "a"}),
        };
        let mut request = Request::new(vec![
            Message::system("be brief"),
            Message::user("read a"),
            Message::assistant("", vec![call]),
            Message::tool("call_1", "contents"),
        ]);
        request.tools = vec![ToolSpec {
            name: "fs_read".into(),
            description: "reads".into(),
            parameters: json!({"type": "object"}),
        }];
        request.tool_choice = ToolChoice::Tool("fs_read".into());
        request.max_tokens = Some(64);
        request.seed = Some(7);
        request.temperature = Some(0.5);
        request.stop = vec!["END".into()];
        let body = request_body(&request, &options(true));
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "read a"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "fs_read", "arguments": "{\"path\":\"a\"}"}}
                    ]},
                    {"role": "tool", "content": "contents", "tool_call_id": "call_1"},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "fs_read", "description": "reads", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "fs_read"}},
                "max_tokens": 64,
                "temperature": 0.5,
                "seed": 7,
                "stop": ["END"],
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    /// Regression: a seed above i64::MAX went out as an unsigned integer, which an
    /// OpenAI-compatible server (Aura's own, in a cluster's remote turns) refuses; its bits
    /// go out as OpenAI's signed seed.
    #[test]
    fn a_seed_goes_out_as_a_signed_integer_with_the_same_bits() {
        let mut request = Request::new(vec![Message::user("hi")]);
        for (seed, sent) in [(7u64, 7i64), (u64::MAX, -1), (1 << 63, i64::MIN)] {
            request.seed = Some(seed);
            let body = request_body(&request, &options(false));
            assert_eq!(body["seed"], json!(sent), "seed {seed}");
            assert_eq!(body["seed"].as_i64().map(|s| s as u64), Some(seed));
        }
    }

    /// Regression: an assistant message that only called tools was sent with `"content":
    /// null`, which llama-cpp-python's server refuses (a 500 with a validation error), so
    /// no mission could send it a tool result.
    #[test]
    fn regression_tool_only_assistant_content_is_an_empty_string_not_null() {
        let call = ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments: json!({}),
        };
        let body = request_body(
            &Request::new(vec![Message::user("u"), Message::assistant("", vec![call])]),
            &options(false),
        );
        assert_eq!(body["messages"][1]["content"], json!(""));
    }

    #[test]
    fn optional_fields_are_left_out_and_the_limit_field_is_configurable() {
        let request = Request::new(vec![Message::user("hi")]);
        let mut opts = options(false);
        opts.max_tokens_field = MaxTokensField::MaxCompletionTokens;
        opts.default_max_tokens = Some(10);
        assert_eq!(
            request_body(&request, &opts),
            json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_completion_tokens": 10,
                "stream": false,
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

    #[test]
    fn text_usage_and_model_are_read() {
        let (turn, deltas) = decode(concat!(
            "data: {\"id\":\"c1\",\"model\":\"real-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            "data: [DONE]\n\n",
        ));
        let turn = turn.unwrap();
        assert_eq!(turn.content, "Hello");
        assert_eq!(turn.finish, Finish::Stop);
        assert_eq!(turn.model, "real-model");
        assert_eq!(turn.response_id.as_deref(), Some("c1"));
        assert_eq!(
            turn.usage,
            Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                reported: true
            }
        );
        assert_eq!(
            deltas,
            vec![Delta::Text("Hel".into()), Delta::Text("lo".into())]
        );
    }

    #[test]
    fn a_stream_cut_before_its_finish_is_truncated() {
        let (turn, _) = decode("data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n");
        assert!(matches!(turn, Err(Error::Truncated)), "{turn:?}");
    }

    #[test]
    fn an_error_chunk_is_a_stream_error() {
        let (turn, _) = decode(
            "data: {\"error\":{\"message\":\"engine overloaded\",\"type\":\"server_error\"}}\n\n",
        );
        let err = turn.unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("engine overloaded"), "{err}");
        let (turn, _) = decode(
            "data: {\"error\":{\"message\":\"bad\",\"type\":\"BadRequestError\",\"code\":400}}\n\n",
        );
        assert!(!turn.unwrap_err().is_retryable());
    }

    #[test]
    fn malformed_chunks_are_protocol_errors() {
        for bad in [
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"\n\n",
            "data: {\"choices\":\"many\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":7}}]}\n\n",
            "data: [1,2]\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        ] {
            let (turn, _) = decode(bad);
            assert!(matches!(turn, Err(Error::Protocol(_))), "{bad:?}: {turn:?}");
        }
    }

    #[test]
    fn tool_calls_without_ids_or_indices_are_assembled() {
        let (turn, deltas) = decode(concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        ));
        let turn = turn.unwrap();
        assert_eq!(turn.finish, Finish::ToolCalls);
        assert_eq!(
            turn.tool_calls,
            vec![ToolCall {
                id: "call_0".into(),
                name: "f".into(),
                arguments: json!({"a": 1})
            }]
        );
        assert_eq!(
            deltas[0],
            Delta::ToolCallStarted {
                id: "call_0".into(),
                name: "f".into()
            }
        );
    }

    #[test]
    fn a_whole_response_with_tool_calls_is_decoded() {
        let body = br#"{"id":"c9","model":"m2","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"x\":[1,2]}"}},
                          {"id":"call_b","type":"function","function":{"name":"g","arguments":{"y":true}}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#;
        let turn = StreamDecoder::new("m").decode_whole(body).unwrap();
        assert_eq!(turn.content, "");
        assert_eq!(turn.finish, Finish::ToolCalls);
        assert_eq!(turn.model, "m2");
        assert_eq!(turn.tool_calls[0].arguments, json!({"x": [1, 2]}));
        assert_eq!(turn.tool_calls[1].arguments, json!({"y": true}));
        assert_eq!(turn.usage.total(), 13);
    }

    #[test]
    fn whole_responses_that_are_not_completions_are_refused() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"choices\":[]}",
            b"[]",
            b"{\"choices\":[{\"message\":{\"content\":3}}]}",
        ] {
            let err = StreamDecoder::new("m").decode_whole(bad).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn error_messages_are_found_in_bodies() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#),
            Some("bad key".into())
        );
        assert_eq!(error_message(br#"{"error":"plain"}"#), Some("plain".into()));
        assert_eq!(error_message(b"<html>"), None);
    }

    /// Renders a turn as an OpenAI stream, splitting text and arguments at `cuts`.
    fn render(text: &str, calls: &[(String, String)], cuts: &[usize], with_index: bool) -> String {
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
        let mut s = String::new();
        for piece in pieces(text, cuts) {
            let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
            s.push_str(&format!("data: {chunk}\n\n"));
        }
        for (i, (name, args)) in calls.iter().enumerate() {
            let mut first = json!({"id": format!("id{i}"), "type": "function",
                                   "function": {"name": name, "arguments": ""}});
            if with_index {
                first["index"] = json!(i);
            }
            s.push_str(&format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
            ));
            for piece in pieces(args, cuts) {
                let mut more = json!({"function": {"arguments": piece}});
                if with_index {
                    more["index"] = json!(i);
                }
                s.push_str(&format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
                ));
            }
        }
        let reason = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        s.push_str(&format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        ));
        s.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n");
        s
    }

    fn arb_args() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            "[^\u{0}]{0,8}".prop_map(|s| json!(s)),
            any::<bool>().prop_map(|b| json!(b)),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| json!(m))
        });
        prop::collection::btree_map("[a-z]{1,6}", value, 0..4).prop_map(|m| json!(m).to_string())
    }

    proptest! {
        #[test]
        fn any_chunking_assembles_the_same_turn(
            text in "[^\u{0}]{0,40}",
            calls in prop::collection::vec(("[a-z_]{1,10}", arb_args()), 0..3),
            cuts in prop::collection::vec(0usize..64, 0..6),
            byte_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            with_index in any::<bool>(),
        ) {
            // Without indices, calls are told apart by id, so the fragments that follow
            // a call's first chunk must carry none (they do not on real servers either).
            let stream = render(&text, &calls, &cuts, with_index);
            let bytes = stream.as_bytes();
            let mut at: Vec<usize> = byte_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.push(bytes.len());
            at.sort_unstable();
            let mut parser = Parser::new();
            let mut decoder = StreamDecoder::new("m");
            let mut deltas = Vec::new();
            let mut events = Vec::new();
            let mut from = 0;
            for to in at {
                parser.feed(&bytes[from..to], &mut events).unwrap();
                from = to;
                for e in events.drain(..) {
                    decoder.on_event(&e, &mut |d| deltas.push(d)).unwrap();
                }
            }
            let turn = decoder.finish().unwrap();
            prop_assert_eq!(&turn.content, &text);
            prop_assert_eq!(turn.tool_calls.len(), calls.len());
            for (i, (call, (name, args))) in turn.tool_calls.iter().zip(&calls).enumerate() {
                prop_assert_eq!(&call.id, &format!("id{i}"));
                prop_assert_eq!(&call.name, name);
                let expect: Value = serde_json::from_str(args).unwrap();
                prop_assert_eq!(&call.arguments, &expect);
            }
            prop_assert_eq!(turn.usage.total(), 7);
            // The deltas add up to the turn.
            let mut streamed = String::new();
            let mut streamed_args = vec![String::new(); calls.len()];
            for d in deltas {
                match d {
                    Delta::Text(t) => streamed.push_str(&t),
                    Delta::ToolCallArguments { id, fragment } => {
                        let i: usize = id[2..].parse().unwrap();
                        streamed_args[i].push_str(&fragment);
                    }
                    Delta::ToolCallStarted { .. } | Delta::Reset { .. } => {}
                }
            }
            prop_assert_eq!(streamed, text);
            for (got, (_, args)) in streamed_args.iter().zip(&calls) {
                prop_assert_eq!(got, args);
            }
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
