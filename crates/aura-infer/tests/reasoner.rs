//! The `local` reasoner on the real SmolLM2-135M-Instruct: a plain question streams text
//! deltas that add up to the turn's text and counts real tokens; identical requests give
//! identical turns; requests with tools (auto, required, a named tool) come back as turns
//! that parse, whether the small model calls the tool or not; bad requests and bad paths
//! are clear errors.
//!
//! The model comes from `scripts/fetch-models.sh`; a missing model fails the tests.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use aura_infer::reasoner::{LocalOptions, LocalReasoner};
use aura_infer::{LoadOptions, Model, ModelFiles};
use aura_reasoner::{Delta, Error, Finish, Message, Reasoner, Request, ToolChoice, ToolSpec, Turn};
use serde_json::json;

fn smollm2_path() -> PathBuf {
    let cache = std::env::var_os("AURA_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aura/models")
        });
    let path = cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "SmolLM2 is missing at {}: run scripts/fetch-models.sh (or set AURA_MODEL_CACHE)",
        path.display()
    );
    path
}

fn reasoner() -> LocalReasoner {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        Arc::new(Model::load(&ModelFiles::Gguf(smollm2_path()), &LoadOptions::default()).unwrap())
    });
    LocalReasoner::new(Arc::clone(model), "smollm2-135m")
}

/// Runs a turn, collecting its deltas.
async fn turn(r: &dyn Reasoner, request: &Request) -> (Turn, Vec<Delta>) {
    let seen = Mutex::new(Vec::new());
    let sink = |d: Delta| seen.lock().unwrap().push(d);
    let turn = r.turn(request, Some(&sink)).await.unwrap();
    (turn, seen.into_inner().unwrap())
}

fn text_of(deltas: &[Delta]) -> String {
    deltas
        .iter()
        .filter_map(|d| match d {
            Delta::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn question() -> Request {
    Request {
        max_tokens: Some(24),
        ..Request::new(vec![Message::user("What is the capital of France?")])
    }
}

fn read_tool() -> ToolSpec {
    ToolSpec {
        name: "fs.read".into(),
        description: "Read a file in the workspace and return its text.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "the file's path"}},
            "required": ["path"]
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_question_streams_text_that_adds_up_to_the_turn() {
    let r = reasoner();
    let (turn, deltas) = turn(&r, &question()).await;
    assert!(!turn.content.is_empty());
    assert!(turn.tool_calls.is_empty());
    assert!(deltas.len() > 1, "the text came in one piece: {deltas:?}");
    assert_eq!(text_of(&deltas), turn.content);
    assert!(deltas.iter().all(|d| matches!(d, Delta::Text(_))));
    assert!(matches!(turn.finish, Finish::Stop | Finish::Length));
    assert_eq!(turn.provider, "local");
    assert_eq!(turn.model, "smollm2-135m");
    assert_eq!(turn.attempts, 1);
    assert!(turn.usage.reported);
    // The rendered prompt (the default system prompt, the question, the markers) is a few
    // dozen tokens; generation is bounded by max_tokens.
    assert!(
        (20..200).contains(&turn.usage.prompt_tokens),
        "{:?}",
        turn.usage
    );
    assert!((1..=24).contains(&turn.usage.completion_tokens));
    if turn.finish == Finish::Length {
        assert_eq!(turn.usage.completion_tokens, 24);
    }
    // Real tokens: re-encoding the text gives about as many tokens as were counted.
    let encoded = r
        .model()
        .tokenizer()
        .encode(&turn.content, false)
        .unwrap()
        .len() as u64;
    assert!(
        encoded.abs_diff(turn.usage.completion_tokens) <= 2,
        "{encoded} vs {:?}",
        turn.usage
    );
    // The engine's own greedy answer to this question (tests/smollm2.rs checks its
    // tokens; the 135M model is sure of something other than Paris).
    assert!(turn.content.starts_with("L'Étoile, la"), "{}", turn.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_give_identical_turns_streamed_or_not() {
    let r = reasoner();
    let mut request = question();
    request.temperature = Some(0.8);
    request.seed = Some(7);
    let (a, _) = turn(&r, &request).await;
    let b = r.turn(&request, None).await.unwrap();
    assert_eq!(a, b);
    // Sampled (temperature 0.8), yet a third run, streamed again, is the same turn.
    let (c, _) = turn(&r, &request).await;
    assert_eq!(a, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_tool_gives_a_turn_that_parses_whatever_the_model_writes() {
    let r = reasoner();
    let choices = [
        ToolChoice::Auto,
        ToolChoice::Required,
        ToolChoice::Tool("fs.read".into()),
        ToolChoice::None,
    ];
    for choice in choices {
        let request = Request {
            tools: vec![read_tool()],
            tool_choice: choice.clone(),
            max_tokens: Some(32),
            ..Request::new(vec![
                Message::system("You are an agent working in a repository."),
                Message::user("Show me what README.md says."),
            ])
        };
        let (turn, deltas) = turn(&r, &request).await;
        // Identical on a second run, tool-call ids included.
        let again = r.turn(&request, None).await.unwrap();
        assert_eq!(turn, again, "{choice:?}");
        // The turn survives the record's JSON form.
        let json = serde_json::to_string(&turn).unwrap();
        assert_eq!(serde_json::from_str::<Turn>(&json).unwrap(), turn);
        if turn.tool_calls.is_empty() {
            assert_ne!(turn.finish, Finish::ToolCalls, "{choice:?}");
            assert_eq!(text_of(&deltas), turn.content, "{choice:?}");
        } else {
            assert_ne!(choice, ToolChoice::None);
            assert_eq!(turn.finish, Finish::ToolCalls);
            for call in &turn.tool_calls {
                assert_eq!(call.name, "fs.read");
                assert!(call.id.starts_with("call_"));
                assert!(deltas.contains(&Delta::ToolCallStarted {
                    id: call.id.clone(),
                    name: call.name.clone()
                }));
            }
        }
        if choice != ToolChoice::Auto && choice != ToolChoice::None {
            // One tool must be called: the call is begun for the model and its arguments
            // constrained to a JSON object, so the turn is that call, or (if the token
            // limit cut the arguments) the text of the unfinished call.
            if turn.tool_calls.is_empty() {
                assert_eq!(turn.finish, Finish::Length, "{choice:?}: {turn:?}");
                assert!(
                    turn.content
                        .starts_with(r#"{"name": "fs.read", "arguments": {"#),
                    "{choice:?}: {turn:?}"
                );
            } else {
                assert_eq!(turn.tool_calls.len(), 1);
                assert!(turn.tool_calls[0].arguments.is_object());
                assert!(turn.content.is_empty());
            }
        }
        eprintln!("{choice:?}: {turn:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_with_a_tool_result_renders_and_answers() {
    let r = reasoner();
    let request = Request {
        tools: vec![read_tool()],
        max_tokens: Some(16),
        ..Request::new(vec![
            Message::user("Show me what README.md says."),
            Message::assistant(
                "",
                vec![aura_reasoner::ToolCall {
                    id: "call_1".into(),
                    name: "fs.read".into(),
                    arguments: json!({"path": "README.md"}),
                }],
            ),
            Message::tool("call_1", "# Aura\nA governed runtime for agents."),
        ])
    };
    let (turn, _) = turn(&r, &request).await;
    assert!(turn.usage.prompt_tokens > 50, "{:?}", turn.usage);
    assert!(turn.usage.completion_tokens >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_paths_are_clear_errors() {
    let r = reasoner();
    let err = r.turn(&Request::default(), None).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    let err = r
        .turn(
            &Request {
                tool_choice: ToolChoice::Tool("nope".into()),
                tools: vec![read_tool()],
                ..question()
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = r
        .turn(
            &Request {
                temperature: Some(-1.0),
                ..question()
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("temperature"), "{err}");
    // A prompt longer than the context is refused, not truncated.
    let long = "word ".repeat(10_000);
    let err = r
        .turn(&Request::new(vec![Message::user(long)]), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let err = LocalReasoner::open(&dir.path().join("missing.gguf"), &LocalOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = LocalReasoner::open(dir.path(), &LocalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\0\0\0 not really").unwrap();
    let err = LocalReasoner::open(&junk, &LocalOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loads_a_gguf_file_and_describes_it() {
    let r = LocalReasoner::open(
        &smollm2_path(),
        &LocalOptions {
            threads: Some(2),
            max_tokens: Some(4),
            ..LocalOptions::default()
        },
    )
    .unwrap();
    let info = r.describe();
    assert_eq!(info.provider, "local");
    assert_eq!(info.model, "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(info.base_url, None);
    let turn = r
        .turn(&Request::new(vec![Message::user("Hi")]), None)
        .await
        .unwrap();
    assert!(turn.usage.completion_tokens <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_turn_midway_neither_panics_nor_blocks_the_next() {
    let r = reasoner();
    let request = Request {
        max_tokens: Some(2_000),
        ..Request::new(vec![Message::user(
            "Write a long story about a lighthouse.",
        )])
    };
    let first = tokio::sync::Notify::new();
    let sink = |_d: Delta| first.notify_one();
    tokio::select! {
        _ = r.turn(&request, Some(&sink)) => panic!("a 2,000-token turn finished first"),
        () = first.notified() => {}
    }
    // The worker sees the closed channel at its next token and stops; the next turn
    // runs normally.
    let (turn, _) = turn(&r, &question()).await;
    // The engine's own greedy answer to this question (tests/smollm2.rs checks its
    // tokens; the 135M model is sure of something other than Paris).
    assert!(turn.content.starts_with("L'Étoile, la"), "{}", turn.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_config_builds_through_the_registered_opener_and_only_through_it() {
    let config = aura_reasoner::Config::from_toml(&format!(
        "provider = \"local\"\nmodel = {:?}\nname = \"smol\"\nmax_tokens = 3\n",
        smollm2_path().display().to_string()
    ))
    .unwrap();
    let err = aura_reasoner::build(&config, &aura_reasoner::Context::system()).unwrap_err();
    assert!(err.to_string().contains("cannot run local models"), "{err}");
    let context =
        aura_reasoner::Context::system().with_local(Arc::new(aura_infer::reasoner::LocalOpener));
    let r = aura_reasoner::build(&config, &context).unwrap();
    assert_eq!(r.describe().model, "smol");
    let turn = r
        .turn(&Request::new(vec![Message::user("Hi")]), None)
        .await
        .unwrap();
    assert!(turn.usage.completion_tokens <= 3);
    assert_eq!(turn.model, "smol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_call_among_several_tools_names_an_offered_tool() {
    let r = reasoner();
    let write = ToolSpec {
        name: "fs.write".into(),
        description: "Write text to a file in the workspace.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"]
        }),
    };
    let finish = ToolSpec {
        name: "mission.finish".into(),
        description: "Declare the objective reached, with a short summary.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"summary": {"type": "string"}},
            "required": ["summary"]
        }),
    };
    let request = Request {
        tools: vec![read_tool(), write, finish],
        tool_choice: ToolChoice::Required,
        max_tokens: Some(48),
        ..Request::new(vec![
            Message::system("You are an agent working in a repository."),
            Message::user("Read plan.md and summarise it."),
        ])
    };
    let (turn, _) = turn(&r, &request).await;
    assert_eq!(turn, r.turn(&request, None).await.unwrap());
    let offered = ["fs.read", "fs.write", "mission.finish"];
    match turn.tool_calls.as_slice() {
        [call] => {
            assert!(offered.contains(&call.name.as_str()), "{turn:?}");
            assert!(call.arguments.is_object());
            assert_eq!(turn.finish, Finish::ToolCalls);
        }
        [] => {
            // Only a token limit can leave the begun call unfinished.
            assert_eq!(turn.finish, Finish::Length, "{turn:?}");
            assert!(
                offered.iter().any(|n| turn
                    .content
                    .starts_with(&format!(r#"{{"name": "{n}", "arguments": {{"#))),
                "{turn:?}"
            );
        }
        _ => panic!("one call was begun, yet several came back: {turn:?}"),
    }
    eprintln!("{turn:?}");
}

/// A mission's conversation through the local reasoner: every turn re-sends the whole
/// history (the system prompt, the questions, the answers so far). With the prompt cache
/// each turn after the first prefills only what is new; the turns and their streamed
/// deltas are the same as without it, at one and two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_conversation_gives_the_same_turns_with_and_without_the_prompt_cache() {
    let open = |threads: usize, bytes: usize| {
        let model = Model::load(
            &ModelFiles::Gguf(smollm2_path()),
            &LoadOptions {
                threads: Some(threads),
                prompt_cache_bytes: bytes,
                ..LoadOptions::default()
            },
        )
        .unwrap();
        LocalReasoner::new(Arc::new(model), "smollm2-135m")
    };
    async fn talk(r: &LocalReasoner) -> Vec<(Turn, Vec<Delta>)> {
        let mut messages = vec![Message::system("You answer briefly.")];
        let mut out = Vec::new();
        for q in [
            "Which planet is the largest?",
            "How many moons does it have?",
            "Which of them is the biggest?",
        ] {
            messages.push(Message::user(q));
            let request = Request {
                max_tokens: Some(10),
                ..Request::new(messages.clone())
            };
            let (t, deltas) = turn(r, &request).await;
            messages.push(Message::assistant(t.content.clone(), Vec::new()));
            out.push((t, deltas));
        }
        out
    }
    let reference = talk(&open(1, 0)).await;
    for (t, deltas) in &reference {
        assert_eq!(text_of(deltas), t.content);
    }
    for threads in [1, 2] {
        let cached = open(threads, aura_infer::DEFAULT_PROMPT_CACHE_BYTES);
        assert_eq!(talk(&cached).await, reference, "{threads} threads");
        let stats = cached.model().prompt_cache_stats();
        assert_eq!((stats.hits, stats.misses), (2, 1), "{stats:?}");
        assert!(stats.tokens_reused > 0);
    }
}
