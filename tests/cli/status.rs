//! `status`: real servers started from real directories, attributed to this worktree, another
//! worktree, an orphan of a deleted one, or nobody (foreign).

use crate::support::*;

fn services(json: &serde_json::Value) -> Vec<serde_json::Value> {
    json["worktrees"][0]["services"].as_array().unwrap().clone()
}

#[test]
fn status_tells_whose_each_listening_process_is() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    // main: web b, db b+20; feature: web b+1, db b+21.
    let own = Server::start(&feature.join(".worktree-ports"), b + 1);
    let from_main = Server::start(&repo.root, b + 21);
    let json = repo.wp_in(&feature, ["status", "--json"]).succeeds().json();
    let s = services(&json);
    assert_eq!(s[0]["service"], "web");
    assert_eq!(s[0]["state"], "listening");
    let l = &s[0]["listeners"][0];
    assert_eq!(
        (l["whose"].as_str(), l["pid"].as_u64()),
        (Some("this"), Some(u64::from(own.pid())))
    );
    let l = &s[1]["listeners"][0];
    assert_eq!(l["whose"], "worktree");
    assert_eq!(l["worktree"], "main");
    assert_eq!(l["pid"], from_main.pid());
    assert_eq!(json["worktrees"][0]["slot"], 1);
    assert_eq!(
        json["worktrees"][0]["files"][0],
        serde_json::json!({"path": ".env", "state": "up_to_date"})
    );

    // A foreign server, and a stale .env.
    drop(own);
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = Server::start(elsewhere.path(), b + 1);
    std::fs::write(feature.join(".env"), "WEB_PORT=1\n").unwrap();
    let text = repo.wp_in(&feature, ["status"]).succeeds().stdout();
    // Whole "pid N (" only: a pid's digits can also be inside a port (pid 1010 in 61010).
    let text = text
        .replace(&format!("pid {} (", stranger.pid()), "pid PID (")
        .replace(&format!("pid {} (", from_main.pid()), "pid PID2 (");
    let text = text.replace(repo.env.root().to_str().unwrap(), "[TMP]");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "worktree feature ([TMP]/feature, slot 1, feature.repo.localhost)"
    );
    assert_eq!(
        lines[1],
        format!("  web: http://feature.repo.localhost:{}", b + 1)
    );
    assert!(
        lines[3].starts_with(&format!(
            "  web      {}  listening  foreign        pid PID (cli-",
            b + 1
        )),
        "{text}"
    );
    assert!(
        lines[4].starts_with(&format!(
            "  db       {}  listening  worktree main  pid PID2 (cli-",
            b + 21
        )),
        "{text}"
    );
    assert_eq!(
        lines[5],
        "  files: .env stale: run `git worktree-ports render`"
    );
    let mut snapshot = text.replace(&test_binary_name(), "[TEST-BIN]");
    for n in (0..BLOCK).rev() {
        snapshot = snapshot.replace(&(b + n).to_string(), &format!("B+{n:03}"));
    }
    insta::assert_snapshot!("status_human", snapshot);
    // Free ports, and exit 0 whatever is running.
    let main = repo.wp(["status", "--json"]).succeeds().json();
    assert_eq!(services(&main)[0]["state"], "free");
}

#[test]
fn a_server_whose_worktree_was_deleted_is_an_orphan() {
    let repo = TestRepo::new();
    let b = repo.base;
    let doomed = repo.add_worktree("doomed");
    repo.wp_in(&doomed, ["allocate"]).succeeds();
    let orphan = Server::start(&doomed, b + 1);
    std::fs::remove_dir_all(&doomed).unwrap();
    let json = repo.wp(["status", "--all", "--json"]).succeeds().json();
    let doomed_status = json["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worktree"] == "doomed")
        .unwrap()
        .clone();
    let web = (doomed_status["services"].as_array().unwrap().iter())
        .find(|s| s["service"] == "web")
        .unwrap();
    let l = &web["listeners"][0];
    assert_eq!(l["whose"], "orphan", "{doomed_status}");
    assert_eq!(l["pid"], orphan.pid());
    assert_eq!(l["cwd_deleted"], true);
    // Pruned, the worktree is remembered, so its server is still named as its orphan.
    repo.wp(["prune"]).succeeds();
    let out = repo.wp(["check", &(b + 1).to_string()]).fails().stdout();
    assert!(
        out.contains(&format!("in use (tcp) by pid {} (cli-", orphan.pid()))
            && out.contains(&format!(
                "(orphan of deleted worktree doomed ({}))",
                doomed.display()
            )),
        "{out}"
    );
    let reg = repo.registry();
    assert_eq!(reg["gone_worktrees"][0]["key"], "doomed", "{reg}");
}

#[test]
fn status_of_a_worktree_that_cannot_be_found_fails() {
    let repo = TestRepo::new();
    let out = repo.wp(["status", "-w", "nope", "--json"]).fails();
    assert_eq!(out.json()["error"], "WORKTREE_NOT_FOUND");
    let text = repo.wp(["status"]).succeeds().stdout();
    assert!(text.contains("no ports allocated"), "{text}");
}

#[test]
fn list_has_a_live_column_from_the_socket_tables_and_no_probe_drops_it() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    let _server = Server::start(&feature, b + 1);
    let json = repo.wp(["list", "--json"]).succeeds().json();
    let rows = json["worktrees"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(
        row("feature")["live"],
        serde_json::json!({"web": "up", "db": "down"})
    );
    assert_eq!(
        row("main")["live"],
        serde_json::json!({"web": "down", "db": "down"})
    );
    let text = repo.wp(["list"]).succeeds().stdout();
    let header = text.lines().next().unwrap();
    assert!(header.contains("  LIVE  "), "{text}");
    let feature_line = text.lines().find(|l| l.starts_with("feature")).unwrap();
    assert!(feature_line.contains("  up 1/2  "), "{text}");
    let main_line = text.lines().find(|l| l.starts_with("main")).unwrap();
    assert!(main_line.contains("  down  "), "{text}");
    let text = repo.wp(["list", "--no-probe"]).succeeds().stdout();
    assert!(!text.contains("LIVE"), "{text}");
    let json = repo.wp(["list", "--json", "--no-probe"]).succeeds().json();
    assert!(json["worktrees"][0].get("live").is_none());
    // The machine-wide list too.
    let all = repo.wp(["list", "--all", "--json"]).succeeds().json();
    let wts = all["repositories"][0]["worktrees"].as_array().unwrap();
    let feature_all = wts.iter().find(|w| w["name"] == "feature").unwrap();
    assert_eq!(
        feature_all["live"],
        serde_json::json!({"web": "up", "db": "down"})
    );
    let text = repo.wp(["list", "--all"]).succeeds().stdout();
    assert!(text.lines().next().unwrap().contains("  LIVE  "), "{text}");
    let by_port = repo
        .wp(["list", "--all", "--sort", "port"])
        .succeeds()
        .stdout();
    let line = by_port
        .lines()
        .find(|l| l.starts_with(&(b + 1).to_string()))
        .unwrap();
    assert!(line.contains("  up  "), "{by_port}");
}

#[test]
fn allocate_warns_about_a_foreign_held_port_and_move_takes_another() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feat3 = repo.add_worktree("feat3");
    repo.wp_in(&feat3, ["allocate"]).succeeds();
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = Server::start(elsewhere.path(), b + 1);
    // Kept (a running server may be the user's), and said, with the fix.
    let out = repo.wp_in(&feat3, ["allocate", "--json"]).succeeds();
    assert_eq!(out.json()["ports"]["web"], b + 1);
    let stderr = out.stderr();
    assert_eq!(
        stderr.lines().filter(|l| l.contains("is held by")).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: web: port {} of worktree feat3 is held by pid {} (",
            b + 1,
            stranger.pid()
        )) && stderr.contains("(foreign); move it: `git worktree-ports allocate feat3 --move web`"),
        "{stderr}"
    );
    // Its own server is no cause for a warning.
    let own = Server::start(&feat3, b + 21);
    let stderr = repo.wp_in(&feat3, ["allocate"]).succeeds().stderr();
    assert!(!stderr.contains("db: port"), "{stderr}");
    drop(own);
    // --move: the next free port, re-rendered, the old one given back.
    let out = repo
        .wp_in(&feat3, ["allocate", "--move", "web", "--json"])
        .succeeds();
    let json = out.json();
    assert_eq!(json["ports"]["web"], b + 2);
    assert_eq!(json["ports"]["db"], b + 21, "other services stay");
    assert!(!out.stderr().contains("is held by"), "{}", out.stderr());
    let env = std::fs::read_to_string(feat3.join(".env")).unwrap();
    assert!(env.contains(&format!("WEB_PORT={}\n", b + 2)), "{env}");
    assert!(!all_registry_ports(&repo.registry()).contains(&(b + 1)));
    let err = repo
        .wp_in(&feat3, ["allocate", "--move", "nope", "--json"])
        .fails()
        .json();
    assert_eq!(err["error"], "UNKNOWN_SERVICE");
}

fn alive(pid: u32) -> bool {
    // A zombie (killed, not yet waited for) is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

/// A process with a controlling terminal (`script` gives it a pty) in `dir`; None (with the
/// reason printed) where `script` is missing.
fn with_tty(dir: &std::path::Path) -> Option<std::process::Child> {
    let child = std::process::Command::new("script")
        .args(["-qc", "sleep 60", "/dev/null"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(c),
        Err(e) => {
            skip(&format!("the tty part: could not run script(1): {e}"));
            None
        }
    }
}

#[test]
fn prune_reap_stops_an_orphan_and_spares_the_living_the_foreign_and_the_tty() {
    let repo = TestRepo::new();
    let b = repo.base;
    let doomed = repo.add_worktree("doomed");
    let living = repo.add_worktree("living");
    repo.wp_in(&doomed, ["allocate"]).succeeds();
    repo.wp_in(&living, ["allocate"]).succeeds();
    let orphan = Server::start(&doomed, b + 1);
    let spared_living = Server::start(&living, b + 2);
    let outside = tempfile::tempdir().unwrap();
    let spared_foreign = Server::start(outside.path(), b + 3);
    let mut tty = with_tty(&doomed);
    std::fs::remove_dir_all(&doomed).unwrap();

    // A list first: nothing is stopped.
    let listed = repo.wp(["prune", "--reap"]).succeeds().stdout();
    let line = format!("would stop pid {} (", orphan.pid());
    assert!(listed.contains(&line), "{listed}");
    assert!(
        listed.contains(&format!(
            "in deleted worktree doomed ({})",
            doomed.display()
        )),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("listening on {}", b + 1)),
        "{listed}"
    );
    assert_eq!(
        listed.matches("would stop").count(),
        1,
        "only the orphan: {listed}"
    );
    assert!(alive(orphan.pid()));

    let json = repo
        .wp(["prune", "--reap", "--yes", "--json"])
        .env("GIT_WORKTREE_PORTS_REAP_GRACE", "2")
        .succeeds()
        .json();
    let orphans = json["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{json}");
    assert_eq!(orphans[0]["pid"], orphan.pid());
    assert_eq!(orphans[0]["stopped"], true);
    assert!(!alive(orphan.pid()));
    assert!(alive(spared_living.pid()));
    assert!(alive(spared_foreign.pid()));
    if let Some(t) = tty.as_mut() {
        assert!(alive(t.id()), "a process with a terminal is never reaped");
        let _ = t.kill();
        let _ = t.wait();
    }
}

#[test]
fn a_process_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let repo = TestRepo::new();
    let doomed = repo.add_worktree("doomed");
    repo.wp_in(&doomed, ["allocate"]).succeeds();
    let mut stubborn = std::process::Command::new("sh")
        .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
        .current_dir(&doomed)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::fs::remove_dir_all(&doomed).unwrap();
    let json = repo
        .wp(["prune", "--reap", "--yes", "--json"])
        .env("GIT_WORKTREE_PORTS_REAP_GRACE", "0.3")
        .succeeds()
        .json();
    let stopped: Vec<u64> = json["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["stopped"] == true)
        .map(|o| o["pid"].as_u64().unwrap())
        .collect();
    assert!(stopped.contains(&u64::from(stubborn.id())), "{json}");
    let status = stubborn.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "SIGKILL after the grace period");
}

/// Run as root, the reaper must spare a process of another user in a deleted worktree.
#[test]
#[ignore = "needs root (to start a process as another user); .ci/run runs it as root"]
fn prune_reap_never_touches_another_users_process() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    let repo = TestRepo::new();
    let doomed = repo.add_worktree("doomed");
    repo.wp_in(&doomed, ["allocate"]).succeeds();
    let mut victim = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "60",
        ])
        .current_dir(&doomed)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::fs::remove_dir_all(&doomed).unwrap();
    let json = repo
        .wp(["prune", "--reap", "--yes", "--json"])
        .succeeds()
        .json();
    assert_eq!(json["orphans"], serde_json::json!([]), "{json}");
    assert!(alive(victim.id()));
    let _ = victim.kill();
    let _ = victim.wait();
}

/// The lsof backend (macOS's, and every system's without /proc), selected on Linux: the same
/// attribution from lsof's output as from /proc.
#[test]
fn status_through_the_lsof_backend_attributes_the_same_way() {
    if std::process::Command::new("lsof")
        .arg("-v")
        .output()
        .is_err()
    {
        skip("status_through_the_lsof_backend: lsof is not installed (.ci/run installs it)");
        return;
    }
    let repo = TestRepo::new();
    let b = repo.base;
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    let own = Server::start(&feature, b + 1);
    let from_main = Server::start(&repo.root, b + 21);
    let json = repo
        .wp_in(&feature, ["status", "--json"])
        .env("GIT_WORKTREE_PORTS_PROCS", "lsof")
        .succeeds()
        .json();
    let s = services(&json);
    let web = &s[0]["listeners"][0];
    assert_eq!(
        (web["whose"].as_str(), web["pid"].as_u64()),
        (Some("this"), Some(u64::from(own.pid()))),
        "{json:#}"
    );
    let db = &s[1]["listeners"][0];
    assert_eq!(
        (
            db["whose"].as_str(),
            db["worktree"].as_str(),
            db["pid"].as_u64()
        ),
        (
            Some("worktree"),
            Some("main"),
            Some(u64::from(from_main.pid()))
        ),
        "{json:#}"
    );
}
