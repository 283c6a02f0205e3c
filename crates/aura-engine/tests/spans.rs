//! The engine's tracing spans, recorded in process by a subscriber layer of the test's own:
//! one `kernel.step` per start and step, one `policy.decide` per decision and one
//! `tool.call` per attempt, each carrying the mission and agent ids, the decisions and
//! calls inside the step that made them. The only test in this binary, because it installs
//! the process's global subscriber (the actors run on the runtime's worker threads).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aura_engine::test_util::Answer;
use aura_kernel::MissionState;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

mod support;

use support::*;

/// A span as the test saw it: its name, its fields and its parent's name.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<&'static str>,
}

/// Every span opened, in order; live spans by id (ids are reused once a span closes).
#[derive(Default)]
struct Spans {
    all: Vec<Seen>,
    live: BTreeMap<u64, usize>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Spans>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.metadata().name());
        let mut spans = self.0.lock().unwrap();
        let at = spans.all.len();
        spans.all.push(Seen {
            name: attrs.metadata().name(),
            fields,
            parent,
        });
        spans.live.insert(id.into_u64(), at);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(at) = spans.live.get(&id.into_u64()).copied() {
            values.record(&mut Fields(&mut spans.all[at].fields));
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        self.0.lock().unwrap().live.remove(&id.into_u64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_decisions_and_tool_calls_are_spans_carrying_mission_and_agent_ids() {
    let recorder = Recorder::default();
    tracing_subscriber::registry()
        .with(recorder.clone())
        .try_init()
        .unwrap();

    let w = world().await;
    std::fs::create_dir_all(ws(&w, "one")).unwrap();
    std::fs::write(ws(&w, "one").join("notes.md"), "hello").unwrap();
    w.script.extend([
        Answer::calls([("fs.read", json!({"path": "notes.md"}))]),
        Answer::calls([("fs.read", json!({"path": "missing.md"}))]),
    ]);
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.read", "mission.finish"], "one", 60))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    let (mission, agent) = (id.to_string(), w.agent.to_string());
    let spans = recorder.0.lock().unwrap().all.clone();
    let named = |name: &str| -> Vec<&Seen> { spans.iter().filter(|s| s.name == name).collect() };
    let ids = |s: &Seen| {
        assert_eq!(s.fields["mission_id"], mission, "{s:?}");
        assert_eq!(s.fields["agent_id"], agent, "{s:?}");
    };

    // A start and three steps (read, failed read, finish), each its own span.
    let steps = named("kernel.step");
    assert_eq!(
        steps.iter().filter(|s| s.fields["work"] == "start").count(),
        1,
        "{steps:#?}"
    );
    assert!(
        steps.iter().filter(|s| s.fields["work"] == "step").count() >= 3,
        "{steps:#?}"
    );
    steps.iter().for_each(|s| ids(s));

    // The declaration's decision (made when the mission was submitted, outside a step) and
    // one per proposed call, inside the step that proposed it.
    let decisions = named("policy.decide");
    assert_eq!(decisions.len(), 4, "{decisions:#?}");
    decisions.iter().for_each(|s| ids(s));
    assert_eq!(decisions[0].fields["action"], "mission.submit");
    assert!(
        decisions.iter().all(|d| d.fields["effect"] == "permit"),
        "{decisions:#?}"
    );
    assert!(
        decisions[1..]
            .iter()
            .all(|d| d.parent == Some("kernel.step")),
        "{decisions:#?}"
    );
    let actions: Vec<_> = decisions[1..]
        .iter()
        .map(|d| d.fields["action"].as_str())
        .collect();
    assert_eq!(actions, ["fs.read", "fs.read", "mission.finish"]);

    // One span per attempt at a permitted call, with its outcome.
    let calls = named("tool.call");
    assert_eq!(calls.len(), 3, "{calls:#?}");
    calls.iter().for_each(|s| ids(s));
    assert!(
        calls.iter().all(|c| c.parent == Some("kernel.step")),
        "{calls:#?}"
    );
    let outcomes: Vec<_> = calls
        .iter()
        .map(|c| (c.fields["tool"].as_str(), c.fields["outcome"].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("fs.read", "ok"),
            ("fs.read", "not_found"),
            ("mission.finish", "ok")
        ]
    );
}
