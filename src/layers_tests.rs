//! The walls between top-level modules (docs/architecture.md, STYLE "Layers"): imports run one
//! way, so no two top-level modules reach each other, directly or round a loop. Read from the
//! source text: every `crate::X` path (in `use`, `use crate::{X, …}` or inline) in a module's
//! non-test code is an edge to `X`; comments, literals and `#[cfg(test)]` modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `text` without comments and string/char literals (each literal becomes `""`).
fn without_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(hashes) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += body
                + rest[body..]
                    .find(&close)
                    .map_or(rest.len(), |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' && out.ends_with("#[path = ") {
            // A `#[path]` attribute's literal is kept: it names a test module's file.
            let len = rest[1..].find('"').map_or(rest.len(), |e| e + 2);
            out.push_str(&rest[..len]);
            i += len;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap_or(1);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br"`…: the number of `#`.
fn raw_string_start(s: &str) -> Option<usize> {
    let s = s.strip_prefix('b').unwrap_or(s).strip_prefix('r')?;
    let hashes = s.len() - s.trim_start_matches('#').len();
    s[hashes..].starts_with('"').then_some(hashes)
}

/// The length of a char literal at the start of `s` (`'a'`, `'\n'`, `'\''`), not a lifetime.
fn char_literal_len(s: &str) -> Option<usize> {
    let mut it = s.char_indices().skip(1);
    let (_, c) = it.next()?;
    if c == '\\' {
        return s.get(3..)?.find('\'').map(|e| e + 4);
    }
    let (j, close) = it.next()?;
    (close == '\'').then_some(j + 1)
}

/// `code` without its `#[cfg(test)] mod x { … }` blocks; the names of `#[cfg(test)] mod x;`
/// files (with the `#[path]` when there is one).
fn without_tests(code: &str) -> (String, Vec<(String, Option<String>)>) {
    let mut out = String::new();
    let mut files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let mut after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let mut path = None;
        while after.starts_with("#[") {
            let end = after.find(']').map_or(after.len(), |e| e + 1);
            if let Some(p) = after[..end].strip_prefix("#[path = ") {
                path = Some(p.trim_end_matches(']').trim_matches('"').to_string());
            }
            after = after[end..].trim_start();
        }
        let Some(item) = after.strip_prefix("mod ") else {
            rest = after;
            continue;
        };
        let name: String = item
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let tail = item[name.len()..].trim_start();
        if let Some(tail) = tail.strip_prefix(';') {
            files.push((name, path));
            rest = tail;
        } else if let Some(body) = tail.strip_prefix('{') {
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(body.len(), |(j, _)| j + 1);
            rest = &body[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    (out, files)
}

/// The first identifier of each top-level item of a `use crate::{…}` group, or the one after
/// `crate::`.
fn heads(after: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = after.trim_start().strip_prefix('{') else {
        return vec![ident(after)];
    };
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (j, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.push(ident(&group[start..j]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ident(&group[start..j]));
                start = j + 1;
            }
            _ => {}
        }
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The edges between the top-level modules of the crate whose source is `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut code = BTreeMap::new();
    let mut test_files = BTreeSet::new();
    for f in &files {
        let (text, tests) = without_tests(&without_comments(&std::fs::read_to_string(f).unwrap()));
        let name = f.file_name().unwrap().to_str().unwrap();
        let dir = if ["mod.rs", "lib.rs", "main.rs"].contains(&name) {
            f.parent().unwrap().to_path_buf()
        } else {
            f.with_extension("")
        };
        for (m, path) in tests {
            match path {
                Some(p) => test_files.insert(f.parent().unwrap().join(p)),
                None => test_files.insert(dir.join(format!("{m}.rs"))),
            };
            test_files.insert(dir.join(&m).join("mod.rs"));
        }
        code.insert(f.clone(), text);
    }
    let top = |f: &Path| -> Option<String> {
        let first = f.strip_prefix(src).ok()?.components().next()?;
        let first = first.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (!["lib", "main"].contains(&name)).then(|| name.to_string())
    };
    let tops: BTreeSet<String> = files
        .iter()
        .filter(|f| !test_files.contains(*f))
        .filter_map(|f| top(f))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (f, text) in &code {
        let Some(me) = top(f).filter(|_| !test_files.contains(f)) else {
            continue;
        };
        for (at, _) in text.match_indices("crate::") {
            let before = text[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
            for to in heads(&text[at + "crate::".len()..]) {
                if to != me && tops.contains(&to) {
                    edges.entry(me.clone()).or_default().insert(to);
                }
            }
        }
    }
    edges
}

/// The modules from which `from` is reached again, if any: one cycle through `from`.
fn cycle_through(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == from {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    edges
        .keys()
        .filter_map(|m| cycle_through(edges, m))
        .map(|c| format!("{} -> {}", c.join(" -> "), c[0]))
        .collect()
}

#[test]
fn top_level_modules_import_each_other_one_way_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(
        edges.contains_key("proxy"),
        "the graph reads the source: {edges:?}"
    );
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "import cycles between top-level modules (break one edge of each; see \
         docs/architecture.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_cycle_is_found_and_test_code_comments_and_strings_are_not_edges() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod c;").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::{b::x, c};\n// crate::d\nconst S: &str = \"crate::d\";\n\
         #[cfg(test)]\nmod tests { use crate::d; }\n#[cfg(test)]\n#[path = \"a_t.rs\"]\nmod t;",
    )
    .unwrap();
    std::fs::write(src.join("a_t.rs"), "use crate::d;").unwrap();
    std::fs::write(
        src.join("b/mod.rs"),
        "fn f() -> char { let _ = 'x'; crate::a::g() }",
    )
    .unwrap();
    std::fs::write(src.join("c.rs"), "").unwrap();
    std::fs::write(src.join("d.rs"), "use crate::a;").unwrap();
    let edges = graph(src);
    let want: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b", "c"]), ("b", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(edges, want);
    assert_eq!(cycles(&edges), ["a -> b -> a", "b -> a -> b"]);
}

/// The crate's modules are private: the binary, the benches and the integration tests reach the
/// library through `exposed` only, the fuzz targets through `fuzzing` (docs/architecture.md,
/// "Visibility"). A module made `pub` in lib.rs would export everything in it and hide its dead
/// code from the compiler.
#[test]
fn lib_rs_exports_only_the_doors_for_the_other_targets() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let code = without_comments(&lib);
    let lines: Vec<&str> = code.lines().map(str::trim).collect();
    let public: Vec<(&str, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("pub"))
        .map(|(i, l)| (lines[i.saturating_sub(1)], *l))
        .collect();
    assert_eq!(
        public,
        [
            ("#[doc(hidden)]", "pub mod exposed;"),
            ("#[doc(hidden)]", "pub mod fuzzing;")
        ],
        "src/lib.rs: modules are private (`mod x;`); what another target needs is re-exported \
         from src/exposed.rs"
    );
}
