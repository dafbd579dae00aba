//! The module graph of a crate's sources, for the architecture tests (`tests/`).
//!
//! A module's imports are the `crate::…` and `super::…` paths its non-test code names (use
//! groups expanded one level); each resolves to the longest module of the crate it names. A
//! circle is looked for among the children of every module: sibling modules (two top-level
//! modules, two files of one directory) must not import each other, directly or around a ring.
//! A child importing its parent (`super::Thing`) is the normal shape of a Rust module and is not a
//! circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module by its path in the crate (`["docker", "pool"]`); the crate root is `[]`.
pub type ModPath = Vec<String>;

/// Every module file of a crate's `src/` and the modules each one imports.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    pub files: BTreeMap<ModPath, PathBuf>,
    pub imports: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

/// A ring of sibling modules under `parent`, each importing the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circle {
    pub parent: ModPath,
    pub members: Vec<String>,
}

impl std::fmt::Display for Circle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parent = if self.parent.is_empty() {
            "crate".to_string()
        } else {
            self.parent.join("::")
        };
        write!(f, "under {parent}: {}", self.members.join(" <-> "))
    }
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The code of a file without its `#[cfg(test)]` parts (tests may import anything) and without
/// comments (a doc comment naming a path is not an import). A `#[cfg(test)] mod x;` drops that
/// line; any other `#[cfg(test)]` item is the file's test module, which ends the file.
fn production_code(text: &str) -> String {
    let mut kept = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            match lines.next() {
                Some(next)
                    if next.trim_start().starts_with("mod ") && next.trim_end().ends_with(';') =>
                {
                    continue
                }
                _ => break,
            }
        }
        kept.push(match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        });
    }
    kept.join("\n")
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `crate::a::b` / `super::super::a` path in `code`, use groups expanded one level.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !is_ident_char(bytes[i - 1]) && bytes[i - 1] != ':';
        let rest: String = bytes[i..bytes.len().min(i + 6)].iter().collect();
        if at_word && (rest.starts_with("crate:") || rest.starts_with("super:")) {
            let mut j = i;
            let mut segs = Vec::new();
            loop {
                let start = j;
                while j < bytes.len() && is_ident_char(bytes[j]) {
                    j += 1;
                }
                if start == j {
                    break;
                }
                segs.push(bytes[start..j].iter().collect::<String>());
                if bytes.get(j) == Some(&':') && bytes.get(j + 1) == Some(&':') {
                    j += 2;
                    if bytes.get(j) == Some(&'{') {
                        let close = bytes[j..].iter().position(|&c| c == '}').map(|p| j + p);
                        if let Some(close) = close {
                            let group: String = bytes[j + 1..close].iter().collect();
                            for item in group.split(',') {
                                let item = item.split(" as ").next().unwrap_or("").trim();
                                let mut p = segs.clone();
                                p.extend(
                                    item.split("::")
                                        .map(str::trim)
                                        .filter(|s| !s.is_empty() && *s != "self")
                                        .map(String::from),
                                );
                                found.push(p);
                            }
                            j = close;
                        }
                        segs.clear();
                        break;
                    }
                } else {
                    break;
                }
            }
            if !segs.is_empty() {
                found.push(segs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

impl ModuleGraph {
    /// Read a crate's `src/` directory.
    pub fn read(src: &Path) -> std::io::Result<ModuleGraph> {
        let mut all = Vec::new();
        rust_files(src, &mut all)?;
        let mut graph = ModuleGraph::default();
        for file in &all {
            graph.files.insert(module_path(src, file), file.clone());
        }
        let files = graph.files.clone();
        for (module, file) in &files {
            let code = production_code(&std::fs::read_to_string(file)?);
            let mut imports = BTreeSet::new();
            for path in paths(&code) {
                let mut full: Vec<String> = Vec::new();
                let mut segs = path.into_iter().peekable();
                if segs.peek().map(String::as_str) == Some("crate") {
                    segs.next();
                } else {
                    full = module.clone();
                    while segs.peek().map(String::as_str) == Some("super") {
                        segs.next();
                        full.pop();
                    }
                }
                full.extend(segs);
                let target = (0..=full.len())
                    .rev()
                    .map(|k| full[..k].to_vec())
                    .find(|p| files.contains_key(p));
                if let Some(target) = target {
                    if &target != module {
                        imports.insert(target);
                    }
                }
            }
            graph.imports.insert(module.clone(), imports);
        }
        Ok(graph)
    }

    /// Rings of sibling modules importing each other (strongly connected groups of two or more).
    pub fn circles(&self) -> Vec<Circle> {
        let parents: BTreeSet<ModPath> = self
            .files
            .keys()
            .filter(|m| !m.is_empty())
            .map(|m| m[..m.len() - 1].to_vec())
            .collect();
        let mut circles = Vec::new();
        for parent in parents {
            let depth = parent.len();
            let child = |m: &ModPath| -> Option<String> {
                (m.len() > depth && m[..depth] == parent[..]).then(|| m[depth].clone())
            };
            let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (from, tos) in &self.imports {
                let Some(a) = child(from) else { continue };
                for to in tos {
                    if let Some(b) = child(to) {
                        if a != b {
                            edges.entry(a.clone()).or_default().insert(b);
                        }
                    }
                }
            }
            for members in strongly_connected(&edges) {
                if members.len() > 1 {
                    circles.push(Circle {
                        parent: parent.clone(),
                        members,
                    });
                }
            }
        }
        circles
    }
}

/// Tarjan's strongly connected components, members sorted.
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if s.stack.contains(&w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            group.sort();
            s.out.push(group);
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v.as_str());
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn finds_sibling_circles_and_ignores_parents_and_tests() {
        let dir = std::env::temp_dir().join(format!("arch-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            "lib.rs",
            "pub mod a;\n#[cfg(test)]\nmod tests;\npub mod b;\npub mod c;\nuse crate::c::C;",
        );
        write(
            &dir,
            "a/mod.rs",
            "pub mod x; pub mod y; use crate::b::Thing;",
        );
        write(&dir, "a/x.rs", "use super::{y::Y, Helper};");
        write(
            &dir,
            "a/y.rs",
            "use super::x::X; // crate::c is only named here",
        );
        write(&dir, "b.rs", "pub fn f() { crate::a::x::go() }");
        write(
            &dir,
            "c.rs",
            "#[cfg(test)]\nmod tests { use crate::a::Thing; }",
        );
        let graph = ModuleGraph::read(&dir).unwrap();
        let mut circles: Vec<String> = graph.circles().iter().map(|c| c.to_string()).collect();
        circles.sort();
        assert_eq!(circles, ["under a: x <-> y", "under crate: a <-> b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
