//! The crate's layers import only downward: no module reaches, through
//! its `use` lines and paths, a module that reaches it back. Read from the
//! source itself (comments and unit tests aside), at two levels: between
//! the top-level modules of `src/`, and between the files of each folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `module -> modules it uses`, at one level.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// A file's code: unit tests and comments left out (a doc link is not an
/// import).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names following `prefix` in `code`: `crate::a::b` and
/// `crate::{a, b::c}` both name `a` (and `b`).
fn used_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file of `src/` belongs to.
fn top_module(path: &Path) -> String {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap();
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Between the top-level modules (the binary's `main.rs` and the map in
/// `lib.rs` aside).
fn top_level_graph() -> Graph {
    let mut graph = Graph::new();
    for path in sources(&src()) {
        let module = top_module(&path);
        if module == "main" || module == "lib" {
            continue;
        }
        let used = used_after(&code(&path), "crate::");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(used.into_iter().filter(|m| *m != module));
    }
    graph
}

/// Between the files of each folder of `src/`: `super::x` and
/// `crate::folder::x` from a file of that folder.
fn folder_graphs() -> BTreeMap<String, Graph> {
    let mut graphs = BTreeMap::new();
    for path in sources(&src()) {
        let relative = path.strip_prefix(src()).unwrap();
        let parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().to_string())
            .collect();
        if parts.len() != 2 {
            continue;
        }
        let folder = parts[0].clone();
        let file = parts[1].trim_end_matches(".rs").to_string();
        let code = code(&path);
        let mut used = used_after(&code, "super::");
        used.extend(used_after(&code, &format!("crate::{folder}::")));
        let graph: &mut Graph = graphs.entry(folder).or_default();
        let entry = graph.entry(file.clone()).or_default();
        entry.extend(used.into_iter().filter(|m| *m != file && *m != "mod"));
    }
    graphs
}

/// Every cycle's modules (strongly connected components of two or more).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    // Reachability is enough at this size: a and b share a cycle when
    // each reaches the other.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(next) = todo.pop() {
            for to in graph.get(&next).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (module, reached) in &reaches {
        let cycle: BTreeSet<String> = reached
            .iter()
            .filter(|other| {
                reaches
                    .get(other)
                    .is_some_and(|back| back.contains(module.as_str()))
            })
            .cloned()
            .collect();
        if !cycle.is_empty() && !found.contains(&cycle) {
            found.push(cycle);
        }
    }
    found
}

/// Who uses whom inside `cycle`, for the failure message.
fn describe(graph: &Graph, cycle: &BTreeSet<String>) -> String {
    cycle
        .iter()
        .map(|m| {
            let used: Vec<&String> = graph[m].iter().filter(|u| cycle.contains(*u)).collect();
            format!("{m} -> {used:?}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let graph = top_level_graph();
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "module cycles: {}",
        found
            .iter()
            .map(|c| describe(&graph, c))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

#[test]
fn no_file_of_a_folder_imports_one_that_imports_it_back() {
    for (folder, graph) in folder_graphs() {
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "cycles in src/{folder}/: {}",
            found
                .iter()
                .map(|c| describe(&graph, c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

#[test]
fn the_check_sees_a_cycle_where_there_is_one() {
    // The control: a graph with a cycle is caught, one without is not.
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".to_string()].into());
    graph.insert("b".into(), ["c".to_string()].into());
    graph.insert("c".into(), BTreeSet::new());
    assert!(cycles(&graph).is_empty());
    graph.get_mut("c").unwrap().insert("a".into());
    assert_eq!(
        cycles(&graph),
        [BTreeSet::from(["a".to_string(), "b".into(), "c".into()])]
    );
    assert!(used_after("use crate::{engine::X, pool};", "crate::").contains("pool"));
}
