//! The real `aura` binary: a node refuses a ledger cut back below the checkpoint it
//! published; checkpoints as signed notes; one node witnessing another's checkpoints; and
//! exports carrying cosignatures, checked against newer heads from elsewhere.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::{Path, PathBuf};

use support::{Aura, note};

fn append(a: &Aura, n: usize, text: &str) {
    for i in 0..n {
        a.run_in(&["ledger", "append"], &note("node", &format!("{text} {i}")))
            .ok();
    }
}

fn file(a: &Aura, name: &str) -> PathBuf {
    a.dir.path().join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Regression (security item 11): a ledger cut back to an earlier checkpoint on disk
/// verified locally and the node started on it as if nothing had happened.
#[test]
fn serve_refuses_a_ledger_cut_back_below_the_checkpoint_it_published() {
    let a = Aura::new();
    a.init();
    append(&a, 2, "early");
    let db = a.home().join("ledger.db");
    let old = file(&a, "ledger-old.db");
    std::fs::copy(&db, &old).unwrap();
    append(&a, 3, "late");
    let published = a.home().join("published").join("checkpoint.note");
    assert!(
        std::fs::read_to_string(&published)
            .unwrap()
            .contains("\n5\n")
    );

    std::fs::copy(&old, &db).unwrap();
    let before = a.snapshot();
    let out = a
        .run(&["serve", "--listen", "127.0.0.1:0"])
        .one_line_error(1);
    assert!(
        out.stderr.contains(
            "the ledger was cut back: it holds 2 entries, but this node published a checkpoint of 5"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: restore the newest copy"),
        "{}",
        out.stderr
    );
    let out = a
        .run_in(&["ledger", "append"], &note("node", "more"))
        .one_line_error(1);
    assert!(out.stderr.contains("cut back"), "{}", out.stderr);
    // Refusing changed nothing.
    assert_eq!(a.snapshot(), before);
    // Verification says so too, as a verification failure.
    let out = a.run(&["ledger", "verify"]).one_line_error(3);
    assert!(
        out.stderr.contains("the ledger was cut back"),
        "{}",
        out.stderr
    );

    // Moving the published checkpoint away accepts the older ledger on purpose.
    std::fs::rename(&published, file(&a, "published-moved.note")).unwrap();
    append(&a, 1, "after");
    a.run(&["ledger", "verify"]).ok();
}

#[test]
fn the_checkpoint_as_a_signed_note() {
    let a = Aura::new();
    a.init();
    append(&a, 3, "x");
    let out = a.run(&["ledger", "checkpoint", "--note"]).ok();
    let key = a.public_key();
    let node = a.run(&["--json", "key", "show"]).ok().json()["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], format!("aura.node/{node}"));
    assert_eq!(lines[1], "3");
    assert_eq!(lines[3], "");
    assert_eq!(lines.len(), 6, "{}", out.stdout);
    assert!(lines[4].starts_with(&format!("\u{2014} aura.node/{node} ")));
    let json = a
        .run(&["--json", "ledger", "checkpoint", "--note"])
        .ok()
        .json();
    let vkey = json["vkey"].as_str().unwrap();
    assert!(vkey.starts_with(&format!("aura.node/{node}+")), "{vkey}");
    // The note is a head to check the ledger against.
    let head = file(&a, "head.note");
    std::fs::write(&head, &out.stdout).unwrap();
    a.run(&["ledger", "verify", "--checkpoint", s(&head)]).ok();
    let bundle = file(&a, "b.bundle");
    a.run(&["ledger", "export", "-o", s(&bundle)]).ok();
    let elsewhere = Aura::new();
    let ok = elsewhere
        .run(&[
            "ledger",
            "verify",
            "--bundle",
            s(&bundle),
            "--public-key",
            &key,
            "--checkpoint",
            s(&head),
        ])
        .ok();
    assert!(
        ok.stdout.contains("agrees with the checkpoint in"),
        "{}",
        ok.stdout
    );
}

#[test]
fn a_witness_cosigns_a_nodes_checkpoints_and_a_cut_back_export_is_caught() {
    let log = Aura::new();
    log.init();
    let w = Aura::new();
    w.init();
    let key = log.public_key();
    let vkey = w
        .run(&[
            "--json",
            "ledger",
            "witness",
            "init",
            "--name",
            "witness.example/w1",
        ])
        .ok()
        .json()["vkey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(vkey.starts_with("witness.example/w1+"), "{vkey}");
    w.run(&["ledger", "witness", "add-log", "--public-key", &key])
        .ok();

    // The first cosignature: old 0.
    append(&log, 2, "a");
    let req = file(&log, "req");
    let cosigned = file(&w, "cosigned");
    log.run(&["ledger", "witness", "request", "-o", s(&req)])
        .ok();
    w.run(&["ledger", "witness", "cosign", s(&req), "-o", s(&cosigned)])
        .ok();
    log.run(&["ledger", "witness", "attach", s(&cosigned)]).ok();

    // A stale request is refused with the witness's size in the hint.
    append(&log, 2, "b");
    log.run(&["ledger", "witness", "request", "-o", s(&req)])
        .ok();
    let out = w
        .run(&["ledger", "witness", "cosign", s(&req)])
        .one_line_error(1);
    assert!(out.stderr.contains("--old 2"), "{}", out.stderr);
    log.run(&["ledger", "witness", "request", "--old", "2", "-o", s(&req)])
        .ok();
    let out = w.run(&["ledger", "witness", "cosign", s(&req)]).ok();
    std::fs::write(&cosigned, &out.stdout).unwrap();
    log.run(&["ledger", "witness", "attach", s(&cosigned)]).ok();

    // The export carries both cosignatures; a verifier trusting the witness checks them.
    let bundle = file(&log, "b4.bundle");
    log.run(&["ledger", "export", "-o", s(&bundle)]).ok();
    let elsewhere = Aura::new();
    let verify = |bundle: &Path, extra: &[&str]| {
        let mut args = vec![
            "ledger",
            "verify",
            "--bundle",
            s(bundle),
            "--public-key",
            &key,
        ];
        args.extend_from_slice(extra);
        elsewhere.run(&args)
    };
    let ok = verify(&bundle, &["--witness-key", &vkey]).ok();
    assert_eq!(
        ok.stdout.matches("cosigned by witness.example/w1").count(),
        2,
        "{}",
        ok.stdout
    );
    let ok = verify(&bundle, &[]).ok();
    assert!(
        ok.stdout.contains("2 cosignatures by witnesses not given"),
        "{}",
        ok.stdout
    );

    // The node grows; the witness cosigns the newer head. The old export is now a
    // cut-back view, which the witness's latest head catches.
    append(&log, 3, "c");
    log.run(&["ledger", "witness", "request", "--old", "4", "-o", s(&req)])
        .ok();
    w.run(&["ledger", "witness", "cosign", s(&req), "-o", s(&cosigned)])
        .ok();
    log.run(&["ledger", "witness", "attach", s(&cosigned)]).ok();
    let origin = format!(
        "aura.node/{}",
        log.run(&["--json", "key", "show"]).ok().json()["node_id"]
            .as_str()
            .unwrap()
    );
    let latest = file(&w, "latest.note");
    let out = w.run(&["ledger", "witness", "latest", &origin]).ok();
    std::fs::write(&latest, &out.stdout).unwrap();
    let out = verify(
        &bundle,
        &["--witness-key", &vkey, "--checkpoint", s(&latest)],
    )
    .one_line_error(3);
    assert!(
        out.stderr.contains("the ledger was cut back")
            && out.stderr.contains("cosigned by witness.example/w1")
            && out
                .stderr
                .contains("a tree of 7 entries, but this ledger ends after 4"),
        "{}",
        out.stderr
    );

    // The node restores its old ledger, gives up its published checkpoint, and writes
    // another history: the witness refuses to cosign it.
    let forked = Aura::new();
    copy_dir(&log.home(), &forked.home());
    std::fs::remove_file(forked.home().join("published/checkpoint.note")).unwrap();
    let db = forked.home().join("ledger.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Cut back to 4 entries, as an old copy would be.
    conn.execute_batch(
        "DELETE FROM entries WHERE idx >= 4; DELETE FROM checkpoints WHERE tree_size > 4;
         DELETE FROM merkle_tiles; UPDATE heads SET seq = 4,
         hash = (SELECT hash FROM entries WHERE idx = 3);",
    )
    .unwrap();
    drop(conn);
    // The cosignature of 7 entries it kept shows the cut.
    let out = forked.run(&["ledger", "verify"]).one_line_error(3);
    assert!(
        out.stderr.contains("cut back") && out.stderr.contains("7.note"),
        "{}",
        out.stderr
    );
    append(&forked, 4, "other");
    // Its export refuses to carry a cosignature of another history.
    let out = forked
        .run(&["ledger", "export", "-o", s(&file(&forked, "f.bundle"))])
        .one_line_error(1);
    assert!(out.stderr.contains("refusing to export"), "{}", out.stderr);
    forked
        .run(&["ledger", "witness", "request", "--old", "7", "-o", s(&req)])
        .ok();
    let out = w
        .run(&["ledger", "witness", "cosign", s(&req)])
        .one_line_error(3);
    assert!(out.stderr.contains("refused to cosign"), "{}", out.stderr);
    // The witness still stands at 7.
    let logs = w.run(&["--json", "ledger", "witness", "logs"]).ok().json();
    assert_eq!(logs[0]["size"], 7);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
