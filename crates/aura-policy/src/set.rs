//! Loading policies: parsing, validating against Aura's schema, and checking Aura's own
//! annotations, with every problem reported as `file:line:column: reason`.
//!
//! A file is split into policy statements first (at each `;` outside strings and
//! comments), and each statement is parsed on its own. That tells us where every policy
//! starts, which Cedar's API does not expose: we need it to name policies without an
//! `@id` (`file:line`), to place validation errors, and to show users where a deciding
//! policy lives.
//!
//! Annotations Aura reads:
//!
//! - `@id("…")` names the policy in decisions and in the ledger; without one the policy is
//!   named `<file>:<line>`. Ids are unique across everything loaded together.
//! - `@escalate("L1".."L4")`, on forbid policies only: when this forbid decides, an
//!   approval at that level may answer (see [`decide`](crate::decide)).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aura_identity::Level;
use cedar_policy::{Policy, PolicyId, ValidationMode};
use miette::Diagnostic;
use serde::Serialize;

use crate::schema::{self, SCHEMA_TEXT};
use crate::slice::Slicer;

/// The largest policy file Aura loads, in bytes.
pub const MAX_POLICY_FILE: usize = 1024 * 1024;

/// The default policy set's source.
const DEFAULTS_TEXT: &str = include_str!("defaults.cedar");
const DEFAULTS_NAME: &str = "defaults.cedar";

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.reason
        )
    }
}

/// A policy file (or a merge of sets) that was refused, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Never empty, in the order of the source.
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.split_first() {
            None => f.write_str("the policies were refused"),
            Some((first, [])) => write!(f, "{first}"),
            Some((first, rest)) => write!(f, "{first} (and {} more problems)", rest.len()),
        }
    }
}

impl std::error::Error for LoadError {}

/// Permit or forbid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Permit,
    Forbid,
}

/// What Aura knows about one loaded policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    pub id: String,
    /// The source name it was loaded from (a file name, or `defaults.cedar`).
    pub source: String,
    pub line: u32,
    pub column: u32,
    pub effect: Effect,
    /// The level an approval needs to answer this forbid, from `@escalate`.
    pub escalate: Option<Level>,
    /// The policy's text as written (from its first annotation to its `;`).
    pub text: String,
}

/// Policies parsed and validated against Aura's schema. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) cedar: cedar_policy::PolicySet,
    /// The same policies, for evaluating only those whose scope matches a request.
    pub(crate) slicer: Slicer,
    /// In load order.
    pub(crate) policies: Vec<PolicyInfo>,
    pub(crate) by_id: HashMap<String, usize>,
    warnings: Vec<Problem>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// A set with no policies: it denies everything.
    pub fn empty() -> PolicySet {
        PolicySet {
            inner: Arc::new(Inner {
                cedar: cedar_policy::PolicySet::new(),
                slicer: Slicer::new(Vec::new()),
                policies: Vec::new(),
                by_id: HashMap::new(),
                warnings: Vec::new(),
            }),
        }
    }

    /// Aura's default set (docs/policy.md), compiled into the binary.
    ///
    /// The tests prove it loads cleanly. Were it ever to fail, this returns a set without
    /// policies (which denies everything) whose [`warnings`](Self::warnings) say why.
    pub fn defaults() -> PolicySet {
        match PolicySet::parse(DEFAULTS_NAME, DEFAULTS_TEXT) {
            Ok(set) => set,
            Err(e) => {
                let mut set = PolicySet::empty();
                if let Some(inner) = Arc::get_mut(&mut set.inner) {
                    inner.warnings = e.problems;
                }
                set
            }
        }
    }

    /// The default set's source text.
    pub fn defaults_text() -> &'static str {
        DEFAULTS_TEXT
    }

    /// Aura's Cedar schema, for documentation and for users writing policies.
    pub fn schema_text() -> &'static str {
        SCHEMA_TEXT
    }

    /// Parses and validates one policy file. `source_name` names the file in problems and
    /// in the ids of policies without `@id`. Every problem is reported, not just the first.
    pub fn parse(source_name: &str, text: &str) -> Result<PolicySet, LoadError> {
        let compiled = schema::compiled().map_err(|e| LoadError {
            problems: vec![problem_at(source_name, 1, 1, e.to_owned())],
        })?;
        if text.len() > MAX_POLICY_FILE {
            return Err(LoadError {
                problems: vec![problem_at(
                    source_name,
                    1,
                    1,
                    format!("the file is larger than {MAX_POLICY_FILE} bytes"),
                )],
            });
        }
        let lines = LineIndex::new(text);
        let mut problems: Vec<(usize, Problem)> = Vec::new();
        let mut warnings: Vec<(usize, Problem)> = Vec::new();
        let mut parsed: Vec<(Policy, PolicyInfo, usize)> = Vec::new();
        let mut ids: HashMap<String, (u32, u32)> = HashMap::new();

        for stmt in split_statements(text) {
            let chunk = &text[stmt.start..stmt.end];
            let policy = match Policy::parse(None, chunk) {
                Ok(p) => p,
                Err(errors) => {
                    for e in errors.iter() {
                        let offset = stmt.start + first_label_offset(e).unwrap_or(stmt.content);
                        let (line, column) = lines.position(offset);
                        problems.push((offset, problem_at(source_name, line, column, describe(e))));
                    }
                    continue;
                }
            };
            let start = stmt.start + stmt.content;
            let (line, column) = lines.position(start);
            let here = |reason: String| (start, problem_at(source_name, line, column, reason));

            let id = match policy.annotation("id") {
                Some(id) => {
                    if let Err(why) = check_id(id) {
                        problems.push(here(why));
                        continue;
                    }
                    id.to_owned()
                }
                None => format!("{source_name}:{line}"),
            };
            if let Some((l, c)) = ids.get(&id) {
                problems.push(here(format!(
                    "the policy id `{id}` is already used at {source_name}:{l}:{c}"
                )));
                continue;
            }
            ids.insert(id.clone(), (line, column));

            let effect = match policy.effect() {
                cedar_policy::Effect::Permit => Effect::Permit,
                cedar_policy::Effect::Forbid => Effect::Forbid,
            };
            let escalate = match policy.annotation("escalate") {
                None => None,
                Some(_) if effect == Effect::Permit => {
                    problems.push(here(
                        "@escalate applies only to forbid policies (a permit cannot escalate)"
                            .to_owned(),
                    ));
                    continue;
                }
                Some(level) => match level.parse::<Level>() {
                    Ok(l) => Some(l),
                    Err(_) => {
                        problems.push(here(format!(
                            "@escalate(\"{}\") is not an authority level: use \"L1\", \"L2\", \"L3\" or \"L4\"",
                            crate::request::shorten(level)
                        )));
                        continue;
                    }
                },
            };
            let policy_text = chunk[stmt.content..].trim_end().to_owned();
            if escalate.is_some() && !policy_text.contains("context.approval") {
                warnings.push(here(
                    "this forbid escalates but never reads context.approval, so no approval can lift it: its escalations will be denied".to_owned(),
                ));
            }
            let policy = policy.new_id(PolicyId::new(&id));
            parsed.push((
                policy,
                PolicyInfo {
                    id,
                    source: source_name.to_owned(),
                    line,
                    column,
                    effect,
                    escalate,
                    text: policy_text,
                },
                stmt.start,
            ));
        }

        // Validate what parsed, so that one bad policy does not hide another's problems.
        let mut cedar = cedar_policy::PolicySet::new();
        let mut chunk_start: HashMap<String, usize> = HashMap::new();
        for (policy, info, start) in &parsed {
            chunk_start.insert(info.id.clone(), *start);
            if let Err(e) = cedar.add(policy.clone()) {
                // Ids were checked to be unique above, so this is not expected; report it
                // rather than lose the policy silently.
                let (line, column) = (info.line, info.column);
                problems.push((*start, problem_at(source_name, line, column, e.to_string())));
            }
        }
        let result = compiled.validator.validate(&cedar, ValidationMode::Strict);
        let place = |id: &PolicyId, label: Option<usize>| -> (usize, u32, u32) {
            let start = chunk_start
                .get(AsRef::<str>::as_ref(id))
                .copied()
                .unwrap_or(0);
            let offset = start + label.unwrap_or(0);
            let (line, column) = lines.position(offset);
            (offset, line, column)
        };
        for e in result.validation_errors() {
            let (offset, line, column) = place(e.policy_id(), first_label_offset(e));
            problems.push((offset, problem_at(source_name, line, column, describe(e))));
        }
        for w in result.validation_warnings() {
            let (offset, line, column) = place(w.policy_id(), first_label_offset(w));
            warnings.push((offset, problem_at(source_name, line, column, describe(w))));
        }

        if !problems.is_empty() {
            return Err(LoadError {
                problems: collapse(problems),
            });
        }
        let policies: Vec<PolicyInfo> = parsed.into_iter().map(|(_, info, _)| info).collect();
        Ok(PolicySet::from_parts(cedar, policies, collapse(warnings)))
    }

    fn from_parts(
        cedar: cedar_policy::PolicySet,
        policies: Vec<PolicyInfo>,
        warnings: Vec<Problem>,
    ) -> PolicySet {
        let by_id = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let slicer = Slicer::new(cedar.policies().cloned().collect());
        PolicySet {
            inner: Arc::new(Inner {
                cedar,
                slicer,
                policies,
                by_id,
                warnings,
            }),
        }
    }

    /// The union of two sets (typically the defaults and a user file). A policy id used
    /// in both is refused, at the place it appears in `other`.
    pub fn merge(self, other: PolicySet) -> Result<PolicySet, LoadError> {
        let mut problems = Vec::new();
        for p in &other.inner.policies {
            if let Some(&i) = self.inner.by_id.get(&p.id) {
                let first = &self.inner.policies[i];
                problems.push(problem_at(
                    &p.source,
                    p.line,
                    p.column,
                    format!(
                        "the policy id `{}` is already used at {}:{}:{}",
                        p.id, first.source, first.line, first.column
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(LoadError { problems });
        }
        let mut cedar = self.inner.cedar.clone();
        for policy in other.inner.cedar.policies() {
            if let Err(e) = cedar.add(policy.clone()) {
                let (source, line, column) = other
                    .policy(AsRef::<str>::as_ref(policy.id()))
                    .map_or((String::new(), 1, 1), |p| {
                        (p.source.clone(), p.line, p.column)
                    });
                problems.push(problem_at(&source, line, column, e.to_string()));
            }
        }
        if !problems.is_empty() {
            return Err(LoadError { problems });
        }
        // Take the parts without copying them when no one else shares the sets.
        let mine = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| (*shared).clone());
        let theirs = Arc::try_unwrap(other.inner).unwrap_or_else(|shared| (*shared).clone());
        let mut policies = mine.policies;
        policies.extend(theirs.policies);
        let mut warnings = mine.warnings;
        warnings.extend(theirs.warnings);
        Ok(PolicySet::from_parts(cedar, policies, warnings))
    }

    /// Every policy's id, in load order.
    pub fn ids(&self) -> Vec<String> {
        self.inner.policies.iter().map(|p| p.id.clone()).collect()
    }

    /// Every policy, in load order.
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.inner.policies
    }

    /// One policy by id.
    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.inner.by_id.get(id).map(|&i| &self.inner.policies[i])
    }

    pub fn len(&self) -> usize {
        self.inner.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.policies.is_empty()
    }

    /// What loaded but looks wrong: Cedar's validation warnings (a policy that can never
    /// apply, confusable characters) and escalating forbids that no approval can lift.
    pub fn warnings(&self) -> &[Problem] {
        &self.inner.warnings
    }

    pub(crate) fn cedar(&self) -> &cedar_policy::PolicySet {
        &self.inner.cedar
    }

    pub(crate) fn slicer(&self) -> &Slicer {
        &self.inner.slicer
    }

    /// The Cedar policy set itself, for benchmarks that measure Cedar alone. Not part of
    /// the stable API.
    #[doc(hidden)]
    pub fn cedar_policies(&self) -> &cedar_policy::PolicySet {
        &self.inner.cedar
    }
}

fn problem_at(file: &str, line: u32, column: u32, reason: String) -> Problem {
    Problem {
        file: file.to_owned(),
        line,
        column,
        reason,
    }
}

/// A policy id: 1-128 characters, none of them white space or control characters.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.chars().count() > 128
        || id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "@id(\"{}\") is not a valid policy id: use 1-128 characters without spaces",
            crate::request::shorten(id)
        ))
    } else {
        Ok(())
    }
}

/// Sorts problems by where they are and folds those at the same place into one. The
/// validator checks a policy once for every kind of request it could apply to, so one
/// mistake (`resource.nope`) can come back once per resource type.
fn collapse(mut problems: Vec<(usize, Problem)>) -> Vec<Problem> {
    problems.sort_by(|a, b| (a.0, &a.1.reason).cmp(&(b.0, &b.1.reason)));
    let mut out: Vec<(usize, Problem, usize)> = Vec::new();
    for (offset, p) in problems {
        match out.last_mut() {
            Some((o, first, similar)) if *o == offset && first.file == p.file => {
                if first.reason != p.reason {
                    *similar += 1;
                }
            }
            _ => out.push((offset, p, 0)),
        }
    }
    out.into_iter()
        .map(|(_, mut p, similar)| {
            if similar > 0 {
                p.reason.push_str(&format!(
                    " (and {similar} similar problem{} here)",
                    if similar == 1 { "" } else { "s" }
                ));
            }
            p
        })
        .collect()
}

/// One line: Cedar's message, then its help where it has one. The policy's name, which
/// Cedar puts first, is left out: the line and column say where it is.
fn describe(d: &(impl Diagnostic + ?Sized)) -> String {
    let mut s = d.to_string();
    if s.starts_with("for policy `")
        && let Some(end) = s.find("`, ")
    {
        s.replace_range(..end + 3, "");
    }
    if let Some(help) = d.help() {
        s.push_str("; ");
        s.push_str(&help.to_string());
    }
    // Problems are printed one per line.
    s.replace('\n', " ")
}

/// Where Cedar points, as a byte offset into the text it was given.
fn first_label_offset(d: &(impl Diagnostic + ?Sized)) -> Option<usize> {
    d.labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset())
}

/// A statement of a policy file: its bytes `start..end` (through the `;`), and the
/// offset (from `start`) of its first character that is not white space or comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Statement {
    start: usize,
    end: usize,
    content: usize,
}

/// Splits a policy file at each `;` outside string literals and `//` comments, dropping
/// pieces that hold only white space and comments.
fn split_statements(text: &str) -> Vec<Statement> {
    #[derive(PartialEq)]
    enum State {
        Code,
        Str { escaped: bool },
        Comment,
    }
    let mut out = Vec::new();
    let mut state = State::Code;
    let mut start = 0;
    let mut content: Option<usize> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match state {
            State::Code => match c {
                '/' if chars.peek().map(|&(_, n)| n) == Some('/') => state = State::Comment,
                '"' => {
                    content.get_or_insert(i - start);
                    state = State::Str { escaped: false };
                }
                ';' => {
                    let end = i + 1;
                    out.push(Statement {
                        start,
                        end,
                        content: content.unwrap_or(i - start),
                    });
                    start = end;
                    content = None;
                }
                c if c.is_whitespace() => {}
                _ => {
                    content.get_or_insert(i - start);
                }
            },
            State::Str { escaped } => {
                state = match c {
                    _ if escaped => State::Str { escaped: false },
                    '\\' => State::Str { escaped: true },
                    '"' => State::Code,
                    _ => State::Str { escaped: false },
                }
            }
            State::Comment => {
                if c == '\n' {
                    state = State::Code;
                }
            }
        }
    }
    if let Some(content) = content {
        out.push(Statement {
            start,
            end: text.len(),
            content,
        });
    }
    out
}

/// Byte offsets to 1-based lines and columns (columns in characters).
struct LineIndex<'a> {
    text: &'a str,
    /// The byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(column).unwrap_or(u32::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<(&str, &str)> {
        split_statements(text)
            .into_iter()
            .map(|s| (&text[s.start..s.end], &text[s.start + s.content..s.end]))
            .map(|(a, b)| (a.trim(), b))
            .collect()
    }

    #[test]
    fn statements_split_outside_strings_and_comments() {
        let text = "// a; comment\npermit(principal, action, resource) when { context.tool == \"a;b\\\";\" };\n\n  forbid(principal, action, resource);\n// trailing; comment\n";
        let p = pieces(text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.starts_with("permit("));
        assert!(p[0].1.ends_with("};"));
        assert_eq!(p[1].1, "forbid(principal, action, resource);");
        // An unterminated statement is kept, so that the parser can report it.
        assert_eq!(pieces("permit(principal, action, resource)").len(), 1);
        assert!(pieces("  // nothing\n\n").is_empty());
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let idx = LineIndex::new("ab\nçd\n");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(3), (2, 1));
        assert_eq!(idx.position(5), (2, 2)); // after the two-byte 'ç'
        assert_eq!(idx.position(100), (3, 1));
    }
}
