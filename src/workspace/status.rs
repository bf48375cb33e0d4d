//! `status`: each service of a worktree now (free, busy, or listening and whose the process
//! is), its slot, URLs and files. Collects (sockets, processes, a planned render); the port's
//! state is decided by the pure `model::attribution::port_state`.

use std::path::PathBuf;

use crate::machine::Machine;
use crate::model::allocate::Probe;
use crate::model::attribution::{self, KnownWorktree, Listener, PortState, Whose, port_state};
use crate::model::config::Protocol;
use crate::model::names::display_path;
use crate::output::progress::Progress;
use crate::sys::probe::SystemProbe;
use crate::sys::procs;

use super::{FileState, Holding, Target, Workspace, canonical, known_this, template_context, warn};

/// Which worktrees `status` reports.
#[derive(Debug, Clone, Copy)]
pub enum StatusScope<'a> {
    /// The worktree named (None: the current one).
    One(Option<&'a str>),
    /// Every worktree with ports of the current repository.
    All,
    /// Every worktree with ports of every repository of the machine index.
    Machine,
}

/// The status of the worktrees `scope` names.
pub fn status(scope: StatusScope) -> anyhow::Result<Vec<WorktreeNow>> {
    let mut all = Vec::new();
    match scope {
        StatusScope::Machine => {
            let machine = Machine::from_env()?;
            let (index, warnings) = machine.read();
            warnings.iter().for_each(|w| warn(w));
            let live: Vec<_> = (index.repositories.iter())
                .filter(|(c, _)| c.is_dir())
                .collect();
            let mut progress = Progress::new("status", live.len());
            for (i, (common, entry)) in live.into_iter().enumerate() {
                progress.step(i, &entry.name);
                match Workspace::open_at(common) {
                    Ok(ws) => all.extend(repository(&ws, None, true, Some(display_path(common)))?),
                    Err(e) => warn(&format!("skipped {}: {e:#}", common.display())),
                }
            }
        }
        StatusScope::All => {
            let ws = Workspace::open()?;
            all.extend(repository(&ws, None, false, None)?);
        }
        StatusScope::One(spec) => {
            let ws = Workspace::open()?;
            let key = ws.target(spec)?.wt.key;
            all.extend(repository(&ws, Some(&key), false, None)?);
        }
    }
    Ok(all)
}

/// One service of a worktree as the machine has it now.
#[derive(Debug, Clone)]
pub struct ServiceNow {
    /// The service.
    pub service: String,
    /// Its port.
    pub port: u16,
    /// Which protocols must be free.
    pub protocol: Protocol,
    /// Whether something is on it.
    pub state: PortState,
    /// Its listeners, with whose each is.
    pub listeners: Vec<(Listener, Whose)>,
}

/// One worktree's status.
#[derive(Debug)]
pub struct WorktreeNow {
    /// Its repository's display path (`--machine` only).
    pub repository: Option<PathBuf>,
    /// Its registry key.
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// Its slot.
    pub slot: Option<u32>,
    /// Its hostname.
    pub hostname: Option<String>,
    /// HTTP service -> URL (direct, and through the proxy when it is set up).
    pub urls: Vec<(String, String, Option<String>)>,
    /// Its services, in config order.
    pub services: Vec<ServiceNow>,
    /// (relative path, state) or the reason rendering cannot be planned.
    pub files: Result<Vec<(PathBuf, FileState)>, String>,
}

/// The status of one worktree (`only`) or of every worktree with ports of `ws`.
fn repository(
    ws: &Workspace,
    only: Option<&str>,
    machine_wide: bool,
    display: Option<PathBuf>,
) -> anyhow::Result<Vec<WorktreeNow>> {
    let view = ws.view()?;
    let reg = &view.registry;
    let mut known = view.known_worktrees()?;
    let mut elsewhere_read = false;
    let mut out = Vec::new();
    for wt in view.worktrees()?.iter().cloned() {
        if only.is_some_and(|k| k != wt.key) {
            continue;
        }
        let ports = view.ports(&wt.key);
        if only.is_none() && ports.is_none() {
            continue;
        }
        let ports = ports.unwrap_or_default();
        let target = match ws.target_of(wt.clone()) {
            Ok(t) => Some(t),
            Err(_) if only.is_none() => None,
            Err(e) => return Err(e),
        };
        let protocol = |s: &str| {
            (target.as_ref())
                .and_then(|t| t.config.service(s))
                .map_or(Protocol::Tcp, |s| s.protocol)
        };
        let list: Vec<u16> = ports.values().copied().collect();
        let mut listeners = procs::listeners(&list);
        // A server outside this repository's worktrees may be another repository's.
        let outside = |known: &[KnownWorktree], l: &Listener| {
            l.process
                .as_ref()
                .and_then(|p| p.cwd.as_deref())
                .is_some_and(|c| attribution::innermost(c, known).is_none())
        };
        if !elsewhere_read && listeners.iter().any(|l| outside(&known, l)) {
            known.extend(ws.known_elsewhere());
            elsewhere_read = true;
        }
        let this = known_this(&wt);
        let mut services = Vec::new();
        let order: Vec<String> = match &target {
            Some(t) => t.ordered(&ports).into_iter().map(|(s, _, _)| s).collect(),
            None => ports.keys().cloned().collect(),
        };
        for service in order {
            let port = ports[&service];
            let proto = protocol(&service);
            let mine: Vec<(Listener, Whose)> = listeners
                .iter()
                .filter(|l| l.port == port)
                .map(|l| {
                    let whose = attribution::classify(l.process.as_ref(), &known, Some(&this));
                    (l.clone(), whose)
                })
                .collect();
            // A bind is tried only when no listener is known.
            let state = port_state(!mine.is_empty(), || !SystemProbe.is_free(port, proto));
            services.push(ServiceNow {
                service,
                port,
                protocol: proto,
                state,
                listeners: mine,
            });
        }
        listeners.clear();
        let files = match &target {
            None => Err("the worktree's directory is gone".to_string()),
            Some(t) => {
                let held = view.holding(&wt.key);
                ws.file_states(t, &held).map_err(|e| format!("{e:#}"))
            }
        };
        let hostname = reg.record(&wt.key).and_then(|r| r.hostname);
        let urls = match &target {
            Some(t) => {
                let ctx = template_context(ws, t, &view.holding(&wt.key));
                (ctx.urls.iter())
                    .map(|(s, u)| (s.clone(), u.clone(), ctx.proxy_urls.get(s).cloned()))
                    .collect()
            }
            None => Vec::new(),
        };
        out.push(WorktreeNow {
            repository: machine_wide.then(|| display.clone()).flatten(),
            name: wt.key.clone(),
            path: wt.path.clone(),
            hostname,
            urls,
            slot: reg.record(&wt.key).and_then(|r| r.slot),
            services,
            files,
        });
    }
    if let Some(key) = only
        && out.is_empty()
    {
        // A worktree git has but the loop skipped cannot happen; keep the answer explicit.
        anyhow::bail!("worktree {key} not found");
    }
    Ok(out)
}

impl Workspace {
    /// One warning per service whose port a process outside this worktree listens on. Reads the
    /// socket tables; scans processes only when one of the ports is listening.
    pub fn warn_foreign_holders(&self, target: &Target, held: &Holding) {
        // Ports given in this command were all probed free under the lock a moment ago.
        if held.fresh {
            return;
        }
        // The probe first (a few binds): only a port a server holds is worth asking the kernel
        // about, which keeps the idempotent allocate as fast as it was.
        let busy: Vec<u16> = target
            .ordered(&held.ports)
            .into_iter()
            .filter(|(s, port, _)| {
                let protocol = target
                    .config
                    .service(s)
                    .map_or(Protocol::Tcp, |s| s.protocol);
                !SystemProbe.is_free(*port, protocol)
            })
            .map(|(_, port, _)| port)
            .collect();
        if busy.is_empty() {
            return;
        }
        let listeners = procs::listeners(&busy);
        if listeners.is_empty() {
            return;
        }
        let Ok(view) = self.view() else {
            return;
        };
        let mut known = view.known_worktrees().unwrap_or_default();
        known.extend(self.known_elsewhere());
        let this = KnownWorktree {
            path: canonical(&target.wt.path),
            repository: None,
            name: target.wt.key.clone(),
            exists: true,
        };
        for (service, port, _) in target.ordered(&held.ports) {
            let Some(l) = listeners.iter().find(|l| l.port == port) else {
                continue;
            };
            let whose = attribution::classify(l.process.as_ref(), &known, Some(&this));
            if whose == Whose::This {
                continue;
            }
            warn(&format!(
                "{service}: port {port} of worktree {} is held by {} ({whose}); move it: `git worktree-ports allocate {} --move {service}`",
                target.wt.key,
                attribution::describe(l),
                target.wt.key,
            ));
        }
    }
}
