//! Owns the guard against import cycles between files. Test only.
//!
//! The layer tests in `layering.rs` look at whole modules. This one looks at files: it reads every `.rs`
//! under `src/` (not `main.rs`, which is its own crate), builds a graph file -> file from the
//! paths each file names, and fails on any cycle, naming the files and the paths that close it.
//!
//! What makes an edge. A path that starts with `crate::`, `super::` or `self::` (in a `use` tree,
//! groups expanded, or in code), or with the name of a child module or of something a `use`
//! brought into scope. Comments and string literals are skipped; `mod x { ... }` blocks in a
//! file are followed, so `super::` in a file's inline `mod tests` is the file itself.
//!
//! Which file a path names. The longest prefix of its module path that is a file: `crate::a::b::X`
//! is `a/b.rs` (or `a/b/mod.rs`) if it exists, else `a.rs` (or `a/mod.rs`); `crate::X` is
//! `lib.rs`. If what is left names an import of that file (`pub use b::X;`, or a private `use`
//! a child can see), the path is followed through it to the file that defines `X`: importing a
//! re-export is depending on the file behind it, and a parent's `pub use` cannot launder a
//! sibling cycle. Glob imports are not followed.
//!
//! Two kinds of edge do not count, because they are how Rust modules are built, not a
//! dependency between two ideas:
//! * a file -> an ancestor module file (`super::Error`, `crate::mfa::MfaError` from
//!   `mfa/host.rs`): children share their parent's items, and a parent always knows its children;
//! * a parent module file -> a descendant through a `pub use` (a re-export that makes the child's
//!   item part of the parent's face). A parent's private `use child::X` or a call
//!   `child::f()` counts.
//!
//! So a cycle is between files where neither contains the other: siblings (`mfa/host.rs` <->
//! `mfa/delivery.rs`), cousins, or files of different modules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::paths::{PathRef, path_refs};

/// The sources of a crate: each file's module path, and the paths it names.
struct Crate {
    root: PathBuf,
    /// Module path -> the file that is that module.
    files: BTreeMap<Vec<String>, PathBuf>,
    refs: BTreeMap<PathBuf, Vec<PathRef>>,
}

impl Crate {
    fn read(root: &Path) -> Crate {
        let mut files = BTreeMap::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                let rel = p.strip_prefix(root).unwrap();
                if p.extension().is_none_or(|x| x != "rs") || rel == Path::new("main.rs") {
                    continue;
                }
                let mut module: Vec<String> = rel
                    .with_extension("")
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                if module == ["lib"] || module.last().is_some_and(|s| s == "mod") {
                    module.pop();
                }
                files.insert(module, rel.to_path_buf());
            }
        }
        let refs = files
            .iter()
            .map(|(module, rel)| {
                let text = std::fs::read_to_string(root.join(rel)).unwrap();
                (rel.clone(), path_refs(&text, module))
            })
            .collect();
        Crate {
            root: root.to_path_buf(),
            files,
            refs,
        }
    }

    /// `segments` as seen from `module`, made absolute; `None` for what is outside the crate.
    fn absolute(&self, module: &[String], segments: &[String]) -> Option<Vec<String>> {
        self.absolute_in(module, segments, 0)
    }

    fn absolute_in(
        &self,
        module: &[String],
        segments: &[String],
        hops: usize,
    ) -> Option<Vec<String>> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" => Some(segments[1..].to_vec()),
            "self" if segments.get(1).is_some_and(|s| s == "super") => {
                self.absolute_in(module, &segments[1..], hops)
            }
            "self" => Some([module, &segments[1..]].concat()),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = module.get(..module.len().checked_sub(ups)?)?;
                Some([base, &segments[ups..]].concat())
            }
            _ => {
                let child = [module, &segments[..1]].concat();
                if self.files.contains_key(&child) {
                    return Some([module, segments].concat());
                }
                // A name a `use` in this module brought in (`use crate::mfa::host;`, `host::X`).
                let file = self.file_of(module)?;
                let import = self.refs[file].iter().find(|r| {
                    r.module == module
                        && r.binds.as_ref() == Some(first)
                        && r.segments != [first.clone()]
                })?;
                if hops > 16 {
                    return None;
                }
                let base = self.absolute_in(&import.module, &import.segments, hops + 1)?;
                Some([&base[..], &segments[1..]].concat())
            }
        }
    }

    /// The file that holds `module` (an inline module is in its file).
    fn file_of(&self, module: &[String]) -> Option<&PathBuf> {
        (0..=module.len())
            .rev()
            .find_map(|k| self.files.get(&module[..k]))
    }

    /// The file an absolute path names, following the imports of the file it lands in.
    fn target(&self, path: &[String], hops: usize) -> Option<PathBuf> {
        let k = (0..=path.len())
            .rev()
            .find(|k| self.files.contains_key(&path[..*k]))?;
        let file = &self.files[&path[..k]];
        if let (Some(name), true) = (path.get(k), hops < 16) {
            let import = self.refs[file]
                .iter()
                .find(|r| r.module == path[..k] && r.binds.as_ref() == Some(name));
            // An import from outside the crate is this file's to depend on.
            if let Some(base) = import.and_then(|r| self.absolute(&r.module, &r.segments)) {
                return self.target(&[&base[..], &path[k + 1..]].concat(), hops + 1);
            }
        }
        Some(file.clone())
    }

    fn module_of(&self, file: &Path) -> &[String] {
        self.files
            .iter()
            .find(|(_, f)| f.as_path() == file)
            .map(|(m, _)| m.as_slice())
            .unwrap_or(&[])
    }

    /// The edges that count (see above): file -> file, with the first path that made each.
    fn edges(&self) -> BTreeMap<PathBuf, BTreeMap<PathBuf, String>> {
        let mut graph: BTreeMap<PathBuf, BTreeMap<PathBuf, String>> = BTreeMap::new();
        for (file, refs) in &self.refs {
            let from = self.module_of(file);
            for r in refs {
                let Some(path) = self.absolute(&r.module, &r.segments) else {
                    continue;
                };
                let Some(to) = self.target(&path, 0) else {
                    continue;
                };
                let to_module = self.module_of(&to);
                let ancestor = to_module.len() < from.len() && from.starts_with(to_module);
                let reexport = r.reexport && to_module.starts_with(from);
                if &to == file || ancestor || reexport {
                    continue;
                }
                graph
                    .entry(file.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("line {}: {}", r.line, r.segments.join("::")));
            }
        }
        graph
    }

    /// The import cycles: each strongly connected set of more than one file (Tarjan), as its
    /// shortest loop (each edge with the path that made it) and the other files it holds.
    fn cycles(&self) -> Vec<Vec<String>> {
        let graph = self.edges();
        let nodes: Vec<&PathBuf> = self.refs.keys().collect();
        let index_of: BTreeMap<&PathBuf, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                graph
                    .get(*n)
                    .map(|to| to.keys().filter_map(|t| index_of.get(t).copied()).collect())
                    .unwrap_or_default()
            })
            .collect();
        let mut t = Tarjan {
            succ: &succ,
            index: vec![None; nodes.len()],
            low: vec![0; nodes.len()],
            on_stack: vec![false; nodes.len()],
            stack: Vec::new(),
            next: 0,
            sccs: Vec::new(),
        };
        for v in 0..nodes.len() {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        let mut out = Vec::new();
        for scc in t.sccs.into_iter().filter(|s| s.len() > 1) {
            let cycle = shortest_cycle(&succ, &scc);
            let mut lines: Vec<String> = (0..cycle.len())
                .map(|i| {
                    let (a, b) = (nodes[cycle[i]], nodes[cycle[(i + 1) % cycle.len()]]);
                    let why = &graph[a][b];
                    format!("{} -> {} ({why})", a.display(), b.display())
                })
                .collect();
            if scc.len() > cycle.len() {
                let mut others: Vec<String> = scc
                    .iter()
                    .filter(|v| !cycle.contains(v))
                    .map(|v| nodes[*v].display().to_string())
                    .collect();
                others.sort();
                lines.push(format!("(the same knot holds {})", others.join(", ")));
            }
            out.push(lines);
        }
        out.sort();
        out
    }
}

/// The shortest cycle inside a strongly connected set, from its first file in order.
fn shortest_cycle(succ: &[Vec<usize>], scc: &[usize]) -> Vec<usize> {
    let mut sorted = scc.to_vec();
    sorted.sort_unstable();
    let mut best: Vec<usize> = Vec::new();
    for &start in &sorted {
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            if succ[v].contains(&start) {
                let mut path = vec![v];
                let mut at = v;
                while at != start {
                    at = prev[&at];
                    path.push(at);
                }
                path.reverse();
                if best.is_empty() || path.len() < best.len() {
                    best = path;
                }
                break;
            }
            for &w in &succ[v] {
                if scc.contains(&w) && w != start && !prev.contains_key(&w) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
    }
    best
}

struct Tarjan<'a> {
    succ: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    sccs: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.succ[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            self.sccs.push(scc);
        }
    }
}

#[test]
fn no_import_cycle_between_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    assert!(
        krate.files.len() > 50,
        "sources not found in {}",
        krate.root.display()
    );
    // The scan itself still sees the imports (a broken scan would find no cycle either).
    let edges: usize = krate.edges().values().map(BTreeMap::len).sum();
    assert!(edges > 300, "only {edges} file -> file imports found");
    let cycles = krate.cycles();
    assert!(
        cycles.is_empty(),
        "files import each other (move the shared item to the file that owns it):\n{}",
        cycles
            .iter()
            .map(|c| format!("  {}", c.join("\n  ")))
            .collect::<Vec<_>>()
            .join("\n--\n")
    );
}

#[test]
fn the_cycle_guard_sees_what_it_looks_for() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod m;\npub mod c;\npub mod d;\n");
    // The parent re-exports its children and uses one; the children use the parent.
    write(
        "m/mod.rs",
        "pub mod a;\npub mod b;\npub use a::{A, self as aa};\npub struct P;\nfn f() { b::g(); }\n",
    );
    // A sibling cycle: a -> b through a group, b -> a through the parent's re-export.
    write(
        "m/a.rs",
        "use super::{P, b::{B}};\npub struct A;\n#[cfg(test)]\nmod tests { use super::*; }\n",
    );
    write(
        "m/b.rs",
        "// crate::c::C is only a comment\nconst S: &str = \"crate::d::D\";\npub struct B(crate::m::A);\npub fn g() {}\n",
    );
    // c and d: a cycle through paths in code.
    write("c.rs", "pub struct C;\nfn f() { crate::d::h(); }\n");
    write("d.rs", "pub fn h() { let _ = super::c::C; }\n");
    let krate = Crate::read(dir.path());
    let cycles = krate.cycles();
    let edges: Vec<&str> = cycles.iter().flatten().map(|s| s.as_str()).collect();
    assert_eq!(
        edges,
        [
            "c.rs -> d.rs (line 2: crate::d::h)",
            "d.rs -> c.rs (line 1: super::c::C)",
            "m/a.rs -> m/b.rs (line 1: super::b::B)",
            "m/b.rs -> m/a.rs (line 3: crate::m::A)",
        ],
        "{cycles:#?}"
    );
}
