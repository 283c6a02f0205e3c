//! The OpenAI-compatible provider against a real socket: streamed and whole responses,
//! tool calls, usage, the request it sends, and every failure it must survive or
//! report (429 with Retry-After, 5xx, 4xx, stalls, malformed bodies, cut streams).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aura_core::Timestamp;
use aura_core::door::ManualClock;
use aura_reasoner::{
    Config, Delta, Error, Finish, Message, OpenAiConfig, Reasoner, Request, TimeoutKind, ToolCall,
    ToolChoice, ToolSpec, Usage, build,
};
use serde_json::json;
use support::*;

fn config(server: &Server) -> OpenAiConfig {
    OpenAiConfig {
        base_url: server.url("/v1"),
        model: "test-model".into(),
        api_key_env: Some("TEST_KEY".into()),
        stream: true,
        max_tokens_field: Default::default(),
        max_tokens: None,
        retry: retry(3),
        timeouts: quick_timeouts(),
    }
}

fn provider(config: OpenAiConfig) -> (Arc<dyn Reasoner>, Arc<RecordingSleep>) {
    let (context, sleep) = context();
    (build(&Config::OpenAi(config), &context).unwrap(), sleep)
}

fn hello() -> Request {
    Request::new(vec![
        Message::system("be brief"),
        Message::user("say hello"),
    ])
}

fn text_stream(text: &str) -> Vec<String> {
    let mut chunks = events(&[
        json!({"id": "chatcmpl-1", "model": "served-model", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
    ]);
    for word in text.split_inclusive(' ') {
        chunks.extend(events(&[
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]}),
        ]));
    }
    chunks.extend(events(&[
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}),
    ]));
    chunks.push("data: [DONE]\n\n".into());
    chunks
}

#[tokio::test]
async fn a_streamed_answer_arrives_as_deltas_and_one_turn() {
    let server = Server::start(vec![Reply::sse(&text_stream("Hello there friend"))]).await;
    let (reasoner, _) = provider(config(&server));
    let deltas = Deltas::default();
    let turn = reasoner.turn(&hello(), Some(&deltas.sink())).await.unwrap();

    assert_eq!(turn.content, "Hello there friend");
    assert_eq!(turn.finish, Finish::Stop);
    assert_eq!(
        turn.usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 3,
            reported: true
        }
    );
    assert_eq!(turn.provider, "openai");
    assert_eq!(turn.model, "served-model");
    assert_eq!(turn.response_id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(turn.attempts, 1);
    assert_eq!(
        deltas.all(),
        vec![
            Delta::Text("Hello ".into()),
            Delta::Text("there ".into()),
            Delta::Text("friend".into())
        ]
    );

    let sent = &server.received()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    let body = sent.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
}

#[tokio::test]
async fn tool_calls_are_assembled_from_fragments_split_across_every_byte() {
    let mut stream = events(&[
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Checking."}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "fs_read", "arguments": ""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"pa"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "th\": \"/etc/ho"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "clock", "arguments": ""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "sts\"}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ])
    .concat();
    stream.push_str("data: [DONE]\n\n");
    // One HTTP chunk per byte: the parser and the assembler must not care.
    let chunks: Vec<String> = stream.chars().map(String::from).collect();
    let server = Server::start(vec![Reply::sse(&chunks)]).await;
    let (reasoner, _) = provider(config(&server));
    let deltas = Deltas::default();
    let mut request = hello();
    request.tools = vec![
        ToolSpec {
            name: "fs_read".into(),
            description: "read".into(),
            parameters: json!({"type": "object"}),
        },
        ToolSpec {
            name: "clock".into(),
            description: "time".into(),
            parameters: json!({"type": "object"}),
        },
    ];
    request.tool_choice = ToolChoice::Required;
    request.seed = Some(42);
    let turn = reasoner.turn(&request, Some(&deltas.sink())).await.unwrap();

    assert_eq!(turn.content, "Checking.");
    assert_eq!(turn.finish, Finish::ToolCalls);
    assert_eq!(
        turn.tool_calls,
        vec![
            ToolCall {
                id: "call_a".into(),
                name: "fs_read".into(),
                arguments: json!({"path": "/etc/hosts"})
            },
            ToolCall {
                id: "call_b".into(),
                name: "clock".into(),
                arguments: json!({})
            },
        ]
    );
    assert!(!turn.usage.reported, "this server sent no usage");
    let started: Vec<_> = deltas
        .all()
        .into_iter()
        .filter(|d| matches!(d, Delta::ToolCallStarted { .. }))
        .collect();
    assert_eq!(started.len(), 2);

    let body = server.received()[0].json();
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["seed"], 42);
    assert_eq!(body["tools"][0]["function"]["name"], "fs_read");
}

#[tokio::test]
async fn a_whole_response_is_read_when_streaming_is_off() {
    let server = Server::start(vec![Reply::json(
        200,
        &json!({
            "id": "chatcmpl-2", "object": "chat.completion", "model": "served",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_x", "type": "function",
                                "function": {"name": "fs_list", "arguments": "{\"dir\":\".\"}"}}]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
        }),
    )])
    .await;
    let mut c = config(&server);
    c.stream = false;
    c.max_tokens = Some(77);
    let (reasoner, _) = provider(c);
    let deltas = Deltas::default();
    let turn = reasoner.turn(&hello(), Some(&deltas.sink())).await.unwrap();
    assert_eq!(turn.tool_calls[0].arguments, json!({"dir": "."}));
    assert_eq!(turn.usage.total(), 39);
    assert_eq!(
        deltas.all(),
        vec![
            Delta::ToolCallStarted {
                id: "call_x".into(),
                name: "fs_list".into()
            },
            Delta::ToolCallArguments {
                id: "call_x".into(),
                fragment: "{\"dir\":\".\"}".into()
            },
        ]
    );
    let sent = &server.received()[0];
    assert_eq!(sent.header("accept"), Some("application/json"));
    let body = sent.json();
    assert_eq!(body["stream"], false);
    assert_eq!(body["max_tokens"], 77);
    assert!(body.get("stream_options").is_none());
}

#[tokio::test]
async fn a_base_url_without_a_path_gets_v1_and_other_paths_are_kept() {
    let server = Server::start(vec![
        Reply::sse(&text_stream("a")),
        Reply::sse(&text_stream("b")),
    ])
    .await;
    let mut c = config(&server);
    c.base_url = server.url("");
    c.api_key_env = None;
    provider(c.clone()).0.turn(&hello(), None).await.unwrap();
    c.base_url = server.url("/proxy/openai/v1/");
    provider(c).0.turn(&hello(), None).await.unwrap();
    let received = server.received();
    assert_eq!(received[0].path, "/v1/chat/completions");
    assert_eq!(received[1].path, "/proxy/openai/v1/chat/completions");
    assert_eq!(
        received[0].header("authorization"),
        None,
        "no key configured, none sent"
    );
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    let server = Server::start(vec![
        Reply::json(
            429,
            &json!({"error": {"message": "slow down", "type": "rate_limit"}}),
        )
        .header("retry-after", "7"),
        Reply::sse(&text_stream("ok")),
    ])
    .await;
    let (reasoner, sleep) = provider(config(&server));
    let turn = reasoner.turn(&hello(), None).await.unwrap();
    assert_eq!(turn.attempts, 2);
    assert_eq!(turn.content, "ok");
    assert_eq!(sleep.waits(), vec![Duration::from_secs(7)]);
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_read_against_the_clock() {
    // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
    let server = Server::start(vec![
        Reply::json(503, &json!({"error": {"message": "busy"}}))
            .header("retry-after", "Tue, 14 Nov 2023 22:13:28 GMT"),
        Reply::sse(&text_stream("ok")),
    ])
    .await;
    let (context, sleep) = context();
    let context = context.with_clock(Arc::new(ManualClock::new(Timestamp::from_secs(
        1_700_000_000,
    ))));
    let reasoner = build(&Config::OpenAi(config(&server)), &context).unwrap();
    assert_eq!(reasoner.turn(&hello(), None).await.unwrap().attempts, 2);
    assert_eq!(sleep.waits(), vec![Duration::from_secs(8)]);
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_ends_the_turn_without_waiting() {
    let server = Server::start(vec![
        Reply::json(429, &json!({"error": {"message": "quota"}})).header("retry-after", "3600"),
        Reply::sse(&text_stream("never")),
    ])
    .await;
    let (reasoner, sleep) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(
        matches!(&err, Error::RateLimited { retry_after: Some(d), message } if *d == Duration::from_secs(3600) && message == "quota"),
        "{err:?}"
    );
    assert!(err.is_retryable(), "the engine may try again later");
    assert_eq!(sleep.waits(), vec![]);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_wait_that_would_pass_the_total_deadline_ends_the_turn() {
    let server = Server::start(vec![
        Reply::json(503, &json!({"error": {"message": "busy"}})).header("retry-after", "12"),
        Reply::sse(&text_stream("never")),
    ])
    .await;
    // The total limit is 10 s, so a 12 s wait cannot end in time.
    let (reasoner, sleep) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 503, .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
    assert_eq!(sleep.waits(), vec![]);
}

#[tokio::test]
async fn server_errors_are_retried_with_exponential_backoff() {
    let server = Server::start(vec![
        Reply::json(500, &json!({"error": {"message": "boom"}})),
        Reply::new(
            502,
            "text/html",
            vec![Part::Bytes(b"<html>bad gateway</html>".to_vec())],
        ),
        Reply::sse(&text_stream("fine")),
    ])
    .await;
    let (reasoner, sleep) = provider(config(&server));
    let turn = reasoner.turn(&hello(), None).await.unwrap();
    assert_eq!(turn.attempts, 3);
    assert_eq!(
        sleep.waits(),
        vec![Duration::from_millis(100), Duration::from_millis(200)]
    );
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_say_how_many_were_made() {
    let server = Server::start(vec![
        Reply::json(500, &json!({"error": {"message": "one"}})),
        Reply::json(500, &json!({"error": {"message": "two"}})),
        Reply::json(500, &json!({"error": {"message": "three"}})),
        Reply::sse(&text_stream("too late")),
    ])
    .await;
    let (reasoner, sleep) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    let Error::RetriesExhausted { attempts: 3, last } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(**last, Error::Http { status: 500, ref message, .. } if message == "three"),
        "{last:?}"
    );
    assert_eq!(err.attempts(), 3);
    assert_eq!(err.to_string(), "gave up after 3 attempts");
    assert_eq!(sleep.waits().len(), 2);
    assert_eq!(server.replies_left(), 1);
}

#[tokio::test]
async fn client_errors_are_not_retried_but_408_and_409_are() {
    for (status, retried) in [
        (400, false),
        (401, false),
        (403, false),
        (404, false),
        (422, false),
        (408, true),
        (409, true),
    ] {
        let server = Server::start(vec![
            Reply::json(
                status,
                &json!({"error": {"message": "nope", "type": "invalid_request_error"}}),
            ),
            Reply::sse(&text_stream("ok")),
        ])
        .await;
        let (reasoner, _) = provider(config(&server));
        let result = reasoner.turn(&hello(), None).await;
        if retried {
            assert_eq!(result.unwrap().attempts, 2, "{status}");
        } else {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::Http { status: s, message, .. } if *s == status && message == "nope"),
                "{status}: {err:?}"
            );
            assert!(!err.is_retryable());
            assert_eq!(server.received().len(), 1, "{status} must not be retried");
        }
    }
}

#[tokio::test]
async fn an_error_body_that_echoes_the_key_is_redacted() {
    let server = Server::start(vec![Reply::json(
        401,
        &json!({"error": {"message": format!("Incorrect API key provided: {KEY}.")}}),
    )])
    .await;
    let (reasoner, _) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err().to_string();
    assert!(!err.contains(KEY), "{err}");
    assert!(
        err.contains("Incorrect API key provided: [redacted]."),
        "{err}"
    );
}

#[tokio::test]
async fn redirects_are_reported_not_followed() {
    let server = Server::start(vec![
        Reply::new(307, "text/plain", vec![]).header("location", "http://127.0.0.1:9/elsewhere"),
    ])
    .await;
    let (reasoner, _) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 307, .. }), "{err:?}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout() {
    let mut parts = vec![Part::Bytes(
        text_stream("partial")[0..2].concat().into_bytes(),
    )];
    parts.push(Part::Stall);
    let server = Server::start(vec![Reply::new(200, "text/event-stream", parts)]).await;
    let mut c = config(&server);
    c.retry = retry(1);
    let (reasoner, _) = provider(c);
    let started = Instant::now();
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(TimeoutKind::Idle)), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_a_stall_resets_what_watchers_saw() {
    let mut stalled: Vec<Part> = text_stream("lost words")[0..3]
        .iter()
        .map(|c| Part::Bytes(c.clone().into_bytes()))
        .collect();
    stalled.push(Part::Stall);
    let server = Server::start(vec![
        Reply::new(200, "text/event-stream", stalled),
        Reply::sse(&text_stream("kept")),
    ])
    .await;
    let (reasoner, sleep) = provider(config(&server));
    let deltas = Deltas::default();
    let turn = reasoner.turn(&hello(), Some(&deltas.sink())).await.unwrap();
    assert_eq!(turn.content, "kept");
    assert_eq!(turn.attempts, 2);
    assert_eq!(sleep.waits(), vec![Duration::from_millis(100)]);
    assert!(
        deltas.all().contains(&Delta::Reset { attempt: 2 }),
        "{:?}",
        deltas.all()
    );
    assert_eq!(deltas.shown_text(), "kept");
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_first_byte_timeout() {
    let server = Server::start(vec![Reply::hang()]).await;
    let mut c = config(&server);
    c.retry = retry(1);
    let (reasoner, _) = provider(c);
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout(TimeoutKind::FirstByte)),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_total_timeout_bounds_the_whole_turn() {
    let server = Server::start(vec![Reply::new(
        200,
        "text/event-stream",
        (0..100)
            .flat_map(|_| {
                [
                    Part::Bytes(b": still here\n\n".to_vec()),
                    Part::Pause(Duration::from_millis(50)),
                ]
            })
            .collect(),
    )])
    .await;
    let mut c = config(&server);
    c.timeouts.total = Duration::from_millis(400);
    let (reasoner, _) = provider(c);
    let started = Instant::now();
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(TimeoutKind::Total)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_json_in_a_stream_is_a_protocol_error_and_not_retried() {
    let server = Server::start(vec![
        Reply::sse(&[
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\": [tru\n\n",
        ]),
        Reply::sse(&text_stream("unused")),
    ])
    .await;
    let (reasoner, _) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    let Error::Protocol(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("a chat completion chunk: "),
        "{message}"
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn malformed_sse_is_a_protocol_error() {
    let server = Server::start(vec![Reply::new(
        200,
        "text/event-stream",
        vec![Part::Bytes(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n".to_vec(),
        )],
    )])
    .await;
    let (reasoner, _) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the provider's response is malformed: the event stream is not valid UTF-8"
    );
}

#[tokio::test]
async fn a_whole_response_that_is_not_json_is_a_protocol_error() {
    let server = Server::start(vec![Reply::new(
        200,
        "application/json",
        vec![Part::Bytes(b"<html>".to_vec())],
    )])
    .await;
    let mut c = config(&server);
    c.stream = false;
    let (reasoner, _) = provider(c);
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn a_stream_cut_short_is_retried_then_reported_as_truncated() {
    let cut = || {
        Reply::new(
            200,
            "text/event-stream",
            vec![Part::Bytes(text_stream("half")[1].clone().into_bytes())],
        )
    };
    let server = Server::start(vec![cut(), cut()]).await;
    let mut c = config(&server);
    c.retry = retry(2);
    let (reasoner, _) = provider(c);
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    let Error::RetriesExhausted { attempts: 2, last } = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(**last, Error::Truncated), "{last:?}");
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_a_transport_error() {
    let server = Server::start(vec![Reply::new(
        200,
        "text/event-stream",
        vec![
            Part::Bytes(text_stream("x")[0].clone().into_bytes()),
            Part::Cut,
        ],
    )])
    .await;
    let mut c = config(&server);
    c.retry = retry(1);
    let (reasoner, _) = provider(c);
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport(_) | Error::Truncated),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_and_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (context, sleep) = context();
    let mut c = OpenAiConfig {
        base_url: format!("http://{addr}/v1"),
        model: "m".into(),
        api_key_env: None,
        stream: true,
        max_tokens_field: Default::default(),
        max_tokens: None,
        retry: retry(3),
        timeouts: quick_timeouts(),
    };
    c.retry.jitter = 0.0;
    let reasoner = build(&Config::OpenAi(c), &context).unwrap();
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    let Error::RetriesExhausted { attempts: 3, last } = &err else {
        panic!("{err:?}")
    };
    let Error::Transport(message) = &**last else {
        panic!("{last:?}")
    };
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert_eq!(sleep.waits().len(), 2);
}

#[tokio::test]
async fn an_error_chunk_mid_stream_is_reported() {
    let server = Server::start(vec![Reply::sse(&events(&[
        json!({"choices": [{"index": 0, "delta": {"content": "par"}}]}),
        json!({"error": {"message": "model crashed", "type": "BadRequestError", "code": 400}}),
    ]))])
    .await;
    let (reasoner, _) = provider(config(&server));
    let err = reasoner.turn(&hello(), None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the provider reported an error mid-stream (BadRequestError): model crashed"
    );
}

#[tokio::test]
async fn the_real_sleep_waits_out_retry_after() {
    let server = Server::start(vec![
        Reply::json(429, &json!({"error": {"message": "wait"}})).header("retry-after", "1"),
        Reply::sse(&text_stream("ok")),
    ])
    .await;
    let (context, _) = context();
    let context = context.with_sleep(Arc::new(aura_reasoner::TokioSleep));
    let reasoner = build(&Config::OpenAi(config(&server)), &context).unwrap();
    let started = Instant::now();
    assert_eq!(reasoner.turn(&hello(), None).await.unwrap().attempts, 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn an_invalid_request_fails_before_any_request_is_sent() {
    let server = Server::start(vec![]).await;
    let (reasoner, _) = provider(config(&server));
    let mut request = hello();
    request.messages.push(Message {
        tool_call_id: None,
        ..Message::tool("x", "result")
    });
    let err = reasoner.turn(&request, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid reasoner request: message 2 is a tool result without a tool_call_id"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_missing_key_fails_at_build_and_no_secret_is_ever_shown() {
    let server = Server::start(vec![]).await;
    let (context, _) = context();
    let mut c = config(&server);
    c.api_key_env = Some("NOT_SET_ANYWHERE".into());
    let err = build(&Config::OpenAi(c), &context).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid reasoner configuration: the environment variable NOT_SET_ANYWHERE is not set; it should hold the API key"
    );

    let reasoner = build(&Config::OpenAi(config(&server)), &context).unwrap();
    let shown = format!("{reasoner:?} {:?}", reasoner.describe());
    assert!(!shown.contains(KEY), "{shown}");
    let info = reasoner.describe();
    assert_eq!(info.provider, "openai");
    assert_eq!(info.model, "test-model");
    assert_eq!(info.base_url, Some(server.url("/v1")));
}
