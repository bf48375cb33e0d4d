//! One test per reported defect, named after it (issue number, item). Each failed before its
//! fix.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use crate::support::*;

/// Issue 14, defect 1: `env`, `exec` and `render` on a worktree whose directory was deleted
/// allocated the built-in services (its committed config cannot be read from a missing
/// directory), overwrote `port_ranges`, and `render --force` re-created the directory.
#[test]
fn issue14_1_commands_on_a_worktree_whose_directory_is_gone_refuse_and_write_nothing() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let wt = repo.add_worktree("gone");
    repo.wp_in(&wt, ["allocate", "--no-render"]).succeeds();
    let fresh = repo.add_worktree("fresh");
    std::fs::remove_dir_all(&wt).unwrap();
    std::fs::remove_dir_all(&fresh).unwrap();
    let before = repo.registry_snapshot();
    let cases: [&[&str]; 7] = [
        &["env", "-w", "gone"],
        &["env", "-w", "fresh"],
        &["exec", "-w", "gone", "--", "true"],
        &["render", "-w", "gone"],
        &["render", "-w", "fresh", "--force"],
        &["allocate", "gone"],
        &["allocate", "fresh"],
    ];
    for args in cases {
        let out = repo.wp(args).fails();
        let err = out.stderr();
        let name = args
            .iter()
            .find(|a| **a == "gone" || **a == "fresh")
            .unwrap();
        assert!(
            err.contains(&format!("worktree {name} has no directory")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&repo.path(name).display().to_string()),
            "{args:?}: {err}"
        );
        assert!(err.contains("git worktree-ports prune"), "{args:?}: {err}");
        assert_eq!(
            repo.registry_snapshot(),
            before,
            "{args:?} wrote the registry"
        );
        assert!(
            !wt.exists() && !fresh.exists(),
            "{args:?} re-created a directory"
        );
    }
    let json = repo.wp(["render", "-w", "gone", "--json"]).fails().json();
    assert_eq!(json["error"], "WORKTREE_NOT_FOUND");
    assert_eq!(json["details"]["worktree"], "gone");
}

/// Issue 14, defect 2: `init` under umask 000 wrote world-writable files.
#[test]
fn issue14_2_init_under_umask_000_writes_files_only_their_owner_can_write() {
    let repo = TestRepo::without_config();
    let mut run = repo.wp(["init"]);
    // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        run.cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    run.succeeds();
    let mode = |rel: &str| {
        std::fs::metadata(repo.root.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(".worktree-ports/config.toml"), 0o644);
    assert_eq!(mode(".worktree-ports/templates/.env.tera"), 0o644);
    assert_eq!(mode(".worktree-ports"), 0o755);
    assert_eq!(mode(".worktree-ports/templates"), 0o755);
}

/// Issue 14, defect 5: WORKTREE_NOT_FOUND was used for "the main worktree cannot be removed"
/// and for a bare repository; each now has its own code.
#[test]
fn issue14_5_error_codes_say_what_went_wrong() {
    let repo = TestRepo::new();
    let out = repo.wp(["remove", "main", "--json"]).fails();
    assert_eq!(out.json()["error"], "MAIN_WORKTREE", "{}", out.describe());

    let bare = TestRepo::bare();
    let out = bare.wp(["allocate", "--json"]).fails();
    assert_eq!(out.json()["error"], "BARE_REPOSITORY", "{}", out.describe());

    let out = repo.wp(["get", "web"]).fails();
    assert!(
        out.stderr().contains("has no ports allocated"),
        "{}",
        out.describe()
    );
    let out = repo.wp(["exec", "--", "/nonexistent/program"]).fails();
    assert!(
        out.stderr().contains("could not run /nonexistent/program"),
        "{}",
        out.describe()
    );
}

/// Issue 15, item 12: `GIT_WORKTREE_PORTS_LOCK_TIMEOUT=1e20` panicked (exit 101) in every
/// command that locks, the hook included.
#[test]
fn issue15_12_a_huge_lock_timeout_means_wait_long_not_panic() {
    let repo = TestRepo::new();
    let out = repo
        .wp(["allocate", "--no-render"])
        .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "1e20")
        .succeeds();
    assert!(!out.stderr().contains("panicked"), "{}", out.describe());
    let out = repo
        .wp([
            "allocate",
            "--json",
            "--port",
            &format!("web={}", repo.base + 2),
        ])
        .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "soon")
        .fails();
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.json()["error"], "CONFIG_INVALID");
}
