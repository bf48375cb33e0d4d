//! Is a port free on this machine, and who holds it. Opens sockets and reads `/proc`; nothing
//! else. The rules (measured, see design.md "Probing a port"):
//!
//! - free = a server could bind it: `0.0.0.0:P` AND `[::]:P` with IPV6_V6ONLY both bind (a
//!   listener on `[::1]` does not block the v4 wildcard, so only the v6 bind sees it);
//! - SO_REUSEADDR on for TCP on Linux (so TIME_WAIT after HTTP traffic reads free, as every
//!   usual server binds there fine), off on macOS/BSD and for UDP everywhere;
//! - EADDRINUSE / EACCES = busy; a missing IPv6 stack skips the v6 bind.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use socket2::{Domain, Socket, Type};

use crate::model::allocate::{Holder, Probe};
use crate::model::config::Protocol;

/// The probe that asks the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemProbe;

impl Probe for SystemProbe {
    fn is_free(&self, port: u16, protocol: Protocol) -> bool {
        let tcp = || bindable(port, Type::STREAM);
        let udp = || bindable(port, Type::DGRAM);
        match protocol {
            Protocol::Tcp => tcp(),
            Protocol::Udp => udp(),
            Protocol::Both => tcp() && udp(),
        }
    }

    fn holder(&self, port: u16, protocol: Protocol) -> Option<Holder> {
        holder(port, protocol)
    }
}

/// Both wildcard binds succeed (the v6 one skipped without an IPv6 stack).
fn bindable(port: u16, ty: Type) -> bool {
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match try_bind(v4, ty) {
        Ok(()) => {}
        Err(_) => return false,
    }
    match try_bind(v6, ty) {
        Ok(()) => true,
        Err(e) if no_ipv6(&e) => true,
        Err(_) => false,
    }
}

fn try_bind(addr: SocketAddr, ty: Type) -> io::Result<()> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, ty, None)?;
    if domain == Domain::IPV6 {
        socket.set_only_v6(true)?;
    }
    if ty == Type::STREAM && cfg!(target_os = "linux") {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())
}

fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// Port ranges automatic choices take last: the kernel's ephemeral range (outgoing
/// connections grab those) and, on Linux, `ip_local_reserved_ports`.
pub fn avoid_ranges() -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    if cfg!(target_os = "linux") {
        if let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") {
            let nums: Vec<u16> = text
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            if let [lo, hi] = nums[..]
                && lo <= hi
            {
                out.push(lo..=hi);
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports") {
            out.extend(parse_port_list(text.trim()));
        }
    } else {
        // macOS and the BSDs default to the IANA dynamic range.
        out.push(49152..=65535);
    }
    out
}

/// `8080,9000-9010` -> ranges; malformed items are skipped.
fn parse_port_list(text: &str) -> Vec<RangeInclusive<u16>> {
    text.split(',')
        .filter_map(|item| {
            let item = item.trim();
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some(a..=b)
        })
        .collect()
}

/// Who holds `port`: on Linux from the kernel's socket dump and `/proc/*/fd` (`procs`);
/// elsewhere from lsof.
pub fn holder(port: u16, protocol: Protocol) -> Option<Holder> {
    let wanted = |p: &str| match protocol {
        Protocol::Tcp => p == "tcp",
        Protocol::Udp => p == "udp",
        Protocol::Both => true,
    };
    let l = (crate::sys::procs::listeners(&[port]).into_iter()).find(|l| wanted(l.protocol))?;
    Some(Holder::of(&l))
}

impl Holder {
    /// A listener `procs` found, as a holder: its pid, the process's short name
    /// (`/proc/<pid>/comm`, else the program's file name), the socket's uid.
    pub fn of(l: &crate::model::attribution::Listener) -> Holder {
        let pid = l.process.as_ref().map(|p| p.pid);
        let command = pid
            .and_then(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                Some(comm.trim().to_string())
            })
            // Without /proc: the program's file name from the command line.
            .or_else(|| {
                let first = l.process.as_ref()?.command.split(' ').next()?;
                Some(first.rsplit('/').next().unwrap_or(first).to_string())
            });
        Holder {
            pid,
            command,
            uid: l.uid,
        }
    }
}

/// Unit tests that bind ephemeral ports and then assert a port is free (or that only their
/// own sockets are on it) hold this: the kernel may hand a port one test just closed to
/// another test of the same process.
#[cfg(test)]
pub(crate) static EPHEMERAL_PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    #[test]
    fn parses_reserved_port_lists() {
        assert_eq!(
            parse_port_list("8080,9000-9010"),
            [8080..=8080, 9000..=9010]
        );
        assert!(parse_port_list("").is_empty());
    }

    #[test]
    fn sees_listeners_on_v4_v6_and_udp() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!SystemProbe.is_free(port, Protocol::Tcp));
        let h = SystemProbe.holder(port, Protocol::Tcp).expect("holder");
        if cfg!(target_os = "linux") {
            assert_eq!(h.pid, Some(std::process::id()));
        }
        drop(l);
        assert!(SystemProbe.is_free(port, Protocol::Tcp));

        if let Ok(l6) = TcpListener::bind("[::1]:0") {
            let port = l6.local_addr().unwrap().port();
            assert!(
                !SystemProbe.is_free(port, Protocol::Tcp),
                "v6-only listener missed"
            );
        }

        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = u.local_addr().unwrap().port();
        assert!(!SystemProbe.is_free(port, Protocol::Udp));
        assert!(!SystemProbe.is_free(port, Protocol::Both));
    }
}
