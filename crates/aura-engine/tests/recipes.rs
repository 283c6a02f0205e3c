//! Procedural memory end to end (docs/memory.md, "Recipes"): missions save the calls of
//! a completed mission as a recipe and run it again as one step, through the real engine,
//! the real tool registry in real workspaces, a SQLite ledger and (where it matters) the
//! real Cedar policy with the default set. The reasoner is a script.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use aura_core::door::{SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_engine::NewAgent;
use aura_engine::test_util::Answer;
use aura_identity::{Approval, ApprovalId, Level, Namespace, Signed, Verdict};
use aura_kernel::{Effect, Event, MissionSpec, MissionState, Outcome, Recorded, Role};
use serde_json::{Value, json};

mod support;

use support::*;

/// Submits `spec` for `agent` after queueing `answers`, and waits for it to end.
async fn run(
    w: &World,
    agent: AgentId,
    spec: MissionSpec,
    answers: impl IntoIterator<Item = Answer>,
) -> (MissionId, MissionState) {
    w.script.extend(answers);
    let id = w.engine.submit(agent, spec).await.unwrap();
    let end = until(&w.engine, id, MissionState::is_terminal).await;
    (id, end)
}

/// The recorded events of mission `id` of `agent`, in order.
async fn events(w: &World, agent: AgentId, id: MissionId) -> Vec<Event> {
    w.engine
        .record(agent, 1, 100_000)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| Recorded::from_body(&e.entry.body).ok())
        .filter(|r| r.mission == id)
        .map(|r| r.event)
        .collect()
}

/// The effects of `tool`'s calls in `events`, in order.
fn effects(events: &[Event], tool: &str) -> Vec<Effect> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Effect { effect, .. } if effect.tool == tool => Some(effect.clone()),
            _ => None,
        })
        .collect()
}

/// Where in `events` the first event `pick` says yes to is.
fn position(events: &[Event], pick: impl Fn(&Event) -> bool) -> usize {
    events
        .iter()
        .position(pick)
        .unwrap_or_else(|| panic!("no such event in {events:#?}"))
}

fn tools(names: &[&str], workspace: &str) -> MissionSpec {
    spec(names, workspace, 60)
}

/// A recipe of an `fs.write` then an `fs.read` of `notes.md`.
fn write_then_read() -> Value {
    json!([
        {"tool": "fs.write", "arguments": {"path": "notes.md", "content": "hello"}},
        {"tool": "fs.read", "arguments": {"path": "notes.md"}}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_missions_calls_saved_as_a_recipe_run_again_as_one_step_each_call_judged_recorded_and_replayed()
 {
    let w = cedar_world().await;
    // 1. A mission writes and reads a file, and completes.
    let (first, end) = run(
        &w,
        w.agent,
        tools(&["fs.write", "fs.read", "mission.finish"], "one"),
        [Answer::calls([
            ("fs.write", json!({"path": "notes.md", "content": "hello"})),
            ("fs.read", json!({"path": "notes.md"})),
        ])],
    )
    .await;
    assert_eq!(end, MissionState::Completed);

    // 2. A second mission saves the first one's calls as the recipe `x`.
    let (second, end) = run(
        &w,
        w.agent,
        tools(&["memory.recipe.save", "mission.finish"], "two"),
        [Answer::call(
            "memory.recipe.save",
            json!({"name": "x", "mission": first.to_string()}),
        )],
    )
    .await;
    assert_eq!(
        end,
        MissionState::Completed,
        "{:?}",
        w.engine.mission(second).unwrap().reason
    );
    let saved = effects(&events(&w, w.agent, second).await, "memory.recipe.save");
    assert_eq!(saved.len(), 1);
    assert!(saved[0].ok, "{saved:?}");
    assert_eq!(saved[0].output["version"], 1);
    assert_eq!(saved[0].output["calls"], 2);
    assert_eq!(saved[0].output["recipe"]["calls"], write_then_read());
    let digest = saved[0].output["digest"].clone();

    // 3. A third mission runs `x` as one call; its calls run in its own workspace.
    let (third, end) = run(
        &w,
        w.agent,
        tools(
            &["recipe.run", "fs.write", "fs.read", "mission.finish"],
            "three",
        ),
        [Answer::call("recipe.run", json!({"name": "x"}))],
    )
    .await;
    assert_eq!(
        end,
        MissionState::Completed,
        "{:?}",
        w.engine.mission(third).unwrap().reason
    );
    assert_eq!(
        std::fs::read_to_string(ws(&w, "three").join("notes.md")).unwrap(),
        "hello"
    );
    let evs = events(&w, w.agent, third).await;
    let (outer, inner) = evs
        .iter()
        .find_map(|e| match e {
            Event::Expanded {
                call_id,
                digest: d,
                calls,
                recipe,
                ..
            } => {
                assert_eq!(serde_json::to_value(d).unwrap(), digest);
                assert_eq!(recipe.name, "x");
                Some((call_id.clone(), calls.clone()))
            }
            _ => None,
        })
        .expect("the expansion is recorded");
    assert_eq!(inner.len(), 2);
    assert_eq!(inner[0].id, format!("{outer}/1"));
    assert_eq!(inner[0].name, "fs.write");
    assert_eq!(inner[1].name, "fs.read");
    // Each inner call is decided by Cedar (the default set's own policies), attempted
    // before it runs and its effect recorded, in order; then the recipe's one result.
    let expanded = position(&evs, |e| matches!(e, Event::Expanded { .. }));
    let mut last = expanded;
    for call in &inner {
        let decided = position(&evs, |e| {
            matches!(e, Event::Decided { call_id, decision } if call_id == &call.id
                && decision.outcome == Outcome::Permit
                && decision.deciding.iter().any(|p| p.starts_with("aura.")))
        });
        let attempt = position(
            &evs,
            |e| matches!(e, Event::Attempt { call_id, .. } if call_id == &call.id),
        );
        let effect = position(
            &evs,
            |e| matches!(e, Event::Effect { effect, .. } if effect.call_id == call.id && effect.ok),
        );
        assert!(expanded < decided && decided < attempt && attempt < effect);
        assert!(effect > last);
        last = effect;
    }
    let result = position(
        &evs,
        |e| matches!(e, Event::Effect { effect, .. } if effect.call_id == outer),
    );
    assert!(result > last);
    let run_effect = &effects(&evs, "recipe.run")[0];
    assert!(run_effect.ok, "{run_effect:?}");
    assert_eq!(run_effect.output["recipe"], "x");
    assert_eq!(run_effect.output["digest"], digest);
    let results = run_effect.output["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["tool"], "fs.write");
    assert_eq!(results[1]["ok"], true);
    // The reasoner heard one result for its one call: none for the recipe's own calls.
    let m = w.engine.mission(third).unwrap();
    let answered: Vec<&str> = m
        .conversation
        .iter()
        .filter(|msg| msg.role == Role::Tool)
        .filter_map(|msg| msg.tool_call_id.as_deref())
        .collect();
    assert_eq!(answered.len(), 2, "{answered:?}"); // recipe.run, then mission.finish
    assert_eq!(answered[0], outer);
    // The recipe's completed calls are the mission's: they can be undone like any.
    assert_eq!(
        m.completed
            .iter()
            .map(|c| c.tool.as_str())
            .collect::<Vec<_>>(),
        ["fs.write", "fs.read", "recipe.run", "mission.finish"]
    );
    // Replay reproduces every state hash from the record alone.
    assert_eq!(w.engine.replay(third).await.unwrap().unwrap(), *m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_never_widens_authority_a_denied_call_stops_it_with_a_clear_error() {
    let w = cedar_world().await;
    let (_, end) = run(
        &w,
        w.agent,
        tools(&["memory.recipe.save", "mission.finish"], "a"),
        [Answer::call(
            "memory.recipe.save",
            json!({"name": "x", "calls": write_then_read()}),
        )],
    )
    .await;
    assert_eq!(end, MissionState::Completed);

    // At L1 the default policy does not permit `fs.write`: the recipe stops at its first
    // call, and nothing of it runs.
    let mut low = tools(
        &["recipe.run", "fs.write", "fs.read", "mission.finish"],
        "b",
    );
    low.authority.level = Level::L1;
    let (id, end) = run(
        &w,
        w.agent,
        low,
        [Answer::call("recipe.run", json!({"name": "x"}))],
    )
    .await;
    assert_eq!(end, MissionState::Completed);
    assert!(!ws(&w, "b").join("notes.md").exists());
    let evs = events(&w, w.agent, id).await;
    let denied: Vec<&String> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Decided { call_id, decision } if decision.outcome == Outcome::Deny => {
                Some(call_id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(denied.len(), 1);
    assert!(denied[0].ends_with("/1"), "{denied:?}");
    assert!(
        !evs.iter()
            .any(|e| matches!(e, Event::Attempt { call_id, .. } if call_id.contains('/'))),
        "no call of the recipe ran"
    );
    let stopped = &effects(&evs, "recipe.run")[0];
    assert!(!stopped.ok);
    let error = stopped.error.as_deref().unwrap();
    assert!(
        error.contains("recipe `x` stopped at call 1 of 2 (`fs.write`")
            && error.contains("denied by policy"),
        "{error}"
    );
    assert_eq!(stopped.error_kind.as_deref(), Some("unauthorized"));
    assert_eq!(stopped.output["results"][0]["error"], "denied by policy");
    assert!(w.engine.replay(id).await.unwrap().is_ok());

    // A call of a tool the mission was not given is refused the same way.
    let (id, end) = run(
        &w,
        w.agent,
        tools(&["recipe.run", "fs.read", "mission.finish"], "c"),
        [Answer::call("recipe.run", json!({"name": "x"}))],
    )
    .await;
    assert_eq!(end, MissionState::Completed);
    assert!(!ws(&w, "c").join("notes.md").exists());
    let stopped = &effects(&events(&w, w.agent, id).await, "recipe.run")[0];
    let error = stopped.error.as_deref().unwrap();
    assert!(error.contains("not among the mission's tools"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agents_recipes_and_missions_cannot_be_seen_or_run() {
    let w = cedar_world().await;
    let (first, _) = run(
        &w,
        w.agent,
        tools(&["fs.write", "mission.finish"], "one"),
        [Answer::call(
            "fs.write",
            json!({"path": "notes.md", "content": "hello"}),
        )],
    )
    .await;
    let (_, end) = run(
        &w,
        w.agent,
        tools(&["memory.recipe.save", "mission.finish"], "two"),
        [Answer::call(
            "memory.recipe.save",
            json!({"name": "x", "mission": first.to_string()}),
        )],
    )
    .await;
    assert_eq!(end, MissionState::Completed);

    // An agent of the same namespace, and one of another.
    let neighbour = create_agent(&w.engine).await;
    let stranger = w
        .engine
        .create_agent(NewAgent {
            name: "s".into(),
            level: Level::L2,
            namespace: Namespace::new("team-b").unwrap(),
            public_key: None,
        })
        .await
        .unwrap()
        .id;
    for (agent, namespace) in [(neighbour, "default"), (stranger, "team-b")] {
        let mut s = tools(
            &[
                "recipe.run",
                "memory.recipe.save",
                "fs.write",
                "mission.finish",
            ],
            "mine",
        );
        s.namespace = Namespace::new(namespace).unwrap();
        let (id, end) = run(
            &w,
            agent,
            s,
            [
                Answer::call("recipe.run", json!({"name": "x"})),
                Answer::call(
                    "memory.recipe.save",
                    json!({"name": "y", "mission": first.to_string()}),
                ),
            ],
        )
        .await;
        assert_eq!(end, MissionState::Completed);
        let evs = events(&w, agent, id).await;
        let run_effect = &effects(&evs, "recipe.run")[0];
        assert_eq!(
            run_effect.error_kind.as_deref(),
            Some("not_found"),
            "{run_effect:?}"
        );
        assert!(!evs.iter().any(|e| matches!(e, Event::Expanded { .. })));
        let save = &effects(&evs, "memory.recipe.save")[0];
        assert_eq!(save.error_kind.as_deref(), Some("not_found"), "{save:?}");
        assert!(
            save.error
                .as_deref()
                .unwrap()
                .contains("is not a completed mission of this agent")
        );
    }
    assert!(!ws(&w, "mine").join("notes.md").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_fill_a_recipe_saved_and_run_in_one_mission_and_replay_outlives_forgetting_it() {
    let w = world().await;
    let all = [
        "memory.recipe.save",
        "memory.recipe.forget",
        "recipe.run",
        "fs.write",
        "fs.read",
        "mission.finish",
    ];
    let greet = json!({
        "name": "greet",
        "params": ["path", "who"],
        "calls": [
            {"tool": "fs.write", "arguments": {"path": "{{path}}", "content": "hi {{who}}"}},
            {"tool": "fs.read", "arguments": {"path": "{{path}}"}}
        ]
    });
    let args = json!({"name": "greet", "arguments": {"path": "a.txt", "who": "ann"}});
    let (id, end) = run(
        &w,
        w.agent,
        tools(&all, "p"),
        [
            Answer::call("memory.recipe.save", greet.clone()),
            Answer::call("recipe.run", args.clone()),
            Answer::call("memory.recipe.forget", json!({"name": "greet"})),
            Answer::call("recipe.run", args.clone()),
            Answer::call("memory.recipe.save", greet),
        ],
    )
    .await;
    assert_eq!(
        end,
        MissionState::Completed,
        "{:?}",
        w.engine.mission(id).unwrap().reason
    );
    assert_eq!(
        std::fs::read_to_string(ws(&w, "p").join("a.txt")).unwrap(),
        "hi ann"
    );
    let evs = events(&w, w.agent, id).await;
    let runs = effects(&evs, "recipe.run");
    assert!(runs[0].ok, "{:?}", runs[0]);
    assert_eq!(
        runs[1].error_kind.as_deref(),
        Some("not_found"),
        "{:?}",
        runs[1]
    );
    assert!(effects(&evs, "memory.recipe.forget")[0].ok);
    // Saving a forgotten name again makes its next version, the one in force.
    assert_eq!(effects(&evs, "memory.recipe.save")[1].output["version"], 2);
    let book = w.engine.recipes(w.agent).await.unwrap();
    assert_eq!(book.len(), 1);
    assert_eq!((book[0].0.name.as_str(), book[0].0.version), ("greet", 2));
    assert_eq!(book[0].1, book[0].0.digest().unwrap());
    // The run before the forget replays from the record: replay never reads the book.
    let m = w.engine.mission(id).unwrap();
    assert_eq!(w.engine.replay(id).await.unwrap().unwrap(), *m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_recipes_and_runs_get_clear_errors_and_change_nothing() {
    let w = world().await;
    let save = |calls: Value| {
        Answer::call(
            "memory.recipe.save",
            json!({"name": "bad", "params": ["path"], "calls": calls}),
        )
    };
    let cases: Vec<(Answer, &str, &str)> = vec![
        (
            save(json!([{"tool": "recipe.run", "arguments": {"name": "{{path}}"}}])),
            "invalid_arguments",
            "recipes do not nest",
        ),
        (
            save(json!([{"tool": "no.such.tool", "arguments": {"path": "{{path}}"}}])),
            "unknown_tool",
            "there is no tool `no.such.tool`",
        ),
        (
            save(json!([{"tool": "fs.read", "arguments": {"path": "{{path"}}])),
            "invalid_arguments",
            "never closes",
        ),
        (
            save(
                json!([{"tool": "fs.write", "arguments": {"path": "{{path}}", "content": "x".repeat(70_000)}}]),
            ),
            "too_large",
            "the most is 65536",
        ),
        (
            Answer::call("recipe.run", json!({"name": "nothing"})),
            "not_found",
            "there is no recipe `nothing`",
        ),
    ];
    let answers: Vec<Answer> = cases.iter().map(|(a, _, _)| a.clone()).collect();
    let (id, end) = run(
        &w,
        w.agent,
        tools(
            &[
                "memory.recipe.save",
                "recipe.run",
                "fs.read",
                "fs.write",
                "mission.finish",
            ],
            "m",
        ),
        answers,
    )
    .await;
    assert_eq!(end, MissionState::Completed);
    let evs = events(&w, w.agent, id).await;
    let failed: Vec<Effect> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Effect { effect, .. } if effect.tool != "mission.finish" => Some(effect.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), cases.len(), "{failed:#?}");
    for (effect, (_, kind, text)) in failed.iter().zip(&cases) {
        assert!(!effect.ok);
        assert_eq!(effect.error_kind.as_deref(), Some(*kind), "{effect:?}");
        assert!(
            effect.error.as_deref().unwrap().contains(text),
            "{effect:?}"
        );
    }
    // A run with an argument the recipe lacks, of a recipe that is well made.
    let (id, _) = run(
        &w,
        w.agent,
        tools(&["memory.recipe.save", "recipe.run", "fs.read", "mission.finish"], "m"),
        [
            Answer::call(
                "memory.recipe.save",
                json!({"name": "ok", "params": ["path"], "calls": [{"tool": "fs.read", "arguments": {"path": "{{path}}"}}]}),
            ),
            Answer::call("recipe.run", json!({"name": "ok"})),
        ],
    )
    .await;
    let evs = events(&w, w.agent, id).await;
    let run_effect = &effects(&evs, "recipe.run")[0];
    assert!(
        run_effect
            .error
            .as_deref()
            .unwrap()
            .contains("needs the argument `path`"),
        "{run_effect:?}"
    );
    assert!(w.engine.replay(id).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_call_of_a_recipe_waits_for_an_approval_naming_it_before_any_call_runs() {
    let w = cedar_world().await;
    let recipe = json!({"name": "clean", "calls": [
        {"tool": "fs.write", "arguments": {"path": "old.log", "content": "x"}},
        {"tool": "fs.delete", "arguments": {"path": "old.log"}}
    ]});
    w.script.extend([
        Answer::call("memory.recipe.save", recipe),
        Answer::call("recipe.run", json!({"name": "clean"})),
    ]);
    let id = w
        .engine
        .submit(
            w.agent,
            tools(
                &[
                    "memory.recipe.save",
                    "recipe.run",
                    "fs.write",
                    "fs.delete",
                    "mission.finish",
                ],
                "e",
            ),
        )
        .await
        .unwrap();
    // The delete is destructive: at L2 the default set escalates it to L3, and the whole
    // recipe waits, its write not run either.
    until(&w.engine, id, |s| s == MissionState::Escalated).await;
    assert!(!ws(&w, "e").join("old.log").exists());
    let m = w.engine.mission(id).unwrap();
    let esc = m.escalation.clone().unwrap();
    assert_eq!(esc.level, Level::L3);
    assert!(esc.call_id.as_deref().unwrap().ends_with("/2"), "{esc:?}");
    let key = Signer::ephemeral("alice", &SeededEntropy::new(5)).unwrap();
    let cred = w
        .engine
        .issue_operator_credential(
            "alice",
            key.public_key(),
            Level::L3,
            Namespace::new("default").unwrap(),
        )
        .unwrap();
    let now = aura_core::door::Clock::now(&SystemClock);
    let approval = Approval {
        id: ApprovalId::from_bytes([7; 16]),
        mission: id,
        answers: m.escalation_answers(),
        request: esc.request,
        verdict: Verdict::Approve,
        reason: "old logs go".into(),
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(600)),
        approver: key.public_key(),
    };
    w.engine
        .answer(id, Signed::sign(approval, &key).unwrap(), cred)
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Completed,
        "{:?}",
        w.engine.mission(id).unwrap().reason
    );
    assert!(
        !ws(&w, "e").join("old.log").exists(),
        "written, then deleted"
    );
    let evs = events(&w, w.agent, id).await;
    let run = &effects(&evs, "recipe.run")[0];
    assert!(run.ok, "{run:?}");
    assert!(evs.iter().any(|e| matches!(e, Event::Approved { .. })));
    assert!(w.engine.replay(id).await.unwrap().is_ok());
}
