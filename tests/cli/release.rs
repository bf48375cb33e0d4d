use crate::support::*;

#[test]
fn release_all_or_some_services() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    repo.wp(["allocate"]).succeeds();

    let out = repo
        .wp_in(&feature, ["release", "--service", "db", "--json"])
        .succeeds()
        .json();
    // main was allocated first, when feature allocated (main-first).
    assert_eq!(out["released"]["db"], b + 21);
    let reg = repo.registry();
    assert!(reg["allocated_ports"]["feature"].get("db").is_none());
    assert_eq!(reg["allocated_ports"]["feature"]["web"], b + 1);

    let out = repo.wp(["release", "feature"]).succeeds().stdout();
    assert!(out.contains(&format!("web {}", b + 1)), "{out}");
    let reg = repo.registry();
    assert!(reg["allocated_ports"].get("feature").is_none());
    assert!(reg["worktrees"].get("feature").is_none());
    assert_eq!(reg["allocated_ports"]["main"]["web"], b, "others are kept");

    // Nothing left: not an error.
    let out = repo.wp(["release", "feature"]).succeeds().stdout();
    assert!(out.contains("nothing to release"), "{out}");
}

#[test]
fn release_refuses_unknown_service_and_worktree() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let before = repo.registry_snapshot();
    let out = repo
        .wp(["release", "--service", "cache", "--json"])
        .fails()
        .json();
    assert_eq!(out["error"], "UNKNOWN_SERVICE");
    let out = repo.wp(["release", "nope", "--json"]).fails().json();
    assert_eq!(out["error"], "WORKTREE_NOT_FOUND");
    assert_eq!(before, repo.registry_snapshot());
}

#[test]
fn release_a_worktree_that_git_no_longer_has() {
    let repo = TestRepo::new();
    let old = repo.add_worktree("old");
    repo.wp_in(&old, ["allocate"]).succeeds();
    repo.git(["worktree", "remove", old.to_str().unwrap()]);
    repo.wp(["release", "old"]).succeeds();
    assert!(repo.registry()["allocated_ports"].get("old").is_none());
}
