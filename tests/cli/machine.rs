//! One machine, every repository: the machine index makes every allocation see every
//! repository's ports. Each test has its own state dir (TestEnv's XDG_STATE_HOME).

use std::process::Stdio;

use crate::support::*;

#[test]
fn two_repositories_never_share_a_port_with_nothing_listening() {
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    let a = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let b = repo
        .wp_in(&other, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(a["ports"]["web"], repo.base);
    assert_eq!(b["ports"]["web"], repo.base + 1, "{b}");
    assert_eq!(b["ports"]["db"], repo.base + 21, "{b}");
    // A pin on the other repository's port names it.
    let out = repo
        .wp_in(
            &other,
            [
                "allocate",
                "--json",
                "--port",
                &format!("web={}", repo.base),
            ],
        )
        .fails()
        .json();
    assert_eq!(out["error"], "PORT_ALLOCATED");
    let msg = out["message"].as_str().unwrap();
    assert_eq!(
        redact(msg, &repo),
        "port [BASE+0] is allocated to worktree main of repository [TMP]/repo (service web)"
    );
    // Both are listed in the index, under the state dir.
    let index = repo
        .env
        .root()
        .join("home/.local/state/git-worktree-ports/index.json");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    assert_eq!(
        index["repositories"].as_object().unwrap().len(),
        2,
        "{index}"
    );
}

#[test]
fn sixteen_processes_across_four_repositories_never_share_a_port() {
    let repo = TestRepo::new();
    let mut roots = vec![repo.root.clone()];
    roots.extend((1..4).map(|i| repo.another(&format!("r{i}"), None)));
    let mut dirs = Vec::new();
    for (r, root) in roots.iter().enumerate() {
        for w in 0..4 {
            let path = repo.env.root().join(format!("r{r}-w{w}"));
            repo.env.git(
                root,
                ["worktree", "add", "-q", "--detach", path.to_str().unwrap()],
            );
            dirs.push(path);
        }
    }
    let mut children = Vec::new();
    for dir in &dirs {
        let mut run = repo
            .wp_in(dir, ["allocate", "--json", "--no-render"])
            .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "60");
        run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push(run.cmd.spawn().unwrap());
    }
    let mut reported = Vec::new();
    for child in children {
        let out = Out(child.wait_with_output().unwrap());
        assert!(out.0.status.success(), "{}", out.describe());
        reported.extend(ports_of(&out.json()["ports"]).into_iter().map(|(_, p)| p));
    }
    assert_eq!(reported.len(), 32);
    assert_unique(&reported);
    let mut registered = Vec::new();
    let mut all = Vec::new();
    for root in &roots {
        let mut reg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(".git/worktree-registry/ports.json")).unwrap(),
        )
        .unwrap();
        all.extend(all_registry_ports(&reg));
        // Each main worktree was allocated first by its repository's first worktree.
        reg["allocated_ports"]
            .as_object_mut()
            .unwrap()
            .remove("main")
            .unwrap();
        registered.extend(all_registry_ports(&reg));
    }
    assert_eq!(all.len(), 40);
    assert_unique(&all);
    registered.sort_unstable();
    reported.sort_unstable();
    assert_eq!(registered, reported, "nothing lost");
}

#[test]
fn a_damaged_foreign_registry_is_read_from_its_backup_or_salvaged_never_guessed_free() {
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    let held = repo
        .wp_in(&other, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let dir = other.join(".git/worktree-registry");
    // Damaged file, good backup: the backup's ports are taken.
    std::fs::write(dir.join("ports.json"), b"{garbage").unwrap();
    let out = repo.wp(["allocate", "--json", "--no-render"]).succeeds();
    assert_ne!(
        out.json()["ports"]["web"],
        held["ports"]["web"],
        "{}",
        out.describe()
    );
    // Both damaged, a complete entry still readable: warned, and still never handed out.
    let good = std::fs::read(dir.join("ports.json.bak")).unwrap();
    let cut = &good[..good.len() - 3];
    std::fs::write(dir.join("ports.json"), cut).unwrap();
    std::fs::write(dir.join("ports.json.bak"), cut).unwrap();
    let third = repo.add_worktree("third");
    let out = repo
        .wp_in(&third, ["allocate", "--json", "--no-render"])
        .succeeds();
    assert_eq!(
        redact(&out.stderr(), &repo),
        // (The column is where the cut file ends: its length varies with the ids in it.)
        format!(
            "git-worktree-ports: warning: the registry of repository [TMP]/other cannot be read ([TMP]/other/.git/worktree-registry/ports.json is unusable (EOF while parsing a string at line 1 column {col}) and so is its backup [TMP]/other/.git/worktree-registry/ports.json.bak (EOF while parsing a string at line 1 column {col}); nothing was changed. Run `git worktree-ports repair` to rebuild it from git's worktree list and every readable record); its 4 readable ports are treated as taken, any others it holds are unknown to this allocation: run `git worktree-ports repair` there\n",
            col = cut.len()
        )
    );
    let mine = ports_of(&out.json()["ports"]);
    for (_, p) in ports_of(&held["ports"]) {
        assert!(mine.iter().all(|(_, q)| *q != p), "{p} handed out again");
    }
}

#[test]
fn opting_out_neither_lists_nor_coordinates() {
    let repo = TestRepo::new();
    let config = format!("coordinate = false\n{}", default_config(repo.base));
    let scratch = repo.another("scratch", Some(&config));
    repo.wp(["allocate", "--no-render"]).succeeds();
    let out = repo
        .wp_in(&scratch, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(
        out["ports"]["web"], repo.base,
        "not coordinated: it sees only itself"
    );
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            repo.env
                .root()
                .join("home/.local/state/git-worktree-ports/index.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["repositories"].as_object().unwrap().len(),
        1,
        "{index}"
    );
}

#[test]
fn a_deleted_repository_keeps_its_ports_until_prune_all() {
    // Deleted and moved look the same from here: its ports stay taken until `prune --all`.
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    repo.wp_in(&other, ["allocate", "--no-render"]).succeeds();
    std::fs::remove_dir_all(&other).unwrap();
    let out = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], repo.base + 1, "{out}");
    repo.wp(["check", &repo.base.to_string()])
        .stdout_is(format!(
            "{}: allocated to repository {}, which is gone (moved or deleted: it keeps its ports until it allocates again where it is now, or `git worktree-ports prune --all`)\n",
            repo.base,
            other.display()
        ))
        .fails();
    repo.wp(["prune", "--all"])
        .stdout_is(format!(
            "dropped repository other ({}, gone): its ports {}, {} are free again\n",
            other.display(),
            repo.base,
            repo.base + 20
        ))
        .succeeds();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.env.state_dir().join("index.json")).unwrap())
            .unwrap();
    assert_eq!(
        index["repositories"].as_object().unwrap().len(),
        1,
        "{index}"
    );
    let wt = repo.add_worktree("feat");
    let out = repo
        .wp_in(&wt, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], repo.base, "{out}");
}

#[test]
fn two_repositories_with_the_same_name_get_distinct_compose_names() {
    let repo = TestRepo::new();
    let a = repo.env.root().join("a");
    let b = repo.env.root().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let one = {
        let p = repo.another("a/app", None);
        repo.wp_in(&p, ["allocate"]).succeeds();
        std::fs::read_to_string(p.join(".env")).unwrap()
    };
    let two = {
        let p = repo.another("b/app", None);
        repo.wp_in(&p, ["allocate"]).succeeds();
        std::fs::read_to_string(p.join(".env")).unwrap()
    };
    assert!(one.contains("COMPOSE_PROJECT_NAME=app-main\n"), "{one}");
    // Named by its parent too (`b/app`): never another repository's directory name.
    assert!(two.contains("COMPOSE_PROJECT_NAME=b-app-main\n"), "{two}");
}

#[test]
fn list_all_shows_every_repository_and_check_names_the_other_one() {
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    repo.wp(["allocate", "--no-render"]).succeeds();
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate", "--no-render"]).succeeds();
    let b = repo
        .wp_in(&other, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    std::fs::remove_dir_all(&feature).unwrap();

    let all = repo
        .wp_in(&other, ["list", "--all", "--json"])
        .succeeds()
        .json();
    let repos = all["repositories"].as_array().unwrap();
    let names: Vec<&str> = repos.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["other", "repo"], "{all}");
    let mine = &repos[1]["worktrees"];
    let feat = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "feature")
        .unwrap();
    assert_eq!(feat["exists"], false, "{all}");
    let text = repo
        .wp(["list", "--all", "--sort", "port"])
        .succeeds()
        .stdout();
    let first = text.lines().nth(1).unwrap();
    assert!(first.starts_with(&format!("{}  web", repo.base)), "{text}");
    assert!(text.contains("(gone)"), "{text}");

    // check, from the first repository, names the other one and who listens there.
    let port = b["ports"]["web"].as_u64().unwrap() as u16;
    let _l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = repo
        .wp(["check", "--json", &port.to_string()])
        .output()
        .json();
    let entry = &out["ports"][0];
    assert_eq!(entry["status"], "allocated", "{out}");
    assert_eq!(entry["repository"], other.to_str().unwrap(), "{out}");
    let text = repo.wp(["check", &port.to_string()]).output().stdout();
    assert!(
        text.contains(&format!("worktree main of repository {}", other.display()))
            && text.contains("in use by"),
        "{text}"
    );
}

#[test]
fn prune_all_frees_the_ports_of_a_deleted_repository_and_dead_worktrees_everywhere() {
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    let doomed = repo.another("doomed", None);
    repo.wp_in(&doomed, ["allocate", "--no-render"]).succeeds();
    let wt = repo.env.root().join("other-wt");
    repo.env.git(
        &other,
        ["worktree", "add", "-q", "--detach", wt.to_str().unwrap()],
    );
    repo.wp_in(&wt, ["allocate", "--no-render"]).succeeds();
    std::fs::remove_dir_all(&wt).unwrap();
    std::fs::remove_dir_all(&doomed).unwrap();

    let dry = repo
        .wp(["prune", "--all", "--dry-run", "--json"])
        .succeeds()
        .json();
    assert_eq!(dry["repositories_gone"][0]["name"], "doomed", "{dry}");
    assert_eq!(dry["pruned"][0]["repository"], "other", "{dry}");
    let out = repo.wp(["prune", "--all", "--json"]).succeeds().json();
    assert_eq!(out["pruned"][0]["name"], "other-wt", "{out}");
    let list = repo.wp(["list", "--all", "--json"]).succeeds().json();
    let names: Vec<&str> = list["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"doomed"), "{list}");
    // The freed ports are reused.
    let got = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(got["ports"]["web"], repo.base, "{got}");
}

#[test]
fn main_first_the_main_worktree_keeps_the_base_ports_without_getting_a_env() {
    let repo = TestRepo::new();
    let feat = repo.add_worktree("feat");
    let out = repo.wp_in(&feat, ["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], repo.base + 1);
    assert_eq!(repo.registry()["allocated_ports"]["main"]["web"], repo.base);
    assert!(!repo.root.join(".env").exists(), "main was not rendered");
    let main = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(main["ports"]["web"], repo.base);
    assert!(repo.root.join(".env").exists());
}

#[test]
fn lazy_reclaim_a_full_range_takes_back_the_ports_of_gone_worktrees_oldest_first() {
    let block = port_block();
    let b = block.base;
    let config = format!(
        "[services.web]\nrange = [{b}, {}]\n[services.db]\nrange = [{}, {}]\n",
        b + 2,
        b + 20,
        b + 22
    );
    let repo = TestRepo::with_config(&config, block);
    let gone1 = repo.add_worktree("gone1");
    let gone2 = repo.add_worktree("gone2");
    repo.wp_in(&gone1, ["allocate", "--no-render"]).succeeds(); // main first, then gone1
    repo.wp_in(&gone2, ["allocate", "--no-render"]).succeeds();
    std::fs::remove_dir_all(&gone1).unwrap();
    std::fs::remove_dir_all(&gone2).unwrap();
    // Ports are scarce now, not before: a gone worktree keeps its ports while there are others.
    let next = repo.add_worktree("next");
    let out = repo
        .wp_in(&next, ["allocate", "--json", "--no-render"])
        .succeeds();
    let reclaimed = repo.registry()["allocated_ports"].clone();
    assert!(
        reclaimed.get("gone2").is_some(),
        "only the oldest went: {reclaimed}"
    );
    assert!(reclaimed.get("gone1").is_none(), "{reclaimed}");
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: the range was full: gave back the ports of worktrees and repositories that are gone, oldest first: gone1 (directory deleted: db [BASE+21], web [BASE+1])\n"
    );
    assert_eq!(out.json()["ports"]["web"], b + 1, "{}", out.describe());
    assert_unique(&all_registry_ports(&repo.registry()));
}

#[test]
fn templates_and_get_read_another_repositorys_ports_same_worktree_else_main() {
    let repo = TestRepo::new();
    let backend = repo.another("backend", None);
    let bx = repo.env.root().join("backend-x");
    repo.env.git(
        &backend,
        [
            "worktree",
            "add",
            "-q",
            "-b",
            "feature-x",
            bx.to_str().unwrap(),
        ],
    );
    let bmain = repo
        .wp_in(&backend, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let bfx = repo
        .wp_in(&bx, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(bfx["worktree"], "backend-x");

    commit_files(
        &repo,
        &[(
            ".worktree-ports/templates/.env.tera",
            "WEB_PORT={{ ports.web }}\nAPI_PORT={{ port(repo=\"backend\", service=\"web\") }}\n",
        )],
    );
    // The frontend worktree named like backend's: backend's; otherwise backend's main.
    let front_x = repo.env.root().join("front").join("backend-x");
    std::fs::create_dir_all(front_x.parent().unwrap()).unwrap();
    repo.git([
        "worktree",
        "add",
        "-q",
        "--detach",
        front_x.to_str().unwrap(),
    ]);
    repo.wp_in(&front_x, ["allocate"]).succeeds();
    let env = std::fs::read_to_string(front_x.join(".env")).unwrap();
    assert_eq!(
        redact(&env, &repo),
        "# >>> git-worktree-ports >>> managed block: edits here are overwritten by `git worktree-ports render`\nWEB_PORT=[BASE+3]\nAPI_PORT=[BASE+1]\n# <<< git-worktree-ports <<<\n"
    );
    repo.wp(["allocate"]).succeeds();
    let env = std::fs::read_to_string(repo.root.join(".env")).unwrap();
    assert_eq!(
        redact(&env, &repo),
        "# >>> git-worktree-ports >>> managed block: edits here are overwritten by `git worktree-ports render`\nWEB_PORT=[BASE+2]\nAPI_PORT=[BASE+0]\n# <<< git-worktree-ports <<<\n"
    );
    // get --repo, the same way.
    let got = repo
        .wp_in(&front_x, ["get", "web", "--repo", "backend"])
        .succeeds()
        .stdout();
    assert_eq!(got.trim(), bfx["ports"]["web"].to_string());
    let got = repo
        .wp(["get", "web", "--repo", backend.to_str().unwrap()])
        .succeeds()
        .stdout();
    assert_eq!(got.trim(), bmain["ports"]["web"].to_string());
    // env --repo: every port of that worktree, as NAME_PORT.
    let env = repo
        .wp_in(&front_x, ["env", "--repo", "backend", "--format", "json"])
        .succeeds()
        .json();
    assert_eq!(
        env,
        serde_json::json!({"WEB_PORT": bfx["ports"]["web"], "DB_PORT": bfx["ports"]["db"]})
    );
    // Nothing matches: a TEMPLATE_ERROR naming what there is.
    write(
        &repo.root.join(".worktree-ports/templates/.env.tera"),
        "X={{ port(repo=\"nope\", service=\"web\") }}\n",
    );
    let out = repo.wp(["render", "--json"]).fails().json();
    assert_eq!(out["error"], "TEMPLATE_ERROR");
    let msg = out["message"].as_str().unwrap();
    assert_eq!(
        redact(msg, &repo),
        "[TMP]/repo/.worktree-ports/templates/.env.tera:1: no repository \"nope\" on this machine; repositories: backend, repo; nothing was written (fix the template, then run `git worktree-ports render`)"
    );
}

/// Also an older version of the tool among the processes (issue 28): it rewrites a registry
/// under its lock as a whole new file, and the index's stamp of it no longer matches, so the
/// next allocation elsewhere reads it again instead of the index's list of its ports.
#[test]
fn kill_9_storm_across_two_repositories_never_shares_a_port() {
    use std::os::unix::process::ExitStatusExt;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("two-repository storm: seed {seed}");
    let mut next = move |n: u64| {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    let mut dirs = vec![repo.root.clone(), other.clone()];
    for (root, tag) in [(&repo.root, "a"), (&other, "b")] {
        for i in 0..4 {
            let p = repo.env.root().join(format!("{tag}{i}"));
            repo.env.git(
                root,
                ["worktree", "add", "-q", "--detach", p.to_str().unwrap()],
            );
            dirs.push(p);
        }
    }
    let mut killed = 0;
    let mut rewritten = 0;
    for _ in 0..6 {
        let mut children = Vec::new();
        // An older version's save, between the others: same content, a new file.
        let older = |root: &std::path::Path| {
            let dir = root.join(".git/worktree-registry");
            // None before the repository's first allocation: nothing to rewrite yet.
            let Ok(lock) = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("ports.lock"))
            else {
                return false;
            };
            lock.lock().unwrap();
            let Ok(bytes) = std::fs::read(dir.join("ports.json")) else {
                return false;
            };
            std::fs::write(dir.join("ports.json.older"), &bytes).unwrap();
            std::fs::rename(dir.join("ports.json.older"), dir.join("ports.json")).unwrap();
            true
        };
        for _ in 0..16 {
            let dir = &dirs[next(dirs.len() as u64) as usize];
            let args: &[&str] = match next(6) {
                0..=3 => &["allocate", "--no-render"],
                4 => &["release"],
                _ => &["prune"],
            };
            let mut run = repo
                .wp_in(dir, args)
                .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "30");
            run.cmd.stdout(Stdio::null()).stderr(Stdio::null());
            children.push(run.cmd.spawn().unwrap());
        }
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(next(15)));
            let v = next(children.len() as u64) as usize;
            let _ = children[v].kill();
            if older([&repo.root, &other][next(2) as usize]) {
                rewritten += 1;
            }
        }
        for mut c in children {
            if c.wait().unwrap().signal() == Some(libc::SIGKILL) {
                killed += 1;
            }
        }
        let mut all = Vec::new();
        for root in [&repo.root, &other] {
            let file = root.join(".git/worktree-registry/ports.json");
            if let Ok(bytes) = std::fs::read(&file) {
                let reg: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
                all.extend(all_registry_ports(&reg));
            }
        }
        assert_unique(&all);
    }
    eprintln!(
        "two-repository storm: {killed} killed mid-flight, {rewritten} saves by an older version"
    );
    // Afterwards every worktree of both gets its full set, and still nothing is shared.
    for d in &dirs {
        repo.wp_in(d, ["allocate", "--no-render"]).succeeds();
    }
    let all = ports_in(&[&repo.root, &other]);
    assert_eq!(all.len(), 20);
    assert_unique(&all);
}

#[test]
fn a_state_dir_that_cannot_be_used_fails_with_a_clear_error_and_changes_nothing() {
    let repo = TestRepo::new();
    let blocker = repo.env.root().join("not-a-dir");
    std::fs::write(&blocker, b"a file").unwrap();
    let out = repo
        .wp(["allocate", "--json", "--no-render"])
        .env("GIT_WORKTREE_PORTS_STATE_DIR", blocker.join("state"))
        .fails();
    let msg = out.json()["message"].as_str().unwrap().to_string();
    assert_eq!(
        redact(&msg, &repo),
        "could not use the machine index in [TMP]/not-a-dir/state (set GIT_WORKTREE_PORTS_STATE_DIR to a writable directory): File exists (os error 17)"
    );
    assert!(!repo.registry_path().exists(), "nothing was allocated");
}

#[test]
fn a_damaged_index_is_recovered_from_its_backup_and_kept_aside() {
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    repo.wp_in(&other, ["allocate", "--no-render"]).succeeds();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let state = repo.env.state_dir();
    std::fs::write(state.join("index.json"), b"{not json").unwrap();
    let feat = repo.add_worktree("feat");
    let out = repo
        .wp_in(&feat, ["allocate", "--json", "--no-render"])
        .succeeds();
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: [TMP]/home/.local/state/git-worktree-ports/index.json is unusable (key must be a string at line 1 column 2); using its backup [TMP]/home/.local/state/git-worktree-ports/index.json.bak\n"
    );
    // other is still seen: no port of its is handed out.
    let theirs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(other.join(".git/worktree-registry/ports.json")).unwrap(),
    )
    .unwrap();
    for p in all_registry_ports(&theirs) {
        assert!(ports_of(&out.json()["ports"]).iter().all(|(_, q)| *q != p));
    }
    let kept = std::fs::read_dir(&state)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt-")
        })
        .count();
    assert_eq!(kept, 1);
}

/// Issue 27: `list --all --format markdown` is the machine's ports as a Markdown table (the
/// form teams keep in a PORTS.md): one row per port, with the slot and the URL of the services
/// that speak HTTP.
#[test]
fn list_all_as_markdown_has_one_row_per_port_with_slot_and_url() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feat = repo.add_worktree("feat");
    repo.wp_in(&feat, ["allocate", "--no-render"]).succeeds();
    let other = repo.another("other|pipe", None);
    repo.wp_in(&other, ["allocate", "--no-render"]).succeeds();
    repo.wp(["list", "--all", "--format", "markdown"])
        .stdout_is(format!(
            "| repository | worktree | slot | service | port | URL |\n\
             |---|---|---|---|---|---|\n\
             | other\\|pipe | main | 0 | db | {db2} |  |\n\
             | other\\|pipe | main | 0 | web | {web2} | http://other-pipe.localhost:{web2} |\n\
             | repo | feat | 1 | db | {db1} |  |\n\
             | repo | feat | 1 | web | {web1} | http://feat.repo.localhost:{web1} |\n\
             | repo | main | 0 | db | {db0} |  |\n\
             | repo | main | 0 | web | {b} | http://repo.localhost:{b} |\n",
            db0 = b + 20,
            web1 = b + 1,
            db1 = b + 21,
            web2 = b + 2,
            db2 = b + 22,
        ))
        .succeeds();
    // Only with --all; and the JSON form says the same.
    assert_eq!(
        repo.wp(["list", "--format", "markdown"]).output().code(),
        Some(2)
    );
    let json = repo
        .wp(["list", "--all", "--format", "json"])
        .succeeds()
        .json();
    let feat_json = &json["repositories"][1]["worktrees"][0];
    assert_eq!(
        (feat_json["slot"].clone(), feat_json["urls"]["web"].clone()),
        (
            1.into(),
            format!("http://feat.repo.localhost:{}", b + 1).into()
        ),
        "{json:#}"
    );
}

/// Issue 28: an allocation takes a neighbour's ports from the machine index (one stat, not a
/// read of its registry) only while the registry is the file the index took them from. Each
/// edit below gives the neighbour's main worktree the web port the index does not list for
/// it, the one this repository's next worktree would take if the index were trusted: by hand
/// in place with the same length, the same with its modification time put back, and an older
/// version's save (a whole new file, the index untouched). Each is read, never trusted.
#[test]
fn an_allocation_trusts_the_index_s_list_of_a_neighbour_s_ports_only_while_its_registry_is_unchanged()
 {
    use std::os::unix::fs::MetadataExt;
    let repo = TestRepo::new();
    let other = repo.another("other", None);
    let file = other.join(".git/worktree-registry/ports.json");
    let key = other.join(".git").canonicalize().unwrap();
    let index = || -> serde_json::Value {
        let bytes = std::fs::read(repo.env.state_dir().join("index.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["repositories"]
            [key.to_str().unwrap()]
        .clone()
    };
    repo.wp(["allocate", "--no-render"]).succeeds();
    repo.wp_in(&other, ["allocate", "--no-render"]).succeeds();
    let web = |reg: &serde_json::Value, wt: &str| reg["allocated_ports"][wt]["web"].as_u64();
    let edits = [
        "in place",
        "in place, modification time put back",
        "older version's save",
    ];
    for (i, edit) in edits.into_iter().enumerate() {
        // The index lists the neighbour's ports with its registry's stamp.
        let seen = index()["seen"].clone();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(seen["ino"], meta.ino(), "{edit}: {seen}");
        assert_eq!(seen["len"], meta.len(), "{edit}: {seen}");
        assert_eq!(seen["mtime"][0], meta.mtime(), "{edit}: {seen}");
        // Every web port is held: this repository's main and `i` worktrees, the neighbour's
        // main. The next one up is what the neighbour's main takes, behind the index's back.
        let theirs = web(
            &serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap(),
            "main",
        )
        .unwrap();
        let next = repo.base as u64 + i as u64 + 2;
        let text = String::from_utf8(std::fs::read(&file).unwrap())
            .unwrap()
            .replace(&format!("\"web\":{theirs}"), &format!("\"web\":{next}"));
        assert_eq!(text.len() as u64, meta.len(), "{edit}: the same length");
        match edit {
            "in place" => std::fs::write(&file, &text).unwrap(),
            "in place, modification time put back" => {
                // The change time moves on every write; past the second the stamp was made in.
                std::thread::sleep(std::time::Duration::from_millis(2100));
                std::fs::write(&file, &text).unwrap();
                let f = std::fs::File::options().write(true).open(&file).unwrap();
                f.set_modified(meta.modified().unwrap()).unwrap();
                drop(f);
                let now = std::fs::metadata(&file).unwrap();
                assert_eq!((now.ino(), now.len()), (meta.ino(), meta.len()));
                assert_eq!(
                    (now.mtime(), now.mtime_nsec()),
                    (meta.mtime(), meta.mtime_nsec())
                );
            }
            _ => {
                let tmp = file.with_extension("json.old-version");
                std::fs::write(&tmp, &text).unwrap();
                std::fs::rename(&tmp, &file).unwrap();
            }
        }
        let _ = std::fs::remove_file(file.with_extension("json.bak"));
        let wt = repo.add_worktree(&format!("wt{i}"));
        let got = repo
            .wp_in(&wt, ["allocate", "--json", "--no-render"])
            .succeeds()
            .json();
        assert_ne!(got["ports"]["web"], next, "{edit}: taken from a stale list");
        let reg_b: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(web(&reg_b, "main"), Some(next), "{edit}: the edit is kept");
        let mut all = all_registry_ports(&repo.registry());
        all.extend(all_registry_ports(&reg_b));
        assert_unique(&all);
    }
}

/// Issue 28, item 4: a fresh allocation in a listed repository writes the index's kept ports
/// without fsync and leaves the backup alone (the backup lists what the last change of the
/// list committed). What a crash can leave of that write, a torn file or the previous one,
/// hides no repository and hands out no port twice: the torn file is read from the backup,
/// and the stamps of either name registries that have moved on, which are read again.
#[test]
fn a_fresh_allocation_s_index_write_lost_or_torn_by_a_crash_hides_no_port() {
    for crash in ["torn", "previous"] {
        let repo = TestRepo::new();
        let other = repo.another("other", None);
        repo.wp_in(&other, ["allocate", "--no-render"]).succeeds();
        repo.wp(["allocate", "--no-render"]).succeeds();
        let state = repo.env.state_dir();
        let backup = std::fs::read(state.join("index.json.bak")).unwrap();
        let previous = std::fs::read(state.join("index.json")).unwrap();
        // The neighbour's new worktree: its ports only in its registry and the lazy write.
        let wt = other.parent().unwrap().join("other-feat");
        repo.env.git(
            &other,
            ["worktree", "add", "-q", "--detach", wt.to_str().unwrap()],
        );
        repo.wp_in(&wt, ["allocate", "--no-render"]).succeeds();
        let after = std::fs::read(state.join("index.json")).unwrap();
        assert_ne!(after, previous, "{crash}: the kept ports were written");
        assert_eq!(
            std::fs::read(state.join("index.json.bak")).unwrap(),
            backup,
            "{crash}: the backup is written only when the list changes"
        );
        match crash {
            "torn" => std::fs::write(state.join("index.json"), b"").unwrap(),
            _ => std::fs::write(state.join("index.json"), &previous).unwrap(),
        }
        let mine = repo.add_worktree(&format!("mine-{crash}"));
        let out = repo
            .wp_in(&mine, ["allocate", "--json", "--no-render"])
            .succeeds();
        if crash == "torn" {
            assert!(
                out.stderr().contains("index.json is unusable"),
                "{}",
                out.describe()
            );
        }
        let all = ports_in(&[&repo.root, &other]);
        assert_eq!(
            all.len(),
            4 * 2,
            "{crash}: four worktrees, two services: {all:?}"
        );
        assert_unique(&all);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["repositories"].as_object().unwrap().len(),
            2,
            "{crash}: {index}"
        );
    }
}

/// Every port the registries of these repositories hold, one entry per holding.
fn ports_in(roots: &[&std::path::Path]) -> Vec<u16> {
    let mut all = Vec::new();
    for root in roots {
        let reg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(".git/worktree-registry/ports.json")).unwrap(),
        )
        .unwrap();
        all.extend(all_registry_ports(&reg));
    }
    all
}
