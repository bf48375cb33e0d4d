//! Every repository git makes: SHA-256 objects and reftable refs (which libgit2 cannot read,
//! so the git CLI answers), nested and symlinked worktrees, submodules, and repositories git
//! itself refuses.

use std::path::Path;

use crate::support::*;

const SHA256: &[&str] = &["--object-format=sha256"];
const REFTABLE: &[&str] = &["--ref-format=reftable"];

/// The whole core in one repository: main + a linked worktree made with -b.
fn core_commands_work(repo: &TestRepo, main: &Path) {
    let b = repo.base;
    let m = repo.wp_in(main, ["allocate", "--json"]).succeeds().json();
    let feature = repo.add_worktree("feature");
    let f = repo
        .wp_in(&feature, ["allocate", "--json"])
        .succeeds()
        .json();
    assert_eq!(f["worktree"], "feature");
    assert_ne!(m["ports"]["web"], f["ports"]["web"]);
    assert_ne!(m["ports"]["db"], f["ports"]["db"]);
    assert_eq!(f["branch"], "feature");

    let list = repo.wp_in(main, ["list", "--json"]).succeeds().json();
    let by = |n: &str| {
        list["worktrees"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing from {list}"))
            .clone()
    };
    assert_eq!(
        by("feature")["branch"],
        "feature",
        "a reftable branch must not read as .invalid"
    );
    assert_eq!(by(m["worktree"].as_str().unwrap())["branch"], m["branch"]);

    let web = f["ports"]["web"].as_u64().unwrap();
    assert_eq!(
        repo.wp_in(main, ["get", "web", "-w", "feature"])
            .succeeds()
            .stdout(),
        format!("{web}\n")
    );
    assert_eq!(
        repo.wp_in(&feature, ["get", "web"]).succeeds().stdout(),
        format!("{web}\n")
    );

    let out = repo
        .wp_in(main, ["release", "feature", "--service", "db", "--json"])
        .succeeds()
        .json();
    assert_eq!(out["released"]["db"], f["ports"]["db"]);

    let gone = repo.add_worktree("gone");
    repo.wp_in(&gone, ["allocate"]).succeeds();
    std::fs::remove_dir_all(&gone).unwrap();
    let pruned = repo.wp_in(main, ["prune", "--json"]).succeeds().json();
    assert_eq!(pruned["pruned"][0]["name"], "gone");
    assert_eq!(pruned["pruned"][0]["reason"], "directory deleted");
    let reg = repo.registry();
    assert!(reg["allocated_ports"].get("gone").is_none());
    assert!(reg["allocated_ports"].get("feature").is_some());
    assert_unique(&all_registry_ports(&reg));
    assert!(web >= b as u64 && web < (b + BLOCK) as u64);

    // `add` finds the worktree git made among the ones it did not have before (on the git
    // CLI backend from git's own list, else from the new admin dir alone).
    let added = repo.env.root().join("added wt");
    let a = repo
        .wp_in(main, ["add", "--json", "--detach", added.to_str().unwrap()])
        .succeeds()
        .json();
    assert_eq!(a["worktree"], "added-wt", "git names it: {a}");
    assert_eq!(a["path"], added.to_str().unwrap(), "{a}");
    assert_unique(&all_registry_ports(&repo.registry()));
}

#[test]
fn sha256_repository() {
    let repo = TestRepo::with_format(SHA256);
    assert_eq!(
        repo.git(["rev-parse", "--show-object-format"]).trim(),
        "sha256"
    );
    core_commands_work(&repo, &repo.root.clone());
}

#[test]
fn reftable_repository() {
    let repo = TestRepo::with_format(REFTABLE);
    assert_eq!(
        repo.git(["rev-parse", "--show-ref-format"]).trim(),
        "reftable"
    );
    core_commands_work(&repo, &repo.root.clone());
}

#[test]
fn sha256_and_reftable_together() {
    let repo = TestRepo::with_format(&["--object-format=sha256", "--ref-format=reftable"]);
    core_commands_work(&repo, &repo.root.clone());
}

#[test]
fn bare_sha256_repository_worktrees() {
    let repo = TestRepo::with_format(SHA256).into_bare(&[]);
    let one = repo.add_worktree("one");
    core_commands_work(&repo, &one);
    assert!(repo.root.join("worktree-registry/ports.json").exists());
}

#[test]
fn bare_reftable_repository_worktrees() {
    let repo = TestRepo::with_format(REFTABLE).into_bare(REFTABLE);
    assert_eq!(
        repo.git(["rev-parse", "--show-ref-format"]).trim(),
        "reftable"
    );
    let one = repo.add_worktree("one");
    core_commands_work(&repo, &one);
    // The bare dir itself has no working tree, with this backend too.
    let out = repo.wp(["allocate"]).fails();
    assert!(
        out.stderr().contains("bare repository"),
        "{}",
        out.describe()
    );
}

#[test]
fn reftable_detached_and_locked_worktrees() {
    let repo = TestRepo::with_format(REFTABLE);
    let det = repo.path("det");
    repo.git(["worktree", "add", "-q", "--detach", det.to_str().unwrap()]);
    let lk = repo.add_worktree("lk");
    repo.git([
        "worktree",
        "lock",
        "--reason",
        "two\nlines",
        lk.to_str().unwrap(),
    ]);
    repo.wp_in(&det, ["allocate"]).succeeds();
    repo.wp_in(&lk, ["allocate"]).succeeds();
    std::fs::remove_dir_all(&lk).unwrap();
    let list = repo.wp(["list", "--json"]).succeeds().json();
    let det_row = list["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "det")
        .unwrap();
    assert_eq!(det_row["branch"], serde_json::Value::Null);
    // Locked with its directory gone: kept.
    assert_eq!(
        repo.wp(["prune", "--json"]).succeeds().json()["pruned"],
        serde_json::json!([])
    );
}

#[test]
fn get_spawns_no_process_in_an_ordinary_repository() {
    // With no git on PATH, only the in-process backend can answer.
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let empty = repo.path("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = repo.wp(["get", "web"]).env("PATH", &empty).succeeds();
    assert_eq!(out.stdout(), format!("{}\n", repo.base));

    // A reftable repository needs git, and says so instead of answering wrongly.
    let rt = TestRepo::with_format(REFTABLE);
    rt.wp(["allocate"]).succeeds();
    let out = rt.wp(["get", "web"]).env("PATH", &empty).fails();
    assert!(
        out.stderr().contains("could not run git"),
        "{}",
        out.describe()
    );
}

#[test]
fn nested_worktrees_resolve_to_the_innermost_from_a_subdirectory() {
    for format in [&[][..], REFTABLE] {
        let repo = TestRepo::with_format(format);
        repo.wp(["allocate"]).succeeds();
        for (name, rel) in [("feature", "trees/feature"), ("x", ".claude/worktrees/x")] {
            let path = repo.root.join(rel);
            repo.git(["worktree", "add", "-q", "-b", name, path.to_str().unwrap()]);
            let sub = path.join("src/deep");
            std::fs::create_dir_all(&sub).unwrap();
            let out = repo.wp_in(&sub, ["allocate", "--json"]).succeeds().json();
            assert_eq!(out["worktree"], name, "{format:?}");
            assert_eq!(out["path"], path.to_str().unwrap());
            let get = repo.wp_in(&sub, ["get", "web"]).succeeds().stdout();
            assert_eq!(get, format!("{}\n", out["ports"]["web"]));
        }
        // The main worktree's own subdirectory is still main.
        let sub = repo.root.join("trees");
        let out = repo.wp_in(&sub, ["allocate", "--json"]).succeeds().json();
        assert_eq!(out["worktree"], "main");
    }
}

#[test]
fn a_worktree_reached_through_a_symlink() {
    for format in [&[][..], REFTABLE] {
        let repo = TestRepo::with_format(format);
        let feature = repo.add_worktree("feature");
        let link = repo.path("link-to-feature");
        std::os::unix::fs::symlink(&feature, &link).unwrap();
        let out = repo.wp_in(&link, ["allocate", "--json"]).succeeds().json();
        assert_eq!(out["worktree"], "feature");
        let web = format!("{}\n", out["ports"]["web"]);
        assert_eq!(
            repo.wp(["get", "web", "-w", link.to_str().unwrap()])
                .succeeds()
                .stdout(),
            web
        );
        assert_eq!(
            repo.wp(["get", "web", "-w", &format!("{}/", link.display())])
                .succeeds()
                .stdout(),
            web
        );
        // A symlinked path to the repository itself.
        let root_link = repo.path("link-to-repo");
        std::os::unix::fs::symlink(&repo.root, &root_link).unwrap();
        let out = repo
            .wp_in(&root_link, ["allocate", "--json"])
            .succeeds()
            .json();
        assert_eq!(out["worktree"], "main");
    }
}

#[test]
fn a_submodule_has_its_own_registry() {
    let sub_src = TestRepo::new();
    let sup = TestRepo::new();
    sup.git([
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        sub_src.root.to_str().unwrap(),
        "sub",
    ]);
    let sub = sup.root.join("sub");
    let s = sup.wp_in(&sub, ["allocate", "--json"]).succeeds().json();
    assert_eq!(s["worktree"], "main");
    assert_eq!(s["path"], sub.to_str().unwrap());
    assert_eq!(
        s["ports"]["web"], sub_src.base,
        "the submodule's own config applies"
    );
    assert!(
        sup.common_dir()
            .join("modules/sub/worktree-registry/ports.json")
            .exists()
    );
    assert!(
        !sup.registry_path().exists(),
        "the superproject's registry is untouched"
    );
    let p = sup.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(p["ports"]["web"], sup.base);
    assert!(sup.registry_path().exists());
}

#[test]
fn a_repository_with_an_extension_git_does_not_know_is_refused_cleanly() {
    let repo = TestRepo::new();
    repo.git(["config", "core.repositoryformatversion", "1"]);
    repo.git(["config", "extensions.frobnicate", "true"]);
    let out = repo.wp(["allocate"]).fails();
    let err = out.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("git refuses this repository"), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
    assert!(!repo.common_dir().join("worktree-registry").exists());
    assert_eq!(
        repo.wp(["allocate", "--json"]).fails().json()["error"],
        "GIT_FAILED"
    );
}

#[test]
#[ignore = "needs root to chown a repository to another user; .ci/run runs it when root"]
fn a_repository_owned_by_someone_else_says_what_git_advises() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run this test as root: only root can hand a repository to another user"
    );
    let repo = TestRepo::new();
    std::os::unix::fs::chown(&repo.root, Some(65534), Some(65534)).unwrap();
    let out = repo.wp(["allocate"]).fails();
    let err = out.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("dubious ownership"), "{err}");
    assert!(err.contains("safe.directory"), "{err}");
    assert!(!repo.common_dir().join("worktree-registry").exists());
}
