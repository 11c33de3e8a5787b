//! The direction of imports between the files of src/: none runs up the layers (so no job,
//! runbook or scheduler file sees the application state, which the edges assemble), and no
//! circle, not even two files importing each other. Every path a file names (`crate::…`,
//! `super::…`, a child module's `name::…`, in `use` or inline) is an arrow to the deepest
//! module file it reaches; strongly connected groups of two files or more are circles. A
//! circle that is not in [`KNOWN`] fails the test, so the structure can only get better; when
//! a known circle shrinks or goes, shrink or remove its entry (the test says so).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Circles that existed when the check was added, each as the files it held. A new circle, or
/// a known one that grew, fails. `PRINT_IMPORT_CIRCLES=1 cargo test --test api import_cycles`
/// prints what this list would be today.
const KNOWN: &[&[&str]] = &[];

/// The module path of a file: src/api/guard.rs → ["api", "guard"]; src/api/mod.rs → ["api"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs").to_owned();
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem);
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code without comments, string literals (a path in a doc comment is not an import) and
/// unit tests.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Unit tests sit at the end of a file, and their `super` is the file itself.
    for line in text.lines().take_while(|l| l.trim() != "#[cfg(test)]") {
        let line = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        let mut in_string = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_string = !in_string;
                out.push(' ');
            } else if !in_string {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// Expands the use-tree or path starting at `text` (just after `crate::`, `super::` …) into
/// full paths of segments.
fn expand(text: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut path = prefix;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return i + 1;
                }
                i += expand(&text[i..], path.clone(), out);
            }
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i == start {
            out.push(path);
            return i;
        }
        path.push(text[start..i].to_owned());
        if text[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

fn arrows(src: &Path, files: &BTreeMap<Vec<String>, PathBuf>, file: &Path) -> BTreeSet<PathBuf> {
    let module = module_of(src, file);
    let code = code_only(&std::fs::read_to_string(file).expect("read"));
    let children: BTreeSet<String> = code
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("pub ").strip_prefix("mod ").map(|m| m.trim_end_matches(';').trim().to_owned()))
        .collect();
    let mut paths = Vec::new();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let boundary = at == 0 || !code[..at].ends_with(is_ident) && !code[..at].ends_with("::");
        let mut consumed = 1;
        if boundary {
            if let Some(tail) = rest.strip_prefix("crate::") {
                consumed = 7 + expand(tail, Vec::new(), &mut paths);
            } else if rest.starts_with("super::") {
                let mut base = module.clone();
                let mut tail = rest;
                // A file's module is its own scope; `super` is its parent.
                while let Some(t) = tail.strip_prefix("super::") {
                    base.pop();
                    tail = t;
                }
                consumed = (rest.len() - tail.len()) + expand(tail, base, &mut paths);
            } else if let Some(child) = children.iter().find(|c| rest.starts_with(&format!("{c}::"))) {
                let mut base = module.clone();
                base.push(child.clone());
                consumed = child.len() + 2 + expand(&rest[child.len() + 2..], base, &mut paths);
            }
        }
        at += consumed.max(1);
        while at < code.len() && !code.is_char_boundary(at) {
            at += 1;
        }
    }
    let mut out = BTreeSet::new();
    for mut path in paths {
        while !path.is_empty() {
            if let Some(target) = files.get(&path) {
                if target != file {
                    out.insert(target.clone());
                }
                break;
            }
            path.pop();
        }
    }
    out
}

/// Strongly connected groups (Tarjan), as sets of files.
fn circles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<BTreeSet<PathBuf>> {
    struct State<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<BTreeSet<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else { continue };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.insert(w.clone());
                if w == v {
                    break;
                }
            }
            s.out.push(group);
        }
    }
    let mut s = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), next: 0, out: Vec::new() };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The layers, bottom first, by module path prefix (docs/architecture.md, "Layers"). A file may import its
/// own layer and those below, never one above.
const LAYERS: &[(&str, &[&str])] = &[
    ("ground", &["config", "assets", "keyring", "newtypes", "redis_keys", "redis_conn", "job_catalogue", "clock", "telemetry", "fault", "error_reports"]),
    ("runtime", &["queue", "cache", "ratelimit", "auth", "db", "audit", "metrics", "cpu", "stripe_api"]),
    ("domains", &["stripe", "billing", "usage", "dunning", "email", "slo", "flags", "tenants", "webhooks_out"]),
    ("jobs", &["jobs", "runbook", "scheduler", "maintenance", "health", "backup"]),
    // The state is assembled at the edges: no job, runbook or scheduler file sees it whole.
    // perf/ (benchmarks and the load test) builds on whole members; the scheduled load test's
    // job gets it from the state as a `CapacityTest`, so jobs import nothing of perf/.
    ("edges", &["api", "console", "cli", "perf", "app", "devstripe", "devmail", "state"]),
];

/// The layer of a module: its longest matching prefix (`perf::loadtest` before `perf`).
fn layer_of(module: &[String]) -> Option<usize> {
    let path = module.join("::");
    let matches = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}::"));
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, (_, prefixes))| prefixes.iter().filter(|p| matches(p)).map(move |p| (p.len(), layer)))
        .max()
        .map(|(_, layer)| layer)
}

/// src/, and every file of it with the arrows it draws.
fn import_graph() -> (PathBuf, BTreeMap<PathBuf, BTreeSet<PathBuf>>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut list = Vec::new();
    rust_files(&src, &mut list);
    let files: BTreeMap<Vec<String>, PathBuf> = list.iter().map(|f| (module_of(&src, f), f.clone())).collect();
    let graph = list.iter().map(|f| (f.clone(), arrows(&src, &files, f))).collect();
    (src, graph)
}

#[test]
fn no_import_runs_up_the_layers() {
    let (src, graph) = import_graph();
    let mut upward = Vec::new();
    for (file, targets) in &graph {
        let module = module_of(&src, file);
        if module.is_empty() {
            continue; // lib.rs and main.rs declare the modules
        }
        let from = layer_of(&module).unwrap_or_else(|| panic!("{}: module {:?} is in no layer; add it to LAYERS", file.display(), module[0]));
        for target in targets {
            let to_module = module_of(&src, target);
            if let Some(to) = layer_of(&to_module)
                && to > from
            {
                upward.push(format!("{} ({}) -> {} ({})", file.display(), LAYERS[from].0, target.display(), LAYERS[to].0));
            }
        }
    }
    assert!(upward.is_empty(), "imports that run up the layers:\n{}", upward.join("\n"));
}

#[test]
fn no_new_import_circle_in_src() {
    let (src, graph) = import_graph();
    let root = src.parent().expect("the repository");
    let rel = |p: &PathBuf| p.strip_prefix(root).expect("under root").display().to_string();
    let found: Vec<BTreeSet<String>> =
        circles(&graph).into_iter().filter(|c| c.len() > 1).map(|c| c.iter().map(rel).collect::<BTreeSet<String>>()).collect();
    if std::env::var_os("PRINT_IMPORT_CIRCLES").is_some() {
        // What KNOWN would be today, to paste after a circle shrank.
        let mut text = String::from("const KNOWN: &[&[&str]] = &[\n");
        for circle in &found {
            text.push_str("    &[\n");
            for file in circle {
                text.push_str(&format!("        {file:?},\n"));
            }
            text.push_str("    ],\n");
        }
        text.push_str("];");
        eprintln!("{text}");
    }
    let known: Vec<BTreeSet<String>> = KNOWN.iter().map(|c| c.iter().map(|s| s.to_string()).collect()).collect();
    for circle in &found {
        assert!(
            known.iter().any(|k| circle.is_subset(k)),
            "a new import circle of {} files (or a known one grew): {circle:#?}\nBreak it: a lower module takes what it uses as arguments.",
            circle.len()
        );
    }
    for k in &known {
        assert!(
            found.iter().any(|c| c == k),
            "the known circle {k:#?} shrank or is gone: update KNOWN in tests/api/import_cycles.rs to what remains: {found:#?}"
        );
    }
}

/// The entry of [`LAYERS`] a module falls under: `stripe` for src/stripe/**, `perf::loadtest`
/// for src/perf/loadtest/**.
fn unit_of(module: &[String]) -> Option<String> {
    let path = module.join("::");
    LAYERS
        .iter()
        .flat_map(|(_, prefixes)| prefixes.iter())
        .filter(|p| path == **p || path.starts_with(&format!("{p}::")))
        .max_by_key(|p| p.len())
        .map(|p| p.to_string())
}

/// One level up: the modules [`LAYERS`] names (a folder and its files count as one, `stripe`
/// for src/stripe/**) draw no circle either, so each sits wholly above or below another.
#[test]
fn no_two_top_level_modules_import_each_other() {
    let (src, graph) = import_graph();
    let top = |f: &PathBuf| unit_of(&module_of(&src, f));
    let mut modules: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (file, targets) in &graph {
        let Some(from) = top(file) else { continue };
        let arrows = modules.entry(PathBuf::from(&from)).or_default();
        for target in targets {
            if let Some(to) = top(target).filter(|to| *to != from) {
                arrows.insert(PathBuf::from(to));
            }
        }
    }
    let found: Vec<Vec<String>> = circles(&modules)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.iter().map(|p| p.display().to_string()).collect())
        .collect();
    assert!(found.is_empty(), "top-level modules that import each other (directly or round a circle): {found:?}\nThe lower one takes what it uses as arguments; the caller above joins the two.");
}
