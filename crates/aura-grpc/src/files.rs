//! Writing the PKI's and the gRPC config's files: new files only, created with their
//! final mode. A leaf module, so that the PKI and the config can both use it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes a new file with `mode` from the start (keys are never readable by others, not
/// even for a moment).
pub(crate) fn write_new(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}
