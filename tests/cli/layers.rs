//! The layers of ARCHITECTURE.md, enforced: every `crate::<layer>` path in a source file
//! (a `use` line or a path in code) must go to a layer its own layer may import.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Who may import whom (besides itself). `lib.rs` and `main.rs` wire everything and are not
/// checked.
const RULES: &[(&str, &[&str])] = &[
    ("cli", &[]),
    (
        "commands",
        &["workspace", "output", "cli", "model", "proxy"],
    ),
    ("output", &["cli", "model"]),
    (
        "workspace",
        &["registry", "machine", "render", "model", "sys", "output"],
    ),
    ("registry", &["model", "sys"]),
    ("render", &["model", "sys"]),
    ("machine", &["registry", "model", "sys"]),
    ("proxy", &["machine", "registry", "model", "sys"]),
    ("mcp", &["commands", "cli", "model", "output", "sys"]),
    ("sys", &["model"]),
    ("model", &[]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a source file belongs to (its first component under `src/`).
fn layer_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::<name>` a line of code names (comments skipped).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let name: String = rest[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = &rest[i + 7..];
        }
    }
    out
}

#[test]
fn every_import_follows_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let layers: Vec<&str> = RULES.iter().map(|(l, _)| *l).collect();
    let mut broken = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let from = layer_of(rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let allowed = RULES
            .iter()
            .find(|(l, _)| *l == from)
            .unwrap_or_else(|| panic!("{}: a file outside every layer", rel.display()))
            .1;
        for to in imports(&std::fs::read_to_string(file).unwrap()) {
            assert!(
                layers.contains(&to.as_str()),
                "{}: crate::{to} is not a layer",
                rel.display()
            );
            if to != from && !allowed.contains(&to.as_str()) {
                broken.insert(format!("{} -> {to}", rel.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layers (ARCHITECTURE.md):\n{}",
        broken
            .iter()
            .map(|s| format!("    {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_import_scanner_sees_use_lines_and_paths_but_not_comments() {
    let text = "use crate::model::error;\n// crate::sys in a comment\nlet x = crate::sys::git::x(); // crate::proxy\n/// [`crate::render`]\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["model", "sys"]);
}

/// `unsafe` and `libc` live only in `sys/`, and every `unsafe` block says why it is sound.
#[test]
fn unsafe_and_libc_only_in_sys_each_with_a_safety_comment() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let uses_unsafe = code.contains("unsafe {") || code.contains("unsafe fn");
            if layer_of(rel) != "sys" {
                assert!(
                    !uses_unsafe && !code.contains("libc::"),
                    "{}:{}: unsafe or libc outside sys/: {code}",
                    rel.display(),
                    i + 1
                );
            } else if uses_unsafe {
                let said = lines[..i]
                    .iter()
                    .rev()
                    .take(4)
                    .any(|l| l.contains("SAFETY:"));
                assert!(
                    said,
                    "{}:{}: an unsafe block without a SAFETY comment",
                    rel.display(),
                    i + 1
                );
            }
        }
    }
}

/// Commands are presenters (issue 25, step 4): arguments -> one use case -> an answer -> text
/// or JSON. No file system, socket or child process, and no lock or registry save, in
/// `commands/`: those are use cases, in `workspace/`.
#[test]
fn commands_do_no_io_and_take_no_locks() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src.join("commands"), &mut files);
    assert!(files.len() > 10, "{files:?}");
    let forbidden = [
        "std::fs",
        "std::net",
        "process::Command",
        "TcpListener",
        ".lock()",
        "load_locked(",
        ".save(&",
        "File::open",
    ];
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for f in forbidden {
                assert!(
                    !code.contains(f),
                    "{}:{}: `{f}` in a presenter; move it into a use case in workspace/: {code}",
                    rel.display(),
                    i + 1
                );
            }
        }
    }
}
