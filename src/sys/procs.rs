//! Which process listens on a port, and where it runs: on Linux from `/proc` (the socket
//! tables, every process's fds, its `cwd`, `cmdline`, `stat` and `status`); on macOS from
//! `lsof -nP -iTCP:P -sTCP:LISTEN` (never without `-sTCP:LISTEN`: that lists clients too).
//! Reads only; never signals (see [`stop`], which the reaper alone calls).
//!
//! A process of another user cannot be read without root: then only the socket's uid is
//! known, and the caller says so instead of guessing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::model::attribution::{Listener, Process};

/// Listening sockets on any of `ports` (TCP in LISTEN, UDP bound), each with its process:
/// one pass over `/proc`, stopped as soon as every socket has its process. No socket on
/// those ports: no process scan at all.
pub fn listeners(ports: &[u16]) -> Vec<Listener> {
    if cfg!(target_os = "linux") {
        linux_listeners(ports)
    } else {
        lsof_listeners(ports)
    }
}

/// The uid of our own processes.
pub fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Ports of `ports` with a listening socket, and the socket owner's uid: from the socket
/// tables alone (one read of each, no process scan and no probe; Linux). None where only the
/// probe can tell.
pub fn listening_uids(ports: &[u16]) -> Option<HashMap<u16, u32>> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let sockets = sockets(ports);
    Some(sockets.into_values().map(|s| (s.port, s.uid)).collect())
}

#[derive(Debug, Clone, Copy)]
struct Socket {
    port: u16,
    protocol: &'static str,
    uid: u32,
}

/// inode -> socket, for the listening sockets on `ports`: from the kernel's sock_diag
/// netlink interface (listening sockets only, no walk of the established-connection table),
/// else from `/proc/net/*`. Measured on this machine: reading `/proc/net/tcp` took 5.5 ms with
/// one socket open (the kernel walks every bucket of the connection hash), tcp + tcp6 11 ms;
/// the netlink dump of listening sockets a small fraction of that.
fn sockets(ports: &[u16]) -> BTreeMap<u64, Socket> {
    let mut wanted = vec![false; usize::from(u16::MAX) + 1];
    for p in ports {
        wanted[usize::from(*p)] = true;
    }
    sockets_where(&wanted)
}

/// [`sockets`] on the ports `wanted` marks (indexed by port).
fn sockets_where(wanted: &[bool]) -> BTreeMap<u64, Socket> {
    match diag::listening() {
        Some(all) => all
            .into_iter()
            .filter(|(_, s)| wanted[usize::from(s.port)])
            .collect(),
        None => proc_net_sockets(wanted),
    }
}

/// [`sockets`] from the text tables.
fn proc_net_sockets(wanted: &[bool]) -> BTreeMap<u64, Socket> {
    let mut out = BTreeMap::new();
    for (table, protocol, listen_only) in [
        ("tcp", "tcp", true),
        ("tcp6", "tcp", true),
        ("udp", "udp", false),
        ("udp6", "udp", false),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) else {
            continue;
        };
        for (port, inode, uid) in parse_proc_net(&text, listen_only) {
            if wanted[usize::from(port)] {
                out.insert(
                    inode,
                    Socket {
                        port,
                        protocol,
                        uid,
                    },
                );
            }
        }
    }
    out
}

/// (port, inode, uid) of the sockets of a `/proc/net/{tcp,udp}[6]` table; with `listen_only`
/// only LISTEN ones (state 0A), so clients with that local port are not blamed.
fn parse_proc_net(text: &str, listen_only: bool) -> Vec<(u16, u64, u32)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || (listen_only && f[3] != "0A") {
            continue;
        }
        let Some(port) = f[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if let (Ok(uid), Ok(inode)) = (f[7].parse(), f[9].parse::<u64>())
            && inode != 0
        {
            out.push((port, inode, uid));
        }
    }
    out
}

/// The sock_diag netlink dump (Linux): every listening TCP socket and every UDP socket, v4
/// and v6, with port, uid and inode. None when the kernel does not answer (then /proc/net).
mod diag {
    use std::collections::BTreeMap;

    use super::Socket;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;
    const TCP_CLOSE: u32 = 7;

    pub(super) fn listening() -> Option<BTreeMap<u64, Socket>> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let mut out = BTreeMap::new();
        for (family, protocol, states, name) in [
            (libc::AF_INET, libc::IPPROTO_TCP, 1u32 << TCP_LISTEN, "tcp"),
            (libc::AF_INET6, libc::IPPROTO_TCP, 1 << TCP_LISTEN, "tcp"),
            // Bound, unconnected UDP sockets (TCP_CLOSE): a connected one is a client's.
            (libc::AF_INET, libc::IPPROTO_UDP, 1 << TCP_CLOSE, "udp"),
            (libc::AF_INET6, libc::IPPROTO_UDP, 1 << TCP_CLOSE, "udp"),
        ] {
            dump(family as u8, protocol as u8, states, name, &mut out)?;
        }
        Some(out)
    }

    fn dump(
        family: u8,
        protocol: u8,
        states: u32,
        name: &'static str,
        out: &mut BTreeMap<u64, Socket>,
    ) -> Option<()> {
        // SAFETY: plain socket calls on a descriptor we own and close.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return None;
        }
        struct Close(i32);
        impl Drop for Close {
            fn drop(&mut self) {
                // SAFETY: our own descriptor.
                unsafe { libc::close(self.0) };
            }
        }
        let _close = Close(fd);
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
        let mut req = [0u8; 72];
        req[0..4].copy_from_slice(&72u32.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        req[16] = family;
        req[17] = protocol;
        req[20..24].copy_from_slice(&states.to_ne_bytes());
        // SAFETY: sending our buffer to the kernel (address zeroed: the kernel).
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                fd,
                req.as_ptr().cast(),
                req.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent != req.len() as isize {
            return None;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: receiving into our buffer.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return None;
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?) as usize;
                let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().ok()?);
                if len < 16 || at + len > n {
                    return None;
                }
                match kind {
                    NLMSG_DONE => return Some(()),
                    NLMSG_ERROR => return None,
                    _ => {
                        // inet_diag_msg after the header: sport at 4 (big endian), uid at
                        // 64, inode at 68.
                        let m = &buf[at + 16..at + len];
                        if m.len() >= 72 {
                            let port = u16::from_be_bytes([m[4], m[5]]);
                            let uid = u32::from_ne_bytes(m[64..68].try_into().ok()?);
                            let inode = u32::from_ne_bytes(m[68..72].try_into().ok()?);
                            if inode != 0 && port != 0 {
                                out.insert(
                                    u64::from(inode),
                                    Socket {
                                        port,
                                        protocol: name,
                                        uid,
                                    },
                                );
                            }
                        }
                    }
                }
                at += (len + 3) & !3;
            }
        }
    }
}

fn linux_listeners(ports: &[u16]) -> Vec<Listener> {
    let mut wanted = sockets(ports);
    let mut out = Vec::new();
    if wanted.is_empty() {
        return out;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if wanted.is_empty() {
                break;
            }
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let mut found = Vec::new();
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                if let Some(s) = wanted.remove(&inode) {
                    found.push(s);
                }
            }
            if found.is_empty() {
                continue;
            }
            let process = process(pid);
            for s in found {
                out.push(Listener {
                    port: s.port,
                    protocol: s.protocol,
                    uid: Some(s.uid),
                    process: process.clone(),
                });
            }
        }
    }
    // Sockets whose process could not be read (another user's, without root).
    for s in wanted.into_values() {
        out.push(Listener {
            port: s.port,
            protocol: s.protocol,
            uid: Some(s.uid),
            process: None,
        });
    }
    out.sort_by_key(|l| (l.port, l.protocol));
    // The same socket seen on v4 and v6, or a pre-fork server's workers: one per process.
    out.dedup_by(|a, b| {
        a.port == b.port
            && a.protocol == b.protocol
            && a.process.as_ref().map(|p| p.pid) == b.process.as_ref().map(|p| p.pid)
    });
    out
}

/// Read process `pid` (None when it is gone).
pub fn process(pid: u32) -> Option<Process> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(base.join("stat")).ok()?;
    let close = stat.rfind(')')?;
    let name = stat
        .get(stat.find('(')? + 1..close)
        .unwrap_or_default()
        .to_string();
    // Fields after the name: state(3) ppid(4) pgrp(5) session(6) tty_nr(7).
    let tty = stat[close + 1..]
        .split_whitespace()
        .nth(4)
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| t != 0);
    let command = std::fs::read(base.join("cmdline"))
        .ok()
        .map(|bytes| {
            let parts: Vec<String> = bytes
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            parts.join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or(name);
    let uid = std::fs::read_to_string(base.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        });
    let (cwd, cwd_deleted) = match std::fs::read_link(base.join("cwd")) {
        Ok(p) => {
            use std::os::unix::ffi::OsStrExt;
            let bytes = p.as_os_str().as_bytes();
            match bytes.strip_suffix(b" (deleted)") {
                Some(rest) => (
                    Some(PathBuf::from(std::ffi::OsStr::from_bytes(rest))),
                    // A directory really named "x (deleted)" still exists.
                    !p.exists(),
                ),
                None => (Some(p), false),
            }
        }
        Err(_) => (None, false),
    };
    Some(Process {
        pid,
        command,
        uid,
        cwd,
        cwd_deleted,
        tty,
    })
}

/// Every process this user may read, with where it runs (for the reaper). Processes of other
/// users come back with what could be read (no cwd): the caller never touches them.
pub fn processes() -> Vec<Process> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process)
        .collect()
}

/// The ports each process listens on, for processes in `pids` (one socket-table read and one
/// fd scan of those processes only).
pub fn ports_of(pids: &[u32]) -> HashMap<u32, Vec<u16>> {
    let sockets = sockets_where(&[true; 1 << 16]);
    let mut out: HashMap<u32, Vec<u16>> = HashMap::new();
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(s) = inode.and_then(|i| sockets.get(&i)) {
                let ports = out.entry(pid).or_default();
                if !ports.contains(&s.port) {
                    ports.push(s.port);
                }
            }
        }
    }
    out
}

/// True when process `pid` has a terminal open: a pty master (`script`, tmux, an IDE's
/// terminal: a session someone works in) or a terminal device, even without it being its
/// controlling terminal. The reaper spares these too.
pub fn uses_terminal(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|t| {
            t == std::path::Path::new("/dev/ptmx")
                || t.starts_with("/dev/pts")
                || t.to_str().is_some_and(|t| t.starts_with("/dev/tty"))
        })
    })
}

/// True while process `pid` runs: a zombie (exited, not yet reaped by its parent) counts as
/// gone; where `/proc` cannot tell, whether a signal could reach it.
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .get(s.rfind(')').map_or(0, |i| i + 2)..)
            .is_some_and(|state| !state.starts_with('Z')),
        Err(_) => libc::pid_t::try_from(pid)
            // SAFETY: signal 0 sends nothing.
            .is_ok_and(|id| unsafe { libc::kill(id, 0) } == 0),
    }
}

/// Stop process `pid`: SIGTERM, then SIGKILL if it still runs after `grace`. True when it is
/// gone. Only the reaper calls this, after its checks.
pub fn stop(pid: u32, grace: Duration) -> bool {
    let Ok(id) = libc::pid_t::try_from(pid) else {
        return false;
    };
    let alive = || running(pid);
    // SAFETY: sending a signal to a pid the caller chose.
    if unsafe { libc::kill(id, libc::SIGTERM) } != 0 {
        return !alive();
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if !alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(id, libc::SIGKILL) };
    let start = Instant::now();
    while alive() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive()
}

fn lsof_listeners(ports: &[u16]) -> Vec<Listener> {
    let mut out = Vec::new();
    for &port in ports {
        let Ok(output) = std::process::Command::new("lsof")
            .args(["-nP", "-Fpcu", &format!("-iTCP:{port}"), "-sTCP:LISTEN"])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let mut current: Option<Process> = None;
        let mut flush = |p: Option<Process>| {
            if let Some(p) = p {
                out.push(Listener {
                    port,
                    protocol: "tcp",
                    uid: p.uid,
                    process: Some(p),
                });
            }
        };
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix('p').and_then(|p| p.parse().ok()) {
                flush(current.take());
                current = Some(Process {
                    pid,
                    command: String::new(),
                    uid: None,
                    cwd: lsof_cwd(pid),
                    cwd_deleted: false,
                    tty: false,
                });
            } else if let (Some(c), Some(p)) = (line.strip_prefix('c'), current.as_mut()) {
                p.command = c.to_string();
            } else if let (Some(u), Some(p)) = (line.strip_prefix('u'), current.as_mut()) {
                p.uid = u.parse().ok();
            }
        }
        flush(current.take());
    }
    out
}

fn lsof_cwd(pid: u32) -> Option<PathBuf> {
    let output = std::process::Command::new("lsof")
        .args(["-a", "-d", "cwd", "-Fn", "-p", &pid.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix('n').map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener_with_its_cwd_and_command() {
        let _ports = crate::sys::probe::EPHEMERAL_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let found = listeners(&[port]);
        assert_eq!(found.len(), 1, "{found:?}");
        let p = found[0]
            .process
            .as_ref()
            .expect("our own process is readable");
        assert_eq!(p.pid, std::process::id());
        assert_eq!(p.cwd.as_deref(), std::env::current_dir().ok().as_deref());
        assert!(!p.cwd_deleted);
        assert_eq!(found[0].uid, Some(my_uid()));
        assert_eq!(listening_uids(&[port]).unwrap()[&port], my_uid());
        drop(l);
        assert!(listeners(&[port]).is_empty());
    }

    #[test]
    fn parses_proc_net_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0\n";
        let on = |port: u16, listen_only: bool| -> Vec<(u64, u32)> {
            (parse_proc_net(text, listen_only).into_iter())
                .filter(|(p, _, _)| *p == port)
                .map(|(_, inode, uid)| (inode, uid))
                .collect()
        };
        assert_eq!(on(8080, true), [(12345, 1000)]);
        assert_eq!(on(8080, false), [(12345, 1000), (777, 1000)]);
        assert!(on(8081, true).is_empty());
    }

    #[test]
    fn netlink_and_proc_net_see_the_same_listening_sockets() {
        let _ports = crate::sys::probe::EPHEMERAL_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let tcp = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let udp = std::net::UdpSocket::bind(("::1", 0)).unwrap();
        let ports = [
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        ];
        let mut wanted = vec![false; 65536];
        ports.iter().for_each(|p| wanted[usize::from(*p)] = true);
        let Some(diag) = diag::listening() else {
            eprintln!("skipped: no sock_diag netlink here");
            return;
        };
        let from_diag: BTreeMap<u64, (u16, &str, u32)> = diag
            .into_iter()
            .filter(|(_, s)| wanted[usize::from(s.port)])
            .map(|(i, s)| (i, (s.port, s.protocol, s.uid)))
            .collect();
        let from_proc: BTreeMap<u64, (u16, &str, u32)> = proc_net_sockets(&wanted)
            .into_iter()
            .map(|(i, s)| (i, (s.port, s.protocol, s.uid)))
            .collect();
        assert_eq!(from_diag.len(), 2, "{from_diag:?}");
        assert_eq!(from_diag, from_proc);
    }

    #[test]
    fn a_deleted_working_directory_is_seen_as_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("wt");
        std::fs::create_dir(&wt).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&wt)
            .spawn()
            .unwrap();
        std::fs::remove_dir(&wt).unwrap();
        let p = process(child.id()).unwrap();
        assert_eq!(p.cwd.as_deref(), Some(wt.as_path()));
        assert!(p.cwd_deleted);
        // Right after exec the command line may not be readable yet: the name is.
        assert!(p.command.starts_with("sleep"), "{}", p.command);
        assert!(stop(child.id(), Duration::from_secs(2)));
        let _ = child.wait();
    }
}
