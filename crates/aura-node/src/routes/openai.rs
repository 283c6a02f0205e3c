//! The OpenAI-compatible API over the node's installed models: `GET /v1/models`,
//! `POST /v1/chat/completions`, `POST /v1/completions` and `POST /v1/embeddings`, in
//! OpenAI's wire format, so the official SDKs and the tools built on them work unchanged.
//!
//! What differs, on purpose:
//! - Every completed request leaves a signed usage receipt in the ledger; its id is in the
//!   `x-aura-receipt` header (for a stream, the id the receipt will carry when the stream
//!   completes; the last chunk arrives only once it is durable) and in the response `id`.
//! - Greedy decoding is the default (`temperature` 0), so identical requests give
//!   identical answers; with a temperature, `seed` (0 when unset) makes them repeatable.
//! - `n` must be 1; `presence_penalty` and `frequency_penalty` are refused unless 0 (Aura
//!   offers `repetition_penalty` and `top_k` as extensions instead): a parameter the
//!   engine cannot honour is an error, never silently ignored. So is any top-level field
//!   the route does not know (`logit_bias`, `best_of` on chat, a typo), unless it is
//!   `null` or holds the value that asks for nothing ([`neutral`]).
//! - `max_tokens` (or `max_completion_tokens`) above what the context holds after the
//!   prompt is refused, naming the field; unset, a generation runs to its default or to
//!   the context's end.
//! - A request whose caller goes away (a closed connection) stops generating at its next
//!   token and leaves no receipt, streamed or not.
//! - In a stream, log-probabilities come with the final chunk.
//! - `system_fingerprint` is the engine's runtime fingerprint (version, backend, device,
//!   weight format, kernel): the same fingerprint, package, input and seed give the same
//!   tokens.

use std::convert::Infallible;
use std::sync::Arc;

use aura_host::requests::{self, fingerprint, finish_reason, generation_finish};
use aura_host::{
    ChatDelta, ChatError, ChatEvent, ChatOutcome, Constraint, ModelCard, ModelError, ModelHost,
    Prompt, ReceiptId, Served, TokenEvent, TokenLogprobs,
};
use aura_reasoner::{Message, ToolCall, ToolChoice, ToolSpec};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, Role as KeyRole};
use crate::error::{ApiError, ApiJson};
use crate::routes::agents::require;

/// The header naming a response's usage receipt.
pub(crate) const RECEIPT_HEADER: &str = aura_host::RECEIPT_HEADER;

/// Default `max_tokens` of `/v1/completions`, as OpenAI's.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

fn host(state: &AppState) -> Result<&Arc<ModelHost>, ApiError> {
    state.models.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "models_off",
            "this node serves no models (it was started without its model host)",
        )
    })
}

fn caller_may_infer(caller: &Caller) -> Result<(), ApiError> {
    require(caller, &[KeyRole::Operator, KeyRole::Agent])
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match e.status {
            400 | 404 => "invalid_request_error",
            401 => "authentication_error",
            402 | 403 => "permission_error",
            409 => "conflict_error",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        ApiError::new(status, kind, e.code, e.message)
    }
}

fn invalid(param: &str, message: impl std::fmt::Display) -> ApiError {
    requests::invalid(param, message).into()
}

fn unix_now() -> u64 {
    use aura_core::door::Clock as _;
    aura_core::door::SystemClock.now().as_secs()
}

// ---------------------------------------------------------------------------------------
// Models

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: String,
    /// The signed package digest (an Aura extension).
    digest: String,
    architecture: String,
    /// `chat` for a generator, `embedding` for a text encoder, `image` for an image
    /// model (an Aura extension).
    kind: &'static str,
}

impl From<ModelCard> for ModelObject {
    fn from(c: ModelCard) -> Self {
        ModelObject {
            id: c.name,
            object: "model",
            created: c.created_at.as_secs(),
            owned_by: c.publisher,
            digest: c.digest.to_hex(),
            architecture: c.architecture,
            kind: if c.image {
                "image"
            } else if c.generator {
                "chat"
            } else {
                "embedding"
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

/// Lists the installed model packages that can be served: a package whose manifest or
/// any file fails its check is left out (`aura model list` shows it with the reason).
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ModelList>, ApiError> {
    caller_may_infer(&caller)?;
    let cards = host(&state)?.list_async().await?;
    Ok(Json(ModelList {
        object: "list",
        data: cards.into_iter().map(ModelObject::from).collect(),
    }))
}

/// One installed model package.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "The package name")),
    responses((status = 200, body = ModelObject), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn get_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    caller_may_infer(&caller)?;
    host(&state)?
        .list_async()
        .await?
        .into_iter()
        .find(|c| c.name == model)
        .map(|c| Json(ModelObject::from(c)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("the model `{model}` does not exist; `GET /v1/models` lists them"),
            )
        })
}

// ---------------------------------------------------------------------------------------
// Shared request parts

/// A string or a list of strings (`stop`, `input`, `prompt`).
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The sampling parameters every generation endpoint shares.
#[derive(Deserialize, Default, Debug)]
struct SamplingParams {
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    n: Option<u32>,
    stop: Option<OneOrMany>,
    /// Aura extension.
    top_k: Option<u32>,
    /// Aura extension.
    repetition_penalty: Option<f32>,
}

impl SamplingParams {
    /// The OpenAI parameters this engine refuses unless neutral, then the shared checks;
    /// the sampling as the engine takes it.
    fn read(&self) -> Result<requests::Sampling, ApiError> {
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(invalid(
                    name,
                    "is not supported by this engine; use `repetition_penalty` (an Aura extension) instead",
                ));
            }
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid(
                "n",
                "only one choice per request is supported; send several requests (with different seeds)",
            ));
        }
        let sampling = requests::Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            // OpenAI's seed is a signed integer; its bits seed the engine's stream.
            seed: Some(self.seed.map_or(0, |s| s as u64)),
            stop: self
                .stop
                .clone()
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
        };
        sampling.check()?;
        Ok(sampling)
    }
}

/// The sampling parameters' names, as [`SamplingParams`] reads them.
const SAMPLING_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "stop",
    "top_k",
    "repetition_penalty",
];

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
];

const COMPLETION_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "logprobs",
    "echo",
    "suffix",
    "best_of",
    "stream",
    "stream_options",
];

const EMBEDDING_FIELDS: &[&str] = &["model", "input", "encoding_format", "dimensions"];

/// Whether an OpenAI field this node does not act on holds the value that asks for
/// nothing, so accepting it changes nothing.
fn neutral(field: &str, value: &Value) -> bool {
    match field {
        "logit_bias" | "metadata" => value.as_object().is_some_and(serde_json::Map::is_empty),
        "parallel_tool_calls" => value == &Value::Bool(true),
        "store" => value == &Value::Bool(false),
        _ => false,
    }
}

/// Reads a request body into `T`, first refusing any top-level field not in `known`
/// (and `sampling`, when the route takes sampling parameters), with a 400 that names it:
/// a field the node would not act on must not be taken as done. `null` is as if absent.
fn read_body<T: serde::de::DeserializeOwned>(
    body: Value,
    known: &[&str],
    sampling: bool,
) -> Result<T, ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    };
    for (field, value) in fields {
        let known = known.contains(&field.as_str())
            || (sampling && SAMPLING_FIELDS.contains(&field.as_str()));
        if known || value.is_null() || neutral(field, value) {
            continue;
        }
        let why = match field.as_str() {
            "logit_bias" => "is not supported by this engine (only an empty map is accepted)",
            "best_of" => "is not supported on chat completions; send several requests",
            "parallel_tool_calls" => {
                "only `true` is supported: the model may answer with several calls"
            }
            _ => {
                "is not a parameter this node knows or honours; remove it (docs/openai.md lists them)"
            }
        };
        return Err(invalid(field, why));
    }
    serde_json::from_value(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a valid request: {e}"),
        )
    })
}

fn with_receipt(mut response: Response, id: &ReceiptId) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(RECEIPT_HEADER), value);
    }
    response
}

/// An SSE response whose events come from `rx`, ending with `[DONE]`.
fn sse(rx: tokio::sync::mpsc::Receiver<Event>, receipt: &ReceiptId) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    with_receipt(
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response(),
        receipt,
    )
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

/// The events that close a stream: the chunk with the finish reason, and the usage, in
/// that chunk or, when the caller asked for `stream_options.include_usage`, in a chunk of
/// its own with no choices (OpenAI's form).
fn closing(mut last: Value, usage: Value, separate: bool) -> Vec<Event> {
    if separate {
        let mut usage_chunk = last.clone();
        usage_chunk["choices"] = json!([]);
        usage_chunk["usage"] = usage;
        vec![data(&last), data(&usage_chunk)]
    } else {
        last["usage"] = usage;
        vec![data(&last)]
    }
}

/// The error event that ends a failed stream (the SDKs raise it as an API error).
fn error_event(e: &ApiError) -> Event {
    data(&json!({"error": {"message": e.message, "type": e.kind, "code": e.code}}))
}

fn logprob_entry(token: &str, logprob: f32) -> Value {
    json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()})
}

/// Log-probabilities in the chat format: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
fn chat_logprobs(logprobs: &[TokenLogprobs], top: u8) -> Value {
    let content: Vec<Value> = logprobs
        .iter()
        .map(|t| {
            let mut entry = logprob_entry(&t.text, t.logprob);
            entry["top_logprobs"] = t
                .top
                .iter()
                .take(usize::from(top))
                .map(|a| logprob_entry(&a.text, a.logprob))
                .collect();
            entry
        })
        .collect();
    json!({"content": content, "refusal": null})
}

// ---------------------------------------------------------------------------------------
// Chat completions

/// `messages[].content`: text, or a list of parts of which only text parts are read.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Debug)]
struct InToolCall {
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: InFunctionCall,
}

#[derive(Deserialize, Debug)]
struct InFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize, Debug)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize, Debug)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    function: InFunction,
}

#[derive(Deserialize, Debug)]
struct InFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// A chat completion request, as OpenAI's API takes it.
#[derive(Deserialize, Debug)]
pub(crate) struct ChatCompletionRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u8>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    sampling: SamplingParams,
}

/// The conversation as the reasoner takes it.
fn messages(input: Vec<InMessage>) -> Result<Vec<Message>, ApiError> {
    if input.is_empty() {
        return Err(invalid("messages", "must hold at least one message"));
    }
    input
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = requests::role(&format!("messages[{i}].role"), &m.role)?;
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(invalid(
                                    &format!("messages[{i}].content[{j}]"),
                                    format!("a `{kind}` part is not supported; this model reads text parts only"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            let tool_calls = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    if c.kind.as_deref().is_some_and(|k| k != "function") {
                        return Err(invalid(
                            &format!("messages[{i}].tool_calls"),
                            "only `function` calls are supported",
                        ));
                    }
                    Ok(requests::tool_call(
                        c.id,
                        c.function.name,
                        c.function.arguments,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Message {
                role,
                content,
                tool_calls,
                tool_call_id: m.tool_call_id,
                name: m.name,
            })
        })
        .collect()
}

fn tools(input: Option<Vec<InTool>>) -> Result<Vec<ToolSpec>, ApiError> {
    input
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if t.kind != "function" {
                return Err(invalid(
                    &format!("tools[{i}].type"),
                    format!("`{}` is not supported; only `function` tools are", t.kind),
                ));
            }
            Ok(requests::tool(
                &format!("tools[{i}].function.parameters"),
                t.function.name,
                t.function.description,
                t.function.parameters,
            )?)
        })
        .collect()
}

fn tool_choice(value: Option<Value>) -> Result<ToolChoice, ApiError> {
    match value {
        None => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => Ok(requests::tool_choice_mode("tool_choice", &s)?),
        Some(v) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
            .map(|name| ToolChoice::Tool(name.to_owned()))
            .ok_or_else(|| {
                invalid(
                    "tool_choice",
                    "must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )
            }),
    }
}

fn response_format(value: Option<Value>) -> Result<Option<Constraint>, ApiError> {
    let Some(v) = value else {
        return Ok(None);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => {
            let schema = v
                .pointer("/json_schema/schema")
                .cloned()
                .ok_or_else(|| invalid("response_format", "json_schema needs a `schema`"))?;
            Ok(Some(requests::json_schema(
                "response_format.json_schema.schema",
                schema,
            )?))
        }
        _ => Err(invalid(
            "response_format",
            "`type` must be text, json_object or json_schema",
        )),
    }
}

/// What a chat request becomes: the host's plan (the reasoner's request and the engine
/// options), and how to answer.
struct ChatPlan {
    model: String,
    /// The field the token limit came from, if one was given.
    limit_field: &'static str,
    planned: requests::ChatPlan,
    stream: bool,
    include_usage: bool,
    top_logprobs: u8,
}

fn plan_chat(req: ChatCompletionRequest) -> Result<ChatPlan, ApiError> {
    let sampling = req.sampling.read()?;
    let max_tokens = requests::max_tokens(&[
        ("max_completion_tokens", req.max_completion_tokens),
        ("max_tokens", req.max_tokens),
    ])?;
    let limit_field = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let top = req.top_logprobs.unwrap_or(0);
    let logprobs = requests::chat_logprobs(req.logprobs.unwrap_or(false), top)?;
    let planned = requests::chat(requests::ChatParts {
        messages: messages(req.messages)?,
        tools: tools(req.tools)?,
        tool_choice: tool_choice(req.tool_choice)?,
        format: response_format(req.response_format)?,
        max_tokens,
        sampling,
        logprobs,
    })?;
    Ok(ChatPlan {
        model: req.model,
        limit_field,
        planned,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        top_logprobs: top,
    })
}

fn chat_error(e: ChatError) -> ApiError {
    match e {
        ChatError::Host(e) => e.into(),
        ChatError::Reasoner(e) => ApiError::bad_request("invalid_request", e.to_string()),
    }
}

/// OpenAI's usage object. `cached` is how many prompt tokens came from the model's prompt
/// cache (`prompt_tokens_details.cached_tokens`, as OpenAI reports its own prompt
/// caching); the receipt does not carry it, since the answer is the same either way.
fn usage_json(prompt: u64, completion: u64, cached: u32) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.name,
                    "arguments": requests::arguments_text(c),
                },
            })
        })
        .collect()
}

/// Answers a conversation: text, or calls of the offered tools. With `stream`, the
/// answer comes as server-sent `chat.completion.chunk` events, usage in the last chunk.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = Object, description = "OpenAI's chat completion request; Aura adds `top_k` and `repetition_penalty`"),
    responses((status = 200, description = "A `chat.completion` object, or an SSE stream of `chat.completion.chunk` objects", headers(("x-aura-receipt" = String, description = "The usage receipt's id"))),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller_may_infer(&caller)?;
    let host = host(&state)?.clone();
    let req: ChatCompletionRequest = read_body(body, CHAT_FIELDS, true)?;
    let plan = plan_chat(req)?;
    let served = host
        .open_chat(&plan.model, plan.limit_field, &plan.planned)
        .await
        .map_err(chat_error)?;
    if plan.stream {
        return Ok(stream_chat(&host, served, plan));
    }
    let (outcome, receipt) = host
        .chat(
            &served,
            &plan.planned.request,
            &plan.planned.options,
            None,
            None,
        )
        .await
        .map_err(chat_error)?;
    let body = chat_completion_json(&served, &outcome, &receipt, plan.top_logprobs);
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

fn chat_completion_json(
    served: &Served,
    outcome: &ChatOutcome,
    receipt: &ReceiptId,
    top_logprobs: u8,
) -> Value {
    let turn = &outcome.turn;
    let content = if turn.content.is_empty() && !turn.tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(turn.content.clone())
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !turn.tool_calls.is_empty() {
        message["tool_calls"] = tool_calls_json(&turn.tool_calls);
    }
    json!({
        "id": format!("chatcmpl-{receipt}"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": served.name(),
        "system_fingerprint": fingerprint(served),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": outcome.logprobs.as_deref().map(|l| chat_logprobs(l, top_logprobs)),
            "finish_reason": finish_reason(&turn.finish),
        }],
        "usage": usage_json(turn.usage.prompt_tokens, turn.usage.completion_tokens, outcome.cached_tokens),
    })
}

/// The chat as server-sent `chat.completion.chunk` events: the host's stream of deltas,
/// each a chunk, then the finish reason and usage, then `[DONE]`. The response body
/// drives the chat, so a caller that goes away (its body dropped) stops the generation,
/// and no receipt is recorded.
fn stream_chat(host: &Arc<ModelHost>, served: Arc<Served>, plan: ChatPlan) -> Response {
    let chunk = {
        let created = unix_now();
        let model = served.name().to_owned();
        let fp = fingerprint(&served);
        move |id: &str, delta: Value, finish: Option<&str>| {
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": fp,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        }
    };
    let chat = host.chat_stream(served, plan.planned);
    let receipt = chat.receipt();
    let id = format!("chatcmpl-{receipt}");
    let first = data(&chunk(
        &id,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    let (top_logprobs, include_usage) = (plan.top_logprobs, plan.include_usage);
    let events = chat.flat_map(move |event| {
        let events = match event {
            ChatEvent::Delta(d) => {
                let delta = match d {
                    ChatDelta::Text(t) => json!({"content": t}),
                    ChatDelta::CallStarted { index, id, name } => {
                        json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                                "function": {"name": name, "arguments": ""}}]})
                    }
                    ChatDelta::CallArguments { index, fragment } => {
                        json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
                    }
                };
                vec![data(&chunk(&id, delta, None))]
            }
            ChatEvent::Done(Ok((outcome, _))) => {
                let turn = &outcome.turn;
                let mut last = chunk(&id, json!({}), Some(finish_reason(&turn.finish)));
                if let Some(l) = &outcome.logprobs {
                    last["choices"][0]["logprobs"] = chat_logprobs(l, top_logprobs);
                }
                let mut closing = closing(
                    last,
                    usage_json(
                        turn.usage.prompt_tokens,
                        turn.usage.completion_tokens,
                        outcome.cached_tokens,
                    ),
                    include_usage,
                );
                closing.push(Event::default().data("[DONE]"));
                closing
            }
            ChatEvent::Done(Err(e)) => vec![
                error_event(&chat_error(e)),
                Event::default().data("[DONE]"),
            ],
        };
        futures_util::stream::iter(events)
    });
    let stream = futures_util::stream::once(std::future::ready(first))
        .chain(events)
        .map(Ok::<_, Infallible>);
    with_receipt(
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response(),
        &receipt,
    )
}

// ---------------------------------------------------------------------------------------
// Completions

/// A text completion request, as OpenAI's legacy API takes it.
#[derive(Deserialize, Debug)]
pub(crate) struct CompletionRequest {
    model: String,
    prompt: Value,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    logprobs: Option<u8>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    best_of: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    sampling: SamplingParams,
}

fn completion_prompt(prompt: &Value) -> Result<Prompt, ApiError> {
    let one = |v: &Value| -> Option<Prompt> {
        match v {
            Value::String(s) => Some(Prompt::Text(s.clone())),
            Value::Array(ids) if !ids.is_empty() => ids
                .iter()
                .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                .collect::<Option<Vec<u32>>>()
                .map(Prompt::Tokens),
            _ => None,
        }
    };
    match prompt {
        Value::Array(items) if items.len() == 1 => one(&items[0]),
        Value::Array(items) if items.iter().all(Value::is_string) && items.len() > 1 => {
            return Err(invalid(
                "prompt",
                "only one prompt per request is supported; send several requests",
            ));
        }
        other => one(other),
    }
    .ok_or_else(|| invalid("prompt", "must be a string or a list of token ids"))
}

fn completion_logprobs(logprobs: &[TokenLogprobs], top: u8, start: usize) -> Value {
    let mut offset = start;
    let mut offsets = Vec::with_capacity(logprobs.len());
    for t in logprobs {
        offsets.push(offset);
        offset += t.text.len();
    }
    json!({
        "tokens": logprobs.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": logprobs.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": logprobs.iter().map(|t| {
            t.top.iter().take(usize::from(top)).map(|a| (a.text.clone(), json!(a.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// Continues a prompt (no chat template). With `stream`, the text comes as server-sent
/// `text_completion` events, usage in the last one.
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body(content = Object, description = "OpenAI's (legacy) completion request; one prompt per request"),
    responses((status = 200, description = "A `text_completion` object, or an SSE stream of them", headers(("x-aura-receipt" = String, description = "The usage receipt's id"))),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller_may_infer(&caller)?;
    let host = host(&state)?.clone();
    let req: CompletionRequest = read_body(body, COMPLETION_FIELDS, true)?;
    let sampling = req.sampling.read()?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(invalid("suffix", "is not supported"));
    }
    if req.best_of.is_some_and(|n| n != 1) {
        return Err(invalid("best_of", "only 1 is supported"));
    }
    let top = req.logprobs.unwrap_or(0);
    let prompt = completion_prompt(&req.prompt)?;
    let echo = req.echo.unwrap_or(false);
    let max = requests::max_tokens(&[("max_tokens", req.max_tokens)])?
        .unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS);
    let request = requests::completion(prompt.clone(), &sampling, max, req.logprobs.map(|_| top))?;
    let limit = req.max_tokens.map(|max| ("max_tokens", max));
    let served = host.open_completion(&req.model, &prompt, limit).await?;
    let echoed = if echo {
        requests::prompt_text(&served, &prompt)?
    } else {
        String::new()
    };
    let id_of = |r: &ReceiptId| format!("cmpl-{r}");
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    if req.stream.unwrap_or(false) {
        let receipt = ModelHost::new_receipt_id();
        let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
        let id = id_of(&receipt);
        let model = served.name().to_owned();
        let created = unix_now();
        let chunk = move |text: &str, finish: Option<&str>| {
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            })
        };
        tokio::spawn(async move {
            if !echoed.is_empty() {
                let _ = tx.send(data(&chunk(&echoed, None))).await;
            }
            let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel::<TokenEvent>();
            let forward = {
                let tx = tx.clone();
                let chunk = chunk.clone();
                async move {
                    while let Some(e) = erx.recv().await {
                        if e.text.is_empty() {
                            continue;
                        }
                        if tx.send(data(&chunk(&e.text, None))).await.is_err() {
                            break;
                        }
                    }
                }
            };
            let work = host.complete(&served, request, Some(etx), Some(receipt));
            let (result, ()) = tokio::join!(work, forward);
            let last = match result {
                Ok((g, _)) => {
                    let mut last = chunk("", Some(generation_finish(g.finish)));
                    if let Some(l) = &g.logprobs {
                        last["choices"][0]["logprobs"] = completion_logprobs(l, top, echoed.len());
                    }
                    closing(
                        last,
                        usage_json(
                            u64::from(g.prompt_tokens),
                            u64::from(g.completion_tokens),
                            g.cached_tokens,
                        ),
                        include_usage,
                    )
                }
                Err(e) if e.status == 499 => return,
                Err(e) => vec![error_event(&e.into())],
            };
            for event in last {
                let _ = tx.send(event).await;
            }
            let _ = tx.send(Event::default().data("[DONE]")).await;
        });
        return Ok(sse(rx, &receipt));
    }
    let (generation, receipt) = host.complete(&served, request, None, None).await?;
    let body = json!({
        "id": id_of(&receipt),
        "object": "text_completion",
        "created": unix_now(),
        "model": served.name(),
        "system_fingerprint": fingerprint(&served),
        "choices": [{
            "index": 0,
            "text": format!("{echoed}{}", generation.text),
            "logprobs": generation.logprobs.as_deref().map(|l| completion_logprobs(l, top, echoed.len())),
            "finish_reason": generation_finish(generation.finish),
        }],
        "usage": usage_json(u64::from(generation.prompt_tokens), u64::from(generation.completion_tokens), generation.cached_tokens),
    });
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

// ---------------------------------------------------------------------------------------
// Embeddings

/// An embeddings request, as OpenAI's API takes it.
#[derive(Deserialize, Debug)]
pub(crate) struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

/// Embeds text with a text encoder (such as all-MiniLM-L6-v2): one unit-length vector
/// per input, as floats or (`encoding_format: base64`) little-endian f32 bytes.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body(content = Object, description = "OpenAI's embeddings request; text input only"),
    responses((status = 200, description = "A list of `embedding` objects", headers(("x-aura-receipt" = String, description = "The usage receipt's id"))),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn embeddings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    caller_may_infer(&caller)?;
    let host = host(&state)?.clone();
    let req: EmbeddingsRequest = read_body(body, EMBEDDING_FIELDS, false)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("`{other}` is not float or base64"),
            ));
        }
    };
    let texts = match req.input {
        Value::String(s) => vec![s],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return Err(invalid(
                "input",
                "must be a string or a list of strings (token ids are not accepted: this node's encoders read text)",
            ));
        }
    };
    requests::embedding_inputs(&texts)?;
    let served = host.open(&req.model).await?;
    let dimension = served.encoder()?.dimension();
    if req.dimensions.is_some_and(|d| d != dimension) {
        return Err(invalid(
            "dimensions",
            format!("this model's embeddings have {dimension} dimensions and cannot be shortened"),
        ));
    }
    let (embeddings, receipt) = host.embed(&served, texts).await?;
    let data: Vec<Value> = embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = embeddings.token_counts.iter().map(|&n| u64::from(n)).sum();
    let body = json!({
        "object": "list",
        "data": data,
        "model": served.name(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok(with_receipt(Json(body).into_response(), &receipt))
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(get_model))
        .routes(routes!(chat_completions))
        .routes(routes!(completions))
        .routes(routes!(embeddings))
}

#[cfg(test)]
mod tests {
    use aura_reasoner::Role;
    use proptest::prelude::*;

    use super::*;

    /// Any JSON, biased towards the shapes and keys these requests use.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z_ ]{0,8}".prop_map(Value::String),
            prop_oneof![
                Just("function"),
                Just("json_schema"),
                Just("json_object"),
                Just("required"),
                Just("user"),
                Just("tool"),
                Just("assistant"),
                Just("text"),
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            let key = prop_oneof![
                Just("role"),
                Just("content"),
                Just("type"),
                Just("function"),
                Just("name"),
                Just("parameters"),
                Just("arguments"),
                Just("schema"),
                Just("json_schema"),
                Just("tool_calls"),
                Just("tool_call_id"),
                Just("id"),
                Just("text"),
                Just("x"),
            ]
            .prop_map(str::to_owned);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn chat_request() -> impl Strategy<Value = Value> {
        let message = (
            prop_oneof![
                Just("system"),
                Just("user"),
                Just("assistant"),
                Just("tool"),
                Just("wizard")
            ],
            prop_oneof!["[a-z ]{0,12}".prop_map(Value::String), json_value()],
            prop::option::of(json_value()),
            prop::option::of("[a-z0-9]{0,4}"),
        )
            .prop_map(|(role, content, calls, id)| {
                let mut m = json!({"role": role, "content": content});
                if let Some(calls) = calls {
                    m["tool_calls"] = calls;
                }
                if let Some(id) = id {
                    m["tool_call_id"] = Value::String(id);
                }
                m
            });
        (
            prop::collection::vec(message, 0..4),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
        )
            .prop_map(|(messages, tools, choice, format, stop, top)| {
                let mut body = json!({"model": "m", "messages": messages});
                for (k, v) in [
                    ("tools", tools),
                    ("tool_choice", choice),
                    ("response_format", format),
                    ("stop", stop),
                    ("top_logprobs", top),
                ] {
                    if let Some(v) = v {
                        body[k] = v;
                    }
                }
                body
            })
    }

    proptest! {
        /// Whatever a caller sends, planning a chat request either succeeds with a
        /// request the reasoner accepts, or refuses with a client error; it never panics.
        #[test]
        fn any_chat_body_is_planned_or_refused(body in chat_request()) {
            if let Ok(req) = serde_json::from_value::<ChatCompletionRequest>(body) {
                match plan_chat(req) {
                    Ok(plan) => prop_assert!(plan.planned.request.validate().is_ok()),
                    Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                }
            }
        }

        /// The same for a completion's prompt.
        #[test]
        fn any_prompt_is_read_or_refused(prompt in json_value()) {
            if let Err(e) = completion_prompt(&prompt) {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            }
        }
    }

    #[test]
    fn chat_bodies_map_onto_the_reasoner_request() {
        let req: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "smollm2",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Oslo\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "rain"}
            ],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
            "response_format": {"type": "json_object"},
            "max_completion_tokens": 9, "max_tokens": 20,
            "seed": -1, "top_p": 0.5, "stop": "END",
            "logprobs": true, "top_logprobs": 2, "stream": true
        }))
        .unwrap();
        let plan = plan_chat(req).unwrap();
        let r = &plan.planned.request;
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages[0].content, "Be brief.");
        assert_eq!(
            r.messages[2].tool_calls[0].arguments,
            json!({"city": "Oslo"})
        );
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.tool_choice, ToolChoice::Tool("w".into()));
        // max_completion_tokens wins over the deprecated max_tokens.
        assert_eq!(r.max_tokens, Some(9));
        assert_eq!(r.seed, Some(u64::MAX));
        assert_eq!(r.stop, vec!["END".to_owned()]);
        assert_eq!(plan.planned.options.top_p, Some(0.5));
        assert_eq!(plan.planned.options.format, Some(Constraint::JsonObject));
        assert_eq!(plan.planned.options.logprobs, Some(2));
        assert!(plan.stream);
    }
}
