//! Retries, backoff, timeouts, heartbeats, recovery of a call in flight, and operator
//! controls, tested deterministically on paused time.
//!
//! Time: the runtime's clock is paused and the engine's clock reads it, so every recorded
//! time is exact. The ledger is a real SQLite store, but reached through [`Blocking`],
//! which waits for each store call on the runtime's own thread: paused time advances
//! only when every task waits on a timer, never while a commit is on disk.
//!
//! The tools are a double defined here: each tool call follows a script of acts
//! (succeed, fail with a kind, sleep, heartbeat, hang) and every execution is counted. The
//! reasoner and the policy are aura-engine's `test_util` doubles.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use async_trait::async_trait;
use aura_core::door::{Clock, OsEntropy, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId, PublicKey, Timestamp};
use aura_engine::ports::{
    ErrorKind, ExecContext, Proposal, Target, ToolError, ToolSpec, Tools, failed_effect,
};
use aura_engine::test_util::{Answer, OneReasoner, PermitAll, ScriptedReasoner};
use aura_engine::{Control, Handle, Options, Services, StuckReason};
use aura_identity::{Level, Namespace, TrustSet};
use aura_kernel::{
    Authority, Budget, Effect, Event, MissionSpec, MissionState, Recorded, RetryPolicy, StepPolicy,
    ToolCall,
};
use aura_ledger::checkpoint::SignedCheckpoint;
use aura_ledger::proof::{ConsistencyProof, InclusionProof};
use aura_ledger::verify::Summary;
use aura_store::{
    AppendReceipt, Committed, EntryRef, Head, NewEntry, SqliteStore, Store, StoredEntry,
    Verification,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Time and storage that keep paused time exact.

/// The engine's clock, following the runtime's (paused) clock from a fixed origin.
#[derive(Debug)]
struct RuntimeClock {
    origin: Timestamp,
    start: tokio::time::Instant,
}

impl RuntimeClock {
    fn new() -> Self {
        RuntimeClock {
            origin: Timestamp::from_nanos(1_800_000_000_000_000_000),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for RuntimeClock {
    fn now(&self) -> Timestamp {
        self.origin.saturating_add(self.start.elapsed())
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, parking between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A store whose calls hold the runtime's thread until they are done (see the header).
#[derive(Debug)]
struct Blocking(SqliteStore);

#[async_trait]
impl Store for Blocking {
    fn node_key(&self) -> PublicKey {
        self.0.node_key()
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Committed>> {
        self.0.subscribe()
    }
    async fn append(&self, batch: Vec<NewEntry>) -> Result<AppendReceipt, aura_store::Error> {
        block_on(self.0.append(batch))
    }
    async fn tree_size(&self) -> Result<u64, aura_store::Error> {
        block_on(self.0.tree_size())
    }
    async fn head(&self, agent: AgentId) -> Result<Option<Head>, aura_store::Error> {
        block_on(self.0.head(agent))
    }
    async fn heads(&self) -> Result<Vec<Head>, aura_store::Error> {
        block_on(self.0.heads())
    }
    async fn entry(&self, at: EntryRef) -> Result<Option<StoredEntry>, aura_store::Error> {
        block_on(self.0.entry(at))
    }
    async fn entries(
        &self,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, aura_store::Error> {
        block_on(self.0.entries(from_index, limit))
    }
    async fn agent_entries(
        &self,
        agent: AgentId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, aura_store::Error> {
        block_on(self.0.agent_entries(agent, from_seq, limit))
    }
    async fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, aura_store::Error> {
        block_on(self.0.latest_checkpoint())
    }
    async fn checkpoint(
        &self,
        tree_size: u64,
    ) -> Result<Option<SignedCheckpoint>, aura_store::Error> {
        block_on(self.0.checkpoint(tree_size))
    }
    async fn checkpoints(
        &self,
        after_size: u64,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, aura_store::Error> {
        block_on(self.0.checkpoints(after_size, limit))
    }
    async fn inclusion_proof(
        &self,
        index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, aura_store::Error> {
        block_on(self.0.inclusion_proof(index, tree_size))
    }
    async fn consistency_proof(
        &self,
        old: u64,
        new: Option<u64>,
    ) -> Result<ConsistencyProof, aura_store::Error> {
        block_on(self.0.consistency_proof(old, new))
    }
    async fn verify(
        &self,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Verification, aura_store::Error> {
        block_on(self.0.verify(progress))
    }
    async fn export(
        &self,
        out: Box<dyn std::io::Write + Send>,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Summary, aura_store::Error> {
        block_on(self.0.export(out, progress))
    }
}

// ---------------------------------------------------------------------------------------
// Doubles: scripted tools.

/// What one attempt of a tool does.
#[derive(Debug, Clone)]
enum Act {
    Ok,
    /// Fails with an error of this kind (`io` and `timeout` are transient). The message
    /// does not name the kind: the engine must retry from the kind alone.
    Fail(ErrorKind),
    /// Fails as tools reported it before effects carried a kind: the kind only at the
    /// head of the message (`not_found: ...`), no `error_kind`.
    FailAsBefore(&'static str),
    /// Takes this long, then succeeds.
    Sleep(u64),
    /// Heartbeats `{"done": i}` every `every` ms, `beats` times, then does `then`.
    Beat {
        beats: u64,
        every: u64,
        then: Box<Act>,
    },
    /// Never ends.
    Hang,
}

/// One execution, as the tool saw it.
#[derive(Debug, Clone)]
struct Run {
    tool: String,
    call: String,
    progress: Option<Value>,
}

#[derive(Debug, Default)]
struct ScriptedTools {
    acts: Mutex<HashMap<String, VecDeque<Act>>>,
    runs: Mutex<Vec<Run>>,
    undone: Mutex<Vec<String>>,
}

impl ScriptedTools {
    fn script(&self, tool: &str, acts: impl IntoIterator<Item = Act>) {
        self.acts
            .lock()
            .unwrap()
            .entry(tool.to_owned())
            .or_default()
            .extend(acts);
    }

    fn runs(&self, tool: &str) -> Vec<Run> {
        let runs = self.runs.lock().unwrap();
        runs.iter().filter(|r| r.tool == tool).cloned().collect()
    }
}

fn done(call: &ToolCall) -> Effect {
    Effect {
        call_id: call.id.clone(),
        tool: call.name.clone(),
        ok: true,
        output: json!({ "tool": call.name }),
        error: None,
        error_kind: None,
        compensation: (call.name == "write").then(|| json!({ "undo": call.id })),
        message: None,
        finish: (call.name == "mission.finish").then(|| "done".to_owned()),
    }
}

#[async_trait]
impl Tools for ScriptedTools {
    fn specs(&self, names: &[String]) -> Vec<ToolSpec> {
        names
            .iter()
            .map(|n| ToolSpec {
                name: n.clone(),
                description: String::new(),
                parameters: json!({ "type": "object" }),
            })
            .collect()
    }

    fn prepare(&self, call: &ToolCall) -> Result<Proposal, ToolError> {
        Ok(Proposal {
            call: call.clone(),
            target: Target::Mission,
            destructive: false,
        })
    }

    async fn execute(&self, ctx: &ExecContext, proposal: &Proposal) -> Effect {
        let call = &proposal.call;
        self.runs.lock().unwrap().push(Run {
            tool: call.name.clone(),
            call: call.id.clone(),
            progress: ctx.progress.clone(),
        });
        let mut act = self
            .acts
            .lock()
            .unwrap()
            .get_mut(&call.name)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Act::Ok);
        loop {
            match act {
                Act::Ok => return done(call),
                Act::Fail(kind) => return failed_effect(call, kind, "boom"),
                Act::FailAsBefore(error) => {
                    return Effect {
                        ok: false,
                        output: Value::Null,
                        error: Some(error.to_owned()),
                        compensation: None,
                        finish: None,
                        ..done(call)
                    };
                }
                Act::Sleep(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    return done(call);
                }
                Act::Beat { beats, every, then } => {
                    for i in 0..beats {
                        tokio::time::sleep(Duration::from_millis(every)).await;
                        if let Some(h) = &ctx.heartbeat {
                            h.beat(json!({ "done": i }));
                        }
                    }
                    act = *then;
                }
                Act::Hang => std::future::pending::<()>().await,
            }
        }
    }

    async fn compensate(
        &self,
        _ctx: &ExecContext,
        _tool: &str,
        compensation: &Value,
    ) -> Result<(), ToolError> {
        self.undone
            .lock()
            .unwrap()
            .push(compensation["undo"].as_str().unwrap_or_default().to_owned());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The world.

struct World {
    dir: tempfile::TempDir,
    signer: Arc<Signer>,
    clock: Arc<RuntimeClock>,
    tools: Arc<ScriptedTools>,
    reasoner: Arc<ScriptedReasoner>,
    engine: Handle,
    agent: AgentId,
}

async fn start(
    dir: &std::path::Path,
    signer: &Arc<Signer>,
    clock: &Arc<RuntimeClock>,
    tools: &Arc<ScriptedTools>,
    reasoner: &Arc<ScriptedReasoner>,
) -> Handle {
    let store = SqliteStore::open(
        dir.join("ledger.db"),
        signer.clone(),
        Arc::new(SystemClock),
        Default::default(),
    )
    .unwrap();
    Handle::start(
        Options {
            keystore: Some(dir.join("keys")),
            workspaces: dir.join("workspaces"),
            ..Default::default()
        },
        Arc::new(Blocking(store)),
        signer.clone(),
        clock.clone(),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        Services {
            policy: Arc::new(PermitAll),
            tools: tools.clone(),
            reasoners: Arc::new(OneReasoner(reasoner.clone())),
        },
    )
    .await
    .unwrap()
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(7)).unwrap());
    let clock = Arc::new(RuntimeClock::new());
    let tools = Arc::new(ScriptedTools::default());
    let reasoner = Arc::new(ScriptedReasoner::new());
    let engine = start(dir.path(), &signer, &clock, &tools, &reasoner).await;
    let agent = support::create_agent(&engine).await;
    World {
        dir,
        signer,
        clock,
        tools,
        reasoner,
        engine,
        agent,
    }
}

impl World {
    /// Turns: each a list of calls (without arguments), or a failure of the provider.
    /// Then `mission.finish`.
    fn turns(&self, turns: impl IntoIterator<Item = Result<Vec<&'static str>, String>>) {
        self.reasoner
            .extend(turns.into_iter().map(|turn| match turn {
                Ok(tools) => Answer::calls(tools.into_iter().map(|t| (t, json!({})))),
                Err(message) => Answer::Fail(message),
            }));
    }

    async fn submit(&self, tools: &[&str], steps: StepPolicy, timeout_secs: u64) -> MissionId {
        let spec = MissionSpec {
            regions: Vec::new(),
            objective: "work".into(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            authority: Authority {
                credential: None,
                level: Level::L2,
            },
            timeout_secs,
            namespace: Namespace::new("default").unwrap(),
            budget: Budget::default(),
            reasoner: String::new(),
            network: vec![],
            workspace: None,
            steps: Some(steps),
            tool_steps: Default::default(),
        };
        self.engine.submit(self.agent, spec).await.unwrap()
    }

    /// Stops the engine (as a crash would, between two commits) and starts a new one on
    /// the same ledger after `down` of (paused) time.
    async fn restart(self, down: Duration) -> World {
        let World {
            dir,
            signer,
            clock,
            tools,
            reasoner,
            engine,
            agent,
        } = self;
        engine.shutdown().await;
        // The store's lock is free once the last handle on it is gone.
        drop(engine);
        tokio::time::sleep(down).await;
        let engine = start(dir.path(), &signer, &clock, &tools, &reasoner).await;
        World {
            dir,
            signer,
            clock,
            tools,
            reasoner,
            engine,
            agent,
        }
    }

    /// The mission's recorded events, in order.
    async fn events(&self, id: MissionId) -> Vec<Event> {
        let entries = self.engine.record(self.agent, 1, 100_000).await.unwrap();
        entries
            .iter()
            .filter(|e| e.entry.kind.as_str().starts_with("mission."))
            .map(|e| Recorded::from_body(&e.entry.body).unwrap())
            .filter(|r| r.mission == id)
            .map(|r| r.event)
            .collect()
    }

    /// The mission's recorded entry bodies, in order, as the ledger holds them.
    async fn bodies(&self, id: MissionId) -> Vec<String> {
        let entries = self.engine.record(self.agent, 1, 100_000).await.unwrap();
        entries
            .iter()
            .filter(|e| e.entry.kind.as_str().starts_with("mission."))
            .filter(|e| Recorded::from_body(&e.entry.body).unwrap().mission == id)
            .map(|e| String::from_utf8(e.entry.body.clone()).unwrap())
            .collect()
    }

    async fn until(&self, id: MissionId, pred: impl Fn(MissionState) -> bool) -> MissionState {
        for _ in 0..100_000 {
            if let Some(m) = self.engine.mission(id)
                && pred(m.state)
            {
                return m.state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("mission {id} is stuck in {:?}", self.engine.mission(id));
    }

    async fn ended(&self, id: MissionId) -> MissionState {
        self.until(id, MissionState::is_terminal).await
    }

    fn reason(&self, id: MissionId) -> String {
        self.engine
            .mission(id)
            .unwrap()
            .reason
            .clone()
            .unwrap_or_default()
    }
}

fn policy(initial_ms: u64, max_attempts: u32) -> StepPolicy {
    StepPolicy {
        retry: RetryPolicy {
            initial_interval_ms: initial_ms,
            max_interval_ms: initial_ms.max(60_000),
            max_attempts,
            ..RetryPolicy::default()
        },
        ..StepPolicy::default()
    }
}

/// The attempt records of one call: `(attempt, at)` of each start and `(attempt, kind,
/// at, retry_at)` of each failure.
#[derive(Debug, Default)]
struct Attempts {
    started: Vec<(u32, Timestamp)>,
    failed: Vec<(u32, String, Timestamp, Option<Timestamp>)>,
}

fn attempts(events: &[Event], tool_call_prefix: Option<&str>) -> Attempts {
    let mut out = Attempts::default();
    for e in events {
        match e {
            Event::Attempt {
                call_id,
                attempt,
                at,
            } if tool_call_prefix.is_none_or(|p| call_id.starts_with(p)) => {
                out.started.push((*attempt, *at));
            }
            Event::AttemptFailed {
                call_id,
                attempt,
                kind,
                retry_at,
                at,
                ..
            } if tool_call_prefix
                .is_none_or(|p| call_id.as_deref().is_some_and(|c| c.starts_with(p))) =>
            {
                out.failed.push((*attempt, kind.clone(), *at, *retry_at));
            }
            _ => {}
        }
    }
    out
}

fn secs(a: Timestamp, b: Timestamp) -> f64 {
    b.since(a).as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_with_exponential_backoff_and_every_attempt_recorded() {
    let w = world().await;
    w.turns([Ok(vec!["op"])]);
    w.tools.script(
        "op",
        [
            Act::Fail(ErrorKind::Io),
            Act::Fail(ErrorKind::Timeout),
            Act::Ok,
        ],
    );
    let id = w
        .submit(&["op", "mission.finish"], policy(1_000, 5), 600)
        .await;
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    assert_eq!(w.tools.runs("op").len(), 3);
    let events = w.events(id).await;
    let a = attempts(&events, Some("c2-"));
    assert_eq!(
        a.started.iter().map(|s| s.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "{events:#?}"
    );
    assert_eq!(a.failed.len(), 2);
    // Each retry starts exactly when its backoff said: 1 s, then 2 s after the failure.
    for (i, backoff) in [(0, 1.0), (1, 2.0)] {
        let (_, _, failed_at, retry_at) = &a.failed[i];
        assert_eq!(secs(*failed_at, retry_at.unwrap()), backoff);
        assert_eq!(a.started[i + 1].1, retry_at.unwrap());
    }
    assert_eq!(
        w.engine.replay(id).await.unwrap().unwrap().state,
        MissionState::Completed
    );
}

#[tokio::test(start_paused = true)]
async fn retries_run_out_then_the_mission_fails_and_undoes_what_completed() {
    let w = world().await;
    w.turns([Ok(vec!["write"]), Ok(vec!["write"]), Ok(vec!["op"])]);
    w.tools.script(
        "op",
        [
            Act::Fail(ErrorKind::Network),
            Act::Fail(ErrorKind::Network),
            Act::Fail(ErrorKind::Network),
        ],
    );
    let id = w
        .submit(&["write", "op", "mission.finish"], policy(100, 3), 600)
        .await;
    assert_eq!(w.ended(id).await, MissionState::Failed);
    assert_eq!(w.tools.runs("op").len(), 3);
    let reason = w.reason(id);
    assert!(
        reason.contains("failed after 3 attempts: network: boom"),
        "{reason}"
    );
    // Both writes were undone, the later first.
    let writes: Vec<String> = w.tools.runs("write").into_iter().map(|r| r.call).collect();
    let undone = w.tools.undone.lock().unwrap().clone();
    assert_eq!(undone, writes.into_iter().rev().collect::<Vec<_>>());
    let history: Vec<_> = w
        .engine
        .mission(id)
        .unwrap()
        .history
        .iter()
        .map(|c| c.to)
        .collect();
    assert!(history.ends_with(&[MissionState::Compensating, MissionState::Failed]));
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_kind_fails_at_once_and_a_call_error_goes_to_the_reasoner() {
    let w = world().await;
    w.turns([Ok(vec!["lookup"]), Ok(vec!["op"])]);
    // `not_found` is the call's own answer: the reasoner sees it and carries on.
    w.tools.script("lookup", [Act::Fail(ErrorKind::NotFound)]);
    w.tools
        .script("op", [Act::Fail(ErrorKind::Network), Act::Ok]);
    let mut p = policy(100, 5);
    p.retry.non_retryable = vec!["network".into()];
    let id = w.submit(&["lookup", "op", "mission.finish"], p, 600).await;
    assert_eq!(w.ended(id).await, MissionState::Failed);
    assert_eq!(w.tools.runs("lookup").len(), 1);
    assert_eq!(w.tools.runs("op").len(), 1);
    let events = w.events(id).await;
    assert!(events.iter().any(|e| matches!(e,
        Event::Effect { effect, .. } if effect.tool == "lookup" && !effect.ok)));
    let failed = attempts(&events, None).failed;
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].1.as_str(), failed[0].3), ("network", None));
}

#[tokio::test(start_paused = true)]
async fn start_to_close_fails_a_slow_attempt_and_the_retry_runs() {
    let w = world().await;
    w.turns([Ok(vec!["op"])]);
    w.tools
        .script("op", [Act::Sleep(60_000), Act::Sleep(1_000)]);
    let mut p = policy(500, 3);
    p.start_to_close_ms = Some(5_000);
    let id = w.submit(&["op", "mission.finish"], p, 600).await;
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    let a = attempts(&w.events(id).await, Some("c2-"));
    assert_eq!(a.failed.len(), 1);
    let (attempt, kind, at, retry_at) = &a.failed[0];
    assert_eq!((*attempt, kind.as_str()), (1, "start_to_close_timeout"));
    assert_eq!(secs(a.started[0].1, *at), 5.0);
    assert_eq!(a.started[1].1, retry_at.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_silent_attempt_misses_its_heartbeat_and_the_retry_reads_the_last_progress() {
    let w = world().await;
    w.turns([Ok(vec!["op"])]);
    let beats_then = |then| Act::Beat {
        beats: 3,
        every: 1_000,
        then: Box::new(then),
    };
    w.tools.script("op", [beats_then(Act::Hang), Act::Ok]);
    let mut p = policy(1_000, 3);
    p.heartbeat_ms = Some(2_500);
    let id = w.submit(&["op", "mission.finish"], p, 600).await;
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    let runs = w.tools.runs("op");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].progress, None);
    assert_eq!(runs[1].progress, Some(json!({ "done": 2 })));
    let events = w.events(id).await;
    let a = attempts(&events, Some("c2-"));
    let (_, kind, at, _) = &a.failed[0];
    assert_eq!(kind, "heartbeat_timeout");
    // Three beats a second apart, then silence: failed 2.5 s after the last beat.
    assert_eq!(secs(a.started[0].1, *at), 5.5);
    // The first beat is recorded (later ones are heard, and recorded at most every 10 s).
    assert!(events.iter().any(|e| matches!(e,
        Event::Heartbeat { details, attempt: 1, .. } if details == &json!({ "done": 0 }))));
}

#[tokio::test(start_paused = true)]
async fn a_failing_reasoner_is_asked_again_after_its_backoff() {
    let w = world().await;
    w.turns([
        Err("503 from provider".into()),
        Err("503 again".into()),
        Ok(vec!["op"]),
    ]);
    let id = w
        .submit(&["op", "mission.finish"], policy(2_000, 5), 600)
        .await;
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    let failed = attempts(&w.events(id).await, None).failed;
    let turn_failures: Vec<_> = failed.iter().map(|f| (f.0, f.1.as_str())).collect();
    assert_eq!(turn_failures, [(1, "reasoner"), (2, "reasoner")]);
    assert_eq!(secs(failed[1].2, failed[1].3.unwrap()), 4.0);

    // With one attempt allowed, the first failure fails the mission.
    w.turns([Err("down".into())]);
    let id = w
        .submit(&["op", "mission.finish"], policy(2_000, 1), 600)
        .await;
    assert_eq!(w.ended(id).await, MissionState::Failed);
    assert!(
        w.reason(id)
            .contains("the reasoner failed after 1 attempt: reasoner: down")
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_when_the_node_stops_is_retried_as_interrupted_after_restart() {
    let w = world().await;
    w.turns([Ok(vec!["op"])]);
    w.tools.script("op", [Act::Hang, Act::Ok]);
    let id = w
        .submit(&["op", "mission.finish"], policy(1_000, 5), 600)
        .await;
    while w.tools.runs("op").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let w = w.restart(Duration::from_secs(3)).await;
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    assert_eq!(w.tools.runs("op").len(), 2);
    let a = attempts(&w.events(id).await, Some("c2-"));
    assert_eq!(a.started.len(), 2);
    assert_eq!((a.failed[0].0, a.failed[0].1.as_str()), (1, "interrupted"));
    assert_eq!(
        w.engine.replay(id).await.unwrap().unwrap().state,
        MissionState::Completed
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_waiting_out_its_backoff_survives_a_restart() {
    let w = world().await;
    w.turns([Ok(vec!["op"])]);
    w.tools.script("op", [Act::Fail(ErrorKind::Io), Act::Ok]);
    let id = w
        .submit(&["op", "mission.finish"], policy(60_000, 5), 3_600)
        .await;
    while attempts(&w.events(id).await, None).failed.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let w = w.restart(Duration::from_secs(10)).await;
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    let a = attempts(&w.events(id).await, Some("c2-"));
    // Not a moment before its due time, however the restart fell.
    assert_eq!(a.started[1].1, a.failed[0].3.unwrap());
}

/// Records made before effects carried an error kind still replay and retry as before.
/// Such a build recorded a failure that is the call's answer as an effect with its kind
/// only at the head of the message (no `error_kind`), and a transient one as an
/// `attempt_failed` naming its kind with the retry's due time; the engine decided each
/// once, as the tool returned it, and replay reads the decision. A node started on such a
/// record retries the waiting call at its recorded due time, never runs the answered call
/// again, and replays the mission to what it holds.
#[tokio::test(start_paused = true)]
async fn records_made_before_effects_carried_an_error_kind_still_replay_and_retry_as_before() {
    let w = world().await;
    w.turns([Ok(vec!["lookup"]), Ok(vec!["op"])]);
    w.tools
        .script("lookup", [Act::FailAsBefore("not_found: no such file")]);
    w.tools.script("op", [Act::Fail(ErrorKind::Io), Act::Ok]);
    let id = w
        .submit(
            &["lookup", "op", "mission.finish"],
            policy(60_000, 5),
            3_600,
        )
        .await;
    while attempts(&w.events(id).await, None).failed.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The record so far has the shape an older build gave it: no entry names an error
    // kind, the answered call's failure among them.
    let before = w.bodies(id).await;
    assert!(
        before.iter().any(|b| b.contains("not_found: no such file")),
        "{before:#?}"
    );
    assert!(
        before.iter().all(|b| !b.contains("error_kind")),
        "{before:#?}"
    );

    let w = w.restart(Duration::from_secs(10)).await;
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    // The answered call ran once: its failure went to the reasoner, not to a retry.
    assert_eq!(w.tools.runs("lookup").len(), 1);
    assert_eq!(w.tools.runs("op").len(), 2);
    let events = w.events(id).await;
    let lookup: Vec<&Effect> = events
        .iter()
        .filter_map(|e| match e {
            Event::Effect { effect, .. } if effect.tool == "lookup" => Some(effect),
            _ => None,
        })
        .collect();
    assert_eq!(lookup.len(), 1, "{events:#?}");
    assert_eq!(
        (lookup[0].ok, lookup[0].error_kind.as_deref()),
        (false, None)
    );
    let op_call = events
        .iter()
        .find_map(|e| match e {
            Event::AttemptFailed { call_id, .. } => call_id.clone(),
            _ => None,
        })
        .unwrap();
    let a = attempts(&events, Some(&op_call));
    let failed: Vec<_> = a.failed.iter().map(|f| (f.0, f.1.as_str())).collect();
    assert_eq!(failed, [(1, "io")], "{events:#?}");
    // The retry started at the due time recorded before the restart, not a moment before.
    assert_eq!(a.started.len(), 2, "{events:#?}");
    assert_eq!(a.started[1].1, a.failed[0].3.unwrap(), "{events:#?}");
    // What the older build wrote is still there, byte for byte, and the whole record
    // replays to the mission the node holds.
    assert_eq!(w.bodies(id).await[..before.len()], before[..]);
    let replayed = w.engine.replay(id).await.unwrap().unwrap();
    assert_eq!(replayed, *w.engine.mission(id).unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_mission_whose_time_ran_out_while_the_node_was_down_times_out_on_recovery() {
    let w = world().await;
    w.turns([Ok(vec!["write"]), Ok(vec!["op"])]);
    w.tools.script("op", [Act::Hang]);
    let id = w
        .submit(&["write", "op", "mission.finish"], policy(1_000, 5), 60)
        .await;
    while w.tools.runs("op").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let w = w.restart(Duration::from_secs(120)).await;
    assert_eq!(w.ended(id).await, MissionState::Failed);
    let m = w.engine.mission(id).unwrap();
    assert!(m.timed_out, "{m:?}");
    assert_eq!(
        w.tools.runs("op").len(),
        1,
        "nothing runs after the deadline"
    );
    assert_eq!(
        w.tools.undone.lock().unwrap().len(),
        1,
        "the write was undone"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_waited_too_long_to_start_fails_its_schedule_to_start_timeout() {
    let w = world().await;
    w.turns([Ok(vec!["op"])]);
    w.tools.script("op", [Act::Fail(ErrorKind::Io), Act::Ok]);
    let mut p = policy(1_000, 5);
    p.schedule_to_start_ms = Some(5_000);
    let id = w.submit(&["op", "mission.finish"], p, 3_600).await;
    while attempts(&w.events(id).await, None).failed.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Down for 30 s: the retry was due after 1 s and may wait at most 5 s to start.
    let w = w.restart(Duration::from_secs(30)).await;
    assert_eq!(w.ended(id).await, MissionState::Failed);
    assert_eq!(w.tools.runs("op").len(), 1);
    let reason = w.reason(id);
    assert!(reason.contains("schedule_to_start_timeout"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn operators_see_stuck_missions_retry_them_now_and_pause_and_resume_them() {
    let w = world().await;
    w.turns([Ok(vec!["op"])]);
    w.tools.script("op", [Act::Fail(ErrorKind::Io), Act::Ok]);
    let id = w
        .submit(&["op", "mission.finish"], policy(3_600_000, 5), 86_400)
        .await;
    while attempts(&w.events(id).await, None).failed.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stuck = w.engine.stuck(Duration::from_secs(3600));
    assert_eq!(stuck.len(), 1);
    assert!(
        matches!(&stuck[0].why, StuckReason::Retrying { attempts: 1, .. }),
        "{stuck:?}"
    );

    // Paused, a hurried retry still waits for the resume.
    w.engine
        .control(
            id,
            Control::Pause {
                reason: "look first".into(),
            },
            "op:alice",
        )
        .await
        .unwrap();
    assert!(matches!(
        w.engine.stuck(Duration::from_secs(3600))[0].why,
        StuckReason::Paused
    ));
    w.engine
        .control(id, Control::RetryNow, "op:alice")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        w.tools.runs("op").len(),
        1,
        "a paused mission starts nothing"
    );
    let again = w
        .engine
        .control(id, Control::Pause { reason: "x".into() }, "op:alice")
        .await;
    assert!(again.is_err(), "pausing twice is refused");
    w.engine
        .control(id, Control::Resume, "op:alice")
        .await
        .unwrap();
    assert_eq!(
        w.ended(id).await,
        MissionState::Completed,
        "{}",
        w.reason(id)
    );
    // Well before the hour-long backoff.
    let a = attempts(&w.events(id).await, Some("c2-"));
    assert!(secs(a.failed[0].2, a.started[1].1) < 60.0);
    assert!(w.engine.stuck(Duration::from_secs(3600)).is_empty());
    let none = w.engine.control(id, Control::RetryNow, "op:alice").await;
    assert!(none.is_err(), "nothing to retry on a completed mission");
    assert_eq!(
        w.engine.replay(id).await.unwrap().unwrap().state,
        MissionState::Completed
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_a_call_in_flight_then_undoes_what_completed() {
    let w = world().await;
    w.turns([Ok(vec!["write"]), Ok(vec!["op"])]);
    w.tools.script("op", [Act::Hang]);
    let id = w
        .submit(&["write", "op", "mission.finish"], policy(1_000, 5), 600)
        .await;
    while w.tools.runs("op").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.engine
        .cancel(id, "op:alice", "wrong target")
        .await
        .unwrap();
    assert_eq!(w.ended(id).await, MissionState::Cancelled);
    assert_eq!(w.tools.runs("op").len(), 1, "a stopped call is not retried");
    assert_eq!(
        w.tools.undone.lock().unwrap().len(),
        1,
        "the write was undone"
    );
    let failed = attempts(&w.events(id).await, None).failed;
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].1.as_str(), failed[0].3), ("stopped", None));
    assert_eq!(
        w.engine.replay(id).await.unwrap().unwrap().state,
        MissionState::Cancelled
    );
}
