//! One test per reported defect, named after it (issue number, item). Each failed before its
//! fix.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use crate::support::*;

/// Issue 14, defect 1: `env`, `exec` and `render` on a worktree whose directory was deleted
/// allocated the built-in services (its committed config cannot be read from a missing
/// directory), overwrote `port_ranges`, and `render --force` re-created the directory.
#[test]
fn issue14_1_commands_on_a_worktree_whose_directory_is_gone_refuse_and_write_nothing() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let wt = repo.add_worktree("gone");
    repo.wp_in(&wt, ["allocate", "--no-render"]).succeeds();
    let fresh = repo.add_worktree("fresh");
    std::fs::remove_dir_all(&wt).unwrap();
    std::fs::remove_dir_all(&fresh).unwrap();
    let before = repo.registry_snapshot();
    let cases: [&[&str]; 7] = [
        &["env", "-w", "gone"],
        &["env", "-w", "fresh"],
        &["exec", "-w", "gone", "--", "true"],
        &["render", "-w", "gone"],
        &["render", "-w", "fresh", "--force"],
        &["allocate", "gone"],
        &["allocate", "fresh"],
    ];
    for args in cases {
        let name = args
            .iter()
            .find(|a| **a == "gone" || **a == "fresh")
            .unwrap();
        repo.wp(args)
            .stdout_is("")
            .stderr_is(format!(
                "git-worktree-ports: error: worktree {name} has no directory any more ({}); nothing was changed. If it was deleted, run `git worktree prune`, then `git worktree-ports prune` to give its ports back; if it was moved, run `git worktree repair <new path>`\n",
                repo.path(name).display()
            ))
            .fails();
        assert_eq!(
            repo.registry_snapshot(),
            before,
            "{args:?} wrote the registry"
        );
        assert!(
            !wt.exists() && !fresh.exists(),
            "{args:?} re-created a directory"
        );
    }
    let json = repo.wp(["render", "-w", "gone", "--json"]).fails().json();
    assert_eq!(json["error"], "WORKTREE_NOT_FOUND");
    assert_eq!(
        json["details"],
        serde_json::json!({"worktree": "gone", "path": repo.path("gone")})
    );
}

/// Issue 14, defect 2: `init` under umask 000 wrote world-writable files.
#[test]
fn issue14_2_init_under_umask_000_writes_files_only_their_owner_can_write() {
    let repo = TestRepo::without_config();
    let mut run = repo.wp(["init"]);
    // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        run.cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    run.succeeds();
    let mode = |rel: &str| {
        std::fs::metadata(repo.root.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(".worktree-ports/config.toml"), 0o644);
    assert_eq!(mode(".worktree-ports/templates/.env.tera"), 0o644);
    assert_eq!(mode(".worktree-ports"), 0o755);
    assert_eq!(mode(".worktree-ports/templates"), 0o755);
}

/// Issue 14, defect 5: WORKTREE_NOT_FOUND was used for "the main worktree cannot be removed"
/// and for a bare repository; each now has its own code.
#[test]
fn issue14_5_error_codes_say_what_went_wrong() {
    let repo = TestRepo::new();
    let out = repo.wp(["remove", "main", "--json"]).fails();
    assert_eq!(out.json()["error"], "MAIN_WORKTREE", "{}", out.describe());

    let bare = TestRepo::bare();
    let out = bare.wp(["allocate", "--json"]).fails();
    assert_eq!(out.json()["error"], "BARE_REPOSITORY", "{}", out.describe());

    repo.wp(["get", "web"])
        .stdout_is("")
        .stderr_is("git-worktree-ports: error: worktree main has no ports allocated; run `git worktree-ports allocate` there\n")
        .fails();
    repo.wp(["exec", "--", "/nonexistent/program"])
        .stdout_is("")
        .stderr_is("git-worktree-ports: error: could not run /nonexistent/program: No such file or directory (os error 2) (is it installed and on PATH?)\n")
        .fails();
}

/// Issue 15, item 12: `GIT_WORKTREE_PORTS_LOCK_TIMEOUT=1e20` panicked (exit 101) in every
/// command that locks, the hook included.
#[test]
fn issue15_12_a_huge_lock_timeout_means_wait_long_not_panic() {
    let repo = TestRepo::new();
    let out = repo
        .wp(["allocate", "--no-render"])
        .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "1e20")
        .succeeds();
    assert!(!out.stderr().contains("panicked"), "{}", out.describe());
    let out = repo
        .wp([
            "allocate",
            "--json",
            "--port",
            &format!("web={}", repo.base + 2),
        ])
        .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "soon")
        .fails();
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.json()["error"], "CONFIG_INVALID");
}

/// Issue 15, item 1: worktree names that differ only in non-UTF-8 bytes shared one registry
/// key (both lossy U+FFFD), so both got the same ports and releasing one took the other's.
#[test]
fn issue15_1_names_that_differ_only_in_invalid_bytes_get_their_own_ports() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let repo = TestRepo::new();
    let dir = repo.path("bytes");
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for name in [&b"caf\xe9"[..], b"caf\xe8"] {
        let path = dir.join(OsStr::from_bytes(name));
        let out = Out(repo.env.git_output(
            &repo.root,
            [
                OsStr::new("worktree"),
                OsStr::new("add"),
                OsStr::new("-q"),
                OsStr::new("--detach"),
                path.as_os_str(),
            ],
        ));
        assert!(out.0.status.success(), "{}", out.describe());
        paths.push(path);
    }
    let a = repo
        .wp_in(&paths[0], ["allocate", "--json"])
        .succeeds()
        .json();
    let b = repo
        .wp_in(&paths[1], ["allocate", "--json"])
        .succeeds()
        .json();
    assert_eq!(a["worktree"], "bytes/caf\\xe9");
    assert_eq!(b["worktree"], "bytes/caf\\xe8");
    assert_ne!(a["ports"]["web"], b["ports"]["web"]);
    assert_unique(&all_registry_ports(&repo.registry()));
    repo.wp_in(&paths[0], ["release"]).succeeds();
    assert_eq!(
        repo.wp_in(&paths[1], ["get", "web"])
            .succeeds()
            .stdout()
            .trim(),
        b["ports"]["web"].to_string()
    );
}

/// Issue 15, item 2: `remove` released by name after git had removed the worktree. A new
/// worktree given the same name in between (git reuses free names) lost its ports while its
/// `.env` still named them. `remove` now holds the lock while git removes the worktree (git
/// runs no hook there), so an allocation in the new worktree waits for the release, and gets
/// ports that stay its own.
///
/// Deterministic: a `git` wrapper holds `remove` right after git's removal until the test has
/// added the new worktree and started its allocation.
#[test]
fn issue15_2_remove_never_releases_a_new_worktree_that_took_the_name() {
    let repo = TestRepo::new();
    let path = repo.add_worktree("feat");
    repo.wp_in(&path, ["allocate", "--json"]).succeeds();
    let old_record = repo.registry()["worktrees"]["feat"].clone();

    let real_git = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let real_git = real_git.trim();
    let wrap = repo.env.root().join("wrap");
    let go = repo.env.root().join("go");
    std::fs::create_dir_all(&wrap).unwrap();
    write(
        &wrap.join("git"),
        &format!(
            "#!/bin/sh\n{real_git} \"$@\"; rc=$?\nif [ \"$1 $2\" = \"worktree remove\" ]; then while [ ! -e '{}' ]; do sleep 0.02; done; fi\nexit $rc\n",
            go.display()
        ),
    );
    make_executable(&wrap.join("git"), 0o755);
    let path_var = format!(
        "{}:{}:{}",
        wrap.display(),
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let piped = |mut run: Run| {
        run.cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        run.cmd.spawn().unwrap()
    };
    let remove = piped(repo.wp(["remove", "feat", "--json"]).env("PATH", &path_var));
    // git deletes the directory first and its admin dir (which holds the name) last: wait
    // for both, or the new worktree could be named `feat1`.
    let admin = repo.common_dir().join("worktrees/feat");
    while path.exists() || admin.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // git removed it; `remove` has not released it yet. The name is free again.
    repo.git(["worktree", "add", "-q", "--detach", path.to_str().unwrap()]);
    let alloc = piped(
        repo.wp_in(&path, ["allocate", "--json"])
            .env("GIT_WORKTREE_PORTS_LOCK_TIMEOUT", "60"),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::write(&go, b"").unwrap();
    let out = Out(remove.wait_with_output().unwrap());
    assert!(out.0.status.success(), "{}", out.describe());
    let new = Out(alloc.wait_with_output().unwrap());
    assert!(new.0.status.success(), "{}", new.describe());
    let new = new.json();
    assert_eq!(new["worktree"], "feat");

    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"]["feat"], new["ports"], "{reg}");
    assert_ne!(
        reg["worktrees"]["feat"]["id"], old_record["id"],
        "a new worktree, not the old entry"
    );
    let env = std::fs::read_to_string(path.join(".env")).unwrap();
    for (_, port) in ports_of(&new["ports"]) {
        assert!(env.contains(&port.to_string()), "{env}");
    }
}

/// Issue 15, low item: a new worktree that git gave a dead worktree's name (its entry still in
/// the registry: deleted by hand and `git worktree prune`d, never `git worktree-ports prune`d)
/// took over the dead one's ports and `allocated_at` without probing them and without a
/// history entry.
#[test]
fn issue15_low_a_new_worktree_with_a_dead_ones_name_never_takes_over_its_entry() {
    let repo = TestRepo::new();
    let path = repo.add_worktree("feat");
    let old = repo
        .wp_in(&path, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let old_record = repo.registry()["worktrees"]["feat"].clone();
    std::fs::remove_dir_all(&path).unwrap();
    repo.git(["worktree", "prune"]);
    // Something listens on the dead one's web port now: a takeover would hand it out unprobed.
    let web = old["ports"]["web"].as_u64().unwrap() as u16;
    let _listener = std::net::TcpListener::bind(("127.0.0.1", web)).unwrap();
    repo.git(["worktree", "add", "-q", "--detach", path.to_str().unwrap()]);
    let new = repo
        .wp_in(&path, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(new["worktree"], "feat");
    assert_ne!(
        new["ports"]["web"], old["ports"]["web"],
        "the busy port was probed"
    );
    let reg = repo.registry();
    let record = &reg["worktrees"]["feat"];
    assert_ne!(record["id"], old_record["id"]);
    let history = repo.history();
    assert!(
        history
            .iter()
            .any(|h| h["action"] == "released" && h["worktree"] == "feat" && h["port"] == web),
        "{history:?}"
    );
}

/// Issue 15, item 3: `repair` on a healthy registry let a kept `ports.json.corrupt-*` beat the
/// current `ports.json`: a worktree that released a port long ago got it back, and the
/// worktree that holds it now lost it.
#[test]
fn issue15_3_repair_never_lets_an_older_record_beat_the_newest() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let a = repo.add_worktree("a");
    let held = repo
        .wp_in(&a, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let dir = repo.common_dir().join("worktree-registry");
    // An old record, kept aside by some earlier recovery, in which `a` holds its ports.
    std::fs::copy(
        dir.join("ports.json"),
        dir.join("ports.json.corrupt-20200101T000000.000000000Z"),
    )
    .unwrap();
    repo.wp(["release", "a"]).succeeds();
    let b = repo.add_worktree("b");
    let now = repo
        .wp_in(&b, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(
        now["ports"]["web"], held["ports"]["web"],
        "b got a's old port"
    );

    let out = repo.wp(["repair", "--json"]).succeeds().json();
    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"]["b"], now["ports"], "{out}");
    assert!(reg["allocated_ports"].get("a").is_none(), "{out}");
    assert_unique(&all_registry_ports(&reg));
}

/// Issue 15, item 8: `repair` dropped the ports of a locked worktree whose directory is
/// absent (an unplugged disk), although git still has it and `prune` rightly keeps it.
#[test]
fn issue15_8_repair_keeps_a_locked_worktree_whose_directory_is_absent() {
    let repo = TestRepo::new();
    let usb = repo.add_worktree("usb");
    let held = repo
        .wp_in(&usb, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    repo.git([
        "worktree",
        "lock",
        "--reason",
        "on a USB disk",
        usb.to_str().unwrap(),
    ]);
    let away = repo.env.root().join("unplugged");
    std::fs::rename(&usb, &away).unwrap();
    let out = repo.wp(["repair", "--json"]).succeeds().json();
    assert_eq!(
        repo.registry()["allocated_ports"]["usb"],
        held["ports"],
        "{out}"
    );
    assert_eq!(out["gone"], serde_json::json!([]), "{out}");
    // prune agrees.
    assert_eq!(
        repo.wp(["prune", "--json"]).succeeds().json()["pruned"],
        serde_json::json!([])
    );
}

/// Issue 15, item 4: `render --all` decided from a lock-free read and allocated what it found
/// missing, so a `release` running meanwhile gave the released worktree its ports back (and a
/// `remove`, the built-in services). It now decides under the lock and never allocates.
#[test]
fn issue15_4_render_all_never_allocates_and_sees_a_release_that_ran_meanwhile() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let a = repo.add_worktree("a");
    repo.wp_in(&a, ["allocate"]).succeeds();
    // a's next render would change its .env (a template edited in a).
    write(
        &a.join(".worktree-ports/templates/.env.tera"),
        "EDITED=1\n{% for s in services %}{{ s.env }}={{ s.port }}\n{% endfor %}",
    );
    let before_env = std::fs::read_to_string(a.join(".env")).unwrap();

    let dir = repo.common_dir().join("worktree-registry");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("ports.lock"))
        .unwrap();
    lock.lock().unwrap();
    let mut run = repo.wp(["render", "--all", "--json"]);
    run.cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = run.cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    // Holding the lock, as `release a` would: a's entry goes (file and backup alike).
    let mut reg = repo.registry();
    reg["allocated_ports"].as_object_mut().unwrap().remove("a");
    reg["worktrees"].as_object_mut().unwrap().remove("a");
    let text = serde_json::to_vec(&reg).unwrap();
    std::fs::write(dir.join("ports.json"), &text).unwrap();
    std::fs::write(dir.join("ports.json.bak"), &text).unwrap();
    drop(lock);

    let out = Out(child.wait_with_output().unwrap());
    assert!(out.0.status.success(), "{}", out.describe());
    let reg = repo.registry();
    assert!(
        reg["allocated_ports"].get("a").is_none(),
        "a got ports back: {reg}"
    );
    assert_eq!(
        std::fs::read_to_string(a.join(".env")).unwrap(),
        before_env,
        "a was rendered after its release"
    );
    let rendered: Vec<String> = out.json()["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worktree"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rendered, ["main"]);
}

/// Issue 15, item 4 (its second half): `render --all` gave a worktree it only meant to
/// re-render new ports (here: a service the config gained). It renders with the ports the
/// worktree has and says what is missing.
#[test]
fn issue15_4_render_all_reports_missing_services_instead_of_allocating() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    let before = repo.registry_snapshot();
    let b = repo.base;
    write(
        &repo.root.join(".worktree-ports/config.toml"),
        &format!(
            "{}[services.cache]\nrange = [{}, {}]\n",
            default_config(b),
            b + 30,
            b + 35
        ),
    );
    repo.wp(["render", "--all"])
        .stderr_is("git-worktree-ports: warning: worktree main has no port for cache (the config gained services); run `git worktree-ports allocate` in it\n")
        .succeeds();
    assert_eq!(repo.registry_snapshot(), before, "render --all allocated");
}

/// Issue 15, item 7: rendering `.env` replaced every non-UTF-8 byte of the user's own lines
/// with U+FFFD, also with `--force`. Only the managed block is ours.
#[test]
fn issue15_7_rendering_env_keeps_every_byte_of_the_users_lines() {
    let repo = TestRepo::new();
    let mine: &[u8] = b"# caf\xe9 (Latin-1)\r\nSECRET=\xff\xfe\n";
    std::fs::write(repo.root.join(".env"), mine).unwrap();
    repo.wp(["allocate"]).succeeds();
    let env = std::fs::read(repo.root.join(".env")).unwrap();
    assert!(env.starts_with(mine), "{}", String::from_utf8_lossy(&env));
    repo.wp(["render", "--force"]).succeeds();
    let again = std::fs::read(repo.root.join(".env")).unwrap();
    assert_eq!(again, env);
    // A port change rewrites the block and nothing else.
    repo.wp(["allocate", "--port", &format!("web={}", repo.base + 7)])
        .succeeds();
    let moved = std::fs::read(repo.root.join(".env")).unwrap();
    assert!(moved.starts_with(mine));
    assert!(String::from_utf8_lossy(&moved).contains(&format!("={}", repo.base + 7)));
}

/// Issue 15, item 9: a backup that could not be written after `ports.json` was committed
/// (ENOSPC) failed the command, and `add` then removed the worktree while the registry kept
/// its ports. The change is durable: a warning, never a failure.
#[test]
fn issue15_9_a_backup_that_cannot_be_written_is_a_warning_not_a_failure() {
    let repo = TestRepo::new();
    let path = repo.path("full");
    let out = repo
        .wp([
            "add",
            "-q",
            "--detach",
            path.to_str().unwrap(),
            "--json",
            "--no-render",
        ])
        .env("GIT_WORKTREE_PORTS_FAULT", "enospc:backup.write")
        .succeeds();
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: the change is saved, but its backup could not be written (could not write [TMP]/repo/.git/worktree-registry/ports.json.bak: No space left on device (os error 28)); the next command that changes the registry writes it again\n"
    );
    assert!(path.is_dir(), "the worktree stays");
    let key = out.json()["worktree"].as_str().unwrap().to_string();
    assert_eq!(
        repo.registry()["allocated_ports"][&key],
        out.json()["ports"]
    );
    // The next command that locks writes the backup again.
    repo.wp(["allocate", "--no-render"]).succeeds();
    let dir = repo.common_dir().join("worktree-registry");
    assert_eq!(
        std::fs::read(dir.join("ports.json.bak")).unwrap(),
        std::fs::read(dir.join("ports.json")).unwrap()
    );
}

/// Issue 15, item 10: `add --lock` whose allocation failed could not roll back (git needs
/// `remove -f -f` for a locked worktree); `-bNAME` (git's attached form) was not recognised
/// as `-b`, so its branch was left behind; a branch reset by `-B` was not restored.
#[test]
fn issue15_10_add_rolls_back_locked_worktrees_attached_branches_and_resets() {
    let repo = TestRepo::new();
    let bad = "web=80";
    let fails = |args: &[&str]| {
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--port", bad]);
        let out = repo.wp(all).fails();
        assert!(
            out.stderr().contains("removed the new worktree"),
            "{args:?}: {}",
            out.describe()
        );
    };
    let branches = || repo.git(["branch", "--format=%(refname:short)"]);

    let locked = repo.path("locked");
    fails(&["--lock", "-b", "lk", locked.to_str().unwrap()]);
    assert!(!locked.exists());
    assert!(!repo.git(["worktree", "list"]).contains("locked"));
    assert!(!branches().contains("lk"), "{}", branches());

    let attached = repo.path("attached");
    fails(&["-battached-branch", attached.to_str().unwrap()]);
    assert!(!attached.exists());
    assert!(!branches().contains("attached-branch"), "{}", branches());

    // -B resets an existing branch; the rollback puts it back.
    repo.git(["branch", "existing"]);
    let was = repo.git(["rev-parse", "existing"]);
    commit_files(&repo, &[("more.txt", "more\n")]);
    let reset = repo.path("reset");
    fails(&["-B", "existing", reset.to_str().unwrap(), "main"]);
    assert_eq!(repo.git(["rev-parse", "existing"]), was);
    // Nothing was ever saved for the rolled-back worktrees.
    assert!(!repo.registry_path().exists(), "{}", repo.registry());
}

/// Run `run` to completion, or kill it and fail after `secs` seconds: a hang is the defect.
fn within(secs: u64, mut run: Run) -> Out {
    run.cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = run.cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("hung for {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Out(child.wait_with_output().unwrap())
}

fn mkfifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Issue 15, item 13: a FIFO in place of `ports.json` or `ports.json.bak` hung every command,
/// `list`, `get` and `check` included. It is damage like any other now: never blocked on,
/// recovered from the backup, kept aside; a directory in its place too.
#[test]
fn issue15_13_a_fifo_or_a_directory_in_place_of_the_registry_never_hangs() {
    let repo = TestRepo::new();
    let held = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let dir = repo.common_dir().join("worktree-registry");
    let good = std::fs::read(dir.join("ports.json")).unwrap();

    std::fs::remove_file(dir.join("ports.json")).unwrap();
    mkfifo(&dir.join("ports.json"));
    for args in [&["list"][..], &["get", "web"], &["check", "1"]] {
        let out = within(20, repo.wp(args));
        assert!(
            out.stderr().contains("is a FIFO"),
            "{args:?}: {}",
            out.describe()
        );
    }
    let out = within(20, repo.wp(["get", "web"]));
    assert_eq!(out.stdout().trim(), held["ports"]["web"].to_string());
    // A writer recovers it from the backup and keeps the FIFO aside.
    let out = within(20, repo.wp(["allocate", "--json", "--no-render"]));
    assert!(out.0.status.success(), "{}", out.describe());
    assert_eq!(out.json()["ports"], held["ports"]);
    assert_eq!(std::fs::read(dir.join("ports.json")).unwrap(), good);

    // The backup a FIFO, then a directory: moved aside, rewritten.
    for make in [mkfifo as fn(&std::path::Path), |p: &std::path::Path| {
        std::fs::create_dir(p).unwrap();
        std::fs::write(p.join("x"), b"").unwrap();
    }] {
        std::fs::remove_file(dir.join("ports.json.bak")).unwrap();
        make(&dir.join("ports.json.bak"));
        let out = within(20, repo.wp(["release", "--service", "db", "--json"]));
        assert!(out.0.status.success(), "{}", out.describe());
        within(20, repo.wp(["allocate", "--no-render"]));
        assert_eq!(
            std::fs::read(dir.join("ports.json.bak")).unwrap(),
            std::fs::read(dir.join("ports.json")).unwrap()
        );
    }
    // repair reads around the kept-aside FIFO without hanging.
    let out = within(20, repo.wp(["repair", "--json"]));
    assert!(out.0.status.success(), "{}", out.describe());
}

/// The binary starts from its own C `main` (main.rs: not Rust's runtime start-up), so it
/// reopens closed standard descriptors itself, first thing: with stdin and stderr closed, a
/// file the tool opens must not take their numbers (a warning written to "stderr" would land
/// in it). A command `exec` starts inherits them: /dev/null, both.
#[test]
fn closed_stdin_and_stderr_are_dev_null_not_the_next_file_opened() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let seen = repo.root.join("fds.txt");
    // Paths go to the shell as variables, never pasted into its text.
    let script = r#"exec "$BIN" exec -- sh -c 'readlink /proc/self/fd/0 /proc/self/fd/2 > "$FDS"' 0<&- 2>&-"#;
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(&repo.root).args(["-c", script]);
    repo.env.apply(&mut cmd);
    cmd.env("BIN", bin()).env("FDS", &seen);
    let out = Out(cmd.output().unwrap());
    assert!(out.0.status.success(), "{}", out.describe());
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "/dev/null\n/dev/null\n"
    );
    // And the registry is whole: nothing was written into it through a borrowed number.
    assert_unique(&all_registry_ports(&repo.registry()));
}

/// Issue 15, item 14: failing to write stdout exited 0 (`get web > /dev/full` printed an
/// error and exited 0; with stdout closed it was silent and exited 0). A script that gets no
/// port must get a non-zero exit. A reader that went away (`| head`) stays exit 0.
#[test]
fn issue15_14_a_port_that_could_not_be_written_is_a_failure() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let bin = bin();
    for (how, script) in [
        (
            "full",
            format!("exec '{}' get web > /dev/full", bin.display()),
        ),
        ("closed", format!("exec '{}' get web >&-", bin.display())),
    ] {
        let mut cmd = std::process::Command::new("sh");
        cmd.current_dir(&repo.root).args(["-c", &script]);
        repo.env.apply(&mut cmd);
        let out = Out(cmd.output().unwrap());
        assert_eq!(out.code(), Some(1), "{how}: {}", out.describe());
        assert!(
            out.stderr().contains("could not write output"),
            "{how}: {}",
            out.describe()
        );
    }
    // `>/dev/null` is meant: exit 0.
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(&repo.root).args([
        "-c",
        &format!("exec '{}' get web >/dev/null", bin.display()),
    ]);
    repo.env.apply(&mut cmd);
    assert!(cmd.output().unwrap().status.success());
    // A reader that is gone before the write (`| head` that exited): EPIPE, exit 0.
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let write_end = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let mut run = repo.wp(["get", "web"]);
    run.cmd.stdout(write_end);
    let out = run.output();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
}

/// A worktree `mv-me` given ports, then moved with `mv` to `<tmp>/moved-here` (git not told):
/// its new path and `allocate --json`'s answer from before the move.
fn moved_worktree(repo: &TestRepo) -> (std::path::PathBuf, serde_json::Value) {
    let old = repo.add_worktree("mv-me");
    let held = repo
        .wp_in(&old, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let new = repo.env.root().join("moved-here");
    std::fs::rename(&old, &new).unwrap();
    (new, held)
}

/// Issue 15, item 15: in a worktree moved with `mv`, the advice was `git worktree prune`,
/// which unregisters the very worktree the user stands in, and `list` called it gone.
#[test]
fn issue15_15_a_worktree_moved_with_mv_is_told_to_repair_and_not_called_gone() {
    let repo = TestRepo::new();
    let (new, held) = moved_worktree(&repo);

    let out = repo
        .wp_in(&new, ["allocate", "--json", "--no-render"])
        .succeeds();
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: worktree mv-me was moved from [TMP]/mv-me to [TMP]/moved-here without git knowing; run `git worktree repair` in it (until then `git worktree prune` would unregister it, and `git worktree-ports prune` run elsewhere would give its ports away)\n"
    );
    assert!(
        !out.stderr().contains("run `git worktree prune`"),
        "{}",
        out.describe()
    );
    assert_eq!(out.json()["ports"], held["ports"]);

    let list = repo.wp_in(&new, ["list", "--json"]).succeeds().json();
    let me = list["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "mv-me")
        .unwrap()
        .clone();
    assert_eq!(me["exists"], true, "{me}");
    assert_eq!(me["moved"], true, "{me}");
    let text = repo.wp_in(&new, ["list"]).succeeds().stdout();
    assert!(
        text.contains("(moved)") && !text.contains("(gone)"),
        "{text}"
    );
    // prune run from inside it leaves it alone.
    repo.wp_in(&new, ["prune", "--json"])
        .json_is(serde_json::json!({
            "schema": 1,
            "dry_run": false,
            "pruned": [],
            "repositories_gone": []
        }))
        .succeeds();
    // Seen from elsewhere, the advice names both ways out.
    let text = repo.wp(["list"]).succeeds().stdout();
    assert_eq!(
        redact(&text, &repo),
        "WORKTREE  SLOT  BRANCH  web    db     LIVE  HOST                  PATH\nmain      0     main    [BASE+0]  [BASE+20]  down  repo.localhost        [TMP]/repo\nmv-me     1     mv-me   [BASE+1]  [BASE+21]  down  mv-me.repo.localhost  [TMP]/mv-me (gone)\n(gone): its directory is missing. If it was moved, run `git worktree repair` in it; if it was deleted, `git worktree-ports prune` gives its ports back\n"
    );
}

/// Issue 15, item 17: templates that `include` or `extends` another failed when the other
/// sorted later by file name. Partials (`_name.tera`, `partials/`) render no file of their own.
/// Low items: `foo.tera.tera` rendered `foo`; a template named `.tera` gave "Is a directory";
/// a symlinked template was skipped without a word.
#[test]
fn issue15_17_templates_include_and_extend_in_any_order_and_partials_render_nothing() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[
            (
                ".worktree-ports/templates/.env.tera",
                "{% include \"_ports.tera\" %}EXTRA=1\n",
            ),
            (
                ".worktree-ports/templates/_ports.tera",
                "WEB_PORT={{ ports.web }}\n",
            ),
            (
                ".worktree-ports/templates/app.toml.tera",
                "{% extends \"partials/base.tera\" %}{% block body %}port = {{ ports.web }}{% endblock body %}",
            ),
            (
                ".worktree-ports/templates/partials/base.tera",
                "# generated\n{% block body %}{% endblock body %}\n",
            ),
            (
                ".worktree-ports/templates/doc.tera.tera",
                "web {{ ports.web }}\n",
            ),
        ],
    );
    std::os::unix::fs::symlink(
        "/etc/hostname",
        repo.root.join(".worktree-ports/templates/host.tera"),
    )
    .unwrap();
    let out = repo.wp(["allocate"]).succeeds();
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: [TMP]/repo/.worktree-ports/templates/host.tera is not a regular file (a symlink?); templates are read from regular files only, so it was skipped\n"
    );
    let b = repo.base;
    let env = std::fs::read_to_string(repo.root.join(".env")).unwrap();
    assert_eq!(
        redact(&env, &repo),
        "# >>> git-worktree-ports >>> managed block: edits here are overwritten by `git worktree-ports render`\nWEB_PORT=[BASE+0]\nEXTRA=1\n# <<< git-worktree-ports <<<\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.root.join("app.toml")).unwrap(),
        format!("# generated\nport = {b}\n")
    );
    assert_eq!(
        std::fs::read_to_string(repo.root.join("doc.tera")).unwrap(),
        format!("web {b}\n")
    );
    for none in ["_ports", "partials", "doc", "host"] {
        assert!(!repo.root.join(none).exists(), "{none} was rendered");
    }

    write(&repo.root.join(".worktree-ports/templates/.tera"), "x\n");
    let out = repo.wp(["render", "--json"]).fails();
    assert_eq!(out.json()["error"], "TEMPLATE_ERROR");
    assert!(
        out.json()["message"]
            .as_str()
            .unwrap()
            .contains("renders to no file name"),
        "{}",
        out.describe()
    );
}

/// Issue 15, item 16: COMPOSE_PROJECT_NAME was the same for distinct worktrees (`feat.x`,
/// `Feat-X`, `feat-x` and `feat--x` all gave `repo-feat-x`), so their compose stacks shared
/// containers and volumes. Decided at allocation, unique, kept, still a valid compose name.
#[test]
fn issue15_16_compose_project_names_are_unique_per_worktree_and_kept() {
    let repo = TestRepo::new();
    let mut names = Vec::new();
    for wt in ["feat.x", "Feat-X", "feat-x", "feat--x"] {
        let path = repo.path(wt);
        repo.git(["worktree", "add", "-q", "--detach", path.to_str().unwrap()]);
        repo.wp_in(&path, ["allocate"]).succeeds();
        let env = std::fs::read_to_string(path.join(".env")).unwrap();
        let name = env
            .lines()
            .find_map(|l| l.strip_prefix("COMPOSE_PROJECT_NAME="))
            .unwrap_or_else(|| panic!("{env}"))
            .to_string();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'),
            "{name}"
        );
        names.push((wt, path, name));
    }
    let mut distinct: Vec<&str> = names.iter().map(|(_, _, n)| n.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{names:?}");
    assert_eq!(names[0].2, "repo-feat-x", "the first keeps the plain name");
    // Kept: a later render, and the registry, say the same.
    for (wt, path, name) in &names {
        repo.wp_in(path, ["render", "--force"]).succeeds();
        let env = std::fs::read_to_string(path.join(".env")).unwrap();
        assert!(
            env.contains(&format!("COMPOSE_PROJECT_NAME={name}\n")),
            "{wt}: {env}"
        );
    }
    let reg = repo.registry();
    assert_eq!(
        reg["worktrees"]["Feat-X"]["compose_project_name"],
        names[1].2.as_str()
    );
}

/// Issue 15, item 5: `git worktree add --no-checkout`, then `env` (as the README advises),
/// stored the built-in services, read from the empty checkout; after the checkout they stayed,
/// outside the configured ranges, plus services the config does not have. The config now
/// comes from the commit being checked out, and a changed config is re-checked: services it
/// dropped are released, ports outside a changed range are reported.
#[test]
fn issue15_5_no_checkout_takes_the_committed_config_and_config_changes_are_rechecked() {
    let repo = TestRepo::new();
    let path = repo.path("nocheckout");
    repo.git([
        "worktree",
        "add",
        "-q",
        "--no-checkout",
        "--detach",
        path.to_str().unwrap(),
    ]);
    let env = repo
        .wp_in(&path, ["env", "--format", "json"])
        .succeeds()
        .json();
    // (main took the base ports first: main-first.)
    assert_eq!(
        env,
        serde_json::json!({"WEB_PORT": repo.base + 1, "DB_PORT": repo.base + 21, "WORKTREE_SLOT": 1,
            "WEB_URL": format!("http://nocheckout.repo.localhost:{}", repo.base + 1),
            "WORKTREE_HOSTNAME": "nocheckout.repo.localhost",
            "COMPOSE_PROJECT_NAME": "repo-nocheckout"}),
        "the committed services, in their ranges"
    );
    // Checked out later: nothing changes.
    repo.env.git(&path, ["checkout", "-q", "HEAD", "--", "."]);
    let again = repo
        .wp_in(&path, ["env", "--format", "json"])
        .succeeds()
        .json();
    assert_eq!(again, env);

    // The config drops db and moves web's range: db is released, web is reported, kept.
    let b = repo.base;
    repo.wp(["allocate", "--no-render"]).succeeds();
    write(
        &repo.root.join(".worktree-ports/config.toml"),
        &format!("[services.web]\nrange = [{}, {}]\n", b + 30, b + 35),
    );
    let out = repo.wp(["allocate", "--json", "--no-render"]).succeeds();
    assert_eq!(
        out.json()["ports"],
        serde_json::json!({"web": b}),
        "{}",
        out.describe()
    );
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: web: port [BASE+0] of worktree main is outside its configured range [BASE+30]-[BASE+35] ([TMP]/repo/.worktree-ports/config.toml); to move it: `git worktree-ports release --service web && git worktree-ports allocate`\n"
    );
    let history = repo.history();
    assert!(
        history
            .iter()
            .any(|h| h["action"] == "released" && h["worktree"] == "main" && h["service"] == "db"),
        "{history:?}"
    );
    // Reported once, by the allocation that noticed the change.
    let out = repo.wp(["allocate", "--no-render"]).succeeds();
    assert!(!out.stderr().contains("outside"), "{}", out.describe());
}

/// Issue 15, item 11: with a relative `core.hooksPath` (a tracked `.githooks`), `hooks install`
/// renamed the team's tracked hook and wrote ours in its place (one `git commit -a` from being
/// committed), and it only worked for `git worktree add` run from that worktree. A hooks
/// directory inside the work tree is the team's: print what to add, write nothing, and say so
/// in `hooks status` from every worktree.
#[test]
fn issue15_11_a_hooks_directory_inside_the_work_tree_is_never_written() {
    let repo = TestRepo::new();
    let team = "#!/bin/sh\necho team hook\n";
    write(&repo.root.join(".githooks/post-checkout"), team);
    make_executable(&repo.root.join(".githooks/post-checkout"), 0o755);
    repo.git(["add", "-A"]);
    repo.git(["commit", "-q", "-m", "team hooks"]);
    repo.git(["config", "core.hooksPath", ".githooks"]);

    let out = repo.wp(["hooks", "install"]).succeeds().stdout();
    assert!(out.contains("nothing was installed"), "{out}");
    assert_eq!(
        redact(&out, &repo),
        "your repository (a hooks directory inside the work tree) manages the hooks in [TMP]/repo/.githooks, and would drop a hook file written there; nothing was installed.\nAdd this line to post-checkout in that directory (create it if it does not exist, make it executable, and commit it, so every clone gets it):\n\ncase \"$1\" in *[!0]*) ;; *) git worktree-ports hook post-checkout \"$@\" || true ;; esac\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.root.join(".githooks/post-checkout")).unwrap(),
        team
    );
    assert_eq!(
        repo.git(["status", "--porcelain"]),
        "",
        "nothing written in the work tree"
    );
    let other = repo.add_worktree("other");
    for dir in [&repo.root, &other] {
        let status = repo.wp_in(dir, ["hooks", "status"]).succeeds().stdout();
        assert!(status.contains("inside the work tree"), "{status}");
    }
    // Following the advice: the committed hook allocates in every new worktree.
    write(
        &repo.root.join(".githooks/post-checkout"),
        &format!(
            "{team}case \"$1\" in *[!0]*) ;; *) git worktree-ports hook post-checkout \"$@\" || true ;; esac\n"
        ),
    );
    repo.git(["commit", "-q", "-am", "allocate ports in new worktrees"]);
    let third = repo.add_worktree("third");
    assert!(third.join(".env").exists());
    assert!(repo.registry()["allocated_ports"].get("third").is_some());
}

/// Issue 15, low items: `GIT_DIR=/nonexistent` named the current directory instead of the bad
/// GIT_DIR; `check` in a deleted current directory failed, although `check` works outside
/// repositories.
#[test]
fn issue15_low_errors_name_the_bad_git_dir_and_check_works_in_a_deleted_directory() {
    let repo = TestRepo::new();
    let out = repo
        .wp(["list"])
        .env("GIT_DIR", "/nonexistent/repo.git")
        .fails();
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: error: GIT_DIR=/nonexistent/repo.git is not a git repository; unset GIT_DIR or point it at one\n"
    );
    let gone = repo.env.root().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let mut run = repo.wp_in(&gone, ["check", "--json", "1"]);
    // Delete the directory once the child stands in it.
    // (The path is made before the fork: nothing may allocate between fork and exec.)
    let c = std::ffi::CString::new(gone.to_str().unwrap()).unwrap();
    unsafe {
        run.cmd.pre_exec(move || {
            libc::rmdir(c.as_ptr());
            Ok(())
        });
    }
    let out = run.output();
    assert_eq!(
        out.json()["ports"][0]["status"],
        "invalid",
        "{}",
        out.describe()
    );
}

/// Issue 15, low item: a deleted template left its rendered file and manifest entry forever.
/// A render removes what the tool wrote and nobody edited (and says so), keeps edited files
/// (and says so), and takes only its block out of a `.env` that has the user's lines.
#[test]
fn issue15_low_a_deleted_templates_file_goes_unless_someone_edited_it() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[
            (
                ".worktree-ports/templates/a.conf.tera",
                "a={{ ports.web }}\n",
            ),
            (
                ".worktree-ports/templates/b.conf.tera",
                "b={{ ports.web }}\n",
            ),
            (
                ".worktree-ports/templates/.env.tera",
                "WEB_PORT={{ ports.web }}\n",
            ),
        ],
    );
    repo.wp(["allocate"]).succeeds();
    let mut env = std::fs::read_to_string(repo.root.join(".env")).unwrap();
    env.insert_str(0, "MINE=1\n");
    std::fs::write(repo.root.join(".env"), &env).unwrap();
    repo.wp(["render"]).succeeds(); // the manifest learns the file with the user's line
    write(&repo.root.join("b.conf"), "b=edited\n");
    for t in ["a.conf.tera", "b.conf.tera", ".env.tera"] {
        std::fs::remove_file(repo.root.join(".worktree-ports/templates").join(t)).unwrap();
    }
    write(
        &repo.root.join(".worktree-ports/templates/c.conf.tera"),
        "c\n",
    );
    let out = repo.wp(["render"]).succeeds();
    assert_eq!(
        redact(&out.stdout(), &repo),
        "rendered c.conf in [TMP]/repo\nremoved .env, a.conf in [TMP]/repo (rendered by the tool from templates that are gone)\n"
    );
    assert!(!repo.root.join("a.conf").exists());
    assert_eq!(
        std::fs::read_to_string(repo.root.join("b.conf")).unwrap(),
        "b=edited\n"
    );
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: [TMP]/repo/b.conf was rendered from a template that is gone, and edited since: kept (delete it if it is not needed)\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.root.join(".env")).unwrap(),
        "MINE=1\n"
    );
    // Nothing of theirs is ours any more: a second render touches none of it.
    let out = repo.wp(["render"]).succeeds();
    assert!(!out.stdout().contains("removed"), "{}", out.describe());
    assert!(!out.stderr().contains("gone"), "{}", out.describe());
    assert_eq!(
        std::fs::read_to_string(repo.root.join(".env")).unwrap(),
        "MINE=1\n"
    );
}

/// Issue 15, low item: a render killed mid-write left `.<name>.wp-tmp.<pid>` in the worktree,
/// untracked and not excluded, cleaned only when the same target rendered again.
#[test]
fn issue15_low_a_killed_renders_temp_file_is_swept_and_never_in_git_status() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    // A dead writer's temp file of a target no template renders any more, and a live one's.
    let dead = repo.root.join(".old.conf.wp-tmp.2147483600");
    let live = repo
        .root
        .join(format!(".x.conf.wp-tmp.{}", std::process::id()));
    std::fs::write(&dead, "half").unwrap();
    std::fs::write(&live, "half").unwrap();
    repo.wp(["render", "--force"]).succeeds();
    assert!(!dead.exists(), "the dead writer's temp file is swept");
    assert!(live.exists(), "a live writer's is left alone");
    assert_eq!(
        repo.git(["status", "--porcelain"]),
        "",
        "temp files never show in git status"
    );
}

/// Issue 15, low item: `add <path>` where `<path>` equals a worktree's git name resolved the
/// name first. With another worktree added at the same time (a parallel `git worktree add`,
/// here done by a git wrapper) whose git name is that path, `add` allocated for the wrong one.
#[test]
fn issue15_low_add_finds_its_worktree_by_path_not_by_a_name_that_matches_it() {
    let repo = TestRepo::new();
    let real_git = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let elsewhere = repo.env.root().join("elsewhere/feat");
    let wrap = repo.env.root().join("wrap");
    std::fs::create_dir_all(&wrap).unwrap();
    write(
        &wrap.join("git"),
        &format!(
            "#!/bin/sh\nif [ \"$1 $2\" = \"worktree add\" ]; then {g} worktree add -q --detach '{e}'; fi\nexec {g} \"$@\"\n",
            g = real_git.trim(),
            e = elsewhere.display()
        ),
    );
    make_executable(&wrap.join("git"), 0o755);
    let path_var = format!(
        "{}:{}:{}",
        wrap.display(),
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let out = repo
        .wp(["add", "-q", "--detach", "feat", "--json", "--no-render"])
        .env("PATH", &path_var)
        .succeeds()
        .json();
    assert_eq!(
        std::path::Path::new(out["path"].as_str().unwrap()),
        repo.root.join("feat").canonicalize().unwrap(),
        "{out}"
    );
    assert_ne!(out["worktree"], "feat", "{out}");
}

/// Issue 25, N1: `doctor --fix` inside a worktree moved with `mv` called it gone (doctor read
/// git's raw worktree list, which lists it at its old path as prunable) and pruned it: its
/// ports were given away while it stood there.
#[test]
fn issue25_n1_doctor_fix_in_a_moved_worktree_keeps_its_ports() {
    let repo = TestRepo::new();
    let (new, held) = moved_worktree(&repo);
    let before = held["ports"].clone();
    let out = repo.wp_in(&new, ["doctor", "--fix", "--json"]).output();
    let json = out.json();
    let codes: Vec<&str> = (json["findings"].as_array().unwrap().iter())
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(!codes.contains(&"gone-allocation"), "{json:#}");
    assert_eq!(repo.registry()["allocated_ports"]["mv-me"], before);
    assert!(before.is_object(), "{before}");
}

/// Issue 25, N2: `status` inside a worktree moved with `mv` failed with WORKTREE_NOT_FOUND
/// (same cause as N1), though `env` and `render` work there.
#[test]
fn issue25_n2_status_in_a_moved_worktree_shows_it() {
    let repo = TestRepo::new();
    let (new, held) = moved_worktree(&repo);
    let json = repo.wp_in(&new, ["status", "--json"]).succeeds().json();
    let me = &json["worktrees"][0];
    assert_eq!(me["worktree"], "mv-me", "{json:#}");
    let web = (me["services"].as_array().unwrap().iter())
        .find(|s| s["service"] == "web")
        .unwrap();
    assert_eq!(web["port"], held["ports"]["web"], "{json:#}");
}

/// Issue 25, N3: `doctor --fix` rendered `COMPOSE_PROJECT_NAME=` (empty) for a record written
/// before compose names were kept: one fallback gave `""`, two others the formula.
#[test]
fn issue25_n3_a_record_without_a_compose_name_renders_the_formula() {
    let repo = TestRepo::new();
    let wt = repo.add_worktree("old-rec");
    repo.wp_in(&wt, ["allocate"]).succeeds();
    repo.edit_registry(|reg| {
        reg["worktrees"]["old-rec"]
            .as_object_mut()
            .unwrap()
            .remove("compose_project_name");
    });
    std::fs::write(wt.join(".env"), "").unwrap();
    repo.wp(["doctor", "--fix"]).output();
    let env = std::fs::read_to_string(wt.join(".env")).unwrap();
    assert!(env.contains("COMPOSE_PROJECT_NAME=repo-old-rec\n"), "{env}");
    // And doctor now finds the file as a render would write it.
    let json = repo.wp(["doctor", "--json"]).output().json();
    assert!(!json.to_string().contains("stale-files"), "{json:#}");
}

/// Issue 25, N4: under umask 000 `proxy start` made a world-writable state dir (0777) and
/// log (0666): two writes bypassed `fsio`.
#[test]
fn issue25_n4_proxy_start_under_umask_000_makes_nothing_world_writable() {
    let repo = TestRepo::new();
    let mut run = repo.wp(["proxy", "start", "--port", &(repo.base + 39).to_string()]);
    // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        run.cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = run.output();
    let _ = repo.wp(["proxy", "stop"]).output();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let state = repo.env.state_dir();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state) & 0o022, 0, "state dir {:o}", mode(&state));
    for entry in std::fs::read_dir(&state).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p) & 0o022, 0, "{} is {:o}", p.display(), mode(&p));
    }
}

/// Issue 25, N5: `doctor` exited 1 right after the README's first `add`: main-first gives the
/// main worktree ports but, by design, no `.env`, and doctor (and status) called main's `.env`
/// stale.
#[test]
fn issue25_n5_doctor_is_clean_right_after_the_first_add() {
    let repo = TestRepo::new();
    let feature = repo.path("feature");
    repo.wp(["add", feature.to_str().unwrap()]).succeeds();
    assert!(!repo.root.join(".env").exists());
    let json = repo.wp(["doctor", "--json"]).succeeds().json();
    assert_eq!(json["needs_attention"], false, "{json:#}");
    let status = repo.wp(["status", "--json"]).succeeds().json();
    let files = &status["worktrees"][0]["files"];
    assert!(
        !files.to_string().contains("stale"),
        "main's files are not stale before it is rendered: {status:#}"
    );
    // Once main is rendered, its file is up to date, and a change makes it stale again.
    repo.wp(["render"]).succeeds();
    std::fs::write(repo.root.join(".env"), "").unwrap();
    let json = repo.wp(["doctor", "--json"]).fails().json();
    assert_eq!(json["findings"][0]["code"], "stale-files", "{json:#}");
}

/// Issue 26, item 5 (issue 25, step 3): a ranges repository was given ports inside another
/// repository's claimed block (only block allocation looked at claims); the block's owner
/// then could not take its own slot. Every way of choosing a port sees one taken set.
#[test]
fn issue26_5_a_ranges_repository_never_takes_a_port_inside_another_repositorys_block() {
    let block = port_block();
    let b = block.base;
    let blocks = format!(
        "strategy = \"block\"\n[block]\nbase = {b}\nsize = 10\nspan = 20\n[services.web]\noffset = 0\n"
    );
    let repo = TestRepo::with_config(&blocks, block);
    let main = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(main["ports"]["web"], b);
    let ranges = format!("[services.web]\nrange = [{}, {}]\n", b + 1, b + 39);
    let other = repo.another("other", Some(&ranges));
    let got = repo
        .env
        .wp_in(&other, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(got["ports"]["web"], b + 20, "outside {b}-{}: {got}", b + 19);
    // suggest and lease see the block too.
    let s = repo
        .env
        .wp_in(&other, ["suggest", "--json"])
        .succeeds()
        .json();
    assert!(!s.to_string().contains(&format!("{}", b + 1)), "{s}");
    let lease = repo
        .env
        .wp_in(
            &other,
            [
                "lease",
                "--range",
                &format!("{}-{}", b + 1, b + 39),
                "--json",
            ],
        )
        .succeeds()
        .json();
    assert_eq!(lease["ports"], serde_json::json!([b + 21]), "{lease}");
    // check names the block's owner.
    let checked = repo
        .env
        .wp_in(&other, ["check", &(b + 5).to_string(), "--json"])
        .fails()
        .json();
    assert_eq!(checked["ports"][0]["status"], "allocated", "{checked}");
    assert_eq!(
        checked["ports"][0]["repository"],
        repo.root.display().to_string(),
        "{checked}"
    );
    assert!(checked["ports"][0].get("worktree").is_none(), "{checked}");
    // The block's owner still gets its next slot.
    let wt = repo.add_worktree("feat");
    let feat = repo
        .wp_in(&wt, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(feat["ports"]["web"], b + 10);
}

/// Issue 25, step 3: a port two repositories hold (registries written before they were
/// coordinated, a hand edit) was dropped silently by the taken set. doctor reports it as
/// `port-shared`; an allocation in either repository warns.
#[test]
fn issue25_3_a_port_held_twice_on_the_machine_is_reported_never_dropped() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate", "--no-render"]).succeeds();
    let other = repo.another("other", None);
    let got = repo
        .env
        .wp_in(&other, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(got["ports"]["web"], b + 1);
    // A hand edit gives the other repository's main web the first repository's port.
    let path = other.join(".git/worktree-registry/ports.json");
    let mut reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    reg["allocated_ports"]["main"]["web"] = serde_json::json!(b);
    std::fs::write(&path, reg.to_string()).unwrap();
    let _ = std::fs::remove_file(path.with_extension("json.bak"));

    let json = repo.wp(["doctor", "--json"]).fails().json();
    let shared: Vec<&serde_json::Value> = (json["findings"].as_array().unwrap().iter())
        .filter(|f| f["code"] == "port-shared")
        .collect();
    assert_eq!(shared.len(), 1, "{json:#}");
    assert_eq!(
        shared[0]["message"],
        format!(
            "port {b} is held by worktree main (service web) and by worktree main of repository {} (service web)",
            other.display()
        )
    );
    // An allocation that sees it says so.
    let wt = repo.add_worktree("feat");
    repo.wp_in(&wt, ["allocate", "--no-render"])
        .stderr_is(format!(
            "git-worktree-ports: warning: port {b} is held twice on this machine: by worktree main (service web) and by worktree main of repository {} (service web); run `git worktree-ports doctor` (it lists every such port), then `git worktree-ports allocate --move SERVICE` in the worktree that should move\n",
            other.display()
        ))
        .succeeds();
}

/// A repository whose main worktree and two more (`w1`, `w2`) have ports.
fn three_worktrees_allocated() -> TestRepo {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    for name in ["w1", "w2"] {
        let wt = repo.add_worktree(name);
        repo.wp_in(&wt, ["allocate", "--no-render"]).succeeds();
    }
    repo
}

/// How many lines of `stderr` hold `text`, and its lines.
fn lines_with<'s>(stderr: &'s str, text: &str) -> (usize, Vec<&'s str>) {
    let lines: Vec<&str> = stderr.lines().collect();
    (lines.iter().filter(|l| l.contains(text)).count(), lines)
}

/// How many findings of `code` `doctor --json` reports.
fn doctor_findings(repo: &TestRepo, code: &str) -> usize {
    let json = repo.wp(["doctor", "--json"]).output().json();
    (json["findings"].as_array().unwrap().iter())
        .filter(|f| f["code"] == code)
        .count()
}

/// A repository copied with its registry (or two coordinated by hand edits) shares every
/// port of its worktrees with the other: an allocation that sees them named each on a line of
/// its own (50,000 lines for 10,000 worktrees). It names five and counts the rest; doctor
/// lists them all.
#[test]
fn many_ports_held_twice_are_named_five_and_counted() {
    let repo = three_worktrees_allocated();
    let mine = repo.registry()["allocated_ports"].clone();
    let other = repo.another("other", None);
    repo.env
        .wp_in(&other, ["allocate", "--no-render"])
        .succeeds();
    // A hand edit gives the other repository this one's six ports, under three worktrees.
    let path = other.join(".git/worktree-registry/ports.json");
    let mut reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    reg["allocated_ports"] =
        serde_json::json!({"main": mine["main"], "x": mine["w1"], "y": mine["w2"]});
    std::fs::write(&path, reg.to_string()).unwrap();
    let _ = std::fs::remove_file(path.with_extension("json.bak"));

    let wt = repo.add_worktree("feat");
    let stderr = repo
        .wp_in(&wt, ["allocate", "--no-render"])
        .succeeds()
        .stderr();
    let (named, lines) = lines_with(&stderr, "is held twice on this machine: by");
    assert_eq!(named, 5, "{stderr}");
    assert_eq!(
        lines.last().copied(),
        Some(
            "git-worktree-ports: warning: 1 more port is held twice on this machine; `git worktree-ports doctor` lists every one"
        ),
        "{stderr}"
    );
    repo.wp(["doctor"]).fails();
    assert_eq!(doctor_findings(&repo, "port-shared"), 6);
}

/// A repository whose registry came with a copy of another's (`cp -r`, a restored backup)
/// moves or gives back every port the other holds, and said so on a line per port (50,000
/// lines for 10,000 worktrees). It names five and counts the rest; `list` shows them all.
#[test]
fn many_ports_moved_for_a_copied_registry_are_named_five_and_counted() {
    let repo = three_worktrees_allocated();
    let other = repo.another("other", None);
    let dir = other.join(".git/worktree-registry");
    std::fs::create_dir_all(&dir).unwrap();
    // `ports.json`, and its records where they are kept apart.
    for file in std::iter::once(repo.registry_path()).chain(repo.records_files()) {
        std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
    }

    let stderr = repo
        .env
        .wp_in(&other, ["allocate", "--no-render"])
        .succeeds()
        .stderr();
    let (named, lines) = lines_with(&stderr, " is held by worktree ");
    assert_eq!(named, 5, "{stderr}");
    // The ports waiting to move are not said to be held twice while the first worktree moves.
    assert!(!stderr.contains("held twice"), "{stderr}");
    assert!(
        lines.iter().any(|l| l.ends_with(
            ", and 1 more port of its worktrees is held elsewhere: moved, or given back where the worktree is gone; `git worktree-ports list` shows every worktree's ports"
        )),
        "{stderr}"
    );
    // Nothing is held twice after it.
    assert_eq!(doctor_findings(&repo, "port-shared"), 0);
}

/// Issue 26, item 3: `proxy stop` signalled whatever live process a stale `proxy.pid` named
/// (SIGTERM, then SIGKILL), and `proxy start` refused to start ("already runs"). A pid file
/// names the proxy only with the process's start time and executable.
#[test]
fn issue26_3_a_stale_proxy_pid_file_never_gets_a_process_signalled() {
    let repo = TestRepo::new();
    let state = repo.env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", victim.id())).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let sleep = std::fs::read_link(format!("/proc/{}/exe", victim.id())).unwrap();
    for stale in [
        // An older version's file: a pid alone.
        format!("{}\n", victim.id()),
        // The right pid and start time, another program than ours.
        format!("{} {start} {}\n", victim.id(), sleep.display()),
        // Our program's path, another start time.
        format!("{} {} {}\n", victim.id(), start + 1, bin().display()),
    ] {
        std::fs::write(state.join("proxy.pid"), &stale).unwrap();
        let out = repo.wp(["proxy", "stop"]).succeeds();
        assert_eq!(out.stdout(), "the proxy is not running\n", "{stale:?}");
        assert!(
            victim.try_wait().unwrap().is_none(),
            "{stale:?}: the process was signalled"
        );
        assert!(
            !state.join("proxy.pid").exists(),
            "{stale:?}: the stale file stays"
        );
        std::fs::write(state.join("proxy.pid"), &stale).unwrap();
        let status = repo.wp(["proxy", "status", "--json"]).succeeds().json();
        assert_eq!(status["running"], false, "{stale:?}: {status}");
    }
    // start is not refused, and its own pid file names it.
    std::fs::write(state.join("proxy.pid"), format!("{}\n", victim.id())).unwrap();
    let port = (repo.base + 38).to_string();
    let out = repo.wp(["proxy", "start", "--port", &port]).output();
    let _ = repo.wp(["proxy", "stop"]).output();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stdout().starts_with("proxy started"),
        "{}",
        out.describe()
    );
    assert!(victim.try_wait().unwrap().is_none());
    victim.kill().unwrap();
    victim.wait().unwrap();
}

/// Issue 26, item 15: a relative `GIT_WORKTREE_PORTS_STATE_DIR` (a `~/...` nobody expanded)
/// was resolved from each command's directory: every repository got its own "machine", two
/// got the same port, and each worktree grew a `~/` folder. It is refused, changing nothing.
#[test]
fn issue26_15_a_relative_state_dir_is_refused_and_nothing_is_written() {
    let repo = TestRepo::new();
    let before = repo.registry_snapshot();
    let out = repo
        .wp(["allocate", "--no-render", "--json"])
        .env("GIT_WORKTREE_PORTS_STATE_DIR", "~/.local/state/wp")
        .fails();
    assert_eq!(out.json()["error"], "CONFIG_INVALID", "{}", out.describe());
    repo.wp(["allocate", "--no-render"])
        .env("GIT_WORKTREE_PORTS_STATE_DIR", "~/.local/state/wp")
        .stderr_is("git-worktree-ports: error: GIT_WORKTREE_PORTS_STATE_DIR=~/.local/state/wp is a relative path; set it to an absolute one (a `~` is expanded by a shell, not by systemd or compose); nothing was changed\n")
        .fails();
    assert!(!repo.root.join("~").exists());
    assert_eq!(repo.registry_snapshot(), before);
}

/// Issue 26, item 6: `lease --ttl 18446744073709551615s` was accepted and wrapped to a past
/// expiry (the port was reclaimed at once and leased again). Refused as a usage error.
#[test]
fn issue26_6_a_ttl_that_overflows_is_a_usage_error() {
    let repo = TestRepo::new();
    let out = repo
        .wp(["lease", "--ttl", "18446744073709551615s"])
        .output();
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert_eq!(
        redact(&out.stderr(), &repo),
        "error: invalid value '18446744073709551615s' for '--ttl <DURATION>': \"18446744073709551615s\": a duration of 1s to 100 years (36500d)\n\nFor more information, try '--help'.\n"
    );
}

/// Issue 26, item 1: `prune --reap --yes` stopped a process whose working directory exists:
/// after a worktree was removed, a new directory made at its path (a new clone) and a server
/// started there was reaped as "in deleted worktree". Only the kernel's deleted flag makes an
/// orphan; the test's server keeps running.
#[test]
fn issue26_1_the_reaper_spares_a_process_in_a_new_directory_at_a_removed_worktrees_path() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feat = repo.add_worktree("feat");
    repo.wp_in(&feat, ["allocate", "--no-render"]).succeeds();
    repo.wp(["remove", "feat", "--force"]).succeeds();
    // A new clone where the worktree was, and a server started in it.
    repo.env.git(
        repo.env.root(),
        [
            "clone",
            "-q",
            repo.root.to_str().unwrap(),
            feat.to_str().unwrap(),
        ],
    );
    let bystander = Server::start(&feat, b + 5);
    let json = repo
        .wp(["prune", "--reap", "--yes", "--json"])
        .env("GIT_WORKTREE_PORTS_REAP_GRACE", "1")
        .succeeds()
        .json();
    assert_eq!(json["orphans"], serde_json::json!([]), "{json}");
    assert!(
        std::path::Path::new(&format!("/proc/{}", bystander.pid())).exists(),
        "the bystander was signalled"
    );
    let status = repo
        .wp(["check", &(b + 5).to_string(), "--json"])
        .fails()
        .json();
    assert_eq!(status["ports"][0]["status"], "in_use", "{status}");
}

/// Issue 26, item 2: a record whose `path` is empty (a hand edit, a bad merge) made every
/// process of the user an orphan: `prune --reap` listed them all and `--yes` would stop them.
/// Such a record matches nothing, and says so.
#[test]
fn issue26_2_a_record_with_an_empty_path_makes_no_process_an_orphan() {
    let repo = TestRepo::new();
    let wt = repo.add_worktree("edited");
    repo.wp_in(&wt, ["allocate", "--no-render"]).succeeds();
    let elsewhere = tempfile::tempdir().unwrap();
    let bystander = Server::start(elsewhere.path(), repo.base + 6);
    repo.edit_registry(|reg| reg["worktrees"]["edited"]["path"] = serde_json::json!(""));
    // git forgets the worktree; its record (with the empty path) stays.
    repo.git(["worktree", "remove", "--force", wt.to_str().unwrap()]);
    let out = repo
        .wp(["prune", "--reap", "--dry-run", "--json"])
        .succeeds();
    assert_eq!(
        out.json()["orphans"],
        serde_json::json!([]),
        "{}",
        out.describe()
    );
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: warning: the record of worktree edited has path \"\", which is not absolute: it matches no process; `git worktree-ports repair` rebuilds the records from git\n"
    );
    // Pruned (and remembered as removed, with that path), then reaping for real.
    let out = repo
        .wp(["prune", "--reap", "--yes", "--json"])
        .env("GIT_WORKTREE_PORTS_REAP_GRACE", "1")
        .succeeds();
    assert_eq!(
        out.json()["orphans"],
        serde_json::json!([]),
        "{}",
        out.describe()
    );
    assert_eq!(
        out.json()["pruned"][0]["name"],
        "edited",
        "{}",
        out.describe()
    );
    assert!(std::path::Path::new(&format!("/proc/{}", bystander.pid())).exists());
}

/// Issue 26, item 9: `[on]` commands pasted rendered values into `sh -c`: a worktree named
/// `x$(touch${IFS}PWNED)` (git allows `$`, `(` and `)` in names) ran `touch`. Values reach
/// the shell quoted; the name arrives as it is.
#[test]
fn issue26_9_a_hostile_worktree_name_never_runs_as_shell_code() {
    let block = port_block();
    let repo = TestRepo::with_config(
        &format!(
            "{}[on]\nallocate = \"printf '%s|%s' {{{{ worktree.name }}}} {{{{ ports.web }}}} > named\"\n",
            default_config(block.base)
        ),
        block,
    );
    let name = "x$(touch${IFS}PWNED)";
    let wt = repo.path(name);
    repo.env.git(
        &repo.root,
        [
            "worktree",
            "add",
            "-q",
            "-b",
            "hostile",
            wt.to_str().unwrap(),
        ],
    );
    let got = repo
        .wp_in(&wt, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert!(!wt.join("PWNED").exists(), "the name ran as shell code");
    assert!(!repo.root.join("PWNED").exists());
    assert_eq!(
        std::fs::read_to_string(wt.join("named")).unwrap(),
        format!("{name}|{}", got["ports"]["web"])
    );
}

/// Issue 26, item 8: `get`, `allocate`, `list --json`, `env`... exited 1 ("standard output is
/// closed") when stdout was `/dev/null` opened read-write, which is what Python's
/// `subprocess.DEVNULL`, Node's `stdio: 'ignore'` and a shell's `1<>/dev/null` give a child:
/// every call of an agent that discards the output failed. A really closed stdout still
/// fails.
#[test]
fn issue26_8_callers_that_discard_output_get_exit_0_and_a_closed_stdout_exit_1() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let bin = bin();
    let run = |program: &str, args: &[String]| -> Option<Out> {
        let mut cmd = std::process::Command::new(program);
        cmd.current_dir(&repo.root).args(args);
        repo.env.apply(&mut cmd);
        cmd.output().ok().map(Out)
    };
    let shell = |script: String| run("sh", &["-c".into(), script]).unwrap();
    for how in ["1<>/dev/null", ">/dev/null"] {
        let out = shell(format!("exec '{}' get web {how}", bin.display()));
        assert_eq!(out.code(), Some(0), "{how}: {}", out.describe());
    }
    let out = shell(format!("exec '{}' get web >&-", bin.display()));
    assert_eq!(out.code(), Some(1), "closed: {}", out.describe());
    assert_eq!(
        out.stderr(),
        "git-worktree-ports: error: could not write output: standard output is closed\n"
    );
    let python = format!(
        "import subprocess, sys\nfor args in (['get', 'web'], ['list', '--json'], ['env']):\n    r = subprocess.run([{:?}] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n    print(r.returncode, r.stderr.decode())\n",
        bin.display().to_string()
    );
    let out = run("python3", &["-c".into(), python]).expect("python3 runs the tests' helpers");
    assert_eq!(out.stdout(), "0 \n0 \n0 \n", "{}", out.describe());
    let node = format!(
        "const {{ spawnSync }} = require('child_process');\nfor (const args of [['get', 'web'], ['list', '--json'], ['env']]) {{\n  const r = spawnSync({:?}, args, {{ stdio: ['ignore', 'ignore', 'pipe'] }});\n  console.log(r.status, r.stderr.toString());\n}}\n",
        bin.display().to_string()
    );
    match run("node", &["-e".into(), node]) {
        Some(out) => assert_eq!(out.stdout(), "0 \n0 \n0 \n", "{}", out.describe()),
        None => skip("issue26_8's Node caller: node is not installed (.ci/run installs it)"),
    }
}

/// Issue 26, item 17: a committed symlink `.worktree-ports/templates -> <any directory>` was
/// followed: every `*.tera` there rendered into the worktree (a link to `/` walks the whole
/// file system). Refused with TEMPLATE_ERROR; nothing is written.
#[test]
fn issue26_17_a_templates_symlink_out_of_the_repository_is_refused() {
    let repo = TestRepo::new();
    let outside = tempfile::tempdir().unwrap();
    write(
        &outside.path().join("stolen.tera"),
        "secret {{ ports.web }}\n",
    );
    std::os::unix::fs::symlink(outside.path(), repo.root.join(".worktree-ports/templates"))
        .unwrap();
    let out = repo.wp(["render", "--json"]).fails();
    assert_eq!(out.json()["error"], "TEMPLATE_ERROR", "{}", out.describe());
    assert!(!repo.root.join("stolen").exists());
    assert!(!repo.root.join(".env").exists());
    repo.wp(["render"])
        .stderr_is(format!(
            "git-worktree-ports: error: {} is a symlink; templates are read only from a real directory inside the worktree, so nothing was rendered (make it a directory, or remove it to get the built-in .env)\n",
            repo.root.join(".worktree-ports/templates").display()
        ))
        .fails();
    assert!(!repo.root.join("stolen").exists());
}

/// Issue 26 (smaller): a usage error on a command line with `--json` printed clap's text: a
/// script parsing the answer got no JSON. It gets the error object (USAGE_ERROR), exit 2.
#[test]
fn issue26_a_usage_error_with_json_is_the_json_error_object() {
    let repo = TestRepo::new();
    for args in [
        &["allocate", "--frobnicate", "--json"][..],
        &["env", "--format", "json", "--nope"],
        &["lease", "--ttl", "0s", "--json"],
    ] {
        let out = repo.wp(args).output();
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.describe());
        let json = out.json();
        assert_eq!(json["error"], "USAGE_ERROR", "{args:?}: {json}");
        assert_eq!(json["success"], false);
    }
    // Without --json: clap's own text on stderr, as before.
    let out = repo.wp(["allocate", "--frobnicate"]).output();
    assert_eq!(out.code(), Some(2));
    assert!(out.stdout().is_empty() && out.stderr().starts_with("error: unexpected argument"));
}

/// Issue 26 (undocumented, decided): the state folder and index were readable by every user
/// (repository paths, lease command lines). A new state dir is 0700 and the index 0600.
#[test]
fn issue26_the_state_dir_and_index_are_private() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let state = repo.env.state_dir();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("index.json")), 0o600);
    assert_eq!(mode(&state.join("index.json.bak")), 0o600);
}

/// Issue 26 (undocumented, decided): `--port` with `--move` for the same service ignored
/// `--move` silently, and a `--port` outside the service's range was taken without a word.
/// Both are said; the pin is kept, as asked.
#[test]
fn issue26_a_pin_outside_its_range_and_a_needless_move_are_said() {
    let repo = TestRepo::new();
    let b = repo.base;
    let pin = b + 30;
    repo.wp(["allocate", "--no-render", "--port", &format!("web={pin}"), "--move", "web"])
        .stderr_is(format!(
            "git-worktree-ports: warning: --move web is not needed: --port web={pin} already says where it goes\n\
             git-worktree-ports: warning: web {pin} is outside its range {b}-{} in {}; kept, as you asked\n",
            b + 19,
            repo.root.join(".worktree-ports/config.toml").display()
        ))
        .succeeds();
    assert_eq!(repo.registry()["allocated_ports"]["main"]["web"], pin);
}

/// Issue 26 (smaller): `range = "auto"` with a `package.json` that is not a regular file (a
/// directory) said "no package.json". It says what the file is.
#[test]
fn issue26_range_auto_names_a_sign_that_is_not_a_regular_file() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config("[services.app]\nrange = \"auto\"\n", block);
    std::fs::create_dir(repo.root.join("package.json")).unwrap();
    let out = repo
        .wp([
            "allocate",
            "--json",
            "--no-render",
            &format!("--port=app={b}"),
        ])
        .succeeds()
        .json();
    assert_eq!(
        out["range_choices"][0],
        "app: range \"auto\" is static 4000-4999 (no package.json, pyproject.toml, requirements.txt, setup.py or composer.json that is a regular file: package.json is not a regular file)"
    );
}

/// Issue 26, item 12: a worktree named like a service got hostname `web.repo.localhost`,
/// which is also the main worktree's `web` service route: the proxy sent it to main's
/// server. Hostnames and service routes share one namespace; a collision already on disk is
/// reported, and the worktree's own hostname wins.
#[test]
fn issue26_12_a_worktree_named_like_a_service_never_takes_its_route() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let wt = repo.add_worktree("web");
    let got = repo
        .wp_in(&wt, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(got["hostname"], "web-2.repo.localhost", "{got}");
    // A record from before the check (a hand edit here): said, and the worktree's own
    // hostname wins over main's service route.
    repo.edit_registry(|reg| {
        reg["worktrees"]["web"]["hostname"] = serde_json::json!("web.repo.localhost")
    });
    let status = repo.wp(["proxy", "status", "--json"]).succeeds().json();
    let route = (status["routes"].as_array().unwrap().iter())
        .find(|r| r["host"] == "web.repo.localhost")
        .unwrap();
    assert_eq!(route["worktree"], "web", "{status:#}");
    let collisions = status["collisions"].as_array().unwrap();
    assert_eq!(collisions.len(), 1, "{status:#}");
    assert!(
        collisions[0]
            .as_str()
            .unwrap()
            .starts_with("web.repo.localhost is both worktree main of "),
        "{status:#}"
    );
}

/// Issue 26 (smaller): a wiped machine index (file and backup gone) restarted silently. The
/// first allocation of a repository that holds ports but is not listed says so, once.
#[test]
fn issue26_a_wiped_index_is_said_once() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let state = repo.env.state_dir();
    std::fs::remove_file(state.join("index.json")).unwrap();
    std::fs::remove_file(state.join("index.json.bak")).unwrap();
    let wt = repo.add_worktree("feat");
    repo.wp_in(&wt, ["allocate", "--no-render"])
        .stderr_is(format!(
            "git-worktree-ports: warning: the machine index {} did not list this repository, which holds ports: it was deleted or replaced, or the state dir changed; repositories it does not list are not seen until they allocate again (`git worktree-ports list --all` shows what it lists)\n",
            state.join("index.json").display()
        ))
        .succeeds();
    let again = repo.add_worktree("feat2");
    repo.wp_in(&again, ["allocate", "--no-render"])
        .stderr_is("")
        .succeeds();
}

/// The web and db ports of every repository of the machine index, from each registry (the
/// truth), with who holds each: a port listed twice is a port handed out twice.
fn ports_across(repo: &TestRepo, from: &std::path::Path) -> Vec<(u64, String)> {
    let all = repo
        .wp_in(from, ["list", "--all", "--json"])
        .succeeds()
        .json();
    let mut out = Vec::new();
    for r in all["repositories"].as_array().unwrap() {
        for w in r["worktrees"].as_array().unwrap() {
            for (service, port) in w["ports"].as_object().unwrap() {
                out.push((
                    port.as_u64().unwrap(),
                    format!("{}/{}/{service}", r["name"], w["name"]),
                ));
            }
        }
    }
    out.sort();
    out
}

fn assert_no_port_twice(ports: &[(u64, String)]) {
    for pair in ports.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "a port handed out twice: {ports:?}");
    }
}

#[test]
fn issue26_4_a_moved_repository_keeps_its_ports_and_its_name() {
    let repo = TestRepo::new();
    let app = repo.another("app", None);
    repo.wp_in(&app, ["allocate", "--no-render"]).succeeds();
    let moved = repo.env.root().join("moved-app");
    std::fs::rename(&app, &moved).unwrap();

    // Another repository allocates while it is away: the moved one's ports stay taken.
    let out = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], repo.base + 1, "{out}");
    assert_eq!(out["ports"]["db"], repo.base + 21, "{out}");
    repo.wp(["doctor"]).succeeds();

    // Listed from where it is now, before it allocates again: shown there, not gone.
    let listed_from = |dir: &std::path::Path| {
        let all = repo
            .wp_in(dir, ["list", "--all", "--json"])
            .succeeds()
            .json();
        let app = (all["repositories"].as_array().unwrap().iter())
            .find(|r| r["name"] == "app")
            .cloned()
            .expect("still named app");
        (
            app["path"].clone(),
            app["gone"].clone(),
            app["worktrees"][0]["path"].clone(),
        )
    };
    assert_eq!(
        listed_from(&moved),
        (
            moved.to_str().unwrap().into(),
            false.into(),
            moved.to_str().unwrap().into()
        )
    );
    // (From elsewhere, the index knows only where it was.)
    assert_eq!(
        listed_from(&repo.root),
        (
            app.to_str().unwrap().into(),
            true.into(),
            serde_json::Value::Null
        )
    );

    // Back at work where it is now: the index follows it, with its name and its ports.
    let common = moved.join(".git").canonicalize().unwrap();
    let out = repo
        .wp_in(&moved, ["allocate", "--json", "--no-render"])
        .stderr_is(format!(
            "git-worktree-ports: warning: this repository was at {}: the machine index follows it (its name, its ports, its block)\n",
            app.display()
        ))
        .succeeds()
        .json();
    assert_eq!(
        out["ports"],
        serde_json::json!({"web": repo.base, "db": repo.base + 20})
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.env.state_dir().join("index.json")).unwrap())
            .unwrap();
    assert_eq!(
        index["repositories"][common.to_str().unwrap()]["name"],
        "app",
        "{index}"
    );
    let all = repo.wp(["list", "--all", "--json"]).succeeds().json();
    let repos = all["repositories"].as_array().unwrap();
    let app_listing = repos
        .iter()
        .find(|r| r["name"] == "app")
        .expect("still named app");
    assert_eq!(app_listing["gone"], false, "{all}");
    assert_eq!(app_listing["path"], moved.to_str().unwrap(), "{all}");
    assert_eq!(
        app_listing["worktrees"][0]["path"],
        moved.to_str().unwrap(),
        "{all}"
    );
    assert_eq!(app_listing["worktrees"][0]["exists"], true, "{all}");
    assert_no_port_twice(&ports_across(&repo, &repo.root));
    // Nothing is held twice, and nothing is gone.
    let doctor = repo.wp_in(&moved, ["doctor", "--json"]).succeeds().json();
    let codes: Vec<&str> = (doctor["findings"].as_array().unwrap().iter())
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["hook-missing"], "{doctor}");
}

#[test]
fn issue26_4_a_wiped_state_dir_and_a_copied_repository_never_leave_a_port_twice() {
    let repo = TestRepo::new();
    let app = repo.another("app", None);
    repo.wp_in(&app, ["allocate", "--no-render"]).succeeds();
    // The state dir is wiped: the next repository cannot know app's ports.
    std::fs::remove_dir_all(repo.env.state_dir()).unwrap();
    let out = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], repo.base, "{out}");
    // Reading its own ports takes no lock and reads no index: app keeps them meanwhile.
    repo.wp_in(&app, ["allocate", "--no-render"])
        .stderr_is("")
        .succeeds();
    // Its next allocation under the machine lock lists it again: the later holder (app, as
    // the machine saw it) moves, saying so.
    let feat = repo.env.root().join("app-feat");
    repo.env
        .git(&app, ["worktree", "add", "-q", feat.to_str().unwrap()]);
    repo.wp_in(&feat, ["allocate", "--json", "--no-render"])
        .stderr_is(format!(
            "git-worktree-ports: warning: the machine index {index} did not list this repository, which holds ports: it was deleted or replaced, or the state dir changed; repositories it does not list are not seen until they allocate again (`git worktree-ports list --all` shows what it lists)\n\
             git-worktree-ports: warning: this repository was not listed in the machine index, and port {b20} of worktree main (service db) is held by worktree main of repository {repo} (service db) there: moved db to {b21}; rewrite that worktree's files with `git worktree-ports render -w main`\n\
             git-worktree-ports: warning: this repository was not listed in the machine index, and port {b} of worktree main (service web) is held by worktree main of repository {repo} (service web) there: moved web to {b1}; rewrite that worktree's files with `git worktree-ports render -w main`\n",

            index = repo.env.state_dir().join("index.json").display(),
            b = repo.base,
            b1 = repo.base + 1,
            b20 = repo.base + 20,
            b21 = repo.base + 21,
            repo = repo.root.display(),
        ))
        .succeeds();
    assert_no_port_twice(&ports_across(&repo, &repo.root));

    // A copy (`cp -r`) holds the very ports of its original: it gets an identity of its own,
    // and its ports move.
    let copy = repo.env.root().join("app-copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&app)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let out = repo
        .wp_in(&copy, ["allocate", "--json", "--no-render"])
        .output();
    assert!(out.0.status.success(), "{}", out.describe());
    assert!(
        out.stderr().starts_with(&format!(
            "git-worktree-ports: warning: this repository is a copy of {} (it has the same identity): it gets an identity of its own\n",
            app.display()
        )),
        "{}",
        out.describe()
    );
    let ports = ports_across(&repo, &repo.root);
    // The copy carries the registry entry of the original's linked worktree too (its git dir
    // points there): each moved.
    assert_eq!(ports.len(), 10, "{ports:?}");
    assert_no_port_twice(&ports);
    for dir in [&repo.root, &app, &copy] {
        // (--no-render left files unrendered: doctor may say so; never a port held twice.)
        let doctor = repo.wp_in(dir, ["doctor", "--json"]).output().json();
        assert!(
            !doctor.to_string().contains("port-shared"),
            "{}: {doctor:#}",
            dir.display()
        );
    }
}

#[test]
fn issue26_4_a_full_range_takes_back_the_ports_of_a_gone_repository() {
    let repo = TestRepo::new();
    let one = format!("[services.web]\nrange = [{p}, {p}]\n", p = repo.base + 50);
    let x = repo.another("x", Some(&one));
    let y = repo.another("y", Some(&one));
    repo.wp_in(&x, ["allocate", "--no-render"]).succeeds();
    std::fs::remove_dir_all(&x).unwrap();
    repo.wp_in(&y, ["allocate", "--json", "--no-render"])
        .stderr_is(format!(
            "git-worktree-ports: warning: the range was full: gave back the ports of worktrees and repositories that are gone, oldest first: repository {} (gone: {})\n",
            x.display(),
            repo.base + 50
        ))
        .succeeds();
    assert_eq!(
        repo.wp_in(&y, ["get", "web"]).succeeds().stdout(),
        format!("{}\n", repo.base + 50)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.env.state_dir().join("index.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = (index["repositories"].as_object().unwrap().values())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["y"], "{index}");
}

#[test]
fn issue26_7_a_repository_name_is_never_another_repositorys_directory_name() {
    let repo = TestRepo::new();
    for d in ["x", "y"] {
        std::fs::create_dir_all(repo.env.root().join(d)).unwrap();
    }
    let x_app = repo.another("x/app", None);
    let y_app = repo.another("y/app", None);
    let y_app2 = repo.another("y/app-2", None);
    let mut webs = Vec::new();
    for (dir, pin) in [(&x_app, 5), (&y_app, 6), (&y_app2, 7)] {
        let web = repo.base + pin;
        repo.wp_in(
            dir,
            ["allocate", "--no-render", "--port", &format!("web={web}")],
        )
        .succeeds();
        webs.push(web);
    }
    let names: Vec<String> =
        (repo.wp(["list", "--all", "--json"]).succeeds().json()["repositories"]
            .as_array()
            .unwrap()
            .iter())
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["app", "app-2", "y/app"]);
    // app-2 is y/app-2, the directory of that name (with suffixes it was y/app).
    repo.wp(["get", "web", "--repo", "app-2"])
        .stdout_is(format!("{}\n", webs[2]))
        .succeeds();
    repo.wp(["get", "web", "--repo", "y/app"])
        .stdout_is(format!("{}\n", webs[1]))
        .succeeds();
    repo.wp(["get", "web", "--repo", "x/app"])
        .stdout_is(format!("{}\n", webs[0]))
        .succeeds();
    // `app` is x/app's name and y/app's directory name: an error listing both, no guess.
    repo.wp(["get", "web", "--repo", "app"])
        .stdout_is("")
        .stderr_is(format!(
            "git-worktree-ports: error: \"app\" names 2 repositories on this machine: {} (name app), {} (name y/app); name one by more of its path (`y/app`), or by its whole path\n",
            x_app.display(),
            y_app.display()
        ))
        .fails();
    // The same in a template: `port(repo="app")` fails to render instead of switching.
    let tpl = repo.root.join(".worktree-ports/templates/.env.tera");
    std::fs::create_dir_all(tpl.parent().unwrap()).unwrap();
    std::fs::write(&tpl, "OTHER={{ port(repo=\"app\", service=\"web\") }}\n").unwrap();
    let out = repo.wp(["render"]).output();
    assert_eq!(out.0.status.code(), Some(1), "{}", out.describe());
    assert_eq!(
        redact(&out.stderr(), &repo),
        "git-worktree-ports: error: [TMP]/repo/.worktree-ports/templates/.env.tera:1: \"app\" names 2 repositories on this machine: [TMP]/x/app (name app), [TMP]/y/app (name y/app); name one by more of its path (`y/app`), or by its whole path; nothing was written (fix the template, then run `git worktree-ports render`)\n"
    );
    std::fs::write(&tpl, "OTHER={{ port(repo=\"x/app\", service=\"web\") }}\n").unwrap();
    repo.wp(["render"]).succeeds();
    assert_eq!(
        std::fs::read_to_string(repo.root.join(".env")).unwrap(),
        format!(
            "# >>> git-worktree-ports >>> managed block: edits here are overwritten by `git worktree-ports render`\nOTHER={}\n# <<< git-worktree-ports <<<\n",
            webs[0]
        )
    );
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn issue26_18_a_group_shared_repository_gets_group_writable_files() {
    let repo = TestRepo::with_format(&["--shared=group"]);
    let feat = repo.add_worktree("feat");
    // Under the usual umask, which takes the group's write bit from everything made.
    let run = |dir: &std::path::Path, args: &[&str]| {
        let mut r = repo.wp_in(dir, args);
        unsafe {
            r.cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        r
    };
    run(&feat, &["allocate"]).succeeds();
    run(&repo.root, &["render"]).succeeds();
    let git = repo.common_dir();
    let reg = git.join("worktree-registry");
    let got: Vec<(String, u32)> = [
        reg.clone(),
        reg.join("ports.json"),
        reg.join("ports.json.bak"),
        reg.join("ports.lock"),
        git.join("worktrees/feat/worktree-ports"),
        git.join("worktrees/feat/worktree-ports/id"),
        git.join("worktrees/feat/worktree-ports/rendered.json"),
        git.join("worktree-ports/rendered.json"),
    ]
    .iter()
    .map(|p| {
        (
            p.strip_prefix(&git).unwrap().display().to_string(),
            mode_of(p),
        )
    })
    .collect();
    let want: Vec<(String, u32)> = [
        ("worktree-registry", 0o2775),
        ("worktree-registry/ports.json", 0o664),
        ("worktree-registry/ports.json.bak", 0o664),
        ("worktree-registry/ports.lock", 0o664),
        ("worktrees/feat/worktree-ports", 0o2775),
        ("worktrees/feat/worktree-ports/id", 0o664),
        ("worktrees/feat/worktree-ports/rendered.json", 0o664),
        ("worktree-ports/rendered.json", 0o664),
    ]
    .iter()
    .map(|(p, m)| (p.to_string(), *m))
    .collect();
    assert_eq!(got, want);

    // Explicit bits are taken as they are; a value git does not know is refused, naming it.
    repo.git(["config", "core.sharedRepository", "0640"]);
    std::fs::remove_dir_all(&reg).unwrap();
    run(&feat, &["allocate", "--no-render"]).succeeds();
    assert_eq!(
        (mode_of(&reg), mode_of(&reg.join("ports.json"))),
        (0o2750, 0o640)
    );
    repo.git(["config", "core.sharedRepository", "sometimes"]);
    let before = std::fs::read(reg.join("ports.json")).unwrap();
    run(&feat, &["allocate", "--no-render", "--port", &format!("web={}", repo.base + 9)])
        .stderr_is("git-worktree-ports: error: core.sharedRepository = \"sometimes\" is not a sharing mode git knows (umask, group, all, or octal permissions like 0660 that let the owner read and write); fix it with `git config core.sharedRepository group` (or unset it)\n")
        .fails();
    assert_eq!(std::fs::read(reg.join("ports.json")).unwrap(), before);
}

/// A second member of a group-shared repository's group allocates after the first made the
/// registry (issue 26 item 18: "could not open lock file ... Permission denied", forever).
#[test]
#[ignore = "needs root (to run the tool as another user); .ci/run runs it as root"]
fn issue26_18_another_member_of_the_group_can_allocate() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    let repo = TestRepo::with_format(&["--shared=group"]);
    // Everything belongs to group 100 (`users`); the second member is uid 65534 in it.
    let chgrp = |p: &std::path::Path| {
        let ok = std::process::Command::new("chgrp")
            .args(["-R", "100"])
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let feat = repo.add_worktree("feat");
    let root = repo.env.root();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    chgrp(&repo.root);
    chgrp(&feat);
    // One machine index for both, in a folder shared with the group on purpose.
    let shared_state = root.join("shared-state");
    std::fs::create_dir_all(&shared_state).unwrap();
    chgrp(&shared_state);
    std::fs::set_permissions(&shared_state, std::fs::Permissions::from_mode(0o2775)).unwrap();
    // The first member (root, in the group through the folders' set-group-id) allocates.
    repo.wp_in(&feat, ["allocate", "--no-render"])
        .env("GIT_WORKTREE_PORTS_STATE_DIR", &shared_state)
        .succeeds();
    assert_eq!(mode_of(&shared_state.join("index.json")), 0o660);
    // The second has a home and a state dir of its own, and trusts the repository.
    let home = root.join("member");
    std::fs::create_dir_all(home.join("state")).unwrap();
    std::fs::write(home.join("gitconfig"), "[safe]\n\tdirectory = *\n").unwrap();
    let ok = std::process::Command::new("chown")
        .args(["-R", "65534:100"])
        .arg(&home)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // A change under the lock: the lock file, the registry and its backup are written.
    let mut run = repo.wp_in(
        &repo.root,
        ["allocate", "--no-render", "--json", "--move", "web"],
    );
    run.cmd
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_WORKTREE_PORTS_STATE_DIR", &shared_state);
    unsafe {
        run.cmd.pre_exec(|| {
            libc::umask(0o022);
            let groups = [100 as libc::gid_t];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(100) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run.succeeds().json();
    assert_eq!(out["ports"]["web"], repo.base + 2, "{out}");
    // And the first one again, after the second wrote.
    repo.wp_in(&feat, ["allocate", "--no-render", "--move", "web"])
        .env("GIT_WORKTREE_PORTS_STATE_DIR", &shared_state)
        .succeeds();
}

#[test]
fn issue26_list_all_with_the_state_dir_a_file_says_so_and_fails() {
    let repo = TestRepo::new();
    let file = repo.env.root().join("state-file");
    std::fs::write(&file, "not a folder\n").unwrap();
    for args in [&["list", "--all"][..], &["allocate", "--no-render"]] {
        repo.wp(args)
            .env("GIT_WORKTREE_PORTS_STATE_DIR", &file)
            .stdout_is("")
            .stderr_is(format!(
                "git-worktree-ports: error: the state dir {} is not a directory; point GIT_WORKTREE_PORTS_STATE_DIR (or XDG_STATE_HOME) at a directory, or move that file away\n",
                file.display()
            ))
            .fails();
    }
    assert!(
        !repo
            .common_dir()
            .join("worktree-registry/ports.json")
            .exists()
    );
}

#[test]
fn issue26_a_deleted_templates_exclude_line_goes_once_no_worktree_has_its_output() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[
            (
                ".worktree-ports/templates/.env.tera",
                "WEB_PORT={{ ports.web }}\n",
            ),
            (
                ".worktree-ports/templates/app.toml.tera",
                "port = {{ ports.web }}\n",
            ),
        ],
    );
    let feat = repo.add_worktree("feat");
    repo.wp_in(&feat, ["allocate"]).succeeds();
    repo.wp(["render"]).succeeds();
    let exclude = repo.common_dir().join("info/exclude");
    let block = |lines: &[&str]| {
        format!(
            "# >>> git-worktree-ports: rendered files >>>\n.*.wp-tmp.*\n{}# <<< git-worktree-ports: rendered files <<<\n",
            lines.iter().map(|l| format!("{l}\n")).collect::<String>()
        )
    };
    let managed = || {
        let text = std::fs::read_to_string(&exclude).unwrap();
        text[text.find("# >>>").unwrap()..].to_string()
    };
    assert_eq!(managed(), block(&["/.env", "/app.toml"]));
    // feat drops the template: its output goes, the line stays while main has the file.
    std::fs::remove_file(feat.join(".worktree-ports/templates/app.toml.tera")).unwrap();
    repo.wp_in(&feat, ["render"]).succeeds();
    assert!(!feat.join("app.toml").exists());
    assert!(repo.root.join("app.toml").exists());
    assert_eq!(managed(), block(&["/.env", "/app.toml"]));
    // main drops it too: no worktree has that output any more, and its line goes.
    std::fs::remove_file(repo.root.join(".worktree-ports/templates/app.toml.tera")).unwrap();
    repo.wp(["render"]).succeeds();
    assert!(!repo.root.join("app.toml").exists());
    assert_eq!(managed(), block(&["/.env"]));
}

/// Issue 26 (smaller): the built-in `db` range had 8 ports and the error pointed to a config
/// file the repository does not have. Another repository holding every port of the built-in
/// db range (written into its registry; no port is bound) exhausts it for this one: the
/// error says the ranges are the built-in ones and how to get a config of its own.
#[test]
fn issue26_an_exhausted_builtin_range_says_how_to_get_a_config() {
    let repo = TestRepo::new();
    let unconfigured = |name: &str| {
        let dir = repo.another(name, None);
        std::fs::remove_dir_all(dir.join(".worktree-ports")).unwrap();
        repo.env
            .git(&dir, ["commit", "-q", "-a", "-m", "no config"]);
        dir
    };
    let holder = unconfigured("holder");
    let pins: Vec<String> = [
        ("web", repo.base),
        ("api", repo.base + 1),
        ("test", repo.base + 2),
        ("debug", repo.base + 3),
        ("db", repo.base + 4),
    ]
    .iter()
    .map(|(s, p)| format!("--port={s}={p}"))
    .collect();
    let mut args = vec!["allocate", "--no-render"];
    args.extend(pins.iter().map(String::as_str));
    repo.wp_in(&holder, &args).succeeds();
    let path = holder.join(".git/worktree-registry/ports.json");
    let mut reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (i, port) in (5432..=5499).enumerate() {
        reg["allocated_ports"][format!("wt{i}")] = serde_json::json!({ "db": port });
    }
    std::fs::write(&path, reg.to_string()).unwrap();
    let _ = std::fs::remove_file(path.with_extension("json.bak"));

    let mine = unconfigured("mine");
    let out = repo.wp_in(&mine, ["allocate", "--no-render"]).output();
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let err = out.stderr();
    assert!(
        err.starts_with("git-worktree-ports: error: no free port for service db in 5432-5499 ("),
        "{err}"
    );
    assert!(
        err.ends_with("these are the built-in services (this repository has no .worktree-ports/config.toml): run `git worktree-ports init`, then give [services.db] a wider range in the file it writes\n"),
        "{err}"
    );
    assert!(
        !mine.join(".git/worktree-registry/ports.json").exists() || {
            let r: serde_json::Value = serde_json::from_slice(
                &std::fs::read(mine.join(".git/worktree-registry/ports.json")).unwrap(),
            )
            .unwrap();
            r["allocated_ports"]
                .as_object()
                .is_none_or(|o| o.is_empty())
        }
    );
}

/// Issue 26 (README drift): `allocate --move` did not say what moved, and `exec npm` without
/// `--` gave no hint.
#[test]
fn issue26_move_says_what_moved_and_exec_without_dashes_says_where_the_command_goes() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate", "--no-render"]).succeeds();
    repo.wp(["allocate", "--no-render", "--move", "web", "--port", &format!("db={}", b + 25)])
        .stdout_is(format!(
            "moved db {} -> {}\nmoved web {b} -> {}\nports of worktree main ({}):\n  web  {}  WEB_PORT\n  db   {}  DB_PORT\n",
            b + 20,
            b + 25,
            b + 1,
            repo.root.display(),
            b + 1,
            b + 25
        ))
        .succeeds();
    let out = repo.wp(["exec", "npm", "run", "dev"]).output();
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr().contains(
            "  tip: the command goes after `--`: git worktree-ports exec -- npm run dev\n"
        ),
        "{}",
        out.describe()
    );
}

/// Issue 26 (README drift): in a bare repository `init` advised naming a worktree but took
/// none, and `list`'s columns came in alphabetical order there (config order elsewhere).
#[test]
fn issue26_a_bare_repository_can_name_inits_worktree_and_lists_in_config_order() {
    let env = TestEnv::new();
    let root = env.root();
    env.git(root, ["init", "-q", "--bare", "app.git"]);
    let wt = root.join("w1");
    env.git(
        &root.join("app.git"),
        ["worktree", "add", "-q", wt.to_str().unwrap()],
    );
    let bare = root.join("app.git");
    env.wp_in(&bare, ["init"])
        .stderr_is(format!(
            "git-worktree-ports: error: {} is a bare repository with no working tree here; run this inside one of its worktrees, or name one (`git worktree list` shows them)\n",
            bare.display()
        ))
        .fails();
    env.wp_in(&bare, ["init", "w1"])
        .stdout_is("wrote .worktree-ports/config.toml\nwrote .worktree-ports/templates/.env.tera\nedit them, commit them, and every worktree gets these services and files\n")
        .succeeds();
    let block = port_block();
    let b = block.base;
    std::fs::write(
        wt.join(".worktree-ports/config.toml"),
        format!(
            "[services.zeta]\nrange = [{b}, {}]\n[services.alpha]\nrange = [{}, {}]\n",
            b + 9,
            b + 10,
            b + 19
        ),
    )
    .unwrap();
    env.wp_in(&bare, ["allocate", "w1", "--no-render"])
        .succeeds();
    let list = env.wp_in(&bare, ["list", "--no-probe"]).succeeds().stdout();
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..5],
        ["WORKTREE", "SLOT", "BRANCH", "zeta", "alpha"],
        "{list}"
    );
}

/// Found by the benchmark: a registry that lost its `repository_id` (restored from an old
/// copy, edited by hand) was taken for a new repository at the same path: the index's entry
/// was displaced with its ports, those ports then "conflicted" with the registry's own, and
/// the allocation gave back every gone worktree's ports. It keeps its identity instead.
#[test]
fn issue26_4_a_registry_that_lost_its_identity_is_still_the_repository_listed_there() {
    let repo = TestRepo::new();
    let gone = repo.add_worktree("gone");
    repo.wp_in(&gone, ["allocate", "--no-render"]).succeeds();
    std::fs::remove_dir_all(&gone).unwrap();
    let before = repo.registry()["allocated_ports"]["gone"].clone();
    let id = repo.registry()["repository_id"].clone();
    assert!(id.is_string(), "{}", repo.registry());
    repo.edit_registry(|r| {
        r.as_object_mut().unwrap().remove("repository_id");
    });
    let fresh = repo.add_worktree("fresh");
    repo.wp_in(&fresh, ["allocate", "--no-render"])
        .stderr_is("")
        .succeeds();
    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"]["gone"], before, "{reg}");
    assert_eq!(reg["repository_id"], id, "{reg}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.env.state_dir().join("index.json")).unwrap())
            .unwrap();
    assert!(index.get("displaced").is_none(), "{index}");
}

/// Issue 26 item 4: a repository listed by an older version (no kept ports in the index)
/// that moves is gone to the machine without ports it is known to hold, so another
/// repository may be given them; when the moved one allocates where it is now, what the
/// other got moves in it, said.
#[test]
fn issue26_4_a_moved_repository_whose_ports_the_index_did_not_keep_moves_what_was_taken() {
    let repo = TestRepo::new();
    let app = repo.another("app", None);
    repo.wp_in(&app, ["allocate", "--no-render"]).succeeds();
    // As an older version wrote it: the entry without its ports.
    let file = repo.env.state_dir().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for e in index["repositories"].as_object_mut().unwrap().values_mut() {
        e.as_object_mut().unwrap().remove("ports");
    }
    std::fs::write(&file, index.to_string()).unwrap();
    let _ = std::fs::remove_file(file.with_extension("json.bak"));
    let moved = repo.env.root().join("moved-app");
    std::fs::rename(&app, &moved).unwrap();
    // Nothing says app's ports are taken: the main repository gets them.
    let out = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], repo.base, "{out}");
    let feat = repo.env.root().join("moved-feat");
    repo.env
        .git(&moved, ["worktree", "add", "-q", feat.to_str().unwrap()]);
    repo.wp_in(&feat, ["allocate", "--json", "--no-render"])
        .stderr_is(format!(
            "git-worktree-ports: warning: this repository was at {app}: the machine index follows it (its name, its ports, its block)\n\
             git-worktree-ports: warning: this repository moved, and port {b20} of worktree main (service db) is held by worktree main of repository {root} (service db) there: moved db to {b21}; rewrite that worktree's files with `git worktree-ports render -w main`\n\
             git-worktree-ports: warning: this repository moved, and port {b} of worktree main (service web) is held by worktree main of repository {root} (service web) there: moved web to {b1}; rewrite that worktree's files with `git worktree-ports render -w main`\n",
            app = app.display(),
            root = repo.root.display(),
            b = repo.base,
            b1 = repo.base + 1,
            b20 = repo.base + 20,
            b21 = repo.base + 21,
        ))
        .succeeds();
    assert_no_port_twice(&ports_across(&repo, &repo.root));
}
