//! Execution tokens: the registry refuses every call whose token is missing, expired, not
//! yet valid, for another mission, agent or namespace, out of scope, untrusted, tampered
//! with, or presented after the mission ended, and the tool never runs.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use aura_core::{AgentId, MissionId};
use aura_identity::{Namespace, TokenError};
use aura_tools::{Compensation, ErrorKind, Outcome, ToolContext, Unauthorized, authorize};
use serde_json::json;
use support::{World, builtin, run, t};

/// What a test does to the context before the call.
type Setup = fn(&World, &mut ToolContext);

/// Whether a refusal is the expected one.
type Expect = fn(&Unauthorized) -> bool;

fn cases() -> Vec<(&'static str, Setup, Expect)> {
    vec![
        (
            "missing",
            |_, c| c.token = None,
            |e| matches!(e, Unauthorized::Token(TokenError::Missing)),
        ),
        (
            "expired",
            |_, c| c.now = t(3600),
            |e| matches!(e, Unauthorized::Token(TokenError::Expired(_))),
        ),
        (
            "not yet valid",
            |_, c| c.now = t(0).saturating_sub(std::time::Duration::from_secs(1)),
            |e| matches!(e, Unauthorized::Token(TokenError::NotYetValid(_))),
        ),
        (
            "other mission",
            |w, c| {
                let other = MissionId::from_bytes([6; 16]);
                c.token = Some(w.token_with(other, &["fs.write"], 3600, &w.node));
            },
            |e| matches!(e, Unauthorized::Token(TokenError::WrongMission { .. })),
        ),
        (
            "out of scope",
            |w, c| {
                c.token = Some(w.token_with(w.mission, &["fs.read"], 3600, &w.node));
            },
            |e| matches!(e, Unauthorized::Token(TokenError::OutOfScope(tool)) if tool == "fs.write"),
        ),
        (
            "after the end",
            |_, c| c.mission_active = false,
            |e| matches!(e, Unauthorized::Token(TokenError::MissionEnded(_))),
        ),
        (
            "untrusted issuer",
            |w, c| {
                c.token = Some(w.token_with(w.mission, &["fs.write"], 3600, &w.stranger));
            },
            |e| matches!(e, Unauthorized::Token(TokenError::Untrusted(_))),
        ),
        (
            "tampered scope",
            |w, c| {
                let mut token = w.token_with(w.mission, &["fs.read"], 3600, &w.node);
                token.statement.tools.push("fs.write".into());
                c.token = Some(token);
            },
            |e| matches!(e, Unauthorized::Token(TokenError::Untrusted(_))),
        ),
        (
            "tampered expiry",
            |w, c| {
                let mut token = w.token_with(w.mission, &["fs.write"], 5, &w.node);
                token.statement.expires_at = t(999_999);
                c.token = Some(token);
            },
            |e| matches!(e, Unauthorized::Token(TokenError::Untrusted(_))),
        ),
        (
            "other agent",
            |_, c| c.agent = AgentId::from_bytes([4; 16]),
            |e| matches!(e, Unauthorized::OtherAgent { .. }),
        ),
        (
            "other namespace",
            |_, c| c.namespace = Namespace::new("team-b").unwrap(),
            |e| matches!(e, Unauthorized::OtherNamespace { .. }),
        ),
    ]
}

#[tokio::test]
async fn every_bad_token_is_refused_and_the_tool_never_runs() {
    let w = World::new();
    let r = builtin();
    assert!(authorize(&w.ctx(), "fs.write").is_ok());
    for (name, setup, expect) in cases() {
        let mut ctx = w.ctx();
        setup(&w, &mut ctx);
        let refusal = authorize(&ctx, "fs.write").unwrap_err();
        assert!(expect(&refusal), "{name}: got {refusal:?}");

        let e = run(&r, &ctx, "fs.write", json!({"path": "f", "content": "x"})).await;
        match &e.outcome {
            Outcome::Failed { kind, message } => {
                assert_eq!(*kind, ErrorKind::Unauthorized, "{name}");
                assert_eq!(message, &format!("fs.write: refused: {refusal}"), "{name}");
            }
            Outcome::Ok { .. } => panic!("{name}: the call ran"),
        }
        assert!(e.compensation.is_none());
        assert!(!w.ws("f").exists(), "{name}: the tool ran");
    }
}

/// Refusals come before anything else, for every tool: even a call whose arguments are
/// fine and whose tool needs no IO (`mission.finish`) produces no finish.
#[tokio::test]
async fn refusals_cover_every_builtin() {
    let w = World::new();
    let r = builtin();
    let mut ctx = w.ctx();
    ctx.mission_active = false;
    let calls = [
        ("fs.read", json!({"path": "f"})),
        ("fs.write", json!({"path": "f", "content": "x"})),
        ("fs.list", json!({})),
        ("fs.delete", json!({"path": "f"})),
        ("cmd.run", json!({"command": "true"})),
        ("http.fetch", json!({"url": "https://example.com/"})),
        (
            "agent.send",
            json!({"to": AgentId::from_bytes([8; 16]).to_string(), "body": 1}),
        ),
        ("mission.finish", json!({"summary": "done"})),
    ];
    for (tool, args) in calls {
        let e = run(&r, &ctx, tool, args).await;
        assert_eq!(e.error_kind(), Some(ErrorKind::Unauthorized), "{tool}");
        assert!(e.finish.is_none() && e.message.is_none() && e.compensation.is_none());
    }
}

/// Compensations run when a mission fails, often because it timed out or ended: expiry
/// and the end do not stop them, but the token must still be this mission's, trusted,
/// and cover the tool.
#[tokio::test]
async fn compensation_needs_this_missions_token_but_survives_expiry_and_the_end() {
    let w = World::new();
    let r = builtin();
    std::fs::write(w.ws("f"), b"before").unwrap();
    let e = run(
        &r,
        &w.ctx(),
        "fs.write",
        json!({"path": "f", "content": "after"}),
    )
    .await;
    let comp: Compensation = e.compensation.clone().unwrap();

    let mut late = w.ctx();
    late.now = t(100_000);
    late.mission_active = false;
    r.compensate(&late, "fs.write", &comp).await.unwrap();
    assert_eq!(std::fs::read(w.ws("f")).unwrap(), b"before");

    let refused: Vec<(&str, Setup)> = vec![
        ("missing", |_, c| c.token = None),
        ("other mission", |w, c| {
            c.token =
                Some(w.token_with(MissionId::from_bytes([6; 16]), &["fs.write"], 3600, &w.node));
        }),
        ("untrusted", |w, c| {
            c.token = Some(w.token_with(w.mission, &["fs.write"], 3600, &w.stranger));
        }),
        ("out of scope", |w, c| {
            c.token = Some(w.token_with(w.mission, &["fs.read"], 3600, &w.node));
        }),
        ("other agent", |_, c| c.agent = AgentId::from_bytes([4; 16])),
    ];
    std::fs::write(w.ws("f"), b"after").unwrap();
    for (name, setup) in refused {
        let mut ctx = w.ctx();
        setup(&w, &mut ctx);
        let err = r.compensate(&ctx, "fs.write", &comp).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{name}: {err}");
        assert_eq!(std::fs::read(w.ws("f")).unwrap(), b"after", "{name}");
    }
}

#[tokio::test]
async fn unknown_tools_and_mismatched_preparations_are_refused() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    let err = r
        .prepare(&support::call("fs.format", json!({})))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownTool);
    assert_eq!(err.message, "there is no tool named `fs.format`");

    // A prepared call whose target was edited after policy saw it does not run.
    let mut prepared = r
        .prepare(&support::call(
            "fs.write",
            json!({"path": "ok.txt", "content": "x"}),
        ))
        .unwrap();
    prepared.target = aura_tools::Target::Path {
        path: "harmless.txt".into(),
    };
    let e = r.execute(&ctx, &prepared).await;
    assert_eq!(e.error_kind(), Some(ErrorKind::InvalidArguments), "{e:?}");
    assert!(!w.ws("ok.txt").exists());
    let mut prepared = r
        .prepare(&support::call("fs.delete", json!({"path": "ok.txt"})))
        .unwrap();
    prepared.destructive = false;
    let e = r.execute(&ctx, &prepared).await;
    assert_eq!(e.error_kind(), Some(ErrorKind::InvalidArguments), "{e:?}");
}
