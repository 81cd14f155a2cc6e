//! Owns reading the paths a Rust source file names (`use` trees and paths in code), for the
//! cycle guard: a small tokenizer that skips comments and literals, and follows inline `mod`s.

/// A token of Rust source, as much as paths need: identifiers, `::` and other punctuation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Sep,
    Punct(char),
}

/// The tokens of `text` with their lines; comments, strings and char literals dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let is_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let is_cont = |ch: char| ch.is_alphanumeric() || ch == '_';
    // Skips a quoted literal from its opening quote; `raw` has no escapes and ends at `"#..#`.
    let skip_quoted = |i: &mut usize, line: &mut usize, quote: char, raw: Option<usize>| {
        *i += 1;
        while *i < c.len() {
            let ch = c[*i];
            if ch == '\n' {
                *line += 1;
            }
            if ch == '\\' && raw.is_none() {
                *i += 2;
                continue;
            }
            *i += 1;
            if ch == quote {
                let hashes = raw.unwrap_or(0);
                if c[*i..].iter().take(hashes).all(|h| *h == '#') && *i + hashes <= c.len() {
                    *i += hashes;
                    return;
                }
            }
        }
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
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
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            skip_quoted(&mut i, &mut line, '"', None);
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a, 'static).
            if next == Some('\\') || c.get(i + 2) == Some(&'\'') {
                skip_quoted(&mut i, &mut line, '\'', None);
            } else {
                i += 1;
            }
        } else if is_start(ch) {
            let start = i;
            while i < c.len() && is_cont(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && matches!(c.get(i), Some('"' | '#')) {
                let hashes = c[i..].iter().take_while(|h| **h == '#').count();
                if c.get(i + hashes) == Some(&'"') {
                    i += hashes;
                    skip_quoted(&mut i, &mut line, '"', Some(hashes));
                    continue;
                }
                if word == "r" && hashes == 1 {
                    // A raw identifier: `r#type`.
                    i += 1;
                    continue;
                }
            }
            if matches!(word.as_str(), "b" | "c") && c.get(i) == Some(&'"') {
                skip_quoted(&mut i, &mut line, '"', None);
                continue;
            }
            if word == "b" && c.get(i) == Some(&'\'') {
                skip_quoted(&mut i, &mut line, '\'', None);
                continue;
            }
            out.push((Tok::Ident(word), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_cont(c[i]) {
                i += 1;
            }
        } else if ch == ':' && next == Some(':') {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// A path one file names: where it stands (the module, inline `mod` blocks included), its
/// segments as written, and its line.
#[derive(Debug, Clone)]
pub(super) struct PathRef {
    pub module: Vec<String>,
    pub segments: Vec<String>,
    pub line: usize,
    /// From a `pub use` (any `pub(..)` too): a re-export.
    pub reexport: bool,
    /// For a `use` leaf: the name it binds (`None` for a glob, `as _`, or a path in code).
    pub binds: Option<String>,
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

/// Reads one `use` tree from `i` under `prefix`; returns the index after it.
fn use_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: &[String],
    leaf: &mut dyn FnMut(Vec<String>, Option<String>),
) -> usize {
    let mut segs = prefix.to_vec();
    if toks.get(i).is_some_and(|t| t.0 == Tok::Sep) {
        i += 1;
    }
    while let Some(s) = ident(toks.get(i)) {
        if s == "as" {
            break;
        }
        segs.push(s.to_owned());
        i += 1;
        if toks.get(i).is_some_and(|t| t.0 == Tok::Sep) {
            i += 1;
        } else {
            break;
        }
    }
    match toks.get(i).map(|t| &t.0) {
        Some(Tok::Punct('{')) => {
            i += 1;
            while i < toks.len() && toks[i].0 != Tok::Punct('}') {
                i = use_tree(toks, i, &segs, leaf);
                if toks.get(i).is_some_and(|t| t.0 == Tok::Punct(',')) {
                    i += 1;
                }
            }
            i + 1
        }
        Some(Tok::Punct('*')) => {
            leaf(segs, None);
            i + 1
        }
        _ => {
            if segs.last().is_some_and(|s| s == "self") {
                segs.pop();
            }
            let mut binds = segs.last().cloned();
            if ident(toks.get(i)) == Some("as") {
                binds = ident(toks.get(i + 1))
                    .filter(|a| *a != "_")
                    .map(str::to_owned);
                i += 2;
            }
            leaf(segs, binds);
            i
        }
    }
}

/// Every path a file names, in `use` trees and in code.
pub(super) fn path_refs(text: &str, file_module: &[String]) -> Vec<PathRef> {
    let toks = tokens(text);
    let mut refs = Vec::new();
    // Inline `mod name {`: the name and the brace depth its block closes at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let module = || {
            let mut m = file_module.to_vec();
            m.extend(inline.iter().map(|(n, _)| n.clone()));
            m
        };
        match &toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(k) if k == "mod" => {
                if let Some(name) = ident(toks.get(i + 1))
                    && toks.get(i + 2).is_some_and(|t| t.0 == Tok::Punct('{'))
                {
                    inline.push((name.to_owned(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(k) if k == "use" => {
                let reexport = match i.checked_sub(1).map(|j| &toks[j].0) {
                    Some(Tok::Ident(p)) => p == "pub",
                    Some(Tok::Punct(')')) => (0..i)
                        .rev()
                        .find(|j| toks[*j].0 == Tok::Punct('('))
                        .and_then(|j| j.checked_sub(1))
                        .is_some_and(|j| ident(toks.get(j)) == Some("pub")),
                    _ => false,
                };
                let (line, m) = (toks[i].1, module());
                let end = use_tree(&toks, i + 1, &[], &mut |segments, binds| {
                    refs.push(PathRef {
                        module: m.clone(),
                        segments,
                        line,
                        reexport,
                        binds,
                    });
                });
                i = end;
                continue;
            }
            Tok::Ident(first) => {
                // A path in code: `a::b::c`, not the tail of a longer one.
                let starts = i == 0 || toks[i - 1].0 != Tok::Sep;
                if starts && toks.get(i + 1).is_some_and(|t| t.0 == Tok::Sep) {
                    let mut segments = vec![first.clone()];
                    let mut j = i + 1;
                    while toks.get(j).is_some_and(|t| t.0 == Tok::Sep) {
                        match ident(toks.get(j + 1)) {
                            Some(s) => segments.push(s.to_owned()),
                            None => break,
                        }
                        j += 2;
                    }
                    refs.push(PathRef {
                        module: module(),
                        segments,
                        line: toks[i].1,
                        reexport: false,
                        binds: None,
                    });
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    refs
}
