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

mod as_a_tool {
    //! A plugin as the tool `plugin.<name>` behind aura-tools' registry: its arguments are
    //! checked against the manifest's schema, its target names the plugin and what it
    //! declares, the registry's token check stands in front of it, and every runtime
    //! failure is a failed effect with its own kind and a one-line reason.
    use std::sync::Arc;

    use super::*;
    use aura_core::{AgentId, MissionId, Timestamp};
    use aura_identity::{ExecutionToken, Namespace, Signed, TokenId, TrustSet};
    use aura_plugin::PluginTool;
    use aura_tools::{
        Call, ErrorKind, Limits as ToolLimits, NetworkGrant, Outcome, Registry, Target, ToolContext,
    };

    fn context(node: &Signer, ws: &Path, tools: &[&str]) -> ToolContext {
        let token = ExecutionToken {
            id: TokenId::from_bytes([9; 16]),
            mission: MissionId::from_bytes([5; 16]),
            agent: AgentId::from_bytes([3; 16]),
            namespace: Namespace::new("team-a").unwrap(),
            tools: tools.iter().map(|s| (*s).to_owned()).collect(),
            issued_at: Timestamp::from_secs(1_800_000_000),
            expires_at: Timestamp::from_secs(1_800_003_600),
            issuer: node.public_key(),
        };
        ToolContext {
            mission: MissionId::from_bytes([5; 16]),
            agent: AgentId::from_bytes([3; 16]),
            namespace: Namespace::new("team-a").unwrap(),
            workspace: ws.to_owned(),
            token: Some(Signed::sign(token, node).unwrap()),
            trust: TrustSet::new([node.public_key()]),
            now: Timestamp::from_secs(1_800_000_010),
            mission_active: true,
            network: NetworkGrant::default(),
            limits: ToolLimits::default(),
            heartbeat: None,
        }
    }

    fn call(tool: &str, arguments: serde_json::Value) -> Call {
        Call {
            id: "c1".into(),
            tool: tool.into(),
            arguments,
        }
    }

    fn failure(effect: &aura_tools::Effect) -> (ErrorKind, String) {
        match &effect.outcome {
            Outcome::Failed { kind, message } => (*kind, message.clone()),
            Outcome::Ok { value } => panic!("expected a failure, got {value}"),
        }
    }

    #[tokio::test]
    async fn calls_are_checked_judged_by_target_and_their_failures_are_clear_effects() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = publisher(20);
        let node = publisher(21);
        let mut m = manifest("wordcount", &signer, WorkspaceAccess::Read);
        m.input_schema = json!({
            "type": "object",
            "properties": {"path": {"type": "string"}, "save_to": {"type": "string"}},
            "required": ["path"],
            "additionalProperties": false
        });
        let wc = package::open(
            &packed(tmp.path(), "wordcount", m, &signer),
            &[signer.public_key()],
        )
        .unwrap();
        let mut h = manifest("hostile", &signer, WorkspaceAccess::Read);
        h.input_schema = json!({"type": "object", "required": ["do"]});
        let hostile = package::open(
            &packed(tmp.path(), "hostile", h, &signer),
            &[signer.public_key()],
        )
        .unwrap();
        let rt = runtime();
        let mut registry = Registry::new();
        registry
            .register(Arc::new(PluginTool::new(rt.clone(), &wc).unwrap()))
            .unwrap();
        registry
            .register(Arc::new(PluginTool::new(rt, &hostile).unwrap()))
            .unwrap();
        let d = registry
            .get("plugin.wordcount")
            .unwrap()
            .descriptor()
            .clone();
        assert_eq!(d.needs, aura_tools::Capability::Plugin);
        assert!(!d.destructive, "a read-only plugin destroys nothing");

        let ws = tmp.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        std::fs::write(ws.join("notes.txt"), "one two three\n").unwrap();
        let ctx = context(&node, &ws, &["plugin.wordcount", "plugin.hostile"]);

        // Arguments that do not fit the schema are refused before policy or the plugin.
        for (args, why) in [
            (json!({}), "`path` is required"),
            (json!({"path": 3}), "expected string"),
            (
                json!({"path": "a", "shell": "rm"}),
                "`shell` is not an argument",
            ),
            (json!("notes.txt"), "must be a JSON object"),
        ] {
            let err = registry
                .prepare(&call("plugin.wordcount", args))
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArguments, "{err}");
            assert!(err.message.contains(why), "{err}");
        }

        // The target names the plugin, its publisher, digest and declared capabilities.
        let prepared = registry
            .prepare(&call("plugin.wordcount", json!({"path": "notes.txt"})))
            .unwrap();
        assert_eq!(
            prepared.target,
            Target::Plugin {
                name: "wordcount".into(),
                version: "1.0.0".into(),
                publisher: signer.public_key().to_hex(),
                digest: wc.digest.to_hex(),
                workspace: "read".into(),
                hosts: vec![],
            }
        );
        let done = registry.execute(&ctx, &prepared).await;
        assert_eq!(
            done.outcome,
            Outcome::Ok {
                value: json!({"path": "notes.txt", "lines": 1, "words": 3, "bytes": 14})
            }
        );

        // No token for the plugin: it never runs.
        let other = context(&node, &ws, &["fs.read"]);
        let (kind, _) = failure(&registry.execute(&other, &prepared).await);
        assert_eq!(kind, ErrorKind::Unauthorized);

        // Each escape attempt is a failed effect with its reason, and nothing panics.
        let run = async |args: serde_json::Value| {
            let p = registry.prepare(&call("plugin.hostile", args)).unwrap();
            failure(&registry.execute(&ctx, &p).await)
        };
        let (kind, msg) = run(json!({"do": "spin"})).await;
        assert_eq!(kind, ErrorKind::TooLarge);
        assert!(
            msg.contains("plugin.hostile: the plugin ran out of fuel"),
            "{msg}"
        );
        let (kind, msg) = run(json!({"do": "allocate"})).await;
        assert_eq!(kind, ErrorKind::TooLarge);
        assert!(
            msg.contains("more than its 33554432 bytes of memory"),
            "{msg}"
        );
        let (kind, msg) = run(json!({"do": "read", "path": "/etc/passwd"})).await;
        assert_eq!(kind, ErrorKind::Unavailable);
        assert!(msg.contains("cannot read /etc/passwd"), "{msg}");
        let (_, msg) = run(json!({"do": "read", "path": "/workspace/../../etc/passwd"})).await;
        assert!(msg.contains("cannot read"), "{msg}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (_, msg) = run(json!({"do": "dial", "addr": addr})).await;
        assert!(msg.contains("cannot connect to"), "{msg}");
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "nothing connected");
        let (kind, msg) = run(json!({"do": "write"})).await;
        assert_eq!(kind, ErrorKind::Unavailable, "{msg}");
        assert!(msg.starts_with("plugin.hostile: the plugin"), "{msg}");
        assert!(!ws.join("planted.txt").exists());
        let (_, msg) = run(json!({"do": "garbage"})).await;
        assert!(msg.contains("not JSON"), "{msg}");
        // And the plugin still answers after all that.
        let p = registry
            .prepare(&call("plugin.hostile", json!({"do": "hello"})))
            .unwrap();
        assert_eq!(
            registry.execute(&ctx, &p).await.outcome,
            Outcome::Ok {
                value: json!({"echo": "hello"})
            }
        );
    }

    #[test]
    fn installed_plugins_are_verified_when_installed_and_again_when_opened() {
        use aura_plugin::installed::{Error, Installed};
        let tmp = tempfile::tempdir().unwrap();
        let signer = publisher(30);
        let src = packed(
            tmp.path(),
            "wordcount",
            manifest("wordcount", &signer, WorkspaceAccess::Read),
            &signer,
        );
        let node = Installed::new(tmp.path().join("home/plugins"));
        let installed = || node.dir().join("installed/wordcount");

        // An untrusted publisher's package is refused and nothing is written.
        let err = node.install(&src, false).unwrap_err();
        assert!(
            matches!(err, Error::Package(PackageError::Untrusted(_))),
            "{err}"
        );
        assert!(!installed().exists());
        assert!(node.open_all().unwrap().is_empty());

        assert!(node.trust(signer.public_key(), "acme").unwrap());
        assert!(
            !node.trust(signer.public_key(), "acme tools").unwrap(),
            "trusted again: renamed"
        );
        assert_eq!(node.publishers().unwrap()[0].name, "acme tools");

        // A tampered copy and an unsigned (edited) manifest are refused.
        let tampered = tmp.path().join("tampered");
        std::fs::create_dir(&tampered).unwrap();
        let mut wasm = std::fs::read(src.join(package::COMPONENT_FILE)).unwrap();
        wasm[200] ^= 1;
        std::fs::write(tampered.join(package::COMPONENT_FILE), &wasm).unwrap();
        std::fs::copy(
            src.join(package::MANIFEST_FILE),
            tampered.join(package::MANIFEST_FILE),
        )
        .unwrap();
        let err = node.install(&tampered, false).unwrap_err();
        assert!(
            matches!(err, Error::Package(PackageError::Tampered { .. })),
            "{err}"
        );
        let json_text = std::fs::read_to_string(src.join(package::MANIFEST_FILE)).unwrap();
        let sig_at = json_text.find("\"signature\"").unwrap();
        let unsigned = tmp.path().join("unsigned");
        std::fs::create_dir(&unsigned).unwrap();
        std::fs::copy(
            src.join(package::COMPONENT_FILE),
            unsigned.join(package::COMPONENT_FILE),
        )
        .unwrap();
        let mut forged = json_text.clone();
        forged.replace_range(
            sig_at + 13..sig_at + 15,
            if &json_text[sig_at + 13..sig_at + 15] == "00" {
                "11"
            } else {
                "00"
            },
        );
        std::fs::write(unsigned.join(package::MANIFEST_FILE), forged).unwrap();
        let err = node.install(&unsigned, false).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Package(PackageError::Signature(_) | PackageError::Manifest(_))
            ),
            "{err}"
        );
        assert!(!installed().exists());

        // The genuine package installs once; again only with replace.
        let pkg = node.install(&src, false).unwrap();
        assert_eq!(pkg.manifest.statement.name, "wordcount");
        assert!(matches!(node.install(&src, false), Err(Error::Exists(_))));
        node.install(&src, true).unwrap();
        let all = node.open_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.as_ref().unwrap().digest, pkg.digest);

        // Changed on disk after install: refused when opened.
        std::fs::write(installed().join(package::COMPONENT_FILE), &wasm).unwrap();
        assert!(matches!(
            node.open_all().unwrap()[0].1,
            Err(PackageError::Tampered { .. })
        ));
        node.install(&src, true).unwrap();

        // Revoking the publisher refuses its installed plugin from then on.
        assert!(node.untrust(&signer.public_key()).unwrap());
        assert!(!node.untrust(&signer.public_key()).unwrap());
        assert!(matches!(
            node.open_all().unwrap()[0].1,
            Err(PackageError::Untrusted(_))
        ));

        node.remove("wordcount").unwrap();
        assert!(!installed().exists());
        assert!(matches!(
            node.remove("wordcount"),
            Err(Error::NotInstalled(_))
        ));
        assert!(matches!(node.remove("../home"), Err(Error::BadName(_))));

        // A damaged list of publishers is an error, not an empty trust.
        std::fs::write(node.dir().join("publishers.json"), "{\"format\": 1").unwrap();
        assert!(matches!(node.trusted_keys(), Err(Error::Publishers { .. })));
    }
}
