//! Library code stays legible: no file over 800 lines and no function over 150 lines in `crates/*/src`
//! and `src/` (tests, examples and benches are not counted).
//!
//! The files and functions that were over the limits when this check was written are listed in
//! [`KNOWN`] with their size then: they may shrink, never grow, and the check fails once one is under the
//! limit so that its entry is removed. New code gets no entry.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 150;

/// `(file, function or "" for the whole file, lines when the check was written)`, to be split.
const KNOWN: [(&str, &str, usize); 0] = [];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Library sources: `src/` and every `crates/*/src/`.
fn library_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for krate in std::fs::read_dir(root().join("crates")).unwrap().flatten() {
        rust_files(&krate.path().join("src"), &mut files);
    }
    files.sort();
    files
}

/// A line without its `//` comment and with string and char literals emptied, so that the braces left
/// are code.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => break,
            '"' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('{', '\n') is skipped; a lifetime ('a) is kept as it is.
                let rest: String = chars.clone().take(3).collect();
                let len = if rest.starts_with('\\') {
                    rest.find('\'').map(|i| i + 1)
                } else if rest.chars().nth(1) == Some('\'') {
                    Some(2)
                } else {
                    None
                };
                for _ in 0..len.unwrap_or(0) {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The name of the function declared on `line`, if any.
fn fn_name(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "pub" | "const" | "unsafe" | "async" | "extern" => continue,
            w if w.starts_with("pub(") => continue,
            "fn" => {
                let name = words.next()?;
                let end = name.find(['(', '<']).unwrap_or(name.len());
                return Some(&name[..end]);
            }
            _ => return None,
        }
    }
    None
}

/// `(name, first line (1-based), lines)` of every function with a body in `text`.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<String> = text.lines().map(code_of).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else {
            continue;
        };
        let mut depth = 0i64;
        let mut started = false;
        for (j, code) in lines.iter().enumerate().skip(i) {
            if !started && depth == 0 && code.contains(';') && !code.contains('{') {
                break; // a declaration without a body
            }
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth == 0 {
                out.push((name.to_string(), i + 1, j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn the_function_finder_sees_bodies_braces_and_declarations() {
    let text = "fn a() {\n    let s = \"}\";\n    let c = '{';\n}\n\npub(crate) fn b<T>(x: T)\nwhere\n    T: Copy,\n{\n    // }\n    x;\n}\nfn c();\n";
    assert_eq!(
        functions(text),
        vec![("a".to_string(), 1, 4), ("b".to_string(), 6, 7)]
    );
}

#[test]
fn library_files_and_functions_stay_under_the_limits() {
    let mut problems = Vec::new();
    let mut seen_known = Vec::new();
    for path in library_files() {
        let rel = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut check = |what: &str, lines: usize, limit: usize| {
            let known = KNOWN.iter().find(|(f, n, _)| *f == rel && *n == what);
            match known {
                Some(&(_, _, was)) => {
                    seen_known.push((rel.clone(), what.to_string()));
                    if lines > was {
                        problems.push(format!(
                            "{rel} {what}: {lines} lines, up from {was} (over the limit of {limit}: split it)"
                        ));
                    } else if lines <= limit {
                        problems.push(format!(
                            "{rel} {what}: {lines} lines, now within {limit}: remove it from KNOWN"
                        ));
                    }
                }
                None if lines > limit => problems.push(format!(
                    "{rel} {what}: {lines} lines, over the limit of {limit}"
                )),
                None => {}
            }
        };
        check("", text.lines().count(), MAX_FILE_LINES);
        // The longest function of each name (a file may have several `run`s).
        let mut longest = std::collections::BTreeMap::<String, usize>::new();
        for (name, _, lines) in functions(&text) {
            let entry = longest.entry(name).or_default();
            *entry = (*entry).max(lines);
        }
        for (name, lines) in longest {
            check(&name, lines, MAX_FN_LINES);
        }
    }
    for (file, name, _) in KNOWN {
        if !seen_known.iter().any(|(f, n)| f == file && n == name) {
            problems.push(format!(
                "{file} {name}: listed in KNOWN but gone: remove the entry"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
