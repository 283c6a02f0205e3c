//! `aura plugin`: make signed WASM plugin packages, decide which publishers this node
//! trusts, and install, list and remove plugins in `<home>/plugins` (aura-plugin's
//! `installed`). `aura serve` serves every installed plugin whose package still verifies
//! as the tool `plugin.<name>` from its next start. docs/plugins.md is the guide.

use std::path::{Path, PathBuf};

use aura_core::keystore::KeyName;
use aura_core::sign::PublicKey;
use aura_plugin::installed::{self, Installed};
use aura_plugin::{Capabilities, Limits, PackageError, PluginManifest, VerifiedPackage};
use serde::{Deserialize, Serialize};

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make a signed package (plugin.json + plugin.wasm) from a manifest and a component
    Pack {
        /// The manifest to sign: JSON with name, version, description, capabilities,
        /// limits (optional) and input_schema; the publisher and the component's hash
        /// and size are filled in
        manifest: PathBuf,
        /// The WebAssembly component (a WASI preview 2 command, e.g. built for
        /// wasm32-wasip2)
        component: PathBuf,
        /// The key in this node's keystore that signs as the publisher
        #[arg(long, value_name = "NAME")]
        key: String,
        /// The package directory to write (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Trust a publisher's key: packages it signed may be installed and served
    Trust {
        /// The publisher's public key (64 hex digits), or the name of a key in this
        /// node's keystore
        key: String,
        /// What to call the publisher [default: the key's fingerprint]
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop trusting a publisher: its installed plugins are refused from then on
    Untrust {
        /// The publisher's public key (64 hex digits), or the name of a key in this
        /// node's keystore
        key: String,
    },
    /// Verify a package (signature, trusted publisher, digest) and install it
    Install {
        /// The package directory (plugin.json + plugin.wasm)
        package: PathBuf,
        /// Replace an installed plugin of the same name
        #[arg(long)]
        replace: bool,
    },
    /// List the installed plugins (checked again now) and the trusted publishers
    List,
    /// Remove an installed plugin
    Remove {
        /// The plugin's name (the tool is `plugin.<name>`)
        name: String,
    },
}

/// What `pack` reads: a manifest without what packing fills in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    capabilities: Capabilities,
    #[serde(default)]
    limits: Limits,
    input_schema: serde_json::Value,
}

#[derive(Serialize)]
struct PluginView {
    name: String,
    version: String,
    tool: String,
    digest: String,
    publisher: String,
    component_sha256: String,
    component_size: u64,
    workspace: &'static str,
    hosts: Vec<String>,
    limits: Limits,
}

fn view(p: &VerifiedPackage) -> PluginView {
    let m = &p.manifest.statement;
    PluginView {
        name: m.name.clone(),
        version: m.version.clone(),
        tool: m.tool_name(),
        digest: p.digest.to_hex(),
        publisher: m.publisher.to_hex(),
        component_sha256: m.component_sha256.to_hex(),
        component_size: m.component_size,
        workspace: m.capabilities.workspace.as_str(),
        hosts: m.capabilities.hosts.clone(),
        limits: m.limits,
    }
}

fn human(v: &PluginView) -> String {
    let hosts = if v.hosts.is_empty() {
        "none".to_owned()
    } else {
        v.hosts.join(", ")
    };
    format!(
        "{} {} (tool {})\ndigest      {}\npublisher   {}\ncomponent   {} bytes, sha-256 {}\nworkspace   {}\nhosts       {hosts}\nlimits      {} fuel, {} bytes of memory, {} ms, {} bytes of output\n",
        v.name,
        v.version,
        v.tool,
        v.digest,
        v.publisher,
        v.component_size,
        v.component_sha256,
        v.workspace,
        v.limits.fuel,
        v.limits.memory_bytes,
        v.limits.timeout_ms,
        v.limits.output_bytes,
    )
}

/// The node's plugin directory.
pub(crate) fn plugin_dir(home: &Home) -> Installed {
    Installed::new(home.dir().join("plugins"))
}

/// A refused package or a failed change, as one line and a hint.
fn refusal(e: installed::Error) -> anyhow::Error {
    match e {
        installed::Error::Package(p) => package_refusal(p),
        installed::Error::Exists(name) => hinted(
            format!("a plugin named `{name}` is already installed"),
            format!("pass --replace to replace it, or `aura plugin remove {name}` first"),
        ),
        installed::Error::NotInstalled(name) => hinted(
            format!("no plugin named `{name}` is installed"),
            "`aura plugin list` shows the installed plugins",
        ),
        installed::Error::Publishers { .. } => hinted(
            e.to_string(),
            "fix or remove the file, then trust the publishers again with `aura plugin trust`",
        ),
        installed::Error::BadName(_) => hinted(
            e.to_string(),
            "a plugin's name is 1 to 64 lowercase letters, digits or `-`; `aura plugin list` shows them",
        ),
        installed::Error::BadPublisherName => hinted(
            e.to_string(),
            "pass --name with a short name for the publisher",
        ),
        other => anyhow::Error::new(other),
    }
}

fn package_refusal(e: PackageError) -> anyhow::Error {
    match e {
        PackageError::Untrusted(key) => hinted(
            format!("the package's publisher {key} is not trusted by this node"),
            format!("`aura plugin trust {key}` if you trust it"),
        ),
        PackageError::Tampered { .. } | PackageError::Signature(_) => hinted(
            format!("refusing the package: {e}"),
            "get the package again from its publisher; nothing was installed",
        ),
        PackageError::Manifest(_) | PackageError::TooLarge { .. } => hinted(
            format!("refusing the package: {e}"),
            "a package is a directory with plugin.json and plugin.wasm, made by `aura plugin pack`",
        ),
        PackageError::Read { .. } => hinted(
            e.to_string(),
            "give the package's directory (plugin.json + plugin.wasm)",
        ),
        PackageError::Write { .. } => anyhow::Error::new(e),
    }
}

/// A public key from 64 hex digits or the name of a key in the keystore.
fn publisher_key(home: &Home, key: &str) -> anyhow::Result<PublicKey> {
    if key.len() == 64
        && let Ok(k) = key.parse::<PublicKey>()
    {
        return Ok(k);
    }
    let name = KeyName::new(key).map_err(|_| {
        hinted(
            format!("`{key}` is neither a public key nor a key name"),
            "give 64 hex digits, or the name of a key in `aura key list`",
        )
    })?;
    home.keystore().public_key(&name).map_err(|e| {
        hinted(
            format!("`{key}` is not a public key, and not a key of this node: {e}"),
            "give 64 hex digits, or the name of a key in `aura key list`",
        )
    })
}

fn read_template(path: &Path) -> anyhow::Result<Template> {
    let meta = std::fs::metadata(path).map_err(|e| {
        hinted(
            format!("cannot read {}: {e}", path.display()),
            "give the manifest's JSON file",
        )
    })?;
    if meta.len() > 1 << 20 {
        return Err(hinted(
            format!("{} is larger than 1 MiB", path.display()),
            "a manifest is a small JSON file",
        ));
    }
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        hinted(
            format!("{} is not a plugin manifest: {e}", path.display()),
            "see docs/plugins.md for its members: name, version, description, capabilities, limits, input_schema",
        )
    })
}

#[derive(Serialize)]
struct Trusted {
    key: String,
    name: String,
    added: bool,
}

#[derive(Serialize)]
struct Untrusted {
    key: String,
    removed: bool,
}

#[derive(Serialize)]
struct Listed {
    name: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin: Option<PluginView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Listing {
    plugins: Vec<Listed>,
    publishers: Vec<installed::Publisher>,
}

#[derive(Serialize)]
struct Removed {
    name: String,
    removed: bool,
}

pub(crate) fn run(home: &Home, out: &Output, command: Command) -> anyhow::Result<()> {
    home.require_init()?;
    let node = plugin_dir(home);
    match command {
        Command::Pack {
            manifest,
            component,
            key,
            out: dir,
        } => {
            let t = read_template(&manifest)?;
            let signer = home.signer(&KeyName::new(&key)?)?;
            let unreadable = |e: std::io::Error| {
                hinted(
                    format!("cannot read {}: {e}", component.display()),
                    "give the component built for wasm32-wasip2",
                )
            };
            // The size first, so an oversized file is refused before it is read.
            let size = std::fs::metadata(&component).map_err(unreadable)?.len();
            let wasm = if size > aura_plugin::manifest::MAX_COMPONENT {
                Vec::new()
            } else {
                std::fs::read(&component).map_err(unreadable)?
            };
            if size > aura_plugin::manifest::MAX_COMPONENT
                || wasm.len() as u64 > aura_plugin::manifest::MAX_COMPONENT
            {
                return Err(hinted(
                    format!(
                        "{} is larger than the {} bytes a package may hold",
                        component.display(),
                        aura_plugin::manifest::MAX_COMPONENT
                    ),
                    "build the component with --release and strip it",
                ));
            }
            let m = PluginManifest {
                name: t.name,
                version: t.version,
                description: t.description,
                publisher: signer.public_key(),
                component_sha256: aura_core::hash::Hash::ZERO,
                component_size: 0,
                capabilities: t.capabilities,
                limits: t.limits,
                input_schema: t.input_schema,
            };
            aura_plugin::package::pack(&wasm, m, &signer, &dir).map_err(|e| match e {
                PackageError::Signature(reason) => hinted(
                    format!("the manifest cannot be signed: {reason}"),
                    "fix the manifest (docs/plugins.md lists its rules)",
                ),
                other => anyhow::Error::new(other),
            })?;
            // Opened as any installer would, so what was written is known to verify.
            let key = signer.public_key();
            let packed = aura_plugin::package::open(&dir, &[key]).map_err(package_refusal)?;
            let v = view(&packed);
            out.print(&v, || {
                format!("packed into {}\n{}", dir.display(), human(&v))
            })
        }
        Command::Trust { key, name } => {
            let key = publisher_key(home, &key)?;
            let name = name.unwrap_or_else(|| key.fingerprint());
            let added = node.trust(key, &name).map_err(refusal)?;
            let t = Trusted {
                key: key.to_hex(),
                name,
                added,
            };
            out.print(&t, || {
                if t.added {
                    format!("trusting publisher `{}` ({})", t.name, t.key)
                } else {
                    format!(
                        "publisher {} was trusted already; now called `{}`",
                        t.key, t.name
                    )
                }
            })
        }
        Command::Untrust { key } => {
            let key = publisher_key(home, &key)?;
            let removed = node.untrust(&key).map_err(refusal)?;
            let u = Untrusted {
                key: key.to_hex(),
                removed,
            };
            out.print(&u, || {
                if u.removed {
                    format!(
                        "no longer trusting {}: its plugins are refused from the node's next start",
                        u.key
                    )
                } else {
                    format!("{} was not trusted", u.key)
                }
            })
        }
        Command::Install { package, replace } => {
            let installed = node.install(&package, replace).map_err(refusal)?;
            let v = view(&installed);
            out.print(&v, || {
                format!(
                    "installed {}; `aura serve` serves it as {} from its next start\n{}",
                    v.name,
                    v.tool,
                    human(&v)
                )
            })
        }
        Command::List => {
            let plugins = node
                .open_all()
                .map_err(refusal)?
                .into_iter()
                .map(|(name, opened)| match opened {
                    Ok(p) => Listed {
                        name,
                        ok: true,
                        plugin: Some(view(&p)),
                        error: None,
                    },
                    Err(e) => Listed {
                        name,
                        ok: false,
                        plugin: None,
                        error: Some(e.to_string()),
                    },
                })
                .collect();
            let listing = Listing {
                plugins,
                publishers: node.publishers().map_err(refusal)?,
            };
            out.print(&listing, || {
                let mut text = String::new();
                if listing.plugins.is_empty() {
                    text.push_str(
                        "no plugins installed (`aura plugin install DIR` installs one)\n",
                    );
                }
                for p in &listing.plugins {
                    match (&p.plugin, &p.error) {
                        (Some(v), _) => text.push_str(&format!(
                            "{:<20} {:<10} {:<8} {}  {}\n",
                            v.name,
                            v.version,
                            v.workspace,
                            &v.digest[..16],
                            v.tool
                        )),
                        (None, Some(e)) => {
                            text.push_str(&format!("{:<20} refused: {e}\n", p.name));
                        }
                        (None, None) => {}
                    }
                }
                if listing.publishers.is_empty() {
                    text.push_str("no trusted publishers (`aura plugin trust KEY` adds one)\n");
                } else {
                    text.push_str("trusted publishers:\n");
                    for p in &listing.publishers {
                        text.push_str(&format!("  {:<20} {}\n", p.name, p.key));
                    }
                }
                text
            })
        }
        Command::Remove { name } => {
            node.remove(&name).map_err(refusal)?;
            let r = Removed {
                name,
                removed: true,
            };
            out.print(&r, || {
                format!(
                    "removed {}; a running node serves it until its next start",
                    r.name
                )
            })
        }
    }
}
