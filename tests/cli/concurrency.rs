//! Many processes at once: every entry kept, no port twice.

use std::process::Stdio;

use crate::support::*;

#[test]
fn sixteen_processes_allocating_at_once_keep_every_entry() {
    let repo = TestRepo::new();
    let worktrees: Vec<_> = (0..16)
        .map(|i| repo.add_worktree(&format!("wt{i}")))
        .collect();
    // A registry exists before the race, so every process first reads it without the lock
    // and must notice, once it holds the lock, that others wrote meanwhile.
    let main = repo.wp(["allocate", "--json"]).succeeds().json();
    let mut reported: Vec<u16> = ports_of(&main["ports"])
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut children = Vec::new();
    for dir in &worktrees {
        let mut run = repo.wp_in(dir, ["allocate", "--json"]);
        run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push(run.cmd.spawn().unwrap());
    }
    for child in children {
        let out = Out(child.wait_with_output().unwrap());
        assert!(out.0.status.success(), "{}", out.describe());
        reported.extend(ports_of(&out.json()["ports"]).into_iter().map(|(_, p)| p));
    }
    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"].as_object().unwrap().len(), 17);
    let ports = all_registry_ports(&reg);
    assert_eq!(ports.len(), 34);
    assert_unique(&ports);
    reported.sort();
    let mut registered = ports.clone();
    registered.sort();
    assert_eq!(
        reported, registered,
        "what each process printed is what was saved"
    );
}

#[test]
fn a_held_lock_makes_others_wait_then_time_out() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let feature = repo.add_worktree("feature");
    let lock_path = repo.common_dir().join("worktree-registry/ports.lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    let out = repo
        .wp_in(&feature, ["allocate", "--json"])
        .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "1.5")
        .fails();
    assert!(
        out.stderr()
            .contains(&format!("waiting for lock on {}", lock_path.display())),
        "{}",
        out.describe()
    );
    assert_eq!(out.json()["error"], "LOCK_TIMEOUT");
    // Readers need no lock.
    repo.wp(["get", "web"]).succeeds();
    drop(lock);
    repo.wp_in(&feature, ["allocate"]).succeeds();
}
