//! `proxy run | start | stop | status`: the Host-routing proxy (see `crate::proxy`). `run`
//! serves in the foreground; `start` runs it in the background (`crate::proxy::daemon`: its
//! identity in `<state dir>/proxy.pid`, its output in `proxy.log`), and does nothing when it
//! already runs; `stop` ends it and waits until it is gone. The port is recorded in
//! `proxy.json` (so templates get proxy URLs); a busy port fails, naming its holder, never a
//! fallback.

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::{Command, ListArgs, ProxyAction, ProxyArgs};
use crate::commands::Report;
use crate::proxy::DEFAULT_PORT;
use crate::proxy::daemon::{Daemon, Started};

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
    /// Names two routes claimed, each said with where it goes.
    pub collisions: Vec<String>,
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

/// The dashboard's data: exactly what `list --all --json` prints (None when it fails; the
/// proxy's log has why).
fn listing() -> Option<String> {
    let args = ListArgs {
        all: true,
        sort: None,
        no_probe: false,
        json: true,
        format: None,
    };
    match crate::commands::run(&Command::List(crate::cli::Deferred(args))) {
        Ok(report) => Some(report.stdout),
        Err(e) => {
            crate::workspace::warn(&format!("the dashboard's listing failed: {e:#}"));
            None
        }
    }
}

/// Run `proxy`.
pub fn run(args: &ProxyArgs) -> anyhow::Result<Report> {
    let daemon = Daemon::from_env()?;
    match &args.action {
        ProxyAction::Run { port } => {
            daemon.run(*port, std::sync::Arc::new(listing))?;
            Ok(Report::ok(String::new()))
        }
        ProxyAction::Start { port } => Ok(Report::ok(match daemon.start(*port)? {
            Started::Already(pid, at) => format!("the proxy already runs (pid {pid}, port {at})\n"),
            Started::Now(pid) => {
                let port = daemon.port_for(*port);
                format!(
                    "proxy started (pid {pid}) on http://localhost:{port}: http://<worktree>.<repo>.localhost:{port}; log: {}\n",
                    daemon.log.display()
                )
            }
        })),
        ProxyAction::Stop => Ok(Report::ok(match daemon.stop()? {
            None => "the proxy is not running\n".into(),
            Some(pid) => format!("stopped the proxy (pid {pid})\n"),
        })),
        ProxyAction::Status { json } => {
            let pid = daemon.running();
            let port = daemon.port();
            let routes = daemon.routes();
            let daemon_collisions = &routes.1;
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
                    collisions: daemon_collisions.clone(),
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
            let p = port.unwrap_or(DEFAULT_PORT);
            for (host, r) in &routes.0 {
                out.push_str(&format!(
                    "  http://{host}:{p} -> worktree {} of {} ({} on port {})\n",
                    r.worktree,
                    r.repository.display(),
                    r.service,
                    r.port
                ));
            }
            for c in &routes.1 {
                out.push_str(&format!("  collision: {c}\n"));
            }
            Ok(Report::ok(out))
        }
    }
}
