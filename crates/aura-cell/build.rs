//! Builds the in-cell init program (`init/main.rs`) with the same compiler, as a tiny
//! freestanding static binary that the runtime embeds.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/main.rs");
    println!("cargo:rerun-if-changed=build.rs");
    build_init();
}

fn build_init() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    let os = std::env::var("CARGO_CFG_TARGET_OS").expect("cargo sets the target os");
    assert!(
        os == "linux" && (arch == "x86_64" || arch == "aarch64"),
        "aura-cell supports Linux on x86_64 and aarch64, not {os} on {arch}"
    );
    let binary = out.join("aura-cell-init");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "bin",
            "--crate-name",
            "aura_cell_init",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "relocation-model=static",
        ])
        .args(["-C", "debuginfo=0", "-C", "strip=symbols"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args([
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ])
        .arg("init/main.rs")
        .arg("-o")
        .arg(&binary)
        // The workspace's flags (lints, instrumentation) are not meant for this program.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cannot run rustc to build the in-cell init");
    assert!(status.success(), "building the in-cell init failed");
}
