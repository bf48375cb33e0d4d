//! `lease`: ports lent machine-wide for a while, outside any worktree. Every test leases from
//! its own high block (`--range`), so parallel tests never compete.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn index(repo: &TestRepo) -> Value {
    let path = repo
        .env
        .root()
        .join("home/.local/state/git-worktree-ports/index.json");
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => Value::Null,
    }
}

fn leases(repo: &TestRepo) -> serde_json::Map<String, Value> {
    index(repo)["leases"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn range(repo: &TestRepo) -> String {
    format!("--range={}-{}", repo.base, repo.base + 39)
}

/// Wait (up to 10 s) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_command_holds_its_ports_while_it_runs_and_gives_them_back_with_its_exit_code() {
    let repo = TestRepo::new();
    let b = repo.base;
    let seen = repo.path("seen.json");
    let state = repo
        .env
        .root()
        .join("home/.local/state/git-worktree-ports/index.json");
    let out = repo
        .wp([
            "lease",
            "--count",
            "2",
            &range(&repo),
            "--",
            "sh",
            "-c",
            &format!(
                "echo \"$LEASE_PORT|$LEASE_PORTS|$LEASE_ID\"; cp {} {}; exit 7",
                state.display(),
                seen.display()
            ),
        ])
        .output();
    assert_eq!(out.code(), Some(7), "{}", out.describe());
    let line = out.stdout();
    let parts: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(parts[0], b.to_string());
    assert_eq!(parts[1], format!("{b} {}", b + 1));
    // While it ran, the index held the lease, with this holder.
    let during: Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    let lease = &during["leases"][parts[2]];
    assert_eq!(lease["ports"], serde_json::json!([b, b + 1]), "{during}");
    assert!(lease["pid"].is_u64(), "{lease}");
    // After, it is gone, and the ports are free for anyone.
    assert!(leases(&repo).is_empty());
    repo.wp(["check", &b.to_string()]).succeeds();
}

#[test]
fn a_lease_without_a_command_is_held_seen_by_allocate_and_check_and_released_by_id() {
    let repo = TestRepo::new();
    let b = repo.base;
    let out = repo
        .wp(["lease", "--json", &format!("--range={b}-{b}")])
        .succeeds();
    let json = out.json();
    let id = json["id"].as_str().unwrap().to_string();
    assert_eq!(json["ports"], serde_json::json!([b]));
    assert!(
        out.stderr().contains(&format!("release --lease {id}")),
        "{}",
        out.stderr()
    );
    // An allocation never takes a leased port; check names the lease.
    let alloc = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(alloc["ports"]["web"], b + 1);
    let check = repo.wp(["check", &b.to_string(), "--json"]).fails().json();
    assert_eq!(check["ports"][0]["status"], "leased");
    assert_eq!(check["ports"][0]["lease"], id.as_str());
    let pin = repo
        .wp([
            "allocate",
            "--json",
            "--no-render",
            &format!("--port=web={b}"),
        ])
        .fails()
        .json();
    assert_eq!(pin["error"], "PORT_ALLOCATED");
    assert!(
        pin["message"]
            .as_str()
            .unwrap()
            .contains(&format!("lease {id}")),
        "{pin}"
    );
    // Released by id; a second release says there is none.
    let text = repo.wp(["release", "--lease", &id]).succeeds().stdout();
    assert_eq!(text, format!("released lease {id}: {b}\n"));
    let err = repo
        .wp(["release", "--lease", &id, "--json"])
        .fails()
        .json();
    assert_eq!(err["error"], "NOT_ALLOCATED");
    assert!(leases(&repo).is_empty());
}

#[test]
fn a_lease_whose_holder_was_killed_or_whose_ttl_passed_is_reclaimed() {
    let repo = TestRepo::new();
    let b = repo.base;
    let mut run = repo.wp(["lease", &range(&repo), "--", "sleep", "30"]);
    run.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut holder = run.cmd.spawn().unwrap();
    wait_for("the lease to be recorded", || !leases(&repo).is_empty());
    let (id, lease) = leases(&repo).into_iter().next().unwrap();
    assert_eq!(lease["pid"], holder.id());
    holder.kill().unwrap(); // SIGKILL: no chance to give the ports back
    holder.wait().unwrap();
    // The next command holding the machine lock reclaims it: the same port is leased again.
    let out = repo.wp(["lease", "--ttl", "1h", &range(&repo)]).succeeds();
    assert_eq!(out.stdout(), format!("{b}\n"));
    assert!(
        out.stderr().contains(&format!(
            "reclaimed lease {id} ({b}): its holder, pid {}",
            holder.id()
        )),
        "{}",
        out.stderr()
    );
    assert!(!leases(&repo).contains_key(&id));
    // A TTL that passed: reclaimed by the next allocation, which may then take the port.
    let state = repo
        .env
        .root()
        .join("home/.local/state/git-worktree-ports/index.json");
    let mut doc = index(&repo);
    for l in doc["leases"].as_object_mut().unwrap().values_mut() {
        l["expires_at"] = 1.into();
    }
    std::fs::write(&state, serde_json::to_vec(&doc).unwrap()).unwrap();
    let alloc = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(
        alloc["ports"]["web"], b,
        "the expired lease's port is free again"
    );
    assert!(leases(&repo).is_empty());
}

#[test]
fn eight_parallel_leases_with_commands_get_distinct_ports() {
    let repo = TestRepo::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let out = repo.path(&format!("lease-{i}"));
            let mut run = repo.wp([
                "lease",
                "--count",
                "2",
                &range(&repo),
                "--",
                "sh",
                "-c",
                // Hold the ports a moment, so the leases overlap in time.
                &format!("echo $LEASE_PORTS > {}; sleep 0.3", out.display()),
            ]);
            run.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            (run.cmd.spawn().unwrap(), out)
        })
        .collect();
    let mut all = Vec::new();
    for (child, out) in children {
        let done = Out(child.wait_with_output().unwrap());
        assert!(done.0.status.success(), "{}", done.describe());
        let text = std::fs::read_to_string(out).unwrap();
        all.extend(text.split_whitespace().map(|p| p.parse::<u16>().unwrap()));
    }
    assert_eq!(all.len(), 16);
    assert_unique(&all);
    assert!(leases(&repo).is_empty(), "every lease given back");
}

#[test]
fn lease_defaults_to_the_dynamic_pool_and_refuses_what_it_cannot_give() {
    let repo = TestRepo::new();
    let out = repo.wp(["lease", "--json"]).succeeds().json();
    let port = out["ports"][0].as_u64().unwrap();
    assert!((40000..=49999).contains(&port), "{out}");
    repo.wp(["release", "--lease", out["id"].as_str().unwrap()])
        .succeeds();
    let b = repo.base;
    let _busy = std::net::TcpListener::bind(("127.0.0.1", b)).unwrap();
    let err = repo
        .wp([
            "lease",
            "--json",
            "--count",
            "2",
            &format!("--range={b}-{}", b + 1),
        ])
        .fails()
        .json();
    assert_eq!(err["error"], "RANGE_EXHAUSTED");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("only 1 of 2 ports free"),
        "{err}"
    );
    let usage = repo.wp(["lease", "--ttl", "soon"]).output();
    assert_eq!(usage.code(), Some(2));
    let usage = repo.wp(["lease", "--range", "50000-40000"]).output();
    assert_eq!(usage.code(), Some(2));
    assert!(leases(&repo).is_empty(), "failures lease nothing");
}

/// Issue 26 (decided): a SIGINT sent to `lease`'s pid (a supervisor's `kill -INT`, not
/// Ctrl-C) was ignored, so the command ran on and the lease with it. A signal a process sends
/// is passed on to the command like SIGTERM; one from the terminal reaches it directly.
#[test]
fn a_sigint_sent_to_the_lease_reaches_its_command() {
    let repo = TestRepo::new();
    let mut run = repo.wp(["lease", &range(&repo), "--", "sleep", "60"]);
    run.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = run.cmd.spawn().unwrap();
    let start = Instant::now();
    while leases(&repo).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The command runs by now (the lease is recorded before it starts; give it a moment).
    std::thread::sleep(Duration::from_millis(200));
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the lease ignored SIGINT: its command still runs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "128 + SIGINT, passed through");
    assert!(leases(&repo).is_empty(), "given back");
}

/// Issue 26 (decided): `lease -- CMD` ends when CMD exits, even when CMD left a server running
/// in the background on a leased port; that port may then be handed out again. Said, with
/// the way to lease for a server that detaches.
#[test]
fn a_server_left_running_on_a_leased_port_is_said_when_the_command_exits() {
    let repo = TestRepo::new();
    let pid_file = repo.path("daemon.pid");
    let script = format!(
        "WP_TEST_LISTEN_PORT=$LEASE_PORT {} --exact support::listen_helper --ignored >/dev/null 2>&1 &\n\
         echo $! > {}\n\
         until (exec 3<>/dev/tcp/127.0.0.1/$LEASE_PORT) 2>/dev/null; do sleep 0.05; done\n",
        std::env::current_exe().unwrap().display(),
        pid_file.display()
    );
    let out = repo
        .wp(["lease", &range(&repo), "--", "bash", "-c", &script])
        .output();
    let daemon: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let kill = || {
        let _ = std::process::Command::new("kill")
            .arg(daemon.to_string())
            .status();
    };
    if !out.0.status.success() {
        kill();
        panic!("{}", out.describe());
    }
    let err = out.stderr();
    kill();
    let port = repo.base;
    assert!(
        err.starts_with(&format!(
            "git-worktree-ports: warning: port {port} is still in use by pid {daemon} "
        )),
        "{err}"
    );
    assert!(
        err.contains("ends with the command, so that port may be handed out again; for a server that detaches, lease without a command (`git worktree-ports lease --ttl 1h`) and give it back with `release --lease`\n"),
        "{err}"
    );
    assert!(leases(&repo).is_empty());
}
