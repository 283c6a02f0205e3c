//! The `local` reasoner: aura-reasoner's [`Reasoner`] trait answered by a model running
//! in this process.
//!
//! A turn renders the conversation with the model's chat template, generates on a
//! blocking thread (the engine is synchronous CPU work), forwards the text to the async
//! `turn` over a channel as it comes, and finally reads tool calls out of the text.
//!
//! - **Determinism.** Generation is greedy unless the request sets a temperature, and
//!   seeded by the request's seed (0 when it sets none), so identical requests give
//!   identical turns. Tool-call ids are derived from the prompt and the output, not drawn
//!   at random, for the same reason.
//! - **Tools.** When the model's template renders tools (it mentions `tools`), they are
//!   passed to it; otherwise (SmolLM2's plain ChatML) they are described in the system
//!   message with the expected answer format. A call is read from
//!   `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, or from an answer
//!   that is only such a JSON object (optionally in a code fence). When the request
//!   requires a call of one tool (a named tool, or `required` with one tool offered), the
//!   answer is begun for the model (`{"name": "<tool>", "arguments": `) and decoding is
//!   constrained to the rest of an object valid against that tool's parameter schema, so
//!   the model writes only the arguments, and valid ones; with several tools required, the
//!   model first picks the tool among the offered names. (A schema with keywords the
//!   constrained decoder cannot enforce falls back to any JSON object.) Validating
//!   arguments stays the kernel's job. Output that names no offered tool is returned as
//!   text: a small model's confused answer is the kernel's to judge, never a panic.
//! - **Streaming.** Text deltas are sent as the model writes them, except that text which
//!   may be a tool call (from a `<tool_call>` tag, or an answer opening with `{`, `[` or a
//!   code fence) is held back until the end; it then becomes `ToolCallStarted` and
//!   `ToolCallArguments` deltas if it parsed, or text if it did not. For a text turn the
//!   streamed text is exactly the turn's content.
//! - **Cancellation.** Dropping the `turn` future closes the channel; the generating
//!   thread sees it at its next token and stops. [`LocalReasoner::chat_until`] also stops
//!   when a [`Cancel`] flag is set (a node stopping).
//! - **Usage** counts the real tokens: the rendered prompt's, and every generated token
//!   including the end-of-sequence token.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aura_reasoner::{
    Delta, DeltaSink, Error, Finish, LocalConfig, LocalModels, Message, ProviderInfo, Reasoner,
    Request, Role, ToolCall, ToolChoice, ToolSpec, Turn, Usage,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::generate::{Cancel, Constraint, Finish as GenFinish, GenerateRequest, Prompt};
use crate::{
    ChatMessage, LoadOptions, Model, ModelFiles, Sampling, ToolCallFunction, ToolDef, WeightFormat,
};

/// The provider kind, as in [`Turn::provider`].
pub const PROVIDER: &str = "local";

/// The token limit of a turn when neither the request nor the options set one.
pub const DEFAULT_MAX_TOKENS: u32 = 512;

const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// How to open a local reasoner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalOptions {
    /// The model's name in turns and in [`Reasoner::describe`]; the file or directory
    /// name when unset.
    pub name: Option<String>,
    /// Threads for the model's work; results do not depend on it.
    pub threads: Option<usize>,
    /// Convert weights at load time (see [`LoadOptions::dtype`]).
    pub dtype: Option<WeightFormat>,
    /// The token limit of a turn when the request sets none ([`DEFAULT_MAX_TOKENS`] when
    /// unset).
    pub max_tokens: Option<u32>,
}

/// Opens `provider = "local"` configs for [`aura_reasoner::build`]: register it with
/// `Context::system().with_local(Arc::new(LocalOpener))`. Each config loads its model.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOpener;

impl LocalModels for LocalOpener {
    fn open(&self, config: &LocalConfig) -> Result<Arc<dyn Reasoner>, Error> {
        LocalReasoner::open(
            &config.model,
            &LocalOptions {
                name: config.name.clone(),
                threads: config.threads,
                dtype: None,
                max_tokens: config.max_tokens,
            },
        )
    }
}

/// A reasoner answering with a model loaded in this process.
#[derive(Clone)]
pub struct LocalReasoner {
    model: Arc<Model>,
    name: String,
    max_tokens: u32,
}

impl std::fmt::Debug for LocalReasoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalReasoner")
            .field("name", &self.name)
            .field("fingerprint", &self.model.fingerprint().to_string())
            .finish()
    }
}

impl LocalReasoner {
    /// A reasoner over a model already loaded (for a node that loads verified packages
    /// itself and shares the model with its other endpoints).
    pub fn new(model: Arc<Model>, name: impl Into<String>) -> Self {
        LocalReasoner {
            model,
            name: name.into(),
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }

    /// The token limit of a turn when the request sets none.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens.max(1);
        self
    }

    /// Loads the model at `path` and returns it as a reasoner. `path` is a GGUF file, or
    /// a directory holding `config.json`, `tokenizer.json` (and optionally
    /// `tokenizer_config.json`) and `*.safetensors` shards. The files are taken as they
    /// are: verifying a signed package is the caller's business (aura-model), before it
    /// hands the verified paths here.
    pub fn open(path: &Path, options: &LocalOptions) -> Result<Arc<dyn Reasoner>, Error> {
        Ok(Arc::new(Self::load(path, options)?))
    }

    /// Like [`LocalReasoner::open`], returning the concrete type.
    pub fn load(path: &Path, options: &LocalOptions) -> Result<LocalReasoner, Error> {
        let files = model_files(path)?;
        let load = LoadOptions {
            threads: options.threads,
            dtype: options.dtype,
            ..LoadOptions::default()
        };
        let model = Model::load(&files, &load)
            .map_err(|e| Error::Config(format!("cannot load {}: {e}", path.display())))?;
        let name = options.name.clone().unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        });
        let reasoner = LocalReasoner::new(Arc::new(model), name);
        Ok(match options.max_tokens {
            Some(n) => reasoner.with_max_tokens(n),
            None => reasoner,
        })
    }

    /// The token limit of a turn whose request sets none.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// The model this reasoner runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// What the engine will be asked: the rendered prompt and the generation request.
    fn plan(&self, request: &Request, options: &ChatOptions) -> Result<Plan, Error> {
        request.validate().map_err(Error::InvalidRequest)?;
        let offered: &[ToolSpec] = match request.tool_choice {
            ToolChoice::None => &[],
            _ => &request.tools,
        };
        let must_call = !offered.is_empty()
            && matches!(
                request.tool_choice,
                ToolChoice::Required | ToolChoice::Tool(_)
            );
        let native = self.model.chat_template_handles_tools();
        let mut messages = chat_messages(&request.messages, native);
        let defs: Vec<ToolDef> = offered.iter().map(tool_def).collect();
        if !offered.is_empty() {
            let instructions = tool_instructions(offered, &request.tool_choice, native);
            match messages.first_mut() {
                Some(first) if first.role == "system" => {
                    first.content = format!("{}\n\n{instructions}", first.content);
                }
                _ => messages.insert(0, ChatMessage::new("system", instructions)),
            }
        }
        let mut prompt = self
            .model
            .render_chat(&messages, if native { &defs } else { &[] }, true)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        // The one tool the model must call: begin its answer, leaving it the arguments.
        let forced = match &request.tool_choice {
            ToolChoice::Tool(name) => Some(name.clone()),
            ToolChoice::Required if offered.len() == 1 => Some(offered[0].name.clone()),
            _ => None,
        };
        let arguments = forced
            .as_deref()
            .map(|name| arguments_opening(offered, name))
            .unwrap_or_default();
        let prefill = match forced.as_deref() {
            Some(name) => format!("{}{arguments}", call_opening(name)),
            None => String::new(),
        };
        prompt.push_str(&prefill);
        let generate = GenerateRequest {
            prompt: Prompt::Text(prompt.clone()),
            sampling: Sampling {
                temperature: request.temperature.unwrap_or(0.0),
                seed: request.seed.unwrap_or(0),
                top_p: options.top_p,
                top_k: options.top_k,
                repetition_penalty: options.repetition_penalty,
            },
            max_tokens: request.max_tokens.unwrap_or(self.max_tokens).max(1),
            stop: request.stop.clone(),
            // A required call constrains the answer to the call; otherwise the requested
            // format does (a call written as a JSON object still satisfies it).
            constraint: if must_call {
                Some(arguments_constraint(
                    offered,
                    forced.as_deref().unwrap_or_default(),
                    &arguments,
                ))
            } else {
                options.format.clone()
            },
            logprobs: options.logprobs,
        };
        Ok(Plan {
            prompt,
            generate,
            tools: offered.iter().map(|t| t.name.clone()).collect(),
            offered: offered.to_vec(),
            must_call,
            forced,
            prefill,
            arguments,
        })
    }
}

/// What a chat request may ask of the local engine beyond a reasoner [`Request`]. Its
/// JSON form (with the request's) is what a receipt's input hash covers.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ChatOptions {
    /// Nucleus sampling: keep the most likely tokens whose probability reaches this.
    pub top_p: Option<f32>,
    /// Keep only this many most likely tokens.
    pub top_k: Option<u32>,
    /// Penalise tokens already in the context (1 leaves them unchanged).
    pub repetition_penalty: Option<f32>,
    /// Constrain an answer that is not a required tool call to this format
    /// ([`Constraint::JsonObject`] or [`Constraint::JsonSchema`]).
    pub format: Option<Constraint>,
    /// Return each generated token's log-probability and this many alternatives.
    pub logprobs: Option<u8>,
}

/// A chat answer: the turn, and what the engine measured while writing it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatOutcome {
    /// The answer, as a reasoner turn.
    pub turn: Turn,
    /// Per generated token, when asked for.
    pub logprobs: Option<Vec<crate::TokenLogprobs>>,
    /// Per expert: tokens it served (empty for dense models).
    pub expert_tokens: Vec<u64>,
    /// The prompt the model read (the rendered conversation plus any answer begun for
    /// it), for hashing into receipts.
    pub prompt: String,
    /// Prompt tokens reused from the model's prompt cache ([`crate::Generation::cached_tokens`]):
    /// for the API's usage details and metrics, never for receipts or turns, which are the
    /// same with and without the cache.
    pub cached_tokens: u32,
}

/// One turn's inputs to the engine and to the output parser.
struct Plan {
    prompt: String,
    generate: GenerateRequest,
    /// The names of the tools the model may call (none when calls are off).
    tools: Vec<String>,
    /// Those tools in full.
    offered: Vec<ToolSpec>,
    /// Whether the answer must be a call.
    must_call: bool,
    /// The one tool the model must call, if there is one.
    forced: Option<String>,
    /// The beginning of the answer written for the model (empty unless `forced`).
    prefill: String,
    /// The part of `prefill` that begins the arguments object.
    arguments: String,
}

impl Plan {
    /// Begins the answer with a call of `name`, leaving the model its arguments.
    fn begin_call(&mut self, name: String) {
        let arguments = arguments_opening(&self.offered, &name);
        let prefill = format!("{}{arguments}", call_opening(&name));
        self.prompt.push_str(&prefill);
        self.generate.prompt = Prompt::Text(self.prompt.clone());
        self.generate.constraint = Some(arguments_constraint(&self.offered, &name, &arguments));
        self.prefill = prefill;
        self.arguments = arguments;
        self.forced = Some(name);
    }
}

/// The beginning of a begun call's arguments: the object and its first required property
/// (and the opening quote when that property is a string), so that a small model writes
/// a value rather than echoing the schema back. Empty when the schema requires nothing.
fn arguments_opening(offered: &[ToolSpec], name: &str) -> String {
    let Some(schema) = offered
        .iter()
        .find(|t| t.name == name)
        .map(|t| &t.parameters)
    else {
        return String::new();
    };
    let Some(first) = schema
        .get("required")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str)
    else {
        return String::new();
    };
    let is_string = schema
        .pointer(&format!(
            "/properties/{}/type",
            first.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("string");
    format!(
        "{{{}: {}",
        Value::from(first),
        if is_string { "\"" } else { "" }
    )
}

/// The constraint on what follows a begun call of `name`: the rest of its arguments,
/// valid against the tool's parameter schema. A schema the constrained decoder cannot
/// enforce (a keyword it does not support) falls back to any JSON object: the call is
/// still well formed, and the kernel validates arguments against the full schema anyway.
fn arguments_constraint(offered: &[ToolSpec], name: &str, arguments: &str) -> Constraint {
    let schema = offered
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.parameters.clone());
    let constrained = schema.map(|schema| {
        if arguments.is_empty() {
            Constraint::JsonSchema(schema)
        } else {
            Constraint::JsonSchemaAfter {
                schema,
                prefix: arguments.to_owned(),
            }
        }
    });
    match constrained {
        Some(c) if c.check().is_ok() => c,
        _ if arguments.is_empty() => Constraint::JsonObject,
        _ => Constraint::JsonObjectAfter(arguments.to_owned()),
    }
}

/// The beginning of a call's JSON object, up to its arguments.
fn call_opening(name: &str) -> String {
    format!("{{\"name\": {}, \"arguments\": ", Value::from(name))
}

/// Which of `names` the model would write after `opening` (which ends inside the call's
/// `"name": "`): decoded greedily, token by token, over only the tokens that continue some
/// offered name and its closing quote. Ties go to the lower token id, so the choice is as
/// deterministic as generation.
fn choose_tool(model: &Model, opening: &str, names: &[String]) -> crate::Result<String> {
    let tokenizer = model.tokenizer();
    let mut alive: Vec<(String, Vec<u32>)> = Vec::with_capacity(names.len());
    for name in names {
        alive.push((name.clone(), tokenizer.encode(&format!("{name}\""), false)?));
    }
    // The opening is the conversation's prompt plus the call's beginning: start from what
    // the prompt cache holds of it.
    let opening = tokenizer.encode(opening, true)?;
    let mut session = model.session_for(&opening);
    let mut logits = session.feed(&opening[session.position()..])?;
    let mut position = 0;
    loop {
        alive.retain(|(_, ids)| ids.len() > position);
        match alive.len() {
            0 => return Err(crate::Error::InvalidRequest("no tool to choose".into())),
            1 => return Ok(alive.swap_remove(0).0),
            _ => {}
        }
        let mut best: Option<(f32, u32)> = None;
        for (_, ids) in &alive {
            let id = ids[position];
            let score = logits
                .get(id as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            let better = match best {
                None => true,
                Some((s, b)) => score > s || (score == s && id < b),
            };
            if better {
                best = Some((score, id));
            }
        }
        let Some((_, token)) = best else {
            return Err(crate::Error::InvalidRequest("no tool to choose".into()));
        };
        alive.retain(|(_, ids)| ids[position] == token);
        if alive.len() == 1 {
            return Ok(alive.swap_remove(0).0);
        }
        logits = session.feed(&[token])?;
        position += 1;
    }
}

impl LocalReasoner {
    /// Answers a conversation as [`Reasoner::turn`] does, with what only the local engine
    /// offers besides: nucleus and top-k sampling, a repetition penalty, an output format
    /// constraint, log-probabilities, and the per-expert token counts that receipts
    /// carry. The OpenAI-compatible API is served through this.
    pub async fn chat(
        &self,
        request: &Request,
        options: &ChatOptions,
        deltas: Option<&DeltaSink<'_>>,
    ) -> Result<ChatOutcome, Error> {
        self.chat_until(request, options, deltas, &Cancel::new())
            .await
    }

    /// How many tokens the prompt of this request renders to (the conversation in the
    /// model's chat template, with any answer begun for it): what the context must hold
    /// before the first generated token.
    pub fn prompt_tokens(&self, request: &Request, options: &ChatOptions) -> Result<usize, Error> {
        let plan = self.plan(request, options)?;
        self.model
            .tokenizer()
            .encode(&plan.prompt, true)
            .map(|t| t.len())
            .map_err(|e| engine_error(&e))
    }

    /// [`LocalReasoner::chat`], stopped once `cancel` is cancelled: the turn then ends
    /// with `Finish::Other("cancelled")` and the text written so far.
    pub async fn chat_until(
        &self,
        request: &Request,
        options: &ChatOptions,
        deltas: Option<&DeltaSink<'_>>,
        cancel: &Cancel,
    ) -> Result<ChatOutcome, Error> {
        let mut plan = self.plan(request, options)?;
        if plan.must_call && plan.forced.is_none() {
            // Several tools and one must be called: the model picks the name among the
            // offered ones only, then writes the arguments of the call begun for it.
            let model = Arc::clone(&self.model);
            let opening = format!("{}{{\"name\": \"", plan.prompt);
            let names = plan.tools.clone();
            let chosen = tokio::task::spawn_blocking(move || choose_tool(&model, &opening, &names))
                .await
                .map_err(|e| thread_failed("tool-choosing", &e))?
                .map_err(|e| engine_error(&e))?;
            plan.begin_call(chosen);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let model = Arc::clone(&self.model);
        let generate = plan.generate.clone();
        let cancel = cancel.clone();
        let worker = tokio::task::spawn_blocking(move || {
            model.generate_until(
                &generate,
                &mut |event| {
                    if event.text.is_empty() {
                        return ControlFlow::Continue(());
                    }
                    // A closed channel means the turn was dropped: stop generating.
                    match tx.send(event.text.clone()) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    }
                },
                &cancel,
            )
        });

        let mut gate = Gate::new(!plan.tools.is_empty());
        while let Some(piece) = rx.recv().await {
            if let Some(text) = gate.push(&piece)
                && let Some(sink) = deltas
            {
                sink(Delta::Text(text));
            }
        }
        let generation = worker
            .await
            .map_err(|e| thread_failed("generating", &e))?
            .map_err(|e| engine_error(&e))?;

        let parsed = match &plan.forced {
            _ if plan.tools.is_empty() => None,
            // The model wrote only the arguments of the call begun for it.
            Some(name) => match serde_json::from_str::<Value>(&format!(
                "{}{}",
                plan.arguments, generation.text
            )) {
                Ok(arguments @ Value::Object(_)) => Some(Parsed {
                    content: String::new(),
                    calls: vec![(name.clone(), arguments)],
                }),
                _ => None,
            },
            None => parse_calls(&generation.text, &plan.tools),
        };
        let usage = Usage {
            prompt_tokens: u64::from(generation.prompt_tokens),
            completion_tokens: u64::from(generation.completion_tokens),
            reported: true,
        };
        let mut turn = Turn {
            content: generation.text.clone(),
            tool_calls: Vec::new(),
            finish: match generation.finish {
                GenFinish::Stop => Finish::Stop,
                GenFinish::Length => Finish::Length,
                GenFinish::Cancelled => Finish::Other("cancelled".into()),
            },
            usage,
            provider: PROVIDER.to_owned(),
            model: self.name.clone(),
            response_id: None,
            attempts: 1,
        };
        match parsed {
            Some(Parsed { content, calls }) => {
                for (index, (name, arguments)) in calls.into_iter().enumerate() {
                    let id = call_id(&plan.prompt, &generation.text, index);
                    if let Some(sink) = deltas {
                        sink(Delta::ToolCallStarted {
                            id: id.clone(),
                            name: name.clone(),
                        });
                        sink(Delta::ToolCallArguments {
                            id: id.clone(),
                            fragment: arguments.to_string(),
                        });
                    }
                    turn.tool_calls.push(ToolCall {
                        id,
                        name,
                        arguments,
                    });
                }
                turn.content = content;
                turn.finish = Finish::ToolCalls;
            }
            None => {
                // What the model wrote is the turn's text, with the beginning written for
                // it when there was one (the gate held all of it then: a constrained
                // answer opens with `{`).
                let held = gate.finish();
                let shown = if plan.prefill.is_empty() {
                    held
                } else {
                    turn.content = format!("{}{}", plan.prefill, generation.text);
                    Some(turn.content.clone())
                };
                if let (Some(text), Some(sink)) = (shown, deltas) {
                    sink(Delta::Text(text));
                }
            }
        }
        Ok(ChatOutcome {
            turn,
            logprobs: generation.logprobs,
            expert_tokens: generation.expert_tokens,
            prompt: plan.prompt,
            cached_tokens: generation.cached_tokens,
        })
    }
}

#[async_trait]
impl Reasoner for LocalReasoner {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            provider: PROVIDER.to_owned(),
            model: self.name.clone(),
            base_url: None,
        }
    }

    async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>) -> Result<Turn, Error> {
        Ok(self
            .chat(request, &ChatOptions::default(), deltas)
            .await?
            .turn)
    }
}

/// The engine's files for `path`: a GGUF file, or a safetensors directory.
fn model_files(path: &Path) -> Result<ModelFiles, Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_file() {
        return Ok(ModelFiles::Gguf(path.to_owned()));
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut weights: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    let need = |name: &str| {
        let p = path.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Config(format!(
                "{} holds no {name}: a local model is a GGUF file or a directory with \
                 config.json, tokenizer.json and safetensors shards",
                path.display()
            )))
        }
    };
    let config = need("config.json")?;
    let tokenizer = need("tokenizer.json")?;
    if weights.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no .safetensors shard",
            path.display()
        )));
    }
    let tokenizer_config = Some(path.join("tokenizer_config.json")).filter(|p| p.is_file());
    Ok(ModelFiles::Safetensors {
        config,
        tokenizer,
        tokenizer_config,
        weights,
    })
}

/// Engine failures during a turn come from the request (too long for the context, a
/// constraint the model cannot meet, bad sampling values); nothing is worth retrying.
/// A blocking thread of the turn panicked or was cancelled.
fn thread_failed(what: &str, e: &tokio::task::JoinError) -> Error {
    Error::Stream {
        kind: "local".into(),
        message: format!("the {what} thread failed: {e}"),
        retryable: false,
    }
}

fn engine_error(e: &crate::Error) -> Error {
    Error::InvalidRequest(format!("the local model refused the request: {e}"))
}

fn tool_def(spec: &ToolSpec) -> ToolDef {
    ToolDef {
        name: spec.name.clone(),
        description: spec.description.clone(),
        parameters: spec.parameters.clone(),
    }
}

/// The conversation in the template's shape. Templates that know nothing of tools would
/// drop an assistant's calls, so for them the calls are written into the content in the
/// same `<tool_call>` form the model is asked to use.
fn chat_messages(messages: &[Message], native: bool) -> Vec<ChatMessage> {
    let name_of = |id: &str| {
        messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.id == id)
            .map(|c| c.name.clone())
    };
    messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut out = ChatMessage::new(role, m.content.clone());
            match m.role {
                Role::Assistant if native => {
                    out.tool_calls = m
                        .tool_calls
                        .iter()
                        .map(|c| crate::ToolCall {
                            id: c.id.clone(),
                            kind: "function".into(),
                            function: ToolCallFunction {
                                name: c.name.clone(),
                                arguments: arguments_text(&c.arguments),
                            },
                        })
                        .collect();
                }
                Role::Assistant => {
                    for c in &m.tool_calls {
                        let call = serde_json::json!({"name": c.name, "arguments": c.arguments});
                        if !out.content.is_empty() {
                            out.content.push('\n');
                        }
                        out.content
                            .push_str(&format!("{CALL_OPEN}{call}{CALL_CLOSE}"));
                    }
                }
                Role::Tool => {
                    out.tool_call_id = m.tool_call_id.clone();
                    out.name = m.tool_call_id.as_deref().and_then(name_of);
                }
                Role::System | Role::User => {}
            }
            out
        })
        .collect()
}

/// Arguments as the JSON text OpenAI-style templates expect (a string recorded because
/// it did not parse is passed on as it was written).
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What the model is told about the tools.
fn tool_instructions(tools: &[ToolSpec], choice: &ToolChoice, native: bool) -> String {
    let mut text = String::new();
    if !native {
        text.push_str("You can call these tools:\n");
        for t in tools {
            text.push_str(&format!(
                "- {}: {} Its arguments follow this JSON Schema: {}\n",
                t.name, t.description, t.parameters
            ));
        }
    }
    match choice {
        ToolChoice::Required => text.push_str(
            "You must call one of the tools. Answer with only a JSON object: \
             {\"name\": <tool name>, \"arguments\": <arguments object>}.",
        ),
        ToolChoice::Tool(name) => text.push_str(&format!(
            "You must call the tool {name}. Answer with only a JSON object: \
             {{\"name\": \"{name}\", \"arguments\": <arguments object>}}."
        )),
        ToolChoice::Auto | ToolChoice::None => text.push_str(&format!(
            "To call a tool, answer with {CALL_OPEN}{{\"name\": <tool name>, \"arguments\": \
             <arguments object>}}{CALL_CLOSE}. Otherwise answer in plain text."
        )),
    }
    text
}

/// A deterministic id for the `index`th call of a turn: distinct across the turns of a
/// conversation (each turn's prompt holds the previous turns), identical on replay.
fn call_id(prompt: &str, output: &str, index: usize) -> String {
    let mut h = Sha256::new();
    h.update(b"aura/local-reasoner/call-id/v1\0");
    h.update((prompt.len() as u64).to_be_bytes());
    h.update(prompt.as_bytes());
    h.update((output.len() as u64).to_be_bytes());
    h.update(output.as_bytes());
    h.update((index as u64).to_be_bytes());
    let digest = h.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("call_{hex}")
}

/// Tool calls read from a model's output, and the text around them.
#[derive(Debug, PartialEq)]
struct Parsed {
    content: String,
    calls: Vec<(String, Value)>,
}

/// Reads tool calls from `text`: `<tool_call>` blocks, or an answer that is only a call
/// object (or an array of them), possibly fenced. None when the text holds no call of an
/// offered tool, in which case it is the turn's text.
fn parse_calls(text: &str, tools: &[String]) -> Option<Parsed> {
    if text.contains(CALL_OPEN) {
        let mut content = String::new();
        let mut calls = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(CALL_OPEN) {
            content.push_str(&rest[..start]);
            let after = &rest[start + CALL_OPEN.len()..];
            let (inner, next) = match after.find(CALL_CLOSE) {
                Some(end) => (&after[..end], &after[end + CALL_CLOSE.len()..]),
                None => (after, ""),
            };
            match serde_json::from_str::<Value>(inner.trim())
                .ok()
                .and_then(|v| call_of(&v, tools))
            {
                Some(call) => calls.push(call),
                // A block that does not parse stays in the text, where the kernel and
                // the person reading the record can see what the model wrote.
                None => {
                    content.push_str(&rest[start..rest.len() - next.len()]);
                }
            }
            rest = next;
        }
        content.push_str(rest);
        return (!calls.is_empty()).then(|| Parsed {
            content: content.trim().to_owned(),
            calls,
        });
    }
    let body = unfence(text.trim());
    let value: Value = serde_json::from_str(body).ok()?;
    let calls: Vec<(String, Value)> = match &value {
        Value::Array(items) => items
            .iter()
            .map(|v| call_of(v, tools))
            .collect::<Option<_>>()?,
        v => vec![call_of(v, tools)?],
    };
    (!calls.is_empty()).then(|| Parsed {
        content: String::new(),
        calls,
    })
}

/// The text inside a Markdown code fence (```json ... ```), or the text itself.
fn unfence(text: &str) -> &str {
    let Some(inner) = text.strip_prefix("```") else {
        return text;
    };
    let inner = inner.strip_suffix("```").unwrap_or(inner);
    // Drop the info string (`json`) on the opening line.
    match inner.find('\n') {
        Some(nl) if !inner[..nl].contains('{') && !inner[..nl].contains('[') => {
            inner[nl + 1..].trim()
        }
        _ => inner.trim(),
    }
}

/// One call from a call object: `{"name": ..., "arguments": ...}` (arguments possibly
/// written as a JSON string). The name must be an offered tool. An object with
/// `description` or `parameters` is not a call: small models echo a tool's description,
/// schema and all.
fn call_of(value: &Value, tools: &[String]) -> Option<(String, Value)> {
    let object = value.as_object()?;
    let name = object.get("name").and_then(Value::as_str)?;
    if !tools.iter().any(|t| t == name)
        || object.contains_key("description")
        || object.contains_key("parameters")
    {
        return None;
    }
    let arguments = match object.get("arguments") {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(v) => v.clone(),
    };
    Some((name.to_owned(), arguments))
}

/// Decides which streamed text to pass on at once and which to hold back because it may
/// be a tool call. It only ever holds back a suffix of what has been generated, and once
/// held, text stays held until [`Gate::finish`].
#[derive(Debug)]
struct Gate {
    tools: bool,
    text: String,
    sent: usize,
}

impl Gate {
    fn new(tools: bool) -> Self {
        Gate {
            tools,
            text: String::new(),
            sent: 0,
        }
    }

    /// Takes the next piece; returns the text that can be shown now.
    fn push(&mut self, piece: &str) -> Option<String> {
        self.text.push_str(piece);
        let end = if self.tools {
            self.hold_from()
        } else {
            self.text.len()
        };
        if end <= self.sent {
            return None;
        }
        let out = self.text[self.sent..end].to_owned();
        self.sent = end;
        Some(out)
    }

    /// Where the text that may be a call begins (the text's length when none may).
    fn hold_from(&self) -> usize {
        let text = self.text.as_str();
        let lead = text.len() - text.trim_start().len();
        let body = &text[lead..];
        // An answer that opens like JSON or a code fence, or that has not opened at all.
        if body.is_empty()
            || body.starts_with(['{', '['])
            || body.starts_with("```")
            || "```".starts_with(body)
        {
            return self.sent;
        }
        if let Some(at) = text[self.sent..].find(CALL_OPEN) {
            return self.sent + at;
        }
        // A tag that may be beginning at the end of the text.
        let tail = (1..CALL_OPEN.len())
            .rev()
            .find(|&n| {
                n <= text.len() - self.sent
                    && text.is_char_boundary(text.len() - n)
                    && CALL_OPEN.starts_with(&text[text.len() - n..])
            })
            .unwrap_or(0);
        text.len() - tail
    }

    /// The text still held, once the output turned out to hold no call.
    fn finish(&mut self) -> Option<String> {
        if self.sent >= self.text.len() {
            return None;
        }
        let out = self.text[self.sent..].to_owned();
        self.sent = self.text.len();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_begun_call_begins_its_first_required_argument() {
        let tool = |name: &str, parameters: Value| ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters,
        };
        let offered = vec![
            tool(
                "fs.read",
                json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            ),
            tool(
                "wait",
                json!({"type": "object", "properties": {"s/e\"c": {"type": "integer"}}, "required": ["s/e\"c"]}),
            ),
            tool("ping", json!({"type": "object", "properties": {}})),
        ];
        assert_eq!(arguments_opening(&offered, "fs.read"), r#"{"path": ""#);
        // Not a string: no quote; the key is written as JSON, escapes and all.
        assert_eq!(arguments_opening(&offered, "wait"), r#"{"s/e\"c": "#);
        assert_eq!(arguments_opening(&offered, "ping"), "");
        assert_eq!(arguments_opening(&offered, "unknown"), "");
        // The rest of the arguments must match the tool's schema.
        assert_eq!(
            arguments_constraint(&offered, "fs.read", r#"{"path": ""#),
            Constraint::JsonSchemaAfter {
                schema: offered[0].parameters.clone(),
                prefix: r#"{"path": ""#.into()
            }
        );
        assert_eq!(
            arguments_constraint(&offered, "ping", ""),
            Constraint::JsonSchema(offered[2].parameters.clone())
        );
        // A schema the decoder cannot enforce still gets a JSON object.
        let unusual = vec![tool(
            "tags",
            json!({"type": "object", "properties": {"t": {"type": "array", "uniqueItems": true}}}),
        )];
        assert_eq!(
            arguments_constraint(&unusual, "tags", ""),
            Constraint::JsonObject
        );
        assert_eq!(
            arguments_constraint(&unusual, "tags", r#"{"t": "#),
            Constraint::JsonObjectAfter(r#"{"t": "#.into())
        );
    }

    fn tools() -> Vec<String> {
        vec!["fs.read".to_owned(), "mission.finish".to_owned()]
    }

    #[test]
    fn calls_are_read_from_tags_objects_fences_and_arrays() {
        let check = |input: &str, expect: Option<Parsed>| {
            assert_eq!(parse_calls(input, &tools()), expect, "{input}");
        };
        let read = |path: &str| ("fs.read".to_owned(), json!({ "path": path }));
        check(
            r#"Let me look. <tool_call>{"name": "fs.read", "arguments": {"path": "a"}}</tool_call>"#,
            Some(Parsed {
                content: "Let me look.".into(),
                calls: vec![read("a")],
            }),
        );
        check(
            r#"<tool_call>{"name":"fs.read","arguments":{"path":"a"}}</tool_call><tool_call>{"name":"fs.read","arguments":"{\"path\":\"b\"}"}"#,
            Some(Parsed {
                content: String::new(),
                calls: vec![read("a"), read("b")],
            }),
        );
        check(
            "```json\n{\"name\": \"fs.read\", \"arguments\": {\"path\": \"a\"}}\n```",
            Some(Parsed {
                content: String::new(),
                calls: vec![read("a")],
            }),
        );
        check(
            r#" [{"name": "fs.read", "arguments": {"path": "a"}}, {"name": "mission.finish"}]"#,
            Some(Parsed {
                content: String::new(),
                calls: vec![read("a"), ("mission.finish".into(), json!({}))],
            }),
        );
        // Arguments alone, an echoed tool description, unknown tools, broken JSON and
        // plain text are text.
        check(r#"{"path": "a"}"#, None);
        check(
            r#"{"name": "fs.read", "description": "Read a file", "parameters": {}}"#,
            None,
        );
        check(r#"{"name": "rm.rf", "arguments": {}}"#, None);
        check(r#"<tool_call>{"name": "fs.read", "argu</tool_call>"#, None);
        check("The capital of France is Paris.", None);
        check("", None);
        check("{", None);
        // An unparseable block stays in the text beside a good one.
        check(
            r#"<tool_call>oops</tool_call> <tool_call>{"name":"fs.read","arguments":{"path":"a"}}</tool_call>"#,
            Some(Parsed {
                content: "<tool_call>oops</tool_call>".into(),
                calls: vec![read("a")],
            }),
        );
    }

    #[test]
    fn the_gate_streams_prose_and_holds_what_may_be_a_call() {
        let run = |tools: bool, pieces: &[&str]| {
            let mut gate = Gate::new(tools);
            let shown: Vec<String> = pieces.iter().filter_map(|p| gate.push(p)).collect();
            (shown.concat(), gate.finish().unwrap_or_default())
        };
        assert_eq!(
            run(false, &["{\"a\"", ": 1}"]),
            ("{\"a\": 1}".into(), "".into())
        );
        assert_eq!(
            run(true, &["Hello", " world"]),
            ("Hello world".into(), "".into())
        );
        assert_eq!(
            run(true, &[" ", "{\"name\"", ": 1}"]),
            ("".into(), " {\"name\": 1}".into())
        );
        assert_eq!(
            run(true, &["Sure ", "<tool", "_call>{}"]),
            ("Sure ".into(), "<tool_call>{}".into())
        );
        assert_eq!(run(true, &["a <to", "p>"]), ("a <top>".into(), "".into()));
        assert_eq!(run(true, &["``", "`json"]), ("".into(), "```json".into()));
        assert_eq!(run(true, &["`x", "y"]), ("`xy".into(), "".into()));
        assert_eq!(run(true, &["é", "<", "t"]), ("é".into(), "<t".into()));
    }

    #[test]
    fn call_ids_depend_on_prompt_output_and_index() {
        let a = call_id("p", "o", 0);
        assert_eq!(a, call_id("p", "o", 0));
        assert_ne!(a, call_id("p", "o", 1));
        assert_ne!(a, call_id("p2", "o", 0));
        assert_ne!(call_id("ab", "c", 0), call_id("a", "bc", 0));
        assert_eq!(a.len(), "call_".len() + 24);
    }
}
