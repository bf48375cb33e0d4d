//! The post-checkout hook with the real `git worktree add`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::*;

/// A `git-worktree-ports` on PATH that logs each start, then runs the real binary.
fn logging_wrapper(repo: &TestRepo) -> (PathBuf, PathBuf) {
    let dir = repo.path("wrapper-bin");
    let log = repo.path("starts.log");
    write(
        &dir.join("git-worktree-ports"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            bin().display()
        ),
    );
    make_executable(&dir.join("git-worktree-ports"), 0o755);
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    (PathBuf::from(path), log)
}

fn starts(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn git_with_path(repo: &TestRepo, dir: &Path, path: &Path, args: &[&str]) -> Out {
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(dir).args(args);
    repo.env.apply(&mut cmd);
    cmd.env("PATH", path);
    Out(cmd.output().unwrap())
}

#[test]
fn plain_git_worktree_add_allocates_and_renders() {
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    repo.wp(["allocate"]).succeeds();
    let path = repo.path("feature");
    let out = repo.env.git_output(
        &repo.root,
        ["worktree", "add", "-b", "feature", path.to_str().unwrap()],
    );
    let out = Out(out);
    assert!(out.0.status.success(), "{}", out.describe());
    let stderr = out.stderr();
    let summary: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("git-worktree-ports:"))
        .collect();
    assert_eq!(summary.len(), 1, "quiet: one summary line: {stderr}");
    assert!(summary[0].contains("feature"), "{stderr}");
    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"]["feature"]["web"], repo.base + 1);
    let env = std::fs::read_to_string(path.join(".env")).unwrap();
    assert_eq!(
        redact(&env, &repo),
        "# >>> git-worktree-ports >>> managed block: edits here are overwritten by `git worktree-ports render`\n# Ports of worktree feature of repo, from git-worktree-ports.\nWEB_PORT=[BASE+1]\nDB_PORT=[BASE+21]\nWEB_URL=http://feature.repo.localhost:[BASE+1]\nCOMPOSE_PROJECT_NAME=repo-feature\n# <<< git-worktree-ports <<<\n"
    );
    assert_eq!(repo.env.git(&path, ["status", "--porcelain"]), "");
}

#[test]
fn ordinary_checkouts_never_start_the_binary() {
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    let (path, log) = logging_wrapper(&repo);
    for args in [
        &["switch", "-q", "-c", "other"][..],
        &["checkout", "-q", "main"],
        &["checkout", "-q", "other"],
        &["switch", "-q", "--detach", "main"],
    ] {
        let out = git_with_path(&repo, &repo.root, &path, args);
        assert!(out.0.status.success(), "{}", out.describe());
    }
    assert_eq!(starts(&log), Vec::<String>::new());
    assert!(
        !repo.registry_path().exists(),
        "nothing allocated by checkouts"
    );
    // A new worktree does start it, exactly once.
    let wt = repo.path("wt");
    let out = git_with_path(
        &repo,
        &repo.root,
        &path,
        &["worktree", "add", "-q", wt.to_str().unwrap()],
    );
    assert!(out.0.status.success(), "{}", out.describe());
    let log_lines = starts(&log);
    assert_eq!(log_lines.len(), 1, "{log_lines:?}");
    assert!(
        log_lines[0].starts_with("hook post-checkout 0000000000000000000000000000000000000000 "),
        "{log_lines:?}"
    );
}

#[test]
fn a_users_hook_keeps_running_and_uninstall_restores_it_byte_for_byte() {
    let repo = TestRepo::new();
    let hook = repo.common_dir().join("hooks/post-checkout");
    let marker = repo.path("user-hook-ran");
    let original = format!(
        "#!/bin/sh\n# my hook \u{e9}\necho \"$@\" >> '{}'\nexit 0\n",
        marker.display()
    );
    write(&hook, &original);
    make_executable(&hook, 0o750);

    let out = repo.wp(["hooks", "install"]).succeeds().stdout();
    assert!(out.contains("still runs first"), "{out}");
    assert!(
        repo.wp(["hooks", "install"])
            .succeeds()
            .stdout()
            .contains("already installed")
    );
    let status = repo.wp(["hooks", "status", "--json"]).succeeds().json();
    assert_eq!(status["ours"], true);
    assert_eq!(status["current"], true);
    assert!(
        status["chained"]
            .as_str()
            .unwrap()
            .ends_with("post-checkout.pre-worktree-ports")
    );

    repo.git(["switch", "-q", "-c", "other"]);
    let wt = repo.path("wt");
    repo.git(["worktree", "add", "-q", wt.to_str().unwrap()]);
    let ran = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        ran.lines().count(),
        2,
        "the user's hook ran for the checkout and the add: {ran}"
    );
    assert!(repo.registry()["allocated_ports"].get("wt").is_some());

    repo.wp(["hooks", "uninstall"]).succeeds();
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), original);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&hook).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o750);
    assert!(
        !repo
            .common_dir()
            .join("hooks/post-checkout.pre-worktree-ports")
            .exists()
    );
}

#[test]
fn a_failing_user_hook_still_fails_as_before() {
    let repo = TestRepo::new();
    let hook = repo.common_dir().join("hooks/post-checkout");
    write(&hook, "#!/bin/sh\nexit 3\n");
    make_executable(&hook, 0o755);
    repo.wp(["hooks", "install"]).succeeds();
    let wt = repo.path("wt");
    let out = Out(repo
        .env
        .git_output(&repo.root, ["worktree", "add", "-q", wt.to_str().unwrap()]));
    assert!(!out.0.status.success(), "the user's exit status is kept");
    // Ours still did its part.
    assert!(repo.registry()["allocated_ports"].get("wt").is_some());
}

#[test]
fn core_hooks_path_is_respected() {
    // A hooks directory outside the work tree (one inside it is the team's: see
    // regression::issue15_11).
    let repo = TestRepo::new();
    let shared = repo.env.root().join("shared-hooks");
    repo.git(["config", "core.hooksPath", shared.to_str().unwrap()]);
    let out = repo.wp(["hooks", "install"]).succeeds().stdout();
    assert_eq!(
        redact(&out, &repo),
        "installed [TMP]/shared-hooks/post-checkout: every `git worktree add` now allocates ports and renders files\n"
    );
    assert!(!repo.common_dir().join("hooks/post-checkout").exists());
    let wt = repo.path("wt");
    repo.git(["worktree", "add", "-q", wt.to_str().unwrap()]);
    assert!(repo.registry()["allocated_ports"].get("wt").is_some());
    let status = repo.wp(["hooks", "status"]).succeeds().stdout();
    assert!(status.contains("shared-hooks"), "{status}");
}

#[test]
fn hook_managers_get_instructions_not_a_fight() {
    let repo = TestRepo::new();
    repo.git(["config", "core.hooksPath", ".husky/_"]);
    let out = repo.wp(["hooks", "install"]).succeeds().stdout();
    assert_eq!(
        redact(&out, &repo),
        "husky manages the hooks in [TMP]/repo/.husky/_, and would drop a hook file written there; nothing was installed.\nAdd this line to .husky/post-checkout (create the file if it does not exist):\n\ncase \"$1\" in *[!0]*) ;; *) git worktree-ports hook post-checkout \"$@\" || true ;; esac\n"
    );
    assert!(
        !repo.root.join(".husky/_/post-checkout").exists(),
        "nothing written"
    );

    let repo = TestRepo::new();
    write(
        &repo.root.join("lefthook.yml"),
        "pre-commit:\n  commands: {}\n",
    );
    let out = repo.wp(["hooks", "install"]).succeeds().stdout();
    assert_eq!(
        redact(&out, &repo),
        "lefthook manages the hooks in [TMP]/repo/.git/hooks, and would drop a hook file written there; nothing was installed.\nAdd this to lefthook.yml, then run `lefthook install`:\n\npost-checkout:\n  commands:\n    worktree-ports:\n      run: git worktree-ports hook post-checkout {0} || true\n"
    );
    assert!(!repo.common_dir().join("hooks/post-checkout").exists());
}

#[test]
fn the_hook_works_under_pre_commits_variables() {
    let repo = TestRepo::new();
    let wt = repo.path("wt");
    repo.git(["worktree", "add", "-q", wt.to_str().unwrap()]);
    repo.wp_in(&wt, ["hook", "post-checkout"])
        .env("PRE_COMMIT_FROM_REF", "0".repeat(40))
        .env("PRE_COMMIT_TO_REF", "1".repeat(40))
        .env("PRE_COMMIT_CHECKOUT_TYPE", "1")
        .succeeds();
    assert!(repo.registry()["allocated_ports"].get("wt").is_some());
}

#[test]
fn a_missing_binary_never_fails_git() {
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    // PATH with git and the shell but without git-worktree-ports.
    let git = std::process::Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let git = PathBuf::from(String::from_utf8(git.stdout).unwrap().trim());
    let only_git = repo.path("only-git");
    std::fs::create_dir_all(&only_git).unwrap();
    std::os::unix::fs::symlink(&git, only_git.join("git")).unwrap();
    let path = PathBuf::from(format!("{}:/bin:/usr/bin", only_git.display()));
    let probe = git_with_path(&repo, &repo.root, &path, &["worktree-ports", "-h"]);
    assert!(
        !probe.0.status.success(),
        "precondition: the binary is not on this PATH"
    );

    let wt = repo.path("wt");
    let out = git_with_path(
        &repo,
        &repo.root,
        &path,
        &["worktree", "add", "-q", wt.to_str().unwrap()],
    );
    assert!(out.0.status.success(), "{}", out.describe());
    assert!(wt.join("README").exists());
    let warnings: Vec<String> = out
        .stderr()
        .lines()
        .filter(|l| l.contains("warning"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.describe());
    assert!(warnings[0].contains("not on PATH"), "{warnings:?}");
}

#[test]
fn a_locked_registry_or_an_exhausted_range_is_one_warning_and_git_succeeds() {
    let block = port_block();
    let base = block.base;
    let repo = TestRepo::with_config(
        &format!("[services.web]\nrange = [{base}, {}]\n", base + 1),
        block,
    );
    repo.wp(["hooks", "install"]).succeeds();
    repo.wp(["allocate"]).succeeds();
    // Locked: the hook waits its timeout, warns once, and git succeeds.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(repo.common_dir().join("worktree-registry/ports.lock"))
        .unwrap();
    lock.lock().unwrap();
    let wt = repo.path("locked-out");
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(&repo.root)
        .args(["worktree", "add", "-q", wt.to_str().unwrap()]);
    repo.env.apply(&mut cmd);
    cmd.env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "0.3");
    let out = Out(cmd.output().unwrap());
    assert!(out.0.status.success(), "{}", out.describe());
    let warn: Vec<&str> = out
        .0
        .stderr
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warn.len(), 1, "{}", out.describe());
    assert!(warn[0].contains("timed out"), "{warn:?}");
    drop(lock);
    // Exhausted: one port left; the second new worktree gets none, and git still succeeds.
    let a = repo.path("a");
    repo.git(["worktree", "add", "-q", a.to_str().unwrap()]);
    let b = repo.path("b");
    let out = Out(repo
        .env
        .git_output(&repo.root, ["worktree", "add", "-q", b.to_str().unwrap()]));
    assert!(out.0.status.success(), "{}", out.describe());
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: this worktree got no ports: no free port for service web in [BASE+0]-[BASE+1] (2 allocated to worktrees, 0 reserved, 0 in use by other processes); run `git worktree-ports prune` or widen [services.web] range in .worktree-ports/config.toml; run `git worktree-ports allocate` in it\n"
    );
    assert!(b.is_dir());
}

#[test]
fn eight_parallel_git_worktree_adds_get_distinct_ports() {
    parallel_adds(&[]);
}

#[test]
fn eight_parallel_git_worktree_adds_in_a_reftable_repository() {
    // The git CLI backend lists worktrees with git, which races with the adds too.
    parallel_adds(&["--ref-format=reftable"]);
}

fn parallel_adds(init_args: &[&str]) {
    // git 2.47 itself sometimes fails one of several parallel `git worktree add`s, with or
    // without any hook: "failed to read .git/worktrees/<other>/commondir" (it lists the
    // worktrees while another add is half way) and, with reftable, "cannot lock references".
    // Such an add is retried, as a user would; what must hold is ours: every worktree git
    // creates gets its ports once, and no port is given twice.
    let repo = TestRepo::with_format(init_args);
    repo.wp(["hooks", "install"]).succeeds();
    let spawn = |i: usize| {
        let path = repo.path(&format!("p{i}"));
        let mut cmd = std::process::Command::new("git");
        cmd.current_dir(&repo.root)
            .args([
                "worktree",
                "add",
                "-q",
                "-B",
                &format!("p{i}"),
                path.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        repo.env.apply(&mut cmd);
        cmd.spawn().unwrap()
    };
    let mut pending: Vec<usize> = (0..8).collect();
    let mut git_races = 0;
    for _round in 0..10 {
        let children: Vec<_> = pending.iter().map(|&i| (i, spawn(i))).collect();
        pending.clear();
        for (i, c) in children {
            let out = Out(c.wait_with_output().unwrap());
            if !out.0.status.success() {
                // Known git-side races: listing a half-made admin dir; reftable's ref lock.
                let err = out.stderr();
                assert!(
                    err.contains("failed to read") || err.contains("cannot lock ref"),
                    "not one of git's known races: {}",
                    out.describe()
                );
                let path = repo.path(&format!("p{i}"));
                if path.exists() {
                    let _ = repo.env.git_output(
                        &repo.root,
                        ["worktree", "remove", "--force", path.to_str().unwrap()],
                    );
                    let _ = std::fs::remove_dir_all(&path);
                    repo.git(["worktree", "prune"]);
                }
                git_races += 1;
                pending.push(i);
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    assert!(pending.is_empty(), "git kept failing for {pending:?}");
    eprintln!("git's own parallel-add race hit {git_races} time(s)");
    let reg = repo.registry();
    // The eight, and the main worktree, allocated first by the first of them (main-first).
    assert_eq!(reg["allocated_ports"].as_object().unwrap().len(), 9);
    let ports = all_registry_ports(&reg);
    assert_eq!(ports.len(), 18);
    assert_unique(&ports);
    for i in 0..8 {
        assert!(repo.path(&format!("p{i}/.env")).exists());
    }
}

#[test]
fn our_add_with_the_hook_installed_allocates_and_renders_once() {
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    let (path, log) = logging_wrapper(&repo);
    let wt = repo.path("feature");
    let mut run = repo
        .wp(["add", "-b", "feature", wt.to_str().unwrap(), "--json"])
        .env("PATH", &path);
    run.cmd.env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "5");
    let out = run.succeeds();
    assert!(
        !out.stderr().contains("git-worktree-ports: feature:"),
        "the hook did not render: {}",
        out.describe()
    );
    assert_eq!(
        out.json()["rendered"][0]["action"],
        "written",
        "add rendered (once)"
    );
    // The hook steps aside without starting the binary (the binary would step aside too, for
    // a script an older version installed).
    let hook_runs = starts(&log);
    assert_eq!(
        hook_runs,
        Vec::<String>::new(),
        "the hook started the binary"
    );
    let history = repo.history();
    let assigned = history
        .iter()
        .filter(|h| h["worktree"] == "feature" && h["action"] == "assigned")
        .count();
    assert_eq!(assigned, 2, "one allocation (web + db): {history:?}");
}

#[test]
fn sha256_repository_hook() {
    let repo = TestRepo::with_format(&["--object-format=sha256"]);
    repo.wp(["hooks", "install"]).succeeds();
    let wt = repo.path("wt");
    let (path, log) = logging_wrapper(&repo);
    let out = git_with_path(
        &repo,
        &repo.root,
        &path,
        &["worktree", "add", "-q", wt.to_str().unwrap()],
    );
    assert!(out.0.status.success(), "{}", out.describe());
    assert!(starts(&log)[0].starts_with(&format!("hook post-checkout {} ", "0".repeat(64))));
    assert!(repo.registry()["allocated_ports"].get("wt").is_some());
    let out = git_with_path(&repo, &repo.root, &path, &["switch", "-q", "-c", "x"]);
    assert!(out.0.status.success(), "{}", out.describe());
    assert_eq!(
        starts(&log).len(),
        1,
        "ordinary checkout in a SHA-256 repository"
    );
}

#[test]
fn git_dir_given_to_git_still_allocates_for_the_new_worktree() {
    // `git --git-dir=<main>/.git worktree add`: the hook must find the new worktree, not main.
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    let wt = repo.path("via-git-dir");
    let elsewhere = repo.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let git_dir = format!("--git-dir={}", repo.common_dir().display());
    let out = Out(repo.env.git_output(
        &elsewhere,
        [
            git_dir.as_str(),
            "worktree",
            "add",
            "-q",
            wt.to_str().unwrap(),
        ],
    ));
    assert!(out.0.status.success(), "{}", out.describe());
    let reg = repo.registry();
    let keys: Vec<&String> = reg["allocated_ports"].as_object().unwrap().keys().collect();
    // main: allocated first by the new worktree's allocation (main-first).
    assert_eq!(keys, ["main", "via-git-dir"], "{}", out.describe());
    assert!(wt.join(".env").exists());
}

/// Issue 26 (smaller): `hooks status` said "not installed", and doctor noted a missing hook,
/// when a manager's configuration runs ours. husky 9's layout (`core.hooksPath = .husky/_`,
/// whose `post-checkout` runs `.husky/post-checkout` through `h`), with the line `hooks
/// install` prints: a plain `git worktree add` allocates, and status and doctor say so.
#[test]
fn a_managers_configuration_that_runs_our_hook_counts_as_installed() {
    let repo = TestRepo::new();
    let husky = repo.root.join(".husky");
    write(
        &husky.join("_/h"),
        "#!/usr/bin/env sh\nn=$(basename \"$0\")\ns=$(dirname \"$(dirname \"$0\")\")/$n\n[ -f \"$s\" ] || exit 0\nsh -e \"$s\" \"$@\"\n",
    );
    write(
        &husky.join("_/post-checkout"),
        "#!/usr/bin/env sh\n. \"$(dirname \"$0\")/h\"\n",
    );
    repo.git(["config", "core.hooksPath", ".husky/_"]);
    let snippet = repo.wp(["hooks", "install"]).succeeds().stdout();
    let line = snippet
        .lines()
        .find(|l| l.contains("git worktree-ports hook post-checkout"))
        .unwrap()
        .trim()
        .to_string();
    write(&husky.join("post-checkout"), &format!("{line}\n"));
    for f in ["_/h", "_/post-checkout"] {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(husky.join(f), mode).unwrap();
    }
    repo.wp(["hooks", "status"])
        .stdout_is(format!(
            "hooks dir: {}\npost-checkout: installed through husky (its configuration runs `git worktree-ports hook post-checkout`)\n",
            husky.join("_").display()
        ))
        .succeeds();
    let wt = repo.path("wt");
    repo.git(["worktree", "add", "-q", wt.to_str().unwrap()]);
    assert!(
        repo.registry()["allocated_ports"].get("wt").is_some(),
        "the hook ran"
    );
    let doctor = repo.wp(["doctor", "--json"]).succeeds().json();
    assert_eq!(doctor["findings"], serde_json::json!([]), "{doctor:#}");

    // lefthook's and pre-commit's configuration files are read the same way.
    let repo = TestRepo::new();
    write(
        &repo.root.join("lefthook.yml"),
        "post-checkout:\n  commands:\n    worktree-ports:\n      run: git worktree-ports hook post-checkout {0} || true\n",
    );
    let json = repo.wp(["hooks", "status", "--json"]).succeeds().json();
    assert_eq!(
        (json["manager"].as_str(), json["through_manager"].as_bool()),
        (Some("lefthook"), Some(true)),
        "{json}"
    );
    let repo = TestRepo::new();
    write(
        &repo.common_dir().join("hooks/post-checkout"),
        "#!/usr/bin/env bash\n# File generated by pre-commit: https://pre-commit.com\nexit 0\n",
    );
    let json = repo.wp(["hooks", "status", "--json"]).succeeds().json();
    assert_eq!(json["through_manager"], false, "{json}");
    write(
        &repo.root.join(".pre-commit-config.yaml"),
        "repos:\n- repo: local\n  hooks:\n    - id: git-worktree-ports\n      name: git-worktree-ports\n      entry: git worktree-ports hook post-checkout\n      language: system\n      stages: [post-checkout]\n",
    );
    let json = repo.wp(["hooks", "status", "--json"]).succeeds().json();
    assert_eq!(
        (json["manager"].as_str(), json["through_manager"].as_bool()),
        (Some("pre-commit"), Some(true)),
        "{json}"
    );
}
