//! `proxy run | start | stop | status`: the Host-routing proxy (see `crate::proxy`). `run`
//! serves in the foreground; `start` runs it in the background (its pid in
//! `<state dir>/proxy.pid`, its output in `proxy.log`), and does nothing when it already
//! runs; `stop` ends it and waits until it is gone. The port is recorded in `proxy.json` (so
//! templates get proxy URLs); a busy port fails, naming its holder, never a fallback.

use anyhow::Context;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::{ProxyAction, ProxyArgs};
use crate::commands::Report;
use crate::machine::Machine;
use crate::model::error::{Code, Error};
use crate::proxy::{self, routes::Routes};
use crate::sys::fsio::{self, Durability, Mode, WriteOptions};

struct Files {
    pid: PathBuf,
    log: PathBuf,
}

fn files(machine: &Machine) -> Files {
    Files {
        pid: machine.dir.join("proxy.pid"),
        log: machine.dir.join("proxy.log"),
    }
}

/// The running proxy's pid, if the pid file names a live process.
fn running(files: &Files) -> Option<u32> {
    let text = std::fs::read_to_string(&files.pid).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    crate::sys::procs::alive(pid, None).then_some(pid)
}

fn port_for(machine: &Machine, asked: Option<u16>) -> u16 {
    asked
        .or_else(|| machine.proxy_port())
        .unwrap_or(proxy::DEFAULT_PORT)
}

fn write(path: &std::path::Path, text: &str, label: &'static str) -> anyhow::Result<()> {
    fsio::write_atomic(
        path,
        text.as_bytes(),
        WriteOptions {
            durability: Durability::File,
            mode: Mode::Fixed(0o644),
            label,
        },
    )
}

/// `proxy status --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProxyStatusAnswer {
    /// Whether the background proxy runs.
    pub running: bool,
    /// Its pid, when it runs.
    pub pid: Option<u32>,
    /// The port it listens (or last listened) on.
    pub port: Option<u16>,
    /// Every hostname it routes, and where to.
    pub routes: Vec<RouteAnswer>,
}

/// One route of `proxy status --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RouteAnswer {
    /// The Host it answers (`feature.app.localhost`, `api.feature.app.localhost`).
    pub host: String,
    /// The repository's git directory.
    pub repository: String,
    /// The worktree.
    pub worktree: String,
    /// The service.
    pub service: String,
    /// The port it forwards to.
    pub port: u16,
}

/// Run `proxy`.
pub fn run(args: &ProxyArgs) -> anyhow::Result<Report> {
    let machine = Machine::from_env()?;
    fsio::create_dirs(&machine.dir)
        .with_context(|| format!("could not create {}", machine.dir.display()))?;
    let files = files(&machine);
    match &args.action {
        ProxyAction::Run { port } => {
            let port = port_for(&machine, *port);
            if let Some(pid) = running(&files).filter(|p| *p != std::process::id()) {
                return Err(Error::new(
                    Code::PortInUse,
                    format!(
                        "the proxy already runs (pid {pid}); `git worktree-ports proxy stop` first"
                    ),
                )
                .into());
            }
            let bound = proxy::bind(port)?;
            write(
                &machine.proxy_file(),
                &format!("{{\"port\": {port}}}\n"),
                "proxy",
            )?;
            write(
                &files.pid,
                &format!("{}\n", std::process::id()),
                "proxy-pid",
            )?;
            eprintln!("git-worktree-ports: proxy listening on 127.0.0.1:{port} and [::1]:{port}");
            let served = proxy::serve(bound, machine.clone());
            if running(&files) == Some(std::process::id()) {
                let _ = std::fs::remove_file(&files.pid);
            }
            served?;
            Ok(Report::ok(String::new()))
        }
        ProxyAction::Start { port } => {
            let port = port_for(&machine, *port);
            if let Some(pid) = running(&files) {
                let at = machine.proxy_port().unwrap_or(port);
                return Ok(Report::ok(format!(
                    "the proxy already runs (pid {pid}, port {at})\n"
                )));
            }
            let log = fsio::open_log(&files.log)
                .with_context(|| format!("could not open {}", files.log.display()))?;
            let mut child = crate::sys::shell::spawn_daemon(
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
                    let log = std::fs::read_to_string(&files.log).unwrap_or_default();
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
                if running(&files) == Some(child.id())
                    && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    anyhow::bail!(
                        "the proxy did not start within 10 s; see {}",
                        files.log.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Report::ok(format!(
                "proxy started (pid {}) on http://localhost:{port}: http://<worktree>.<repo>.localhost:{port}; log: {}\n",
                child.id(),
                files.log.display()
            )))
        }
        ProxyAction::Stop => {
            let Some(pid) = running(&files) else {
                let _ = std::fs::remove_file(&files.pid);
                return Ok(Report::ok("the proxy is not running\n".into()));
            };
            if !crate::sys::procs::stop(pid, Duration::from_secs(5)) {
                anyhow::bail!("the proxy (pid {pid}) did not stop");
            }
            let _ = std::fs::remove_file(&files.pid);
            Ok(Report::ok(format!("stopped the proxy (pid {pid})\n")))
        }
        ProxyAction::Status { json } => {
            let pid = running(&files);
            let port = machine.proxy_port();
            let (routes, _) = Routes::read(&machine);
            if *json {
                let routes = (routes.0.iter())
                    .map(|(host, r)| RouteAnswer {
                        host: host.clone(),
                        repository: r.repository.display().to_string(),
                        worktree: r.worktree.clone(),
                        service: r.service.clone(),
                        port: r.port,
                    })
                    .collect();
                return Ok(Report::answer(ProxyStatusAnswer {
                    running: pid.is_some(),
                    pid,
                    port,
                    routes,
                }));
            }
            let mut out = match (pid, port) {
                (Some(pid), Some(port)) => format!("the proxy runs (pid {pid}) on port {port}\n"),
                (Some(pid), None) => format!("the proxy runs (pid {pid})\n"),
                (None, _) => {
                    "the proxy is not running; `git worktree-ports proxy start` starts it\n"
                        .to_string()
                }
            };
            let p = port.unwrap_or(proxy::DEFAULT_PORT);
            for (host, r) in &routes.0 {
                out.push_str(&format!(
                    "  http://{host}:{p} -> worktree {} of {} ({} on port {})\n",
                    r.worktree,
                    r.repository.display(),
                    r.service,
                    r.port
                ));
            }
            Ok(Report::ok(out))
        }
    }
}
