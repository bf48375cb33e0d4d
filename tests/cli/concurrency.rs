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

/// allocate, render --all, repair, remove and prune, all at once: no port twice, every live
/// worktree's `.env` names exactly the ports the registry gives it, and a removed worktree
/// never comes back (render --all must not allocate for it, repair must not restore it).
#[test]
fn mixed_commands_at_once_keep_every_env_true_and_bring_nothing_back() {
    for round in 0..3 {
        let repo = TestRepo::new();
        let worktrees: Vec<_> = (0..8)
            .map(|i| repo.add_worktree(&format!("wt{i}")))
            .collect();
        repo.wp(["allocate"]).succeeds();
        for dir in &worktrees {
            repo.wp_in(dir, ["allocate"]).succeeds();
        }
        let removed = &worktrees[..3];
        let mut children = Vec::new();
        let mut spawn = |dir: &std::path::Path, args: &[&str]| {
            let mut run = repo
                .wp_in(dir, args)
                .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "60");
            run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            children.push((args.join(" "), run.cmd.spawn().unwrap()));
        };
        for (i, dir) in worktrees.iter().enumerate() {
            spawn(dir, &["allocate"]);
            if i % 2 == 0 {
                spawn(&repo.root, &["render", "--all"]);
            }
        }
        for dir in removed {
            spawn(&repo.root, &["remove", "--force", dir.to_str().unwrap()]);
        }
        spawn(&repo.root, &["repair"]);
        spawn(&repo.root, &["prune"]);
        spawn(&repo.root, &["render", "--all", "--force"]);
        for (what, child) in children {
            let out = Out(child.wait_with_output().unwrap());
            // Only commands inside a worktree being removed may fail (it vanished).
            if !out.0.status.success() {
                assert!(
                    what == "allocate"
                        && (out.stderr().contains("no directory")
                            || out.stderr().contains("not a git repository")
                            || out.stderr().contains("no longer exists")
                            || out.stderr().contains("was removed while rendering")
                            || out.stderr().contains("could not")),
                    "round {round}: {what}: {}",
                    out.describe()
                );
            }
        }
        let reg = repo.registry();
        assert_unique(&all_registry_ports(&reg));
        for dir in removed {
            let key = dir.file_name().unwrap().to_str().unwrap();
            assert!(
                reg["allocated_ports"].get(key).is_none(),
                "round {round}: {key} came back: {reg}"
            );
        }
        for dir in worktrees[3..].iter().chain([&repo.root]) {
            let key = if *dir == repo.root {
                "main"
            } else {
                dir.file_name().unwrap().to_str().unwrap()
            };
            let env = std::fs::read_to_string(dir.join(".env")).unwrap();
            for (svc, port) in ports_of(&reg["allocated_ports"][key]) {
                let line = format!("{}_PORT={port}\n", svc.to_uppercase());
                assert!(
                    env.contains(&line),
                    "round {round}: {key}: {line:?} not in {env}"
                );
            }
        }
    }
}

/// Three block-strategy repositories, each with four worktrees, all allocating at once: every
/// repository claims its own block, every worktree its own slot, no port twice, and each
/// service at its slot's offset.
#[test]
fn block_repositories_allocating_at_once_claim_distinct_blocks_and_slots() {
    let block = port_block();
    let b = block.base;
    // Blocks of 12 (4 slots of 3) inside this test's 40 ports: room for three repositories.
    let config = format!(
        "strategy = \"block\"\n[block]\nbase = {b}\nsize = 3\nspan = 12\n\
         [services.web]\noffset = 0\n[services.db]\noffset = 2\n"
    );
    let repo = TestRepo::with_config(&config, block);
    let roots = [
        repo.root.clone(),
        repo.another("two", Some(&config)),
        repo.another("three", Some(&config)),
    ];
    let dirs = with_worktrees(&repo, &roots, "r", 3);
    let mut all = Vec::new();
    for out in allocate_all_at_once(&repo, &dirs) {
        let json = out.json();
        let web = json["ports"]["web"].as_u64().unwrap() as u16;
        assert_eq!(json["ports"]["db"], web + 2, "db at offset 2 of the slot");
        assert_eq!((web - b) % 3, 0, "web at a slot start");
        all.push(web);
        all.push(web + 2);
    }
    assert_unique(&all);
    let mut starts: Vec<u64> = roots
        .iter()
        .map(|root| {
            let reg: serde_json::Value = serde_json::from_slice(
                &std::fs::read(root.join(".git/worktree-registry/ports.json")).unwrap(),
            )
            .unwrap();
            reg["block"]["start"].as_u64().unwrap()
        })
        .collect();
    starts.sort();
    let b = u64::from(b);
    assert_eq!(starts, [b, b + 12, b + 24]);
}

/// Six processes allocating at once in full ranges, with six gone worktrees to take ports
/// back from: every one gets ports, none twice, and each gone worktree's `[on] release` runs
/// exactly once (by the process that took its ports back, after saving).
#[test]
fn racing_allocations_in_a_full_range_reclaim_each_gone_worktree_once() {
    let block = port_block();
    let b = block.base;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("on.log");
    let config = format!(
        "[services.web]\nrange = [{b}, {}]\n[services.db]\nrange = [{}, {}]\n[on]\n\
         release = \"echo {{{{ worktree.name }}}} >> {}\"\n",
        b + 6,
        b + 20,
        b + 26,
        log.display()
    );
    let repo = TestRepo::with_config(&config, block);
    repo.wp(["allocate", "--no-render"]).succeeds();
    let gone: Vec<_> = (0..6)
        .map(|i| repo.add_worktree(&format!("gone{i}")))
        .collect();
    for g in &gone {
        repo.wp_in(g, ["allocate", "--no-render"]).succeeds();
    }
    for g in &gone {
        std::fs::remove_dir_all(g).unwrap();
    }
    let fresh: Vec<_> = (0..6)
        .map(|i| repo.add_worktree(&format!("new{i}")))
        .collect();
    let children: Vec<_> = fresh
        .iter()
        .map(|d| {
            let mut run = repo.wp_in(d, ["allocate", "--no-render", "--json"]);
            run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            run.cmd.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = Out(child.wait_with_output().unwrap());
        assert!(out.0.status.success(), "{}", out.describe());
    }
    let reg = repo.registry();
    let keys: Vec<&String> = reg["allocated_ports"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert!(keys.iter().all(|k| !k.starts_with("gone")), "{keys:?}");
    assert_unique(&all_registry_ports(&reg));
    let mut released: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    released.sort();
    let want: Vec<String> = (0..6).map(|i| format!("gone{i}")).collect();
    assert_eq!(released, want);
}

/// A block repository and two ranges repositories racing for one span (issue 26, item 5):
/// whoever wins, no port is handed out twice and no ranges repository holds a port inside
/// the block the block repository ends up claiming.
#[test]
fn a_block_repository_and_ranges_repositories_racing_for_one_span_never_overlap() {
    let block = port_block();
    let b = block.base;
    let blocks = format!(
        "strategy = \"block\"\n[block]\nbase = {b}\nsize = 2\nspan = 10\n\
         [services.web]\noffset = 0\n[services.db]\noffset = 1\n"
    );
    let ranges = format!("[services.web]\nrange = [{b}, {}]\n", b + 39);
    let repo = TestRepo::with_config(&blocks, block);
    let roots = [
        repo.root.clone(),
        repo.another("ranges-one", Some(&ranges)),
        repo.another("ranges-two", Some(&ranges)),
    ];
    let dirs = with_worktrees(&repo, &roots, "s", 3);
    allocate_all_at_once(&repo, &dirs);
    let registry = |root: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(root.join(".git/worktree-registry/ports.json")).unwrap(),
        )
        .unwrap()
    };
    let block_reg = registry(&roots[0]);
    let start = block_reg["block"]["start"].as_u64().unwrap() as u16;
    let claim = start..=start + 9;
    let mut all = all_registry_ports(&block_reg);
    assert_eq!(all.len(), 8, "{block_reg}");
    assert!(all.iter().all(|p| claim.contains(p)), "{block_reg}");
    for root in &roots[1..] {
        let ports = all_registry_ports(&registry(root));
        assert_eq!(ports.len(), 4);
        for p in &ports {
            assert!(
                !claim.contains(p),
                "{p} is inside the claimed block {claim:?}"
            );
        }
        all.extend(ports);
    }
    assert_unique(&all);
}

/// Each of `roots` and `n` new worktrees of each (`<prefix><r>-wt<i>`), as directories.
fn with_worktrees(
    repo: &TestRepo,
    roots: &[std::path::PathBuf],
    prefix: &str,
    n: usize,
) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    for (r, root) in roots.iter().enumerate() {
        dirs.push(root.clone());
        for i in 0..n {
            let name = format!("{prefix}{r}-wt{i}");
            let path = repo.path(&name);
            repo.env.git(
                root,
                ["worktree", "add", "-q", "-b", &name, path.to_str().unwrap()],
            );
            dirs.push(path);
        }
    }
    dirs
}

/// `allocate --json --no-render` in every one of `dirs` at once; each must succeed.
fn allocate_all_at_once(repo: &TestRepo, dirs: &[std::path::PathBuf]) -> Vec<Out> {
    let children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let mut run = repo.wp_in(dir, ["allocate", "--json", "--no-render"]);
            run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            run.cmd.spawn().unwrap()
        })
        .collect();
    (children.into_iter())
        .map(|child| {
            let out = Out(child.wait_with_output().unwrap());
            assert!(out.0.status.success(), "{}", out.describe());
            out
        })
        .collect()
}

/// Repositories moved with `mv` while their allocations run, and the state dir wiped between
/// rounds (issue 26, item 4): once every repository has allocated again, no port is held by
/// two of them, read from every registry (the truth), not from the index.
#[test]
fn a_storm_with_repositories_moved_and_the_state_dir_wiped_never_hands_a_port_out_twice() {
    let block = port_block();
    let b = block.base;
    let config = format!(
        "[services.web]\nrange = [{b}, {}]\n[services.db]\nrange = [{}, {}]\n",
        b + 19,
        b + 20,
        b + 39
    );
    let repo = TestRepo::with_config(&config, block);
    let mut roots: Vec<std::path::PathBuf> = vec![repo.root.clone()];
    roots.extend((1..5).map(|i| repo.another(&format!("r{i}"), Some(&config))));
    for root in &roots {
        repo.wp_in(root, ["allocate", "--no-render"]).succeeds();
    }
    let mut generation = 0;
    for round in 0..6 {
        // Every repository takes a new web port under the machine lock, all at once...
        let children: Vec<_> = (roots.iter())
            .map(|dir| {
                let mut run = repo.wp_in(dir, ["allocate", "--move", "web", "--no-render"]);
                run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                run.cmd.spawn().unwrap()
            })
            .collect();
        // ...while one of them is moved away under their feet.
        let victim = round % roots.len();
        generation += 1;
        let to = repo.env.root().join(format!("moved-{victim}-{generation}"));
        std::fs::rename(&roots[victim], &to).unwrap();
        roots[victim] = to;
        for (i, child) in children.into_iter().enumerate() {
            let out = Out(child.wait_with_output().unwrap());
            // A process whose repository moved mid-flight may fail (git finds it gone);
            // the others may not.
            assert!(out.0.status.success() || i == victim, "{}", out.describe());
        }
        if round % 2 == 1 {
            std::fs::remove_dir_all(repo.env.state_dir()).unwrap();
        }
    }
    // Each repository allocates under the machine lock again, where it is now.
    for root in &roots {
        repo.wp_in(root, ["allocate", "--move", "db", "--no-render"])
            .succeeds();
    }
    let mut all = Vec::new();
    for root in &roots {
        let reg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(".git/worktree-registry/ports.json")).unwrap(),
        )
        .unwrap();
        let ports = all_registry_ports(&reg);
        assert_eq!(ports.len(), 2, "{}: {reg}", root.display());
        all.extend(ports);
    }
    assert_unique(&all);
    // And the index knows each of them where it is now.
    let listed = repo
        .wp_in(&roots[1], ["list", "--all", "--json"])
        .succeeds()
        .json();
    let mut paths: Vec<String> = (listed["repositories"].as_array().unwrap().iter())
        .filter(|r| r["gone"] == false)
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let mut want: Vec<String> = (roots.iter())
        .map(|r| r.to_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(paths, want, "{listed:#}");
}

/// Issue 28, item 2: with the records apart, readers without the lock run while saves append
/// to the records file and, every few dozen lines, write it whole into a new generation and
/// delete the old one. No reader ever fails or misses a worktree that kept its ports. And the
/// race made to happen: a reader that read `ports.json`, then waited (a fault point) while a
/// save wrote the records whole and deleted the generation it named, reads `ports.json` again
/// (not the backup, with a warning that ports.json is damaged).
#[test]
fn readers_never_fail_while_the_records_apart_are_appended_and_rewritten() {
    const APART: &str = "GIT_WORKTREE_PORTS_RECORDS_APART_FROM";
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"])
        .env(APART, "2")
        .succeeds();
    let a = repo.add_worktree("a");
    let b = repo.add_worktree("b");
    for wt in [&a, &b] {
        repo.wp_in(wt, ["allocate", "--no-render"])
            .env(APART, "2")
            .succeeds();
    }
    let generations = || -> std::collections::BTreeSet<std::path::PathBuf> {
        repo.records_files().into_iter().collect()
    };
    let lines = || -> usize {
        let file = generations().into_iter().next().unwrap();
        std::fs::read_to_string(file).unwrap().lines().count()
    };
    let read = |paused: bool| {
        let mut run = repo.wp(["list", "--json"]);
        if paused {
            run = run.env("GIT_WORKTREE_PORTS_FAULT", "pause:records.read");
        }
        let out = run.succeeds();
        // Not "recovered from the backup": ports.json was never damaged.
        assert_eq!(out.stderr(), "", "paused: {paused}");
        let list = out.json();
        let names: Vec<String> = (list["worktrees"].as_array().unwrap().iter())
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n == "main") && names.iter().any(|n| n == "b"),
            "{list}"
        );
    };
    // Two lines a round (a's removal, then its record again): written whole every 35 rounds or
    // so, past 2 x 3 + 64 lines.
    let round = || {
        repo.wp_in(&a, ["release"]).env(APART, "2").succeeds();
        repo.wp_in(&a, ["allocate", "--no-render"])
            .env(APART, "2")
            .succeeds();
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut seen = generations();
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut reads = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        read(false);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for _ in 0..40 {
            round();
            seen.extend(generations());
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
    assert!(
        seen.len() >= 2,
        "the records were written whole again: {seen:?}"
    );

    // The race: close to the next whole write, a reader reads ports.json and waits; the
    // rounds go on until the generation it read is gone.
    while lines() < 60 {
        round();
    }
    let before = generations();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| read(true));
        std::thread::sleep(std::time::Duration::from_millis(200));
        while generations() == before {
            round();
        }
        reader.join().unwrap();
    });
    assert_eq!(generations().len(), 1);
    let reg = repo.registry();
    assert_eq!(reg["worktrees"].as_object().unwrap().len(), 3, "{reg}");
    assert_unique(&all_registry_ports(&reg));
}
