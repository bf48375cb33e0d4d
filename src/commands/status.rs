//! `status [-w <worktree> | --all | --machine] [--json]`: each service's port and whether it
//! is listening and whose the process is (this worktree, another worktree, an orphan of a
//! deleted one, or foreign), the worktree's slot, and whether each rendered file is up to
//! date (a render planned, nothing written). Reads only; exit 0 unless the worktree cannot be
//! found.

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::commands::{Colour, Report, paint, table};
use crate::model::attribution::{self, Listener, PortState, Whose, WhoseKind};
use crate::workspace::{self, FileState, StatusScope, WorktreeNow};

/// Run `status`.
pub fn run(args: &StatusArgs) -> anyhow::Result<Report> {
    let scope = match (args.machine, args.all) {
        (true, _) => StatusScope::Machine,
        (false, true) => StatusScope::All,
        (false, false) => StatusScope::One(args.worktree.as_deref()),
    };
    let all = workspace::status(scope)?;
    if args.json {
        return Ok(Report::answer(StatusAnswer {
            worktrees: all.iter().map(to_json).collect(),
        }));
    }
    let text: Vec<String> = all.iter().map(to_text).collect();
    Ok(Report::ok(text.join("\n")))
}

fn to_json(s: &WorktreeNow) -> WorktreeStatus {
    let services = (s.services.iter())
        .map(|s| ServiceAnswer {
            service: s.service.clone(),
            port: s.port,
            protocol: s.protocol.as_str(),
            state: s.state,
            listeners: s.listeners.iter().map(|(l, w)| listener(l, w)).collect(),
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
    /// Whose it is.
    pub whose: WhoseKind,
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

fn to_text(s: &WorktreeNow) -> String {
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
        for svc in &s.services {
            let (name, port, listeners) = (&svc.service, svc.port, &svc.listeners);
            if listeners.is_empty() {
                let busy = svc.state == PortState::Busy;
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
