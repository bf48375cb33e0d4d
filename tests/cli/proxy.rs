//! The proxy, with real servers and real clients: curl (skipped, with the reason, where it is
//! missing; `.ci/run` installs it) and raw sockets for WebSocket and server-sent events.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

fn curl_available() -> bool {
    let ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("the proxy tests that need curl: curl is not installed (.ci/run installs it)");
    }
    ok
}

/// `curl -s` a URL (the name resolved by curl itself: *.localhost is loopback); the body
/// and the status.
fn curl(url: &str, extra: &[&str]) -> (String, u16) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (body.to_string(), code.parse().unwrap_or(0))
}

fn two_services(base: u16) -> String {
    format!(
        "[services.web]\nrange = [{base}, {}]\n[services.api]\nrange = [{}, {}]\n",
        base + 4,
        base + 5,
        base + 9
    )
}

#[test]
fn the_proxy_routes_two_repositories_by_host_and_services_by_subdomain() {
    if !curl_available() {
        return;
    }
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    let feature = repo.add_worktree("feature");
    let out = repo
        .wp_in(&feature, ["allocate", "--json"])
        .succeeds()
        .json();
    let (web, api) = (
        out["ports"]["web"].as_u64().unwrap() as u16,
        out["ports"]["api"].as_u64().unwrap() as u16,
    );
    let other = repo.another("other", Some(&two_services(b + 20)));
    let out = repo.wp_in(&other, ["allocate", "--json"]).succeeds().json();
    let other_web = out["ports"]["web"].as_u64().unwrap() as u16;
    let _s1 = http_server(&feature, web, "feature-web");
    let _s2 = http_server(&feature, api, "feature-api");
    let _s3 = http_server(&other, other_web, "other-web");
    let p = b + 39;
    let _proxy = Proxy::start(&repo, p);

    let (body, code) = curl(&format!("http://feature.repo.localhost:{p}/x?y=1"), &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        format!(
            "hello from feature-web GET /x?y=1 host=feature.repo.localhost:{p} xff=127.0.0.1 xfh=feature.repo.localhost:{p} xfp=http body=\n"
        )
    );
    let (body, _) = curl(&format!("http://api.feature.repo.localhost:{p}/"), &[]);
    assert!(body.starts_with("hello from feature-api GET /"), "{body}");
    let (body, _) = curl(&format!("http://other.localhost:{p}/"), &[]);
    assert!(body.starts_with("hello from other-web GET /"), "{body}");
    let (body, _) = curl(
        &format!("http://feature.repo.localhost:{p}/post"),
        &["-d", "abc"],
    );
    assert!(
        body.starts_with("hello from feature-web POST /post") && body.ends_with("body=abc\n"),
        "{body}"
    );
    // Keep-alive: two requests on one connection.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-v",
            &format!("http://feature.repo.localhost:{p}/1"),
            &format!("http://feature.repo.localhost:{p}/2"),
        ])
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("Re-using existing connection"),
        "{verbose}"
    );
}

fn read_head(r: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            return head;
        }
    }
}

#[test]
fn websocket_and_server_sent_events_pass_through() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    let web = out["ports"]["web"].as_u64().unwrap() as u16;
    let _server = http_server(&repo.root, web, "ws");
    let p = b + 39;
    let _proxy = Proxy::start(&repo, p);

    // WebSocket: the handshake, then an echo, through the proxy.
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let s = raw(
        p,
        &format!(
            "GET /chat HTTP/1.1\r\nHost: repo.localhost:{p}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    );
    let mut r = BufReader::new(s.try_clone().unwrap());
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let mut w = s;
    w.write_all(&frame(1, b"ping", Some([1, 2, 3, 4]))).unwrap();
    let (opcode, payload) = read_frame(&mut r).unwrap();
    assert_eq!((opcode, payload.as_slice()), (1, b"ws: ping".as_slice()));
    w.write_all(&frame(1, &vec![b'x'; 300], Some([9, 8, 7, 6])))
        .unwrap();
    let (_, payload) = read_frame(&mut r).unwrap();
    assert_eq!(payload.len(), 304);

    // Server-sent events: the first event arrives while the server still holds the second.
    let gate = repo.path("gate");
    let s = raw(
        p,
        &format!(
            "GET /sse?gate={} HTTP/1.1\r\nHost: repo.localhost:{p}\r\n\r\n",
            gate.display()
        ),
    );
    let mut r = BufReader::new(s);
    let head = read_head(&mut r);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
        "{head}"
    );
    let mut seen = String::new();
    while !seen.contains("data: ws 1") {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        seen.push_str(&line);
    }
    assert!(!seen.contains("data: ws 2"));
    std::fs::write(&gate, "").unwrap();
    while !seen.contains("data: ws 2") {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
}

#[test]
fn pages_for_down_and_unknown_hosts_bad_requests_and_new_worktrees_without_a_restart() {
    if !curl_available() {
        return;
    }
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    repo.wp(["allocate"]).succeeds();
    let p = b + 39;
    let _proxy = Proxy::start(&repo, p);
    // Known, nothing listening: 502 naming the worktree and its port.
    let (body, code) = curl(&format!("http://repo.localhost:{p}/"), &[]);
    assert_eq!(code, 502);
    assert!(
        body.contains("worktree <b>main</b>") && body.contains(&format!("port {b}")),
        "{body}"
    );
    // Unknown: 404 listing the known ones.
    let (body, code) = curl(&format!("http://nope.localhost:{p}/"), &[]);
    assert_eq!(code, 404);
    assert!(
        body.contains("repo.localhost") && body.contains("api.repo.localhost"),
        "{body}"
    );
    // Bad Host headers: 400, never forwarded.
    for request in [
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_string(),
        format!("GET / HTTP/1.1\r\nHost: repo.localhost:{p}\r\nHost: other.localhost\r\n\r\n"),
        "GET / HTTP/1.1\r\nHost: evil@repo.localhost\r\n\r\n".to_string(),
    ] {
        let mut s = raw(p, &request);
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 400"), "{request:?}: {resp}");
    }
    // Not HTTP, headers past 64 KiB, more than 100 header lines, Content-Length with
    // Transfer-Encoding (request smuggling; also as the second request of a connection):
    // 400, and the server never sees them (it would answer 200).
    let api_port: u16 = repo
        .wp(["get", "api"])
        .succeeds()
        .stdout()
        .trim()
        .parse()
        .unwrap();
    let _api = http_server(&repo.root, api_port, "api");
    let api = format!("api.repo.localhost:{p}");
    let many: String = (0..150).map(|i| format!("X-{i}: 1\r\n")).collect();
    let fine = format!("GET / HTTP/1.1\r\nHost: {api}\r\n\r\n");
    for request in [
        "GARBAGE\r\n\r\n".to_string(),
        format!(
            "GET / HTTP/1.1\r\nHost: {api}\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200_000)
        ),
        format!("GET / HTTP/1.1\r\nHost: {api}\r\n{many}\r\n"),
        format!(
            "POST / HTTP/1.1\r\nHost: {api}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: {api}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"
        ),
    ] {
        let mut s = raw(p, &request);
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{}: {resp}",
            &request[..30]
        );
        assert!(!resp.contains("hello from api"), "forwarded: {resp}");
    }
    // The same conflict after a good request on a kept-alive connection: the first is
    // answered by the server, the second refused.
    let mut s = raw(
        p,
        &format!(
            "{fine}POST / HTTP/1.1\r\nHost: {api}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
    );
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(resp.matches("hello from api").count(), 1, "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    // A worktree added while the proxy runs is routable within a second or so.
    let feature = repo.add_worktree("feature");
    let out = repo
        .wp_in(&feature, ["allocate", "--json"])
        .succeeds()
        .json();
    let _server = http_server(
        &feature,
        out["ports"]["web"].as_u64().unwrap() as u16,
        "late",
    );
    let start = Instant::now();
    loop {
        let (body, code) = curl(&format!("http://feature.repo.localhost:{p}/"), &[]);
        if code == 200 {
            assert!(body.starts_with("hello from late"), "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never routable: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

#[test]
fn a_busy_port_is_refused_with_its_holder_and_start_status_stop_leave_nothing_behind() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    repo.wp(["allocate"]).succeeds();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", b + 38)).unwrap();
    let err = repo
        .wp(["proxy", "start", "--port", &(b + 38).to_string()])
        .fails();
    let msg = err.stderr();
    assert!(
        msg.contains(&format!(
            "port {} is in use by pid {}",
            b + 38,
            std::process::id()
        )),
        "{msg}"
    );
    drop(squatter);
    let p = b + 39;
    let proxy = Proxy::start(&repo, p);
    let again = repo
        .wp(["proxy", "start", "--port", &p.to_string()])
        .succeeds()
        .stdout();
    assert!(again.starts_with("the proxy already runs"), "{again}");
    let status = repo.wp(["proxy", "status", "--json"]).succeeds().json();
    assert_eq!(status["running"], true);
    assert_eq!(status["port"], p);
    let pid = status["pid"].as_u64().unwrap();
    assert!(pid_alive(pid));
    let hosts: Vec<&str> = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        ["api.repo.localhost", "repo.localhost", "web.repo.localhost"]
    );
    // `hosts` prints the lines, writes nothing.
    let lines = repo.wp(["hosts"]).succeeds().stdout();
    assert!(
        lines.contains("127.0.0.1 repo.localhost\n::1 repo.localhost\n"),
        "{lines}"
    );
    drop(proxy);
    let start = Instant::now();
    while pid_alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the proxy process is still there"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = repo.wp(["proxy", "status", "--json"]).succeeds().json();
    assert_eq!(status["running"], false);
    assert!(
        TcpStream::connect(("127.0.0.1", p)).is_err(),
        "nothing listens any more"
    );
}

#[test]
fn a_config_change_of_which_services_speak_http_changes_the_routes_without_a_restart() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    repo.wp(["allocate"]).succeeds();
    let p = b + 39;
    let _proxy = Proxy::start(&repo, p);
    let hosts = |repo: &TestRepo| -> Vec<String> {
        let status = repo.wp(["proxy", "status", "--json"]).succeeds().json();
        (status["routes"].as_array().unwrap().iter())
            .map(|r| r["host"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(hosts(&repo).contains(&"api.repo.localhost".to_string()));
    // api stops speaking HTTP: its route goes, without touching the registry.
    write(
        &repo.root.join(".worktree-ports/config.toml"),
        &format!("{}http = false\n", two_services(b)),
    );
    let start = Instant::now();
    loop {
        let (body, code) = raw_get(p, "api.repo.localhost");
        if code == 404 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still routed: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A GET through the proxy on a fresh connection: (body, status).
fn raw_get(port: u16, host: &str) -> (String, u16) {
    let mut s = raw(
        port,
        &format!("GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"),
    );
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (resp, code)
}

/// Issue 26, item 13: the proxy connected to 127.0.0.1 only, so a server on `[::1]` only
/// (Vite where `localhost` resolves to ::1 first; `http.server --bind ::1`) got a 502 saying
/// nothing listens, while `status` said it listens. It connects where the server listens, and
/// a 502 says what really failed.
#[test]
fn issue26_13_a_server_on_ipv6_loopback_only_is_reached_and_a_reset_is_named() {
    if !curl_available() {
        return;
    }
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    repo.wp(["allocate"]).succeeds();
    // web (b) on ::1 only, answering one HTTP request per connection; api (b + 5) on
    // 127.0.0.1, closing every connection without a word. Both stop (and free their ports)
    // before the test's block of ports goes back to the pool.
    let Ok(v6) = std::net::TcpListener::bind(("::1", b)) else {
        eprintln!("skipped the ::1 part: no IPv6 loopback here");
        return;
    };
    let rude = std::net::TcpListener::bind(("127.0.0.1", b + 5)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serve = |l: std::net::TcpListener, answer: &'static [u8]| {
        let stop = stop.clone();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) if !answer.is_empty() => {
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(answer);
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let servers = [
        serve(
            v6,
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nfrom ::1",
        ),
        serve(rude, b""),
    ];
    let p = b + 39;
    let _proxy = Proxy::start(&repo, p);
    let (body, code) = curl(&format!("http://repo.localhost:{p}/"), &[]);
    assert_eq!((code, body.as_str()), (200, "from ::1"));
    let (body, code) = curl(&format!("http://api.repo.localhost:{p}/"), &[]);
    assert_eq!(code, 502);
    assert!(
        body.contains("502 Bad Gateway: the server closed the connection")
            && body.contains(&format!(
                "the server on port {} closed or reset the connection without an HTTP answer",
                b + 5
            )),
        "{body}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for server in servers {
        server.join().unwrap();
    }
}

/// Issue 26, item 14: an absolute-form request target (`GET http://other/x` with the Host of
/// a worktree) was routed by Host and the target's authority dropped. RFC 9112 makes the
/// target's authority win: routed by it, and the server sees it as Host.
#[test]
fn issue26_14_an_absolute_form_target_is_routed_by_its_authority() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    let (web, api) = (
        out["ports"]["web"].as_u64().unwrap() as u16,
        out["ports"]["api"].as_u64().unwrap() as u16,
    );
    let _web = http_server(&repo.root, web, "web");
    let _api = http_server(&repo.root, api, "api");
    let p = b + 39;
    let _proxy = Proxy::start(&repo, p);
    let mut s = raw(
        p,
        &format!(
            "GET http://api.repo.localhost:{p}/x HTTP/1.1\r\nHost: repo.localhost:{p}\r\nConnection: close\r\n\r\n"
        ),
    );
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains(&format!(
            "hello from api GET /x host=api.repo.localhost:{p} "
        )),
        "{reply}"
    );
}

/// Issue 26, item 19: with a low open-file limit, one client holding idle connections stopped
/// the proxy: connections that never sent a request had no timeout, and on EMFILE the accept
/// loop retried at once at 100% of a core, answering nobody. Under a hard limit of 64
/// descriptors, with 100 idle connections held: the proxy stays cool, and a real request is
/// answered once the idle ones time out.
#[test]
fn issue26_19_idle_connections_at_the_descriptor_limit_neither_stop_nor_spin_the_proxy() {
    if !curl_available() {
        return;
    }
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    repo.wp(["allocate"]).succeeds();
    let p = b + 39;
    let mut run = repo
        .wp(["proxy", "start", "--port", &p.to_string()])
        .env("GIT_WORKTREE_PORTS_PROXY_IDLE_MS", "500");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut run.cmd, || {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    run.succeeds();
    let _proxy = Proxy { repo: &repo };
    let pid = repo.wp(["proxy", "status", "--json"]).succeeds().json()["pid"]
        .as_u64()
        .unwrap();
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", p)).ok())
        .collect();
    assert!(idle.len() > 64, "only {} connections", idle.len());
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu() - before;
    // Clock ticks (100 a second): a spinning accept loop burns about 100.
    assert!(
        spent < 40,
        "the proxy spent {spent} ticks in 1 s with idle clients"
    );
    let (body, code) = curl(&format!("http://nope.localhost:{p}/"), &[]);
    assert_eq!(code, 404, "{body}");
    drop(idle);
}

/// One response from `r`: its head, and its body as long as its Content-Length says (none
/// for a HEAD's).
fn read_response(r: &mut BufReader<TcpStream>, head_only: bool) -> (String, String) {
    let head = read_head(r);
    let len = head
        .lines()
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; if head_only { 0 } else { len }];
    r.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// Bodies pass on framed as they came (a Content-Length body, chunks with an extension and a
/// trailer), pipelined requests are answered in order, a HEAD's answer has no body, `Expect:
/// 100-continue` gets its 100, an HTTP/1.0 request gets one answer and the end of the
/// connection, and a kept connection the server closed between requests (its keep-alive
/// timeout, unannounced) is replaced, never answered with a 502. Three serving threads: the
/// connections the first thread accepts and hands to the others are served there.
#[test]
fn bodies_pipelining_head_expect_http_1_0_and_a_kept_connection_the_server_closed_pass() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    let web = out["ports"]["web"].as_u64().unwrap() as u16;
    let _server = http_server(&repo.root, web, "web");
    let p = b + 39;
    let _proxy = Proxy::start_with_threads(&repo, p, 3);
    let host = format!("repo.localhost:{p}");
    let pid = std::fs::read_to_string(repo.env.state_dir().join("proxy.pid")).unwrap();
    let pid = pid.split_whitespace().next().unwrap();
    // main, the routes' thread, and three serving threads
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(threads >= 5, "{threads} threads");

    // Six connections open at once (spread over the three threads), two requests each.
    let mut open: Vec<_> = (0..6)
        .map(|i| {
            let s = raw(
                p,
                &format!("GET /first{i} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            );
            (s.try_clone().unwrap(), BufReader::new(s))
        })
        .collect();
    for (i, (w, r)) in open.iter_mut().enumerate() {
        let (_, body) = read_response(r, false);
        assert!(
            body.starts_with(&format!("hello from web GET /first{i} ")),
            "{body}"
        );
        w.write_all(format!("GET /second{i} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
    }
    for (i, (_, r)) in open.iter_mut().enumerate() {
        let (_, body) = read_response(r, false);
        assert!(
            body.starts_with(&format!("hello from web GET /second{i} ")),
            "{body}"
        );
    }

    let s = raw(
        p,
        &format!(
            "POST /a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nchu\r\n5\r\nnked!\r\n0\r\nX-Trailer: 1\r\n\r\n\
HEAD /c HTTP/1.1\r\nHost: {host}\r\n\r\n\
GET /d HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ),
    );
    let mut r = BufReader::new(s);
    let (head, body) = read_response(&mut r, false);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        body.starts_with("hello from web POST /a ") && body.ends_with("body=hello\n"),
        "{body}"
    );
    let (_, body) = read_response(&mut r, false);
    assert!(
        body.starts_with("hello from web POST /b ") && body.ends_with("body=chunked!\n"),
        "{body}"
    );
    let (head, _) = read_response(&mut r, true);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-length: "),
        "{head}"
    );
    let (_, body) = read_response(&mut r, false);
    assert!(body.starts_with("hello from web GET /d "), "{body}");

    let mut s = raw(
        p,
        &format!(
            "PUT /e HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        ),
    );
    let mut r = BufReader::new(s.try_clone().unwrap());
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    s.write_all(b"data").unwrap();
    let (_, body) = read_response(&mut r, false);
    assert!(
        body.starts_with("hello from web PUT /e ") && body.ends_with("body=data\n"),
        "{body}"
    );

    let mut s = raw(p, &format!("GET /f HTTP/1.0\r\nHost: {host}\r\n\r\n"));
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("HTTP/1.1 200") && all.contains("hello from web GET /f "),
        "{all}"
    );

    // At once and after a pause: the server's close is seen before the next request, or
    // only when the request meets it.
    let s = raw(p, "");
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..6 {
        w.write_all(format!("GET /close HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) = read_response(&mut r, false);
        assert!(
            head.starts_with("HTTP/1.1 200") && body.starts_with("hello from web GET /close "),
            "request {i}: {head}{body}"
        );
        if i % 2 == 1 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A client that goes away while its server has not answered ends the proxy's wait: the
/// client's connection and the server connection are closed, not kept until the server
/// answers (200 requests hung on a server that never answers kept 400 descriptors).
#[test]
fn a_client_gone_while_its_server_thinks_leaves_no_descriptor_behind() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&two_services(b), block);
    repo.wp(["allocate"]).succeeds();
    // The web server (port b) accepts and never answers; it holds every connection open.
    let hung = std::net::TcpListener::bind(("127.0.0.1", b)).unwrap();
    hung.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match hung.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        })
    };
    let p = b + 39;
    let _proxy = Proxy::start(&repo, p);
    let pid = std::fs::read_to_string(repo.env.state_dir().join("proxy.pid")).unwrap();
    let fds = format!("/proc/{}/fd", pid.split_whitespace().next().unwrap());
    let open = || std::fs::read_dir(&fds).unwrap().count();
    let before = open();
    for _ in 0..20 {
        let s = raw(
            p,
            &format!("GET / HTTP/1.1\r\nHost: repo.localhost:{p}\r\n\r\n"),
        );
        // Long enough for the proxy to have passed the request on.
        std::thread::sleep(Duration::from_millis(20));
        drop(s);
    }
    let start = Instant::now();
    while open() > before {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} descriptors open, {before} before",
            open()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        server.join().unwrap(),
        20,
        "every request reached the server"
    );
}
