use crate::support::*;

#[test]
fn remove_deletes_the_worktree_and_releases_its_ports() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let path = repo.path("feature");
    repo.wp(["add", "-b", "feature", path.to_str().unwrap()])
        .succeeds();
    let out = repo.wp(["remove", "feature", "--json"]).succeeds().json();
    assert_eq!(out["released"]["web"], b + 1);
    assert!(!path.exists());
    assert!(repo.registry()["allocated_ports"].get("feature").is_none());
    // The port is free again for the next worktree.
    let next = repo.path("next");
    let out = repo
        .wp(["add", next.to_str().unwrap(), "--json"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], b + 1);
}

#[test]
fn a_dirty_worktree_is_kept_with_its_ports_unless_forced() {
    let repo = TestRepo::new();
    let path = repo.path("dirty");
    repo.wp(["add", "-b", "dirty", path.to_str().unwrap()])
        .succeeds();
    write(&path.join("README"), "changed\n");
    let out = repo.wp(["remove", path.to_str().unwrap()]).fails();
    assert!(
        out.stderr().contains("ports are kept"),
        "{}",
        out.describe()
    );
    assert!(repo.registry()["allocated_ports"].get("dirty").is_some());
    repo.wp(["remove", "--force", "dirty"]).succeeds();
    assert!(!path.exists());
    assert!(repo.registry()["allocated_ports"].get("dirty").is_none());
    assert_eq!(repo.wp(["remove", "main"]).fails().code(), Some(1));
}
