//! `--port SERVICE=PORT`: each refusal has its code, names the holder, lists 3 free
//! alternatives nearest first, and writes nothing.

use std::net::TcpListener;

use crate::support::*;

/// Allocate main and a `feature` worktree; returns the feature path.
fn two_worktrees(repo: &TestRepo) -> std::path::PathBuf {
    repo.wp(["allocate"]).succeeds();
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    feature
}

#[test]
fn a_pin_is_honoured_and_auto_takes_the_automatic_choice() {
    let repo = TestRepo::new();
    let b = repo.base;
    let out = repo
        .wp([
            "allocate",
            "--json",
            "--port",
            &format!("web={}", b + 7),
            "--port",
            "db=auto",
        ])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], b + 7);
    assert_eq!(out["ports"]["db"], b + 20);
}

#[test]
fn a_pin_moves_an_existing_port_and_frees_the_old_one() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let out = repo
        .wp(["allocate", "--json", "--port", &format!("web={}", b + 5)])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], b + 5);
    assert_eq!(out["ports"]["db"], b + 20, "other services stay");
    // The old port went back: the next worktree gets it.
    let feature = repo.add_worktree("feature");
    let f = repo
        .wp_in(&feature, ["allocate", "--json"])
        .succeeds()
        .json();
    assert_eq!(f["ports"]["web"], b);
    let history = serde_json::Value::Array(repo.history()).to_string();
    assert!(history.contains("released"), "{history}");
}

#[test]
fn port_allocated_names_the_worktree_and_suggests_three() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feature = two_worktrees(&repo);
    let before = repo.registry_snapshot();
    let out = repo
        .wp_in(
            &feature,
            ["allocate", "--json", "--port", &format!("web={b}")],
        )
        .fails()
        .json();
    assert_eq!(out["error"], "PORT_ALLOCATED");
    assert_eq!(out["details"]["worktree"], "main");
    assert!(out["message"].as_str().unwrap().contains("worktree main"));
    // b is main's, b+1 is feature's own: the nearest alternatives are above.
    assert_eq!(out["suggestions"], serde_json::json!([b + 2, b + 3, b + 4]));
    assert_eq!(before, repo.registry_snapshot());
    let human = repo
        .wp_in(&feature, ["allocate", "--port", &format!("web={b}")])
        .fails()
        .stderr();
    assert!(
        human.contains(&format!("free instead: {}, {}, {}", b + 2, b + 3, b + 4)),
        "{human}"
    );
}

#[test]
fn port_in_use_names_the_pid_and_command() {
    let repo = TestRepo::new();
    let b = repo.base;
    let _listener = TcpListener::bind(("0.0.0.0", b + 10)).unwrap();
    let out = repo
        .wp(["allocate", "--json", "--port", &format!("web={}", b + 10)])
        .fails()
        .json();
    assert_eq!(out["error"], "PORT_IN_USE");
    assert_eq!(out["details"]["pid"], std::process::id());
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", std::process::id())).unwrap();
    assert_eq!(out["details"]["command"], comm.trim());
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", std::process::id())),
        "{out}"
    );
    assert_eq!(
        out["suggestions"],
        serde_json::json!([b + 9, b + 11, b + 8])
    );
    assert!(!repo.registry_path().exists());
}

#[test]
fn invalid_ports_are_refused() {
    let repo = TestRepo::new();
    let b = repo.base;
    for pin in ["80", "1023", "65536", "70000"] {
        let out = repo
            .wp(["allocate", "--json", "--port", &format!("web={pin}")])
            .fails()
            .json();
        assert_eq!(out["error"], "INVALID_PORT", "{pin}");
        assert_eq!(out["suggestions"].as_array().unwrap().len(), 3, "{pin}");
        let s: Vec<u64> = out["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            s.iter().all(|p| (b as u64..=b as u64 + 19).contains(p)),
            "{s:?}"
        );
    }
    assert!(!repo.registry_path().exists());
}

#[test]
fn reserved_ports_are_refused_and_skipped() {
    let block = port_block();
    let base = block.base;
    let config = format!(
        "reserved = [\"{}-{}\"]\n{}",
        base,
        base + 4,
        default_config(base)
    );
    let repo = TestRepo::with_config(&config, block);
    let out = repo
        .wp(["allocate", "--json", "--port", &format!("web={}", base + 2)])
        .fails()
        .json();
    assert_eq!(out["error"], "SYSTEM_RESERVED");
    assert_eq!(
        out["suggestions"],
        serde_json::json!([base + 5, base + 6, base + 7])
    );
    let ok = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(ok["ports"]["web"], base + 5);
}

#[test]
fn unknown_service_is_refused() {
    let repo = TestRepo::new();
    let out = repo
        .wp(["allocate", "--json", "--port", "wbe=auto"])
        .fails()
        .json();
    assert_eq!(out["error"], "UNKNOWN_SERVICE");
    assert!(
        out["message"].as_str().unwrap().contains("web, db"),
        "{out}"
    );
    assert!(!repo.registry_path().exists());
}

#[test]
fn exhaustion_names_service_and_range_and_writes_nothing() {
    let block = port_block();
    let base = block.base;
    let config = format!(
        "[services.web]\nrange = [{base}, {}]\n[services.db]\nrange = [{}, {}]\n",
        base + 19,
        base + 20,
        base + 21
    );
    let repo = TestRepo::with_config(&config, block);
    repo.wp(["allocate"]).succeeds();
    let a = repo.add_worktree("a");
    repo.wp_in(&a, ["allocate"]).succeeds();
    let before = repo.registry_snapshot();
    let b = repo.add_worktree("b");
    let out = repo.wp_in(&b, ["allocate", "--json"]).fails().json();
    assert_eq!(out["error"], "RANGE_EXHAUSTED");
    let msg = out["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("service db in {}-{}", base + 20, base + 21)),
        "{msg}"
    );
    assert!(msg.contains("2 allocated"), "{msg}");
    // All or nothing: web was free, yet nothing was written.
    assert_eq!(before, repo.registry_snapshot());
}
