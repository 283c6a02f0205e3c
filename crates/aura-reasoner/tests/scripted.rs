//! The scripted reasoner through `build`: it replays a file in order with deltas, says
//! clearly when it runs out or when the mission diverges from the script, and refuses
//! broken files.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::{Arc, Mutex};

use aura_reasoner::{
    Config, Context, Delta, Error, Finish, Message, Reasoner, Request, ScriptedConfig, ToolSpec,
    Usage, build,
};
use serde_json::json;

const SCRIPT: &str = r#"
{"content": "I will list the directory.", "tool_calls": [{"name": "fs_list", "arguments": {"path": "."}}], "usage": {"prompt_tokens": 50, "completion_tokens": 12}, "expect": {"system_contains": "Objective", "tools_offered": ["fs_list"]}}

{"content": "The directory holds README.md.", "expect": {"last_tool_result_contains": "README.md"}, "model": "demo-model"}
"#;

fn scripted(text: &str) -> (Arc<dyn Reasoner>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mission.jsonl");
    std::fs::write(&path, text).unwrap();
    let config = Config::Scripted(ScriptedConfig { path });
    (build(&config, &Context::system()).unwrap(), dir)
}

fn first_request() -> Request {
    let mut r = Request::new(vec![
        Message::system("Objective: describe the directory."),
        Message::user("go"),
    ]);
    r.tools = vec![ToolSpec {
        name: "fs_list".into(),
        description: "lists".into(),
        parameters: json!({"type": "object"}),
    }];
    r
}

#[tokio::test]
async fn a_script_replays_in_order_and_streams_its_text() {
    let (reasoner, _dir) = scripted(SCRIPT);
    assert_eq!(reasoner.describe().provider, "scripted");
    let seen = Mutex::new(Vec::new());
    let sink = |d: Delta| seen.lock().unwrap().push(d);

    let mut request = first_request();
    let first = reasoner.turn(&request, Some(&sink)).await.unwrap();
    assert_eq!(first.finish, Finish::ToolCalls);
    assert_eq!(first.tool_calls[0].id, "call_1_1");
    assert_eq!(first.tool_calls[0].arguments, json!({"path": "."}));
    assert_eq!(
        first.usage,
        Usage {
            prompt_tokens: 50,
            completion_tokens: 12,
            reported: true
        }
    );
    assert_eq!(first.model, "scripted");
    let deltas = seen.lock().unwrap().clone();
    assert_eq!(deltas[0], Delta::Text("I ".into()));
    let text: String = deltas
        .iter()
        .filter_map(|d| {
            if let Delta::Text(t) = d {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(text, first.content);
    assert!(deltas.contains(&Delta::ToolCallStarted {
        id: "call_1_1".into(),
        name: "fs_list".into()
    }));

    request.messages.push(Message::from(&first));
    request
        .messages
        .push(Message::tool("call_1_1", "README.md\nsrc/"));
    let second = reasoner.turn(&request, None).await.unwrap();
    assert_eq!(second.content, "The directory holds README.md.");
    assert_eq!(second.finish, Finish::Stop);
    assert_eq!(second.model, "demo-model");
    assert!(!second.usage.reported);

    let err = reasoner.turn(&request, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ScriptExhausted {
                turns: 2,
                request: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("has no turn left for request 3 (it holds 2)"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_mission_that_diverges_from_the_script_fails_loudly() {
    let (reasoner, _dir) = scripted(SCRIPT);
    let mut request = first_request();
    reasoner.turn(&request, None).await.unwrap();
    request
        .messages
        .push(Message::tool("call_1_1", "Cargo.toml"));
    let err = reasoner.turn(&request, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "scripted turn 2 expected the last message to be a tool result containing \"README.md\", but it reads \"Cargo.toml\""
    );

    let (reasoner, _dir) = scripted(SCRIPT);
    let mut request = first_request();
    request.tools.clear();
    let err = reasoner.turn(&request, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "scripted turn 1 expected tool \"fs_list\" to be offered, but the tools offered are []"
    );
}

#[tokio::test]
async fn a_json_array_script_works_the_same() {
    let (reasoner, _dir) =
        scripted(r#"[{"content": "one"}, {"content": "two", "finish": "length"}]"#);
    let r = Request::new(vec![Message::user("x")]);
    assert_eq!(reasoner.turn(&r, None).await.unwrap().content, "one");
    let second = reasoner.turn(&r, None).await.unwrap();
    assert_eq!(second.finish, Finish::Length);
}

#[test]
fn broken_script_files_are_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Config::Scripted(ScriptedConfig {
        path: dir.path().join("nope.jsonl"),
    });
    let err = build(&missing, &Context::system()).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid script ") && err.contains("nope.jsonl: cannot read it"),
        "{err}"
    );

    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"content\": \"a\"}\n{\"content\": \"b\", \"tool_calls\": [{\"nme\": \"f\"}]}\n",
    )
    .unwrap();
    let err = build(
        &Config::Scripted(ScriptedConfig { path }),
        &Context::system(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bad.jsonl: line 2: unknown field `nme`"),
        "{err}"
    );

    let path = dir.path().join("binary.jsonl");
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    let err = build(
        &Config::Scripted(ScriptedConfig { path }),
        &Context::system(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("binary.jsonl: cannot read it"), "{err}");
}
