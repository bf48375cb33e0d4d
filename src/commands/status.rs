//! `status [-w <worktree> | --all | --machine] [--json]`: each service's port and whether it
//! is listening and whose the process is (this worktree, another worktree, an orphan of a
//! deleted one, or foreign), the worktree's slot, and whether each rendered file is up to
//! date (a render planned, nothing written). Reads only; exit 0 unless the worktree cannot be
//! found.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::commands::{Colour, Report, paint, table};
use crate::machine::Machine;
use crate::model::allocate::Probe;
use crate::model::attribution::{self, Known, Whose};
use crate::model::attribution::{Listener, PortState};
use crate::model::config::Protocol;
use crate::model::names::display_path;
use crate::output::progress::Progress;
use crate::registry::Ports;
use crate::sys::probe::SystemProbe;
use crate::sys::procs;
use crate::workspace::{FileState, Workspace, known_this, template_context, warn};

/// One service: (name, port, protocol, its listeners with whose they are, busy without a
/// listener that can be seen).
type ServiceStatus = (String, u16, Protocol, Vec<(Listener, Whose)>, bool);

/// One worktree's status.
struct Status {
    repository: Option<PathBuf>,
    name: String,
    path: PathBuf,
    slot: Option<u32>,
    hostname: Option<String>,
    /// HTTP service -> URL (direct, and through the proxy when it is set up).
    urls: Vec<(String, String, Option<String>)>,
    services: Vec<ServiceStatus>,
    /// (relative path, state) or the reason rendering cannot be planned.
    files: Result<Vec<(PathBuf, FileState)>, String>,
}

/// Run `status`.
pub fn run(args: &StatusArgs) -> anyhow::Result<Report> {
    let mut all = Vec::new();
    if args.machine {
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
    } else {
        let ws = Workspace::open()?;
        let only = match args.all {
            true => None,
            false => Some(ws.target(args.worktree.as_deref())?.wt.key),
        };
        all.extend(repository(&ws, only.as_deref(), false, None)?);
    }
    if args.json {
        return Ok(Report::answer(StatusAnswer {
            worktrees: all.iter().map(to_json).collect(),
        }));
    }
    let text: Vec<String> = all.iter().map(to_text).collect();
    Ok(Report::ok(text.join("\n")))
}

/// The status of one worktree (`only`) or of every worktree with ports of `ws`.
fn repository(
    ws: &Workspace,
    only: Option<&str>,
    machine_wide: bool,
    display: Option<PathBuf>,
) -> anyhow::Result<Vec<Status>> {
    let reg = ws.load_unlocked()?;
    let mut known = ws.known_worktrees(&reg)?;
    let mut elsewhere_read = false;
    let mut out = Vec::new();
    for wt in ws.worktrees()?.iter().cloned() {
        if only.is_some_and(|k| k != wt.key) {
            continue;
        }
        let ports = reg.ports(&wt.key).map(Ports::to_map);
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
        let outside = |known: &[Known], l: &Listener| {
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
            let busy = mine.is_empty() && !SystemProbe.is_free(port, proto);
            services.push((service, port, proto, mine, busy));
        }
        listeners.clear();
        let files = match &target {
            None => Err("the worktree's directory is gone".to_string()),
            Some(t) => {
                let held = ws.holding(&reg, &wt.key);
                ws.file_states(t, &held).map_err(|e| format!("{e:#}"))
            }
        };
        let hostname = reg.record(&wt.key).and_then(|r| r.hostname);
        let urls = match &target {
            Some(t) => {
                let ctx = template_context(ws, t, &ws.holding(&reg, &wt.key));
                (ctx.urls.iter())
                    .map(|(s, u)| (s.clone(), u.clone(), ctx.proxy_urls.get(s).cloned()))
                    .collect()
            }
            None => Vec::new(),
        };
        out.push(Status {
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

fn to_json(s: &Status) -> WorktreeStatus {
    let services = (s.services.iter())
        .map(|(name, port, proto, listeners, busy)| ServiceAnswer {
            service: name.clone(),
            port: *port,
            protocol: proto.as_str(),
            state: match (listeners.is_empty(), busy) {
                (false, _) => PortState::Listening,
                (true, true) => PortState::Busy,
                (true, false) => PortState::Free,
            },
            listeners: listeners.iter().map(|(l, w)| listener(l, w)).collect(),
        })
        .collect();
    let files = match &s.files {
        Ok(files) => FilesAnswer::Files(
            (files.iter())
                .map(|(p, state)| FileAnswer {
                    path: p.display().to_string(),
                    state: *state,
                })
                .collect(),
        ),
        Err(e) => FilesAnswer::Error { error: e.clone() },
    };
    WorktreeStatus {
        repository: s.repository.as_ref().map(|r| r.display().to_string()),
        worktree: s.name.clone(),
        path: s.path.display().to_string(),
        slot: s.slot,
        hostname: s.hostname.clone(),
        urls: (s.urls.iter())
            .map(|(service, url, proxy_url)| UrlAnswer {
                service: service.clone(),
                url: url.clone(),
                proxy_url: proxy_url.clone(),
            })
            .collect(),
        services,
        files,
    }
}

/// A listener for `--json`: port, protocol, pid, command, uid, cwd, and whose.
fn listener(l: &Listener, whose: &Whose) -> ListenerAnswer {
    let p = l.process.as_ref();
    let (worktree, repository) = match whose {
        Whose::Worktree { repository, name }
        | Whose::Orphan {
            repository, name, ..
        } => (
            Some(name.clone()),
            repository.as_ref().map(|r| r.display().to_string()),
        ),
        _ => (None, None),
    };
    ListenerAnswer {
        port: l.port,
        protocol: l.protocol,
        pid: p.map(|p| p.pid),
        command: p.map(|p| p.command.clone()),
        uid: p.and_then(|p| p.uid).or(l.uid),
        cwd: p
            .and_then(|p| p.cwd.as_ref())
            .map(|c| c.display().to_string()),
        cwd_deleted: p.map(|p| p.cwd_deleted),
        whose: whose.kind(),
        worktree,
        repository,
    }
}

/// `status --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusAnswer {
    /// Each worktree asked about.
    pub worktrees: Vec<WorktreeStatus>,
}

/// One worktree of `status --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WorktreeStatus {
    /// `--machine`: the repository's git directory.
    pub repository: Option<String>,
    /// The worktree's name.
    pub worktree: String,
    /// Its directory.
    pub path: String,
    /// Its slot, if the strategy has slots.
    pub slot: Option<u32>,
    /// Its hostname.
    pub hostname: Option<String>,
    /// Each HTTP service's URLs.
    pub urls: Vec<UrlAnswer>,
    /// Each service's port and who listens on it.
    pub services: Vec<ServiceAnswer>,
    /// Each rendered file's state, or why rendering cannot be planned.
    pub files: FilesAnswer,
}

/// An HTTP service's URLs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UrlAnswer {
    /// The service.
    pub service: String,
    /// Direct: `http://<hostname>:<port>`.
    pub url: String,
    /// Through the proxy, when it is set up.
    pub proxy_url: Option<String>,
}

/// One service of `status --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServiceAnswer {
    /// The service.
    pub service: String,
    /// Its port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// Whether something is on it.
    pub state: PortState,
    /// Who listens on it.
    pub listeners: Vec<ListenerAnswer>,
}

/// A process listening on a port.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListenerAnswer {
    /// The port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// Its pid, when readable.
    pub pid: Option<u32>,
    /// Its command line, when readable.
    pub command: Option<String>,
    /// Its user id.
    pub uid: Option<u32>,
    /// Its working directory, when readable.
    pub cwd: Option<String>,
    /// Whether that directory was deleted.
    pub cwd_deleted: Option<bool>,
    /// `this` (this worktree), `worktree` (another), `orphan` (of a deleted worktree),
    /// `foreign` or `unknown`.
    pub whose: &'static str,
    /// `worktree` / `orphan`: which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// `worktree` / `orphan`: its repository's git directory (none: this repository).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// The files of `status --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum FilesAnswer {
    /// Each file's state.
    Files(Vec<FileAnswer>),
    /// Why rendering cannot be planned (a template error...).
    Error {
        /// The reason.
        error: String,
    },
}

/// One file of `status --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileAnswer {
    /// Relative to the worktree.
    pub path: String,
    /// How it compares with what a render would write.
    pub state: FileState,
}

fn to_text(s: &Status) -> String {
    let mut out = String::new();
    let of = s
        .repository
        .as_ref()
        .map(|r| format!(" of {}", r.display()))
        .unwrap_or_default();
    let slot = s.slot.map(|n| format!(", slot {n}")).unwrap_or_default();
    let host = s
        .hostname
        .as_ref()
        .map(|h| format!(", {h}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "worktree {}{of} ({}{slot}{host})\n",
        s.name,
        s.path.display()
    ));
    for (svc, url, proxy) in &s.urls {
        let through = proxy
            .as_ref()
            .map(|p| format!(", {p} through the proxy"))
            .unwrap_or_default();
        out.push_str(&format!("  {svc}: {url}{through}\n"));
    }
    if s.services.is_empty() {
        out.push_str("  no ports allocated: run `git worktree-ports allocate` there\n");
    } else {
        let mut rows = vec![vec![
            "  SERVICE".to_string(),
            "PORT".into(),
            "STATE".into(),
            "WHOSE".into(),
            "PROCESS".into(),
        ]];
        for (name, port, _, listeners, busy) in &s.services {
            if listeners.is_empty() {
                let state = match busy {
                    true => paint("busy", Colour::Yellow),
                    false => paint("free", Colour::Dim),
                };
                let whose = match busy {
                    true => "not listening (TIME_WAIT, or unreadable)".to_string(),
                    false => String::new(),
                };
                rows.push(vec![
                    format!("  {name}"),
                    port.to_string(),
                    state,
                    whose,
                    String::new(),
                ]);
            }
            for (l, whose) in listeners {
                let colour = match whose {
                    Whose::This => Colour::Green,
                    Whose::Worktree { .. } | Whose::Unknown => Colour::Yellow,
                    Whose::Orphan { .. } | Whose::Foreign => Colour::Red,
                };
                rows.push(vec![
                    format!("  {name}"),
                    port.to_string(),
                    paint("listening", colour),
                    paint(&whose.to_string(), colour),
                    attribution::describe(l),
                ]);
            }
        }
        out.push_str(&table(&rows));
    }
    match &s.files {
        Ok(files) if files.is_empty() => {}
        Ok(files) => {
            let parts: Vec<String> = files
                .iter()
                .map(|(p, state)| {
                    let state = match state {
                        FileState::UpToDate => paint("up to date", Colour::Green),
                        FileState::Tracked => paint("tracked by git (not written)", Colour::Dim),
                        FileState::NotRendered => paint(
                            "not written yet (`git worktree-ports render` writes it)",
                            Colour::Dim,
                        ),
                        FileState::Stale => {
                            paint("stale: run `git worktree-ports render`", Colour::Yellow)
                        }
                    };
                    format!("{} {state}", p.display())
                })
                .collect();
            out.push_str(&format!("  files: {}\n", parts.join("; ")));
        }
        Err(e) => out.push_str(&format!("  files: cannot be planned: {e}\n")),
    }
    out
}
