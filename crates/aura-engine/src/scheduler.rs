//! The scheduler: the service that keeps every schedule of the node, fires each at its due
//! instants by submitting its mission template through the engine (the same path as
//! `POST /v1/missions`, so policy, the ledger and replay apply), and records all of it in
//! the node's ledger stream.
//!
//! Durability: schedules live only in the ledger. [`Schedules::start`] folds the node's
//! `schedule.*` entries into the set of schedules and how far each has got; nothing else
//! is kept. A firing is one durable append (`schedule.fired`, naming the mission id drawn
//! for it) made *before* the mission is submitted: a crash after it leaves a fired instant
//! whose mission may be missing, which the next start submits under the same id (the
//! engine answers a known id as already submitted). So an instant fires at most once, and
//! its mission exists once the node has run again.
//!
//! Time comes from the engine's clock (`door::Clock`): the loop wakes at the next due
//! instant and at least every [`MAX_NAP`], so a wall clock that jumps forward is noticed
//! within that; what was missed is then dealt with by the schedule's policy
//! (`schedule::plan`). Tests drive a `ManualClock` and call [`Schedules::tick`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::Namespace;
use aura_ledger::entry::Kind;
use aura_store::{NewEntry, Seq};
use serde::Serialize;

use crate::error::Error;
use crate::handle::Handle;
use crate::schedule::{
    self, Action, Changed, Compiled, Created, Failed, Fired, NewSchedule, RECORD_VERSION, Schedule,
    ScheduleId, Skipped, View,
};

/// The longest the loop sleeps without looking at the clock.
pub(crate) const MAX_NAP: Duration = Duration::from_secs(10);

/// The most schedules a node keeps (each is a few kilobytes in memory).
pub(crate) const MAX_SCHEDULES: usize = 10_000;

/// One schedule and where it stands.
#[derive(Debug, Clone)]
struct Slot {
    schedule: Schedule,
    trigger: Compiled,
    enabled: bool,
    /// Due instants up to here are dealt with: the last one fired or skipped, or the
    /// creation or last resumption (a paused schedule's instants are not missed runs).
    since: Timestamp,
    last_due: Option<Timestamp>,
    fired: u64,
    skipped: u64,
    last_mission: Option<MissionId>,
}

impl Slot {
    fn view(&self) -> View {
        View {
            schedule: self.schedule.clone(),
            enabled: self.enabled,
            next_due: self
                .enabled
                .then(|| self.trigger.next_after(self.since))
                .flatten(),
            last_due: self.last_due,
            fired: self.fired,
            skipped: self.skipped,
            last_mission: self.last_mission,
        }
    }
}

/// The scheduler others hold. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Schedules {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Handle,
    slots: Mutex<BTreeMap<ScheduleId, Slot>>,
    /// One pass (or change) at a time, so a schedule is never planned twice over the same
    /// instants.
    pass: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
}

/// A firing a pass made, as [`Schedules::tick`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Firing {
    pub schedule: ScheduleId,
    pub due: Timestamp,
    pub mission: MissionId,
    pub missed: u64,
}

fn kind(k: &str) -> Kind {
    Kind::new(k).unwrap_or_else(|_| unreachable!("schedule kinds are valid"))
}

fn decode<T: serde::de::DeserializeOwned>(index: u64, body: Option<&[u8]>) -> Result<T, Error> {
    body.and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the node's entry #{index} is not a schedule record this build reads"
            ))
        })
}

impl Schedules {
    /// Reads every schedule from the node's ledger stream, submits the missions of
    /// firings a crash cut short, and starts the loop (stopped with the engine). Call it
    /// once the engine has started, so that the missions it recovered are known, and once
    /// per engine: two schedulers would each fire the same instants.
    pub async fn start(engine: Handle) -> Result<Schedules, Error> {
        let Loaded {
            slots,
            pending,
            all,
        } = load(&engine).await?;
        let schedules = Schedules {
            inner: Arc::new(Inner {
                engine,
                slots: Mutex::new(slots),
                pass: tokio::sync::Mutex::new(()),
                wake: tokio::sync::Notify::new(),
            }),
        };
        for fired in pending {
            // In a cluster, another node may run the agent; it finishes the firing.
            let Some(schedule) = all
                .get(&fired.schedule)
                .filter(|s| schedules.inner.engine.agent(s.agent).is_some())
            else {
                continue;
            };
            schedules.submit(schedule, &fired).await;
        }
        let looping = schedules.clone();
        let stopping = schedules.inner.engine.shared.stopping.subscribe();
        let task = tokio::spawn(async move { looping.run(stopping).await });
        schedules.inner.engine.shared.track(task);
        Ok(schedules)
    }

    async fn run(&self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stopping.borrow() {
                return;
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "a scheduler pass failed; it runs again shortly");
            }
            let nap = self.nap();
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                () = self.inner.wake.notified() => {}
                _ = stopping.changed() => return,
            }
        }
    }

    /// How long until the next due instant, at most [`MAX_NAP`].
    fn nap(&self) -> Duration {
        let now = self.inner.engine.now();
        let slots = self.lock();
        slots
            .values()
            .filter(|s| s.enabled)
            .filter_map(|s| s.trigger.next_after(s.since))
            .map(|due| due.since(now))
            .min()
            .unwrap_or(MAX_NAP)
            .clamp(Duration::from_millis(5), MAX_NAP)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ScheduleId, Slot>> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deals with every schedule whose instants are due by the engine's clock now: fires
    /// or skips them by their policies. The loop calls it; tests call it after moving a
    /// manual clock.
    pub async fn tick(&self) -> Result<Vec<Firing>, Error> {
        let _pass = self.inner.pass.lock().await;
        let engine = &self.inner.engine;
        let now = engine.now();
        let plans: Vec<(Schedule, Vec<Action>)> = self
            .lock()
            .values()
            // A schedule fires on the node that runs its agent (in a cluster, the holder
            // of the agent's shard).
            .filter(|s| s.enabled && engine.agent(s.schedule.agent).is_some())
            .map(|s| {
                let actions = schedule::plan(&s.trigger, s.schedule.missed, s.since, now);
                (s.schedule.clone(), actions)
            })
            .filter(|(_, actions)| !actions.is_empty())
            .collect();
        let mut firings = Vec::new();
        for (schedule, actions) in plans {
            for action in actions {
                match action {
                    Action::Skip { first, last, count } => {
                        let body = Skipped {
                            v: RECORD_VERSION,
                            schedule: schedule.id,
                            first,
                            last,
                            count,
                            at: now,
                        };
                        self.record(schedule::KIND_SKIPPED, &body).await?;
                        if let Some(slot) = self.lock().get_mut(&schedule.id) {
                            slot.since = slot.since.max(last);
                            slot.last_due = Some(last);
                            slot.skipped += count;
                        }
                    }
                    Action::Fire { due, missed } => {
                        let s = &engine.shared;
                        let mission = MissionId::generate(s.clock.as_ref(), s.entropy.as_ref());
                        let fired = Fired {
                            v: RECORD_VERSION,
                            schedule: schedule.id,
                            due,
                            mission,
                            missed,
                            at: now,
                        };
                        // The firing is durable before anything else happens: from here
                        // on this instant never fires again, and its mission is submitted
                        // now or at the next start.
                        self.record(schedule::KIND_FIRED, &fired).await?;
                        if let Some(slot) = self.lock().get_mut(&schedule.id) {
                            slot.since = slot.since.max(due);
                            slot.last_due = Some(due);
                            slot.fired += 1;
                            slot.last_mission = Some(mission);
                        }
                        self.submit(&schedule, &fired).await;
                        firings.push(Firing {
                            schedule: schedule.id,
                            due,
                            mission,
                            missed,
                        });
                    }
                }
            }
        }
        Ok(firings)
    }

    /// Submits the mission of a recorded firing, under the id the firing names. A
    /// refusal that another try would not cure is recorded (`schedule.failed`); one that
    /// might be (the engine stopping, the agent elsewhere, the store) is left for the next
    /// start, which finds the firing without its mission.
    async fn submit(&self, schedule: &Schedule, fired: &Fired) {
        let engine = &self.inner.engine;
        let outcome = match engine.agent(schedule.agent) {
            Some(agent) => {
                engine
                    .submit_as(
                        schedule.agent,
                        schedule.template.spec(&agent),
                        fired.mission,
                    )
                    .await
            }
            None => Err(Error::NotFound(format!("agent {}", schedule.agent))),
        };
        let error = match outcome {
            Ok(_) => return,
            Err(Error::Closed | Error::Unavailable(_) | Error::Store(_)) => return,
            Err(e) => crate::error::one_line(&e),
        };
        tracing::warn!(schedule = %schedule.id, mission = %fired.mission, %error, "a scheduled mission was refused");
        let failed = Failed {
            v: RECORD_VERSION,
            schedule: schedule.id,
            due: fired.due,
            mission: fired.mission,
            error,
            at: engine.now(),
        };
        if let Err(e) = self.record(schedule::KIND_FAILED, &failed).await {
            tracing::warn!(error = %e, "cannot record a scheduled mission's refusal");
        }
    }

    async fn record(&self, kind_name: &str, body: &impl Serialize) -> Result<(), Error> {
        let body = aura_core::jcs::to_vec(body).map_err(|e| Error::Invalid(e.to_string()))?;
        self.inner
            .engine
            .shared
            .store
            .append(vec![NewEntry {
                agent: AgentId::NODE,
                seq: Seq::Next,
                kind: kind(kind_name),
                recorded_at: self.inner.engine.now(),
                body,
            }])
            .await?;
        Ok(())
    }

    /// Creates a schedule for `new.agent` (who creates it is `by`), recorded before it is
    /// answered. Its template is checked as a submission would be (tools, reasoner,
    /// level, timeout) so that a schedule that could never fire is refused now, not at
    /// 3 a.m.
    pub async fn create(&self, new: NewSchedule, by: &str) -> Result<View, Error> {
        let engine = &self.inner.engine;
        let agent = engine
            .agent(new.agent)
            .ok_or_else(|| Error::NotFound(format!("agent {}", new.agent)))?;
        let name = new.name.trim();
        if name.chars().count() > schedule::MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "a schedule's name is at most {} printable characters",
                schedule::MAX_NAME_CHARS
            )));
        }
        new.template.check().map_err(Error::Invalid)?;
        if new.template.level.is_some_and(|l| l > agent.level) {
            return Err(Error::Forbidden(format!(
                "the template claims authority above the agent's credential ({})",
                agent.level
            )));
        }
        let services = &engine.shared.services;
        let reasoner = new.template.reasoner.clone().unwrap_or_default();
        if services.reasoners.get(&reasoner).is_none() {
            return Err(Error::Invalid(if reasoner.is_empty() {
                "this node has no default reasoner; name one in the template".into()
            } else {
                format!("no reasoner named `{reasoner}` is configured")
            }));
        }
        let known = services.tools.specs(&new.template.tools);
        if let Some(unknown) = new
            .template
            .tools
            .iter()
            .find(|t| !known.iter().any(|k| &k.name == *t))
        {
            return Err(Error::Invalid(format!("there is no tool `{unknown}`")));
        }
        let now = engine.now();
        let trigger = new.trigger.compile(now).map_err(Error::Invalid)?;
        if trigger.next_after(now).is_none() {
            return Err(Error::Invalid(
                "the trigger names no instant in the next 30 years".into(),
            ));
        }
        let _pass = self.inner.pass.lock().await;
        if self.lock().len() >= MAX_SCHEDULES {
            return Err(Error::Conflict(format!(
                "this node already keeps {MAX_SCHEDULES} schedules; delete some first"
            )));
        }
        let s = &engine.shared;
        let schedule = Schedule {
            id: ScheduleId::generate(s.clock.as_ref(), s.entropy.as_ref()),
            name: name.to_owned(),
            agent: agent.id,
            namespace: agent.namespace.clone(),
            template: new.template,
            trigger: new.trigger,
            missed: new.missed,
            created_at: now,
            created_by: by.to_owned(),
        };
        self.record(
            schedule::KIND_CREATED,
            &Created {
                v: RECORD_VERSION,
                schedule: schedule.clone(),
            },
        )
        .await?;
        if new.paused {
            self.record(
                schedule::KIND_PAUSED,
                &Changed {
                    v: RECORD_VERSION,
                    schedule: schedule.id,
                    by: by.to_owned(),
                    at: now,
                },
            )
            .await?;
        }
        let slot = Slot {
            trigger,
            enabled: !new.paused,
            since: now,
            last_due: None,
            fired: 0,
            skipped: 0,
            last_mission: None,
            schedule,
        };
        let view = slot.view();
        self.lock().insert(view.schedule.id, slot);
        self.inner.wake.notify_one();
        Ok(view)
    }

    /// Every schedule, optionally of one namespace, oldest first.
    pub fn list(&self, namespace: Option<&Namespace>) -> Vec<View> {
        self.lock()
            .values()
            .filter(|s| namespace.is_none_or(|n| &s.schedule.namespace == n))
            .map(Slot::view)
            .collect()
    }

    pub fn get(&self, id: ScheduleId) -> Option<View> {
        self.lock().get(&id).map(Slot::view)
    }

    /// Pauses (`enabled = false`) or resumes a schedule. Instants due while it was paused
    /// are not missed runs: a resumed schedule counts from its resumption.
    pub async fn set_enabled(
        &self,
        id: ScheduleId,
        enabled: bool,
        by: &str,
    ) -> Result<View, Error> {
        let _pass = self.inner.pass.lock().await;
        let current = self
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("schedule {id}")))?;
        if current.enabled == enabled {
            return Ok(current);
        }
        let now = self.inner.engine.now();
        let kind_name = if enabled {
            schedule::KIND_RESUMED
        } else {
            schedule::KIND_PAUSED
        };
        self.record(
            kind_name,
            &Changed {
                v: RECORD_VERSION,
                schedule: id,
                by: by.to_owned(),
                at: now,
            },
        )
        .await?;
        let mut slots = self.lock();
        let slot = slots
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("schedule {id}")))?;
        slot.enabled = enabled;
        if enabled {
            slot.since = slot.since.max(now);
        }
        let view = slot.view();
        drop(slots);
        self.inner.wake.notify_one();
        Ok(view)
    }

    /// Deletes a schedule: it never fires again; its records stay in the ledger, and the
    /// missions it submitted carry on.
    pub async fn delete(&self, id: ScheduleId, by: &str) -> Result<View, Error> {
        let _pass = self.inner.pass.lock().await;
        let current = self
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("schedule {id}")))?;
        self.record(
            schedule::KIND_DELETED,
            &Changed {
                v: RECORD_VERSION,
                schedule: id,
                by: by.to_owned(),
                at: self.inner.engine.now(),
            },
        )
        .await?;
        self.lock().remove(&id);
        Ok(current)
    }
}

/// What the node's `schedule.*` entries say.
struct Loaded {
    /// The live schedules.
    slots: BTreeMap<ScheduleId, Slot>,
    /// The firings whose mission the engine does not know (cut short by a crash).
    pending: Vec<Fired>,
    /// Every schedule ever created (a firing's template, even if its schedule was
    /// deleted since).
    all: BTreeMap<ScheduleId, Schedule>,
}

/// Folds the node's `schedule.*` entries, in ledger order.
async fn load(engine: &Handle) -> Result<Loaded, Error> {
    let store = &engine.shared.store;
    let mut slots: BTreeMap<ScheduleId, Slot> = BTreeMap::new();
    let mut all: BTreeMap<ScheduleId, Schedule> = BTreeMap::new();
    let mut fired: BTreeMap<MissionId, Fired> = BTreeMap::new();
    let mut from = 1;
    loop {
        let page = store.agent_entries(AgentId::NODE, from, 1000).await?;
        for e in &page {
            let (index, body) = (e.entry.index, e.body());
            match e.entry.kind.as_str() {
                schedule::KIND_CREATED => {
                    let c: Created = decode(index, body)?;
                    let s = c.schedule;
                    let trigger = s.trigger.compile(s.created_at).map_err(|why| {
                        Error::Invalid(format!(
                            "the schedule of the node's entry #{index} no longer reads: {why}"
                        ))
                    })?;
                    all.insert(s.id, s.clone());
                    slots.insert(
                        s.id,
                        Slot {
                            trigger,
                            enabled: true,
                            since: s.created_at,
                            last_due: None,
                            fired: 0,
                            skipped: 0,
                            last_mission: None,
                            schedule: s,
                        },
                    );
                }
                schedule::KIND_PAUSED | schedule::KIND_RESUMED => {
                    let c: Changed = decode(index, body)?;
                    if let Some(slot) = slots.get_mut(&c.schedule) {
                        slot.enabled = e.entry.kind.as_str() == schedule::KIND_RESUMED;
                        if slot.enabled {
                            slot.since = slot.since.max(c.at);
                        }
                    }
                }
                schedule::KIND_DELETED => {
                    let c: Changed = decode(index, body)?;
                    slots.remove(&c.schedule);
                }
                schedule::KIND_FIRED => {
                    let f: Fired = decode(index, body)?;
                    if let Some(slot) = slots.get_mut(&f.schedule) {
                        slot.since = slot.since.max(f.due);
                        slot.last_due = Some(f.due);
                        slot.fired += 1;
                        slot.last_mission = Some(f.mission);
                    }
                    fired.insert(f.mission, f);
                }
                schedule::KIND_SKIPPED => {
                    let k: Skipped = decode(index, body)?;
                    if let Some(slot) = slots.get_mut(&k.schedule) {
                        slot.since = slot.since.max(k.last);
                        slot.last_due = Some(k.last);
                        slot.skipped += k.count;
                    }
                }
                schedule::KIND_FAILED => {
                    let f: Failed = decode(index, body)?;
                    fired.remove(&f.mission);
                }
                _ => {}
            }
        }
        match page.last() {
            Some(last) if page.len() == 1000 => from = last.entry.seq + 1,
            _ => break,
        }
    }
    // A firing whose mission the engine knows (recorded, or pruned since) is complete.
    let pending = fired
        .into_values()
        .filter(|f| engine.mission(f.mission).is_none())
        .collect();
    Ok(Loaded {
        slots,
        pending,
        all,
    })
}
