//! [`Reasoner`] over `aura-reasoner`'s providers, and the node's set of configured
//! reasoners.
//!
//! Tool names: Aura's tools are named with dots (`fs.read`), but OpenAI and Anthropic accept
//! only `[a-zA-Z0-9_-]` in function names. Each request maps every offered tool to a wire
//! name (dots become underscores, with a suffix if that collides), and the calls in the
//! answer are mapped back. A name the model invents that maps to nothing is passed through
//! as written, and the kernel refuses it as not among the mission's tools.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aura_kernel::{Message, Role, ToolCall, Turn};
use aura_reasoner as r;

use crate::ports::{ReasonRequest, Reasoner, ReasonerError, Reasoners, ToolSpec};

/// Maps Aura's tool names to names every provider accepts, and back.
#[derive(Debug, Default)]
struct WireNames {
    to_wire: BTreeMap<String, String>,
    from_wire: BTreeMap<String, String>,
}

impl WireNames {
    fn new(tools: &[ToolSpec]) -> Self {
        let mut names = WireNames::default();
        for t in tools {
            let base: String = t
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let mut wire = base.clone();
            let mut n = 2;
            while names.from_wire.contains_key(&wire) {
                wire = format!("{base}_{n}");
                n += 1;
            }
            names.to_wire.insert(t.name.clone(), wire.clone());
            names.from_wire.insert(wire, t.name.clone());
        }
        names
    }

    fn wire(&self, name: &str) -> String {
        self.to_wire
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    fn aura(&self, wire: &str) -> String {
        self.from_wire
            .get(wire)
            .cloned()
            .unwrap_or_else(|| wire.to_owned())
    }
}

fn message(m: &Message, names: &WireNames) -> r::Message {
    r::Message {
        role: match m.role {
            Role::System => r::Role::System,
            Role::User => r::Role::User,
            Role::Assistant => r::Role::Assistant,
            Role::Tool => r::Role::Tool,
        },
        content: m.content.clone(),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| r::ToolCall {
                id: c.id.clone(),
                name: names.wire(&c.name),
                arguments: c.arguments.clone(),
            })
            .collect(),
        tool_call_id: m.tool_call_id.clone(),
        name: None,
    }
}

fn finish(f: &r::Finish) -> String {
    match f {
        r::Finish::Stop => "stop".into(),
        r::Finish::Length => "length".into(),
        r::Finish::ToolCalls => "tool_calls".into(),
        r::Finish::ContentFilter => "content_filter".into(),
        r::Finish::Other(o) => o.clone(),
    }
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct ProviderReasoner {
    inner: Arc<dyn r::Reasoner>,
}

impl ProviderReasoner {
    pub fn new(inner: Arc<dyn r::Reasoner>) -> Self {
        ProviderReasoner { inner }
    }
}

#[async_trait]
impl Reasoner for ProviderReasoner {
    async fn turn(
        &self,
        req: &ReasonRequest,
        deltas: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> Result<Turn, ReasonerError> {
        let names = WireNames::new(&req.tools);
        let request = r::Request {
            messages: req.messages.iter().map(|m| message(m, &names)).collect(),
            tools: req
                .tools
                .iter()
                .map(|t| r::ToolSpec {
                    name: names.wire(&t.name),
                    description: t.description.clone(),
                    parameters: t.parameters.clone(),
                })
                .collect(),
            // A mission acts only through tools and ends only through `mission.finish`,
            // so every turn must call one; a reasoner left to choose (small local models
            // especially) tends to answer in prose and make no progress.
            tool_choice: if req.tools.is_empty() {
                r::ToolChoice::Auto
            } else {
                r::ToolChoice::Required
            },
            max_tokens: None,
            temperature: None,
            seed: Some(req.seed),
            stop: Vec::new(),
        };
        let sink = |d: r::Delta| match d {
            r::Delta::Text(t) => deltas(&t),
            r::Delta::Reset { attempt } => deltas(&format!(
                "\n[the provider is retrying: attempt {attempt}]\n"
            )),
            _ => {}
        };
        let turn = self.inner.turn(&request, Some(&sink)).await?;
        Ok(Turn {
            content: turn.content,
            tool_calls: turn
                .tool_calls
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: names.aura(&c.name),
                    arguments: c.arguments,
                })
                .collect(),
            finish: finish(&turn.finish),
            prompt_tokens: turn.usage.prompt_tokens,
            completion_tokens: turn.usage.completion_tokens,
            provider: turn.provider,
            model: turn.model,
        })
    }
}

/// The reasoners a node has configured, by name, and which one is the default.
#[derive(Debug, Clone, Default)]
pub struct Configured {
    reasoners: BTreeMap<String, (Arc<dyn Reasoner>, String)>,
    default: Option<String>,
}

impl Configured {
    pub fn new() -> Self {
        Configured::default()
    }

    /// Adds a reasoner under `name`, described for people by `description`.
    pub fn add(&mut self, name: &str, reasoner: Arc<dyn Reasoner>, description: String) {
        self.reasoners
            .insert(name.to_owned(), (reasoner, description));
    }

    /// Makes `name` the default; it must have been added.
    pub fn set_default(&mut self, name: &str) -> bool {
        let known = self.reasoners.contains_key(name);
        if known {
            self.default = Some(name.to_owned());
        }
        known
    }

    pub fn names(&self) -> Vec<String> {
        self.reasoners.keys().cloned().collect()
    }
}

impl Reasoners for Configured {
    fn get(&self, name: &str) -> Option<Arc<dyn Reasoner>> {
        let name = if name.is_empty() {
            self.default.as_deref()?
        } else {
            name
        };
        self.reasoners.get(name).map(|(r, _)| r.clone())
    }

    fn describe_default(&self) -> String {
        match self
            .default
            .as_ref()
            .and_then(|d| self.reasoners.get(d).map(|(_, desc)| (d, desc)))
        {
            Some((name, desc)) => format!("{name} ({desc})"),
            None => "none configured".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_map_to_wire_names_and_back() {
        let spec = |n: &str| ToolSpec {
            name: n.into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        };
        let names = WireNames::new(&[spec("fs.read"), spec("fs_read"), spec("mission.finish")]);
        assert_eq!(names.wire("fs.read"), "fs_read");
        assert_eq!(names.wire("fs_read"), "fs_read_2");
        assert_eq!(names.aura("fs_read"), "fs.read");
        assert_eq!(names.aura("fs_read_2"), "fs_read");
        assert_eq!(names.aura("mission_finish"), "mission.finish");
        assert_eq!(names.aura("made_up"), "made_up");
    }

    /// Answers every turn with nothing and remembers the tool choice it was asked with.
    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<r::ToolChoice>>);

    #[async_trait]
    impl r::Reasoner for Recorder {
        fn describe(&self) -> r::ProviderInfo {
            r::ProviderInfo {
                provider: "test".into(),
                model: "recorder".into(),
                base_url: None,
            }
        }

        async fn turn(
            &self,
            request: &r::Request,
            _deltas: Option<&r::DeltaSink<'_>>,
        ) -> Result<r::Turn, r::Error> {
            self.0
                .lock()
                .map_err(|_| r::Error::Config("poisoned".into()))?
                .push(request.tool_choice.clone());
            Ok(r::Turn {
                content: String::new(),
                tool_calls: Vec::new(),
                finish: r::Finish::Stop,
                usage: r::Usage::default(),
                provider: "test".into(),
                model: "recorder".into(),
                response_id: None,
                attempts: 1,
            })
        }
    }

    #[tokio::test]
    async fn a_turn_with_tools_must_call_one() {
        let recorder = Arc::new(Recorder::default());
        let reasoner = ProviderReasoner::new(recorder.clone());
        let request = |tools: Vec<ToolSpec>| ReasonRequest {
            messages: [Message {
                role: Role::User,
                content: "go".into(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            }]
            .into_iter()
            .collect(),
            tools,
            seed: 1,
            turn: 0,
        };
        let finish = ToolSpec {
            name: "mission.finish".into(),
            description: String::new(),
            parameters: serde_json::json!({"type": "object"}),
        };
        let quiet = |_: &str| {};
        assert!(reasoner.turn(&request(vec![finish]), &quiet).await.is_ok());
        assert!(reasoner.turn(&request(vec![]), &quiet).await.is_ok());
        let seen = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(seen, vec![r::ToolChoice::Required, r::ToolChoice::Auto]);
    }
}
