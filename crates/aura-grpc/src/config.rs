//! The gRPC surfaces' settings (`<home>/pki/grpc.toml`, or a `[grpc]` table a node config
//! embeds): where to listen and which client identity gets which role.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::Role;
use crate::error::{Error, Result};
use crate::files::write_new;

/// The client that `aura pki init` makes, with the admin role.
pub const DEFAULT_CLIENT: &str = "admin";

/// Where the gRPC surfaces listen and who may use them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// The Unix socket; `<home>/aurae.sock` when absent.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Also listen on TCP at this address (same mTLS), when set.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Client identity (the certificate's CN, or one of its DNS SANs) → role. Identities
    /// not listed are refused.
    #[serde(default = "default_roles")]
    pub roles: BTreeMap<String, Role>,
}

fn default_roles() -> BTreeMap<String, Role> {
    BTreeMap::from([(DEFAULT_CLIENT.to_owned(), Role::Admin)])
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            socket: None,
            listen: None,
            roles: default_roles(),
        }
    }
}

impl GrpcConfig {
    /// Reads a config file; a missing file is the default.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        toml::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{} is not valid: {}", path.display(), e.message()))
        })
    }

    /// The file `aura pki init` writes: the defaults, spelled out. `[roles]` stays last so
    /// that `set_role` can append to it.
    pub(crate) fn template(socket: &Path) -> String {
        format!(
            "# The node's gRPC surfaces (Aurae v0 cells, observe, discovery; Aura's cells v1;\n\
             # model inference; health).\n\
             # Every connection is TLS with a client certificate issued by this directory's CA.\n\
             # socket = {}   # the default: <home>/aurae.sock\n\
             # listen = \"127.0.0.1:8443\"   # also serve on TCP (same mTLS)\n\
             \n\
             # Client certificate identity (CN or DNS SAN) = \"admin\" (everything), \"observer\"\n\
             # (list, inspect, logs, wait, signals, discovery, listing models, health) or\n\
             # \"inference\" (models: chat, completions, embeddings; and health). Others are refused.\n\
             [roles]\n\
             {} = \"admin\"\n",
            quote(&socket.to_string_lossy()),
            quote(DEFAULT_CLIENT),
        )
    }

    /// Gives `name` a role in the config file at `path`, replacing its earlier role.
    pub(crate) fn set_role(path: &Path, name: &str, role: Role) -> Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "[roles]\n".to_owned(),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        // Check it parses before and after: a hand-edited file we cannot follow is left
        // alone rather than rewritten.
        let before: GrpcConfig = toml::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{} is not valid: {}", path.display(), e.message()))
        })?;
        let key = quote(name);
        let line = format!("{key} = \"{}\"", role.as_str());
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !(before.roles.contains_key(name) && is_role_line(l, name)))
            .map(str::to_owned)
            .collect();
        if !text.lines().any(|l| l.trim() == "[roles]") {
            lines.push("[roles]".into());
        }
        lines.push(line);
        let new = lines.join("\n") + "\n";
        let after: GrpcConfig = toml::from_str(&new).map_err(|e| {
            Error::Invalid(format!(
                "cannot add `{name}` to {}: {}; edit its [roles] by hand",
                path.display(),
                e.message()
            ))
        })?;
        if after.roles.get(name) != Some(&role) {
            return Err(Error::Invalid(format!(
                "cannot add `{name}` to {}: keep [roles] the last table, or edit it by hand",
                path.display()
            )));
        }
        let tmp = path.with_extension("toml.new");
        let _ = std::fs::remove_file(&tmp);
        write_new(&tmp, &new, 0o600)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("replace {}", path.display()), e))
    }
}

fn is_role_line(line: &str, name: &str) -> bool {
    let l = line.trim_start();
    [quote(name), name.to_owned()].iter().any(|k| {
        l.strip_prefix(k.as_str())
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// A TOML basic string (JSON's escapes are TOML's).
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_the_defaults_and_roles_can_be_set() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("grpc.toml");
        let socket = Path::new("/var/lib/aura/aurae.sock");
        std::fs::write(&path, GrpcConfig::template(socket)).unwrap_or_else(|e| panic!("{e}"));
        let c = GrpcConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.socket, None, "the default follows the data directory");
        assert_eq!(c.roles, default_roles());

        GrpcConfig::set_role(&path, "ci.runner", Role::Observer).unwrap_or_else(|e| panic!("{e}"));
        GrpcConfig::set_role(&path, "ci.runner", Role::Admin).unwrap_or_else(|e| panic!("{e}"));
        GrpcConfig::set_role(&path, "admin", Role::Observer).unwrap_or_else(|e| panic!("{e}"));
        let c = GrpcConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.roles,
            BTreeMap::from([
                ("admin".to_owned(), Role::Observer),
                ("ci.runner".to_owned(), Role::Admin)
            ])
        );
    }

    #[test]
    fn missing_file_is_the_default_and_unknown_keys_are_refused() {
        assert_eq!(
            GrpcConfig::load(Path::new("/nonexistent/grpc.toml")).ok(),
            Some(GrpcConfig::default())
        );
        assert!(toml::from_str::<GrpcConfig>("sockets = \"x\"").is_err());
        assert!(toml::from_str::<GrpcConfig>("[roles]\nx = \"root\"").is_err());
    }
}
