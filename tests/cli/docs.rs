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

/// Issue 27: the agent skill is what `skill` prints, in the Agent Skills format, and every
/// command, option and error code it tells an agent to use exists: a skill that drifts from
/// the tool fails here. The commands of its example block that need nothing else run.
#[test]
fn the_agent_skill_names_only_commands_options_and_codes_that_exist() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/skills/git-worktree-ports");
    let skill = std::fs::read_to_string(format!("{dir}/SKILL.md")).unwrap();
    let agents = std::fs::read_to_string(format!("{dir}/AGENTS.md")).unwrap();
    let repo = crate::support::TestRepo::new();
    repo.wp(["skill"]).stdout_is(skill.clone()).succeeds();
    repo.wp(["skill", "--agents-md"])
        .stdout_is(agents.clone())
        .succeeds();

    // Front matter: name (the folder's, lowercase and hyphens, at most 64) and description
    // (at most 1024 characters), between two `---` lines.
    let front = skill
        .strip_prefix("---\n")
        .and_then(|s| s.split_once("\n---\n"))
        .expect("front matter")
        .0;
    let field = |k: &str| {
        (front.lines())
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("no {k} in {front}"))
            .to_string()
    };
    let name = field("name");
    assert_eq!(name, "git-worktree-ports");
    assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '-') && name.len() <= 64);
    let description = field("description");
    assert!(
        !description.is_empty() && description.len() <= 1024,
        "{description}"
    );

    // Every `git worktree-ports <command> [--option]...` it shows exists.
    let codes = schema_codes("error", "Code");
    for text in [&skill, &agents] {
        for (i, _) in text.match_indices("git worktree-ports ") {
            let rest = &text[i + "git worktree-ports ".len()..];
            let words: Vec<&str> = rest
                .split(|c: char| c.is_whitespace() || c == '`' || c == ')' || c == ';')
                .take_while(|w| !w.is_empty() && *w != "--" && !w.starts_with('#'))
                .collect();
            let Some(sub) = words.first() else { continue };
            if sub.starts_with('<') {
                continue;
            }
            // A global option (`--print-schema`) is in the top-level help.
            let ask: &[&str] = match sub.starts_with("--") {
                true => &["-h"],
                false => &[sub, "-h"],
            };
            let help = std::process::Command::new(bin())
                .args(ask)
                .output()
                .unwrap();
            assert!(help.status.success(), "`{sub}` is no command: {rest:.60}");
            let help = String::from_utf8_lossy(&help.stdout);
            for opt in words.iter().filter(|w| w.starts_with("--")) {
                assert!(help.contains(*opt), "`{sub}` has no {opt}");
            }
        }
        // Every error code it names is one the tool prints.
        for word in text.split(|c: char| !(c.is_ascii_uppercase() || c == '_')) {
            // (Port variables are no codes.)
            let variable = ["_PORT", "_PORTS", "_ID", "_URL"]
                .iter()
                .any(|v| word.ends_with(v));
            if word.len() > 6 && word.contains('_') && !variable {
                assert!(codes.contains(word), "{word} is no error code");
            }
        }
    }

    // The example block's commands that need no other program run as shown.
    let block = skill
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut ran = 0;
    for line in block.lines() {
        let cmd = line.split('#').next().unwrap().trim();
        let Some(args) = cmd.strip_prefix("git worktree-ports ") else {
            continue;
        };
        if args.contains("--") && args.contains(" -- ") {
            continue;
        }
        let args: Vec<&str> = args.split_whitespace().collect();
        repo.wp(&args).succeeds();
        ran += 1;
    }
    assert!(ran >= 5, "{ran} commands of the example ran");
    // exec sets the ports the other commands print.
    let web = repo.wp(["get", "web"]).succeeds().stdout();
    repo.wp(["exec", "--", "sh", "-c", "echo $WEB_PORT"])
        .stdout_is(web)
        .succeeds();
}
