//! The proxy as a daemon: `run` in the foreground, `start` in the background (its identity
//! in `<state dir>/proxy.pid`, its output in `proxy.log`), `stop`, `status`. The port is
//! recorded in `proxy.json`, so templates get proxy URLs.
//!
//! A pid file proves nothing by its pid alone (pids are reused): it records the pid, the
//! process's start time and its executable, and names the proxy only while all three match a
//! live process. Anything else is stale: removed, never signalled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::machine::Machine;
use crate::model::error::{Code, Error};
use crate::sys::fsio::{self, Durability, Mode, WriteOptions};
use crate::sys::{procs, shell};

use super::routes::Routes;
use super::{DEFAULT_PORT, bind, serve};

/// The proxy's files in the state dir.
pub struct Daemon {
    machine: Machine,
    pid_file: PathBuf,
    /// Where a background proxy writes its output.
    pub log: PathBuf,
}

/// What `start` did.
pub enum Started {
    /// It was started: its pid.
    Now(u32),
    /// It already ran: its pid and port.
    Already(u32, u16),
}

/// A process as a pid file names it: pid, start time, executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    /// The pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot).
    pub start: u64,
    /// Its executable.
    pub exe: PathBuf,
}

impl PidFile {
    /// `<pid> <start> <exe>`: None for anything else (an older file with a pid alone, a
    /// hand edit), which names no process.
    pub fn parse(text: &str) -> Option<PidFile> {
        let mut parts = text.trim_end_matches('\n').splitn(3, ' ');
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let exe = PathBuf::from(parts.next().filter(|e| !e.is_empty())?);
        Some(PidFile { pid, start, exe })
    }

    /// The file's text.
    pub fn text(&self) -> String {
        format!("{} {} {}\n", self.pid, self.start, self.exe.display())
    }

    /// This very process, when it can be named (its start time and executable are known).
    fn me() -> Option<PidFile> {
        let pid = std::process::id();
        Some(PidFile {
            pid,
            start: procs::start_time(pid)?,
            exe: procs::exe(pid)?,
        })
    }

    /// True while the process it names runs: same pid, start time and executable.
    fn is_live(&self) -> bool {
        procs::alive(self.pid, Some(self.start))
            && procs::exe(self.pid).is_some_and(|e| e == self.exe)
    }

    /// True when it names a live proxy: a live process running this very program.
    fn is_our_proxy(&self) -> bool {
        self.is_live() && procs::exe(std::process::id()).is_some_and(|me| me == self.exe)
    }
}

impl Daemon {
    /// The proxy of the machine of the environment (its state dir is made when missing).
    pub fn from_env() -> anyhow::Result<Daemon> {
        let machine = Machine::from_env()?;
        fsio::create_private_dir(&machine.dir)
            .with_context(|| format!("could not create {}", machine.dir.display()))?;
        Ok(Daemon {
            pid_file: machine.dir.join("proxy.pid"),
            log: machine.dir.join("proxy.log"),
            machine,
        })
    }

    /// The port asked for, else the one recorded, else the default.
    pub fn port_for(&self, asked: Option<u16>) -> u16 {
        asked
            .or_else(|| self.machine.proxy_port())
            .unwrap_or(DEFAULT_PORT)
    }

    /// The port recorded by the last `run`.
    pub fn port(&self) -> Option<u16> {
        self.machine.proxy_port()
    }

    /// The running proxy's pid: only when the pid file names a live process by pid, start
    /// time and executable, and that executable is this program. A stale file is removed.
    pub fn running(&self) -> Option<u32> {
        let text = std::fs::read_to_string(&self.pid_file).ok()?;
        match PidFile::parse(&text).filter(PidFile::is_our_proxy) {
            Some(p) => Some(p.pid),
            None => {
                let _ = std::fs::remove_file(&self.pid_file);
                None
            }
        }
    }

    /// Serve in the foreground until stopped.
    pub fn run(
        &self,
        asked: Option<u16>,
        listing: super::dashboard::Listing,
    ) -> anyhow::Result<()> {
        let port = self.port_for(asked);
        if let Some(pid) = self.running().filter(|p| *p != std::process::id()) {
            return Err(Error::new(
                Code::PortInUse,
                format!(
                    "the proxy already runs (pid {pid}); `git worktree-ports proxy stop` first"
                ),
            )
            .into());
        }
        let bound = bind(port)?;
        write(
            &self.machine.proxy_file(),
            &format!("{{\"port\": {port}}}\n"),
            "proxy",
        )?;
        let me = PidFile::me();
        if let Some(me) = &me {
            write(&self.pid_file, &me.text(), "proxy-pid")?;
        }
        eprintln!("git-worktree-ports: proxy listening on 127.0.0.1:{port} and [::1]:{port}");
        let served = serve(bound, self.machine.clone(), listing);
        if self.running() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.pid_file);
        }
        served
    }

    /// Start it in the background (a daemon of its own session, output to the log) and wait
    /// until it answers; nothing when it already runs.
    pub fn start(&self, asked: Option<u16>) -> anyhow::Result<Started> {
        let port = self.port_for(asked);
        if let Some(pid) = self.running() {
            return Ok(Started::Already(pid, self.port().unwrap_or(port)));
        }
        let log = fsio::open_log(&self.log)
            .with_context(|| format!("could not open {}", self.log.display()))?;
        let mut child = shell::spawn_daemon(
            &[
                "proxy".into(),
                "run".into(),
                "--port".into(),
                port.to_string(),
            ],
            log,
        )?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(Error::new(
                    Code::PortInUse,
                    format!(
                        "the proxy did not start ({status}): {}",
                        last.trim_start_matches("git-worktree-ports: error: ")
                    ),
                )
                .into());
            }
            if self.running() == Some(child.id())
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(Started::Now(child.id()));
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                anyhow::bail!(
                    "the proxy did not start within 10 s; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the running proxy (SIGTERM, then SIGKILL after 5 s) and wait until it is gone;
    /// its pid, or None when none runs (a stale pid file is removed, nothing signalled).
    pub fn stop(&self) -> anyhow::Result<Option<u32>> {
        let Some(pid) = self.running() else {
            return Ok(None);
        };
        if !procs::stop(pid, Duration::from_secs(5)) {
            anyhow::bail!("the proxy (pid {pid}) did not stop");
        }
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(Some(pid))
    }

    /// What it routes now.
    pub fn routes(&self) -> Routes {
        Routes::read(&self.machine).0
    }
}

fn write(path: &Path, text: &str, label: &'static str) -> anyhow::Result<()> {
    fsio::write_atomic(
        path,
        text.as_bytes(),
        WriteOptions {
            durability: Durability::File,
            mode: Mode::Fixed(0o600),
            label,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_names_a_process_by_pid_start_and_executable_only() {
        let me = PidFile::me().expect("this process can be named");
        assert_eq!(PidFile::parse(&me.text()), Some(me.clone()));
        assert!(me.is_live() && me.is_our_proxy());
        // A pid alone (the old format), or anything else, names nothing.
        assert_eq!(PidFile::parse(&format!("{}\n", me.pid)), None);
        assert_eq!(PidFile::parse("x 1 /bin/sh"), None);
        assert_eq!(PidFile::parse(&format!("{} {}\n", me.pid, me.start)), None);
        // The same pid with another start time or executable is someone else.
        assert!(
            !PidFile {
                start: me.start + 1,
                ..me.clone()
            }
            .is_live()
        );
        assert!(
            !PidFile {
                exe: PathBuf::from("/bin/sh"),
                ..me.clone()
            }
            .is_live()
        );
    }
}
