//! A tiny random-weight SD 1.5 diffusers folder (aura-image's test writer: diffusers'
//! real tensor names and configs, loaded by the real loader) with a LoRA in `loras/`,
//! imported into a data directory as a signed package (and so is any other package
//! folder, such as aura-image's small `aura-tiny-emoji` package). Shared by the host's, the node's
//! and the CLI's image tests through `#[path]`, next to aura-image's writer, which the
//! including file brings in as the module `sd`.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::{Path, PathBuf};

use aura_core::door::{OsEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_model::import::{self, Context, Options};
use aura_model::{Registry, no_progress};

use super::sd;

/// The LoRA every test package carries, as `loras/<STYLE>.safetensors`.
pub(crate) const STYLE: &str = "style";

/// Writes the tiny SD 1.5 folder (with the LoRA) at `dir`.
pub(crate) fn write_folder(dir: &Path) {
    sd::write_diffusers(dir, sd::Tiny::Sd15, 11);
    std::fs::create_dir_all(dir.join("loras")).unwrap();
    sd::write_kohya_lora(
        &dir.join(format!("loras/{STYLE}.safetensors")),
        &[
            (
                "unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                32,
                32,
                0,
            ),
            ("unet_mid_block_resnets_0_conv1", 64, 64, 3),
        ],
        21,
    );
}

/// Imports the folder at `folder` into `home` as `name`, signed by `signer`; with
/// `licensed`, the publisher's own license for `signer`'s node is installed too.
pub(crate) fn import_into(
    home: &Path,
    folder: &Path,
    name: &str,
    signer: &Signer,
    licensed: bool,
) -> PathBuf {
    let options = Options {
        name: Some(name.into()),
        license: Some("CreativeML-OpenRAIL-M".into()),
        ..Options::default()
    };
    let plan = import::plan(folder, &options).unwrap();
    // A diffusers folder, or the tiny model's files (a safetensors model directory).
    assert!(
        matches!(
            plan.source_kind(),
            import::SourceKind::DiffusersDir | import::SourceKind::SafetensorsDir
        ),
        "{:?}",
        plan.source_kind()
    );
    let ctx = Context {
        signer,
        clock: &SystemClock,
        entropy: &OsEntropy,
    };
    let registry = Registry::new(home);
    if licensed {
        registry
            .import(
                &plan,
                &options,
                &ctx,
                signer.public_key().node_id(),
                &no_progress,
            )
            .unwrap();
    } else {
        import::import(registry.packages(), &plan, &options, &ctx, &no_progress).unwrap();
    }
    home.join("models").join(name)
}

/// Flips one byte of the package file `rel` (written anew, as a damaged copy would be).
pub(crate) fn tamper(package: &Path, rel: &str) {
    let path = package.join("files").join(rel);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let tmp = path.with_extension("tampered");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}
