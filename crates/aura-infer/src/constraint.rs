//! Constrained decoding, as a mask over tokens at every step: the output must be a JSON
//! object ([`Constraint::JsonObject`]).
//!
//! A character-level JSON recogniser (a pushdown automaton whose stack is a bit set, so a
//! state is a small `Copy` value) is run over each candidate token's text; tokens that
//! would make the output anything but a prefix of a JSON object are masked, special tokens
//! always are, and generation ends as soon as the object closes. The mask is a pure
//! function of the state, so constrained decoding is as deterministic as the rest.
//!
//! JSON-schema and tool-call constraints need a schema-driven grammar (llguidance or an
//! equivalent) that this version does not have; such requests are refused with a clear
//! error rather than answered unconstrained.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::{Constraint, Model};

/// Deepest nesting accepted (the stack is a 64-bit set).
const MAX_DEPTH: u8 = 64;
/// Whitespace characters allowed in a row: enough for formatting, few enough that a
/// small model cannot wander off into blank space.
const MAX_WHITESPACE_RUN: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Before the top-level object.
    Start,
    /// Expecting a value (after `:` or `,` in an array).
    Value,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    CommaOrEnd,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// Inside a string; `escape` counts what an escape still needs (1: the character
    /// after `\`, 2..=5: hex digits of `\u`).
    Str { key: bool, escape: u8 },
    /// Inside a number.
    Num(NumPart),
    /// Inside `true`, `false` or `null`: which word and how many letters matched.
    Word { word: u8, matched: u8 },
    /// The top-level object closed.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumPart {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl NumPart {
    fn can_end(self) -> bool {
        matches!(self, Self::Zero | Self::Int | Self::Frac | Self::Exp)
    }
}

const WORDS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// The recogniser's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JsonState {
    lex: Lex,
    /// Bit i set: container at depth i is an object (else an array).
    stack: u64,
    depth: u8,
    whitespace: u8,
}

impl JsonState {
    pub(crate) fn new() -> Self {
        Self {
            lex: Lex::Start,
            stack: 0,
            depth: 0,
            whitespace: 0,
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.lex == Lex::Done
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.stack & (1 << (self.depth - 1)) != 0
    }

    fn push(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        if object {
            self.stack |= 1 << self.depth;
        } else {
            self.stack &= !(1 << self.depth);
        }
        self.depth += 1;
        self.lex = if object {
            Lex::KeyOrEnd
        } else {
            Lex::ValueOrEnd
        };
        true
    }

    /// A value just ended.
    fn value_done(&mut self) {
        self.lex = if self.depth == 0 {
            Lex::Done
        } else {
            Lex::CommaOrEnd
        };
    }

    fn close(&mut self, object: bool) -> bool {
        if self.depth == 0 || self.in_object() != object {
            return false;
        }
        self.depth -= 1;
        self.value_done();
        true
    }

    fn start_value(&mut self, c: char) -> bool {
        match c {
            '{' => self.push(true),
            '[' => self.push(false),
            '"' => {
                self.lex = Lex::Str {
                    key: false,
                    escape: 0,
                };
                true
            }
            '-' => {
                self.lex = Lex::Num(NumPart::Minus);
                true
            }
            '0' => {
                self.lex = Lex::Num(NumPart::Zero);
                true
            }
            '1'..='9' => {
                self.lex = Lex::Num(NumPart::Int);
                true
            }
            't' | 'f' | 'n' => {
                let word = match c {
                    't' => 0,
                    'f' => 1,
                    _ => 2,
                };
                self.lex = Lex::Word { word, matched: 1 };
                true
            }
            _ => false,
        }
    }

    /// Feeds one character; false if the text so far can no longer be a JSON object.
    pub(crate) fn feed(&mut self, c: char) -> bool {
        let is_ws = matches!(c, ' ' | '\t' | '\n' | '\r');
        let structural = !matches!(self.lex, Lex::Str { .. } | Lex::Num(_) | Lex::Word { .. });
        if is_ws && structural {
            if matches!(self.lex, Lex::Start | Lex::Done) {
                return false;
            }
            self.whitespace += 1;
            return self.whitespace <= MAX_WHITESPACE_RUN;
        }
        self.whitespace = 0;
        match self.lex {
            Lex::Done => false,
            Lex::Start => c == '{' && self.push(true),
            Lex::Value => self.start_value(c),
            Lex::ValueOrEnd => {
                if c == ']' {
                    self.close(false)
                } else {
                    self.start_value(c)
                }
            }
            Lex::KeyOrEnd | Lex::Key => {
                if c == '"' {
                    self.lex = Lex::Str {
                        key: true,
                        escape: 0,
                    };
                    true
                } else {
                    c == '}' && self.lex == Lex::KeyOrEnd && self.close(true)
                }
            }
            Lex::Colon => {
                if c == ':' {
                    self.lex = Lex::Value;
                    true
                } else {
                    false
                }
            }
            Lex::CommaOrEnd => match c {
                ',' => {
                    self.lex = if self.in_object() {
                        Lex::Key
                    } else {
                        Lex::Value
                    };
                    true
                }
                '}' => self.close(true),
                ']' => self.close(false),
                _ => false,
            },
            Lex::Str { key, escape } => self.string(c, key, escape),
            Lex::Num(part) => self.number(c, part),
            Lex::Word { word, matched } => {
                let w = WORDS[usize::from(word)];
                if w.get(usize::from(matched)) == Some(&(c as u8)) && c.is_ascii() {
                    if usize::from(matched) + 1 == w.len() {
                        self.value_done();
                    } else {
                        self.lex = Lex::Word {
                            word,
                            matched: matched + 1,
                        };
                    }
                    true
                } else {
                    false
                }
            }
        }
    }

    fn string(&mut self, c: char, key: bool, escape: u8) -> bool {
        match escape {
            0 => match c {
                '"' => {
                    if key {
                        self.lex = Lex::Colon;
                    } else {
                        self.value_done();
                    }
                    true
                }
                '\\' => {
                    self.lex = Lex::Str { key, escape: 1 };
                    true
                }
                c if (c as u32) < 0x20 => false,
                _ => true,
            },
            1 => {
                let next = match c {
                    '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => 0,
                    'u' => 5,
                    _ => return false,
                };
                self.lex = Lex::Str {
                    key,
                    escape: if next == 5 { 5 } else { 0 },
                };
                true
            }
            n => {
                if !c.is_ascii_hexdigit() {
                    return false;
                }
                self.lex = Lex::Str {
                    key,
                    escape: if n == 2 { 0 } else { n - 1 },
                };
                true
            }
        }
    }

    fn number(&mut self, c: char, part: NumPart) -> bool {
        use NumPart::*;
        let next = match (part, c) {
            (Minus, '0') => Some(Zero),
            (Minus, '1'..='9') | (Int, '0'..='9') => Some(Int),
            (Zero | Int, '.') => Some(Dot),
            (Dot | Frac, '0'..='9') => Some(Frac),
            (Zero | Int | Frac, 'e' | 'E') => Some(E),
            (E, '+' | '-') => Some(ESign),
            (E | ESign | Exp, '0'..='9') => Some(Exp),
            _ => None,
        };
        match next {
            Some(p) => {
                self.lex = Lex::Num(p);
                true
            }
            // The number ended; the character belongs to what follows it.
            None if part.can_end() => {
                self.value_done();
                self.feed(c)
            }
            None => false,
        }
    }
}

/// The per-request state of a constraint.
pub(crate) struct Matcher {
    state: JsonState,
    /// Each token's text, or None for tokens never allowed (special tokens, tokens that
    /// are not whole UTF-8 text on their own).
    texts: Arc<Vec<Option<String>>>,
}

impl Matcher {
    pub(crate) fn new(model: &Model, constraint: &Constraint) -> Result<Self> {
        match constraint {
            Constraint::JsonObject => Ok(Self {
                state: JsonState::new(),
                texts: model.token_texts(),
            }),
            Constraint::JsonObjectAfter(prefix) => {
                let mut state = JsonState::new();
                if !prefix.chars().all(|c| state.feed(c)) || state.is_complete() {
                    return Err(Error::Constraint(format!(
                        "`{prefix}` does not begin an unfinished JSON object"
                    )));
                }
                Ok(Self {
                    state,
                    texts: model.token_texts(),
                })
            }
            Constraint::JsonSchema(_) => Err(Error::Constraint(
                "json_schema constraints are not supported by this engine yet; use json_object"
                    .into(),
            )),
            Constraint::ToolCall { .. } => Err(Error::Constraint(
                "tool-call constraints are not supported by this engine yet".into(),
            )),
        }
    }

    /// Sets the logits of disallowed tokens to -inf.
    pub(crate) fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let mut any = false;
        for (id, l) in logits.iter_mut().enumerate() {
            let ok = match self.texts.get(id).and_then(Option::as_ref) {
                Some(text) if !text.is_empty() => {
                    let mut s = self.state;
                    text.chars().all(|c| s.feed(c))
                }
                _ => false,
            };
            if ok {
                any |= *l > f32::NEG_INFINITY;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if any {
            Ok(())
        } else {
            Err(Error::Constraint(
                "no token can continue the JSON output".into(),
            ))
        }
    }

    /// Accepts a token; returns true when the constrained output is complete.
    pub(crate) fn advance(&mut self, token: u32) -> Result<bool> {
        let text = self
            .texts
            .get(token as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::Constraint(format!("token {token} is not allowed")))?;
        for c in text.chars() {
            if !self.state.feed(c) {
                return Err(Error::Constraint(format!(
                    "token {token} breaks the JSON output"
                )));
            }
        }
        Ok(self.state.is_complete())
    }

    /// Whether ending now would leave the output incomplete.
    pub(crate) fn forbids_stop(&self) -> bool {
        !self.state.is_complete()
    }
}

#[cfg(test)]
mod tests {
    use super::JsonState;

    fn accepts(text: &str) -> (bool, bool) {
        let mut s = JsonState::new();
        let ok = text.chars().all(|c| s.feed(c));
        (ok, s.is_complete())
    }

    #[test]
    fn recognises_json_objects_and_their_prefixes() {
        // (text, is a valid prefix, is complete)
        let cases = [
            (r#"{}"#, true, true),
            (r#"{"a": 1}"#, true, true),
            (
                r#"{"a": [1, 2.5, -3e+2, true, false, null, "x\n\u00e9"], "b": {"c": {}}}"#,
                true,
                true,
            ),
            (r#"{"a": "#, true, false),
            (r#"{"a": 12"#, true, false),
            (r#"{"a": tr"#, true, false),
            (r#"{"a"}"#, false, false),
            (r#"{"a": 01}"#, false, false),
            (r#"{"a": 1,}"#, false, false),
            (r#"[1]"#, false, false),
            (r#" {}"#, false, false),
            (r#"{} "#, false, true),
            (r#"{"a": "x" }"#, true, true),
            (r#"{"a":   1}"#, false, false),
            (r#"{"a": "\q"}"#, false, false),
            (r#"{"a": [}"#, false, false),
            ("{\"a\": \"tab\there\"}", false, false),
            (r#"{"é": "ünïcode"}"#, true, true),
        ];
        for (text, ok, done) in cases {
            assert_eq!(accepts(text), (ok, done), "{text}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{{\"a\": {}", "[".repeat(70));
        assert!(!accepts(&deep).0);
    }
}
