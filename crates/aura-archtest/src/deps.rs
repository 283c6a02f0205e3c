//! The crate map's check: each crate's `aura-*` dependencies, read from the `Cargo.toml`
//! files, against the crate-dependency diagram in docs/ARCHITECTURE.md, so that the map
//! cannot drift from the code.
//!
//! The diagram is a fenced `mermaid` block holding the line `%% crate map`, written in a
//! small subset of mermaid's flowchart syntax that both mermaid and this check read: a
//! `graph` (or `flowchart`) line, then one line per edge, `aura_cli --> aura_node` (a
//! node's id is the crate's name with `_` for `-`), or a lone id for a crate with no
//! `aura-*` dependency and no dependents; `%%` comments and blank lines are skipped, and
//! anything else is refused, so the block stays machine-readable.
//!
//! A dependency counts when the crate links it: `[dependencies]` and
//! `[build-dependencies]`, also under `[target.'...']`. Dev-dependencies are left out: a
//! test may use any crate without that crate becoming part of the design.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::modules::Error;

/// The marker line of the crate map's mermaid block.
pub const MARKER: &str = "%% crate map";

/// Crates by name, each with the names of the `aura-*` crates it depends on.
pub type Map = BTreeMap<String, BTreeSet<String>>;

/// The crate's name and its `aura-*` dependencies, from the text of its `Cargo.toml`.
pub fn manifest_dependencies(manifest: &str) -> Result<(String, BTreeSet<String>), Error> {
    let mut name = None;
    let mut deps = BTreeSet::new();
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').trim().to_owned();
            // `[dependencies.aura-x]`: a dependency as a table of its own.
            if let Some((table, key)) = section.rsplit_once('.')
                && linking(table)
                && key.trim_matches('"').starts_with("aura-")
            {
                deps.insert(key.trim_matches('"').to_owned());
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        // `aura-x.workspace = true` has the dotted key `aura-x.workspace`.
        let key = key
            .trim()
            .split('.')
            .next()
            .unwrap_or_default()
            .trim_matches('"');
        if section == "package" && key == "name" {
            name = Some(value.trim().trim_matches('"').to_owned());
        } else if linking(&section) && key.starts_with("aura-") {
            deps.insert(key.to_owned());
        }
    }
    let name = name.ok_or_else(|| Error("the manifest names no package".into()))?;
    Ok((name, deps))
}

/// Whether a dependency table of this name is linked into the crate.
fn linking(section: &str) -> bool {
    let table = match section.strip_prefix("target.") {
        // `target.'cfg(unix)'.dependencies`: the table is after the last dot.
        Some(rest) => rest.rsplit('.').next().unwrap_or_default(),
        None => section,
    };
    table == "dependencies" || table == "build-dependencies"
}

/// Every crate under `crates_dir` (each directory with a `Cargo.toml`) and its
/// `aura-*` dependencies.
pub fn workspace_dependencies(crates_dir: &Path) -> Result<Map, Error> {
    let entries = std::fs::read_dir(crates_dir)
        .map_err(|e| Error(format!("cannot read {}: {e}", crates_dir.display())))?;
    let mut map = Map::new();
    for entry in entries {
        let dir = entry
            .map_err(|e| Error(format!("cannot read {}: {e}", crates_dir.display())))?
            .path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| Error(format!("cannot read {}: {e}", manifest.display())))?;
        let (name, deps) = manifest_dependencies(&text)
            .map_err(|e| Error(format!("{}: {e}", manifest.display())))?;
        map.insert(name, deps);
    }
    Ok(map)
}

/// The crate map drawn in `markdown`'s mermaid block marked [`MARKER`].
pub fn diagram(markdown: &str) -> Result<Map, Error> {
    let mut blocks = Vec::new();
    let mut open: Option<Vec<(usize, &str)>> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        match open.as_mut() {
            None if trimmed.starts_with("```mermaid") => open = Some(Vec::new()),
            None => {}
            Some(_) if trimmed.starts_with("```") => blocks.extend(open.take()),
            Some(block) => block.push((i + 1, trimmed)),
        }
    }
    let mut marked = blocks
        .into_iter()
        .filter(|b| b.iter().any(|(_, l)| *l == MARKER));
    let (Some(block), None) = (marked.next(), marked.next()) else {
        return Err(Error(format!(
            "there must be one mermaid block holding the line `{MARKER}`"
        )));
    };
    let mut map = Map::new();
    let mut lines = block
        .into_iter()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with("%%"));
    match lines.next() {
        Some((_, l)) if l.starts_with("graph") || l.starts_with("flowchart") => {}
        other => {
            return Err(Error(format!(
                "the crate map must start with a `graph` line, not {other:?}"
            )));
        }
    }
    for (number, line) in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [lone] => {
                map.entry(crate_name(number, lone)?).or_default();
            }
            [from, "-->", to] => {
                let to = crate_name(number, to)?;
                map.entry(to.clone()).or_default();
                map.entry(crate_name(number, from)?).or_default().insert(to);
            }
            _ => {
                return Err(Error(format!(
                    "line {number} of the crate map is not `from --> to` nor one node: {line:?}"
                )));
            }
        }
    }
    Ok(map)
}

/// The crate a node id names (`aura_node` is aura-node).
fn crate_name(line: usize, id: &str) -> Result<String, Error> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error(format!(
            "line {line} of the crate map: {id:?} is not a node id (a crate's name with `_` for `-`)"
        )));
    }
    Ok(id.replace('_', "-"))
}

/// Where `drawn` differs from `built`, one line each; empty when they agree.
pub fn drift(built: &Map, drawn: &Map) -> Vec<String> {
    let mut found = Vec::new();
    let id = |name: &str| name.replace('-', "_");
    for (name, deps) in built {
        let Some(drawn_deps) = drawn.get(name) else {
            found.push(format!("{name} is a crate, but the map does not show it"));
            continue;
        };
        for dep in deps.difference(drawn_deps) {
            found.push(format!(
                "{name} depends on {dep}, but the map lacks `{} --> {}`",
                id(name),
                id(dep)
            ));
        }
        for dep in drawn_deps.difference(deps) {
            found.push(format!(
                "the map has `{} --> {}`, but {name} does not depend on {dep}",
                id(name),
                id(dep)
            ));
        }
    }
    for name in drawn.keys().filter(|n| !built.contains_key(*n)) {
        found.push(format!("the map shows {name}, which is no crate"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// Every way a manifest can name a linked dependency counts; dev-dependencies and
    /// other crates do not.
    #[test]
    fn a_manifests_linked_aura_dependencies_are_read() {
        let manifest = r#"
[package]
name = "aura-x"
version.workspace = true

[dependencies]
aura-core.workspace = true
aura-reasoner = { workspace = true, features = ["http"] } # a comment
"aura-quoted" = "1"
serde = "1"

[dependencies.aura-table]
workspace = true

[build-dependencies]
aura-build = { path = "../aura-build" }

[target.'cfg(unix)'.dependencies]
aura-unix.workspace = true

[dev-dependencies]
aura-store.workspace = true

[features]
aura-feature = []
"#;
        let (name, deps) = manifest_dependencies(manifest).unwrap();
        assert_eq!(name, "aura-x");
        assert_eq!(
            deps,
            set(&[
                "aura-build",
                "aura-core",
                "aura-quoted",
                "aura-reasoner",
                "aura-table",
                "aura-unix"
            ])
        );
    }

    const DOC: &str = "# Map\n\n```mermaid\ngraph TD\n%% crate map\n  aura_cli --> aura_node\n  aura_node --> aura_core\n\n  aura_archtest\n```\n\n```mermaid\ngraph LR\n  a --> b\n```\n";

    #[test]
    fn the_marked_block_is_read_as_edges_and_lone_nodes() {
        let map = diagram(DOC).unwrap();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["aura-archtest", "aura-cli", "aura-core", "aura-node"]
        );
        assert_eq!(map["aura-cli"], set(&["aura-node"]));
        assert_eq!(map["aura-node"], set(&["aura-core"]));
        assert!(map["aura-core"].is_empty() && map["aura-archtest"].is_empty());
    }

    #[test]
    fn a_crate_map_it_cannot_read_is_refused() {
        let refused = |doc: &str, words: &str| {
            let e = diagram(doc).unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        };
        refused("no diagram", "one mermaid block");
        refused(&format!("{DOC}{DOC}"), "one mermaid block");
        refused(
            "```mermaid\n%% crate map\na --> b\n```",
            "must start with a `graph` line",
        );
        refused(
            "```mermaid\ngraph TD\n%% crate map\na --> b --> c\n```",
            "line 4 of the crate map is not",
        );
        refused(
            "```mermaid\ngraph TD\n%% crate map\ncli[aura-cli] --> b\n```",
            "not a node id",
        );
    }

    /// Every kind of drift is named; a map that agrees has none.
    #[test]
    fn each_difference_between_the_manifests_and_the_map_is_named() {
        let built: Map = [
            ("aura-cli".to_owned(), set(&["aura-node", "aura-host"])),
            ("aura-node".to_owned(), set(&[])),
            ("aura-host".to_owned(), set(&[])),
        ]
        .into();
        assert!(drift(&built, &built).is_empty());
        let drawn: Map = [
            ("aura-cli".to_owned(), set(&["aura-node", "aura-gone"])),
            ("aura-node".to_owned(), set(&[])),
            ("aura-gone".to_owned(), set(&[])),
        ]
        .into();
        assert_eq!(
            drift(&built, &drawn),
            [
                "aura-cli depends on aura-host, but the map lacks `aura_cli --> aura_host`",
                "the map has `aura_cli --> aura_gone`, but aura-cli does not depend on aura-gone",
                "aura-host is a crate, but the map does not show it",
                "the map shows aura-gone, which is no crate",
            ]
        );
    }
}
