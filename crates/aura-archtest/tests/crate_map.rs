//! The crate map in docs/ARCHITECTURE.md (its mermaid block marked `%% crate map`) must
//! draw exactly each crate's `aura-*` dependencies, as the `Cargo.toml` files declare
//! them: a crate added, a dependency added or dropped, fails here until the map follows.

use std::path::PathBuf;

use aura_archtest::deps;

#[test]
fn the_architecture_docs_crate_map_is_the_crates_dependencies() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("cannot find the workspace root: {e}"));
    let built = deps::workspace_dependencies(&root.join("crates"))
        .unwrap_or_else(|e| panic!("cannot read the crates' manifests: {e}"));
    assert!(
        built.contains_key("aura-core") && built.contains_key("aura-archtest"),
        "the crates were not found: {built:?}"
    );
    let doc = root.join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&doc)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc.display()));
    let drawn = deps::diagram(&text).unwrap_or_else(|e| panic!("cannot read the crate map: {e}"));
    let drift = deps::drift(&built, &drawn);
    assert!(
        drift.is_empty(),
        "docs/ARCHITECTURE.md's crate map differs from the manifests:\n  {}\nhint: change the map's mermaid block (`%% crate map`) to match",
        drift.join("\n  ")
    );
}
