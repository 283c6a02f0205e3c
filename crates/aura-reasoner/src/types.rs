//! The vocabulary every reasoner speaks: the request the kernel builds, the turn a
//! reasoner answers with, and the deltas it streams while it works.
//!
//! These are boundary types. A [`Turn`] is recorded in the ledger and replayed from it,
//! so its JSON form is part of Aura's record format: fields are only ever added (with
//! defaults), never renamed or removed, and `tests/turn_json.rs` pins the form.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering the assistant's call with the same id.
    Tool,
}

/// One message of the conversation the reasoner sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// The text. For a tool message, the tool's result as the model should see it.
    #[serde(default)]
    pub content: String,
    /// The tool calls an assistant message made (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers (tool messages only, and required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// An optional participant name (OpenAI's `name`; ignored by Anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Message::plain(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Message::plain(Role::User, content)
    }

    /// An assistant message, as a previous [`Turn`] recorded it.
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Message {
            tool_calls,
            ..Message::plain(Role::Assistant, content)
        }
    }

    /// A tool's result, answering the call with id `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Message::plain(Role::Tool, content)
        }
    }

    fn plain(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

impl From<&Turn> for Message {
    /// The assistant message that puts a turn back into the conversation.
    fn from(turn: &Turn) -> Self {
        Message::assistant(turn.content.clone(), turn.tool_calls.clone())
    }
}

/// A tool the reasoner may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments (an object schema).
    pub parameters: serde_json::Value,
}

/// A tool call the reasoner proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; the tool message answering it carries the same id.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them, parsed. When the model's text is not valid
    /// JSON, this is that text as a JSON string: nothing is lost, and validation against
    /// the tool's schema (which expects an object) refuses it with a message the model
    /// can act on.
    pub arguments: serde_json::Value,
}

/// Whether and which tools the reasoner must call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls, even though tools are described.
    None,
    /// At least one tool call.
    Required,
    /// A call to this tool.
    Tool(String),
}

/// What the kernel asks a reasoner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// The most tokens to generate; the provider's configured default when `None`.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Sampling seed, for providers that honour one (OpenAI-compatible servers and the
    /// local model do; Anthropic has none and ignores it).
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Vec<String>,
}

impl Request {
    pub fn new(messages: Vec<Message>) -> Self {
        Request {
            messages,
            ..Request::default()
        }
    }

    /// Checks what every provider needs of a request, so that a malformed one fails here
    /// with a clear reason instead of as a provider's 400.
    pub fn validate(&self) -> Result<(), String> {
        if self.messages.is_empty() {
            return Err("the request has no messages".into());
        }
        for (i, m) in self.messages.iter().enumerate() {
            match m.role {
                Role::Tool if m.tool_call_id.as_deref().is_none_or(str::is_empty) => {
                    return Err(format!(
                        "message {i} is a tool result without a tool_call_id"
                    ));
                }
                Role::Assistant => {}
                _ if !m.tool_calls.is_empty() => {
                    return Err(format!(
                        "message {i} carries tool calls but only assistant messages may"
                    ));
                }
                _ => {}
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tools {
            if t.name.is_empty() {
                return Err("a tool has an empty name".into());
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("tool `{}` is described twice", t.name));
            }
        }
        match &self.tool_choice {
            ToolChoice::Required if self.tools.is_empty() => {
                Err("tool_choice is `required` but no tools are offered".into())
            }
            ToolChoice::Tool(name) if !names.contains(name.as_str()) => Err(format!(
                "tool_choice names `{name}`, which is not among the offered tools"
            )),
            _ => Ok(()),
        }
    }
}

/// Why the reasoner stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// A natural end, or a stop sequence.
    Stop,
    /// The token limit.
    Length,
    /// The turn ends in tool calls the kernel should run.
    ToolCalls,
    /// The provider withheld or cut the content.
    ContentFilter,
    /// Anything else, as the provider named it.
    Other(String),
}

/// Tokens used by one turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens read: the prompt, including any the provider served from its cache.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Whether the provider reported these figures. A server that reports no usage
    /// yields zeros and `false`, so budgets can tell "free" from "unknown".
    #[serde(default)]
    pub reported: bool,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A reasoner's complete answer to one request: what the kernel records and replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The text the model wrote (may be empty when it only calls tools).
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    pub finish: Finish,
    pub usage: Usage,
    /// The provider kind (`openai`, `anthropic`, `scripted`, later `local`).
    pub provider: String,
    /// The model that answered, as the provider reported it (else as configured).
    pub model: String,
    /// The provider's id for the response, where it gives one, to match its own logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// How many attempts the turn took (1 when the first succeeded).
    pub attempts: u32,
}

/// What a reasoner streams while a turn is in progress. The finished [`Turn`] is the
/// authority; deltas are for watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delta {
    /// More text.
    Text(String),
    /// The model began a tool call.
    ToolCallStarted { id: String, name: String },
    /// More of a tool call's arguments (JSON text, in pieces).
    ToolCallArguments { id: String, fragment: String },
    /// The attempt that streamed the deltas so far failed and attempt number `attempt`
    /// begins: watchers should discard what they showed of this turn.
    Reset { attempt: u32 },
}

/// What a reasoner is, for display and for the record. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// The provider kind, as in [`Turn::provider`].
    pub provider: String,
    pub model: String,
    /// The endpoint, for HTTP providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}
