use crate::support::*;

#[test]
fn list_shows_every_allocation_and_marks_gone_worktrees() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    let gone = repo.add_worktree("gone");
    repo.wp_in(&gone, ["allocate"]).succeeds();
    std::fs::remove_dir_all(&gone).unwrap();

    let json = repo.wp(["list", "--json"]).succeeds().json();
    let list = json["worktrees"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let by_name = |n: &str| list.iter().find(|w| w["name"] == n).unwrap().clone();
    assert_eq!(by_name("main")["ports"]["web"], b);
    assert_eq!(by_name("main")["branch"], "main");
    assert_eq!(by_name("main")["exists"], true);
    assert_eq!(by_name("feature")["path"], feature.to_str().unwrap());
    assert_eq!(by_name("feature")["branch"], "feature");
    assert_eq!(by_name("gone")["exists"], false);

    let table = repo.wp(["ls"]).succeeds().stdout();
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("WORKTREE  SLOT  BRANCH"), "{table}");
    assert!(
        header.contains("web") && header.contains("db") && header.ends_with("PATH"),
        "{table}"
    );
    let gone_line = table.lines().find(|l| l.starts_with("gone")).unwrap();
    assert!(gone_line.ends_with("(gone)"), "{table}");
    assert!(table.contains("git worktree-ports prune"), "{table}");
}

#[test]
fn list_of_an_empty_registry() {
    let repo = TestRepo::new();
    let out = repo.wp(["list"]).succeeds().stdout();
    assert!(out.contains("no ports allocated"), "{out}");
    assert_eq!(
        repo.wp(["list", "--json"]).succeeds().json()["worktrees"],
        serde_json::json!([])
    );
    assert!(
        !repo.registry_path().exists(),
        "a reader must not create the registry"
    );
}

#[test]
fn list_reports_the_live_branch() {
    let repo = TestRepo::new();
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    repo.env.git(&feature, ["switch", "-q", "-c", "renamed"]);
    let json = repo.wp(["list", "--json"]).succeeds().json();
    assert_eq!(json["worktrees"][0]["branch"], "renamed");
    // Read from the worktree's own HEAD file, not by opening a repository per worktree: a
    // detached HEAD (an object id there) has no branch, and a branch name with a slash
    // keeps it.
    repo.env.git(&feature, ["switch", "-q", "--detach"]);
    let json = repo.wp(["list", "--json"]).succeeds().json();
    assert_eq!(json["worktrees"][0]["branch"], serde_json::Value::Null);
    repo.env
        .git(&feature, ["switch", "-q", "-c", "team/feat-x"]);
    let json = repo.wp(["list", "--json"]).succeeds().json();
    assert_eq!(json["worktrees"][0]["branch"], "team/feat-x");
}
