//! Real components, built by this test from `plugins/examples` for `wasm32-wasip2`, packed,
//! verified and run: the example counts words in a workspace file; a package whose
//! component, manifest or publisher is not what it claims is refused before anything is
//! compiled; and the hostile plugin's attempts (endless loops, sleeping, hoarding memory,
//! flooding stdout, writing without a write grant, reading host files, connecting to
//! undeclared addresses, answering garbage) each end in their own clear error or are
//! simply not possible, with nothing written.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use aura_core::door::SeededEntropy;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_plugin::package::{self, PackageError};
use aura_plugin::{
    Capabilities, Grant, Limits, PluginManifest, RunError, Runtime, WorkspaceAccess,
};
use serde_json::json;

/// The examples' components, built once per test process into the target directory.
fn component(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/debug/deps/<test binary>: the target directory is three levels up.
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().join("wasm-plugins");
        let manifest =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples/Cargo.toml");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                "wasm32-wasip2",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the example plugins failed (is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2/release")
    });
    std::fs::read(dir.join(format!("{name}.wasm"))).unwrap()
}

fn publisher(seed: u64) -> Signer {
    Signer::ephemeral("publisher", &SeededEntropy::new(seed)).unwrap()
}

fn manifest(name: &str, signer: &Signer, workspace: WorkspaceAccess) -> PluginManifest {
    PluginManifest {
        name: name.into(),
        version: "1.0.0".into(),
        description: format!("the {name} example"),
        publisher: signer.public_key(),
        component_sha256: Hash::ZERO,
        component_size: 1,
        capabilities: Capabilities {
            workspace,
            hosts: Vec::new(),
        },
        limits: Limits {
            fuel: 200_000_000,
            memory_bytes: 32 << 20,
            timeout_ms: 2_000,
            output_bytes: 64 << 10,
        },
        input_schema: json!({"type": "object"}),
    }
}

fn packed(dir: &Path, wasm: &str, m: PluginManifest, signer: &Signer) -> PathBuf {
    let out = dir.join(&m.name);
    package::pack(&component(wasm), m, signer, &out).unwrap();
    out
}

fn runtime() -> Runtime {
    Runtime::new().unwrap()
}

#[tokio::test]
async fn the_example_counts_words_in_a_workspace_file_and_saves_them_when_granted_write() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = publisher(1);
    let dir = packed(
        tmp.path(),
        "wordcount",
        manifest("wordcount", &signer, WorkspaceAccess::Write),
        &signer,
    );
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("notes.txt"), "one two three\nfour five\n").unwrap();

    let pkg = package::open(&dir, &[signer.public_key()]).unwrap();
    assert_eq!(pkg.manifest.statement.tool_name(), "plugin.wordcount");
    let rt = runtime();
    let plugin = rt.load(&pkg).unwrap();
    let read_only = Grant {
        workspace: Some((ws.clone(), WorkspaceAccess::Read)),
        network: false,
    };
    let out = rt
        .call(&plugin, &json!({"path": "notes.txt"}), &read_only)
        .await
        .unwrap();
    assert_eq!(
        out.answer,
        json!({"path": "notes.txt", "lines": 2, "words": 5, "bytes": 24})
    );
    assert!(out.fuel_used > 0);

    // Saving needs write: the read-only grant refuses it (the plugin says why), and the
    // file does not appear; with a write grant it does.
    let err = rt
        .call(
            &plugin,
            &json!({"path": "notes.txt", "save_to": "counts.json"}),
            &read_only,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Exit { code: 1, stderr } if stderr.contains("cannot write counts.json")),
        "{err}"
    );
    assert!(!ws.join("counts.json").exists());
    let write = Grant {
        workspace: Some((ws.clone(), WorkspaceAccess::Write)),
        network: false,
    };
    rt.call(
        &plugin,
        &json!({"path": "notes.txt", "save_to": "counts.json"}),
        &write,
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.join("counts.json")).unwrap(),
        r#"{"path":"notes.txt","lines":2,"words":5,"bytes":24}"#
    );

    // No workspace granted: nothing is mounted.
    let err = rt
        .call(&plugin, &json!({"path": "notes.txt"}), &Grant::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Exit { code: 1, .. }), "{err}");
}

#[tokio::test]
async fn a_package_that_is_not_what_it_claims_is_refused_before_it_is_compiled() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = publisher(2);
    let dir = packed(
        tmp.path(),
        "wordcount",
        manifest("wordcount", &signer, WorkspaceAccess::Read),
        &signer,
    );
    let trusted = [signer.public_key()];
    package::open(&dir, &trusted).unwrap();

    // An untrusted publisher.
    let stranger = publisher(3);
    let err = package::open(&dir, &[stranger.public_key()]).unwrap_err();
    assert!(matches!(err, PackageError::Untrusted(_)), "{err}");
    assert!(err.to_string().contains("aura plugin trust"), "{err}");

    // One flipped byte in the component.
    let wasm = dir.join(package::COMPONENT_FILE);
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&wasm, &bytes).unwrap();
    let err = package::open(&dir, &trusted).unwrap_err();
    assert!(matches!(err, PackageError::Tampered { .. }), "{err}");
    bytes[100] ^= 0x40;
    std::fs::write(&wasm, &bytes).unwrap();

    // The manifest edited after signing (a capability raised): the signature fails.
    let json_path = dir.join(package::MANIFEST_FILE);
    let original = std::fs::read_to_string(&json_path).unwrap();
    std::fs::write(&json_path, original.replace("\"read\"", "\"write\"")).unwrap();
    let err = package::open(&dir, &trusted).unwrap_err();
    assert!(matches!(err, PackageError::Signature(_)), "{err}");

    // Not JSON, an unknown member, a manifest signed by someone other than its publisher.
    std::fs::write(&json_path, "{not json").unwrap();
    assert!(matches!(
        package::open(&dir, &trusted).unwrap_err(),
        PackageError::Manifest(_)
    ));
    std::fs::write(&json_path, original.replacen('{', "{\"extra\":1,", 1)).unwrap();
    assert!(matches!(
        package::open(&dir, &trusted).unwrap_err(),
        PackageError::Manifest(_)
    ));
    let forged = package::pack(
        &component("wordcount"),
        manifest("wordcount", &signer, WorkspaceAccess::Read),
        &stranger,
        &tmp.path().join("forged"),
    );
    assert!(matches!(forged, Err(PackageError::Signature(_))));

    // A component that is not a WASI command fails to load with a clear error.
    let signer4 = publisher(4);
    let junk = tmp.path().join("junk");
    package::pack(
        b"\0asm\x01\0\0\0",
        manifest("junk", &signer4, WorkspaceAccess::None),
        &signer4,
        &junk,
    )
    .unwrap();
    let pkg = package::open(&junk, &[signer4.public_key()]).unwrap();
    let err = runtime().load(&pkg).unwrap_err();
    assert!(matches!(err, RunError::Load(_)), "{err}");
}

#[tokio::test]
async fn the_hostile_plugin_hits_every_limit_with_its_own_error_and_gets_nothing_it_was_not_granted()
 {
    let tmp = tempfile::tempdir().unwrap();
    let signer = publisher(5);
    let mut m = manifest("hostile", &signer, WorkspaceAccess::Read);
    m.capabilities.hosts = vec!["127.0.0.1:9".into()];
    let dir = packed(tmp.path(), "hostile", m, &signer);
    let rt = runtime();
    let plugin = rt
        .load(&package::open(&dir, &[signer.public_key()]).unwrap())
        .unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let grant = Grant {
        workspace: Some((ws.clone(), WorkspaceAccess::Write)),
        network: true,
    };
    let call = async |what: &str, extra: serde_json::Value| {
        let mut input = json!({"do": what});
        if let serde_json::Value::Object(more) = extra {
            input.as_object_mut().unwrap().extend(more);
        }
        rt.call(&plugin, &input, &grant).await
    };

    assert!(matches!(
        call("spin", json!({})).await,
        Err(RunError::OutOfFuel(_))
    ));
    let err = call("allocate", json!({})).await.unwrap_err();
    assert!(matches!(err, RunError::Memory(_)), "{err}");
    let started = std::time::Instant::now();
    let err = call("sleep", json!({})).await.unwrap_err();
    assert!(matches!(err, RunError::Timeout(2000)), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let err = call("flood", json!({})).await.unwrap_err();
    assert!(
        matches!(err, RunError::Trap { .. } | RunError::Exit { .. }),
        "{err}"
    );
    assert!(matches!(
        call("garbage", json!({})).await,
        Err(RunError::Answer(_))
    ));
    let err = call("fail", json!({})).await.unwrap_err();
    assert!(
        // WASI preview 2 carries only success or failure, not the number.
        matches!(&err, RunError::Exit { code: 1, stderr } if stderr.contains("failing on purpose")),
        "{err}"
    );

    // The manifest declares read only: a write grant does not raise it.
    assert!(call("write", json!({})).await.is_err());
    assert!(!ws.join("planted.txt").exists());
    // Nothing of the host outside the workspace is visible.
    assert_eq!(
        call("escape", json!({})).await.unwrap().answer,
        json!({"read_host_file": false})
    );

    // Connections: only to the declared address, and only with the network granted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let undeclared = listener.local_addr().unwrap().to_string();
    assert_eq!(
        call("connect", json!({"addr": undeclared}))
            .await
            .unwrap()
            .answer,
        json!({"connected": false})
    );
    let signer6 = publisher(6);
    let mut m = manifest("dialer", &signer6, WorkspaceAccess::None);
    m.capabilities.hosts = vec![undeclared.clone()];
    let dialer = rt
        .load(
            &package::open(
                &packed(tmp.path(), "hostile", m, &signer6),
                &[signer6.public_key()],
            )
            .unwrap(),
        )
        .unwrap();
    let input = json!({"do": "connect", "addr": undeclared});
    assert_eq!(
        rt.call(&dialer, &input, &grant).await.unwrap().answer,
        json!({"connected": true})
    );
    assert_eq!(
        rt.call(&dialer, &input, &Grant::default())
            .await
            .unwrap()
            .answer,
        json!({"connected": false}),
        "no network granted"
    );
}

#[test]
fn the_manifest_encoding_is_canonical_and_pinned() {
    // A test vector: the signing message's digest of a fixed manifest. A change to the
    // encoding must change the kind (`plugin-manifest/v2`), never this.
    use aura_core::signed::Statement as _;
    let signer = publisher(7);
    let mut m = manifest("vector", &signer, WorkspaceAccess::Read);
    m.component_sha256 = Hash::sha256(b"component");
    m.component_size = 9;
    m.capabilities.hosts = vec!["example.org:443".into()];
    m.input_schema = json!({"type": "object", "properties": {"b": {}, "a": {}}});
    let bytes = m.to_bytes().unwrap();
    let back = PluginManifest::from_bytes(&bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(
        m.digest().unwrap().to_hex(),
        "be205ba39338bc4e2bfbb2c55d521339588c2da250197c15494dd2c81a97a6d2",
        "the digest of the test vector"
    );
    // Rules the encoding cannot express are refused before signing.
    let mut bad = m.clone();
    bad.name = "Bad Name".into();
    assert!(bad.to_bytes().is_err());
    let mut bad = m;
    bad.limits.fuel = 0;
    assert!(bad.to_bytes().is_err());
    // Truncated or trailing bytes never decode, and never panic.
    for cut in 0..bytes.len() {
        assert!(PluginManifest::from_bytes(&bytes[..cut]).is_err());
    }
    let mut longer = bytes;
    longer.push(0);
    assert!(PluginManifest::from_bytes(&longer).is_err());
}

mod hostile_bytes {
    //! The manifest's readers on hostile bytes (the fuzz target `plugin_manifest` runs the
    //! same properties for longer): any mutation of a valid encoding or JSON file is refused
    //! or read back canonically, and never panics.
    use super::*;
    use aura_core::signed::{Signed, Statement as _};
    use proptest::prelude::*;

    fn valid() -> (Vec<u8>, Vec<u8>) {
        let signer = publisher(8);
        let mut m = manifest("fuzzed", &signer, WorkspaceAccess::Write);
        m.capabilities.hosts = vec!["example.org:443".into(), "10.0.0.1:80".into()];
        m.component_sha256 = Hash::sha256(b"x");
        let bytes = m.to_bytes().unwrap();
        let json = Signed::sign(m, &signer).unwrap().to_json().unwrap();
        (bytes, json)
    }

    proptest! {
        #[test]
        fn mutated_manifests_are_refused_or_read_back_canonically(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
            json_side in any::<bool>(),
        ) {
            let (bytes, json) = valid();
            let mut data = if json_side { json } else { bytes };
            for (at, value) in flips {
                let i = at % data.len();
                data[i] = value;
            }
            data.truncate(data.len() - cut % 4);
            if let Ok(m) = PluginManifest::from_bytes(&data) {
                prop_assert_eq!(m.to_bytes().unwrap(), data.clone());
            }
            if let Ok(signed) = Signed::<PluginManifest>::from_json(&data) {
                let _ = signed.verify_signature();
            }
        }
    }
}
