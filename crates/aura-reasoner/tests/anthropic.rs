//! The Anthropic provider against a real socket: the Messages request it sends, streamed
//! text and tool use, whole responses, overload retries and mid-stream errors.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use aura_reasoner::{
    AnthropicConfig, Config, Delta, Error, Finish, Message, Reasoner, Request, ToolCall,
    ToolChoice, ToolSpec, Usage, build,
};
use serde_json::{Value, json};
use support::*;

fn config(server: &Server) -> AnthropicConfig {
    AnthropicConfig {
        base_url: server.url(""),
        model: "claude-test".into(),
        api_key_env: "TEST_KEY".into(),
        max_tokens: 512,
        version: "2023-06-01".into(),
        stream: true,
        retry: retry(3),
        timeouts: quick_timeouts(),
    }
}

fn provider(config: AnthropicConfig) -> (Arc<dyn Reasoner>, Arc<RecordingSleep>) {
    let (context, sleep) = context();
    (build(&Config::Anthropic(config), &context).unwrap(), sleep)
}

/// `event: <type>` then `data: <json>`, as Anthropic writes them.
fn typed(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap()))
        .collect()
}

fn tool_use_stream() -> Vec<String> {
    typed(&[
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
               "model": "claude-served", "content": [], "stop_reason": null,
               "usage": {"input_tokens": 40, "cache_read_input_tokens": 2, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01", "name": "fs_read", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": \"/et"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "c/hosts\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 25}}),
        json!({"type": "message_stop"}),
    ])
}

fn conversation() -> Request {
    let mut request = Request::new(vec![
        Message::system("You are careful."),
        Message::user("What is in /etc/hosts?"),
        Message::assistant(
            "",
            vec![ToolCall {
                id: "toolu_00".into(),
                name: "fs_read".into(),
                arguments: json!({"path": "/etc/hostname"}),
            }],
        ),
        Message::tool("toolu_00", "node-1"),
    ]);
    request.tools = vec![ToolSpec {
        name: "fs_read".into(),
        description: "Reads a file".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    }];
    request.tool_choice = ToolChoice::Tool("fs_read".into());
    request
}

#[tokio::test]
async fn a_streamed_tool_use_becomes_one_turn_and_its_deltas() {
    let server = Server::start(vec![Reply::sse(&tool_use_stream())]).await;
    let (reasoner, _) = provider(config(&server));
    let deltas = Deltas::default();
    let turn = reasoner
        .turn(&conversation(), Some(&deltas.sink()))
        .await
        .unwrap();

    assert_eq!(turn.content, "Let me check.");
    assert_eq!(turn.finish, Finish::ToolCalls);
    assert_eq!(
        turn.tool_calls,
        vec![ToolCall {
            id: "toolu_01".into(),
            name: "fs_read".into(),
            arguments: json!({"path": "/etc/hosts"})
        }]
    );
    assert_eq!(
        turn.usage,
        Usage {
            prompt_tokens: 42,
            completion_tokens: 25,
            reported: true
        }
    );
    assert_eq!(turn.provider, "anthropic");
    assert_eq!(turn.model, "claude-served");
    assert_eq!(turn.response_id.as_deref(), Some("msg_01"));
    assert_eq!(
        deltas.all(),
        vec![
            Delta::Text("Let me ".into()),
            Delta::Text("check.".into()),
            Delta::ToolCallStarted {
                id: "toolu_01".into(),
                name: "fs_read".into()
            },
            Delta::ToolCallArguments {
                id: "toolu_01".into(),
                fragment: "{\"path\": \"/et".into()
            },
            Delta::ToolCallArguments {
                id: "toolu_01".into(),
                fragment: "c/hosts\"}".into()
            },
        ]
    );

    let sent = &server.received()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    let body = sent.json();
    assert_eq!(body["system"], "You are careful.");
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "fs_read"})
    );
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["path"]["type"],
        "string"
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "What is in /etc/hosts?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_00", "name": "fs_read", "input": {"path": "/etc/hostname"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_00", "content": "node-1"}]},
        ])
    );
}

#[tokio::test]
async fn a_whole_response_is_read_when_streaming_is_off() {
    let server = Server::start(vec![Reply::json(
        200,
        &json!({"id": "msg_02", "type": "message", "role": "assistant", "model": "claude-served",
                "content": [{"type": "text", "text": "Done."}],
                "stop_reason": "max_tokens", "stop_sequence": null,
                "usage": {"input_tokens": 8, "output_tokens": 512}}),
    )])
    .await;
    let mut c = config(&server);
    c.stream = false;
    c.base_url = server.url("/v1");
    let (reasoner, _) = provider(c);
    let deltas = Deltas::default();
    let mut request = conversation();
    request.max_tokens = Some(9);
    let turn = reasoner.turn(&request, Some(&deltas.sink())).await.unwrap();
    assert_eq!(turn.content, "Done.");
    assert_eq!(turn.finish, Finish::Length);
    assert_eq!(turn.usage.total(), 520);
    assert_eq!(deltas.all(), vec![Delta::Text("Done.".into())]);
    let sent = &server.received()[0];
    assert_eq!(
        sent.path, "/v1/messages",
        "a base URL ending in /v1 is the root itself"
    );
    assert_eq!(sent.json()["max_tokens"], 9);
    assert_eq!(sent.json()["stream"], false);
}

#[tokio::test]
async fn overloaded_529_is_retried() {
    let server = Server::start(vec![
        Reply::json(529, &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        Reply::sse(&tool_use_stream()),
    ])
    .await;
    let (reasoner, sleep) = provider(config(&server));
    let turn = reasoner.turn(&conversation(), None).await.unwrap();
    assert_eq!(turn.attempts, 2);
    assert_eq!(sleep.waits(), vec![Duration::from_millis(100)]);
}

#[tokio::test]
async fn an_overload_event_mid_stream_is_retried_and_watchers_reset() {
    let mut broken = tool_use_stream()[..4].to_vec();
    broken.extend(typed(&[
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]));
    let server = Server::start(vec![Reply::sse(&broken), Reply::sse(&tool_use_stream())]).await;
    let (reasoner, _) = provider(config(&server));
    let deltas = Deltas::default();
    let turn = reasoner
        .turn(&conversation(), Some(&deltas.sink()))
        .await
        .unwrap();
    assert_eq!(turn.attempts, 2);
    assert_eq!(turn.content, "Let me check.");
    assert_eq!(deltas.shown_text(), "Let me check.");
    assert!(deltas.all().contains(&Delta::Reset { attempt: 2 }));
}

#[tokio::test]
async fn an_invalid_request_error_is_reported_with_the_providers_message() {
    let server = Server::start(vec![Reply::json(
        400,
        &json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: roles must alternate"}}),
    )])
    .await;
    let (reasoner, _) = provider(config(&server));
    let err = reasoner.turn(&conversation(), None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the provider answered HTTP 400: messages: roles must alternate"
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_stream_without_a_stop_reason_is_truncated() {
    let server = Server::start(vec![Reply::sse(&tool_use_stream()[..10])]).await;
    let mut c = config(&server);
    c.retry = retry(1);
    let (reasoner, _) = provider(c);
    let err = reasoner.turn(&conversation(), None).await.unwrap_err();
    assert!(matches!(err, Error::Truncated), "{err:?}");
}

#[tokio::test]
async fn the_key_is_required_and_never_shown() {
    let server = Server::start(vec![]).await;
    let (context, _) = context();
    let mut c = config(&server);
    c.api_key_env = "ANTHROPIC_KEY_FOR_NOBODY".into();
    let err = build(&Config::Anthropic(c), &context).unwrap_err();
    assert!(
        err.to_string()
            .contains("ANTHROPIC_KEY_FOR_NOBODY is not set"),
        "{err}"
    );
    let reasoner = build(&Config::Anthropic(config(&server)), &context).unwrap();
    let shown = format!("{reasoner:?} {:?}", reasoner.describe());
    assert!(!shown.contains(KEY), "{shown}");
}
