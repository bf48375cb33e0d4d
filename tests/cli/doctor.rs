//! `doctor`: every finding with a fixture that causes it, its fix (`--fix` for the safe ones),
//! and a clean project that reports nothing.

use crate::support::*;

fn codes(json: &serde_json::Value) -> Vec<String> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

fn finding<'a>(json: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no {code} in {json}"))
}

/// A repository with the hook installed and main allocated: nothing to report.
fn clean_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    repo.wp(["allocate"]).succeeds();
    repo
}

#[test]
fn a_clean_project_reports_nothing_even_with_variables_in_its_files() {
    let repo = clean_repo();
    commit_files(
        &repo,
        &[
            (
                "compose.yaml",
                "services:\n  web:\n    ports:\n      - \"${WEB_PORT:-8080}:80\"\n      - \"9229\"\n",
            ),
            (
                "compose.override.yaml",
                "services:\n  web:\n    ports: !override\n      - \"${WEB_PORT:-8080}:80\"\n",
            ),
            (
                "package.json",
                "{\"scripts\": {\"dev\": \"vite --port $WEB_PORT\"}}\n",
            ),
            (
                ".devcontainer/devcontainer.json",
                "// no forwards\n{\"name\": \"x\"}\n",
            ),
        ],
    );
    let out = repo.wp(["doctor"]).succeeds();
    assert_eq!(out.stdout(), "no problems found\n");
    let json = repo.wp(["doctor", "--json"]).succeeds().json();
    assert_eq!(
        json,
        serde_json::json!({"schema": 1, "findings": [], "needs_attention": false})
    );
}

#[test]
fn literal_ports_override_lists_and_missing_fallbacks_are_found_and_never_edited() {
    let repo = clean_repo();
    let files = [
        (
            "docker-compose.yml",
            "services:\n  web:\n    ports:\n      - \"8080:80\"\n",
        ),
        (
            "docker-compose.override.yml",
            "services:\n  web:\n    ports:\n      - \"${WEB_PORT}:80\"\n",
        ),
        (
            "package.json",
            "{\n  \"scripts\": {\n    \"dev\": \"next dev --port 3000\"\n  }\n}\n",
        ),
        (
            ".devcontainer/devcontainer.json",
            "{\n  // forwarded\n  \"forwardPorts\": [3000],\n}\n",
        ),
    ];
    commit_files(&repo, &files);
    let out = repo.wp(["doctor", "--json", "--fix"]).fails();
    assert_eq!(out.code(), Some(1));
    let json = out.json();
    let messages: Vec<String> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["code"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "literal-port docker-compose.yml:4: host port 8080",
        "compose-override-appends docker-compose.override.yml:3:",
        "no-fallback docker-compose.override.yml:4: ${WEB_PORT} has no fallback",
        "literal-port package.json:3: script \"dev\" fixes port 3000",
        "literal-port .devcontainer/devcontainer.json:3: forwardPorts forwards port 3000",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(want)),
            "{want}: {messages:#?}"
        );
    }
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["safe_fix"] == false)
    );
    // --fix never touches them.
    for (file, text) in files {
        assert_eq!(std::fs::read_to_string(repo.root.join(file)).unwrap(), text);
    }
}

#[test]
fn registry_findings_and_their_safe_fixes() {
    let repo = clean_repo();
    let b = repo.base;
    let gone = repo.add_worktree("gone");
    let stale = repo.add_worktree("stale");
    let held = repo.add_worktree("held");
    // Made without a checkout, so the installed hook does not run: no ports.
    let unallocated = repo.path("unallocated");
    repo.git([
        "worktree",
        "add",
        "-q",
        "--no-checkout",
        "-b",
        "unallocated",
        unallocated.to_str().unwrap(),
    ]);
    for wt in [&gone, &stale, &held] {
        repo.wp_in(wt, ["allocate"]).succeeds();
    }
    std::fs::remove_dir_all(&gone).unwrap();
    std::fs::write(
        stale.join(".env"),
        "# >>> git-worktree-ports >>> managed block\nWEB_PORT=1\n# <<< git-worktree-ports <<<\n",
    )
    .unwrap();
    let held_web = repo.registry()["allocated_ports"]["held"]["web"]
        .as_u64()
        .unwrap() as u16;
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = Server::start(elsewhere.path(), held_web);
    // An outdated hook of ours, and a repository of the index that is gone.
    let hook = repo.common_dir().join("hooks/post-checkout");
    std::fs::write(
        &hook,
        "#!/bin/sh\n# git-worktree-ports post-checkout hook, v0\nexit 0\n",
    )
    .unwrap();
    let other = repo.another("other", None);
    repo.wp_in(
        &other,
        [
            "allocate",
            "--port",
            &format!("web={}", b + 30),
            "--port",
            &format!("db={}", b + 31),
        ],
    )
    .succeeds();
    std::fs::remove_dir_all(&other).unwrap();

    let json = repo.wp(["doctor", "--json"]).fails().json();
    let mut found = codes(&json);
    found.sort();
    assert_eq!(
        found,
        [
            "gone-allocation",
            "hook-outdated",
            "index-gone-repository",
            "no-allocation",
            "port-held-elsewhere",
            "stale-files",
        ],
        "{json:#}"
    );
    assert!(
        finding(&json, "port-held-elsewhere")["message"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "web {held_web} of worktree held is held by pid {}",
                stranger.pid()
            ))
    );
    assert_eq!(finding(&json, "no-allocation")["severity"], "info");

    // --fix: each safe fix applied and said; what is left is the info.
    let json = repo.wp(["doctor", "--json", "--fix"]).succeeds().json();
    assert_eq!(json["needs_attention"], false, "{json:#}");
    for code in [
        "gone-allocation",
        "stale-files",
        "port-held-elsewhere",
        "hook-outdated",
    ] {
        assert!(
            finding(&json, code)["fixed"].is_string(),
            "{code}: {json:#}"
        );
    }
    // A gone repository keeps its ports (it may have moved): no safe fix drops it.
    assert!(
        finding(&json, "index-gone-repository")
            .get("fixed")
            .is_none(),
        "{json:#}"
    );
    let reg = repo.registry();
    assert!(reg["allocated_ports"].get("gone").is_none());
    assert_ne!(
        reg["allocated_ports"]["held"]["web"], held_web,
        "moved off the held port"
    );
    assert!(
        std::fs::read_to_string(stale.join(".env"))
            .unwrap()
            .contains(&format!(
                "WEB_PORT={}",
                reg["allocated_ports"]["stale"]["web"]
            ))
    );
    assert!(
        std::fs::read_to_string(&hook).unwrap().contains("case"),
        "the current hook"
    );
    let json = repo.wp(["doctor", "--json"]).succeeds().json();
    assert_eq!(codes(&json), ["no-allocation", "index-gone-repository"]);
    repo.wp(["prune", "--all"]).succeeds();
    let json = repo.wp(["doctor", "--json"]).succeeds().json();
    assert_eq!(codes(&json), ["no-allocation"]);
}

#[test]
fn config_changes_ports_outside_ranges_orphans_and_hook_managers() {
    let repo = TestRepo::new();
    let b = repo.base;
    let doomed = repo.add_worktree("doomed");
    repo.wp_in(&doomed, ["allocate"]).succeeds();
    let orphan = Server::start(&doomed, b + 1);
    std::fs::remove_dir_all(&doomed).unwrap();
    repo.wp(["allocate"]).succeeds();
    // web's range moves on, db leaves the config.
    commit_files(
        &repo,
        &[(
            ".worktree-ports/config.toml",
            &format!("[services.web]\nrange = [{}, {}]\n", b + 10, b + 19),
        )],
    );
    repo.git(["config", "core.hooksPath", ".husky/_"]);
    std::fs::create_dir_all(repo.root.join(".husky/_")).unwrap();
    let json = repo.wp(["doctor", "--json"]).fails().json();
    let mut found = codes(&json);
    found.sort();
    assert_eq!(
        found,
        [
            "gone-allocation",
            "hook-manager",
            "port-held-by-orphan",
            "port-outside-range",
            "service-not-in-config",
            "stale-files",
        ],
        "{json:#}"
    );
    assert!(
        finding(&json, "port-held-by-orphan")["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", orphan.pid()))
    );
    assert_eq!(
        finding(&json, "port-held-by-orphan")["fix"],
        "git worktree-ports prune --reap --yes"
    );
    assert!(
        finding(&json, "port-outside-range")["fix"]
            .as_str()
            .unwrap()
            .starts_with("git worktree-ports release main --service web")
    );
    assert!(
        finding(&json, "hook-manager")["message"]
            .as_str()
            .unwrap()
            .starts_with("husky manages")
    );
    // The human form: aligned, each fix under its finding.
    let text = repo.wp(["doctor"]).fails().stdout();
    let text = text
        .replace(repo.env.root().to_str().unwrap(), "[TMP]")
        // Whole "pid N (" only: a pid's digits can also be inside a port.
        .replace(&format!("pid {} (", orphan.pid()), "pid [PID] (")
        .replace(&test_binary_name(), "[TEST-BIN]");
    let text = redact_ports(&text, b);
    insta::assert_snapshot!("doctor_human", text);
}

/// Ports of this test's block as `B+nnn` (as wide as a port, so columns stay aligned),
/// highest first.
fn redact_ports(text: &str, base: u16) -> String {
    let mut out = text.to_string();
    for n in (0..BLOCK).rev() {
        out = out.replace(&(base + n).to_string(), &format!("B+{n:03}"));
    }
    out
}

#[test]
fn a_missing_hook_is_a_note_and_a_broken_template_an_error() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let json = repo.wp(["doctor", "--json"]).succeeds().json();
    assert_eq!(codes(&json), ["hook-missing"], "a note: exit 0");
    assert_eq!(finding(&json, "hook-missing")["severity"], "info");
    commit_files(
        &repo,
        &[(".worktree-ports/templates/.env.tera", "WEB={{ ports.web\n")],
    );
    let out = repo.wp(["doctor", "--json"]).fails();
    let json = out.json();
    let broken = finding(&json, "render-fails");
    assert_eq!(broken["severity"], "error");
    assert!(
        broken["message"].as_str().unwrap().contains(".env.tera"),
        "{broken}"
    );
}

/// Colour on a terminal (a pty from script(1)), none with NO_COLOR or through a pipe.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let bin = bin();
    let run = |no_color: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &format!("{} doctor", bin.display()), "/dev/null"])
            .current_dir(&repo.root);
        repo.env.apply(&mut cmd);
        if !no_color {
            cmd.env_remove("NO_COLOR");
        }
        cmd.output()
    };
    let Ok(coloured) = run(false) else {
        skip("colour_only_on_a_terminal_and_never_with_no_color: script(1) is not installed");
        return;
    };
    assert!(String::from_utf8_lossy(&coloured.stdout).contains("\x1b[2minfo\x1b[0m"));
    let plain = run(true).unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains('\x1b'));
    let piped = repo.wp(["doctor"]).env("NO_COLOR", "").succeeds().stdout();
    assert!(!piped.contains('\x1b'), "{piped}");
}
