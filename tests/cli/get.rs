use crate::support::*;

#[test]
fn get_prints_the_port_alone() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();

    assert_eq!(
        repo.wp(["get", "web"]).succeeds().stdout(),
        format!("{b}\n")
    );
    assert_eq!(
        repo.wp_in(&feature, ["get", "db"]).succeeds().stdout(),
        format!("{}\n", b + 21)
    );
    assert_eq!(
        repo.wp(["get", "web", "-w", "feature"]).succeeds().stdout(),
        format!("{}\n", b + 1)
    );
    assert_eq!(
        repo.wp(["get", "web", "--worktree", feature.to_str().unwrap()])
            .succeeds()
            .stdout(),
        format!("{}\n", b + 1)
    );
    // From a subdirectory of the worktree.
    let sub = feature.join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    assert_eq!(
        repo.wp_in(&sub, ["get", "web"]).succeeds().stdout(),
        format!("{}\n", b + 1)
    );
    assert_eq!(
        repo.wp_in(&sub, ["get", "web", "-w", "main"])
            .succeeds()
            .stdout(),
        format!("{b}\n")
    );
}

#[test]
fn get_fails_without_an_allocation_or_service() {
    let repo = TestRepo::new();
    let out = repo.wp(["get", "web"]).fails();
    assert!(out.stdout().is_empty());
    assert!(
        out.stderr().contains("git worktree-ports allocate"),
        "{}",
        out.describe()
    );
    repo.wp(["allocate"]).succeeds();
    let out = repo.wp(["get", "cache"]).fails();
    assert!(
        out.stderr().contains("it has: db, web"),
        "{}",
        out.describe()
    );
    let out = repo.wp(["get", "web", "-w", "nope"]).fails();
    assert!(
        out.stderr().contains("no worktree named"),
        "{}",
        out.describe()
    );
}
