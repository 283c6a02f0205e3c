//! The streamed chat both front ends call ([`ModelHost::chat_stream`]), on a real host
//! over a tiny random-weight model installed as a signed package: text deltas that add up
//! to the answer, then the receipt; a tool call's deltas numbered; and a stream dropped
//! midway (its caller went away) stopping the generation with nothing recorded.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use aura_host::requests::{self, ChatParts, ChatPlan};
use aura_host::{ChatDelta, ChatEvent, ChatOutcome, ModelHost, ReceiptId};
use aura_reasoner::{Finish, Message, Role, ToolChoice, ToolSpec};
use futures_util::StreamExt as _;
use serde_json::json;
use support::World;

fn plan(max_tokens: u32, edit: impl FnOnce(&mut ChatParts)) -> ChatPlan {
    let mut parts = ChatParts {
        messages: vec![Message {
            role: Role::User,
            content: "Say something.".into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }],
        max_tokens: Some(max_tokens),
        ..ChatParts::default()
    };
    edit(&mut parts);
    requests::chat(parts).unwrap()
}

/// Every event of a chat stream, in order.
async fn run(host: &Arc<ModelHost>, plan: ChatPlan) -> (ReceiptId, Vec<ChatEvent>) {
    let served = host.open("tiny").await.unwrap();
    let stream = host.chat_stream(served, plan);
    let promised = stream.receipt();
    (promised, stream.collect().await)
}

fn done(events: &mut Vec<ChatEvent>) -> (ChatOutcome, ReceiptId) {
    match events.pop() {
        Some(ChatEvent::Done(Ok(done))) => done,
        other => panic!("the stream did not end with an answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_chat_sends_text_that_adds_up_to_the_answer_then_its_receipt() {
    let world = World::new();
    let host = world.host().await;
    let (promised, mut events) = run(&host, plan(24, |_| {})).await;
    let (outcome, receipt) = done(&mut events);
    assert_eq!(
        receipt, promised,
        "the receipt is the one promised up front"
    );
    assert!(!events.is_empty(), "no delta came before the end");
    let mut text = String::new();
    for e in &events {
        match e {
            ChatEvent::Delta(ChatDelta::Text(t)) => text.push_str(t),
            other => panic!("only text was asked for: {other:?}"),
        }
    }
    assert_eq!(text, outcome.turn.content);
    assert_eq!(outcome.turn.usage.completion_tokens, 24);
    assert_eq!(outcome.turn.finish, Finish::Length);
    // Recorded before the end was told; and the stream is the same chat as the plain call.
    assert_eq!(world.receipts().await, 1);
    let served = host.open("tiny").await.unwrap();
    let p = plan(24, |_| {});
    let (plain, _) = host
        .chat(&served, &p.request, &p.options, None, None)
        .await
        .unwrap();
    assert_eq!(plain.turn.content, outcome.turn.content);
    assert_eq!(world.receipts().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_calls_deltas_are_numbered_and_name_the_call_the_answer_holds() {
    let world = World::new();
    let host = world.host().await;
    let tool = ToolSpec {
        name: "switch".into(),
        description: "Turns the light on or off.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"on": {"type": "boolean"}},
            "required": ["on"],
            "additionalProperties": false,
        }),
    };
    let (_, mut events) = run(
        &host,
        plan(16, |p| {
            p.tools = vec![tool];
            p.tool_choice = ToolChoice::Tool("switch".into());
        }),
    )
    .await;
    let (outcome, _) = done(&mut events);
    assert_eq!(outcome.turn.finish, Finish::ToolCalls);
    let [call] = outcome.turn.tool_calls.as_slice() else {
        panic!("one call: {:?}", outcome.turn.tool_calls);
    };
    let mut arguments = String::new();
    let mut began = Vec::new();
    for e in &events {
        match e {
            ChatEvent::Delta(ChatDelta::CallStarted { index, id, name }) => {
                began.push((*index, id.clone(), name.clone()));
            }
            ChatEvent::Delta(ChatDelta::CallArguments { index, fragment }) => {
                assert_eq!(*index, 0);
                arguments.push_str(fragment);
            }
            // The engine streams a begun call's argument text as text too (an aura-infer
            // matter, reported); what this test is about is the calls' numbering.
            ChatEvent::Delta(ChatDelta::Text(_)) => {}
            ChatEvent::Done(_) => panic!("two ends"),
        }
    }
    assert_eq!(began, [(0, call.id.clone(), "switch".to_owned())]);
    let parsed: serde_json::Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(parsed, call.arguments);
    assert!(parsed["on"].is_boolean(), "{parsed}");
    assert_eq!(world.receipts().await, 1);
}

/// A caller that goes away drops the stream; the generation must stop at its next token
/// (not run on to its limit on a blocking thread) and leave no receipt. The runtime has
/// one blocking thread, which the generation holds while it runs: once the stream is
/// dropped, other blocking work must get that thread within seconds, where the
/// generation left running would hold it for minutes.
#[test]
fn a_dropped_stream_stops_its_generation_and_records_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let world = World::new();
        let host = world.host().await;
        let served = host.open("tiny").await.unwrap();
        let limit = u32::try_from(support::CONTEXT - 64).unwrap();
        let mut stream = host.chat_stream(served, plan(limit, |_| {}));
        let first = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("no delta within a minute");
        assert!(
            matches!(first, Some(ChatEvent::Delta(ChatDelta::Text(_)))),
            "{first:?}"
        );
        drop(stream);
        tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(|| ()))
            .await
            .expect("the generation still holds the blocking thread after its stream was dropped")
            .unwrap();
        assert_eq!(world.receipts().await, 0);

        // The host serves the next request as usual.
        let (_, mut events) = run(&host, plan(4, |_| {})).await;
        let (outcome, _) = done(&mut events);
        assert_eq!(outcome.turn.usage.completion_tokens, 4);
        assert_eq!(world.receipts().await, 1);
    });
}
