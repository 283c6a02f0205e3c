//! The file tools: confinement (`..`, absolute paths, symbolic links pointing out or
//! inside, a link swapped in during the call by a racing thread, FIFOs), limits, and
//! compensations that restore every byte.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aura_tools::{Compensation, Effect, ErrorKind, Limits, Registry, ToolContext};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::json;
use support::{World, builtin, call, read, run};

fn kind(effect: &Effect) -> Option<ErrorKind> {
    effect.error_kind()
}

fn message(effect: &Effect) -> String {
    match &effect.outcome {
        aura_tools::Outcome::Failed { message, .. } => message.clone(),
        aura_tools::Outcome::Ok { .. } => String::new(),
    }
}

async fn compensate(registry: &Registry, ctx: &ToolContext, effect: &Effect) {
    let comp = effect.compensation.as_ref().expect("a compensation");
    registry.compensate(ctx, &effect.tool, comp).await.unwrap();
}

#[tokio::test]
async fn read_write_list_delete() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();

    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "notes/today.txt", "content": "héllo"}),
    )
    .await;
    assert!(e.is_ok(), "{e:?}");
    assert_eq!(e.value().unwrap()["created"], true);
    assert_eq!(read(&w.ws("notes/today.txt")).unwrap(), "héllo".as_bytes());

    let e = run(&r, &ctx, "fs.read", json!({"path": "./notes//today.txt"})).await;
    let v = e.value().unwrap();
    assert_eq!(v["content"], "héllo");
    assert_eq!(v["path"], "notes/today.txt");
    assert_eq!(v["truncated"], false);
    assert_eq!(v["size"], 6);

    let e = run(
        &r,
        &ctx,
        "fs.read",
        json!({"path": "notes/today.txt", "encoding": "base64"}),
    )
    .await;
    assert_eq!(e.value().unwrap()["content"], STANDARD.encode("héllo"));

    std::fs::write(w.ws("b.bin"), [0xff, 0x00, 0xfe]).unwrap();
    let e = run(&r, &ctx, "fs.list", json!({})).await;
    let v = e.value().unwrap();
    assert_eq!(
        v["entries"],
        json!([
            {"name": "b.bin", "type": "file", "size": 3},
            {"name": "notes", "type": "dir"},
        ])
    );

    // Bytes that are not UTF-8 need base64, and the error says so.
    let e = run(&r, &ctx, "fs.read", json!({"path": "b.bin"})).await;
    assert_eq!(kind(&e), Some(ErrorKind::InvalidArguments));
    assert!(message(&e).contains("base64"), "{}", message(&e));

    let e = run(&r, &ctx, "fs.delete", json!({"path": "b.bin"})).await;
    assert!(e.is_ok(), "{e:?}");
    assert!(!w.ws("b.bin").exists());

    let e = run(&r, &ctx, "fs.read", json!({"path": "b.bin"})).await;
    assert_eq!(kind(&e), Some(ErrorKind::NotFound));
    let e = run(&r, &ctx, "fs.delete", json!({"path": "notes"})).await;
    assert_eq!(kind(&e), Some(ErrorKind::WrongType));
    let e = run(&r, &ctx, "fs.read", json!({"path": "notes"})).await;
    assert_eq!(kind(&e), Some(ErrorKind::WrongType));
    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "notes", "content": "x"}),
    )
    .await;
    assert_eq!(kind(&e), Some(ErrorKind::WrongType));
    assert!(w.ws("notes").is_dir());
}

/// Lexical escapes are refused while preparing, before policy is even asked.
#[test]
fn dot_dot_and_absolute_paths_are_refused_when_preparing() {
    let r = builtin();
    let cases = [
        ("fs.read", json!({"path": "../outside/secret"})),
        ("fs.read", json!({"path": "a/../../outside/secret"})),
        ("fs.read", json!({"path": "a/.."})),
        ("fs.read", json!({"path": "/etc/passwd"})),
        (
            "fs.write",
            json!({"path": "../outside/new", "content": "x"}),
        ),
        ("fs.write", json!({"path": "/tmp/new", "content": "x"})),
        ("fs.delete", json!({"path": "../outside/secret"})),
        ("fs.list", json!({"path": ".."})),
        ("fs.list", json!({"path": "/"})),
    ];
    for (tool, args) in cases {
        let err = r.prepare(&call(tool, args.clone())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Confinement, "{tool} {args}: {err}");
        assert!(err.message.starts_with(tool), "{err}");
    }
    let err = r
        .prepare(&call("fs.read", json!({"path": "a\u{0}b"})))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArguments, "{err}");
}

/// Symbolic links are never followed: not out of the workspace, not to its parent, not
/// even to a file inside it (a documented choice).
#[tokio::test]
async fn symbolic_links_are_refused() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    std::fs::write(w.ws("real.txt"), b"inside").unwrap();
    std::fs::create_dir(w.ws("dir")).unwrap();
    symlink(w.outside().join("secret"), w.ws("abs-out")).unwrap();
    symlink("../outside/secret", w.ws("rel-out")).unwrap();
    symlink("..", w.ws("parent")).unwrap();
    symlink("../outside", w.ws("outdir")).unwrap();
    symlink("real.txt", w.ws("inside-link")).unwrap();
    symlink("dir", w.ws("inside-dir")).unwrap();
    symlink("/", w.ws("root")).unwrap();

    let paths = [
        "abs-out",
        "rel-out",
        "parent/outside/secret",
        "outdir/secret",
        "inside-link",
        "inside-dir/x",
        "root/etc/passwd",
    ];
    for path in paths {
        for (tool, args) in [
            ("fs.read", json!({"path": path})),
            ("fs.write", json!({"path": path, "content": "pwned"})),
            ("fs.delete", json!({"path": path})),
        ] {
            let e = run(&r, &ctx, tool, args).await;
            assert_eq!(
                kind(&e),
                Some(ErrorKind::Confinement),
                "{tool} {path}: {e:?}"
            );
            assert!(message(&e).contains("symbolic link"), "{}", message(&e));
        }
    }
    for path in ["parent", "outdir", "inside-dir", "root"] {
        let e = run(&r, &ctx, "fs.list", json!({"path": path})).await;
        assert_eq!(
            kind(&e),
            Some(ErrorKind::Confinement),
            "fs.list {path}: {e:?}"
        );
    }
    // Writing through a link to a directory that does not exist yet must not create it.
    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "outdir/newdir/f", "content": "x"}),
    )
    .await;
    assert_eq!(kind(&e), Some(ErrorKind::Confinement), "{e:?}");

    // Nothing outside changed, the links are intact, and the listing shows them as links.
    assert_eq!(
        read(&w.outside().join("secret")).unwrap(),
        b"outside secret"
    );
    assert_eq!(std::fs::read_dir(w.outside()).unwrap().count(), 1);
    assert_eq!(read(&w.ws("real.txt")).unwrap(), b"inside");
    let e = run(&r, &ctx, "fs.list", json!({"path": "."})).await;
    let entries = e.value().unwrap()["entries"].as_array().unwrap().clone();
    let link = entries.iter().find(|x| x["name"] == "inside-link").unwrap();
    assert_eq!(link["type"], "symlink");
}

/// A hard link to a file outside the workspace (which no cell can make, but a host
/// might have left) is not written through.
#[tokio::test]
async fn files_with_other_hard_links_are_not_rewritten() {
    let w = World::new();
    let r = builtin();
    std::fs::hard_link(w.outside().join("secret"), w.ws("linked")).unwrap();
    let e = run(
        &r,
        &w.ctx(),
        "fs.write",
        json!({"path": "linked", "content": "pwned"}),
    )
    .await;
    assert_eq!(kind(&e), Some(ErrorKind::Confinement), "{e:?}");
    assert!(message(&e).contains("hard links"), "{}", message(&e));
    assert_eq!(
        read(&w.outside().join("secret")).unwrap(),
        b"outside secret"
    );
}

/// FIFOs and other special files are refused without blocking.
#[tokio::test]
async fn special_files_are_refused_without_blocking() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        w.ws("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let call = async {
        for (tool, args) in [
            ("fs.read", json!({"path": "pipe"})),
            ("fs.write", json!({"path": "pipe", "content": "x"})),
            ("fs.delete", json!({"path": "pipe"})),
        ] {
            let e = run(&r, &ctx, tool, args).await;
            assert_eq!(kind(&e), Some(ErrorKind::WrongType), "{tool}: {e:?}");
            assert!(message(&e).contains("FIFO"), "{}", message(&e));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .expect("a FIFO blocked a file tool");
    assert!(w.ws("pipe").exists());
}

/// Device files are refused before they are opened for real work. Creating one needs
/// root (CI runs as root); without it this test fails rather than skipping silently.
#[tokio::test]
async fn device_files_are_refused_needs_root() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    // A character device with the numbers of /dev/null (1, 3).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        w.ws("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("creating a device node needs root: run this test as root, as CI does");
    for (tool, args) in [
        ("fs.read", json!({"path": "null"})),
        ("fs.write", json!({"path": "null", "content": "x"})),
        ("fs.delete", json!({"path": "null"})),
    ] {
        let e = run(&r, &ctx, tool, args).await;
        assert_eq!(kind(&e), Some(ErrorKind::WrongType), "{tool}: {e:?}");
        assert!(message(&e).contains("character device"), "{}", message(&e));
    }
    assert!(w.ws("null").exists());
}

/// The file tools ran as the node (root) and left root's files in the workspace, which the
/// mission's commands (a cell's root, an unprivileged host uid) could then not change.
/// What they create now belongs to the workspace's owner.
#[tokio::test]
async fn what_the_tools_create_belongs_to_the_workspace_owner_needs_root() {
    use std::os::unix::fs::MetadataExt as _;
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    let owner = 1_000_000_000;
    std::os::unix::fs::chown(w.ws(""), Some(owner), Some(owner))
        .expect("giving the workspace away needs root: run this test as root, as CI does");
    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "new/dir/file.txt", "content": "x", "create_parents": true}),
    )
    .await;
    assert!(e.is_ok(), "{e:?}");
    for p in ["new", "new/dir", "new/dir/file.txt"] {
        let m = std::fs::metadata(w.ws(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (owner, owner), "{p}");
    }
}

/// A racing thread swaps a directory inside the workspace with a symbolic link to a
/// directory outside it, over and over, while file calls go through the directory. Each
/// call either works on the real directory or is refused; none ever reads or writes
/// outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_during_the_call_cannot_redirect_it() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    std::fs::create_dir(w.ws("sub")).unwrap();
    std::fs::write(w.ws("sub/file"), b"inside").unwrap();
    std::fs::write(w.outside().join("file"), b"outside secret").unwrap();
    symlink("../outside", w.ws("swap")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let ws = w.workspace();
        std::thread::spawn(move || {
            let dir = rustix::fs::open(
                &ws,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    &dir,
                    "sub",
                    &dir,
                    "swap",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };

    let (mut worked, mut refused) = (0u32, 0u32);
    for i in 0..4000 {
        let e = run(&r, &ctx, "fs.read", json!({"path": "sub/file"})).await;
        match e.value() {
            Some(v) => {
                assert_eq!(v["content"], "inside", "read outside the workspace");
                worked += 1;
            }
            None => {
                assert_eq!(kind(&e), Some(ErrorKind::Confinement), "{e:?}");
                refused += 1;
            }
        }
        let e = run(
            &r,
            &ctx,
            "fs.write",
            json!({"path": format!("sub/new{}", i % 4), "content": "w"}),
        )
        .await;
        assert!(
            e.is_ok() || kind(&e) == Some(ErrorKind::Confinement),
            "{e:?}"
        );
        if i >= 1000 && worked > 20 && refused > 20 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    eprintln!("race: {worked} reads worked, {refused} refused, {swaps} swaps");
    assert!(
        worked > 0 && refused > 0,
        "the race was not exercised: {worked} worked, {refused} refused"
    );
    // Outside: only what was there.
    let mut names: Vec<String> = std::fs::read_dir(w.outside())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["file", "secret"]);
    assert_eq!(read(&w.outside().join("file")).unwrap(), b"outside secret");
}

#[tokio::test]
async fn limits_are_enforced_and_change_nothing() {
    let w = World::new();
    let r = builtin();
    let mut ctx = w.ctx();
    ctx.limits = Limits {
        read_bytes: 8,
        write_bytes: 16,
        list_entries: 3,
        ..Limits::default()
    };
    std::fs::write(w.ws("big"), vec![b'a'; 17]).unwrap();
    std::fs::write(w.ws("text"), "abcdefgé-tail").unwrap();

    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "new", "content": "x".repeat(17)}),
    )
    .await;
    assert_eq!(kind(&e), Some(ErrorKind::TooLarge));
    assert!(!w.ws("new").exists());

    // The old content would not fit in the effect, so replacing or removing is refused.
    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "big", "content": "small"}),
    )
    .await;
    assert_eq!(kind(&e), Some(ErrorKind::TooLarge), "{e:?}");
    let e = run(&r, &ctx, "fs.delete", json!({"path": "big"})).await;
    assert_eq!(kind(&e), Some(ErrorKind::TooLarge), "{e:?}");
    assert_eq!(read(&w.ws("big")).unwrap(), vec![b'a'; 17]);

    // Reads are cut at the limit, never inside a character, and can go on from an offset.
    let e = run(&r, &ctx, "fs.read", json!({"path": "text"})).await;
    let v = e.value().unwrap();
    assert_eq!(
        (
            v["content"].as_str().unwrap(),
            v["truncated"].as_bool().unwrap()
        ),
        ("abcdefg", true)
    );
    let e = run(
        &r,
        &ctx,
        "fs.read",
        json!({"path": "text", "offset": 7, "max_bytes": 100}),
    )
    .await;
    let v = e.value().unwrap();
    assert_eq!(v["content"], "é-tail");
    assert_eq!(v["truncated"], false);

    for i in 0..5 {
        std::fs::write(w.ws(&format!("f{i}")), "").unwrap();
    }
    let e = run(&r, &ctx, "fs.list", json!({})).await;
    let v = e.value().unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    assert_eq!(v["truncated"], true);

    let long = "a/".repeat(3000);
    let e = r
        .prepare(&call("fs.read", json!({"path": long})))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge);
}

#[tokio::test]
async fn overwriting_and_compensating_restores_the_exact_bytes() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    let original: Vec<u8> = (0..=255u8).rev().collect();
    std::fs::write(w.ws("data.bin"), &original).unwrap();
    std::fs::set_permissions(w.ws("data.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "data.bin", "content": "new"}),
    )
    .await;
    assert_eq!(e.value().unwrap()["created"], false);
    assert_eq!(read(&w.ws("data.bin")).unwrap(), b"new");
    // The effect goes through the ledger as JSON: compensate from the decoded copy.
    let recorded = Effect::from_json(&e.to_json()).unwrap();
    assert_eq!(recorded, e);
    compensate(&r, &ctx, &recorded).await;
    assert_eq!(read(&w.ws("data.bin")).unwrap(), original);
    // In place: the file keeps its mode.
    let mode = std::fs::metadata(w.ws("data.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Idempotent.
    compensate(&r, &ctx, &recorded).await;
    assert_eq!(read(&w.ws("data.bin")).unwrap(), original);
}

#[tokio::test]
async fn a_new_file_and_its_new_directories_are_removed_by_compensation() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    std::fs::create_dir(w.ws("a")).unwrap();
    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "a/b/c/new.txt", "content": "x"}),
    )
    .await;
    assert!(e.is_ok(), "{e:?}");
    match e.compensation.as_ref().unwrap() {
        Compensation::RestoreFile {
            previous,
            created_dirs,
            ..
        } => {
            assert_eq!(previous, &None);
            assert_eq!(created_dirs, &["a/b", "a/b/c"]);
        }
        other => panic!("{other:?}"),
    }
    compensate(&r, &ctx, &e).await;
    assert!(!w.ws("a/b").exists());
    assert!(
        w.ws("a").is_dir(),
        "a directory that existed before must stay"
    );
    compensate(&r, &ctx, &e).await;

    // Without create_parents a missing directory is an error, and nothing is created.
    let e = run(
        &r,
        &ctx,
        "fs.write",
        json!({"path": "x/y.txt", "content": "x", "create_parents": false}),
    )
    .await;
    assert_eq!(kind(&e), Some(ErrorKind::NotFound));
    assert!(!w.ws("x").exists());
}

#[tokio::test]
async fn a_deleted_file_is_restored_with_its_bytes_and_mode() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    std::fs::create_dir(w.ws("d")).unwrap();
    let bytes = b"\x00\x01binary\xff".to_vec();
    std::fs::write(w.ws("d/f"), &bytes).unwrap();
    std::fs::set_permissions(w.ws("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = run(&r, &ctx, "fs.delete", json!({"path": "d/f"})).await;
    assert!(e.is_ok(), "{e:?}");
    assert!(!w.ws("d/f").exists());
    // Even if the directory went too, compensation puts both back.
    std::fs::remove_dir(w.ws("d")).unwrap();
    let recorded = Effect::from_json(&e.to_json()).unwrap();
    compensate(&r, &ctx, &recorded).await;
    assert_eq!(read(&w.ws("d/f")).unwrap(), bytes);
    let mode = std::fs::metadata(w.ws("d/f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

/// A recorded compensation is input too: one whose path was tampered with to point
/// outside is refused like any call.
#[tokio::test]
async fn tampered_compensations_stay_confined() {
    let w = World::new();
    let r = builtin();
    let ctx = w.ctx();
    symlink("../outside", w.ws("out")).unwrap();
    for path in ["../outside/secret", "/etc/passwd", "out/secret"] {
        let comp = Compensation::RestoreFile {
            path: path.to_owned(),
            previous: None,
            created_dirs: Vec::new(),
            mode: None,
        };
        let err = r.compensate(&ctx, "fs.write", &comp).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Confinement, "{path}: {err}");
        let comp = Compensation::RestoreFile {
            path: path.to_owned(),
            previous: Some(b"pwned".to_vec()),
            created_dirs: Vec::new(),
            mode: None,
        };
        let err = r.compensate(&ctx, "fs.delete", &comp).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Confinement, "{path}: {err}");
    }
    assert_eq!(
        read(&w.outside().join("secret")).unwrap(),
        b"outside secret"
    );
    // A command compensation handed to a file tool is refused, not misread.
    let err = r
        .compensate(
            &ctx,
            "fs.write",
            &Compensation::Command {
                command: "rm -rf /".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArguments);
}

#[tokio::test]
async fn a_missing_workspace_fails_closed() {
    let w = World::new();
    let r = builtin();
    let mut ctx = w.ctx();
    ctx.workspace = w.dir.path().join("nope");
    let e = run(&r, &ctx, "fs.write", json!({"path": "f", "content": "x"})).await;
    assert_eq!(kind(&e), Some(ErrorKind::Unavailable), "{e:?}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the old and new contents, write-then-compensate and
    /// delete-then-compensate leave the file exactly as it was.
    #[test]
    fn compensation_round_trips(
        previous in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..2048)),
        new in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let w = World::new();
        let r = builtin();
        let ctx = w.ctx();
        let path = w.ws("f.bin");
        if let Some(p) = &previous {
            std::fs::write(&path, p).unwrap();
        }
        runtime().block_on(async {
            let e = run(&r, &ctx, "fs.write", json!({
                "path": "f.bin", "content": STANDARD.encode(&new), "encoding": "base64"
            })).await;
            prop_assert!(e.is_ok(), "{:?}", e);
            prop_assert_eq!(read(&path).unwrap(), new.clone());
            let recorded = Effect::from_json(&e.to_json()).unwrap();
            compensate(&r, &ctx, &recorded).await;
            prop_assert_eq!(read(&path), previous.clone());

            if previous.is_some() {
                let e = run(&r, &ctx, "fs.delete", json!({"path": "f.bin"})).await;
                prop_assert!(e.is_ok(), "{:?}", e);
                prop_assert!(!path.exists());
                let recorded = Effect::from_json(&e.to_json()).unwrap();
                compensate(&r, &ctx, &recorded).await;
                prop_assert_eq!(read(&path), previous.clone());
            }
            Ok(())
        })?;
    }
}

/// Every file tool runs through one helper (`fs::run`), which parses the call again under
/// the node's own limits and makes the outcome the call's effect; this table holds all
/// four to it: a path within the preparing limit but over the node's is refused when the
/// call runs, by every tool alike, with the effect naming the tool and the call, and
/// nothing in the workspace changes.
#[tokio::test]
async fn every_file_tool_holds_its_path_to_the_nodes_limit_when_it_runs() {
    let w = World::new();
    let r = builtin();
    let mut ctx = w.ctx();
    ctx.limits = Limits {
        path_bytes: 8,
        ..Limits::default()
    };
    let long = "abcdefghijklmnop";
    std::fs::write(w.ws(long), "kept").unwrap();
    for (tool, arguments) in [
        ("fs.read", json!({ "path": long })),
        ("fs.write", json!({ "path": long, "content": "new" })),
        ("fs.list", json!({ "path": long })),
        ("fs.delete", json!({ "path": long })),
    ] {
        let e = run(&r, &ctx, tool, arguments).await;
        assert_eq!(kind(&e), Some(ErrorKind::TooLarge), "{tool}: {e:?}");
        assert!(message(&e).starts_with(&format!("{tool}: ")), "{e:?}");
        assert_eq!((e.tool.as_str(), e.call_id.as_str()), (tool, "c1"), "{e:?}");
        assert_eq!(e.compensation, None, "{tool}");
    }
    assert_eq!(read(&w.ws(long)).unwrap(), b"kept");
}
