//! What a decision is about: who (an agent at a level in a namespace), what (a tool or
//! lifecycle action), on what (a path, command, host, model, mission or agent), and in
//! what circumstances (the mission, whether the call is destructive or in a cell, an
//! approval, anything else the caller attaches).
//!
//! These are boundary types: they serialise to JSON (for `aura policy check --request` and
//! for recording), and every field is checked by [`decide`](crate::decide) before Cedar
//! sees it. A request in a form policies could be fooled by (a path with `..`, a host in
//! capitals) is denied rather than normalised, so that what was decided is exactly what
//! the tool will do.

use aura_core::{AgentId, MissionId};
use aura_identity::{Level, MAX_TOOL_NAME, Namespace, VerifiedApproval};
use serde::{Deserialize, Serialize};

/// The longest workspace path a request may name, in bytes.
pub const MAX_PATH: usize = 4096;
/// The most entries [`Context::extra`] may hold.
pub const MAX_EXTRA_ENTRIES: usize = 64;
/// The longest value in [`Context::extra`], in bytes of its text (strings as they are,
/// other values as compact JSON).
pub const MAX_EXTRA_VALUE: usize = 16 * 1024;
/// How deeply a value in [`Context::extra`] may nest arrays and objects.
pub const MAX_EXTRA_DEPTH: usize = 32;

/// The most `host:port`s a plugin resource may carry (a manifest's own bound).
const MAX_PLUGIN_HOSTS: usize = 32;

/// The longest command line, host, scheme, model name or digest a request may carry.
const MAX_TEXT: usize = 64 * 1024;

/// A question for the policy engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub principal: Principal,
    /// A tool name such as `fs.write`, or a lifecycle action such as `mission.submit`.
    /// A tool Aura does not know is evaluated as the action `tool.custom` with its name in
    /// `context.tool`.
    pub action: String,
    pub resource: Resource,
    #[serde(default)]
    pub context: Context,
}

/// The agent asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub agent: AgentId,
    pub level: Level,
    pub namespace: Namespace,
}

/// What the action touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Resource {
    /// A normalised workspace-relative path (`fs.*`): no leading `/`, no empty, `.` or
    /// `..` components; `.` alone is the workspace root.
    Path { namespace: Namespace, path: String },
    /// A command line for `cmd.run`; `network` says whether its cell gets a network.
    Command {
        namespace: Namespace,
        command: String,
        network: bool,
    },
    /// A network endpoint for `http.fetch`: a lowercase host name or IP address (IPv6 in
    /// brackets), without a trailing dot; a lowercase scheme.
    Host {
        host: String,
        port: u16,
        scheme: String,
    },
    /// A model package.
    Model { name: String, digest: String },
    /// A tool of an MCP server (`mcp.<server>.<tool>`): the server's registered name,
    /// the tool's name on that server, and whether the operator marked the server
    /// trusted.
    McpTool {
        server: String,
        tool: String,
        trusted: bool,
    },
    /// An image to make (`image.generate`): the image model's package name, the size in
    /// pixels, and the normalised workspace path its PNG is written to.
    Image {
        namespace: Namespace,
        model: String,
        width: u32,
        height: u32,
        path: String,
    },
    /// A WASM plugin installed on the node (`plugin.<name>`): its name and version, its
    /// publisher's key and its signed manifest's digest (both hex), and the capabilities
    /// its manifest declares: workspace access (`none`, `read` or `write`) and the
    /// `host:port`s it may connect to. The workspace it would see is the mission's, in the
    /// agent's namespace.
    Plugin {
        namespace: Namespace,
        name: String,
        version: String,
        publisher: String,
        digest: String,
        workspace: String,
        hosts: Vec<String>,
    },
    /// A memory space (`memory.*`): `agent:<agent id>` (that agent's own, which no other
    /// agent may reach) or `shared:<name>` (a space of the namespace that operators share).
    Memory { namespace: Namespace, space: String },
    /// A mission (`mission.*`, `record.read`).
    Mission { namespace: Namespace, id: MissionId },
    /// An agent (`agent.send`, `record.read`).
    Agent { namespace: Namespace, id: AgentId },
}

impl Resource {
    /// The namespace the resource belongs to; hosts and models belong to none.
    pub fn namespace(&self) -> Option<&Namespace> {
        match self {
            Resource::Path { namespace, .. }
            | Resource::Image { namespace, .. }
            | Resource::Plugin { namespace, .. }
            | Resource::Memory { namespace, .. }
            | Resource::Command { namespace, .. }
            | Resource::Mission { namespace, .. }
            | Resource::Agent { namespace, .. } => Some(namespace),
            Resource::Host { .. } | Resource::Model { .. } | Resource::McpTool { .. } => None,
        }
    }

    /// The Cedar entity type's name, without the `Aura::` namespace.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Resource::Path { .. } => "Path",
            Resource::Command { .. } => "Command",
            Resource::Host { .. } => "Host",
            Resource::Model { .. } => "Model",
            Resource::McpTool { .. } => "McpTool",
            Resource::Image { .. } => "Image",
            Resource::Plugin { .. } => "Plugin",
            Resource::Memory { .. } => "Memory",
            Resource::Mission { .. } => "Mission",
            Resource::Agent { .. } => "Agent",
        }
    }

    /// In words, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Resource::Path { .. } => "a path",
            Resource::Command { .. } => "a command",
            Resource::Host { .. } => "a host",
            Resource::Model { .. } => "a model",
            Resource::McpTool { .. } => "an MCP tool",
            Resource::Image { .. } => "an image",
            Resource::Plugin { .. } => "a plugin",
            Resource::Memory { .. } => "a memory space",
            Resource::Mission { .. } => "a mission",
            Resource::Agent { .. } => "an agent",
        }
    }
}

/// The circumstances of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The mission the request is made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission: Option<MissionId>,
    /// The tool declares this call destructive (it deletes or overwrites what cannot be
    /// recovered).
    #[serde(default)]
    pub destructive: bool,
    /// The call runs inside a cell.
    #[serde(default)]
    pub in_cell: bool,
    /// A verified approval (from `aura_identity::verify_approval`) answering an escalation
    /// of this very request. It is not part of [`request_digest`](crate::request_digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<VerifiedApproval>,
    /// Anything else policy authors may test, as `context.extra` tags: strings as they
    /// are, other values as compact JSON with sorted keys. Numbers must be integers.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// In a cluster: the region label of the node deciding (`context.node_region`). Like
    /// the approval, it is not part of the request's digest: it says where the request
    /// is judged, not what is asked, so an approval still answers it after a failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_region: Option<String>,
    /// The mission's boundary, the regions it may run in (`context.regions`), when it has
    /// one. Not part of the digest either: it is part of the mission's declaration, which
    /// the mission's id names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
}

/// Why a request cannot be put to Cedar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl Malformed {
    fn new(s: impl Into<String>) -> Self {
        Malformed(s.into())
    }
}

/// A name a tool may have: 1-128 of ASCII letters, digits, `.`, `_`, `-`, `/` and `:`,
/// starting with a letter or digit.
pub(crate) fn check_tool_name(name: &str) -> Result<(), Malformed> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_TOOL_NAME
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Malformed::new(format!(
            "`{}` is not a valid action name: use 1-{MAX_TOOL_NAME} of letters, digits, '.', '_', '-', '/' and ':'",
            shorten(name)
        )))
    }
}

/// Checks that `path` is a normalised workspace-relative path.
pub(crate) fn check_path(path: &str) -> Result<(), Malformed> {
    let bad = |why: &str| {
        Err(Malformed::new(format!(
            "the path `{}` {why}; tools must pass normalised workspace-relative paths",
            shorten(path)
        )))
    };
    if path.len() > MAX_PATH {
        return bad(&format!("is longer than {MAX_PATH} bytes"));
    }
    if path == "." {
        return Ok(());
    }
    if path.is_empty() {
        return bad("is empty (the workspace root is `.`)");
    }
    if path.starts_with('/') {
        return bad("is absolute");
    }
    if path.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    for component in path.split('/') {
        match component {
            "" => return bad("has an empty component"),
            "." | ".." => return bad("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a host name: lowercase letters, digits, `-`, `.`, `:`, `[`, `]` (IPv4, IPv6 in
/// brackets, DNS names), at most 253 bytes, no leading or trailing dot.
fn check_host(host: &str) -> Result<(), Malformed> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('.')
        && !host.ends_with('.')
        && host.bytes().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'-' | b'.' | b':' | b'[' | b']')
        });
    if ok {
        Ok(())
    } else {
        Err(Malformed::new(format!(
            "the host `{}` is not in canonical form (lowercase, no trailing dot)",
            shorten(host)
        )))
    }
}

/// Checks a URL scheme: a lowercase letter, then lowercase letters, digits, `+`, `-`, `.`.
fn check_scheme(scheme: &str) -> Result<(), Malformed> {
    let b = scheme.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(Malformed::new(format!(
            "the scheme `{}` is not in canonical form (lowercase, like `https`)",
            shorten(scheme)
        )))
    }
}

fn check_text(what: &str, text: &str, allow_empty: bool) -> Result<(), Malformed> {
    if text.len() > MAX_TEXT {
        return Err(Malformed::new(format!(
            "the {what} is longer than {MAX_TEXT} bytes"
        )));
    }
    if !allow_empty && text.is_empty() {
        return Err(Malformed::new(format!("the {what} is empty")));
    }
    if text.contains('\0') {
        return Err(Malformed::new(format!("the {what} contains a NUL byte")));
    }
    Ok(())
}

/// Checks the resource's own fields.
pub(crate) fn check_resource(resource: &Resource) -> Result<(), Malformed> {
    match resource {
        Resource::Path { path, .. } => check_path(path),
        Resource::Command { command, .. } => check_text("command", command, false),
        Resource::Host { host, scheme, .. } => {
            check_host(host)?;
            check_scheme(scheme)
        }
        Resource::Model { name, digest } => {
            check_text("model name", name, false)?;
            check_text("model digest", digest, false)
        }
        Resource::McpTool { server, tool, .. } => {
            check_text("MCP server name", server, false)?;
            check_text("MCP tool name", tool, false)
        }
        Resource::Image { model, path, .. } => {
            check_text("model name", model, false)?;
            check_path(path)
        }
        Resource::Plugin {
            name,
            version,
            publisher,
            digest,
            workspace,
            hosts,
            ..
        } => {
            check_text("plugin name", name, false)?;
            check_text("plugin version", version, false)?;
            check_text("plugin publisher", publisher, false)?;
            check_text("plugin digest", digest, false)?;
            if !matches!(workspace.as_str(), "none" | "read" | "write") {
                return Err(Malformed::new(format!(
                    "the plugin's workspace access `{}` is not none, read or write",
                    shorten(workspace)
                )));
            }
            if hosts.len() > MAX_PLUGIN_HOSTS {
                return Err(Malformed::new(format!(
                    "the plugin declares more than {MAX_PLUGIN_HOSTS} hosts"
                )));
            }
            for h in hosts {
                check_text("plugin host", h, false)?;
            }
            Ok(())
        }
        Resource::Memory { space, .. } => check_space(space),
        Resource::Mission { .. } | Resource::Agent { .. } => Ok(()),
    }
}

/// The longest shared memory space name, in bytes.
pub const MAX_SPACE_NAME: usize = 64;

/// Checks a memory space: `agent:<agent id>` or `shared:<name>`, the name 1-64 of
/// lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit.
pub(crate) fn check_space(space: &str) -> Result<(), Malformed> {
    let ok = match space.split_once(':') {
        Some(("agent", id)) => id.parse::<AgentId>().is_ok(),
        Some(("shared", name)) => valid_space_name(name),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Malformed::new(format!(
            "the memory space `{}` is not `agent:<agent id>` or `shared:<name>`",
            shorten(space)
        )))
    }
}

/// A shared memory space's name: 1-64 of lowercase letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit.
pub fn valid_space_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_SPACE_NAME
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The first word of a command line (what `Command.program` holds).
pub(crate) fn program_of(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

/// The extra entries as Cedar tags: each key with its value's text.
pub(crate) fn extra_tags(
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<(String, String)>, Malformed> {
    if extra.len() > MAX_EXTRA_ENTRIES {
        return Err(Malformed::new(format!(
            "context.extra has {} entries; at most {MAX_EXTRA_ENTRIES} are allowed",
            extra.len()
        )));
    }
    let mut tags = Vec::with_capacity(extra.len());
    for (key, value) in extra {
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            return Err(Malformed::new(format!(
                "context.extra key `{}` is not 1-128 printable characters",
                shorten(key)
            )));
        }
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => canonical_json(other).map_err(|unfit| {
                Malformed::new(match unfit {
                    Unfit::TooDeep => format!(
                        "context.extra `{}` nests deeper than {MAX_EXTRA_DEPTH} levels",
                        shorten(key)
                    ),
                    Unfit::Fractional => format!(
                        "context.extra `{}` holds a fractional number; pass it as a string",
                        shorten(key)
                    ),
                })
            })?,
        };
        if text.len() > MAX_EXTRA_VALUE {
            return Err(Malformed::new(format!(
                "context.extra `{}` is longer than {MAX_EXTRA_VALUE} bytes",
                shorten(key)
            )));
        }
        tags.push((key.clone(), text));
    }
    Ok(tags)
}

/// Why a value in [`Context::extra`] cannot be put to policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unfit {
    /// It nests deeper than [`MAX_EXTRA_DEPTH`].
    TooDeep,
    /// It holds a number that is not an integer. Floating-point numbers do not survive a
    /// trip through JSON bit for bit (serde_json's default parser may be off by one unit in
    /// the last place), so a recorded request could come back with another digest.
    Fractional,
}

/// Compact JSON with object keys sorted, written without recursion. The sorting makes the
/// text independent of the order in which the map was built (serde_json keeps insertion
/// order when another crate turns on its `preserve_order` feature).
pub(crate) fn canonical_json(value: &serde_json::Value) -> Result<String, Unfit> {
    use serde_json::Value;
    enum Step<'a> {
        Value(&'a Value, usize),
        Text(&'static str),
        Key(&'a str),
    }
    let mut out = String::new();
    let mut stack = vec![Step::Value(value, 0)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Text(t) => out.push_str(t),
            Step::Key(k) => {
                push_json_string(&mut out, k);
                out.push(':');
            }
            Step::Value(v, depth) => match v {
                Value::Null => out.push_str("null"),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => {
                    if !(n.is_i64() || n.is_u64()) {
                        return Err(Unfit::Fractional);
                    }
                    out.push_str(&n.to_string());
                }
                Value::String(s) => push_json_string(&mut out, s),
                Value::Array(items) => {
                    if depth >= MAX_EXTRA_DEPTH {
                        return Err(Unfit::TooDeep);
                    }
                    out.push('[');
                    stack.push(Step::Text("]"));
                    // Pushed in reverse so that they pop in order.
                    for (i, item) in items.iter().enumerate().rev() {
                        stack.push(Step::Value(item, depth + 1));
                        if i > 0 {
                            stack.push(Step::Text(","));
                        }
                    }
                }
                Value::Object(map) => {
                    if depth >= MAX_EXTRA_DEPTH {
                        return Err(Unfit::TooDeep);
                    }
                    out.push('{');
                    stack.push(Step::Text("}"));
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    for (i, (k, item)) in entries.into_iter().enumerate().rev() {
                        stack.push(Step::Value(item, depth + 1));
                        stack.push(Step::Key(k));
                        if i > 0 {
                            stack.push(Step::Text(","));
                        }
                    }
                }
            },
        }
    }
    Ok(out)
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; a string cannot fail to serialise.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// At most 80 characters of `s`, for error messages about hostile input.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// The approval as `context.approval` shows it: `(level, approver, verdict)`.
pub(crate) fn approval_fields(a: &VerifiedApproval) -> (Level, String, &'static str) {
    let verdict = match a.verdict {
        aura_identity::Verdict::Approve => "approve",
        aura_identity::Verdict::Reject => "reject",
    };
    (a.level, a.approver.to_string(), verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_normalised() {
        for good in [
            ".",
            "a",
            "notes/x.md",
            "a/b/c",
            ".hidden",
            "a/.b",
            "a..b",
            "é/ü",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "../x",
            "a/../b",
            "a/..",
            "a\0b",
            "a\nb",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"a".repeat(MAX_PATH + 1)).is_err());
    }

    #[test]
    fn hosts_and_schemes_must_be_canonical() {
        for good in ["example.com", "10.0.0.1", "[::1]", "a-b.c"] {
            assert_eq!(check_host(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Example.com",
            "example.com.",
            ".example.com",
            "a b",
            "a/b",
            "ä.com",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_scheme("https"), Ok(()));
        assert!(check_scheme("HTTPS").is_err());
        assert!(check_scheme("").is_err());
    }

    #[test]
    fn tool_names() {
        for good in ["fs.read", "db_query", "acme/deploy:v2", "x"] {
            assert_eq!(check_tool_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".x", "a b", "a\"b", "ä", &"a".repeat(MAX_TOOL_NAME + 1)] {
            assert!(check_tool_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_bounds_depth() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":[1,2,{"d":null,"c":"x\"y"}],"a":true}"#)
                .unwrap_or_default();
        assert_eq!(
            canonical_json(&v).as_deref(),
            Ok(r#"{"a":true,"b":[1,2,{"c":"x\"y","d":null}]}"#)
        );
        let mut deep = serde_json::Value::Null;
        for _ in 0..MAX_EXTRA_DEPTH {
            deep = serde_json::Value::Array(vec![deep]);
        }
        assert!(canonical_json(&deep).is_ok());
        deep = serde_json::Value::Array(vec![deep]);
        assert_eq!(canonical_json(&deep), Err(Unfit::TooDeep));
        assert_eq!(
            canonical_json(&serde_json::json!([1, -2, 1.5])),
            Err(Unfit::Fractional)
        );
        assert!(canonical_json(&serde_json::json!([u64::MAX, i64::MIN])).is_ok());
    }

    #[test]
    fn memory_spaces() {
        let agent = AgentId::from_bytes([7; 16]);
        for good in [
            format!("agent:{agent}"),
            "shared:handbook".into(),
            "shared:0.x_y-z".into(),
        ] {
            assert_eq!(check_space(&good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "agent:",
            "agent:nobody",
            "shared:",
            "shared:Handbook",
            "shared:-x",
            "shared:a b",
            "episodes:x",
            "handbook",
            &format!("shared:{}", "a".repeat(MAX_SPACE_NAME + 1)),
        ] {
            assert!(check_space(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn program_is_the_first_word() {
        assert_eq!(program_of("  cargo test -p x"), "cargo");
        assert_eq!(program_of(""), "");
    }
}
