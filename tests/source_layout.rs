//! The source tree stays walkable: no file of `src/` imports another that
//! imports it back (through any chain), no folder holds more than 12
//! source files, and tests and the benchmark share code through the test
//! kit, never `#[path]`. Reads files only.
//!
//! Imports are what a file names by path: its `use` trees and every
//! `crate::a::b` in its code (doc links included), resolved to the file
//! that defines the longest matching module. `mod.rs` and `lib.rs` are
//! left out: they declare their folder's modules and re-export, so every
//! file of a folder reaches them and they reach every file.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Most source files in one folder.
const MAX_FILES_PER_FOLDER: usize = 12;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target" && n != "node_modules") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(repo().join("src")).unwrap_or(file);
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" && stem != "lib" {
            parts.push(stem);
        }
    }
    parts
}

/// Every path a `use` tree names, flattened (`a::{b, c::d}` is `a::b`, `a::c::d`).
fn flatten(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{').filter(|_| tree.ends_with('}')) {
        let mut base = prefix.to_vec();
        base.extend(
            tree[..open]
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        let body = &tree[open + 1..tree.len() - 1];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    flatten(&body[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        flatten(&body[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut full = prefix.to_vec();
        full.extend(
            path.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        out.push(full);
    }
}

/// The files `file` (module `module`) imports, as module paths.
fn imports(module: &[String], is_folder_root: bool, code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        flatten(&rest[..end], &[], &mut paths);
    }
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + 7..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut full = vec!["crate".to_string()];
        full.extend(path.split("::").filter(|s| !s.is_empty()).map(String::from));
        paths.push(full);
    }
    paths
        .into_iter()
        .filter_map(|p| match p.first().map(String::as_str) {
            Some("crate") => Some(p[1..].to_vec()),
            Some("super") => {
                let mut base = module.to_vec();
                if !is_folder_root {
                    base.pop();
                }
                let mut p = &p[..];
                while p.first().is_some_and(|s| s == "super") {
                    base.pop();
                    p = &p[1..];
                }
                base.extend(p.iter().cloned());
                Some(base)
            }
            Some("self") => Some(module.iter().chain(&p[1..]).cloned().collect()),
            _ => None,
        })
        .collect()
}

#[test]
fn no_file_of_src_imports_a_file_that_imports_it_back() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs") && !f.iter().any(|p| p == "tests"))
        .map(|f| (module_of(f), f.clone()))
        .collect();
    let hub = |f: &Path| f.ends_with("mod.rs") || f.ends_with("lib.rs");
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (module, file) in &modules {
        if hub(file) {
            continue;
        }
        let text = fs::read_to_string(file).expect("a source file");
        // Unit tests may import anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
        let deps = edges.entry(file.clone()).or_default();
        for path in imports(module, false, code) {
            let target = (1..=path.len()).rev().find_map(|k| modules.get(&path[..k]));
            if let Some(target) = target.filter(|t| *t != file && !hub(t)) {
                deps.insert(target.clone());
            }
        }
    }
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "too few imports found: the scan is broken"
    );
    // A file is in a circle when it reaches itself.
    let mut circles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(PathBuf, Vec<PathBuf>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = trail
                        .iter()
                        .map(|p| p.strip_prefix(repo()).unwrap_or(p).display().to_string())
                        .collect();
                    circles.push(names.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles (each back to its start):\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_folder_of_src_holds_more_than_twelve_source_files() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut per_folder: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for f in &files {
        *per_folder
            .entry(f.parent().expect("a folder").to_path_buf())
            .or_default() += 1;
    }
    let crowded: Vec<String> = per_folder
        .iter()
        .filter(|(_, n)| **n > MAX_FILES_PER_FOLDER)
        .map(|(d, n)| format!("{}: {n}", d.strip_prefix(repo()).unwrap_or(d).display()))
        .collect();
    assert!(per_folder.len() > 10, "too few folders found: the scan is broken");
    assert!(
        crowded.is_empty(),
        "folders over {MAX_FILES_PER_FOLDER} source files:\n{}",
        crowded.join("\n")
    );
}

#[test]
fn tests_and_the_benchmark_share_code_through_the_test_kit_not_path_includes() {
    let mut files = Vec::new();
    for dir in ["tests", "benches", "test-kit"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let marker = concat!("#[", "path");
    let includes: Vec<String> = files
        .iter()
        .filter(|f| fs::read_to_string(f).is_ok_and(|t| t.lines().any(|l| l.trim_start().starts_with(marker))))
        .map(|f| f.strip_prefix(repo()).unwrap_or(f).display().to_string())
        .collect();
    assert!(files.len() > 30, "too few files found: the scan is broken");
    assert!(includes.is_empty(), "#[path] includes in: {includes:?}");
}
