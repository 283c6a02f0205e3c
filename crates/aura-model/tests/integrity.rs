//! Package integrity: one test per defect. Each damaged package is refused with that
//! defect named, HTTP 409, and no files handed out for loading.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use aura_model::import::Options;
use aura_model::package::{Defect, Error, FILES_DIR, MANIFEST_FILE};
use aura_model::{ModelFiles, VerifyCache, no_progress};
use common::{World, dense_dir, writable, write_gguf};

/// A world with a GGUF package `tiny` and a two-shard safetensors package `dense`.
fn world() -> (World, PathBuf, PathBuf) {
    let w = World::new();
    let gguf = write_gguf(&w.src(), "tiny.gguf", 1);
    let tiny = w.import(
        &gguf,
        &Options {
            name: Some("tiny".into()),
            ..Options::default()
        },
    );
    let dense = w.import(&dense_dir(&w.src()), &Options::default());
    (w, tiny.dir, dense.dir)
}

/// The package is refused with exactly `expect`, as a conflict (409), and nothing is
/// handed to the engine.
fn refused(w: &World, name: &str, expect: Defect) {
    let err = w
        .registry
        .packages()
        .load(name, None, &no_progress)
        .unwrap_err();
    assert_eq!(err.http_status(), 409, "{err}");
    assert_eq!(err.code(), "package_integrity_failed");
    let Error::Integrity(e) = &err else {
        panic!("expected an integrity error, got {err}")
    };
    assert_eq!(e.defects, vec![expect.clone()], "{err}");
    assert!(err.to_string().contains(&expect.to_string()), "{err}");
    // `aura model verify` takes the same path from the name alone.
    let again = w
        .registry
        .packages()
        .verify_name(name, &no_progress)
        .unwrap_err();
    assert_eq!(again.defects, vec![expect]);
}

fn file(dir: &std::path::Path, rel: &str) -> PathBuf {
    let p = dir.join(FILES_DIR).join(rel);
    writable(&p);
    p
}

#[test]
fn intact_packages_load() {
    let (w, tiny, dense) = world();
    let v = w
        .registry
        .packages()
        .load("tiny", None, &no_progress)
        .unwrap();
    assert_eq!(
        v.files(),
        &ModelFiles::Gguf(tiny.join(FILES_DIR).join("tiny.gguf"))
    );
    // A directory import is named after its directory.
    let v = w
        .registry
        .packages()
        .load("dense-model", None, &no_progress)
        .unwrap();
    let ModelFiles::Safetensors {
        config,
        tokenizer,
        weights,
    } = v.files()
    else {
        panic!("{:?}", v.files())
    };
    assert_eq!(config, &dense.join("files/config.json"));
    assert_eq!(tokenizer, &dense.join("files/tokenizer.json"));
    assert_eq!(weights.len(), 2);
    // By digest prefix too.
    let digest = v.digest().to_hex();
    let by_digest = w
        .registry
        .packages()
        .load(&digest[..10], None, &no_progress)
        .unwrap();
    assert_eq!(by_digest.digest(), v.digest());
}

#[test]
fn a_flipped_bit_is_refused() {
    let (w, tiny, _) = world();
    let p = file(&tiny, "tiny.gguf");
    let mut bytes = fs::read(&p).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x04;
    fs::write(&p, bytes).unwrap();
    refused(
        &w,
        "tiny",
        Defect::Modified {
            path: "tiny.gguf".into(),
        },
    );
}

#[test]
fn a_truncated_file_is_refused() {
    let (w, tiny, _) = world();
    let p = file(&tiny, "tiny.gguf");
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    refused(
        &w,
        "tiny",
        Defect::Truncated {
            path: "tiny.gguf".into(),
            expected: len,
            found: len - 100,
        },
    );
}

#[test]
fn bytes_appended_to_a_file_are_refused() {
    let (w, tiny, _) = world();
    let p = file(&tiny, "tiny.gguf");
    let len = fs::metadata(&p).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, b"more").unwrap();
    refused(
        &w,
        "tiny",
        Defect::Grown {
            path: "tiny.gguf".into(),
            expected: len,
            found: len + 4,
        },
    );
}

#[test]
fn swapped_shards_are_refused() {
    let (w, _, dense) = world();
    let a = file(&dense, "model-00001-of-00002.safetensors");
    let b = file(&dense, "model-00002-of-00002.safetensors");
    let tmp = dense.join("files/tmp");
    fs::rename(&a, &tmp).unwrap();
    fs::rename(&b, &a).unwrap();
    fs::rename(&tmp, &b).unwrap();
    refused(
        &w,
        "dense-model",
        Defect::Swapped {
            a: "model-00001-of-00002.safetensors".into(),
            b: "model-00002-of-00002.safetensors".into(),
        },
    );
}

#[test]
fn a_file_replaced_by_another_files_content_is_refused() {
    let (w, _, dense) = world();
    let a = file(&dense, "config.json");
    fs::copy(dense.join("files/tokenizer.json"), &a).unwrap();
    refused(
        &w,
        "dense-model",
        Defect::Misplaced {
            path: "config.json".into(),
            holds: "tokenizer.json".into(),
        },
    );
}

#[test]
fn a_missing_file_is_refused() {
    let (w, _, dense) = world();
    fs::remove_file(dense.join("files/model-00002-of-00002.safetensors")).unwrap();
    refused(
        &w,
        "dense-model",
        Defect::Missing {
            path: "model-00002-of-00002.safetensors".into(),
        },
    );
}

#[test]
fn an_extra_file_is_refused() {
    let (w, tiny, _) = world();
    fs::write(tiny.join("files/extra.gguf"), b"GGUF").unwrap();
    refused(
        &w,
        "tiny",
        Defect::Extra {
            path: "extra.gguf".into(),
        },
    );
}

#[test]
fn an_extra_file_beside_the_manifest_is_refused() {
    let (w, tiny, _) = world();
    fs::write(tiny.join("notes.txt"), b"hello").unwrap();
    refused(
        &w,
        "tiny",
        Defect::Extra {
            path: "notes.txt".into(),
        },
    );
}

#[test]
fn an_extra_directory_is_refused() {
    let (w, tiny, _) = world();
    fs::create_dir(tiny.join("files/adapters")).unwrap();
    refused(
        &w,
        "tiny",
        Defect::Extra {
            path: "adapters".into(),
        },
    );
}

#[test]
fn a_symbolic_link_in_place_of_a_file_is_refused() {
    let (w, tiny, _) = world();
    let p = tiny.join("files/tiny.gguf");
    let elsewhere = w.dir.path().join("elsewhere.gguf");
    fs::copy(&p, &elsewhere).unwrap();
    fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &p).unwrap();
    refused(
        &w,
        "tiny",
        Defect::NotRegular {
            path: "tiny.gguf".into(),
        },
    );
}

#[test]
fn an_edited_manifest_is_refused() {
    let (w, tiny, _) = world();
    let p = tiny.join(MANIFEST_FILE);
    writable(&p);
    let mut bytes = fs::read(&p).unwrap();
    // The last byte of the one file's SHA-256: the manifest still decodes, but its
    // signature no longer verifies.
    let sha = w
        .registry
        .packages()
        .resolve("tiny")
        .unwrap()
        .manifest()
        .files[0]
        .sha256;
    let at = bytes.windows(32).position(|b| b == sha.0).unwrap() + 31;
    bytes[at] ^= 1;
    fs::write(&p, bytes).unwrap();
    let publisher = w.node_key.public_key().fingerprint();
    let err = w
        .registry
        .packages()
        .load("tiny", None, &no_progress)
        .unwrap_err();
    assert_eq!(err.http_status(), 409);
    assert!(
        err.to_string()
            .contains("signature does not verify under its publisher's key"),
        "{err}"
    );
    refused(&w, "tiny", Defect::ManifestSignature { publisher });
}

#[test]
fn a_truncated_manifest_is_refused() {
    let (w, tiny, _) = world();
    let p = tiny.join(MANIFEST_FILE);
    writable(&p);
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = w
        .registry
        .packages()
        .load("tiny", None, &no_progress)
        .unwrap_err();
    assert_eq!(err.http_status(), 409);
    assert!(err.to_string().contains("manifest is malformed"), "{err}");
}

#[test]
fn a_missing_manifest_is_refused() {
    let (w, tiny, _) = world();
    fs::remove_file(tiny.join(MANIFEST_FILE)).unwrap();
    refused(&w, "tiny", Defect::ManifestMissing);
}

#[test]
fn a_renamed_package_directory_is_refused() {
    let (w, tiny, _) = world();
    fs::rename(&tiny, tiny.with_file_name("other")).unwrap();
    refused(
        &w,
        "other",
        Defect::NameMismatch {
            directory: "other".into(),
            manifest: "tiny".into(),
        },
    );
}

#[test]
fn every_defect_is_reported_at_once() {
    let (w, _, dense) = world();
    fs::remove_file(dense.join("files/config.json")).unwrap();
    fs::write(dense.join("files/stray.bin"), b"x").unwrap();
    let err = w
        .registry
        .packages()
        .verify_name("dense-model", &no_progress)
        .unwrap_err();
    assert_eq!(err.defects.len(), 2, "{:?}", err.defects);
    assert!(err.to_string().contains("(and 1 more)"), "{err}");
}

#[test]
fn the_cache_skips_hashing_an_unchanged_package_and_sees_any_change() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (w, tiny, _) = world();
    let cache = VerifyCache::new(Duration::from_secs(3600), w.clock.clone());
    let hashed = AtomicU64::new(0);
    let progress = |n| {
        hashed.fetch_add(n, Ordering::Relaxed);
    };
    let packages = w.registry.packages();
    packages.load("tiny", Some(&cache), &progress).unwrap();
    let first = hashed.load(Ordering::Relaxed);
    assert!(first > 0);
    packages.load("tiny", Some(&cache), &progress).unwrap();
    assert_eq!(
        hashed.load(Ordering::Relaxed),
        first,
        "served from the cache"
    );

    // Flip a bit and put the modification time back: the change time still moves, so
    // the cache is not fooled.
    let p = file(&tiny, "tiny.gguf");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut bytes = fs::read(&p).unwrap();
    let at = bytes.len() - 1;
    bytes[at] ^= 1;
    fs::write(&p, bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let err = packages.load("tiny", Some(&cache), &progress).unwrap_err();
    assert!(
        matches!(&err, Error::Integrity(e) if e.defects == vec![Defect::Modified { path: "tiny.gguf".into() }]),
        "{err}"
    );
}

#[test]
fn the_cache_expires() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (w, _, _) = world();
    let cache = VerifyCache::new(Duration::from_secs(60), w.clock.clone());
    let hashed = AtomicU64::new(0);
    let progress = |n| {
        hashed.fetch_add(n, Ordering::Relaxed);
    };
    let packages = w.registry.packages();
    packages.load("tiny", Some(&cache), &progress).unwrap();
    let first = hashed.load(Ordering::Relaxed);
    w.clock.advance(Duration::from_secs(61));
    packages.load("tiny", Some(&cache), &progress).unwrap();
    assert_eq!(hashed.load(Ordering::Relaxed), 2 * first, "hashed again");
}
