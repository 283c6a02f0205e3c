//! No module cycles in the crates that opted in: one line each in `CHECKED`. A crate
//! joins once its cycles are broken (`cargo test -p aura-archtest -- --ignored` lists every
//! crate's cycles), and from then on this test keeps them broken.

use std::path::PathBuf;

/// The crates whose modules must form no cycle.
const CHECKED: &[&str] = &[
    // One crate a line, sorted.
    "aura-archtest",
    "aura-canonical",
    "aura-cell",
    "aura-core",
    "aura-engine",
    "aura-grpc",
    "aura-host",
    "aura-identity",
    "aura-kernel",
    "aura-ledger",
    "aura-mcp",
    "aura-memory",
    "aura-metrics",
    "aura-model",
    "aura-plugin",
    "aura-policy",
];

fn crates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

#[test]
fn opted_in_crates_have_no_module_cycles() {
    let mut failures = Vec::new();
    for name in CHECKED {
        match aura_archtest::module_cycles(crates_dir().join(name)) {
            Ok(cycles) => failures.extend(aura_archtest::report(name, &cycles)),
            Err(e) => failures.push(format!("cannot read the modules of {name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every crate's module cycles, for whoever breaks them next (run with `--ignored`).
#[test]
#[ignore = "a report, not a check: it lists the cycles of crates that have not opted in"]
fn report_every_crates_module_cycles() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(crates_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.join("Cargo.toml").is_file()) {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match aura_archtest::module_cycles(dir) {
            Ok(cycles) => match aura_archtest::report(&name, &cycles) {
                Some(report) => println!("{report}\n"),
                None => println!("{name}: no module cycles\n"),
            },
            Err(e) => println!("{name}: cannot read its modules: {e}\n"),
        }
    }
}
