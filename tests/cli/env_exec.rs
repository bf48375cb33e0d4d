//! `env`, `exec`, and several real HTTP servers side by side.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn env_formats() {
    let repo = TestRepo::new();
    let b = repo.base;
    assert_eq!(
        repo.wp(["env"]).succeeds().stdout(),
        format!(
            "WEB_PORT={b}\nDB_PORT={}\nWORKTREE_SLOT=0\nWEB_URL=http://repo.localhost:{b}\nWORKTREE_HOSTNAME=repo.localhost\nCOMPOSE_PROJECT_NAME=repo-main\n",
            b + 20
        )
    );
    assert_eq!(
        repo.wp(["env", "--format", "shell"]).succeeds().stdout(),
        format!(
            "export WEB_PORT={b}\nexport DB_PORT={}\nexport WORKTREE_SLOT=0\nexport WEB_URL=http://repo.localhost:{b}\nexport WORKTREE_HOSTNAME=repo.localhost\nexport COMPOSE_PROJECT_NAME=repo-main\n",
            b + 20
        )
    );
    let json = repo.wp(["env", "--format", "json"]).succeeds().json();
    assert_eq!(
        json,
        serde_json::json!({"WEB_PORT": b, "DB_PORT": b + 20, "WORKTREE_SLOT": 0, "WEB_URL": format!("http://repo.localhost:{b}"), "WORKTREE_HOSTNAME": "repo.localhost", "COMPOSE_PROJECT_NAME": "repo-main"})
    );
    assert_eq!(
        repo.wp(["env", "--format", "yaml"]).output().code(),
        Some(2)
    );
}

#[test]
fn env_allocates_on_demand_after_a_no_checkout_add() {
    // --no-checkout runs no post-checkout hook: the first command that needs ports allocates.
    let repo = TestRepo::new();
    let path = repo.path("nocheckout");
    repo.git([
        "worktree",
        "add",
        "-q",
        "--no-checkout",
        path.to_str().unwrap(),
    ]);
    let out = repo.wp_in(&path, ["env"]).succeeds().stdout();
    assert!(out.starts_with("WEB_PORT="), "{out}");
    assert!(
        repo.registry()["allocated_ports"]
            .get("nocheckout")
            .is_some()
    );
}

#[test]
fn exec_sets_the_variables_and_passes_the_exit_code_through() {
    let repo = TestRepo::new();
    let b = repo.base;
    let out = repo
        .wp([
            "exec",
            "--",
            "sh",
            "-c",
            "echo \"$WEB_PORT $DB_PORT\"; exit 7",
        ])
        .output();
    assert_eq!(out.code(), Some(7), "{}", out.describe());
    assert_eq!(out.stdout(), format!("{b} {}\n", b + 20));
    let out = repo
        .wp(["exec", "--", "definitely-not-a-command-xyz"])
        .fails();
    assert!(
        out.stderr()
            .contains("could not run definitely-not-a-command-xyz"),
        "{}",
        out.describe()
    );
    let feature = repo.add_worktree("feature");
    let out = repo
        .wp(["exec", "-w", "feature", "--", "sh", "-c", "echo $WEB_PORT"])
        .succeeds();
    assert_eq!(out.stdout(), format!("{}\n", b + 1));
    drop(feature);
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn real_http_servers_in_several_worktrees_at_once() {
    let repo = TestRepo::new();
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let path = repo.path(name);
        let out = repo
            .wp(["add", "-b", name, path.to_str().unwrap(), "--json"])
            .succeeds()
            .json();
        ports.push((name, out["ports"]["web"].as_u64().unwrap() as u16));
        write(&path.join("whoami.txt"), name);
        // Each server binds the port the worktree was given, via exec.
        let mut run = repo.wp_in(
            &path,
            [
                "exec",
                "--",
                "sh",
                "-c",
                "exec python3 -m http.server --bind 127.0.0.1 \"$WEB_PORT\"",
            ],
        );
        run.cmd.stdout(Stdio::null()).stderr(Stdio::null());
        servers.push(Server(run.cmd.spawn().unwrap()));
    }
    let mut distinct: Vec<u16> = ports.iter().map(|(_, p)| *p).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
    for (name, port) in &ports {
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = loop {
            if let Some(body) = http_get(*port, "/whoami.txt") {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "server of {name} never answered on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(body.starts_with("HTTP/1.0 200"), "{body}");
        assert!(
            body.ends_with(name),
            "{name}'s server answered on {port}: {body}"
        );
    }
    // With the servers running, the next worktree's allocation skips nothing it holds.
    let out = repo
        .wp(["add", repo.path("delta").to_str().unwrap(), "--json"])
        .succeeds()
        .json();
    assert!(!ports.iter().any(|(_, p)| out["ports"]["web"] == *p));
}
