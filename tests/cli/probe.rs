//! Real listeners on real ports are skipped.

use std::net::{TcpListener, UdpSocket};

use crate::support::*;

#[test]
fn ipv4_wildcard_listener_is_skipped() {
    let repo = TestRepo::new();
    let b = repo.base;
    let _l = TcpListener::bind(("0.0.0.0", b)).unwrap();
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], b + 1);
}

#[test]
fn ipv6_loopback_only_listener_is_skipped() {
    let repo = TestRepo::new();
    let b = repo.base;
    // A v6-only localhost server: the v4 wildcard bind alone would miss it.
    let Ok(_l) = TcpListener::bind(("::1", b)) else {
        eprintln!("no IPv6 loopback on this machine; nothing to prove");
        return;
    };
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], b + 1);
}

#[test]
fn loopback_v4_listener_is_skipped() {
    let repo = TestRepo::new();
    let b = repo.base;
    let _l = TcpListener::bind(("127.0.0.1", b + 20)).unwrap();
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["db"], b + 21);
}

#[test]
fn udp_service_skips_a_udp_holder_and_tcp_service_does_not_care() {
    let block = port_block();
    let base = block.base;
    let config = format!(
        "[services.dns]\nrange = [{base}, {}]\nprotocol = \"udp\"\n[services.web]\nrange = [{}, {}]\n[services.both]\nrange = [{}, {}]\nprotocol = \"both\"\n",
        base + 9,
        base + 10,
        base + 19,
        base + 20,
        base + 29
    );
    let repo = TestRepo::with_config(&config, block);
    let _u1 = UdpSocket::bind(("0.0.0.0", base)).unwrap();
    let _u2 = UdpSocket::bind(("0.0.0.0", base + 10)).unwrap();
    let _u3 = UdpSocket::bind(("0.0.0.0", base + 20)).unwrap();
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["dns"], base + 1);
    assert_eq!(
        out["ports"]["web"],
        base + 10,
        "a UDP socket does not block a TCP service"
    );
    assert_eq!(out["ports"]["both"], base + 21);
}

#[test]
fn a_worktrees_own_running_server_does_not_move_its_ports() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let _server = TcpListener::bind(("0.0.0.0", b)).unwrap();
    let out = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], b);
}
