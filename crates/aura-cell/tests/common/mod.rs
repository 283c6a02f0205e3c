//! Shared helpers for the cell tests: a runtime in a throwaway state directory (its own
//! cgroup instance, so tests run in parallel), and leak checks.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::time::Duration;

use aura_cell::{Options, Runtime};

pub struct Cells {
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
    mounts_before: usize,
}

/// Mount points in this (the host's) mount namespace.
pub fn host_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

pub async fn cells() -> Cells {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(dir.path().join("cells"));
    opts.stop_grace = Duration::from_millis(500);
    opts.tmp_bytes = 64 << 20;
    let mounts_before = host_mounts();
    let rt = Runtime::start(opts).await.unwrap();
    Cells {
        rt,
        dir,
        mounts_before,
    }
}

impl Cells {
    /// Shuts the runtime down and checks nothing is left: no cgroups (so no processes),
    /// no mounts in the host's namespace.
    pub async fn finish(self) {
        self.rt.shutdown().await;
        assert!(
            self.rt.leftover_cgroups().is_empty(),
            "{:?}",
            self.rt.leftover_cgroups()
        );
        assert_eq!(
            host_mounts(),
            self.mounts_before,
            "a mount leaked into the host"
        );
    }
}
