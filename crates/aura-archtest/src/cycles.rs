//! Cycles among a crate's modules: the strongly connected components of its module graph
//! (Tarjan's algorithm), each shown as one shortest cycle with the line behind every step.

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::modules::{Edge, Tree};

/// One step of a cycle: `from` uses `to`, first at `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub from: String,
    pub to: String,
    pub file: PathBuf,
    pub line: u32,
}

/// A cycle among modules: each step's module uses the next, and the last the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The modules of the strongly connected component the cycle was found in, sorted
    /// (often more than the cycle passes through).
    pub modules: Vec<String>,
    /// One shortest cycle through the component's first module.
    pub steps: Vec<Step>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.steps.iter().map(|s| s.from.as_str()).collect();
        if let Some(first) = self.steps.first() {
            names.push(&first.from);
        }
        write!(f, "{}", names.join(" -> "))?;
        for s in &self.steps {
            write!(
                f,
                "\n    {}:{}: `{}` uses `{}`",
                s.file.display(),
                s.line,
                s.from,
                s.to
            )?;
        }
        if self.modules.len() > self.steps.len() {
            write!(
                f,
                "\n    (the cycle's component: {})",
                self.modules.join(", ")
            )?;
        }
        Ok(())
    }
}

/// A module's name as `use` would write it from the root (`crate` for the root).
pub(crate) fn name(tree: &Tree, module: usize) -> String {
    let path = &tree.modules[module].path;
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

/// Every cycle of the tree's module graph, one per strongly connected component.
pub(crate) fn cycles(tree: &Tree) -> Vec<Cycle> {
    let n = tree.modules.len();
    let mut out_edges: Vec<Vec<&Edge>> = vec![Vec::new(); n];
    for e in &tree.edges {
        out_edges[e.from].push(e);
    }
    let mut cycles = Vec::new();
    for component in components(n, &out_edges) {
        if component.len() < 2 {
            continue;
        }
        let mut modules: Vec<String> = component.iter().map(|&m| name(tree, m)).collect();
        modules.sort();
        let Some(start) = component.iter().copied().min_by_key(|&m| name(tree, m)) else {
            continue;
        };
        let steps = shortest_cycle(start, &component, &out_edges)
            .into_iter()
            .map(|e| Step {
                from: name(tree, e.from),
                to: name(tree, e.to),
                file: e.file.clone(),
                line: e.line,
            })
            .collect();
        cycles.push(Cycle { modules, steps });
    }
    cycles.sort_by(|a, b| a.modules.cmp(&b.modules));
    cycles
}

/// The strongly connected components (Tarjan), iteratively so no module graph can
/// overflow the stack.
fn components(n: usize, out_edges: &[Vec<&Edge>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut found = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        // (module, how many of its edges were followed)
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut k)) = work.last_mut() {
            if let Some(e) = out_edges[v].get(*k) {
                *k += 1;
                let w = e.to;
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                found.push(component);
            }
        }
    }
    found
}

/// A shortest cycle from `start` back to it, within `component` (breadth first).
fn shortest_cycle<'a>(
    start: usize,
    component: &[usize],
    out_edges: &[Vec<&'a Edge>],
) -> Vec<&'a Edge> {
    let mut came_by: Vec<Option<&Edge>> = vec![None; out_edges.len()];
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for e in &out_edges[v] {
            if !component.contains(&e.to) {
                continue;
            }
            if e.to == start {
                let mut steps = vec![*e];
                let mut at = v;
                while at != start {
                    let Some(prev) = came_by[at] else { break };
                    steps.push(prev);
                    at = prev.from;
                }
                steps.reverse();
                return steps;
            }
            if came_by[e.to].is_none() {
                came_by[e.to] = Some(*e);
                queue.push_back(e.to);
            }
        }
    }
    Vec::new()
}
