//! The digest of a request: what an approval names to answer an escalation of exactly
//! that request.
//!
//! SHA-256 over the `aura/policy/request/v1` domain tag and this canonical encoding
//! (big-endian; `str` is a u64 byte length, then the UTF-8 bytes):
//!
//! ```text
//! u8 version = 1
//! [16] agent, u8 level, str namespace
//! str action
//! u8 resource kind, then its fields in declaration order:
//!   1 path:    str namespace, str path
//!   2 command: str namespace, str command, u8 network
//!   3 host:    str host, u16 port, str scheme
//!   4 model:   str name, str digest
//!   5 mission: str namespace, [16] id
//!   6 agent:   str namespace, [16] id
//!   7 MCP tool: str server, str tool, u8 trusted
//!   8 image:   str namespace, str model, u32 width, u32 height, str path
//!   9 plugin:  str namespace, str name, str version, str publisher, str digest,
//!              str workspace, u32 n hosts, each str host
//!  10 memory:  str namespace, str space
//! u8 has mission (0/1) [, [16] mission], u8 destructive, u8 in_cell
//! u32 n extra entries, sorted by key: str key, u8 kind (1 string, 2 other JSON,
//!   3 unfit: nested too deeply or holding a fractional number), str text (the string,
//!   or compact JSON with sorted keys; empty for kind 3)
//! ```
//!
//! The approval itself is left out: it answers the request, it is not part of it; so are
//! the node's region and the mission's boundary (where it is judged, and a part of the
//! mission the mission id names). The encoding never fails and reads no map in hash
//! order, so the digest is stable across processes and versions of serde_json. Requests whose extra values are unfit all share
//! one encoding of those values; `decide` denies them, so no approval can be asked for.

use aura_core::encoding::Encoder;
use aura_core::hash::{Domain, Hash};

use crate::request::{Request, Resource, canonical_json};

const VERSION: u8 = 1;

/// The digest an approval must name to answer an escalation of `request`.
pub fn request_digest(request: &Request) -> Hash {
    Hash::tagged(Domain::PolicyRequest, &encode(request))
}

fn put_str(e: &mut Encoder, s: &str) {
    e.u64(s.len() as u64).raw(s.as_bytes());
}

fn encode(r: &Request) -> Vec<u8> {
    let mut e = Encoder::with_capacity(256);
    e.u8(VERSION);
    e.raw(r.principal.agent.as_bytes())
        .u8(r.principal.level.as_u8());
    put_str(&mut e, r.principal.namespace.as_str());
    put_str(&mut e, &r.action);
    match &r.resource {
        Resource::Path { namespace, path } => {
            e.u8(1);
            put_str(&mut e, namespace.as_str());
            put_str(&mut e, path);
        }
        Resource::Command {
            namespace,
            command,
            network,
        } => {
            e.u8(2);
            put_str(&mut e, namespace.as_str());
            put_str(&mut e, command);
            e.u8(u8::from(*network));
        }
        Resource::Host { host, port, scheme } => {
            e.u8(3);
            put_str(&mut e, host);
            e.u16(*port);
            put_str(&mut e, scheme);
        }
        Resource::Model { name, digest } => {
            e.u8(4);
            put_str(&mut e, name);
            put_str(&mut e, digest);
        }
        Resource::Mission { namespace, id } => {
            e.u8(5);
            put_str(&mut e, namespace.as_str());
            e.raw(id.as_bytes());
        }
        Resource::Agent { namespace, id } => {
            e.u8(6);
            put_str(&mut e, namespace.as_str());
            e.raw(id.as_bytes());
        }
        Resource::McpTool {
            server,
            tool,
            trusted,
        } => {
            e.u8(7);
            put_str(&mut e, server);
            put_str(&mut e, tool);
            e.u8(u8::from(*trusted));
        }
        Resource::Image {
            namespace,
            model,
            width,
            height,
            path,
        } => {
            e.u8(8);
            put_str(&mut e, namespace.as_str());
            put_str(&mut e, model);
            e.u32(*width).u32(*height);
            put_str(&mut e, path);
        }
        Resource::Plugin {
            namespace,
            name,
            version,
            publisher,
            digest,
            workspace,
            hosts,
        } => {
            e.u8(9);
            put_str(&mut e, namespace.as_str());
            for s in [name, version, publisher, digest, workspace] {
                put_str(&mut e, s);
            }
            e.u32(u32::try_from(hosts.len()).unwrap_or(u32::MAX));
            for h in hosts {
                put_str(&mut e, h);
            }
        }
        Resource::Memory { namespace, space } => {
            e.u8(10);
            put_str(&mut e, namespace.as_str());
            put_str(&mut e, space);
        }
    }
    let c = &r.context;
    match &c.mission {
        Some(m) => e.u8(1).raw(m.as_bytes()),
        None => e.u8(0),
    };
    e.u8(u8::from(c.destructive)).u8(u8::from(c.in_cell));
    let mut entries: Vec<(&String, &serde_json::Value)> = c.extra.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    e.u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
    for (key, value) in entries {
        put_str(&mut e, key);
        match value {
            serde_json::Value::String(s) => {
                e.u8(1);
                put_str(&mut e, s);
            }
            other => match canonical_json(other) {
                Ok(text) => {
                    e.u8(2);
                    put_str(&mut e, &text);
                }
                Err(_) => {
                    e.u8(3);
                    put_str(&mut e, "");
                }
            },
        }
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use aura_core::AgentId;
    use aura_identity::{Level, Namespace};

    use super::*;
    use crate::request::{Context, Principal};

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).unwrap_or_else(|_| Namespace::default_namespace())
    }

    fn request() -> Request {
        Request {
            principal: Principal {
                agent: AgentId::from_bytes([1; 16]),
                level: Level::L2,
                namespace: ns("team-a"),
            },
            action: "fs.delete".into(),
            resource: Resource::Path {
                namespace: ns("team-a"),
                path: "notes/x.md".into(),
            },
            context: Context::default(),
        }
    }

    /// A test vector, computed independently (Python's hashlib over the layout in this
    /// file's header). Changing the encoding changes it and would orphan every approval
    /// already recorded: bump VERSION instead.
    #[test]
    fn digest_vector_is_stable() {
        assert_eq!(
            request_digest(&request()).to_hex(),
            "39b6c550fd7d07c70cd26d1e4b7e1539d298704685bfa89efe59da50ea7d8cef"
        );
    }

    /// The plugin resource's vector, computed the same way (Python's hashlib over the
    /// layout in this file's header, kind 9).
    #[test]
    fn plugin_digest_vector_is_stable() {
        let mut r = request();
        r.action = "plugin.wordcount".into();
        r.resource = Resource::Plugin {
            namespace: ns("team-a"),
            name: "wordcount".into(),
            version: "1.0.0".into(),
            publisher: "ab".repeat(32),
            digest: "cd".repeat(32),
            workspace: "read".into(),
            hosts: vec!["example.com:443".into()],
        };
        assert_eq!(
            request_digest(&r).to_hex(),
            "d4f5c5c8f9f4dffaae971c121bd27f859465995d2ba50f2a9ff702a0a77c9e2f"
        );
        // Each of the plugin's fields is in the digest.
        let base = request_digest(&r);
        let Resource::Plugin { hosts, .. } = &mut r.resource else {
            unreachable!()
        };
        hosts.clear();
        assert_ne!(request_digest(&r), base);
    }

    #[test]
    fn every_field_changes_the_digest_but_the_approval_does_not() {
        let base = request_digest(&request());
        let mut variants = Vec::new();
        let mut r = request();
        r.principal.level = Level::L3;
        variants.push(r);
        let mut r = request();
        r.principal.agent = AgentId::from_bytes([2; 16]);
        variants.push(r);
        let mut r = request();
        r.action = "fs.write".into();
        variants.push(r);
        let mut r = request();
        r.resource = Resource::Path {
            namespace: ns("team-a"),
            path: "notes/y.md".into(),
        };
        variants.push(r);
        let mut r = request();
        r.context.destructive = true;
        variants.push(r);
        let mut r = request();
        r.context.in_cell = true;
        variants.push(r);
        let mut r = request();
        r.context.extra.insert("ticket".into(), "OPS-7".into());
        variants.push(r);
        let mut r = request();
        r.context
            .extra
            .insert("ticket".into(), serde_json::json!(7));
        variants.push(r);
        let mut r = request();
        r.context.mission = Some(aura_core::MissionId::from_bytes([3; 16]));
        variants.push(r);
        let mut seen = vec![base];
        for v in &variants {
            let d = request_digest(v);
            assert!(!seen.contains(&d), "{v:?}");
            seen.push(d);
        }
    }

    #[test]
    fn extra_key_order_does_not_matter() {
        let mut a = request();
        a.context
            .extra
            .insert("a".into(), serde_json::json!({"x": 1, "y": [2]}));
        a.context.extra.insert("b".into(), "z".into());
        let mut b = request();
        b.context.extra.insert("b".into(), "z".into());
        b.context
            .extra
            .insert("a".into(), serde_json::json!({"y": [2], "x": 1}));
        assert_eq!(request_digest(&a), request_digest(&b));
    }
}
