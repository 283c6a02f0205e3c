//! Procedural memory (docs/memory.md, "Recipes"): the three tools the engine itself
//! serves, `memory.recipe.save`, `memory.recipe.forget` and `recipe.run`, and the
//! agent's recipe book they read.
//!
//! The book is the agent's own record: a recipe is saved by the effect of a
//! `memory.recipe.save` call (which holds the whole recipe and its digest) and forgotten
//! by the effect of a `memory.recipe.forget`, so saving and forgetting are ledger
//! entries like every memory write, judged by policy first, and the book is read from
//! the agent's stream alone: another agent, let alone another namespace, never sees it.
//! (Episodes are derived from the record the same way; docs/memory.md says why.)
//!
//! These tools are the engine's rather than the tool registry's because they read the
//! ledger, which only the engine holds. `recipe.run` never runs as a tool: the mission
//! driver expands it into its recipe's calls (`mission.expanded`), and each of those is
//! decided, attempted and recorded as if the reasoner had asked for it.

use std::collections::{BTreeMap, HashMap};

use aura_core::hash::Hash;
use aura_core::{AgentId, MissionId};
use aura_kernel::{
    Effect, Event, FORGET_TOOL, NOT_IN_RECIPES, RECIPE_FORMAT, RUN_TOOL, Recipe, RecipeCall,
    Recorded, RunArgs, SAVE_TOOL, ToolCall, valid_recipe_name,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::ports::{ErrorKind, Proposal, Target, ToolError, ToolSpec, failed_effect};
use crate::shared::Shared;

/// Whether `name` is one of the tools this module serves.
pub(crate) fn is_recipe_tool(name: &str) -> bool {
    matches!(name, RUN_TOOL | SAVE_TOOL | FORGET_TOOL)
}

/// The specs of the recipe tools among `names`, for the reasoner.
pub(crate) fn specs(names: &[String]) -> Vec<ToolSpec> {
    let all = [
        ToolSpec {
            name: SAVE_TOOL.into(),
            description: "Save a recipe in the agent's own memory: a named list of tool calls, given \
                 explicitly (`calls`, whose string arguments may hold `{{param}}` placeholders \
                 declared in `params`) or taken from one of the agent's own completed missions \
                 (`mission`: its completed calls, in order). Saving a name again makes a new version."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "1-64 of a-z, 0-9, '.', '_' and '-'"},
                    "mission": {"type": "string", "description": "a completed mission of this agent whose calls to save"},
                    "calls": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "tool": {"type": "string"},
                                "arguments": {"type": "object"}
                            },
                            "required": ["tool", "arguments"],
                            "additionalProperties": false
                        }
                    },
                    "params": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["name"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: FORGET_TOOL.into(),
            description: "Forget a saved recipe by name. Forgetting is recorded and cannot be undone."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: RUN_TOOL.into(),
            description: "Run a saved recipe as one step: each of its calls is checked by policy and \
                 recorded as if asked for directly, and must be among the mission's tools; the \
                 first call denied or failed stops it. The result holds every call's result."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "arguments": {
                        "type": "object",
                        "description": "a string for each of the recipe's parameters",
                        "additionalProperties": {"type": "string"}
                    }
                },
                "required": ["name"],
                "additionalProperties": false
            }),
        },
    ];
    all.into_iter()
        .filter(|s| names.contains(&s.name))
        .collect()
}

/// Arguments of `memory.recipe.save`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveArgs {
    name: String,
    #[serde(default)]
    mission: Option<String>,
    #[serde(default)]
    calls: Option<Vec<RecipeCall>>,
    #[serde(default)]
    params: Vec<String>,
}

/// Where a recipe to save comes from.
#[derive(Debug)]
enum Source {
    Calls(Vec<RecipeCall>),
    Mission(MissionId),
}

/// Arguments of `memory.recipe.forget`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetArgs {
    name: String,
}

fn bad(tool: &str, why: impl std::fmt::Display) -> ToolError {
    ToolError::new(ErrorKind::InvalidArguments, format!("{tool}: {why}"))
}

fn name_arg(tool: &str, name: &str) -> Result<(), ToolError> {
    if valid_recipe_name(name) {
        Ok(())
    } else {
        Err(bad(
            tool,
            "a recipe's name is 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        ))
    }
}

fn parse_save(arguments: &Value) -> Result<(String, Vec<String>, Source), ToolError> {
    let args = SaveArgs::deserialize(arguments).map_err(|e| bad(SAVE_TOOL, e))?;
    name_arg(SAVE_TOOL, &args.name)?;
    let source = match (args.calls, args.mission) {
        (Some(calls), None) => Source::Calls(calls),
        (None, Some(mission)) => {
            if !args.params.is_empty() {
                return Err(bad(
                    SAVE_TOOL,
                    "a recipe taken from a mission has no parameters; give `calls` to use placeholders",
                ));
            }
            Source::Mission(
                mission
                    .parse()
                    .map_err(|_| bad(SAVE_TOOL, "`mission` is not a mission id"))?,
            )
        }
        _ => {
            return Err(bad(
                SAVE_TOOL,
                "give exactly one of `calls` (the calls themselves) and `mission` (one of the agent's completed missions)",
            ));
        }
    };
    Ok((args.name, args.params, source))
}

/// Checks a recipe tool's call and says what policy judges: the agent's own memory, as
/// for every memory tool. Forgetting is destructive.
pub(crate) fn prepare(call: &ToolCall) -> Result<Proposal, ToolError> {
    let destructive = match call.name.as_str() {
        RUN_TOOL => {
            RunArgs::parse(&call.arguments).map_err(|e| bad(RUN_TOOL, e))?;
            false
        }
        SAVE_TOOL => {
            parse_save(&call.arguments)?;
            false
        }
        FORGET_TOOL => {
            let args = ForgetArgs::deserialize(&call.arguments).map_err(|e| bad(FORGET_TOOL, e))?;
            name_arg(FORGET_TOOL, &args.name)?;
            true
        }
        other => {
            return Err(ToolError::new(
                ErrorKind::UnknownTool,
                format!("there is no recipe tool `{other}`"),
            ));
        }
    };
    Ok(Proposal {
        call: call.clone(),
        target: Target::Memory { shared: None },
        destructive,
    })
}

/// One name of the book: its latest version (forgotten or not) and the recipe in force.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    pub(crate) latest: u32,
    pub(crate) recipe: Option<(Recipe, Hash)>,
}

/// An agent's recipe book, read from its record: every name ever saved.
pub(crate) type Book = BTreeMap<String, Page>;

/// Every mission entry of `agent` in order, decoded, with its ledger index; entries of
/// pruned missions (no body) are skipped. `keep` picks the entries worth decoding by
/// their kind and body, so that a scan decodes little of a long record.
async fn scan(
    shared: &Shared,
    agent: AgentId,
    keep: impl Fn(&str, &[u8]) -> bool,
) -> Result<Vec<Recorded>, Error> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = shared.store.agent_entries(agent, from, 1000).await?;
        for e in &page {
            let kind = e.entry.kind.as_str();
            if !kind.starts_with("mission.") {
                continue;
            }
            let Some(body) = e.body() else { continue };
            if !keep(kind, body) {
                continue;
            }
            let r = Recorded::from_body(body).map_err(|err| {
                Error::Invalid(format!("entry #{} does not decode: {err}", e.entry.index))
            })?;
            out.push(r);
        }
        match page.last() {
            Some(last) if page.len() == 1000 => from = last.entry.seq + 1,
            _ => break,
        }
    }
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The book of `agent`: the effects of its saves and forgets, in the order recorded.
pub(crate) async fn book(shared: &Shared, agent: AgentId) -> Result<Book, Error> {
    let entries = scan(shared, agent, |kind, body| {
        kind == "mission.effect" && contains(body, b"memory.recipe.")
    })
    .await?;
    let mut book = Book::new();
    for r in entries {
        let Event::Effect { effect, .. } = r.event else {
            continue;
        };
        if !effect.ok {
            continue;
        }
        match effect.tool.as_str() {
            SAVE_TOOL => {
                // A saved recipe is read back exactly as it was checked when saved; one
                // that no longer decodes (a later build refusing it) is left out.
                let Ok(recipe) = Recipe::from_value(&effect.output["recipe"]) else {
                    continue;
                };
                let Ok(digest) = recipe.digest() else {
                    continue;
                };
                let page = book.entry(recipe.name.clone()).or_default();
                page.latest = page.latest.max(recipe.version);
                page.recipe = Some((recipe, digest));
            }
            FORGET_TOOL => {
                if let Some(name) = effect.output["name"].as_str()
                    && let Some(page) = book.get_mut(name)
                {
                    page.recipe = None;
                }
            }
            _ => {}
        }
    }
    Ok(book)
}

/// The calls a completed mission of `agent` made, as a recipe's calls: each call whose
/// effect was recorded as completed, in the order recorded, with the arguments it was
/// called with (a recipe's calls run inside it count as its own; `recipe.run` itself,
/// the recipe book's tools and `mission.finish` are left out).
async fn calls_of(
    shared: &Shared,
    agent: AgentId,
    mission: MissionId,
) -> Result<Vec<RecipeCall>, Error> {
    let id = mission.to_string();
    let records = scan(shared, agent, |_, body| contains(body, id.as_bytes())).await?;
    let mut asked: HashMap<String, ToolCall> = HashMap::new();
    let mut calls = Vec::new();
    for r in records.into_iter().filter(|r| r.mission == mission) {
        match r.event {
            Event::Turn { turn, .. } => {
                // Call ids are unique within a turn only.
                asked = turn
                    .tool_calls
                    .into_iter()
                    .map(|c| (c.id.clone(), c))
                    .collect();
            }
            Event::Expanded { calls: inner, .. } => {
                asked.extend(inner.into_iter().map(|c| (c.id.clone(), c)));
            }
            Event::Effect { effect, .. } if effect.ok => {
                if let Some(call) = asked.get(&effect.call_id)
                    && !NOT_IN_RECIPES.contains(&call.name.as_str())
                {
                    calls.push(RecipeCall {
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(calls)
}

/// Runs `memory.recipe.save` or `memory.recipe.forget` for `agent`: the effect to record.
/// `exists` says whether the node has a tool of that name (a recipe of unknown tools is
/// refused when saved, not when run).
pub(crate) async fn book_call(
    shared: &Shared,
    agent: AgentId,
    call: &ToolCall,
    exists: impl Fn(&str) -> bool,
) -> Effect {
    let done = match call.name.as_str() {
        SAVE_TOOL => save(shared, agent, call, exists).await,
        FORGET_TOOL => forget(shared, agent, call).await,
        _ => Err(ToolError::new(
            ErrorKind::UnknownTool,
            format!("`{}` is not a recipe book tool", call.name),
        )),
    };
    match done {
        Ok(output) => Effect {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            ok: true,
            output,
            error: None,
            error_kind: None,
            compensation: None,
            message: None,
            finish: None,
        },
        Err(e) => failed_effect(call, e.kind, format!("{}: {}", e.kind.as_str(), e.message)),
    }
}

fn unreadable(tool: &str, e: &Error) -> ToolError {
    ToolError::new(
        ErrorKind::Io,
        format!("{tool}: the agent's record could not be read: {e}"),
    )
}

async fn save(
    shared: &Shared,
    agent: AgentId,
    call: &ToolCall,
    exists: impl Fn(&str) -> bool,
) -> Result<Value, ToolError> {
    let (name, params, source) = parse_save(&call.arguments)?;
    let calls = match source {
        Source::Calls(calls) => calls,
        Source::Mission(mission) => {
            // Another agent's mission is, to this one, a mission that does not exist.
            let completed = shared
                .missions
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&mission)
                .is_some_and(|m| {
                    m.agent == agent && m.state == aura_kernel::MissionState::Completed
                });
            if !completed {
                return Err(ToolError::new(
                    ErrorKind::NotFound,
                    format!(
                        "{SAVE_TOOL}: mission {mission} is not a completed mission of this agent"
                    ),
                ));
            }
            let calls = calls_of(shared, agent, mission)
                .await
                .map_err(|e| unreadable(SAVE_TOOL, &e))?;
            if calls.is_empty() {
                return Err(bad(
                    SAVE_TOOL,
                    format!("mission {mission} completed no call a recipe can make"),
                ));
            }
            calls
        }
    };
    let book = book(shared, agent)
        .await
        .map_err(|e| unreadable(SAVE_TOOL, &e))?;
    let version = book.get(&name).map_or(0, |p| p.latest).saturating_add(1);
    let recipe = Recipe {
        v: RECIPE_FORMAT,
        name,
        version,
        params,
        calls,
    };
    recipe.validate().map_err(|e| match e {
        aura_kernel::RecipeError::TooLarge(_) => {
            ToolError::new(ErrorKind::TooLarge, format!("{SAVE_TOOL}: {e}"))
        }
        _ => bad(SAVE_TOOL, e),
    })?;
    if let Some((n, c)) = recipe
        .calls
        .iter()
        .enumerate()
        .find(|(_, c)| !exists(&c.tool))
    {
        return Err(ToolError::new(
            ErrorKind::UnknownTool,
            format!(
                "{SAVE_TOOL}: call {}: there is no tool `{}` on this node",
                n + 1,
                c.tool
            ),
        ));
    }
    let digest = recipe.digest().map_err(|e| bad(SAVE_TOOL, e))?;
    Ok(json!({
        "name": recipe.name,
        "version": recipe.version,
        "digest": digest,
        "calls": recipe.calls.len(),
        "recipe": recipe,
    }))
}

async fn forget(shared: &Shared, agent: AgentId, call: &ToolCall) -> Result<Value, ToolError> {
    let args = ForgetArgs::deserialize(&call.arguments).map_err(|e| bad(FORGET_TOOL, e))?;
    let book = book(shared, agent)
        .await
        .map_err(|e| unreadable(FORGET_TOOL, &e))?;
    match book.get(&args.name).and_then(|p| p.recipe.as_ref()) {
        Some((recipe, digest)) => Ok(json!({
            "name": recipe.name,
            "version": recipe.version,
            "digest": digest,
            "forgotten": true,
        })),
        None => Err(ToolError::new(
            ErrorKind::NotFound,
            format!(
                "{FORGET_TOOL}: there is no recipe `{}` in this agent's memory",
                args.name
            ),
        )),
    }
}

/// What a permitted `recipe.run` call becomes: its expansion, or the failed effect that
/// answers it (no such recipe, arguments that do not fit it, a record that cannot be
/// read).
pub(crate) async fn expansion(
    shared: &Shared,
    agent: AgentId,
    call: &ToolCall,
    at: aura_core::Timestamp,
) -> Event {
    let failed = |kind: ErrorKind, why: String| Event::Effect {
        effect: failed_effect(call, kind, format!("{}: {RUN_TOOL}: {why}", kind.as_str())),
        at,
    };
    let args = match RunArgs::parse(&call.arguments) {
        Ok(a) => a,
        Err(e) => return failed(ErrorKind::InvalidArguments, e.to_string()),
    };
    let book = match book(shared, agent).await {
        Ok(b) => b,
        // Not retried as a call would be: the run has not started, and the reasoner is
        // told at once.
        Err(e) => {
            return failed(
                ErrorKind::Unavailable,
                format!("the agent's record could not be read: {e}"),
            );
        }
    };
    let Some((recipe, digest)) = book.get(&args.name).and_then(|p| p.recipe.clone()) else {
        return failed(
            ErrorKind::NotFound,
            format!(
                "there is no recipe `{}` in this agent's memory (save one with {SAVE_TOOL})",
                args.name
            ),
        );
    };
    match recipe.expand(&call.id, &args.arguments) {
        Ok(calls) => Event::Expanded {
            call_id: call.id.clone(),
            recipe,
            digest,
            calls,
            at,
        },
        Err(e) => failed(ErrorKind::InvalidArguments, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn call(tool: &str, arguments: Value) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: tool.into(),
            arguments,
        }
    }

    /// What each recipe tool call is judged as, or the kind of error it gets.
    #[test]
    fn recipe_tool_calls_are_checked_before_policy() {
        let check = |tool: &str, args: Value, expect: Result<bool, ErrorKind>| match (
            prepare(&call(tool, args.clone())),
            expect,
        ) {
            (Ok(p), Ok(destructive)) => {
                assert_eq!(p.target, Target::Memory { shared: None }, "{args}");
                assert_eq!(p.destructive, destructive, "{args}");
            }
            (Err(e), Err(kind)) => assert_eq!(e.kind, kind, "{args}: {e}"),
            (got, expect) => panic!("{tool} {args}: got {got:?}, expected {expect:?}"),
        };
        check(RUN_TOOL, json!({"name": "x"}), Ok(false));
        check(
            RUN_TOOL,
            json!({"name": "x", "arguments": {"p": "v"}}),
            Ok(false),
        );
        check(
            RUN_TOOL,
            json!({"name": "X"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(SAVE_TOOL, json!({"name": "x", "calls": []}), Ok(false));
        let mission = MissionId::from_bytes([1; 16]).to_string();
        check(
            SAVE_TOOL,
            json!({"name": "x", "mission": mission}),
            Ok(false),
        );
        check(
            SAVE_TOOL,
            json!({"name": "x", "mission": mission, "params": ["p"]}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            SAVE_TOOL,
            json!({"name": "x", "mission": "not-a-mission"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            SAVE_TOOL,
            json!({"name": "x"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            SAVE_TOOL,
            json!({"name": "x", "calls": [], "mission": "m"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(FORGET_TOOL, json!({"name": "x"}), Ok(true));
        check(
            FORGET_TOOL,
            json!({"name": ""}),
            Err(ErrorKind::InvalidArguments),
        );
        check("recipe.other", json!({}), Err(ErrorKind::UnknownTool));
        assert_eq!(
            specs(&[RUN_TOOL.into(), "fs.read".into()])
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            [RUN_TOOL]
        );
    }
}
