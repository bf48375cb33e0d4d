//! A damaged registry never leads to a port handed out twice.

use crate::support::*;

/// main, a and b allocated; returns the repo and c, a worktree not yet allocated.
fn populated() -> (TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    for name in ["a", "b"] {
        let p = repo.add_worktree(name);
        repo.wp_in(&p, ["allocate"]).succeeds();
    }
    let c = repo.add_worktree("c");
    (repo, c)
}

#[test]
fn truncated_garbage_or_empty_file_recovers_from_the_backup() {
    let good = std::fs::read(populated().0.registry_path()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated at 1", good[..1].to_vec()),
        ("truncated in the middle", good[..good.len() / 2].to_vec()),
        ("truncated before the end", good[..good.len() - 3].to_vec()),
        ("garbage", b"\x00\x01not json at all\xff".to_vec()),
        ("wrong shape", b"[1, 2, 3]".to_vec()),
    ];
    for (what, bytes) in cases {
        let (repo, c) = populated();
        std::fs::write(repo.registry_path(), &bytes).unwrap();
        let out = repo.wp_in(&c, ["allocate", "--json"]).succeeds();
        assert!(
            out.stderr().contains("recovered"),
            "{what}: {}",
            out.describe()
        );
        let reg = repo.registry();
        let keys: Vec<&String> = reg["allocated_ports"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c", "main"], "{what}");
        assert_unique(&all_registry_ports(&reg));
    }
}

#[test]
fn damaged_file_and_damaged_backup_are_refused_and_left_alone() {
    let (repo, c) = populated();
    std::fs::write(repo.registry_path(), b"{\"allocated_ports\": {\"main\"").unwrap();
    let backup = repo.common_dir().join("worktree-registry/ports.json.bak");
    std::fs::write(&backup, b"garbage").unwrap();
    let before = repo.registry_snapshot();
    let out = repo.wp_in(&c, ["allocate", "--json"]).fails().json();
    assert_eq!(out["error"], "REGISTRY_CORRUPT");
    assert!(
        out["message"].as_str().unwrap().contains("ports.json.bak"),
        "{out}"
    );
    assert_eq!(before, repo.registry_snapshot());
    // Without any backup: still refused, never a fresh empty registry.
    std::fs::remove_file(&backup).unwrap();
    let out = repo.wp_in(&c, ["allocate", "--json"]).fails().json();
    assert_eq!(out["error"], "REGISTRY_CORRUPT");
    assert_eq!(repo.wp(["get", "web"]).fails().code(), Some(1));
}

#[test]
fn empty_file_without_backup_starts_empty() {
    let repo = TestRepo::new();
    write(&repo.registry_path(), "");
    let out = repo.wp(["allocate", "--json"]).succeeds();
    assert!(out.stderr().contains("empty"), "{}", out.describe());
    assert_eq!(out.json()["ports"]["web"], repo.base);
}

#[test]
fn a_registry_listing_a_port_twice_recovers_from_the_backup() {
    let (repo, c) = populated();
    let mut reg = repo.registry();
    let main_web = reg["allocated_ports"]["main"]["web"].clone();
    reg["allocated_ports"]["a"]["web"] = main_web;
    std::fs::write(repo.registry_path(), reg.to_string()).unwrap();
    let out = repo.wp_in(&c, ["allocate"]).succeeds();
    assert!(
        out.stderr().contains("registered twice"),
        "{}",
        out.describe()
    );
    assert_unique(&all_registry_ports(&repo.registry()));
}
