use std::net::{TcpListener, UdpSocket};

use crate::support::*;

#[test]
fn check_reports_free_allocated_in_use_and_invalid() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let _l = TcpListener::bind(("0.0.0.0", b + 5)).unwrap();
    let _u = UdpSocket::bind(("0.0.0.0", b + 6)).unwrap();

    assert_eq!(
        repo.wp(["check", &(b + 3).to_string()]).succeeds().stdout(),
        format!("{}: free\n", b + 3)
    );

    let ports: Vec<String> = [b, b + 3, b + 5, b + 6]
        .iter()
        .map(u16::to_string)
        .collect();
    let mut args = vec!["check".to_string(), "--json".into()];
    args.extend(ports.iter().cloned());
    args.push("80".into());
    let out = repo.wp(&args).fails().json();
    let st: Vec<&str> = out["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, ["allocated", "free", "in_use", "in_use", "invalid"]);
    assert_eq!(out["ports"][0]["worktree"], "main");
    assert_eq!(out["ports"][0]["service"], "web");
    assert_eq!(out["ports"][2]["pid"], std::process::id());
    assert_eq!(out["ports"][3]["protocol"], "udp");
    assert_eq!(out["all_free"], false);

    let human = repo.wp(["check", &(b + 5).to_string()]).fails().stdout();
    assert!(
        human.contains(&format!("pid {}", std::process::id())),
        "{human}"
    );
}

#[test]
fn check_works_outside_a_repository() {
    let env = TestEnv::new();
    let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let out = env.wp_in(env.root(), ["check", &port]).fails().stdout();
    assert!(out.contains("in use (tcp)"), "{out}");
}
