//! Aura's policy engine: may this agent do this, here, now? Pure: no IO, no clock, no
//! randomness. The answer is a function of the loaded policies and the request alone, so
//! a replay of the ledger reaches the same decisions.
//!
//! Policies are written in Cedar against Aura's schema ([`PolicySet::schema_text`]):
//! principals are agents, whose parents are their authority level and namespace (the
//! levels form a chain, L4 in L3 in L2 in L1, so `principal in Aura::Level::"L2"` reads
//! "at least L2"); actions are tool names and mission lifecycle actions; resources are
//! workspace paths, commands, hosts, models, missions and agents.
//!
//! [`decide`] answers one of three outcomes:
//!
//! - [`Outcome::Permit`]: Cedar allows, without evaluation errors.
//! - [`Outcome::Escalate`]: Cedar denies, every forbid that decided carries an
//!   `@escalate("Ln")` annotation, and the same request would be permitted with an approval
//!   at the highest of those levels. The caller records the escalation, obtains a signed
//!   approval naming [`request_digest`], checks it with `aura_identity::verify_approval`, and
//!   calls [`decide`] again with the verified approval in [`Context::approval`].
//! - [`Outcome::Deny`]: anything else: a forbid without `@escalate`, no permit, any
//!   evaluation error, or a request that is malformed or crosses namespaces.
//!
//! Namespace isolation holds whatever the loaded policies say: [`decide`] refuses a request
//! whose resource belongs to another namespace before Cedar runs (and the default set
//! repeats the rule as the forbid `aura.namespace-isolation`).
//!
//! ```
//! use aura_core::AgentId;
//! use aura_identity::{Level, Namespace};
//! use aura_policy::{Context, Outcome, PolicySet, Principal, Request, Resource, decide};
//!
//! let policies = PolicySet::defaults();
//! let team = Namespace::new("team-a").unwrap();
//! let request = Request {
//!     principal: Principal { agent: AgentId::from_bytes([7; 16]), level: Level::L2, namespace: team.clone() },
//!     action: "fs.write".into(),
//!     resource: Resource::Path { namespace: team, path: "notes/today.md".into() },
//!     context: Context::default(),
//! };
//! let decision = decide(&policies, &request);
//! assert_eq!(decision.outcome, Outcome::Permit);
//! assert_eq!(decision.deciding, ["aura.workspace.write"]);
//! ```
//!
//! docs/policy.md describes the schema, the decision rule and every default policy.

#![forbid(unsafe_code)]

mod decide;
mod digest;
mod request;
mod schema;
mod set;
mod slice;

#[doc(hidden)]
pub use decide::{CedarParts, cedar_parts, decide_unsliced};
pub use decide::{Decision, Outcome, decide};
pub use digest::request_digest;
pub use request::{
    Context, MAX_EXTRA_DEPTH, MAX_EXTRA_ENTRIES, MAX_EXTRA_VALUE, MAX_PATH, Principal, Request,
    Resource,
};
pub use request::{MAX_SPACE_NAME, valid_space_name};
pub use set::{Effect, LoadError, MAX_POLICY_FILE, PolicyInfo, PolicySet, Problem};

/// The policy id under which [`decide`] reports a request that crosses namespaces.
pub const NAMESPACE_ISOLATION: &str = "aura.namespace-isolation";
