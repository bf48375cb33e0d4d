//! The one process module: which process listens on a port and where it runs, whether a
//! process is still the one we knew ([`alive`]: pid and start time), and stopping one
//! ([`stop`]). On Linux from `/proc` (the socket tables, every process's fds, its `cwd`,
//! `cmdline`, `stat` and `status`); elsewhere, or with `GIT_WORKTREE_PORTS_PROCS=lsof` (how the
//! tests exercise it on Linux), from `lsof -nP -iTCP:P -sTCP:LISTEN` (never without
//! `-sTCP:LISTEN`: that lists clients too). Each text format has one pure parser here:
//! [`parse_stat`], [`parse_lsof`], [`socket_inode`].
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
    if use_lsof() {
        lsof_listeners(ports)
    } else {
        linux_listeners(ports)
    }
}

/// Environment variable that selects the lsof backend on Linux too (`lsof`).
pub const BACKEND_ENV: &str = "GIT_WORKTREE_PORTS_PROCS";

/// True where `/proc` is not the way (not Linux), or when the lsof backend is asked for.
fn use_lsof() -> bool {
    !cfg!(target_os = "linux") || std::env::var_os(BACKEND_ENV).is_some_and(|v| v == "lsof")
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (field 2, without its parentheses).
    pub name: String,
    /// The state (field 3): `R`, `S`, `Z` (a zombie: exited, not yet reaped)...
    pub state: char,
    /// The controlling terminal (field 7); 0 when there is none.
    pub tty_nr: i64,
    /// When it started, in clock ticks since boot (field 22).
    pub start: u64,
}

/// Parse `/proc/<pid>/stat`. The name may hold spaces and parentheses: fields are counted
/// from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(Stat {
        name,
        state: fields.first()?.chars().next()?,
        tty_nr: fields.get(4)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The inode of a `socket:[<inode>]` fd link; None for any other link.
pub fn socket_inode(link: &std::path::Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One process of lsof's `-F pcu` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsofEntry {
    /// `p` field.
    pub pid: u32,
    /// `c` field (the command name).
    pub command: String,
    /// `u` field.
    pub uid: Option<u32>,
}

/// Parse lsof's field output (`-F pcu`: a `p<pid>` line starts a process, `c<name>` and
/// `u<uid>` lines describe it, other lines are ignored).
pub fn parse_lsof(text: &str) -> Vec<LsofEntry> {
    let mut out: Vec<LsofEntry> = Vec::new();
    for line in text.lines() {
        if let Some(pid) = line.strip_prefix('p').and_then(|p| p.parse().ok()) {
            out.push(LsofEntry {
                pid,
                command: String::new(),
                uid: None,
            });
        } else if let (Some(c), Some(e)) = (line.strip_prefix('c'), out.last_mut()) {
            e.command = c.to_string();
        } else if let (Some(u), Some(e)) = (line.strip_prefix('u'), out.last_mut()) {
            e.uid = u.parse().ok();
        }
    }
    out
}

/// `pid` as the kernel's type; None for 0 (no process) or one out of range.
fn pid_of(pid: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Raise this process's soft limit of open files to its hard limit (a server holding many
/// connections); nothing when it cannot.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// The uid of our own processes.
pub fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
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
                let Some(inode) = socket_inode(&target) else {
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
    let stat = parse_stat(&std::fs::read_to_string(base.join("stat")).ok()?)?;
    let tty = stat.tty_nr != 0;
    let name = stat.name;
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
            let inode = socket_inode(&target);
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

/// The executable of process `pid` (`/proc/PID/exe`, without the ` (deleted)` a replaced
/// binary reads with); None where it cannot be read.
pub fn exe(pid: u32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    use std::os::unix::ffi::OsStrExt;
    let bytes = link.as_os_str().as_bytes();
    Some(match bytes.strip_suffix(b" (deleted)") {
        Some(rest) => PathBuf::from(std::ffi::OsStr::from_bytes(rest)),
        None => link,
    })
}

/// When process `pid` started (clock ticks since boot); None where `/proc` cannot tell.
pub fn start_time(pid: u32) -> Option<u64> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|s| s.start)
}

/// True while process `pid` runs and, when `start` is known, is the very process that started
/// then (a pid alone is reused: pid and start time are the process). A zombie (exited, not yet
/// reaped by its parent) counts as gone. Where `/proc` cannot tell: whether a signal could
/// reach it (EPERM: it exists, another user's).
pub fn alive(pid: u32, start: Option<u64>) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text)
            .is_some_and(|s| s.state != 'Z' && start.is_none_or(|want| want == s.start)),
        Err(_) => pid_of(pid).is_some_and(|p| {
            // Signal 0 sends nothing; EPERM: it exists, another user's.
            matches!(
                rustix::process::test_kill_process(p),
                Ok(()) | Err(rustix::io::Errno::PERM)
            )
        }),
    }
}

/// Stop process `pid`: SIGTERM, then SIGKILL if it still runs after `grace`. True when it is
/// gone. Only the reaper calls this, after its checks.
pub fn stop(pid: u32, grace: Duration) -> bool {
    let Some(id) = pid_of(pid) else {
        return false;
    };
    let alive = || alive(pid, None);
    if rustix::process::kill_process(id, rustix::process::Signal::TERM).is_err() {
        return !alive();
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if !alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process(id, rustix::process::Signal::KILL);
    let start = Instant::now();
    while alive() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive()
}

fn lsof_listeners(ports: &[u16]) -> Vec<Listener> {
    let mut out = Vec::new();
    for &port in ports {
        // TCP in LISTEN only (without -sTCP:LISTEN lsof lists clients too), and bound UDP.
        let specs: [(&str, &[String]); 2] = [
            (
                "tcp",
                &[format!("-iTCP:{port}"), "-sTCP:LISTEN".to_string()],
            ),
            ("udp", &[format!("-iUDP:{port}")]),
        ];
        for (protocol, spec) in specs {
            let Ok(output) = std::process::Command::new("lsof")
                .args(["-nP", "-Fpcu"])
                .args(spec)
                .output()
            else {
                continue;
            };
            for e in parse_lsof(&String::from_utf8_lossy(&output.stdout)) {
                out.push(Listener {
                    port,
                    protocol,
                    uid: e.uid,
                    process: Some(Process {
                        pid: e.pid,
                        command: e.command,
                        uid: e.uid,
                        cwd: lsof_cwd(e.pid),
                        cwd_deleted: false,
                        tty: false,
                    }),
                });
            }
        }
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
    fn knows_this_process_is_alive_and_a_reused_pid_or_a_zombie_is_not() {
        // A child holds copies of our sockets between fork and exec: not while a socket test
        // checks that a closed listener is gone.
        let _ports = crate::sys::probe::EPHEMERAL_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        assert!(alive(me, start));
        assert!(!alive(me, start.map(|s| s + 1)));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not yet waited for: a zombie is gone.
        let until = Instant::now() + Duration::from_secs(5);
        while alive(pid, None) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!alive(pid, None));
        child.wait().unwrap();
        assert!(!alive(pid, None));
    }

    #[test]
    fn parses_stat_with_spaces_and_parentheses_in_the_name() {
        let text = "4242 (my (odd) srv) S 1 4242 4242 34816 4242 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000000 200 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                name: "my (odd) srv".into(),
                state: 'S',
                tty_nr: 34816,
                start: 987654,
            })
        );
        assert_eq!(parse_stat("4242 (x) Z 1"), None);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&me).is_some_and(|s| s.start > 0 && s.state != 'Z'));
    }

    #[test]
    fn parses_socket_links_only() {
        use std::path::Path;
        assert_eq!(socket_inode(Path::new("socket:[12345]")), Some(12345));
        assert_eq!(socket_inode(Path::new("pipe:[12345]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
    }

    #[test]
    fn parses_lsof_field_output() {
        let text = "p101\ncnode\nu1000\nf23\np202\ncpython3\nu0\n";
        assert_eq!(
            parse_lsof(text),
            [
                LsofEntry {
                    pid: 101,
                    command: "node".into(),
                    uid: Some(1000)
                },
                LsofEntry {
                    pid: 202,
                    command: "python3".into(),
                    uid: Some(0)
                },
            ]
        );
        assert!(parse_lsof("cstray\n").is_empty());
    }

    /// The lsof backend, run for real (lsof is in Debian; `.ci/run` installs it).
    #[test]
    fn the_lsof_backend_finds_our_listener() {
        if std::process::Command::new("lsof")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("skipped the_lsof_backend_finds_our_listener: lsof is not installed");
            return;
        }
        let _ports = crate::sys::probe::EPHEMERAL_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let found = lsof_listeners(&[port]);
        assert_eq!(found.len(), 1, "{found:?}");
        let p = found[0].process.as_ref().unwrap();
        assert_eq!(p.pid, std::process::id());
        assert_eq!(found[0].protocol, "tcp");
        assert_eq!(p.cwd.as_deref(), std::env::current_dir().ok().as_deref());
        assert_eq!(found[0].uid, Some(my_uid()));
        drop(l);
        assert!(lsof_listeners(&[port]).is_empty());
    }

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
