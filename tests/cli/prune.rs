use crate::support::*;

#[test]
fn prune_drops_deleted_and_removed_worktrees_but_keeps_locked_ones() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let mut paths = Vec::new();
    for name in ["alive", "deleted", "removed", "locked"] {
        let p = repo.add_worktree(name);
        repo.wp_in(&p, ["allocate"]).succeeds();
        paths.push(p);
    }
    std::fs::remove_dir_all(&paths[1]).unwrap();
    repo.git(["worktree", "remove", paths[2].to_str().unwrap()]);
    repo.git([
        "worktree",
        "lock",
        "--reason",
        "on a usb disk",
        paths[3].to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&paths[3]).unwrap();
    let deleted_web = repo.registry()["allocated_ports"]["deleted"]["web"].clone();
    // A dead worktree gets no new ports.
    let out = repo.wp(["allocate", "deleted", "--json"]).fails().json();
    assert_eq!(out["error"], "WORKTREE_NOT_FOUND");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("git worktree prune"),
        "{out}"
    );

    // Dry run: reports, changes nothing.
    let before = repo.registry_snapshot();
    let dry = repo.wp(["prune", "--dry-run", "--json"]).succeeds().json();
    assert_eq!(dry["dry_run"], true);
    let names: Vec<&str> = dry["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deleted", "removed"]);
    assert_eq!(before, repo.registry_snapshot());
    let human = repo.wp(["prune", "--dry-run"]).succeeds().stdout();
    assert!(human.contains("would prune deleted"), "{human}");
    assert!(human.contains(&format!("web {deleted_web}")), "{human}");

    let out = repo.wp(["prune", "--json"]).succeeds().json();
    assert_eq!(out["pruned"][0]["name"], "deleted");
    assert_eq!(out["pruned"][0]["reason"], "directory deleted");
    assert_eq!(out["pruned"][0]["ports"]["web"], deleted_web);
    assert_eq!(out["pruned"][1]["reason"], "no longer a git worktree");
    let reg = repo.registry();
    let keys: Vec<&String> = reg["allocated_ports"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["alive", "locked", "main"]);
    assert!(reg["worktrees"].get("deleted").is_none());

    assert!(
        repo.wp(["prune"])
            .succeeds()
            .stdout()
            .contains("nothing to prune")
    );
}
