//! A node's workspaces (needs root): private to the cells' root, bounded by a quota that
//! a cell cannot write past, mounted again after a reboot, and old ones adopted.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use aura_cell::{RunSpec, WorkspaceOptions, Workspaces};

/// Unmounts the test's workspaces even when an assertion fails.
struct Release<'a>(&'a Workspaces);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release_all();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn is_mount_point(p: &Path) -> bool {
    std::fs::metadata(p).unwrap().dev() != std::fs::metadata(p.parent().unwrap()).unwrap().dev()
}

#[tokio::test(flavor = "multi_thread")]
async fn root_workspaces_are_private_and_belong_to_the_cells_root() {
    let c = common::cells().await;
    let base = c.rt.options().id_base;
    let w = Workspaces::new(WorkspaceOptions {
        root: c.dir.path().join("workspaces"),
        owner: Some((base, base)),
        quota: None,
    })
    .unwrap();
    let ws = w.ensure("team-a", "build").unwrap();
    assert_eq!(ws, c.dir.path().join("workspaces/team-a/build"));
    assert_eq!(mode(&ws), 0o700);
    assert_eq!(owner(&ws), (base, base));
    assert_eq!(mode(ws.parent().unwrap()), 0o700);
    assert_eq!(owner(ws.parent().unwrap()), (0, 0));
    // A cell runs there as its root, which is host uid `base`.
    let out =
        c.rt.run(RunSpec::shell("id -u; mkdir d && touch d/f").workspace(&ws))
            .await
            .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    assert_eq!(out.stdout_text().trim(), "0");
    assert_eq!(owner(&ws.join("d/f")), (base, base));
    // Names, not paths.
    for (ns, name) in [("team-a", "../../etc"), ("team-a", "/etc"), ("..", "x")] {
        assert!(w.ensure(ns, name).is_err(), "{ns} {name}");
    }
    c.finish().await;
}

/// Workspaces had no disk quota: a cell wrote 734 MB in a quarter of a second onto the
/// disk that holds the ledger. Now each workspace is a file system of the quota's size,
/// and a cell that writes past it gets ENOSPC in its own workspace.
#[tokio::test(flavor = "multi_thread")]
async fn root_a_workspace_quota_stops_a_cell_filling_the_nodes_disk() {
    let c = common::cells().await;
    let base = c.rt.options().id_base;
    let quota = 16 << 20;
    let w = Workspaces::new(WorkspaceOptions {
        root: c.dir.path().join("workspaces"),
        owner: Some((base, base)),
        quota: Some(quota),
    })
    .unwrap();
    let _release = Release(&w);
    let ws = w.ensure("team-a", "hog").unwrap();
    assert!(
        is_mount_point(&ws),
        "the workspace is not its own file system"
    );
    assert_eq!(mode(&ws), 0o700);
    assert_eq!(owner(&ws), (base, base));
    assert!(!ws.join("lost+found").exists());
    // Ready: the second call only looks.
    assert_eq!(w.ensure("team-a", "hog").unwrap(), ws);

    let out =
        c.rt.run(
            RunSpec::shell("dd if=/dev/zero of=big bs=1M count=64 2>&1; echo rc=$?").workspace(&ws),
        )
        .await
        .unwrap();
    let text = out.stdout_text();
    assert!(text.contains("No space left on device"), "{text}");
    assert!(!text.contains("rc=0"), "{text}");
    let written = std::fs::metadata(ws.join("big")).unwrap().len();
    assert!(
        written <= quota,
        "{written} bytes written past a {quota}-byte quota"
    );
    // The image on the node's disk holds at most the quota.
    let image = c.dir.path().join("workspaces/.images/team-a/hog.img");
    let on_disk = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(on_disk <= quota, "{on_disk}");
    assert_eq!(mode(image.parent().unwrap()), 0o700);

    // After a reboot (unmounted), the next use mounts it again, with its files.
    std::fs::write(ws.join("kept"), "x").unwrap();
    assert_eq!(w.release_all(), 1);
    assert!(!is_mount_point(&ws));
    assert!(!ws.join("kept").exists());
    w.ensure_dir(&ws).unwrap();
    assert!(is_mount_point(&ws));
    assert_eq!(std::fs::read_to_string(ws.join("kept")).unwrap(), "x");
    // A quota too small for a file system is refused up front.
    assert!(
        Workspaces::new(WorkspaceOptions {
            root: c.dir.path().join("w2"),
            owner: Some((base, base)),
            quota: Some(1 << 20),
        })
        .is_err()
    );
    drop(_release);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = c.dir.path().to_str().unwrap();
    assert!(
        !mounts.contains(root),
        "a workspace stayed mounted: {mounts}"
    );
    c.finish().await;
}

/// A workspace made before cells owned their workspaces, or filled by an operator before
/// its mission (0755, the host root's, files of the ids cells had inside), keeps working:
/// private, its files moved into the cells' ids, setuid bits swept; with a quota its files
/// are copied into its new file system, neither hidden under it nor exempt from it.
#[tokio::test(flavor = "multi_thread")]
async fn root_an_old_workspace_is_adopted() {
    let c = common::cells().await;
    let base = c.rt.options().id_base;
    for quota in [None, Some(16 << 20)] {
        let root = c.dir.path().join(format!("w-{}", quota.is_some()));
        let old = root.join("default/m1");
        std::fs::create_dir_all(old.join("sub")).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(old.join("by-root"), "x").unwrap();
        std::fs::write(old.join("sub/by-1000"), "x").unwrap();
        std::os::unix::fs::chown(old.join("sub/by-1000"), Some(1000), Some(1000)).unwrap();
        std::fs::copy("/usr/bin/id", old.join("suid")).unwrap();
        std::fs::set_permissions(old.join("suid"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        let w = Workspaces::new(WorkspaceOptions {
            root: root.clone(),
            owner: Some((base, base)),
            quota,
        })
        .unwrap();
        let _release = Release(&w);
        assert_eq!(w.ensure("default", "m1").unwrap(), old);
        assert_eq!(is_mount_point(&old), quota.is_some());
        assert_eq!(mode(&old), 0o700);
        assert_eq!(owner(&old), (base, base));
        assert_eq!(owner(&old.join("by-root")), (base, base));
        assert_eq!(owner(&old.join("sub/by-1000")), (base + 1000, base + 1000));
        assert_eq!(mode(&old.join("suid")), 0o755);
        let out =
            c.rt.run(RunSpec::shell("echo y >> by-root && stat -c %u sub/by-1000").workspace(&old))
                .await
                .unwrap();
        assert!(out.success(), "{}", out.stderr_text());
        assert_eq!(out.stdout_text().trim(), "1000");
    }
    // Files past the quota are refused loudly, and the workspace is left as it was.
    let root = c.dir.path().join("w-big");
    let big = root.join("default/big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("blob"), vec![7u8; 24 << 20]).unwrap();
    let w = Workspaces::new(WorkspaceOptions {
        root: root.clone(),
        owner: Some((base, base)),
        quota: Some(16 << 20),
    })
    .unwrap();
    let _release = Release(&w);
    let err = w.ensure("default", "big").unwrap_err();
    assert!(err.to_string().contains("more than its quota"), "{err}");
    assert!(err.hint().unwrap().contains("workspace_quota"), "{err}");
    assert!(!is_mount_point(&big));
    assert_eq!(std::fs::metadata(big.join("blob")).unwrap().len(), 24 << 20);
    assert!(!root.join(".images/default/big.img").exists());
    drop(_release);
    c.finish().await;
}
