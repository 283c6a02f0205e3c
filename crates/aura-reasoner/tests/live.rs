//! Against a real OpenAI-compatible server, when one is named: streamed and whole
//! answers, and a forced tool call. Ignored by default (it needs a model server); run it
//! with `AURA_LIVE_OPENAI_URL=http://127.0.0.1:8080 cargo nextest run -p aura-reasoner
//! --run-ignored only`. docs/reasoners.md says how the
//! llama-cpp-python check was made.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_reasoner::{
    Config, Context, Finish, Message, OpenAiConfig, Request, ToolChoice, ToolSpec, build,
};
use serde_json::json;

fn config(stream: bool) -> Config {
    let url = std::env::var("AURA_LIVE_OPENAI_URL")
        .expect("set AURA_LIVE_OPENAI_URL to the server's base URL");
    let text = format!(
        "provider = \"openai\"\nbase_url = \"{url}\"\nmodel = \"live\"\nstream = {stream}\nmax_tokens = 48\n"
    );
    let Config::OpenAi(c) = Config::from_toml(&text).unwrap() else {
        unreachable!()
    };
    Config::OpenAi(OpenAiConfig {
        api_key_env: std::env::var("AURA_LIVE_OPENAI_KEY_ENV").ok(),
        ..c
    })
}

#[tokio::test]
#[ignore = "needs a live OpenAI-compatible server at AURA_LIVE_OPENAI_URL"]
async fn live_server_answers_streamed_and_whole() {
    for stream in [true, false] {
        let reasoner = build(&config(stream), &Context::system()).unwrap();
        let mut request = Request::new(vec![
            Message::system("You are a helpful assistant."),
            Message::user("What is the capital of France?"),
        ]);
        request.seed = Some(1);
        request.temperature = Some(0.0);
        let turn = reasoner.turn(&request, None).await.unwrap();
        eprintln!("stream={stream}: {turn:?}");
        assert!(!turn.content.is_empty());
        assert!(
            matches!(turn.finish, Finish::Stop | Finish::Length),
            "{:?}",
            turn.finish
        );
    }
}

#[tokio::test]
#[ignore = "needs a live OpenAI-compatible server at AURA_LIVE_OPENAI_URL"]
async fn live_server_makes_a_forced_tool_call() {
    for stream in [true, false] {
        let reasoner = build(&config(stream), &Context::system()).unwrap();
        let mut request = Request::new(vec![
            Message::system("You are a helpful assistant that uses tools."),
            Message::user("What is the weather in Paris?"),
        ]);
        request.tools = vec![ToolSpec {
            name: "get_weather".into(),
            description: "Gets the current weather in a city".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }];
        request.tool_choice = ToolChoice::Tool("get_weather".into());
        request.temperature = Some(0.0);
        let turn = reasoner.turn(&request, None).await.unwrap();
        eprintln!("stream={stream}: {turn:?}");
        assert_eq!(turn.tool_calls.len(), 1, "{turn:?}");
        assert_eq!(turn.tool_calls[0].name, "get_weather");
        assert!(turn.tool_calls[0].arguments.is_object(), "{turn:?}");

        // The result goes back as a tool message answering the call's id.
        request.messages.push(Message::from(&turn));
        request
            .messages
            .push(Message::tool(turn.tool_calls[0].id.clone(), "Sunny, 21 °C"));
        request.tool_choice = ToolChoice::None;
        let answer = reasoner.turn(&request, None).await.unwrap();
        eprintln!("stream={stream}: {answer:?}");
        assert!(
            answer.tool_calls.is_empty() && !answer.content.is_empty(),
            "{answer:?}"
        );
    }
}
