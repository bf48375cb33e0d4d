//! Repository layouts: bare, odd paths, a linked worktree whose git name is `main`.

use crate::support::*;

#[test]
fn bare_repository_worktrees() {
    let repo = TestRepo::bare();
    let b = repo.base;
    let one = repo.add_worktree("one");
    let two = repo.add_worktree("two");
    let a = repo.wp_in(&one, ["allocate", "--json"]).succeeds().json();
    let c = repo.wp_in(&two, ["allocate", "--json"]).succeeds().json();
    assert_eq!(a["ports"]["web"], b);
    assert_eq!(c["ports"]["web"], b + 1);
    assert!(repo.root.join("worktree-registry/ports.json").exists());
    // The bare dir itself has no working tree: name one.
    let out = repo.wp(["allocate"]).fails();
    assert!(
        out.stderr().contains("bare repository"),
        "{}",
        out.describe()
    );
    assert_eq!(
        repo.wp(["get", "web", "-w", "two"]).succeeds().stdout(),
        format!("{}\n", b + 1)
    );
    let list = repo.wp(["list", "--json"]).succeeds().json();
    assert_eq!(list["worktrees"].as_array().unwrap().len(), 2);
}

#[test]
fn paths_with_spaces_and_non_ascii() {
    let repo = TestRepo::new();
    let dir = repo.path("dir with spaces/wörk trëe");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    repo.git([
        "worktree",
        "add",
        "-q",
        "-b",
        "umlaut",
        dir.to_str().unwrap(),
    ]);
    let out = repo.wp_in(&dir, ["allocate", "--json"]).succeeds().json();
    // The key is git's own name for it: git turns the space into '-'.
    assert_eq!(out["worktree"], "wörk-trëe");
    assert!(repo.common_dir().join("worktrees/wörk-trëe").is_dir());
    assert_eq!(out["path"], dir.to_str().unwrap());
    assert_eq!(
        repo.wp(["get", "web", "-w", dir.to_str().unwrap()])
            .succeeds()
            .stdout(),
        // main took the base port first (main-first).
        format!("{}\n", repo.base + 1)
    );
    let list = repo.wp(["list", "--json"]).succeeds().json();
    let me = list["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "wörk-trëe")
        .unwrap();
    assert_eq!(me["path"], dir.to_str().unwrap());
    assert_eq!(me["branch"], "umlaut");
}

#[test]
fn a_linked_worktree_named_main_does_not_collide_with_the_main_worktree() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let other = repo.path("elsewhere/main");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    repo.git([
        "worktree",
        "add",
        "-q",
        "-b",
        "second",
        other.to_str().unwrap(),
    ]);
    let out = repo.wp_in(&other, ["allocate", "--json"]).succeeds().json();
    assert_eq!(out["worktree"], "worktrees/main");
    assert_eq!(out["ports"]["web"], b + 1);
    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"]["main"]["web"], b);
    assert_eq!(reg["allocated_ports"]["worktrees/main"]["web"], b + 1);
    assert_eq!(
        repo.wp(["get", "web", "-w", "main"]).succeeds().stdout(),
        format!("{b}\n")
    );
    assert_eq!(
        repo.wp(["get", "web", "-w", "worktrees/main"])
            .succeeds()
            .stdout(),
        format!("{}\n", b + 1)
    );
    assert_eq!(
        repo.wp(["get", "web", "-w", other.to_str().unwrap()])
            .succeeds()
            .stdout(),
        format!("{}\n", b + 1)
    );
}

#[test]
fn git_dir_and_work_tree_from_the_environment_are_honoured() {
    // In an ordinary repository (libgit2 answers) and a reftable one (the git CLI answers).
    for format in [&[][..], &["--ref-format=reftable"]] {
        let repo = TestRepo::with_format(format);
        let b = repo.base;
        let feature = repo.add_worktree("feature");
        repo.wp(["allocate"]).succeeds();
        // As git sets them for a hook running in the linked worktree, from an unrelated cwd.
        let elsewhere = repo.path("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let in_feature = |args: &[&str]| {
            repo.wp_in(&elsewhere, args)
                .env("GIT_DIR", repo.common_dir().join("worktrees/feature"))
                .env("GIT_WORK_TREE", &feature)
                .succeeds()
        };
        let out = in_feature(&["allocate", "--json"]).json();
        assert_eq!(out["worktree"], "feature", "{format:?}");
        assert_eq!(out["ports"]["web"], b + 1, "{format:?}");
        assert_eq!(in_feature(&["get", "web"]).stdout(), format!("{}\n", b + 1));
        // A relative GIT_DIR, as git passes it to hooks of the main worktree.
        let out = repo
            .wp_in(&repo.root, ["get", "web"])
            .env("GIT_DIR", ".git")
            .succeeds()
            .stdout();
        assert_eq!(out, format!("{b}\n"), "{format:?}");
        // `git -C <path> worktree-ports` (git finds the binary on PATH).
        let out = repo.env.git(
            &elsewhere,
            [
                "-C",
                feature.to_str().unwrap(),
                "worktree-ports",
                "get",
                "web",
            ],
        );
        assert_eq!(out, format!("{}\n", b + 1), "{format:?}");
    }
}
