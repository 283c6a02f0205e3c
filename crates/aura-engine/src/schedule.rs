//! Schedules: what one is (a mission template, a trigger, a policy for missed runs), the
//! ledger records that create, change, fire and delete it, and the pure rule that says
//! what a schedule does at a given instant. The service that runs them is
//! `scheduler.rs`; docs/automatons.md is the user's guide.
//!
//! Pure: nothing here reads the clock or does IO. Every instant is handed in, so tests
//! ask "what happens at 09:00 on the day clocks change" without waiting for it.

use std::collections::BTreeMap;
use std::time::Duration;

use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{Level, Namespace};
use aura_kernel::{Authority, Budget, MissionSpec, StepPolicy};
use serde::{Deserialize, Serialize};

use crate::cron::Cron;
use crate::shared::AgentInfo;

aura_core::typed_id!(
    /// A schedule.
    ScheduleId,
    "sched"
);

/// The version of the `schedule.*` record bodies this build writes (docs/automatons.md).
pub const RECORD_VERSION: u32 = 1;

/// Ledger kinds, all in the node's own stream.
pub const KIND_CREATED: &str = "schedule.created";
pub const KIND_PAUSED: &str = "schedule.paused";
pub const KIND_RESUMED: &str = "schedule.resumed";
pub const KIND_DELETED: &str = "schedule.deleted";
pub const KIND_FIRED: &str = "schedule.fired";
pub const KIND_SKIPPED: &str = "schedule.skipped";
pub const KIND_FAILED: &str = "schedule.failed";

/// Limits on what a schedule may hold: a template is a mission declaration, not a file.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_TOOLS: usize = 64;
/// The longest interval (a year and a day); anything rarer is a cron expression.
pub const MAX_INTERVAL_SECS: u64 = 366 * 24 * 3600;

/// A late due instant still fires as on time if it is at most this old (and at most half
/// the way to the next one): a loaded node is late by moments, a stopped one by more.
pub const GRACE: Duration = Duration::from_secs(60);

/// At most this many missed instants are counted after a long stop (the latest is what
/// fires or is skipped; the count is only reported).
const MAX_COUNTED: u64 = 1_000_000;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A five-field cron expression (or `@daily` and friends), read in an IANA time zone.
    Cron { expr: String, zone: String },
    /// Every `secs` seconds, counted from the schedule's creation
    /// ([`Schedule::created_at`]), whatever pauses came between.
    Every { secs: u64 },
}

/// What happens to due instants that passed while the node was stopped, the schedule's
/// agent could not run, or the clock jumped forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// They are recorded as skipped (`schedule.skipped`) and the schedule waits for the
    /// next one.
    #[default]
    Skip,
    /// The schedule fires once for all of them, at once (`schedule.fired` with `missed`).
    CatchUpOnce,
}

impl std::str::FromStr for Missed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Missed::Skip),
            "catch-up-once" => Ok(Missed::CatchUpOnce),
            other => Err(format!(
                "`{other}` is not a missed-run policy: skip or catch-up-once"
            )),
        }
    }
}

/// The mission a schedule submits each time it fires: the fields of a mission
/// declaration (docs/missions.md) except the agent and namespace, which are the
/// schedule's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub objective: String,
    pub tools: Vec<String>,
    pub timeout_secs: u64,
    /// The authority it claims (default: the agent's credential level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
    /// A named workspace, so that each firing works on the same files (default: a fresh
    /// one per mission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepPolicy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_steps: BTreeMap<String, StepPolicy>,
}

impl Template {
    /// The declaration for `agent`, built as the missions route builds one from a
    /// request, so that a fired mission is judged exactly like a submitted one.
    pub fn spec(&self, agent: &AgentInfo) -> MissionSpec {
        MissionSpec {
            regions: Vec::new(),
            objective: self.objective.clone(),
            tools: self.tools.clone(),
            authority: Authority {
                credential: Some(agent.credential.statement.id),
                level: self.level.unwrap_or(agent.level),
            },
            timeout_secs: self.timeout_secs,
            namespace: agent.namespace.clone(),
            budget: Budget {
                max_steps: self.max_steps.unwrap_or(Budget::default().max_steps),
                max_tokens: self.max_tokens.unwrap_or(Budget::default().max_tokens),
            },
            reasoner: self.reasoner.clone().unwrap_or_default(),
            network: self.network.clone(),
            workspace: self.workspace.clone(),
            steps: self.steps.clone(),
            tool_steps: self.tool_steps.clone(),
        }
    }

    /// The checks that need nothing but the template: sizes and ranges. (Whether its
    /// tools and reasoner exist is the scheduler's check, against the node.)
    pub fn check(&self) -> Result<(), String> {
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?.len();
        if bytes > MAX_TEMPLATE_BYTES {
            return Err(format!(
                "the mission template is {bytes} bytes; at most {MAX_TEMPLATE_BYTES} are accepted"
            ));
        }
        if self.objective.trim().is_empty() {
            return Err("the template's `objective` is empty".into());
        }
        if self.tools.is_empty() {
            return Err(
                "the template names no tools; a mission acts only through its tools".into(),
            );
        }
        if self.tools.len() > MAX_TOOLS {
            return Err(format!("the template names more than {MAX_TOOLS} tools"));
        }
        if !(1..=MissionSpec::MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!(
                "`timeout_secs` is {}; it must be between 1 and {} (30 days)",
                self.timeout_secs,
                MissionSpec::MAX_TIMEOUT_SECS
            ));
        }
        Ok(())
    }
}

/// A schedule as created. Recorded whole in its `schedule.created` entry, so its JSON form
/// only grows. (Unknown fields are ignored rather than refused: the API flattens it into
/// [`View`], and a newer node's schedule must still read.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: ScheduleId,
    /// A name for people; not unique.
    pub name: String,
    /// The agent whose missions it submits.
    pub agent: AgentId,
    pub namespace: Namespace,
    pub template: Template,
    pub trigger: Trigger,
    pub missed: Missed,
    /// When it was created: an interval counts from here.
    pub created_at: Timestamp,
    /// Who created it (an API key's id, or `local`).
    pub created_by: String,
}

/// A trigger made ready to compute instants: a parsed cron expression and its zone, or
/// an interval and its anchor.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Cron(Box<Cron>, jiff::tz::TimeZone),
    Every { every: u64, anchor: Timestamp },
}

impl Trigger {
    /// Parses the trigger, for a schedule created at `anchor`; the error is one line.
    pub(crate) fn compile(&self, anchor: Timestamp) -> Result<Compiled, String> {
        match self {
            Trigger::Cron { expr, zone } => {
                let cron = Cron::parse(expr).map_err(|e| e.to_string())?;
                if zone.len() > 64 {
                    return Err("a time zone name is at most 64 characters".into());
                }
                let tz = jiff::tz::TimeZone::get(zone).map_err(|_| {
                    format!("`{zone}` is not a time zone this node knows (an IANA name such as Europe/Paris, or UTC)")
                })?;
                Ok(Compiled::Cron(Box::new(cron), tz))
            }
            Trigger::Every { secs } => {
                if *secs == 0 || *secs > MAX_INTERVAL_SECS {
                    return Err(format!(
                        "the interval is {secs} s; it must be between 1 s and {MAX_INTERVAL_SECS} s (366 days)"
                    ));
                }
                Ok(Compiled::Every {
                    every: *secs,
                    anchor,
                })
            }
        }
    }

    /// For people: `cron "0 9 * * MON-FRI" Europe/Paris` or `every 900 s`.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Cron { expr, zone } => format!("cron \"{expr}\" {zone}"),
            Trigger::Every { secs } => format!("every {secs} s"),
        }
    }
}

fn to_jiff(t: Timestamp) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_nanosecond(i128::from(t.as_nanos())).ok()
}

fn from_jiff(t: jiff::Timestamp) -> Option<Timestamp> {
    u64::try_from(t.as_nanosecond())
        .ok()
        .map(Timestamp::from_nanos)
}

impl Compiled {
    /// The first due instant strictly after `t`; `None` when there is none (a cron
    /// expression with no day left in the next 30 years, or past the year 2554).
    pub(crate) fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Compiled::Cron(cron, zone) => cron.next_after(to_jiff(t)?, zone).and_then(from_jiff),
            Compiled::Every { every, anchor } => {
                let every = every.checked_mul(1_000_000_000)?;
                let k = if t < *anchor {
                    1
                } else {
                    (t.as_nanos() - anchor.as_nanos()) / every + 1
                };
                k.checked_mul(every)
                    .and_then(|d| anchor.as_nanos().checked_add(d))
                    .map(Timestamp::from_nanos)
            }
        }
    }
}

/// What a schedule does at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Submit a mission for `due`, which stands for itself and `missed` earlier instants.
    Fire { due: Timestamp, missed: u64 },
    /// Record `count` instants, `first` to `last`, as skipped.
    Skip {
        first: Timestamp,
        last: Timestamp,
        count: u64,
    },
}

/// What a schedule whose instants up to `since` are dealt with does at `now`: the rule of
/// docs/automatons.md, "Missed runs".
///
/// The due instants in `(since, now]` are collected. None: nothing. The latest is *on
/// time* if it is at most [`GRACE`] old and less than half way to the instant after it; an
/// on-time instant fires, and the earlier ones (if any) are skipped or caught up by that
/// firing. A late latest instant fires once (catch-up-once) or is skipped with the rest
/// (skip). Whatever the policy, a schedule fires at most once per call.
pub(crate) fn plan(
    trigger: &Compiled,
    missed: Missed,
    since: Timestamp,
    now: Timestamp,
) -> Vec<Action> {
    let Some(first) = trigger.next_after(since).filter(|d| *d <= now) else {
        return Vec::new();
    };
    let mut latest = first;
    let mut previous = None;
    let mut count = 1u64;
    while count < MAX_COUNTED {
        match trigger.next_after(latest) {
            Some(next) if next <= now => {
                previous = Some(latest);
                latest = next;
                count += 1;
            }
            _ => break,
        }
    }
    let age = now.since(latest);
    let half_way = trigger
        .next_after(latest)
        .map_or(GRACE, |next| next.since(latest) / 2);
    let on_time = age <= GRACE && age < half_way.max(Duration::from_millis(1));
    match (on_time, missed) {
        (true, Missed::Skip) => {
            let mut actions = Vec::new();
            if let Some(previous) = previous {
                actions.push(Action::Skip {
                    first,
                    last: previous,
                    count: count - 1,
                });
            }
            actions.push(Action::Fire {
                due: latest,
                missed: 0,
            });
            actions
        }
        (_, Missed::CatchUpOnce) => vec![Action::Fire {
            due: latest,
            missed: count - 1,
        }],
        (false, Missed::Skip) => vec![Action::Skip {
            first,
            last: latest,
            count,
        }],
    }
}

/// The body of `schedule.created`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Created {
    pub(crate) v: u32,
    pub(crate) schedule: Schedule,
}

/// The body of `schedule.paused`, `schedule.resumed` and `schedule.deleted`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Changed {
    pub(crate) v: u32,
    pub(crate) schedule: ScheduleId,
    pub(crate) by: String,
    pub(crate) at: Timestamp,
}

/// The body of `schedule.fired`: recorded before the mission is submitted, with the
/// mission's id drawn in advance, so that the firing is one durable append and a
/// submission cut short by a crash is finished at the next start under the same id
/// (never a second mission for the same instant).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fired {
    pub(crate) v: u32,
    pub(crate) schedule: ScheduleId,
    pub(crate) due: Timestamp,
    pub(crate) mission: MissionId,
    /// Earlier due instants this firing stands for (catch-up-once); 0 when on time.
    pub(crate) missed: u64,
    pub(crate) at: Timestamp,
}

/// The body of `schedule.skipped`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Skipped {
    pub(crate) v: u32,
    pub(crate) schedule: ScheduleId,
    pub(crate) first: Timestamp,
    pub(crate) last: Timestamp,
    pub(crate) count: u64,
    pub(crate) at: Timestamp,
}

/// The body of `schedule.failed`: the mission of a firing could not be submitted (its
/// agent's credential no longer allows it, a tool was removed, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Failed {
    pub(crate) v: u32,
    pub(crate) schedule: ScheduleId,
    pub(crate) due: Timestamp,
    pub(crate) mission: MissionId,
    pub(crate) error: String,
    pub(crate) at: Timestamp,
}

/// A schedule as the API shows it: what was created, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    #[serde(flatten)]
    pub schedule: Schedule,
    pub enabled: bool,
    /// The next instant it fires (none while paused).
    pub next_due: Option<Timestamp>,
    /// The last due instant dealt with (fired or skipped).
    pub last_due: Option<Timestamp>,
    /// Missions it submitted.
    pub fired: u64,
    /// Due instants it skipped.
    pub skipped: u64,
    pub last_mission: Option<MissionId>,
}

/// A new schedule, as the API and the CLI ask for one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    pub agent: AgentId,
    #[serde(default)]
    pub name: String,
    pub template: Template,
    pub trigger: Trigger,
    #[serde(default)]
    pub missed: Missed,
    /// Created paused.
    #[serde(default)]
    pub paused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000_000;

    fn t(mins: u64) -> Timestamp {
        Timestamp::from_nanos(1_800_000_000_000_000_000 + mins * MIN)
    }

    fn every(mins: u64) -> Compiled {
        Compiled::Every {
            every: mins * 60,
            anchor: t(0),
        }
    }

    /// `plan` for an interval schedule, the instants in minutes from the anchor.
    fn check(every_mins: u64, missed: Missed, since: u64, now_secs: u64, expect: &[Action]) {
        let now = Timestamp::from_nanos(t(0).as_nanos() + now_secs * 1_000_000_000);
        assert_eq!(
            plan(&every(every_mins), missed, t(since), now),
            expect,
            "every {every_mins} min, since {since} min, now {now_secs} s"
        );
    }

    #[test]
    fn missed_run_policies() {
        use Action::{Fire, Skip};
        // Nothing due yet.
        check(10, Missed::Skip, 0, 599, &[]);
        // On time (a second late): fires, whatever the policy.
        check(
            10,
            Missed::Skip,
            0,
            601,
            &[Fire {
                due: t(10),
                missed: 0,
            }],
        );
        check(
            10,
            Missed::CatchUpOnce,
            0,
            601,
            &[Fire {
                due: t(10),
                missed: 0,
            }],
        );
        // Five minutes late (more than the grace): skipped, or caught up once.
        check(
            10,
            Missed::Skip,
            0,
            900,
            &[Skip {
                first: t(10),
                last: t(10),
                count: 1,
            }],
        );
        check(
            10,
            Missed::CatchUpOnce,
            0,
            900,
            &[Fire {
                due: t(10),
                missed: 0,
            }],
        );
        // A stop of an hour, back a second after a due instant: the earlier five are
        // skipped or caught up by the one firing; the on-time one fires.
        check(
            10,
            Missed::Skip,
            0,
            3601,
            &[
                Skip {
                    first: t(10),
                    last: t(50),
                    count: 5,
                },
                Fire {
                    due: t(60),
                    missed: 0,
                },
            ],
        );
        check(
            10,
            Missed::CatchUpOnce,
            0,
            3601,
            &[Fire {
                due: t(60),
                missed: 5,
            }],
        );
        // A clock jump of a day: skip fires none; catch-up-once fires exactly once.
        check(
            10,
            Missed::Skip,
            0,
            86_400 + 300,
            &[Skip {
                first: t(10),
                last: t(1440),
                count: 144,
            }],
        );
        check(
            10,
            Missed::CatchUpOnce,
            0,
            86_400 + 300,
            &[Fire {
                due: t(1440),
                missed: 143,
            }],
        );
        // Instants already dealt with are not counted again.
        check(10, Missed::CatchUpOnce, 1440, 86_400 + 300, &[]);
    }

    #[test]
    fn the_grace_is_at_most_half_the_period() {
        // Every 20 s: 11 s late is more than half way to the next, so it is missed.
        let every = Compiled::Every {
            every: 20,
            anchor: t(0),
        };
        let late = Timestamp::from_nanos(t(0).as_nanos() + 31_000_000_000);
        assert_eq!(
            plan(&every, Missed::Skip, t(0), late),
            [Action::Skip {
                first: Timestamp::from_nanos(t(0).as_nanos() + 20_000_000_000),
                last: Timestamp::from_nanos(t(0).as_nanos() + 20_000_000_000),
                count: 1
            }]
        );
    }

    #[test]
    fn bad_triggers_are_refused_with_a_reason() {
        for (trigger, says) in [
            (Trigger::Every { secs: 0 }, "between 1 s"),
            (
                Trigger::Every {
                    secs: MAX_INTERVAL_SECS + 1,
                },
                "between 1 s",
            ),
            (
                Trigger::Cron {
                    expr: "* * *".into(),
                    zone: "UTC".into(),
                },
                "has 3 fields",
            ),
            (
                Trigger::Cron {
                    expr: "0 9 * * *".into(),
                    zone: "Mars/Olympus".into(),
                },
                "not a time zone",
            ),
        ] {
            let err = trigger.compile(t(0)).unwrap_err();
            assert!(err.contains(says), "{trigger:?}: {err}");
        }
    }

    #[test]
    fn template_limits() {
        let ok = Template {
            objective: "x".into(),
            tools: vec!["fs.read".into()],
            timeout_secs: 60,
            level: None,
            max_steps: None,
            max_tokens: None,
            reasoner: None,
            network: vec![],
            workspace: None,
            steps: None,
            tool_steps: BTreeMap::new(),
        };
        assert_eq!(ok.check(), Ok(()));
        let big = Template {
            objective: "x".repeat(MAX_TEMPLATE_BYTES),
            ..ok.clone()
        };
        assert!(big.check().unwrap_err().contains("at most 65536"));
        let none = Template {
            tools: vec![],
            ..ok.clone()
        };
        assert!(none.check().unwrap_err().contains("no tools"));
        let long = Template {
            timeout_secs: 0,
            ..ok
        };
        assert!(long.check().unwrap_err().contains("timeout_secs"));
    }

    /// The vectors of docs/automatons.md: the canonical JSON bodies of `schedule.created`
    /// and `schedule.fired`, byte for byte (RFC 8785: members sorted, no spaces).
    #[test]
    fn record_bodies_are_the_documented_vectors() {
        let at = Timestamp::from_secs(1_800_000_000);
        let schedule = Schedule {
            id: ScheduleId::from_bytes([1; 16]),
            name: "morning".into(),
            agent: AgentId([3; 16]),
            namespace: Namespace::new("default").unwrap(),
            template: serde_json::from_str(
                r#"{"objective":"tidy","tools":["fs.list","mission.finish"],"timeout_secs":60}"#,
            )
            .unwrap(),
            trigger: Trigger::Cron {
                expr: "0 9 * * MON-FRI".into(),
                zone: "Europe/Paris".into(),
            },
            missed: Missed::CatchUpOnce,
            created_at: at,
            created_by: "local".into(),
        };
        let created = aura_core::jcs::to_vec(&Created { v: 1, schedule }).unwrap();
        assert_eq!(
            String::from_utf8(created).unwrap(),
            concat!(
                r#"{"schedule":{"agent":"agent_030c1g60r30c1g60r30c1g60r3","#,
                r#""created_at":"2027-01-15T08:00:00.000000000Z","created_by":"local","#,
                r#""id":"sched_01040g2081040g2081040g2081","missed":"catch-up-once","#,
                r#""name":"morning","namespace":"default","#,
                r#""template":{"objective":"tidy","timeout_secs":60,"tools":["fs.list","mission.finish"]},"#,
                r#""trigger":{"expr":"0 9 * * MON-FRI","kind":"cron","zone":"Europe/Paris"}},"v":1}"#
            )
        );
        let fired = aura_core::jcs::to_vec(&Fired {
            v: 1,
            schedule: ScheduleId::from_bytes([1; 16]),
            due: at,
            mission: MissionId::from_bytes([2; 16]),
            missed: 2,
            at: Timestamp::from_secs(1_800_000_001),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(fired).unwrap(),
            concat!(
                r#"{"at":"2027-01-15T08:00:01.000000000Z","due":"2027-01-15T08:00:00.000000000Z","#,
                r#""missed":2,"mission":"mission_02081040g2081040g2081040g2","#,
                r#""schedule":"sched_01040g2081040g2081040g2081","v":1}"#
            )
        );
    }

    #[test]
    fn missed_policy_names() {
        assert_eq!("skip".parse::<Missed>(), Ok(Missed::Skip));
        assert_eq!("catch-up-once".parse::<Missed>(), Ok(Missed::CatchUpOnce));
        assert!("sometimes".parse::<Missed>().is_err());
        assert_eq!(
            serde_json::to_string(&Missed::CatchUpOnce).unwrap(),
            "\"catch-up-once\""
        );
    }
}
