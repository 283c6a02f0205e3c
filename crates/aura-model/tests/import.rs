//! Importing models: what a package records, and bad sources refused with nothing left
//! behind.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::fs;
use std::io::Write as _;
use std::path::Path;

use aura_model::import::{self, Options, SourceKind};
use aura_model::manifest::{ExpertLayout, FileRole, Format, PackageKind};
use aura_model::{ModelFiles, no_progress};
use common::{World, dense_dir, moe_dir, pack_dir, tiny_gguf, write_gguf};

/// Only the packages' directories: no staging leftovers.
fn package_dirs(w: &World) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(w.home().join("models"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn wheel(path: &Path, members: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn a_gguf_file_becomes_a_package() {
    let w = World::new();
    let src = write_gguf(&w.src(), "Tiny-Model.Q4_1.gguf", 1);
    let pkg = w.import(&src, &Options::default());
    assert_eq!(pkg.name, "tiny-model.q4_1");
    let m = pkg.manifest();
    assert_eq!(m.kind, PackageKind::Model);
    assert_eq!(m.format, Format::Gguf);
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.quantization, "Q4_1");
    assert_eq!(m.license, "apache-2.0");
    assert_eq!(m.publisher, w.node_key.public_key());
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].sha256, aura_core::Hash::sha256(&tiny_gguf(1)));
    assert_eq!(m.tensors.len(), 3);
    assert!(m.tensors.iter().all(|t| t.file == 0));
    assert!(m.experts.is_none());
    // Read-only files in a private tree.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.home().join("models")), 0o700);
    assert_eq!(mode(&pkg.dir.join("files/Tiny-Model.Q4_1.gguf")), 0o444);
    assert_eq!(mode(&pkg.dir.join("manifest.aura")), 0o444);
    // The same name cannot be imported twice.
    let plan = import::plan(&src, &Options::default()).unwrap();
    let err = w
        .registry
        .import(
            &plan,
            &Options::default(),
            &w.ctx(&w.node_key),
            w.node(),
            &no_progress,
        )
        .unwrap_err();
    assert!(err.to_string().contains("already installed"), "{err}");
}

#[test]
fn a_safetensors_directory_becomes_a_package() {
    let w = World::new();
    let dir = dense_dir(&w.src());
    let plan = import::plan(&dir, &Options::default()).unwrap();
    assert_eq!(plan.source_kind(), SourceKind::SafetensorsDir);
    assert_eq!(plan.skipped, vec!["README.md".to_owned()]);
    let pkg = w.import(&dir, &Options::default());
    let m = pkg.manifest();
    assert_eq!(m.format, Format::Safetensors);
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.quantization, "BF16");
    let roles: Vec<(&str, FileRole)> = m.files.iter().map(|f| (f.path.as_str(), f.role)).collect();
    assert_eq!(
        roles,
        vec![
            ("config.json", FileRole::Config),
            ("model-00001-of-00002.safetensors", FileRole::Weights),
            ("model-00002-of-00002.safetensors", FileRole::Weights),
            ("model.safetensors.index.json", FileRole::Index),
            ("tokenizer.json", FileRole::Tokenizer),
        ]
    );
    let norm = m
        .tensors
        .iter()
        .find(|t| t.name == "model.norm.weight")
        .unwrap();
    assert_eq!(
        m.files[norm.file as usize].path,
        "model-00002-of-00002.safetensors"
    );
    assert_eq!(norm.shape, vec![8]);
}

#[test]
fn an_index_that_disagrees_with_the_shards_is_refused() {
    let w = World::new();
    let dir = dense_dir(&w.src());
    fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map":{"model.norm.weight":"model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let plan = import::plan(&dir, &Options::default()).unwrap();
    let err = import::import(
        w.registry.packages(),
        &plan,
        &Options::default(),
        &w.ctx(&w.node_key),
        &no_progress,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("places `model.norm.weight`"),
        "{err}"
    );
    assert!(package_dirs(&w).is_empty(), "{:?}", package_dirs(&w));
}

#[test]
fn a_wheel_carrying_a_gguf_file_becomes_a_package() {
    let w = World::new();
    let path = w.src().join("llm_tiny-0.1.0-py3-none-any.whl");
    wheel(
        &path,
        &[
            ("llm_tiny/__init__.py", b"" as &[u8]),
            ("llm_tiny/Tiny.Q4_1.gguf", &tiny_gguf(4)),
        ],
    );
    let plan = import::plan(&path, &Options::default()).unwrap();
    assert_eq!(plan.source_kind(), SourceKind::Wheel);
    assert_eq!(plan.name(), "tiny.q4_1");
    let expected = aura_core::Hash::sha256(&tiny_gguf(4));
    // A wrong expected hash is refused before anything is installed.
    let wrong = Options {
        expect_sha256: Some(aura_core::Hash::sha256(b"other")),
        ..Options::default()
    };
    let err = import::import(
        w.registry.packages(),
        &plan,
        &wrong,
        &w.ctx(&w.node_key),
        &no_progress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not the expected"), "{err}");
    assert!(package_dirs(&w).is_empty());
    let right = Options {
        expect_sha256: Some(expected),
        ..Options::default()
    };
    let pkg = w.import(&path, &right);
    assert_eq!(pkg.manifest().files[0].path, "Tiny.Q4_1.gguf");
    assert_eq!(pkg.manifest().files[0].sha256, expected);
    let v = w
        .registry
        .packages()
        .load("tiny.q4_1", None, &no_progress)
        .unwrap();
    assert!(matches!(v.files(), ModelFiles::Gguf(_)));
}

#[test]
fn wheels_without_exactly_one_gguf_are_refused() {
    let w = World::new();
    let none = w.src().join("none.whl");
    wheel(&none, &[("a.py", b"")]);
    assert!(
        import::plan(&none, &Options::default())
            .unwrap_err()
            .to_string()
            .contains("no .gguf")
    );
    let two = w.src().join("two.whl");
    wheel(
        &two,
        &[("a.gguf", &tiny_gguf(1)), ("b.gguf", &tiny_gguf(2))],
    );
    assert!(
        import::plan(&two, &Options::default())
            .unwrap_err()
            .to_string()
            .contains("2 .gguf files")
    );
    let junk = w.src().join("junk.whl");
    fs::write(&junk, b"PK\x03\x04 and then nothing").unwrap();
    assert!(import::plan(&junk, &Options::default()).is_err());
}

#[test]
fn hostile_and_unknown_files_are_refused_and_leave_nothing() {
    let w = World::new();
    let src = w.src();
    let text = src.join("notes.txt");
    fs::write(&text, "hello").unwrap();
    assert!(
        import::plan(&text, &Options::default())
            .unwrap_err()
            .to_string()
            .contains("not a GGUF file")
    );
    // A GGUF whose tensor claims more bytes than the file has.
    let mut bad = tiny_gguf(1);
    bad.truncate(bad.len() - 7);
    let bad_path = src.join("bad.gguf");
    fs::write(&bad_path, &bad).unwrap();
    let plan = import::plan(&bad_path, &Options::default()).unwrap();
    let err = import::import(
        w.registry.packages(),
        &plan,
        &Options::default(),
        &w.ctx(&w.node_key),
        &no_progress,
    )
    .unwrap_err();
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(chain.contains("beyond the end of the file"), "{chain}");
    assert!(package_dirs(&w).is_empty(), "{:?}", package_dirs(&w));
    // Names are checked.
    let err = import::plan(
        &write_gguf(&src, "x.gguf", 1),
        &Options {
            name: Some("../evil".into()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot be a package name"),
        "{err}"
    );
}

#[test]
fn a_mixture_of_experts_records_which_experts_live_where() {
    let w = World::new();
    let src = w.src();
    let pkg = w.import(
        &moe_dir(&src, "mix-local", &[0, 1, 2, 3]),
        &Options::default(),
    );
    let x = pkg.manifest().experts.clone().unwrap();
    assert_eq!(
        (x.count, x.per_token, x.layout),
        (4, 2, ExpertLayout::Split)
    );
    assert_eq!(x.placement.len(), 1);
    let shard = &pkg.manifest().files[x.placement[0].file as usize];
    assert_eq!(shard.path, "model-00002-of-00002.safetensors");
    assert_eq!(x.placement[0].experts, vec![0, 1, 2, 3]);

    // Experts missing from the model and not given as packs: refused.
    let plan = import::plan(&moe_dir(&src, "mix-half", &[0, 1]), &Options::default()).unwrap();
    let err = import::import(
        w.registry.packages(),
        &plan,
        &Options::default(),
        &w.ctx(&w.node_key),
        &no_progress,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("experts [2, 3] are in no file"),
        "{err}"
    );

    // Expert packs hold only expert weights.
    let not_a_pack = dense_dir(&src);
    let plan = import::plan(
        &not_a_pack,
        &Options {
            expert_pack: true,
            ..Options::default()
        },
    )
    .unwrap();
    let err = import::import(
        w.registry.packages(),
        &plan,
        &Options {
            expert_pack: true,
            ..Options::default()
        },
        &w.ctx(&w.node_key),
        &no_progress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not an expert's weight"), "{err}");
}

#[test]
fn a_model_assembled_from_expert_packs_loads_every_shard() {
    let w = World::new();
    let src = w.src();
    let alice = common::key("alice", 8);
    let pack_opts = Options {
        expert_pack: true,
        ..Options::default()
    };
    let (pa, _) = w
        .import_as(&pack_dir(&src, "pack-a", &[0, 1], 1), &pack_opts, &alice)
        .unwrap();
    let mix = w.import(
        &moe_dir(&src, "mix-b", &[2, 3]),
        &Options {
            expert_packs: vec![pa.digest().to_hex()[..12].to_owned()],
            ..Options::default()
        },
    );
    let refs = &mix.manifest().expert_packs;
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].owner, alice.public_key());
    assert_eq!(refs[0].experts, vec![0, 1]);
    let v = w
        .registry
        .packages()
        .load("mix-b", None, &no_progress)
        .unwrap();
    let ModelFiles::Safetensors { weights, .. } = v.files() else {
        panic!()
    };
    assert_eq!(weights.len(), 3, "{weights:?}");
    assert!(weights[2].ends_with("pack-a/files/experts.safetensors"));

    // A damaged pack stops the model from loading, naming the pack.
    let p = pa.dir.join("files/experts.safetensors");
    common::writable(&p);
    let mut bytes = fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    fs::write(&p, bytes).unwrap();
    let err = w
        .registry
        .packages()
        .load("mix-b", None, &no_progress)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("package `pack-a` failed verification"),
        "{err}"
    );
    assert_eq!(err.http_status(), 409);

    // A removed pack too.
    import::remove(w.registry.packages(), "pack-a", &w.entropy).unwrap();
    let err = w
        .registry
        .packages()
        .load("mix-b", None, &no_progress)
        .unwrap_err();
    assert!(
        err.to_string().contains("needs expert pack `pack-a`"),
        "{err}"
    );
    // An expert pack alone is not a model.
    let (_, _) = w
        .import_as(&pack_dir(&src, "pack-c", &[0], 2), &pack_opts, &alice)
        .unwrap();
    let err = w
        .registry
        .packages()
        .load("pack-c", None, &no_progress)
        .unwrap_err();
    assert!(err.to_string().contains("is an expert pack"), "{err}");
}

#[test]
fn removing_a_package_leaves_nothing() {
    let w = World::new();
    let pkg = w.import(&write_gguf(&w.src(), "gone.gguf", 1), &Options::default());
    assert_eq!(package_dirs(&w), vec!["gone".to_owned()]);
    import::remove(w.registry.packages(), &pkg.name, &w.entropy).unwrap();
    assert!(package_dirs(&w).is_empty(), "{:?}", package_dirs(&w));
    assert!(import::remove(w.registry.packages(), "gone", &w.entropy).is_err());
}
