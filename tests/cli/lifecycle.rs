//! `[on] allocate` and `[on] release`: the user's commands, with the worktree's variables, in
//! its directory, outside every lock; failures said, never undoing or blocking anything.

use crate::support::*;

/// A repository whose `[on]` commands append to `<tmp>/on.log`.
fn repo_with(on: &str) -> (TestRepo, std::path::PathBuf) {
    let block = port_block();
    let config = format!("{}[on]\n{on}", default_config(block.base));
    let repo = TestRepo::with_config(&config, block);
    let log = repo.path("on.log");
    (repo, log)
}

fn log_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn allocate_runs_once_with_the_worktrees_variables_in_its_directory() {
    let (repo, log) = repo_with("");
    let on = format!(
        "allocate = \"echo createdb app_{{{{ worktree.name }}}} $WEB_PORT $WORKTREE_SLOT $COMPOSE_PROJECT_NAME $(pwd) >> {}; echo NOISE\"\n",
        log.display()
    );
    commit_files(
        &repo,
        &[(
            ".worktree-ports/config.toml",
            &format!("{}[on]\n{on}", default_config(repo.base)),
        )],
    );
    let feature = repo.path("feature");
    let out = repo
        .wp(["add", feature.to_str().unwrap(), "--json"])
        .succeeds();
    assert!(
        !out.stdout().contains("NOISE"),
        "the command's output goes to stderr"
    );
    assert!(out.stderr().contains("NOISE"), "{}", out.stderr());
    let web = out.json()["ports"]["web"].as_u64().unwrap();
    // The main worktree got its ports first (main-first), in the same command: its command
    // runs too, in its own directory.
    assert_eq!(
        log_lines(&log),
        [
            format!(
                "createdb app_main {} 0 repo-main {}",
                repo.base,
                repo.root.canonicalize().unwrap().display()
            ),
            format!(
                "createdb app_feature {web} 1 repo-feature {}",
                feature.canonicalize().unwrap().display()
            )
        ]
    );
    // Only when the worktree first gets its ports.
    repo.wp_in(&feature, ["allocate"]).succeeds();
    repo.wp_in(&feature, ["env"]).succeeds();
    repo.wp(["allocate"]).succeeds();
    assert_eq!(log_lines(&log).len(), 2);
    // A worktree made by plain git gets it from `env` (allocating on demand), stdout clean.
    let other = repo.add_worktree("other");
    let out = repo.wp_in(&other, ["env"]).succeeds();
    assert!(!out.stdout().contains("NOISE"), "{}", out.stdout());
    assert_eq!(log_lines(&log).len(), 3);
    assert!(log_lines(&log)[2].starts_with("createdb app_other "));
}

#[test]
fn a_failing_command_is_reported_and_undoes_nothing() {
    let (repo, _) = repo_with("allocate = \"exit 3\"\nrelease = \"exit 4\"\n");
    let feature = repo.add_worktree("feature");
    let out = repo.wp_in(&feature, ["allocate", "--json"]).succeeds();
    assert!(
        out.stderr().contains("worktree feature: [on] allocate command `exit 3` failed with exit code 3; the ports stay allocated"),
        "{}",
        out.stderr()
    );
    assert!(repo.registry()["allocated_ports"]["feature"]["web"].is_u64());
    let out = repo.wp(["release", "feature"]).succeeds();
    assert!(
        out.stderr()
            .contains("failed with exit code 4; the ports are given back all the same"),
        "{}",
        out.stderr()
    );
    assert!(repo.registry()["allocated_ports"].get("feature").is_none());
}

#[test]
fn release_runs_before_the_ports_go_back_for_remove_release_and_prune() {
    let block = port_block();
    let base = block.base;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("on.log");
    // Proves the order: when it runs, the worktree still has its ports in the registry.
    let on = format!(
        "release = \"echo down {{{{ compose_project_name }}}} $WEB_PORT $(grep -c '\\\"{{{{ worktree.name }}}}\\\":{{' {{{{ repo.common_dir }}}}/worktree-registry/ports.json) $(basename $(pwd)) >> {}\"\n",
        log.display()
    );
    let repo = TestRepo::with_config(&format!("{}[on]\n{on}", default_config(base)), block);
    for name in ["a", "b", "c"] {
        let wt = repo.add_worktree(name);
        repo.wp_in(&wt, ["allocate", "--no-render"]).succeeds();
    }
    let web = |n: &str| {
        repo.registry()["allocated_ports"][n]["web"]
            .as_u64()
            .unwrap()
    };
    let (wa, wb, wc) = (web("a"), web("b"), web("c"));
    repo.wp(["remove", "a"]).succeeds();
    repo.wp(["release", "b"]).succeeds();
    std::fs::remove_dir_all(repo.path("c")).unwrap();
    repo.wp(["prune"]).succeeds();
    assert_eq!(
        log_lines(&log),
        [
            format!("down repo-a {wa} 1 a"),
            format!("down repo-b {wb} 1 b"),
            // c's directory is gone: it runs in the current worktree (main), with its config.
            format!("down repo-c {wc} 1 repo"),
        ]
    );
    // Releasing one service is not a release of the worktree.
    repo.wp(["release", "main", "--service", "db"]).succeeds();
    assert_eq!(log_lines(&log).len(), 3);
}

#[test]
fn a_broken_command_template_is_a_config_error_with_its_line() {
    let (repo, _) = repo_with("allocate = \"createdb {{ oops\"\n");
    let err = repo.wp(["allocate", "--json"]).fails().json();
    assert_eq!(err["error"], "CONFIG_INVALID");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("config.toml:6: [on] allocate:"), "{msg}");
}

/// Regression (the fourth session's closing note): a full range that took back the ports of a
/// worktree deleted with `rm -rf` did not run its `[on] release`, so its containers were
/// never told to stop. Now it runs for the worktree reclaimed (only that one), after the
/// allocation is saved, in the worktree that allocates.
#[test]
fn a_full_range_taking_a_gone_worktrees_ports_back_runs_its_release() {
    let block = port_block();
    let b = block.base;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("on.log");
    let config = format!(
        "[services.web]\nrange = [{b}, {}]\n[services.db]\nrange = [{}, {}]\n[on]\n\
         release = \"echo down {{{{ worktree.name }}}} $WEB_PORT $(basename $(pwd)) >> {}\"\n",
        b + 2,
        b + 20,
        b + 22,
        log.display()
    );
    let repo = TestRepo::with_config(&config, block);
    let gone1 = repo.add_worktree("gone1");
    let gone2 = repo.add_worktree("gone2");
    repo.wp_in(&gone1, ["allocate", "--no-render"]).succeeds(); // main first, then gone1
    repo.wp_in(&gone2, ["allocate", "--no-render"]).succeeds();
    std::fs::remove_dir_all(&gone1).unwrap();
    std::fs::remove_dir_all(&gone2).unwrap();
    // Not scarce yet: nothing is reclaimed, nothing released.
    assert!(log_lines(&log).is_empty());
    let next = repo.add_worktree("next");
    let out = repo
        .wp_in(&next, ["allocate", "--json", "--no-render"])
        .succeeds();
    assert_eq!(out.json()["ports"]["web"], b + 1, "{}", out.describe());
    assert_eq!(log_lines(&log), [format!("down gone1 {} next", b + 1)]);
    // A range still full after every gone worktree is taken back (their db ports held by
    // processes): the allocation fails, nothing is saved, and no release runs.
    std::fs::remove_dir_all(&next).unwrap();
    let _held: Vec<_> = [b + 21, b + 22]
        .iter()
        .map(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap())
        .collect();
    let before = repo.registry()["allocated_ports"].clone();
    let last = repo.add_worktree("last");
    let full = repo.wp_in(&last, ["allocate", "--no-render"]).fails();
    assert!(
        full.stderr().contains("no free port"),
        "{}",
        full.describe()
    );
    assert_eq!(log_lines(&log).len(), 1, "{:?}", log_lines(&log));
    assert_eq!(repo.registry()["allocated_ports"], before);
}
