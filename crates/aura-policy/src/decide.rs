//! The decision: PERMIT, DENY or ESCALATE, and which policies decided it.
//!
//! In order:
//!
//! 1. The request is checked without Cedar: the action exists (or is a well-formed name
//!    of a tool Aura does not know, evaluated as `tool.custom`) and applies to this kind
//!    of resource; the resource's fields are in canonical form; the resource is in the
//!    principal's namespace; an approval in the context approves this very request.
//!    Failing any of these denies.
//! 2. Cedar evaluates the request against the whole set. Any evaluation error denies,
//!    whatever else matched (fail closed). Allow permits.
//! 3. On deny: no forbid decided (no permit matched) denies; a forbid without
//!    `@escalate` denies. If every deciding forbid escalates, the required level is the
//!    highest of their annotations, and the request is evaluated once more with a
//!    hypothetical approval at that level: only if that would be permitted is the
//!    outcome ESCALATE. An escalation that no approval could answer would only make a
//!    person approve something that is then denied anyway, so it denies at once. If the
//!    request already carries an approval at (or above) the required level and the forbids
//!    still decide, they do not yield to approvals: deny, rather than escalate forever.
//!
//! Entities are built per request from cached parts (type names, action entities): the
//! principal with its level chain and namespace as ancestors, the resource, and an
//! `Aura::Extra` entity carrying `context.extra` as tags.

use aura_identity::{Level, Verdict};
use cedar_policy::{
    Authorizer, Context as CedarContext, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityUid, RestrictedExpression,
};
use serde::Serialize;

use crate::digest::request_digest;
use crate::request::{
    Malformed, Request, Resource, approval_fields, check_resource, check_tool_name, extra_tags,
    program_of, shorten,
};
use crate::schema::{self, CUSTOM_TOOL, Compiled, MCP_CALL, PLUGIN_CALL};
use crate::set::{Effect, PolicyInfo, PolicySet};
use crate::slice::Scoped;

/// What policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Permit,
    Deny,
    /// Wait for an approval by someone of at least `level`, then decide again with it.
    Escalate {
        level: Level,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Permit => f.write_str("PERMIT"),
            Outcome::Deny => f.write_str("DENY"),
            Outcome::Escalate { level } => write!(f, "ESCALATE to {level}"),
        }
    }
}

/// A decision and its grounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The ids of the policies that decided, sorted: the permits that matched for PERMIT,
    /// the forbids that matched for DENY and ESCALATE (empty when nothing permitted).
    pub deciding: Vec<String>,
    /// Evaluation errors and refusals, sorted; any entry here means DENY.
    pub errors: Vec<String>,
    /// One line for people saying why.
    pub reason: String,
}

impl Decision {
    fn deny(deciding: Vec<String>, errors: Vec<String>, reason: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            deciding,
            errors,
            reason: reason.into(),
        }
    }

    fn refuse(deciding: Vec<String>, error: String) -> Decision {
        let reason = format!("denied: {error}");
        Decision::deny(deciding, vec![error], reason)
    }
}

/// Decides `request` under `policies`. Pure and total: it reads nothing but its
/// arguments, never panics, and denies whenever it cannot be sure.
pub fn decide(policies: &PolicySet, request: &Request) -> Decision {
    decide_with(policies, request, Slicing::On)
}

/// [`decide`] evaluating every policy, not only those whose scope matches: the same
/// answer, slower. For the tests that prove slicing changes nothing, and benchmarks.
#[doc(hidden)]
pub fn decide_unsliced(policies: &PolicySet, request: &Request) -> Decision {
    decide_with(policies, request, Slicing::Off)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slicing {
    On,
    Off,
}

fn decide_with(policies: &PolicySet, request: &Request, slicing: Slicing) -> Decision {
    let compiled = match schema::compiled() {
        Ok(c) => c,
        Err(e) => return Decision::refuse(Vec::new(), e.to_owned()),
    };
    let prepared = match prepare(compiled, request, Isolation::Enforce) {
        Ok(p) => p,
        Err(Refusal { deciding, error }) => return Decision::refuse(deciding, error),
    };
    let sliced;
    let cedar_set = match slicing {
        Slicing::Off => policies.cedar(),
        Slicing::On => match slice(policies, &prepared) {
            Ok(s) => {
                sliced = s;
                &*sliced
            }
            Err(e) => return Decision::refuse(Vec::new(), e),
        },
    };
    evaluate(compiled, policies, cedar_set, &prepared)
}

/// The policies whose scope matches the prepared request.
fn slice(
    policies: &PolicySet,
    p: &Prepared<'_>,
) -> Result<std::sync::Arc<cedar_policy::PolicySet>, String> {
    // Read the ancestors from the entity set Cedar evaluates against, so that the slice
    // sees exactly what Cedar would.
    fn scoped<'a>(entities: &'a Entities, uid: &'a EntityUid) -> Scoped<'a> {
        Scoped {
            uid,
            ancestors: entities
                .ancestors(uid)
                .map(Iterator::collect)
                .unwrap_or_default(),
        }
    }
    policies.slicer().slice(
        &scoped(&p.entities, &p.principal),
        &scoped(&p.entities, &p.action.uid),
        &scoped(&p.entities, &p.resource),
    )
}

/// Why a request was refused before Cedar ran.
pub(crate) struct Refusal {
    deciding: Vec<String>,
    error: String,
}

impl From<Malformed> for Refusal {
    fn from(m: Malformed) -> Self {
        Refusal {
            deciding: Vec::new(),
            error: m.0,
        }
    }
}

fn refusal(error: impl Into<String>) -> Refusal {
    Refusal {
        deciding: Vec::new(),
        error: error.into(),
    }
}

/// A request in Cedar's terms, ready to evaluate (and to evaluate again with a
/// hypothetical approval).
pub(crate) struct Prepared<'a> {
    principal: EntityUid,
    action: &'a schema::Action,
    resource: EntityUid,
    entities: Entities,
    /// The context's fields except `approval`.
    context: Vec<(String, RestrictedExpression)>,
    approval: Option<(Level, String, &'static str)>,
}

fn uid(t: &cedar_policy::EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
}

/// Whether [`prepare`] refuses a resource of another namespace. Only tests skip it, to
/// show that the default set's own forbid holds as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    Enforce,
    #[cfg(test)]
    LeaveToPolicy,
}

pub(crate) fn prepare<'c>(
    compiled: &'c Compiled,
    request: &Request,
    isolation: Isolation,
) -> Result<Prepared<'c>, Refusal> {
    let t = &compiled.types;
    let principal = &request.principal;

    // The action: a known one applying to this kind of resource, or a custom tool.
    let action =
        match compiled.actions.get(&request.action) {
            Some(a)
                if request.action != CUSTOM_TOOL
                    && request.action != MCP_CALL
                    && request.action != PLUGIN_CALL =>
            {
                a
            }
            // An installed plugin, `plugin.<name>`: as for MCP tools, its name must match
            // the resource's.
            _ if request.action.starts_with("plugin.") => {
                check_tool_name(&request.action)?;
                let Resource::Plugin { name, .. } = &request.resource else {
                    return Err(refusal(format!(
                        "the action `{}` does not apply to {}",
                        shorten(&request.action),
                        request.resource.kind()
                    )));
                };
                if request.action != format!("plugin.{name}") {
                    return Err(refusal(format!(
                        "the action `{}` does not name the plugin `{}`",
                        shorten(&request.action),
                        shorten(name)
                    )));
                }
                compiled.actions.get(PLUGIN_CALL).ok_or_else(|| {
                    refusal(format!("aura's schema lacks the action `{PLUGIN_CALL}`"))
                })?
            }
            // An MCP server's tool, `mcp.<server>.<tool>`: its name must match the resource,
            // so a request cannot be judged as one tool and name another.
            _ if request.action.starts_with("mcp.") => {
                check_tool_name(&request.action)?;
                let Resource::McpTool { server, tool, .. } = &request.resource else {
                    return Err(refusal(format!(
                        "the action `{}` does not apply to {}",
                        shorten(&request.action),
                        request.resource.kind()
                    )));
                };
                if request.action != format!("mcp.{server}.{tool}") {
                    return Err(refusal(format!(
                        "the action `{}` does not name the MCP tool `{}` of server `{}`",
                        shorten(&request.action),
                        shorten(tool),
                        shorten(server)
                    )));
                }
                compiled.actions.get(MCP_CALL).ok_or_else(|| {
                    refusal(format!("aura's schema lacks the action `{MCP_CALL}`"))
                })?
            }
            _ => {
                check_tool_name(&request.action)?;
                let reserved = request.action == CUSTOM_TOOL
                    || compiled.groups.contains(&request.action)
                    || request.action.starts_with("mission.")
                    || request.action.starts_with("record.")
                    || request.action.starts_with("aura.");
                if reserved {
                    return Err(refusal(format!(
                        "`{}` is not an action a request may name",
                        shorten(&request.action)
                    )));
                }
                compiled.actions.get(CUSTOM_TOOL).ok_or_else(|| {
                    refusal(format!("aura's schema lacks the action `{CUSTOM_TOOL}`"))
                })?
            }
        };
    let resource_type = request.resource.type_name();
    if !action.resources.iter().any(|r| r == resource_type) {
        return Err(refusal(format!(
            "the action `{}` does not apply to {}",
            shorten(&request.action),
            request.resource.kind()
        )));
    }
    check_resource(&request.resource)?;

    // Namespace isolation, before anything a policy could say.
    if let Some(ns) = request.resource.namespace()
        && ns != &principal.namespace
        && isolation == Isolation::Enforce
    {
        return Err(Refusal {
            deciding: vec![crate::NAMESPACE_ISOLATION.to_owned()],
            error: format!(
                "{} of namespace `{ns}` is outside the agent's namespace `{}`",
                request.resource.kind(),
                principal.namespace
            ),
        });
    }

    // An agent's own memory is its alone, before anything a policy could say.
    if let Resource::Memory { space, .. } = &request.resource
        && space.starts_with("agent:")
        && !is_own_space(space, request)
    {
        return Err(refusal(format!(
            "the memory space `{}` is another agent's; an agent's memory is its own",
            shorten(space)
        )));
    }

    // An approval must approve this very request.
    let approval = match &request.context.approval {
        None => None,
        Some(a) => {
            if a.verdict == Verdict::Reject {
                return Err(refusal(format!(
                    "the approval {} rejects this request",
                    a.id
                )));
            }
            if a.request != request_digest(request) {
                return Err(refusal(format!(
                    "the approval {} answers a different request",
                    a.id
                )));
            }
            Some(approval_fields(a))
        }
    };

    let tags = extra_tags(&request.context.extra)?;

    // The principal: in its level and every level below, and in its namespace.
    let ns_uid = uid(&t.namespace, principal.namespace.as_str());
    let agent_id = principal.agent.to_string();
    let principal_uid = uid(&t.agent, &agent_id);
    let mut parents: Vec<EntityUid> = compiled.levels[..usize::from(principal.level.as_u8())]
        .iter()
        .rev()
        .cloned()
        .collect();
    parents.push(ns_uid.clone());
    let principal_entity = Entity::new(
        principal_uid.clone(),
        [(
            "namespace".to_owned(),
            RestrictedExpression::new_entity_uid(ns_uid),
        )]
        .into(),
        parents.into_iter().collect(),
    )
    .map_err(|e| refusal(format!("cannot build the principal: {e}")))?;

    let (resource_uid, resource_entity) = resource_entity(compiled, request)?;

    let extra_uid = uid(&t.extra, "request");
    let extra_entity = if tags.is_empty() {
        None
    } else {
        let e = Entity::new_with_tags(
            extra_uid.clone(),
            [],
            [],
            tags.into_iter()
                .map(|(k, v)| (k, RestrictedExpression::new_string(v))),
        )
        .map_err(|e| refusal(format!("cannot build context.extra: {e}")))?;
        Some(e)
    };

    let mut entities = vec![principal_entity, action.entity.clone()];
    // Without tags the entity is left out: `hasTag` on an entity that does not exist is
    // false, as it would be on one without tags, and it saves building one.
    if let Some(e) = extra_entity {
        entities.push(e);
    }
    // An agent messaging itself is one entity, not two.
    if resource_uid != principal_uid {
        entities.push(resource_entity);
    }
    let entities = entity_set(&entities)
        .map_err(|e| refusal(format!("cannot build the request's entities: {e}")))?;

    let c = &request.context;
    let mut context = vec![
        (
            "tool".to_owned(),
            RestrictedExpression::new_string(request.action.clone()),
        ),
        (
            "destructive".to_owned(),
            RestrictedExpression::new_bool(c.destructive),
        ),
        (
            "in_cell".to_owned(),
            RestrictedExpression::new_bool(c.in_cell),
        ),
        (
            "extra".to_owned(),
            RestrictedExpression::new_entity_uid(extra_uid),
        ),
    ];
    if let Some(m) = &c.mission {
        context.push((
            "mission".to_owned(),
            RestrictedExpression::new_string(m.to_string()),
        ));
    }
    // Where the request is judged and the mission's boundary (docs/cluster.md): present
    // only in a cluster and for a mission with a boundary, so `context has regions`
    // reads "the mission is bounded".
    if let Some(region) = &c.node_region {
        context.push((
            "node_region".to_owned(),
            RestrictedExpression::new_string(region.clone()),
        ));
    }
    if let Some(regions) = &c.regions {
        context.push((
            "regions".to_owned(),
            RestrictedExpression::new_set(
                regions
                    .iter()
                    .map(|r| RestrictedExpression::new_string(r.clone())),
            ),
        ));
    }
    Ok(Prepared {
        principal: principal_uid,
        action,
        resource: resource_uid,
        entities,
        context,
        approval,
    })
}

/// The request's entity set. Every entity arrives with its complete set of ancestors
/// (the principal with every level below its own and its namespace; the action with its
/// groups, from the schema; resources with their namespace; nothing is an ancestor of
/// anything else in the set), so the transitive closure that Cedar's public constructors
/// recompute, at a third of the cost of a whole decision, is already there. The engine
/// crate lets us say so; a test compares the result with the public constructor's.
fn entity_set(entities: &[Entity]) -> Result<Entities, String> {
    use cedar_policy_core::entities::{NoEntitiesSchema, TCComputation};
    cedar_policy_core::entities::Entities::from_entities(
        entities
            .iter()
            .map(|e| AsRef::<cedar_policy_core::ast::Entity>::as_ref(e).clone()),
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        cedar_policy_core::extensions::Extensions::all_available(),
    )
    .map(Entities::from)
    .map_err(|e| e.to_string())
}

/// Whether `space` is the asking agent's own memory (`agent:<its id>`).
fn is_own_space(space: &str, request: &Request) -> bool {
    space
        .strip_prefix("agent:")
        .is_some_and(|id| id == request.principal.agent.to_string())
}

fn resource_entity(compiled: &Compiled, request: &Request) -> Result<(EntityUid, Entity), Refusal> {
    let t = &compiled.types;
    let ns_attr = |ns: &aura_identity::Namespace| {
        (
            "namespace".to_owned(),
            RestrictedExpression::new_entity_uid(uid(&t.namespace, ns.as_str())),
        )
    };
    let string = |k: &str, v: &str| (k.to_owned(), RestrictedExpression::new_string(v.to_owned()));
    let (resource_uid, attrs, parent) = match &request.resource {
        Resource::Path { namespace, path } => (
            uid(&t.path, &format!("{namespace}:{path}")),
            vec![ns_attr(namespace), string("path", path)],
            Some(namespace),
        ),
        Resource::Command {
            namespace,
            command,
            network,
        } => (
            uid(&t.command, &format!("{namespace}:{command}")),
            vec![
                ns_attr(namespace),
                string("command", command),
                string("program", program_of(command)),
                (
                    "network".to_owned(),
                    RestrictedExpression::new_bool(*network),
                ),
            ],
            Some(namespace),
        ),
        Resource::Host { host, port, scheme } => (
            uid(&t.host, &format!("{scheme}://{host}:{port}")),
            vec![
                string("host", host),
                (
                    "port".to_owned(),
                    RestrictedExpression::new_long(i64::from(*port)),
                ),
                string("scheme", scheme),
            ],
            None,
        ),
        Resource::Model { name, digest } => (
            uid(&t.model, &format!("{name}@{digest}")),
            vec![string("name", name), string("digest", digest)],
            None,
        ),
        Resource::McpTool {
            server,
            tool,
            trusted,
        } => (
            uid(&t.mcp_tool, &format!("{server}/{tool}")),
            vec![
                string("server", server),
                string("tool", tool),
                (
                    "trusted".to_owned(),
                    RestrictedExpression::new_bool(*trusted),
                ),
            ],
            None,
        ),
        Resource::Image {
            namespace,
            model,
            width,
            height,
            path,
        } => (
            uid(
                &t.image,
                &format!("{namespace}:{model}:{width}x{height}:{path}"),
            ),
            vec![
                ns_attr(namespace),
                string("model", model),
                (
                    "width".to_owned(),
                    RestrictedExpression::new_long(i64::from(*width)),
                ),
                (
                    "height".to_owned(),
                    RestrictedExpression::new_long(i64::from(*height)),
                ),
                string("path", path),
            ],
            Some(namespace),
        ),
        Resource::Plugin {
            namespace,
            name,
            version,
            publisher,
            digest,
            workspace,
            hosts,
        } => (
            uid(&t.plugin, &format!("{namespace}:{name}@{digest}")),
            vec![
                ns_attr(namespace),
                string("name", name),
                string("version", version),
                string("publisher", publisher),
                string("digest", digest),
                string("workspace", workspace),
                (
                    "hosts".to_owned(),
                    RestrictedExpression::new_set(
                        hosts
                            .iter()
                            .map(|h| RestrictedExpression::new_string(h.clone())),
                    ),
                ),
                // Derived, so policies need no empty-set literal (which Cedar's
                // validator refuses).
                (
                    "network".to_owned(),
                    RestrictedExpression::new_bool(!hosts.is_empty()),
                ),
            ],
            Some(namespace),
        ),
        Resource::Memory { namespace, space } => (
            uid(&t.memory, &format!("{namespace}/{space}")),
            vec![
                ns_attr(namespace),
                string("space", space),
                (
                    "own".to_owned(),
                    RestrictedExpression::new_bool(is_own_space(space, request)),
                ),
                (
                    "shared".to_owned(),
                    RestrictedExpression::new_bool(space.starts_with("shared:")),
                ),
            ],
            Some(namespace),
        ),
        Resource::Mission { namespace, id } => {
            let id = id.to_string();
            (
                uid(&t.mission, &id),
                vec![ns_attr(namespace), string("id", &id)],
                Some(namespace),
            )
        }
        Resource::Agent { namespace, id } => (
            uid(&t.agent, &id.to_string()),
            vec![ns_attr(namespace)],
            Some(namespace),
        ),
    };
    let parents = parent.map(|ns| uid(&t.namespace, ns.as_str()));
    let entity = Entity::new(
        resource_uid.clone(),
        attrs.into_iter().collect(),
        parents.into_iter().collect(),
    )
    .map_err(|e| refusal(format!("cannot build the resource: {e}")))?;
    Ok((resource_uid, entity))
}

/// Cedar's answer: the decision, the deciding policy ids and the evaluation errors.
pub(crate) struct Answer {
    pub(crate) allow: bool,
    pub(crate) deciding: Vec<String>,
    pub(crate) errors: Vec<String>,
    /// The ids of the policies whose evaluation failed.
    pub(crate) errored: Vec<String>,
}

/// The Cedar request for `p`, with `approval` as `context.approval`.
fn cedar_request(
    compiled: &Compiled,
    p: &Prepared<'_>,
    approval: Option<(Level, &str, &str)>,
) -> Result<cedar_policy::Request, String> {
    let mut pairs = p.context.clone();
    if let Some((level, approver, verdict)) = approval {
        let record = RestrictedExpression::new_record([
            (
                "level".to_owned(),
                RestrictedExpression::new_long(i64::from(level.as_u8())),
            ),
            (
                "approver".to_owned(),
                RestrictedExpression::new_string(approver.to_owned()),
            ),
            (
                "verdict".to_owned(),
                RestrictedExpression::new_string(verdict.to_owned()),
            ),
        ])
        .map_err(|e| format!("cannot build context.approval: {e}"))?;
        pairs.push(("approval".to_owned(), record));
    }
    let context =
        CedarContext::from_pairs(pairs).map_err(|e| format!("cannot build the context: {e}"))?;
    // Checking the request against the schema costs as much as evaluating a handful of
    // policies, and what it checks (the action applies to the resource type, the context
    // has the declared shape) holds by construction: `prepare` checks the action against
    // the resource, and builds the context field by field from the schema's declaration.
    // Debug builds (every test) check anyway, and a unit test checks every action and
    // resource kind. Were a request ever built wrong, a policy reading the wrong field
    // would fail to evaluate, and an error denies.
    let schema = cfg!(debug_assertions).then_some(&compiled.schema);
    cedar_policy::Request::new(
        p.principal.clone(),
        p.action.uid.clone(),
        p.resource.clone(),
        context,
        schema,
    )
    .map_err(|e| format!("the request does not fit aura's schema: {e}"))
}

/// Asks Cedar, with `approval` as `context.approval`.
pub(crate) fn ask(
    compiled: &Compiled,
    cedar_set: &cedar_policy::PolicySet,
    p: &Prepared<'_>,
    approval: Option<(Level, &str, &str)>,
) -> Answer {
    let request = match cedar_request(compiled, p, approval) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let response = Authorizer::new().is_authorized(&request, cedar_set, &p.entities);
    let mut deciding: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| id.to_string())
        .collect();
    deciding.sort_unstable();
    let mut errors = Vec::new();
    let mut errored = Vec::new();
    for e in response.diagnostics().errors() {
        errors.push(e.to_string().replace('\n', " "));
        let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
        errored.push(pe.policy_id().to_string());
    }
    errors.sort_unstable();
    errored.sort_unstable();
    errored.dedup();
    Answer {
        allow: response.decision() == CedarDecision::Allow,
        deciding,
        errors,
        errored,
    }
}

/// What [`decide`] first puts to Cedar for a request, for benchmarks that measure Cedar
/// alone on exactly the same input. Not part of the stable API.
#[doc(hidden)]
#[derive(Debug)]
pub struct CedarParts {
    pub request: cedar_policy::Request,
    pub entities: Entities,
    /// The policies whose scope matches the request: what `decide` evaluates.
    pub slice: std::sync::Arc<cedar_policy::PolicySet>,
}

/// Builds [`CedarParts`] for `request`, or says why `decide` would refuse it before Cedar.
#[doc(hidden)]
pub fn cedar_parts(policies: &PolicySet, request: &Request) -> Result<CedarParts, String> {
    let compiled = schema::compiled().map_err(str::to_owned)?;
    let p = prepare(compiled, request, Isolation::Enforce).map_err(|r| r.error)?;
    let approval = p
        .approval
        .as_ref()
        .map(|(level, approver, verdict)| (*level, approver.as_str(), *verdict));
    let request = cedar_request(compiled, &p, approval)?;
    let slice = slice(policies, &p)?;
    Ok(CedarParts {
        request,
        entities: p.entities,
        slice,
    })
}

fn failed(error: String) -> Answer {
    Answer {
        allow: false,
        deciding: Vec::new(),
        errors: vec![error],
        errored: Vec::new(),
    }
}

fn evaluate(
    compiled: &Compiled,
    policies: &PolicySet,
    cedar_set: &cedar_policy::PolicySet,
    p: &Prepared<'_>,
) -> Decision {
    let approval = p
        .approval
        .as_ref()
        .map(|(level, approver, verdict)| (*level, approver.as_str(), *verdict));
    let answer = ask(compiled, cedar_set, p, approval);
    if !answer.errors.is_empty() {
        let reason = format!(
            "denied: evaluation failed ({})",
            answer.errors.first().map_or("", String::as_str)
        );
        return Decision::deny(answer.errored, answer.errors, reason);
    }
    if answer.allow {
        let reason = format!("permitted by {}", answer.deciding.join(", "));
        return Decision {
            outcome: Outcome::Permit,
            deciding: answer.deciding,
            errors: Vec::new(),
            reason,
        };
    }
    if answer.deciding.is_empty() {
        return Decision::deny(Vec::new(), Vec::new(), "denied: no policy permits this");
    }
    // Every deciding policy of a deny is a forbid; do they all escalate?
    let mut required = Level::L1;
    let mut hard = Vec::new();
    for id in &answer.deciding {
        match policies.policy(id) {
            Some(PolicyInfo {
                effect: Effect::Forbid,
                escalate: Some(level),
                ..
            }) => required = required.max(*level),
            // A forbid without @escalate, or (never expected) a policy we know nothing
            // of: neither can be answered by an approval.
            _ => hard.push(id.as_str()),
        }
    }
    if !hard.is_empty() {
        let reason = format!("denied: forbidden by {}", hard.join(", "));
        return Decision::deny(answer.deciding, Vec::new(), reason);
    }
    if let Some((have, ..)) = p.approval
        && have >= required
    {
        let reason = format!(
            "denied: {} still forbid(s) this with an approval at {have}; the policy does not yield to approvals",
            answer.deciding.join(", ")
        );
        return Decision::deny(answer.deciding, Vec::new(), reason);
    }
    // Would an approval at the required level be enough?
    let hypothetical = ask(compiled, cedar_set, p, Some((required, "", "approve")));
    if hypothetical.allow && hypothetical.errors.is_empty() {
        let reason = format!(
            "escalated by {}: needs an approval at {required} or above",
            answer.deciding.join(", ")
        );
        Decision {
            outcome: Outcome::Escalate { level: required },
            deciding: answer.deciding,
            errors: Vec::new(),
            reason,
        }
    } else {
        let reason = format!(
            "denied: {} escalate(s) to {required}, but no policy would permit this even when approved",
            answer.deciding.join(", ")
        );
        Decision::deny(answer.deciding, hypothetical.errors, reason)
    }
}

#[cfg(test)]
mod tests {
    use aura_core::AgentId;
    use aura_identity::Namespace;

    use super::*;
    use crate::request::{Context, Principal};

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).unwrap_or_else(|_| Namespace::default_namespace())
    }

    fn requests() -> Vec<Request> {
        let agent = AgentId::from_bytes([1; 16]);
        let mission = aura_core::MissionId::from_bytes([2; 16]);
        let resources = vec![
            Resource::Path {
                namespace: ns("team-a"),
                path: "notes/x.md".into(),
            },
            Resource::Command {
                namespace: ns("team-a"),
                command: "cargo test".into(),
                network: true,
            },
            Resource::Host {
                host: "example.com".into(),
                port: 443,
                scheme: "https".into(),
            },
            Resource::Model {
                name: "m".into(),
                digest: "d".into(),
            },
            Resource::McpTool {
                server: "files".into(),
                tool: "read".into(),
                trusted: false,
            },
            Resource::Image {
                namespace: ns("team-a"),
                model: "aura-tiny-emoji".into(),
                width: 64,
                height: 64,
                path: "images/apple.png".into(),
            },
            Resource::Plugin {
                namespace: ns("team-a"),
                name: "wordcount".into(),
                version: "1.0.0".into(),
                publisher: "ab".repeat(32),
                digest: "cd".repeat(32),
                workspace: "read".into(),
                hosts: vec!["example.com:443".into()],
            },
            Resource::Memory {
                namespace: ns("team-a"),
                space: format!("agent:{agent}"),
            },
            Resource::Memory {
                namespace: ns("team-a"),
                space: "shared:handbook".into(),
            },
            Resource::Mission {
                namespace: ns("team-a"),
                id: mission,
            },
            Resource::Agent {
                namespace: ns("team-a"),
                id: AgentId::from_bytes([3; 16]),
            },
            // The agent itself, as when it messages itself.
            Resource::Agent {
                namespace: ns("team-a"),
                id: agent,
            },
        ];
        let compiled = match schema::compiled() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let mut names: Vec<&String> = compiled.actions.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for level in Level::ALL {
            for name in &names {
                let action = if name.as_str() == CUSTOM_TOOL {
                    "acme.deploy".to_owned()
                } else if name.as_str() == MCP_CALL {
                    "mcp.files.read".to_owned()
                } else if name.as_str() == PLUGIN_CALL {
                    "plugin.wordcount".to_owned()
                } else {
                    (*name).clone()
                };
                for resource in &resources {
                    if !compiled.actions[*name]
                        .resources
                        .iter()
                        .any(|r| r == resource.type_name())
                    {
                        continue;
                    }
                    for variant in 0..3 {
                        let mut context = Context::default();
                        if variant > 0 {
                            context.mission = Some(mission);
                            context.destructive = true;
                            context.in_cell = true;
                            context
                                .extra
                                .insert("ticket".into(), serde_json::json!({"n": [1, 2]}));
                        }
                        let mut r = Request {
                            principal: Principal {
                                agent,
                                level,
                                namespace: ns("team-a"),
                            },
                            action: action.clone(),
                            resource: resource.clone(),
                            context,
                        };
                        if variant == 2 {
                            r.context.approval = Some(aura_identity::VerifiedApproval {
                                id: aura_identity::ApprovalId::from_bytes([4; 16]),
                                verdict: Verdict::Approve,
                                approver: aura_identity::Subject::Agent(agent),
                                level: Level::L4,
                                request: request_digest(&r),
                            });
                        }
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    /// Every kind of request is built as Aura's schema declares it. Release builds skip
    /// this check when deciding (it holds by construction), so it is made here for every
    /// action, resource kind and context shape.
    #[test]
    fn every_request_fits_the_schema() {
        let compiled = match schema::compiled() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let all = requests();
        assert!(all.len() > 200, "{}", all.len());
        for r in &all {
            let p = match prepare(compiled, r, Isolation::Enforce) {
                Ok(p) => p,
                Err(e) => panic!("{r:?}: {}", e.error),
            };
            let approval = p
                .approval
                .as_ref()
                .map(|(level, approver, verdict)| (*level, approver.as_str(), *verdict));
            let context = {
                let mut pairs = p.context.clone();
                if let Some((level, approver, verdict)) = approval {
                    pairs.push((
                        "approval".to_owned(),
                        RestrictedExpression::new_record([
                            (
                                "level".to_owned(),
                                RestrictedExpression::new_long(i64::from(level.as_u8())),
                            ),
                            (
                                "approver".to_owned(),
                                RestrictedExpression::new_string(approver.to_owned()),
                            ),
                            (
                                "verdict".to_owned(),
                                RestrictedExpression::new_string(verdict.to_owned()),
                            ),
                        ])
                        .unwrap_or_else(|e| panic!("{e}")),
                    ));
                }
                CedarContext::from_pairs(pairs).unwrap_or_else(|e| panic!("{e}"))
            };
            if let Err(e) = cedar_policy::Request::new(
                p.principal.clone(),
                p.action.uid.clone(),
                p.resource.clone(),
                context,
                Some(&compiled.schema),
            ) {
                panic!("{r:?}: {e}");
            }
            // The entities, too, conform to the schema.
            let mut with_schema = Vec::new();
            for e in p.entities.iter() {
                if e.uid() != p.action.uid {
                    with_schema.push(e.clone());
                }
            }
            if let Err(e) = Entities::from_entities(with_schema, Some(&compiled.schema)) {
                panic!("{r:?}: {e}");
            }
        }
    }

    /// Building the entity set without recomputing the transitive closure gives exactly
    /// what Cedar's public constructor, which computes it, gives.
    #[test]
    fn the_entity_set_needs_no_closure() {
        let compiled = match schema::compiled() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        for r in requests() {
            let p = match prepare(compiled, &r, Isolation::Enforce) {
                Ok(p) => p,
                Err(e) => panic!("{r:?}: {}", e.error),
            };
            let entities: Vec<Entity> = p.entities.iter().cloned().collect();
            let computed = match Entities::from_entities(entities, None) {
                Ok(e) => e,
                Err(e) => panic!("{e}"),
            };
            assert!(computed.deep_eq(&p.entities), "{r:?}");
        }
    }

    /// The default set's own isolation forbid holds even when `decide`'s check is left
    /// out: the two guard the same rule independently.
    #[test]
    fn the_default_isolation_forbid_holds_on_its_own() {
        let compiled = match schema::compiled() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let permissive = match PolicySet::parse(
            "yolo.cedar",
            "@id(\"yolo\") permit (principal, action, resource);",
        ) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let set = match PolicySet::defaults().merge(permissive) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let request = |namespace: &str| Request {
            principal: Principal {
                agent: AgentId::from_bytes([1; 16]),
                level: Level::L4,
                namespace: ns("team-a"),
            },
            action: "fs.write".into(),
            resource: Resource::Path {
                namespace: ns(namespace),
                path: "x".into(),
            },
            context: Context::default(),
        };
        for (namespace, allow, deciding) in [
            ("team-b", false, vec!["aura.namespace-isolation"]),
            ("team-a", true, vec!["aura.workspace.write", "yolo"]),
        ] {
            let p = match prepare(compiled, &request(namespace), Isolation::LeaveToPolicy) {
                Ok(p) => p,
                Err(r) => panic!("{}", r.error),
            };
            let answer = ask(compiled, set.cedar(), &p, None);
            assert_eq!(answer.allow, allow, "{namespace}");
            assert_eq!(answer.deciding, deciding, "{namespace}");
            assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        }
    }
}
