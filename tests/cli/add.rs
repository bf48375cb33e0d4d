//! `add`: git worktree add + allocate + render, atomic from the user's view.

use crate::support::*;

#[test]
fn add_with_zero_config_writes_env_with_the_ports_and_a_compose_name() {
    let repo = TestRepo::without_config();
    let b = repo.base;
    // Pin every built-in service so the test does not depend on 8080 etc. being free here.
    let pins: Vec<String> = ["web", "api", "db", "test", "debug"]
        .iter()
        .enumerate()
        .map(|(i, s)| format!("--port={s}={}", b + i as u16))
        .collect();
    let mut args = vec!["add".to_string(), "-b".into(), "feature-x".into()];
    args.push(repo.path("feature-x").to_str().unwrap().into());
    args.extend(pins);
    args.push("--json".into());
    let out = repo.wp(&args).succeeds().json();
    assert_eq!(out["worktree"], "feature-x");
    assert_eq!(out["branch"], "feature-x");
    assert_eq!(out["rendered"][0]["path"], ".env");
    let env = std::fs::read_to_string(repo.path("feature-x/.env")).unwrap();
    insta::assert_snapshot!("builtin_env", redact(&env, &repo));
    assert!(env.contains(&format!("WEB_PORT={b}\n")), "{env}");
    assert!(
        env.contains("COMPOSE_PROJECT_NAME=repo-feature-x\n"),
        "{env}"
    );
    let status = repo
        .env
        .git(&repo.path("feature-x"), ["status", "--porcelain"]);
    assert_eq!(status, "", "rendered files must not show in git status");
}

#[test]
fn add_without_pins_uses_builtin_ranges_and_env_matches_the_registry() {
    let repo = TestRepo::without_config();
    let path = repo.path("plain");
    let out = repo
        .wp(["add", path.to_str().unwrap(), "--json"])
        .succeeds()
        .json();
    let env = std::fs::read_to_string(path.join(".env")).unwrap();
    for (service, port) in ports_of(&out["ports"]) {
        let var = format!("{}_PORT={port}\n", service.to_uppercase());
        assert!(env.contains(&var), "{var} missing from {env}");
    }
    assert!(out["ports"]["web"].as_u64().unwrap() >= 8080);
}

#[test]
fn add_with_b_and_a_commit_ish_passes_through_to_git() {
    let repo = TestRepo::new();
    let first = repo.git(["rev-parse", "HEAD"]).trim().to_string();
    commit_files(&repo, &[("second.txt", "2\n")]);
    // -b with a start point.
    let a = repo.path("from-first");
    let out = repo
        .wp([
            "add",
            "-b",
            "old-start",
            a.to_str().unwrap(),
            &first,
            "--json",
        ])
        .succeeds()
        .json();
    assert_eq!(out["branch"], "old-start");
    assert_eq!(repo.env.git(&a, ["rev-parse", "HEAD"]).trim(), first);
    assert!(!a.join("second.txt").exists());
    // A bare commit-ish: detached.
    let d = repo.path("detached");
    let out = repo
        .wp(["add", d.to_str().unwrap(), &first, "--json"])
        .succeeds()
        .json();
    assert_eq!(out["branch"], serde_json::Value::Null);
    assert_ne!(out["ports"]["web"], serde_json::Value::Null);
    // --lock passes through too.
    let l = repo.path("locked");
    repo.wp(["add", "--lock", l.to_str().unwrap()]).succeeds();
    assert!(repo.common_dir().join("worktrees/locked/locked").exists());
}

#[test]
fn git_failure_leaves_no_allocation() {
    let repo = TestRepo::new();
    let path = repo.path("occupied");
    write(&path.join("mine.txt"), "user data\n");
    let out = repo.wp(["add", path.to_str().unwrap(), "--json"]).fails();
    assert_eq!(out.json()["error"], "GIT_FAILED");
    assert!(
        out.stderr().contains("already exists"),
        "git's own message shows: {}",
        out.describe()
    );
    assert!(!repo.registry_path().exists());
    assert_eq!(
        std::fs::read_to_string(path.join("mine.txt")).unwrap(),
        "user data\n"
    );
    assert_eq!(
        repo.git(["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
}

#[test]
fn allocation_failure_removes_the_new_worktree_and_branch_again() {
    let block = port_block();
    let base = block.base;
    let config = format!("[services.web]\nrange = [{base}, {base}]\n");
    let repo = TestRepo::with_config(&config, block);
    repo.wp(["allocate"]).succeeds();
    let path = repo.path("no-room");
    let out = repo
        .wp(["add", "-b", "no-room", path.to_str().unwrap(), "--json"])
        .fails();
    assert_eq!(out.json()["error"], "RANGE_EXHAUSTED");
    assert!(
        out.stderr().contains("removed the new worktree"),
        "{}",
        out.describe()
    );
    assert!(!path.exists());
    assert_eq!(
        repo.git(["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert_eq!(
        repo.git(["branch", "--list", "no-room"]),
        "",
        "the branch -b made is gone"
    );
    let keys: Vec<String> = repo.registry()["allocated_ports"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["main"]);
}

#[test]
fn add_with_no_render_allocates_only() {
    let repo = TestRepo::new();
    let path = repo.path("quiet");
    let out = repo
        .wp(["add", path.to_str().unwrap(), "--no-render", "--json"])
        .succeeds()
        .json();
    assert_eq!(out["rendered"], serde_json::json!([]));
    assert!(!path.join(".env").exists());
    // The main worktree took the base ports first (main-first).
    assert_eq!(out["ports"]["web"], repo.base + 1);
}

#[test]
fn bad_own_flags_are_usage_errors() {
    let repo = TestRepo::new();
    assert_eq!(
        repo.wp(["add", "../x", "--port", "web"]).output().code(),
        Some(2)
    );
    assert_eq!(repo.wp(["add", "-b", "x"]).output().code(), Some(2));
    assert!(!repo.path("x").exists());
}
