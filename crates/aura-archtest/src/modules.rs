//! The module tree of one crate and the references between its modules, read from the
//! source: `mod` declarations (files and inline blocks), `use` trees and paths that start
//! with `crate`, `self`, `super` or a child module's name. Items under `#[cfg(test)]` are
//! left out: a test module may use anything of its parent without that being a cycle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::lex::{Kind, Token, tokens};

/// Where module files come from: the file system, or a table in tests.
pub(crate) trait Source {
    fn read(&self, path: &Path) -> Option<String>;
}

/// One module: its path from the crate root (empty for the root) and where it is written.
#[derive(Debug, Clone)]
pub(crate) struct Module {
    pub(crate) path: Vec<String>,
    pub(crate) file: PathBuf,
    pub(crate) parent: Option<usize>,
    pub(crate) children: BTreeMap<String, usize>,
}

/// A path written in a module, not yet resolved.
#[derive(Debug, Clone)]
struct Reference {
    module: usize,
    segments: Vec<String>,
    line: u32,
    /// Written in a `pub use` (a re-export, which the crate root may make freely).
    reexport: bool,
    /// The name a `use` gives it (`as NAME`), if another than its own.
    alias: Option<String>,
}

/// One path of a use tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsePath {
    segments: Vec<String>,
    line: u32,
    alias: Option<String>,
}

/// A dependency of one module on another and where the first one is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edge {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) file: PathBuf,
    pub(crate) line: u32,
}

/// Why a crate's modules could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub(crate) String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The modules of a crate and the edges between them.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub(crate) modules: Vec<Module>,
    pub(crate) edges: Vec<Edge>,
}

/// Reads the crate whose root file is `root` (`src/lib.rs` or `src/main.rs`), `display`
/// naming files relative to `base` in messages.
pub(crate) fn read(source: &dyn Source, root: &Path, base: &Path) -> Result<Tree, Error> {
    let mut reader = Reader {
        source,
        base,
        modules: Vec::new(),
        references: Vec::new(),
    };
    let text = source
        .read(root)
        .ok_or_else(|| Error(format!("cannot read {}", root.display())))?;
    let dir = root.parent().unwrap_or(Path::new("")).to_owned();
    reader.file_module(Vec::new(), None, root, &text, &dir)?;
    Ok(reader.resolve())
}

struct Reader<'a> {
    source: &'a dyn Source,
    base: &'a Path,
    modules: Vec<Module>,
    references: Vec<Reference>,
}

impl Reader<'_> {
    fn display(&self, file: &Path) -> PathBuf {
        file.strip_prefix(self.base).unwrap_or(file).to_owned()
    }

    /// Adds the module written in `file` (its children's files under `dir`).
    fn file_module(
        &mut self,
        path: Vec<String>,
        parent: Option<usize>,
        file: &Path,
        text: &str,
        dir: &Path,
    ) -> Result<usize, Error> {
        let toks = tokens(text);
        let index = self.add(path, parent, file);
        self.items(index, &toks, file, dir)?;
        Ok(index)
    }

    fn add(&mut self, path: Vec<String>, parent: Option<usize>, file: &Path) -> usize {
        let index = self.modules.len();
        if let (Some(p), Some(name)) = (parent, path.last()) {
            self.modules[p].children.insert(name.clone(), index);
        }
        self.modules.push(Module {
            path,
            file: self.display(file),
            parent,
            children: BTreeMap::new(),
        });
        index
    }

    /// Reads the items of module `module` from `toks`: child modules, and references.
    fn items(
        &mut self,
        module: usize,
        toks: &[Token],
        file: &Path,
        dir: &Path,
    ) -> Result<(), Error> {
        let mut i = 0;
        let mut depth = 0usize;
        while i < toks.len() {
            let t = &toks[i];
            if t.is('#') {
                let inner = toks.get(i + 1).is_some_and(|t| t.is('!'));
                let open = i + 1 + usize::from(inner);
                if toks.get(open).is_some_and(|t| t.is('[')) {
                    let close = matching(toks, open).unwrap_or(toks.len());
                    let test_only = is_cfg_test(&toks[open + 1..close.min(toks.len())]);
                    i = close + 1;
                    if test_only && inner {
                        // `#![cfg(test)]`: the whole module is a test module.
                        return Ok(());
                    }
                    if test_only {
                        i = skip_item(toks, i);
                    }
                    continue;
                }
            }
            match &t.kind {
                Kind::Punct('{') => depth += 1,
                Kind::Punct('}') => depth = depth.saturating_sub(1),
                Kind::Ident(word) if word == "mod" && depth == 0 => {
                    if let Some(next) = self.module_item(module, toks, i, file, dir)? {
                        i = next;
                        continue;
                    }
                }
                Kind::Ident(word) if word == "use" => {
                    let reexport = is_pub(toks, i);
                    let (paths, next) = use_tree(toks, i + 1);
                    for p in paths {
                        self.references.push(Reference {
                            module,
                            segments: p.segments,
                            line: p.line,
                            reexport,
                            alias: p.alias,
                        });
                    }
                    i = next;
                    continue;
                }
                Kind::Ident(_)
                    if toks.get(i + 1).is_some_and(|t| t.kind == Kind::PathSep)
                        && !(i > 0 && toks[i - 1].kind == Kind::PathSep) =>
                {
                    let (segments, next) = path(toks, i);
                    self.references.push(Reference {
                        module,
                        segments,
                        line: t.line,
                        reexport: false,
                        alias: None,
                    });
                    i = next;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }

    /// A `mod NAME;` or `mod NAME { .. }` at `i`: adds the child and returns where its
    /// declaration ends.
    fn module_item(
        &mut self,
        module: usize,
        toks: &[Token],
        i: usize,
        file: &Path,
        dir: &Path,
    ) -> Result<Option<usize>, Error> {
        let Some(name) = toks.get(i + 1).and_then(Token::ident) else {
            return Ok(None);
        };
        let mut path = self.modules[module].path.clone();
        path.push(name.to_owned());
        match toks.get(i + 2) {
            Some(t) if t.is(';') => {
                let candidates = [
                    dir.join(format!("{name}.rs")),
                    dir.join(name).join("mod.rs"),
                ];
                let Some((child_file, text)) = candidates
                    .iter()
                    .find_map(|p| self.source.read(p).map(|t| (p.clone(), t)))
                else {
                    return Err(Error(format!(
                        "{}:{}: cannot find the file of module `{name}` (looked for {} and {}; `#[path]` is not supported)",
                        self.display(file).display(),
                        t.line,
                        self.display(&candidates[0]).display(),
                        self.display(&candidates[1]).display(),
                    )));
                };
                self.file_module(path, Some(module), &child_file, &text, &dir.join(name))?;
                Ok(Some(i + 3))
            }
            Some(t) if t.is('{') => {
                let close = matching(toks, i + 2).unwrap_or(toks.len());
                let child = self.add(path, Some(module), file);
                self.items(
                    child,
                    &toks[i + 3..close.min(toks.len())],
                    file,
                    &dir.join(name),
                )?;
                Ok(Some(close + 1))
            }
            _ => Ok(None),
        }
    }

    /// Resolves every reference to the module it names.
    fn resolve(self) -> Tree {
        let reexports: BTreeMap<String, Vec<String>> = self
            .references
            .iter()
            .filter(|r| r.module == 0 && r.reexport)
            .filter_map(|r| {
                let mut segments = r.segments.clone();
                if matches!(segments.first().map(String::as_str), Some("crate" | "self")) {
                    segments.remove(0);
                }
                let name = r.alias.clone().or_else(|| segments.last().cloned())?;
                Some((name, segments))
            })
            .collect();
        let mut edges: BTreeMap<(usize, usize), Edge> = BTreeMap::new();
        for r in &self.references {
            if r.module == 0 && r.reexport {
                continue;
            }
            let Some(to) = target(&self.modules, &reexports, r.module, &r.segments) else {
                continue;
            };
            if to == r.module {
                continue;
            }
            let edge = Edge {
                from: r.module,
                to,
                file: self.modules[r.module].file.clone(),
                line: r.line,
            };
            edges
                .entry((r.module, to))
                .and_modify(|e| {
                    if edge.line < e.line {
                        *e = edge.clone();
                    }
                })
                .or_insert(edge);
        }
        Tree {
            modules: self.modules,
            edges: edges.into_values().collect(),
        }
    }
}

/// The module a path written in `module` leads to, if it names one of the crate's.
fn target(
    modules: &[Module],
    reexports: &BTreeMap<String, Vec<String>>,
    module: usize,
    segments: &[String],
) -> Option<usize> {
    let first = segments.first()?;
    let (mut at, mut rest) = match first.as_str() {
        "crate" => (0, &segments[1..]),
        "self" => (module, &segments[1..]),
        "super" => {
            let mut at = modules[module].parent?;
            let mut rest = &segments[1..];
            while rest.first().map(String::as_str) == Some("super") {
                at = modules[at].parent?;
                rest = &rest[1..];
            }
            (at, rest)
        }
        name => (*modules[module].children.get(name)?, &segments[1..]),
    };
    while let Some(next) = rest.first().and_then(|s| modules[at].children.get(s)) {
        at = *next;
        rest = &rest[1..];
    }
    // An item the crate root re-exports belongs to the module it comes from.
    if at == 0
        && let Some(item) = rest.first()
        && let Some(origin) = reexports.get(item)
        && origin.len() > 1
    {
        let mut to = 0;
        for s in &origin[..origin.len() - 1] {
            match modules[to].children.get(s) {
                Some(c) => to = *c,
                None => break,
            }
        }
        at = to;
    }
    Some(at)
}

/// The index of the bracket that closes the one at `open`.
fn matching(toks: &[Token], open: usize) -> Option<usize> {
    let (o, c) = match toks.get(open)?.kind {
        Kind::Punct('[') => ('[', ']'),
        Kind::Punct('{') => ('{', '}'),
        Kind::Punct('(') => ('(', ')'),
        _ => return None,
    };
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.is(o) {
            depth += 1;
        } else if t.is(c) {
            depth -= 1;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

/// Whether an attribute's tokens (inside its brackets) are `cfg(test)`.
fn is_cfg_test(attr: &[Token]) -> bool {
    attr.len() == 4
        && attr[0].is_ident("cfg")
        && attr[1].is('(')
        && attr[2].is_ident("test")
        && attr[3].is(')')
}

/// Past the item that starts at `i` (its further attributes included): up to a `;`, or
/// through a `{ .. }` block, whichever comes first.
fn skip_item(toks: &[Token], mut i: usize) -> usize {
    while i < toks.len() {
        let t = &toks[i];
        if t.is(';') || t.is(',') {
            return i + 1;
        }
        if t.is('}') {
            // The end of the block the item sits in (a struct field, a match arm).
            return i;
        }
        if t.is('{') || t.is('[') || t.is('(') {
            let close = matching(toks, i).unwrap_or(toks.len());
            if t.is('{') {
                return close + 1;
            }
            i = close + 1;
            continue;
        }
        i += 1;
    }
    i
}

/// Whether the `use` at `i` is a re-export: `pub use` or `pub(..) use`.
fn is_pub(toks: &[Token], i: usize) -> bool {
    match i.checked_sub(1).map(|k| &toks[k]) {
        Some(t) if t.is_ident("pub") => true,
        Some(t) if t.is(')') => {
            let mut k = i - 1;
            while k > 0 && !toks[k].is('(') {
                k -= 1;
            }
            k > 0 && toks[k - 1].is_ident("pub")
        }
        _ => false,
    }
}

/// A path `a::b::c` starting at `i` (a turbofish or anything else ends it), and where it
/// ends.
fn path(toks: &[Token], mut i: usize) -> (Vec<String>, usize) {
    let mut segments = Vec::new();
    while let Some(name) = toks.get(i).and_then(Token::ident) {
        segments.push(name.to_owned());
        if toks.get(i + 1).is_some_and(|t| t.kind == Kind::PathSep)
            && toks.get(i + 2).and_then(Token::ident).is_some()
        {
            i += 2;
        } else {
            i += 1;
            break;
        }
    }
    (segments, i)
}

/// The paths of the use tree that starts at `i` (after `use`), with their lines, and
/// where the declaration ends.
fn use_tree(toks: &[Token], mut i: usize) -> (Vec<UsePath>, usize) {
    if toks.get(i).is_some_and(|t| t.kind == Kind::PathSep) {
        // `use ::name`: another crate.
        i += 1;
    }
    let mut out = Vec::new();
    let next = subtree(toks, i, &[], &mut out);
    let end = toks[next.min(toks.len())..]
        .iter()
        .position(|t| t.is(';'))
        .map_or(toks.len(), |k| next + k + 1);
    (out, end)
}

/// One use tree under `prefix` at `i`: `name`, `name::tree`, `{tree, ..}`, `*`, `self`,
/// with `as alias`; pushes its paths and returns where it ends.
fn subtree(toks: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<UsePath>) -> usize {
    let Some(t) = toks.get(i) else { return i };
    let line = t.line;
    if t.is('{') {
        i += 1;
        while let Some(t) = toks.get(i) {
            if t.is('}') {
                return i + 1;
            }
            if t.is(',') {
                i += 1;
                continue;
            }
            let next = subtree(toks, i, prefix, out);
            if next == i {
                // Not a tree: step over it rather than loop.
                i += 1;
            } else {
                i = next;
            }
        }
        return i;
    }
    if t.is('*') {
        let mut segments = prefix.to_vec();
        segments.push("*".into());
        out.push(UsePath {
            segments,
            line,
            alias: None,
        });
        return i + 1;
    }
    let Some(name) = t.ident() else { return i };
    let mut p = prefix.to_vec();
    if name != "self" || prefix.is_empty() {
        p.push(name.to_owned());
    }
    i += 1;
    if toks.get(i).is_some_and(|t| t.kind == Kind::PathSep) {
        return subtree(toks, i + 1, &p, out);
    }
    let mut alias = None;
    if toks.get(i).is_some_and(|t| t.is_ident("as")) {
        alias = toks.get(i + 1).and_then(Token::ident).map(str::to_owned);
        i += 2;
    }
    out.push(UsePath {
        segments: p,
        line,
        alias,
    });
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(source: &str) -> Vec<String> {
        let toks = tokens(source);
        let (paths, _) = use_tree(&toks, 1);
        paths.into_iter().map(|p| p.segments.join("::")).collect()
    }

    #[test]
    fn use_trees_expand_into_their_paths() {
        assert_eq!(uses("use crate::a::B;"), ["crate::a::B"]);
        assert_eq!(
            uses("use crate::{a::{self, B as C}, b::*, c};"),
            ["crate::a", "crate::a::B", "crate::b::*", "crate::c"]
        );
        assert_eq!(uses("use super::super::x;"), ["super::super::x"]);
        assert_eq!(uses("use ::std::fmt;"), ["std::fmt"]);
    }

    #[test]
    fn paths_stop_at_a_turbofish() {
        let toks = tokens("crate::a::f::<u8>()");
        let (segments, _) = path(&toks, 0);
        assert_eq!(segments, ["crate", "a", "f"]);
    }
}
