//! Generation: a request (prompt, sampling, limits, stop sequences, constraint) in, tokens
//! and text out, streamed through a callback whose concatenated text always equals the
//! final text.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::chat::ToolDef;
use crate::error::{Error, Result};
use crate::sampling::{Sampler, Sampling, log_softmax};
use crate::{Model, Session};

/// Prompt tokens are fed in chunks of at most this many, which bounds the memory of one
/// forward pass; chunking does not change results.
const PREFILL_CHUNK: usize = 256;

/// What to continue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Text, tokenized with special tokens (e.g. a rendered chat template).
    Text(String),
    /// Token ids as they are.
    Tokens(Vec<u32>),
}

impl Default for Prompt {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

/// A constraint on the output, applied as a mask over tokens at every step; generation
/// ends as soon as the value is complete. Schemas are compiled when the request starts:
/// an invalid schema, or one using a keyword constrained decoding does not enforce, is an
/// [`Error::Constraint`](crate::Error::Constraint) then (see the constraint module's docs
/// for the supported subset; `pattern` and `format` are accepted but not enforced).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// The rest of a JSON object whose beginning (this text) is already written: the
    /// output plus this prefix is one JSON object. A prefix that cannot begin one is an
    /// error.
    JsonObjectAfter(String),
    /// One JSON value valid against the schema (OpenAI's structured-output subset).
    JsonSchema(serde_json::Value),
    /// The rest of a value whose beginning is already written: `prefix` plus the output
    /// is one JSON value valid against `schema`. A prefix that cannot begin one, or that
    /// is already complete, is an error.
    JsonSchemaAfter {
        /// The JSON schema.
        schema: serde_json::Value,
        /// The text already written.
        prefix: String,
    },
    /// One call of one of the tools: `{"name": ..., "arguments": {...}}` with the name one
    /// of the tools' and the arguments valid against that tool's parameters schema (a
    /// null schema allows any object). `required == false`, where the model may instead
    /// answer in plain text, is refused with an error.
    ToolCall {
        /// The tools.
        tools: Vec<ToolDef>,
        /// Whether a call is required.
        required: bool,
    },
}

impl Constraint {
    /// Checks the constraint without a model: compiles its schema or tools and reads its
    /// prefix, giving the error [`Model::generate`] would give, so that an API can refuse
    /// a request before it is queued.
    pub fn check(&self) -> Result<()> {
        crate::constraint::recogniser(self).map(drop)
    }
}

/// A generation request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// How to choose tokens.
    pub sampling: Sampling,
    /// The most tokens to generate.
    pub max_tokens: u32,
    /// Strings that end generation; the text stops before the first one found.
    pub stop: Vec<String>,
    /// Constrained decoding.
    pub constraint: Option<Constraint>,
    /// Return log-probabilities of each chosen token and of the `n` most likely ones.
    pub logprobs: Option<u8>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: Prompt::default(),
            sampling: Sampling::default(),
            max_tokens: 256,
            stop: Vec::new(),
            constraint: None,
            logprobs: None,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// An end-of-sequence token or a stop sequence (or the constraint completed).
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// The callback asked to stop.
    Cancelled,
}

/// Stops generations from outside them, whoever holds the callback: checked before each
/// chunk of the prompt and before each token, so a cancelled generation ends within one
/// forward pass ([`Finish::Cancelled`]). Clones share the flag; [`Cancel::child`] makes a
/// flag of its own that also obeys this one (one request's under a whole node's).
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    own: Arc<AtomicBool>,
    above: Vec<Arc<AtomicBool>>,
}

impl Cancel {
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Cancels this flag's generations, and its children's.
    pub fn cancel(&self) {
        self.own.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.own.load(Ordering::Acquire) || self.above.iter().any(|f| f.load(Ordering::Acquire))
    }

    /// A flag cancelled by its own [`Cancel::cancel`] or by this one's.
    pub fn child(&self) -> Cancel {
        let mut above = self.above.clone();
        above.push(self.own.clone());
        Cancel {
            own: Arc::new(AtomicBool::new(false)),
            above,
        }
    }
}

/// A log-probability of one token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token id.
    pub token: u32,
    /// Its text.
    pub text: String,
    /// Its natural-log probability.
    pub logprob: f32,
}

/// The chosen token's log-probability and the most likely alternatives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprobs {
    /// The chosen token.
    pub token: u32,
    /// Its text.
    pub text: String,
    /// Its log-probability (under the model's distribution after the repetition penalty
    /// and the constraint's mask, before temperature).
    pub logprob: f32,
    /// The `n` most likely tokens, most likely first.
    pub top: Vec<TopLogprob>,
}

/// One streamed step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenEvent {
    /// The token generated at this step; None for the final event that releases text
    /// held back while it could have been the start of a stop sequence.
    pub token: Option<u32>,
    /// Text released by this step (possibly empty: text is held back while it could be
    /// part of a stop sequence or an unfinished UTF-8 character).
    pub text: String,
    /// Log-probabilities, when requested.
    pub logprobs: Option<TokenLogprobs>,
}

/// The result of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Generated token ids (without the end-of-sequence token).
    pub tokens: Vec<u32>,
    /// Their text, cut before a stop sequence.
    pub text: String,
    /// Why generation ended.
    pub finish: Finish,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens the model generated, the end-of-sequence token included.
    pub completion_tokens: u32,
    /// Per expert index: tokens it served, summed over layers, prompt included; empty for
    /// dense models.
    pub expert_tokens: Vec<u64>,
    /// Per generated token, when requested.
    pub logprobs: Option<Vec<TokenLogprobs>>,
    /// Prompt tokens whose state came from the model's prompt cache instead of being
    /// computed (0 on a miss). Every other field is the same with or without the cache;
    /// receipts do not carry this one, since the cache is not an input.
    #[serde(default)]
    pub cached_tokens: u32,
}

impl Model {
    /// Runs a request, calling `on_token` at each step; returning `Break` cancels.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<Generation> {
        self.generate_until(req, on_token, &Cancel::new())
    }

    /// [`Model::generate`], ending as [`Finish::Cancelled`] once `cancel` is cancelled
    /// (checked between chunks of the prompt and before each token).
    pub fn generate_until(
        &self,
        req: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> ControlFlow<()>,
        cancel: &Cancel,
    ) -> Result<Generation> {
        req.sampling.validate()?;
        if req.stop.iter().any(String::is_empty) {
            return Err(Error::InvalidRequest(
                "stop sequences must not be empty".into(),
            ));
        }
        let prompt = match &req.prompt {
            Prompt::Text(t) => self.tokenizer.encode(t, true)?,
            Prompt::Tokens(t) => t.clone(),
        };
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= self.info.vocab_size) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary"
            )));
        }
        if prompt.len() >= self.info.context_length {
            return Err(Error::InvalidRequest(format!(
                "the prompt has {} tokens; the context holds {}",
                prompt.len(),
                self.info.context_length
            )));
        }
        let mut constraint = match &req.constraint {
            Some(c) => Some(crate::constraint::Matcher::new(self, c)?),
            None => None,
        };
        let mut sampler = Sampler::new(req.sampling.clone());
        // The longest prefix an earlier sequence left in the prompt cache; only the rest
        // is computed, and every value that follows is the same as without it.
        let mut session: Session<'_> = self.session_for(&prompt);
        let cached = session.position();
        tracing::debug!(
            target: "aura_infer::prompt_cache",
            prompt_tokens = prompt.len(),
            cached_tokens = cached,
            "prefill"
        );
        let mut logits = Vec::new();
        for chunk in prompt[cached..].chunks(PREFILL_CHUNK) {
            if cancel.is_cancelled() {
                let expert_tokens = session.expert_tokens().to_vec();
                self.remember(session);
                return Ok(Generation {
                    tokens: Vec::new(),
                    text: String::new(),
                    finish: Finish::Cancelled,
                    prompt_tokens: prompt.len() as u32,
                    completion_tokens: 0,
                    expert_tokens,
                    logprobs: req.logprobs.map(|_| Vec::new()),
                    cached_tokens: cached as u32,
                });
            }
            logits = session.feed(chunk)?;
        }

        let mut context = prompt.clone();
        let mut out = Generation {
            tokens: Vec::new(),
            text: String::new(),
            finish: Finish::Length,
            prompt_tokens: prompt.len() as u32,
            completion_tokens: 0,
            expert_tokens: Vec::new(),
            logprobs: req.logprobs.map(|_| Vec::new()),
            cached_tokens: cached as u32,
        };
        let mut stream = TextStream::new(&req.stop);
        let mut seen = Vec::new();
        let eos = self.tokenizer.eos_ids();
        let mut steps = 0u32;
        loop {
            if steps >= req.max_tokens {
                out.finish = Finish::Length;
                break;
            }
            if cancel.is_cancelled() {
                out.finish = Finish::Cancelled;
                break;
            }
            sampler.penalize(&mut logits, &context, &mut seen);
            if let Some(m) = constraint.as_mut() {
                m.mask(&mut logits)?;
            }
            let token = sampler
                .choose(&logits)
                .ok_or_else(|| Error::Constraint("no token is allowed at this point".into()))?;
            steps += 1;
            out.completion_tokens += 1;
            let lp = req.logprobs.map(|n| self.logprobs(&logits, token, n));
            let constraint_done = match constraint.as_mut() {
                Some(m) => m.advance(token)?,
                None => false,
            };
            if eos.contains(&token) && !constraint.as_ref().is_some_and(|m| m.forbids_stop()) {
                out.finish = Finish::Stop;
                break;
            }
            out.tokens.push(token);
            context.push(token);
            let full = self.tokenizer.decode(&out.tokens)?;
            let (delta, stopped) = stream.push(&full);
            if let (Some(list), Some(lp)) = (out.logprobs.as_mut(), lp.clone()) {
                list.push(lp);
            }
            let event = TokenEvent {
                token: Some(token),
                text: delta,
                logprobs: lp,
            };
            if stopped {
                let _ = on_token(&event);
                out.finish = Finish::Stop;
                out.text = stream.emitted_text().to_owned();
                out.expert_tokens = session.expert_tokens().to_vec();
                self.remember(session);
                return Ok(out);
            }
            if on_token(&event).is_break() {
                out.finish = Finish::Cancelled;
                break;
            }
            if constraint_done {
                out.finish = Finish::Stop;
                break;
            }
            // Stop before feeding a token whose logits nobody would read.
            if steps >= req.max_tokens || session.position() >= self.info.context_length {
                out.finish = Finish::Length;
                break;
            }
            logits = session.feed(&[token])?;
        }
        let full = self.tokenizer.decode(&out.tokens)?;
        let rest = stream.finish(&full);
        if !rest.is_empty() && out.finish != Finish::Cancelled {
            // A cancelled stream's caller has stopped listening; the text is still whole
            // in the result.
            let _ = on_token(&TokenEvent {
                token: None,
                text: rest,
                logprobs: None,
            });
        }
        out.text = stream.emitted_text().to_owned();
        out.expert_tokens = session.expert_tokens().to_vec();
        // The prompt and the tokens fed after it: the next turn of a conversation begins
        // with them (as far as its re-rendered text tokenizes the same way).
        self.remember(session);
        Ok(out)
    }

    fn logprobs(&self, logits: &[f32], token: u32, n: u8) -> TokenLogprobs {
        let lp = log_softmax(logits);
        let text = |t: u32| self.tokenizer.decode(&[t]).unwrap_or_default();
        let mut order: Vec<u32> = (0..lp.len() as u32).collect();
        let n = usize::from(n).min(order.len());
        let nth = n.saturating_sub(1).min(order.len() - 1);
        order.select_nth_unstable_by(nth, |&a, &b| {
            lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b))
        });
        let mut top: Vec<u32> = order[..n].to_vec();
        top.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
        TokenLogprobs {
            token,
            text: text(token),
            logprob: lp[token as usize],
            top: top
                .into_iter()
                .map(|t| TopLogprob {
                    token: t,
                    text: text(t),
                    logprob: lp[t as usize],
                })
                .collect(),
        }
    }
}

/// Turns successive full decodings into deltas, holding back text that may be the start
/// of a stop sequence or an unfinished UTF-8 character, and cutting at a stop sequence.
struct TextStream<'a> {
    stops: &'a [String],
    emitted: String,
}

impl<'a> TextStream<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            emitted: String::new(),
        }
    }

    fn emitted_text(&self) -> &str {
        &self.emitted
    }

    /// Given the full text so far, returns the new text to release and whether a stop
    /// sequence was found.
    fn push(&mut self, full: &str) -> (String, bool) {
        if let Some(cut) = self
            .stops
            .iter()
            .filter_map(|s| full.find(s.as_str()))
            .min()
        {
            return (self.release(full, cut), true);
        }
        let mut safe = full.len();
        // An unfinished multi-byte character decodes as U+FFFD: hold it back.
        while full[..safe].ends_with('\u{FFFD}') {
            safe -= '\u{FFFD}'.len_utf8();
        }
        for s in self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if full[..safe].ends_with(&s[..i]) {
                    safe = safe.min(full.len() - i);
                }
            }
        }
        (self.release(full, safe), false)
    }

    fn release(&mut self, full: &str, upto: usize) -> String {
        let start = self.emitted.len();
        if upto <= start || !full.is_char_boundary(upto) || !full.starts_with(self.emitted.as_str())
        {
            return String::new();
        }
        let delta = full[start..upto].to_owned();
        self.emitted.push_str(&delta);
        delta
    }

    /// At the end: releases whatever is left (no stop sequence can complete any more).
    fn finish(&mut self, full: &str) -> String {
        self.release(full, full.len())
    }
}

#[cfg(test)]
mod tests {
    use super::TextStream;

    #[test]
    fn text_is_held_while_it_may_start_a_stop_sequence() {
        let stops = vec!["\nUser:".to_owned()];
        let mut s = TextStream::new(&stops);
        assert_eq!(s.push("Hello"), ("Hello".into(), false));
        assert_eq!(s.push("Hello\nUs"), (String::new(), false));
        assert_eq!(s.push("Hello\nUsb"), ("\nUsb".into(), false));
        let mut s = TextStream::new(&stops);
        assert_eq!(s.push("Hi\nUser: more"), ("Hi".into(), true));
        assert_eq!(s.emitted_text(), "Hi");
    }

    #[test]
    fn unfinished_characters_are_held_back() {
        let mut s = TextStream::new(&[]);
        assert_eq!(s.push("caf\u{FFFD}"), ("caf".into(), false));
        assert_eq!(s.push("café"), ("é".into(), false));
        assert_eq!(s.finish("café!"), "!");
    }
}
