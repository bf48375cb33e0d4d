//! `mcp`: the MCP server, driven by the official Python SDK (`mcp` from PyPI, in the
//! virtualenv `.ci/run` makes: `GIT_WORKTREE_PORTS_TEST_PYTHON`), and fed malformed input
//! by hand.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// Run the client script's `scenario`; its summary (last stdout line).
fn client(repo: &TestRepo, conf: Value) -> Option<Value> {
    let Some(python) = python("mcp, jsonschema") else {
        skip(
            "the MCP client tests: no Python with the `mcp` package (set GIT_WORKTREE_PORTS_TEST_PYTHON; .ci/run makes one)",
        );
        return None;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cli/mcp_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(conf.to_string())
        .current_dir(repo.env.root());
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(stdout.lines().last().unwrap()).unwrap())
}

#[test]
fn the_python_sdk_calls_every_tool_and_each_answer_fits_its_output_schema() {
    let repo = TestRepo::new();
    let outside = repo.env.root().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let Some(summary) = client(
        &repo,
        json!({
            "scenario": "tools",
            "bin": bin(),
            "repo": repo.root,
            "outside": outside,
            "range": format!("{}-{}", repo.base + 30, repo.base + 39),
        }),
    ) else {
        return;
    };
    assert_eq!(summary["tools"], 13);
    // What the agent allocated is the CLI's, after the server is gone.
    let web = repo.wp(["get", "web"]).succeeds().stdout();
    assert_eq!(web.trim(), summary["web"].to_string());
    assert_eq!(web.trim(), repo.base.to_string());
    // The worktree it removed is gone from git and from the registry.
    let listed = repo.wp(["list", "--json"]).succeeds().json();
    let names: Vec<&str> = (listed["worktrees"].as_array().unwrap().iter())
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main"]);
}

#[test]
fn two_servers_and_the_cli_allocating_at_once_never_hand_out_a_port_twice() {
    let repo = TestRepo::new();
    let mut worktrees = Vec::new();
    for i in 0..8 {
        // --no-checkout: no hook runs, so the allocations race in the storm below.
        let path = repo.path(&format!("storm-{i}"));
        repo.git([
            "worktree",
            "add",
            "--no-checkout",
            "-q",
            path.to_str().unwrap(),
        ]);
        worktrees.push(path);
    }
    let outside = repo.env.root().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let lease_block = port_block();
    let Some(summary) = client(
        &repo,
        json!({
            "scenario": "storm",
            "bin": bin(),
            "repo": repo.root,
            "outside": outside,
            "worktrees": worktrees,
            "range": format!("{}-{}", lease_block.base, lease_block.base + 39),
        }),
    ) else {
        return;
    };
    // 8 worktrees x 2 services, and three leases of 2.
    assert_eq!(summary["ports"], 8 * 2 + 3 * 2);
    // The registry agrees with what they were told.
    let all = repo.wp(["list", "--json"]).succeeds().json();
    let mut seen = std::collections::BTreeSet::new();
    let storm = all["worktrees"].as_array().unwrap().iter();
    for w in storm.filter(|w| w["name"].as_str().unwrap().starts_with("storm-")) {
        for p in w["ports"].as_object().unwrap().values() {
            assert!(seen.insert(p.as_u64().unwrap()), "{p} twice in {all}");
        }
    }
    assert_eq!(seen.len(), 8 * 2);
}

/// A server with its stdin and stdout piped, read line by line on a thread.
struct Raw {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Messages [`Raw::ask`] read past (answers to earlier requests, errors with no id).
    seen: Vec<Value>,
}

impl Raw {
    fn start(repo: &TestRepo) -> Raw {
        Raw::start_with(repo, &[])
    }

    fn start_with(repo: &TestRepo, env: &[(&str, &std::path::Path)]) -> Raw {
        let mut cmd = Command::new(bin());
        cmd.arg("mcp")
            .current_dir(&repo.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        repo.env.apply(&mut cmd);
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Raw {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The handshake: `initialize` (its answer returned) and `notifications/initialized`.
    fn initialize(&mut self) -> Value {
        let init = self.ask(
            json!(0),
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}}),
        );
        self.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n");
        init
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// The next message, which must be JSON-RPC 2.0 (nothing else may reach stdout).
    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("an answer within 10 s");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carried something other than JSON ({e}): {line}"));
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        v
    }

    /// Send a request; its answer (answers to earlier requests may come first: skipped when
    /// their id differs, each still checked by [`Raw::next`]).
    fn ask(&mut self, id: Value, method: &str, params: Value) -> Value {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(format!("{msg}\n").as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no answer to {msg}");
            let v = self.next();
            if v["id"] == id {
                return v;
            }
            self.seen.push(v);
        }
    }
}

#[test]
fn fuzzed_input_never_kills_the_server_or_reaches_stdout_as_anything_but_json_rpc() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let mut raw = Raw::start(&repo);
    let init = raw.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "git-worktree-ports");

    let root = repo.root.to_str().unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/ca".to_vec(), // truncated frame
        b"\n".to_vec(),
        b"not json at all\n".to_vec(),
        b"\xff\xfe\x00 invalid utf-8\n".to_vec(),
        b"[]\n".to_vec(),
        b"{}\n".to_vec(),
        b"{\"jsonrpc\":\"1.0\",\"id\":2,\"method\":\"tools/list\"}\n".to_vec(),
        format!("{}\n", "[".repeat(100_000)).into_bytes(), // nesting that overflows a parser
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\",\"x\":\"{}\"}}\n",
            "a".repeat(2_000_000)
        )
        .into_bytes(),
    ];
    for g in &garbage {
        raw.send(g);
    }
    // Wrong types, unknown tools, and ids of every size, sent at once: each is answered by
    // an error with its own id (answers come in any order), or, for an id the protocol's
    // integers cannot hold, by an error with a null id.
    let cases = [
        (
            json!(10),
            json!({"name": "get_port", "arguments": {"path": 5, "service": []}}),
        ),
        (
            json!(11),
            json!({"name": "get_port", "arguments": "not an object"}),
        ),
        (json!(12), json!({"name": "no_such_tool", "arguments": {}})),
        (json!(13), json!({"name": 42})),
        (
            json!(14),
            json!({"name": "lease", "arguments": {"count": -1}}),
        ),
        (
            json!(u64::MAX),
            json!({"name": "get_port", "arguments": {"path": root}}),
        ),
        (
            json!(-9_007_199_254_740_993_i64),
            json!({"name": "check_ports", "arguments": {"ports": [1.5]}}),
        ),
        (
            json!("x".repeat(10_000)),
            json!({"name": "check_ports", "arguments": {"ports": "8080"}}),
        ),
        (
            json!("\u{0}\u{1b}[31m"),
            json!({"name": "allocate", "arguments": {"path": root, "ports": {"web": {"deep": [[[]]]}}}}),
        ),
    ];
    for (id, params) in &cases {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        raw.send(format!("{msg}\n").as_bytes());
    }
    let v = raw.ask(json!("end"), "ping", json!({}));
    assert_eq!(v["result"], json!({}));
    let mut answers: Vec<Value> = raw.seen.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = |answers: &[Value], id: &Value| answers.iter().any(|a| a["id"] == *id);
    while !cases
        .iter()
        .all(|(id, _)| answered(&answers, id) || *id == json!(u64::MAX))
    {
        assert!(Instant::now() < deadline, "unanswered: {answers:?}");
        answers.push(raw.next());
    }
    for (id, params) in &cases {
        match answers.iter().find(|a| a["id"] == *id) {
            Some(a) => assert!(
                a["error"]["code"].is_i64() || a["result"]["isError"] == true,
                "{params} -> {a}"
            ),
            None => assert!(
                answers
                    .iter()
                    .any(|a| a["id"].is_null() && a["error"]["code"] == -32600),
                "{id} unanswered: {answers:?}"
            ),
        }
    }
    // A request for a method that does not exist.
    let v = raw.ask(json!(20), "no/such/method", json!({}));
    assert_eq!(v["error"]["code"], -32601, "{v}");
    // Still serving, with the right answer.
    let v = raw.ask(
        json!(21),
        "tools/call",
        json!({"name": "get_port", "arguments": {"path": root, "service": "web"}}),
    );
    assert_eq!(
        v["result"]["structuredContent"]["port"],
        u64::from(repo.base),
        "{v}"
    );
    // Closing stdin ends it, with exit 0; stdout carried nothing else.
    drop(raw.child.stdin.take());
    let status = raw.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    while let Ok(line) = raw.lines.try_recv() {
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
    }
    let mut err = String::new();
    raw.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

/// A child the server runs (a user's post-checkout hook under `git worktree add`) that
/// prints on stdout and reads stdin cannot corrupt the protocol: it writes to stderr and
/// reads nothing. git already gives hooks no stdin and sends their stdout to stderr; the
/// server's own guard is that fd 0 and fd 1 are /dev/null and stderr once it serves (the
/// protocol has private copies), whatever a child or a stray print would do.
#[test]
fn a_noisy_hook_under_add_worktree_never_reaches_the_protocol() {
    let repo = TestRepo::new();
    let hooks = repo.root.join(".git/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("post-checkout");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'hook noise on stdout'\nhead -c 100 >/dev/null\nexit 0\n",
    )
    .unwrap();
    make_executable(&hook, 0o755);
    let mut raw = Raw::start(&repo);
    raw.initialize();
    let fd = |n: u32| std::fs::read_link(format!("/proc/{}/fd/{n}", raw.child.id())).unwrap();
    assert_eq!(fd(0), PathBuf::from("/dev/null"));
    assert_eq!(fd(1), fd(2), "stdout goes where stderr goes");
    let feat = repo.path("noisy");
    let v = raw.ask(
        json!(1),
        "tools/call",
        json!({"name": "add_worktree", "arguments": {
            "repository": repo.root, "path": feat, "render": false}}),
    );
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert_eq!(v["result"]["structuredContent"]["worktree"], "noisy", "{v}");
    // The server still reads its own input (the hook's `head` read nothing of it).
    let v = raw.ask(json!(2), "ping", json!({}));
    assert_eq!(v["result"], json!({}), "{v}");
    drop(raw.child.stdin.take());
    assert!(raw.child.wait().unwrap().success());
    let mut err = String::new();
    (raw.child.stderr.take().unwrap())
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("hook noise on stdout"), "{err}");
}

/// A server started with another repository's `GIT_DIR` in its environment (from a git hook,
/// a shell that exported it) answers for the path each call names, never for `GIT_DIR`'s
/// repository.
#[test]
fn an_inherited_git_dir_never_answers_for_the_path_a_call_names() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let other = repo.another("other", Some(&default_config(repo.base)));
    repo.env
        .wp_in(&other, ["allocate", "--no-render"])
        .succeeds();
    let other_git = other.join(".git");
    let mut raw = Raw::start_with(&repo, &[("GIT_DIR", &other_git), ("GIT_WORK_TREE", &other)]);
    raw.initialize();
    for (path, expected) in [(&repo.root, &repo.root), (&other, &other)] {
        let want: u64 = repo
            .env
            .wp_in(expected, ["get", "web"])
            .succeeds()
            .stdout()
            .trim()
            .parse()
            .unwrap();
        let v = raw.ask(
            json!(path.to_str().unwrap()),
            "tools/call",
            json!({"name": "get_port", "arguments": {"path": path, "service": "web"}}),
        );
        assert_eq!(v["result"]["structuredContent"]["port"], want, "{v}");
    }
    drop(raw.child.stdin.take());
    assert!(raw.child.wait().unwrap().success());
}
