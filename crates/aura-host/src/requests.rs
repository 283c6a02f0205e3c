//! The request checks and mappings every surface over a [`ModelHost`](crate::ModelHost)
//! shares (the OpenAI-compatible HTTP API and the gRPC inference service alike), apart
//! from any wire format: each surface reads its own format into these pieces and gets the
//! reasoner's request, the engine's options and the same refusals with the same reasons.
//!
//! A front end opens the model of a chat or a completion with [`ModelHost::open_chat`] or
//! [`ModelHost::open_completion`], which apply the checks that need the model (a model
//! that generates; room in its context for the token limit), so that no front end can
//! leave one out.
//!
//! Every refusal is a [`ModelError`] with status 400 whose message starts with the field
//! it is about (`temperature: must be between 0 and 2`).

use std::sync::Arc;

use aura_infer::reasoner::ChatOptions;
use aura_infer::{Constraint, GenerateRequest, Prompt};
use aura_reasoner::{Finish, Message, Role, ToolCall, ToolChoice, ToolSpec};
use serde_json::{Value, json};

use crate::error::{ChatError, ModelError};
use crate::host::{ModelHost, Served};

/// Most alternatives per token in `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;
/// Most stop sequences (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Most alternatives per token in a completion's `logprobs` (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: u8 = 5;
/// Most inputs in one embeddings request (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// A refusal of `param`.
pub fn invalid(param: &str, message: impl std::fmt::Display) -> ModelError {
    ModelError::invalid(format!("{param}: {message}"))
}

/// The sampling parameters every generation shares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// 0 (the default) is greedy.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
    /// 0 when unset.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

impl Sampling {
    /// Refuses values the engine cannot honour.
    pub fn check(&self) -> Result<(), ModelError> {
        if let Some(t) = self.temperature
            && !(t.is_finite() && (0.0..=2.0).contains(&t))
        {
            return Err(invalid("temperature", "must be between 0 and 2"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(invalid("top_p", "must be greater than 0 and at most 1"));
        }
        if self.top_k == Some(0) {
            return Err(invalid("top_k", "must be at least 1"));
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return Err(invalid("repetition_penalty", "must be a number above 0"));
        }
        if self.stop.len() > MAX_STOP {
            return Err(invalid("stop", format!("at most {MAX_STOP} sequences")));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(invalid("stop", "a stop sequence is empty"));
        }
        Ok(())
    }

    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }

    /// The engine's sampling.
    pub fn engine(&self) -> aura_infer::Sampling {
        aura_infer::Sampling {
            temperature: self.temperature.unwrap_or(0.0),
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed(),
        }
    }
}

/// The first of several token limits given (in order of precedence), each at least 1.
pub fn max_tokens(values: &[(&str, Option<u32>)]) -> Result<Option<u32>, ModelError> {
    let mut chosen = None;
    for (name, v) in values {
        if let Some(n) = v {
            if *n == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
            chosen = chosen.or(Some(*n));
        }
    }
    Ok(chosen)
}

/// Refuses a token limit the model's context cannot hold after the prompt: the generation
/// would end at the context's end anyway, and the limit would reserve allowance for tokens
/// that can never come. (A limit left unset runs to the default or the context's end,
/// whichever comes first.) `param` names the field the limit came from.
pub fn room(
    param: &str,
    max_tokens: u32,
    prompt_tokens: usize,
    context: usize,
) -> Result<(), ModelError> {
    let left = context.saturating_sub(prompt_tokens);
    if usize::try_from(max_tokens).map_or(true, |m| m > left) {
        return Err(invalid(
            param,
            format!(
                "{max_tokens} is more than the {left} tokens left in this model's {context}-token context after the prompt's {prompt_tokens}; ask for at most {left}"
            ),
        ));
    }
    Ok(())
}

impl ModelHost {
    /// The model `name`, opened for the chat `plan` and checked as every front end checks
    /// it: a model that generates text, and, if the chat sets a token limit (read from the
    /// field `limit_field`), room for it in the model's context after the chat's prompt
    /// ([`room`]). The conversation is rendered and tokenized on a blocking thread.
    pub async fn open_chat(
        self: &Arc<Self>,
        name: &str,
        limit_field: &str,
        plan: &ChatPlan,
    ) -> Result<Arc<Served>, ChatError> {
        let served = self.open(name).await?;
        let generator = served.generator()?.clone();
        if let Some(max) = plan.request.max_tokens {
            let (request, options) = (plan.request.clone(), plan.options.clone());
            // Rendering and tokenizing a long conversation is CPU work: off the async
            // threads.
            let (prompt, context) = tokio::task::spawn_blocking(move || {
                generator
                    .prompt_tokens(&request, &options)
                    .map(|n| (n, generator.model().info().context_length))
            })
            .await
            .map_err(|e| ModelError::internal(format!("the tokenizing thread failed: {e}")))?
            .map_err(ChatError::Reasoner)?;
            room(limit_field, max, prompt, context)?;
        }
        Ok(served)
    }

    /// The model `name`, opened for a completion of `prompt` and checked as every front
    /// end checks it: a model that generates text, and, if the request set its token limit
    /// (`limit`: the field and its value), room for it in the model's context after the
    /// prompt ([`room`]). The prompt is tokenized on a blocking thread.
    pub async fn open_completion(
        self: &Arc<Self>,
        name: &str,
        prompt: &Prompt,
        limit: Option<(&str, u32)>,
    ) -> Result<Arc<Served>, ModelError> {
        let served = self.open(name).await?;
        let model = served.generator()?.model().clone();
        if let Some((field, max)) = limit {
            let context = model.info().context_length;
            let prompt = prompt.clone();
            let counted = tokio::task::spawn_blocking(move || match &prompt {
                Prompt::Text(t) => model.tokenizer().encode(t, true).map(|ids| ids.len()),
                Prompt::Tokens(ids) => Ok(ids.len()),
            })
            .await
            .map_err(|e| ModelError::internal(format!("the tokenizing thread failed: {e}")))?
            .map_err(|e| invalid("prompt", e))?;
            room(field, max, counted, context)?;
        }
        Ok(served)
    }
}

/// A completion prompt as text (what `echo` returns): the text, or its tokens decoded.
pub fn prompt_text(served: &Served, prompt: &Prompt) -> Result<String, ModelError> {
    match prompt {
        Prompt::Text(t) => Ok(t.clone()),
        Prompt::Tokens(ids) => served
            .generator()?
            .model()
            .tokenizer()
            .decode(ids)
            .map_err(|e| invalid("prompt", e)),
    }
}

/// A message's role by name (`developer` is `system`); `param` names the field.
pub fn role(param: &str, name: &str) -> Result<Role, ModelError> {
    match name {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => Err(invalid(
            param,
            format!("`{other}` is not one of system, developer, user, assistant, tool"),
        )),
    }
}

/// A tool call a caller sends back in an assistant message. Arguments that do not parse
/// stay the text they were (the reasoner's convention): nothing the caller sent is lost.
pub fn tool_call(id: String, name: String, arguments: String) -> ToolCall {
    let arguments = serde_json::from_str(&arguments).unwrap_or(Value::String(arguments));
    ToolCall {
        id,
        name,
        arguments,
    }
}

/// A tool the model may call; `parameters` (a JSON Schema object) defaults to an object
/// without properties. `param` names the parameters field.
pub fn tool(
    param: &str,
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
) -> Result<ToolSpec, ModelError> {
    let parameters = parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        return Err(invalid(param, "must be a JSON Schema object"));
    }
    Ok(ToolSpec {
        name,
        description: description.unwrap_or_default(),
        parameters,
    })
}

/// `auto`, `none` or `required`.
pub fn tool_choice_mode(param: &str, mode: &str) -> Result<ToolChoice, ModelError> {
    match mode {
        "auto" => Ok(ToolChoice::Auto),
        "none" => Ok(ToolChoice::None),
        "required" => Ok(ToolChoice::Required),
        other => Err(invalid(
            param,
            format!("`{other}` is not auto, none, required or a named function"),
        )),
    }
}

/// A response schema, refused now (with the reason) if the decoder cannot enforce it
/// rather than answered unconstrained.
pub fn json_schema(param: &str, schema: Value) -> Result<Constraint, ModelError> {
    if !schema.is_object() {
        return Err(invalid(param, "must be a JSON Schema object"));
    }
    let constraint = Constraint::JsonSchema(schema);
    constraint.check().map_err(|e| invalid(param, e))?;
    Ok(constraint)
}

/// Whether and how many alternatives per token to return: `top` needs `wants`.
pub fn chat_logprobs(wants: bool, top: u8) -> Result<Option<u8>, ModelError> {
    if top > MAX_TOP_LOGPROBS {
        return Err(invalid(
            "top_logprobs",
            format!("must be at most {MAX_TOP_LOGPROBS}"),
        ));
    }
    if top > 0 && !wants {
        return Err(invalid("top_logprobs", "needs `logprobs: true`"));
    }
    Ok(wants.then_some(top))
}

/// A chat request's parts, read from the wire.
#[derive(Debug, Clone, Default)]
pub struct ChatParts {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub format: Option<Constraint>,
    pub max_tokens: Option<u32>,
    pub sampling: Sampling,
    /// From [`chat_logprobs`].
    pub logprobs: Option<u8>,
}

/// What a chat request becomes: the reasoner's request and the engine options.
#[derive(Debug, Clone)]
pub struct ChatPlan {
    pub request: aura_reasoner::Request,
    pub options: ChatOptions,
}

/// Checks a chat request as a whole and maps it.
pub fn chat(parts: ChatParts) -> Result<ChatPlan, ModelError> {
    parts.sampling.check()?;
    if parts.messages.is_empty() {
        return Err(invalid("messages", "must hold at least one message"));
    }
    let request = aura_reasoner::Request {
        messages: parts.messages,
        tools: parts.tools,
        tool_choice: parts.tool_choice,
        max_tokens: parts.max_tokens,
        temperature: parts.sampling.temperature,
        seed: Some(parts.sampling.seed()),
        stop: parts.sampling.stop.clone(),
    };
    request.validate().map_err(ModelError::invalid)?;
    Ok(ChatPlan {
        request,
        options: ChatOptions {
            top_p: parts.sampling.top_p,
            top_k: parts.sampling.top_k,
            repetition_penalty: parts.sampling.repetition_penalty,
            format: parts.format,
            logprobs: parts.logprobs,
        },
    })
}

/// A completion (no chat template): `logprobs` alternatives per token, at most
/// [`MAX_COMPLETION_LOGPROBS`].
pub fn completion(
    prompt: Prompt,
    sampling: &Sampling,
    max_tokens: u32,
    logprobs: Option<u8>,
) -> Result<GenerateRequest, ModelError> {
    sampling.check()?;
    if max_tokens == 0 {
        return Err(invalid("max_tokens", "must be at least 1"));
    }
    if logprobs.is_some_and(|n| n > MAX_COMPLETION_LOGPROBS) {
        return Err(invalid(
            "logprobs",
            format!("must be at most {MAX_COMPLETION_LOGPROBS}"),
        ));
    }
    Ok(GenerateRequest {
        prompt,
        sampling: sampling.engine(),
        max_tokens,
        stop: sampling.stop.clone(),
        constraint: None,
        logprobs,
    })
}

/// The texts of an embeddings request: 1 to [`MAX_EMBEDDING_INPUTS`], none empty.
pub fn embedding_inputs(texts: &[String]) -> Result<(), ModelError> {
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(invalid(
            "input",
            format!("must hold 1 to {MAX_EMBEDDING_INPUTS} texts"),
        ));
    }
    if texts.iter().any(String::is_empty) {
        return Err(invalid("input", "an input is empty"));
    }
    Ok(())
}

/// A chat turn's finish reason, as OpenAI names it.
pub fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::Other(_) => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
    }
}

/// A completion's finish reason, as OpenAI names it.
pub fn generation_finish(finish: aura_infer::Finish) -> &'static str {
    match finish {
        aura_infer::Finish::Length => "length",
        aura_infer::Finish::Stop | aura_infer::Finish::Cancelled => "stop",
    }
}

/// The system fingerprint: the engine's runtime fingerprint (version, device, weight
/// format, kernel); the same fingerprint, package, input and seed give the same tokens.
pub fn fingerprint(served: &Served) -> String {
    let r = served.runtime();
    format!(
        "fp_aura_{}_{}_{}_{}",
        r.version.replace(' ', "-"),
        r.device,
        r.dtype,
        r.kernel
    )
}

/// A tool call's arguments as JSON text.
pub fn arguments_text(call: &ToolCall) -> String {
    match &call.arguments {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
