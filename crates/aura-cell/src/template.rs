//! Root templates: the part of a cell's root that every cell shares, built once in a
//! mount namespace of its own, which cells are then cloned from.
//!
//! Building a root from scratch costs a new cell a copy of the host's whole mount table,
//! a recursive `MS_PRIVATE` over it, the bind of the system directories, /dev's nodes and
//! links, and a `pivot_root` whose detach of the old root tears the host's copy down
//! again (and waits for an RCU grace period to do it). A template does all of that once:
//! a builder process (see [`crate::child::run_template`]) makes the shared root, enters it
//! and detaches the host, then gives up every privilege and becomes the sealed init in
//! `hold` mode, exactly as a long-lived cell's process 1 does, and stays for as long as
//! the runtime keeps the template: a mount namespace keeps its mounts only while a task
//! is in it (on Linux 6.18 a descriptor of the namespace does not keep them), and that
//! idle init is the task. It ends when the runtime drops the template (its lifeline
//! closes) or dies (parent-death signal). Its namespace holds a handful of private
//! mounts. A cell is then cloned, with `CLONE_NEWNS`, by a
//! spawner thread that has entered that namespace: its mount namespace is a copy of the
//! template, and its child adds only what is its own (/etc, /tmp, /proc and its masks,
//! the workspace; see [`crate::rootfs::template_cell_plan`]). Host directories it needs
//! (the workspace, /etc/alternatives, /etc/ssl) come as detached mount trees the parent
//! prepares on the host, since nothing of the host is visible from the template.
//!
//! The template's root is read-only and shared by every cell cloned from it, so nothing
//! a cell writes or owns lives there; the view inside a cell is the one a root built from
//! scratch gives, except that /etc is a mount of its own.
//!
//! Templates are built lazily, one per [`Variant`], the first time a cell needs one. If
//! one cannot be built (an old kernel, a host that refuses the mounts), the failure is
//! recorded in the runtime's events once and every cell of that variant is built from
//! scratch, as before; cells with extra binds always are. [`crate::Options::root_template`]
//! turns templates off.

use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};

use tokio::sync::OnceCell;

use crate::child::{Finish, Template};
use crate::error::{Error, Result};
use crate::rootfs::{self, Base, Variant};
use crate::spawn::{self, Process, Spawner, cstring};

/// The runtime's templates, one slot per variant.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    slots: [OnceCell<Option<Held>>; 2],
}

/// A template: its mount namespace, and the idle init that keeps it populated.
#[derive(Debug)]
pub(crate) struct Held {
    ns: OwnedFd,
    keeper: Process,
    /// Closing it ends the keeper.
    _lifeline: OwnedFd,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.keeper.kill_and_reap();
    }
}

impl Templates {
    /// The mount namespace of `variant`'s template, building it on first use; `None` if
    /// it cannot be built (`on_failure` hears why, once).
    pub(crate) async fn get<F, Fut>(
        &self,
        variant: Variant,
        build: F,
        on_failure: impl FnOnce(&Error),
    ) -> Option<RawFd>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Held>>,
    {
        self.slots[variant.index()]
            .get_or_init(|| async move {
                match build().await {
                    Ok(held) => Some(held),
                    Err(e) => {
                        on_failure(&e);
                        None
                    }
                }
            })
            .await
            .as_ref()
            .map(|held| held.ns.as_raw_fd())
    }

    /// How many templates have been built (for tests).
    pub(crate) fn built(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.get().is_some_and(|t| t.is_some()))
            .count()
    }
}

/// Builds `variant`'s template. `stdio`: the keeper's standard descriptors (the null
/// device); `finish`: makes the keeper's [`Finish`] (the init in `hold` mode) for the
/// descriptors it is given (stdio, the error pipe, the lifeline).
pub(crate) async fn build(
    spawner: &Spawner,
    base: &Base,
    stage: &std::ffi::CStr,
    variant: Variant,
    stdio: [OwnedFd; 3],
    finish: impl FnOnce(Vec<RawFd>) -> Result<Finish>,
) -> Result<Held> {
    if !spawner.has_template_thread() {
        return Err(Error::Unsupported {
            what: "the template spawner thread has no file-system context of its own".into(),
            hint: "cells are built from scratch instead".into(),
        });
    }
    // The system directories go in as detached trees made here, as a cell's workspace
    // does: if the kernel refused to attach a tree made by another process, the template
    // fails here, once, instead of every cell cloned from it.
    let system = rootfs::system_trees(base)?;
    let raw: Vec<RawFd> = system.iter().map(|t| t.as_raw_fd()).collect();
    let ops = rootfs::template_plan(base, variant, &raw)?;
    let (err_r, err_w) = spawn::pipe()?;
    let (life_r, life_w) = spawn::pipe()?;
    let mut fds: Vec<RawFd> = stdio.iter().map(|f| f.as_raw_fd()).collect();
    fds.push(err_w.as_raw_fd());
    fds.push(life_r.as_raw_fd());
    let plan = Box::new(Template {
        stage: stage.to_owned(),
        root_data: cstring("mode=0755,size=1m")?,
        ops,
        err_fd: err_w.as_raw_fd(),
        finish: finish(fds)?,
    });
    let builder = Process::new(spawner.template(plan).await?)?;
    // The builder has its copies; ours must close so that end-of-file can be seen.
    drop((err_w, life_r, system, stdio));
    let result = async {
        // End-of-file with nothing on the pipe: the keeper runs.
        let report = spawn::read_report(err_r).await?;
        if let Some(e) = report.error("the root template") {
            return Err(e);
        }
        let path = format!("/proc/{}/ns/mnt", builder.pid);
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| Error::io(format!("cannot open {path}"), e))
    }
    .await;
    match result {
        Ok(ns) => Ok(Held {
            ns,
            keeper: builder,
            _lifeline: life_w,
        }),
        Err(e) => {
            builder.signal(libc::SIGKILL);
            let _ = builder.wait().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where no template can be built, `get` says why once and answers `None` ever after,
    /// so that every cell of that variant falls back to a root built from scratch.
    #[tokio::test]
    async fn a_template_that_cannot_be_built_falls_back_and_says_so_once() {
        let spawner = Spawner::start(false, false).unwrap();
        let base = Base::from_host();
        let templates = Templates::default();
        let mut failures = Vec::new();
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        for _ in 0..3 {
            let got = templates
                .get(
                    Variant { workspace: false },
                    || {
                        build(
                            &spawner,
                            &base,
                            c"/nonexistent",
                            Variant { workspace: false },
                            [null(), null(), null()],
                            |_| Err(Error::invalid("no keeper in this test")),
                        )
                    },
                    |e| failures.push(e.to_string()),
                )
                .await;
            assert!(got.is_none());
        }
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("template"), "{failures:?}");
        assert_eq!(templates.built(), 0);
    }
}
