//! The gRPC crate owns its interfaces: every `.proto` file of the workspace sits in this
//! crate's `proto/`, and `build.rs` compiles each of them from there and reads nothing
//! outside it. (They used to sit in aura-cell's folder, which `build.rs` reached into.)

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

fn protos_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && name != "node_modules" && name != ".git" {
            protos_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

#[test]
fn every_proto_file_is_this_crates_and_build_rs_reads_only_its_own_folder() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let own = here.join("proto");
    let mut found = Vec::new();
    protos_under(&here.join(".."), &mut found);
    let strays: Vec<_> = found
        .iter()
        .filter(|p| {
            !p.canonicalize()
                .unwrap()
                .starts_with(own.canonicalize().unwrap())
        })
        .collect();
    assert!(
        strays.is_empty(),
        "protos outside aura-grpc/proto: {strays:?}"
    );

    let build = std::fs::read_to_string(here.join("build.rs")).unwrap();
    assert!(
        !build.contains("\"..") && !build.contains("../"),
        "build.rs reaches outside its crate"
    );
    assert!(
        build.contains(".join(\"proto\")"),
        "build.rs reads its own proto/"
    );
    let mut own_files = Vec::new();
    protos_under(&own, &mut own_files);
    assert!(own_files.len() >= 6, "{own_files:?}");
    for file in own_files {
        let relative = file
            .strip_prefix(&own)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            build.contains(&format!("\"{relative}\"")),
            "build.rs does not compile {relative}"
        );
    }
}
