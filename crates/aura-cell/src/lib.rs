//! Aura's Linux sandbox: hardened cells.
//!
//! A **cell** is a group of processes with their own user, pid, mount, uts, ipc, cgroup
//! and (unless the network is granted) network namespaces, resource limits through
//! cgroup controllers (v2, or the v1 hierarchies where that is what the host has), a root
//! file system of read-only binds on a tmpfs entered with `pivot_root`, a fresh `/proc`
//! with Docker's masked paths, no capabilities at all, `no_new_privs`, a seccomp filter,
//! no inherited file descriptors, and no core dumps. The only program Aura runs inside a
//! cell is a one-kilobyte init from a sealed memfd, never the `aura` binary.
//!
//! # Running one command (what `cmd.run` uses)
//!
//! ```no_run
//! # async fn example() -> aura_cell::Result<()> {
//! use std::time::Duration;
//! use aura_cell::{Options, RunSpec, Runtime};
//!
//! // One runtime per process, started once (it needs root).
//! let cells = Runtime::start(Options::new("/var/lib/aura/cells")).await?;
//!
//! let outcome = cells
//!     .run(
//!         RunSpec::shell("cargo test 2>&1 | tail -n 20")
//!             .workspace("/var/lib/aura/missions/m1/workspace") // read-write at /workspace
//!             .network(false)                                   // loopback only (default)
//!             .memory_max(512 << 20)
//!             .pids_max(256)
//!             .cpus(1.0)?
//!             .env("CARGO_TERM_COLOR", "never")
//!             .timeout(Duration::from_secs(300))
//!             .output_limit(64 * 1024),                         // per stream
//!     )
//!     .await?;
//!
//! println!("{} ({} ms)", outcome.status, outcome.duration.as_millis());
//! // outcome.code(): exit code or 128+signal; outcome.oom_killed, outcome.timed_out;
//! // outcome.stdout / stderr (capped, with *_truncated flags); outcome.usage (cgroup CPU
//! // time and peak memory).
//! # Ok(()) }
//! ```
//!
//! The agents' `cmd.run` tool gets this through [`tools::CellRunner`], aura-tools'
//! `CommandRunner` over a runtime.
//!
//! To stream output as it comes, use [`Runtime::spawn`] and [`Running::next_output`].
//! Errors before the command runs (a bad spec, a command that does not exist, a host
//! that cannot run cells) are [`Error`]s with an [`ErrorKind`]; a command that runs and
//! fails is an `Ok` outcome with a non-zero status.
//!
//! # Long-lived cells (the Aurae-compatible API)
//!
//! [`Runtime::allocate`] a [`CellSpec`], [`Runtime::start_executable`]s in it, read their
//! [`Runtime::logs`] (history, then follow), [`Runtime::stop`] or [`Runtime::wait`] for
//! them, [`Runtime::inspect`] usage, [`Runtime::list`] the tree, [`Runtime::free`].
//! These map one to one onto the Aurae v0 `CellService`; the aura-grpc crate serves them
//! over gRPC with mTLS (the `.proto` files are in its `proto/`).
//!
//! # Workspaces and host paths
//!
//! Nothing a cell writes belongs to the host's root: a workspace of the cells' ids is
//! bound as it is (a cell's root is host uid [`Options::id_base`]), one of an unprivileged
//! user is id-mapped for that user alone, one of the host's root is refused, and what a
//! run leaves is [`sweep`]ed of setuid bits and device nodes. [`Workspaces`] makes a
//! node's workspaces (private, the cells' root's, each a file system of the quota's
//! size); [`HostPaths`] is the allowlist of host paths an operator may bind; and
//! [`Options::protected`] keeps the node's own files out of every cell.
//!
//! # Clean-up
//!
//! Every mount of a cell lives in the cell's own mount namespace and disappears with it.
//! Processes and cgroups are removed on free, on shutdown, when the runtime is dropped,
//! and, after a crash, by the next runtime of the same instance when it starts.

mod cgroup;
mod child;
mod error;
mod logs;
mod rootfs;
mod run;
mod runtime;
pub mod seccomp;
mod spawn;
pub mod spec;
mod sys;
mod template;
pub mod tools;
pub mod workspace;

pub use cgroup::{Mode as CgroupMode, Usage, Version as CgroupVersion};
pub use error::{Error, ErrorKind, Result};
pub use logs::{Channel, DaemonEvent, EventLog, LogLimits, LogLine, LogStore, Subscription};
pub use rootfs::{masked_paths, readonly_paths};
pub use run::{DEFAULT_OUTPUT_LIMIT, Output, RunOutcome, RunSpec, Running, Stopper};
pub use runtime::{
    Allocated, CellInfo, CellTree, DEFAULT_PATH, ExecutableInfo, ExitInfo, ExitStatus, Options,
    Runtime, SignalEvent, Started, signal_name,
};
pub use spec::{
    Bind, CellName, CellSpec, Command, CpuMax, Env, ExecutableName, ExecutableSpec, Limits,
};
pub use workspace::{CellAccess, HostPaths, Swept, WorkspaceOptions, Workspaces, sweep};
