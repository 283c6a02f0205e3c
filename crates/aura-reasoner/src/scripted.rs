//! The scripted reasoner: replays a file of turns in order, for tests and reproducible
//! demos. It is never a default; a mission gets it only by naming it.
//!
//! The file is JSON lines (one turn per line; blank lines are skipped) or one JSON
//! array of turns. A turn may carry `expect`, assertions about the request it answers,
//! so that a demo fails loudly at the first step where the mission has gone somewhere
//! the script did not foresee. `docs/reasoners.md` describes the format with examples.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::wire::{MAX_TOOL_CALLS, emit_turn};
use crate::{
    Delta, DeltaSink, Error, Finish, ProviderInfo, Reasoner, Request, Role, ToolCall, Turn, Usage,
};

/// The provider name recorded in turns.
pub const PROVIDER: &str = "scripted";

/// The largest script file read (a script is written by hand or by a test).
pub const MAX_SCRIPT_BYTES: u64 = 16 << 20;

/// One turn of a script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedTurn {
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ScriptedToolCall>,
    /// Defaults to `tool_calls` when the turn calls tools, else `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// Reported usage; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ScriptedUsage>,
    /// The model to record; `scripted` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Milliseconds to think before answering, as a real model would (tests use it to
    /// have missions in flight when a node fails); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedToolCall {
    /// Defaults to `call_<turn>_<n>` (both counted from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What a scripted turn asserts about the request it answers. Every field given must
/// hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The last message is a tool result containing this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tool_result_contains: Option<String>,
    /// The last user message contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_user_contains: Option<String>,
    /// A system message contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_contains: Option<String>,
    /// These tools are among those offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools_offered: Vec<String>,
    /// The request holds exactly this many messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<usize>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl Expect {
    /// Checks the request; on failure, says what was expected and what was found.
    fn check(&self, request: &Request) -> Result<(), (String, String)> {
        let last = request.messages.last();
        if let Some(needle) = &self.last_tool_result_contains {
            let expectation = format!("the last message to be a tool result containing {needle:?}");
            match last {
                Some(m) if m.role == Role::Tool => {
                    if !m.content.contains(needle.as_str()) {
                        return Err((expectation, format!("it reads {:?}", clip(&m.content))));
                    }
                }
                Some(m) => return Err((expectation, format!("it is a {:?} message", m.role))),
                None => return Err((expectation, "there are no messages".into())),
            }
        }
        if let Some(needle) = &self.last_user_contains {
            let expectation = format!("the last user message to contain {needle:?}");
            match request.messages.iter().rev().find(|m| m.role == Role::User) {
                Some(m) if m.content.contains(needle.as_str()) => {}
                Some(m) => return Err((expectation, format!("it reads {:?}", clip(&m.content)))),
                None => return Err((expectation, "there is no user message".into())),
            }
        }
        if let Some(needle) = &self.system_contains {
            let found = request
                .messages
                .iter()
                .any(|m| m.role == Role::System && m.content.contains(needle.as_str()));
            if !found {
                return Err((
                    format!("a system message containing {needle:?}"),
                    "none does".into(),
                ));
            }
        }
        for name in &self.tools_offered {
            if !request.tools.iter().any(|t| &t.name == name) {
                let offered: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
                return Err((
                    format!("tool {name:?} to be offered"),
                    format!("the tools offered are {offered:?}"),
                ));
            }
        }
        if let Some(n) = self.messages
            && request.messages.len() != n
        {
            return Err((
                format!("{n} messages"),
                format!("the request holds {}", request.messages.len()),
            ));
        }
        Ok(())
    }
}

fn clip(s: &str) -> String {
    crate::wire::excerpt(s, 120)
}

/// See the module documentation.
#[derive(Debug)]
pub struct Scripted {
    path: PathBuf,
    turns: Vec<ScriptedTurn>,
    next: AtomicUsize,
}

impl Scripted {
    /// Reads a script file.
    pub fn load(path: &Path) -> Result<Scripted, Error> {
        let bad = |detail: String| Error::Script {
            path: path.to_owned(),
            detail,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        if meta.len() > MAX_SCRIPT_BYTES {
            return Err(bad(format!("it is larger than {MAX_SCRIPT_BYTES} bytes")));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        Scripted::parse(path, &text)
    }

    /// Parses a script's text; `path` names it in errors and in [`Reasoner::describe`].
    pub fn parse(path: &Path, text: &str) -> Result<Scripted, Error> {
        let turns = parse_turns(text).map_err(|detail| Error::Script {
            path: path.to_owned(),
            detail,
        })?;
        Ok(Scripted::from_turns(path, turns))
    }

    /// A script held in memory.
    pub fn from_turns(path: &Path, turns: Vec<ScriptedTurn>) -> Scripted {
        Scripted {
            path: path.to_owned(),
            turns,
            next: AtomicUsize::new(0),
        }
    }

    /// How many turns have been answered (or attempted).
    pub fn position(&self) -> usize {
        self.next.load(Ordering::SeqCst).min(self.turns.len())
    }

    pub fn len(&self) -> usize {
        self.turns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

fn parse_turns(text: &str) -> Result<Vec<ScriptedTurn>, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let turns: Vec<ScriptedTurn> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| format!("not a JSON array of turns: {e}"))?
    } else {
        let mut turns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start_matches('\u{feff}').trim();
            if line.is_empty() {
                continue;
            }
            let turn = serde_json::from_str(line).map_err(|e| {
                format!(
                    "line {}: {}",
                    i + 1,
                    e.to_string().split(" at line ").next().unwrap_or_default()
                )
            })?;
            turns.push(turn);
        }
        turns
    };
    if turns.is_empty() {
        return Err("it holds no turns".into());
    }
    for (i, turn) in turns.iter().enumerate() {
        if turn.tool_calls.len() > MAX_TOOL_CALLS {
            return Err(format!(
                "turn {} has more than {MAX_TOOL_CALLS} tool calls",
                i + 1
            ));
        }
        if let Some(call) = turn.tool_calls.iter().find(|c| c.name.is_empty()) {
            return Err(format!(
                "turn {} has a tool call without a name{}",
                i + 1,
                call.id
                    .as_deref()
                    .map(|id| format!(" ({id})"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(turns)
}

/// Splits text into word-sized pieces (each word with the spaces after it), so that a
/// scripted turn streams like a real one.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let word_end = rest
            .char_indices()
            .find(|(i, c)| *i > 0 && c.is_whitespace())
            .map_or(rest.len(), |(i, _)| i);
        let end = rest[word_end..]
            .char_indices()
            .find(|(_, c)| !c.is_whitespace())
            .map_or(rest.len(), |(i, _)| word_end + i);
        let (piece, after) = rest.split_at(end);
        rest = after;
        Some(piece)
    })
}

#[async_trait]
impl Reasoner for Scripted {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            provider: PROVIDER.into(),
            model: format!("script {}", self.path.display()),
            base_url: None,
        }
    }

    async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>) -> Result<Turn, Error> {
        request.validate().map_err(Error::InvalidRequest)?;
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let Some(scripted) = self.turns.get(index) else {
            return Err(Error::ScriptExhausted {
                path: self.path.clone(),
                turns: self.turns.len(),
                request: index + 1,
            });
        };
        if let Some(ms) = scripted.delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if let Some(expect) = &scripted.expect {
            expect
                .check(request)
                .map_err(|(expectation, found)| Error::ScriptMismatch {
                    turn: index + 1,
                    expectation,
                    found,
                })?;
        }
        let tool_calls: Vec<ToolCall> = scripted
            .tool_calls
            .iter()
            .enumerate()
            .map(|(n, c)| ToolCall {
                id: c
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("call_{}_{}", index + 1, n + 1)),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            })
            .collect();
        let finish = scripted.finish.clone().unwrap_or(if tool_calls.is_empty() {
            Finish::Stop
        } else {
            Finish::ToolCalls
        });
        let turn = Turn {
            content: scripted.content.clone(),
            tool_calls,
            finish,
            usage: scripted.usage.map_or(Usage::default(), |u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                reported: true,
            }),
            provider: PROVIDER.into(),
            model: scripted.model.clone().unwrap_or_else(|| PROVIDER.into()),
            response_id: None,
            attempts: 1,
        };
        if let Some(sink) = deltas {
            for piece in pieces(&turn.content) {
                sink(Delta::Text(piece.to_owned()));
            }
            let calls_only = Turn {
                content: String::new(),
                ..turn.clone()
            };
            emit_turn(&calls_only, &mut |d| sink(d));
        }
        Ok(turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_streams_in_word_pieces_that_add_up() {
        for text in [
            "",
            "one",
            "two words",
            "  lead and trail  ",
            "a\n\nb\tc",
            "héllo wörld",
        ] {
            let got: Vec<&str> = pieces(text).collect();
            assert_eq!(got.concat(), text);
            assert!(got.iter().all(|p| !p.is_empty()));
        }
        assert_eq!(pieces("two words").collect::<Vec<_>>(), ["two ", "words"]);
    }

    fn check(text: &str, expect: &str) {
        let err = Scripted::parse(Path::new("s.jsonl"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expect),
            "{text:?}: expected {expect:?} in {err:?}"
        );
        assert!(err.starts_with("invalid script s.jsonl: "), "{err}");
        assert!(!err.contains('\n'), "{err:?}");
    }

    #[test]
    fn format_errors_name_the_line_and_the_fault() {
        check("", "holds no turns");
        check("\n  \n", "holds no turns");
        check("[]", "holds no turns");
        check(
            "{\"content\":\"a\"}\n{\"contnet\":\"b\"}",
            "line 2: unknown field `contnet`",
        );
        check("{\"content\":\"a\"\n", "line 1: EOF while parsing");
        check(
            "[{\"content\":1}]",
            "not a JSON array of turns: invalid type",
        );
        check(
            "{\"tool_calls\":[{\"arguments\":{}}]}",
            "missing field `name`",
        );
        check(
            "{\"tool_calls\":[{\"name\":\"\"}]}",
            "turn 1 has a tool call without a name",
        );
        check("{\"finish\":\"done\"}", "line 1: unknown variant `done`");
        check(
            "{\"expect\":{\"last_tool_result\":\"x\"}}",
            "unknown field `last_tool_result`",
        );
        check(
            "{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":0}}",
            "line 1: invalid value",
        );
        check("not json", "line 1: expected");
    }

    #[test]
    fn both_forms_parse_to_the_same_turns() {
        let lines = "{\"content\":\"a\"}\n\n{\"tool_calls\":[{\"name\":\"f\"}]}\n";
        let array = "[{\"content\":\"a\"}, {\"tool_calls\":[{\"name\":\"f\"}]}]";
        let a = parse_turns(lines).unwrap();
        assert_eq!(a, parse_turns(array).unwrap());
        assert_eq!(a[1].tool_calls[0].arguments, serde_json::json!({}));
    }
}
