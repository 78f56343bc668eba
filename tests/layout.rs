//! The binary crate's floors hold: no import circle among the modules of `src/`, no role file
//! names another role, the shared context names no role, no file is above 600 lines, and the
//! plan operations of `sync/apply.rs` stay small. Test code (`#[cfg(test)]` modules and
//! `testing.rs`) is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The roles a process runs; only `run.rs` names them all.
const ROLES: [&str; 4] = ["receiver", "worker", "scheduler", "admin"];

fn src_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            src_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to: `src/sync/apply.rs` → `sync`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src/");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// The file's text without its `#[cfg(test)]` modules.
fn shipped_text(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.trim() == "#[cfg(test)]" {
            let Some(next) = lines.next() else { break };
            if next.trim_end().ends_with('{') {
                // Skip the block: up to the closing brace at the same indentation.
                let indent = next.len() - next.trim_start().len();
                let close = format!("{}}}", " ".repeat(indent));
                for inner in lines.by_ref() {
                    if inner.trim_end() == close {
                        break;
                    }
                }
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Every `crate::name` a text refers to.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Module → the modules it refers to (shipped code only).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    src_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        if f.file_name().is_some_and(|n| n == "testing.rs") {
            continue;
        }
        let m = module_of(f);
        let text = std::fs::read_to_string(f).expect("readable source");
        let refs = references(&shipped_text(&text));
        let entry = g.entry(m.clone()).or_default();
        for r in refs {
            if r != m && modules.contains(&r) {
                entry.insert(r);
            }
        }
    }
    g
}

fn cycle_from(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut c = path[at..].to_vec();
        c.push(node.to_string());
        return Some(c);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in g.get(node).into_iter().flatten() {
        if let Some(c) = cycle_from(g, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn no_import_circle_among_the_modules_of_src() {
    let g = graph();
    assert!(g.contains_key("sync") && g.contains_key("context"), "{g:?}");
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if let Some(c) = cycle_from(&g, node, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", c.join(" → "));
        }
    }
}

#[test]
fn no_role_names_another_role_and_the_context_names_none() {
    let g = graph();
    for role in ROLES {
        let refs = g.get(role).unwrap_or_else(|| panic!("role {role} exists"));
        for other in ROLES.iter().filter(|r| **r != role) {
            assert!(!refs.contains(*other), "{role} refers to the role {other}");
        }
    }
    let ctx = &g["context"];
    for name in ROLES.iter().chain(&["run"]) {
        assert!(!ctx.contains(*name), "context.rs refers to {name}");
    }
    // Only run.rs (and the demo, which runs the whole service) starts roles.
    for (m, refs) in &g {
        if m != "run" && m != "demo" && m != "cli" {
            assert!(!refs.contains("run"), "{m} starts roles; only run.rs does");
        }
    }
}

#[test]
fn no_file_in_src_is_above_600_lines() {
    let mut files = Vec::new();
    src_files(&src(), &mut files);
    let mut long = Vec::new();
    for f in &files {
        let n = std::fs::read_to_string(f)
            .expect("readable")
            .lines()
            .count();
        if n > 600 {
            long.push(format!("{} ({n} lines)", f.display()));
        }
    }
    assert!(long.is_empty(), "files above 600 lines: {long:?}");
}

#[test]
fn no_function_of_sync_apply_is_above_60_lines() {
    let text = std::fs::read_to_string(src().join("sync/apply.rs")).expect("sync/apply.rs");
    let text = shipped_text(&text);
    let lines: Vec<&str> = text.lines().collect();
    let mut checked = 0;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if !(t.starts_with("fn ") || t.contains(" fn ")) || t.starts_with("//") {
            continue;
        }
        let indent = l.len() - t.len();
        let close = format!("{}}}", " ".repeat(indent));
        let end = lines[i..]
            .iter()
            .position(|x| x.trim_end() == close)
            .map(|n| i + n)
            .expect("a function ends");
        let len = end - i + 1;
        checked += 1;
        assert!(
            len <= 60,
            "{} is {len} lines",
            t.trim_end_matches(['{', ' '])
        );
    }
    assert!(checked >= 8, "found the functions ({checked})");
}

#[test]
fn metric_names_are_spelt_only_in_telemetry() {
    let mut files = Vec::new();
    src_files(&src(), &mut files);
    let mut found = Vec::new();
    for f in files.iter().filter(|f| module_of(f) != "telemetry") {
        let text = shipped_text(&std::fs::read_to_string(f).expect("readable"));
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join("");
        for call in [".inc(\"", ".add(\"", ".set_gauge(\""] {
            if flat.contains(call) {
                found.push(format!("{} uses {call}…", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "metric names outside telemetry/metric.rs: {found:?}"
    );
}

// ---- file level: every `use` and path resolved to the file that defines the name ----

/// The file of a module path (`[]` is the crate root), if the module exists.
fn file_of(module: &[String]) -> Option<PathBuf> {
    if module.is_empty() {
        return Some(src().join("lib.rs"));
    }
    let base = module.iter().fold(src(), |p, m| p.join(m));
    let flat = base.with_extension("rs");
    let folder = base.join("mod.rs");
    [flat, folder].into_iter().find(|p| p.is_file())
}

/// The module path of a file: `src/sync/apply.rs` → `[sync, apply]`, `src/sync/mod.rs` → `[sync]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src/");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let last = parts.pop().expect("a file name");
    if last != "mod.rs" && last != "lib.rs" && last != "main.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// `use` statements of a text, braces expanded: `a::{b, c::d}` → `a::b`, `a::c::d`
/// (an `x as y` keeps both names: `(path ending in x, y)`).
fn use_paths(text: &str) -> Vec<(String, String)> {
    fn expand(prefix: &str, body: &str, out: &mut Vec<(String, String)>) {
        let mut depth = 0;
        let mut start = 0;
        let bytes: Vec<char> = body.chars().collect();
        let mut items = Vec::new();
        for (i, c) in bytes.iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(bytes[start..i].iter().collect::<String>());
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(bytes[start..].iter().collect::<String>());
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if let Some(open) = item.find('{') {
                let head = item[..open].trim_end_matches("::");
                let inner = &item[open + 1..item.rfind('}').unwrap_or(item.len())];
                expand(&join(prefix, head), inner, out);
            } else {
                let (path, alias) = match item.split_once(" as ") {
                    Some((p, a)) => (p.trim(), a.trim()),
                    None => (item, item.rsplit("::").next().unwrap_or(item)),
                };
                out.push((join(prefix, path), alias.to_string()));
            }
        }
    }
    fn join(a: &str, b: &str) -> String {
        match (a.is_empty(), b.is_empty()) {
            (true, _) => b.to_string(),
            (_, true) => a.to_string(),
            _ => format!("{a}::{b}"),
        }
    }
    let mut out = Vec::new();
    // Comments out (a doc line before a `use` must not hide it), then one line.
    let code: Vec<&str> = text
        .lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect();
    let flat: String = code
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for stmt in flat.split(';') {
        let s = stmt.trim();
        let body = s
            .strip_prefix("use ")
            .or_else(|| s.rsplit_once(" use ").map(|(_, b)| b));
        if let Some(body) = body {
            expand("", body.trim(), &mut out);
        }
    }
    out
}

/// The file that defines what `path` names, seen from module `from`; `None` outside `src/`.
fn resolve(from: &[String], path: &str, depth: usize) -> Option<PathBuf> {
    if depth > 8 {
        return None;
    }
    let segs: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut module: Vec<String> = from.to_vec();
    let mut i = 0;
    match segs.first().copied() {
        Some("crate") => {
            module.clear();
            i = 1;
        }
        Some("self") => i = 1,
        Some("super") => {
            while segs.get(i) == Some(&"super") {
                module.pop();
                i += 1;
            }
        }
        Some(first) => {
            let mut child = module.clone();
            child.push(first.to_string());
            file_of(&child)?; // an external crate or a name, not a module of ours
        }
        None => return None,
    }
    while let Some(seg) = segs.get(i) {
        let mut child = module.clone();
        child.push(seg.to_string());
        if file_of(&child).is_some() {
            module = child;
            i += 1;
        } else {
            break;
        }
    }
    let file = file_of(&module)?;
    if let Some(name) = segs.get(i) {
        // A name the module imports (a re-export): follow it to where it is defined.
        let text = shipped_text(&std::fs::read_to_string(&file).ok()?);
        for (p, alias) in use_paths(&text) {
            if alias == *name {
                return resolve(&module, &p, depth + 1);
            }
        }
    }
    Some(file)
}

/// File → the files it imports from (shipped code only).
fn file_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    src_files(&src(), &mut files);
    let mut g = BTreeMap::new();
    for f in &files {
        if f.file_name()
            .is_some_and(|n| n == "testing.rs" || n == "main.rs")
        {
            continue;
        }
        let from = module_path(f);
        let text = shipped_text(&std::fs::read_to_string(f).expect("readable"));
        let mut paths: Vec<String> = use_paths(&text).into_iter().map(|(p, _)| p).collect();
        // Paths written out in code: crate::…, super::…, and child modules of a folder's mod.rs.
        let words: Vec<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.contains("::") && !w.ends_with("::"))
            .map(str::to_string)
            .collect();
        paths.extend(words);
        let mut targets = BTreeSet::new();
        for p in paths {
            if let Some(t) = resolve(&from, &p, 0) {
                if &t != f && !t.ends_with("lib.rs") {
                    targets.insert(t);
                }
            }
        }
        g.insert(f.clone(), targets);
    }
    g
}

#[test]
fn no_import_circle_among_the_files_of_src() {
    let g = file_graph();
    let g: BTreeMap<String, BTreeSet<String>> = g
        .into_iter()
        .map(|(k, v)| {
            let name = |p: &PathBuf| p.strip_prefix(src()).unwrap().display().to_string();
            (name(&k), v.iter().map(name).collect())
        })
        .collect();
    assert!(
        g.get("sync/apply.rs")
            .is_some_and(|t| t.contains("sync/observe.rs")),
        "the resolver sees sync/apply.rs import sync/observe.rs: {:?}",
        g.get("sync/apply.rs")
    );
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if let Some(c) = cycle_from(&g, node, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", c.join(" → "));
        }
    }
}
