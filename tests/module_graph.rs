//! The crate's module graph at the granularity of its top-level modules (`gguf`, `quant`,
//! `backend`, `kld`, `pipeline`, `verify`, `cli`, …: the `mod` items of src/lib.rs): read every
//! src/**/*.rs, collect the modules each one names through `crate::X` (also inside `use
//! crate::{…}` groups) and through `super::` chains that climb to the crate root, and check
//! - the graph has no cycle (each set of modules that depend on each other is printed with one
//!   cycle through it, `a → b → … → a`, and the files that make each edge);
//! - only `cli` (and `verify` itself) depends on `verify`: verification stays out of the product;
//! - nothing depends on `cli` (src/main.rs, the binary, is not part of the library's graph).
//!
//! Comments, string and char literals are skipped, so a path in a doc comment is no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments and string/char literals replaced by spaces (newlines kept).
fn code_only(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut o = String::with_capacity(s.len());
    let mut i = 0;
    let blank = |o: &mut String, ch: char| o.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut o, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // Raw string r"…" / r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                o.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            'raw: while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                blank(&mut o, c[j]);
                j += 1;
            }
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut o, c[i]);
                }
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}', '"') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                o.push(c[i]);
                i += 1;
            }
        } else {
            o.push(c[i]);
            i += 1;
        }
    }
    o
}

fn ident_at(c: &[char], mut i: usize) -> (String, usize) {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    let start = i;
    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
        i += 1;
    }
    (c[start..i].iter().collect(), i)
}

/// The first path segment of each item of a `{…}` group that starts at `c[i] == '{'`.
fn group_heads(c: &[char], i: usize, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut expect_head = true;
    let mut j = i;
    while j < c.len() {
        match c[j] {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                }
                j += 1;
            }
            '}' => {
                depth -= 1;
                j += 1;
                if depth == 0 {
                    return;
                }
            }
            ',' => {
                if depth == 1 {
                    expect_head = true;
                }
                j += 1;
            }
            ch if ch.is_whitespace() => j += 1,
            _ => {
                if expect_head && depth == 1 {
                    let (id, k) = ident_at(c, j);
                    if !id.is_empty() {
                        out.push(id);
                    }
                    expect_head = false;
                    j = k.max(j + 1);
                } else {
                    j += 1;
                }
            }
        }
    }
}

/// The module path of a file below src/: src/a/b.rs → [a, b]; src/a/mod.rs → [a].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs").to_string();
    if stem != "mod" {
        parts.push(stem);
    }
    parts
}

/// Top-level module names that `code` (of the file at module path `path`) refers to.
fn references(code: &str, path: &[String]) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let word_start = |i: usize| i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    let starts = |i: usize, w: &str| {
        w.chars()
            .enumerate()
            .all(|(k, ch)| c.get(i + k) == Some(&ch))
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if word_start(i) && starts(i, "crate::") && (i == 0 || c[i - 1] != '$') {
            let j = i + "crate::".len();
            if c.get(j) == Some(&'{') {
                group_heads(&c, j, &mut out);
            } else {
                let (id, _) = ident_at(&c, j);
                out.push(id);
            }
            i = j;
        } else if word_start(i) && starts(i, "super::") {
            // Climb: each `super::` leaves one level of the file's module path.
            let mut level = path.len();
            let mut j = i;
            while starts(j, "super::") {
                level = level.saturating_sub(1);
                j += "super::".len();
            }
            if level == 0 {
                if c.get(j) == Some(&'{') {
                    group_heads(&c, j, &mut out);
                } else {
                    let (id, _) = ident_at(&c, j);
                    out.push(id);
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Top-level modules (`mod X;` in src/lib.rs).
fn top_level_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).expect("src/lib.rs");
    code_only(&lib)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(|n| n.trim().to_string())
        })
        .collect()
}

/// Edges a → b between distinct top-level modules, each with the files that make it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn module_graph() -> Graph {
    let top = top_level_modules();
    assert!(
        top.len() >= 8 && top.contains("cli") && top.contains("backend"),
        "src/lib.rs: expected the crate's modules, found {top:?}"
    );
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut g = Graph::new();
    for f in files {
        let rel = f.strip_prefix(src_dir()).unwrap().to_path_buf();
        let path = module_path(&rel);
        // lib.rs declares the modules; main.rs is the binary, outside the library's graph.
        let Some(from) = path.first().filter(|m| top.contains(*m)) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        for to in references(&code, &path) {
            if to != *from && top.contains(&to) {
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(format!("src/{}", rel.display()));
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (Tarjan), each sorted.
fn tangles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn strong(t: &mut T, v: &str) {
        let i = t.index.len();
        t.index.insert(v.to_string(), i);
        t.low.insert(v.to_string(), i);
        t.stack.push(v.to_string());
        t.on_stack.insert(v.to_string());
        let next: Vec<String> =
            t.g.get(v)
                .map(|e| e.keys().cloned().collect())
                .unwrap_or_default();
        for w in next {
            if !t.index.contains_key(&w) {
                strong(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on_stack.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on_stack.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            strong(&mut t, v);
        }
    }
    t.out
}

/// A shortest cycle through `start` inside `comp` (breadth-first search), `start` first and last.
fn cycle_through(g: &Graph, comp: &[String], start: &str) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(v) = queue.pop_front() {
        for w in g
            .get(&v)
            .map(|e| e.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !comp.contains(&w) {
                continue;
            }
            if w == start {
                let mut path = vec![v.clone()];
                while path.last().unwrap() != start {
                    path.push(prev[path.last().unwrap()].clone());
                }
                path.reverse();
                path.push(start.to_string());
                return path;
            }
            if !prev.contains_key(&w) && w != start {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w);
            }
        }
    }
    unreachable!("{start} is in a strongly connected component of {comp:?}")
}

fn describe_cycle(g: &Graph, cyc: &[String]) -> String {
    let mut s = cyc.join(" → ");
    for w in cyc.windows(2) {
        let files: Vec<&String> = g[&w[0]][&w[1]].iter().collect();
        s += &format!("\n  {} → {}: {:?}", w[0], w[1], files);
    }
    s
}

fn dependents_of<'a>(g: &'a Graph, target: &str) -> Vec<(&'a String, &'a BTreeSet<String>)> {
    g.iter()
        .filter_map(|(from, e)| e.get(target).map(|files| (from, files)))
        .collect()
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = module_graph();
    for (from, e) in &g {
        eprintln!("{from} → {:?}", e.keys().collect::<Vec<_>>());
    }
    let found = tangles(&g);
    let report: Vec<String> = found
        .iter()
        .map(|comp| {
            format!(
                "modules {comp:?} depend on each other, e.g. {}",
                describe_cycle(&g, &cycle_through(&g, comp, &comp[0]))
            )
        })
        .collect();
    assert!(found.is_empty(), "module cycles:\n{}", report.join("\n"));
}

#[test]
fn only_cli_depends_on_verify() {
    let g = module_graph();
    let bad: Vec<_> = dependents_of(&g, "verify")
        .into_iter()
        .filter(|(from, _)| from.as_str() != "cli")
        .collect();
    assert!(bad.is_empty(), "product modules depend on verify: {bad:?}");
}

#[test]
fn nothing_depends_on_cli() {
    let g = module_graph();
    let bad = dependents_of(&g, "cli");
    assert!(bad.is_empty(), "modules depend on cli: {bad:?}");
}

/// The scanner itself, on hand-written sources: what must and must not count as a reference.
#[test]
fn references_are_read_from_code_only() {
    let src = r#"
        //! Uses `crate::doc_only` in a doc comment.
        use crate::alpha::Beta;
        use crate::{gamma::G, delta, epsilon::{self, E}};
        /* crate::block_comment */
        fn f() -> &'static str { let _c = '"'; "crate::in_string" }
        fn g() { super::zeta::h(); super::super::eta::i(); crate::theta::j(); }
        macro_rules! m { () => { $crate::macro_path } }
    "#;
    let code = code_only(src);
    let at_root = references(&code, &["a".to_string()]);
    assert_eq!(
        at_root,
        ["alpha", "gamma", "delta", "epsilon", "zeta", "eta", "theta"],
        "a top-level file: super:: names crate-root modules"
    );
    let nested = references(&code, &["a".to_string(), "b".to_string()]);
    assert_eq!(
        nested,
        ["alpha", "gamma", "delta", "epsilon", "eta", "theta"],
        "a file one level down: super:: is its own top-level module, super::super:: the root"
    );
    // A hand-made cycle a → b → c → a is found, a chain a → b → c is not.
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), BTreeSet::from(["x.rs".to_string()]));
    }
    assert_eq!(tangles(&g), [["a", "b", "c"]]);
    assert_eq!(
        cycle_through(&g, &tangles(&g)[0], "b"),
        ["b", "c", "a", "b"]
    );
    g.get_mut("c").unwrap().clear();
    assert!(tangles(&g).is_empty());
}
