//! The recorded form of a turn: the kernel writes turns into the ledger and replays
//! them, so this JSON is part of Aura's record format. A change that breaks these
//! strings breaks replay of every mission recorded before it.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_reasoner::{Delta, Finish, ToolCall, Turn, Usage};
use serde_json::json;

fn turn(finish: Finish) -> Turn {
    Turn {
        content: "Reading it.".into(),
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "fs_read".into(),
            arguments: json!({"path": "a.txt"}),
        }],
        finish,
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            reported: true,
        },
        provider: "openai".into(),
        model: "m".into(),
        response_id: Some("chatcmpl-1".into()),
        attempts: 2,
    }
}

#[test]
fn a_turn_has_one_stable_json_form() {
    let t = turn(Finish::ToolCalls);
    let text = serde_json::to_string(&t).unwrap();
    assert_eq!(
        text,
        r#"{"content":"Reading it.","tool_calls":[{"id":"call_1","name":"fs_read","arguments":{"path":"a.txt"}}],"finish":"tool_calls","usage":{"prompt_tokens":10,"completion_tokens":5,"reported":true},"provider":"openai","model":"m","response_id":"chatcmpl-1","attempts":2}"#
    );
    assert_eq!(serde_json::from_str::<Turn>(&text).unwrap(), t);
}

#[test]
fn every_finish_has_its_name() {
    for (finish, text) in [
        (Finish::Stop, r#""stop""#),
        (Finish::Length, r#""length""#),
        (Finish::ToolCalls, r#""tool_calls""#),
        (Finish::ContentFilter, r#""content_filter""#),
        (
            Finish::Other("pause_turn".into()),
            r#"{"other":"pause_turn"}"#,
        ),
    ] {
        assert_eq!(serde_json::to_string(&finish).unwrap(), text);
        assert_eq!(serde_json::from_str::<Finish>(text).unwrap(), finish);
    }
}

#[test]
fn turns_recorded_before_optional_fields_existed_still_read() {
    let old = r#"{"content":"","finish":"stop","usage":{"prompt_tokens":1,"completion_tokens":2},"provider":"scripted","model":"scripted","attempts":1}"#;
    let t: Turn = serde_json::from_str(old).unwrap();
    assert!(t.tool_calls.is_empty());
    assert!(!t.usage.reported);
    assert_eq!(t.response_id, None);
}

#[test]
fn deltas_serialise_for_watchers() {
    assert_eq!(
        serde_json::to_string(&Delta::Text("hi".into())).unwrap(),
        r#"{"text":"hi"}"#
    );
    assert_eq!(
        serde_json::to_string(&Delta::ToolCallStarted {
            id: "c".into(),
            name: "f".into()
        })
        .unwrap(),
        r#"{"tool_call_started":{"id":"c","name":"f"}}"#
    );
    assert_eq!(
        serde_json::to_string(&Delta::Reset { attempt: 2 }).unwrap(),
        r#"{"reset":{"attempt":2}}"#
    );
}
