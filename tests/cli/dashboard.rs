//! The proxy's dashboard: its page and JSON through the real proxy, and the page in a real
//! browser (headless Chromium, which `.ci/run` installs, driven over the DevTools protocol
//! by tests/cli/browser.py).

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

/// `METHOD path` for `host` through the proxy on `port`, on a fresh connection: (status,
/// body).
fn request_for(port: u16, host: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = raw(
        port,
        &format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"),
    );
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

/// `METHOD path` on `localhost:port`: (status, body).
fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    request_for(port, "localhost", method, path)
}

/// A repository with its main worktree and a worktree `feat`, both with ports.
fn two_worktrees() -> TestRepo {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let feat = repo.path("feat");
    repo.wp(["add", "--no-render", feat.to_str().unwrap()])
        .succeeds();
    repo
}

fn port_of(repo: &TestRepo, worktree: &str, service: &str) -> u16 {
    let out = repo
        .wp(["get", service, "-w", worktree])
        .succeeds()
        .stdout();
    out.trim().parse().unwrap()
}

#[test]
fn localhost_is_the_dashboard_readable_without_javascript_and_its_json_is_list_all() {
    let repo = two_worktrees();
    let p = repo.base + 39;
    let _proxy = Proxy::start(&repo, p);
    let (code, json) = request(p, "GET", "/worktrees.json");
    assert_eq!(code, 200, "{json}");
    let served: Value = serde_json::from_str(&json).unwrap();
    let cli = repo.wp(["list", "--all", "--json"]).succeeds().json();
    assert_eq!(served, cli);

    let (code, page) = request(p, "GET", "/");
    assert_eq!(code, 200);
    assert!(page.len() < 30 * 1024, "{} bytes", page.len());
    // The rows are in the page itself: every worktree, main first, its ports, links.
    let main = page.find("data-worktree=\"main\"").unwrap();
    let feat = page.find("data-worktree=\"feat\"").unwrap();
    assert!(main < feat);
    let web = port_of(&repo, "feat", "web");
    assert!(
        page.contains(&format!(
            "href=\"http://web.feat.repo.localhost:{p}/\">web.feat.repo.localhost</a>"
        )),
        "{page}"
    );
    assert!(page.contains(&format!(
        "href=\"http://feat.repo.localhost:{web}/\">port {web}</a>"
    )));
    assert!(page.contains(
        "<td class=\"state down\" data-worktree=\"feat\" data-service=\"web\">down</td>"
    ));
    // No external request: no script, style or image from elsewhere.
    for tag in ["<script src", "<link", "<img", "@import", "url("] {
        assert!(!page.contains(tag), "{tag}");
    }
    // Asked for by the IPv6 loopback literal, as by localhost.
    let (code, json) = request_for(p, "[::1]", "GET", "/worktrees.json");
    assert_eq!(code, 200, "{json}");
    // It only reads; other paths are not found.
    assert_eq!(request(p, "POST", "/").0, 405);
    assert_eq!(request(p, "GET", "/etc/passwd").0, 404);
    // A worktree's name still goes to its server (502 here: nothing listens).
    let (code, body) = request_for(p, "feat.repo.localhost", "GET", "/");
    assert_eq!(code, 502, "{body}");
}

fn chromium() -> Option<PathBuf> {
    let names: Vec<PathBuf> = match std::env::var_os("GIT_WORKTREE_PORTS_TEST_CHROMIUM") {
        Some(p) => vec![p.into()],
        None => vec!["chromium".into(), "chromium-browser".into()],
    };
    names.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn headless_chromium_shows_every_worktree_follows_a_link_and_sees_a_new_server_come_up() {
    let Some(chromium) = chromium() else {
        skip("the browser test: no chromium (.ci/run installs Debian's)");
        return;
    };
    let Some(python) = python("websocket") else {
        skip("the browser test: no Python with websocket-client (.ci/run's virtualenv has it)");
        return;
    };
    let repo = two_worktrees();
    let p = repo.base + 39;
    let _proxy = Proxy::start(&repo, p);
    let _main = http_server(&repo.root, port_of(&repo, "main", "web"), "main");
    let shot = repo.env.root().join("dashboard.png");
    let conf = json!({
        "chromium": chromium,
        "proxy": p,
        "shot": shot,
        "main_body": "hello from main GET /",
        "new": {"worktree": "feat", "service": "web", "port": port_of(&repo, "feat", "web")},
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cli/browser.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(conf.to_string());
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("dashboard: {summary}");
    // main and feat, each with its web service.
    assert_eq!(summary["links"], 2);
    assert!(std::fs::metadata(&shot).unwrap().len() > 5000);
}
