//! The README's tables of error codes and doctor findings, checked against the codes the
//! binary prints (its `--print-schema`), both ways: no code undocumented, no row for a code
//! that does not exist.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::bin;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The codes a definition of `--print-schema <command>` enumerates.
fn schema_codes(command: &str, def: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(bin())
        .args(["--print-schema", command])
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    let one_of = schema["$defs"][def]["oneOf"].as_array().unwrap_or_else(|| {
        panic!("{command}: no enumerated {def} in {schema:#}");
    });
    one_of
        .iter()
        .map(|v| v["const"].as_str().unwrap().to_string())
        .collect()
}

/// The codes in the first column of the README table that follows `heading` (each row's
/// backquoted words, `a` / `b` rows give both).
fn table_codes(heading: &str) -> BTreeSet<String> {
    let text = readme();
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &text[start..];
    let table = &rest[rest.find("\n|").unwrap() + 1..];
    let mut out = BTreeSet::new();
    for line in table.lines() {
        if !line.starts_with('|') {
            break;
        }
        let first = line.split('|').nth(1).unwrap();
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 {
                out.insert(part.to_string());
            }
        }
    }
    out
}

#[test]
fn the_readme_error_table_lists_exactly_the_error_codes() {
    let documented = table_codes("| code | meaning |");
    let real = schema_codes("error", "Code");
    assert_eq!(documented, real);
}

#[test]
fn the_readme_finding_table_lists_exactly_doctors_codes() {
    let documented = table_codes("| code | what | fix");
    let real = schema_codes("doctor", "FindingCode");
    assert_eq!(documented, real);
    let severities = schema_codes("doctor", "Severity");
    assert_eq!(
        severities,
        ["error", "info", "warning"].map(String::from).into()
    );
}
