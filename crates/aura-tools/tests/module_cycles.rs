//! The crate's modules depend on each other without cycles: a module that a module it uses
//! uses in turn cannot be read, tested or moved on its own. Shared types go to a leaf
//! module that both sides use (the Tool trait in aura-tools' `tool.rs`; the actor's
//! commands in aura-engine's `command.rs`).
//!
//! A deliberately small check: it reads every file under `src/`, takes the top-level
//! module each `crate::<module>` path and each `super::` path names (comments and
//! `#[cfg(test)]` code left out), and fails on a cycle among top-level modules, naming
//! it. A child module using its parent (`super::`) is how Rust nests modules and is not
//! counted; a `super::` path that climbs to the crate root is followed like `crate::`. The crate root (`lib.rs`) only declares and re-exports, and is left out.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `engine.rs` is `["engine"]`, `fs/mod.rs` is
/// `["fs"]`, `fs/beneath.rs` is `["fs", "beneath"]`, `lib.rs` is `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The file's code without comments and without what follows its first `#[cfg(test)]`.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first identifier in `s`, skipping spaces and an opening `{`.
fn first_ident(s: &str) -> Option<&str> {
    let s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '{');
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The identifiers directly inside a `{...}` group that starts `s` (`crate::{a, b::c}`).
fn group_idents(s: &str) -> Vec<&str> {
    let Some(body) = s.trim_start().strip_prefix('{') else {
        return first_ident(s).into_iter().collect();
    };
    let mut depth = 0;
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.extend(first_ident(&body[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.extend(first_ident(&body[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// Edges between the crate's top-level modules, from the sources in `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let top: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(src, f).first().cloned())
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let path = module_path(src, file);
        let Some(from) = path.first().cloned() else {
            continue;
        };
        let text = code(&std::fs::read_to_string(file).unwrap());
        let mut targets = Vec::new();
        for (at, _) in text.match_indices("crate::") {
            // `aura_crate::x` is another crate's path, not ours.
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            targets.extend(
                group_idents(&text[at + "crate::".len()..])
                    .into_iter()
                    .map(str::to_owned),
            );
        }
        for (at, _) in text.match_indices("super::") {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            // `super::` climbs one module per use; only a path that climbs out of its
            // top-level module, to the crate root, can name another top-level module.
            let mut rest = &text[at..];
            let mut up = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                rest = r;
                up += 1;
            }
            if up >= path.len() {
                targets.extend(group_idents(rest).into_iter().map(str::to_owned));
            }
        }
        for to in targets {
            if to != from && top.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_crates_modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    if let Some(cycle) = find_cycle(&edges) {
        panic!(
            "modules depend on each other in a cycle: {}; move what they share into a leaf module",
            cycle.join(" -> ")
        );
    }
}

/// The check itself finds a cycle, through `use crate::...`, a `crate::{...}` group, an
/// inline path and `super::` paths, and ignores comments, other crates' paths, a child's
/// use of its parent and test code.
#[test]
fn the_check_finds_a_cycle_and_ignores_what_is_not_a_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("c")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\nmod d;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{d, b::Thing};\n").unwrap();
    std::fs::write(src.join("b.rs"), "fn f() { crate::c::inner::g(); }\n").unwrap();
    std::fs::write(src.join("c/mod.rs"), "mod inner;\nfn helper() {}\n").unwrap();
    std::fs::write(src.join("c/inner.rs"), "use super::helper;\n").unwrap();
    std::fs::write(
        src.join("d.rs"),
        "// use crate::a;\nuse aura_crate::a;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    let edges = graph(src);
    assert_eq!(find_cycle(&edges), None, "{edges:?}");
    assert!(!edges.contains_key("d"), "{edges:?}");
    assert!(!edges.contains_key("c"), "{edges:?}");

    // A nested module climbing to the crate root and into `a` closes a cycle.
    std::fs::write(src.join("c/inner.rs"), "use super::super::a::X;\n").unwrap();
    let edges = graph(src);
    assert_eq!(
        find_cycle(&edges).unwrap(),
        ["a", "b", "c", "a"],
        "{edges:?}"
    );

    // So does a top-level module's `super::`, which is the crate root.
    std::fs::write(src.join("c/inner.rs"), "").unwrap();
    std::fs::write(src.join("c/mod.rs"), "mod inner;\nuse super::a::X;\n").unwrap();
    let edges = graph(src);
    assert_eq!(
        find_cycle(&edges).unwrap(),
        ["a", "b", "c", "a"],
        "{edges:?}"
    );
}
