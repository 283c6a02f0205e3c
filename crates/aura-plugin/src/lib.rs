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
//!
//! This crate knows nothing of missions, policy or the ledger: aura-engine wraps a loaded
//! plugin as the tool `plugin.<name>`, whose calls Cedar judges and the ledger records
//! like any other tool's.

pub mod manifest;
pub mod package;
#[cfg(feature = "runtime")]
pub mod runtime;

pub use manifest::{Capabilities, Limits, PluginManifest, WorkspaceAccess};
pub use package::{PackageError, VerifiedPackage};
#[cfg(feature = "runtime")]
pub use runtime::{Grant, Outcome, Plugin, RunError, Runtime};
