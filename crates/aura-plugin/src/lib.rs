//! WASM plugins: tools written as WebAssembly components (WASI preview 2 commands) and
//! shipped as signed packages, run with fuel, memory, time and output limits and with only
//! the capabilities their manifest declares and their caller grants.
//!
//! - [`manifest`]: the signed manifest (`plugin-manifest/v1`): name, version, the
//!   component's SHA-256, the publisher's key, capabilities (workspace access, hosts),
//!   limits and the input schema.
//! - [`package`]: a package directory (`plugin.json` + `plugin.wasm`): [`package::pack`]
//!   makes one, [`package::open`] checks one (signature, trusted publisher, hash) before
//!   anything is compiled.
//! - [`runtime`]: the wasmtime engine, loading a verified package and running calls: JSON
//!   arguments on stdin, the JSON answer on stdout.
//! - [`schema`]: a call's arguments checked against the manifest's input schema.
//! - [`installed`]: the node's installed plugins and trusted publishers
//!   (`<home>/plugins`), what `aura plugin install | trust | list | remove` change.
//! - [`tool`]: a loaded plugin as the aura-tools tool `plugin.<name>`, which the node
//!   registers; Cedar judges its calls as `plugin.call` on an `Aura::Plugin` resource and
//!   the ledger records them like any other tool's.
//!
//! This crate knows nothing of missions, policy or the ledger beyond aura-tools' `Tool`.

pub mod installed;
pub mod manifest;
pub mod package;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod schema;
#[cfg(feature = "runtime")]
pub mod tool;

pub use manifest::{Capabilities, Limits, PluginManifest, WorkspaceAccess};
pub use package::{PackageError, VerifiedPackage};
#[cfg(feature = "runtime")]
pub use runtime::{Grant, Outcome, Plugin, RunError, Runtime};
#[cfg(feature = "runtime")]
pub use tool::PluginTool;
