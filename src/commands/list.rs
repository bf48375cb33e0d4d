//! `list [--json]` (alias `ls`): every allocation, with live git facts where the worktree still
//! exists. Reads without the lock; never writes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::cli::{ListArgs, ListFormat, ListSort};
use crate::commands::{Colour, Report, paint, ports_inline, table};
use crate::workspace::{self, Live, LiveState, RepoListing, Workspace};

/// `list --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListAnswer {
    /// Every worktree with ports or a record, in name order.
    pub worktrees: Vec<Row>,
}

/// One worktree of `list --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Row {
    /// The worktree's name (`main` for the main worktree).
    pub name: String,
    /// Its directory (the recorded one when git no longer has it).
    pub path: String,
    /// Its branch, if any.
    pub branch: Option<String>,
    /// Its slot (`strategy = "slots"` / `"block"`).
    pub slot: Option<u32>,
    /// Its hostname (`feature.app.localhost`).
    pub hostname: Option<String>,
    /// Service -> port.
    pub ports: BTreeMap<String, u16>,
    /// HTTP service -> its direct URL (`http://feature.app.localhost:8081`).
    pub urls: BTreeMap<String, String>,
    /// Whether git has it and its directory exists.
    pub exists: bool,
    /// Whether its directory moved since the ports were given.
    pub moved: bool,
    /// Service -> whether anything listens on its port (absent with --no-probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<BTreeMap<String, LiveState>>,
}

/// `list --all --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MachineAnswer {
    /// Every repository of the machine index, by name.
    pub repositories: Vec<RepoListing>,
}

/// Run `list`.
pub fn run(args: &ListArgs) -> anyhow::Result<Report> {
    if args.all {
        return machine(args);
    }
    let ws = Workspace::open()?;
    let mut rows: Vec<Row> = (ws.view()?.entries()?.into_iter())
        .map(|e| Row {
            name: e.key,
            path: e.path,
            branch: e.branch,
            slot: e.slot,
            hostname: e.hostname,
            ports: e.ports,
            urls: BTreeMap::new(),
            exists: e.exists,
            moved: e.moved,
            live: None,
        })
        .collect();

    // Whether anything listens on each port: the socket tables, read once (no process scan).
    let live: Option<Live> = (!args.no_probe).then(|| {
        Live::read(
            &rows
                .iter()
                .flat_map(|r| r.ports.values().copied())
                .collect::<Vec<_>>(),
        )
    });
    // The current worktree's config: its services' order for the columns, and which speak
    // HTTP for the URLs (a repository's worktrees share it; reading each one's would cost a
    // parse per worktree).
    let config = ws.current_config();
    if args.json {
        if let Some(live) = &live {
            rows.iter_mut()
                .for_each(|r| r.live = Some(live.states(&r.ports)));
        }
        let is_http = |s: &str| match &config {
            Some(c) => c.services.iter().any(|h| h.http && h.name == s),
            None => crate::model::config::default_http(s),
        };
        for r in rows.iter_mut() {
            if let Some(host) = &r.hostname {
                r.urls = (r.ports.iter())
                    .filter(|(s, _)| is_http(s))
                    .map(|(s, p)| (s.clone(), format!("http://{host}:{p}")))
                    .collect();
            }
        }
        return Ok(Report::answer(ListAnswer { worktrees: rows }));
    }
    if rows.is_empty() {
        return Ok(Report::ok(
            "no ports allocated yet; run `git worktree-ports allocate` in a worktree\n".into(),
        ));
    }

    // Columns: the current worktree's services in config order, then any others.
    let mut services: Vec<String> = (config.into_iter())
        .flat_map(|c| c.services.into_iter().map(|s| s.name))
        .collect();
    for r in &rows {
        for s in r.ports.keys() {
            if !services.contains(s) {
                services.push(s.clone());
            }
        }
    }
    services.retain(|s| rows.iter().any(|r| r.ports.contains_key(s)));

    let mut lines = vec![
        ["WORKTREE", "SLOT", "BRANCH"]
            .iter()
            .map(|s| s.to_string())
            .chain(services.iter().cloned())
            .chain(live.as_ref().map(|_| "LIVE".to_string()))
            .chain(["HOST".to_string(), "PATH".to_string()])
            .collect::<Vec<_>>(),
    ];
    let mut gone = false;
    for r in &rows {
        gone |= !r.exists;
        let mut line = vec![
            r.name.clone(),
            r.slot.map_or_else(|| "-".into(), |s| s.to_string()),
            r.branch.clone().unwrap_or_else(|| "-".into()),
        ];
        line.extend(services.iter().map(|s| {
            r.ports
                .get(s)
                .map_or_else(|| "-".to_string(), u16::to_string)
        }));
        if let Some(live) = &live {
            line.push(live_summary(live, r.ports.values().copied()));
        }
        line.push(r.hostname.clone().unwrap_or_else(|| "-".into()));
        line.push(if r.moved {
            format!("{} (moved)", r.path)
        } else if r.exists {
            r.path.clone()
        } else {
            format!("{} (gone)", r.path)
        });
        lines.push(line);
    }
    let mut out = table(&lines);
    if gone {
        out.push_str("(gone): its directory is missing. If it was moved, run `git worktree repair` in it; if it was deleted, `git worktree-ports prune` gives its ports back\n");
    }
    if rows.iter().any(|r| r.moved) {
        out.push_str("(moved): moved without git knowing; run `git worktree repair` in it\n");
    }
    Ok(Report::ok(out))
}

/// `list --all`: every repository of the machine index, its worktrees and ports (from each
/// registry, read without its lock), gone repositories and worktrees marked.
fn machine(args: &ListArgs) -> anyhow::Result<Report> {
    let (repos, index_file) = workspace::machine_listing()?;
    let mut repos = repos;
    let live: Option<Live> = (!args.no_probe).then(|| {
        let ports: Vec<u16> = (repos.iter())
            .flat_map(|r| r.worktrees.iter().flat_map(|w| w.ports.values().copied()))
            .collect();
        Live::read(&ports)
    });

    if args.format == Some(ListFormat::Markdown) {
        return Ok(Report::ok(markdown(&repos)));
    }
    if args.json || args.format == Some(ListFormat::Json) {
        if let Some(live) = &live {
            (repos.iter_mut().flat_map(|r| r.worktrees.iter_mut()))
                .for_each(|w| w.live = Some(live.states(&w.ports)));
        }
        return Ok(Report::answer(MachineAnswer {
            repositories: repos,
        }));
    }
    if repos.is_empty() {
        return Ok(Report::ok(format!(
            "no repository has allocated on this machine yet (index: {})\n",
            index_file.display()
        )));
    }
    let mark = |exists: bool, path: &str| {
        if exists {
            path.to_string()
        } else {
            format!("{path} (gone)")
        }
    };
    let mut lines: Vec<Vec<String>>;
    if args.sort == Some(ListSort::Port) {
        lines = vec![
            ["PORT", "SERVICE", "REPOSITORY", "WORKTREE"]
                .map(String::from)
                .into_iter()
                .chain(live.as_ref().map(|_| "LIVE".to_string()))
                .chain(["PATH".to_string()])
                .collect(),
        ];
        let mut rows: Vec<(u16, Vec<String>)> = Vec::new();
        for r in &repos {
            for w in &r.worktrees {
                for (svc, port) in &w.ports {
                    let mut row = vec![
                        port.to_string(),
                        svc.clone(),
                        r.name.clone(),
                        w.name.clone(),
                    ];
                    row.extend(
                        live.as_ref()
                            .map(|l| live_summary(l, std::iter::once(*port))),
                    );
                    row.push(mark(w.exists && !r.gone, &w.path));
                    rows.push((*port, row));
                }
            }
        }
        rows.sort_by_key(|(p, _)| *p);
        lines.extend(rows.into_iter().map(|(_, l)| l));
    } else {
        lines = vec![
            ["REPOSITORY", "WORKTREE", "PORTS"]
                .map(String::from)
                .into_iter()
                .chain(live.as_ref().map(|_| "LIVE".to_string()))
                .chain(["PATH".to_string()])
                .collect(),
        ];
        for r in &repos {
            if r.gone || r.worktrees.is_empty() {
                let mut row = vec![r.name.clone(), "-".into(), "-".into()];
                row.extend(live.as_ref().map(|_| "-".to_string()));
                row.push(mark(!r.gone, &r.path));
                lines.push(row);
            }
            for w in &r.worktrees {
                let mut row = vec![r.name.clone(), w.name.clone(), ports_inline(&w.ports)];
                row.extend(
                    live.as_ref()
                        .map(|l| live_summary(l, w.ports.values().copied())),
                );
                row.push(mark(w.exists && !r.gone, &w.path));
                lines.push(row);
            }
        }
    }
    let mut out = table(&lines);
    if repos
        .iter()
        .any(|r| r.gone || r.worktrees.iter().any(|w| !w.exists))
    {
        out.push_str(
            "(gone): no longer on disk; `git worktree-ports prune --all` gives their ports back\n",
        );
    }
    Ok(Report::ok(out))
}

/// `list --all --format markdown`: one row per port, repositories and worktrees in name order,
/// services in name order; `|` in a cell escaped, a gone worktree marked.
fn markdown(repos: &[workspace::RepoListing]) -> String {
    let cell = |s: &str| s.replace('\\', "\\\\").replace('|', "\\|");
    let mut out = String::from(
        "| repository | worktree | slot | service | port | URL |\n|---|---|---|---|---|---|\n",
    );
    for r in repos {
        for w in &r.worktrees {
            let name = match w.exists && !r.gone {
                true => w.name.clone(),
                false => format!("{} (gone)", w.name),
            };
            for (service, port) in &w.ports {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {port} | {} |\n",
                    cell(&r.name),
                    cell(&name),
                    w.slot.map(|s| s.to_string()).unwrap_or_default(),
                    cell(service),
                    w.urls.get(service).map(|u| cell(u)).unwrap_or_default(),
                ));
            }
        }
    }
    out
}

/// A row's cell: `foreign` if any port is, else `up` if any is, else `down`.
fn live_summary(live: &Live, ports: impl Iterator<Item = u16>) -> String {
    let states: Vec<LiveState> = ports.map(|p| live.state(p)).collect();
    let up = states.iter().filter(|s| **s == LiveState::Up).count();
    if states.contains(&LiveState::Foreign) {
        paint("foreign", Colour::Red)
    } else if up == 0 {
        paint("down", Colour::Dim)
    } else if up == states.len() {
        paint("up", Colour::Green)
    } else {
        paint(&format!("up {up}/{}", states.len()), Colour::Green)
    }
}
