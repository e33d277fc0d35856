//! No module imports one that imports it back: the graph of `crate::` and `super::` paths between the files of
//! `src/` has no cycle, whether modules are taken file by file (`daemon::state`) or by their top-level module
//! (`daemon`). Nesting does not count (a module uses its own children), and unit-test files are left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

type Module = Vec<String>;

/// Every module file under `dir`, by its module path.
fn modules(root: &Path, dir: &Path, out: &mut BTreeMap<Module, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("src/ is readable").filter_map(Result::ok).collect();
    entries.sort_by_key(fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            modules(root, &path, out);
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
        if path.extension().and_then(|e| e.to_str()) != Some("rs") || stem == "tests" || stem.ends_with("_tests") {
            continue;
        }
        let relative = path.parent().and_then(|p| p.strip_prefix(root).ok()).expect("under src/");
        let mut module: Module = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        if !["mod", "lib", "main"].contains(&stem.as_str()) {
            module.push(stem);
        }
        let text = fs::read_to_string(&path).expect("a source file");
        // The inline unit tests at the end of a file may use anything.
        let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
        let code: String =
            text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        out.insert(module, code);
    }
}

/// The paths a use tree names, `a::{b, c::d}` giving `a::b` and `a::c::d`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()];
    };
    let head: Vec<String> =
        tree[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut items, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items
        .iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(|item| expand(item).into_iter().map(|tail| head.iter().cloned().chain(tail).collect()))
        .collect()
}

/// The use tree starting at byte `start` of `code` (a path, possibly with one braced group).
fn tree_at(code: &str, start: usize) -> &str {
    let mut depth = 0;
    for (i, c) in code[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return &code[start..start + i],
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &code[start..=start + i];
                }
            }
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return &code[start..start + i],
            _ => {}
        }
    }
    &code[start..]
}

fn graph(modules: &BTreeMap<Module, String>, depth: usize) -> BTreeMap<Module, BTreeSet<Module>> {
    let cut = |m: &Module| m.iter().take(depth).cloned().collect::<Module>();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in modules {
        let me = cut(module);
        for (keyword, base) in [("crate::", Vec::new()), ("super::", module[..module.len().saturating_sub(1)].to_vec())]
        {
            for (at, _) in code.match_indices(keyword) {
                if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                for path in expand(tree_at(code, at + keyword.len())) {
                    let full: Module = base.iter().cloned().chain(path.into_iter().filter(|s| s != "self")).collect();
                    let Some(target) =
                        (1..=full.len()).rev().map(|k| full[..k].to_vec()).find(|p| modules.contains_key(p))
                    else {
                        continue;
                    };
                    let target = cut(&target);
                    let nested = target.starts_with(&me) || me.starts_with(&target);
                    if !nested {
                        edges.entry(me.clone()).or_default().insert(target);
                    }
                }
            }
        }
    }
    edges
}

/// A cycle of `edges`, if there is one.
fn cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        path: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].iter().chain([node]).cloned().collect());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

#[test]
fn module_graph_has_no_cycle() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut found = BTreeMap::new();
    modules(root, root, &mut found);
    assert!(found.len() > 50, "only {} modules found", found.len());
    for depth in [1, usize::MAX] {
        let edges = graph(&found, depth);
        assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 40, "too few imports seen: {edges:?}");
        if let Some(cycle) = cycle(&edges) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("module import cycle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_check_sees_a_cycle() {
    let modules: BTreeMap<Module, String> = [
        (vec!["a".to_owned()], "use crate::{b::{self, X}, c};".to_owned()),
        (vec!["b".to_owned()], "use crate::c::Y;".to_owned()),
        (vec!["c".to_owned()], "fn f() { crate::a::g() }".to_owned()),
    ]
    .into_iter()
    .collect();
    let edges = graph(&modules, usize::MAX);
    let found = cycle(&edges).expect("a -> b -> c -> a");
    assert_eq!(found.len(), 4, "{found:?}");
}
