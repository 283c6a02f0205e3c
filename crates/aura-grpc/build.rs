//! Compiles the gRPC interfaces in this crate's own `proto/` (Aurae's v0 cell, observe
//! and discovery services, Aura's cells v1 and inference v1, gRPC health) with protox, a
//! protobuf compiler in Rust, so building needs no `protoc`. Nothing outside this crate's
//! folder is read.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "aurae/cells/v0/cells.proto",
    "aurae/discovery/v0/discovery.proto",
    "aurae/observe/v0/observe.proto",
    "aura/cells/v1/cells.proto",
    "aura/inference/v1/inference.proto",
    "grpc/health/v1/health.proto",
];

fn main() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("proto");
    println!("cargo:rerun-if-changed=build.rs");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS, [&root]).unwrap_or_else(|e| panic!("{e:?}"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generating the gRPC code");
}
