//! Chat templates: the model's own Jinja template (from GGUF `tokenizer.chat_template` or
//! tokenizer_config.json), rendered with minijinja and Python-compatible string methods.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One message of a conversation, in the shape chat templates expect.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Tool calls the assistant made (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Which call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's name, for `tool` messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with a role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// A tool the model may call: a name, a description and a JSON schema of its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// The function name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A call of a tool, as an assistant message records it (OpenAI's shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its arguments (a JSON string).
    pub function: ToolCallFunction,
}

/// The function part of a [`ToolCall`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCallFunction {
    /// The tool's name.
    pub name: String,
    /// The arguments, as a JSON string.
    pub arguments: String,
}

/// A compiled chat template.
pub(crate) struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
    /// Whether the template reads the `tools` variable at all. Templates that do not
    /// (SmolLM2's plain ChatML) drop tool descriptions silently, so callers describe the
    /// tools in the system message themselves.
    handles_tools: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

impl ChatTemplate {
    pub(crate) fn new(source: &str, bos: String, eos: String) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| Error::Template(format!("cannot compile the model's template: {e}")))?;
        let handles_tools = source.contains("tools");
        Ok(Self {
            env,
            bos,
            eos,
            handles_tools,
        })
    }

    pub(crate) fn handles_tools(&self) -> bool {
        self.handles_tools
    }

    pub(crate) fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolDef],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        let tools: Vec<serde_json::Value> = tools
            .iter()
            .map(|t| serde_json::json!({"type": "function", "function": t}))
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            tools => if tools.is_empty() { None } else { Some(tools) },
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        tmpl.render(ctx)
            .map_err(|e| Error::Template(format!("rendering failed: {e}")))
    }
}
