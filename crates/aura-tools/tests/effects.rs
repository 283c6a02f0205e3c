//! Effects as the ledger keeps them: a stable JSON form (pinned below), versioned,
//! refusing unknown fields; and the two tools whose effects carry work for the node and
//! the kernel, `agent.send` and `mission.finish`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use aura_core::AgentId;
use aura_tools::{Compensation, Effect, ErrorKind, Limits, Target, ToolError};
use serde_json::json;
use support::{World, builtin, call, run};

/// The JSON form is a format other code reads back: this pins it byte for byte.
#[test]
fn the_json_form_is_stable() {
    let mut effect = Effect::ok(
        "fs.write",
        "c1",
        json!({"path": "a", "bytes": 3, "created": false}),
    );
    effect.compensation = Some(Compensation::RestoreFile {
        path: "a".into(),
        previous: Some(vec![0, 1, 2, 255]),
        created_dirs: vec![],
        mode: None,
    });
    assert_eq!(
        String::from_utf8(effect.to_json()).unwrap(),
        r#"{"v":1,"tool":"fs.write","call_id":"c1","outcome":{"status":"ok","value":{"bytes":3,"created":false,"path":"a"}},"compensation":{"type":"restore_file","path":"a","previous":"AAEC/w=="}}"#
    );
    let failed = Effect::failed(
        "fs.read",
        "c2",
        ToolError::new(ErrorKind::NotFound, "fs.read: `x` does not exist"),
    );
    assert_eq!(
        String::from_utf8(failed.to_json()).unwrap(),
        r#"{"v":1,"tool":"fs.read","call_id":"c2","outcome":{"status":"failed","kind":"not_found","message":"fs.read: `x` does not exist"}}"#
    );
    let created = Compensation::RestoreFile {
        path: "d/f".into(),
        previous: None,
        created_dirs: vec!["d".into()],
        mode: Some(0o640),
    };
    assert_eq!(
        serde_json::to_string(&created).unwrap(),
        r#"{"type":"restore_file","path":"d/f","previous":null,"created_dirs":["d"],"mode":416}"#
    );
    for e in [effect, failed] {
        assert_eq!(Effect::from_json(&e.to_json()).unwrap(), e);
    }
}

#[test]
fn other_versions_unknown_fields_and_bad_base64_are_refused() {
    let good = r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"ok","value":null}}"#;
    assert!(Effect::from_json(good.as_bytes()).is_ok());
    let bad = [
        r#"{"v":2,"tool":"t","call_id":"c","outcome":{"status":"ok","value":null}}"#,
        r#"{"tool":"t","call_id":"c","outcome":{"status":"ok","value":null}}"#,
        r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"ok","value":null},"extra":1}"#,
        r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"maybe"}}"#,
        r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"failed","kind":"oops","message":""}}"#,
        r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"ok","value":1},"compensation":{"type":"restore_file","path":"a","previous":"***"}}"#,
        r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"ok","value":1},"compensation":{"type":"format_disk"}}"#,
        r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"ok","value":1,"extra":2}}"#,
        r#"{"v":1,"tool":"t","call_id":"c","outcome":{"status":"ok","value":1},"compensation":{"type":"command","command":"x","extra":1}}"#,
        "not json",
        "",
    ];
    for text in bad {
        assert!(Effect::from_json(text.as_bytes()).is_err(), "{text}");
    }
}

#[tokio::test]
async fn agent_send_produces_a_message_for_the_node_to_deliver() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    let bob = AgentId::from_bytes([8; 16]);
    let args = json!({"to": bob.to_string(), "body": {"task": "review", "files": ["a.rs"]}});
    let prepared = r.prepare(&call("agent.send", args.clone())).unwrap();
    assert_eq!(prepared.target, Target::Agent { agent: bob });
    assert!(!prepared.destructive);
    let e = r.execute(&ctx, &prepared).await;
    assert!(e.is_ok(), "{e:?}");
    let message = e.message.clone().unwrap();
    assert_eq!(
        (message.from, message.to, message.mission),
        (w.agent, bob, w.mission)
    );
    assert_eq!(message.namespace, w.namespace);
    assert_eq!(message.body, args["body"]);
    assert!(e.compensation.is_none() && e.finish.is_none());
    assert_eq!(Effect::from_json(&e.to_json()).unwrap(), e);

    let mut small = w.ctx();
    small.limits = Limits {
        message_bytes: 10,
        ..Limits::default()
    };
    let e = run(&r, &small, "agent.send", args).await;
    assert_eq!(e.error_kind(), Some(ErrorKind::TooLarge));
    assert!(e.message.is_none());
}

#[tokio::test]
async fn mission_finish_carries_the_summary() {
    let w = World::new();
    let r = builtin();
    let prepared = r
        .prepare(&call(
            "mission.finish",
            json!({"summary": "tests pass; PR opened"}),
        ))
        .unwrap();
    assert_eq!(prepared.target, Target::Mission);
    let e = r.execute(&w.ctx(), &prepared).await;
    assert_eq!(e.finish.as_deref(), Some("tests pass; PR opened"));
    let mut small = w.ctx();
    small.limits.summary_bytes = 4;
    let e = run(&r, &small, "mission.finish", json!({"summary": "too long"})).await;
    assert_eq!(e.error_kind(), Some(ErrorKind::TooLarge));
    assert!(e.finish.is_none());
}

#[test]
fn descriptors_say_what_policy_needs() {
    let r = builtin();
    let d = |name: &str| r.get(name).unwrap().descriptor().clone();
    for (name, destructive, compensable) in [
        ("fs.read", false, false),
        ("fs.write", true, true),
        ("fs.list", false, false),
        ("fs.delete", true, true),
        ("cmd.run", true, true),
        ("http.fetch", false, false),
        ("agent.send", false, false),
        ("mission.finish", false, false),
    ] {
        let desc = d(name);
        assert_eq!(
            (desc.destructive, desc.compensable),
            (destructive, compensable),
            "{name}"
        );
        assert!(!desc.description.is_empty());
    }
    // Registering a second tool under a taken name, or under a bad name, is refused.
    let mut r2 = builtin();
    let err = r2.register(r.get("fs.read").unwrap().clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a tool named `fs.read` is already registered"
    );
}

fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z./\\\\:@\u{0}-\u{7f}é]{0,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("path".to_owned()),
                    Just("content".to_owned()),
                    Just("url".to_owned()),
                    Just("command".to_owned()),
                    Just("to".to_owned()),
                    Just("body".to_owned()),
                    Just("summary".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Hostile bytes where a recorded effect should be: an error, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let _ = Effect::from_json(&bytes);
    }

    /// Arbitrary arguments to every tool: prepared or refused with a message naming the
    /// tool, never a panic; and a prepared call's target is what a second preparation
    /// says (the registry relies on that to detect edited preparations).
    #[test]
    fn preparing_arbitrary_arguments_never_panics(arguments in any_json()) {
        let r = builtin();
        for tool in support::ALL_TOOLS {
            match r.prepare(&call(tool, arguments.clone())) {
                Ok(p) => {
                    let again = r.prepare(&call(tool, arguments.clone())).unwrap();
                    proptest::prop_assert_eq!(p, again);
                }
                Err(e) => proptest::prop_assert!(e.message.starts_with(tool), "{}", e),
            }
        }
    }
}
