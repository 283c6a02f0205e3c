//! Architecture checks for Aura's crates, run as tests (a dev-only crate; nothing links
//! it into the binary). Two checks: **no cycles among a crate's modules**, and **the crate
//! map in docs/ARCHITECTURE.md is the crates' dependencies** ([`deps`]).
//!
//! A module cycle (`server` uses `aurae`, which uses `server`) makes a crate one tangle
//! that can only be read, tested and split as a whole. The cure is a small leaf module
//! that both sides use (Restate's invoker keeps its handle and commands in one), and this
//! check keeps it cured: it reads the crate's source, builds the graph of which module
//! uses which (from `use` trees and from paths starting with `crate::`, `self::`,
//! `super::` or a child module's name; items under `#[cfg(test)]` left out, since a test
//! module may use anything of its parent), and reports each cycle with the lines behind
//! it. Re-exports in the crate root (`pub use x::Y` in `lib.rs`) are the crate's facade,
//! not a dependency of the root, and a path through one counts as a use of the module the
//! item comes from.
//!
//! A crate opts in with one line in `aura-archtest/tests/modules.rs`, or from its own
//! tests, with `aura-archtest` as a dev-dependency:
//!
//! ```no_run
//! aura_archtest::assert_no_module_cycles(env!("CARGO_MANIFEST_DIR"));
//! ```

#![forbid(unsafe_code)]

mod cycles;
pub mod deps;
mod lex;
mod modules;

use std::path::{Path, PathBuf};

pub use cycles::{Cycle, Step};
pub use modules::Error;

/// Reads module files from the file system.
struct Files;

impl modules::Source for Files {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}

/// The crate's root file: `src/lib.rs`, else `src/main.rs`.
fn root_file(crate_dir: &Path) -> Result<PathBuf, Error> {
    ["src/lib.rs", "src/main.rs"]
        .iter()
        .map(|f| crate_dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error(format!(
                "{} has neither src/lib.rs nor src/main.rs",
                crate_dir.display()
            ))
        })
}

/// The module cycles of the crate in `crate_dir` (the directory of its `Cargo.toml`);
/// empty when there are none. Files are named relative to `crate_dir`.
pub fn module_cycles(crate_dir: impl AsRef<Path>) -> Result<Vec<Cycle>, Error> {
    let crate_dir = crate_dir.as_ref();
    let tree = modules::read(&Files, &root_file(crate_dir)?, crate_dir)?;
    Ok(cycles::cycles(&tree))
}

/// Which module uses which in the crate in `crate_dir`: `(user, used)` pairs by the names
/// `use` would write from the root (`crate` for the root itself), sorted.
pub fn module_edges(crate_dir: impl AsRef<Path>) -> Result<Vec<(String, String)>, Error> {
    let crate_dir = crate_dir.as_ref();
    let tree = modules::read(&Files, &root_file(crate_dir)?, crate_dir)?;
    let mut edges: Vec<(String, String)> = tree
        .edges
        .iter()
        .map(|e| (cycles::name(&tree, e.from), cycles::name(&tree, e.to)))
        .collect();
    edges.sort();
    Ok(edges)
}

/// The report of a crate's module cycles, or `None` when it has none.
pub fn report(crate_name: &str, cycles: &[Cycle]) -> Option<String> {
    if cycles.is_empty() {
        return None;
    }
    let mut text = format!(
        "{crate_name} has {} module cycle{}:",
        cycles.len(),
        if cycles.len() == 1 { "" } else { "s" }
    );
    for c in cycles {
        text.push_str(&format!("\n  {c}"));
    }
    text.push_str(
        "\nhint: move what both sides need (shared state, handles, errors) into a leaf module that uses neither",
    );
    Some(text)
}

/// Panics with the report when the crate in `crate_dir` has a module cycle, or when its
/// modules cannot be read.
#[allow(clippy::panic, reason = "an assertion for tests")]
pub fn assert_no_module_cycles(crate_dir: impl AsRef<Path>) {
    let crate_dir = crate_dir.as_ref();
    let name = crate_dir.file_name().map_or_else(
        || crate_dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match module_cycles(crate_dir) {
        Ok(cycles) => {
            if let Some(report) = report(&name, &cycles) {
                panic!("{report}");
            }
        }
        Err(e) => panic!("cannot read the modules of {name}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Source files held in memory, by path.
    struct Table(BTreeMap<PathBuf, String>);

    impl modules::Source for Table {
        fn read(&self, path: &Path) -> Option<String> {
            self.0.get(path).cloned()
        }
    }

    fn table(files: &[(&str, &str)]) -> Table {
        Table(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
                .collect(),
        )
    }

    fn tree(files: &[(&str, &str)]) -> modules::Tree {
        modules::read(&table(files), Path::new("src/lib.rs"), Path::new("")).unwrap()
    }

    fn edges(files: &[(&str, &str)]) -> Vec<String> {
        let t = tree(files);
        let mut e: Vec<String> = t
            .edges
            .iter()
            .map(|e| format!("{} -> {}", cycles::name(&t, e.from), cycles::name(&t, e.to)))
            .collect();
        e.sort();
        e
    }

    fn cycle_names(files: &[(&str, &str)]) -> Vec<String> {
        cycles::cycles(&tree(files))
            .iter()
            .map(|c| c.modules.join(" "))
            .collect()
    }

    /// One check per way a module can name another.
    #[test]
    fn each_way_of_naming_a_module_is_an_edge() {
        let check = |files: &[(&str, &str)], expect: &[&str]| {
            assert_eq!(edges(files), expect, "{files:?}");
        };
        let lib = "mod a; mod b;";
        check(
            &[
                ("src/lib.rs", lib),
                ("src/a.rs", "use crate::b::X;"),
                ("src/b.rs", ""),
            ],
            &["a -> b"],
        );
        check(
            &[
                ("src/lib.rs", lib),
                ("src/a.rs", "fn f() { crate::b::g(); }"),
                ("src/b.rs", ""),
            ],
            &["a -> b"],
        );
        check(
            &[
                ("src/lib.rs", lib),
                ("src/a.rs", "use super::b;"),
                ("src/b.rs", ""),
            ],
            &["a -> b"],
        );
        check(
            &[
                ("src/lib.rs", lib),
                ("src/a.rs", "use crate::{b::{self, Y}, Z};"),
                ("src/b.rs", ""),
            ],
            &["a -> b", "a -> crate"],
        );
        // A child module, by its bare name, and the child using its parent.
        check(
            &[
                ("src/lib.rs", "mod a;"),
                ("src/a.rs", "mod c; fn f() { c::g(); }"),
                ("src/a/c.rs", "use super::T;"),
            ],
            &["a -> a::c", "a::c -> a"],
        );
        // mod.rs files and inline modules.
        check(
            &[
                ("src/lib.rs", "mod a; mod i { use crate::a::X; }"),
                ("src/a/mod.rs", ""),
            ],
            &["i -> a"],
        );
        // Through a re-export of the root: the module the item comes from.
        check(
            &[
                (
                    "src/lib.rs",
                    "mod a; mod b; pub use b::{Error as E, Other};",
                ),
                ("src/a.rs", "use crate::E; use crate::Other;"),
                ("src/b.rs", ""),
            ],
            &["a -> b"],
        );
        // `$crate` in a macro is the crate.
        check(
            &[
                ("src/lib.rs", lib),
                ("src/a.rs", "macro_rules! m { () => { $crate::b::f() } }"),
                ("src/b.rs", ""),
            ],
            &["a -> b"],
        );
    }

    #[test]
    fn what_is_not_a_module_edge_is_not_one() {
        let check = |files: &[(&str, &str)]| {
            assert_eq!(edges(files), Vec::<String>::new(), "{files:?}");
        };
        let lib = "mod a; mod b;";
        // Other crates, types and enum variants, comments and strings, test-only code.
        check(&[
            ("src/lib.rs", lib),
            (
                "src/a.rs",
                "use std::fmt; fn f() { Vec::<u8>::new(); Kind::B; }",
            ),
            ("src/b.rs", ""),
        ]);
        check(&[
            ("src/lib.rs", lib),
            (
                "src/a.rs",
                "/// [`crate::b`]\n// crate::b\nconst S: &str = \"crate::b::x\";",
            ),
            ("src/b.rs", ""),
        ]);
        check(&[
            ("src/lib.rs", lib),
            ("src/a.rs", "#[cfg(test)]\nmod tests { use crate::b::X; }"),
            ("src/b.rs", ""),
        ]);
        check(&[
            ("src/lib.rs", lib),
            (
                "src/a.rs",
                "#[cfg(test)]\nuse crate::b::X;\n#[cfg(test)]\nfn t() { crate::b::f(); }",
            ),
            ("src/b.rs", ""),
        ]);
        check(&[
            ("src/lib.rs", lib),
            ("src/a.rs", "#![cfg(test)]\nuse crate::b::X;"),
            ("src/b.rs", ""),
        ]);
        // A test-only struct field hides only itself.
        assert_eq!(
            edges(&[
                ("src/lib.rs", lib),
                (
                    "src/a.rs",
                    "struct S { #[cfg(test)] x: u8, y: u8 }\nuse crate::b::X;"
                ),
                ("src/b.rs", "")
            ]),
            ["a -> b"]
        );
        // The root's re-exports and module declarations.
        check(&[
            (
                "src/lib.rs",
                "mod a; pub mod b; pub use a::X; pub(crate) use b::*;",
            ),
            ("src/a.rs", ""),
            ("src/b.rs", ""),
        ]);
    }

    #[test]
    fn cycles_are_found_with_their_lines() {
        let files = [
            ("src/lib.rs", "mod server; mod aurae; mod cells; mod leaf;"),
            (
                "src/server.rs",
                "use crate::aurae::Svc;\nuse crate::cells::Cells;\nuse crate::leaf::X;",
            ),
            (
                "src/aurae.rs",
                "use crate::leaf::X;\n\nuse crate::server::Shared;",
            ),
            ("src/cells.rs", "use crate::aurae::stream;"),
            ("src/leaf.rs", ""),
        ];
        let found = cycles::cycles(&tree(&files));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].modules, ["aurae", "cells", "server"]);
        let shown = found[0].to_string();
        assert!(shown.starts_with("aurae -> server -> aurae"), "{shown}");
        assert!(
            shown.contains("src/aurae.rs:3: `aurae` uses `server`"),
            "{shown}"
        );
        assert!(
            shown.contains("src/server.rs:1: `server` uses `aurae`"),
            "{shown}"
        );
        assert!(report("x", &found).unwrap().contains("hint: "));

        // A cycle through the root: it defines what a child uses and uses the child.
        assert_eq!(
            cycle_names(&[
                (
                    "src/lib.rs",
                    "mod routes; pub struct State; fn f() { routes::router(); }"
                ),
                ("src/routes.rs", "use crate::State;")
            ]),
            ["crate routes"]
        );
        // Three modules in a ring, and two separate cycles.
        assert_eq!(
            cycle_names(&[
                ("src/lib.rs", "mod a; mod b; mod c;"),
                ("src/a.rs", "use crate::b::X;"),
                ("src/b.rs", "use crate::c::X;"),
                ("src/c.rs", "use crate::a::X;")
            ]),
            ["a b c"]
        );
        assert_eq!(
            cycle_names(&[
                ("src/lib.rs", "mod a; mod b; mod c; mod d;"),
                ("src/a.rs", "use super::b::X;"),
                ("src/b.rs", "use super::a::X;"),
                ("src/c.rs", "use super::d::X;"),
                ("src/d.rs", "use super::c::X;")
            ]),
            ["a b", "c d"]
        );
        // Leaves break it.
        assert!(
            cycle_names(&[
                ("src/lib.rs", "mod a; mod b; mod leaf;"),
                ("src/a.rs", "use crate::leaf::X;"),
                ("src/b.rs", "use crate::leaf::X; use crate::a::Y;"),
                ("src/leaf.rs", "")
            ])
            .is_empty()
        );
    }

    #[test]
    fn a_missing_module_file_is_an_error_naming_it() {
        let err = modules::read(
            &table(&[("src/lib.rs", "\nmod gone;")]),
            Path::new("src/lib.rs"),
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("src/lib.rs:2: cannot find the file of module `gone`"),
            "{err}"
        );
    }
}
