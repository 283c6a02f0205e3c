//! A streamed chat, wired once for every front end: [`ModelHost::chat_stream`] runs a
//! planned chat on a generator and yields its pieces as the model writes them, tool calls
//! numbered in the order they began (what every wire format carries), then how it ended,
//! with the receipt recorded before the end is told. The HTTP SSE route and the gRPC server
//! stream only map these events to their wire format.
//!
//! The stream drives the chat: dropping it (the caller went away, so the front end drops
//! its response body) drops the chat, which stops the generation at its next token and
//! records nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aura_infer::reasoner::ChatOutcome;
use aura_model::ReceiptId;
use aura_reasoner::Delta;
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::error::ChatError;
use crate::host::{ModelHost, Served};
use crate::requests::ChatPlan;

/// One piece of a streamed chat answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatDelta {
    /// More text.
    Text(String),
    /// The `index`th tool call of the answer began.
    CallStarted {
        index: usize,
        id: String,
        name: String,
    },
    /// More of the `index`th call's arguments (JSON text, in pieces).
    CallArguments { index: usize, fragment: String },
}

/// What a chat stream yields: deltas, then one `Done`.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one Done per stream: moving a few hundred bytes per delta costs nothing next to a token"
)]
pub enum ChatEvent {
    Delta(ChatDelta),
    /// The answer and its receipt id (the receipt is in the ledger by now), or why the
    /// chat failed; nothing follows it.
    Done(Result<(ChatOutcome, ReceiptId), ChatError>),
}

type Run = Pin<Box<dyn Future<Output = Result<(ChatOutcome, ReceiptId), ChatError>> + Send>>;

/// A chat in progress, as a stream of [`ChatEvent`]s. It makes progress only while it is
/// polled, and dropping it stops the generation with nothing recorded.
#[must_use = "a chat stream does nothing unless polled"]
pub struct ChatStream {
    receipt: ReceiptId,
    deltas: mpsc::UnboundedReceiver<ChatDelta>,
    /// The chat itself, until it ends.
    run: Option<Run>,
    /// How it ended, told once the deltas before it are.
    done: Option<Result<(ChatOutcome, ReceiptId), ChatError>>,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("receipt", &self.receipt)
            .field("running", &self.run.is_some())
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// The id the receipt will carry if the chat completes (a front end promises it in its
    /// response headers before the first delta).
    pub fn receipt(&self) -> ReceiptId {
        self.receipt
    }
}

impl Stream for ChatStream {
    type Item = ChatEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChatEvent>> {
        let this = self.get_mut();
        if let Some(run) = this.run.as_mut() {
            if let Poll::Ready(Some(d)) = this.deltas.poll_recv(cx) {
                return Poll::Ready(Some(ChatEvent::Delta(d)));
            }
            match run.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    this.run = None;
                    this.done = Some(result);
                }
            }
        }
        // The chat has ended and dropped its sender: what it sent is all queued.
        if let Ok(d) = this.deltas.try_recv() {
            return Poll::Ready(Some(ChatEvent::Delta(d)));
        }
        Poll::Ready(this.done.take().map(ChatEvent::Done))
    }
}

/// Numbers tool calls in the order they began, the form every wire format carries, and
/// leaves out what a wire cannot say (a reasoner's `Reset`, which a local model never
/// sends).
#[derive(Debug, Default)]
struct Numbering {
    calls: Vec<String>,
}

impl Numbering {
    fn number(&mut self, delta: Delta) -> Option<ChatDelta> {
        match delta {
            Delta::Text(text) => Some(ChatDelta::Text(text)),
            Delta::ToolCallStarted { id, name } => {
                self.calls.push(id.clone());
                Some(ChatDelta::CallStarted {
                    index: self.calls.len() - 1,
                    id,
                    name,
                })
            }
            Delta::ToolCallArguments { id, fragment } => Some(ChatDelta::CallArguments {
                index: self.calls.iter().position(|c| *c == id).unwrap_or(0),
                fragment,
            }),
            Delta::Reset { .. } => None,
        }
    }
}

impl ModelHost {
    /// Runs `plan` on `served` (a generator: see [`Served::generator`]) as a stream of
    /// events, metered like [`ModelHost::chat`]: authorised before the first token, the
    /// receipt recorded (under [`ChatStream::receipt`]) before `Done` is yielded.
    pub fn chat_stream(self: &Arc<Self>, served: Arc<Served>, plan: ChatPlan) -> ChatStream {
        let receipt = ModelHost::new_receipt_id();
        let (tx, deltas) = mpsc::unbounded_channel();
        let host = self.clone();
        let run = async move {
            let numbering = Mutex::new(Numbering::default());
            let sink = move |d: Delta| {
                let numbered = numbering
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .number(d);
                if let Some(d) = numbered {
                    // The receiver lives as long as the stream, which owns this future.
                    let _ = tx.send(d);
                }
            };
            host.chat(
                &served,
                &plan.request,
                &plan.options,
                Some(&sink),
                Some(receipt),
            )
            .await
        };
        ChatStream {
            receipt,
            deltas,
            run: Some(Box::pin(run)),
            done: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(id: &str) -> Delta {
        Delta::ToolCallStarted {
            id: id.into(),
            name: format!("tool_{id}"),
        }
    }

    fn arguments(id: &str, fragment: &str) -> Delta {
        Delta::ToolCallArguments {
            id: id.into(),
            fragment: fragment.into(),
        }
    }

    /// Calls are numbered in the order they began, arguments follow their call by id
    /// whatever the interleaving, text passes through and `Reset` is left out.
    #[test]
    fn tool_calls_are_numbered_in_the_order_they_began() {
        let mut n = Numbering::default();
        let out: Vec<Option<ChatDelta>> = [
            Delta::Text("thinking".into()),
            started("b"),
            started("a"),
            arguments("a", "{\"x\":"),
            arguments("b", "{}"),
            arguments("a", "1}"),
            Delta::Reset { attempt: 2 },
        ]
        .into_iter()
        .map(|d| n.number(d))
        .collect();
        assert_eq!(
            out,
            [
                Some(ChatDelta::Text("thinking".into())),
                Some(ChatDelta::CallStarted {
                    index: 0,
                    id: "b".into(),
                    name: "tool_b".into()
                }),
                Some(ChatDelta::CallStarted {
                    index: 1,
                    id: "a".into(),
                    name: "tool_a".into()
                }),
                Some(ChatDelta::CallArguments {
                    index: 1,
                    fragment: "{\"x\":".into()
                }),
                Some(ChatDelta::CallArguments {
                    index: 0,
                    fragment: "{}".into()
                }),
                Some(ChatDelta::CallArguments {
                    index: 1,
                    fragment: "1}".into()
                }),
                None,
            ]
        );
    }
}
